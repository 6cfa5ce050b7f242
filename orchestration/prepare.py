"""Get a data directory ready before anything runs: the Dagster home and the dbt manifest.

``$DAGSTER_HOME`` lives inside the data directory and receives the project's
``orchestration/dagster.yaml`` with the instance's settings applied: run retries, the
longest a run may take, and, when ``SLUICE_DAGSTER_POSTGRES_URL`` is set, PostgreSQL in place
of the SQLite files for runs, event logs and schedules (a team instance, shared by a
webserver, a daemon and a code server started apart; docs/operations.md). The dbt manifest
is parsed into the data directory's dbt target folder when missing, older than the dbt
project's files, or parsed with other settings. Reads the settings it is given and nothing
else.

``python -m orchestration.prepare`` prepares the data directory of the environment's settings
and prints the variables that Dagster's own commands (``dagster-webserver``,
``dagster-daemon``, ``dagster api grpc``) need to find it, as ``export`` lines.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from common.settings import (
    DAGSTER_YAML_TEMPLATE,
    DBT_PROJECT_DIR,
    Settings,
    SettingsError,
    dbt_executable,
    load_settings,
)

# Beside the manifest: the settings it was parsed with (see _parsed_with).
PARSED_WITH_FILE = "sluice_parsed_with.json"
_DBT_INPUTS = ("models", "macros", "seeds", "tests", "dbt_project.yml", "profiles.yml")


_COPY_HEADER = (
    "# Written by Sluice from orchestration/dagster.yaml (which says why each part is there)\n"
    "# and the settings SLUICE_DAGSTER_*: edit those, not this copy.\n"
)


def postgres_storage_url(url: str) -> str:
    """The URL with the driver that dagster-postgres is installed with: SQLAlchemy 2.1 reads
    a plain ``postgresql://`` as psycopg 3, which Sluice does not install."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(scheme="postgresql+psycopg2"))


def dagster_instance_config(settings: Settings) -> dict[str, Any]:
    """``orchestration/dagster.yaml`` with the instance's settings applied."""
    config: dict[str, Any] = yaml.safe_load(DAGSTER_YAML_TEMPLATE.read_text())
    retries = settings.dagster_run_retries
    config["run_retries"].update(enabled=retries > 0, max_retries=retries)
    config["run_monitoring"]["max_runtime_seconds"] = settings.dagster_max_runtime_seconds
    if settings.dagster_postgres_url:
        # One database for runs, event logs and schedules, in place of the SQLite files (and
        # of the SQLite event log that batches its writes).
        del config["event_log_storage"]
        url = postgres_storage_url(settings.dagster_postgres_url)
        config["storage"] = {"postgres": {"postgres_url": url}}
    return config


def check_dagster_home(settings: Settings) -> None:
    """Raise SettingsError when the data directory's instance is on PostgreSQL but
    ``SLUICE_DAGSTER_POSTGRES_URL`` is not set: a process started without it would point the
    instance back at SQLite and split its history in two."""
    target = settings.dagster_home / "dagster.yaml"
    if settings.dagster_postgres_url or not target.exists():
        return
    if "postgres" in ((yaml.safe_load(target.read_text()) or {}).get("storage") or {}):
        raise SettingsError(
            f"{target} keeps this data directory's Dagster instance in PostgreSQL, but "
            "SLUICE_DAGSTER_POSTGRES_URL is not set: set it (in every process of the "
            "instance), or delete the file to go back to SQLite"
        )


def prepare_dagster_home(settings: Settings) -> Path:
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    text = _COPY_HEADER + yaml.safe_dump(dagster_instance_config(settings), sort_keys=False)
    if not target.exists() or target.read_text() != text:
        check_dagster_home(settings)
        # Replaced whole (a process loading the instance never reads half a file), readable
        # by its owner only: it may hold the PostgreSQL password.
        partial = target.with_name(target.name + ".tmp")
        partial.write_text(text)
        partial.chmod(0o600)
        partial.replace(target)
    return home


def _newest_dbt_input() -> float:
    newest = 0.0
    for name in _DBT_INPUTS:
        path = DBT_PROJECT_DIR / name
        paths = path.rglob("*") if path.is_dir() else [path]
        newest = max([newest, *(p.stat().st_mtime for p in paths if p.is_file())])
    return newest


def _parsed_with(settings: Settings) -> dict[str, str]:
    """What a parse depends on besides the project's files: the dbt target and the variables
    dbt runs with, which its profile renders. dbt drops a partial parse made with another
    profile, so each run would parse the whole project again (seconds) if these changed
    unnoticed."""
    return {"target": settings.dbt_target, **settings.subprocess_env()}


def prepare_dbt_manifest(settings: Settings, force: bool = False) -> Path:
    """Run ``dbt parse`` into the data directory's dbt target folder when the manifest is
    missing or stale; it never opens the warehouse. Every dbt run of this data directory
    starts from the partial-parse file this leaves, so it does not parse the project again.
    """
    target = settings.dbt_target_dir
    manifest = target / "manifest.json"
    parsed_with = target / PARSED_WITH_FILE
    inputs = _parsed_with(settings)
    if (
        not force
        and manifest.exists()
        and manifest.stat().st_mtime >= _newest_dbt_input()
        and parsed_with.exists()
        and json.loads(parsed_with.read_text()) == inputs
    ):
        return manifest
    command = [dbt_executable(), "parse", "--quiet", "--target-path", str(target)]
    command += ["--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
    command += ["--target", settings.dbt_target]
    subprocess.run(
        command, check=True, cwd=DBT_PROJECT_DIR, env={**os.environ, **settings.subprocess_env()}
    )
    parsed_with.write_text(json.dumps(inputs, indent=2) + "\n")
    return manifest


def prepare(settings: Settings) -> None:
    """Everything a command or test needs before it builds the Dagster definitions."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    prepare_dagster_home(settings)
    prepare_dbt_manifest(settings)
    os.environ.update(settings.subprocess_env())


def main() -> None:
    settings = load_settings()
    prepare(settings)
    for name, value in settings.subprocess_env().items():
        print(f"export {name}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
