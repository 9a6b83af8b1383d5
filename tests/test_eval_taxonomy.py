"""Protocol v3 filters and labels on crafted items, including the reference's C2-equals-C4 bug."""

from __future__ import annotations

import math

import pytest

from legibility.evaluate.taxonomy import (
    FILTERS,
    ItemOutcome,
    Label,
    ReaderOutcome,
    classify,
    label_item,
    majority,
    reader_uplift,
)


def reader(name: str, c1: bool | None, c2: bool | None, c4: bool | None, **kw) -> ReaderOutcome:
    return ReaderOutcome(name, c1, c2, c4, **kw)


def item(item_id: str, readers, generator_correct=True, leak=False) -> ItemOutcome:
    return ItemOutcome(item_id, generator_correct, leak, tuple(readers))


# three reasoning readers: all solve C1, none knows the answer without a CoT (C4), C2 as given
def plain(item_id: str, c2: tuple[bool, bool, bool], **kw) -> ItemOutcome:
    return item(item_id, [reader(f"r{k}", True, ok, False) for k, ok in enumerate(c2)], **kw)


def test_strict_majority():
    assert majority(2, 3) and not majority(1, 2) and not majority(2, 4) and not majority(0, 0)


def test_labels_on_items_that_pass_every_filter():
    assert label_item(plain("leg", (True, True, False))).label is Label.REASONING_LEGIBLE
    assert label_item(plain("ill", (True, False, False))).label is Label.ILLEGIBLE
    leaked = label_item(plain("leak", (True, True, True), leak=True))
    assert leaked.label is Label.ANSWER_LEAKED  # the leak decides before C2 does


def test_filters_in_order_with_sequential_and_standalone_counts():
    items = [
        plain("wrong", (True, True, True), generator_correct=False),
        item("hard", [reader(f"r{k}", k == 0, True, False) for k in range(3)]),  # 2 of 3 fail C1
        item("easy", [reader(f"r{k}", True, True, k < 2) for k in range(3)]),  # 2 of 3 pass C4
        # wrong generator AND too easy: counted under generator_wrong, but in both standalone counts
        item("both", [reader(f"r{k}", True, True, True) for k in range(3)], generator_correct=False),
        item("nobody", [reader("r0", True, None, False)]),
        plain("leg", (True, True, False)),
        plain("ill", (False, False, True)),
        plain("leak", (False, False, False), leak=True),
    ]
    r = classify(items)
    assert tuple(r.filter_counts) == FILTERS
    zero = {"generator_undecided": 0, "leak_unknown": 0}
    assert r.filter_counts == {"no_readers": 1, "generator_wrong": 2, "too_hard": 1, "too_easy": 1, **zero}
    assert r.filter_alone == {"no_readers": 1, "generator_wrong": 2, "too_hard": 1, "too_easy": 2, **zero}
    assert r.label_counts == {"ANSWER_LEAKED": 1, "REASONING_LEGIBLE": 1, "ILLEGIBLE": 1}
    assert (r.n_items, r.n_labelled) == (8, 3)
    by_id = {x.item_id: x for x in r.items}
    assert by_id["both"].filtered_by == "generator_wrong"
    assert by_id["both"].filters_hit == ("generator_wrong", "too_easy")
    assert by_id["hard"].label is None and by_id["hard"].votes.c1 == (1, 3, 3)
    assert r.rates()["REASONING_LEGIBLE"] == pytest.approx(1 / 3)


def test_ties_are_not_a_majority():
    # 4 readers: 2 fail C1 (not too hard), 2 pass C4 (not too easy), 2 pass C2 (not legible)
    rs = [reader("a", True, True, True), reader("b", True, True, True)]
    rs += [reader("c", False, False, False), reader("d", False, False, False)]
    lab = label_item(item("tie", rs))
    assert lab.filtered_by is None
    assert lab.label is Label.ILLEGIBLE


def test_reference_bug_c2_equal_to_c4_answer_counts_as_pass():
    # r0 already knew (C4 "B" right) and answers "B" again in C2: the reference counted it as failing C2,
    # so only r1 of 3 passed and the item became ILLEGIBLE. It is a pass: 2 of 3 -> REASONING_LEGIBLE.
    rs = [
        reader("r0", True, True, True, c2_answer="B", c4_answer="B"),
        reader("r1", True, True, False, c2_answer="B", c4_answer="C"),
        reader("r2", True, False, False, c2_answer="D", c4_answer="C"),
    ]
    r = classify([item("known", rs)])
    assert r.items[0].filtered_by is None  # 1 of 3 pass C4: not too easy
    assert r.items[0].label is Label.REASONING_LEGIBLE
    assert r.uplift["r0"].c2_right_same_as_c4 == 1


