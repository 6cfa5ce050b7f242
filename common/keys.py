"""Keys of ``sluice serve``: create, list, revoke, look up. Only hashes are stored.

The key file (``Settings.api_keys_path``, ``<data dir>/keys.json``) holds one entry per key
name. A key is of one kind: a **write** key (the default, and what entries without ``kind``
are) sends events to the ingest API, and its name is the source that every event sent with
it belongs to (its segments go to ``landing/sources/<name>/``); a **read** key reads the
query API and the dashboard (``serving/query_api.py``). Neither can do the other's job.
Keys are 192 random bits, so a plain SHA-256 is enough to make the file useless to a reader.
The file is replaced atomically and read again whenever it changes, so a revoked key stops
working without a restart. Reads no environment.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from common.durable import atomic_write_text

# A name becomes a folder under landing/sources/ and a metric label.
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# The loader's source for files dropped outside landing/sources/ (ingestion.landing).
RESERVED_NAMES = frozenset({"files"})
KEY_PREFIX = "sk_"
KINDS = ("write", "read")


class KeyFileError(ValueError):
    """A key command cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class WriteKey:
    name: str
    key_hash: str
    created_at: str
    revoked_at: str | None = None
    kind: str = "write"

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", errors="surrogatepass")).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


class KeyStore:
    """The key file; every method reads it fresh or from a cache checked by mtime."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._sources: dict[str, str] = {}
        self._readers: dict[str, str] = {}

    def _read(self) -> list[WriteKey]:
        if not self.path.exists():
            return []
        try:
            doc = json.loads(self.path.read_text())
            return [WriteKey(**entry) for entry in doc["keys"]]
        except (ValueError, KeyError, TypeError) as error:
            raise KeyFileError(f"{self.path} is not a Sluice key file ({error})") from None

    def _write(self, keys: list[WriteKey]) -> None:
        text = json.dumps({"keys": [asdict(k) for k in keys]}, indent=2) + "\n"
        # Hashes only, but readable by the owner alone all the same.
        atomic_write_text(self.path, text, permissions=0o600)

    def list(self) -> list[WriteKey]:
        return self._read()

    def create(self, name: str, kind: str = "write") -> str:
        """Make a new key for ``name`` and return it; it is never shown again."""
        if kind not in KINDS:
            raise KeyFileError(f"key kind {kind!r} is not one of {', '.join(KINDS)}")
        if not NAME_PATTERN.match(name) or name in RESERVED_NAMES:
            raise KeyFileError(
                f"{name!r} is not a usable key name: use lowercase letters, digits, '-' and '_' "
                f"(up to 64, starting with a letter or digit), and not {sorted(RESERVED_NAMES)}"
            )
        keys = self._read()
        if any(k.name == name and k.active for k in keys):
            raise KeyFileError(f"a key named {name!r} exists; revoke it first (sluice keys revoke)")
        key = KEY_PREFIX + secrets.token_urlsafe(24)
        keys = [k for k in keys if k.name != name]
        keys.append(WriteKey(name=name, key_hash=hash_key(key), created_at=_now(), kind=kind))
        self._write(keys)
        return key

    def revoke(self, name: str) -> None:
        keys = self._read()
        found = [k for k in keys if k.name == name and k.active]
        if not found:
            raise KeyFileError(f"no active key named {name!r} (see sluice keys list)")
        revoked = _now()
        self._write(
            [
                WriteKey(k.name, k.key_hash, k.created_at, revoked, k.kind) if k in found else k
                for k in keys
            ]
        )

    def source_of(self, key: str) -> str | None:
        """The source (key name) of an active write key, else None (a read key included)."""
        self._refresh()
        return self._sources.get(hash_key(key))

    def reader_of(self, key: str) -> str | None:
        """The name of an active read key, else None (a write key included)."""
        self._refresh()
        return self._readers.get(hash_key(key))

    def _refresh(self) -> None:
        """Re-read the file when it changed (mtime and inode)."""
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_ino)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            keys = [k for k in self._read() if k.active]
            self._sources = {k.key_hash: k.name for k in keys if k.kind == "write"}
            self._readers = {k.key_hash: k.name for k in keys if k.kind == "read"}
            self._stamp = stamp
