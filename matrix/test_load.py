"""load: the adaptive model builds from the checkpoint, every key mapped, parameters = HF + gates."""

from matrix.checks import check_load

CHECK = "load"


def test_load(row, pair, metrics):
    metrics.update(check_load(pair))
