"""Benchmark of the ingest API (``sluice serve``) on loopback, beside a plain baseline.

``run(workdir) -> dict`` starts a real server (uvicorn, uvloop, httptools) on 127.0.0.1 and
drives it from a separate load-generator process (a small keep-alive HTTP/1.1 client on
asyncio; pure Python, bounded in time):

- events/s accepted with batches of 100 events, and single-event requests/s (closed loop,
  as fast as the server answers);
- p50 / p99 latency at half of each maximum rate (open loop: requests leave on a fixed
  schedule, and latency counts from the scheduled time, so queueing is not hidden);
- the baseline, measured in the same run: one process parsing the same bodies and appending
  them to a file with an fsync per body;
- the CPU time each spends per batch of 100 (the server's from /proc, all its threads; the
  baseline's ``process_time``): on a machine shared with other work, fsync times and free
  cores swing the rates from one round to the next, the CPU per batch much less.

``python -m bench.ingest_api`` runs it and writes the "Ingest API" section of
docs/benchmarks.md. Reads no environment; the server gets its settings from its own.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.measure import start_sluice_serve
from bench.report import write_marked

REPO_DIR = Path(__file__).resolve().parent.parent
DOC = REPO_DIR / "docs" / "benchmarks.md"
START, END = "<!-- bench:ingest_api:start -->", "<!-- bench:ingest_api:end -->"

BATCH_SIZE = 100
BODIES = 64
PHASE_SECONDS = 3.0
REPEATS = 3
BATCH_CONNECTIONS = 32
SINGLE_CONNECTIONS = 64
TARGETS = {"batched_events_per_s": 50_000, "single_requests_per_s": 2_000, "p99_ms": 50.0}


def _event(n: int, now: dt.datetime) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Feature Used",
        "userId": f"user-{n % 5000}",
        "messageId": f"bench-{n}",
        "timestamp": (now - dt.timedelta(milliseconds=n % 1000)).isoformat(),
        "properties": {"feature": "export", "plan": "pro", "items": n % 7},
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
    }


def make_bodies() -> dict[str, list[bytes]]:
    now = dt.datetime.now(dt.UTC)
    sent_at = now.isoformat()
    batches = [
        json.dumps(
            {
                "batch": [_event(b * BATCH_SIZE + i, now) for i in range(BATCH_SIZE)],
                "sentAt": sent_at,
            }
        ).encode()
        for b in range(BODIES)
    ]
    singles = [json.dumps({**_event(n, now), "sentAt": sent_at}).encode() for n in range(BODIES)]
    return {"batch": batches, "track": singles}


# --- the load generator (runs in its own process) -------------------------------------------


def _request(path: str, body: bytes, auth: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def _generate(config: dict[str, Any]) -> dict[str, Any]:
    requests = [
        _request(config["path"], b.encode("latin-1"), config["auth"]) for b in config["bodies"]
    ]
    connections, seconds, rate = config["connections"], config["seconds"], config.get("rate")
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    end = started + seconds

    async def worker(number: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", config["port"])
        interval = connections / rate if rate else 0.0
        scheduled = started + number * (interval / connections if rate else 0.0)
        index = number
        while True:
            now = time.perf_counter()
            if rate:
                if scheduled > now:
                    await asyncio.sleep(scheduled - now)
                begin = scheduled
                scheduled += interval
            else:
                begin = now
            if begin >= end:
                break
            status = await _exchange(reader, writer, requests[index % len(requests)])
            latencies.append(time.perf_counter() - begin)
            statuses[status] = statuses.get(status, 0) + 1
            index += connections
        writer.close()

    await asyncio.gather(*(worker(n) for n in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "seconds": elapsed,
        "statuses": {str(k): v for k, v in statuses.items()},
        "ok": statuses.get(200, 0),
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
    }


def _load_generator_main() -> None:
    config = json.loads(sys.stdin.read())
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(_generate(config))))


def _drive(port: int, key: str, path: str, bodies: list[bytes], **options: Any) -> dict[str, Any]:
    import base64

    config = {
        "port": port,
        "auth": base64.b64encode(f"{key}:".encode()).decode(),
        "path": path,
        "bodies": [b.decode("latin-1") for b in bodies],
        "seconds": PHASE_SECONDS,
        **options,
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.ingest_api", "--load-generator"],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        cwd=REPO_DIR,
        timeout=PHASE_SECONDS + 60,
        check=True,
    )
    return dict(json.loads(done.stdout))


# --- the baseline: parse and append with fsync, one process ---------------------------------


def baseline(bodies: list[bytes], path: Path, seconds: float = PHASE_SECONDS) -> dict[str, float]:
    import orjson

    requests = events = 0
    started = time.perf_counter()
    cpu_started = time.process_time()
    with path.open("ab") as handle:
        while time.perf_counter() - started < seconds:
            doc = orjson.loads(bodies[requests % len(bodies)])
            messages = doc.get("batch", [doc])
            handle.write(b"".join(orjson.dumps(m) + b"\n" for m in messages))
            handle.flush()
            os.fsync(handle.fileno())
            requests += 1
            events += len(messages)
    elapsed = time.perf_counter() - started
    return {
        "requests_per_s": requests / elapsed,
        "events_per_s": events / elapsed,
        "cpu_us_per_request": (time.process_time() - cpu_started) / requests * 1e6,
    }


# --- the run -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SLUICE_DATA_DIR": str(data_dir),
        "SLUICE_API_RATE": "100000000",
        "SLUICE_API_BURST": "100000000",
    }
    return start_sluice_serve(env, port, log)


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fsync_quantile(port: int, quantile: float) -> float | None:
    """Upper bucket bound of the server's fsync-time histogram at ``quantile``, in ms."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    buckets: list[tuple[float, int]] = []
    for line in text.splitlines():
        if line.startswith('sluice_api_fsync_duration_seconds_bucket{le="'):
            bound = line.split('"')[1]
            buckets.append(
                (float("inf") if bound == "+Inf" else float(bound), int(float(line.split()[-1])))
            )
    total = buckets[-1][1] if buckets else 0
    for bound, count in buckets:
        if total and count >= quantile * total:
            return bound * 1000
    return None


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def run(workdir: Path) -> dict[str, Any]:
    """Measure the API and its baseline (median of REPEATS rounds); returns JSON-able figures."""
    from common.keys import KeyStore

    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    key = KeyStore(data_dir / "keys.json").create("bench")
    bodies = make_bodies()
    port = _free_port()
    rounds: list[dict[str, float]] = []
    statuses: dict[str, int] = {}
    load_before = os.getloadavg()[0]
    server = _start_server(data_dir, port, workdir / "serve.log")
    try:
        for _ in range(REPEATS):
            cpu_before = _cpu_seconds(server.pid)
            batched = _drive(port, key, "/v1/batch", bodies["batch"], connections=BATCH_CONNECTIONS)
            server_cpu = _cpu_seconds(server.pid) - cpu_before
            single = _drive(port, key, "/v1/track", bodies["track"], connections=SINGLE_CONNECTIONS)
            batched_rate = batched["ok"] * BATCH_SIZE / batched["seconds"]
            single_rate = single["ok"] / single["seconds"]
            half_single = _drive(
                port,
                key,
                "/v1/track",
                bodies["track"],
                connections=SINGLE_CONNECTIONS,
                rate=single_rate / 2,
            )
            half_batched = _drive(
                port,
                key,
                "/v1/batch",
                bodies["batch"],
                connections=BATCH_CONNECTIONS,
                rate=batched_rate / BATCH_SIZE / 2,
            )
            base_batch = baseline(bodies["batch"], workdir / "baseline-batch.jsonl")
            base_single = baseline(bodies["track"], workdir / "baseline-single.jsonl")
            for phase in (batched, single, half_single, half_batched):
                for status, count in phase["statuses"].items():
                    statuses[status] = statuses.get(status, 0) + count
            rounds.append(
                {
                    "batched_rate": batched_rate,
                    "single_rate": single_rate,
                    "half_single_p50": half_single["p50_ms"],
                    "half_single_p99": half_single["p99_ms"],
                    "half_batched_p50": half_batched["p50_ms"],
                    "half_batched_p99": half_batched["p99_ms"],
                    "base_events": base_batch["events_per_s"],
                    "base_requests": base_single["requests_per_s"],
                    "batch_cpu_us": server_cpu / max(batched["ok"], 1) * 1e6,
                    "base_batch_cpu_us": base_batch["cpu_us_per_request"],
                }
            )
        fsync_p50, fsync_p99 = _fsync_quantile(port, 0.5), _fsync_quantile(port, 0.99)
    finally:
        server.terminate()
        server.wait(timeout=60)
    m = {name: _median([r[name] for r in rounds]) for name in rounds[0]}
    landed = sum(p.stat().st_size for p in (data_dir / "landing").rglob("*.jsonl"))
    result = {
        "measured": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": round(load_before, 2),
        "phase_seconds": PHASE_SECONDS,
        "repeats": REPEATS,
        "statuses": statuses,
        "batched": {
            "events_per_s": round(m["batched_rate"]),
            "baseline_events_per_s": round(m["base_events"]),
            "ratio_vs_baseline": round(m["batched_rate"] / m["base_events"], 2),
            "half_load_p50_ms": round(m["half_batched_p50"], 2),
            "half_load_p99_ms": round(m["half_batched_p99"], 2),
            "cpu_us_per_batch": round(m["batch_cpu_us"]),
            "baseline_cpu_us_per_batch": round(m["base_batch_cpu_us"]),
        },
        "single": {
            "requests_per_s": round(m["single_rate"]),
            "baseline_requests_per_s": round(m["base_requests"]),
            "ratio_vs_baseline": round(m["single_rate"] / m["base_requests"], 2),
            "half_load_rate": round(m["single_rate"] / 2),
            "half_load_p50_ms": round(m["half_single_p50"], 2),
            "half_load_p99_ms": round(m["half_single_p99"], 2),
        },
        "fsync_ms": {"p50_at_most": fsync_p50, "p99_at_most": fsync_p99},
        "rounds": rounds,
        "landed_bytes": landed,
        "targets": TARGETS,
    }
    shutil.rmtree(data_dir, ignore_errors=True)
    for name in ("baseline-batch.jsonl", "baseline-single.jsonl"):
        (workdir / name).unlink(missing_ok=True)
    return result


