"""bench: adaptive vs HF timed side by side (run with --checks bench; not part of the default run)."""

from matrix.bench import run_bench

CHECK = "bench"


def test_bench(row, bench_folder, metrics, benchmark, request):
    folder, device, dtype = bench_folder
    metrics.update(run_bench(folder, device, dtype, benchmark, compiled=request.config.getoption("--bench-compiled")))
