"""What a row's verdict depends on, and whether it still holds.

While a row runs, `TRACER` notes every project Python file whose code runs (any function, or a module body
imported during the row) and every project data file it opens for reading. The record keeps each with its
content hash (`depends`), with the hash of its catalog entry, and one `fingerprint` over all of it. A record is
current while every one of those is unchanged in the tree the report renders from: editing a family's file
stales that family's rows only, editing the CLI stales none, editing a catalog entry stales that entry's rows.

Work a row reuses from an earlier one (the loaded model pair, HF's reference outputs) carries the files that
produced it (`memo`, `TRACER.include`), so cached work is never missing from a row's files. Timed loops run
untraced (`TRACER.paused`) because tracing would slow what they time; the code they time has already run, traced,
in their warm-up.

Python 3.12+ traces with `sys.monitoring` (each code object reports once per row, then is disabled: no cost in
loops); older Pythons with `sys.settrace` (a call event per Python call, nothing per line). Torch-free: the
report reads `stale_reason` without importing torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The project's own top-level folders and files (everything else under ROOT, such as a virtual environment,
# or site-packages when installed, is someone else's code).
PROJECT_PARTS = ("sentinel_core", "sentinel_matrix", "sentinel_cli", "sentinel_reports", "matrix", "tests", "conftest.py")
# Read by every row but stands for itself in a record by the row's own entry (`entry_hash`), so editing
# one entry stales that entry's rows only.
CATALOG = "sentinel_matrix/catalog.toml"
HASH_DIGITS = 16
SELF = "sentinel_matrix/evidence.py"  # the tracer's own frames: it records evidence, it decides no verdict
MONITORING_TOOL = 4  # sys.monitoring tool ids 0-2 and 5 are the debugger's, coverage's, the profiler's, the optimizer's
TOOL_NAME = "sentinel-evidence"


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:HASH_DIGITS]


def entry_hash(table: dict) -> str:
    """A catalog entry's table as written (id, family, config, sources, ...): what the entry decides."""
    return content_hash(json.dumps(table, sort_keys=True, default=str).encode())


def _outside_project_prefixes() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, paths.get("stdlib", ""), paths.get("purelib", ""),
                paths.get("platlib", "")}
    prefixes.add(tempfile.gettempdir())
    return tuple(os.path.join(os.path.realpath(p), "") for p in prefixes if p)


