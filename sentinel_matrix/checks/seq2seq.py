"""The load, infer, quality and mutation checks of an encoder-decoder (T5, BART, mBART, Marian;
sentinel_core/seq2seq.py): the decoder-only checks' questions, grades and records (grading.py), asked of a
right-padded source batch (tokenizers pad an encoder's batch on the right) and a target read by teacher forcing.
Every target position is real: the target is the decoder start token, then tokens, unpadded.

Beyond the decoder-only checks, quality holds one head of each kind of attention (encoder self, decoder self,
cross) gated to 0 against HF with that head's columns of the output projection zeroed, and `prune_heads` against the
same gates at 0; mutation injects encoder-decoder bugs (sentinel_matrix/mutants_seq2seq.py), cross-attention ones
among them."""

from __future__ import annotations

import copy
import functools
import gc
from dataclasses import dataclass, field

import torch

from sentinel_core.names import INFER, QUALITY
from sentinel_core.seq2seq import KINDS
from sentinel_core.synthetic import degenerate_reason, reference_stats

from .. import grading
from ..evidence import memo
from .pair import CheckFailed, CheckInconclusive, ModelPair
from .quality import _quality_failure
from .reference import OTHER_ATTENTION, widened_to_fp32

SOURCE_LENGTHS = (13, 9, 5)  # the right-padded batch: three rows of different lengths
TARGET_TOKENS = 8  # decoder positions: the start token and 7 more
INFER_NEW_TOKENS = 8


@dataclass
class Batch:
    """A source batch [B, S] with its mask (None: no padding) and the decoder's input [B, T]."""

    ids: torch.Tensor
    mask: torch.Tensor | None
    target: torch.Tensor

    @property
    def real(self) -> torch.Tensor:  # [B, T]: every target position
        return torch.ones(self.target.shape, dtype=torch.bool, device=self.target.device)

    def call(self) -> dict:
        return {"input_ids": self.ids, "attention_mask": self.mask, "decoder_input_ids": self.target}


def _pad_id(model) -> int:
    pad = getattr(model.config, "pad_token_id", None)
    return 0 if pad is None else int(pad)


def source_batch(pair: ModelPair) -> Batch:
    """Three source rows of different lengths, right-padded with the pad token; a target of the start token and
    seeded random tokens (real text's tokens with a tokenizer: its rows)."""
    spec = pair.adaptive.spec
    g = torch.Generator().manual_seed(0)
    if pair.tokenizer is not None:
        from .inputs import PROMPTS

        rows = [pair.tokenizer(p)["input_ids"] for p in PROMPTS]
        body = pair.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"][:TARGET_TOKENS - 1]
        target = torch.tensor([[spec.decoder_start_token_id] + body] * len(rows))
    else:
        high = spec.vocab_size - 1  # random ids avoid the low special ids, and the last (Marian's pad)
        rows = [torch.randint(3, high, (n,), generator=g).tolist() for n in SOURCE_LENGTHS]
        target = torch.randint(3, high, (len(rows), TARGET_TOKENS), generator=g)
        target[:, 0] = spec.decoder_start_token_id
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), _pad_id(pair.adaptive), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return Batch(ids.to(pair.device), mask.to(pair.device), target.to(pair.device))


def statistics_batches(pair: ModelPair) -> dict[str, Batch]:
    """Half precision's inputs beside the padded batch (grading.STATISTICS_BATCH rows of many source and target
    positions, and on a GPU one long row where the positions allow), seeded random ids, no padding."""
    if pair.dtype == "float32":
        return {}
    device = "cuda" if pair.device.startswith("cuda") else "cpu"
    spec = pair.adaptive.spec
    limit = spec.max_positions or 1 << 30
    g = torch.Generator().manual_seed(1)

    def batch(rows: int, length: int) -> Batch:
        ids = torch.randint(3, spec.vocab_size - 1, (rows, length), generator=g)
        target = torch.randint(3, spec.vocab_size - 1, (rows, length), generator=g)
        target[:, 0] = spec.decoder_start_token_id
        return Batch(ids.to(pair.device), None, target.to(pair.device))

    rows, length = grading.STATISTICS_BATCH[device]
    out = {"statistics": batch(rows, min(length, limit))}
    long = grading.LONG_CONTEXT.get(device)
    if long and long <= limit:
        out["long"] = batch(1, long)
    return out


