"""One small model interface that every evaluation stage talks to, whichever backend serves it.

Three operations cover the protocols we reproduce (generation, readers C1/C2/C4, judges, uplift, surprisal):
- `generate`: complete chats (the reader answers, the judge rates, the generator writes a CoT);
- `continue_`: continue a chat whose last message is a partial assistant turn (C2 as a prefill, forced answers);
- `score`: log-probs of given text appended to a chat as the assistant's reply (uplift, surprisal, label
  probabilities); only backends that expose prompt log-probs implement it (`supports_scoring`).

Backends (`hf`, `openai`, `vllm`) live beside this module. A request that fails after the backend's retries comes
back as a `Completion` with `error` set: it is recorded and counted, never scored as a wrong answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from legibility.records import Message


@dataclass(frozen=True)
class Sampling:
    """Decoding settings, recorded with every sample so a generation can be pinned and reproduced."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    """0 is greedy decoding."""
    top_p: float = 1.0
    top_k: int | None = None
    """Keep the k most likely tokens; None is off."""
    min_p: float = 0.0
    """Drop tokens below min_p x the top token's probability; 0 is off."""
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be None (off) or >= 1, got {self.top_k}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1] (0 is off), got {self.min_p}")


@dataclass(frozen=True)
class Completion:
    """One reply. `text` is the raw text (a think block included); `error` is set when the request failed."""

    text: str
    finish_reason: str | None = None  # "stop" | "length" | None (failed)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass(frozen=True)
class Scores:
    """Per-token log-probs of a target text given its context (natural log)."""

    token_logprobs: list[float]
    tokens: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def total(self) -> float:
        return float(sum(self.token_logprobs))

    @property
    def mean_surprisal(self) -> float:
        """Mean negative log-prob per token (nats); NaN for an empty target."""
        n = len(self.token_logprobs)
        return -self.total / n if n else float("nan")


@runtime_checkable
class ChatModel(Protocol):
    """What evaluation needs from a model. `name` identifies it in records (model id, plus adapter if any)."""

    name: str
    supports_scoring: bool

    def generate(self, chats: list[list[Message]], sampling: Sampling) -> list[Completion]:
        """One completion per chat, in order."""
        ...

    def continue_(self, chats: list[list[Message]], sampling: Sampling) -> list[Completion]:
        """Continue each chat's last (assistant) message; the completion holds only the new text."""
        ...

    def score(self, chats: list[list[Message]], targets: list[str]) -> list[Scores]:
        """Log-probs of `targets[i]` as the assistant reply to `chats[i]` (the text only, no end token)."""
        ...
