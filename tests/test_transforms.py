"""Each transform's defining property, on the real traces in data/samples (donors: other problems' CoTs)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest
from conftest import TRACES
from strategies import in_order, skeleton

from legibility.errors import LegibilityError
from legibility.records import Trace
from legibility.responses import completion, split_think
from legibility.text import sentences
from legibility.transforms import TRANSFORMS, apply, find_numbers, register

NAMES = [
    "cross_substitution", "donor_splice_50", "donor_splice_25", "sentence_shuffle", "adjacent_swap",
    "sentence_deletion_30", "distractor_injection", "number_substitution", "sentence_reversal",
]  # fmt: skip
SEPS = (" ", "\n", "\n\n")


def load_traces() -> list[Trace]:
    """All real traces as records.Trace (problem_id: the problem text, shared across generators)."""
    rows = []
    for p in sorted(TRACES.glob("*.jsonl")):
        for k, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
            d = json.loads(line)
            rows.append((f"{p.stem}:{d['model_short_name']}", d["problem"], d["reasoning_trace"], d["answer_text"], k))
    for p in sorted(TRACES.glob("*.json")):
        for k, d in enumerate(json.loads(p.read_text(encoding="utf-8"))):
            rows.append((p.stem, d["problem"], d["message_thinking"], d["message_content"], k))
    return [
        Trace(
            id=f"{g}/{k}",
            problem_id=hashlib.sha1(q.encode()).hexdigest(),
            benchmark="math",
            generator=g,
            reasoning=r,
            answer_text=a,
        )
        for g, q, r, a, k in rows
    ]


@pytest.fixture(scope="module")
def traces() -> list[Trace]:
    return [t for t in load_traces() if len(sentences(t.reasoning)) >= 2]


def donors_for(t: Trace, pool: list[Trace]) -> list[Trace]:
    return [d for d in pool if d.problem_id != t.problem_id]


def results(name: str, traces: list[Trace], seed: int = 0):
    for t in traces:
        r = apply(name, t.reasoning, donors_for(t, traces), seed)
        yield t, r


def test_registry_names_and_unknown() -> None:
    assert set(NAMES) <= set(TRANSFORMS) and list(TRANSFORMS)[:9] == NAMES
    with pytest.raises(LegibilityError, match=r"unknown transform 'nope'.*sentence_shuffle"):
        apply("nope", "A. B.", [], 0)


def test_register_adds_a_transform() -> None:
    register("upper")(lambda doc, donors, rng: (doc.text.upper(), {}))
    try:
        assert apply("upper", "a b.", [], 0).text == "A B."
    finally:
        del TRANSFORMS["upper"]


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_changed_and_seeded(name: str, traces: list[Trace]) -> None:
    differ = 0
    for t in traces[::4]:
        donors = donors_for(t, traces)
        a, b = apply(name, t.reasoning, donors, 7), apply(name, t.reasoning, donors, 7)
        assert a == b and a.changed and a.text != t.reasoning
        assert apply(name, t.reasoning, donors, "s-7") == apply(name, t.reasoning, donors, "s-7")
        segs = sentences(t.reasoning)
        assert apply(name, t.reasoning, donors, 7, segments=segs) == a
        differ += apply(name, t.reasoning, donors, 8).text != a.text
    if name not in ("adjacent_swap", "sentence_reversal"):  # these two use no randomness
        assert differ >= len(traces[::4]) // 2


def test_never_unchanged_success_on_all_traces(traces: list[Trace]) -> None:
    for name in NAMES:
        for t, r in results(name, traces, seed=3):
            assert r.changed and r.text != t.reasoning and r.reason is None, (name, t.id)


def test_shuffle_is_a_non_identity_permutation(traces: list[Trace]) -> None:
    for t, r in results("sentence_shuffle", traces):
        n, perm = len(sentences(t.reasoning)), r.meta["permutation"]
        assert sorted(perm) == list(range(n)) and perm != list(range(n))
        assert Counter(r.text.split()) == Counter(t.reasoning.split())  # same words, same multiset
        segs = sentences(t.reasoning)
        assert in_order(r.text, [segs[i].text for i in perm[:20]])


def test_deletion_drops_30_percent_in_order(traces: list[Trace]) -> None:
    for t, r in results("sentence_deletion_30", traces):
        segs = sentences(t.reasoning)
        n, deleted = len(segs), r.meta["deleted"]
        assert len(deleted) == max(1, round(0.3 * n)) == n - r.meta["kept"]
        kept = [s.text for i, s in enumerate(segs) if i not in set(deleted)]
        assert in_order(r.text, kept)
        assert Counter(r.text.split()) == Counter(w for s in kept for w in s.split())


def test_reversal_is_exact_reverse(traces: list[Trace]) -> None:
    for t, r in results("sentence_reversal", traces):
        segs = sentences(t.reasoning)
        assert r.text.startswith(segs[-1].text) and r.text.endswith(segs[0].text)
        rest, parts = r.text, [s.text for s in reversed(segs)]
        for k, p in enumerate(parts):  # exactly the sentences, reversed, joined by normalised separators
            assert rest.startswith(p)
            rest = rest[len(p) :]
            if k < len(parts) - 1:
                sep = next(s for s in ("\n\n", "\n", " ") if rest.startswith(s))
                rest = rest[len(sep) :]
        assert rest == ""


def test_adjacent_swap(traces: list[Trace]) -> None:
    for t, r in results("adjacent_swap", traces):
        segs = [s.text for s in sentences(t.reasoning)]
        n = len(segs)
        order = [i ^ 1 if i ^ 1 < n else i for i in range(n)]
        assert r.text.startswith(segs[1]) and in_order(r.text, [segs[i] for i in order])
        assert Counter(r.text.split()) == Counter(t.reasoning.split())
        assert r.meta["swapped_pairs"] == n // 2


@pytest.mark.parametrize(("name", "frac"), [("donor_splice_50", 0.5), ("donor_splice_25", 0.25)])
def test_splices_keep_prefix_and_take_donor_tail(name: str, frac: float, traces: list[Trace]) -> None:
    by_id = {t.id: t for t in traces}
    for t, r in results(name, traces):
        segs = sentences(t.reasoning)
        n, k = len(segs), r.meta["kept_sentences"]
        assert k == min(n - 1, max(1, int(n * frac + 0.5))) and r.meta["fraction"] == frac
        donor = by_id[r.meta["donor_id"]]
        assert donor.problem_id != t.problem_id
        ds = sentences(donor.reasoning)
        j = r.meta["donor_start_sentence"]
        head, tail = t.reasoning[: segs[k - 1].end], donor.reasoning[ds[j].start : ds[-1].end]
        assert r.text[len(head) :][: -len(tail)] in SEPS
        assert r.text.startswith(head) and r.text.endswith(tail)
        assert j == min(len(ds) - 1, int(len(ds) * frac + 0.5))


def test_cross_substitution_is_a_donor(traces: list[Trace]) -> None:
    by_id = {t.id: t for t in traces}
    for t, r in results("cross_substitution", traces):
        donor = by_id[r.meta["donor_id"]]
        assert r.text == donor.reasoning and donor.problem_id != t.problem_id
    r = apply("cross_substitution", "A. B.", ["C. D.", "E."], 1)
    assert r.meta["donor_index"] in (0, 1) and "donor_id" not in r.meta
    assert r.text == ["C. D.", "E."][r.meta["donor_index"]]


def test_distractor_injection_keeps_original_in_order(traces: list[Trace]) -> None:
    by_id = {t.id: t for t in traces}
    for t, r in results("distractor_injection", traces):
        segs = [s.text for s in sentences(t.reasoning)]
        ds = [s.text for s in sentences(by_id[r.meta["donor_id"]].reasoning)]
        picked = [ds[i] for i in r.meta["donor_sentence_indices"]]
        assert r.meta["inserted"] == len(picked) == max(1, len(segs) // 2)
        assert in_order(r.text, segs)
        merged = list(segs)
        for k, i in enumerate(reversed(r.meta["after"])):
            merged.insert(i + 1, picked[len(picked) - 1 - k])
        assert in_order(r.text, merged)
        assert len(r.text.split()) == len(t.reasoning.split()) + sum(len(p.split()) for p in picked)


def test_number_substitution(traces: list[Trace]) -> None:
    total = 0
    for t, r in results("number_substitution", traces):
        old, new = find_numbers(t.reasoning), find_numbers(r.text)
        assert len(old) == len(new) == r.meta["numbers"]
        changed = [(a.group(), b.group()) for a, b in zip(old, new, strict=True) if a.group() != b.group()]
        assert len(changed) == r.meta["replaced"] > 0
        assert all(float(a) != float(b) for a, b in changed)
        assert skeleton(t.reasoning, old) == skeleton(r.text, new)  # only the numbers changed
        for ch in "{}$":
            assert r.text.count(ch) == t.reasoning.count(ch)
        assert r.text.count("\\{") == t.reasoning.count("\\{")
        total += len(changed)
    assert total > 1000


def test_number_substitution_latex() -> None:
    t = "So \\(\\sqrt{2} + \\frac{1}{3}\\), x^2 and a_1, \\frac12, \\begin{array2}{c} 7 \\end{array2}. $5$ too."
    r = apply("number_substitution", t, ["We get 4, 9, 11 and 25."], 0)
    assert r.changed and r.meta["replaced"] == r.meta["numbers"] == 6
    assert "\\sqrt{" in r.text and "\\frac{" in r.text and "a_1" in r.text and "\\frac12" in r.text
    assert "\\begin{array2}" in r.text and "\\end{array2}" in r.text
    assert r.text.split("x^")[1][0] in "49" and r.text.split("x^")[1][1] == " "  # one digit stays one digit


def test_number_substitution_never_glues_a_number_to_the_next() -> None:
    """Found by the fuzz: an integer put in place of 144.3 in "144.3.14" made one number "20.14" of two."""
    from legibility.transforms import find_numbers

    text = "So 6 * 24 = 144.3.14 and 2.5.7 here."
    for seed in range(20):
        r = apply("number_substitution", text, ["We get 4, 9, 20 and 1.5 and 3.25."], seed)
        assert r.changed and len(find_numbers(r.text)) == len(find_numbers(text)) == r.meta["numbers"]
        assert skeleton(r.text, find_numbers(r.text)) == skeleton(text, find_numbers(text))


def test_unchangeable_inputs_are_reported() -> None:
    one = "Only one sentence here"
    for name in ("sentence_shuffle", "adjacent_swap", "sentence_deletion_30", "sentence_reversal",
                 "donor_splice_50", "donor_splice_25"):  # fmt: skip
        r = apply(name, one, ["Donor one. Donor two."], 0)
        assert not r.changed and r.text == one and r.reason and r.meta["reason"] == r.reason
    assert not apply("number_substitution", "No numbers. None.", ["1 and 2."], 0).changed
    assert not apply("number_substitution", "It is 3. Yes.", ["Only 3. And 3.0."], 0).changed
    for name in ("cross_substitution", "donor_splice_50", "distractor_injection", "number_substitution"):
        r = apply(name, "It is 3. Yes. No.", [], 0)
        assert not r.changed and r.reason == "no donors"
    assert not apply("cross_substitution", "Same. Text.", ["Same. Text.", "Same.\n\nText."], 0).changed
    assert not apply("sentence_shuffle", "Hmm. Hmm. Hmm.", [], 0).changed
    assert not apply("adjacent_swap", "Hmm. Hmm.", [], 0).changed  # swapped, but identical text
    assert not apply("sentence_shuffle", "", [], 0).changed


def test_donors_as_text_segment_tuples() -> None:
    donor = "Donor A. Donor B. Donor C."
    a = apply("donor_splice_50", "X one. X two.", [donor], 5)
    b = apply("donor_splice_50", "X one. X two.", [(donor, sentences(donor))], 5)
    assert a == b and a.text == "X one. Donor C."


# Regressions found by issue #10's fuzzing (tests/test_fuzz_transforms.py); each fails on the code before its fix.

FOUR_SENTENCES = "First we add the numbers. Then we check the sum. The sum is 7. So the answer is 7."


def test_regression_sentence_deletion_four_sentences_all_seeds() -> None:
    """`reorder` zipped the kept order against all sentences with strict=True: ValueError for 15 of 40 seeds."""
    segs = [s.text for s in sentences(FOUR_SENTENCES)]
    assert len(segs) == 4
    for seed in range(40):
        r = apply("sentence_deletion_30", FOUR_SENTENCES, [], seed=seed)
        kept = [s for i, s in enumerate(segs) if i not in r.meta["deleted"]]
        assert r.changed and r.meta["deleted"] and r.text == " ".join(kept), seed


def test_regression_sentence_deletion_two_equal_sentences() -> None:
    """The fuzzer's minimal example of the same crash: deleting one of two equal sentences."""
    r = apply("sentence_deletion_30", "First we add the numbers. First we add the numbers.", [], 0)
    assert r.changed and r.text == "First we add the numbers." and r.meta["kept"] == 1


def test_regression_think_tag_never_reaches_the_completion() -> None:
    """A CoT or donor holding "</think>" made an output that ends the CoT early once written between think tags
    (responses.completion), so split_think returned a corrupted answer. apply now declines such an output,
    and pick_donor skips a donor holding the tag."""
    cot = "</think>\n\nThe answer is 7."  # the fuzzer's minimal example (sentence_shuffle, seed 0)
    for name in ("sentence_shuffle", "adjacent_swap", "sentence_reversal"):
        r = apply(name, cot, [], 0)
        assert not r.changed and r.text == cot and r.reason == "output holds </think>"
    clean = "We are to convert the point (0,3) from rectangular coordinates to polar coordinates. T"
    r = apply("donor_splice_50", clean, ["</think>"], 0)  # minimal example for donors
    assert not r.changed and r.reason == "no usable donor"
    donors = ["Donor one. </think> Donor two.", "Other one. Other two."]
    for name in ("cross_substitution", "donor_splice_50", "distractor_injection"):
        for seed in range(10):
            r = apply(name, clean, donors, seed)
            assert r.changed and r.meta["donor_index"] == 1 and "</think>" not in r.text, (name, seed)
            assert split_think(completion(r.text, "7")) == (r.text, "7", True)
