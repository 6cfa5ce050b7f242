"""One real Spark cluster (common/spark.py) for the whole test session: a master, two workers
and the Thrift server on free ports of 127.0.0.1, over a temporary data directory. Starting
one costs 15-30 s, so every module under tests/spark shares it through ``spark_cluster``."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from common.settings import Settings, load_settings


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that were free a moment ago (held together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def spark_settings(data_dir: str, workers: int = 2) -> Settings:
    master, ui, thrift = free_ports(3)
    return load_settings(
        {
            "SLUICE_DATA_DIR": data_dir,
            "SLUICE_WAREHOUSE_ENGINE": "spark",
            "SLUICE_SPARK_MASTER_PORT": str(master),
            "SLUICE_SPARK_UI_PORT": str(ui),
            "SLUICE_SPARK_THRIFT_PORT": str(thrift),
            "SLUICE_SPARK_WORKERS": str(workers),
            "SLUICE_SPARK_WORKER_CORES": "1",
            "SLUICE_SPARK_WORKER_MEMORY": "1g",
            "SLUICE_SPARK_DRIVER_MEMORY": "1g",
        }
    )


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
