"""The profile check's record, as the page and `sentinel profile` show it (the check itself needs CUDA: its rows skip
elsewhere, saying so)."""

from sentinel_matrix.checks.profile import profile_lines, short_kernel_name
from sentinel_matrix.records import kind_error
from sentinel_matrix.metrics import kind
from sentinel_reports.render import profile_table

METRICS = {"profile_steps": 32, "weights_read_per_token_mb": 2000.0, "read_bandwidth_peak_gb_s": 3000.0,
           "limit_decode_tokens_per_s": 1430.5,
           "graph_kernels_per_step": 460.0, "graph_kernel_ms_per_step": 1.1, "graph_wall_ms_per_step": 1.6,
           "graph_busy_share": 0.69, "graph_share_of_limit": 0.44,
           "graph_top_kernels": {"gemv2T_kernel_val": [700.0, 88.0], "elementwise_kernel": [90.0, 180.0]},
           "fused_unavailable": "the fused decode path does not implement interleaved rotary (GPT-J)"}


def profile_record(metrics=METRICS):
    return {"family": "llama", "model": "TinyLlama/TinyLlama-1.1B-step-50K-105b", "weights": "synthetic",
            "check": "profile", "device": "cuda", "dtype": "bfloat16", "outcome": "passed", "reason": "",
            "metrics": metrics, "time": "2026-12-07T02:00:00+00:00",
            "env": {"device_name": "NVIDIA H100 80GB HBM3", "depends": {"code": {}, "data": {}, "catalog_entry": None}}}


def test_kernel_names_lose_their_templates_and_parameters():
    name = "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16>, " \
           "std::array<char*, 3ul> >(int, at::native::CUDAFunctor_add<c10::BFloat16>, std::array<char*, 3ul>)"
    assert short_kernel_name(name) == "void at::native::vectorized_elementwise_kernel"
    assert short_kernel_name("linear_kernel") == "linear_kernel"


def test_every_profile_metric_has_its_kind():
    for key, value in METRICS.items():
        assert kind_error(value, kind(key)) is None, key


def test_the_page_and_the_cli_show_each_path_and_why_one_did_not_run():
    table = profile_table([profile_record()]).markdown()
    assert "CUDA graph" in table and "1.600 (625 tok/s)" in table and "44%" in table
    assert "gemv2T_kernel_val 700 µs × 88" in table
    assert "not run: the fused decode path does not implement interleaved rotary" in table
    lines = "\n".join(profile_lines(METRICS))
    assert "graph: 1.600 ms a step (625 tok/s, 44% of the limit), 460 kernels, GPU busy 1.100 ms (69%)" in lines
    assert "fused: not run" in lines and "700.0 µs   88.0×  gemv2T_kernel_val" in lines


def test_a_step_is_the_long_generate_less_the_short_one(monkeypatch):
    """Per step: (a generate of N + 1 tokens) - (a generate of 1), over N; prefill kernels and the first token cancel."""
    from sentinel_matrix.checks import profile

    calls = iter([{"gemv": (330.0 + 40.0, 66 + 2), "prefill_gemm": (500.0, 4)},  # N + 1 = 33 tokens
                  {"gemv": (10.0 + 40.0, 2 + 2), "prefill_gemm": (500.0, 4)}])  # 1 token
    monkeypatch.setattr(profile, "kernel_times", lambda run: next(calls))
    timings = iter([[0.0042] * 5, [0.001] * 5])  # seconds: 33 tokens, then 1
    monkeypatch.setattr(profile, "time_runs", lambda *a, **k: next(timings))

    class Model:
        def generate(self, prompt, **kw):
            return prompt

    m = profile.profile_path(Model(), None, {}, limit_tok_s=10_000.0, prefix="graph_")
    assert m["graph_kernels_per_step"] == 2.0 and abs(m["graph_kernel_ms_per_step"] - 0.010) < 1e-9
    assert abs(m["graph_wall_ms_per_step"] - 0.1) < 1e-9 and abs(m["graph_busy_share"] - 0.1) < 1e-9
    assert m["graph_top_kernels"] == {"gemv": [10.0, 2.0]}  # the prefill's kernels cancelled out
    assert abs(m["graph_share_of_limit"] - 1.0) < 1e-9  # 10,000 tok/s at 0.1 ms a step
