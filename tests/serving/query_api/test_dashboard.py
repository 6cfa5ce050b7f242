"""The dashboard in real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright): it asks for a read key, draws every chart from the report endpoints and the live
panel from ``/v1/live`` (refreshing it by itself, and saying when the real-time tier is not
running), fetches nothing from elsewhere and logs no error."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Playwright, expect, sync_playwright

from common.keys import KeyStore
from realtime import store
from tests.ingestion.api.conftest import (
    Server,
    iso,
    make_server,  # noqa: F401  (a fixture)
)
from tests.serving.query_api.conftest import TODAY, Keys

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SLUICE = str(Path(sys.executable).with_name("sluice"))
CHARTS = ("dau", "wau-mau", "revenue", "orders", "funnel", "retention")
# drawChart's plot area inside its 640 x 260 viewBox.
PLOT_TOP, PLOT_HEIGHT = 12, 200

# On a laptop without Chromium the test is skipped; in CI (.ci/run installs Chromium) a missing
# browser must fail, not hide behind a skip.
pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None and not os.environ.get("CI"),
    reason="Chromium is not installed (apt-get install chromium; .ci/run installs it)",
)


def _browser(playwright: Playwright, tmp_path: Path) -> BrowserContext:
    return playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        headless=True,
        viewport={"width": 1400, "height": 1400},
    )


def _stream(server: Server, write_key: str, first: int, count: int) -> None:
    """Send ``count`` events of now (every fourth an order of 12.50 USD), then fold them with
    ``sluice stream --once``."""
    now = dt.datetime.now(dt.UTC)
    batch: list[dict[str, Any]] = []
    for n in range(first, first + count):
        message: dict[str, Any] = {"type": "track", "userId": f"live-user-{n % 9}"}
        message |= {"timestamp": iso(now), "messageId": f"live-{n}"}
        message["event"] = "Order Completed" if n % 4 == 0 else "Feature Used"
        if n % 4 == 0:
            message["properties"] = {"revenue": 12.5, "currency": "USD"}
        batch.append(message)
    with httpx.Client(base_url=server.url, auth=(write_key, "")) as client:
        assert client.post("/v1/batch", json={"batch": batch}).status_code == 200
    subprocess.run([SLUICE, "stream", "--once"], env=server.env, check=True, timeout=60)


def _live(server: Server, read_key: str) -> dict[str, Any]:
    answer = httpx.get(f"{server.url}/v1/live", auth=(read_key, ""), timeout=30)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_the_dashboard_draws_every_chart_from_the_reports(
    query_server: Server, keys: Keys, tmp_path: Path
) -> None:
    problems: list[str] = []
    requested: list[str] = []
    write_key, read_key = keys.write(), keys.read()
    _stream(query_server, write_key, 0, 40)
    with sync_playwright() as playwright:
        browser = _browser(playwright, tmp_path)
        try:
            page = browser.new_page()
            # The page's "last 7 days" end on the browser's today: the data's, at noon.
            page.clock.set_fixed_time(dt.datetime.combine(TODAY, dt.time(12), dt.UTC))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda request: requested.append(request.url))
            page.goto(f"{query_server.url}/dashboard")
            page.fill("#key", read_key)
            page.click("#key-form button")
            page.wait_for_selector("body[data-state=ready]", timeout=20_000)

            # The live panel: the real-time tier's figures, as /v1/live answers them.
            live = page.locator("#live")
            expect(live).to_have_attribute("data-state", "live", timeout=20_000)
            expect(live).to_contain_text("real-time tier (sluice stream)")
            body = _live(query_server, read_key)
            assert round(body["active_users_5_minutes"]) == 9
            assert body["today"]["orders"] == 10 and body["today"]["revenue_usd"] == 125.0
            expect(page.locator("#live-active")).to_have_text("9")
            expect(page.locator("#live-orders")).to_have_text("10")
            expect(page.locator("#live-revenue")).to_have_text("125")
            expect(page.locator("#live-plot")).to_have_attribute("data-points", "30")
            bars = page.locator("#live-plot svg .point title").all_text_contents()
            assert len(bars) == 30 and bars[-1].startswith("events per minute"), bars[-3:]
            assert sum(int(bar.rsplit(": ", 1)[1]) for bar in bars) == 40, bars
            # It refreshes by itself: more events, and the figures follow without a click.
            _stream(query_server, write_key, 40, 40)
            expect(page.locator("#live-orders")).to_have_text("20", timeout=15_000)
            expect(page.locator("#live-revenue")).to_have_text("250")
            # The daily view: the marts hold the 14 days up to TODAY; a run that crosses
            # midnight (UTC) gets the new day from the real-time tier.
            expect(page.locator("#daily")).to_have_attribute("data-rows", "14")
            sources = page.locator("#daily-rows td.source").all_text_contents()
            daily = httpx.get(f"{query_server.url}/v1/daily", auth=(read_key, "")).json()
            if daily["today"] == TODAY.isoformat():
                assert sources == ["marts"] * 14, sources
            else:
                assert sources == ["marts"] * 13 + ["real-time tier, so far"], sources

            for chart in CHARTS:
                section = page.locator(f"#chart-{chart}")
                assert int(section.get_attribute("data-points") or 0) > 0, chart
                assert section.locator("svg .point").count() > 0, chart

            # The WAU/MAU panel draws stickiness (1/6 in conftest's marts) as a line on its
            # own axis in per cent: high in the plot, not flat along the counts' zero line.
            wau_mau = page.locator("#chart-wau-mau")
            line = wau_mau.locator("svg polyline[data-series=stickiness]")
            assert line.count() == 1
            days = int(wau_mau.get_attribute("data-points") or 0) // 4
            points = wau_mau.locator("svg circle[data-series=stickiness]")
            assert days > 0 and points.count() == days
            heights = [float(points.nth(i).get_attribute("cy") or 0) for i in range(days)]
            assert max(heights) < PLOT_TOP + PLOT_HEIGHT / 2, heights
            assert points.first.locator("title").text_content().endswith(": 16.7%")
            ticks = wau_mau.locator("svg text.rate-tick").all_text_contents()
            assert ticks[0] == "0.0%" and ticks[-1] == "20.0%", ticks
            # Rates read as in the saved reports: one decimal, in per cent.
            cells = page.locator("#chart-retention svg text").all_text_contents()
            assert {"100.0%", "90.0%", "70.0%"} <= set(cells), cells

            page.click("button[data-days='7']")
            # The page's Content-Security-Policy forbids eval, so no wait_for_function here.
            expect(page.locator("#chart-dau")).to_have_attribute("data-points", "7")
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert all(url.startswith(query_server.url) for url in requested), requested
    assert any("/v1/reports/weekly_retention" in url for url in requested)
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    assert any("/v1/live" in url for url in requested)


def test_the_live_panel_says_when_the_real_time_tier_is_not_running(
    make_server,  # type: ignore[no-untyped-def]  # noqa: F811
    tmp_path: Path,
) -> None:
    server: Server = make_server()
    read_key = KeyStore(server.settings.api_keys_path).create("screen", kind="read")
    with sync_playwright() as playwright:
        browser = _browser(playwright, tmp_path)
        try:
            page = browser.new_page()
            page.goto(f"{server.url}/dashboard")
            page.fill("#key", read_key)
            page.click("#key-form button")
            live = page.locator("#live")
            expect(live).to_have_attribute("data-state", "stopped", timeout=20_000)
            expect(page.locator("#live-status")).to_contain_text(
                "The real-time tier is not running"
            )
            expect(page.locator("#live-status")).to_contain_text("sluice stream")
            expect(page.locator("#live-orders")).to_have_text("\u2013")
            page.screenshot(path=str(tmp_path / "stopped.png"))

            # A worker that ran and stopped: its figures, flagged as stale from its last
            # heartbeat (here a minute ago), until a worker beats again.
            write_key = server.create_key("web")
            _stream(server, write_key, 0, 8)
            with contextlib.closing(store.connect(server.settings.realtime_store_path)) as con:
                store.beat(con, time.time() - 60)
            expect(live).to_have_attribute("data-state", "stale", timeout=20_000)
            expect(page.locator("#live-status")).to_contain_text(
                "The stream worker is not running since"
            )
            expect(page.locator("#live-orders")).to_have_text("2")
            _stream(server, write_key, 8, 4)
            expect(live).to_have_attribute("data-state", "live", timeout=20_000)
            expect(page.locator("#live-orders")).to_have_text("3")
            assert page.locator("#live-lag").text_content() != "\u2013"
            # No marts: the daily view has today alone, from the real-time tier, labelled.
            expect(page.locator("#daily")).to_have_attribute("data-rows", "1")
            today = page.locator("#daily-rows tr")
            expect(today).to_have_attribute("data-source", "real-time tier")
            expect(today.locator("td.source")).to_have_text("real-time tier, so far")
            expect(today.locator("td").nth(2)).to_have_text("3")
        finally:
            browser.close()
