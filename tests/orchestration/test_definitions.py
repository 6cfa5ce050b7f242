"""The Dagster code location: it loads, every asset is described, and specs change on purpose only.

To accept an intended change of the asset specs, run
``SLUICE_UPDATE_SNAPSHOTS=1 pytest tests/orchestration/test_definitions.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from common.settings import REPO_DIR, WAREHOUSE_POOL
from orchestration.definitions import build_definitions
from orchestration.prepare import prepare

SNAPSHOT = Path(__file__).with_name("asset_specs.json")


def _definitions(make_settings) -> dg.Definitions:
    settings = make_settings(dt.date(2026, 1, 1))
    prepare(settings)
    return build_definitions(settings)


def _spec_snapshot(defs: dg.Definitions) -> dict[str, dict]:
    graph = defs.resolve_asset_graph()
    out = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        out[key.to_user_string()] = {
            "group": node.group_name,
            "owners": list(node.owners),
            "kinds": sorted(node.kinds),
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitioned": node.partitions_def is not None,
            "pool": node.pools and sorted(node.pools),
            "freshness": type(node.freshness_policy).__name__ if node.freshness_policy else None,
            "checks": sorted(c.name for c in node.check_keys),
        }
    return out


def test_every_asset_has_a_group_a_description_and_an_owner(make_settings) -> None:
    graph = _definitions(make_settings).resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.is_materializable, f"{key} is a phantom asset"
        assert node.group_name and node.group_name != "default", key
        assert node.description, key
        assert node.owners, key
    # The UI shows each check's description beside its result: none is left blank.
    for check_key in graph.asset_check_keys:
        assert graph.get(check_key).description, check_key


def test_warehouse_assets_share_one_pool_and_partitioned_assets_backfill_in_one_run(
    make_settings,
) -> None:
    defs = _definitions(make_settings)
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.pools == {WAREHOUSE_POOL}, key
        if node.partitions_def is not None:
            assert node.backfill_policy == dg.BackfillPolicy.single_run(), key
    for job in defs.resolve_all_job_defs():
        assert job.executor_def.name == "in_process", job.name


def test_asset_specs_match_the_snapshot(make_settings) -> None:
    current = _spec_snapshot(_definitions(make_settings))
    # Written only on request (SLUICE_UPDATE_SNAPSHOTS=1): a missing golden file is a failure,
    # or the test would compare the definitions with themselves.
    if os.environ.get("SLUICE_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert SNAPSHOT.exists(), f"{SNAPSHOT} is missing; write it with SLUICE_UPDATE_SNAPSHOTS=1"
    assert current == json.loads(SNAPSHOT.read_text())


def test_the_workspace_loads_in_dagster(make_settings) -> None:
    settings = make_settings(dt.date(2026, 1, 1))
    prepare(settings)
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("dagster")),
            "definitions",
            "validate",
            "-w",
            "workspace.yaml",
        ],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **settings.subprocess_env()},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
