"""Parse and validate landing files: JSON lines of Segment-spec messages.

Each landing file is read as whole lines into Arrow, and an in-memory DuckDB (never the
warehouse) parses and checks every line at once, so no Python object is made per event.
A line that breaks the event contract becomes a rejected row with the file, line number,
reason and raw text; the valid lines of the same file are kept. Reads no environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv

MESSAGE_TYPES = ("track", "identify", "page", "screen", "group", "alias")
ACTIVE_TYPES = ("track", "page", "screen")
MAX_MESSAGE_ID_LENGTH = 100
LANDING_SUFFIX = ".jsonl"
SOURCES_FOLDER = "sources"
FILES_SOURCE = "files"

# Neither byte can appear unescaped inside a JSON text, so no valid line is ever split by it.
_NO_DELIMITER = "\x1f"

# Field paths read from every line. Each JSON function call parses the line again, so the
# fields are extracted with one call per kind (text, type, JSON value) for all paths at once:
# five parses per line instead of about twenty, which made parsing the slowest step of a load.
_TEXT_PATHS = (
    "$.type",
    "$.messageId",
    "$.userId",
    "$.anonymousId",
    "$.event",
    "$.name",
    "$.timestamp",
    "$.sentAt",
    "$.receivedAt",
)
_OBJECT_PATHS = ("$.properties", "$.traits", "$.context")

_VALIDATE_SQL = f"""
create or replace temp table checked as
with docs as (
    select
        source,
        source_file,
        line_number,
        raw_line,
        json_valid(raw_line) as is_json
    from lines
    where trim(raw_line) <> ''
),

parsed as (
    select
        source,
        source_file,
        line_number,
        raw_line,
        is_json,
        case when is_json then json_type(raw_line) end as doc_type,
        case when is_json then json_extract_string(raw_line, {list(_TEXT_PATHS)}) end as texts,
        case when is_json then json_type(raw_line, {list(_OBJECT_PATHS)}) end as object_types,
        case when is_json then json_extract(raw_line, {list(_OBJECT_PATHS)}) end as objects
    from docs
),

fields as (
    select
        source,
        source_file,
        line_number,
        raw_line,
        is_json,
        doc_type,
        nullif(texts[1], '') as type,
        nullif(texts[2], '') as message_id,
        nullif(texts[3], '') as user_id,
        nullif(texts[4], '') as anonymous_id,
        nullif(texts[5], '') as event,
        nullif(texts[6], '') as name,
        texts[7] as timestamp_text,
        texts[8] as sent_at_text,
        texts[9] as received_at_text,
        try_cast(texts[7] as timestamptz) as timestamp,
        try_cast(texts[8] as timestamptz) as sent_at,
        try_cast(texts[9] as timestamptz) as received_at,
        object_types[1] as properties_type,
        object_types[2] as traits_type,
        object_types[3] as context_type,
        cast(objects[1] as varchar) as properties,
        cast(objects[2] as varchar) as traits,
        cast(objects[3] as varchar) as context
    from parsed
),

checked as (
    select
        *,
        case
            when not is_json then 'malformed JSON'
            when doc_type <> 'OBJECT' then 'not a JSON object'
            when type is null then 'missing field type'
            when type not in {MESSAGE_TYPES} then 'unknown type "' || type || '"'
            when user_id is null and anonymous_id is null
                then 'missing userId and anonymousId (at least one is required)'
            when length(message_id) > {MAX_MESSAGE_ID_LENGTH}
                then 'messageId longer than {MAX_MESSAGE_ID_LENGTH} characters'
            when type = 'track' and event is null then 'track message without event'
            when timestamp_text is null then 'missing field timestamp'
            when timestamp is null
                then 'timestamp "' || timestamp_text || '" is not an ISO-8601 timestamp'
            when sent_at_text is not null and sent_at is null
                then 'sentAt "' || sent_at_text || '" is not an ISO-8601 timestamp'
            when received_at_text is not null and received_at is null
                then 'receivedAt "' || received_at_text || '" is not an ISO-8601 timestamp'
            when properties_type not in ('OBJECT', 'NULL') then 'properties is not an object'
            when traits_type not in ('OBJECT', 'NULL') then 'traits is not an object'
            when context_type not in ('OBJECT', 'NULL') then 'context is not an object'
        end as reason
    from fields
)

select * from checked
"""

_ACCEPTED_SQL = """
select
    coalesce(message_id, 'sluice-' || md5(raw_line)) as message_id,
    type,
    event,
    name,
    user_id,
    anonymous_id,
    timestamp,
    sent_at,
    received_at,
    properties,
    traits,
    context,
    source as _source,
    source_file as _source_file,
    line_number as _line_number,
    $loaded_at as _loaded_at
from checked
where reason is null
"""

_REJECTED_SQL = """
select
    source as _source,
    source_file as _source_file,
    line_number as _line_number,
    reason,
    raw_line,
    $loaded_at as _rejected_at
