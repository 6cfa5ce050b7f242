"""What ``sluice load`` and ``sluice materialize`` tell a user about the run: rows loaded and
rejected, files taken, days built and rows per model; one line, no traceback, when there is
nothing to build from; and full lines when stdout is a log or a pipe, not a terminal."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import duckdb

from common.settings import Settings

from .run_cli import assert_only_error_line, sluice

# A width that would wrap every line and cut every table cell if it were applied.
NARROW = {"COLUMNS": "40"}


def landing_file(
    settings: Settings, day: dt.date, valid: int, malformed: int, anonymous: int, name: str = ""
) -> Path:
    """A landing file (``name``, else one per day) of ``valid`` good track messages on
    ``day``, then ``malformed`` lines that are not JSON and ``anonymous`` messages without
    userId and anonymousId."""
    lines = [
        json.dumps(
            {
                "type": "track",
                "event": "Signed Up",
                "messageId": f"message-{name}{day}-{n}",
                "userId": f"user-{n}",
                "timestamp": f"{day}T{10 + n:02d}:00:00Z",
            }
        )
        for n in range(valid)
    ]
    lines += [f'{{"type": "track", "event": "cut off {n}' for n in range(malformed)]
    lines += [
        json.dumps(
            {
                "type": "track",
                "event": "Signed Up",
                "messageId": f"nobody-{day}-{n}",
                "timestamp": f"{day}T12:00:00Z",
            }
        )
        for n in range(anonymous)
    ]
    settings.landing_dir.mkdir(parents=True, exist_ok=True)
    path = settings.landing_dir / (name or f"events-{day}.jsonl")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_says_how_many_rows_it_loaded_and_rejected(make_settings) -> None:
    yesterday = dt.date.today() - dt.timedelta(days=1)
    settings: Settings = make_settings(yesterday)
    landing_file(settings, yesterday, valid=4, malformed=6, anonymous=4)

    loaded = sluice("load", env=NARROW)
    assert loaded.returncode == 0, loaded.stderr
    lines = loaded.stdout.splitlines()
    assert re.fullmatch(r"load succeeded \(run [0-9a-f-]{36}\)", lines[0]), loaded.stdout
    assert lines[1:] == [
        "loaded 4 rows from 1 new file (0 files loaded before)",
        "rejected 10 rows (6 malformed JSON, 4 missing userId and anonymousId (at least one is "
        "required)): see raw.rejected_events",
    ]
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert con.execute("select count(*) from raw.events").fetchone() == (4,)
        assert con.execute("select count(*) from raw.rejected_events").fetchone() == (10,)

    again = sluice("load", env=NARROW)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[1:] == [
        "loaded 0 rows from 0 new files (1 file loaded before)",
        "rejected 0 rows",
    ]


def test_materialize_says_what_to_do_when_nothing_was_loaded_and_what_it_built(
    make_settings,
) -> None:
    today = dt.date.today()
    first, yesterday = today - dt.timedelta(days=2), today - dt.timedelta(days=1)
    settings: Settings = make_settings(first)
    build = ("materialize", "--start", str(first), "--end", str(yesterday))

    # A new data directory: nothing landed, nothing loaded.
    assert_only_error_line(sluice(*build), str(settings.landing_dir), "`sluice generate` first")

    # A landing folder, but no events in it: the warehouse has no raw tables.
    settings.landing_dir.mkdir(parents=True)
    result = sluice(*build)
    assert_only_error_line(
        result, "no events have been loaded yet", "raw.", str(settings.landing_dir)
    )
    assert "sluice generate" in result.stderr and "Failure in model" not in result.stderr

    # Events landed but never loaded: materialize loads them first, and says so.
    landing_file(settings, first, valid=3, malformed=1, anonymous=0)
    landing_file(settings, yesterday, valid=2, malformed=0, anonymous=0)
    built = sluice(*build, env=NARROW)
    assert built.returncode == 0, built.stderr
    lines = built.stdout.splitlines()
    assert re.fullmatch(
        rf"materialize {first} \.\. {yesterday} succeeded \(run [0-9a-f-]{{36}}\)", lines[0]
    ), built.stdout
    assert lines[1:4] == [
        "loaded 5 rows from 2 new files (0 files loaded before)",
        "rejected 1 row (1 malformed JSON): see raw.rejected_events",
        f"built 2 days ({first} .. {yesterday})",
    ]
    assert lines[4] == "rows in the days each model rebuilt:"
    printed = {key: int(rows.replace(",", "")) for key, rows in map(str.split, lines[5:])}
    assert {"core/fct_events", "marts/dau", "marts/revenue_daily"} <= printed.keys()
    # Everything in these tables lies within the days the run rebuilt.
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        for key, rows in printed.items():
            table = key.replace("/", ".")
            assert con.execute(f"select count(*) from {table}").fetchone() == (rows,), key
    assert printed["core/fct_events"] == 5 and printed["marts/dau"] == 2

    # Late events for a day built longer ago than the lookback: loaded, and the user is told
    # how to rebuild that day (the load asset's warning, once on stderr, not a run log line).
    landing_file(settings, first, valid=1, malformed=0, anonymous=0, name="late.jsonl")
    loaded = sluice("load", env={"SLUICE_LATE_LOOKBACK_DAYS": "1"})
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.splitlines()[1] == "loaded 1 row from 1 new file (2 files loaded before)"
    assert loaded.stderr.splitlines() == [
        f"warning: 1 late events belong to days built more than 1 days ago ({first}); they are "
        f"not rebuilt automatically: run `sluice materialize --start {first} --end {first}` to "
        "include them"
    ]
