"""Every legibility metric validated against our nine corruptions: does it rank intact CoTs above corrupted?

For each metric and transform: the AUROC of intact-above-corrupted (ties 0.5) over the traces that have
both an intact value and at least one value under that transform, with a bootstrap interval that
resamples whole traces (an intact CoT and its corrupted copies share a trace, so they move together),
and the paired win rate: over (intact, corrupted copy of the same trace) pairs, how often intact wins.
A metric where lower means more legible is negated first, so 1 always means "separates as it should",
0.5 "blind to this corruption", 0 "backwards".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from legibility.errors import LegibilityError
from legibility.evaluate.stats import LEVEL, N_BOOT, auroc_ci

INTACT = "intact"

# The reference card's strength of each corruption, word for word: the model card of the reference adapter (the
# Qwen3-8B LoRA this package reproduces) grades how far each transform should push a legibility metric. Copied, not
# reinterpreted, so a validity table can be read against the card (even where the card grades donor_splice_25 above
# donor_splice_50). The one source of these labels: validity tables, the report and the README quote it.
TRANSFORM_STRENGTH: dict[str, str] = {
    "cross_substitution": "Strong",
    "donor_splice_50": "Moderate-Strong",
    "donor_splice_25": "Strong",
    "sentence_shuffle": "Moderate",
    "adjacent_swap": "Moderate",
    "sentence_deletion_30": "Moderate",
    "distractor_injection": "Moderate-Strong",
    "number_substitution": "Weak-Moderate",
    "sentence_reversal": "Moderate",
}
STRENGTHS = ("Strong", "Moderate-Strong", "Moderate", "Weak-Moderate")
"""The card's grades, strongest first: the order of validity tables' transforms."""


@dataclass(frozen=True)
class MetricValue:
    """One metric's value on one CoT: the intact trace (transform "intact") or one corrupted copy of it."""

    trace_id: str
    transform: str
    value: float
    metric: str = "metric"
    higher_is_more_legible: bool = True


@dataclass(frozen=True)
class TransformCheck:
    metric: str
    transform: str
    strength: str | None  # the reference card's (TRANSFORM_STRENGTH), None for a transform outside it
    auroc: float
    low: float
    high: float
    paired_win_rate: float  # over same-trace (intact, corrupted) pairs, ties 0.5
    n_traces: int  # traces with an intact value and at least one corrupted value
    n_corrupted: int
    n_unpaired: int  # corrupted values whose trace has no intact value (left out)


def _check_one(metric: str, rows: list[MetricValue], n_boot: int, seed: int, level: float) -> list[TransformCheck]:
    flags = {r.higher_is_more_legible for r in rows}
    if len(flags) != 1:
        raise LegibilityError(f"metric {metric!r}: higher_is_more_legible differs between its records")
    sign = 1.0 if flags.pop() else -1.0
    intact: dict[str, float] = {}
    for r in rows:
        if r.transform == INTACT:
            if r.trace_id in intact:
                raise LegibilityError(f"metric {metric!r}: two intact values for trace {r.trace_id}")
            intact[r.trace_id] = sign * float(r.value)
    if any(np.isnan(v) for v in intact.values()) or any(np.isnan(r.value) for r in rows):
        raise LegibilityError(f"metric {metric!r}: NaN values (drop or impute them first)")
    out = []
    for k, t in enumerate(sorted({r.transform for r in rows} - {INTACT})):
        bad = [r for r in rows if r.transform == t]
        paired = [r for r in bad if r.trace_id in intact]
        if not paired:
            continue
        traces = sorted({r.trace_id for r in paired})
        scores = [intact[i] for i in traces] + [sign * float(r.value) for r in paired]
        labels = [True] * len(traces) + [False] * len(paired)
        clusters = traces + [r.trace_id for r in paired]
        ci = auroc_ci(scores, labels, clusters, n_boot=n_boot, seed=np.random.default_rng([seed, k]), level=level)
        wins = [
            1.0 if intact[r.trace_id] > sign * r.value else 0.5 if intact[r.trace_id] == sign * r.value else 0.0
            for r in paired
        ]
        out.append(TransformCheck(
            metric, t, TRANSFORM_STRENGTH.get(t), ci.auroc, ci.low, ci.high, float(np.mean(wins)),
            len(traces), len(paired), len(bad) - len(paired),
        ))  # fmt: skip
    return out


def validate(
    values: Iterable[MetricValue], *, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL
) -> list[TransformCheck]:
    """Per metric (sorted) and transform (sorted): AUROC of intact above corrupted, trace-clustered CI, n."""
    by_metric: dict[str, list[MetricValue]] = {}
    for v in values:
        by_metric.setdefault(v.metric, []).append(v)
    return [c for m in sorted(by_metric) for c in _check_one(m, by_metric[m], n_boot, seed, level)]


def checks_frame(checks: Iterable[TransformCheck]) -> pd.DataFrame:
    """The checks as a long table, one row per (metric, transform)."""
    return pd.DataFrame([asdict(c) for c in checks])


def validity_table(checks: Iterable[TransformCheck], value: str = "auroc") -> pd.DataFrame:
    """metric x transform table of one column of the checks (AUROC by default); transforms ordered by
    strength, strongest first, then any unknown ones by name."""
    df = checks_frame(checks)
    if df.empty:
        return pd.DataFrame()
    table = df.pivot(index="metric", columns="transform", values=value)
    rank = {s: i for i, s in enumerate(STRENGTHS)}
    cols = sorted(table.columns, key=lambda t: (rank.get(TRANSFORM_STRENGTH.get(t, ""), len(rank)), t))
    return table[cols]
