"""A deliberately broken converter (pytest plugin): OPT's two layer norms of layer 0 swapped.

Loaded with `-p swap_two_weights` by tests/test_matrix_can_fail.py to prove the matrix fails
when the adaptive model is not the HF model.
"""

import dataclasses

from sentinel_core.families import FAMILIES, Rule

SWAP = {"layers.0.attn_norm.weight": "layers.0.mlp_norm.weight", "layers.0.mlp_norm.weight": "layers.0.attn_norm.weight"}


def swapped_rules(original):
    def rules(spec):
        by_target = {r.target: r for r in original(spec)}
        return [Rule(r.target, by_target[SWAP[r.target]].sources, r.combine) if r.target in SWAP else r
                for r in by_target.values()]
    return rules


def pytest_configure(config):
    opt = FAMILIES["opt"]
    FAMILIES["opt"] = dataclasses.replace(opt, rules=swapped_rules(opt.rules))
