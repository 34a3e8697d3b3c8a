"""Which heads matter: head importance scores [layers, heads] and the pruning plans they give.

Four methods, all on the model's own gates (the native decoder's and the generic wrapper's mean the same
thing: head h's context scaled by gates[layer, h] before the output projection):

- `gradient`: Michel, Levy & Neubig 2019, I_h = E_x |dL(x)/d gate_h| at gates = 1. Each row of input_ids is
  one x (an example, or a window of a longer text): its gradient is taken alone and its absolute value
  averaged over rows, as in the paper (|mean g| would let rows cancel). `normalize=True` divides each layer's
  scores by their L2 norm, as the paper does before ranking heads across layers.
- `ablation`: L(head h gated to 0, every other head at 1) - L(all at 1), exact: one forward per head.
- `magnitude`: a weight-only baseline, the Frobenius norm of the head's input columns of the output
  projection (the slice its gate scales).
- `random`: a seeded control, uniform in [0, 1).

L is the mean next-token cross-entropy over real tokens (a position counts when both it and the token it
predicts are unmasked). While scoring, every kept head's gate is 1 (whatever it was) and pruned heads' gates
stay 0; the gates are put back exactly afterwards, no parameter is left with a .grad, and the model is left
in eval mode. Heads already removed by `prune_heads` score 0 under every method: pass
`already_pruned=model.pruned_heads` to `importance_prune_plan` so they are neither chosen nor counted.
GQA needs nothing here: scores are per query head, and `prune_heads` removes a KV head only once its whole
group is gone.
"""

from __future__ import annotations

from .names import IMPORTANCE_METHODS, NATIVE

import math

import torch
import torch.nn.functional as F

from .errors import InputError, PruneError, UnsupportedModelError
from .inputs import check_ids, check_mask

METHODS = IMPORTANCE_METHODS


def head_importance(model, input_ids, attention_mask=None, method: str = "gradient", seed: int = 0,
                    normalize: bool = False, progress=None, labels=None) -> torch.Tensor | dict[str, torch.Tensor]:
    """Importance of every head, [num_layers, num_heads] on the CPU; higher = more important.

    input_ids [B, T] (a text tokenised by the caller, one window per row) and attention_mask are needed by
    `gradient` and `ablation` only; `seed` by `random` only. `normalize`: per-layer L2 normalisation (any method).
    The model is left in eval mode (dropout off), whichever method runs. An encoder-decoder scores its three
    kinds of attention: {"encoder" | "decoder" | "cross": [layers, heads]}, the loss being that of `labels` (the
    target ids) given input_ids (the source).
    """
    model.eval()
    if getattr(getattr(model, "spec", None), "architecture", None) == "seq2seq":
        scores = seq2seq_importance(model, input_ids, attention_mask, labels, method, seed)
        return {kind: normalize_per_layer(s) for kind, s in scores.items()} if normalize else scores
    if method in ("gradient", "ablation"):
        if input_ids is None:
            raise InputError(f"head_importance(method={method!r}) scores heads on a text: pass input_ids "
                             f"[batch, length] (tokenizer(text, return_tensors='pt').input_ids)")
        check_ids(input_ids, model.device)
        check_mask(attention_mask, input_ids, input_ids.shape[1])
        if input_ids.shape[1] < 2:  # the loss predicts each token from the one before: one token predicts nothing
            raise InputError(f"head_importance(method={method!r}) got rows of {input_ids.shape[1]} token: the loss "
                             f"needs at least 2 tokens per row (tokenise a longer text)")
        if attention_mask is not None and not bool((attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()).any()):
            raise InputError(f"head_importance(method={method!r}): the attention_mask leaves no two real tokens in a "
                             f"row, so there is nothing to predict: pass the tokenizer's mask for a longer text")
    if method == "gradient":
        scores = gradient_importance(model, input_ids, attention_mask)
    elif method == "ablation":
        scores = ablation_importance(model, input_ids, attention_mask, progress=progress)
    elif method == "magnitude":
        scores = magnitude_importance(model)
    elif method == "random":
        scores = random_importance(model, seed=seed)
    else:
        raise InputError(f"unknown importance method {method!r}; use one of {', '.join(METHODS)}")
    return normalize_per_layer(scores) if normalize else scores


