"""Sampled exploratory queries: every table of the snapshot that a query reads is read through
DuckDB's ``TABLESAMPLE``, and the caller learns exactly what was sampled and what was scaled.

- ``Sample``: the rate (0 < rate < 1), the method and a fixed seed, so the same request gets
  the same rows (and the cache may keep them). DuckDB has two methods:
  ``system`` keeps whole vectors of 2,048 rows and skips the others in the scan: the cost
  falls with the rate, but the estimate is only as good as the number of vectors kept (on a
  table of a few thousand rows it keeps all or nothing).
  ``bernoulli`` keeps each row with the rate's probability: an even sample, but every row is
  still read, so it saves the work after the scan only (joins, grouping), not the scan.
  ``auto`` (the default) picks ``system`` for a table where it keeps at least
  ``SYSTEM_MIN_VECTORS`` vectors (about 10% off at worst for a count), ``bernoulli`` for the
  others.
- ``sample_tables``: the query with a ``TABLESAMPLE`` on each table it reads, done on DuckDB's
  own syntax tree (``json_serialize_sql`` / ``json_deserialize_sql``, as
  ``serving.sql_guard.approximate_distinct``): names of CTEs, the snapshot's metadata and
  ``information_schema`` are left alone, and a table the query samples itself keeps its own
  sample.
- ``scale_factor`` and ``scale_rows``: nothing is scaled unless the caller names the result
  columns to scale (a count or a sum over the sampled rows), and only when the query samples
  one table: a join of two samples keeps about rate² of the pairs, and a mean, a share, a
  minimum or a distinct count must not be multiplied at all. The factor is 1 / rate.

Reads no environment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from serving.snapshot import META_SCHEMA
from serving.sql_guard import QueryRefused, sql_of, syntax_tree

METHODS = ("auto", "system", "bernoulli")
SEED = 42
VECTOR_ROWS = 2048
SYSTEM_MIN_VECTORS = 100
MIN_RATE = 0.0001
# A rate is shown and applied to this many significant digits, so equal requests share a key.
_RATE_DIGITS = 6
_NOT_SAMPLED_SCHEMAS = frozenset({META_SCHEMA, "information_schema", "pg_catalog"})


@dataclass(frozen=True)
class Sample:
    rate: float
    method: str = "auto"
    seed: int = SEED

    @property
    def percent(self) -> float:
        return round(self.rate * 100, _RATE_DIGITS)

    def method_for(self, rows: int) -> str:
        """The method for a table of ``rows`` rows."""
        if self.method != "auto":
            return self.method
        kept_vectors = rows * self.rate / VECTOR_ROWS
        return "system" if kept_vectors >= SYSTEM_MIN_VECTORS else "bernoulli"


@dataclass(frozen=True)
class SampledTable:
    name: str  # as the query names it
    method: str  # system or bernoulli
    rows: int  # the table's rows
    rate: float

    @property
    def read(self) -> int:
        """The rows the sample reads: the rate's share for system, all for bernoulli."""
        return self.rows if self.method == "bernoulli" else math.ceil(self.rows * self.rate)


def parse_sample(value: Any, method: Any) -> Sample | None:
    """The ``"sample"`` and ``"sample_method"`` fields of a request, or QueryRefused naming
    the field."""
    if value is None:
        if method is not None:
            raise QueryRefused("parameters", 400, '"sample_method" needs "sample" (a rate)')
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise QueryRefused(
            "parameters", 400, '"sample" must be a number: the share of rows to read, 0.1 for 10%'
        )
    if not MIN_RATE <= value < 1:
        raise QueryRefused(
            "parameters",
            400,
            f'"sample" must be at least {MIN_RATE} and below 1 (0.1 reads about 10% of the '
            f"rows); got {value}",
        )
    chosen = "auto" if method is None else method
    if chosen not in METHODS:
        raise QueryRefused(
            "parameters", 400, f'"sample_method" must be one of {", ".join(METHODS)}'
        )
    return Sample(rate=float(f"{value:.{_RATE_DIGITS}g}"), method=chosen)


