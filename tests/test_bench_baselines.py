"""The bench's baselines and limit: HF eager, SDPA (or why not) and static cache + torch.compile (or why not)
timed in the same repeats as the adaptive model, ratios against the fastest of each side, the device's read
bandwidth and the decode ceiling it sets; the report reads old and new records (names:
sentinel_matrix/bench_metrics.py)."""

import pytest
import torch

from sentinel_matrix.checks import bench
from sentinel_matrix.bench_metrics import (BEST_KEYS, BEST_RATIOS, IQR, RATIO, RATIO_HI, RATIO_LO, ROUNDS, best_key,
                                  limit_tokens_per_s)

DECODE_KEYS = ("decode_tokens_per_s", "decode_b8_tokens_per_s")


@pytest.fixture
def small_bench(monkeypatch):
    """The real bench, shrunk so a tiny model's row takes seconds: short prompts, 8 new tokens, 2 repeats, one
    thread (a tiny model's matmuls gain nothing from a second one, and lose much on a loaded machine)."""
    monkeypatch.setattr(bench, "PREFILL_TOKENS", 16)
    monkeypatch.setattr(bench, "DECODE_TOKENS", 8)
    monkeypatch.setattr(bench, "REPEATS", 2)
    monkeypatch.setattr(bench, "READ_BUFFER_MIB", {"cpu": 16, "cuda": 64})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def spread_of(m: dict, key: str) -> None:
    assert m[key] > 0 and m[key + IQR] >= 0 and m[key + ROUNDS] >= 2, key


@pytest.mark.parametrize("variant", ["llama-gqa", "bloom"])
def test_every_baseline_is_timed_or_says_why_not(variant, synthetic_folders, small_bench):
    m = bench.run_bench(synthetic_folders(variant), "cpu", "float32")
    assert m["attn_baseline"] == "eager"
    # every decode path's greedy tokens equal the dynamic cache's, in fp32
    assert m["static_vs_dynamic_agreement"] == m["hf_vs_dynamic_agreement_b8"] == 1.0
    for key in DECODE_KEYS:
        spread_of(m, key)
        spread_of(m, "baseline_" + key)
    if variant == "bloom":  # BloomForCausalLM has no SDPA attention: said, not failed
        assert "SDPA" in m["baseline_sdpa_unavailable"] and "Bloom" in m["baseline_sdpa_unavailable"]
        assert not any(k.startswith("baseline_sdpa_") and k != "baseline_sdpa_unavailable" for k in m)
    else:
        assert "baseline_sdpa_unavailable" not in m and m["baseline_sdpa_load_s"] > 0
        for key in (*DECODE_KEYS, "prefill_ms", "prefill_b8_ms"):
            spread_of(m, "baseline_sdpa_" + key)
    # CPU without --bench-compiled: the compiled HF baseline is skipped, with the reason recorded
    assert "--bench-compiled" in m["baseline_compiled_unavailable"]
    assert not any(k.startswith("baseline_compiled_") and k != "baseline_compiled_unavailable" for k in m)
    for name in BEST_RATIOS:
        assert m[name + RATIO_LO] <= m[name + RATIO] <= m[name + RATIO_HI]
        ours, theirs = m[name + BEST_KEYS]
        assert not ours.startswith("baseline_") and theirs.startswith("baseline_")
    # the limit, measured in the same run
    spread_of(m, "read_bandwidth_gb_s")
    assert m["read_bandwidth_peak_gb_s"] >= m["read_bandwidth_gb_s"]  # the fastest round sets the ceiling
    limit = limit_tokens_per_s(m["read_bandwidth_peak_gb_s"], m["weights_read_per_token_mb"])
    assert m["limit_decode_tokens_per_s"] == pytest.approx(limit, rel=1e-3)
    hf_best = max(m[k] for k in m if k.startswith("baseline_") and k.endswith("_decode_tokens_per_s"))
    assert m["decode_share_of_limit"] == pytest.approx(m["decode_tokens_per_s"] / limit, rel=1e-2, abs=1e-4)
    assert m["baseline_decode_share_of_limit"] == pytest.approx(hf_best / limit, rel=1e-2, abs=1e-4)
    # every metric is of a kind the reporter reads back (a text or list key it does not know refuses the file)
    from sentinel_matrix.metrics import kind
    from sentinel_matrix.records import kind_error

    assert {k: v for k, v in m.items() if kind_error(v, kind(k))} == {}