def normalize_per_layer(scores: torch.Tensor) -> torch.Tensor:
    """Each layer's scores divided by their L2 norm (Michel 2019); a layer of zeros stays zeros."""
    norms = scores.norm(dim=1, keepdim=True)
    return scores / torch.where(norms > 0, norms, torch.ones_like(norms))


def lm_loss(model, input_ids, attention_mask=None, reduce_rows: bool = True) -> torch.Tensor:
    """Mean next-token cross-entropy over real tokens, in fp32 at least: a scalar, or one value per row."""
    logits = model(input_ids, attention_mask=attention_mask).logits[:, :-1]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp64 stays fp64: exact tests
    targets = input_ids[:, 1:]
    real = torch.ones_like(targets, dtype=torch.bool) if attention_mask is None else (
        attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool())  # left padding: a pad predicts nothing
    nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none") * real
    if reduce_rows:
        return nll.sum() / real.sum().clamp(min=1)
    return nll.sum(dim=1) / real.sum(dim=1).clamp(min=1)


def _kept(model) -> torch.Tensor:
    """[layers, heads] bool on the CPU: False where prune_heads removed the head."""
    kept = torch.ones(model.num_layers, model.num_heads, dtype=torch.bool)
    for layer, heads in model.pruned_heads.items():
        kept[layer, heads] = False
    return kept


def _score_dtype(model) -> torch.dtype:
    # fp32 at least (half-precision scores would tie too often); fp64 models keep fp64 for exact tests.
    return torch.promote_types(model.gates.dtype, torch.float32)


