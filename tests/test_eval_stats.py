"""Clustered bootstrap accuracy, paired generator comparisons and AUROC on cases known by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from legibility.errors import LegibilityError
from legibility.evaluate.stats import (
    accuracy_by_group,
    auroc,
    auroc_ci,
    cluster_weights,
    clustered_mean,
    compare_paired,
    trace_accuracy,
)
from legibility.records import Trace


def width(iv) -> float:
    return iv.high - iv.low


def test_cluster_weights_resample_every_cluster_count():
    ws = np.concatenate(list(cluster_weights(7, 50, np.random.default_rng(0))))
    assert ws.shape == (50, 7)
    assert np.all(ws.sum(axis=1) == 7)


def test_clustered_mean_estimate_inside_interval_and_reproducible():
    rng = np.random.default_rng(1)
    v = rng.random(200) < 0.7
    q = np.repeat(np.arange(50), 4)
    a = clustered_mean(v, q, seed=3)
    assert a.estimate == pytest.approx(v.mean())
    assert a.low <= a.estimate <= a.high
    assert (a.n, a.n_clusters) == (200, 50)
    assert a == clustered_mean(v, q, seed=3)


def test_clustered_interval_narrows_with_more_questions():
    rng = np.random.default_rng(2)
    small, big = rng.random(40) < 0.5, rng.random(4000) < 0.5
    w_small = width(clustered_mean(small, np.arange(40)))
    w_big = width(clustered_mean(big, np.arange(4000)))
    assert w_big < w_small / 5  # sqrt(100) = 10 in theory


def test_clustered_bootstrap_wider_than_iid_when_samples_of_a_question_agree():
    # 30 questions x 8 identical samples: the information is 30 verdicts, not 240
    per_q = np.random.default_rng(3).random(30) < 0.5
    v, q = np.repeat(per_q, 8), np.repeat(np.arange(30), 8)
    clustered, iid = clustered_mean(v, q), clustered_mean(v, None)
    assert clustered.estimate == iid.estimate
    assert width(clustered) > 2 * width(iid)  # sqrt(8) ~ 2.8 in theory


def test_accuracy_by_group_clusters_by_question():
    correct = [1, 1, 0, 0, 1, 1, 1, 0]
    questions = ["q1", "q1", "q2", "q2", "q1", "q1", "q2", "q2"]
    groups = ["b", "b", "b", "b", "a", "a", "a", "a"]
    a, b = accuracy_by_group(correct, questions, groups, n_boot=500)
    assert (a.group, a.accuracy, a.n_samples, a.n_questions) == ("a", 0.75, 4, 2)
    assert (b.group, b.accuracy) == ("b", 0.5)
    # two questions: a replicate draws q1 twice (1.0), q2 twice (0.0) or both (0.5)
    assert (b.low, b.high) == (0.0, 1.0)


def make_trace(gen: str, pid: str, k: int, correct: bool, strict: bool | None = None) -> Trace:
    return Trace(
        id=f"{gen}/{pid}/{k}", problem_id=pid, benchmark="math", generator=gen, reasoning="r", answer_text="a",
        correct=correct, correct_strict=strict,
    )  # fmt: skip


def test_trace_accuracy_groups_by_generator_and_strict_needs_verdicts():
    ts = [make_trace("g1", "p1", 0, True, False), make_trace("g1", "p2", 0, False, False)]
    ts += [make_trace("g2", "p1", 0, True, True)]
    g1, g2 = trace_accuracy(ts, n_boot=100)
    assert (g1.group, g1.accuracy, g2.accuracy) == ("g1", 0.5, 1.0)
    assert trace_accuracy(ts, strict=True, n_boot=100)[0].accuracy == 0.0
    with pytest.raises(LegibilityError, match="strict"):
        trace_accuracy([*ts, make_trace("g2", "p2", 0, True, None)], strict=True)


def test_paired_mcnemar_for_one_sample_per_question():
    # A right and B wrong on 6 questions, both wrong on 4: exact McNemar p = 2 * 0.5**6 = 0.03125
    a = [1] * 6 + [0] * 4
    b = [0] * 10
    q = list(range(10))
    r = compare_paired(a, q, b, q)
    assert r.test == "mcnemar-exact"
    assert r.discordant == (6, 0)
    assert r.difference == pytest.approx(0.6)
    assert r.p_value == pytest.approx(0.03125)
    assert r.low <= r.difference <= r.high


def test_paired_permutation_with_k_samples_per_question():
    # per-question accuracies A: 1, 1, 0, 0; B: .5, .5, 0, 0 -> d = .5, .5, 0, 0, mean .25.
    # exact sign flips: only ++ and -- reach |mean| >= .25 among the 4 patterns of the nonzero d: p = 0.5
    qs = ["q1", "q1", "q2", "q2", "q3", "q3", "q4", "q4"]
    a = [1, 1, 1, 1, 0, 0, 0, 0]
    b = [1, 0, 1, 0, 0, 0, 0, 0]
    r = compare_paired(a, qs, b, qs)
    assert r.test == "sign-flip permutation"
    assert (r.accuracy_a, r.accuracy_b, r.difference) == (0.5, 0.25, 0.25)
    assert r.p_value == pytest.approx(0.5)
    assert r.n_questions == 4


def test_paired_uses_shared_questions_and_identical_arms_give_p_one():
    r = compare_paired([1, 0, 1], ["q1", "q2", "q3"], [1, 0], ["q1", "q2"])
    assert (r.n_questions, r.n_only_a, r.n_only_b, r.difference, r.p_value) == (2, 1, 0, 0.0, 1.0)
    with pytest.raises(LegibilityError, match="share no question"):
        compare_paired([1], ["x"], [1], ["y"])


def test_auroc_known_values_and_ties():
    assert auroc([2, 3, 4], [0, 1]) == 1.0
    assert auroc([0, 1], [2, 3, 4]) == 0.0
    assert auroc([1, 1, 1], [1, 1]) == 0.5
    assert auroc([1, 2], [1]) == pytest.approx(0.75)  # (0.5 tie + 1 win) / 2


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(4)
    s = rng.integers(0, 5, 300).astype(float)
    y = rng.random(300) < 0.4
    s[y] += 1
    ci = auroc_ci(s, y, n_boot=200)
    assert ci.auroc == pytest.approx(roc_auc_score(y, s))
    assert ci.low <= ci.auroc <= ci.high


def test_auroc_ci_narrows_with_n():
    rng = np.random.default_rng(5)

    def draw(n: int):
        y = np.arange(n) % 2 == 0
        return rng.normal(size=n) + y, y

    small, big = auroc_ci(*draw(40)), auroc_ci(*draw(4000))
    assert big.high - big.low < (small.high - small.low) / 4


def test_auroc_clustered_by_trace_wider_than_iid():
    # each trace: an intact score and 5 identical corrupted copies, so rows within a trace are one draw
    rng = np.random.default_rng(6)
    intact, corrupt = rng.normal(size=40) + 0.5, rng.normal(size=40)
    scores = np.concatenate([np.repeat(intact, 5), np.repeat(corrupt, 5)])
    positive = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    trace = np.r_[np.repeat(np.arange(40), 5), np.repeat(np.arange(40), 5)]
    clustered, iid = auroc_ci(scores, positive, trace), auroc_ci(scores, positive, None)
    assert clustered.auroc == iid.auroc
    assert (clustered.n_clusters, iid.n_clusters) == (40, 400)
    assert clustered.high - clustered.low > 1.5 * (iid.high - iid.low)


def test_auroc_rejects_one_sided_input():
    with pytest.raises(LegibilityError):
        auroc([1.0], [])


def test_one_cluster_has_no_interval():
    """One trace (or question) resampled gives every replicate equal to the estimate: a zero-width interval
    would claim certainty, so the bounds are nan; two clusters already give a real interval."""
    one = auroc_ci([3.0, 1.0, 2.0], [True, False, False], ["t", "t", "t"], n_boot=200)
    assert one.auroc == 1.0 and np.isnan(one.low) and np.isnan(one.high)
    mean = clustered_mean([1.0, 0.0, 1.0], ["q", "q", "q"], n_boot=200)
    assert mean.estimate == pytest.approx(2 / 3) and np.isnan(mean.low) and np.isnan(mean.high)
    two = auroc_ci([3.0, 1.0, 0.5, 2.0], [True, False, True, False], ["a", "a", "b", "b"], n_boot=200)
    assert two.low < two.high


# ------------------------------------------------------------------ endpoints pinned to independent references
# The tests above check only low <= estimate <= high and relative widths, which a wrong level (a 90% interval)
# or a bootstrap of the wrong quantity passes. These pin the endpoints: (1) to a brute-force bootstrap that
# draws the same cluster counts from the same seeded generator, one replicate at a time, rebuilds each resampled
# data set row by row and computes the statistic from scratch; (2) to scipy.stats.bootstrap (percentile method,
# iid rows, its own generator: a Monte Carlo tolerance); (3) to analytic standard errors at large n.


def quantile(xs: list[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default, written out)."""
    s = sorted(xs)
    h = (len(s) - 1) * q
    k = int(h)
    return s[k] + (h - k) * (s[min(k + 1, len(s) - 1)] - s[k])


