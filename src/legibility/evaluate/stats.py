"""Accuracy, paired generator comparisons and AUROC, each with a bootstrap interval that respects clustering.

Why clustered: K samples of one question (or an intact CoT and its corrupted copies) are not independent,
so resampling rows would give intervals that are too narrow. Every bootstrap here resamples whole clusters
(questions, traces) with replacement, from a seeded `numpy.random.Generator`, and reports percentile
intervals. The replicates are drawn as multinomial cluster counts in batches, so memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import sparse
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar

from legibility.errors import LegibilityError
from legibility.records import Trace

N_BOOT = 2000
LEVEL = 0.95
_BATCH_CELLS = 4_000_000  # replicates x rows held at once


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval; `n_clusters` is what was resampled."""

    estimate: float
    low: float
    high: float
    n: int  # rows (samples, scores)
    n_clusters: int
    level: float = LEVEL


@dataclass(frozen=True)
class GroupAccuracy:
    """Task accuracy of one group (e.g. one generator), clustered by question."""

    group: str
    accuracy: float
    low: float
    high: float
    n_samples: int
    n_questions: int


@dataclass(frozen=True)
class PairedComparison:
    """Generator A minus generator B on the questions both answered (each question weighs the same)."""

    accuracy_a: float
    accuracy_b: float
    difference: float  # accuracy_a - accuracy_b
    low: float
    high: float
    p_value: float
    test: str  # "mcnemar-exact" (one sample per question and arm) or "sign-flip permutation"
    n_questions: int  # shared questions
    n_only_a: int  # questions only A answered (left out)
    n_only_b: int
    discordant: tuple[int, int] | None = None  # (A right & B wrong, A wrong & B right), McNemar only


@dataclass(frozen=True)
class AurocCI:
    """P(a positive scores above a negative), ties 0.5, with a bootstrap interval clustered as given."""

    auroc: float
    low: float
    high: float
    n_pos: int
    n_neg: int
    n_clusters: int
    level: float = LEVEL


# -------------------------------------------------------------------------------------------- helpers


def codes(clusters: Sequence[Hashable] | None, n: int) -> tuple[np.ndarray, int]:
    """Cluster labels as integer codes 0..G-1 (first-seen order) and G; None: every row its own cluster."""
    if clusters is None:
        return np.arange(n), n
    if len(clusters) != n:
        raise LegibilityError(f"{len(clusters)} cluster labels for {n} rows")
    index: dict[Hashable, int] = {}
    out = np.fromiter((index.setdefault(c, len(index)) for c in clusters), dtype=np.int64, count=n)
    return out, len(index)


