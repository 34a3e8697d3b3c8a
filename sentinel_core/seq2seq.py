"""The gated encoder-decoder: T5, BART, mBART and Marian as one transformer driven by a Seq2SeqSpec.

Three kinds of attention, each with a gate per head (`gates["encoder"]`, `gates["decoder"]`, `gates["cross"]`,
each [layers, heads]): head h's context vector is multiplied by its gate before the output projection, as in
the causal decoder. Gates at 1 give Hugging Face's model back; a gate at 0 equals removing the head.

Shapes: B batch, S source (encoder) length, T target (decoder) length, D model width, H heads, d head width.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import transformers
from torch import nn

from .decoder import activation
from .errors import CheckpointError, GateError, InputError, PruneError
from .generation import _count, _number
from .inputs import check_ids, check_mask, prune_plan
from .spec import KINDS, Seq2SeqSpec
from .names import NATIVE
from .pretrained import PretrainedLike, save_options
from .saving import save_pretrained

class Norm(nn.Module):
    def __init__(self, spec: Seq2SeqSpec):
        super().__init__()
        self.rms, self.eps = spec.norm == "rms", spec.norm_eps
        self.weight = nn.Parameter(torch.ones(spec.hidden_size))
        self.bias = None if self.rms else nn.Parameter(torch.zeros(spec.hidden_size))

    def forward(self, x):
        if not self.rms:
            return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        variance = x.float().pow(2).mean(-1, keepdim=True)  # T5LayerNorm: fp32 variance, no mean subtracted
        x = x * torch.rsqrt(variance + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x


class Attention(nn.Module):
    """Multi-head attention whose heads can be removed; `head_ids` are the original ids of the heads kept."""

    def __init__(self, spec: Seq2SeqSpec, num_heads: int):
        super().__init__()
        inner, bias = num_heads * spec.head_dim, spec.bias
        self.q = nn.Linear(spec.hidden_size, inner, bias=bias)
        self.k = nn.Linear(spec.hidden_size, inner, bias=bias)
        self.v = nn.Linear(spec.hidden_size, inner, bias=bias)
        self.o = nn.Linear(inner, spec.hidden_size, bias=bias)
        self.head_dim, self.scale = spec.head_dim, spec.score_scale
        self.register_buffer("head_ids", torch.arange(num_heads), persistent=True)

    @property
    def num_heads(self) -> int:
        return len(self.head_ids)

    def project(self, x):  # [B, L, D] -> keys, values [B, h, L, d]
        B, L, _ = x.shape
        return (self.k(x).view(B, L, -1, self.head_dim).transpose(1, 2),
                self.v(x).view(B, L, -1, self.head_dim).transpose(1, 2))

    def forward(self, x, keys, values, bias, gate):
        """x [B, T, D] queries; keys/values [B, h, L, d]; bias [B|1, H, T|1, L] (mask and positions, every original
        head); gate [H] or None (all 1)."""
        B, T, _ = x.shape
        q = self.q(x).view(B, T, -1, self.head_dim).transpose(1, 2)  # [B, h, T, d]
        if bias.shape[1] > 1:  # a per-head (T5 relative) bias: the kept heads' rows
            bias = bias[:, self.head_ids]
        scores = torch.matmul(q, keys.transpose(-1, -2)) * self.scale + bias
        probs = F.softmax(scores.float(), dim=-1).to(q.dtype)
        context = torch.matmul(probs, values)  # [B, h, T, d]
        if gate is not None:
            context = context * gate[self.head_ids].view(1, -1, 1, 1).to(context.dtype)
        return self.o(context.transpose(1, 2).reshape(B, T, -1))

    @torch.no_grad()
    def prune(self, heads: set[int]) -> None:
        """Remove the heads with these original ids: their rows of q, k, v and their columns of o."""
        keep = [i for i, h in enumerate(self.head_ids.tolist()) if h not in heads]
        rows = torch.cat([torch.arange(i * self.head_dim, (i + 1) * self.head_dim) for i in keep])
        for name in ("q", "k", "v"):
            setattr(self, name, _take_rows(getattr(self, name), rows))
        out = nn.Linear(len(rows), self.o.out_features, bias=self.o.bias is not None,
                        device=self.o.weight.device, dtype=self.o.weight.dtype)
        out.weight.copy_(self.o.weight[:, rows])
        if self.o.bias is not None:
            out.bias.copy_(self.o.bias)
        self.o = out
        self.head_ids = self.head_ids[keep]


def _take_rows(linear: nn.Linear, rows: torch.Tensor) -> nn.Linear:
    new = nn.Linear(linear.in_features, len(rows), bias=linear.bias is not None, device=linear.weight.device,
                    dtype=linear.weight.dtype)
    new.weight.copy_(linear.weight[rows])
    if linear.bias is not None:
        new.bias.copy_(linear.bias[rows])
    return new


class MLP(nn.Module):
    def __init__(self, spec: Seq2SeqSpec, width: int):
        super().__init__()
        self.up = nn.Linear(spec.hidden_size, width, bias=spec.bias)
        self.gate = nn.Linear(spec.hidden_size, width, bias=spec.bias) if spec.gated_mlp else None
        self.down = nn.Linear(width, spec.hidden_size, bias=spec.bias)
        self.act = activation(spec.activation)

    def forward(self, x):
        h = self.act(self.up(x)) if self.gate is None else self.act(self.gate(x)) * self.up(x)  # T5: wi_0 activated
        # HF keeps T5's wo in fp32 when loading in fp16 (_keep_in_fp32_modules) and feeds it in its own dtype
        return self.down(h.to(self.down.weight.dtype))


class Layer(nn.Module):
    """Self-attention, cross-attention (decoder layers only) and the MLP, each a residual sub-block."""

    def __init__(self, spec: Seq2SeqSpec, kind: str):
        super().__init__()
        heads = spec.heads(kind)
        self.pre_norm = spec.pre_norm
        self.self_attn, self.self_norm = Attention(spec, heads), Norm(spec)
        self.cross_attn = Attention(spec, heads) if kind == "decoder" else None
        self.cross_norm = Norm(spec) if kind == "decoder" else None
        self.mlp = MLP(spec, spec.encoder_ffn if kind == "encoder" else spec.decoder_ffn)
        self.mlp_norm = Norm(spec)

    def sub_block(self, x, norm, fn):
        if self.pre_norm:
            return x + fn(norm(x))
        return norm(x + fn(x))

    def forward(self, x, self_kv, self_bias, self_gate, cross_kv=None, cross_bias=None, cross_gate=None):
        x = self.sub_block(x, self.self_norm, lambda h: self.self_attn(h, *self_kv(h), self_bias, self_gate))
        if self.cross_attn is not None:
            x = self.sub_block(x, self.cross_norm, lambda h: self.cross_attn(h, *cross_kv, cross_bias, cross_gate))
        return self.sub_block(x, self.mlp_norm, self.mlp)


def relative_buckets(relative, bidirectional: bool, num_buckets: int, max_distance: int):
    """T5's bucket of each (memory - query) distance, as transformers computes it."""
    buckets = 0
    if bidirectional:
        num_buckets //= 2
        buckets = (relative > 0).to(torch.long) * num_buckets
        relative = relative.abs()
    else:
        relative = -torch.min(relative, torch.zeros_like(relative))
    exact = num_buckets // 2
    large = exact + (torch.log(relative.float() / exact) / math.log(max_distance / exact)
                     * (num_buckets - exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(relative < exact, relative, large)


class Stack(nn.Module):
    """The encoder or the decoder: positions, layers, the final norm."""

    def __init__(self, spec: Seq2SeqSpec, kind: str):
        super().__init__()
        self.spec, self.kind = spec, kind
        if spec.positions == "relative":
            self.relative_bias = nn.Embedding(spec.relative_buckets, spec.heads(kind))
        else:
            self.pos = nn.Embedding(spec.max_positions + spec.position_offset, spec.hidden_size)
        self.embed_norm = Norm(spec) if spec.embedding_norm else None
        self.layers = nn.ModuleList(Layer(spec, kind) for _ in range(spec.layers(kind)))
        self.final_norm = Norm(spec) if spec.final_norm else None

    def embed(self, tokens, past: int):
        """tokens [B, L, D] (already scaled) -> the stack's input, positions past .. past + L - 1 added."""
        if self.spec.positions == "table":
            L = tokens.shape[1]
            if past + L > self.spec.max_positions:
                raise InputError(f"{past + L} {self.kind} positions but this model has {self.spec.max_positions}: "
                                 f"shorten the input")
            positions = torch.arange(past, past + L, device=tokens.device) + self.spec.position_offset
            tokens = tokens + self.pos(positions).to(tokens.dtype)
        return self.embed_norm(tokens) if self.embed_norm is not None else tokens

    def position_bias(self, queries: int, keys: int, past: int, device) -> torch.Tensor | float:
        """[1, H, T, L] T5 relative bias, from this stack's own table (shared by its layers); 0 otherwise."""
        if self.spec.positions != "relative":
            return 0.0
        query = torch.arange(queries, device=device)[:, None] + past
        relative = torch.arange(keys, device=device)[None, :] - query
        buckets = relative_buckets(relative, bidirectional=self.kind == "encoder",
                                   num_buckets=self.spec.relative_buckets,
                                   max_distance=self.spec.relative_max_distance)
        return self.relative_bias(buckets).permute(2, 0, 1).unsqueeze(0)


def additive_mask(keep: torch.Tensor, dtype) -> torch.Tensor:
    """bool [..., L] (True: attend) -> 0 where kept, the dtype's minimum where masked, as HF adds it."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


@dataclass
class Seq2SeqCache:
    """Decoder self-attention keys/values per layer (grown each step), cross-attention keys/values (made once)."""

    self_kv: list = field(default_factory=list)
    cross_kv: list = field(default_factory=list)

    def seen(self) -> int:
        return self.self_kv[0][0].shape[2] if self.self_kv else 0


@dataclass
class Seq2SeqOutput:
    logits: torch.Tensor
    past_key_values: Seq2SeqCache | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    loss: torch.Tensor | None = None


class AdaptiveSeq2SeqLM(PretrainedLike, nn.Module):
    adaptive_path = NATIVE  # built by a converter in families/ (t5, bart, mbart, marian)

    def __init__(self, spec: Seq2SeqSpec, config=None, generation_config=None):
        super().__init__()
        self.spec, self.config, self.generation_config = spec, config, generation_config
        self.shared = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.encoder, self.decoder = Stack(spec, "encoder"), Stack(spec, "decoder")
        self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
        if spec.final_logits_bias:
            self.register_buffer("final_logits_bias", torch.zeros(1, spec.vocab_size))
        self.gates = nn.ParameterDict({kind: nn.Parameter(torch.ones(spec.layers(kind), spec.heads(kind)),
                                                          requires_grad=False) for kind in KINDS})

    def tie_weights(self) -> None:
        if self.spec.tie_embeddings:
            self.lm_head.weight = self.shared.weight

    def save_pretrained(self, folder, **hf_options) -> None:
        """Write this model, pruned and gated as it is, to `folder`; `load_adaptive_model(folder)` gives it back
        bit for bit (saving.py)."""
        save_options(**hf_options)
        save_pretrained(self, folder)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """A pruned model's state dict prunes this model the same way first (its `head_ids` say which heads each
        attention keeps), then loads as usual."""
        with torch.no_grad():
            for kind in KINDS:
                prefix = "encoder.layers" if kind == "encoder" else "decoder.layers"
                part = "cross_attn" if kind == "cross" else "self_attn"
                for i, attention in enumerate(self.attentions(kind)):
                    saved = state_dict.get(f"{prefix}.{i}.{part}.head_ids")
                    if saved is None:
                        continue
                    ids = saved.tolist() if saved.dim() == 1 and not saved.is_floating_point() else None
                    current = set(attention.head_ids.tolist())
                    if not ids or ids != sorted(set(ids)) or not set(ids) <= current:
                        raise CheckpointError(f"{kind} layer {i}: the state dict's head_ids {saved.tolist()} are not "
                                              f"distinct, increasing ids of heads this model has: the checkpoint "
                                              f"is damaged, or this model was pruned already; re-save it")
                    if current - set(ids):
                        attention.prune(current - set(ids))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def init_buffers(self, device) -> None:
        """Buffers no checkpoint holds, made on `device` (the model is built on the meta device)."""
        for kind in KINDS:
            for attention in self.attentions(kind):
                attention.head_ids = torch.arange(attention.q.out_features // self.spec.head_dim, device=device)

    @property
    def device(self) -> torch.device:
        return self.shared.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.shared.weight.dtype

    def _gates(self, kind: str):
        gates = self.gates[kind]
        if tuple(gates.shape) != (self.spec.layers(kind), self.spec.heads(kind)):
            raise InputError(f"gates[{kind!r}] has shape {tuple(gates.shape)}, expected "
                             f"{(self.spec.layers(kind), self.spec.heads(kind))}: set values in place "
                             f"(model.gates[{kind!r}][layer, head] = 0)")
        if not bool(torch.isfinite(gates).all()):
            raise GateError(f"gates[{kind!r}] hold NaN or inf: gates must be finite (1 keeps a head, 0 removes it)")
        for layer, attention in enumerate(self.attentions(kind)):
            if attention.num_heads < self.spec.heads(kind):
                pruned = torch.ones(self.spec.heads(kind), dtype=torch.bool, device=gates.device)
                pruned[attention.head_ids] = False
                if bool((gates[layer][pruned] != 0).any()):
                    raise GateError(f"a {kind} head of layer {layer} was pruned, so its gate cannot reopen it: set "
                                    f"it back to 0, or reload the model")
        if gates.requires_grad:  # a gradient is asked of them (importance): multiply even by 1
            return gates
        return None if bool((gates == 1).all()) else gates  # x * 1 is exact: skip the multiply

    def encode(self, input_ids, attention_mask=None) -> torch.Tensor:
        """input_ids [B, S] -> encoder states [B, S, D]."""
        check_ids(input_ids, self.device)
        check_mask(attention_mask, input_ids, input_ids.shape[1])
        x = self.encoder.embed(self.shared(input_ids) * self.spec.embed_scale, past=0)
        S = input_ids.shape[1]
        keep = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        bias = additive_mask(keep[:, None, None, :], x.dtype) + self.encoder.position_bias(S, S, 0, x.device)
        gates = self._gates("encoder")
        for i, layer in enumerate(self.encoder.layers):
            x = layer(x, layer.self_attn.project, bias, None if gates is None else gates[i])
        return self.encoder.final_norm(x) if self.encoder.final_norm is not None else x

    def decode(self, decoder_input_ids, encoder_states, attention_mask=None, decoder_attention_mask=None,
               cache: Seq2SeqCache | None = None) -> torch.Tensor:
        """decoder_input_ids [B, T] (the new tokens; earlier ones live in `cache`) -> states [B, T, D]."""
        check_ids(decoder_input_ids, self.device)
        past = cache.seen() if cache is not None else 0
        B, T = decoder_input_ids.shape
        check_mask(decoder_attention_mask, decoder_input_ids, past + T)
        x = self.decoder.embed(self.shared(decoder_input_ids) * self.spec.embed_scale, past=past)
        causal = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)  # [T, past + T]
        keep = causal[None, None] if decoder_attention_mask is None else \
            causal[None, None] & decoder_attention_mask.bool()[:, None, None, :]
        self_bias = additive_mask(keep, x.dtype) + self.decoder.position_bias(T, past + T, past, x.device)
        source = torch.ones(encoder_states.shape[:2], dtype=torch.bool, device=x.device) if attention_mask is None \
            else attention_mask.bool()
        cross_bias = additive_mask(source[:, None, None, :], x.dtype)
        self_gates, cross_gates = self._gates("decoder"), self._gates("cross")
        for i, layer in enumerate(self.decoder.layers):
            if cache is not None and len(cache.cross_kv) <= i:
                cache.cross_kv.append(layer.cross_attn.project(encoder_states))

            def self_kv(h, i=i, layer=layer):
                k, v = layer.self_attn.project(h)
                if cache is not None:
                    if len(cache.self_kv) > i:
                        k = torch.cat([cache.self_kv[i][0], k], dim=2)
                        v = torch.cat([cache.self_kv[i][1], v], dim=2)
                        cache.self_kv[i] = (k, v)
                    else:
                        cache.self_kv.append((k, v))
                return k, v

            cross_kv = cache.cross_kv[i] if cache is not None else layer.cross_attn.project(encoder_states)
            x = layer(x, self_kv, self_bias, None if self_gates is None else self_gates[i],
                      cross_kv, cross_bias, None if cross_gates is None else cross_gates[i])
        return self.decoder.final_norm(x) if self.decoder.final_norm is not None else x

    def logits(self, states) -> torch.Tensor:
        logits = self.lm_head(states * self.spec.logits_scale if self.spec.logits_scale != 1.0 else states)
        return logits + self.final_logits_bias.to(logits.dtype) if self.spec.final_logits_bias else logits

    def forward(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                encoder_outputs=None, past_key_values=None, use_cache=False, labels=None) -> Seq2SeqOutput:
        """HF's call: logits [B, T, V] of decoder_input_ids given the source. With labels and no decoder ids, the
        decoder reads labels shifted right behind the start token, as HF's models do."""
        if labels is not None:
            if not isinstance(labels, torch.Tensor) or labels.dim() != 2 or labels.dtype.is_floating_point:
                raise InputError("labels must be the target ids [batch, length] (-100 where no loss is wanted)")
            if not bool((labels != -100).any(dim=1).all()):
                raise InputError("a row of labels is all -100: it has no target token to score; drop the row")
        if decoder_input_ids is None:
            if labels is None:
                raise InputError("pass decoder_input_ids (the target so far, starting with the decoder start token "
                                 f"{self.spec.decoder_start_token_id}), or labels")
            decoder_input_ids = self.shift_right(labels)
        if encoder_outputs is not None:  # HF passes a BaseModelOutput or a tuple; a tensor is taken as it is
            states = encoder_outputs if isinstance(encoder_outputs, torch.Tensor) else (
                encoder_outputs[0] if isinstance(encoder_outputs, (tuple, list)) else
                getattr(encoder_outputs, "last_hidden_state", None))
            if not isinstance(states, torch.Tensor) or states.dim() != 3 or states.shape[-1] != self.spec.hidden_size:
                raise InputError(f"encoder_outputs must be the encoder's states [batch, length, "
                                 f"{self.spec.hidden_size}] (model.encode(input_ids, attention_mask)), got "
                                 f"{type(encoder_outputs).__name__}")
            check_mask(attention_mask, states[..., 0], states.shape[1])
        else:
            states = self.encode(input_ids, attention_mask)
        cache = past_key_values if past_key_values is not None else (Seq2SeqCache() if use_cache else None)
        logits = self.logits(self.decode(decoder_input_ids, states, attention_mask, decoder_attention_mask, cache))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.to(logits.device).reshape(-1),
                                   ignore_index=-100)
        return Seq2SeqOutput(logits=logits, past_key_values=cache, encoder_last_hidden_state=states, loss=loss)

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """The decoder's input for `labels`, as each family's HF model makes it: the start token, then the labels
        but their last (mBART: the last real token, its eos, goes first instead of a start token)."""
        pad = getattr(self.config, "pad_token_id", None) or 0
        labels = labels.masked_fill(labels == -100, pad)
        shifted = labels.new_full(labels.shape, self.spec.decoder_start_token_id)
        if self.spec.family == "mbart":
            last = (labels.ne(pad).sum(dim=1) - 1).clamp_min(0)
            shifted[:, 0] = labels.gather(1, last[:, None]).squeeze(1)
        shifted[:, 1:] = labels[:, :-1]
        return shifted

    # heads ---------------------------------------------------------------------------------------------

    def attentions(self, kind: str) -> list[Attention]:
        stack = self.encoder if kind == "encoder" else self.decoder
        return [layer.cross_attn if kind == "cross" else layer.self_attn for layer in stack.layers]

    @property
    def pruned_heads(self) -> dict[str, dict[int, list[int]]]:
        """{kind: {layer: [original head ids removed]}}, the shape prune_heads takes."""
        out = {}
        for kind in KINDS:
            everyone = set(range(self.spec.heads(kind)))
            removed = {i: sorted(everyone - set(a.head_ids.tolist())) for i, a in enumerate(self.attentions(kind))}
            if any(removed.values()):
                out[kind] = {i: heads for i, heads in removed.items() if heads}
        return out

    @torch.no_grad()
    def prune_heads(self, heads) -> None:
        """Remove heads for real: {"encoder": {layer: [heads]}, "decoder": {...}, "cross": {...}}. Their gates are
        set to 0, so `gates` keeps describing the model."""
        if not isinstance(heads, dict) or set(heads) - set(KINDS):
            raise InputError(f"prune_heads takes {{kind: {{layer: [head, ...]}}}} with kind one of {', '.join(KINDS)}; "
                             f"got {heads!r}")
        plans = {kind: prune_plan(plan, self.spec.layers(kind), self.spec.heads(kind)) for kind, plan in heads.items()}
        for kind, plan in plans.items():  # every plan checked before anything changes
            for layer, doomed in plan.items():
                if not set(self.attentions(kind)[layer].head_ids.tolist()) - doomed:
                    raise PruneError(f"prune_heads: {kind} layer {layer} would have no heads left; set its gates to "
                                     f"0 instead")
        for kind, plan in plans.items():
            for layer, doomed in plan.items():
                attention = self.attentions(kind)[layer]
                doomed &= set(attention.head_ids.tolist())  # heads already removed stay removed
                if doomed:
                    attention.prune(doomed)
                    self.gates[kind][layer, sorted(doomed)] = 0

    # generation ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, generation_config=None, *, generator: torch.Generator | None = None,
                 use_cache: bool = True, return_dict_in_generate: bool = False, **settings):
        """Target ids [B, 1 + new] (the decoder start token first), as HF's generate for an encoder-decoder.

        Settings are resolved as HF 5 resolves them: a keyword argument (max_new_tokens, max_length, min_length,
        do_sample, temperature, top_k, top_p, eos_token_id, pad_token_id, decoder_start_token_id,
        forced_bos_token_id, forced_eos_token_id, bad_words_ids, no_repeat_ngram_size), else the passed
        `generation_config`, else the checkpoint's generation_config, else HF's defaults (20 tokens in all, top_k 50
        when sampling). eos_token_id=[] means no eos. Greedy unless do_sample; a setting this generate does not
        implement (beam search, repetition penalty, ...) is refused by name: HF's model (load_baseline_model) has it.
        Without an attention_mask the source is attended whole, as transformers 5 does (4.x masked its pad tokens:
        INFERS_SOURCE_MASK follows the installed release).
        """
        config = self._generation_config(generation_config, settings)
        eos = config["eos_token_id"]
        if attention_mask is None and INFERS_SOURCE_MASK and config["pad_token_id"] is not None and \
                config["pad_token_id"] not in eos and isinstance(input_ids, torch.Tensor) and \
                bool((input_ids == config["pad_token_id"]).any()):
            attention_mask = (input_ids != config["pad_token_id"]).long()
        states = self.encode(input_ids, attention_mask)
        B = input_ids.shape[0]
        ids = torch.full((B, 1), config["decoder_start_token_id"], dtype=torch.long, device=input_ids.device)
        processors = _processors(config, eos, ids.device)
        cache = Seq2SeqCache() if use_cache else None
        done = torch.zeros(B, dtype=torch.bool, device=ids.device)
        pad = config["pad_token_id"] if config["pad_token_id"] is not None else (eos[0] if eos else 0)
        eos_ids = torch.tensor(eos, dtype=torch.long, device=ids.device)
        while ids.shape[1] < config["max_length"]:
            step = ids[:, -1:] if cache is not None and cache.seen() else ids
            logits = self.logits(self.decode(step, states, attention_mask, None, cache))[:, -1].float()
            scores = processors(ids, logits)
            if config["do_sample"]:
                token = torch.multinomial(F.softmax(scores, dim=-1), 1, generator=generator).squeeze(1)
            else:
                token = scores.argmax(dim=-1)
            token = torch.where(done, torch.full_like(token, pad), token)  # a finished row is padded, as in HF
            ids = torch.cat([ids, token[:, None]], dim=1)
            if eos:
                done |= torch.isin(token, eos_ids)
            if bool(done.all()):
                break
        if return_dict_in_generate:
            from transformers.generation.utils import GenerateEncoderDecoderOutput

            return GenerateEncoderDecoderOutput(sequences=ids)
        return ids

    def _generation_config(self, passed, given: dict) -> dict:
        """One generate call's settings: argument > passed config > checkpoint's config > HF's defaults."""
        unknown = sorted(set(given) - set(GENERATE_DEFAULTS))
        if unknown:
            raise InputError(f"generate() got {unknown[0]}=, which this model's generate does not take: use HF's "
                             f"model (load_baseline_model) for it, or drop it")
        if passed is not None and not hasattr(passed, "to_dict"):
            raise InputError(f"generation_config is a {type(passed).__name__}: pass a transformers.GenerationConfig")
        layers = [getattr(self, "generation_config", None), passed]
        for source, layer in zip(("the checkpoint's generation_config", "generation_config"), layers):
            for name, inert in UNIMPLEMENTED_GENERATE.items():
                value = getattr(layer, name, None) if layer is not None else None
                if value is not None and value != inert and value != [] and value != {}:
                    if layer is passed or name != "num_beams":
                        raise InputError(f"{source} sets {name}={value!r}, which this model's generate does not "
                                         f"implement: set it to {inert!r}, or use HF's model (load_baseline_model)")
                    warnings.warn(f"the checkpoint's generation_config asks for num_beams={value}; this generate "
                                  f"decodes greedily (or samples): for beam search, use HF's model", stacklevel=4)
        config = dict(GENERATE_DEFAULTS)
        for layer in layers:
            if layer is not None:
                config.update({k: getattr(layer, k) for k in GENERATE_DEFAULTS if getattr(layer, k, None) is not None})
        # eos_token_id=[] is "no eos", not "unset"
        config.update({k: v for k, v in given.items() if v is not None or (k == "eos_token_id" and v == [])})
        if given.get("max_length") is not None and given.get("max_new_tokens") is not None:
            raise InputError("generate() got both max_length and max_new_tokens: give one (max_new_tokens counts new "
                             "tokens only, max_length the decoder start token too)")
        if config["max_new_tokens"] is not None and given.get("max_length") is None:  # it wins over a max_length
            config["max_length"] = 1 + _count("max_new_tokens", config["max_new_tokens"], least=1)
        elif config["max_length"] is None:  # HF: 20 new tokens, within the learned positions
            limit = getattr(self.config, "max_position_embeddings", None) or 21
            config["max_length"] = min(1 + DEFAULT_NEW_TOKENS, limit)
        config["max_length"] = _count("max_length", config["max_length"], least=2)
        for name in ("top_k", "min_length", "no_repeat_ngram_size"):
            config[name] = _count(name, config[name], least=0)
        if not isinstance(config["do_sample"], bool):
            raise InputError(f"do_sample={config['do_sample']!r}: pass True or False")
        if config["do_sample"] and not _number("temperature", config["temperature"]) > 0:
            raise InputError(f"temperature={config['temperature']} with do_sample=True: it must be > 0")
        if not 0 < _number("top_p", config["top_p"]) <= 1:
            raise InputError(f"top_p={config['top_p']}: it must be in (0, 1]")
        config["eos_token_id"] = _as_list(config["eos_token_id"])
        config["decoder_start_token_id"] = next(t for t in (config["decoder_start_token_id"], config["bos_token_id"],
                                                            self.spec.decoder_start_token_id) if t is not None)
        return config