class _ScoringGates:
    """Kept heads' gates at 1 and pruned ones at 0 while scoring; on exit the exact previous values,
    requires_grad and .grad come back, and the model is in eval mode."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        gates = self.model.gates
        self.saved = gates.detach().clone()
        self.requires_grad, self.grad = gates.requires_grad, gates.grad
        self.kept = _kept(self.model).to(gates.device)
        self.model.eval()
        with torch.no_grad():
            gates.copy_(self.kept.to(gates.dtype))
        return self.kept

    def __exit__(self, *exc):
        gates = self.model.gates
        with torch.no_grad():
            gates.copy_(self.saved)
        gates.requires_grad_(self.requires_grad)
        gates.grad = self.grad
        self.model.eval()
        return False


def gradient_importance(model, input_ids, attention_mask=None) -> torch.Tensor:
    """Michel 2019: the mean over rows of |dL(row)/d gates| at gates = 1; pruned heads 0.

    torch.autograd.grad differentiates with respect to the gates alone, so no parameter gets a .grad.
    """
    gates = model.gates
    total = torch.zeros(gates.shape, dtype=_score_dtype(model), device=gates.device)
    rows = 0
    with _ScoringGates(model) as kept:
        gates.requires_grad_(True)  # the wrapper multiplies by its gates only when they need a gradient
        for row in range(input_ids.shape[0]):
            mask = None if attention_mask is None else attention_mask[row:row + 1]
            if mask is not None and int((mask[:, 1:].bool() & mask[:, :-1].bool()).sum()) == 0:
                continue  # no real token to predict in this row: it is no example
            loss = lm_loss(model, input_ids[row:row + 1], mask)
            (grad,) = torch.autograd.grad(loss, gates)
            total += grad.abs().to(total.dtype)
            rows += 1
    if rows == 0:
        raise InputError("gradient importance needs at least one row with two real (unmasked) tokens in a row: "
                         "pass a text, or fix the attention_mask")
    return (total / rows).masked_fill(~kept, 0).cpu()


@torch.no_grad()
def ablation_importance(model, input_ids, attention_mask=None, progress=None) -> torch.Tensor:
    """L(head alone gated to 0) - L(every gate 1): one forward of the whole batch per kept head."""
    gates = model.gates
    scores = torch.zeros(gates.shape, dtype=_score_dtype(model))
    with _ScoringGates(model) as kept:
        base = lm_loss(model, input_ids, attention_mask)
        heads = kept.nonzero().tolist()
        for done, (layer, head) in enumerate(heads, start=1):
            gates[layer, head] = 0
            try:
                scores[layer, head] = (lm_loss(model, input_ids, attention_mask) - base).item()
            finally:
                gates[layer, head] = 1  # every kept gate is 1 inside _ScoringGates
            if progress is not None:
                progress(done, len(heads))
    return scores


@torch.no_grad()
def magnitude_importance(model) -> torch.Tensor:
    """Frobenius norm of each head's input columns of its layer's output projection; pruned heads 0."""
    scores = torch.zeros(model.num_layers, model.num_heads, dtype=_score_dtype(model))
    hd = model.spec.head_dim
    for layer, (weight, head_ids) in enumerate(_output_projection_weights(model)):
        # weight [out, heads * head_dim]: head i of this layer (original id head_ids[i]) owns columns i*hd:(i+1)*hd
        # in fp64: a norm of thousands of squares in fp32 drifts with the reduction order (seen: 1e-6 relative)
        per_head = weight.unflatten(1, (len(head_ids), hd)).double().norm(dim=(0, 2))
        scores[layer, head_ids] = per_head.to(device="cpu", dtype=scores.dtype)
    return scores


def _output_projection_weights(model):
    """(weight laid out [out, heads * head_dim], original head ids of its column blocks) per layer."""
    if getattr(model, "adaptive_path", None) == NATIVE:
        return [(layer.attn.out.weight, layer.attn.head_ids.tolist()) for layer in model.layers]
    from transformers.pytorch_utils import Conv1D

    weights = []
    for proj in getattr(model, "_projections", []):
        if isinstance(proj, Conv1D):  # GPT-2 style: weight [in, out]
            weights.append((proj.weight.t(), list(range(model.num_heads))))
        elif isinstance(proj, torch.nn.Linear):
            weights.append((proj.weight, list(range(model.num_heads))))
        else:
            weights = None
            break
    if not weights:
        raise UnsupportedModelError(
            f"magnitude importance: the output projection layout of {getattr(model.spec, 'family', '?')} "
            f"(generic gated wrapper) is unknown, so its per-head columns cannot be read; use method "
            f"'gradient' or 'ablation', which need only the gates")
    return weights


def random_importance(model, seed: int = 0) -> torch.Tensor:
    """Uniform [0, 1) scores from a torch.Generator seeded with `seed` (the global RNG is untouched); pruned heads 0."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(model.num_layers, model.num_heads, generator=g, dtype=_score_dtype(model))
    return scores.masked_fill(~_kept(model), 0)


