"""Format a ``Report`` for a terminal, CSV, Markdown, JSON or HTML.

Usage: ``print(render(report, "markdown"))``; formats: ``FORMATS``.
"""

from __future__ import annotations

import html
import json
from typing import Any

import pandas as pd

from results.aggregate import Report

FORMATS = ("table", "csv", "markdown", "json")


def _cell(value: Any, digits: int = 4) -> str:
    if value is None or (not isinstance(value, str) and pd.api.types.is_scalar(value)
                         and pd.isna(value)):
        return ""
    if isinstance(value, pd.Timestamp):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value else f"{value:.{digits}f}"
    return str(value)


def _strings(df: pd.DataFrame) -> pd.DataFrame:
    return df.astype(object).apply(lambda col: col.map(_cell))


def _text_table(df: pd.DataFrame) -> str:
    if not len(df):
        return "(no rows)"
    return _strings(df).to_string(index=False)


def _markdown_table(df: pd.DataFrame) -> str:
    cells = _strings(df)
    lines = ["| " + " | ".join(str(c) for c in df.columns) + " |",
             "|" + "|".join("---" for _ in df.columns) + "|"]
    for row in cells.itertuples(index=False):
        lines.append("| " + " | ".join(v.replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def to_json(report: Report) -> dict[str, Any]:
    return {
        "title": report.title,
        "tables": {name: json.loads(df.to_json(orient="records", date_format="iso"))
                   for name, df in report.tables.items()},
        "notes": report.notes,
    }


def render(report: Report, fmt: str = "table") -> str:
    """The report as text; for ``csv`` the notes are left out (print them elsewhere)."""
    several = len(report.tables) > 1
    if fmt == "table":
        parts = [report.title, "=" * len(report.title)]
        for name, df in report.tables.items():
            parts += ([f"\n{name}:"] if several else []) + [_text_table(df)]
        parts += ["", *report.notes] if report.notes else []
        return "\n".join(parts)
    if fmt == "markdown":
        parts = [f"## {report.title}"]
        for name, df in report.tables.items():
            parts += ([f"### {name}"] if several else []) + [_markdown_table(df)]
        parts += [f"- {n}" for n in report.notes]
        return "\n\n".join(parts)
    if fmt == "csv":
        parts = []
        for name, df in report.tables.items():
            parts.append((f"# {name}\n" if several else "") + df.to_csv(index=False))
        return "\n".join(parts).rstrip("\n")
    if fmt == "json":
        return json.dumps(to_json(report), indent=1, default=str)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def html_table(df: pd.DataFrame) -> str:
    """An HTML table of formatted cells (escaped)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                   for row in _strings(df).itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