# generate's settings and HF's defaults for them (transformers 5 leaves every GenerationConfig field None and fills
# these in at generate time).
DEFAULT_NEW_TOKENS = 20
# transformers 4.x's generate masked an encoder-decoder's pad tokens when no attention_mask came; 5.x does not.
INFERS_SOURCE_MASK = int(transformers.__version__.split(".")[0]) < 5
GENERATE_DEFAULTS = dict(max_new_tokens=None, max_length=None, min_length=0, do_sample=False, temperature=1.0, top_k=50,
                         top_p=1.0, eos_token_id=None, pad_token_id=None, bos_token_id=None, decoder_start_token_id=None,
                         forced_bos_token_id=None, forced_eos_token_id=None, bad_words_ids=None,
                         no_repeat_ngram_size=0)
# GenerationConfig settings that change what generate computes and that this generate does not implement.
UNIMPLEMENTED_GENERATE = {"num_beams": 1, "num_return_sequences": 1, "repetition_penalty": 1.0, "min_new_tokens": 0,
                          "typical_p": 1.0, "min_p": None, "suppress_tokens": None, "begin_suppress_tokens": None,
                          "encoder_no_repeat_ngram_size": 0, "penalty_alpha": None, "length_penalty": 1.0,
                          "diversity_penalty": 0.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0}


