"""infer: forward and cached generation are finite; left padding and the cache change nothing."""

from matrix.checks import check_infer

CHECK = "infer"


def test_infer(row, pair, metrics):
    metrics.update(check_infer(pair))
