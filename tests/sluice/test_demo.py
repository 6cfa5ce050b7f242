"""``sluice demo``, the README's front door, end to end on a fresh data directory: it builds
30 days and prints the same DAU and revenue that the serving snapshot holds."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from common.settings import START_DATE_FILE, load_settings
from serving.snapshot import connect_snapshot

from .run_cli import sluice, table_rows

pytestmark = pytest.mark.slow


def test_demo_prints_the_snapshot_dau_and_revenue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SLUICE_START_DATE", raising=False)
    last = dt.date.today() - dt.timedelta(days=1)
    first = last - dt.timedelta(days=29)

    result = sluice("demo", env={"COLUMNS": "40"})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("[1/4] generated ") and lines[0].endswith(f"{first} .. {last}")
    assert any(line.startswith("[2/4] load and build succeeded (run ") for line in lines)
    assert f"built 30 days ({first} .. {last})" in lines
    assert any(line.startswith("[3/4] check succeeded (run ") for line in lines)
    assert f"Sluice: {first} .. {last}" in lines

    # The first day became the first partition, for the commands that follow.
    settings = load_settings()
    assert (settings.data_dir / START_DATE_FILE).read_text().strip() == str(first)
    assert settings.start_date == first

    printed = table_rows(result.stdout)
    assert list(printed) == [str(first + dt.timedelta(days=n)) for n in range(30)]
    assert settings.serving_path.exists()
    assert f"Serving snapshot (what BI tools read): {settings.serving_path}" in lines
    with connect_snapshot(settings.serving_path) as con:
        snapshot = con.execute(
            """
            select dau.event_date, dau.active_users, revenue.orders, revenue.paying_users,
                   revenue.revenue_usd
            from marts.dau as dau
            left join marts.revenue_daily as revenue using (event_date)
            order by dau.event_date
            """
        ).fetchall()
    assert len(snapshot) == 30
    for day, active, orders, payers, revenue in snapshot:
        assert printed[day.isoformat()] == [
            f"{active:,}",
            f"{orders or 0:,}",
            f"{payers or 0:,}",
            f"{revenue or 0:,.2f}",
        ]
    # ~2,000 users over 30 days: every day has users, and the month has orders.
    assert all(active > 0 for _, active, *_ in snapshot)
    assert sum(orders or 0 for _, _, orders, *_ in snapshot) > 0
