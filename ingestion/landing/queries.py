"""The DuckDB SQL that reads landing files, checks every line against the event contract and
writes the accepted and rejected rows, and the columns those rows have in ``raw``.

An in-memory DuckDB (never the warehouse) splits the files into numbered lines (the temp
table ``lines``), then parses and checks every line at once (the temp table ``checked``), so
no Python object is made per event. The rejection reasons are built from ``common.contract``,
the texts the ingest API and the real-time worker give too. Reads no environment.
"""

from __future__ import annotations

import string

from common.contract import (
    FIELD_NOT_AN_OBJECT,
    LONG_MESSAGE_ID,
    MALFORMED_JSON,
    MAX_MESSAGE_ID_LENGTH,
    MESSAGE_TYPES,
    MISSING_IDS,
    MISSING_TIMESTAMP,
    MISSING_TYPE,
    NOT_A_TIMESTAMP,
    NOT_AN_OBJECT,
    OBJECT_FIELDS,
    TIMESTAMP_FIELDS,
    TRACK_WITHOUT_EVENT,
    UNKNOWN_TYPE,
)


def sql_reason(reason: str, field: str | None = None, value: str | None = None) -> str:
    """``reason`` as a DuckDB string expression: ``field`` is put in as text, ``value`` is a
    SQL expression (a column) whose text is put in where the reason says ``{value}``."""
    parts: list[str] = []
    text = ""
    for literal, name, _, _ in string.Formatter().parse(reason):
        text += literal
        if name is None:
            continue
        if name == "field" and field is not None:
            text += field
        elif name == "value" and value is not None:
            parts += [_sql_string(text), value]
            text = ""
        else:
            raise ValueError(f"reason {reason!r}: nothing given for {{{name}}}")
    if text or not parts:
        parts.append(_sql_string(text))
    return " || ".join(parts)


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# The message's own fields, as the checked table and raw.events name them, with their type
# in raw.events (the JSON ones are text in the staged files and a dlt hint makes them JSON).
_MESSAGE_COLUMNS = {
    "type": "varchar",
    "event": "varchar",
    "name": "varchar",
    "user_id": "varchar",
    "anonymous_id": "varchar",
    "timestamp": "timestamp with time zone",
    "sent_at": "timestamp with time zone",
    "received_at": "timestamp with time zone",
    "properties": "json",
    "traits": "json",
    "context": "json",
}
# Every column of raw.events and raw.rejected_events, in order, with its type: the queries
# below write exactly these (tests create hand-made raw tables from them).
RAW_EVENTS_COLUMNS = {
    "message_id": "varchar",
    **_MESSAGE_COLUMNS,
    "_source": "varchar",
    "_source_file": "varchar",
    "_line_number": "bigint",
    "_loaded_at": "timestamp with time zone",
}
RAW_REJECTED_COLUMNS = {
    "_source": "varchar",
    "_source_file": "varchar",
    "_line_number": "bigint",
    "reason": "varchar",
    "raw_line": "varchar",
    "_rejected_at": "timestamp with time zone",
}

# The fields read from every line, as the struct that one ``from_json`` parse fills. A text
# field that holds a number or an object comes back as its JSON text; an object field as JSON.
_TEXT_KEYS = ("type", "messageId", "userId", "anonymousId", "event", "name", *TIMESTAMP_FIELDS)
_STRUCTURE = (
    "{"
    + ", ".join(
        [f'"{key}": "VARCHAR"' for key in _TEXT_KEYS]
        + [f'"{key}": "JSON"' for key in OBJECT_FIELDS]
    )
    + "}"
)
_FIELDS = ",\n    ".join(_MESSAGE_COLUMNS)


def _select(columns: dict[str, str], expressions: dict[str, str]) -> str:
    """The select list that gives ``columns``: a column's expression, else the column."""
    return ",\n    ".join(
        f'{expressions[name]} as "{name}"' if name in expressions else f'"{name}"'
        for name in columns
    )


