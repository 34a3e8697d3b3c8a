"""quality: the adaptive model against the HF baseline on the same device and dtype."""

from matrix.checks import check_quality
from matrix.sources import perplexity_text

CHECK = "quality"


def test_quality(row, pair, metrics):
    if pair.real_weights:
        name, text = perplexity_text()
        metrics["ppl_text"] = name
        metrics.update(check_quality(pair, text=text))
    else:
        metrics.update(check_quality(pair))
