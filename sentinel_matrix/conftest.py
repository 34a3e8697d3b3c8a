"""The matrix as pytest rows: catalog entry × weight source × check × device, one result record each.

Rows are generated here from sentinel_matrix/catalog.toml, filtered by the options in the root conftest.py,
ordered so that consecutive rows share a loaded model, and written to the results JSONL as each
finishes (pass, fail or skip, with the reason).
"""

from __future__ import annotations

import fnmatch
import gc
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from sentinel_matrix import adhoc, evidence, hf_cache, records, registry
from sentinel_matrix.faults import environment_fault
from sentinel_matrix.catalog import CatalogEntry, load_catalog
from sentinel_matrix.options import ADHOC_ENTRIES, DEVICES, csv, is_glob
from sentinel_core.names import ERROR, FAILED, INCONCLUSIVE, PASSED, SKIPPED
ROW_KEY = pytest.StashKey[dict]()
FILES_KEY = pytest.StashKey[tuple]()  # (code files, data files) the row ran, filled while it runs
NEXT_ITEM_KEY = pytest.StashKey[object]()  # the row pytest runs after this one (None: the last)
records_written_key = pytest.StashKey[bool]()


@dataclass(frozen=True)
class Row:
    entry: CatalogEntry
    weights: str
    check: str
    device: str

    @property
    def id(self) -> str:
        return f"{self.entry.family}/{self.entry.id}/{self.weights}/{self.check}/{self.device}"

    @property
    def check_def(self) -> registry.Check:
        return registry.by_name(self.check)

    @property
    def synthetic_layers(self) -> int | None:
        """Layers kept in a cut synthetic checkpoint (None: the real depth); benchmarks use every layer."""
        cut = self.weights == "synthetic" and self.entry.synthetic_is_cut and not self.check_def.full_depth
        return self.entry.synthetic_layers if cut else None

    @property
    def slow(self) -> bool:
        """Slow entries, and mutation rows beyond the tiny geometries (a dozen mutants, each a quality check:
        the main job runs them all, the default test run the tiny ones)."""
        return self.entry.slow or (self.check_def.slow_beyond_tiny and not self.entry.is_tiny)

    @property
    def model_key(self) -> tuple:
        return (self.entry.id, self.weights, self.device)


def _rows(config) -> list[Row]:
    """Every check of catalog entries, then of the models named in --models that no entry names (sentinel_matrix/adhoc.py)."""
    entries = (*load_catalog(), *config.stash.get(ADHOC_ENTRIES, ()))
    return [Row(entry, weights, check, device) for entry in entries for weights in entry.sources
            for check in registry.names() for device in DEVICES]


def pytest_generate_tests(metafunc):
    if "row" not in metafunc.fixturenames:
        return
    rows = _rows(metafunc.config)
    params = []
    for row in rows:
        marks = []
        if row.slow:
            marks.append(pytest.mark.slow)
        if row.device == "cuda":
            marks.append(pytest.mark.gpu)
        if row.weights == "hub":
            marks.append(pytest.mark.hub)
        marks.append(pytest.mark.xdist_group("/".join(row.model_key)))  # --dist loadgroup: one worker per model
        params.append(pytest.param(row, id=row.id, marks=marks))
    metafunc.parametrize("row", params)


def pytest_configure(config):
    for name, text in (("slow", "large catalog entries, left out unless --slow"),
                       ("gpu", "rows that need a CUDA device"), ("hub", "rows that need the real hub checkpoint"),
                       ("xdist_group", "rows of one model, kept on one xdist worker with --dist loadgroup")):
        config.addinivalue_line("markers", f"{name}: {text}")
    # Records are appended (the newest per row wins in the report), so a filtered run never wipes the
    # evidence of other rows; --results-fresh starts the file afresh (not for --collect-only, and only
    # in the controller, never in an xdist worker).
    results = Path(config.getoption("--results"))
    fresh = config.getoption("--results-fresh") and not config.getoption("collectonly")
    if fresh and not hasattr(config, "workerinput") and results.exists():
        results.unlink()


