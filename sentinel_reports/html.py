"""A self-contained HTML report: the support tables plus inline SVG plots (sentinel_reports/plots.py; no scripts, no network)."""

from __future__ import annotations

from .plots import plots
from .render import _env, build_context, version_matrix


def render_html(records: list[dict], release_records: list[dict] | None = None) -> str:
    context = build_context(records)
    return _env().get_template("report.html.j2").render(**context, plots=plots(context["records"]),
                                                        versions=version_matrix(records + (release_records or [])))
