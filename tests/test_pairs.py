"""Pair building on the real traces: determinism, the split, direction, exports TRL and Together accept."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import MARKYX, MATH500
from pydantic import ValidationError

from legibility import benchmarks
from legibility.config import PairsConfig
from legibility.errors import LegibilityError
from legibility.pairs import (
    build_pairs,
    pair_stats,
    read_pairs,
    split_manifest,
    token_lengths,
    write_pairs,
)
from legibility.records import Trace
from legibility.responses import split_think
from legibility.traces import import_traces
from legibility.transforms import TRANSFORMS


@pytest.fixture(scope="module")
def traces() -> list[Trace]:
    problems = benchmarks.load("math", MATH500, levels=None)
    files = MARKYX
    return import_traces(files, problems)


def test_pairs_hold_their_promises(traces: list[Trace]) -> None:
    cfg = PairsConfig(val_fraction=0.2)
    ps = build_pairs(traces, cfg)
    by_id = {t.id: t for t in traces}
    # pairs.grading "strict" (the default) filters on the strict verdict, `correct` where a trace has none
    usable = [t for t in traces if (t.correct if t.correct_strict is None else t.correct_strict) and t.complete]
    assert len(usable) < len(traces)  # the sample has wrong and truncated traces, which must stay out
    assert {p.trace_id for p in ps.all} == {t.id for t in usable}
    assert ps.skipped["trace incorrect"] + ps.skipped["trace incomplete"] == len(traces) - len(usable)
    assert len(ps.all) == 9 * len(usable)  # every trace gets all nine (long real CoTs can take them all)
    for p in ps.all:
        trace = by_id[p.trace_id]
        chosen, rejected = split_think(p.chosen), split_think(p.rejected)
        assert chosen.closed and rejected.closed
        assert chosen.reasoning == trace.reasoning  # legible: the original is preferred
        assert rejected.reasoning != trace.reasoning
        assert chosen.answer == rejected.answer == trace.answer_text  # same final answer on both sides
        assert p.prompt == trace.prompt and p.direction == "legible"
        if p.donor_trace_id is not None:
            assert by_id[p.donor_trace_id].problem_id != p.problem_id
            assert by_id[p.donor_trace_id].benchmark == p.benchmark
        assert p.transform in TRANSFORMS and p.donor_scope == "split"
        assert p.split == ("val" if p.problem_id in set(ps.split["benchmarks"]["math"]["val"]) else "train")
    assert {p.transform for p in ps.all} == set(TRANSFORMS)
    assert all(p.donor_trace_id for p in ps.all if p.transform in ("cross_substitution", "donor_splice_50"))
    train_problems = {p.problem_id for p in ps.train}
    val_problems = {p.problem_id for p in ps.val}
    assert train_problems and val_problems and not train_problems & val_problems
    assert len({p.id for p in ps.all}) == len(ps.all)


def test_deterministic_files(traces: list[Trace], tmp_path: Path) -> None:
    cfg = PairsConfig(tokenizer=None)
    for out in ("a", "b"):
        ps = build_pairs(list(reversed(traces)) if out == "b" else traces, cfg)  # input order must not matter
        write_pairs(ps, tmp_path / out, pair_stats(ps, cfg))
    for name in ("train.jsonl", "val.jsonl", "together_train.jsonl", "together_val.jsonl", "stats.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    other = build_pairs(traces, PairsConfig(seed=7))
    assert [p.rejected for p in other.all] != [p.rejected for p in build_pairs(traces, cfg).all]


def test_direction_illegible(traces: list[Trace]) -> None:
    legible = build_pairs(traces, PairsConfig())
    illegible = build_pairs(traces, PairsConfig(direction="illegible"))
    assert [(p.chosen, p.rejected) for p in illegible.all] == [(p.rejected, p.chosen) for p in legible.all]
    assert all(p.direction == "illegible" for p in illegible.all)


def test_weights_and_counts(traces: list[Trace]) -> None:
    ps = build_pairs(
        traces, PairsConfig(transforms={"sentence_shuffle": 1.0, "sentence_reversal": 0.0}, pairs_per_trace=2)
    )
    assert {p.transform for p in ps.all} == {"sentence_shuffle"}
    assert len({p.rejected for p in ps.all}) == len(ps.all)  # the second round is a different shuffle
    with pytest.raises(ValidationError, match="unknown transform"):  # a typo fails when the config is made
        PairsConfig(transforms={"sentence_shufle": 1.0})


def test_exports_load_in_trl_and_together(traces: list[Trace], tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    check_file = pytest.importorskip("together.lib.utils").check_file
    cfg = PairsConfig(val_fraction=0.2)
    ps = build_pairs(traces, cfg)
    files = write_pairs(ps, tmp_path, pair_stats(ps, cfg))
    for split in ("train", "val"):
        ds = datasets.load_dataset("json", data_files=str(files[split]), split="train")
        assert ds.num_rows == len(getattr(ps, split))
        row = ds[0]
        assert row["prompt"][0]["role"] == "user" and row["chosen"][0]["role"] == "assistant"
        assert read_pairs(files[split]) == getattr(ps, split)  # nothing lost in the TRL file
        report = check_file(str(files[f"together_{split}"]), purpose="fine-tune")
        assert report["is_check_passed"], report["message"]
        first = json.loads(files[f"together_{split}"].read_text().splitlines()[0])
        assert set(first) == {"input", "preferred_output", "non_preferred_output"}
    stats = json.loads(files["stats"].read_text())
    assert stats["counts"]["train"] == len(ps.train) and stats["direction"] == "legible"
    assert sum(r["train"] + r["val"] for r in stats["table"]) == len(ps.all)


def test_read_pairs_errors(tmp_path: Path) -> None:
    bad = tmp_path / "train.jsonl"
    bad.write_text(json.dumps({"prompt": [], "chosen": [{"role": "assistant", "content": "x"}]}) + "\n")
    with pytest.raises(LegibilityError, match=r"train\.jsonl:1: rejected: missing"):
        read_pairs(bad)


class _CharTokenizer:
    """A stand-in tokenizer (one token per character) so the length bookkeeping is checkable by hand."""

    chat_template = None

    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
        return {"input_ids": [[0] * len(t) for t in texts]}


def test_token_stats_count_pairs_over_max_length(traces: list[Trace]) -> None:
    cfg = PairsConfig(max_length=8000, val_fraction=0.2)
    ps = build_pairs(traces, cfg)
    stats = pair_stats(ps, cfg, _CharTokenizer(), "chars")
    for split in ("train", "val"):
        pairs = getattr(ps, split)
        lens = [
            (
                len("\n\n".join([*(m.content for m in p.prompt), p.chosen])),
                len("\n\n".join([*(m.content for m in p.prompt), p.rejected])),
            )
            for p in pairs
        ]
        assert token_lengths(pairs, _CharTokenizer()) == lens
        over = sum(max(a, b) > 8000 for a, b in lens)
        assert stats["tokens"][split]["over_max_length"] == over
        assert stats["tokens"][split]["prompt_chosen"]["max"] == max(a for a, _ in lens)
    assert stats["tokens"]["train"]["over_max_length"] > 0  # the sample has CoTs longer than 8,000 characters


@pytest.mark.slow
def test_token_lengths_match_what_the_trainer_sees(traces: list[Trace]) -> None:
    """Stats count tokens exactly as training does: the chat template, tokenized in one go."""
    from legibility.models import load_tokenizer

    tok = load_tokenizer("embedded")
    pairs = build_pairs(traces, PairsConfig(val_fraction=0.0)).train[:12]
    for p, (n_chosen, n_rejected) in zip(pairs, token_lengths(pairs, tok), strict=True):
        for completion, n in ((p.chosen, n_chosen), (p.rejected, n_rejected)):
            msgs = [m.model_dump() for m in p.prompt] + [{"role": "assistant", "content": completion}]
            ids = tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]
            assert len(ids) == n


SPLIT_RULE = "val iff int(sha256(f'{seed}\\x1f{benchmark}\\x1f{problem_id}')[:8 bytes]) / 2**64 < val_fraction"


def documented_side(seed: int, benchmark: str, problem_id: str, val_fraction: float) -> str:
    """split.json's stated rule, recomputed with hashlib (the first 8 digest bytes read big-endian)."""
    digest = hashlib.sha256(f"{seed}\x1f{benchmark}\x1f{problem_id}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def assert_split_follows_its_rule(split: dict) -> int:
    """Every problem of split.json is on the side its stated rule gives; returns how many were checked."""
    assert split["rule"] == SPLIT_RULE
    seed, fraction, n = split["seed"], split["val_fraction"], 0
    for bench, sides in split["benchmarks"].items():
        for side, ids in sides.items():
            for pid in ids:
                assert documented_side(seed, bench, pid, fraction) == side, (bench, pid)
                n += 1
    return n


def test_split_sides_follow_the_documented_sha256_rule(traces: list[Trace]) -> None:
    ps = build_pairs(traces, PairsConfig(val_fraction=0.3, seed=5))
    assert assert_split_follows_its_rule(ps.split) == len({t.problem_id for t in traces})
    assert all(p.split == documented_side(5, p.benchmark, p.problem_id, 0.3) for p in ps.all)
    # the benchmark is part of the key: one id in three benchmarks falls on its own side in each
    ids = [(bench, f"p{k}") for bench in ("math", "bbh", "gpqa") for k in range(60)]
    manifest = split_manifest(ids, 0.5, 11)
    assert assert_split_follows_its_rule(manifest) == 180
    sides = {b: set(manifest["benchmarks"][b]["val"]) for b in ("math", "bbh", "gpqa")}
    assert sides["math"] != sides["bbh"] != sides["gpqa"]
