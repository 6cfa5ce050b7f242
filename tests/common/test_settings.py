"""The one declaration of each setting: what loads from an empty environment, what each bound
refuses, and the README and docs tables that must say the same as the declaration."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

import pytest

from common.settings import (
    REPO_DIR,
    START_DATE_FALLBACK_DAYS,
    SettingsError,
    declared_settings,
    load_settings,
    markdown_table,
    record_start_date,
)

# Every setting but the two whose default load_settings derives (data dir, start date).
WITH_DEFAULTS = [
    (field, declared)
    for field, declared in declared_settings()
    if field.default is not dataclasses.MISSING
]
BOUNDED = [
    (declared.variable, declared.minimum)
    for _, declared in declared_settings()
    if declared.minimum is not None
]
WHOLE_NUMBERS = [
    declared.variable for field, declared in declared_settings() if isinstance(field.default, int)
]


def _readme_settings_table() -> str:
    readme = (REPO_DIR / "README.md").read_text()
    section = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    return "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))


def test_the_readme_table_is_the_declaration() -> None:
    assert _readme_settings_table() == markdown_table(), (
        "README.md's settings table differs from common/settings.py; paste the output of "
        "`.venv/bin/python -m common.settings --markdown` into it"
    )


def test_the_table_prints_from_the_command_line() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "common.settings", "--markdown"],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    assert printed.stdout == markdown_table()


def test_each_variable_is_declared_once() -> None:
    variables = [declared.variable for _, declared in declared_settings()]
    assert len(variables) == len(set(variables))
    assert all(variable.startswith("SLUICE_") for variable in variables)


def test_tables_in_the_docs_give_the_declared_defaults() -> None:
    """Docs may repeat a setting's default in a table (docs/ingest-api.md does): it must be the
    declared one."""
    declared_default = {
        declared.variable: row.split(" | ")[1]
        for (_, declared), row in zip(
            declared_settings(), markdown_table().splitlines()[2:], strict=True
        )
    }
    checked = 0
    for page in [*sorted((REPO_DIR / "docs").glob("*.md")), REPO_DIR / "dbt_project/README.md"]:
        header: list[str] = []
        for number, line in enumerate(page.read_text().splitlines(), start=1):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not line.startswith("|"):
                header = []
            elif not header:
                header = cells
            elif len(header) > 1 and header[1] == "default":
                variable = re.fullmatch(r"`(SLUICE_\w+)`", cells[0])
                if variable and variable[1] in declared_default:
                    where = f"{page.relative_to(REPO_DIR)}:{number}"
                    assert cells[1] == declared_default[variable[1]], where
                    checked += 1
    assert checked > 0


def test_defaults_load_with_an_empty_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings({})
    assert settings.data_dir == tmp_path / "data"
    assert settings.start_date == dt.date.today() - dt.timedelta(days=START_DATE_FALLBACK_DAYS)
    for field, _ in WITH_DEFAULTS:
        assert getattr(settings, field.name) == field.default, field.name
    assert not (tmp_path / "data").exists(), "loading settings wrote to the data directory"


def test_empty_values_mean_the_default(tmp_path: Path) -> None:
    env = {declared.variable: " " for _, declared in WITH_DEFAULTS}
    settings = load_settings({**env, "SLUICE_DATA_DIR": str(tmp_path)})
    for field, _ in WITH_DEFAULTS:
        assert getattr(settings, field.name) == field.default, field.name


@pytest.mark.parametrize(("variable", "minimum"), BOUNDED)
def test_each_bound_refuses_a_value_below_it(tmp_path: Path, variable: str, minimum: int) -> None:
    env = {"SLUICE_DATA_DIR": str(tmp_path)}
    with pytest.raises(SettingsError) as refused:
        load_settings({**env, variable: str(minimum - 1)})
    assert str(refused.value) == f"{variable}={minimum - 1} must be at least {minimum}"
    field = next(f.name for f, declared in declared_settings() if declared.variable == variable)
    assert getattr(load_settings({**env, variable: str(minimum)}), field) == minimum


@pytest.mark.parametrize("variable", WHOLE_NUMBERS)
def test_a_whole_number_setting_refuses_other_text(tmp_path: Path, variable: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{variable}='1.5k' is not a whole number$"):
        load_settings({"SLUICE_DATA_DIR": str(tmp_path), variable: "1.5k"})


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "SLUICE_DUCKDB_MEMORY_LIMIT",
            "lots",
            "SLUICE_DUCKDB_MEMORY_LIMIT='lots' is not an amount",
        ),
        ("SLUICE_DUCKDB_MEMORY_LIMIT", "4 G", "SLUICE_DUCKDB_MEMORY_LIMIT='4 G' is not an amount"),
        ("SLUICE_REPORT_WEBHOOK_URL", "ftp://chat.example/hook/s3cret", "must be an http://"),
        ("SLUICE_REPORT_WEBHOOK_URL", "https:///s3cret", "must be an http://"),
        ("SLUICE_START_DATE", "2026-02-30", "SLUICE_START_DATE='2026-02-30' is not a date"),
    ],
)
def test_checked_values_are_refused_naming_the_setting(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings({"SLUICE_DATA_DIR": str(tmp_path), variable: value})
    assert str(refused.value).startswith(variable)
    assert message in str(refused.value)
    assert "s3cret" not in str(refused.value), "a webhook's secret path was echoed"


def test_checked_values_are_kept_as_given(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "SLUICE_DATA_DIR": str(tmp_path),
            "SLUICE_DUCKDB_MEMORY_LIMIT": " 25% ",
            "SLUICE_REPORT_WEBHOOK_URL": "https://chat.example/hook",
            "SLUICE_REPORT_EMAIL_TO": "a@example.com, ,b@example.com",
        }
    )
    assert settings.duckdb_memory_limit == "25%"
    assert settings.report_webhook_url == "https://chat.example/hook"
    assert settings.report_email_to == ("a@example.com", "b@example.com")


def test_a_data_dir_with_a_quote_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^SLUICE_DATA_DIR=.*holds a quote"):
        load_settings({"SLUICE_DATA_DIR": str(tmp_path / "o'brien")})


def test_the_start_date_falls_back_to_the_recorded_first_day(tmp_path: Path) -> None:
    env = {"SLUICE_DATA_DIR": str(tmp_path)}
    record_start_date(load_settings(env), dt.date(2026, 3, 1))
    assert load_settings(env).start_date == dt.date(2026, 3, 1)
    chosen = load_settings({**env, "SLUICE_START_DATE": "2026-01-01"})
    assert chosen.start_date == dt.date(2026, 1, 1)
