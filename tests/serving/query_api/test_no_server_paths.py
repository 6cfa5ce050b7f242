"""No answer of the query API shows where the server keeps its files: not the data directory
(snapshot, keys, quotas), not the reports folder, not the Sluice folder. Every kind of error
answer is asked for, from a real ``sluice serve`` (conftest.py) and, for what it cannot show
(no snapshot yet, a broken report file), from a QueryApi served in this process."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import pytest

from common.keys import KeyStore
from common.settings import REPO_DIR, REPORTS_DIR, Settings, load_settings
from serving.query_api import QueryApi
from tests.ingestion.api.conftest import Server
from tests.serving.query_api.conftest import LIMITS, Keys, serve_in_thread


def server_paths(settings: Settings, *more: Path) -> list[str]:
    folders = (settings.data_dir, settings.serving_path, REPORTS_DIR, REPO_DIR, *more)
    return sorted({str(p) for folder in folders for p in (folder, folder.resolve())})


def assert_no_path(answer: httpx.Response, paths: list[str]) -> None:
    assert answer.status_code >= 400, answer.text
    assert answer.json()["error"], answer.text
    for path in paths:
        assert path not in answer.text, (answer.request.url, answer.text)


# Ad-hoc SQL that DuckDB or the guard refuses, each message from a different place.
REFUSED_SQL = [
    "select from where",
    "drop table marts.dau",
    "select * from nowhere",
    "select * from snapshot.nowhere.dau",
    "select * from read_csv('data.csv')",
    "select * from duckdb_databases()",
    "select current_setting('temp_directory')",
    "select * from query('attach ''x.duckdb''')",
    "select length(repeat('x', 4000000000))",
    "select count(*) from range(100000000)",
]


def test_error_answers_of_a_running_server_show_no_server_path(
    query_server: Server, client: httpx.Client, keys: Keys
) -> None:
    paths = server_paths(query_server.settings)
    today = dt.datetime.now(dt.UTC).date()
    answers = [
        client.get("/v1/reports/nope"),
        client.get("/v1/reports/Daily-Summary"),
        client.get("/v1/reports/daily_summary", params={"start": "yesterday"}),
        client.get("/v1/reports/daily_summary", params={"format": "xml"}),
        client.get("/v1/reports/daily_summary", params={"start": str(today), "end": "2000-01-01"}),
        client.post("/v1/query", content=b"not json"),
        client.post("/v1/query", json={"sql": ""}),
        client.post("/v1/query", content=b"x" * (65 * 1024)),
        *(client.post("/v1/query", json={"sql": sql}) for sql in REFUSED_SQL),
    ]
    with httpx.Client(base_url=query_server.url, timeout=30) as anonymous:
        answers.append(anonymous.get("/v1/reports"))
        answers.append(anonymous.post("/v1/query", json={"sql": "select 1"}))
        writer = {"Authorization": f"Bearer {keys.write()}"}
        answers.append(anonymous.get("/v1/reports/daily_summary", headers=writer))
    for answer in answers:
        assert_no_path(answer, paths)
    missing = answers[0].json()
    assert missing["limit"] == "report" and "no report 'nope'" in missing["error"]
    assert "daily_summary" in missing["error"]


def test_no_snapshot_yet_is_said_without_its_path(tmp_path: Path) -> None:
    settings = load_settings({"SLUICE_DATA_DIR": str(tmp_path / "data"), **LIMITS})
    keys = KeyStore(settings.api_keys_path)
    headers = {"Authorization": f"Bearer {keys.create('reader', kind='read')}"}
    with serve_in_thread(QueryApi(settings, keys)) as url:
        answers = [
            httpx.get(f"{url}/v1/reports/daily_summary", headers=headers),
            httpx.post(f"{url}/v1/query", json={"sql": "select 1"}, headers=headers),
        ]
    for answer in answers:
        assert answer.status_code == 503 and answer.json()["limit"] == "snapshot"
        assert "no serving snapshot has been published yet" in answer.json()["error"]
        assert "sluice materialize" in answer.json()["error"]
        assert_no_path(answer, server_paths(settings, tmp_path))


@pytest.mark.parametrize("listed", [True, False])
def test_a_broken_report_file_is_named_by_its_name_not_its_path(
    tmp_path: Path, listed: bool
) -> None:
    settings = load_settings({"SLUICE_DATA_DIR": str(tmp_path / "data"), **LIMITS})
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "broken.yml").write_text("name: broken\ndescription: no sql\n")
    keys = KeyStore(settings.api_keys_path)
    headers = {"Authorization": f"Bearer {keys.create('reader', kind='read')}"}
    with serve_in_thread(QueryApi(settings, keys, reports_dir=reports)) as url:
        path = "/v1/reports" if listed else "/v1/reports/broken"
        answer = httpx.get(f"{url}{path}", headers=headers)
        unknown = httpx.get(f"{url}/v1/reports/nope", headers=headers)
    assert answer.status_code == 500 and answer.json()["limit"] == "report"
    assert answer.json()["error"] == "reports/broken.yml: field 'sql' must be a non-empty string"
    assert_no_path(answer, server_paths(settings, reports, tmp_path))
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "no report 'nope'; the reports are: broken"
