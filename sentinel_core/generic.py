"""The generic gated wrapper: gates for any HF causal LM whose model_type has no native converter.

The Hugging Face model runs as it is. A forward pre-hook on each attention's output projection views
the projection's input as [..., heads, head_dim] and multiplies head h by gates[layer, h]: the native
decoder's gate semantics (the head's context is scaled before the projection, the projection's bias is
untouched, gate 0 == the head's context zeroed). With every gate at 1 the hook multiplies nothing
(outside autograd; under it by 1.0, so gates get gradients), so the logits are HF's exactly, by construction.
"""

from __future__ import annotations

from .names import GENERIC_WRAPPER

import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from transformers import GenerationConfig
from transformers.pytorch_utils import Conv1D

from .decoder import CausalLMOutput, KeepsFp32Buffers
from .errors import UnsupportedModelError
from .families import FAMILIES
from .generation import generate_settings
from .pretrained import PretrainedLike, save_options
from .inputs import check_gates, check_ids, check_mask, check_values, warn_if_right_padded

# What HF calls an attention's output projection, across architectures.
OUT_PROJ_NAMES = ("o_proj", "out_proj", "c_proj", "dense", "wo")
HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads", "n_heads")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")


@dataclass(frozen=True)
class WrapperSpec:
    """What the rest of the code reads from a native DecoderSpec, for a wrapped model."""

    family: str
    num_layers: int
    num_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_positions: int | None
    positions: str = "hf"  # the HF model computes its own positions; no native position kind applies


def _first(obj, keys):
    return next((getattr(obj, k) for k in keys if isinstance(getattr(obj, k, None), int)), None)


def _native() -> str:
    return ", ".join(sorted(FAMILIES))


def output_projections(model: nn.Module) -> tuple[list[nn.Module], WrapperSpec]:
    """Each layer's attention output projection, in layer order, and the geometry the gates need.

    An attention module is one whose class name says so (…Attention, …Attn) and that has a Linear or
    Conv1D child with a known output-projection name; MLPs' own c_proj/dense are never picked, as they
    sit outside attention modules.
    """
    config, family = model.config, model.config.model_type
    projections = []
    for module in model.modules():
        kind = type(module).__name__.lower()
        if "attention" not in kind and "attn" not in kind:
            continue
        for name in OUT_PROJ_NAMES:
            child = getattr(module, name, None)
            if isinstance(child, (nn.Linear, Conv1D)):
                projections.append(child)
                break
    if not projections:
        raise UnsupportedModelError(
            f"model_type {family!r} has no converter, and the generic gated wrapper found no attention output "
            f"projection ({'/'.join(OUT_PROJ_NAMES)}) in {type(model).__name__}: it has no attention heads to "
            f"gate; native families: {_native()}")
    layers = _first(config, LAYER_KEYS)
    if layers != len(projections):
        raise UnsupportedModelError(
            f"model_type {family!r}: the generic gated wrapper found {len(projections)} attention output "
            f"projections for {layers} layers, so gates [layers, heads] cannot describe it; native families: "
            f"{_native()}")
    heads = _first(config, HEAD_KEYS)
    # Conv1D (GPT-2 style) stores its weight [in, out]; Linear [out, in].
    width = projections[0].weight.shape[0] if isinstance(projections[0], Conv1D) else projections[0].in_features
    if not heads or width % heads or any(
            (p.weight.shape[0] if isinstance(p, Conv1D) else p.in_features) != width for p in projections):
        raise UnsupportedModelError(
            f"model_type {family!r}: the attention output projection takes {width} features, which the config's "
            f"head count ({heads}) does not split into equal heads; the generic gated wrapper cannot gate it")
    spec = WrapperSpec(family=family, num_layers=layers, num_heads=heads, head_dim=width // heads,
                       hidden_size=getattr(config, "hidden_size", None) or width,
                       vocab_size=config.vocab_size, max_positions=_first(config, POSITION_KEYS))
    return projections, spec


def check_wrappable(config, trust_remote_code: bool = False) -> WrapperSpec:
    """The wrapper's spec for `config`, from the model built on the meta device: fails before any weights are read."""
    from transformers import AutoModelForCausalLM

    if getattr(config, "is_encoder_decoder", False):  # its causal class would be the decoder alone
        raise UnsupportedModelError(
            f"model_type {config.model_type!r} is an encoder-decoder without a converter; native families: "
            f"{_native()}")
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except ValueError as exc:  # no causal LM class for this config
        raise UnsupportedModelError(
            f"model_type {config.model_type!r} has no converter and transformers has no causal LM class for it; "
            f"native families: {_native()}") from exc
    return output_projections(model)[1]


