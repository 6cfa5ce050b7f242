"""The reports the dashboard draws, on the snapshot of a real build (tests/serving's `built`:
generated events, dlt, dbt, Dagster), hold the columns the dashboard's script reads."""

from __future__ import annotations

import pytest

from common.settings import REPORTS_DIR, Settings
from serving.reports import find_report, query_report
from tests.serving.conftest import FIRST, LAST

pytestmark = pytest.mark.slow

# What serving/dashboard.html reads from each report's rows.
DASHBOARD_COLUMNS = {
    "daily_summary": {"event_date", "active_users", "orders", "revenue_usd"},
    "active_users": {"event_date", "dau", "wau", "mau"},
    "signup_funnel": {"signed_up", "used_feature_within_7d", "ordered_within_7d"},
    "weekly_retention": {
        "cohort_week",
        "weeks_since_first_seen",
        "cohort_users",
        "retained_users",
        "retention_rate",
    },
}


@pytest.mark.parametrize("name", sorted(DASHBOARD_COLUMNS))
def test_the_dashboard_reports_run_on_real_marts(built: Settings, name: str) -> None:
    result = query_report(built.serving_path, find_report(REPORTS_DIR, name), FIRST, LAST)
    assert DASHBOARD_COLUMNS[name] <= set(result.columns)
    assert result.rows, f"{name} has no rows for {FIRST} .. {LAST}"
