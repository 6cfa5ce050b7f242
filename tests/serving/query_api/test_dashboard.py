"""The dashboard in real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright): it asks for a read key, draws every chart from the report endpoints, fetches
nothing from elsewhere and logs no error."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.ingestion.api.conftest import Server
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
CHARTS = ("dau", "wau-mau", "revenue", "orders", "funnel", "retention")
# drawChart's plot area inside its 640 x 260 viewBox.
PLOT_TOP, PLOT_HEIGHT = 12, 200

# On a laptop without Chromium the test is skipped; in CI (.ci/run installs Chromium) a missing
# browser must fail, not hide behind a skip.
pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None and not os.environ.get("CI"),
    reason="Chromium is not installed (apt-get install chromium; .ci/run installs it)",
)


def test_the_dashboard_draws_every_chart_from_the_reports(
    query_server: Server, keys: Keys, tmp_path: Path
) -> None:
    problems: list[str] = []
    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1100},
        )
        try:
            page = browser.new_page()
            # The page's "last 7 days" end on the browser's today: the data's, at noon.
            page.clock.set_fixed_time(dt.datetime.combine(TODAY, dt.time(12), dt.UTC))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda request: requested.append(request.url))
            page.goto(f"{query_server.url}/dashboard")
            page.fill("#key", keys.read())
            page.click("#key-form button")
            page.wait_for_selector("body[data-state=ready]", timeout=20_000)
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