def logprobs(model, batch: Batch, **kwargs) -> torch.Tensor:
    """[B, T, V] log-probs of each next target token, called as HF users call a seq2seq model."""
    return model(**batch.call(), **kwargs).logits.float().log_softmax(-1)


def cached_logprobs(model, batch: Batch, reencode: bool = False) -> torch.Tensor:
    """The target's log-probs decoded in two chunks through the decoder's cache: the encoder run once (or, with
    `reencode`, the source passed on every call, as HF users pass it)."""
    split = batch.target.shape[1] // 2
    source = {"input_ids": batch.ids} if reencode else {"encoder_outputs": model.encode(batch.ids, batch.mask)}
    first = model(**source, attention_mask=batch.mask, decoder_input_ids=batch.target[:, :split], use_cache=True)
    rest = model(**source, attention_mask=batch.mask, decoder_input_ids=batch.target[:, split:],
                 past_key_values=first.past_key_values, use_cache=True)
    return torch.cat([first.logits, rest.logits], dim=1).float().log_softmax(-1)


@torch.no_grad()
def attention_paths_diff(hf, batch: Batch, theirs: torch.Tensor) -> float | None:
    """Max |Δ log p| between HF's reference attention and its other path (eager ↔ SDPA) on `batch`; None where
    HF's class has one path (T5: its position bias has no SDPA path)."""
    before = hf.config._attn_implementation
    other = OTHER_ATTENTION.get(before)
    if other is None or not hasattr(hf, "set_attn_implementation"):
        return None
    try:
        hf.set_attn_implementation(other)
        if hf.config._attn_implementation != other:
            return None
        alt = logprobs(hf, batch)
    except (ValueError, ImportError, NotImplementedError):
        return None
    finally:
        hf.set_attn_implementation(before)
    return (alt - theirs).abs().max().item()


# HF's side, once per pair ------------------------------------------------------------------------------------

@dataclass
class Reference:
    batch: Batch
    theirs: torch.Tensor  # HF's log-probs in the row's dtype
    fp32: torch.Tensor | None  # HF's in fp32 (the row's own for fp32 rows)
    fp32_note: str | None
    attention_paths_diff: float | None
    greedy: torch.Tensor  # HF's greedy target
    statistics: dict = field(default_factory=dict)  # name -> (Batch, HF's log-probs, HF fp32's)
    widened: torch.Tensor | None = None  # HF fp32 on the row's rounded weights, on the padded batch
    widened_paths_diff: float | None = None


def hf_reference(pair: ModelPair) -> Reference:
    return memo(pair.cache, "seq2seq_reference", lambda: _hf_reference(pair))


def hf_greedy(hf, batch: Batch, new_tokens: int) -> torch.Tensor:
    """HF's greedy target for the batch, its generation_config's start token, forced tokens and eos applied."""
    return hf.generate(batch.ids, attention_mask=batch.mask, max_new_tokens=new_tokens, do_sample=False, num_beams=1)


