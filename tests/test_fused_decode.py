"""The fused decode path (sentinel_core/fused.py, triton_kernels.py): each kernel against torch, then a whole decode
step against the eager decoder's, on the families it runs. Without a GPU Triton's interpreter runs the kernels
(conftest.py sets TRITON_INTERPRET); on a GPU they are compiled."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sentinel_core import load_adaptive_model
from sentinel_core.decoder import StaticKVCache, alibi_slopes
from sentinel_core.errors import InputError, UnsupportedModelError

tk = pytest.importorskip("sentinel_core.triton_kernels")
if not tk.available():
    pytest.skip("Triton is not installed (pip install -e '.[test]')", allow_module_level=True)
from sentinel_core.fused import FusedDecodeStep, unsupported_reason  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FP32_TOL = 1e-4  # fp32's bar for "the same model": only the order of a dot product's sums differs


@pytest.fixture(autouse=True, scope="module")
def interpreter_rounds_to_nearest():
    """Triton's interpreter narrows fp32 to bf16/fp16 by truncation (its cast passes no rounding mode), where the
    GPU rounds to nearest even: on the interpreter, narrowing goes through torch's own conversion instead."""
    if not tk.interpreted():
        yield
        return
    import triton.language as tl
    from triton.runtime import interpreter

    original = interpreter._convert_float

    def to_nearest(values, from_dtype, to_dtype, rounding_mode):
        if from_dtype == tl.float32 and to_dtype in (tl.bfloat16, tl.float16):
            wide = torch.from_numpy(np.ascontiguousarray(values).view(np.float32).copy())
            narrow = wide.to(torch.bfloat16 if to_dtype == tl.bfloat16 else torch.float16)
            return narrow.view(torch.int16).numpy().view(np.uint16)
        return original(values, from_dtype, to_dtype, rounding_mode)

    interpreter._convert_float = to_nearest
    yield
    interpreter._convert_float = original


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", ["rms-gated-silu", "layernorm-gelu-bias-residual", "rms-unit-offset-tanh-gelu",
                                  "plain-relu", "layernorm-no-affine-bloom-gelu"])
@pytest.mark.parametrize("tiles", ["one-tile", "many-tiles"])
def test_linear_kernel_matches_torch(case, dtype, tiles, monkeypatch):
    g = torch.Generator().manual_seed(0)
    K, N = 96, 40  # neither a multiple of the blocks
    blocks = (1, 128, 4) if tiles == "one-tile" else (2, 32, 4)  # K read in one tile, or in three
    monkeypatch.setattr(tk, "linear_blocks", lambda n, k, device: blocks)
    rand = lambda *shape: torch.randn(*shape, generator=g).to(dtype).to(DEVICE)  # noqa: E731
    x, w, b, nw, nb, res = rand(K), rand(2 * N, K) / 8, rand(2 * N), rand(K), rand(K), rand(N)
    kw, ref_in = {}, x
    if case.startswith("rms"):
        offset = "unit-offset" in case
        kw = dict(norm="rmsnorm_unit_offset" if offset else "rmsnorm", norm_weight=nw, eps=0.1)
        ref_in = (F.rms_norm(x.float(), (K,), eps=0.1) * (1 + nw.float())).to(dtype) if offset \
            else nw * F.rms_norm(x, (K,), eps=0.1)
    elif case.startswith("layernorm"):
        affine = "no-affine" not in case
        kw = dict(norm="layernorm", norm_weight=nw if affine else None, norm_bias=nb if affine else None, eps=0.1)
        ref_in = F.layer_norm(x, (K,), nw if affine else None, nb if affine else None, 0.1)
    act = {"rms-gated-silu": "silu", "layernorm-gelu-bias-residual": "gelu", "rms-unit-offset-tanh-gelu": "gelu_new",
           "plain-relu": "relu", "layernorm-no-affine-bloom-gelu": "bloom_gelu"}[case]
    gated, bias, residual = "gated" in case, "bias" in case, res if "residual" in case else None
    from sentinel_core.decoder import activation

    out = torch.empty(N, dtype=dtype, device=DEVICE)
    tk.linear(x, w if gated else w[:N], out, bias=(b if gated else b[:N]) if bias else None, residual=residual,
              activation=act, gated=gated, **kw)
    y = F.linear(ref_in, w if gated else w[:N], (b if gated else b[:N]) if bias else None)
    if gated:
        gate, up = y.chunk(2)
        y = activation(act)(gate) * up
    else:
        y = activation(act)(y)
    if residual is not None:
        y = y + residual
    if dtype == torch.float32:
        assert (out - y).abs().max().item() <= 1e-5 * max(1.0, y.abs().max().item())
    else:  # the same roundings, a dot product summed in another order: a few units of the last place of the
        # result, or of the inputs' rounding carried through the dot product where its terms cancel
        eps = torch.finfo(dtype).eps
        scale = F.linear(ref_in.float().abs(), (w if gated else w[:N]).float().abs())
        scale = torch.maximum(scale[:N], scale[N:]) if gated else scale
        bound = 4 * eps * (y.float().abs() + scale * (1 + (residual is not None)))
        excess = ((out.float() - y.float()).abs() / bound).max().item()
        assert excess <= 1, f"{case}: {excess:.2f}× the rounding bound from torch"


