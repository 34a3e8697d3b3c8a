"""quality: the adaptive model against the HF baseline on the same device and dtype."""

from matrix.checks import check_quality
from matrix.sources import wikipedia_text

CHECK = "quality"


def test_quality(row, pair, metrics):
    metrics.update(check_quality(pair, text=wikipedia_text() if pair.real_weights else None))
