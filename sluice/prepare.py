"""Get a data directory ready before anything runs: the Dagster home and the dbt manifest.

``$DAGSTER_HOME`` lives inside the data directory and receives a copy of the project's
``orchestration/dagster.yaml``; the dbt manifest is parsed once when missing or older than
the dbt project's files. Reads the settings it is given and nothing else.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sluice.settings import DAGSTER_YAML_TEMPLATE, DBT_PROJECT_DIR, Settings, dbt_executable

MANIFEST_PATH = DBT_PROJECT_DIR / "target" / "manifest.json"
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


def prepare_dbt_manifest(settings: Settings, force: bool = False) -> Path:
    """Run ``dbt parse`` when the manifest is missing or stale; it never opens the warehouse."""
    if (
        not force
        and MANIFEST_PATH.exists()
        and MANIFEST_PATH.stat().st_mtime >= _newest_dbt_input()
    ):
        return MANIFEST_PATH
    command = [dbt_executable(), "parse", "--quiet"]
    command += ["--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
    command += ["--target", settings.dbt_target]
    subprocess.run(
        command, check=True, cwd=DBT_PROJECT_DIR, env={**os.environ, **settings.subprocess_env()}
    )
    return MANIFEST_PATH


def prepare(settings: Settings) -> None:
    """Everything a command or test needs before it builds the Dagster definitions."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    prepare_dagster_home(settings)
    prepare_dbt_manifest(settings)
    os.environ.update(settings.subprocess_env())
