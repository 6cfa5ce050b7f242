"""Shared fixtures: every test gets its own data directory, so nothing is shared."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from sluice.settings import Settings, load_settings


def yesterday() -> dt.date:
    return dt.date.today() - dt.timedelta(days=1)


@pytest.fixture
def make_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings for a fresh data directory under tmp_path, exported to the environment."""

    def _make(start: dt.date, name: str = "data", **extra: str) -> Settings:
        env = {
            "SLUICE_DATA_DIR": str(tmp_path / name),
            "SLUICE_START_DATE": start.isoformat(),
            **extra,
        }
        settings = load_settings(env)
        for key, value in {**env, **settings.subprocess_env()}.items():
            monkeypatch.setenv(key, value)
        return settings

    return _make
