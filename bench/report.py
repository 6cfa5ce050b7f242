"""Write a run's results: ``bench/results/<size>.json`` for tools, and the size's section of
``docs/benchmarks.md`` between ``<!-- bench:<size>:start -->`` and ``<!-- bench:<size>:end -->``
markers (a new size goes above ``NEW_SIZES_GO_HERE``). The ingest API and serving sections
are written by their own modules (``bench/ingest_api.py``, ``bench/serving.py``); everything
else in that page (the findings, the scale-on-paper notes) is written by hand and left as it
is."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil

from common.settings import REPO_DIR

RESULTS_DIR = REPO_DIR / "bench" / "results"
DOC = REPO_DIR / "docs" / "benchmarks.md"
PACKAGES = ("duckdb", "dlt", "dbt-core", "dbt-duckdb", "dagster", "dagster-dbt", "pyarrow")
GIB = 1024**3
# The page's hand-written parts follow this line; a size seen for the first time goes above.
NEW_SIZES_GO_HERE = "<!-- bench: the section of a new size goes above this line -->"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": psutil.cpu_count(logical=True),
        "memory_gib": round(psutil.virtual_memory().total / GIB, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {name: importlib.metadata.version(name) for name in PACKAGES},
        "commit": commit,
    }


def _seconds(stats: dict[str, Any] | None) -> str:
    if not stats:
        return ""
    if stats.get("n", 1) <= 1 or stats["low"] == stats["high"]:
        return f"{stats['median']:.2f}"
    return f"{stats['median']:.2f} ({stats['low']:.2f}-{stats['high']:.2f})"


def _rss(stats: dict[str, Any] | None) -> str:
    if not stats:
        return ""
    mib = 1024**2
    if stats.get("n", 1) <= 1 or stats["low"] == stats["high"]:
        return f"{stats['median'] / mib:,.0f}"
    return f"{stats['median'] / mib:,.0f} ({stats['low'] / mib:,.0f}-{stats['high'] / mib:,.0f})"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def _benchmark_markdown(key: str, result: dict[str, Any], run: dict[str, Any]) -> list[str]:
    if "error" in result:
        return [f"### {key}", "", f"**Failed:** `{result['error']}`", ""]
    if "skipped" in result:
        return [f"### {key}", "", f"Skipped: {result['skipped']}.", ""]
    met = result.get("met")
    verdict = "met" if met else ("not met" if met is False else "no target")
    lines = [
        f"### {result['title']}",
        "",
        f"Input: {result['input']}. Checked: {result['checked']}.",
        f"Target: {result['target']}. Measured: **{result['measured']}** ({verdict}).",
        "",
    ]
    if result.get("finished", run["finished"]) != run["finished"]:
        lines[-1:-1] = [f"(Measured {result['finished']}, {result.get('code', '')}.)"]
    extra_cols = [
        c
        for c in ("dbt_nodes_seconds", "dbt_models_seconds")
        if any(c in row for row in result["rows"])
    ]
    header = ["", "seconds, median (min-max)", "ratio"]
    for col in extra_cols:
        header += [col.replace("_seconds", "").replace("_", " ") + " s", "ratio"]
    header += ["peak RSS MiB", "RSS ratio"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in result["rows"]:
        cells = [row["label"], _seconds(row.get("seconds")), _ratio(row.get("ratio"))]
        for col in extra_cols:
            ratio_key = "ratio_" + col.replace("_seconds", "")
            cells += [_seconds(row.get(col)), _ratio(row.get(ratio_key))]
        cells += [_rss(row.get("peak_rss")), _ratio(row.get("ratio_peak_rss"))]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    # Figures that are not times against a baseline (the real-time tier's lag by rate), as
    # the benchmark formatted them.
    for table in result.get("tables", []):
        lines += [table["caption"], ""]
        lines.append("| " + " | ".join(table["header"]) + " |")
        lines.append("|" + "---|" * len(table["header"]))
        lines += ["| " + " | ".join(row) + " |" for row in table["rows"]]
        lines.append("")
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    if result.get("notes"):
        lines.append("")
    if result.get("slowest_nodes"):
        lines.append("Slowest dbt nodes in the last timed run (seconds):")
        lines.append("")
        for history, nodes in result["slowest_nodes"].items():
            text = ", ".join(f"{name} {seconds:.2f}" for name, seconds in nodes)
            lines.append(f"- {history} days: {text}")
        lines.append("")
    return lines


def markdown(size: str, run: dict[str, Any]) -> str:
    info = run["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    lines = [
        f"<!-- bench:{size}:start -->",
        f"## Size {size}",
        "",
        f"Measured {run['finished']} on {info['cpu']}, {info['cores']} cores, "
        f"{info['memory_gib']} GiB, {info['os']}; Python {info['python']}, {versions}; "
        f"code: {run.get('code', 'commit ' + info['commit'])}. "
        f"{run['repeats']} runs of each measurement; "
        f"a full run took {run.get('full_run_seconds', run['seconds']) / 60:.0f} minutes. "
        "Ratios are median over median; "
        "times are seconds of the work itself (without interpreter start-up) except for "
        "dbt, where they are whole invocations.",
        "",
    ]
    for key, result in run["benchmarks"].items():
        if key in ("ingest_api", "serving"):  # they write sections of their own
            continue
        lines += _benchmark_markdown(key, result, run)
    ingest = run["benchmarks"].get("ingest_api")
    if ingest is not None and "skipped" in ingest:
        lines += [f"Ingest API: skipped ({ingest['skipped']}).", ""]
    serving = run["benchmarks"].get("serving")
    if serving is not None and "error" in serving:
        lines += [f"Serving: **failed** (`{serving['error']}`).", ""]
    lines.append(f"<!-- bench:{size}:end -->")
    return "\n".join(lines)


def write(size: str, run: dict[str, Any], results_dir: Path = RESULTS_DIR, doc: Path = DOC) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{size}.json").write_text(json.dumps(run, indent=2, default=str) + "\n")
    block = markdown(size, run)
    start, end = f"<!-- bench:{size}:start -->", f"<!-- bench:{size}:end -->"
    write_marked(doc, block, start, end, new_goes_before=NEW_SIZES_GO_HERE)


def write_marked(
    doc: Path, block: str, start: str, end: str, new_goes_before: str | None = None
) -> None:
    """Put ``block`` (which begins with ``start`` and ends with ``end``) in place of the
    page's text between those markers; a page without them gets it before
    ``new_goes_before`` when that is on the page, else at the end."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    elif new_goes_before and new_goes_before in text:
        before, after = text.split(new_goes_before, 1)
        text = before + block + "\n\n" + new_goes_before + after
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def load(size: str, results_dir: Path = RESULTS_DIR) -> dict[str, Any] | None:
    """The last results written for ``size``, if any."""
    path = results_dir / f"{size}.json"
    return json.loads(path.read_text()) if path.exists() else None


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