def attention_reference(q, k, v, keep, scale, gates, kv_of_head, slopes=None, key_pos=None):
    """Softmax attention of one query per head over its KV head's kept keys, in fp32."""
    k, v = k.float()[kv_of_head], v.float()[kv_of_head]  # [heads, S, hd]
    scores = torch.einsum("hd,hsd->hs", q.float(), k) * scale
    if slopes is not None:
        scores = scores + slopes[:, None] * key_pos[None]
    scores = scores.masked_fill(~keep[None], float("-inf"))
    return torch.einsum("hs,hsd->hd", scores.softmax(-1), v) * gates[:, None]


@pytest.mark.parametrize("case", ["uneven-groups-gates-rotary", "alibi-padding", "window-partial-rotary"])
def test_decode_attention_kernel_matches_torch(case):
    g = torch.Generator().manual_seed(1)
    hd, max_len, slot = 24, 40, 29  # head_dim not a power of two; more slots than one interpreter block
    kv_of_head = torch.tensor([0, 0, 0, 1, 2, 2])  # pruning's uneven groups: 3, 1 and 2 query heads per KV head
    nh, nkv = len(kv_of_head), 3
    rand = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    qkv = rand((nh + 2 * nkv) * hd)
    k_cache, v_cache = rand(nkv, max_len, hd), rand(nkv, max_len, hd)
    mask = torch.ones(max_len, dtype=torch.long)
    rotary_dim = {"uneven-groups-gates-rotary": hd, "alibi-padding": 0, "window-partial-rotary": 8}[case]
    cos = sin = None
    q, k_new, v_new = qkv[: nh * hd].view(nh, hd), qkv[nh * hd:(nh + nkv) * hd].view(nkv, hd), qkv[(nh + nkv) * hd:].view(nkv, hd)
    if rotary_dim:
        angles = rand(rotary_dim // 2)
        cos = torch.cat([angles.cos(), angles.cos()])
        sin = torch.cat([-angles.sin(), angles.sin()])  # the decoder's signed sin
        rotate = lambda x: torch.cat([x[:, :rotary_dim] * cos + x[:, :rotary_dim].roll(rotary_dim // 2, -1) * sin,  # noqa: E731
                                      x[:, rotary_dim:]], -1)
        q, k_new = rotate(q), rotate(k_new)
    gates = rand(nh).abs() if "gates" in case else torch.ones(nh)
    slopes = key_pos = None
    keep = torch.arange(max_len) <= slot
    if "padding" in case:
        mask[:5] = 0
        keep &= mask.bool()
    if "window" in case:
        keep &= torch.arange(max_len) > slot - 7
    if "alibi" in case:
        slopes = alibi_slopes(nh)
        key_pos = ((mask.cumsum(-1) - 1) * mask).float()
    k_all, v_all = k_cache.clone(), v_cache.clone()
    k_all[:, slot], v_all[:, slot] = k_new, v_new
    expected = attention_reference(q, k_all, v_all, keep, hd ** -0.5, gates, kv_of_head, slopes, key_pos)
    writes = torch.tensor([1, 0, 0, 1, 1, 0], dtype=torch.int32)
    out = torch.empty(nh * hd)
    on = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
    k_dev, v_dev = k_cache.to(DEVICE), v_cache.to(DEVICE)
    tk.decode_attention(qkv.to(DEVICE), k_dev, v_dev, out := out.to(DEVICE), cos=on(cos), sin=on(sin),
                        slot=torch.tensor(slot, device=DEVICE), mask=mask.to(DEVICE),
                        gates=gates.to(DEVICE) if "gates" in case else None,
                        head_ids=torch.arange(nh, dtype=torch.int32, device=DEVICE),
                        kv_of_head=kv_of_head.to(torch.int32).to(DEVICE), writes_kv=writes.to(DEVICE), n_heads=nh,
                        n_kv_heads=nkv, head_dim=hd, rotary_dim=rotary_dim, scale=hd ** -0.5,
                        window=7 if "window" in case else None, alibi_slopes=on(slopes), key_positions=on(key_pos))
    assert (out.cpu().view(nh, hd) - expected).abs().max().item() <= 1e-5
    # the new key and value went into the cache, rotated, at the slot, and nowhere else
    assert torch.allclose(k_dev.cpu(), k_all, atol=1e-6) and torch.equal(v_dev.cpu(), v_all)


# One variant per layout the fused step has a branch for.
STEP_VARIANTS = ["llama-gqa", "gpt2", "neox-parallel", "opt-350m-style", "bloom", "mistral-sliding-window",
                 "phi3-longrope-partial-rotary", "gemma-multi-query-wide-heads", "gptj-interleaved-rotary",
                 "qwen2-qkv-bias-sliding-layer", "gpt-neo-local-layers"]


def decode(model, ids, prompt: int, step) -> torch.Tensor:
    """Log-probs of every position after the prompt: the prompt through the eager forward into a static cache, then
    each next token through `step` (teacher-forced)."""
    T = ids.shape[1]
    cache = StaticKVCache(model, 1, T)
    mask = torch.zeros(1, T, dtype=torch.long, device=ids.device)
    mask[:, :prompt] = 1
    out = [model(ids[:, :prompt], attention_mask=mask, position_ids=torch.arange(prompt, device=ids.device)[None],
                 past_key_values=cache, logits_to_keep=1, unit_gates=False).logits[:, -1]]
    for t in range(prompt, T - 1):
        mask[:, t] = 1
        out.append(step(ids[:, t:t + 1], attention_mask=mask, position_ids=torch.tensor([[t]], device=ids.device),
                        past_key_values=cache, logits_to_keep=1, unit_gates=False).logits[:, -1])
    return torch.cat(out).float().log_softmax(-1)


@pytest.fixture(scope="module")
def step_models(synthetic_folders):
    made = {}

    def get(name, dtype=torch.float32):
        if (name, dtype) not in made:
            made[name, dtype] = load_adaptive_model(synthetic_folders(name), dtype=dtype, device=DEVICE)
        return made[name, dtype]

    return get


def random_ids(model, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, model.spec.vocab_size, (1, length), generator=g).to(DEVICE)


@pytest.mark.parametrize("name", STEP_VARIANTS)
def test_fused_step_equals_eager_step_in_fp32(name, step_models):
    model = step_models(name)
    assert unsupported_reason(model) is None
    ids = random_ids(model, 8)
    eager, fused = decode(model, ids, 4, model), decode(model, ids, 4, FusedDecodeStep(model))
    diff = (eager - fused).abs().max().item()
    assert diff <= FP32_TOL, f"{name}: fused step {diff:.2e} from the eager step"


def test_fused_step_in_bf16_rounds_as_the_eager_step(step_models, synthetic_folders):
    """Against the fp32 model on the same (bf16-rounded) weights, the fused bf16 step is no further than the eager
    bf16 step is (its mean |Δ log p|, within 25%: the dot products sum in another order)."""
    bf16 = step_models("llama-gqa", torch.bfloat16)
    fp32 = load_adaptive_model(synthetic_folders("llama-gqa"), device=DEVICE)
    with torch.no_grad():
        for p32, p16 in zip(fp32.parameters(), bf16.parameters()):
            p32.copy_(p16.float())
    ids = random_ids(bf16, 12, seed=3)
    reference = decode(fp32, ids, 4, fp32)
    eager = (decode(bf16, ids, 4, bf16) - reference).abs().mean().item()
    fused = (decode(bf16, ids, 4, FusedDecodeStep(bf16)) - reference).abs().mean().item()
    assert fused <= 1.25 * eager, f"fused bf16 mean |Δ log p| {fused:.3e} against eager bf16's {eager:.3e}"


def test_pruned_uneven_groups_and_gates_at_zero_agree_in_the_fused_step(synthetic_folders):
    """Gates at 0 equal pruning through the fused step, with pruning leaving uneven GQA groups (read through
    kv_of_head, no gather), and a gate between 0 and 1 acts."""
    folder = synthetic_folders("llama-gqa")
    gated, pruned = (load_adaptive_model(folder, device=DEVICE) for _ in range(2))
    plan = {0: [0], 1: [1, 2]}  # layer 0 keeps query heads 1, 2, 3: KV head 0 serves one of them, KV head 1 two
    for layer, heads in plan.items():
        gated.gates[layer, heads] = 0.0
    pruned.prune_heads(plan)
    assert not pruned.layers[0].attn.uniform_groups
    ids = random_ids(gated, 9, seed=5)
    a, b = decode(gated, ids, 3, FusedDecodeStep(gated)), decode(pruned, ids, 3, FusedDecodeStep(pruned))
    assert (a - b).abs().max().item() <= FP32_TOL
    assert (a - decode(pruned, ids, 3, pruned)).abs().max().item() <= FP32_TOL
    gated.gates[1, 3] = 0.5
    assert (decode(gated, ids, 3, FusedDecodeStep(gated)) - a).abs().max().item() > 1e-3


def test_generate_fused_gives_the_static_caches_tokens(step_models):
    model = step_models("llama-gqa", torch.bfloat16)
    ids = random_ids(model, 6, seed=2)
    fused = model.generate(ids, max_new_tokens=8, eos_token_id=[], fused=True)
    assert fused.shape == (1, 14)
    eager = model.generate(ids, max_new_tokens=8, eos_token_id=[], static_cache=True)
    assert (fused == eager).float().mean().item() >= 0.75  # bf16: near-ties may part; recorded on the GPU


def test_fused_refusals_name_the_fix(step_models, synthetic_folders):
    bf16 = step_models("llama-gqa", torch.bfloat16)
    ids = random_ids(bf16, 4)
    with pytest.raises(InputError, match="batch of one"):
        bf16.generate(ids.repeat(2, 1), max_new_tokens=2, fused=True)
    with pytest.raises(InputError, match="half precision"):
        step_models("llama-gqa").generate(ids, max_new_tokens=2, fused=True)
    gemma3 = load_adaptive_model(synthetic_folders("gemma3-sliding-global-linear-rope"), dtype=torch.bfloat16,
                                 device=DEVICE)
    with pytest.raises(UnsupportedModelError, match="per-head query/key norms"):
        gemma3.generate(ids % 500, max_new_tokens=2, fused=True)


def test_the_quality_checks_fused_probe_is_the_model_teacher_forced(step_models, monkeypatch):
    """The quality check's fused probe (CUDA rows only) runs each statistics row one token at a time: in fp32 it must
    give the full forward's log-probs at every position."""
    from types import SimpleNamespace

    from sentinel_matrix.checks import quality

    model = step_models("llama-gqa")
    monkeypatch.setattr(quality, "fused_unavailable", lambda pair: None)  # it would say "runs on CUDA" here
    ids = torch.cat([random_ids(model, 7, seed=4), random_ids(model, 7, seed=5)])
    probes, reason = quality.fused_logprobs(SimpleNamespace(adaptive=model),
                                            SimpleNamespace(statistics={"rows": (ids, "HF's", "HF fp32's")}))
    ours, theirs, fp32, real = probes["rows"]
    assert reason is None and (theirs, fp32) == ("HF's", "HF fp32's") and real.shape == ids.shape and real.all()
    with torch.no_grad():
        expected = model(ids).logits.float().log_softmax(-1)
    assert ours.shape == expected.shape and (ours - expected).abs().max().item() <= FP32_TOL
