"""One real Spark cluster (common/spark.py) for the whole test session: a master, two workers
and the Thrift server on free ports of 127.0.0.1, over a temporary data directory. Starting
one costs 15-30 s, so every module under tests/spark shares it through ``spark_cluster``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common.settings import Settings, load_settings
from common.spark import private_cluster_environment


def spark_settings(data_dir: str, workers: int = 2) -> Settings:
    return load_settings({"SLUICE_DATA_DIR": data_dir, **private_cluster_environment(workers)})


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a running cluster (SLUICE_WAREHOUSE_ENGINE=spark); stopped at the end."""
    from common.spark import SparkError, down, java_home, up

    try:
        java_home()
    except SparkError as missing:
        pytest.skip(f"no Java for the Spark cluster (.ci/run installs it): {missing}")
    settings = spark_settings(str(tmp_path_factory.mktemp("spark-cluster")))
    up(settings)
    try:
        yield settings
    finally:
        down(settings)
