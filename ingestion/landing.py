"""Parse and validate landing files: JSON lines of Segment-spec messages.

An in-memory DuckDB (never the warehouse) reads the landing files, splits them into numbered
lines, and parses and checks every line at once, so no Python object is made per event.
A line that breaks the event contract becomes a rejected row with the file, line number,
reason and raw text; the valid lines of the same file are kept. The loader has DuckDB write
the rows straight to Parquet (``stage_files``); tests and tools can take Arrow tables
(``parse_files``). Reads no environment.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

MESSAGE_TYPES = ("track", "identify", "page", "screen", "group", "alias")
ACTIVE_TYPES = ("track", "page", "screen")
MAX_MESSAGE_ID_LENGTH = 100
LANDING_SUFFIX = ".jsonl"
SOURCES_FOLDER = "sources"
FILES_SOURCE = "files"

# The fields read from every line, as the struct that one ``from_json`` parse fills. A text
# field that holds a number or an object comes back as its JSON text; an object field as JSON.
_TEXT_KEYS = (
    "type",
    "messageId",
    "userId",
    "anonymousId",
    "event",
    "name",
    "timestamp",
    "sentAt",
    "receivedAt",
)
_OBJECT_KEYS = ("properties", "traits", "context")
_STRUCTURE = (
    "{"
    + ", ".join(
        [f'"{key}": "VARCHAR"' for key in _TEXT_KEYS] + [f'"{key}": "JSON"' for key in _OBJECT_KEYS]
    )
    + "}"
)
# The message's own fields, as the checked table and raw.events name them.
_FIELDS = ",\n    ".join(
    (
        "type",
        "event",
        "name",
        "user_id",
        "anonymous_id",
        "timestamp",
        "sent_at",
        "received_at",
        "properties",
        "traits",
        "context",
    )
)

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
    -- Blank lines are skipped. trim() copies every line, so it only sees lines that start
    -- with a space (the same result at a thirtieth of the cost).
    where raw_line <> '' and (left(raw_line, 1) <> ' ' or trim(raw_line) <> '')
),

parsed as (
    select
        *,
        -- One parse fills every field (from_json raises on malformed JSON, hence the check).
        case when is_json then from_json(raw_line, '{_STRUCTURE}') end as doc
    from docs
),

fields as (
    select
        source,
        source_file,
        line_number,
        raw_line,
        is_json,
        -- A valid JSON text whose first character is a brace is an object.
        -- (ltrim with a character set is slow, so it only sees lines that start with one.)
        left(raw_line, 1) = '{{'
        or left(raw_line, 1) in (' ', e'\t', e'\r', e'\n')
        and left(ltrim(raw_line, e' \t\r\n'), 1) = '{{' as starts_with_brace,
        nullif(doc.type, '') as type,
        nullif(doc.messageId, '') as message_id,
        nullif(doc.userId, '') as user_id,
        nullif(doc.anonymousId, '') as anonymous_id,
        nullif(doc.event, '') as event,
        nullif(doc.name, '') as name,
        doc.timestamp as timestamp_text,
        doc.sentAt as sent_at_text,
        doc.receivedAt as received_at_text,
        try_cast(doc.timestamp as timestamptz) as timestamp,
        try_cast(doc.sentAt as timestamptz) as sent_at,
        try_cast(doc.receivedAt as timestamptz) as received_at,
        cast(doc.properties as varchar) as properties,
        cast(doc.traits as varchar) as traits,
        cast(doc.context as varchar) as context
    from parsed
),

checked as (
    select
        *,
        case
            when not is_json then 'malformed JSON'
            when not starts_with_brace then 'not a JSON object'
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
            when left(properties, 1) not in ('{{', 'n') then 'properties is not an object'
            when left(traits, 1) not in ('{{', 'n') then 'traits is not an object'
            when left(context, 1) not in ('{{', 'n') then 'context is not an object'
        end as reason
    from fields
)

-- The raw text stays in ``lines``: only rejected rows (joined back) and rows without a
-- messageId (hashed here) need it, and copying every line again would cost a tenth of a parse.
select
    source,
    source_file,
    line_number,
    coalesce(
        message_id, case when reason is null then 'sluice-' || md5(raw_line) end
    ) as message_id,
    {_FIELDS},
    reason
from checked
"""

_ACCEPTED_SQL = f"""
select
    message_id,
    {_FIELDS},
    source as _source,
    source_file as _source_file,
    line_number as _line_number,
    $loaded_at as _loaded_at
from checked
where reason is null
"""

