"""The matrix's rows (sentinel_matrix/test_rows.py), collected from `pytest matrix/`."""

from sentinel_matrix.test_rows import test_row  # noqa: F401
