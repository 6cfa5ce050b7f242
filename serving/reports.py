"""Saved reports: a YAML file in ``reports/`` holds a query over the marts and a chart.

A report runs against the serving snapshot (never the warehouse) for a range of days and
writes ``<output dir>/<report name>/<end day>.html`` (one self-contained file: a table and an
inline SVG chart, no scripts, nothing fetched) or ``.csv``. The file format::

    name: daily_summary                # the file's name without .yml, [a-z0-9_]
    description: Active users per day.
    sql: |                             # over marts.*; :start and :end are the days given
      select event_date, active_users from marts.dau
      where event_date between :start and :end order by event_date
    chart: {type: line, x: event_date, y: active_users}   # or bar; y may be a list
    rates: [stickiness]                # optional: columns holding a share from 0 to 1
    schedule: daily                    # optional: daily or weekly (Mondays)
    window_days: 28                    # days a scheduled run covers, ending yesterday

Numbers read the same in every report (and on the dashboard): whole numbers with thousands
separators (1,234), other numbers with two decimals (1,234.50), and the ``rates`` columns as a
percentage with one decimal (57.1%). CSV keeps the numbers as the query returns them.

A run over days that give no rows says so (``ReportResult.note``: the range, and the days the
snapshot holds), in the HTML file and for ``require_rows``, which the CLI calls so that it
writes no empty file.

Reads nothing from the environment; callers pass the folders and the snapshot path.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import yaml

from common.durable import atomic_write_text
from serving.snapshot import SnapshotVersion, connect_snapshot, read_version

FORMATS = ("html", "csv")
CHART_TYPES = ("line", "bar")
SCHEDULES = ("daily", "weekly")
_FIELDS = {"name", "description", "sql", "chart", "rates", "schedule", "window_days"}
_NAME = re.compile(r"^[a-z0-9_]+$")
# :start / :end, but not the second colon of a cast such as x::date. Every runner of a report
# (query_report here, the query API, the benchmark) turns them into DuckDB's $start / $end with
# REPORT_PARAMETER.sub(r"$\1", sql).
REPORT_PARAMETER = re.compile(r"(?<![:\w]):(start|end)\b")


class ReportError(ValueError):
    """A report file or run a user must fix; the message names the file and the field."""


@dataclass(frozen=True)
class Chart:
    kind: str
    x: str
    y: tuple[str, ...]


@dataclass(frozen=True)
class Report:
    name: str
    description: str
    sql: str
    chart: Chart | None
    schedule: str | None
    window_days: int
    path: Path
    rates: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportResult:
    report: Report
    start: dt.date
    end: dt.date
    columns: list[str]
    rows: list[tuple[Any, ...]]
    version: SnapshotVersion
    # The first and last day in the snapshot's marts.dau; None when it holds no day.
    snapshot_days: tuple[dt.date, dt.date] | None = None

    @property
    def note(self) -> str | None:
        """What a reader must know about the range: that it gave no rows, or that the
        snapshot holds only part of it; None when neither."""
        held = (
            f"the serving snapshot holds the days {self.snapshot_days[0]} .. "
            f"{self.snapshot_days[1]}"
            if self.snapshot_days
            else "the serving snapshot holds no days"
        )
        if not self.rows:
            return f"No rows for {self.report.name} over {self.start} .. {self.end}: {held}"
        first, last = self.snapshot_days or (self.start, self.end)
        if self.start < first or self.end > last:
            return (
                f"{held[0].upper()}{held[1:]}, so only part of {self.start} .. {self.end} has data"
            )
        return None


def _text(data: dict[str, Any], field: str, path: Path, required: bool = True) -> str:
    value = data.get(field)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise ReportError(f"{path}: field {field!r} must be a non-empty string")
    return value.strip()


def _chart(value: Any, path: Path) -> Chart | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ReportError(f"{path}: field 'chart' must be a mapping with type, x and y")
    kind = value.get("type")
    if kind not in CHART_TYPES:
        raise ReportError(f"{path}: chart.type must be one of {', '.join(CHART_TYPES)}")
    x = value.get("x")
    if not isinstance(x, str) or not x:
        raise ReportError(f"{path}: chart.x must name a column of the query")
    y = value.get("y")
    ys = [y] if isinstance(y, str) else y
    if not isinstance(ys, list) or not ys or not all(isinstance(c, str) and c for c in ys):
        raise ReportError(f"{path}: chart.y must name a column of the query, or a list of them")
    return Chart(kind=kind, x=x, y=tuple(ys))


def _rates(value: Any, path: Path) -> tuple[str, ...]:
    columns = [value] if isinstance(value, str) else value if value is not None else []
    if not isinstance(columns, list) or not all(isinstance(c, str) and c for c in columns):
        raise ReportError(f"{path}: rates must name a column of the query, or a list of them")
    return tuple(columns)


def load_report(path: Path) -> Report:
    """Read and check one report file."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ReportError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a mapping with name, description, sql and chart")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ReportError(
            f"{path}: unknown field {unknown[0]!r}; the fields are {', '.join(sorted(_FIELDS))}"
        )
    name = _text(data, "name", path)
    if name != path.stem or not _NAME.match(name):
        raise ReportError(
            f"{path}: name {name!r} must equal the file name without .yml, in [a-z0-9_]"
        )
    sql = _text(data, "sql", path)
    schedule = data.get("schedule")
    if schedule is not None and schedule not in SCHEDULES:
        raise ReportError(f"{path}: schedule must be one of {', '.join(SCHEDULES)}, or absent")
    window_days = data.get("window_days", 1)
    if isinstance(window_days, bool) or not isinstance(window_days, int) or window_days < 1:
        raise ReportError(f"{path}: window_days must be a whole number of days, at least 1")
    return Report(
        name=name,
        description=_text(data, "description", path, required=False),
        sql=sql,
        chart=_chart(data.get("chart"), path),
        schedule=schedule,
        window_days=window_days,
        path=path,
        rates=_rates(data.get("rates"), path),
    )