VALIDATE_SQL = f"""
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
            when not is_json then {sql_reason(MALFORMED_JSON)}
            when not starts_with_brace then {sql_reason(NOT_AN_OBJECT)}
            when type is null then {sql_reason(MISSING_TYPE)}
            when type not in {MESSAGE_TYPES} then {sql_reason(UNKNOWN_TYPE, value="type")}
            when user_id is null and anonymous_id is null
                then {sql_reason(MISSING_IDS)}
            when length(message_id) > {MAX_MESSAGE_ID_LENGTH}
                then {sql_reason(LONG_MESSAGE_ID)}
            when type = 'track' and event is null then {sql_reason(TRACK_WITHOUT_EVENT)}
            when timestamp_text is null then {sql_reason(MISSING_TIMESTAMP)}
            when timestamp is null
                then {sql_reason(NOT_A_TIMESTAMP, "timestamp", "timestamp_text")}
            when sent_at_text is not null and sent_at is null
                then {sql_reason(NOT_A_TIMESTAMP, "sentAt", "sent_at_text")}
            when received_at_text is not null and received_at is null
                then {sql_reason(NOT_A_TIMESTAMP, "receivedAt", "received_at_text")}
            when left(properties, 1) not in ('{{', 'n')
                then {sql_reason(FIELD_NOT_AN_OBJECT, "properties")}
            when left(traits, 1) not in ('{{', 'n')
                then {sql_reason(FIELD_NOT_AN_OBJECT, "traits")}
            when left(context, 1) not in ('{{', 'n')
                then {sql_reason(FIELD_NOT_AN_OBJECT, "context")}
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

# Where each column of the raw tables comes from, where it is not the checked column itself.
_ACCEPTED_COLUMNS = _select(
    RAW_EVENTS_COLUMNS,
    {
        "_source": "source",
        "_source_file": "source_file",
        "_line_number": "line_number",
        "_loaded_at": "$loaded_at",
    },
)
_REJECTED_COLUMNS = _select(
    RAW_REJECTED_COLUMNS,
    {
        "_source": "checked.source",
        "_source_file": "checked.source_file",
        "_line_number": "checked.line_number",
        "reason": "checked.reason",
        "raw_line": "lines.raw_line",
        "_rejected_at": "$loaded_at",
    },
)

ACCEPTED_SQL = f"""
select
    {_ACCEPTED_COLUMNS}
from checked
where reason is null
"""

# The event's day: the UTC date of its timestamp (the connection's time zone is UTC), as the
# load reports it and dbt's staging model computes it on DuckDB (utc_date).
EVENT_DATE = "cast(timestamp as date)"
# Spark engine: the lake's raw/events also holds the day, the column its folders are
# partitioned by (ingestion/pipeline.py); DuckDB's raw.events does not.
EVENT_DATE_COLUMN = "event_date"
ACCEPTED_WITH_EVENT_DATE_SQL = f"""
select
    {_ACCEPTED_COLUMNS},
    {EVENT_DATE} as {EVENT_DATE_COLUMN}
from checked
where reason is null
"""

REJECTED_SQL = f"""
select
    {_REJECTED_COLUMNS}
from checked
inner join lines
    on checked.source_file = lines.source_file and checked.line_number = lines.line_number
where checked.reason is not null
order by checked.source_file, checked.line_number
"""

DATES_SQL = f"""
select cast({EVENT_DATE} as varchar) as event_date, count(*) as events
from checked
where reason is null
group by all
order by event_date
"""

COUNTS_SQL = """
select source_file, count(*) filter (reason is null), count(*) filter (reason is not null)
from checked
group by all
"""

CREATE_LINES_SQL = """
create or replace temp table lines (
    source varchar,
    source_file varchar,
    line_number bigint,
    raw_line varchar
)
"""

# Lines that end in CR LF lose the CR (rtrim with a character set is far slower).
_NO_CR = "if(ends_with(raw_line, chr(13)), left(raw_line, -1), raw_line)"

READ_FILES_SQL = f"""
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

READ_TEXTS_SQL = f"""
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

# Rejected rows by reason, with quoted values elided so that the counts do not explode.
REASONS_SQL = """
select regexp_replace(reason, '"[^"]*"', '"..."', 'g') as reason, count(*)
from checked
where reason is not null
group by all
"""