def first_seen(labels) -> list:
    """Distinct labels in order of first appearance (the order the bootstrap numbers its clusters)."""
    return list(dict.fromkeys(labels))


def brute_replicates(n_clusters: int, n_boot: int, seed: int, stat) -> list[float]:
    """stat(list of drawn cluster indices, with repeats) for each replicate, drawing the counts one replicate at
    a time from default_rng(seed) as the code does in batches (numpy draws the same stream either way)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        counts = rng.multinomial(n_clusters, [1 / n_clusters] * n_clusters)
        drawn = [k for k in range(n_clusters) for _ in range(counts[k])]
        out.append(stat(drawn))
    return out


def brute_interval(reps: list[float], level: float = 0.95) -> tuple[float, float]:
    finite = [r for r in reps if np.isfinite(r)]
    return quantile(finite, (1 - level) / 2), quantile(finite, (1 + level) / 2)


def test_clustered_mean_endpoints_match_a_brute_force_bootstrap():
    rng = np.random.default_rng(10)
    sizes = rng.integers(1, 6, 25)  # clusters of different sizes weigh by size
    clusters = [f"q{(7 * k) % 25}" for k, n in enumerate(sizes) for _ in range(n)]  # not in sorted order
    values = list(rng.random(len(clusters)))
    order = first_seen(clusters)
    rows = {c: [v for v, cc in zip(values, clusters, strict=True) if cc == c] for c in order}

    def mean(drawn: list[int]) -> float:
        pool = [v for k in drawn for v in rows[order[k]]]
        return sum(pool) / len(pool)

    for level in (0.95, 0.8):
        iv = clustered_mean(values, clusters, n_boot=400, seed=11, level=level)
        lo, hi = brute_interval(brute_replicates(len(order), 400, 11, mean), level)
        assert (iv.low, iv.high) == pytest.approx((lo, hi), abs=1e-12), level


def test_auroc_ci_endpoints_match_a_brute_force_bootstrap():
    rng = np.random.default_rng(12)
    n_traces = 20  # each trace: one intact score (positive) and 1 to 3 corrupted copies, some tied
    scores, positive, trace = [], [], []
    for t in range(n_traces):
        for j in range(1 + rng.integers(1, 4)):
            scores.append(float(rng.integers(0, 6) + (j == 0)))
            positive.append(j == 0)
            trace.append(f"t{(3 * t) % n_traces}")
    order = first_seen(trace)
    rows = {c: [(s, p) for s, p, cc in zip(scores, positive, trace, strict=True) if cc == c] for c in order}

    def auc(drawn: list[int]) -> float:
        pool = [r for k in drawn for r in rows[order[k]]]
        pos = [s for s, p in pool if p]
        neg = [s for s, p in pool if not p]
        wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
        return wins / (len(pos) * len(neg))

    ci = auroc_ci(scores, positive, trace, n_boot=300, seed=13)
    lo, hi = brute_interval(brute_replicates(len(order), 300, 13, auc))
    assert ci.auroc == pytest.approx(auc(list(range(len(order)))), abs=1e-12)
    assert (ci.low, ci.high) == pytest.approx((lo, hi), abs=1e-12)


def test_compare_paired_endpoints_match_a_brute_force_paired_bootstrap():
    # K samples per question, different K in the two arms; A has two questions B lacks (left out)
    rng = np.random.default_rng(14)
    qa = [f"q{k}" for k in (3, 1, 4, 0, 2, 9, 8, 5, 6, 7, 10, 11) for _ in range(3)]
    qb = [f"q{k}" for k in range(10) for _ in range(2)]
    a, b = list(rng.random(len(qa)) < 0.7), list(rng.random(len(qb)) < 0.4)
    shared = [q for q in first_seen(qa) if q in set(qb)]

    def acc(verdicts: list[bool], qs: list[str], q: str) -> float:
        own = [float(v) for v, x in zip(verdicts, qs, strict=True) if x == q]
        return sum(own) / len(own)

    per_q = {q: (acc(a, qa, q), acc(b, qb, q)) for q in shared}

    def diff(drawn: list[int]) -> float:  # mean over drawn questions of A's accuracy, minus B's on the same ones
        return sum(per_q[shared[k]][0] for k in drawn) / len(drawn) - sum(per_q[shared[k]][1] for k in drawn) / len(
            drawn
        )

    r = compare_paired(a, qa, b, qb, n_boot=500, seed=15, n_permutations=50)
    lo, hi = brute_interval(brute_replicates(len(shared), 500, 15, diff))
    assert r.n_questions == len(shared) == 10
    assert r.difference == pytest.approx(diff(list(range(len(shared)))), abs=1e-12)
    assert (r.low, r.high) == pytest.approx((lo, hi), abs=1e-12)


# scipy.stats.bootstrap draws rows with its own generator: the endpoints agree up to Monte Carlo error, which
# with 20000 replicates each is about 0.02 standard errors of the statistic; the tolerance is 0.1 of one.
SCIPY_REPS = 20_000


def assert_close_to_scipy(interval: tuple[float, float], data: tuple, statistic, paired: bool = False) -> None:
    ref = sps.bootstrap(
        data, statistic, n_resamples=SCIPY_REPS, method="percentile", paired=paired, vectorized=True,
        confidence_level=0.95, rng=np.random.default_rng(99),
    )  # fmt: skip
    se = ref.standard_error
    lo, hi = ref.confidence_interval
    assert interval == pytest.approx((lo, hi), abs=0.1 * se), (interval, (lo, hi), se)


def test_iid_clustered_mean_agrees_with_scipy_bootstrap():
    v = np.random.default_rng(16).normal(size=300)
    iv = clustered_mean(v, None, n_boot=SCIPY_REPS, seed=17)
    assert_close_to_scipy((iv.low, iv.high), (v,), lambda x, axis: np.mean(x, axis=axis))


def test_iid_auroc_ci_agrees_with_scipy_bootstrap():
    rng = np.random.default_rng(18)
    y = rng.random(300) < 0.4
    s = rng.normal(size=300) + 0.8 * y

    def auc(scores, labels, axis):  # Mann-Whitney U from average ranks, one resample per row
        ranks = sps.rankdata(scores, axis=axis)
        n_pos = labels.sum(axis=axis)
        u = (ranks * labels).sum(axis=axis) - n_pos * (n_pos + 1) / 2
        return u / (n_pos * (labels.shape[axis] - n_pos))

    ci = auroc_ci(s, y, None, n_boot=SCIPY_REPS, seed=19)
    assert ci.auroc == pytest.approx(auc(s, y, 0), abs=1e-12)
    assert_close_to_scipy((ci.low, ci.high), (s, y.astype(float)), auc, paired=True)


def test_paired_difference_agrees_with_scipy_paired_bootstrap():
    rng = np.random.default_rng(20)
    a, b = rng.random(300) < 0.6, rng.random(300) < 0.45
    q = list(range(300))
    r = compare_paired(a, q, b, q, n_boot=SCIPY_REPS, seed=21)
    assert_close_to_scipy(
        (r.low, r.high), (a.astype(float), b.astype(float)), lambda x, y, axis: np.mean(x - y, axis=axis), paired=True
    )


# At large n the bootstrap distribution is close to normal, so a 95% interval is about estimate +- 1.96 SE.
# The tolerance, 10% of the half-width, sits between Monte Carlo noise (a few %) and what a 90% interval gives
# (1.645 / 1.96: 16% too narrow).
def half_width(low: float, high: float) -> float:
    return (high - low) / 2


def test_proportion_interval_half_width_is_1_96_binomial_se():
    rng = np.random.default_rng(22)
    n, g = 4000, 800
    v = rng.random(n) < 0.3
    iv = clustered_mean(v, None, n_boot=5000, seed=23)
    p = v.mean()
    assert half_width(iv.low, iv.high) == pytest.approx(1.96 * np.sqrt(p * (1 - p) / n), rel=0.1)
    # 800 questions x 5 identical samples: the binomial SE of 800 verdicts, not 4000
    per_q = rng.random(g) < 0.3
    iv = clustered_mean(np.repeat(per_q, 5), np.repeat(np.arange(g), 5), n_boot=5000, seed=24)
    p = per_q.mean()
    assert half_width(iv.low, iv.high) == pytest.approx(1.96 * np.sqrt(p * (1 - p) / g), rel=0.1)


def test_paired_interval_half_width_is_1_96_se_of_the_mean_difference():
    rng = np.random.default_rng(25)
    n = 3000
    a = rng.random(n) < 0.6
    b = np.where(rng.random(n) < 0.7, a, rng.random(n) < 0.5)  # correlated arms: pairing narrows the interval
    r = compare_paired(a, list(range(n)), b, list(range(n)), n_boot=5000, seed=26)
    d = a.astype(float) - b.astype(float)
    se_paired = np.sqrt(d.var() / n)
    se_unpaired = np.sqrt(a.var() / n + b.var() / n)
    assert se_paired < 0.8 * se_unpaired  # the test can tell a bootstrap that ignores the pairing
    assert half_width(r.low, r.high) == pytest.approx(1.96 * se_paired, rel=0.1)
    assert (r.low + r.high) / 2 == pytest.approx(d.mean(), abs=0.2 * se_paired)


def hanley_mcneil_se(a: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982), Radiology 143:29-36, equation 2."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return float(np.sqrt((a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)))


def test_auroc_interval_half_width_is_1_96_hanley_mcneil_se():
    rng = np.random.default_rng(27)
    n = 4000
    y = np.arange(n) % 2 == 0
    s = rng.exponential(size=n) * np.where(y, 2.0, 1.0)  # exponential scores: the model Hanley-McNeil assumes
    ci = auroc_ci(s, y, None, n_boot=5000, seed=28)
    se = hanley_mcneil_se(ci.auroc, int(y.sum()), int((~y).sum()))
    assert half_width(ci.low, ci.high) == pytest.approx(1.96 * se, rel=0.1)