def list_reports(reports_dir: Path) -> list[Report]:
    return [load_report(path) for path in sorted(reports_dir.glob("*.yml"))]


def report_names(reports_dir: Path) -> list[str]:
    """The names of the saved reports, without reading their files."""
    return sorted(p.stem for p in reports_dir.glob("*.yml") if _NAME.match(p.stem))


def find_report(reports_dir: Path, name: str) -> Report:
    names = report_names(reports_dir)
    if name not in names:
        known = ", ".join(names) or "none"
        raise ReportError(f"no report {name!r} in {reports_dir} (reports: {known})")
    return load_report(reports_dir / f"{name}.yml")


def query_report(snapshot: Path, report: Report, start: dt.date, end: dt.date) -> ReportResult:
    """Run the report's SQL on the serving snapshot for start..end (both included)."""
    if end < start:
        raise ReportError(f"--end {end} is before --start {start}")
    sql = REPORT_PARAMETER.sub(r"$\1", report.sql)
    with connect_snapshot(snapshot) as con:
        version = read_version(con)
        try:
            cursor = con.execute(sql, {"start": start, "end": end})
        except duckdb.Error as error:
            first_line = str(error).splitlines()[0]
            raise ReportError(f"{report.path}: the sql failed: {first_line}") from None
        columns = [d[0] for d in cursor.description or []]
        rows = cursor.fetchall()
        days = snapshot_days(con)
    named = [("chart", c) for c in (report.chart.x, *report.chart.y)] if report.chart else []
    for field, column in [*named, *(("rates", c) for c in report.rates)]:
        if column not in columns:
            raise ReportError(
                f"{report.path}: {field} column {column!r} is not in the query's columns "
                f"({', '.join(columns)})"
            )
    return ReportResult(report, start, end, columns, rows, version, days)


def snapshot_days(con: duckdb.DuckDBPyConnection) -> tuple[dt.date, dt.date] | None:
    """The first and last day the snapshot holds (by marts.dau), or None."""
    try:
        row = con.execute("select min(event_date), max(event_date) from marts.dau").fetchone()
    except duckdb.CatalogException:
        return None
    return (row[0], row[1]) if row and row[0] is not None else None


