"""The compatibility matrix's command-line options, for every pytest run from the repository root
(sentinel_matrix/plugin.py; `sentinel check` loads the same plugin with -p)."""

pytest_plugins = ["sentinel_matrix.plugin"]
