"""Clustered bootstrap accuracy, paired generator comparisons and AUROC on cases known by hand."""

from __future__ import annotations

import numpy as np
import pytest
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