class FakeHF:
    @classmethod
    def _supports_default_dynamic_cache(cls):
        return True


class FakeStatefulHF(FakeHF):  # a model that brings its own cache (mamba-like): no static cache to compile around
    @classmethod
    def _supports_default_dynamic_cache(cls):
        return False


def test_compiled_hf_baseline_runs_on_cuda_or_when_asked():
    kw, reason = bench.compiled_hf_kwargs(FakeHF(), "cpu", compiled_option=False)
    assert kw is None and "--bench-compiled" in reason
    kw, reason = bench.compiled_hf_kwargs(FakeHF(), "cpu", compiled_option=True)
    assert reason is None and kw["cache_implementation"] == "static"
    assert kw["compile_config"]._compile_all_devices  # transformers compiles on CPU only when told
    side = bench.Side(None, "cpu", 16, 64, False, 2, kw, decode_only=True)
    assert set(side.timed()) == set(DECODE_KEYS)
    kw, _ = bench.compiled_hf_kwargs(FakeHF(), "cuda", compiled_option=False)
    assert kw == {"cache_implementation": "static"}  # on CUDA transformers compiles by itself
    kw, reason = bench.compiled_hf_kwargs(FakeStatefulHF(), "cuda", compiled_option=True)
    assert kw is None and "static cache" in reason


class ClockSide:
    """A side whose calls advance a fake clock by its own seconds per call; timed keys with unit 1/s."""

    device = "cpu"

    def __init__(self, clock, log, name, seconds, keys):
        self.clock, self.log, self.name, self.seconds, self.keys = clock, log, name, seconds, keys

    def timed(self):
        def call(key):
            def run():
                self.log.append((self.name, key))
                self.clock[0] += self.seconds
            return run

        return {key: (call(key), (lambda s: 1 / s) if "tokens" in key else (lambda s: s), 1) for key in self.keys}


