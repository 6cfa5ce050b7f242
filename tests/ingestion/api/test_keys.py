"""`sluice keys`: a key is printed once, only its hash is stored, revocation sticks."""

from __future__ import annotations

import datetime as dt
import stat

from click.testing import CliRunner

from common.keys import KeyStore, hash_key
from sluice.cli import main


def test_keys_create_list_revoke(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(dt.date(2026, 1, 1))
    runner = CliRunner()
    created = runner.invoke(main, ["keys", "create", "web"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[0]
    assert key.startswith("sk_") and len(key) > 30
    text = settings.api_keys_path.read_text()
    assert key not in text and hash_key(key) in text
    assert stat.S_IMODE(settings.api_keys_path.stat().st_mode) == 0o600
    assert KeyStore(settings.api_keys_path).source_of(key) == "web"

    again = runner.invoke(main, ["keys", "create", "web"])
    assert again.exit_code == 1 and "revoke it first" in again.output
    listed = [(k.name, k.active) for k in KeyStore(settings.api_keys_path).list()]
    assert listed == [("web", True)]

    assert runner.invoke(main, ["keys", "revoke", "web"]).exit_code == 0
    assert KeyStore(settings.api_keys_path).source_of(key) is None
    assert [k.active for k in KeyStore(settings.api_keys_path).list()] == [False]
    assert runner.invoke(main, ["keys", "revoke", "web"]).exit_code == 1
    bad = runner.invoke(main, ["keys", "create", "files"])
    assert bad.exit_code == 1 and "not a usable key name" in bad.output
