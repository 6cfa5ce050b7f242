"""The serving snapshot as a Dagster asset: published after the marts in every build run.

It reads the warehouse, so it joins the warehouse pool; it is not partitioned, because each
publish copies the marts whole (a run over any range of days publishes once, at its end).
"""

from collections.abc import Sequence

import dagster as dg

from common.settings import MARTS_SCHEMA, WAREHOUSE_POOL, Settings
from orchestration.lib import GROUP_SERVE, OWNER_PLATFORM
from serving.snapshot import publish_parquet, publish_snapshot

SNAPSHOT_KEY = dg.AssetKey(["serving", "snapshot"])


def build_serve_assets(settings: Settings, mart_keys: Sequence[dg.AssetKey]) -> dg.AssetsDefinition:
    @dg.asset(
        key=SNAPSHOT_KEY,
        deps=list(mart_keys),
        group_name=GROUP_SERVE,
        owners=[OWNER_PLATFORM],
        kinds={"duckdb"},
        pool=WAREHOUSE_POOL,
        description=(
            f"A read-only copy of every table in the {MARTS_SCHEMA} schema at "
            f"{settings.serving_path}, swapped in whole after each build, for BI tools and "
            "reports (DuckDB storage v1.0.0, so DuckDB 1.x clients open it too). "
            "sluice_meta.snapshot_version names the run that published it. Also as Parquet "
            f"under {settings.serving_parquet_dir}/current."
        ),
    )
    def snapshot(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        version = publish_snapshot(
            settings.warehouse_path, settings.serving_path, context.run.run_id
        )
        parquet = publish_parquet(settings.serving_path, settings.serving_parquet_dir, version)
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(settings.serving_path)),
                "parquet": dg.MetadataValue.path(str(parquet)),
                "built_at": version.built_at.isoformat(),
                "row_counts": dg.MetadataValue.json(version.row_counts),
                "bytes": settings.serving_path.stat().st_size,
                # The warehouse's size after the build (a file size: the plot in the UI
                # shows its growth); sluice_storage_bytes on /metrics has it between builds.
                "warehouse_bytes": settings.warehouse_path.stat().st_size,
            }
        )

    return snapshot