def _selected(row: Row, config) -> bool:
    families = csv(config.getoption("--families"))
    models = csv(config.getoption("--models"))
    checks = csv(config.getoption("--checks")) or registry.default_names()
    devices = csv(config.getoption("--devices"))
    weights = csv(config.getoption("--weights"))
    if families and row.entry.family not in families:
        return False
    named = isinstance(row.entry, adhoc.AdhocEntry) or any(m in (row.entry.id, row.entry.slug) for m in models)
    if models and not named and not any(fnmatch.fnmatchcase(row.entry.id, m) for m in models if is_glob(m)):
        return False
    if row.check not in checks or row.device not in devices:
        return False
    if "all" not in weights and "default" not in weights and row.weights not in weights:
        return False
    if row.slow and not config.getoption("--slow") and not named:
        return False
    return True


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        row = getattr(item, "callspec", None) and item.callspec.params.get("row")
        if row is None:
            keep.append(item)
        else:
            (keep if _selected(row, config) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)

    def order(item):
        row = getattr(item, "callspec", None) and item.callspec.params.get("row")
        if row is None:
            return (0, "", 0)
        return (1, "/".join(row.model_key), registry.names().index(row.check))

    items[:] = sorted(keep, key=order)  # rows of one model run back to back and share its loaded pair
    evidence.preload()


# Loaded models ---------------------------------------------------------------------------------

_PAIRS: dict[tuple, object] = {}  # model_key -> ModelPair, or the exception its loading raised
_PAIR_FILES: dict[tuple, tuple] = {}  # model_key -> the files its provisioning and loading ran: every row using it counts them


def release_models() -> None:
    _PAIRS.clear()
    _PAIR_FILES.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _dtype(row: Row, config) -> str:
    return "float32" if row.device == "cpu" else config.getoption("--cuda-dtype")


def _exact_fp32_matmuls() -> None:
    """fp32 CUDA rows are held to fp32's bar: TF32 (10-bit mantissa matmuls) would be bf16-like rounding."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def skip_for_transformers(entry) -> None:
    import transformers

    from packaging.version import Version

    if entry.min_transformers and Version(transformers.__version__) < Version(entry.min_transformers):
        pytest.skip(f"needs transformers >= {entry.min_transformers}: {entry.min_transformers_why}")


def _provision(row: Row, config):
    """The checkpoint folder, tokenizer and HF kwargs for a row, or pytest.skip with the reason."""
    from sentinel_matrix import sources

    entry = row.entry
    if isinstance(entry, adhoc.AdhocEntry):
        folder, tokenizer = adhoc.provision(entry)
        return folder, tokenizer, True
    skip_for_transformers(entry)
    if row.weights == "synthetic":
        return sources.synthetic_checkpoint(entry), None, False
    if row.weights == "package":
        folder = sources.package_checkpoint(entry)
        return folder, sources.tokenizer_for(folder), True
    folder = sources.hub_checkpoint(entry.id, entry.gated)  # skips with the reason when it cannot be had
    return folder, sources.tokenizer_for(folder), True


@pytest.fixture
def pair(row, request):
    from sentinel_matrix.checks import load_pair

    config = request.config
    if row.model_key not in _PAIRS:
        release_models()  # one model pair in memory at a time
        with evidence.TRACER.scope() as files:
            try:
                folder, tokenizer, real = _provision(row, config)
                _PAIRS[row.model_key] = load_pair(folder, row.device, _dtype(row, config), tokenizer, real,
                                                  device_map=config.getoption("--device-map"))
            except pytest.skip.Exception:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded as this model's failure, the run goes on
                _PAIRS[row.model_key] = exc
        _PAIR_FILES[row.model_key] = files
    else:
        evidence.TRACER.include(_PAIR_FILES[row.model_key])
    if row.device == "cuda" and _dtype(row, config) == "float32":
        _exact_fp32_matmuls()
    loaded = _PAIRS[row.model_key]
    if isinstance(loaded, Exception):
        raise loaded
    return loaded


@pytest.fixture
def bench_folder(row, request):
    """The checkpoint a bench row times; the bench loads its own models (HF eager, SDPA and compiled)."""
    release_models()
    skip_for_transformers(row.entry)
    if row.weights == "synthetic":
        from sentinel_matrix import sources

        folder = sources.synthetic_checkpoint(row.entry, full_depth=True)
    else:
        folder, _, _ = _provision(row, request.config)
    return folder, row.device, _dtype(row, request.config)


@pytest.fixture
def metrics(request) -> dict:
    """Test bodies put their measurements here; the report hook writes them into the row's record."""
    return request.node.stash.setdefault(ROW_KEY, {})


# Records ---------------------------------------------------------------------------------------