def _cte_names(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        for entry in (node.get("cte_map") or {}).get("map") or []:
            if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                found.add(entry["key"].lower())
        for value in node.values():
            _cte_names(value, found)
    elif isinstance(node, list):
        for value in node:
            _cte_names(value, found)


def _sample_node(sample: Sample, method: str) -> dict[str, Any]:
    return {
        "sample_size": {
            "type": {"id": "DOUBLE", "type_info": None},
            "is_null": False,
            "value": sample.percent,
        },
        "is_percentage": True,
        "method": method.capitalize(),
        "seed": sample.seed,
        "repeatable": True,
        "sample_rate": -1.0,
    }


def _add_samples(
    node: Any,
    sample: Sample,
    ctes: set[str],
    sizes: Mapping[str, int],
    tables: list[SampledTable],
) -> None:
    if isinstance(node, dict):
        if node.get("type") == "BASE_TABLE" and isinstance(node.get("table_name"), str):
            schema = (node.get("schema_name") or "").lower()
            name = node["table_name"].lower()
            is_cte = not schema and name in ctes
            if not is_cte and schema not in _NOT_SAMPLED_SCHEMAS and node.get("sample") is None:
                named = f"{schema}.{name}" if schema else name
                rows = sizes.get(named, 0)
                method = sample.method_for(rows)
                node["sample"] = _sample_node(sample, method)
                tables.append(SampledTable(named, method, rows, sample.rate))
        for value in node.values():
            _add_samples(value, sample, ctes, sizes, tables)
    elif isinstance(node, list):
        for value in node:
            _add_samples(value, sample, ctes, sizes, tables)


def sample_tables(
    sql: str, sample: Sample, sizes: Mapping[str, int] | None = None
) -> tuple[str, list[SampledTable]]:
    """``sql`` with each table it reads sampled, and the tables sampled (as the query names
    them, in its order, with the method each got from its rows in ``sizes``, by
    ``schema.table``); QueryRefused when it reads no table to sample."""
    tree = syntax_tree(sql)
    if tree.get("error"):
        raise QueryRefused(
            "statement", 400, f"the query cannot be sampled: {tree.get('error_message')}"
        )
    ctes: set[str] = set()
    _cte_names(tree, ctes)
    tables: list[SampledTable] = []
    _add_samples(tree, sample, ctes, sizes or {}, tables)
    if not tables:
        raise QueryRefused(
            "parameters",
            400,
            '"sample" needs a query that reads a table of the marts (this one reads none, '
            "or samples every table itself)",
        )
    return sql_of(tree) or sql, tables


def scale_factor(sample: Sample, tables: Sequence[SampledTable], scale: Sequence[str]) -> float:
    """The factor to multiply the ``scale`` columns by: 1 / rate for a query that samples one
    table; QueryRefused when it samples several."""
    if scale and len(tables) != 1:
        raise QueryRefused(
            "parameters",
            400,
            f'"scale" needs a query that reads one table; this one samples {len(tables)} '
            f"({', '.join(table.name for table in tables)}), and a join of samples keeps about "
            "rate² of the pairs: "
            'scale by hand, or leave "scale" out',
        )
    return 1 / sample.rate


def parse_scale(value: Any) -> list[str]:
    """The ``"scale"`` field: a list of result column names."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
        raise QueryRefused(
            "parameters",
            400,
            '"scale" must be a list of result column names (counts or sums) to multiply by '
            "1 / sample",
        )
    return list(dict.fromkeys(value))


def _scaled(value: Any, factor: float) -> Any:
    if value is None:
        return None
    if isinstance(value, int):
        return round(value * factor)
    if isinstance(value, Decimal):
        return value * Decimal(str(factor))
    return value * factor


def scale_rows(
    columns: Sequence[str], rows: Sequence[tuple[Any, ...]], scale: Sequence[str], factor: float
) -> list[tuple[Any, ...]]:
    """``rows`` with the ``scale`` columns multiplied by ``factor`` (whole numbers rounded);
    QueryRefused naming a column that is missing or not a number."""
    positions = []
    for name in scale:
        if name not in columns:
            raise QueryRefused(
                "parameters",
                400,
                f'"scale" names the column {name!r}, which the result does not have; its '
                f"columns are {', '.join(columns)}",
            )
        positions.append(columns.index(name))
    for row in rows:
        for position in positions:
            value = row[position]
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float | Decimal)
            ):
                raise QueryRefused(
                    "parameters",
                    400,
                    f'"scale" names the column {columns[position]!r}, which holds '
                    f"{type(value).__name__} values, not numbers",
                )
    chosen = set(positions)
    return [
        tuple(_scaled(value, factor) if i in chosen else value for i, value in enumerate(row))
        for row in rows
    ]
