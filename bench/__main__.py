"""``python -m bench [--size S|M|L] [--only NAME,...]``: generate the data, run every benchmark,
write ``bench/results/<size>.json`` and the size's section of ``docs/benchmarks.md``.

A benchmark whose output differs from its baseline's fails the run (exit status 1) and its
figures are not reported. The work folder (generated data, one data directory per benchmark)
is a temporary folder, removed at the end unless ``--keep`` is given.

The code benchmarked is a snapshot of the committed HEAD (``git archive``), not the working
tree: other people's half-made edits never leak into the figures, and the report names the
commit. ``--source DIR`` benchmarks another checkout instead (``--source .`` the working tree).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    backfill,
    end_to_end,
    generator,
    history,
    ingest,
    load,
    memory,
    realtime,
    report,
    retention,
    spark,
)
from bench.context import Context
from bench.measure import MismatchError
from bench.sizes import SIZES
from common.settings import REPO_DIR

BENCHMARKS: dict[str, Callable[..., dict[str, Any]]] = {
    "generator": generator.run,
    "load": load.run,
    "history": history.run,
    "backfill": backfill.run,
    "end_to_end": end_to_end.run,
    "memory": memory.run,
    "ingest_api": ingest.run,
    "serving": ingest.run_serving,
    "realtime": realtime.run,
    "retention": retention.run,
    "spark": spark.run,
}


def snapshot_head(work: Path) -> tuple[Path, str]:
    """The committed HEAD, extracted into ``work/source``; returns (folder, commit)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO_DIR, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    source = work / "source"
    source.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD"], cwd=REPO_DIR, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    return source, commit


def run_all(
    size: str,
    work: Path,
    only: list[str] | None = None,
    repeats: int | None = None,
    keep: bool = False,
    write: bool = True,
    source: Path | None = None,
) -> dict[str, Any]:
    if source is None:
        source, code = snapshot_head(work)
        code = f"commit {code} (a snapshot of HEAD)"
    else:
        source = source.resolve()
        code = f"the checkout {source}"
    ctx = Context(SIZES[size], work, source, repeats or SIZES[size].repeats, keep=keep)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    failed = False
    for name, bench in BENCHMARKS.items():
        if only and name not in only:
            continue
        print(f"[bench {size}] {name} ...", flush=True)
        step = time.perf_counter()
        try:
            if name == "memory":
                # Flatness comes from the history benchmark: this run's, else the last one's.
                history = results.get("history")
                if history is None and write:
                    history = (report.load(size) or {}).get("benchmarks", {}).get("history")
                results[name] = bench(ctx, history)
            else:
                results[name] = bench(ctx)
        except MismatchError as error:
            failed = True
            results[name] = {"error": f"output differs from the baseline: {error}"}
        except Exception as error:  # one broken benchmark should not hide the others
            failed = True
            traceback.print_exc()
            results[name] = {"error": f"{type(error).__name__}: {error}"}
        outcome = results[name].get("error") or results[name].get("measured", "done")
        print(f"[bench {size}] {name}: {outcome} ({time.perf_counter() - step:.0f} s)", flush=True)
    for result in results.values():
        result.setdefault("code", code)
        result.setdefault("finished", report.now())
    measured = set(results)
    full_run_seconds = None
    if write and only:
        # A partial run updates its benchmarks in the size's results and keeps the others.
        previous = report.load(size)
        if previous is not None:
            for result in previous["benchmarks"].values():
                result.setdefault("code", previous.get("code", ""))
                result.setdefault("finished", previous["finished"])
            results = {**previous["benchmarks"], **results}
            full_run_seconds = previous.get("full_run_seconds", previous["seconds"])
            results = {name: results[name] for name in BENCHMARKS if name in results}
    run = {
        "size": size,
        "finished": report.now(),
        "seconds": time.perf_counter() - started,
        "full_run_seconds": full_run_seconds or time.perf_counter() - started,
        "repeats": ctx.repeats,
        "code": code,
        "machine": report.machine(),
        "benchmarks": results,
        "failed": failed,
    }
    if write:
        write_results(size, run, measured)
    return run


# Benchmarks that write a section of docs/benchmarks.md of their own, by their module.
OWN_SECTIONS = {"ingest_api": ingest.MODULE, "serving": ingest.SERVING}


def write_results(
    size: str,
    run: dict[str, Any],
    measured: set[str],
    results_dir: Path = report.RESULTS_DIR,
    doc: Path = report.DOC,
) -> None:
    """Write the results and the size's section; refresh the own section of each benchmark in
    ``measured`` (those this invocation ran) only. The others' results come from the last
    results file, which can be older than their sections: ``python -m bench.ingest_api`` and
    ``python -m bench.serving`` rewrite their sections without touching it."""
    report.write(size, run, results_dir, doc)
    for name, module in OWN_SECTIONS.items():
        if name in measured and name in run["benchmarks"]:
            ingest.write_section(run["benchmarks"][name], module, doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--size", default="S", choices=sorted(SIZES))
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--repeats", type=int, help="runs per measurement (default per size)")
    parser.add_argument("--work", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--source", type=Path, help="checkout to benchmark (default: a snapshot of HEAD)"
    )
    args = parser.parse_args(argv)
    only = args.only.split(",") if args.only else None
    unknown = set(only or []) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; choose from {sorted(BENCHMARKS)}")
    work = args.work or Path(tempfile.mkdtemp(prefix=f"sluice-bench-{args.size}-"))
    try:
        run = run_all(args.size, work, only, args.repeats, args.keep, source=args.source)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {report.DOC} and {report.RESULTS_DIR / (args.size + '.json')}")
    return 1 if run["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
