"""Get a data directory ready before anything runs: the Dagster home and the dbt manifest.

``$DAGSTER_HOME`` lives inside the data directory and receives a copy of the project's
``orchestration/dagster.yaml``; the dbt manifest is parsed into the data directory's dbt
target folder when missing, older than the dbt project's files, or parsed with other
settings. Reads the settings it is given and nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from common.settings import DAGSTER_YAML_TEMPLATE, DBT_PROJECT_DIR, Settings, dbt_executable

# Beside the manifest: the settings it was parsed with (see _parsed_with).
PARSED_WITH_FILE = "sluice_parsed_with.json"
_DBT_INPUTS = ("models", "macros", "seeds", "tests", "dbt_project.yml", "profiles.yml")


def prepare_dagster_home(settings: Settings) -> Path:
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    template = DAGSTER_YAML_TEMPLATE.read_text()
    if not target.exists() or target.read_text() != template:
        target.write_text(template)
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
