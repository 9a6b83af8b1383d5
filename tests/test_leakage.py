"""Research validity (#7): the split is stable and per problem, and no validation text reaches a training pair.

On the real shipped traces (data/samples/traces, joined to MATH-500): before the fix, donors were drawn from every
usable trace whichever side it was on, and 44 of 369 training pairs held a 20-word span of a validation CoT
(17 cross_substitution pairs carried one word for word as the rejected side).
"""

from __future__ import annotations

import random

import pytest
from conftest import MARKYX, MATH500

from legibility import benchmarks
from legibility.config import PairsConfig
from legibility.pairs import (
    Leak,
    PairSet,
    build_pairs,
    leaked_spans,
    problem_side,
    split_manifest,
    split_problems,
)
from legibility.records import Message, Pair, Trace
from legibility.responses import completion
from legibility.traces import import_traces

VAL_FRACTION = 0.3


@pytest.fixture(scope="module")
def traces() -> list[Trace]:
    return import_traces(MARKYX, benchmarks.load("math", MATH500, levels=None))


def _side(t: Trace, cfg: PairsConfig) -> str:
    return problem_side(cfg.seed, t.benchmark, t.problem_id, cfg.val_fraction)


@pytest.mark.parametrize("scope", ["split", "split+benchmark", "split+generator"])
def test_no_validation_text_in_training_pairs(traces: list[Trace], scope: str) -> None:
    cfg = PairsConfig(val_fraction=VAL_FRACTION, donor_scope=scope, tokenizer=None)
    ps = build_pairs(traces, cfg)
    val_cots = [t.reasoning for t in traces if _side(t, cfg) == "val"]  # every validation CoT, usable or not
    assert len(val_cots) >= 5 and ps.val and ps.train  # there is a validation side to leak from
    assert leaked_spans(ps.train, val_cots, n=20) == []
    # and the structure that guarantees it: every donor is on the pair's side, of another problem, in scope
    by_id = {t.id: t for t in traces}
    donated = [p for p in ps.all if p.donor_trace_id]
    assert {p.transform for p in donated} >= {"cross_substitution", "donor_splice_50", "distractor_injection"}
    for p in donated:
        donor = by_id[p.donor_trace_id]
        assert _side(donor, cfg) == p.split and donor.problem_id != p.problem_id
        assert p.donor_scope == scope
        if scope == "split+generator":
            assert donor.generator == p.generator
    assert all(p.split == "train" for p in ps.train) and all(p.split == "val" for p in ps.val)


def test_validation_pairs_draw_donors_from_validation(traces: list[Trace]) -> None:
    """The mirror image: validation pairs stay free of training text, so evaluation sees nothing trained on."""
    cfg = PairsConfig(val_fraction=VAL_FRACTION, tokenizer=None)
    ps = build_pairs(traces, cfg)
    train_cots = [t.reasoning for t in traces if _side(t, cfg) == "train"]
    assert leaked_spans(ps.val, train_cots) == []


def _pair(chosen: str, rejected: str) -> Pair:
    return Pair(
        id="t/p/0/x",
        prompt=[Message(role="user", content="q")],
        chosen=chosen,
        rejected=rejected,
        transform="cross_substitution",
        trace_id="t/p/0",
        problem_id="p",
        generator="t",
        benchmark="math",
    )


def test_the_span_check_can_fail(traces: list[Trace]) -> None:
    val_cot = max((t.reasoning for t in traces), key=len)
    words = val_cot.split()
    own = "We compute the sum first. " * 10
    whole = _pair(completion(own, "42"), completion(val_cot, "42"))  # a validation CoT as the rejected side
    assert [(leak.pair_id, leak.side) for leak in leaked_spans([whole], [val_cot])] == [("t/p/0/x", "rejected")]
    # 20 words in the middle of other text, with the layout changed, are found; 19 are not
    span20 = "\n".join(words[100:120])
    inside = _pair(completion(f"{own} {span20} and so on.", "42"), completion(own, "7"))
    leaks = leaked_spans([inside], [val_cot])
    assert leaks == [Leak("t/p/0/x", "chosen", " ".join(words[100:120]))]
    span19 = " ".join(words[100:119])
    assert leaked_spans([_pair(completion(f"{own} {span19} and so on.", "42"), own)], [val_cot]) == []
    assert leaked_spans([_pair(completion(f"{own} {span19} and so on.", "42"), own)], [val_cot], n=19)


def test_split_is_stable_when_problems_are_added() -> None:
    rng = random.Random(0)
    ids = [("math", f"math/test/x/{i}.json") for i in range(400)] + [("bbh", f"bbh/t/{i}") for i in range(60)]
    rng.shuffle(ids)
    small = split_manifest(ids[:150], 0.2, seed=42)
    large = split_manifest(ids, 0.2, seed=42)
    for bench, sides in small["benchmarks"].items():
        for side, pids in sides.items():
            assert set(pids) <= set(large["benchmarks"][bench][side]), (bench, side)
    assert split_problems(ids[:150], 0.2, 42) == split_problems(ids, 0.2, 42) & {p for _, p in ids[:150]}
    # the split follows the seed, and the fraction holds (binomial: 460 * 0.2 = 92, sd 8.6)
    assert split_problems(ids, 0.2, 7) != split_problems(ids, 0.2, 42)
    assert abs(len(split_problems(ids, 0.2, 42)) - 92) < 4 * 8.6
    assert split_problems(ids, 0.0, 42) == set()


def test_split_stable_in_builds(traces: list[Trace]) -> None:
    """Adding problems' traces to a build moves no existing problem between train and validation."""
    cfg = PairsConfig(val_fraction=VAL_FRACTION, tokenizer=None)
    problems = sorted({t.problem_id for t in traces})
    first = build_pairs([t for t in traces if t.problem_id in problems[:8]], cfg)
    full = build_pairs(traces, cfg)

    def sides(ps: PairSet) -> dict[str, str]:
        return {p.problem_id: "train" for p in ps.train} | {p.problem_id: "val" for p in ps.val}

    assert len(sides(first)) >= 6 and sides(first).items() <= sides(full).items()
    assert all(p.split == side for p in full.all for side in [sides(full)[p.problem_id]])
    for s in ("train", "val"):
        assert set(first.split["benchmarks"]["math"][s]) <= set(full.split["benchmarks"]["math"][s])


def test_split_manifest_lists_every_problem_and_flags_empty_validation(traces: list[Trace]) -> None:
    cfg = PairsConfig(val_fraction=VAL_FRACTION, tokenizer=None)
    ps = build_pairs(traces, cfg)
    math = ps.split["benchmarks"]["math"]
    assert sorted(math["train"] + math["val"]) == sorted({t.problem_id for t in traces})  # unusable ones too
    assert {p.problem_id for p in ps.val} <= set(math["val"]) and {p.problem_id for p in ps.train} <= set(math["train"])
    assert ps.split["seed"] == cfg.seed and ps.split["val_fraction"] == VAL_FRACTION
    assert ps.split["benchmarks_without_val"] == []
    # one problem, a 5% fraction: a per-problem rule cannot promise it a validation side; it is reported instead
    seed = next(s for s in range(100) if problem_side(s, "bbh", "bbh/only", 0.05) == "train")
    lonely = split_manifest([("bbh", "bbh/only"), ("math", "m/1")], 0.05, seed)
    assert "bbh" in lonely["benchmarks_without_val"]
