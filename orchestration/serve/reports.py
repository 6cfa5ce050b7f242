"""Saved reports on a schedule: each morning, the reports due that day (reports/*.yml with
``schedule: daily``, and ``weekly`` ones on Mondays) are written as HTML for the days up to
yesterday, from the serving snapshot, mailed when ``SLUICE_SMTP_HOST`` and
``SLUICE_REPORT_EMAIL_TO`` are set, and posted to ``SLUICE_REPORT_WEBHOOK_URL`` when it is
set. They never open the warehouse, so they take no pool.
"""

import datetime as dt

import dagster as dg

from common.settings import REPORTS_DIR, Settings
from serving.delivery import DeliveryError, post_webhook, send_report
from serving.reports import list_reports, query_report, scheduled_window, write_report
from serving.snapshot import connect_snapshot

REPORTS_JOB = "scheduled_reports"
REPORTS_OP = "write_scheduled_reports"


class ScheduledReportsConfig(dg.Config):
    day: str  # the day the reports are for: they cover the days before it (YYYY-MM-DD)


def build_reports_job(settings: Settings) -> dg.JobDefinition:
    @dg.op(
        name=REPORTS_OP,
        description="Writes the saved reports due on the configured day, as HTML.",
        # The nightly build may still be running at 01:00: try again instead of failing.
        retry_policy=dg.RetryPolicy(max_retries=4, delay=900),
    )
    def write_scheduled_reports(
        context: dg.OpExecutionContext, config: ScheduledReportsConfig
    ) -> list[str]:
        day = dt.date.fromisoformat(config.day)
        due = [
            (report, window)
            for report in list_reports(REPORTS_DIR)
            if (window := scheduled_window(report, day)) is not None
        ]
        if not due:
            return []
        last_needed = max(window[1] for _, window in due)
        with connect_snapshot(settings.serving_path) as con:
            row = con.execute("select max(event_date) from marts.dau").fetchone()
        built_up_to = row[0] if row else None
        if built_up_to is None or built_up_to < last_needed:
            raise dg.Failure(
                f"the serving snapshot holds days up to {built_up_to}, not {last_needed} yet: "
                "the nightly build has not published it (retrying)"
            )
        written = []
        for report, (start, end) in due:
            result = query_report(settings.serving_path, report, start, end)
            path = write_report(result, settings.reports_output_dir, "html")
            if result.note is None:
                context.log.info(f"{report.name}: {start} .. {end} -> {path}")
            else:
                # Written all the same (the recipients expect it each morning), but flagged.
                context.log.warning(f"{report.name}: {result.note} -> {path}")
                context.add_output_metadata({f"{report.name}_note": result.note})
            written.append(str(path))
            try:
                if settings.smtp_host and settings.report_email_to:
                    send_report(
                        report,
                        path,
                        settings.smtp_host,
                        settings.smtp_port,
                        settings.report_email_from,
                        settings.report_email_to,
                    )
                    recipients = ", ".join(settings.report_email_to)
                    context.log.info(f"{report.name}: mailed to {recipients}")
                if settings.report_webhook_url:
                    post_webhook(result, path, settings.report_webhook_url)
                    context.log.info(f"{report.name}: posted to the webhook")
            except DeliveryError as error:
                # The files are written; retrying would only deliver the others again.
                raise dg.Failure(str(error), allow_retries=False) from None
        return written

    @dg.job(
        name=REPORTS_JOB,
        description="Write the saved reports due on a day from the serving snapshot.",
    )
    def scheduled_reports() -> None:
        write_scheduled_reports()

    return scheduled_reports


def build_reports_schedule(job: dg.JobDefinition) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="daily_reports_schedule",
        job=job,
        cron_schedule="0 1 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            "At 01:00 UTC, after the nightly build, writes the daily reports for the days up "
            "to yesterday (and the weekly ones on Mondays)."
        ),
    )
    def daily_reports_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        day = context.scheduled_execution_time.date().isoformat()
        return dg.RunRequest(
            run_key=day,
            run_config={"ops": {REPORTS_OP: {"config": {"day": day}}}},
            tags={"sluice/reports_day": day},
        )

    return daily_reports_schedule
