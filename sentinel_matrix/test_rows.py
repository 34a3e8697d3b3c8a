"""Every matrix row: one check (sentinel_matrix/registry.py) of one model, weight source and device."""


def test_row(row, request, metrics):
    metrics.update(row.check_def.run(row, request))
