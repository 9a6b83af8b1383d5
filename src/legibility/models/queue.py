"""Requests handled as they complete: one helper over both kinds of backend, so a runner is written once.

A queued backend (openai, behind `CachedModel`) takes requests one by one (`submit`) on one bounded pool per
endpoint; every runner of an evaluation submits all of its requests at once, and the pool keeps `concurrency` in
flight until the work of all runners runs out. `completions` yields each reply as it arrives (out of order, with its
index), so the caller scores it at once and writes records in its own fixed order. A local backend (hf, vllm)
batches instead: `completions` calls `generate` / `continue_` on the whole list, or in chunks of `chunk` when a
progress callback wants to move.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Literal

from legibility.errors import LegibilityError
from legibility.models.base import ChatModel, Completion, Sampling
from legibility.records import Message

__all__ = ["Op", "completions", "is_queued", "submit_all"]

Op = Literal["generate", "continue"]


def is_queued(model: Any) -> bool:
    """Whether `model` takes requests one at a time on its own bounded queue (`submit`), rather than in batches."""
    flag = getattr(model, "queued", None)
    if isinstance(flag, bool):
        return flag
    return callable(getattr(model, "submit", None))


def submit_all(model: Any, op: Op, chats: Sequence[list[Message]], sampling: Sampling) -> list[Future[Completion]]:
    """Every request on the model's queue, in order; the futures come back at once."""
    return [model.submit(op, chat, sampling) for chat in chats]


def completions(
    model: ChatModel,
    op: Op,
    chats: Sequence[list[Message]],
    sampling: Sampling,
    *,
    progress: Callable[[int], None] | None = None,
    chunk: int = 64,
) -> Iterator[tuple[int, Completion]]:
    """(index, reply) for every chat: as they complete on a queued backend, in order (batched) on a local one.
    `progress` gets the number of replies handled since its last call."""
    if not chats:
        return
    if is_queued(model):
        futures = submit_all(model, op, chats, sampling)
        index: dict[int, list[int]] = {}  # one future may serve identical requests
        for i, f in enumerate(futures):
            index.setdefault(id(f), []).append(i)
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            ready = sorted(i for f in done for i in index[id(f)])  # a fixed order within one wake-up
            for i in ready:
                yield i, futures[i].result()
            if progress is not None:
                progress(len(ready))
        return
    call = model.generate if op == "generate" else model.continue_
    step = len(chats) if progress is None else max(1, chunk)
    for start in range(0, len(chats), step):
        part = list(chats[start : start + step])
        out = call(part, sampling)
        if len(out) != len(part):
            raise LegibilityError(f"{model.name}: {len(out)} completions for {len(part)} requests")
        yield from enumerate(out, start)
        if progress is not None:
            progress(len(part))
