"""The bench's spreads: every timed key with its IQR and rounds, every adaptive/HF ratio with its range
over interleaved repeats (names: sentinel_matrix/bench_metrics.py)."""

import itertools

from sentinel_matrix.checks import bench
from sentinel_matrix.bench_metrics import IQR, RATIO, RATIO_HI, RATIO_LO, RATIOS, ROUNDS


class FakeSide:
    """A side whose calls take no time; `seconds` hands out the clock readings of its rounds."""

    device = "cpu"

    def __init__(self, log, name, rounds=2):
        self.log, self.name, self.rounds = log, name, rounds

    def timed(self):
        def call(key):
            return lambda: self.log.append((self.name, key))

        return {key: (call(key), lambda s: s, self.rounds) for key in ("prefill_ms", "decode_tokens_per_s")}


def test_sides_interleave_and_every_key_has_its_spread(monkeypatch):
    clock = itertools.count()
    monkeypatch.setattr(bench.time, "perf_counter", lambda: float(next(clock)))
    log = []
    out = bench.measure({"": FakeSide(log, "ours"), "baseline_": FakeSide(log, "hf")}, repeats=3)
    prefill = [side for side, key in log if key == "prefill_ms"]
    # one warm-up call each on the first repeat, then the order alternates: ours, hf; hf, ours; ours, hf
    assert prefill == ["ours"] * 3 + ["hf"] * 3 + ["hf"] * 2 + ["ours"] * 2 + ["ours"] * 2 + ["hf"] * 2
    for key in ("prefill_ms", "baseline_prefill_ms", "decode_tokens_per_s", "baseline_decode_tokens_per_s"):
        assert out[key + ROUNDS] == 6 and out[key + IQR] >= 0
    for name in ("prefill", "decode"):
        assert out[name + RATIO_LO] <= out[name + RATIO] <= out[name + RATIO_HI]
    assert "prefill_b8" + RATIO not in out  # its keys were not timed
    assert "prefill_p90_ms" in out


def test_every_ratio_is_between_keys_a_side_times():
    timed = set(bench.Side(None, "cpu", vocab=16, max_positions=64, adaptive=True, rounds=2).timed())
    for num, den in RATIOS.values():
        assert {num.removeprefix("baseline_"), den.removeprefix("baseline_")} <= timed
        assert num.startswith("baseline_") != den.startswith("baseline_")  # adaptive against HF


def test_one_quantile_definition_reads_medians_quartiles_and_p90():
    import statistics

    from sentinel_matrix.timing import percentile, spread

    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    assert percentile(values, 50) == statistics.median(values)
    assert percentile(values, 90) == statistics.quantiles(values, n=10, method="inclusive")[8]
    assert spread("t_ms", values)["t_ms_iqr"] == percentile(values, 75) - percentile(values, 25)
    assert percentile([7.0], 90) == 7.0
