"""A deliberately broken converter (pytest plugin): OPT's positions no longer derived from the mask.

Loaded with `-p mask_positions_ignored` by tests/test_matrix_can_fail.py. A call with position_ids (as
generate makes) is still right; the call HF users make, `model(ids, attention_mask=mask)` on a left-padded
batch, counts the padding as positions and must fail the quality row.
"""

import dataclasses

from sentinel_core.families import FAMILIES


def pytest_configure(config):
    opt = FAMILIES["opt"]
    FAMILIES["opt"] = dataclasses.replace(
        opt, to_spec=lambda c: dataclasses.replace(opt.to_spec(c), positions_from_mask=False))
