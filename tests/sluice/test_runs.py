"""The one line a failed dbt step gives: what dbt said, not dagster-dbt's wrapper."""

from __future__ import annotations

from common.settings import load_settings
from sluice.runs import dbt_failure

# The shape of dagster-dbt's DagsterDbtCliRuntimeError message, colours and all.
DBT_ERROR = """The dbt CLI process with command

`dbt build --exclude-resource-type unit_test --target dev --select fqn:*`

failed with exit code `1`. Check the stdout in the Dagster compute logs for the full \
information about the error, or view the dbt debug log: /data/dbt/target/run-1/dbt.log.

Errors parsed from dbt logs:

3 of 43 ERROR creating sql incremental model core.fct_events ........ [\x1b[31mERROR\x1b[0m]

\x1b[31mFailure in model fct_events (models/core/fct_events.sql)\x1b[0m

  Runtime Error in model fct_events (models/core/fct_events.sql)
  Conversion Error: Could not convert string 'x' to INT32
"""


def test_adbt_failure_is_dbts_own_error_and_where_its_log_is(tmp_path) -> None:
    settings = load_settings({"SLUICE_DATA_DIR": str(tmp_path), "SLUICE_START_DATE": "2026-01-01"})
    assert dbt_failure(DBT_ERROR, settings) == (
        "dbt: Runtime Error in model fct_events: Conversion Error: Could not convert string "
        "'x' to INT32 (dbt's log: /data/dbt/target/run-1/dbt.log)"
    )
    assert dbt_failure("KeyError: 'day'", settings) is None


def test_a_warehouse_without_raw_tables_asks_for_events(tmp_path) -> None:
    settings = load_settings({"SLUICE_DATA_DIR": str(tmp_path), "SLUICE_START_DATE": "2026-01-01"})
    message = dbt_failure(
        DBT_ERROR.replace(
            "Conversion Error: Could not convert string 'x' to INT32",
            "Catalog Error: Table with name events does not exist!",
        ),
        settings,
    )
    assert message is not None
    assert message.startswith("no events have been loaded yet (raw.events does not exist in ")
    assert str(settings.landing_dir) in message and "`sluice generate`" in message
