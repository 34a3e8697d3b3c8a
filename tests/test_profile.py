"""The profile check's record, as the page and `sentinel profile` show it (the check itself needs CUDA: its rows skip
elsewhere, saying so)."""

import re

from sentinel_matrix.checks.profile import profile_lines, short_kernel_name
from sentinel_matrix.records import kind_error
from sentinel_matrix.metrics import kind
from sentinel_reports.render import profile_steps, profile_table

METRICS = {"profile_steps": 32, "weights_read_per_token_mb": 2000.0, "read_bandwidth_peak_gb_s": 3000.0,
           "limit_decode_tokens_per_s": 1430.5,
           "graph_kernels_per_step": 460.0, "graph_kernel_ms_per_step": 1.3, "graph_busy_ms_per_step": 1.1,
           "graph_wall_ms_per_step": 1.6, "graph_gpu_step_ms": 1.594, "graph_busy_share": 0.69, "graph_share_of_limit": 0.44,
           "graph_call_prefill_ms": 9.5, "graph_call_capture_ms": 40.0,
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
    assert re.search(r"gemv2T_kernel_val 700 µs × 88 +\| 9\.5 \+ 40\.0 +\|", table)
    assert "not run: the fused decode path does not implement interleaved rotary" in table
    lines = "\n".join(profile_lines(METRICS))
    assert "graph: 1.600 ms a step (625 tok/s, 44% of the limit), 460 kernels summing 1.300 ms, GPU busy 1.100 ms " \
           "of a 1.594 ms step on the profiled timeline (69%)" in lines
    assert "fused: not run" in lines and "700.0 µs   88.0×  gemv2T_kernel_val" in lines
    assert "per generate call: the prefill 9.5 ms, then the first step's warm-up and capture 40.0 ms (as long as 25 " \
           "steps)" in lines
    assert re.search(r"\| 1\.300 +\| 1\.100 of 1\.594 \(69%\) +\|", table)


def test_the_legend_names_the_step_count_its_records_were_taken_over():
    assert profile_steps([profile_record()]) == "32"
    newer = profile_record(METRICS | {"profile_steps": 128})
    assert profile_steps([newer, profile_record(), newer]) == "32 or 128"
    assert profile_steps([newer | {"outcome": "error"}]) == ""


def test_a_record_from_before_the_busy_union_shows_its_sum_and_no_busy_time():
    """Its busy_share was the kernels' sum over the wall time (above 100% where kernels overlap): not shown as busy."""
    old = {k: v for k, v in METRICS.items() if k != "graph_busy_ms_per_step"} | {"graph_busy_share": 1.43}
    lines = "\n".join(profile_lines(old))
    assert "460 kernels summing 1.300 ms\n" in lines + "\n" and "busy" not in lines and "143%" not in lines
    table = profile_table([profile_record(old)]).markdown()
    assert re.search(r"\| 1\.300 +\| — +\|", table) and "143%" not in table


def test_a_record_from_before_the_periodic_step_shows_its_busy_time_without_a_share():
    """Its busy_share was of a difference of two calls' first-to-last spans, which carried their setup's noise (118% in
    a real record): the busy time stays, the share goes."""
    old = {k: v for k, v in METRICS.items() if k != "graph_gpu_step_ms"} | {"graph_busy_share": 1.18}
    lines = "\n".join(profile_lines(old))
    assert "GPU busy 1.100 ms\n" in lines + "\n" and "118%" not in lines
    table = profile_table([profile_record(old)]).markdown()
    assert re.search(r"\| 1\.300 +\| 1\.100 +\|", table) and "118%" not in table


def test_busy_time_is_the_union_of_overlapping_kernels():
    """Under programmatic dependent launch a kernel starts before the one it waits for ends: summed, their times
    count the overlap twice; busy, once."""
    from types import SimpleNamespace

    import torch

    from sentinel_matrix.checks.profile import kernel_summary

    def event(name, start, end, device=torch.autograd.DeviceType.CUDA):
        return SimpleNamespace(name=name, device_type=device, device_time=end - start,
                               time_range=SimpleNamespace(start=start, end=end))

    events = [event("b", 8.0, 14.0), event("a", 0.0, 10.0), event("a", 20.0, 25.0), event("c", 21.0, 22.0),
              event("cpu_op", 0.0, 100.0, torch.autograd.DeviceType.CPU)]
    per_name, busy, launches = kernel_summary(events)
    assert per_name == {"a": (15.0, 2), "b": (6.0, 1), "c": (1.0, 1)}
    assert busy == 19.0  # [0, 14] and [20, 25]; the sum would say 22
    assert launches == [0.0, 8.0, 20.0, 21.0]
    assert kernel_summary([]) == ({}, 0.0, [])


def test_a_step_is_the_long_generate_less_the_short_one(monkeypatch):
    """Per step: (a generate of N + 2 tokens) - (a generate of 2), over N. The prefill, and the first decode step where
    a call captures its CUDA graph after two eager warm-up steps, are in both and cancel: what is left is N replays.
    (Less a generate of 1, which captures nothing, the capture would count as 1/N of a step.)"""
    from sentinel_matrix.checks import profile

    class Model:  # a generate of n tokens, as model.generate's CUDA-graph path runs it
        last = 0

        def generate(self, prompt, max_new_tokens, **kw):
            self.last = max_new_tokens

    model = Model()

    def timeline(n):  # (name, µs) per launch, and the idle µs before it, of a generate of n tokens
        out = [("prefill_gemm", 125.0, 2.0)] * 4
        if n >= 2:  # the first decode step: two eager warm-up steps (3 kernels each, host-bound), then the capture
            out += [("warmup_elementwise", 10.0, 40.0)] * 6
            # the capture leaves the GPU idle for as long as the host takes, which differs from call to call
            capture_idle = 3000.0 if n > 2 else 1000.0
            out += [("gemv", 5.0, capture_idle), ("gemv", 5.0, 1.0)]
        out += [("gemv", 5.0, 1.0)] * (2 * (n - 2))  # each further replayed step: 2 gemv launches, 5 µs, 1 µs apart
        return out

    def run_and_count(run):  # the kernels as the profiler sees them
        from types import SimpleNamespace

        import torch

        run()
        events, clock = [], 0.0
        for name, us, idle in timeline(model.last):
            clock += idle
            events.append(SimpleNamespace(name=name, device_type=torch.autograd.DeviceType.CUDA, device_time=us,
                                          time_range=SimpleNamespace(start=clock, end=clock + us)))
            clock += us
        return profile.kernel_summary(events)

    def timed(run, *a, **k):  # seconds: 1 ms prefill, 8 ms capture, 0.1 ms a replayed step
        run()
        n = model.last
        return [1e-3 + (8e-3 if n >= 2 else 0.0) + 1e-4 * (n - 1)] * 5

    monkeypatch.setattr(profile, "kernel_times", run_and_count)
    monkeypatch.setattr(profile, "time_runs", timed)
    m = profile.profile_path(model, None, {}, limit_tok_s=10_000.0, prefix="graph_")
    assert m["graph_kernels_per_step"] == 2.0 and abs(m["graph_kernel_ms_per_step"] - 0.010) < 1e-9
    assert abs(m["graph_wall_ms_per_step"] - 0.1) < 1e-9 and abs(m["graph_busy_ms_per_step"] - 0.010) < 1e-9
    # 10 µs busy in a 12 µs step on the profiled timeline, whatever the captures' idle time did
    assert abs(m["graph_gpu_step_ms"] - 0.012) < 1e-9 and abs(m["graph_busy_share"] - 10 / 12) < 1e-9
    assert abs(m["graph_call_prefill_ms"] - 1.0) < 1e-9 and abs(m["graph_call_capture_ms"] - 8.0) < 1e-9
    assert m["graph_top_kernels"] == {"gemv": [10.0, 2.0]}  # the prefill's and the capture's kernels cancelled out
    assert abs(m["graph_share_of_limit"] - 1.0) < 1e-9  # 10,000 tok/s at 0.1 ms a step


def test_anonymous_namespaces_and_lambdas_keep_the_kernel_name():
    """torch's indexing kernels live in an anonymous namespace and elementwise ones take lambdas: their names must
    survive, or every such kernel is counted as one "void at::native::"."""
    small = ("void at::native::(anonymous namespace)::indexSelectSmallIndex<c10::BFloat16, long, unsigned int, 2, 2, "
             "-2>(at::cuda::detail::TensorInfo<c10::BFloat16, unsigned int>, at::cuda::detail::TensorInfo<c10::BFloat16 "
             "const, unsigned int>, int, int, unsigned int, long)")
    assert short_kernel_name(small) == "void at::native::indexSelectSmallIndex"
    lam = ("void at::native::elementwise_kernel<128, 4, at::native::gpu_kernel_impl_nocast<at::native::direct_copy_kernel"
           "_cuda(at::TensorIteratorBase&)::{lambda()#3}::operator()() const::{lambda(c10::BFloat16)#1}>(at::TensorIterat"
           "orBase&, at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)::{lambda()#3}::operator()() const::{lamb"
           "da(c10::BFloat16)#1} const&)::{lambda(int)#1}>(int, at::native::gpu_kernel_impl_nocast<at::native::direct_co"
           "py_kernel_cuda(at::TensorIteratorBase&)::{lambda()#3}::operator()() const::{lambda(c10::BFloat16)#1}>(at::Ten"
           "sorIteratorBase&, at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)::{lambda()#3}::operator()() co"
           "nst::{lambda(c10::BFloat16)#1} const&)::{lambda(int)#1})")
    assert short_kernel_name(lam) == "void at::native::elementwise_kernel"


def test_the_costliest_kernel_is_the_one_shown_whatever_the_record_order():
    """A record's top kernels come back from JSON in name order: the page and the CLI pick by time."""
    metrics = dict(METRICS, graph_top_kernels={"a_cheap_kernel": [5.0, 1.0], "z_costly_kernel": [900.0, 22.0]})
    table = profile_table([profile_record(metrics)]).markdown()
    assert "z_costly_kernel 900 µs × 22" in table and "a_cheap_kernel" not in table
    lines = profile_lines(metrics)
    assert lines.index(next(l for l in lines if "z_costly_kernel" in l)) < lines.index(
        next(l for l in lines if "a_cheap_kernel" in l))


def test_a_step_without_a_fixed_kernel_count_has_no_period(monkeypatch):
    """Where the long call launches a number of kernels that is not a whole number a step (a kernel once, somewhere),
    no launch is a step after another: no period and no busy share, rather than a wrong one."""
    from sentinel_matrix.checks import profile

    class Model:
        def generate(self, prompt, max_new_tokens, **kw):
            self.last = max_new_tokens

    model = Model()

    def run_and_count(run):
        run()
        n = model.last - 1  # replayed steps, 2 launches each, 6 µs apart; the long call also copies its cache once
        found = {"gemv": (5.0 * 2 * n, 2 * n)} | ({"cache_copy": (3.0, 1)} if n > 1 else {})
        return found, 5.0 * 2 * n, [6.0 * i for i in range(sum(c for _, c in found.values()))]

    monkeypatch.setattr(profile, "kernel_times", run_and_count)
    monkeypatch.setattr(profile, "time_runs", lambda run, *a, **k: (run(), [1e-4 * model.last] * 5)[1])
    m = profile.profile_path(model, None, {}, limit_tok_s=None, prefix="fused_")
    assert m["fused_gpu_step_ms"] is None and m["fused_busy_share"] is None
    assert abs(m["fused_busy_ms_per_step"] - 0.010) < 1e-9