def seq2seq_importance(model, input_ids, attention_mask, labels, method: str, seed: int) -> dict[str, torch.Tensor]:
    """head_importance's four methods over an encoder-decoder's three gate tensors (each kept head's gate at 1,
    pruned ones at 0 while scoring; every gate put back exactly afterwards)."""
    if method not in METHODS:
        raise InputError(f"unknown importance method {method!r}; use one of {', '.join(METHODS)}")
    kinds = list(model.gates)
    kept = {kind: model.gates[kind].new_zeros(model.gates[kind].shape, dtype=torch.bool) for kind in kinds}
    for kind in kinds:
        for layer, attention in enumerate(model.attentions(kind)):
            kept[kind][layer, attention.head_ids] = True
    dtype = torch.promote_types(model.dtype, torch.float32)
    if method == "random":
        g = torch.Generator().manual_seed(seed)
        return {kind: torch.rand(kept[kind].shape, generator=g, dtype=dtype).masked_fill(~kept[kind].cpu(), 0)
                for kind in kinds}
    if method == "magnitude":
        scores = {}
        for kind in kinds:
            scores[kind] = torch.zeros(kept[kind].shape, dtype=dtype)
            for layer, attention in enumerate(model.attentions(kind)):
                weight = attention.o.weight.unflatten(1, (attention.num_heads, model.spec.head_dim))
                scores[kind][layer, attention.head_ids.cpu()] = weight.double().norm(dim=(0, 2)).cpu().to(dtype)
        return scores
    if input_ids is None or labels is None:
        raise InputError(f"head_importance(method={method!r}) on an encoder-decoder scores heads on a source and "
                         f"its target: pass input_ids (the source) and labels (the target ids)")
    saved = {kind: model.gates[kind].detach().clone() for kind in kinds}
    try:
        with torch.no_grad():
            for kind in kinds:
                model.gates[kind].copy_(kept[kind].to(model.gates[kind].dtype))

        def loss():
            return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss

        if method == "gradient":  # Michel 2019: the mean over rows of |dL/d gate|
            for kind in kinds:
                model.gates[kind].requires_grad_(True)
            total = {kind: torch.zeros(kept[kind].shape, dtype=dtype) for kind in kinds}
            for row in range(input_ids.shape[0]):
                mask = None if attention_mask is None else attention_mask[row:row + 1]
                value = model(input_ids=input_ids[row:row + 1], attention_mask=mask, labels=labels[row:row + 1]).loss
                grads = torch.autograd.grad(value, [model.gates[kind] for kind in kinds])
                for kind, grad in zip(kinds, grads):
                    total[kind] += grad.abs().cpu().to(dtype)
            return {kind: (total[kind] / input_ids.shape[0]).masked_fill(~kept[kind].cpu(), 0) for kind in kinds}
        scores = {kind: torch.zeros(kept[kind].shape, dtype=dtype) for kind in kinds}
        with torch.no_grad():  # ablation: the loss increase with that head alone gated to 0
            base = loss()
            for kind in kinds:
                for layer, head in kept[kind].nonzero().tolist():
                    model.gates[kind][layer, head] = 0
                    scores[kind][layer, head] = (loss() - base).item()
                    model.gates[kind][layer, head] = 1
        return scores
    finally:
        with torch.no_grad():
            for kind in kinds:
                model.gates[kind].requires_grad_(False)
                model.gates[kind].copy_(saved[kind])


