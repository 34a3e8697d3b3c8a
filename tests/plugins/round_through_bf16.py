"""A deliberately broken converter (pytest plugin): OPT's weights rounded through bf16 on conversion.

Loaded with `-p round_through_bf16` by tests/test_matrix_can_fail.py: on synthetic weights off bf16's grid
the fp32 quality row must fail (on values bf16 holds exactly, this bug changed nothing).
"""

import dataclasses

from sentinel_core.families import FAMILIES, Rule


def rounded_rules(original):
    def rules(spec):
        def rounding(combine):
            return lambda *tensors: (combine(*tensors) if combine else tensors[0]).bfloat16().float()
        return [Rule(r.target, r.sources, rounding(r.combine)) for r in original(spec)]
    return rules


def pytest_configure(config):
    opt = FAMILIES["opt"]
    FAMILIES["opt"] = dataclasses.replace(opt, rules=rounded_rules(opt.rules))
