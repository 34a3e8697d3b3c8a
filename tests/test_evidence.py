"""Evidence keyed per row (sentinel_matrix/evidence.py): a record names the files its row ran and read and its catalog entry,
and goes stale when one of those changes, and only then."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sentinel_matrix import evidence
from sentinel_matrix.catalog import entry_hashes
from sentinel_reports.render import render_markdown

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("tiny/gemma3", "tiny/gemma", "tiny/mistral", "tiny/llama", "tiny/codegen")


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """load and infer rows of a few tiny models, run by the matrix as a user runs it."""
    results = tmp_path_factory.mktemp("evidence") / "rows.jsonl"
    done = subprocess.run([sys.executable, "-m", "pytest", "matrix/", "--models", ",".join(MODELS), "--devices", "cpu",
                           "--checks", "load,infer", "--results", str(results), "-q", "-p", "no:cacheprovider"],
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert {r["model"] for r in records} == set(MODELS) and all(r["outcome"] == "passed" for r in records)
    return records


@pytest.fixture
def tree(tmp_path):
    """A copy of the project's files, to edit."""
    for part in evidence.PROJECT_PARTS:
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif source.exists():
            shutil.copy2(source, tmp_path / part)
    return tmp_path


def stale(records, root: Path) -> dict[str, str]:
    """model/check -> why it is stale, judged against the tree at `root` (its files and its catalog)."""
    hashes = entry_hashes(root / evidence.CATALOG)
    reasons = {f"{r['model']}/{r['check']}": evidence.stale_reason(r, hashes.get, root=root) for r in records}
    return {row: why for row, why in reasons.items() if why is not None}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def test_the_fingerprint_names_the_files_the_row_ran(rows):
    by_row = {f"{r['model']}/{r['check']}": r["env"] for r in rows}
    for check in ("load", "infer"):  # the infer row reuses the model its load row built: the loading code counts too
        code = by_row[f"tiny/gemma3/{check}"]["depends"]["code"]
        assert {"sentinel_core/families/gemma3.py", "sentinel_core/decoder.py", "sentinel_core/convert.py",
                "sentinel_matrix/checks/pair.py"} <= set(code), sorted(code)
        assert not {"sentinel_core/families/llama.py", "sentinel_core/generic.py"} & set(code), sorted(code)
        assert all(re.fullmatch(r"[0-9a-f]{16}", h) for h in code.values())
        # Gemma's converter reuses Llama's rules: its rows name both files.
        assert {"sentinel_core/families/gemma.py", "sentinel_core/families/llama.py"} <= set(
            by_row[f"tiny/gemma/{check}"]["depends"]["code"])
        wrapped = by_row[f"tiny/codegen/{check}"]["depends"]["code"]  # no converter: HF's modules, gated
        assert "sentinel_core/generic.py" in wrapped and "sentinel_core/decoder.py" not in wrapped
    for env in by_row.values():
        assert env["fingerprint"] == evidence.fingerprint(env["depends"]) and env["depends"]["catalog_entry"]
        assert not any(name.startswith("sentinel_cli/") for name in env["depends"]["code"])


def test_rows_are_current_in_an_unchanged_tree(rows, tree):
    assert stale(rows, ROOT) == {} and stale(rows, tree) == {}


def test_editing_a_family_file_stales_that_familys_rows_and_no_other(rows, tree):
    edit(tree / "sentinel_core/families/gemma3.py", "def to_spec", "# an edit\ndef to_spec")
    assert set(stale(rows, tree)) == {"tiny/gemma3/load", "tiny/gemma3/infer"}
    assert stale(rows, tree)["tiny/gemma3/load"] == "sentinel_core/families/gemma3.py changed"


def test_editing_llama_stales_the_families_that_reuse_its_rules(rows, tree):
    edit(tree / "sentinel_core/families/llama.py", "def rules", "# an edit\ndef rules")
    assert {row.rsplit("/", 1)[0] for row in stale(rows, tree)} == {"tiny/llama", "tiny/gemma", "tiny/mistral"}


