"""Start a load when closed landing files appear that no load has taken yet."""

import hashlib

import dagster as dg

from common.settings import Settings
from ingestion.landing.helpers import new_landing_files
from ingestion.pipeline import pipeline_name
from orchestration.lib import AssetJob


def build_landing_sensor(settings: Settings, load_job: AssetJob) -> dg.SensorDefinition:
    @dg.sensor(
        name="landing_files_sensor",
        job=load_job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Loads landing files into raw as soon as they are closed; skips while every "
            "closed file has been loaded (by a run of its own, `sluice load` or a schedule)."
        ),
    )
    def landing_files_sensor(context: dg.SensorEvaluationContext):
        new = new_landing_files(settings.landing_dir, settings.dlt_dir, pipeline_name(settings))
        if not new:
            return dg.SkipReason(f"every closed landing file in {settings.landing_dir} is loaded")
        # One run per set of new files: a tick while that run is queued asks for the same.
        digest = hashlib.sha256("\n".join(new).encode()).hexdigest()[:16]
        return dg.RunRequest(
            run_key=f"landing-{digest}",
            tags={"sluice/new_files": str(len(new))},
        )

    return landing_files_sensor
