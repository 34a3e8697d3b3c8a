"""Timing and memory measurement shared by the checks that measure (load, bench, prune): wall time with the GPU
synchronized, peak memory, the spread of repeated timings. Timed repeats run untraced (sentinel_matrix/evidence.py)."""

from __future__ import annotations

import gc
import statistics
import threading
import time

import psutil
import torch

from .bench_metrics import IQR, ROUNDS
from .evidence import TRACER


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 5 ms), in MiB."""

    def __enter__(self):
        self.start = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())
        self.growth_mb = self.peak - self.start


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed_load(fn, device: str):
    """(result, seconds, peak MiB): CUDA max allocated on GPU, RSS growth on CPU."""
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        t = time.perf_counter()
        result = fn()
        synchronize(device)
        return result, time.perf_counter() - t, (torch.cuda.max_memory_allocated() - before) / 2**20
    with PeakRSS() as mem:
        t = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t
    return result, seconds, mem.growth_mb


def time_runs(fn, device: str, rounds: int, warmup: int = 1) -> list[float]:
    """Seconds per call of `fn`, after `warmup` calls. The timed calls run untraced (sentinel_matrix/evidence.py): `fn` has
    run traced before them, in this warm-up or an earlier one."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    with TRACER.paused():
        for _ in range(rounds):
            t = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - t)
    return times


def percentile(values: list[float], percent: int) -> float:
    """The bench statistics' one quantile: statistics.quantiles' inclusive method (linear between order statistics,
    numpy's default), so a median, a quartile and a p90 are all read the same way."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]  # percent in 1..99


def spread(key: str, values: list[float]) -> dict:
    """A timed key's median with its IQR and round count (sentinel_matrix/bench_metrics.py)."""
    iqr = percentile(values, 75) - percentile(values, 25)
    return {key: percentile(values, 50), key + IQR: iqr, key + ROUNDS: len(values)}


def peak_working_mb(fn, device: str) -> float:
    """Memory a call needs beyond what is already allocated (CUDA max allocated; RSS growth on CPU)."""
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    with PeakRSS() as mem:
        fn()
    return mem.growth_mb
