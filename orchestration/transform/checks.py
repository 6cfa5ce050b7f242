"""Partition-aware freshness: freshness policies look at the last materialization only, so
this check asks whether yesterday's partition of each mart exists.

One multi-asset check covers every mart so the daily ``check_yesterday`` job reads the
instance once; it can be subset, because the UI adds each asset's checks to a run that
materializes it (one mart, one partition, a backfill) and runs only those.
"""

from collections.abc import Sequence

import dagster as dg

CHECK_NAME = "yesterday_partition_built"
CHECK_DESCRIPTION = (
    "Yesterday's (UTC) partition has been materialized: the nightly build ran and covered the "
    "last finished day. Runs every morning at 06:00 UTC (check_yesterday job) and after each "
    "run that materializes the asset."
)


def build_yesterday_check(
    mart_keys: Sequence[dg.AssetKey], partitions: dg.DailyPartitionsDefinition
) -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(
        name="yesterday_partitions_built",
        specs=[
            dg.AssetCheckSpec(CHECK_NAME, asset=key, description=CHECK_DESCRIPTION)
            for key in mart_keys
        ],
        can_subset=True,
    )
    def yesterday_partitions_built(context: dg.AssetCheckExecutionContext):
        yesterday = partitions.get_last_partition_key()
        for check_key in sorted(
            context.selected_asset_check_keys, key=lambda k: k.asset_key.to_user_string()
        ):
            built = context.instance.get_materialized_partitions(check_key.asset_key)
            passed = yesterday is not None and yesterday in built
            yield dg.AssetCheckResult(
                asset_key=check_key.asset_key,
                check_name=CHECK_NAME,
                passed=passed,
                description=(
                    f"{yesterday} is built"
                    if passed
                    else f"{yesterday or 'no partition'} is not built yet"
                ),
                metadata={"partition": yesterday or "none", "partitions_built": len(built)},
            )

    return yesterday_partitions_built
