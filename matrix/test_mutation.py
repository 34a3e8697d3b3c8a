"""mutation: conversion bugs injected into the adaptive model must fail the quality or infer check."""

from matrix.checks import check_mutation

CHECK = "mutation"


def test_mutation(row, pair, metrics):
    metrics.update(check_mutation(pair))