def require_rows(result: ReportResult) -> None:
    """Raise a ReportError when the range gave no rows: an empty file reads as a quiet day."""
    if result.rows:
        return
    hint = ""
    if result.snapshot_days is not None:
        first, last = result.snapshot_days
        if result.end < first or result.start > last:
            hint = (
                ". Pick days in that range, or load and build these "
                f"(`sluice materialize --start {result.start} --end {result.end}`)"
            )
    raise ReportError(f"{result.note}; no file written{hint}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def format_cell(value: Any, rate: bool = False) -> str:
    """A value as every report shows it: 1,234 / 1,234.50 / a rate (0..1) as 57.1%."""
    if value is None:
        return ""
    if rate and _is_number(value):
        return f"{float(value):.1%}"
    if isinstance(value, float | Decimal):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def render_csv(result: ReportResult) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow(["" if v is None else v for v in row])
    return out.getvalue()


_COLOURS = ("#2563eb", "#f97316", "#16a34a", "#9333ea", "#dc2626")


def _nice_top(value: float) -> float:
    """A round number at or above value, for the top of the y axis."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def render_svg(
    chart: Chart,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    rates: Collection[str] = (),
) -> str:
    """A line or bar chart as inline SVG: categories on x, one series per y column (the
    axis in percent when every series is a rate)."""
    width, height = 760, 320
    left, right, top, bottom = 64, 16, 16, 56
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [str(row[columns.index(chart.x)]) for row in rows]
    series = [
        [float(v) if _is_number(v) else 0.0 for v in (row[columns.index(name)] for row in rows)]
        for name in chart.y
    ]
    y_top = _nice_top(max((v for values in series for v in values), default=0.0))
    all_rates = all(name in rates for name in chart.y)

    def y_at(value: float) -> float:
        return top + plot_h - value / y_top * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(", ".join(chart.y))} by {html.escape(chart.x)}">',
        '<g font-family="sans-serif" font-size="11" fill="#374151">',
    ]
    for i in range(5):
        value = y_top * i / 4
        y = y_at(value)
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>'
        )
        exact = value.is_integer() and not all_rates
        label = f"{int(value):,}" if exact else format_cell(value, all_rates)
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    slot = plot_w / max(len(xs), 1)
    label_every = max(1, math.ceil(len(xs) / 10))
    for i, x in enumerate(xs):
        if i % label_every == 0:
            cx = left + slot * (i + 0.5)
            parts.append(
                f'<text x="{cx:.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                f"{html.escape(x)}</text>"
            )
    for index, (name, values) in enumerate(zip(chart.y, series, strict=True)):
        colour = _COLOURS[index % len(_COLOURS)]
        if chart.kind == "bar":
            bar_w = slot * 0.8 / len(series)
            for i, value in enumerate(values):
                bx = left + slot * i + slot * 0.1 + bar_w * index
                parts.append(
                    f'<rect x="{bx:.1f}" y="{y_at(value):.1f}" width="{bar_w:.1f}" '
                    f'height="{top + plot_h - y_at(value):.1f}" fill="{colour}">'
                    f"<title>{html.escape(name)} {html.escape(xs[i])}: "
                    f"{format_cell(value, name in rates)}</title>"
                    "</rect>"
                )
        else:
            points = " ".join(
                f"{left + slot * (i + 0.5):.1f},{y_at(value):.1f}" for i, value in enumerate(values)
            )
            parts.append(
                f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
            for i, value in enumerate(values):
                parts.append(
                    f'<circle cx="{left + slot * (i + 0.5):.1f}" cy="{y_at(value):.1f}" r="3" '
                    f'fill="{colour}"><title>{html.escape(name)} {html.escape(xs[i])}: '
                    f"{format_cell(value, name in rates)}</title></circle>"
                )
        legend_x = left + index * 200
        parts.append(
            f'<rect x="{legend_x}" y="{height - 18}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="{height - 9}">{html.escape(name)}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" '
        'stroke="#9ca3af"/>'
    )
    parts.append("</g></svg>")
    return "\n".join(parts)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #111827; }
h1 { font-size: 1.4rem; margin-bottom: 0.2rem; }
p.meta { color: #6b7280; font-size: 0.85rem; }
table { border-collapse: collapse; margin-top: 1.5rem; font-size: 0.9rem; }
th, td { padding: 0.3rem 0.8rem; border-bottom: 1px solid #e5e7eb; }
th { text-align: left; background: #f9fafb; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
p.note { background: #fef3c7; border: 1px solid #f59e0b; padding: 0.5rem 0.8rem; }
"""


def render_html(result: ReportResult) -> str:
    report = result.report
    chart = (
        ""
        if report.chart is None or not result.rows
        else render_svg(report.chart, result.columns, result.rows, report.rates)
    )
    header = "".join(f"<th>{html.escape(c)}</th>" for c in result.columns)
    rates = [c in report.rates for c in result.columns]
    body = "\n".join(
        "<tr>"
        + "".join(
            f'<td class="number">{format_cell(v, rate)}</td>'
            if _is_number(v)
            else f"<td>{html.escape(format_cell(v))}</td>"
            for v, rate in zip(row, rates, strict=True)
        )
        + "</tr>"
        for row in result.rows
    )
    note = result.note
    empty = "" if note is None else f'<p class="note">{html.escape(note)}.</p>'
    title_flag = "" if result.rows else " (no rows)"
    version = result.version
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(report.name)} {result.start} .. {result.end}{title_flag}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{html.escape(report.name)}: {result.start} .. {result.end}{title_flag}</h1>
<p>{html.escape(report.description)}</p>
<p class="meta">From the serving snapshot published by run {html.escape(version.run_id)} at
{version.built_at:%Y-%m-%d %H:%M} UTC.</p>
{chart}
{empty}
<table>
<thead><tr>{header}</tr></thead>
<tbody>
{body}
</tbody>
</table>
</body>
</html>
"""


def write_report(result: ReportResult, out_dir: Path, fmt: str) -> Path:
    """Write ``<out_dir>/<report>/<end day>.<fmt>`` whole and durably (a reader never sees half
    a file, and after a crash it holds the old report or the new one)."""
    if fmt not in FORMATS:
        raise ReportError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    text = render_html(result) if fmt == "html" else render_csv(result)
    target = out_dir / result.report.name / f"{result.end.isoformat()}.{fmt}"
    atomic_write_text(target, text)
    return target


def scheduled_window(report: Report, day: dt.date) -> tuple[dt.date, dt.date] | None:
    """The days a scheduled run on ``day`` covers (ending the day before), or None if not due."""
    if report.schedule is None:
        return None
    if report.schedule == "weekly" and day.weekday() != 0:
        return None
    end = day - dt.timedelta(days=1)
    return end - dt.timedelta(days=report.window_days - 1), end
