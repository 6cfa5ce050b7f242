"""Start a load when closed landing files appear."""

import dagster as dg

from ingestion.landing import landing_files
from orchestration.lib import AssetJob
from sluice.settings import Settings


def landing_fingerprint(settings: Settings) -> str:
    """Changes whenever a landing file is added or replaced: newest mtime and file count."""
    files = landing_files(settings.landing_dir)
    newest = max((p.stat().st_mtime_ns for p in files), default=0)
    return f"{newest}:{len(files)}"


def build_landing_sensor(settings: Settings, load_job: AssetJob):
    @dg.sensor(
        name="landing_files_sensor",
        job=load_job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Loads new landing files into raw as soon as they are closed.",
    )
    def landing_files_sensor(context: dg.SensorEvaluationContext):
        fingerprint = landing_fingerprint(settings)
        if fingerprint == context.cursor or fingerprint.endswith(":0"):
            return dg.SkipReason(f"no new landing files in {settings.landing_dir}")
        context.update_cursor(fingerprint)
        return dg.RunRequest(run_key=f"landing-{fingerprint}")

    return landing_files_sensor