_REJECTED_SQL = """
select
    checked.source as _source,
    checked.source_file as _source_file,
    checked.line_number as _line_number,
    checked.reason,
    lines.raw_line,
    $loaded_at as _rejected_at
from checked
inner join lines
    on checked.source_file = lines.source_file and checked.line_number = lines.line_number
where checked.reason is not null
order by checked.source_file, checked.line_number
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


_CREATE_LINES_SQL = """
create or replace temp table lines (
    source varchar,
    source_file varchar,
    line_number bigint,
    raw_line varchar
)
"""

# Lines that end in CR LF lose the CR (rtrim with a character set is far slower).
_NO_CR = "if(ends_with(raw_line, chr(13)), left(raw_line, -1), raw_line)"

_READ_FILES_SQL = f"""
insert into lines
with texts as (
    select
        list_position($paths, filename) as file_index,
        string_split(content, chr(10)) as split_lines
    from read_text($paths)
),

numbered as (
    select
        file_index,
        generate_subscripts(split_lines, 1) as line_number,
        unnest(split_lines) as raw_line
    from texts
)

select
    $sources[file_index] as source,
    $names[file_index] as source_file,
    line_number,
    {_NO_CR} as raw_line
from numbered
"""

_READ_TEXTS_SQL = f"""
insert into lines
with split as (
    select
        source,
        source_file,
        first_line,
        string_split(decode(text), chr(10)) as split_lines
    from texts
),

numbered as (
    select
        source,
        source_file,
        first_line,
        generate_subscripts(split_lines, 1) as line_offset,
        unnest(split_lines) as raw_line
    from split
)

select
    source,
    source_file,
    first_line + line_offset - 1 as line_number,
    {_NO_CR} as raw_line
from numbered
"""

_REASONS_SQL = """
select regexp_replace(reason, '"[^"]*"', '"..."', 'g') as reason, count(*)
from checked
where reason is not null
group by all
"""

# Characters that DuckDB's file readers take as a glob pattern.
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class ParsedFiles:
    """The accepted and rejected rows of some landing files, as Arrow tables."""

    paths: list[str]
    accepted: pa.Table
    rejected: pa.Table
    events_by_date: dict[str, int]
    # source_file -> (accepted rows, rejected rows); every parsed file has an entry.
    rows_by_file: dict[str, tuple[int, int]]


@dataclass(frozen=True)
class StagedFiles:
    """The accepted and rejected rows of some landing files, written as Parquet files."""

    paths: list[str]
    accepted: Path
    accepted_rows: int
    rejected: Path
    rejected_rows: int
    events_by_date: dict[str, int]
    rows_by_file: dict[str, tuple[int, int]]
    # Reason with quoted values elided -> rows, for counts that do not explode.
    rejected_by_reason: dict[str, int]


def source_of(source_file: str) -> str:
    """The source a landing file belongs to: ``sources/<name>/...`` is ``name``, else ``files``.

    Writers that know their sender (the ingest API knows each write key's source) put files
    under ``sources/<name>/``; batch drops anywhere else are the ``files`` source.
    """
    parts = source_file.split("/")
    if len(parts) >= 3 and parts[0] == SOURCES_FOLDER and parts[1]:
        return parts[1]
    return FILES_SOURCE


@dataclass(frozen=True)
class Piece:
    """Part of a batch: a whole landing file that DuckDB reads itself (``data`` is None), or
    a run of whole lines of a big file, read here, starting at line ``first_line``."""

    path: Path
    source_file: str
    data: bytes | None = None
    first_line: int = 1


def valid_utf8(data: bytes) -> bytes:
    """``data`` when it is UTF-8; otherwise every bad byte becomes U+FFFD, so the rest loads.

    The ingest API reads request bodies with it too, so both read bad bytes alike."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace").encode("utf-8")
    return data


def _chunks(path: Path, source_file: str, chunk_bytes: int) -> Iterator[Piece]:
    """A big file as runs of whole lines of about ``chunk_bytes`` each, read one at a time."""
    first_line = 1
    with path.open("rb") as file:
        while data := file.read(chunk_bytes):
            if not data.endswith(b"\n"):
                data += file.readline()
            yield Piece(path, source_file, valid_utf8(data), first_line)
            first_line += data.count(b"\n")


