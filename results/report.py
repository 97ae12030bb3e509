"""One self-contained HTML page (figures embedded as base64 PNG) of one or more studies.

Usage: ``python -m results.report studies/grid1 [more study dirs] [-o report.html]``
(default output: ``report.html`` inside the one local study directory given, else ``./``).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import html
import sys
from pathlib import Path

import pandas as pd

from results import aggregate
from results.aggregate import Report, ReportError
from results.figures import hyperparameter_view, png_bytes, standard_figures
from results.importance import finished_trials, importances, study_metric
from results.paper_tables import PAPER_TABLES
from results.render import html_table
from results.storage import is_uri
from results.tables import MergeError, SchemaError, load
from trainables.eval_sets import set_columns

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
.note { color: #555; font-size: 0.85em; margin: 0.2em 0; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.scroll { overflow-x: auto; }
"""


def _section(report: Report) -> str:
    parts = [f"<h2>{html.escape(report.title)}</h2>"]
    for name, df in report.tables.items():
        if len(report.tables) > 1:
            parts.append(f"<h3>{html.escape(name)}</h3>")
        parts.append(f'<div class="scroll">{html_table(df)}</div>')
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in report.notes]
    return "\n".join(parts)


def sections(tables: dict[str, pd.DataFrame]) -> list[Report]:
    """The reports the page shows: studies, leaderboard (and by the worst evaluation set, where
    there are any), a comparison, the papers' tables, hyperparameter importance."""
    out = [aggregate.overview(tables), aggregate.leaderboard(tables)]
    trials = tables["trials"]
    if set_columns(trials.columns, "auc"):  # the study had evaluation sets (--eval-data)
        out.append(aggregate.leaderboard(tables, by="worst-eval"))
    axes = [k for k in aggregate.varying(trials) if trials[k].nunique() > 1]
    if axes and trials["test_accuracy"].notna().any():
        out.append(aggregate.compare(tables, axes[0], axes[1] if len(axes) > 1 else None))
    for space in sorted(set(tables["studies"]["space"])):
        if space in PAPER_TABLES:
            out.append(aggregate.paper(tables, space))
    out.append(hyperparameters(tables))
    return out


def hyperparameters(tables: dict[str, pd.DataFrame]) -> Report:
    """Which hyperparameters mattered (fANOVA), and why a figure or table is missing."""
    metric = study_metric(tables)
    report = Report(f"hyperparameter importance for {metric}", {})
    try:
        report.tables["importance"] = importances(tables, metric)
        n = len(finished_trials(tables, metric)[0])
        report.notes.append(f"Optuna's fANOVA over the {n} finished trials: the share of the "
                            f"variance of {metric} each hyperparameter explains. Trials cut by "
                            "ASHA count with the value they reached; few trials, rough shares.")
    except ReportError as exc:
        report.notes.append(f"no importance table: {exc}")
    try:
        hyperparameter_view(tables)
        report.notes.append("the parallel-coordinates figure below shows each trial's "
                            f"hyperparameters and {metric}")
    except ReportError as exc:
        report.notes.append(f"no parallel-coordinates figure: {exc}")
    return report


def build_html(tables: dict[str, pd.DataFrame], title: str) -> str:
    body = [f"<h1>{html.escape(title)}</h1>",
            f'<p class="note">written {dt.datetime.now():%Y-%m-%d %H:%M} by results.report</p>']
    body += [_section(r) for r in sections(tables)]
    figures = standard_figures(tables)
    if figures:
        body.append("<h2>figures</h2>")
    for stem, fig in figures.items():
        data = base64.b64encode(png_bytes(fig)).decode()
        body.append(f"<h3>{html.escape(stem.replace('_', ' '))}</h3>"
                    f'<img alt="{html.escape(stem)}" src="data:image/png;base64,{data}">')
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>\n" + "\n".join(body) +
            "\n</body></html>\n")


def write_report(study_dirs: list[str], out: str | Path | None = None) -> Path:
    """Write the page; returns its path."""
    tables = load(study_dirs)
    names = ", ".join(tables["studies"]["study"]) or ", ".join(map(str, study_dirs))
    if out is None:
        local = len(study_dirs) == 1 and not is_uri(study_dirs[0])
        out = Path(study_dirs[0]) / "report.html" if local else Path("report.html")
    out = Path(out)
    out.write_text(build_html(tables, f"study report: {names}"), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m results.report", description=__doc__.split(
        "\n")[0])
    p.add_argument("study_dirs", nargs="+")
    p.add_argument("-o", "--out", help="the HTML file to write")
    args = p.parse_args(argv)
    try:
        print(write_report(args.study_dirs, args.out))
    except (ReportError, SchemaError, MergeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
