"""The dlt load: each landing file exactly once, bad lines quarantined with reasons."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb

from common.settings import Settings
from ingestion.landing import landing_source
from ingestion.landing.helpers import LoadReport, batches
from ingestion.landing.queries import RAW_EVENTS_COLUMNS, RAW_REJECTED_COLUMNS
from ingestion.landing.settings import STAGING_FOLDER
from ingestion.pipeline import LOADER_FILE_FORMAT, make_pipeline

GOOD = [
    {
        "type": "track",
        "messageId": "m-1",
        "userId": "u1",
        "event": "Order Completed",
        "timestamp": "2026-03-01T23:30:00-05:00",
        "properties": {"revenue": 12.5, "currency": "EUR"},
        "context": {"library": {"name": "analytics-python"}},
    },
    {"type": "page", "anonymousId": "a1", "name": "Home", "timestamp": "2026-03-02T01:00:00+02:00"},
    {
        "type": "identify",
        "userId": "u1",
        "traits": {"plan": "pro"},
        "timestamp": "2026-03-02T00:00:00Z",
    },
]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def load(settings: Settings) -> LoadReport:
    report = LoadReport()
    make_pipeline(settings).run(
        landing_source(str(settings.landing_dir), report), loader_file_format=LOADER_FILE_FORMAT
    )
    return report


def query(settings: Settings, sql: str) -> list[tuple]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_each_file_loads_exactly_once(make_settings) -> None:
    settings = make_settings(dt.date(2026, 3, 1))
    write_lines(settings.landing_dir / "a.jsonl", [json.dumps(m) for m in GOOD])
    first = load(settings)
    assert (first.loaded_rows, first.rejected_rows, first.files) == (3, 0, ["a.jsonl"])
    # The quarantine exists (empty) from the first load, so models reading it always work.
    assert query(settings, "select count(*) from raw.rejected_events") == [(0,)]

    again = load(settings)
    assert (again.loaded_rows, again.skipped_files) == (0, 1)
    assert query(settings, "select count(*) from raw.events") == [(3,)]

    write_lines(settings.landing_dir / "sources" / "web" / "b.jsonl", [json.dumps(GOOD[0])])
    third = load(settings)
    assert third.files == ["sources/web/b.jsonl"]
    assert query(settings, "select _source, count(*) from raw.events group by 1 order by 1") == [
        ("files", 3),
        ("web", 1),
    ]


def test_offsets_are_kept_and_json_columns_stay_json(make_settings) -> None:
    settings = make_settings(dt.date(2026, 3, 1))
    write_lines(settings.landing_dir / "a.jsonl", [json.dumps(m) for m in GOOD])
    report = load(settings)
    # 23:30 at -05:00 is 04:30 UTC the next day.
    assert report.events_by_date == {"2026-03-01": 1, "2026-03-02": 2}
    rows = query(
        settings,
        "select cast(timezone('UTC', timestamp) as varchar), properties ->> '$.currency', "
        "typeof(properties) from raw.events where message_id = 'm-1'",
    )
    assert rows == [("2026-03-02 04:30:00", "EUR", "JSON")]


def test_bad_lines_are_quarantined_and_good_lines_of_the_same_file_load(make_settings) -> None:
    settings = make_settings(dt.date(2026, 3, 1))
    bad = [
        '{"type": "track", "userId": "u1", "event": "x", "timestamp": "2026-03-0',
        json.dumps({"type": "track", "event": "x", "timestamp": "2026-03-01T00:00:00Z"}),
        json.dumps({"type": "teleport", "userId": "u1", "timestamp": "2026-03-01T00:00:00Z"}),
        json.dumps({"type": "track", "userId": "u1", "timestamp": "2026-03-01T00:00:00Z"}),
        json.dumps({"type": "page", "userId": "u1", "timestamp": "yesterday"}),
        json.dumps(
            {"type": "page", "userId": "u1", "messageId": "x" * 101, "timestamp": "2026-03-01"}
        ),
        json.dumps([1, 2, 3]),
        json.dumps({"type": "page", "userId": "u1", "timestamp": "2026-03-01", "properties": 3}),
    ]
    lines = [json.dumps(GOOD[0]), *bad, "", json.dumps(GOOD[1])]
    write_lines(settings.landing_dir / "mixed.jsonl", lines)
    report = load(settings)
    assert (report.loaded_rows, report.rejected_rows) == (2, len(bad))

    rejected = dict(
        query(settings, "select _line_number, reason from raw.rejected_events order by 1")
    )
    assert rejected == {
        2: "malformed JSON",
        3: "missing userId and anonymousId (at least one is required)",
        4: 'unknown type "teleport"',
        5: "track message without event",
        6: 'timestamp "yesterday" is not an ISO-8601 timestamp',
        7: "messageId longer than 100 characters",
        8: "not a JSON object",
        9: "properties is not an object",
    }
    raw_lines = query(settings, "select raw_line from raw.rejected_events where _line_number = 2")
    assert raw_lines == [(bad[0],)]
    loaded = query(settings, "select _line_number from raw.events order by 1")
    assert loaded == [(1,), (11,)]


def test_lines_without_message_id_get_a_deterministic_one(make_settings) -> None:
    settings = make_settings(dt.date(2026, 3, 1))
    line = json.dumps(GOOD[1])
    write_lines(settings.landing_dir / "a.jsonl", [line])
    write_lines(settings.landing_dir / "b.jsonl", [line])
    load(settings)
    ids = query(settings, "select distinct message_id from raw.events")
    assert len(ids) == 1 and ids[0][0].startswith("sluice-")


def test_raw_tables_have_the_columns_the_loader_declares(make_settings) -> None:
    # The dbt tests build their raw tables from the same lists (tests/dbt_project/raw_events.py).
    settings = make_settings(dt.date(2026, 3, 1))
    write_lines(settings.landing_dir / "a.jsonl", [json.dumps(GOOD[0]), "{broken"])
    load(settings)
    for table, columns in (
        ("events", RAW_EVENTS_COLUMNS),
        ("rejected_events", RAW_REJECTED_COLUMNS),
    ):
        found = query(
            settings,
            "select column_name, lower(data_type) from information_schema.columns "
            f"where table_schema = 'raw' and table_name = '{table}' order by ordinal_position",
        )
        assert found == list(columns.items())


def test_files_parsed_in_one_batch_or_many_load_the_same(make_settings, monkeypatch) -> None:
    import ingestion.landing as landing_source_module

    lines = [json.dumps(m) for m in GOOD] + ["{broken"]
    together = make_settings(dt.date(2026, 3, 1), name="together")
    for name in ("a.jsonl", "b.jsonl", "c.jsonl"):
        write_lines(together.landing_dir / name, lines)
    one_batch = load(together)

    monkeypatch.setattr(landing_source_module, "BATCH_BYTES", 1)
    apart = make_settings(dt.date(2026, 3, 1), name="apart")
    for name in ("a.jsonl", "b.jsonl", "c.jsonl"):
        write_lines(apart.landing_dir / name, lines)
    many_batches = load(apart)

    for report in (one_batch, many_batches):
        assert report.files == ["a.jsonl", "b.jsonl", "c.jsonl"]
        assert (report.loaded_rows, report.rejected_rows) == (9, 3)
    sql = "select _source_file, _line_number, message_id from raw.events order by all"
    assert query(together, sql) == query(apart, sql)
    rejected = "select _source_file, _line_number, reason from raw.rejected_events order by all"
    assert query(together, rejected) == query(apart, rejected)
    assert [row[1] for row in query(together, rejected)] == [4, 4, 4]


def test_crlf_lines_odd_bytes_and_odd_names_load_like_plain_files(make_settings) -> None:
    settings = make_settings(dt.date(2026, 3, 1))
    no_id = json.dumps(GOOD[1])
    landing = settings.landing_dir
    landing.mkdir(parents=True, exist_ok=True)
    (landing / "plain.jsonl").write_bytes(f"{no_id}\n".encode())
    (landing / "windows.jsonl").write_bytes(f"{no_id}\r\n{{broken\r\n".encode())
    # Bytes that are not UTF-8 send the batch down the exact path; the line still loads.
    (landing / "latin1[1].jsonl").write_bytes(
        json.dumps(GOOD[0]).encode() + b"\n" + b'{"type": "page", "name": "Caf\xe9"\n'
    )
    report = load(settings)
    assert (report.loaded_rows, report.rejected_rows) == (3, 2)
    # The same message with either line ending gets the same derived id: it counts once.
    derived = query(settings, "select distinct message_id from raw.events where type = 'page'")
    assert len(derived) == 1 and derived[0][0].startswith("sluice-")
    rejected = query(
        settings, "select _source_file, _line_number, raw_line from raw.rejected_events order by 1"
    )
    assert rejected[0][:2] == ("latin1[1].jsonl", 2) and "\ufffd" in rejected[0][2]
    assert rejected[1] == ("windows.jsonl", 2, "{broken")


def test_staged_parquet_files_do_not_pile_up(make_settings) -> None:
    settings = make_settings(dt.date(2026, 3, 1))
    write_lines(settings.landing_dir / "a.jsonl", [json.dumps(m) for m in GOOD])
    load(settings)
    write_lines(settings.landing_dir / "b.jsonl", [json.dumps(m) for m in GOOD])
    load(settings)
    working_dir = Path(make_pipeline(settings).working_dir)
    # Only the last load's two files (accepted and rejected rows) remain, and dlt keeps no
    # copy of what it loaded.
    assert len(list((working_dir / STAGING_FOLDER).glob("*.parquet"))) == 2
    assert len(list(working_dir.rglob("*.parquet"))) == 2


def test_a_file_bigger_than_a_batch_is_cut_into_runs_of_whole_lines(tmp_path) -> None:
    lines = [json.dumps({**GOOD[1], "messageId": f"m-{n}"}) for n in range(50)]
    big = write_lines(tmp_path / "big.jsonl", lines)
    small = write_lines(tmp_path / "small.jsonl", lines[:1])
    line_bytes = len(lines[0]) + 1
    groups = list(batches([(small, "small.jsonl"), (big, "big.jsonl")], 10 * line_bytes))
    assert [piece.source_file for piece in groups[0]] == ["small.jsonl"]
    runs = [piece for group in groups[1:] for piece in group]
    assert all(piece.data is not None and piece.data.endswith(b"\n") for piece in runs)
    assert b"".join(piece.data or b"" for piece in runs) == big.read_bytes()
    assert [piece.first_line for piece in runs] == [1, 11, 21, 31, 41]