class GenericGatedLM(PretrainedLike, KeepsFp32Buffers, nn.Module):
    """An HF causal LM with a gate on every attention head; same interface as AdaptiveCausalLM."""

    adaptive_path = GENERIC_WRAPPER

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        projections, self.spec = output_projections(hf_model)
        self.hf = hf_model.eval()
        param = next(hf_model.parameters())
        # A Parameter, as in the native decoder: parameters = HF's + one per head. No gradient unless asked for
        # (gates.requires_grad_()), so `model.gates[l, h] = 0` needs no torch.no_grad().
        self.gates = nn.Parameter(torch.ones(self.spec.num_layers, self.spec.num_heads, device=param.device,
                                             dtype=param.dtype), requires_grad=False)
        self._projections = projections
        self._hooks = self._add_gate_hooks()
        self._hf_args = set(inspect.signature(hf_model.forward).parameters)
        self.eval()  # as HF's from_pretrained leaves a model
        # Whether every gate is 1, as read at the start of the forward or generate call under way (None
        # outside one). Read per call, never cached across calls: a write through `gates.data` bumps no
        # version counter, so nothing short of reading the values would notice it.
        self._unit_gates: bool | None = None

    def gates_are_one(self) -> bool:
        return bool((self.gates == 1).all())

    def check_call(self, input_ids, attention_mask=None, past_length: int = 0) -> bool:
        """The boundary of forward and generate: ids, mask and gates checked (one host sync). Returns whether
        every gate is 1."""
        device = self.hf.device
        check_ids(input_ids, device)
        check_mask(attention_mask, input_ids, past_length + input_ids.shape[1])
        check_gates(self.gates, self.spec.num_layers, self.spec.num_heads, device)
        kept = torch.ones_like(self.gates, dtype=torch.bool)
        return check_values(input_ids, self.hf.get_input_embeddings().num_embeddings, self.gates, kept)

    def _add_gate_hooks(self) -> list:
        return [proj.register_forward_pre_hook(partial(self._gate_heads, layer), with_kwargs=True)
                for layer, proj in enumerate(self._projections)]

    def _gate_heads(self, layer: int, module, args, kwargs):
        # Gates all at 1 are not multiplied (x · 1 is exact), which keeps the hooks' kernels out of every
        # forward and decode step; with gradients on, they are, so the gates still receive them.
        unit_gates = self._unit_gates if self._unit_gates is not None else self.gates_are_one()
        if unit_gates and not (torch.is_grad_enabled() and self.gates.requires_grad):
            return None
        def gated(x):
            gates = self.gates[layer].to(x.dtype)[:, None]  # [heads, 1] against [..., heads, head_dim]
            return (x.unflatten(-1, (self.spec.num_heads, -1)) * gates).flatten(-2)

        if args:
            return (gated(args[0]), *args[1:]), kwargs
        key = "input" if "input" in kwargs else next(iter(kwargs))  # proj(input=x) (Linear), proj(x=x) (Conv1D)
        return args, {**kwargs, key: gated(kwargs[key])}

    config = property(lambda self: self.hf.config)
    generation_config = property(lambda self: getattr(self.hf, "generation_config", None))
    num_layers = property(lambda self: self.spec.num_layers)
    num_heads = property(lambda self: self.spec.num_heads)
    device = property(lambda self: self.gates.device)
    dtype = property(lambda self: next(self.hf.parameters()).dtype)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False,
                logits_to_keep: int = 0, **kwargs) -> CausalLMOutput:
        """HF's forward, returned as the native decoder's CausalLMOutput (logits, past_key_values).

        position_ids go only to a model whose forward takes them (ALiBi models compute none). transformers
        5 calls the KV cache `cache`, 4.x `past_key_values`.
        """
        past = past_key_values.get_seq_length() if hasattr(past_key_values, "get_seq_length") else 0
        self._unit_gates = self.check_call(input_ids, attention_mask, past_length=past)
        try:
            return self._hf_forward(input_ids, attention_mask, position_ids, past_key_values, use_cache,
                                    logits_to_keep, **kwargs)
        finally:
            self._unit_gates = None

    def _hf_forward(self, input_ids, attention_mask, position_ids, past_key_values, use_cache, logits_to_keep,
                    **kwargs) -> CausalLMOutput:
        kw = dict(attention_mask=attention_mask, use_cache=use_cache, **kwargs)
        if past_key_values is not None:
            kw["cache" if "cache" in self._hf_args else "past_key_values"] = past_key_values
        if position_ids is not None and "position_ids" in self._hf_args:
            kw["position_ids"] = position_ids
        if logits_to_keep and "logits_to_keep" in self._hf_args:
            kw["logits_to_keep"] = logits_to_keep
        out = self.hf(input_ids, **kw)
        logits = out.logits[:, -logits_to_keep:] if logits_to_keep else out.logits
        cache = next((out[k] for k in ("cache", "past_key_values") if k in out), None)
        return CausalLMOutput(logits=logits, past_key_values=cache, loss=getattr(out, "loss", None))

    def prune_heads(self, heads) -> None:
        raise UnsupportedModelError(
            f"prune_heads needs a native converter; {self.spec.family} runs through the generic gated wrapper: "
            f"set those heads' gates to 0 instead (model.gates[layer, head] = 0)")

    @property
    def pruned_heads(self) -> dict[int, list[int]]:
        return {}

    def save_pretrained(self, folder, **hf_options) -> None:
        save_options(**hf_options)
        # Refused rather than half done: HF's own save_pretrained would drop the gates without a word.
        raise UnsupportedModelError(
            f"save_pretrained needs a native converter; {self.spec.family} runs through the generic gated wrapper, "
            f"which cannot save a gated model yet: save the HF model (model.hf.save_pretrained(folder)) and the "
            f"gates (torch.save(model.gates.detach(), path)), then after load_adaptive_model(folder) copy them "
            f"back (model.gates.data.copy_(torch.load(path)))")

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, generation_config=None, *, max_new_tokens=None,
                 max_length=None, do_sample=None, temperature=None, top_k=None, top_p=None,
                 repetition_penalty=None, eos_token_id=None, pad_token_id=None, min_new_tokens=None,
                 use_cache=True, streamer=None, generator: torch.Generator | None = None,
                 static_cache: bool = False, cuda_graph: bool = False, compiled: bool = False,
                 fused: bool = False, return_dict_in_generate: bool = False, **unsupported):
        """AdaptiveCausalLM.generate's arguments and meaning, run by HF generate on the gated HF model.

        The settings are resolved as the native path resolves them (`generation.generate_settings`) and
        every one is passed explicitly, so the checkpoint's generation_config cannot add settings the native
        path would not use.
        """
        if cuda_graph or compiled or fused:
            raise ValueError("cuda_graph=True, compiled=True and fused=True need a native converter; the generic gated "
                             "wrapper decodes with HF generate")
        unit_gates = self.check_call(input_ids, attention_mask)  # one host sync: ids, mask and gates
        settings = generate_settings(self, input_ids.shape[1], generation_config=generation_config,
                                     max_length=max_length, unsupported=unsupported, max_new_tokens=max_new_tokens,
                                     do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                                     repetition_penalty=repetition_penalty, eos_token_id=eos_token_id,
                                     pad_token_id=pad_token_id, min_new_tokens=min_new_tokens)
        warn_if_right_padded(attention_mask)
        kw = dict(generation_config=GenerationConfig(),
                  attention_mask=torch.ones_like(input_ids) if attention_mask is None else attention_mask,
                  max_new_tokens=settings.max_new_tokens, min_new_tokens=settings.min_new_tokens,
                  do_sample=settings.do_sample, num_beams=1, repetition_penalty=settings.repetition_penalty,
                  eos_token_id=settings.eos or None,  # HF: explicit None = no eos
                  pad_token_id=settings.pad_token_id, use_cache=use_cache, streamer=streamer,
                  return_dict_in_generate=return_dict_in_generate)
        if settings.do_sample:
            kw.update(temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
        if static_cache:
            kw["cache_implementation"] = "static"
        # Gates all at 1 (read once per call): HF's generate runs with no hooks at all, exactly HF's speed.
        if unit_gates:
            for hook in self._hooks:
                hook.remove()
        self._unit_gates = unit_gates
        try:
            with _global_rng_from(generator if settings.do_sample else None):
                return self.hf.generate(input_ids, **kw)
        finally:
            self._unit_gates = None
            if unit_gates:
                self._hooks = self._add_gate_hooks()


@contextmanager
def _global_rng_from(generator: torch.Generator | None):
    """HF samples from torch's global generator: run it from `generator`'s state, then hand the state back,
    so a seeded generator gives the draws it gives the native path."""
    if generator is None:
        yield
        return
    cuda = generator.device.type == "cuda"
    devices = [generator.device.index or 0] if cuda else []
    with torch.random.fork_rng(devices=devices):
        if cuda:
            torch.cuda.set_rng_state(generator.get_state(), generator.device)
        else:
            torch.set_rng_state(generator.get_state())
        yield
        generator.set_state(torch.cuda.get_rng_state(generator.device) if cuda else torch.get_rng_state())
