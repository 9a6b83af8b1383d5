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
Writes off the critical path: `put_later` hands the entry to one writer thread per cache (the same atomic write,
fsync included) and returns at once, so the thread that handles replies never waits on the disk. Pending entries
answer `get` before they reach the disk; `flush` waits for them (the evaluation flushes at the end, and at exit).
A kill loses only the entries still queued, never leaves a partial one: the rerun resends those few requests.
An unreadable or mismatched entry (a disk fault, a hand edit) counts as a miss and is overwritten by the next `put`.
Each entry stores its key too, so `get` checks it: a hash collision or a moved file cannot return the wrong value.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import queue
import tempfile
import threading
import weakref
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
        self._pending: dict[str, tuple[str, Any]] = {}  # hash -> (canonical key, value) queued for the writer
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self.errors: list[str] = []
        atexit.register(_flush_at_exit, weakref.ref(self))

    def __repr__(self) -> str:
        return f"DiskCache({str(self.root)!r})"

    def path(self, key: Any) -> Path:
        return self._path(key_hash(key))

    def _path(self, h: str) -> Path:
        return self.root / h[:2] / f"{h}.json"

    def get(self, key: Any) -> Any | None:
        """The value stored under `key`, or None on a miss (None itself cannot be stored)."""
        ck = _canonical(key)
        h = hashlib.sha256(ck.encode("utf-8")).hexdigest()
        pending = self._pending.get(h)
        if pending is not None and pending[0] == ck:
            return pending[1]
        try:
            raw = self._path(h).read_text(encoding="utf-8")
        except OSError:
            return None
        # the entry is canonical JSON with sorted keys, so it opens with its key: compare text, parse only on a match
        head = '{"key":' + ck + ',"value":'
        if not raw.startswith(head) or not raw.endswith("}"):
            return None
        try:
            return json.loads(raw[len(head) : -1])
        except ValueError:
            return None

    def put(self, key: Any, value: Any) -> None:
        """Store `value` under `key` atomically (temporary file, fsync, rename)."""
        if value is None:
            raise ValueError("DiskCache cannot store None (it means a miss)")
        self._write(key_hash(key), _canonical({"key": key, "value": value}))

    def put_later(self, key: Any, value: Any) -> None:
        """`put` on the writer thread; `get` sees the entry at once. Errors are logged by `flush`'s caller."""
        if value is None:
            raise ValueError("DiskCache cannot store None (it means a miss)")
        ck = _canonical(key)
        h = hashlib.sha256(ck.encode("utf-8")).hexdigest()
        data = _canonical({"key": key, "value": value})
        with self._lock:
            self._pending[h] = (ck, value)
            if self._writer is None:
                self._writer = threading.Thread(target=_drain, args=(weakref.ref(self), self._queue),
                                                name="cache-writer", daemon=True)  # fmt: skip
                self._writer.start()
        self._queue.put((h, data))

    def flush(self) -> list[str]:
        """Wait until every `put_later` entry is on disk; the errors met writing them (a full disk), if any."""
        self._queue.join()
        errors, self.errors = self.errors, []
        return errors

    def _write(self, h: str, text: str) -> None:
        target = self._path(h)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8")
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


def _drain(ref: weakref.ref[DiskCache], q: queue.Queue[tuple[str, str]]) -> None:
    """The writer thread: write each queued entry, then drop it from the pending map."""
    while True:
        h, data = q.get()
        cache = ref()
        try:
            if cache is not None:
                try:
                    cache._write(h, data)
                except OSError as e:  # a full disk costs a resend next time, not this run's answers
                    cache.errors.append(f"{cache.root}: {e}")
                with cache._lock:
                    cache._pending.pop(h, None)
        finally:
            del cache
            q.task_done()


def _flush_at_exit(ref: weakref.ref[DiskCache]) -> None:
    cache = ref()
    if cache is not None and cache._writer is not None:
        cache.flush()
