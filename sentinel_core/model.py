"""AdaptiveCausalLM: the gated decoder with the HF config, generation and head pruning."""

from __future__ import annotations

from .names import NATIVE

import torch
from transformers.generation.utils import GenerateDecoderOnlyOutput
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .decoder import GatedDecoder, KVCache, StaticKVCache
from .errors import DeviceError, InputError, PruneError, UnsupportedModelError
from .generation import GenerateSettings, generate_settings, position_ids
from .inputs import prune_plan, warn_if_right_padded
from .placement import is_split, offloaded
from .pretrained import PretrainedLike, save_options
from .saving import save_pretrained
from .spec import DecoderSpec


class AdaptiveCausalLM(PretrainedLike, GatedDecoder):
    adaptive_path = NATIVE  # built by a converter in families/; the other path is generic.GenericGatedLM

    def __init__(self, spec: DecoderSpec, config=None, generation_config=None):
        super().__init__(spec)
        self.config = config
        self.generation_config = generation_config  # the checkpoint's, for eos/pad defaults

    @property
    def num_layers(self) -> int:
        return self.spec.num_layers

    @property
    def num_heads(self) -> int:
        return self.spec.num_heads

    @property
    def device(self) -> torch.device:
        return self.input_device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    @torch.no_grad()
    def prune_heads(self, heads: dict[int, list[int]]) -> None:
        """Remove heads (original head ids per layer) for real: fewer weights, less compute.

        Their gates are set to 0 so `gates` keeps describing the model; in GQA a KV head goes only
        when every query head reading it is gone. Every request is checked before anything changes.
        """
        plan = prune_plan(heads, self.num_layers, self.num_heads)
        if offloaded(self):
            raise PruneError("prune_heads on a model with offloaded layers (device_map 'cpu' or 'disk' beside a GPU): "
                             "their weights are loaded per forward and cannot be cut; prune on a device, save, and "
                             "place the saved model, or set the gates to 0")
        for layer, doomed in plan.items():
            if not set(self.layers[layer].attn.head_ids.tolist()) - doomed:
                raise PruneError(f"prune_heads: layer {layer} would have no heads left; set its gates to 0 instead")
        for layer, doomed in plan.items():
            self.layers[layer].attn.prune(doomed)
            self.gates[layer, sorted(doomed)] = 0

    def save_pretrained(self, folder, **hf_options) -> None:
        """Write this model, pruned and gated as it is, to `folder`; `load_adaptive_model(folder)` gives it back
        bit for bit (weights as safetensors, the HF config and a sentinel.json manifest: see saving.py)."""
        save_options(**hf_options)
        if offloaded(self):
            raise UnsupportedModelError("save_pretrained on a model with offloaded layers (device_map 'cpu' or 'disk' "
                                        "beside a GPU): their weights are not in the model; save the model before "
                                        "placing it")
        save_pretrained(self, folder)

    def compiled_forward(self):
        """forward through torch.compile, made once per model (shapes are specialised on first use)."""
        if getattr(self, "_compiled_forward", None) is None:
            self._compiled_forward = torch.compile(self.forward, dynamic=False)
        return self._compiled_forward

    @property
    def pruned_heads(self) -> dict[int, list[int]]:
        """{layer: [original head ids removed]}, as HF's attention modules keep it; layers with every head absent."""
        all_heads = set(range(self.num_heads))
        return {i: sorted(all_heads - set(layer.attn.head_ids.tolist()))
                for i, layer in enumerate(self.layers) if layer.attn.num_heads != self.num_heads}


    @staticmethod
    def _logits_processors(settings: GenerateSettings) -> LogitsProcessorList:
        # transformers' own processors, so sampling means exactly what it means in HF generate.
        processors = LogitsProcessorList()
        if settings.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
        if settings.do_sample:
            if settings.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(settings.temperature))
            if settings.top_k:
                processors.append(TopKLogitsWarper(settings.top_k))
            if settings.top_p < 1.0:
                processors.append(TopPLogitsWarper(settings.top_p))
        return processors

    def _fused_step(self, input_ids):
        from .fused import FusedDecodeStep  # Triton is imported only when asked for

        if input_ids.shape[0] != 1:
            raise InputError(f"fused=True decodes a batch of one sequence, not {input_ids.shape[0]}: generate them one "
                             f"at a time, or pass cuda_graph=True for a batch")
        if self.dtype not in (torch.bfloat16, torch.float16):
            raise InputError(f"fused=True is the half precision decode path (fp32 keeps HF's arithmetic); this model is "
                             f"{self.dtype}: load it with dtype='bfloat16', or pass cuda_graph=True")
        return FusedDecodeStep(self)

    def _check_room(self, prompt_length: int, max_new_tokens: int) -> None:
        """Learned positions end at the table's last row: a longer sequence has no position to take."""
        room = self.spec.max_positions
        if self.spec.positions == "learned" and prompt_length + max_new_tokens > room > 0:
            raise InputError(f"a {prompt_length}-token prompt plus max_new_tokens={max_new_tokens} is longer than "
                             f"the {room} positions this model learned: pass max_new_tokens={room - prompt_length} "
                             f"or less" if room > prompt_length else
                             f"the prompt has {prompt_length} tokens but this model learned {room} positions: shorten "
                             f"it")

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, generation_config=None, *, max_new_tokens=None,
                 max_length=None, do_sample=None, temperature=None, top_k=None, top_p=None,
                 repetition_penalty=None, eos_token_id=None, pad_token_id=None, min_new_tokens=None,
                 use_cache=True, streamer=None, generator: torch.Generator | None = None,
                 static_cache: bool = False, cuda_graph: bool = False, compiled: bool = False,
                 fused: bool = False, return_dict_in_generate: bool = False, **unsupported):
        """Ids [B, T + new], prompt included (or HF's GenerateDecoderOnlyOutput with return_dict_in_generate).
        Positions follow HF generate: cumsum(mask) - 1.

        Greedy, 20 new tokens, unless told otherwise: by the arguments, or by a `generation_config` passed in
        (`generation.generate_settings` says which wins). eos_token_id None takes the checkpoint's, as HF
        does; [] means no eos at all. min_new_tokens forbids eos before that many new tokens (HF's processor).

        `static_cache` preallocates the KV cache; `cuda_graph` (CUDA only) also captures one decode
        step in a CUDA graph and replays it: same tokens as eager, far less launch overhead.
        `compiled` (CUDA only) builds that graph from the torch.compile'd step: fused kernels, faster
        still, but they round differently, so in half precision tokens can part from eager's (the
        benchmark records how often). Each new batch size or length compiles again.
        `fused` (half precision, one sequence) decodes each token in a few Triton kernels per layer (fused.py),
        captured in a CUDA graph: it rounds as the eager step does but sums in another order, so its tokens can
        part from eager's at near-ties (the matrix grades it as HF's own half precision is graded).
        """
        unit_gates = self.check_call(input_ids, attention_mask)
        settings = generate_settings(self, input_ids.shape[1], generation_config=generation_config,
                                     max_length=max_length, unsupported=unsupported, max_new_tokens=max_new_tokens,
                                     do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                                     repetition_penalty=repetition_penalty, eos_token_id=eos_token_id,
                                     pad_token_id=pad_token_id, min_new_tokens=min_new_tokens)
        max_new_tokens, eos, pad_token_id = settings.max_new_tokens, settings.eos, settings.pad_token_id
        self._check_room(input_ids.shape[1], max_new_tokens)
        warn_if_right_padded(attention_mask)
        if (static_cache or cuda_graph or compiled or fused) and is_split(self):
            raise InputError("static_cache, cuda_graph, compiled and fused preallocate the KV cache on one device: a "
                             "model placed across devices (device_map) decodes with its dynamic cache; leave them off")
        if fused and compiled:
            raise InputError("fused=True and compiled=True are two decode paths: pass one of them")
        if (cuda_graph or compiled) and input_ids.device.type != "cuda":
            raise DeviceError("cuda_graph=True and compiled=True need the model and inputs on a CUDA device: "
                              "model.to('cuda'), or leave them off")
        step_forward = self.compiled_forward() if compiled else self
        if fused:  # on a CPU only under Triton's interpreter (the tests), without a CUDA graph
            step_forward = self._fused_step(input_ids)
            static_cache, cuda_graph = True, input_ids.device.type == "cuda"
        B = input_ids.shape[0]
        do_sample = settings.do_sample
        processors = self._logits_processors(settings)
        if settings.min_new_tokens and eos:
            processors.insert(0, MinNewTokensLengthLogitsProcessor(input_ids.shape[1], settings.min_new_tokens, eos,
                                                                   device=input_ids.device))
        eos_t = torch.tensor(eos, device=input_ids.device)
        unfinished = torch.ones(B, dtype=torch.bool, device=input_ids.device)
        decoding = _Decoding(self, input_ids, attention_mask, max_new_tokens, use_cache=use_cache,
                             static=static_cache or cuda_graph or compiled, cuda_graph=cuda_graph or compiled,
                             step_forward=step_forward, unit_gates=unit_gates)
        ids = input_ids
        if streamer is not None:
            streamer.put(input_ids.cpu())
        logits = decoding.prefill()
        for step in range(max_new_tokens):
            scores = processors(ids, logits.float())
            if do_sample:
                next_ids = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator).squeeze(1)
            else:
                next_ids = scores.argmax(-1)
            next_ids = torch.where(unfinished, next_ids, torch.full_like(next_ids, pad_token_id))
            ids = torch.cat([ids, next_ids[:, None]], dim=1)
            if streamer is not None:
                streamer.put(next_ids.cpu())
            if eos:
                unfinished &= ~torch.isin(next_ids, eos_t)
                if not unfinished.any():
                    break
            if step + 1 < max_new_tokens:
                logits = decoding.step(next_ids)
        if streamer is not None:
            streamer.end()
        return GenerateDecoderOnlyOutput(sequences=ids) if return_dict_in_generate else ids


