"""Timing, peak memory and comparison helpers that every benchmark shares.

Each measured step runs as its own process (``python -m bench.worker`` or ``dbt``), so its
peak memory is its own: a thread samples the RSS of the whole process tree every 20 ms with
psutil. Wall time is measured around the process; workers also report the time of the work
itself, without interpreter start-up and imports.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

SAMPLE_SECONDS = 0.02


class MismatchError(AssertionError):
    """Sluice's output differs from the baseline's: the benchmark's figures mean nothing."""


@dataclass
class Run:
    """One measured process: wall seconds, peak RSS of its tree, and what it printed as JSON."""

    seconds: float
    peak_rss: int
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def work_seconds(self) -> float:
        """The work's own time when the worker reported it, else the whole process's."""
        return float(self.result.get("seconds", self.seconds))


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    try:
        procs = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


def run_process(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
) -> Run:
    """Run ``args`` to completion, sampling the RSS of its process tree; JSON on the last
    stdout line becomes ``Run.result``. Fails with the tail of its output when it fails."""
    full_env = {**os.environ, **(env or {})}
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(args),
        env=full_env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            watched = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            peak = max(peak, _tree_rss(watched))
            done.wait(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as handle:
            handle.write(f"$ {' '.join(args)}\n{output}\n")
    if proc.returncode != 0:
        tail = "\n".join(output.splitlines()[-30:])
        raise RuntimeError(f"{' '.join(args[:4])} ... exited {proc.returncode}:\n{tail}")
    result: dict[str, Any] = {}
    for line in reversed(output.splitlines()):
        if line.startswith("{") and line.endswith("}"):
            result = json.loads(line)
            break
    return Run(seconds, peak, result)


def run_worker(
    task: str, params: Mapping[str, Any], source: Path, env: Mapping[str, str] | None = None
) -> Run:
    """Run ``bench.worker`` ``task`` with ``params`` in a fresh Python process that imports
    Sluice from the checkout ``source`` (the code being benchmarked)."""
    args = [sys.executable, "-m", "bench.worker", task, json.dumps(params, default=str)]
    return run_process(args, env={**(env or {}), "PYTHONPATH": str(source)}, cwd=source)


@dataclass(frozen=True)
class Stats:
    """Median, min and max of several runs."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            raise ValueError("no runs to summarize")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(runs: Sequence[Run], work: bool = True) -> dict[str, Any]:
    """Time and peak RSS of runs as JSON-ready statistics."""
    seconds = [r.work_seconds if work else r.seconds for r in runs]
    return {
        "seconds": Stats.of(seconds).as_dict(),
        "process_seconds": Stats.of([r.seconds for r in runs]).as_dict(),
        "peak_rss": Stats.of([float(r.peak_rss) for r in runs]).as_dict(),
    }


def ratio(measured: Mapping[str, Any], baseline: Mapping[str, Any], key: str = "seconds") -> float:
    """Median over median, the figure every benchmark reports."""
    return float(measured[key]["median"]) / float(baseline[key]["median"])


def expect_equal(what: str, sluice: Any, baseline: Any) -> None:
    """Fail the benchmark when Sluice's output differs from the baseline's."""
    if sluice != baseline:
        raise MismatchError(f"{what}: Sluice gave {sluice!r}, the baseline gave {baseline!r}")


def expect_rows_equal(
    what: str,
    sluice: Sequence[Sequence[Any]],
    baseline: Sequence[Sequence[Any]],
    tolerance: float = 0.005,
) -> None:
    """Rows equal, floats within ``tolerance`` (sums in a different order differ in the last
    bits; compare unrounded values, since rounding can turn 1e-9 into a cent)."""
    if len(sluice) != len(baseline):
        raise MismatchError(f"{what}: Sluice has {len(sluice)} rows, the baseline {len(baseline)}")
    for ours, theirs in zip(sluice, baseline, strict=True):
        same = len(ours) == len(theirs) and all(
            abs(a - b) <= tolerance if isinstance(a, float) or isinstance(b, float) else a == b
            for a, b in zip(ours, theirs, strict=False)
        )
        if not same:
            raise MismatchError(f"{what}: Sluice has row {ours!r}, the baseline {theirs!r}")


def start_sluice_serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start `sluice serve` on 127.0.0.1:port with env, logging to log; wait until it listens."""
    import socket

    sluice = str(Path(sys.executable).with_name("sluice"))
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sluice, "serve", "--port", str(port)], env=env, stdout=out, stderr=out
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"sluice serve exited: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("sluice serve did not start in 30 s")