def cluster_weights(n_clusters: int, n_boot: int, rng: np.random.Generator, rows: int = 0) -> Iterator[np.ndarray]:
    """Bootstrap replicates as (batch, n_clusters) arrays of how often each cluster was drawn (the counts
    sum to n_clusters); batches keep batch x max(rows, n_clusters) under a few million cells."""
    if n_clusters < 1:
        raise LegibilityError("nothing to bootstrap: no clusters")
    batch = max(1, _BATCH_CELLS // max(rows, n_clusters, 1))
    p = np.full(n_clusters, 1.0 / n_clusters)
    done = 0
    while done < n_boot:
        b = min(batch, n_boot - done)
        yield rng.multinomial(n_clusters, p, size=b).astype(np.float64)
        done += b


def percentile_interval(replicates: np.ndarray, level: float = LEVEL, n_clusters: int = 2) -> tuple[float, float]:
    """The (1-level)/2 and (1+level)/2 percentiles of the finite replicates; nan when there are none, or when
    fewer than 2 clusters were resampled (every replicate would be the estimate: a zero-width interval that
    claims a certainty one trace or question cannot give)."""
    r = np.asarray(replicates, dtype=float)
    r = r[np.isfinite(r)]
    if not len(r) or n_clusters < 2:
        return float("nan"), float("nan")
    lo, hi = np.percentile(r, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


# ------------------------------------------------------------------------------------------ accuracy


def clustered_mean(
    values: Sequence[float],
    clusters: Sequence[Hashable] | None = None,
    *,
    n_boot: int = N_BOOT,
    seed: int | np.random.Generator = 0,
    level: float = LEVEL,
) -> Interval:
    """Mean of `values` over rows, with a bootstrap interval that resamples whole clusters.

    A replicate's mean is sum(drawn rows) / count(drawn rows), so clusters of different sizes weigh by size,
    as in the point estimate."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or not len(v):
        raise LegibilityError("clustered_mean needs a non-empty 1-D sequence")
    c, g = codes(clusters, len(v))
    sums, counts = np.bincount(c, weights=v, minlength=g), np.bincount(c, minlength=g).astype(float)
    reps = [w @ sums / (w @ counts) for w in cluster_weights(g, n_boot, _rng(seed))]
    lo, hi = percentile_interval(np.concatenate(reps), level, g)
    return Interval(float(v.mean()), lo, hi, len(v), g, level)


def accuracy_by_group(
    correct: Sequence[bool],
    questions: Sequence[Hashable],
    groups: Sequence[str],
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> list[GroupAccuracy]:
    """Accuracy per group (sorted by name), each clustered by question: all K samples of a question are
    resampled together. Each group gets its own generator, seeded from (seed, group index in sorted order)."""
    if not len(correct) == len(questions) == len(groups):
        raise LegibilityError(
            f"lengths differ: {len(correct)} verdicts, {len(questions)} questions, {len(groups)} groups"
        )
    out = []
    for k, g in enumerate(sorted(set(groups))):
        idx = [i for i, x in enumerate(groups) if x == g]
        iv = clustered_mean(
            [float(correct[i]) for i in idx],
            [questions[i] for i in idx],
            n_boot=n_boot,
            seed=np.random.default_rng([seed, k]),
            level=level,
        )
        out.append(GroupAccuracy(g, iv.estimate, iv.low, iv.high, iv.n, iv.n_clusters))
    return out


def trace_accuracy(
    traces: Iterable[Trace],
    by: Callable[[Trace], str] = lambda t: t.generator,
    *,
    strict: bool = False,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> list[GroupAccuracy]:
    """`accuracy_by_group` over records: grouped by `by` (default the generator), clustered by problem_id,
    using `correct` or, with strict=True, `correct_strict` (a trace not strictly graded is an error)."""
    ts = list(traces)
    if strict and (missing := [t.id for t in ts if t.correct_strict is None]):
        raise LegibilityError(f"{len(missing)} traces have no strict verdict, e.g. {missing[0]}")
    verdicts = [bool(t.correct_strict if strict else t.correct) for t in ts]
    return accuracy_by_group(
        verdicts, [t.problem_id for t in ts], [by(t) for t in ts], n_boot=n_boot, seed=seed, level=level
    )


# ------------------------------------------------------------------------------------ paired compare


def _per_question(correct: Sequence[bool], questions: Sequence[Hashable]) -> dict[Hashable, tuple[float, int]]:
    """question -> (accuracy over its samples, number of samples)."""
    if len(correct) != len(questions):
        raise LegibilityError(f"{len(correct)} verdicts for {len(questions)} question ids")
    acc: dict[Hashable, list[float]] = {}
    for c, q in zip(correct, questions, strict=True):
        acc.setdefault(q, []).append(float(c))
    return {q: (float(np.mean(v)), len(v)) for q, v in acc.items()}


def compare_paired(
    correct_a: Sequence[bool],
    questions_a: Sequence[Hashable],
    correct_b: Sequence[bool],
    questions_b: Sequence[Hashable],
    *,
    test: Literal["auto", "mcnemar", "permutation"] = "auto",
    n_boot: int = N_BOOT,
    n_permutations: int = 9999,
    seed: int = 0,
    level: float = LEVEL,
) -> PairedComparison:
    """Two generators on the same problems: difference in accuracy, a question-clustered paired bootstrap
    interval, and a paired test.

    Each shared question contributes its per-question accuracy in each arm (the mean of its K samples), so
    the comparison is paired and a question with more samples does not weigh more. The test: with exactly
    one sample per question in both arms ("auto" or "mcnemar"), McNemar's exact test on the discordant
    questions; otherwise a sign-flip permutation test of the mean per-question difference (swapping A and B
    within a question; exact when 2^n <= n_permutations, else Monte Carlo from the seeded generator)."""
    qa, qb = _per_question(correct_a, questions_a), _per_question(correct_b, questions_b)
    shared = [q for q in qa if q in qb]
    if not shared:
        raise LegibilityError("the two generators share no question")
    a = np.array([qa[q][0] for q in shared])
    b = np.array([qb[q][0] for q in shared])
    d = a - b
    rng = np.random.default_rng(seed)
    reps = np.concatenate([w @ d / len(d) for w in cluster_weights(len(d), n_boot, rng)])
    lo, hi = percentile_interval(reps, level, len(d))
    single = all(qa[q][1] == 1 and qb[q][1] == 1 for q in shared)
    discordant = None
    if test == "mcnemar" or (test == "auto" and single):
        if not single:
            raise LegibilityError("McNemar needs exactly one sample per question in both arms")
        n10, n01 = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
        n11, n00 = int(np.sum((a == 1) & (b == 1))), int(np.sum((a == 0) & (b == 0)))
        p = float(mcnemar([[n11, n10], [n01, n00]], exact=True).pvalue)
        name, discordant = "mcnemar-exact", (n10, n01)
    else:
        if not np.any(d):
            p = 1.0
        else:
            res = sps.permutation_test(
                (a, b),
                lambda x, y, axis: np.mean(x - y, axis=axis),
                permutation_type="samples",
                vectorized=True,
                n_resamples=n_permutations,
                alternative="two-sided",
                rng=rng,
            )
            p = float(min(1.0, res.pvalue))
        name = "sign-flip permutation"
    return PairedComparison(
        float(a.mean()), float(b.mean()), float(d.mean()), lo, hi, p, name, len(shared),
        len(qa) - len(shared), len(qb) - len(shared), discordant,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------- AUROC


def _weighted_auroc(
    onehot_pos: sparse.csr_matrix, onehot_neg: sparse.csr_matrix, wp: np.ndarray, wn: np.ndarray
) -> np.ndarray:
    """AUROC per replicate row: sum over (pos i, neg j) of w_i w_j ([s_i > s_j] + 0.5 [s_i == s_j]) / (W+ W-),
    from each score level's total positive and negative weight (onehot: rows x sorted score levels)."""
    lp = np.asarray((onehot_pos.T @ wp.T).T)  # replicates x levels
    ln = np.asarray((onehot_neg.T @ wn.T).T)
    below = np.cumsum(ln, axis=1) - ln
    num = np.sum(lp * (below + 0.5 * ln), axis=1)
    den = lp.sum(axis=1) * ln.sum(axis=1)
    out = np.full(len(num), np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """P(positive > negative) + 0.5 P(tie): the Mann-Whitney U of the positives over n_pos * n_neg."""
    if not len(positive) or not len(negative):
        raise LegibilityError("AUROC needs at least one positive and one negative score")
    u = sps.mannwhitneyu(np.asarray(positive, float), np.asarray(negative, float), alternative="two-sided")
    return float(u.statistic) / (len(positive) * len(negative))


def auroc_ci(
    scores: Sequence[float],
    positive: Sequence[bool],
    clusters: Sequence[Hashable] | None = None,
    *,
    n_boot: int = N_BOOT,
    seed: int | np.random.Generator = 0,
    level: float = LEVEL,
) -> AurocCI:
    """AUROC of `scores` for `positive` rows above the others, with a bootstrap interval that resamples
    whole clusters (e.g. a trace: its intact copy and its corrupted copies together); None: rows iid.
    A replicate that draws no positive or no negative is dropped from the percentiles."""
    s = np.asarray(scores, dtype=float)
    pos = np.asarray(positive, dtype=bool)
    if s.shape != pos.shape or s.ndim != 1:
        raise LegibilityError(f"{s.shape} scores for {pos.shape} labels")
    if np.isnan(s).any():
        raise LegibilityError("AUROC scores contain NaN")
    point = auroc(s[pos], s[~pos])
    uniq, level_code = np.unique(s, return_inverse=True)

    def onehot(rows: np.ndarray) -> sparse.csr_matrix:
        return sparse.csr_matrix((np.ones(len(rows)), (np.arange(len(rows)), level_code[rows])), (len(rows), len(uniq)))

    ip, ineg = np.flatnonzero(pos), np.flatnonzero(~pos)
    hp, hn = onehot(ip), onehot(ineg)
    c, g = codes(clusters, len(s))
    reps = [
        _weighted_auroc(hp, hn, w[:, c[ip]], w[:, c[ineg]])
        for w in cluster_weights(g, n_boot, _rng(seed), rows=len(s) + len(uniq))
    ]
    lo, hi = percentile_interval(np.concatenate(reps), level, g)
    return AurocCI(point, lo, hi, int(pos.sum()), int((~pos).sum()), g, level)
