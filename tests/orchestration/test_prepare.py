"""The data directory's dbt manifest is parsed once, and again only when what it depends on
changes, so every run starts from a partial parse dbt accepts; its Dagster instance follows
the SLUICE_DAGSTER_* settings (tests/orchestration/test_postgres_instance.py runs one on
PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from common.settings import SettingsError, load_settings
from orchestration.event_log import BatchingSqliteEventLogStorage
from orchestration.prepare import (
    PARSED_WITH_FILE,
    postgres_storage_url,
    prepare_dagster_home,
    prepare_dbt_manifest,
)


def test_the_manifest_is_parsed_again_only_when_its_settings_change(make_settings) -> None:
    settings = make_settings(dt.date(2026, 1, 1))
    manifest = prepare_dbt_manifest(settings)
    assert manifest.parent == settings.dbt_target_dir
    assert (manifest.parent / "partial_parse.msgpack").exists()
    parsed = manifest.stat().st_mtime_ns
    assert prepare_dbt_manifest(settings).stat().st_mtime_ns == parsed

    bigger = make_settings(dt.date(2026, 1, 1), SLUICE_DUCKDB_MEMORY_LIMIT="2GB")
    assert prepare_dbt_manifest(bigger).stat().st_mtime_ns > parsed
    recorded = json.loads((manifest.parent / PARSED_WITH_FILE).read_text())
    assert recorded["SLUICE_DUCKDB_MEMORY_LIMIT"] == "2GB"


def test_the_instance_follows_the_run_retry_and_runtime_settings(make_settings) -> None:
    settings = make_settings(
        dt.date(2026, 1, 1),
        SLUICE_DAGSTER_RUN_RETRIES="0",
        SLUICE_DAGSTER_MAX_RUNTIME_SECONDS="60",
    )
    home = prepare_dagster_home(settings)
    assert (home / "dagster.yaml").stat().st_mode & 0o077 == 0
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert not instance.run_retries_enabled
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds == 60
        # Without SLUICE_DAGSTER_POSTGRES_URL: SQLite in the data directory.
        assert type(instance.event_log_storage) is BatchingSqliteEventLogStorage
    defaults = make_settings(dt.date(2026, 1, 1), name="defaults")
    with dg.DagsterInstance.from_config(str(prepare_dagster_home(defaults))) as instance:
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert instance.run_monitoring_max_runtime_seconds == 6 * 3600


def test_the_postgres_url_gets_the_installed_driver_and_a_bad_one_names_the_setting() -> None:
    url = "postgres://dagster:secret@db.internal:5432/dagster?sslmode=require"
    assert postgres_storage_url(url) == (
        "postgresql+psycopg2://dagster:secret@db.internal:5432/dagster?sslmode=require"
    )
    for bad in ("mysql://dagster@db/dagster", "postgresql://dagster:secret@db.internal"):
        with pytest.raises(SettingsError, match="SLUICE_DAGSTER_POSTGRES_URL must be") as error:
            load_settings({"SLUICE_DAGSTER_POSTGRES_URL": bad})
        assert "secret" not in str(error.value)


def test_a_process_without_the_postgres_url_does_not_turn_the_instance_back_to_sqlite(
    make_settings,
) -> None:
    url = "postgresql://dagster@db.internal:5432/dagster"
    team = make_settings(dt.date(2026, 1, 1), SLUICE_DAGSTER_POSTGRES_URL=url)
    written = prepare_dagster_home(team) / "dagster.yaml"
    before = written.read_text()
    assert "postgresql+psycopg2://dagster@db.internal:5432/dagster" in before
    forgot = make_settings(dt.date(2026, 1, 1))
    with pytest.raises(SettingsError, match="SLUICE_DAGSTER_POSTGRES_URL is not set") as error:
        prepare_dagster_home(forgot)
    assert str(written) in str(error.value)
    assert written.read_text() == before
    # Every command says so in one line, before it does anything.
    env = {k: v for k, v in os.environ.items() if k != "SLUICE_DAGSTER_POSTGRES_URL"}
    command = subprocess.run(
        [str(Path(sys.executable).with_name("sluice")), "keys", "list"],
        env={**env, "SLUICE_DATA_DIR": str(forgot.data_dir)},
        capture_output=True,
        text=True,
    )
    assert command.returncode == 1
    assert command.stderr.startswith(f"Error: {written} keeps this data directory's Dagster")
    assert "Traceback" not in command.stderr
    written.unlink()
    assert "postgres" not in (prepare_dagster_home(forgot) / "dagster.yaml").read_text()
