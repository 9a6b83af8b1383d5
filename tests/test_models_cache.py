"""The on-disk request cache: keys by content, atomic writes, concurrent writers, and a kill mid-write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from legibility.models.cache import DiskCache, key_hash

SRC = Path(__file__).resolve().parents[1] / "src"


def test_round_trip_and_miss(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    key = {"url": "http://x/v1/chat/completions", "body": {"messages": [{"role": "user", "content": "héllo"}]}}
    assert cache.get(key) is None and key not in cache
    cache.put(key, {"choices": [{"message": {"content": "hi"}}]})
    assert cache.get(key) == {"choices": [{"message": {"content": "hi"}}]} and key in cache and len(cache) == 1
    assert DiskCache(tmp_path).get(json.loads(json.dumps(key))) == cache.get(key)  # survives a new process' view
    assert cache.get({**key, "extra": 1}) is None


def test_key_is_order_insensitive_and_value_sensitive() -> None:
    assert key_hash({"a": 1, "b": [1, 2]}) == key_hash({"b": [1, 2], "a": 1})
    assert key_hash({"a": 1, "b": [1, 2]}) != key_hash({"a": 1, "b": [2, 1]})
    assert key_hash({"t": 0.0}) != key_hash({"t": 0.5})


def test_none_cannot_be_stored(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="None"):
        DiskCache(tmp_path).put({"k": 1}, None)


def test_a_damaged_or_foreign_entry_is_a_miss_and_is_overwritten(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    key = {"k": 1}
    path = cache.path(key)
    path.parent.mkdir(parents=True)
    path.write_text('{"key": {"k": 1}, "value": {"trunc')  # a torn write from a non-atomic writer
    assert cache.get(key) is None
    path.write_text(json.dumps({"key": {"k": 2}, "value": "wrong"}))  # a file under the wrong name
    assert cache.get(key) is None
    cache.put(key, "right")
    assert cache.get(key) == "right"


def test_concurrent_threads_and_processes_never_corrupt(tmp_path: Path) -> None:
    """Two processes and eight threads write the same 40 keys at once; every entry ends whole and correct."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(SRC)!r})
        from legibility.models.cache import DiskCache
        c = DiskCache({str(tmp_path)!r})
        for r in range(5):
            for i in range(40):
                c.put({{"i": i}}, {{"i": i, "pad": "x" * 20000}})
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(2)]
    cache = DiskCache(tmp_path)
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda i: cache.put({"i": i % 40}, {"i": i % 40, "pad": "x" * 20000}), range(320)))
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert len(cache) == 40
    assert all(cache.get({"i": i}) == {"i": i, "pad": "x" * 20000} for i in range(40))
    assert not list(tmp_path.rglob("*.tmp"))  # every temporary file was renamed into place


def test_a_kill_mid_write_leaves_the_old_or_the_new_entry(tmp_path: Path) -> None:
    """A process rewrites one large entry in a loop while we read it, then is SIGKILLed: every read, during the
    writes and after the kill, finds a whole entry (never a torn one)."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(SRC)!r})
        from legibility.models.cache import DiskCache
        c = DiskCache({str(tmp_path)!r})
        n = 0
        print("ready", flush=True)
        while True:
            n += 1
            c.put({{"k": "big"}}, {{"n": n, "pad": "y" * 2_000_000}})
        """
    )
    cache = DiskCache(tmp_path)
    for delay in (0.0, 0.05, 0.2, 0.4):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 30
        while not cache.path({"k": "big"}).exists() and time.monotonic() < deadline:  # one whole write first
            time.sleep(0.005)
        reads = 0
        end = time.monotonic() + delay
        while time.monotonic() < end or reads == 0:  # readers during the writes never see a torn entry either
            value = cache.get({"k": "big"})
            assert value is not None and len(value["pad"]) == 2_000_000
            reads += 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        value = cache.get({"k": "big"})
        assert value is not None and len(value["pad"]) == 2_000_000 and value["n"] >= 1
    cache.put({"k": "big"}, {"n": 0, "pad": ""})  # leftovers of killed writes do not get in the way
    assert cache.get({"k": "big"}) == {"n": 0, "pad": ""}
