"""Any backend behind an on-disk cache, so a rerun of a finished evaluation sends no request and runs no forward pass.

The key is the full request: the model's identity (`meta`: backend, model, revision, adapter hash, chat template
hash), the operation, the chat, the sampling settings or the scored target. Failures are never cached, so a rerun
retries exactly what failed. Batches stay batched: the misses of one call go to the backend as one call.
`calls` and `requests` count what reached the backend (the tests read them); a queued backend gets each request
as its own call.

Queued backends (openai: `submit`) are reached one request at a time through `submit`, so the evaluation keeps the
endpoint's pool full across stages; an identical request already in flight shares its future. Entries are written
by the cache's writer thread (`DiskCache.put_later`), never by the thread that handles replies; `flush` waits.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from legibility.models.base import ChatModel, Completion, Sampling, Scores
from legibility.models.cache import DiskCache, key_hash
from legibility.records import Message

__all__ = ["CachedModel"]

log = logging.getLogger(__name__)


def _chat(chat: list[Message]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} if isinstance(m, Message) else dict(m) for m in chat]


class CachedModel:
    """A `ChatModel` that answers from `cache_dir` when it can and asks `inner` for the rest."""

    def __init__(self, inner: ChatModel, cache_dir: str | Path, identity: dict[str, Any] | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.supports_scoring = inner.supports_scoring
        self.supports_continue = getattr(inner, "supports_continue", True)
        self.meta: dict[str, Any] = dict(getattr(inner, "meta", {}) or {})
        # what makes two models the same for caching: never versions of libraries or the device
        keep = ("backend", "model", "revision", "adapter_sha256", "chat_template_sha256", "enable_thinking", "dtype")
        self.identity = identity if identity is not None else {k: self.meta.get(k) for k in keep} | {"name": self.name}
        self.cache = DiskCache(cache_dir)
        self.calls = 0
        self.requests = 0
        self.hits = 0
        self._inflight: dict[str, Future[Completion]] = {}
        self._lock = threading.Lock()

    @property
    def queued(self) -> bool:
        """Whether the backend takes requests one by one on its own bounded queue (`submit`)."""
        return callable(getattr(self.inner, "submit", None))

    def submit(self, op: str, chat: list[Message], sampling: Sampling) -> Future[Completion]:
        """One "generate" or "continue" request: a done future on a hit, else the backend's (queued backends)."""
        if not self.queued:
            raise TypeError(f"{self.name}: the backend has no request queue; call generate / continue_")
        key = self._key(op, chat, {"sampling": dataclasses.asdict(sampling)})
        hit = self.cache.get(key)
        if hit is not None:
            with self._lock:
                self.hits += 1
            done: Future[Completion] = Future()
            done.set_result(Completion(**hit))
            return done
        h = key_hash(key)
        with self._lock:
            fut = self._inflight.get(h)
            if fut is not None:
                return fut
            self.requests += 1
            self.calls += 1
            fut = self.inner.submit(op, chat, sampling)  # type: ignore[attr-defined]
            self._inflight[h] = fut

        def stored(f: Future[Completion]) -> None:
            with self._lock:
                self._inflight.pop(h, None)
            if f.cancelled() or f.exception() is not None:
                return
            c = f.result()
            if c.ok:
                self.cache.put_later(key, dataclasses.asdict(c))

        fut.add_done_callback(stored)
        return fut

    def flush(self) -> None:
        """Wait until every reply is on disk (the writer thread); a failed write is logged, costing a resend."""
        for e in self.cache.flush():
            log.warning("cache: cannot write an entry (%s)", e)

    def __repr__(self) -> str:
        return f"CachedModel({self.name!r}, {self.cache!r})"

    def _key(self, op: str, chat: list[Message], extra: dict[str, Any]) -> dict[str, Any]:
        return {"model": self.identity, "op": op, "chat": _chat(chat), **extra}

    def _completions(self, op: str, chats: list[list[Message]], sampling: Sampling) -> list[Completion]:
        s = dataclasses.asdict(sampling)
        keys = [self._key(op, c, {"sampling": s}) for c in chats]
        out: list[Completion | None] = []
        for k in keys:
            hit = self.cache.get(k)
            out.append(Completion(**hit) if hit is not None else None)
        missing = [i for i, c in enumerate(out) if c is None]
        self.hits += len(chats) - len(missing)
        if missing:
            self.calls += 1
            self.requests += len(missing)
            fn = self.inner.generate if op == "generate" else self.inner.continue_
            fresh = fn([chats[i] for i in missing], sampling)
            for i, c in zip(missing, fresh, strict=True):
                out[i] = c
                if c.ok:
                    self.cache.put_later(keys[i], dataclasses.asdict(c))
        return [c for c in out if c is not None]

    def generate(self, chats: list[list[Message]], sampling: Sampling) -> list[Completion]:
        return self._completions("generate", chats, sampling)

    def continue_(self, chats: list[list[Message]], sampling: Sampling) -> list[Completion]:
        return self._completions("continue", chats, sampling)

    def score(self, chats: list[list[Message]], targets: list[str]) -> list[Scores]:
        keys = [self._key("score", c, {"target": t}) for c, t in zip(chats, targets, strict=True)]
        out: list[Scores | None] = []
        for k in keys:
            hit = self.cache.get(k)
            out.append(Scores(**hit) if hit is not None else None)
        missing = [i for i, c in enumerate(out) if c is None]
        self.hits += len(chats) - len(missing)
        if missing:
            self.calls += 1
            self.requests += len(missing)
            fresh = self.inner.score([chats[i] for i in missing], [targets[i] for i in missing])
            for i, sc in zip(missing, fresh, strict=True):
                out[i] = sc
                if sc.error is None:
                    self.cache.put_later(keys[i], dataclasses.asdict(sc))
        return [s for s in out if s is not None]