from checked
where reason is not null
"""

_DATES_SQL = """
select cast(cast(timestamp as date) as varchar) as event_date, count(*) as events
from checked
where reason is null
group by all
order by event_date
"""

_COUNTS_SQL = """
select source_file, count(*) filter (reason is null), count(*) filter (reason is not null)
from checked
group by all
"""


@dataclass(frozen=True)
class ParsedFiles:
    """The accepted and rejected rows of some landing files, as Arrow tables."""

    paths: list[str]
    accepted: pa.Table
    rejected: pa.Table
    events_by_date: dict[str, int]
    # source_file -> (accepted rows, rejected rows); every parsed file has an entry.
    rows_by_file: dict[str, tuple[int, int]]


def _read_lines_fast(path: Path) -> pa.Table | None:
    """Read every line of a file as one string column, or None when a line needs the slow path."""
    awkward: list[int] = []

    def note_awkward_row(row: pacsv.InvalidRow) -> str:
        awkward.append(row.number or -1)
        return "skip"

    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=["raw_line"], block_size=8 << 20),
            parse_options=pacsv.ParseOptions(
                delimiter=_NO_DELIMITER,
                quote_char=False,
                escape_char=False,
                double_quote=False,
                newlines_in_values=False,
                ignore_empty_lines=False,
                invalid_row_handler=note_awkward_row,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={"raw_line": pa.string()},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    if awkward:
        return None
    return table.append_column("line_number", pa.array(range(1, table.num_rows + 1), pa.int64()))


def _read_lines_exact(path: Path) -> pa.Table:
    """Slow, exact path for files with odd bytes: one Python string per line."""
    texts = path.read_bytes().decode("utf-8", errors="replace").split("\n")
    if texts and texts[-1] == "":
        texts.pop()
    return pa.table(
        {
            "raw_line": pa.array(texts, pa.string()),
            "line_number": pa.array(range(1, len(texts) + 1), pa.int64()),
        }
    )


def read_lines(path: Path) -> pa.Table:
    """All lines of a landing file with their 1-based line numbers."""
    return _read_lines_fast(path) or _read_lines_exact(path)


def source_of(source_file: str) -> str:
    """The source a landing file belongs to: ``sources/<name>/...`` is ``name``, else ``files``.

    Writers that know their sender (the ingest API knows each write key's source) put files
    under ``sources/<name>/``; batch drops anywhere else are the ``files`` source.
    """
    parts = source_file.split("/")
    if len(parts) >= 3 and parts[0] == SOURCES_FOLDER and parts[1]:
        return parts[1]
    return FILES_SOURCE


def _with_file(lines: pa.Table, source_file: str) -> pa.Table:
    n = lines.num_rows
    source = pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), [source_of(source_file)])
    name = pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), [source_file])
    return lines.append_column("source", source).append_column("source_file", name)


def parse_files(files: list[tuple[Path, str]], loaded_at: object) -> ParsedFiles:
    """Validate every line of some landing files (path, name) against the event contract.

    All files go through one query: a DuckDB connection and its plan cost about as much as
    parsing a small file, so a load parses its new files in a few large batches. Rows keep
    the order of the files and their lines (DuckDB preserves insertion order), with no sort.
    """
    tables = [_with_file(read_lines(path), name) for path, name in files]
    lines = pa.concat_tables(tables, promote_options="permissive") if tables else None
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        con.register("lines", lines if lines is not None else _EMPTY_LINES)
        con.execute(_VALIDATE_SQL)
        params = {"loaded_at": loaded_at}
        accepted = con.sql(_ACCEPTED_SQL, params=params).to_arrow_table()
        rejected = con.sql(_REJECTED_SQL, params=params).to_arrow_table()
        dates = {day: int(n) for day, n in con.execute(_DATES_SQL).fetchall()}
        counts = {
            name: (int(ok), int(bad)) for name, ok, bad in con.execute(_COUNTS_SQL).fetchall()
        }
    finally:
        con.close()
    names = [name for _, name in files]
    rows = {name: counts.get(name, (0, 0)) for name in names}
    return ParsedFiles(names, accepted, rejected, dates, rows)


def parse_file(path: Path, source_file: str, loaded_at: object) -> ParsedFiles:
    """Validate every line of one landing file against the event contract."""
    return parse_files([(path, source_file)], loaded_at)


_EMPTY_LINES = _with_file(
    pa.table({"raw_line": pa.array([], pa.string()), "line_number": pa.array([], pa.int64())}), ""
)


def landing_files(landing_dir: Path) -> list[Path]:
    """Closed landing files, oldest name first; files still being written end in .tmp."""
    if not landing_dir.is_dir():
        return []
    return sorted(p for p in landing_dir.rglob(f"*{LANDING_SUFFIX}") if p.is_file())