@torch.no_grad()
def _hf_reference(pair: ModelPair) -> Reference:
    batch, extra = source_batch(pair), statistics_batches(pair)
    theirs = logprobs(pair.hf, batch)
    stats = {name: logprobs(pair.hf, b) for name, b in extra.items()}
    fp32, stats_fp32, note = (theirs, stats, None) if pair.dtype == "float32" else (None, {}, "no fp32 loader given")
    widened, widened_paths = None, None
    if pair.dtype != "float32" and pair.load_fp32_reference is not None:
        try:
            reference_model = pair.load_fp32_reference()
            fp32, note = logprobs(reference_model, batch), None
            stats_fp32 = {name: logprobs(reference_model, b) for name, b in extra.items()}
            for p in reference_model.parameters():  # each weight rounded as loading in the row's dtype rounds it
                p.data = p.data.to(pair.torch_dtype).float()
            # and each buffer the row's HF model holds in that dtype: a checkpoint's own, such as BART's
            # final_logits_bias (buffers HF computes at load, kept in fp32 there, stay fp32)
            rounded = {name for name, b in pair.hf.named_buffers() if b.dtype == pair.torch_dtype}
            for name, b in reference_model.named_buffers():
                if name in rounded:
                    b.data = b.data.to(pair.torch_dtype).float()
            widened = logprobs(reference_model, batch)
            widened_paths = attention_paths_diff(reference_model, batch, widened)
            del reference_model
        except torch.OutOfMemoryError:
            note = "out of memory: HF in fp32 did not fit beside both models"
        gc.collect()
        if pair.device == "cuda":
            torch.cuda.empty_cache()
    paths = attention_paths_diff(pair.hf, batch, theirs) if pair.dtype == "float32" else None
    greedy = hf_greedy(pair.hf, batch, grading.GREEDY_TOKENS)
    statistics = {name: (extra[name], stats[name], stats_fp32[name]) for name in stats_fp32}
    return Reference(batch, theirs, fp32, note, paths, greedy, statistics, widened, widened_paths)


def adaptive_logprobs(pair: ModelPair, ref: Reference, model=None, statistics: bool = True) -> dict[str, tuple]:
    """The adaptive model (or `model`) on every input of `ref`: name -> (its log-probs, HF's, HF fp32's, real)."""
    model = model if model is not None else pair.adaptive
    out = {"padded": (logprobs(model, ref.batch), ref.theirs, ref.fp32, ref.batch.real)}
    for name, (batch, theirs, fp32) in (ref.statistics if statistics else {}).items():
        out[name] = (logprobs(model, batch), theirs, fp32, batch.real)
    return out


# load --------------------------------------------------------------------------------------------------------

def gate_count(model) -> int:
    return sum(g.numel() for g in model.gates.values())


@torch.no_grad()
def gate_effects(pair: ModelPair) -> dict[str, float]:
    """Per kind of attention: max |Δ log p| when that kind's gates of the first and last layer are set to 0."""
    batch, model, effects = source_batch(pair), pair.adaptive, {}
    before = logprobs(model, batch)
    for kind in KINDS:
        saved = model.gates[kind].detach().clone()
        try:
            model.gates[kind][0] = 0
            model.gates[kind][-1] = 0
            effects[kind] = (logprobs(model, batch) - before).abs().max().item()
        finally:
            model.gates[kind].copy_(saved)
    return effects


def check_load(pair: ModelPair) -> dict:
    n_hf = sum(p.numel() for p in pair.hf.parameters())
    n_ad = sum(p.numel() for p in pair.adaptive.parameters())
    gates = gate_count(pair.adaptive)
    metrics = {**pair.metrics, "params_hf": n_hf, "params_adaptive": n_ad, "gates": gates,
               "gates_by_kind": {kind: list(g.shape) for kind, g in pair.adaptive.gates.items()},
               "load_ratio": round(pair.metrics["load_s"] / max(pair.metrics["baseline_load_s"], 1e-9), 3)}
    if n_ad != n_hf + gates:
        raise CheckFailed(f"parameter count {n_ad:,} != HF {n_hf:,} + {gates} gates", metrics)
    effects = gate_effects(pair)
    metrics["first_and_last_layer_gate_effect"] = effects
    dead = [kind for kind, effect in effects.items() if effect == 0.0]
    if dead:
        raise CheckFailed(f"closing the first and last layers' {', '.join(dead)} gates changed no log-prob: those "
                          f"gates reach no head", metrics)
    return metrics


