"""One data directory for all of tests/serving: generated events, loaded, built and published
by one Dagster run (the elt job), as `sluice materialize` does it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from ingestion.generator import generate
from sluice.runs import materialize_range
from sluice.settings import Settings, load_settings

DAYS = 10
LAST = dt.date.today() - dt.timedelta(days=1)
FIRST = LAST - dt.timedelta(days=DAYS - 1)


@pytest.fixture(scope="package")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    data_dir = tmp_path_factory.mktemp("serving") / "data"
    env = {"SLUICE_DATA_DIR": str(data_dir), "SLUICE_START_DATE": FIRST.isoformat()}
    settings = load_settings(env)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**env, **settings.subprocess_env()}.items():
            patch.setenv(key, value)
        generate(settings.landing_dir, FIRST, DAYS, 200, seed=5)
        outcome = materialize_range(settings, FIRST, LAST)
        assert outcome.success, outcome.message
        yield settings
