"""Pair counts and weights over the enabled transforms, long pairs, per-trace errors (#10), the grading filter."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import MARKYX, MATH500
from hypothesis import given
from hypothesis import strategies as st

from legibility import benchmarks
from legibility.config import ExperimentConfig, PairsConfig
from legibility.pairs import (
    MAX_FAILS,
    build_pairs,
    fit_cot,
    fit_to_length,
    pair_stats,
    quotas,
    read_pairs,
    token_lengths,
    write_pairs,
)
from legibility.records import Message, Trace, write_jsonl
from legibility.responses import completion, split_think
from legibility.text import sentences
from legibility.traces import import_traces
from legibility.transforms import TRANSFORMS


@pytest.fixture(scope="module")
def traces() -> list[Trace]:
    return import_traces(MARKYX, benchmarks.load("math", MATH500, levels=None))


def synthetic(n: int, sentences_per_trace: int = 6, seed: int = 0) -> list[Trace]:
    """Short traces with distinct sentences and numbers (every transform applies to them)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        steps = [
            f"Step {j}: we add {rng.randint(2, 99)} and {rng.randint(2, 99)} to get a new total."
            for j in range(sentences_per_trace)
        ]
        out.append(
            Trace(
                id=f"syn/math/{i}/0",
                problem_id=f"math/{i}",
                benchmark="math",
                generator="syn",
                prompt=[Message(role="user", content=f"Problem {i}?")],
                reasoning=" ".join(steps),
                answer_text=f"The answer is $\\boxed{{{i}}}$.",
                correct=True,
            )
        )
    return out


# ---------------------------------------------------------------------------------------------- counts, weights


@given(
    weights=st.dictionaries(st.sampled_from(sorted(TRANSFORMS)), st.floats(0.01, 100), min_size=1),
    n=st.integers(1, 40),
    seed=st.integers(0, 10**6),
)
def test_quotas_sum_to_n_and_round_each_share_once(weights: dict[str, float], n: int, seed: int) -> None:
    q = quotas(weights, n, random.Random(seed))
    assert sum(q.values()) == n and set(q) == set(weights)
    total = sum(weights.values())
    for name, w in weights.items():
        assert math.floor(n * w / total) - 1e-9 <= q[name] <= math.ceil(n * w / total) + 1e-9


def test_quotas_are_unbiased() -> None:
    counts: Counter[str] = Counter()
    for s in range(4000):
        counts.update(quotas({"a": 3.0, "b": 1.0, "c": 2.0}, 2, random.Random(s)))
    for name, share in (("a", 0.5), ("b", 1 / 6), ("c", 1 / 3)):  # 8000 pairs
        sd = math.sqrt(4000 * (2 * share % 1) * (1 - 2 * share % 1))
        assert abs(counts[name] - 8000 * share) <= 4 * sd, (name, counts)  # a: exactly one per trace


def _binomial_ok(k: int, n: int, p: float, z: float = 4.0) -> bool:
    return abs(k - n * p) <= z * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("per_trace", [1, 2])
