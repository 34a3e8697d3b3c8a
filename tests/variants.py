"""Tiny HF configs, one per architecture variant the parity tests must cover."""

from transformers import (BloomConfig, FalconConfig, GemmaConfig, Gemma3TextConfig, GPT2Config, GPTJConfig, GPTNeoConfig, GPTNeoXConfig,
                          LlamaConfig, MistralConfig, OPTConfig, PhiConfig, Phi3Config, Qwen2Config, StableLmConfig)

VOCAB = 512


def _rope(theta: float, **scaling):
    """Rope settings under both transformers 4.x (rope_theta/rope_scaling) and 5.x (rope_parameters) names."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return {"rope_parameters": {"rope_type": scaling.pop("rope_type", "default"), "rope_theta": theta, **scaling}}
    partial = {"partial_rotary_factor": scaling.pop("partial_rotary_factor")} if "partial_rotary_factor" in scaling else {}
    if scaling.get("rope_type") == "longrope":  # 4.x's Phi3Config wants exactly type, short_factor, long_factor
        scaling.pop("original_max_position_embeddings", None)  # given at the top level too
        scaling["type"] = scaling.pop("rope_type")
    return {"rope_theta": theta, **partial, **({"rope_scaling": scaling} if scaling else {})}


def hf_attention(name: str) -> str:
    """The HF attention a variant's reference runs: the family registry's answer (Falcon-RW's ALiBi: SDPA)."""
    from sentinel_core.families import reference_attention

    return reference_attention(variants()[name])


def _gemma3_rope(global_theta: float, local_theta: float, **scaling):
    """Gemma 3's two ropes: 5.x's rope_parameters per layer kind, or 4.x's rope_theta/rope_scaling/rope_local_base_freq."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        full = {"rope_type": scaling.pop("rope_type", "default"), "rope_theta": global_theta, **scaling}
        return {"rope_parameters": {"full_attention": full,
                                    "sliding_attention": {"rope_type": "default", "rope_theta": local_theta}}}
    return {"rope_theta": global_theta, "rope_local_base_freq": local_theta, **({"rope_scaling": scaling} if scaling else {})}


def variants() -> dict:
    common_gpt2 = dict(vocab_size=VOCAB, n_positions=64, n_embd=64, n_head=4, bos_token_id=1, eos_token_id=2)
    return {
        "gpt2": GPT2Config(**common_gpt2, n_layer=2),
        "gpt2-inverse-layer-idx": GPT2Config(**common_gpt2, scale_attn_by_inverse_layer_idx=True, n_layer=3),
        "opt-pre-ln": OPTConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, ffn_dim=128,
                                num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=64),
        "opt-350m-style": OPTConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, ffn_dim=128,
                                    num_attention_heads=4, max_position_embeddings=64, word_embed_proj_dim=32,
                                    do_layer_norm_before=False),
        "neox-parallel": GPTNeoXConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=128, max_position_embeddings=64, rotary_pct=0.25,
                                       use_parallel_residual=True, tie_word_embeddings=False),
        "neox-serial": GPTNeoXConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=64, rotary_pct=0.5,
                                     use_parallel_residual=False, tie_word_embeddings=False),
        "bloom": BloomConfig(vocab_size=VOCAB, hidden_size=64, n_layer=2, n_head=4),
        "bloom-post-ln-residual-6-heads": BloomConfig(vocab_size=VOCAB, hidden_size=72, n_layer=2, n_head=6,
                                                      apply_residual_connection_post_layernorm=True),
        "llama-gqa": LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                 tie_word_embeddings=False, **_rope(10000.0)),
        "llama-bias-tied-llama3-rope": LlamaConfig(
            vocab_size=VOCAB, hidden_size=96, intermediate_size=128, num_hidden_layers=2, num_attention_heads=6,
            num_key_value_heads=2, head_dim=32, max_position_embeddings=256, attention_bias=True, mlp_bias=True,
            tie_word_embeddings=True,
            **_rope(500000.0, rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=32)),
        "gpt-neo-local-layers": GPTNeoConfig(vocab_size=VOCAB, hidden_size=64, num_layers=3, num_heads=4,
                                             max_position_embeddings=128, window_size=5,
                                             attention_types=[[["global", "local"], 1], [["local"], 1]],
                                             bos_token_id=1, eos_token_id=2),
        "stablelm-qkv-bias": StableLmConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                            use_qkv_bias=True, tie_word_embeddings=False,
                                            **_rope(10000.0, partial_rotary_factor=0.25)),
        "stablelm-parallel-shared-norm": StableLmConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
                                                        num_hidden_layers=2, num_attention_heads=4,
                                                        num_key_value_heads=4,
                                                        max_position_embeddings=128, use_parallel_residual=True,
                                                        tie_word_embeddings=False,
                                                        **_rope(10000.0, partial_rotary_factor=0.5)),
        "gptj-interleaved-rotary": GPTJConfig(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=128,
                                              rotary_dim=8, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
        "mistral-sliding-window": MistralConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
                                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                max_position_embeddings=128, sliding_window=5,
                                                tie_word_embeddings=False, **_rope(10000.0)),
        "qwen2-qkv-bias-sliding-layer": Qwen2Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
                                                    num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                                                    max_position_embeddings=128, use_sliding_window=True,
                                                    sliding_window=6, max_window_layers=1,
                                                    tie_word_embeddings=True, **_rope(1000000.0)),
        "phi-partial-rotary-parallel": PhiConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                             num_attention_heads=4, max_position_embeddings=128,
                                             tie_word_embeddings=False, **_rope(10000.0, partial_rotary_factor=0.5)),
        "phi3-fused-gqa-sliding-window": Phi3Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
                                                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                    max_position_embeddings=128, sliding_window=5,
                                                    tie_word_embeddings=False, pad_token_id=0, bos_token_id=1,
                                                    eos_token_id=2, **_rope(10000.0)),
        # LongRoPE (Phi-3-128k, Phi-3.5, Phi-4-mini): short factors up to position 16, long ones past it; the
        # parity tests' greedy decoding crosses that point. Partial rotary as in Phi-4-mini.
        "phi3-longrope-partial-rotary": Phi3Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
                                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                   max_position_embeddings=128, original_max_position_embeddings=16,
                                                   tie_word_embeddings=True, pad_token_id=0, bos_token_id=1,
                                                   eos_token_id=2,
                                                   **_rope(10000.0, rope_type="longrope", partial_rotary_factor=0.75,
                                                           original_max_position_embeddings=16,
                                                           short_factor=[1.0, 1.1, 1.3, 1.6, 2.0, 2.5],
                                                           long_factor=[1.5, 2.0, 3.0, 5.0, 8.0, 13.0])),
        "falcon-7b-style-multi-query-parallel": FalconConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                                                             num_attention_heads=4, multi_query=True,
                                                             parallel_attn=True, bias=False, ffn_hidden_size=128,
                                                             **_rope(10000.0)),
        "falcon-40b-style-grouped-two-norms-bias": FalconConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                                                                num_attention_heads=4, num_kv_heads=2,
                                                                new_decoder_architecture=True, parallel_attn=True,
                                                                num_ln_in_parallel_attn=2, bias=True,
                                                                ffn_hidden_size=96, **_rope(10000.0)),
        "falcon-serial-multi-head": FalconConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                                                 num_attention_heads=4, multi_query=False, parallel_attn=False,
                                                 bias=True, tie_word_embeddings=False, **_rope(10000.0)),
        # Falcon-RW: ALiBi, serial block, multi-head. 12 heads: 4 extra slopes from base 2^-0.5, which bf16
        # rounds (Falcon's slopes go through bf16, BLOOM's do not); head_dim 8. Its HF reference is SDPA.
        "falcon-rw-alibi-12-heads": FalconConfig(vocab_size=VOCAB, hidden_size=96, num_hidden_layers=2,
                                                 num_attention_heads=12, multi_query=False, parallel_attn=False,
                                                 alibi=True, bias=True, tie_word_embeddings=True),
        # Dynamic NTK rope past max_position_embeddings = 8: the parity batch (13 tokens) is past it in a full
        # forward, and the unpadded generate (5-token prompt) crosses it while decoding from the cache.
        "llama-dynamic-rope": LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8,
                                          tie_word_embeddings=False, **_rope(10000.0, rope_type="dynamic", factor=2.0)),
        "neox-dynamic-rope-partial-rotary": GPTNeoXConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                                                          num_attention_heads=4, intermediate_size=128,
                                                          max_position_embeddings=8, rotary_pct=0.5,
                                                          use_parallel_residual=True, tie_word_embeddings=False,
                                                          **_rope(10000.0, rope_type="dynamic", factor=3.0,
                                                                  partial_rotary_factor=0.5)),
        "falcon-dynamic-rope": FalconConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                            multi_query=True, parallel_attn=True, bias=False, ffn_hidden_size=128,
                                            max_position_embeddings=8,
                                            **_rope(10000.0, rope_type="dynamic", factor=2.0)),
        "stablelm-dynamic-rope-partial-rotary": StableLmConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
                                                               num_hidden_layers=2, num_attention_heads=4,
                                                               num_key_value_heads=2, max_position_embeddings=8,
                                                               tie_word_embeddings=False,
                                                               **_rope(10000.0, rope_type="dynamic", factor=4.0,
                                                                       partial_rotary_factor=0.25)),
        # hidden_activation is what official Gemma configs also carry; HF runs hidden_act, and so must we.
        "gemma-multi-query-wide-heads": GemmaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
                                                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                                                    head_dim=32, max_position_embeddings=128, pad_token_id=0,
                                                    bos_token_id=1, eos_token_id=2, hidden_act="gelu_pytorch_tanh",
                                                    hidden_activation="relu", **_rope(10000.0)),
        # Gemma 3: two sliding layers (window 4: it binds on the 13-token batch) with the local base, then a full
        # one with the global base and linear scaling ×8; q/k norms, four norms per block, query_pre_attn_scalar
        # unlike head_dim, GQA.
        "gemma3-sliding-global-linear-rope": Gemma3TextConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, max_position_embeddings=128, sliding_window=4,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"], query_pre_attn_scalar=48,
            pad_token_id=0, bos_token_id=1, eos_token_id=2,
            **_gemma3_rope(1000000.0, 10000.0, rope_type="linear", factor=8.0)),
        # Full layers first and last, multi-query, attention biases, untied head, final logit soft-capping that
        # bites. attn_logit_softcapping is set too: HF's Gemma 3 never applies it, and neither may we.
        "gemma3-softcap-mqa-bias-untied": Gemma3TextConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=1, head_dim=16, max_position_embeddings=128, sliding_window=6,
            layer_types=["full_attention", "sliding_attention", "sliding_attention", "full_attention"],
            query_pre_attn_scalar=16, attention_bias=True, tie_word_embeddings=False, final_logit_softcapping=10.0,
            attn_logit_softcapping=1.0, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            **_gemma3_rope(100000.0, 1000.0)),
    }