# infer -------------------------------------------------------------------------------------------------------

@torch.no_grad()
def check_infer(pair: ModelPair) -> dict:
    tol = grading.tolerance(pair.dtype)
    model, batch = pair.adaptive, source_batch(pair)
    ids, mask, target = batch.ids, batch.mask, batch.target
    logits = model(**batch.call()).logits
    if not torch.isfinite(logits).all():
        raise CheckFailed("forward produced NaN or inf logits")
    out = model.generate(ids, attention_mask=mask, max_new_tokens=INFER_NEW_TOKENS, eos_token_id=[])
    if out.shape != (ids.shape[0], 1 + INFER_NEW_TOKENS):
        raise CheckFailed(f"generate returned shape {tuple(out.shape)}, expected {(ids.shape[0], 1 + INFER_NEW_TOKENS)}")
    full = logits.float().log_softmax(-1)

    def beyond_resolution(a, ref) -> float:
        return ((a - ref).abs() - tol.consistency_rtol * ref.abs()).max().item()

    def padding_effect(model, full, **kwargs) -> tuple[float, float]:
        """How far right padding of the source moves a row's target log-probs from the row alone."""
        raw, excess = 0.0, float("-inf")
        for row in range(ids.shape[0]):
            real = mask[row].bool()
            alone = logprobs(model, Batch(ids[row:row + 1, real], None, target[row:row + 1]), **kwargs)[0]
            raw = max(raw, (full[row] - alone).abs().max().item())
            excess = max(excess, beyond_resolution(full[row], alone))
        return raw, excess

    padded_vs_alone, padded_excess = padding_effect(model, full)
    # HF's own padding effect, on both of its paths: a forward that fills a cache (the default call) and one that
    # does not (use_cache=False) round differently: flan-T5-small's decoder, batch 3, fp32 on CPU, 2.0e-6 apart in its
    # first self-attention (the cache hands the keys back as a new tensor), which moved the padding effect
    # 2.62e-4 on one path; ours, a full forward, equals HF's no-cache path bit for bit there.
    hf_padding = memo(pair.cache, "seq2seq_hf_padding_effect", lambda: {
        path: padding_effect(pair.hf, logprobs(pair.hf, batch, **kwargs), **kwargs)[1]
        for path, kwargs in (("default", {}), ("no_cache", {"use_cache": False}))})
    hf_padded_excess = max(hf_padding.values())
    padding_limit = grading.padding_limit(pair.dtype, hf_padded_excess)

    stitched = cached_logprobs(model, batch)
    cache_diff, cache_excess = (stitched - full).abs().max().item(), beyond_resolution(stitched, full)
    plain = cached_logprobs(model, batch, reencode=True)
    plain_diff, plain_excess = (plain - full).abs().max().item(), beyond_resolution(plain, full)
    hf_cache_diff = memo(pair.cache, "seq2seq_hf_cache_effect",  # HF's own cache, as the decoder-only check has it
                         lambda: (cached_logprobs(pair.hf, batch, reencode=True) - logprobs(pair.hf, batch)).abs()
                         .max().item())
    no_cache = model.generate(ids, attention_mask=mask, max_new_tokens=INFER_NEW_TOKENS, eos_token_id=[],
                              use_cache=False)
    greedy_cache_agreement = (out[:, 1:] == no_cache[:, 1:]).float().mean().item()

    metrics = {"padded_vs_alone_max_diff": padded_vs_alone, "cache_vs_full_max_diff": cache_diff,
               "padded_vs_alone_beyond_resolution": padded_excess, "cache_vs_full_beyond_resolution": cache_excess,
               "baseline_padded_vs_alone_beyond_resolution": hf_padded_excess,
               "baseline_padded_vs_alone_beyond_resolution_by_path": hf_padding,
               "greedy_cache_agreement": greedy_cache_agreement, "hf_call_cache_vs_full_max_diff": plain_diff,
               "hf_call_cache_vs_full_beyond_resolution": plain_excess, "padding_side": "right",
               "baseline_cache_vs_full_max_diff": hf_cache_diff}
    problems = []
    if padded_excess > padding_limit:
        problems.append(f"right-padded source rows differ from the rows alone by {padded_vs_alone:.2e} "
                        f"(> {padding_limit:.1e} + {tol.consistency_rtol:.1e}·|log p|; HF's own padding moves "
                        f"{hf_padded_excess:.1e} beyond that resolution)")
    if cache_excess > tol.cache_vs_no_cache:
        problems.append(f"the decoder's cache differs from a full forward by {cache_diff:.2e} "
                        f"(> {tol.cache_vs_no_cache:.0e} + {tol.consistency_rtol:.1e}·|log p|)")
    if plain_excess > tol.cache_vs_no_cache:
        problems.append(f"called with the source on every call, the decoder's cache differs from a full forward by "
                        f"{plain_diff:.2e} (> {tol.cache_vs_no_cache:.0e} + {tol.consistency_rtol:.1e}·|log p|)")
    if pair.dtype == "float32" and greedy_cache_agreement < 1.0:
        problems.append(f"greedy tokens with the cache agree with no-cache on only {greedy_cache_agreement:.0%}")
    if problems:
        raise CheckFailed("; ".join(problems), metrics)
    return metrics