def markdown(result: dict[str, Any]) -> str:
    b, s, t = result["batched"], result["single"], result["targets"]
    # Results written before the CPU figures were measured have none.
    cpu = "cpu_us_per_batch" in b
    cpu_row = (
        [
            f"| CPU µs per batch of 100 (server: its process, all threads) | "
            f"{b['cpu_us_per_batch']:,} | {b['baseline_cpu_us_per_batch']:,} | "
            f"{b['baseline_cpu_us_per_batch'] / b['cpu_us_per_batch']:.2f} | |"
        ]
        if cpu
        else []
    )
    cpu_note = (
        " The CPU line's ratio is the baseline's CPU per batch over the server's; it moves "
        "far less than the rates when other work shares the machine and its disk."
        if cpu
        else ""
    )
    return "\n".join(
        [
            START,
            "## Ingest API",
            "",
            f"Measured {result['measured']} on {result['machine']} with "
            "`python -m bench.ingest_api`: `sluice serve` (uvicorn, uvloop, httptools, one "
            "process) on 127.0.0.1, driven by a separate keep-alive load-generator process for "
            f"{result['phase_seconds']:.0f} s per figure, median of {result['repeats']} rounds "
            "(API and baseline alternate, so both see the same machine). Every 200 means the "
            "events were fsynced to a landing segment (group commit). The baseline is one "
            "process parsing the same bodies and appending them to a file with an fsync per "
            f"body. Load average before the run: {result['load_average_before']} (other work "
            "on the machine moves the latency tail most). Server fsync per commit group: "
            f"p50 ≤ {result['fsync_ms']['p50_at_most']} ms, "
            f"p99 ≤ {result['fsync_ms']['p99_at_most']} ms.{cpu_note}",
            "",
            "| measure | API | baseline | ratio | target |",
            "|---|---:|---:|---:|---:|",
            f"| events/s, batches of 100 | {b['events_per_s']:,} | "
            f"{b['baseline_events_per_s']:,} | {b['ratio_vs_baseline']} | "
            f"≥ {t['batched_events_per_s']:,} |",
            *cpu_row,
            f"| requests/s, one event each | {s['requests_per_s']:,} | "
            f"{s['baseline_requests_per_s']:,} | {s['ratio_vs_baseline']} | "
            f"≥ {t['single_requests_per_s']:,} |",
            f"| single events at half load ({s['half_load_rate']:,}/s): p50 / p99 ms | "
            f"{s['half_load_p50_ms']} / {s['half_load_p99_ms']} | | | p99 ≤ {t['p99_ms']:.0f} |",
            f"| batches at half load: p50 / p99 ms | "
            f"{b['half_load_p50_ms']} / {b['half_load_p99_ms']} | | | p99 ≤ {t['p99_ms']:.0f} |",
            "",
            END,
        ]
    )


def write_section(result: dict[str, Any], doc: Path = DOC) -> None:
    write_marked(doc, markdown(result), START, END)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load-generator", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()
    if args.load_generator:
        _load_generator_main()
        return
    with tempfile.TemporaryDirectory(prefix="sluice-bench-api-") as work:
        result = run(Path(work))
    print(json.dumps(result, indent=2))
    if not args.no_doc:
        write_section(result)


if __name__ == "__main__":
    main()
