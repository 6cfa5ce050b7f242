"""The data directory's dbt manifest is parsed once, and again only when what it depends on
changes, so every run starts from a partial parse dbt accepts."""

from __future__ import annotations

import datetime as dt
import json

from orchestration.prepare import PARSED_WITH_FILE, prepare_dbt_manifest


def test_the_manifest_is_parsed_again_only_when_its_settings_change(make_settings) -> None:
    settings = make_settings(dt.date(2026, 1, 1))
    manifest = prepare_dbt_manifest(settings)
    assert manifest.parent == settings.dbt_target_dir
    assert (manifest.parent / "partial_parse.msgpack").exists()
    parsed = manifest.stat().st_mtime_ns
    assert prepare_dbt_manifest(settings).stat().st_mtime_ns == parsed

    bigger = make_settings(dt.date(2026, 1, 1), SLUICE_DUCKDB_MEMORY_LIMIT="2GB")
    assert prepare_dbt_manifest(bigger).stat().st_mtime_ns > parsed
    recorded = json.loads((manifest.parent / PARSED_WITH_FILE).read_text())
    assert recorded["SLUICE_DUCKDB_MEMORY_LIMIT"] == "2GB"