# quality -----------------------------------------------------------------------------------------------------

def hf_output_projection(hf, kind: str, layer: int):
    """HF's output projection of `kind`'s attention in `layer` (its input columns are the heads' contexts)."""
    if hf.config.model_type == "t5":
        stack = hf.encoder if kind == "encoder" else hf.decoder
        sub = stack.block[layer].layer
        return sub[1].EncDecAttention.o if kind == "cross" else sub[0].SelfAttention.o
    stack = hf.model.encoder if kind == "encoder" else hf.model.decoder
    return stack.layers[layer].encoder_attn.out_proj if kind == "cross" else stack.layers[layer].self_attn.out_proj


@torch.no_grad()
def gated_head_metrics(pair: ModelPair, ref: Reference) -> dict:
    """Per kind: the last head of layer 0 gated to 0 against HF with that head's columns zeroed, and a copy with that
    head pruned for real against the gate at 0 (fewer parameters, same log-probs)."""
    model, batch, spec = pair.adaptive, ref.batch, pair.adaptive.spec
    out, plan = {}, {}
    for kind in KINDS:
        head = spec.heads(kind) - 1
        plan[kind] = {0: [head]}
        projection = hf_output_projection(pair.hf, kind, 0).weight
        columns = projection[:, head * spec.head_dim:(head + 1) * spec.head_dim]
        saved_columns, saved_gates = columns.clone(), model.gates[kind].detach().clone()
        try:
            columns.zero_()
            model.gates[kind][0, head] = 0
            hf_zeroed, ours = logprobs(pair.hf, batch), logprobs(model, batch)
        finally:
            columns.copy_(saved_columns)
            model.gates[kind].copy_(saved_gates)
        out[kind] = {"layer": 0, "head": head, "max_logprob_diff": (ours - hf_zeroed).abs().max().item(),
                     "hf_effect": (hf_zeroed - ref.theirs).abs().max().item()}
    # Pruning is gating's arithmetic with the zero terms left out, so the two are compared in float64, where that
    # holds to rounding of rounding: in fp32 other matrix shapes round differently (flan-T5-small's synthetic
    # weights: 1.6e-4 apart with one encoder head pruned in fp32, 0.0 in float64).
    gated, pruned = copy.deepcopy(model).double(), copy.deepcopy(model).double()
    for kind, layers in plan.items():
        for layer, heads in layers.items():
            gated.gates[kind][layer, heads] = 0
    pruned.prune_heads(plan)
    metrics = {"zero_gate_vs_hf_zeroed": out, "pruned_heads": plan,
               "pruned_vs_gated_max_diff_fp64": (logprobs(pruned, batch) - logprobs(gated, batch)).abs().max().item(),
               "pruned_params": pruned.num_parameters(), "unpruned_params": model.num_parameters()}
    del gated, pruned
    return metrics


