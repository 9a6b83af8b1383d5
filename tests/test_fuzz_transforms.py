"""Property-based fuzzing of the nine transforms on CoT-like text and donors (issue #10).

Every transform, on any CoT and any donor list (empty, holding the CoT itself, empty texts, all three donor
forms), either changes the text or declines with a reason; it never raises, is a function of its inputs and
seed, and its output can be wrapped in think tags and split back with the final answer untouched.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from strategies import answers, cot_and_donors, cot_texts, in_order, skeleton

from legibility.responses import completion, split_think
from legibility.text import sentences
from legibility.transforms import THINK_CLOSE, TransformResult, apply, find_numbers

NAMES = [
    "cross_substitution", "donor_splice_50", "donor_splice_25", "sentence_shuffle", "adjacent_swap",
    "sentence_deletion_30", "distractor_injection", "number_substitution", "sentence_reversal",
]  # fmt: skip
seeds = st.one_of(st.integers(0, 2**64), st.text(max_size=8))


@pytest.mark.parametrize("name", NAMES)
@given(cot_and_donors(), seeds, answers)
def test_transform_contract(name: str, case: tuple, seed: int | str, answer: str) -> None:
    text, donors = case
    r = apply(name, text, donors, seed)
    assert isinstance(r, TransformResult)
    assert apply(name, text, donors, seed) == r == apply(name, text, donors, seed, segments=sentences(text))
    event("changed" if r.changed else f"declined: {r.reason}")
    if not r.changed:
        assert r.text == text and r.reason and r.meta == {"reason": r.reason}
        return
    assert r.text != text and r.reason is None
    # the pair builder writes the CoT in think tags, then the answer: the split must give both back
    assert split_think(completion(r.text, answer)) == (r.text.strip(), answer.strip(), True)


def permutation(name: str, n: int, meta: dict) -> list[int]:
    if name == "sentence_shuffle":
        return meta["permutation"]
    if name == "adjacent_swap":
        return [i ^ 1 if i ^ 1 < n else i for i in range(n)]
    return list(range(n - 1, -1, -1))


@pytest.mark.parametrize("name", ["sentence_shuffle", "adjacent_swap", "sentence_reversal"])
@given(cot_texts(), seeds)
def test_permutations_keep_the_words(name: str, text: str, seed: int | str) -> None:
    r = apply(name, text, [], seed)
    event("changed" if r.changed else "declined")
    if r.changed:
        segs = [s.text for s in sentences(text)]
        assert Counter(r.text.split()) == Counter(text.split())
        assert in_order(r.text, [segs[i] for i in permutation(name, len(segs), r.meta)])
    else:
        assert r.reason and r.text == text


@given(cot_texts(), seeds)
def test_deletion_keeps_a_sub_multiset_in_order(text: str, seed: int | str) -> None:
    r = apply("sentence_deletion_30", text, [], seed)
    event("changed" if r.changed else "declined")
    if r.changed:
        segs = [s.text for s in sentences(text)]
        kept = [s for i, s in enumerate(segs) if i not in set(r.meta["deleted"])]
        assert Counter(r.text.split()) <= Counter(text.split()) and Counter(r.text.split()) != Counter(text.split())
        assert in_order(r.text, kept) and r.meta["kept"] == len(kept) >= 1
    else:
        assert r.reason and (len(sentences(text)) < 2 or THINK_CLOSE in text)


@given(cot_and_donors(), seeds)
def test_distractor_injection_keeps_every_sentence_in_order(case: tuple, seed: int | str) -> None:
    text, donors = case
    r = apply("distractor_injection", text, donors, seed)
    event("changed" if r.changed else "declined")
    if r.changed:
        segs = [s.text for s in sentences(text)]
        assert in_order(r.text, segs) and len(r.text.split()) > len(text.split())
    else:
        assert r.reason


@given(cot_and_donors(), seeds)
def test_number_substitution_changes_only_numbers(case: tuple, seed: int | str) -> None:
    text, donors = case
    r = apply("number_substitution", text, donors, seed)
    event("changed" if r.changed else "declined")
    if r.changed:
        old, new = find_numbers(text), find_numbers(r.text)
        assert len(old) == len(new) == r.meta["numbers"] and skeleton(text, old) == skeleton(r.text, new)
    else:
        assert r.reason