def importance_prune_plan(scores: torch.Tensor, fraction: float | None = None, count: int | None = None,
                          per_layer: bool = False, min_heads_per_layer: int = 1,
                          already_pruned: dict[int, list[int]] | None = None) -> dict[int, list[int]]:
    """The least important heads to remove, {layer: [head, ...]}, ready for model.prune_heads.

    Give `fraction` (of all heads, or of each layer's with per_layer) or `count` (heads in all, or per layer).
    Global ranking takes the lowest scores across layers, skipping a head whose layer is already down to
    `min_heads_per_layer`; per-layer ranking takes the same number from every layer. Ties go to the lower
    (layer, head). `already_pruned` (model.pruned_heads) are neither chosen nor counted as kept. With
    min_heads_per_layer=0 a layer may be emptied: prune_heads refuses that, gate such a layer to 0 instead.
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        raise PruneError(f"importance_prune_plan: scores must be a [layers, heads] tensor, got "
                         f"{tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__}")
    if not torch.isfinite(scores).all():
        raise PruneError("importance_prune_plan: scores hold NaN or inf; every head needs a finite score")
    if (fraction is None) == (count is None):
        raise PruneError("importance_prune_plan: give exactly one of fraction (e.g. 0.3) or count (e.g. 12)")
    if isinstance(min_heads_per_layer, bool) or not isinstance(min_heads_per_layer, int) or min_heads_per_layer < 0:
        raise PruneError(f"importance_prune_plan: min_heads_per_layer must be an integer >= 0, got "
                         f"{min_heads_per_layer!r}")
    num_layers, num_heads = scores.shape
    kept = torch.ones(num_layers, num_heads, dtype=torch.bool)
    for layer, heads in (already_pruned or {}).items():
        kept[layer, list(heads)] = False
    kept_per_layer = kept.sum(dim=1).tolist()
    prunable = [max(0, k - min_heads_per_layer) for k in kept_per_layer]

    # How many heads to take: in all (global) or from each layer (per_layer).
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise PruneError(f"importance_prune_plan: fraction must be a number in [0, 1), got {fraction!r}")
        wanted = ([round(fraction * k) for k in kept_per_layer] if per_layer
                  else round(fraction * sum(kept_per_layer)))
        what = f"fraction {fraction}"
    else:
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise PruneError(f"importance_prune_plan: count must be an integer >= 0, got {count!r}")
        wanted = [count] * num_layers if per_layer else count
        what = f"count {count}"

    order = sorted(((scores[layer, head].item(), layer, head) for layer, head in kept.nonzero().tolist()))
    plan: dict[int, list[int]] = {}
    if per_layer:
        for layer in range(num_layers):
            if wanted[layer] > prunable[layer]:
                raise PruneError(f"importance_prune_plan: {what} asks for {wanted[layer]} heads of layer {layer}, "
                                 f"but only {prunable[layer]} of its {kept_per_layer[layer]} can go while keeping "
                                 f"min_heads_per_layer={min_heads_per_layer}")
            chosen = [head for _, lay, head in order if lay == layer][:wanted[layer]]
            if chosen:
                plan[layer] = sorted(chosen)
        return plan
    if wanted > sum(prunable):
        raise PruneError(f"importance_prune_plan: {what} asks for {wanted} heads, but only {sum(prunable)} of "
                         f"{sum(kept_per_layer)} can go while keeping min_heads_per_layer={min_heads_per_layer} "
                         f"in every layer")
    left = list(prunable)
    taken = 0
    for _, layer, head in order:
        if taken == wanted:
            break
        if left[layer] == 0:
            continue  # this layer is down to min_heads_per_layer: its next head is kept
        plan.setdefault(layer, []).append(head)
        left[layer] -= 1
        taken += 1
    return {layer: sorted(heads) for layer, heads in sorted(plan.items())}


class gated_plan:
    """`with gated_plan(model, plan):` the plan's heads gated to 0 (the same model as prune_heads(plan), without
    touching a weight), every other gate as it was; the exact previous gates come back on exit."""

    def __init__(self, model, plan: dict[int, list[int]]):
        self.model, self.plan = model, plan

    def __enter__(self):
        self.saved = self.model.gates.detach().clone()
        with torch.no_grad():
            for layer, heads in self.plan.items():
                self.model.gates[layer, list(heads)] = 0
        return self.model

    def __exit__(self, *exc):
        with torch.no_grad():
            self.model.gates.copy_(self.saved)


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, window: int) -> float:
    """exp(mean next-token NLL) of one token row [1, T], read in consecutive windows of `window` tokens."""
    nll, count = 0.0, 0
    for start in range(0, ids.shape[1] - 1, window):
        chunk = ids[:, start:start + window]
        if chunk.shape[1] < 2:
            break
        logp = model(chunk).logits[0, :-1].float().log_softmax(-1)
        # Per-token log-probs in fp32, their sum in fp64: an fp32 sum would round two models' totals alike.
        nll -= logp.gather(-1, chunk[0, 1:, None]).double().sum().item()
        count += chunk.shape[1] - 1
    return math.exp(nll / count)


def calibration_and_heldout(tokenizer, text: str, calibration_rows: int, calibration_length: int,
                            heldout_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint token sets of one text: importance is estimated on the first (rows of consecutive windows
    from its start, [rows, length]) and perplexity measured on the second (its last tokens, [1, heldout])."""
    ids = tokenizer(text, return_tensors="pt")["input_ids"][0]
    needed = calibration_rows * calibration_length + heldout_tokens
    if ids.numel() < needed:
        raise InputError(f"the text has {ids.numel()} tokens; calibration ({calibration_rows} x "
                         f"{calibration_length}) and held-out ({heldout_tokens}) splits need {needed}: "
                         f"give a longer text or smaller splits")
    calibration = ids[:calibration_rows * calibration_length].view(calibration_rows, calibration_length)
    return calibration, ids[-heldout_tokens:][None]