class Tracer:
    """Project files that ran (and data files read) while scopes are open; scopes nest (a row, a pair load)."""

    def __init__(self, root: Path = ROOT):
        self.root = os.path.join(os.path.realpath(root), "")
        self._keys: dict[str, str | None] = {}  # a code object's file name -> its key, or None when not ours
        self._scopes: list[tuple[set, set]] = []
        self._paused = 0
        self._previous_trace = None
        self._audit_hooked = False
        self._outside = _outside_project_prefixes()
        # Code generated at run time (torch.compile's kernels under the temp folder) is no file a record can name.
        self._cwd = os.path.join(os.path.realpath(os.getcwd()), "")

    # Which files count ---------------------------------------------------------------------------------
    def _key(self, filename: str, code: bool = True) -> str | None:
        key = self._keys.get(filename, 0) if code else 0
        if key != 0:
            return key
        key = None
        if filename and not filename.startswith("<"):
            path = os.path.realpath(filename)
            if path.startswith(self.root):
                relative = path[len(self.root):].replace(os.sep, "/")
                if relative.split("/", 1)[0] in PROJECT_PARTS and "/__pycache__/" not in relative \
                        and relative != SELF:
                    key = relative
            elif code and path.startswith(self._cwd) and not path.startswith(self._outside):
                key = path  # a plugin of the user's own, in the folder they run from: its absolute path
        if code:
            self._keys[filename] = key
        return key

    # Scopes ---------------------------------------------------------------------------------------------
    @contextmanager
    def scope(self):
        """Collect while the block runs; yields (code files, data files), filled as they run."""
        files: tuple[set, set] = (set(), set())
        self._scopes.append(files)
        if len(self._scopes) == 1:
            self._start()
        elif _MONITORING:
            sys.monitoring.restart_events()  # code that already reported in the outer scope reports again here
        try:
            yield files
        finally:
            del self._scopes[next(i for i, open_scope in enumerate(self._scopes) if open_scope is files)]
            if not self._scopes:
                self._stop()

    def include(self, files: tuple[set, set]) -> None:
        """Count, in every open scope, the files that produced something this scope reuses."""
        for code, data in self._scopes:
            code.update(files[0])
            data.update(files[1])

    @contextmanager
    def paused(self):
        """Run the block untraced: only for timed repeats of code that already ran traced."""
        if not self._scopes:
            yield
            return
        self._paused += 1
        self._stop()
        try:
            yield
        finally:
            self._paused -= 1
            if not self._paused and self._scopes:
                self._start()

    # The two tracing mechanisms -------------------------------------------------------------------------
    def _note(self, filename: str, module_body: bool = False) -> None:
        key = self._key(filename)
        if key is not None:
            if module_body:  # imported now (a family file, on first use): its hash is the one this import reads
                _AS_LOADED[key] = _file_hash(_resolve(key, ROOT))
            for code, _ in self._scopes:
                code.add(key)

    def _on_start(self, code, offset):
        self._note(code.co_filename, module_body=code.co_name == "<module>")
        return sys.monitoring.DISABLE

    def _on_call(self, frame, event, arg):
        # Called for every Python call while tracing (Python < 3.12): the common case, a file already known not
        # to be ours, costs one dict lookup.
        if event == "call":
            filename = frame.f_code.co_filename
            key = self._keys.get(filename, 0)
            if key is not None:  # ours, or not looked up yet
                self._note(filename, module_body=frame.f_code.co_name == "<module>")
        previous = self._previous_trace
        return previous(frame, event, arg) if previous is not None else None

    def _on_audit(self, event: str, args) -> None:
        if event != "open" or not self._scopes or self._paused:
            return
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        if not isinstance(path, (str, bytes, os.PathLike)):
            return
        reading = ("r" in mode and not set(mode) & set("wax+")) if isinstance(mode, str) else \
            isinstance(flags, int) and not flags & (os.O_WRONLY | os.O_RDWR)
        if not reading:
            return
        key = self._key(os.fsdecode(path), code=False)
        if key is not None and key != CATALOG and not key.endswith((".py", ".pyc")):
            for _, data in self._scopes:
                data.add(key)

    def _start(self) -> None:
        if not self._audit_hooked:
            sys.addaudithook(self._on_audit)  # audit hooks cannot be removed; it returns at once outside scopes
            self._audit_hooked = True
        if _MONITORING:
            monitoring = sys.monitoring
            if monitoring.get_tool(MONITORING_TOOL) != TOOL_NAME:
                if monitoring.get_tool(MONITORING_TOOL) is not None:  # never record rows with nothing traced
                    raise RuntimeError(f"sys.monitoring tool id {MONITORING_TOOL} is held by "
                                       f"{monitoring.get_tool(MONITORING_TOOL)!r}: a row's evidence cannot be traced")
                monitoring.use_tool_id(MONITORING_TOOL, TOOL_NAME)
                for event in (monitoring.events.PY_START, monitoring.events.PY_RESUME):  # a generator resumed counts
                    monitoring.register_callback(MONITORING_TOOL, event, self._on_start)
            monitoring.set_events(MONITORING_TOOL, monitoring.events.PY_START | monitoring.events.PY_RESUME)
            monitoring.restart_events()
        else:
            self._previous_trace = sys.gettrace()
            sys.settrace(self._on_call)
            threading.settrace(self._on_call)

    def _stop(self) -> None:
        if _MONITORING:
            sys.monitoring.set_events(MONITORING_TOOL, 0)
        else:
            sys.settrace(self._previous_trace)
            threading.settrace(self._previous_trace)
            self._previous_trace = None


def preload(packages=("sentinel_core", "sentinel_matrix")) -> None:
    """Import the project's modules (all but family files and command lines) before the first row: a module body
    run inside a row would count as that row's evidence, and only the first row of a process would run it."""
    import importlib
    import pkgutil

    for part in PROJECT_PARTS:  # every project file's hash as it is now, at the start of the run
        for path in ((ROOT / part).rglob("*.py") if (ROOT / part).is_dir() else ()):
            if "__pycache__" not in path.parts:
                _loaded_hash(path.relative_to(ROOT).as_posix(), ROOT)
    for package_name in packages:
        package = importlib.import_module(package_name)
        for module in pkgutil.walk_packages(package.__path__, f"{package_name}."):
            name = module.name
            if not (name.startswith(("sentinel_core.families.", "sentinel_matrix.data"))
                    or name in ("sentinel_matrix.conftest", "sentinel_matrix.test_rows", "sentinel_core.main", "sentinel_matrix.plugin")):
                importlib.import_module(name)


_MONITORING = hasattr(sys, "monitoring")
TRACER = Tracer()


