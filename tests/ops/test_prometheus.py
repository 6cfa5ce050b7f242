"""The shipped Prometheus files (``ops/prometheus/``): generated from ``ops/slos.yml``, valid
for ``promtool`` and ``amtool``, their unit tests passing and failing when a rule is wrong, and
a real Prometheus on 127.0.0.1 scraping a real ``sluice serve`` and evaluating the rules.

Needs Debian's ``prometheus`` (promtool, prometheus) and ``prometheus-alertmanager`` (amtool)
packages, which ``.ci/run`` installs; without them these tests are skipped."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from common.settings import REPO_DIR, SLO_FILE
from sluice.slo import load_slos, rules_yaml
from tests.ingestion.api.conftest import (
    Server,
    free_port,
    make_server,  # noqa: F401  (a fixture)
)

OPS = REPO_DIR / "ops" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool: Debian's prometheus package (.ci/run installs it)"
)


def _run(*args: str, cwd: Path = OPS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_shipped_rules_are_generated_from_the_slo_file() -> None:
    shipped = (OPS / "rules.yml").read_text()
    assert shipped == rules_yaml(load_slos(SLO_FILE)), (
        "ops/prometheus/rules.yml differs from ops/slos.yml: run "
        "`python -m sluice.slo --prometheus-rules > ops/prometheus/rules.yml`"
    )


@needs_promtool
def test_promtool_and_amtool_accept_the_shipped_config() -> None:
    checked = _run("promtool", "check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 45 rules found" in checked.stdout
    if shutil.which("amtool") is None:
        pytest.skip("amtool: Debian's prometheus-alertmanager package (.ci/run installs it)")
    checked = _run("amtool", "check-config", "alertmanager.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 receivers" in checked.stdout


@needs_promtool
def test_the_rule_tests_pass_and_catch_a_wrong_rule(tmp_path: Path) -> None:
    passed = _run("promtool", "test", "rules", "rules_test.yml")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    shutil.copy(OPS / "rules_test.yml", tmp_path)
    rules = (OPS / "rules.yml").read_text()
    wrong = {
        # Counting 4xx (the clients' errors) against the API.
        "4xx": rules.replace('status=~"5.."', 'status=~"4.."'),
        # An ingest budget of 10% (objective 0.9): the outage of the tests no longer pages.
        "budget": rules.replace(" * 0.001)", " * 0.1)"),
        # The long windows alone: the page goes on long after the outage ended.
        "window": rules.replace(
            'ratio_rate5m{slo="ingest_availability"} > (14.4 * 0.001)',
            'ratio_rate5m{slo="ingest_availability"} >= 0',
        ).replace(
            'ratio_rate30m{slo="ingest_availability"} > (6 * 0.001)',
            'ratio_rate30m{slo="ingest_availability"} >= 0',
        ),
    }
    for name, text in wrong.items():
        assert text != rules, name
        (tmp_path / "rules.yml").write_text(text)
        failed = _run("promtool", "test", "rules", "rules_test.yml", cwd=tmp_path)
        assert failed.returncode != 0, f"the rule tests missed the wrong rule ({name})"
        assert "FAILED" in failed.stdout + failed.stderr
    (tmp_path / "rules.yml").write_text(rules.replace("sum(rate(", "sum(rate((", 1))
    broken = _run("promtool", "check", "rules", "rules.yml", cwd=tmp_path)
    assert broken.returncode != 0 and "parse error" in broken.stdout + broken.stderr


def _query(url: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


@needs_promtool
def test_prometheus_scrapes_sluice_serve_and_records_the_ingest_error_ratio(  # type: ignore[no-untyped-def]
    make_server,  # noqa: F811  (the fixture)
    tmp_path: Path,
) -> None:
    server: Server = make_server()
    key = server.create_key("web")
    keys_file = server.settings.api_keys_path
    saved = keys_file.read_bytes()
    event = {"type": "track", "event": "Signed Up", "userId": "u1"}

    def send(write_key: str, times: int) -> list[int]:
        url = f"{server.url}/v1/track"
        return [httpx.post(url, json=event, auth=(write_key, "")).status_code for _ in range(times)]

    def answer_503(times: int) -> list[int]:
        keys_file.write_text("{ not json")  # the API cannot read its keys: 503
        statuses = send(key, times)
        keys_file.write_bytes(saved)
        return statuses

    # Every series exists before Prometheus' first scrape, so each counts only what follows;
    # each starts above what it gains, so rate() extrapolates all of them alike (it would
    # extrapolate a counter that started near zero only back to its zero).
    warm_up = send(key, 8) + send("not-a-key", 2) + answer_503(3)
    assert warm_up == [200] * 8 + [401] * 2 + [503] * 3

    config = yaml.safe_load((OPS / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(OPS / "rules.yml")]
    del config["alerting"]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{server.port}"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "prometheus.log").open("wb") as log:
        prometheus = subprocess.Popen(
            [
                str(Path(PROMTOOL or "").with_name("prometheus")),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 30

        def wait_for(what: str, condition: Any) -> Any:
            while time.monotonic() < deadline:
                assert prometheus.poll() is None, (tmp_path / "prometheus.log").read_text()
                try:
                    found = condition()
                except httpx.TransportError:
                    found = None
                if found:
                    return found
                time.sleep(0.2)
            raise AssertionError(f"{what} within 30 s; {(tmp_path / 'prometheus.log').read_text()}")

        wait_for("Prometheus ready", lambda: httpx.get(f"{url}/-/ready").status_code == 200)
        wait_for(
            "three response series scraped",
            lambda: len(_query(url, "sluice_api_responses_total")) == 3,
        )
        assert _query(url, 'up{job="sluice"}')[0]["value"][1] == "1"
        assert send(key, 7) + send("not-a-key", 1) + answer_503(2) == [200] * 7 + [401, 503, 503]
        sent_at = time.time()

        def scraped_after_sending() -> float | None:
            [sample] = _query(url, 'timestamp(up{job="sluice"})')
            return float(sample["value"][1]) if float(sample["value"][1]) > sent_at else None

        def ratio(scraped_at: float) -> float | None:
            """The error ratio of the first evaluation after that scrape (earlier ones saw
            scrapes taken while the requests were sent)."""
            expr = 'sluice:slo_errors:ratio_rate5m{slo="ingest_availability"}'
            [sample] = _query(url, f"timestamp({expr})") or [None]
            if sample is None or float(sample["value"][1]) <= scraped_at:
                return None
            [value] = _query(url, expr)
            return float(value["value"][1])

        scraped_at = wait_for("a scrape after the requests", scraped_after_sending)
        # Two server errors in ten answers; the 401 is the client's.
        errors = wait_for("the ingest error ratio", lambda: ratio(scraped_at))
        assert errors == pytest.approx(0.2, rel=1e-6)
        latency = _query(url, 'sluice:slo_errors:ratio_rate5m{slo="ingest_ack_latency"}')
        assert [float(sample["value"][1]) for sample in latency] == [0.0]
    finally:
        prometheus.send_signal(signal.SIGKILL)
        prometheus.wait(timeout=30)