def batches(files: list[tuple[Path, str]], batch_bytes: int) -> Iterator[list[Piece]]:
    """Files (path, name) grouped into batches of about ``batch_bytes``, in order.

    A batch is what one query parses at once; a file bigger than a batch is cut into runs of
    lines, one batch each, so a load's memory follows the batch size, not the biggest file.
    """
    batch: list[Piece] = []
    size = 0
    for path, name in files:
        file_bytes = path.stat().st_size
        if file_bytes > batch_bytes:
            if batch:
                yield batch
                batch, size = [], 0
            for piece in _chunks(path, name, batch_bytes):
                yield [piece]
            continue
        batch.append(Piece(path, name))
        size += file_bytes
        if size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _read_into(con: duckdb.DuckDBPyConnection, pieces: list[Piece]) -> None:
    """Fill the temp table ``lines`` (source, source_file, line_number, raw_line).

    DuckDB reads and splits whole files itself, in parallel and without a Python object per
    line. A file with bytes that are not UTF-8 (DuckDB refuses it) or a name that DuckDB
    would take as a glob pattern is read here instead, like the runs of a big file.
    """
    con.execute(_CREATE_LINES_SQL)
    whole = [piece for piece in pieces if piece.data is None]
    if whole and not any(_GLOB.search(str(piece.path)) for piece in whole):
        params = {
            "paths": [str(piece.path) for piece in whole],
            "names": [piece.source_file for piece in whole],
            "sources": [source_of(piece.source_file) for piece in whole],
        }
        try:
            con.execute(_READ_FILES_SQL, params)
            whole = []
        except duckdb.InvalidInputException:
            pass  # nothing was inserted: the statement failed as a whole
    read_here = [piece for piece in pieces if piece.data is not None]
    read_here += [Piece(p.path, p.source_file, valid_utf8(p.path.read_bytes())) for p in whole]
    if read_here:
        texts = pa.table(
            {
                "source": pa.array([source_of(p.source_file) for p in read_here], pa.string()),
                "source_file": pa.array([p.source_file for p in read_here], pa.string()),
                "first_line": pa.array([p.first_line for p in read_here], pa.int64()),
                "text": pa.chunked_array([_binary(p.data or b"") for p in read_here]),
            }
        )
        con.register("texts", texts)
        con.execute(_READ_TEXTS_SQL)
        con.unregister("texts")


def _binary(data: bytes) -> pa.Array:
    """``data`` as a one-value Arrow binary array, without copying it."""
    offsets = pa.array([0, len(data)], pa.int64()).buffers()[1]
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)]
    )


@contextlib.contextmanager
def _checked(pieces: list[Piece]) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB holding the temp table ``checked``: every line and its verdict."""
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        # Rows carry their file and line number, so their order in a table or a Parquet file
        # says nothing; without it DuckDB splits lines, builds tables and writes in parallel.
        con.execute("set preserve_insertion_order = false")
        _read_into(con, pieces)
        con.execute(_VALIDATE_SQL)
        yield con
    finally:
        con.close()


def _summary(
    con: duckdb.DuckDBPyConnection, names: list[str]
) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    dates = {day: int(n) for day, n in con.execute(_DATES_SQL).fetchall()}
    counts = {name: (int(ok), int(bad)) for name, ok, bad in con.execute(_COUNTS_SQL).fetchall()}
    return dates, {name: counts.get(name, (0, 0)) for name in names}


def parse_files(files: list[tuple[Path, str]], loaded_at: object) -> ParsedFiles:
    """Validate every line of some landing files (path, name) against the event contract.

    All files go through one query: a DuckDB connection and its plan cost about as much as
    parsing a small file, so a load parses its new files in a few large batches.
    """
    names = [name for _, name in files]
    params = {"loaded_at": loaded_at}
    with _checked([Piece(path, name) for path, name in files]) as con:
        accepted = con.sql(_ACCEPTED_SQL, params=params).to_arrow_table()
        rejected = con.sql(_REJECTED_SQL, params=params).to_arrow_table()
        dates, rows = _summary(con, names)
    return ParsedFiles(names, accepted, rejected, dates, rows)


def parse_file(path: Path, source_file: str, loaded_at: object) -> ParsedFiles:
    """Validate every line of one landing file against the event contract."""
    return parse_files([(path, source_file)], loaded_at)


def stage_files(pieces: list[Piece], loaded_at: object, out_dir: Path) -> StagedFiles:
    """Validate a batch (see ``batches``); DuckDB writes the rows to Parquet files in ``out_dir``.

    This is the loader's path: no Arrow table is handed to Python, and dlt imports the files
    as they are (a hard link) instead of writing the rows again.
    """
    names = list(dict.fromkeys(piece.source_file for piece in pieces))
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = uuid.uuid4().hex
    accepted_path = out_dir / f"{stem}-events.parquet"
    rejected_path = out_dir / f"{stem}-rejected.parquet"
    params = {"loaded_at": loaded_at}
    with _checked(pieces) as con:
        # Without this DuckDB marks a column NOT NULL in a file where it saw no null, and dlt
        # rewrites every file whose nullability differs from the table's.
        con.execute("set disabled_optimizers = 'statistics_propagation'")
        con.execute(f"copy ({_ACCEPTED_SQL}) to '{accepted_path}' (format parquet)", params)
        con.execute(f"copy ({_REJECTED_SQL}) to '{rejected_path}' (format parquet)", params)
        dates, rows = _summary(con, names)
        reasons = {reason: int(n) for reason, n in con.execute(_REASONS_SQL).fetchall()}
    accepted_rows = sum(ok for ok, _ in rows.values())
    rejected_rows = sum(bad for _, bad in rows.values())
    return StagedFiles(
        names, accepted_path, accepted_rows, rejected_path, rejected_rows, dates, rows, reasons
    )


def landing_files(landing_dir: Path) -> list[Path]:
    """Closed landing files, oldest name first; files still being written end in .tmp."""
    if not landing_dir.is_dir():
        return []
    return sorted(p for p in landing_dir.rglob(f"*{LANDING_SUFFIX}") if p.is_file())
