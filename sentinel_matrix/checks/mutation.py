"""The mutation check: does the matrix catch conversion bugs? (sentinel_matrix/mutants.py)"""

from __future__ import annotations

import functools

from sentinel_core.names import INFER, QUALITY

from .. import grading
from ..evidence import memo
from .infer import check_infer
from .pair import CheckFailed, CheckInconclusive, ModelPair
from .quality import check_quality
from .reference import adaptive_logprobs, hf_reference


def check_mutation(pair: ModelPair, names=None) -> dict:
    """Every applicable mutant (sentinel_matrix/mutants.py) injected in turn into the adaptive model, the quality and
    infer checks run on it, and the model restored.

    A mutant's effect is a property of the bug, not of rounding: it is measured on an fp32 copy of the
    adaptive model with the same mutant (the row's own model in fp32 rows), against HF in fp32, on the fp32 row's
    inputs (the padded batch called both ways; whole vocabulary, real positions), so a mutant is catchable in half
    precision exactly when the fp32 row can see it. It is catchable when that exceeds the fp32
    bar (grading.mutation_bar: in half precision, fp32's bar on the row's own weights), in every dtype; the row
    fails when a catchable mutant passes the checks, and records the catch rate, and in half precision how many of
    them the rounding statistics alone caught (their power without fp32's rule on the row's weights). A mutant that cannot act on these inputs is not applicable, by construction."""
    from ..mutants import MUTANTS

    ref = hf_reference(pair)
    if ref.fp32 is None:
        raise CheckFailed(f"no fp32 reference to measure mutants against: {ref.fp32_note}")
    try:  # the unmutated model must pass, or every mutant is "caught" for nothing (the quality and infer rows'
        # own results where they ran on this pair: the same checks on the same model)
        memo(pair.cache, QUALITY, lambda: check_quality(pair))
        memo(pair.cache, INFER, lambda: check_infer(pair))
    except CheckFailed as exc:
        raise CheckFailed(f"the unmutated model already fails ({exc}); a mutation score would mean nothing",
                          exc.metrics) from None
    fp32_model = pair.adaptive if pair.dtype == "float32" else pair.load_fp32_adaptive()
    # the bar the row's exactness is held to: fp32's, or, in half precision, fp32's on the row's own weights
    bar = grading.mutation_bar(ref.attention_paths_diff if pair.dtype == "float32" else ref.widened_paths_diff)
    half = pair.dtype != "float32"
    longest = max([ref.ids.shape[1]] + [ids.shape[1] for ids, _, _ in ref.statistics.values()])
    mutants = {}
    for name, m in MUTANTS.items():
        if names is not None and name not in names:
            continue
        why_not = m.inapplicable(pair.adaptive, longest=longest, dtype=pair.dtype)
        undo = why_not or m.apply(pair.adaptive)
        if isinstance(undo, str):
            mutants[name] = {"applicable": False, "reason": undo}
            continue
        undo_fp32 = m.apply(fp32_model) if fp32_model is not pair.adaptive else (lambda: None)
        try:
            # On the fp32 row's inputs, where fp32's bar holds: over thousands of positions a correct model is
            # already past it (grading.py), so the statistics inputs' effect is shown, not counted.
            effects = {name: (o - f).abs()[r].max().item()
                       for name, (o, _, f, r) in adaptive_logprobs(pair, ref, model=fp32_model).items()}
            effect = max(effects["padded"], effects["hf_call"])
            far = max([v for name, v in effects.items() if name not in ("padded", "hf_call")], default=None)
            caught_by, by_statistics = "", False
            for check in (functools.partial(check_quality, fail_fast=True), check_infer):
                try:
                    check(pair)
                except (CheckFailed, CheckInconclusive) as exc:
                    caught_by = f"{'infer' if check is check_infer else 'quality'}: {str(exc)[:160]}"
                    by_statistics = any(probe["grade"] == grading.POOR
                                        for probe in exc.metrics.get("half_precision", {}).values())
                    break
        finally:
            undo()
            undo_fp32()
        mutants[name] = {"applicable": True, "effect": effect, "catchable": effect > bar,
                         "caught": bool(caught_by), "caught_by": caught_by}
        if far is not None:
            mutants[name]["effect_statistics_inputs"] = far
        if half:  # would half precision's rounding statistics alone have caught it? (their power, shown apart)
            mutants[name]["caught_by_statistics"] = by_statistics
    del fp32_model
    ran = [(n, v) for n, v in mutants.items() if v["applicable"]]
    catchable = [n for n, v in ran if v["catchable"]]
    missed = [n for n in catchable if not mutants[n]["caught"]]
    caught = len(catchable) - len(missed)
    score = {"caught": caught, "catchable": len(catchable), "missed": missed,
             "catch_rate": caught / len(catchable) if catchable else None,
             "below_bar": len(ran) - len(catchable), "not_applicable": len(mutants) - len(ran),
             "caught_below_bar": sum(1 for n, v in ran if not v["catchable"] and v["caught"]),
             # fp32: how many mutants move the model past the bar (sensitivity); half precision: the checks' power
             "meaning": "sensitivity" if pair.dtype == "float32" else "power"}
    if half:
        score["caught_by_statistics"] = sum(1 for n in catchable if mutants[n]["caught_by_statistics"])
    metrics = {"mutants": mutants, "mutation_score": score, "bar": bar}
    if missed:
        raise CheckFailed(f"{len(missed)} of {len(catchable)} catchable mutants (fp32 effect above {bar:.1e}) passed "
                          f"the {pair.dtype} checks: "
                          + ", ".join(f"{n} (effect {mutants[n]['effect']:.2e})" for n in missed), metrics)
    return metrics
