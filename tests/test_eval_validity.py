"""Metric validity against the corruptions: AUROC of intact above corrupted, per transform, on known cases."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from legibility.errors import LegibilityError
from legibility.evaluate.validity import (
    INTACT,
    STRENGTHS,
    TRANSFORM_STRENGTH,
    MetricValue,
    checks_frame,
    validate,
    validity_table,
)
from legibility.transforms import TRANSFORMS


def records(metric, intact, corrupted, transform="sentence_shuffle", higher=True):
    rows = [MetricValue(f"t{i}", INTACT, v, metric, higher) for i, v in enumerate(intact)]
    rows += [MetricValue(f"t{i}", transform, v, metric, higher) for i, v in enumerate(corrupted)]
    return rows


def test_strengths_cover_exactly_the_nine_transforms():
    assert set(TRANSFORM_STRENGTH) == set(TRANSFORMS)
    assert set(TRANSFORM_STRENGTH.values()) <= set(STRENGTHS)


def test_strengths_are_the_reference_cards_word_for_word():
    # the reference model card's labels, all nine, exactly (not a reading of them)
    assert TRANSFORM_STRENGTH == {
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
    assert STRENGTHS == ("Strong", "Moderate-Strong", "Moderate", "Weak-Moderate")


def test_readme_quotes_the_same_strengths():
    text = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    quoted = {
        t: grade
        for grade, names in re.findall(r"(Strong|Moderate-Strong|Moderate|Weak-Moderate): ((?:`\w+`(?:, )?)+)", text)
        for t in re.findall(r"`(\w+)`", names)
    }
    assert quoted == TRANSFORM_STRENGTH


def test_perfect_reversed_and_blind_metrics():
    perfect = validate(records("m", [1.0] * 5, [0.0] * 5), n_boot=200)[0]
    assert (perfect.auroc, perfect.low, perfect.high, perfect.paired_win_rate) == (1.0, 1.0, 1.0, 1.0)
    assert (perfect.n_traces, perfect.n_corrupted, perfect.strength) == (5, 5, "Moderate")
    # the same values for a metric where lower means more legible: backwards
    reversed_ = validate(records("m", [1.0] * 5, [0.0] * 5, higher=False), n_boot=200)[0]
    assert reversed_.auroc == 0.0 and reversed_.paired_win_rate == 0.0
    blind = validate(records("m", [0.3] * 5, [0.3] * 5), n_boot=200)[0]
    assert blind.auroc == 0.5 and blind.paired_win_rate == 0.5


def test_interval_contains_estimate_and_narrows_with_traces():
    rng = np.random.default_rng(0)

    def check(n):
        return validate(records("m", rng.normal(size=n) + 0.7, rng.normal(size=n)))[0]

    small, big = check(30), check(3000)
    assert small.low <= small.auroc <= small.high
    assert big.low <= big.auroc <= big.high
    assert big.high - big.low < (small.high - small.low) / 4


def test_several_corrupted_copies_share_their_trace_and_unpaired_are_counted():
    rows = records("m", [2.0, 3.0], [1.0, 4.0])  # t0: 2 > 1 wins, t1: 3 < 4 loses
    rows += [MetricValue("t0", "sentence_shuffle", 0.0, "m"), MetricValue("t9", "sentence_shuffle", 9.0, "m")]
    c = validate(rows, n_boot=200)[0]
    # intact {2, 3} vs corrupted {1, 4, 0}: wins 2>1, 2>0, 3>1, 3>0 = 4 of 6
    assert c.auroc == pytest.approx(4 / 6)
    assert c.paired_win_rate == pytest.approx(2 / 3)  # t0 beats 1 and 0, t1 loses to 4
    assert (c.n_traces, c.n_corrupted, c.n_unpaired) == (2, 3, 1)


def test_table_is_metric_by_transform_ordered_by_strength():
    rows = records("len", [1.0, 2.0], [0.0, 0.0], "adjacent_swap")
    rows += [MetricValue("t0", "cross_substitution", -1.0, "len"), MetricValue("t1", "cross_substitution", 5.0, "len")]
    rows += records("judge", [0.9, 0.8], [0.1, 0.2], "adjacent_swap")
    checks = validate(rows, n_boot=100)
    table = validity_table(checks)
    assert list(table.index) == ["judge", "len"]
    assert list(table.columns) == ["cross_substitution", "adjacent_swap"]  # Strong before Moderate
    assert table.loc["len", "cross_substitution"] == pytest.approx(0.5)
    assert np.isnan(table.loc["judge", "cross_substitution"])
    assert len(checks_frame(checks)) == 3
    assert validity_table(checks, "n_traces").loc["judge", "adjacent_swap"] == 2


def test_table_orders_all_nine_by_the_cards_strength_then_name():
    rows = [MetricValue("t0", INTACT, 1.0, "m"), *(MetricValue("t0", t, 0.0, "m") for t in sorted(TRANSFORMS))]
    assert list(validity_table(validate(rows, n_boot=10)).columns) == [
        "cross_substitution", "donor_splice_25",  # Strong
        "distractor_injection", "donor_splice_50",  # Moderate-Strong
        "adjacent_swap", "sentence_deletion_30", "sentence_reversal", "sentence_shuffle",  # Moderate
        "number_substitution",  # Weak-Moderate
    ]  # fmt: skip


def test_inconsistent_direction_or_nan_is_an_error():
    rows = [*records("m", [1.0], [0.0]), MetricValue("t2", INTACT, 1.0, "m", False)]
    with pytest.raises(LegibilityError, match="higher_is_more_legible"):
        validate(rows)
    with pytest.raises(LegibilityError, match="NaN"):
        validate(records("m", [1.0], [float("nan")]))