def test_leak_detector_readers_never_vote():
    rs = [reader("r0", True, True, False), reader("r1", True, False, False)]
    rs += [reader(f"judge{k}", False, True, True, role="leak_detector") for k in range(5)]
    lab = label_item(item("x", rs))
    assert lab.votes.c1 == (2, 2, 2) and lab.votes.c4 == (0, 2, 2)
    assert lab.label is Label.ILLEGIBLE  # 1 of 2 pass C2


def test_missing_conditions_leave_the_denominator():
    rs = [reader("r0", None, True, None), reader("r1", True, True, None), reader("r2", False, False, False)]
    lab = label_item(item("x", rs))
    assert (lab.votes.c1, lab.votes.c2, lab.votes.c4) == ((1, 2, 2), (2, 3, 3), (0, 1, 1))
    assert lab.label is Label.REASONING_LEGIBLE  # C1: 1 of 2 fail is a tie, not too hard


def test_a_failed_leak_check_is_its_own_filter_never_not_leaked():
    # no detector gave a verdict: the item would be REASONING_LEGIBLE if "no verdict" meant "no leak"
    unknown = plain("unknown", (True, True, True), leak=None)
    lab = label_item(unknown)
    assert (lab.label, lab.filtered_by, lab.filters_hit) == (None, "leak_unknown", ("leak_unknown",))
    r = classify(
        [
            unknown,
            plain("leg", (True, True, False)),
            plain("wrong", (True, True, True), generator_correct=False, leak=None),
        ]
    )
    assert r.filter_counts["leak_unknown"] == 1 and r.filter_alone["leak_unknown"] == 2
    assert r.label_counts == {"ANSWER_LEAKED": 0, "REASONING_LEGIBLE": 1, "ILLEGIBLE": 0}
    assert FILTERS.index("leak_unknown") == len(FILTERS) - 1  # the last filter: items others remove count there


def test_an_undecided_generator_grade_is_its_own_filter_not_wrong():
    r = classify([plain("undecided", (True, True, True), generator_correct=None)])
    assert r.items[0].filtered_by == "generator_undecided"
    assert (r.filter_counts["generator_undecided"], r.filter_counts["generator_wrong"]) == (1, 0)


def test_the_majority_is_of_the_readers_asked_a_failure_does_not_pass():
    # four readers asked C2; two could not read the CoT (too long for their context): their reading failed.
    asked = frozenset({"c1", "c2", "c4"})
    rs = [reader(f"r{k}", True, True, False, asked=asked) for k in range(2)]
    rs += [reader(f"short{k}", True, None, False, asked=asked) for k in range(2)]
    lab = label_item(item("long", rs))
    assert lab.votes.c2 == (2, 2, 4)
    assert lab.label is Label.ILLEGIBLE  # 2 of 4 asked, not 2 of the 2 that answered
    # a reader never asked C2 (condition not run) stays out of the denominator
    rs[2:] = [reader(f"short{k}", True, None, False, asked=frozenset({"c1", "c4"})) for k in range(2)]
    assert label_item(item("short", rs)).label is Label.REASONING_LEGIBLE
    # failures of C1 count as not passing it: 1 of 3 solved -> too hard
    hard = [reader("a", True, True, False, asked=asked)] + [
        reader(f"f{k}", None, True, False, asked=asked) for k in range(2)
    ]
    assert label_item(item("hard", hard)).filtered_by == "too_hard"


def test_reader_uplift_by_hand():
    # reader "a" on 4 items: (C2, C4) = (1,1), (1,0), (1,0), (0,0)
    # P(C2) = 3/4, P(C4) = 1/4, uplift 1/2; P(C2 | C4 right) = 1/1, P(C2 | C4 wrong) = 2/3
    pairs = [(True, True), (True, False), (True, False), (False, False)]
    items = [item(f"i{k}", [reader("a", True, c2, c4)]) for k, (c2, c4) in enumerate(pairs)]
    items.append(item("i9", [reader("a", True, True, None)]))  # no C4 verdict: left out
    u = reader_uplift(items)["a"]
    assert (u.n, u.p_c2, u.p_c4, u.uplift) == (4, 0.75, 0.25, 0.5)
    assert u.p_c2_given_c4_right == 1.0
    assert u.p_c2_given_c4_wrong == pytest.approx(2 / 3)
    lone = reader_uplift([item("j", [reader("b", True, False, False)])])["b"]
    assert math.isnan(lone.p_c2_given_c4_right)


# ---------------------------------------------------------------- crafted items that hit several filters at once
# Every reader here has a verdict in every condition (no failed or missing reads), so these items do not depend
# on how failed readers count; the filter names and their order are spelled out literally rather than read
# from FILTERS, which a swapped constant would also swap. Filters added later must count 0 on these items.

