"""`sluice keys create NAME --read`: a read key, listed with its kind; a key file written
before keys had kinds still holds write keys."""

from __future__ import annotations

import datetime as dt
import json

from click.testing import CliRunner

from common.keys import KeyStore, hash_key
from sluice.cli import main


def test_keys_create_read_makes_a_key_that_only_reads(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(dt.date(2026, 1, 1))
    runner = CliRunner()
    created = runner.invoke(main, ["keys", "create", "analysts", "--read"])
    assert created.exit_code == 0, created.output
    assert "read key 'analysts'" in created.stderr
    key = created.stdout.strip().splitlines()[0]
    store = KeyStore(settings.api_keys_path)
    assert store.reader_of(key) == "analysts" and store.source_of(key) is None

    assert runner.invoke(main, ["keys", "list"]).exit_code == 0
    assert [(k.name, k.kind) for k in store.list()] == [("analysts", "read")]
    assert runner.invoke(main, ["keys", "revoke", "analysts"]).exit_code == 0
    assert KeyStore(settings.api_keys_path).reader_of(key) is None


def test_entries_without_a_kind_are_write_keys(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(dt.date(2026, 1, 1))
    entry = {"name": "web", "key_hash": hash_key("sk_old"), "created_at": "2026-01-01T00:00:00"}
    settings.api_keys_path.parent.mkdir(parents=True, exist_ok=True)
    settings.api_keys_path.write_text(json.dumps({"keys": [entry]}))
    store = KeyStore(settings.api_keys_path)
    assert store.source_of("sk_old") == "web" and store.reader_of("sk_old") is None
