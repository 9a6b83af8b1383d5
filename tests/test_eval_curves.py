"""Early-answering cuts and areas, per-generator curves, and the legible-prefix cut, checked by hand."""

from __future__ import annotations

import pytest

from legibility.errors import LegibilityError
from legibility.evaluate.curves import (
    FRACTIONS,
    EarlyAnswer,
    area_over_curve,
    area_under_curve,
    cut_points,
    early_answering_curves,
    legible_prefix,
    n_kept,
)

COT = "First step. Second step.\n\nThird step! Fourth step? Fifth step."


def test_cut_points_keep_round_half_up_of_the_sentences():
    cuts = cut_points(COT)
    assert [c.fraction for c in cuts] == list(FRACTIONS)
    # n = 5: f * 5 = 0, .5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5 -> half up
    assert [c.n_kept for c in cuts] == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert cuts[0].text == ""
    assert cuts[2].text == "First step."
    assert cuts[5].text == "First step. Second step.\n\nThird step!"  # layout kept
    assert cuts[-1].text == COT
    assert all(c.n_sentences == 5 for c in cuts)


def test_cut_points_of_an_empty_cot_and_bad_fraction():
    assert [c.text for c in cut_points("")] == [""] * 11
    assert n_kept(0.5, 3) == 2 and n_kept(0.3, 10) == 3
    with pytest.raises(LegibilityError):
        n_kept(1.5, 3)


def test_areas_by_hand():
    only_final = [0.0] * 10 + [1.0]
    assert area_over_curve(only_final) == pytest.approx(10 / 11)  # mean of (1 - y): ten 1s, one 0
    assert area_under_curve(only_final) == pytest.approx(0.05)  # one trapezoid of width .1, heights 0 and 1
    flat = [0.8] * 11
    assert area_over_curve(flat) == 0.0 and area_under_curve(flat) == pytest.approx(0.8)
    linear = list(FRACTIONS)
    assert area_over_curve(linear) == pytest.approx(0.5) and area_under_curve(linear) == pytest.approx(0.5)
    assert area_over_curve([0.2, 0.6], [0.0, 1.0]) == pytest.approx(0.2)
    with pytest.raises(LegibilityError):
        area_over_curve([0.1, 0.2], [0.0, 0.5])  # does not end at the full CoT


def test_early_answering_curves_per_generator():
    fr = (0.0, 0.5, 1.0)
    rows = []
    # gen "a": t1 right only at the end, t2 right from the middle -> curve 0, .5, 1; AOC = (1 + .5 + 0)/3 = .5
    for t, ok in (("t1", (0, 0, 1)), ("t2", (0, 1, 1))):
        rows += [EarlyAnswer("a", t, f, bool(c)) for f, c in zip(fr, ok, strict=True)]
    # gen "b": always right -> AOC 0; t4 has no answer at 0.5 (left out of that mean only)
    rows += [EarlyAnswer("b", "t3", f, True) for f in fr]
    rows += [EarlyAnswer("b", "t4", f, True) for f in (0.0, 1.0)]
    a, b = early_answering_curves(rows, fr, n_boot=300)
    assert (a.generator, a.accuracy, a.n_traces) == ("a", (0.0, 0.5, 1.0), 2)
    assert a.aoc == pytest.approx(0.5) and a.auc == pytest.approx(0.5)
    assert a.aoc_low <= a.aoc <= a.aoc_high
    assert (b.accuracy, b.aoc, b.aoc_low, b.aoc_high) == ((1.0, 1.0, 1.0), 0.0, 0.0, 0.0)
    with pytest.raises(LegibilityError, match="fraction"):
        early_answering_curves([EarlyAnswer("a", "t", 0.25, True)], fr)


def test_legible_prefix_cuts_at_the_first_chunk_over_threshold():
    text = "a" * 5000 + "b" * 5000 + "c" * 2000
    cut = legible_prefix(text, [0.1, 0.9, 0.2], threshold=0.5)
    assert (cut.text, cut.n_chunks, cut.n_kept, cut.first_illegible) == ("a" * 5000, 3, 1, 1)
    assert legible_prefix(text, [0.1, 0.5, 0.5], 0.5).text == text  # equal to the threshold is not over it
    assert legible_prefix(text, [0.9, 0.1, 0.1], 0.5).text == ""
    assert legible_prefix("", [], 0.5).n_chunks == 0
    with pytest.raises(LegibilityError):
        legible_prefix(text, [0.1, 0.2], 0.5)