def _fault(call) -> str | None:
    """The machine fault that stopped the row (sentinel_matrix/faults.py), or None."""
    return environment_fault(call.excinfo.value) if call is not None and call.excinfo is not None else None


def _reason(report, call) -> str:
    if report.skipped:
        longrepr = report.longrepr
        return longrepr[2].removeprefix("Skipped: ") if isinstance(longrepr, tuple) else str(longrepr)
    if call is not None and call.excinfo is not None:
        exc = call.excinfo.value
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        kind = type(exc).__name__
        if isinstance(exc, torch.OutOfMemoryError):
            release_models()
        fault = _fault(call)
        if fault:
            return f"could not finish: {fault}" + (f" ({kind}: {message[:160]})" if message and message not in fault else "")
        return message if kind in ("CheckFailed", "AssertionError") else f"{kind}: {message}"
    return ""


def _outcome(report, call, inconclusive: bool) -> str:
    if inconclusive:
        return INCONCLUSIVE
    if report.passed:
        return PASSED
    if report.skipped:
        return SKIPPED
    return ERROR if _fault(call) else FAILED


def _failure_metrics(call) -> dict:
    """A failed check's measurements travel on its CheckFailed; the record keeps them."""
    exc = call.excinfo.value if call is not None and call.excinfo is not None else None
    return dict(getattr(exc, "metrics", None) or {})


def _inconclusive(call) -> bool:
    from sentinel_matrix.checks import CheckInconclusive

    return call is not None and call.excinfo is not None and isinstance(call.excinfo.value, CheckInconclusive)


def _checkpoint(row: Row) -> dict:
    """Which checkpoint a row ran: a named folder, file or hub id with its fingerprint; packaged weights' sha256."""
    from sentinel_matrix import sources

    if row.weights == "hub":  # the revision as it is now: an ad-hoc id may have been downloaded by this row
        return {**getattr(row.entry, "checkpoint", {}), "location": row.entry.id,
                "revision": sources.hub_revision(row.entry.id)}
    if isinstance(row.entry, adhoc.AdhocEntry):
        return row.entry.checkpoint
    if row.weights == "package":
        from sentinel_matrix.sources import PACKAGED

        packaged = PACKAGED.get(row.entry.id)
        return {"location": packaged.file, "fingerprint": packaged.sha256[:16]} if packaged else {}
    return {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Trace what each row runs, from its fixtures to its report (sentinel_matrix/evidence.py)."""
    row = getattr(item, "callspec", None) and item.callspec.params.get("row")
    if row is None:
        return (yield)
    item.stash[NEXT_ITEM_KEY] = nextitem
    with evidence.TRACER.scope() as files:
        item.stash[FILES_KEY] = files
        return (yield)


def _depends(item, row: Row) -> dict:
    entry_table = row.entry.table_hash or None  # an ad-hoc model has no entry: its checkpoint names it
    return evidence.depends(item.stash.get(FILES_KEY, (set(), set())), entry_table)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    row = getattr(item, "callspec", None) and item.callspec.params.get("row")
    if row is None or item.stash.get(records_written_key, False):
        return report
    final = (call.when == "call") or (call.when == "setup" and not report.passed)
    if not final:
        return report
    inconclusive = _inconclusive(call)
    if inconclusive:  # neither a pass nor a failure: pytest shows it as a skip with the reason
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1], str(call.excinfo.value))
    item.stash[records_written_key] = True
    config = item.config
    entry = row.entry
    loaded = getattr(_PAIRS.get(row.model_key), "adaptive", None)
    path = {"adaptive_path": loaded.adaptive_path} if loaded is not None else {}  # native or generic-wrapper
    metrics = {**path, **item.stash.get(ROW_KEY, {}), **_failure_metrics(call)}
    hf_cache.after_model(item, item.stash.get(NEXT_ITEM_KEY, None), metrics)  # --cache-budget-gb
    record = {
        "family": entry.family, "model": entry.id, "weights": row.weights, "check": row.check,
        "device": row.device, "dtype": _dtype(row, config),
        "outcome": _outcome(report, call, inconclusive),
        "reason": _reason(report, call),
        "metrics": metrics,
        "env": records.environment(row.device, _depends(item, row)), "time": records.now(),
        "duration_s": round(report.duration, 3),
        "synthetic_layers": row.synthetic_layers,
    }
    checkpoint = _checkpoint(row)
    if checkpoint:
        record["checkpoint"] = checkpoint
    records.append_record(config.getoption("--results"), record)
    return report