PRUNED_VS_GATED_FP64 = 1e-9  # max |Δ log p| in float64 between pruned heads and the same gates at 0


def gated_head_problems(pair: ModelPair, metrics: dict) -> list[str]:
    problems = []
    if pair.dtype == "float32":  # half precision records them; its rounding has no bar of this kind
        limit = grading.fp32_logprob_limit(metrics)
        problems += [f"a {kind} head gated to 0 differs from HF with it zeroed by {m['max_logprob_diff']:.2e} "
                     f"(> {limit:.1e})" for kind, m in metrics["zero_gate_vs_hf_zeroed"].items()
                     if m["max_logprob_diff"] > limit]
    if metrics["pruned_vs_gated_max_diff_fp64"] > PRUNED_VS_GATED_FP64:
        problems.append(f"pruned for real, the heads differ from their gates at 0 by "
                        f"{metrics['pruned_vs_gated_max_diff_fp64']:.2e} in float64 (> {PRUNED_VS_GATED_FP64:.0e})")
    if metrics["pruned_params"] >= metrics["unpruned_params"]:
        problems.append("pruning removed no parameters")
    return problems


@torch.no_grad()
def rank_check(pair: ModelPair, batch: Batch, ours, theirs, k: int) -> tuple[bool, int | None]:
    """Where the greedy targets first differ, each side's token must be in the other's top-k there."""
    ok, first_divergence = True, None
    for row in range(ours.shape[0]):
        diff = (ours[row, 1:] != theirs[row, 1:]).nonzero()
        if not len(diff):
            continue
        at = 1 + diff[0].item()
        first_divergence = at - 1 if first_divergence is None else min(first_divergence, at - 1)
        row_batch = Batch(batch.ids[row:row + 1], batch.mask[row:row + 1], ours[row:row + 1, :at])
        top_ours = pair.adaptive(**row_batch.call()).logits[0, -1].topk(k).indices
        top_theirs = pair.hf(**row_batch.call()).logits[0, -1].topk(k).indices
        ok &= bool((ours[row, at] == top_theirs).any() and (theirs[row, at] == top_ours).any())
    return ok, first_divergence


@torch.no_grad()
def widened_max_diff(pair: ModelPair, ref: Reference) -> float:
    with widened_to_fp32(pair.adaptive):
        return (logprobs(pair.adaptive, ref.batch) - ref.widened).abs().max().item()