def memo(cache: dict, key: str, compute):
    """`cache[key]`, computed once; every later use counts the files its computation ran."""
    if key in cache:
        value, files = cache[key]
        TRACER.include(files)
        return value
    with TRACER.scope() as files:
        value = compute()
    cache[key] = (value, files)
    return value


# Records and the tree ------------------------------------------------------------------------------------

def _file_hash(path: Path, _memo: dict = {}) -> str | None:  # noqa: B006 - a per-process memo by stat
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _memo:
        try:
            _memo[key] = content_hash(path.read_bytes())
        except OSError:
            return None
    return _memo[key]


def _resolve(name: str, root: Path) -> Path:
    return Path(name) if os.path.isabs(name) else root / name


# Each file's hash as this process first saw it (preload() hashes every project module before the first row): a
# record names the code that ran, even when the file is edited while a long run goes on.
_AS_LOADED: dict[str, str | None] = {}


def _loaded_hash(name: str, root: Path) -> str | None:
    if name not in _AS_LOADED:
        _AS_LOADED[name] = _file_hash(_resolve(name, root))
    return _AS_LOADED[name]


_DEFINITIONS_READ: dict[str, set[str]] = {}


def definitions_read(name: str, root: Path = ROOT) -> set[str]:
    """Project files whose module-level constants the file `name` reads by name (`from X import C`, `X.C`): a module
    of constants (names.py) never runs a function, so tracing alone would miss it."""
    if name in _DEFINITIONS_READ:
        return _DEFINITIONS_READ[name]
    import ast
    import inspect

    found: set[str] = set()
    path = _resolve(name, root)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        _DEFINITIONS_READ[name] = found
        return found
    parts = name.removesuffix(".py").split("/")
    package = ".".join(parts[:-1] if parts[-1] == "__init__" else parts[:-1])
    if parts[-1] == "__init__":
        package = ".".join(parts[:-1])

    def note(module_name: str, attribute: str) -> None:
        module = sys.modules.get(module_name)
        value = getattr(module, attribute, None) if module is not None else None
        # Constants only: a function or class that is used runs code (traced where it runs), while a class named only
        # in an isinstance or except would tie a row to every path a file mentions (the wrapper's to the decoder's).
        if module is None or value is None or inspect.ismodule(value) or callable(value):
            return
        key = TRACER._key(getattr(module, "__file__", "") or "")
        if key is not None and key != name:
            found.add(key)

    modules: dict[str, str] = {}  # a local name -> the project module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: max(0, len(package.split(".")) - node.level + 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in sys.modules:
                    modules[alias.asname or alias.name] = f"{base}.{alias.name}"
                else:
                    note(base, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    modules[alias.asname] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            note(modules[node.value.id], node.attr)
    _DEFINITIONS_READ[name] = found
    return found


def depends(files: tuple[set, set], catalog_entry: str | None, root: Path = ROOT) -> dict:
    """The record's `depends`: each file with its hash as this process loaded it (code and data), and the catalog
    entry's hash. Besides the files whose code ran, the project modules whose constants those files read by name
    (definitions_read)."""
    code, data = files
    code = set(code) | {read for name in code if not os.path.isabs(name) for read in definitions_read(name, root)}
    return {"code": {name: _loaded_hash(name, root) for name in sorted(code)},
            "data": {name: _loaded_hash(name, root) for name in sorted(data)},
            "catalog_entry": catalog_entry}


def fingerprint(depends: dict) -> str:
    return content_hash(json.dumps(depends, sort_keys=True).encode())


def stale_reason(record: dict, current_entry_hash=None, root: Path = ROOT) -> str | None:
    """Why a record no longer describes the tree at `root` (None: it is current). `current_entry_hash(model)` gives
    the hash of the model's catalog entry now (None when the catalog no longer has it)."""
    depends_on = record.get("env", {}).get("depends")
    if not isinstance(depends_on, dict):
        return "measured before evidence was keyed per row"
    if not depends_on.get("code") and record.get("outcome") not in (None, "skipped"):
        return "no code was traced while it ran"
    for kind in ("code", "data"):
        for name, recorded in sorted((depends_on.get(kind) or {}).items()):
            now = _file_hash(_resolve(name, root))
            if now != recorded:
                return f"{name} {'is gone' if now is None else 'changed'}"
    recorded_entry = depends_on.get("catalog_entry")
    if recorded_entry is not None and current_entry_hash is not None:
        now = current_entry_hash(record.get("model"))
        if now != recorded_entry:
            return "its catalog entry is gone" if now is None else "its catalog entry changed"
    return None
