"""One data directory for all of tests/serving: generated events, loaded, built and published
by one Dagster run (the elt job), as `sluice materialize` does it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from common.settings import Settings
from tests.conftest import built_data_dir

DAYS = 10
LAST = dt.date.today() - dt.timedelta(days=1)
FIRST = LAST - dt.timedelta(days=DAYS - 1)


@pytest.fixture(scope="package")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with built_data_dir(tmp_path_factory, "serving", LAST, DAYS, 200, seed=5) as settings:
        yield settings