def test_weights_three_to_one(per_trace: int) -> None:
    """3:1 weights give 3:1 pairs. Before, a trace made one pair of each enabled transform per round, so any
    pairs_per_trace >= 2 came out 1:1."""
    syn = synthetic(2000 // per_trace)
    cfg = PairsConfig(transforms={"sentence_shuffle": 3, "sentence_reversal": 1}, pairs_per_trace=per_trace,
                      tokenizer=None, val_fraction=0.0)  # fmt: skip
    ps = build_pairs(syn, cfg)
    assert len(ps.all) == 2000 and not ps.skipped
    shuffles = sum(p.transform == "sentence_shuffle" for p in ps.all)
    # per_trace 1: one binomial draw per trace; 2: one sure shuffle plus a draw of p=0.5 for the second pair
    n, p = (2000, 0.75) if per_trace == 1 else (1000, 0.5)
    assert _binomial_ok(shuffles - (2000 - n), n, p), shuffles


def test_single_transform_makes_all_pairs_asked(traces: list[Trace]) -> None:
    """{sentence_shuffle: 1} with 9 per trace gives 9 distinct shuffles (it gave 2: rounds counted all nine)."""
    ps = build_pairs(traces, PairsConfig(transforms={"sentence_shuffle": 1}, pairs_per_trace=9, tokenizer=None))
    per_trace = Counter(p.trace_id for p in ps.all)
    assert set(per_trace.values()) == {9}
    assert len({(p.trace_id, p.rejected) for p in ps.all}) == len(ps.all)
    assert {p.transform for p in ps.all} == {"sentence_shuffle"}


def test_a_transform_out_of_distinct_texts_stops_and_the_rest_refill() -> None:
    syn = synthetic(50)
    # sentence_reversal has one text per trace: it stops after MAX_FAILS repeats; nothing else can fill in
    alone = build_pairs(syn, PairsConfig(transforms={"sentence_reversal": 1}, pairs_per_trace=3, tokenizer=None))
    assert Counter(p.trace_id for p in alone.all) == Counter({t.id: 1 for t in syn})
    assert alone.skipped["attempt sentence_reversal: same text as an earlier pair of this trace"] == 50 * MAX_FAILS
    assert alone.skipped["trace with fewer pairs than asked"] == 50
    # with a second transform, its share of the shortfall is filled by the one still making new texts
    cfg = PairsConfig(transforms={"sentence_reversal": 1, "sentence_shuffle": 1}, pairs_per_trace=4, tokenizer=None)
    mixed = build_pairs(syn, cfg)
    assert Counter(p.trace_id for p in mixed.all) == Counter({t.id: 4 for t in syn})
    assert Counter(p.transform for p in mixed.all) == {"sentence_reversal": 50, "sentence_shuffle": 150}
    assert "trace with fewer pairs than asked" not in mixed.skipped


def test_disabled_transforms_never_appear_and_ids_stay_unique(traces: list[Trace]) -> None:
    cfg = PairsConfig(transforms={"number_substitution": 2, "adjacent_swap": 0, "sentence_deletion_30": 1},
                      pairs_per_trace=6, tokenizer=None)  # fmt: skip
    ps = build_pairs(traces, cfg)
    assert {p.transform for p in ps.all} == {"number_substitution", "sentence_deletion_30"}
    assert len({p.id for p in ps.all}) == len(ps.all)
    assert set(Counter(p.trace_id for p in ps.all).values()) == {6}


# ---------------------------------------------------------------------------------------------- long pairs


class CharTokenizer:
    """One token per character: sizes are checkable by hand."""

    chat_template = None

    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
        return {"input_ids": [[0] * len(t) for t in texts]}


def test_fit_cot_keeps_the_longest_sentence_prefix_and_the_answer() -> None:
    prompt = [Message(role="user", content="Q?")]
    cot = " ".join(f"Sentence number {i} says something." for i in range(40))
    content = completion(cot, "Final: \\boxed{7}")
    tok = CharTokenizer()
    for limit in (200, 517, 900):
        cut, info = fit_cot(prompt, content, tok, limit)
        size = len(f"Q?\n\n{cut}")
        assert size <= limit and info["tokens"] == size
        reasoning = split_think(cut).reasoning
        assert split_think(cut).answer == "Final: \\boxed{7}" and cut.endswith("\n</think>\n\nFinal: \\boxed{7}")
        k = info["kept_sentences"]
        segs = sentences(cot)
        assert reasoning == cot[: segs[k - 1].end]  # whole sentences, from the start
        longer = completion(cot[: segs[k].end], "Final: \\boxed{7}")
        assert len(f"Q?\n\n{longer}") > limit  # the longest that fits
    assert fit_cot(prompt, content, tok, 40) is None  # not even one sentence fits


@pytest.fixture(scope="module")
def tok() -> Any:
    from legibility.models import load_tokenizer

    return load_tokenizer("embedded")


@pytest.mark.parametrize("policy", ["truncate_cot", "drop"])
def test_long_pairs_fit_and_keep_their_answer(traces: list[Trace], tok: Any, policy: str) -> None:
    """Every pair fits max_length after the build and ends with its trace's final answer (a trainer's truncation
    at the end would have cut it off); the counts say what was done."""
    cfg = PairsConfig(max_length=2500, long_pairs=policy, val_fraction=0.3, tokenizer="embedded")
    sub = [t for t in traces if t.generator.endswith("Qwen-7B")]  # ~1-6k tokens each, with the embedded tokenizer
    before = build_pairs(sub, cfg)
    over = sum(max(a, b) > 2500 for a, b in token_lengths(before.all, tok))
    ps = build_pairs(sub, cfg, tokenizer=tok)
    assert 0 < over < len(before.all)
    by_id = {t.id: t for t in traces}
    lengths = token_lengths(ps.all, tok)
    assert all(max(a, b) <= 2500 for a, b in lengths)
    assert ps.tokens == {p.id: ab for p, ab in zip(ps.all, lengths, strict=True)}
    for p in ps.all:
        trace = by_id[p.trace_id]
        for side in (p.chosen, p.rejected):
            s = split_think(side)
            assert s.closed and s.answer == trace.answer_text.strip()
        assert p.chosen != p.rejected
    long = ps.long
    assert long["over_max_length"] == over and long["policy"] == policy
    if policy == "drop":
        assert long["dropped"] == over and len(ps.all) == len(before.all) - over
    else:
        assert long["truncated_chosen"] > 0 and long["truncated_rejected"] > 0
        assert len(ps.all) == len(before.all) - long["dropped"]
        cut = [p for p in ps.all if "truncated" in p.transform_meta]
        assert len(cut) == over - long["dropped"]
        for p in cut:  # a cut chosen (legible: the original) is a sentence prefix of its trace's CoT
            if "chosen" in p.transform_meta["truncated"]:
                assert by_id[p.trace_id].reasoning.startswith(split_think(p.chosen).reasoning)
    by_transform = long["by_transform"]
    assert sum(c.get("dropped", 0) for c in by_transform.values()) == long["dropped"]
    assert sum(c.get("truncated_rejected", 0) for c in by_transform.values()) == long["truncated_rejected"]
    stats = pair_stats(ps, cfg, tok, "embedded")
    assert stats["long_pairs"] == long and stats["tokens"]["train"]["over_max_length"] == 0


def test_cut_that_makes_both_sides_equal_drops_the_pair() -> None:
    """donor_splice keeps the head of the original: cut inside it, both sides would read the same."""
    syn = synthetic(30, sentences_per_trace=12)
    cfg = PairsConfig(transforms={"donor_splice_50": 1}, pairs_per_trace=1, max_length=150, tokenizer=None,
                      val_fraction=0.0)  # fmt: skip
    ps = fit_to_length(build_pairs(syn, cfg), cfg, CharTokenizer())
    assert ps.long["dropped_reasons"] == {"chosen and rejected equal once cut": 30} and not ps.all


# ---------------------------------------------------------------------------------------------- errors (#10)


@pytest.fixture
def broken_shuffle(monkeypatch: pytest.MonkeyPatch, traces: list[Trace]) -> Trace:
    """sentence_shuffle raises (a bug, not a decline) on one trace's CoT."""
    victim = sorted((t for t in traces if t.correct and t.complete), key=lambda t: t.id)[3]
    real = TRANSFORMS["sentence_shuffle"]

    def shuffle(doc, donors, rng):  # type: ignore[no-untyped-def]
        if doc.text == victim.reasoning:
            raise ZeroDivisionError("boom")
        return real(doc, donors, rng)

    monkeypatch.setitem(TRANSFORMS, "sentence_shuffle", shuffle)
    return victim


def test_a_raising_trace_is_skipped_counted_and_named(
    traces: list[Trace], broken_shuffle: Trace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = PairsConfig(val_fraction=0.3, tokenizer=None)
    ps = build_pairs(traces, cfg)
    assert ps.errors == [
        {"trace_id": broken_shuffle.id, "transform": "sentence_shuffle", "error": "ZeroDivisionError: boom"}
    ]
    assert ps.skipped["trace error (ZeroDivisionError)"] == 1
    assert broken_shuffle.id not in {p.trace_id for p in ps.all}
    monkeypatch.undo()
    good = build_pairs(traces, cfg)  # every other trace's pairs are all there, unchanged
    assert ps.all == [p for p in good.all if p.trace_id != broken_shuffle.id]
    monkeypatch.setitem(TRANSFORMS, "sentence_shuffle", lambda d, ds, r: 1 / 0)  # and in stats.json
    stats = pair_stats(ps, cfg)
    write_pairs(ps, tmp_path, stats)
    written = json.loads((tmp_path / "stats.json").read_text())
    assert written["errors"] == ps.errors and written["errors_by_type"] == {"ZeroDivisionError": 1}
    assert written["counts"]["errors"] == 1


def test_strict_reraises(traces: list[Trace], broken_shuffle: Trace) -> None:
    with pytest.raises(ZeroDivisionError, match="boom") as info:
        build_pairs(traces, PairsConfig(strict=True, tokenizer=None))
    assert any(broken_shuffle.id in note for note in info.value.__notes__)


def test_cli_reports_errors_and_strict_stops(traces: list[Trace], broken_shuffle: Trace, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from legibility.cli import app

    file = write_jsonl(tmp_path / "traces.jsonl", traces)
    args = ["pairs", "build", str(file), "--out", str(tmp_path / "pairs"), "--tokenizer", "none"]
    runner = CliRunner()
    r = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("errors:"))
    assert "1 traces raised" in line and "ZeroDivisionError x1" in line
    stats = json.loads((tmp_path / "pairs" / "stats.json").read_text())
    assert stats["errors"][0]["trace_id"] == broken_shuffle.id
    assert stats["provenance"]["inputs"][0]["path"] == str(file)
    assert json.loads((tmp_path / "pairs" / "split.json").read_text())["benchmarks"]["math"]
    r = runner.invoke(app, [*args, "--strict"])
    assert isinstance(r.exception, ZeroDivisionError)


# ---------------------------------------------------------------------------------------------- grading, stage


def test_grading_picks_the_verdict() -> None:
    syn = synthetic(6)
    syn[0] = syn[0].model_copy(update={"correct": True, "correct_strict": False})  # flexible only
    syn[1] = syn[1].model_copy(update={"correct": False, "correct_strict": True})
    syn[2] = syn[2].model_copy(update={"correct": True, "correct_strict": None})  # graded before strict verdicts
    strict = build_pairs(syn, PairsConfig(grading="strict", tokenizer=None, pairs_per_trace=1))
    flexible = build_pairs(syn, PairsConfig(grading="flexible", tokenizer=None, pairs_per_trace=1))
    assert {p.trace_id for p in strict.all} == {t.id for t in syn} - {syn[0].id}
    assert {p.trace_id for p in flexible.all} == {t.id for t in syn} - {syn[1].id}
    assert strict.grading["usable_without_strict_verdict"] == 4 and strict.skipped["trace incorrect"] == 1


def test_stage_writes_every_file_byte_identically(traces: list[Trace], tmp_path: Path) -> None:
    from legibility.stages import pairs_stage

    cfg = ExperimentConfig(name="t", run_dir=str(tmp_path / "run"), pairs={"val_fraction": 0.3, "tokenizer": None})
    write_jsonl(tmp_path / "run" / "traces.jsonl", traces)
    names = ("train.jsonl", "val.jsonl", "together_train.jsonl", "together_val.jsonl", "stats.json", "split.json")
    first = pairs_stage(cfg)
    files = {n: (tmp_path / "run" / "pairs" / n).read_bytes() for n in names}
    assert pairs_stage(cfg) == first
    assert {n: (tmp_path / "run" / "pairs" / n).read_bytes() for n in names} == files
    prov = first["provenance"]
    assert prov["inputs"][0]["path"].endswith("traces.jsonl") and len(prov["inputs"][0]["sha256"]) == 64
    assert prov["config"] == cfg.pairs.model_dump(mode="json")
    pairs = read_pairs(tmp_path / "run" / "pairs" / "train.jsonl")
    assert pairs and all(p.split == "train" and p.donor_scope == "split" for p in pairs)
    # with the run's problems, split.json lists every one of them; the traces' problems keep their sides
    split = json.loads(files["split.json"])["benchmarks"]["math"]
    write_jsonl(tmp_path / "run" / "problems.jsonl", benchmarks.load("math", MATH500, levels=None))
    pairs_stage(cfg)
    wide = json.loads((tmp_path / "run" / "pairs" / "split.json").read_text())["benchmarks"]["math"]
    assert len(wide["train"]) + len(wide["val"]) == 500
    assert set(split["train"]) <= set(wide["train"]) and set(split["val"]) <= set(wide["val"])
    assert (tmp_path / "run" / "pairs" / "train.jsonl").read_bytes() == files["train.jsonl"]


def test_regression_a_cot_holding_think_close_is_skipped_not_paired() -> None:
    """Its completion would end the think block early (the chosen side broken): counted, never paired."""
    good = synthetic(4)
    bad = good[0].model_copy(update={"id": "syn/math/99/0", "problem_id": "math/99",
                                     "reasoning": good[0].reasoning + " </think> So it is done."})  # fmt: skip
    pairset = build_pairs([*good, bad], PairsConfig(tokenizer=None, val_fraction=0.0, pairs_per_trace=2))
    assert pairset.skipped["trace reasoning holds </think>"] == 1
    assert {p.trace_id for p in pairset.all} == {t.id for t in good}
    with pytest.raises(ValueError, match="holds </think>"):
        completion(bad.reasoning, bad.answer_text)


class Spy:
    """A tokenizer that records each Python-side call: (batch size, offsets asked for)."""

    def __init__(self, tok: Any) -> None:
        self.tok, self.calls = tok, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tok, name)

    def __call__(self, texts: list[str], **kw: Any) -> Any:
        self.calls.append((len(texts), bool(kw.get("return_offsets_mapping"))))
        return self.tok(texts, **kw)


def test_lengths_in_one_pass_without_offsets_and_offsets_only_for_the_long_sides(traces: list[Trace], tok: Any) -> None:
    """Every length comes from the Rust encoder without offsets; only the distinct sides over the limit are
    tokenized with offsets (for the cut), in batches, and the result is the same as with the slow path."""
    from legibility.pairs import _count, _key

    cfg = PairsConfig(max_length=2500, val_fraction=0.3, tokenizer="embedded")
    sub = [t for t in traces if t.generator.endswith("Qwen-7B")]
    built = build_pairs(sub, cfg)
    lengths = token_lengths(built.all, tok)
    long = {_key(p.prompt, s) for p, ab in zip(built.all, lengths, strict=True)
            for s, n in zip((p.chosen, p.rejected), ab, strict=True) if n > 2500}  # fmt: skip
    spy = Spy(tok)
    fitted = fit_to_length(built, cfg, spy)
    assert len(long) > 32 and spy.calls == [(min(32, len(long) - i), True) for i in range(0, len(long), 32)]
    texts = [completion(t.reasoning, t.answer_text) for t in sub[:20]] + ["<think>\n</think>\n\n<|im_end|> x"]
    assert _count(tok, texts) == [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]

    class Slow(Spy):  # no Rust encoder: the tokenizer's own call, the same pairs
        backend_tokenizer = None

    slow = fit_to_length(built, cfg, Slow(tok))
    assert slow == fitted


def test_keep_leaves_long_pairs_whole_for_the_trainer_and_counts_them(traces: list[Trace], tok: Any) -> None:
    cfg = PairsConfig(max_length=2500, long_pairs="keep", val_fraction=0.3, tokenizer="embedded")
    sub = [t for t in traces if t.generator.endswith("Qwen-7B")]
    built = build_pairs(sub, cfg)
    over = sum(max(a, b) > 2500 for a, b in token_lengths(built.all, tok))
    ps = fit_to_length(built, cfg, tok)
    assert ps.all == built.all and 0 < over == ps.long["over_max_length"]
    assert (ps.long["dropped"], ps.long["truncated_chosen"], ps.long["truncated_rejected"]) == (0, 0, 0)
    assert pair_stats(ps, cfg, tok, "embedded")["tokens"]["train"]["over_max_length"] > 0


def test_a_rebuild_with_long_pair_cuts_is_byte_identical(traces: list[Trace], tmp_path: Path) -> None:
    """Same config and seed, same bytes, when lengths are measured and CoTs cut (the tokenizer's threads too)."""
    from legibility.pairs import build_and_write

    cfg = PairsConfig(max_length=2500, val_fraction=0.3, tokenizer="embedded")
    sub = [t for t in traces if t.generator.endswith("Qwen-7B")]
    names = ("train.jsonl", "val.jsonl", "together_train.jsonl", "together_val.jsonl", "stats.json", "split.json")
    out = []
    for run in ("a", "b"):
        _, stats = build_and_write(sub, cfg, tmp_path / run)
        assert stats["long_pairs"]["truncated_chosen"] + stats["long_pairs"]["truncated_rejected"] > 0
        out.append({n: (tmp_path / run / n).read_bytes() for n in names})
    assert out[0] == out[1]