def test_decode_only_paths_interleave_and_best_ratios_pick_the_fastest_of_each_side(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    log = []
    both = ("prefill_ms", "decode_tokens_per_s")
    sides = {"": ClockSide(clock, log, "ours", 0.5, both),
             "graph_": ClockSide(clock, log, "graph", 0.25, ("decode_tokens_per_s",)),
             "baseline_": ClockSide(clock, log, "eager", 2.0, both),
             "baseline_sdpa_": ClockSide(clock, log, "sdpa", 1.0, both)}
    out = bench.measure(sides, repeats=2)
    prefill = [name for name, key in log if key == "prefill_ms"]
    # the first repeat warms each path up before its round; then the order turns around
    assert prefill == ["ours"] * 2 + ["eager"] * 2 + ["sdpa"] * 2 + ["sdpa", "eager", "ours"]
    decode = [name for name, key in log if key == "decode_tokens_per_s"]
    assert decode[-4:] == ["sdpa", "eager", "graph", "ours"]
    assert "graph_prefill_ms" not in out and out["graph_decode_tokens_per_s" + ROUNDS] == 2
    # decode: graph (4 tok/s) over SDPA (1 tok/s); prefill: SDPA's 1 s over our 0.5 s
    assert out["decode_vs_best" + BEST_KEYS] == ["graph_decode_tokens_per_s", "baseline_sdpa_decode_tokens_per_s"]
    assert out["decode_vs_best" + RATIO] == pytest.approx(4.0)
    assert out["prefill_vs_best" + BEST_KEYS] == ["prefill_ms", "baseline_sdpa_prefill_ms"]
    assert out["prefill_vs_best" + RATIO] == pytest.approx(2.0)
    assert out["decode" + RATIO] == pytest.approx(4.0)  # eager against eager, as before
    assert "decode_b8_vs_best" + RATIO not in out  # not timed


def test_limit_arithmetic():
    # 4.3e12 B/s over 2 GiB read per token: 2002.7 tokens/s at most
    assert limit_tokens_per_s(4300.0, 2048.0) == pytest.approx(4.3e12 / 2**31)
    m = {"read_bandwidth_gb_s": 100.0, "weights_read_per_token_mb": 100.0, "decode_tokens_per_s": 200.0,
         "graph_decode_tokens_per_s": 500.0, "baseline_decode_tokens_per_s": 100.0,
         "baseline_sdpa_decode_tokens_per_s": 250.0}
    limit = 100e9 / (100 * 2**20)
    out = bench.limit_metrics(m)
    assert out["limit_decode_tokens_per_s"] == pytest.approx(limit)
    assert out["decode_share_of_limit"] == pytest.approx(500.0 / limit)  # the graph path, ours' fastest
    assert out["baseline_decode_share_of_limit"] == pytest.approx(250.0 / limit)  # SDPA, HF's fastest
    assert bench.limit_metrics({"decode_tokens_per_s": 1.0}) == {}  # nothing to bound it with
    assert best_key({"a": 1.0, "b": None, "c": 3.0}, ["a", "b", "c", "d"], higher=False) == "a"


def test_read_bandwidth_is_a_spread_in_gb_per_s():
    out = bench.read_bandwidth("cpu", mib=8, rounds=3)
    assert out["read_bandwidth_gb_s"] > 0 and out["read_bandwidth_gb_s" + ROUNDS] == 3
    assert out["read_bandwidth_gb_s" + IQR] >= 0


def test_weights_read_per_token_of_an_hf_model(synthetic_folders):
    from sentinel_core import load_adaptive_model, load_baseline_model

    hf = load_baseline_model(synthetic_folders("gpt2"))  # tied LM head (read whole), position table (a row)
    ours = load_adaptive_model(synthetic_folders("gpt2"), baseline_model=hf)
    assert bench.hf_weights_read_per_token_mb(hf) == pytest.approx(bench.weights_read_per_token_mb(ours), rel=0.05)
    assert bench.hf_weights_read_per_token_mb(hf) < bench.param_mb(hf)


# the report -------------------------------------------------------------------------------------------

def test_report_renders_old_and_new_bench_records():
    from test_reports import rec

    from sentinel_reports.render import Table, build_context, render_markdown

    base = dict(decode_tokens_per_s=900.0, baseline_decode_tokens_per_s=600.0, prefill_ms=5.0, baseline_prefill_ms=6.0,
                decode_b8_tokens_per_s=5000.0, baseline_decode_b8_tokens_per_s=4000.0, peak_mem_mb=100.0,
                baseline_peak_mem_mb=100.0)
    old = rec(model="gpt2-medium", family="gpt2", check="bench", attn_baseline="sdpa", **base)
    new = rec(model="facebook/opt-350m", check="bench", device="cuda", dtype="bfloat16", attn_baseline="eager",
              **base, graph_decode_tokens_per_s=1500.0, baseline_sdpa_decode_tokens_per_s=700.0,
              baseline_compiled_decode_tokens_per_s=1000.0, baseline_compiled_first_call_s=41.0,
              decode_vs_best_ratio=1.5, decode_vs_best_ratio_lo=1.4, decode_vs_best_ratio_hi=1.6,
              decode_vs_best_keys=["graph_decode_tokens_per_s", "baseline_compiled_decode_tokens_per_s"],
              decode_b8_vs_best_ratio=1.02, decode_b8_vs_best_ratio_lo=0.98, decode_b8_vs_best_ratio_hi=1.05,
              read_bandwidth_gb_s=4000.0, read_bandwidth_gb_s_iqr=10.0, read_bandwidth_gb_s_rounds=10,
              limit_decode_tokens_per_s=3000.0, decode_share_of_limit=0.5, baseline_decode_share_of_limit=1 / 3)
    nosdpa = rec(model="bigscience/bloom-560m", family="bloom", check="bench", attn_baseline="eager", **base,
                 baseline_sdpa_unavailable="BloomForCausalLM has no SDPA attention",
                 baseline_compiled_unavailable="not run: ... --bench-compiled")
    table = build_context([old, new, nosdpa])["benchmarks_best"]
    assert isinstance(table, Table)
    rows = {row[0]: row for row in table.rows}
    assert all(len(row) == len(table.headers) for row in table.rows)
    n = rows["facebook/opt-350m"]
    assert "600 / 700 / 1000 (first call 41 s)" in n and "1000 (compiled)" in n and "1500 (graph)" in n
    assert "1.50 (1.40–1.60) [graph vs compiled]" in n and any("1.02 (0.98–1.05) ~ noise" in c for c in n)
    assert "4000" in n and "3000" in n and "50% / 33%" in n
    o = rows["gpt2-medium"]
    assert o[4:6] == ["—", "—"] and o[7:] == ["—"] * 5 and o[6] == "900 (eager)"
    assert rows["bigscience/bloom-560m"][4] == "600 / no SDPA / not run"
    from sentinel_reports.html import render_html

    page = render_markdown([old, new, nosdpa])
    section = page.split("## Benchmarks")[1]  # the Markdown page keeps the fastest-path table ...
    assert "vs HF best (b1)" in section and "1.50 (1.40–1.60) [graph vs compiled]" in section
    assert "1.50 (no spread) [HF sdpa]" in render_html([old, new, nosdpa])  # ... report.html every path
    for block in section.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        assert len({len(line.replace("\\|", "").split("|")) for line in rows}) <= 1, block


def test_graph_share_uses_the_limit_the_record_measured():
    """The bench table's graph column and the best-paths table give one share: the record's own measured limit
    (its read bandwidth in the same run); only a record from before that measurement falls back to the GPU's
    nominal bandwidth."""
    from test_reports import rec

    from sentinel_reports.render import with_bandwidth_share

    measured = rec(check="bench", device="cuda", graph_decode_tokens_per_s=1500.0, weights_read_per_token_mb=1000.0,
                   limit_decode_tokens_per_s=3000.0)
    measured["env"]["device_name"] = "NVIDIA H200"
    assert with_bandwidth_share(measured["metrics"], "graph_decode_tokens_per_s", measured) == "1500 (50% of 3000)"
    older = rec(check="bench", device="cuda", graph_decode_tokens_per_s=1500.0, weights_read_per_token_mb=1000.0)
    older["env"]["device_name"] = "NVIDIA H200"
    assert with_bandwidth_share(older["metrics"], "graph_decode_tokens_per_s", older) == "1500 (37% of 4101)"
    older["env"]["device_name"] = "x86_64"
    assert with_bandwidth_share(older["metrics"], "graph_decode_tokens_per_s", older) == "1500"


def test_a_broken_decode_path_fails_the_cpu_bench_row(synthetic_folders, small_bench, monkeypatch):
    """The static cache writing one slot late gives other tokens: the bench row fails, as a CUDA graph's would."""
    from sentinel_core.decoder import StaticKVCache

    original = StaticKVCache.update

    def one_slot_late(self, layer, k, v):
        self.slots = None
        self.pos += 1
        try:
            return original(self, layer, k, v)
        finally:
            self.pos -= 1

    monkeypatch.setattr(StaticKVCache, "update", one_slot_late)
    with pytest.raises(bench.CheckFailed, match="static-cache decode"):
        bench.run_bench(synthetic_folders("llama-gqa"), "cpu", "float32")