def _as_list(value) -> list[int]:
    return [] if value is None else [value] if isinstance(value, int) else list(value)


def _processors(config: dict, eos: list[int], device):
    """transformers' own logits processors for the settings HF's generate applies to an encoder-decoder."""
    from transformers.generation.logits_process import (ForcedBOSTokenLogitsProcessor,
                                                        ForcedEOSTokenLogitsProcessor, LogitsProcessorList,
                                                        MinLengthLogitsProcessor, NoBadWordsLogitsProcessor,
                                                        NoRepeatNGramLogitsProcessor, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)

    processors = LogitsProcessorList()
    if config["no_repeat_ngram_size"]:
        processors.append(NoRepeatNGramLogitsProcessor(config["no_repeat_ngram_size"]))
    if config["bad_words_ids"]:
        processors.append(NoBadWordsLogitsProcessor(config["bad_words_ids"], eos or None))
    if config["min_length"] and eos:
        processors.append(MinLengthLogitsProcessor(config["min_length"], eos, device=device))
    if config["forced_bos_token_id"] is not None:
        processors.append(ForcedBOSTokenLogitsProcessor(config["forced_bos_token_id"]))
    if config["forced_eos_token_id"] is not None:
        processors.append(ForcedEOSTokenLogitsProcessor(config["max_length"], config["forced_eos_token_id"],
                                                        device=device))
    if config["do_sample"]:
        if config["temperature"] != 1.0:
            processors.append(TemperatureLogitsWarper(config["temperature"]))
        if config["top_k"]:
            processors.append(TopKLogitsWarper(config["top_k"]))
        if config["top_p"] < 1.0:
            processors.append(TopPLogitsWarper(config["top_p"]))
    return processors
