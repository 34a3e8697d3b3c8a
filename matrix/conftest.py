"""`pytest matrix/` from a checkout: the matrix's rows live in the installed package sentinel_matrix (so a wheel
claims no generic top-level name); this folder only gives pytest a path to collect them from."""

from sentinel_matrix.conftest import *  # noqa: F401,F403 - the rows' hooks and fixtures