@torch.no_grad()
def check_quality(pair: ModelPair, text: str | None = None, fail_fast: bool = False) -> dict:
    """As the decoder-only quality check (grading.grade_quality), on the target's log-probs. `text` is not used:
    perplexity of a text needs a source to condition on."""
    ref = hf_reference(pair)
    batch, real, theirs = ref.batch, ref.batch.real, ref.theirs
    calls = adaptive_logprobs(pair, ref)
    ours = calls["padded"][0]
    k = grading.HALF_PRECISION_LOGPROB_TOP_K
    top = torch.cat([t.topk(k, dim=-1).indices for t in (theirs, ours, ref.fp32) if t is not None], dim=-1)
    metrics = {"max_logprob_diff": (ours - theirs).abs().max().item(),
               f"max_logprob_diff_top{k}": (ours.gather(-1, top) - theirs.gather(-1, top)).abs().max().item(),
               "kl": (theirs.exp() * (theirs - ours)).sum(-1).mean().item(),
               "top1_agreement": (ours.argmax(-1) == theirs.argmax(-1)).float().mean().item(),
               "source_padding": "right", "target_positions": int(real.sum())}
    if ref.attention_paths_diff is not None:
        metrics["baseline_attention_paths_diff"] = ref.attention_paths_diff
    if ref.fp32 is not None:
        metrics["reference_stats"] = reference_stats(ref.fp32, batch.target, real)
    if ref.widened is not None:
        metrics.update(widened_max_logprob_diff=widened_max_diff(pair, ref),
                       widened_attention_paths_diff=ref.widened_paths_diff)
    if pair.dtype != "float32":
        if ref.fp32 is None:
            metrics["fp32_reference"] = ref.fp32_note
        else:
            metrics.update(grading.rounding_excess(ours=ours, baseline=theirs, reference=ref.fp32, tokens=top, real=real,
                                                   dtype=pair.dtype))
            half = {name: grading.half_precision_error(ours=o, baseline=t, reference=f, real=r)
                    for name, (o, t, f, r) in calls.items()}
            metrics.update(half_precision=half, kl_ratio=max(h["kl_ratio"] for h in half.values()),
                           error_ratio=max(h["error_ratio"] for h in half.values()))
    if fail_fast and grading.grade_quality(pair.dtype, {**metrics, "greedy_identical": True,
                                                        "rank_check": True}) == grading.POOR:
        metrics["grade"] = grading.POOR
        raise _quality_failure(pair, metrics)

    g_theirs = ref.greedy
    g_ours = pair.adaptive.generate(batch.ids, attention_mask=batch.mask, max_new_tokens=grading.GREEDY_TOKENS)
    identical = g_ours.shape == g_theirs.shape and bool(torch.equal(g_ours, g_theirs))
    if g_ours.shape != g_theirs.shape:  # one side stopped at eos for every row
        width = min(g_ours.shape[1], g_theirs.shape[1])
        g_ours, g_theirs = g_ours[:, :width], g_theirs[:, :width]
    rank_ok, first_div = (True, None) if identical else rank_check(pair, batch, g_ours, g_theirs,
                                                                  grading.RANK_CHECK_TOP_K)
    metrics.update(greedy_agreement=(g_ours[:, 1:] == g_theirs[:, 1:]).float().mean().item(),
                   greedy_identical=identical, first_greedy_divergence=first_div, rank_check=rank_ok)
    grade = grading.grade_quality(pair.dtype, metrics)
    metrics["grade"] = grade
    if grade == grading.POOR:
        raise _quality_failure(pair, metrics)
    problems = []
    if not fail_fast:
        metrics.update(gated_head_metrics(pair, ref))
        problems = gated_head_problems(pair, metrics)
    if pair.real_weights and pair.tokenizer is not None:
        metrics["sample_output"] = sample_output(pair)
    if problems:
        metrics["grade"] = grading.POOR
        raise CheckFailed("; ".join(problems), metrics)
    degenerate = degenerate_reason(metrics["reference_stats"]) if "reference_stats" in metrics else None
    if degenerate:
        metrics["grade"] = grading.INCONCLUSIVE
        raise CheckInconclusive(f"inconclusive: {degenerate}, so agreement with it proves little", metrics)
    return metrics


SAMPLE_SOURCE = "translate English to German: The house is wonderful."


@torch.no_grad()
def sample_output(pair: ModelPair) -> str:
    enc = pair.tokenizer(SAMPLE_SOURCE, return_tensors="pt").to(pair.device)
    out = pair.adaptive.generate(enc["input_ids"], attention_mask=enc["attention_mask"],
                                 max_new_tokens=grading.SAMPLE_TOKENS)
    return pair.tokenizer.decode(out[0], skip_special_tokens=True)


# mutation ----------------------------------------------------------------------------------------------------

