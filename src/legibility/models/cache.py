"""A small on-disk cache of JSON values keyed by JSON requests, so a rerun of an evaluation resends nothing.

Layout: one JSON file per key, `<dir>/<h[:2]>/<h>.json` with `h` the SHA-256 of the key's canonical JSON. Why files
and not SQLite in WAL mode:
- a value is written to a private temporary file in the same folder, flushed, fsync'd and `os.replace`d onto its
  name. The rename is atomic, so a reader sees the whole old file or the whole new one, never a partial one; a kill
  mid-write leaves only a `.tmp` file that nothing reads. Concurrent writers (threads or processes) of one key
  each rename a complete file and the last one wins, which is harmless: they store the same request's answer.
- no locks and no shared-memory file: SQLite's WAL needs every process on one host and is documented not to work
  on network file systems, where cluster jobs often keep their caches. Plain files work there, can be inspected
  with `cat`, and one bad entry can be deleted alone.
- the cost is one small file per request; the two-character shard folders keep directories small.
An unreadable or mismatched entry (a disk fault, a hand edit) counts as a miss and is overwritten by the next `put`.
Each entry stores its key too, so `get` checks it: a hash collision or a moved file cannot return the wrong value.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["DiskCache", "key_hash"]


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def key_hash(key: Any) -> str:
    """SHA-256 hex of the canonical JSON of `key` (sorted keys, so dict order does not matter)."""
    return hashlib.sha256(_canonical(key).encode("utf-8")).hexdigest()


class DiskCache:
    """JSON values under JSON keys in `root`; safe for concurrent threads and processes (see the module doc)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"DiskCache({str(self.root)!r})"

    def path(self, key: Any) -> Path:
        h = key_hash(key)
        return self.root / h[:2] / f"{h}.json"

    def get(self, key: Any) -> Any | None:
        """The value stored under `key`, or None on a miss (None itself cannot be stored)."""
        try:
            entry = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or _canonical(entry.get("key")) != _canonical(key):
            return None
        return entry.get("value")

    def put(self, key: Any, value: Any) -> None:
        """Store `value` under `key` atomically (temporary file, fsync, rename)."""
        if value is None:
            raise ValueError("DiskCache cannot store None (it means a miss)")
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = _canonical({"key": key, "value": value}).encode("utf-8")
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem[:16]}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def __contains__(self, key: Any) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("??/*.json"))
