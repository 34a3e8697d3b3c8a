"""Command-line options of the compatibility matrix (registered here so `pytest matrix/ ...` and a plain
`pytest` from the repository root both know them; their names and valid values live in matrix/options.py)."""

from matrix.options import add_options, validate


def pytest_addoption(parser):
    add_options(parser)


def pytest_configure(config):
    validate(config)  # a bad name is a usage error before anything is collected
