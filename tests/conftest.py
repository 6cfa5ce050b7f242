"""Shared fixtures: every test gets its own data directory, so nothing is shared."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import Settings, load_settings
from tests.receivers import smtp, webhook  # noqa: F401  (fixtures of every test)


@pytest.fixture(autouse=True)
def no_dagster_instance_left_current() -> Iterator[None]:
    """A Dagster schedule or sensor context opens an instance of its own; left open, it is
    closed by the garbage collector, which points Dagster's current state storage back at an
    instance that is gone, and a later test's definitions fail to load. Close them with `with`.
    """
    yield
    from dagster._core.storage.defs_state.base import DefsStateStorage

    assert DefsStateStorage.get() is None, "a test left a Dagster instance's storage current"


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


@contextlib.contextmanager
def built_data_dir(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    last: dt.date,
    days: int,
    users: int,
    seed: int,
) -> Iterator[Settings]:
    """A data directory with ``days`` generated days up to ``last``, loaded and built in one
    Dagster run; its settings are exported to the environment while the block runs.

    ``last`` is the caller's, fixed when its module loaded, so a run that crosses midnight
    builds the days its tests expect."""
    from ingestion.generator import generate
    from sluice.runs import materialize_range

    first = last - dt.timedelta(days=days - 1)
    data_dir = tmp_path_factory.mktemp(name) / "data"
    env = {"SLUICE_DATA_DIR": str(data_dir), "SLUICE_START_DATE": first.isoformat()}
    settings = load_settings(env)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**env, **settings.subprocess_env()}.items():
            patch.setenv(key, value)
        generate(settings.landing_dir, first, days, users, seed=seed)
        outcome = materialize_range(settings, first, last)
        assert outcome.success, outcome.message
        yield settings
