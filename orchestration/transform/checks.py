"""Partition-aware freshness: freshness policies look at the last materialization only, so
this check asks whether yesterday's partition of each mart exists."""

from collections.abc import Sequence

import dagster as dg

CHECK_NAME = "yesterday_partition_built"


def build_yesterday_check(
    mart_keys: Sequence[dg.AssetKey], partitions: dg.DailyPartitionsDefinition
) -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(
        name="yesterday_partitions_built",
        specs=[
            dg.AssetCheckSpec(
                CHECK_NAME,
                asset=key,
                description="Yesterday's (UTC) partition has been materialized.",
            )
            for key in mart_keys
        ],
    )
    def yesterday_partitions_built(context: dg.AssetCheckExecutionContext):
        yesterday = partitions.get_last_partition_key()
        for key in mart_keys:
            built = context.instance.get_materialized_partitions(key)
            yield dg.AssetCheckResult(
                asset_key=key,
                check_name=CHECK_NAME,
                passed=yesterday is not None and yesterday in built,
                metadata={"partition": yesterday or "none", "partitions_built": len(built)},
            )

    return yesterday_partitions_built