def test_editing_a_catalog_entry_stales_its_rows(rows, tree):
    catalog = tree / evidence.CATALOG
    entry = catalog.read_text().split('id = "tiny/mistral"', 1)[1].split("[[model]]", 1)[0]
    assert "sliding_window = 6," in entry
    edit(catalog, entry, entry.replace("sliding_window = 6,", "sliding_window = 600,"))
    assert stale(rows, tree) == {"tiny/mistral/load": "its catalog entry changed",
                                 "tiny/mistral/infer": "its catalog entry changed"}


def test_editing_the_command_line_stales_no_row(rows, tree):
    for path in (tree / "sentinel_cli").glob("*.py"):
        path.write_text(path.read_text() + "\n# an edit\n")
    edit(tree / "sentinel_reports/render.py", '"""', '"""An edit. ')
    assert stale(rows, tree) == {}


def test_editing_the_decoder_stales_every_native_row_but_not_the_wrapped_one(rows, tree):
    edit(tree / "sentinel_core/decoder.py", "class ", "# an edit\nclass ", )
    assert {row.rsplit("/", 1)[0] for row in stale(rows, tree)} == set(MODELS) - {"tiny/codegen"}


def collected(root: Path, results: Path, *args: str) -> list[str]:
    """The row ids `pytest matrix/ --collect-only` keeps in the tree at `root`, with `results` as --results."""
    done = subprocess.run([sys.executable, "-m", "pytest", "matrix/", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "--devices", "cpu", "--results", str(results), *args], cwd=root,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    assert done.returncode in (0, 5), done.stdout[-2000:] + done.stderr[-2000:]  # 5: every row left out
    return sorted(line.split("[", 1)[1].rstrip("]") for line in done.stdout.splitlines() if "test_row[" in line)


def test_skip_current_leaves_out_the_rows_recorded_at_this_tree_and_resumes_the_rest(rows, tree, tmp_path):
    """A tree without a results folder: only the --results file counts. Asked: 9 rows, 4 of them recorded."""
    results = tmp_path / "rows.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows if r["model"] in ("tiny/llama", "tiny/gemma")))
    ask = ("--models", "tiny/llama,tiny/gemma,tiny/codegen", "--checks", "load,infer,quality")
    assert collected(tree, results, *ask, "--skip-current") == [
        "codegen/tiny/codegen/synthetic/infer/cpu", "codegen/tiny/codegen/synthetic/load/cpu",
        "codegen/tiny/codegen/synthetic/quality/cpu", "gemma/tiny/gemma/synthetic/quality/cpu",
        "llama/tiny/llama/synthetic/quality/cpu"]
    edit(tree / "sentinel_core/families/gemma.py", "def ", "# an edit\ndef ")  # stale: Gemma's rows run again
    assert len(collected(tree, results, *ask, "--skip-current")) == 7


def test_skip_current_counts_only_current_verdicts_of_weights_the_tree_decides(rows, tmp_path):
    from sentinel_matrix.resume import done_rows

    one = next(r for r in rows if r["model"] == "tiny/llama" and r["check"] == "load")
    changed = json.loads(json.dumps(one))
    changed["env"]["depends"]["code"]["sentinel_core/decoder.py"] = "0" * 16
    variants = {"current": one, "skipped": {**one, "outcome": "skipped"}, "error": {**one, "outcome": "error"},
                "hub": {**one, "weights": "hub"}, "stale": changed, "failed": {**one, "outcome": "failed"}}
    for name, record in variants.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text(json.dumps(record) + "\n{torn")
        counted = done_rows([path, tmp_path / "missing"]) == {("tiny/llama", record["weights"], "load", "cpu", "float32")}
        assert counted == (name in ("current", "failed")), name


def test_a_cell_names_the_transformers_release_of_its_evidence(rows):
    import torch
    import transformers

    from sentinel_reports.render import build_context

    families = build_context(rows)["families"]  # the per-check cells (report.html's per-family tables)
    row = next(row for f in families for row in f["table"].rows if row[0] == "tiny/gemma3")
    assert f"transformers {transformers.__version__}, torch {torch.__version__.split('+')[0]}" in row[1]


def test_data_files_read_count_and_timed_loops_are_not_traced():
    from sentinel_matrix import grading
    from sentinel_matrix.sources import wikipedia_text

    with evidence.TRACER.scope() as (code, data):
        wikipedia_text()
        with evidence.TRACER.paused():  # timed repeats of code that already ran traced
            grading.mutation_bar(1e-5)
    assert "sentinel_matrix/data/enwiki_sample.txt" in data and "sentinel_matrix/sources/texts.py" in code
    assert "sentinel_matrix/grading.py" not in code
    assert evidence.CATALOG not in data  # the catalog counts by entry, not as a whole
    with evidence.TRACER.scope() as (code, data):
        grading.mutation_bar(1e-5)
    assert "sentinel_matrix/grading.py" in code


def test_cached_work_counts_in_every_row_that_reuses_it():
    cache = {}

    def compute():
        from sentinel_matrix import grading

        return grading.mutation_bar(1e-5)

    with evidence.TRACER.scope() as first:
        with evidence.TRACER.scope():  # scopes nest, and close by identity (an equal one may be open beside)
            pass
        evidence.memo(cache, "bar", compute)
    with evidence.TRACER.scope() as second:
        evidence.memo(cache, "bar", compute)  # not computed again: its files still count
    assert "sentinel_matrix/grading.py" in first[0] and "sentinel_matrix/grading.py" in second[0]


def test_a_record_from_before_rows_were_keyed_is_stale():
    assert evidence.stale_reason({"env": {"source_hash": "0123456789abcdef"}}) == "measured before evidence was keyed per row"


def test_a_row_that_ran_with_nothing_traced_never_counts():
    empty = {"code": {}, "data": {}, "catalog_entry": None}
    assert evidence.stale_reason({"outcome": "passed", "env": {"depends": empty}}) == "no code was traced while it ran"
    assert evidence.stale_reason({"outcome": "skipped", "env": {"depends": empty}}) is None


def test_constants_read_by_name_count(rows):
    """names.py holds constants only: no function of it runs, yet rows read it."""
    code = next(r for r in rows if r["model"] == "tiny/llama" and r["check"] == "load")["env"]["depends"]["code"]
    assert "sentinel_core/names.py" in code, sorted(code)
    assert "sentinel_cli/check.py" not in code


def test_a_family_file_is_hashed_as_its_import_read_it(tmp_path):
    """A module imported inside a row (a family file, on first use) is recorded with the content that import
    read, whatever the run saw of it before."""
    module = evidence.ROOT / "tests" / "_evidence_probe.py"
    module.write_text("VALUE = 1\n")
    try:
        evidence._AS_LOADED["tests/_evidence_probe.py"] = "stale-hash"
        with evidence.TRACER.scope() as files:
            import importlib

            importlib.import_module("tests._evidence_probe")
        recorded = evidence.depends(files, None)["code"]["tests/_evidence_probe.py"]
        assert recorded == evidence.content_hash(b"VALUE = 1\n")
    finally:
        module.unlink()
        sys.modules.pop("tests._evidence_probe", None)


def test_code_generated_at_run_time_is_not_evidence(tmp_path):
    """torch.compile writes its kernels as Python files under the temp folder: no record can name them."""
    import tempfile

    generated = Path(tempfile.mkdtemp(prefix="torchinductor_")) / "kernel.py"
    generated.write_text("def kernel():\n    return 1\n")
    namespace = {}
    exec(compile(generated.read_text(), str(generated), "exec"), namespace)
    with evidence.TRACER.scope() as (code, _):
        namespace["kernel"]()
    assert not any("torchinductor_" in name for name in code), code