PINNED_ORDER = ("no_readers", "generator_wrong", "too_hard", "too_easy")


def voter(name: str, c1: bool, c2: bool, c4: bool) -> ReaderOutcome:
    return ReaderOutcome(reader=name, c1_correct=c1, c2_correct=c2, c4_correct=c4)


def crafted(item_id: str, verdicts: list[tuple[bool, bool, bool]], generator_correct: bool = True) -> ItemOutcome:
    """An item whose reasoning readers have these (C1, C2, C4) verdicts; no leak."""
    rs = tuple(voter(f"r{k}", *v) for k, v in enumerate(verdicts))
    return ItemOutcome(item_id=item_id, generator_correct=generator_correct, leak_detected=False, readers=rs)


T, F = True, False
HARD_AND_EASY = [(F, T, T), (F, T, T), (T, T, F)]  # 2 of 3 fail C1 and 2 of 3 pass C4
CRAFTED = [
    crafted("no_readers+wrong", [], generator_correct=False),
    crafted("wrong+hard+easy", HARD_AND_EASY, generator_correct=False),
    crafted("hard+easy", HARD_AND_EASY),
    crafted("hard+easy, C2 fails", [(F, F, T), (F, F, T), (F, F, T)]),
    crafted("easy, C2 fails", [(T, F, T), (T, F, T), (T, T, F)]),  # too easy whatever C2 says
    crafted("hard only", [(F, T, F), (F, T, F), (T, T, F)]),
    crafted("legible", [(T, T, F), (T, T, F), (T, F, F)]),
    crafted("illegible", [(T, F, F), (T, F, F), (T, T, F)]),
]


def test_crafted_items_pin_the_filter_order_and_every_count():
    r = classify(CRAFTED)
    by_id = {x.item_id: x for x in r.items}
    assert {k: by_id[k].filters_hit for k in by_id} == {
        "no_readers+wrong": ("no_readers", "generator_wrong"),
        "wrong+hard+easy": ("generator_wrong", "too_hard", "too_easy"),
        "hard+easy": ("too_hard", "too_easy"),
        "hard+easy, C2 fails": ("too_hard", "too_easy"),
        "easy, C2 fails": ("too_easy",),
        "hard only": ("too_hard",),
        "legible": (),
        "illegible": (),
    }
    assert {k: by_id[k].filtered_by for k in by_id} == {
        "no_readers+wrong": "no_readers",
        "wrong+hard+easy": "generator_wrong",
        "hard+easy": "too_hard",  # too_hard applies before too_easy
        "hard+easy, C2 fails": "too_hard",
        "easy, C2 fails": "too_easy",
        "hard only": "too_hard",
        "legible": None,
        "illegible": None,
    }
    assert [f for f in r.filter_counts if f in PINNED_ORDER] == list(PINNED_ORDER)
    assert {f: r.filter_counts[f] for f in PINNED_ORDER} == {
        "no_readers": 1, "generator_wrong": 1, "too_hard": 3, "too_easy": 1,
    }  # fmt: skip
    assert {f: r.filter_alone[f] for f in PINNED_ORDER} == {
        "no_readers": 1, "generator_wrong": 2, "too_hard": 4, "too_easy": 4,
    }  # fmt: skip
    assert sum(r.filter_counts.values()) == 6 and sum(r.filter_alone.values()) == 11  # no other filter fired
    assert r.label_counts == {"ANSWER_LEAKED": 0, "REASONING_LEGIBLE": 1, "ILLEGIBLE": 1}
    assert (by_id["legible"].label, by_id["illegible"].label) == (Label.REASONING_LEGIBLE, Label.ILLEGIBLE)


def test_same_as_c4_counts_only_right_c2_answers():
    # one reader on three items: C2 right and equal to its right C4 answer (counted); C2 WRONG and equal to its
    # wrong C4 answer (not a pass, so not counted); C2 right and different from C4 (not the same answer)
    rs = [
        ReaderOutcome(reader="a", c1_correct=T, c2_correct=T, c4_correct=T, c2_answer="B", c4_answer="B"),
        ReaderOutcome(reader="a", c1_correct=T, c2_correct=F, c4_correct=F, c2_answer="C", c4_answer="C"),
        ReaderOutcome(reader="a", c1_correct=T, c2_correct=T, c4_correct=F, c2_answer="B", c4_answer="D"),
    ]
    items = [ItemOutcome(item_id=f"i{k}", generator_correct=T, leak_detected=F, readers=(x,)) for k, x in enumerate(rs)]
    u = reader_uplift(items)["a"]
    assert (u.n, u.c2_right_same_as_c4) == (3, 1)
    wrong_only = reader_uplift(items[1:2])["a"]
    assert wrong_only.c2_right_same_as_c4 == 0
