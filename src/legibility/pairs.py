"""DPO pair construction: original CoT vs its corrupted copy, split by problem, exported for TRL and Together."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PairsConfig(BaseModel):
    """How pairs are built. Defaults follow the reference run."""

    model_config = ConfigDict(extra="forbid")

    direction: Literal["legible", "illegible"] = "legible"
    """legible: the original CoT is preferred (reference run); illegible: the corrupted one (a model organism)."""
    transforms: dict[str, float] = Field(default_factory=dict)
    """Per-transform sampling weights; empty means all nine, equally. A weight of 0 disables one."""
    pairs_per_trace: int = Field(default=9, ge=1)
    """Pairs made from each trace, each with a different transform while any is left."""
    donor_scope: Literal["benchmark", "any"] = "benchmark"
    """Where donor CoTs (splices, substitutions, distractors) come from; never the same problem."""
    val_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Share of problems (not pairs) held out for validation."""
    seed: int = 42
    only_correct: bool = True
    only_complete: bool = True
    tokenizer: str | None = "embedded"
    """Tokenizer for length statistics: a local path, or "embedded"; None skips token statistics."""
    max_length: int = 40960
    """Pairs whose prompt+completion exceed this many tokens are counted (as the reference run reports)."""
    system_prompt: str | None = None