class _Decoding:
    """The forward passes of one generate call: prefill, then one step per new token.

    Without padding no mask is passed at all, so SDPA runs its causal fast path; with padding the
    mask grows with the sequence and positions follow it. A static cache keeps every shape fixed,
    which is what lets a CUDA graph replay the step.
    """

    def __init__(self, model, input_ids, attention_mask, max_new_tokens, use_cache, static, cuda_graph, step_forward,
                 unit_gates: bool):
        self.model, self.input_ids, self.step_forward = model, input_ids, step_forward
        self.mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(input_ids.dtype)
        self.padded = attention_mask is not None and bool((self.mask == 0).any())  # one sync, before decoding
        self.use_cache, self.static, self.cuda_graph = use_cache or static, static, cuda_graph
        self.max_len = input_ids.shape[1] + max_new_tokens
        self.graph = None
        self.ids, self.length = input_ids, input_ids.shape[1]  # all ids so far, while they may be needed again
        rerun_at = model.spec.rerun_at_length
        self.rerun_at = rerun_at if input_ids.shape[1] < rerun_at <= self.max_len else 0
        # Read once per call (gates do not change while generating); generate runs without gradients.
        self.unit_gates = unit_gates

    positions = staticmethod(position_ids)  # HF generate's rule (generation.py)

    def prefill(self) -> torch.Tensor:
        model, ids = self.model, self.input_ids
        B, T = ids.shape
        if self.static:
            self.cache = StaticKVCache(model, B, self.max_len)
            self.full_mask = torch.zeros(B, self.max_len, dtype=ids.dtype, device=ids.device)
            self.full_mask[:, :T] = self.mask
            positions = self.positions(self.mask)
            self.next_pos = positions[:, -1:] + 1
            out = model(ids, attention_mask=self.full_mask, position_ids=positions, past_key_values=self.cache,
                        logits_to_keep=1, unit_gates=self.unit_gates)
            return out.logits[:, -1]
        self.cache = KVCache(model.num_layers) if self.use_cache else None
        return self._forward(ids).logits[:, -1]

    def _forward(self, ids):
        if not self.padded:
            return self.model(ids, past_key_values=self.cache, use_cache=self.use_cache, logits_to_keep=1,
                              unit_gates=self.unit_gates)
        positions = self.positions(self.mask)[:, -ids.shape[1]:]
        return self.model(ids, attention_mask=self.mask, position_ids=positions, past_key_values=self.cache,
                          use_cache=self.use_cache, logits_to_keep=1, unit_gates=self.unit_gates)

    def step(self, next_ids: torch.Tensor) -> torch.Tensor:
        self.length += 1
        rerun = self.length == self.rerun_at  # Phi-3: the prefix runs again (see DecoderSpec.rerun_at_length)
        if not self.use_cache or self.length <= self.rerun_at:
            self.ids = torch.cat([self.ids, next_ids[:, None]], dim=1)
        if self.static:
            return self._static_rerun() if rerun else self._static_step(next_ids)
        if self.padded:
            self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        if rerun and self.use_cache:
            self.cache = KVCache(self.model.num_layers)
        if self.use_cache and not rerun:
            return self._forward(next_ids[:, None]).logits[:, -1]
        return self._forward(self.ids).logits[:, -1]

    def _static_rerun(self) -> torch.Tensor:
        """The whole sequence into the static cache again, from slot 0 (not inside a CUDA graph)."""
        n = self.ids.shape[1]
        self.full_mask[:, n - 1] = 1  # the new token's slot
        positions = self.positions(self.full_mask[:, :n])
        self.cache.pos.zero_()
        out = self.model(self.ids, attention_mask=self.full_mask, position_ids=positions, past_key_values=self.cache,
                         logits_to_keep=1, unit_gates=self.unit_gates)
        self.next_pos.copy_(positions[:, -1:] + 1)
        return out.logits[:, -1]

    def _static_body(self) -> torch.Tensor:
        self.full_mask.index_fill_(1, self.cache.pos.view(1), 1)
        out = self.step_forward(self.step_ids, attention_mask=self.full_mask, position_ids=self.next_pos,
                         past_key_values=self.cache, logits_to_keep=1, unit_gates=self.unit_gates)
        self.next_pos.add_(1)
        return out.logits[:, -1]

    def _static_step(self, next_ids: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "step_ids"):
            self.step_ids = next_ids[:, None].clone()
            if self.cuda_graph:
                self._capture()
        else:
            self.step_ids.copy_(next_ids[:, None])
        if self.graph is None:
            return self._static_body()
        self.graph.replay()
        return self.graph_logits

    def _capture(self) -> None:
        # Warm up on a side stream (as torch.cuda.graphs asks), then undo the warm-up's writes.
        saved = (self.cache.pos.clone(), self.next_pos.clone(), self.full_mask.clone())
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._static_body()
        torch.cuda.current_stream().wait_stream(stream)
        self.cache.pos.copy_(saved[0])
        self.next_pos.copy_(saved[1])
        self.full_mask.copy_(saved[2])
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.graph_logits = self._static_body()