def check_mutation(pair: ModelPair, names=None) -> dict:
    """The decoder-only mutation check (checks/mutation.py) with the encoder-decoder mutants: each injected into the
    adaptive model and an fp32 copy; its effect (the fp32 copy against HF fp32 on the padded batch) makes it
    catchable past the fp32 bar, in every dtype; the row fails when a catchable mutant passes quality and infer."""
    from ..mutants_seq2seq import SEQ2SEQ_MUTANTS

    ref = hf_reference(pair)
    if ref.fp32 is None:
        raise CheckFailed(f"no fp32 reference to measure mutants against: {ref.fp32_note}")
    try:
        memo(pair.cache, QUALITY, lambda: check_quality(pair))
        memo(pair.cache, INFER, lambda: check_infer(pair))
    except CheckFailed as exc:
        raise CheckFailed(f"the unmutated model already fails ({exc}); a mutation score would mean nothing",
                          exc.metrics) from None
    fp32_model = pair.adaptive if pair.dtype == "float32" else pair.load_fp32_adaptive()
    bar = grading.mutation_bar(ref.attention_paths_diff if pair.dtype == "float32" else ref.widened_paths_diff)
    half = pair.dtype != "float32"
    longest = max([ref.batch.target.shape[1]] + [b.target.shape[1] for b, _, _ in ref.statistics.values()])
    mutants = {}
    for name, m in SEQ2SEQ_MUTANTS.items():
        if names is not None and name not in names:
            continue
        why_not = m.inapplicable(pair.adaptive, longest=longest, dtype=pair.dtype)
        undo = why_not or m.apply(pair.adaptive)
        if isinstance(undo, str):
            mutants[name] = {"applicable": False, "reason": undo}
            continue
        undo_fp32 = m.apply(fp32_model) if fp32_model is not pair.adaptive else (lambda: None)
        try:
            with torch.no_grad():  # a full forward, and decoding through the cache (a cache-only bug moves that)
                effect = max((logprobs(fp32_model, ref.batch) - ref.fp32).abs().max().item(),
                             (cached_logprobs(fp32_model, ref.batch) - ref.fp32).abs().max().item())
            caught_by, by_statistics = "", False
            for check in (functools.partial(check_quality, fail_fast=True), check_infer):
                try:
                    check(pair)
                except (CheckFailed, CheckInconclusive) as exc:
                    caught_by = f"{'infer' if check is check_infer else 'quality'}: {str(exc)[:160]}"
                    by_statistics = any(probe["grade"] == grading.POOR
                                        for probe in exc.metrics.get("half_precision", {}).values())
                    break
        finally:
            undo()
            undo_fp32()
        mutants[name] = {"applicable": True, "effect": effect, "catchable": effect > bar,
                         "caught": bool(caught_by), "caught_by": caught_by}
        if half:
            mutants[name]["caught_by_statistics"] = by_statistics
    del fp32_model
    ran = [(n, v) for n, v in mutants.items() if v["applicable"]]
    catchable = [n for n, v in ran if v["catchable"]]
    missed = [n for n in catchable if not mutants[n]["caught"]]
    score = {"caught": len(catchable) - len(missed), "catchable": len(catchable), "missed": missed,
             "catch_rate": (len(catchable) - len(missed)) / len(catchable) if catchable else None,
             "below_bar": len(ran) - len(catchable), "not_applicable": len(mutants) - len(ran),
             "caught_below_bar": sum(1 for n, v in ran if not v["catchable"] and v["caught"]),
             "meaning": "sensitivity" if pair.dtype == "float32" else "power"}
    if half:
        score["caught_by_statistics"] = sum(1 for n in catchable if mutants[n]["caught_by_statistics"])
    metrics = {"mutants": mutants, "mutation_score": score, "bar": bar}
    if missed:
        raise CheckFailed(f"{len(missed)} of {len(catchable)} catchable mutants (fp32 effect above {bar:.1e}) passed "
                          f"the {pair.dtype} checks: "
                          + ", ".join(f"{n} (effect {mutants[n]['effect']:.2e})" for n in missed), metrics)
    return metrics
