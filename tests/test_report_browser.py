"""report.html in a real headless browser (Debian's chromium driven by Playwright): no console errors, every
table row as wide as its header, no text overflowing its box, every plot drawn with axes. Skips, saying
why, where no browser is installed (`apt-get install chromium` and `pip install playwright` add one)."""

import json
import shutil

import pytest

from sentinel_reports.__main__ import main as reports_main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Rows as the matrix writes them: real and tiny geometries, CPU fp32 and CUDA bf16, a failure with a long
# reason, a pipe in a cell, bench rows with spread and a pruning curve, a mutation row.
FIELDS = {"torch": "2.13.0", "transformers": "5.24.0", "device_name": "x86_64", "python": "3.11", "git_sha": "0" * 40,
          "git_dirty": False}


def records():
    from sentinel_matrix import evidence

    decoder = evidence.content_hash((evidence.ROOT / "sentinel_core/decoder.py").read_bytes())
    env = {**FIELDS, "depends": {"code": {"sentinel_core/decoder.py": decoder}, "data": {}, "catalog_entry": None}}
    out = []
    for model, family, weights in (("HuggingFaceTB/SmolLM2-135M-Instruct", "llama", "package"),
                                   ("microsoft/Phi-3-mini-4k-instruct", "phi3", "synthetic"),
                                   ("tiny/gpt2", "gpt2", "synthetic")):
        for check in ("load", "infer", "quality"):
            for device, dtype, metrics in (("cpu", "float32", {"max_logprob_diff": 3e-5}),
                                           ("cuda", "bfloat16", {"max_logprob_diff_top32": 0.06, "rounding_excess": 1.4})):
                out.append({"family": family, "model": model, "weights": weights, "check": check, "device": device,
                            "dtype": dtype, "outcome": "passed", "reason": "", "metrics": {**metrics, "grade": "Good"},
                            "env": env, "time": "2026-12-03T10:00:00+00:00"})
    out.append({**out[-1], "model": "google/gemma-2b", "family": "gemma", "outcome": "failed", "metrics": {"rounding_excess": 9.0},
                "reason": "adaptive differs from HF (bfloat16): q|k|v " + "a very long reason " * 30})
    for model in ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", "tiny/llama"):
        out.append({"family": "llama", "model": model, "weights": "synthetic", "check": "bench", "device": "cuda",
                    "dtype": "bfloat16", "outcome": "passed", "reason": "", "env": env, "time": "2026-12-03T10:00:00+00:00",
                    "metrics": {"decode_tokens_per_s": 120.0, "baseline_decode_tokens_per_s": 40.0, "decode_ratio": 3.0,
                                "decode_ratio_lo": 2.8, "decode_ratio_hi": 3.1, "prefill_ms": 4.0,
                                "baseline_prefill_ms": 5.0, "prefill_tokens": 512, "peak_mem_mb": 2100.0,
                                "baseline_peak_mem_mb": 2000.0, "pruning_curve": [[0.0, 120.0], [0.25, 140.0], [0.5, 160.0]]}})
    return out


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    folder = tmp_path_factory.mktemp("browser")
    results = folder / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in records()))
    assert reports_main([str(results), "--output", str(folder / "p.md"), "--html", str(folder / "report.html")]) == 0
    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.goto((folder / "report.html").as_uri())
        yield tab, errors
        browser.close()


def test_no_console_errors(page):
    tab, errors = page
    assert errors == []


def test_every_table_row_is_as_wide_as_its_header(page):
    tab, _ = page
    widths = tab.evaluate("""() => [...document.querySelectorAll('table')].map(t =>
        [...t.rows].map(r => [...r.cells].reduce((n, c) => n + c.colSpan, 0)))""")
    assert len(widths) >= 5
    for table in widths:
        assert len(set(table)) == 1, table


def test_no_text_overflows_its_box(page):
    tab, _ = page
    overflowing = tab.evaluate("""() => [...document.querySelectorAll('td, th, p, li, h1, h2, summary')]
        .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.tagName + ': ' + e.textContent.slice(0, 80))""")
    assert overflowing == []
    page_width = tab.evaluate("() => document.documentElement.scrollWidth")
    assert page_width <= 1280  # wide tables scroll inside their own box, not the page


def test_plots_are_drawn_with_axes_and_stay_inside_the_page(page):
    tab, _ = page
    boxes = tab.evaluate("""() => [...document.querySelectorAll('svg')].map(s => {
        const b = s.getBoundingClientRect(); return [b.width, b.height, s.textContent]; })""")
    assert len(boxes) >= 4  # decode (full depth, tiny), quality per device and dtype, pruning
    for width, height, text in boxes:
        assert 100 < width <= 1280 and height > 50
    texts = " ".join(t for *_, t in boxes)
    assert "log scale" in texts and "Good bar" in texts and "fraction of heads pruned" in texts


def test_statuses_read_as_words_without_an_emoji_font(page):
    """Debian's chromium as installed here has no emoji font: a status must still read, as a word beside its mark."""
    from sentinel_reports.status import LABEL

    tab, _ = page
    cells = tab.evaluate("""() => [...document.querySelectorAll('h2')].find(h => h.textContent === 'Support overview')
        .nextElementSibling.querySelector('table').innerText""")
    statuses = [line.replace("\u00a0", " ") for line in cells.splitlines()[1:] if line.strip()]
    assert statuses and all(any(word in line for word in LABEL.values()) for line in statuses), cells


def test_the_first_screen_is_the_headline_and_the_overview(page, tmp_path):
    tab, _ = page
    tab.screenshot(path=str(tmp_path / "first-screen.png"))  # 1280 x 900, what a reader sees before scrolling
    tops = tab.evaluate("""() => {
        const top = e => e.getBoundingClientRect().top;
        const overview = [...document.querySelectorAll('h2')].find(h => h.textContent === 'Support overview');
        return {headline: top(document.querySelector('h1 + p')), overview: top(overview),
                table: top(overview.nextElementSibling), text: document.querySelector('h1 + p').textContent};
    }""")
    assert tops["headline"] < 150 and "current rows" in tops["text"] and "torch" in tops["text"], tops
    assert tops["overview"] < 300 and tops["table"] < 350, tops
    assert (tmp_path / "first-screen.png").stat().st_size > 10_000
