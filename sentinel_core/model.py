"""AdaptiveCausalLM: the gated decoder with the HF config, generation and head pruning."""

from __future__ import annotations

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .decoder import GatedDecoder, KVCache
from .spec import DecoderSpec


class AdaptiveCausalLM(GatedDecoder):
    def __init__(self, spec: DecoderSpec, config=None):
        super().__init__(spec)
        self.config = config

    @property
    def num_layers(self) -> int:
        return self.spec.num_layers

    @property
    def num_heads(self) -> int:
        return self.spec.num_heads

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    @torch.no_grad()
    def prune_heads(self, heads: dict[int, list[int]]) -> None:
        """Remove heads (original head ids per layer) for real: fewer weights, less compute.

        Their gates are set to 0 so `gates` keeps describing the model; in GQA a KV head goes only
        when every query head reading it is gone.
        """
        for layer, head_list in heads.items():
            doomed = set(head_list)
            bad = [h for h in doomed if not 0 <= h < self.num_heads]
            if not 0 <= layer < self.num_layers or bad:
                raise ValueError(f"prune_heads: no head {bad or head_list} in layer {layer}")
            self.layers[layer].attn.prune(doomed)
            self.gates[layer, sorted(doomed)] = 0

    def pruned_heads(self) -> dict[int, list[int]]:
        all_heads = set(range(self.num_heads))
        return {i: sorted(all_heads - set(layer.attn.head_ids.tolist()))
                for i, layer in enumerate(self.layers) if layer.attn.num_heads != self.num_heads}

    def _logits_processors(self, do_sample, temperature, top_k, top_p, repetition_penalty) -> LogitsProcessorList:
        # transformers' own processors, so sampling means exactly what it means in HF generate.
        processors = LogitsProcessorList()
        if repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
        if do_sample:
            if temperature != 1.0:
                processors.append(TemperatureLogitsWarper(temperature))
            if top_k:
                processors.append(TopKLogitsWarper(top_k))
            if top_p < 1.0:
                processors.append(TopPLogitsWarper(top_p))
        return processors

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, max_new_tokens=20, do_sample=False, temperature=1.0,
                 top_k=0, top_p=1.0, repetition_penalty=1.0, eos_token_id=None, pad_token_id=None,
                 use_cache=True, streamer=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ids [B, T + new], prompt included. Positions follow HF generate: cumsum(mask) - 1."""
        if eos_token_id is None and self.config is not None:
            eos_token_id = getattr(self.config, "eos_token_id", None)
        eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
        if pad_token_id is None:
            pad_token_id = (getattr(self.config, "pad_token_id", None) if self.config is not None else None)
            pad_token_id = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
        B = input_ids.shape[0]
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(input_ids.dtype)
        processors = self._logits_processors(do_sample, temperature, top_k, top_p, repetition_penalty)
        eos_t = torch.tensor(eos, device=input_ids.device)
        unfinished = torch.ones(B, dtype=torch.bool, device=input_ids.device)
        ids = input_ids
        cache = KVCache(self.num_layers) if use_cache else None
        step_ids = ids
        if streamer is not None:
            streamer.put(input_ids.cpu())
        for _ in range(max_new_tokens):
            positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
            positions = positions[:, -step_ids.shape[1]:]
            out = self(step_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                       logits_to_keep=1)
            scores = processors(ids, out.logits[:, -1].float())
            if do_sample:
                probs = torch.softmax(scores, dim=-1)
                next_ids = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            else:
                next_ids = scores.argmax(-1)
            next_ids = torch.where(unfinished, next_ids, torch.full_like(next_ids, pad_token_id))
            ids = torch.cat([ids, next_ids[:, None]], dim=1)
            mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)
            step_ids = next_ids[:, None] if use_cache else ids
            if streamer is not None:
                streamer.put(next_ids.cpu())
            if eos:
                unfinished &= ~torch.isin(next_ids, eos_t)
                if not unfinished.any():
                    break
        if streamer is not None:
            streamer.end()
        return ids
