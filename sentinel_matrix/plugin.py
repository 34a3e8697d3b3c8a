"""The matrix's pytest options as a plugin module. A checkout registers it from the root conftest.py
(`pytest_plugins`), so `pytest matrix/ ...` and a plain `pytest` both know the options; `sentinel check`
passes `-p sentinel_matrix.plugin`, since an installed wheel has no root conftest. Names and valid values live in
sentinel_matrix/options.py."""

import pytest

from sentinel_matrix import hf_cache, resume, workers
from sentinel_matrix.options import add_options, validate


def pytest_addoption(parser):
    add_options(parser)
    resume.add_options(parser)  # --skip-current


def pytest_configure(config):
    validate(config)  # a bad name is a usage error before anything is collected
    workers.configure(config)  # -n N: one GPU per worker, a model's rows on one worker
    hf_cache.configure(config)  # --cache-budget-gb


@pytest.hookimpl(trylast=True)  # after the matrix's own selection (sentinel_matrix/conftest.py)
def pytest_collection_modifyitems(config, items):
    if config.getoption("--skip-current"):
        from sentinel_matrix.conftest import _dtype

        row_of = lambda item: getattr(item, "callspec", None) and item.callspec.params.get("row")  # noqa: E731
        resume.deselect_current(config, items, row_of, dtype_of=lambda row: _dtype(row, config))
