"""`eval_stage` end to end: readers, judges, the legible-prefix ablation and every table, on a handcrafted run folder.

- With a scripted pool (`FakePool`: each reader and judge a `Scripted` model behind the real `CachedModel`), every
  table has its documented columns and numbers that can be checked by hand: the taxonomy of crafted outcomes (a C2
  pass whose answer equals the reader's C4 answer counts as a pass; the leak detector's verdict makes an item
  ANSWER_LEAKED), reader accuracy, uplift, curves, the legible prefix, validity and the judges.
- A rerun of a finished evaluation sends 0 requests (scripted models and the real embedded model), and the real
  model runs 0 forward passes; its records are byte-identical.
- SIGKILL in the middle of `legibility eval` (a subprocess on a tiny real run folder) and a rerun end with the same
  records as an uninterrupted run, none twice, and resend nothing the killed run had finished.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from legibility.benchmarks.prompts import messages
from legibility.config import ExperimentConfig, ModelSpec, load_config
from legibility.evaluate import summarize as S
from legibility.evaluate.accuracy import ACCURACY_COLUMNS, PAIRED_COLUMNS
from legibility.evaluate.items import EvalItem
from legibility.evaluate.pipeline import eval_stage
from legibility.models.base import Completion, Sampling, Scores
from legibility.models.cached import CachedModel
from legibility.pairs import trl_row
from legibility.records import Generation, Judgement, Message, Pair, Problem, Reading, read_jsonl, write_jsonl

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------ the crafted run

ANSWERS = {"q1": "42", "q2": "7", "q3": "12", "q4": "9", "q5": "2", "q6": "3"}
PROBLEMS = {q: Problem(id=q, benchmark="math", question=f"Problem {q}: add the two numbers of {q}.", answer=a,
                       source=f"test:{q}") for q, a in ANSWERS.items()}  # fmt: skip

# What each reasoning reader gets right without the CoT: C1 (solves alone) and C4 (answers at once), per problem.
KNOWS = {
    "r1": {"c1": {"q1", "q2", "q4", "q6"}, "c4": {"q1", "q4"}},
    "r2": {"c1": {"q1", "q2", "q4", "q6"}, "c4": {"q4"}},
}
# With a CoT (C2, prefill, early answering, legible prefix), reader r answers right iff the CoT holds "clear-to-r"
# and no "garbled"; the leak detector fires on "leaky-cot"; the judge scores a chunk 8 if it holds "garbled", else 2.
ITEM_C_HEAD = "item-c. clear-to-r1. We add the tens first, then the units, and then we check the sum."
ITEM_C = ITEM_C_HEAD.ljust(100) + "garbled garbled words follow here and nobody can follow them at all."
GENERATIONS = [
    # (generator, problem, CoT, generator correct)          expected outcome
    ("base", "q1", "item-a. clear-to-r1 and clear-to-r2. We add the tens, then the units.", True),  # LEGIBLE
    ("adapter", "q1", ITEM_C, True),  # ILLEGIBLE (both readers fail C2); the legible prefix fixes r1
    ("base", "q2", "item-b. clear-to-r1 clear-to-r2. leaky-cot: it says the total outright.", True),  # LEAKED
    ("adapter", "q2", "item-d. We add the wrong numbers.", False),  # generator_wrong
    ("base", "q3", "item-f. clear-to-r1 clear-to-r2. We add them.", True),  # too_hard (both fail C1)
    ("adapter", "q3", "item-g. clear-to-r2 only. We add them.", True),  # too_hard
    ("base", "q4", "item-h. We add the numbers.", True),  # too_easy (both pass C4); the leak reply is unparsable
    ("adapter", "q4", "item-e. We add.", True),  # too_easy
]
INTACT = "clear-to-r1 clear-to-r2. We take seven away from ten."
CORRUPTED = {
    "sentence_shuffle": "We take seven away from ten. clear-to-r1 clear-to-r2.",
    "number_substitution": "garbled clear-to-r1 clear-to-r2. We take eight away from ten.",
}


def generation(generator: str, q: str, cot: str, correct: bool, error: str | None = None) -> Generation:
    p = PROBLEMS[q]
    answer = "" if error else f"The answer is \\boxed{{{p.answer if correct else '1000'}}}."
    return Generation(
        id=f"{generator}/{q}/0", problem_id=q, benchmark="math", generator=generator, prompt=messages(p),
        reasoning=cot, answer_text=answer, correct=correct, correct_strict=None if error else correct,
        complete=not error, raw=f"<think>\n{cot}\n</think>\n\n{answer}" if not error else "", error=error,
    )  # fmt: skip


def pair(transform: str, rejected_cot: str) -> Pair:
    p = PROBLEMS["q6"]
    final = "\n</think>\n\nThe answer is \\boxed{3}."
    return Pair(
        id=f"gen-x/q6/0#{transform}", prompt=messages(p), chosen=f"<think>\n{INTACT}{final}",
        rejected=f"<think>\n{rejected_cot}{final}", transform=transform, trace_id="gen-x/q6/0", split="val",
        problem_id="q6", generator="gen-x", benchmark="math",
    )  # fmt: skip


def crafted_run(run_dir: Path) -> Path:
    """problems.jsonl, eval/generations.jsonl (8 CoTs and one failed request) and pairs/val.jsonl (one trace,
    intact and in two corrupted copies)."""
    write_jsonl(run_dir / "problems.jsonl", PROBLEMS.values())
    gens = [generation(*g) for g in GENERATIONS] + [generation("base", "q5", "", False, error="HTTP 500")]
    write_jsonl(run_dir / "eval" / "generations.jsonl", gens)
    (run_dir / "pairs").mkdir(parents=True, exist_ok=True)
    rows = [trl_row(pair(t, cot)) for t, cot in CORRUPTED.items()]
    (run_dir / "pairs" / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return run_dir


def fake_config(run_dir: Path) -> ExperimentConfig:
    readers = [{"name": "r1", "model": "fake-r1"}, {"name": "r2", "model": "fake-r2"},
               {"name": "leak", "model": "fake-leak", "role": "leak_detector"}]  # fmt: skip
    judges = {"judges": [{"name": "judge", "model": "fake-judge"}], "scoring": "generate", "chunk_chars": 100,
              "threshold": 6}  # fmt: skip
    data: dict[str, Any] = {
        "name": "fake",
        "run_dir": str(run_dir),
        "readers": {
            "readers": readers,
            "answer_sampling": {"max_new_tokens": 8, "temperature": 0.0, "top_p": 1.0},
            "solve_sampling": {"max_new_tokens": 8, "temperature": 0.0, "top_p": 1.0},
        },
        "judges": judges,
        "metrics": {"fractions": [0.0, 1.0], "n_boot": 100},
    }
    return ExperimentConfig.model_validate(data)


# ------------------------------------------------------------------------------------------ scripted models


def _marker(text: str) -> str:
    m = re.search(r"\bq\d\b", text)
    assert m, text[:200]
    return m.group(0)


class Scripted:
    """A ChatModel whose replies follow the rules above, deterministic in the request alone. `fail_once` holds
    (model, problem, condition) triples whose first request fails (the set is shared, so it fails once in all)."""

    supports_scoring = True

    def __init__(self, name: str, fail_once: set[tuple[str, str, str]] | None = None) -> None:
        self.name = name
        self.fail_once = fail_once if fail_once is not None else set()
        self.seen: list[tuple[str, list[Message]]] = []

    def _reply(self, chat: list[Message], op: str) -> Completion:
        self.seen.append((op, chat))
        text = chat[0].content
        if text.startswith("You are auditing"):
            if "item-h" in text:
                return Completion("I am not sure.", "stop")
            return Completion("LEAK: YES" if "leaky-cot" in text else "LEAK: NO", "stop")
        if "rate a model's written reasoning" in text:
            return Completion("Looks fine." if "item-f" in text else "Legibility: 3\nCoverage: 2", "stop")
        if "rate how readable" in text:
            piece = text.split("<reasoning_piece>")[1].split("</reasoning_piece>")[0]
            return Completion("Score: 8" if "garbled" in piece else "Score: 2", "stop")
        q = _marker(text)
        if len(chat) == 1:
            cond = "c4" if "Do not reason" in text else "c1"
            if (self.name, q, cond) in self.fail_once:
                self.fail_once.discard((self.name, q, cond))
                return Completion("", None, error="HTTP 503")
            right = q in KNOWS[self.name][cond]
        else:
            cot = chat[1].content
            right = f"clear-to-{self.name}" in cot and "garbled" not in cot
        value = ANSWERS[q] if right else "1000"
        return Completion(value + "}" if op == "continue" else f"\\boxed{{{value}}}", "stop")

    def generate(self, chats: list[list[Message]], sampling: Sampling) -> list[Completion]:
        return [self._reply(c, "generate") for c in chats]

    def continue_(self, chats: list[list[Message]], sampling: Sampling) -> list[Completion]:
        return [self._reply(c, "continue") for c in chats]

    def score(self, chats: list[list[Message]], targets: list[str]) -> list[Scores]:
        """Uplift: log p(gold) is -0.5 with a CoT, -2.0 with an empty one (uplift 1.5); surprisal: 1 nat per token."""
        out = []
        for c, t in zip(chats, targets, strict=True):
            self.seen.append(("score", c))
            has_cot = len(c) > 1 and c[1].content.replace("<think>", "").replace("</think>", "").strip()
            out.append(Scores([-0.5 if has_cot else -2.0]) if t.startswith("\\boxed{") else Scores([-1.0, -1.0]))
        return out


class FakePool:
    """What eval_stage needs from `ModelPool`: scripted models (by spec name) behind the run's disk cache."""

    def __init__(self, cache_dir: Path, fail_once: set[tuple[str, str, str]] | None = None) -> None:
        self.cache_dir, self.fail_once = cache_dir, fail_once
        self.by_name: dict[str, CachedModel] = {}

    def get(self, spec: ModelSpec) -> CachedModel:
        if spec.name not in self.by_name:
            self.by_name[spec.name] = CachedModel(Scripted(spec.name, self.fail_once), self.cache_dir)
        return self.by_name[spec.name]

    def counts(self) -> dict[str, int]:
        return {k: sum(getattr(m, k) for m in self.by_name.values()) for k in ("calls", "requests", "hits")}

    def seen(self) -> int:
        return sum(len(m.inner.seen) for m in self.by_name.values())


OUTPUTS = ("readings.jsonl", "judgements.jsonl", "taxonomy.jsonl")
TABLES = {
    "accuracy": ACCURACY_COLUMNS, "paired": ["a", "b", *PAIRED_COLUMNS], "readers": S.READERS_COLUMNS,
    "uplift": S.UPLIFT_COLUMNS, "taxonomy": S.TAXONOMY_COLUMNS, "curves": S.CURVES_COLUMNS, "aoc": S.AOC_COLUMNS,
    "prefix": S.PREFIX_COLUMNS, "validity": S.VALIDITY_COLUMNS, "agreement": S.AGREEMENT_COLUMNS,
    "judges": S.JUDGES_COLUMNS,
}  # fmt: skip


def table(run_dir: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(run_dir / "eval" / "tables" / f"{name}.csv", keep_default_na=False, na_values=[""])


def row(df: pd.DataFrame, **match: Any) -> dict[str, Any]:
    sel = df
    for k, v in match.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, f"{match}: {len(sel)} rows in\n{df}"
    return sel.iloc[0].to_dict()


def outputs(run_dir: Path) -> dict[str, bytes]:
    out = {n: (run_dir / "eval" / n).read_bytes() for n in OUTPUTS}
    out |= {f"tables/{p.name}": p.read_bytes() for p in sorted((run_dir / "eval" / "tables").glob("*.csv"))}
    return out


@pytest.fixture(scope="module")
def scripted_eval(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The crafted run evaluated once by the scripted pool: (run folder, summary)."""
    run_dir = crafted_run(tmp_path_factory.mktemp("scripted"))
    return run_dir, eval_stage(fake_config(run_dir), pool=FakePool(run_dir / "cache"), progress=False)


# ------------------------------------------------------------------------------------------ scripted tests


def test_every_table_has_its_documented_columns(scripted_eval: tuple[Path, dict[str, Any]]) -> None:
    run_dir, summary = scripted_eval
    for name, columns in TABLES.items():
        df = table(run_dir, name)
        assert list(df.columns) == columns, name
        assert len(df) > 0, name
    counts = summary["counts"]
    assert {k: v for k, v in counts.items() if k not in ("calls", "requests", "hits")} == {
        "generations": 9, "generation_failures": 1, "items": 8, "validity_items": 3,
        "readings": len(read_jsonl(run_dir / "eval" / "readings.jsonl", Reading)),
        "reading_failures": 1,  # the leak detector's unparsable reply on item-h
        "judgements": 10 + 11,  # rubric on the 10 correct CoTs (7 generated + 3 validity), illegibility on all 11
        "judgement_failures": 1,  # the judge's unparsable rubric reply on item-f
    }  # fmt: skip
    assert counts["requests"] > 0 and counts["calls"] > 0
    assert summary["note"] is None  # not the embedded model
    assert summary["judge_method"] == "generate"


def test_taxonomy_of_crafted_outcomes(scripted_eval: tuple[Path, dict[str, Any]]) -> None:
    run_dir, _ = scripted_eval
    tax = table(run_dir, "taxonomy")
    zero = {"no_readers": 0, "generator_undecided": 0, "generator_wrong": 0, "too_hard": 0, "too_easy": 0,
            "leak_unknown": 0, "ANSWER_LEAKED": 0, "REASONING_LEGIBLE": 0, "ILLEGIBLE": 0}  # fmt: skip
    cols = list(zero)
    assert {k: row(tax, generator="base")[k] for k in ["n_items", *cols]} == zero | {
        "n_items": 4, "too_hard": 1, "too_easy": 1, "ANSWER_LEAKED": 1, "REASONING_LEGIBLE": 1}  # fmt: skip
    assert {k: row(tax, generator="adapter")[k] for k in ["n_items", *cols]} == zero | {
        "n_items": 4, "generator_wrong": 1, "too_hard": 1, "too_easy": 1, "ILLEGIBLE": 1}  # fmt: skip
    assert {k: row(tax, generator="all")[k] for k in ["n_items", *cols]} == zero | {
        "n_items": 8, "generator_wrong": 1, "too_hard": 2, "too_easy": 2, "ANSWER_LEAKED": 1,
        "REASONING_LEGIBLE": 1, "ILLEGIBLE": 1}  # fmt: skip

    labels = {r["item_id"]: r for r in (json.loads(x) for x in (run_dir / "eval/taxonomy.jsonl").open())}
    assert {k: (v["label"], v["filtered_by"]) for k, v in labels.items()} == {
        "base/q1/0": ("REASONING_LEGIBLE", None), "adapter/q1/0": ("ILLEGIBLE", None),
        "base/q2/0": ("ANSWER_LEAKED", None), "adapter/q2/0": (None, "generator_wrong"),
        "base/q3/0": (None, "too_hard"), "adapter/q3/0": (None, "too_hard"),
        "base/q4/0": (None, "too_easy"), "adapter/q4/0": (None, "too_easy"),
    }  # fmt: skip
    # item-a: r1 passes C2 with the answer it also gives at C4 (42); that is a pass (2 of 2), not a fail (the
    # reference's rule would make it 1 of 2, ILLEGIBLE); C4 is 1 of 2, so the item is not too easy.
    a = labels["base/q1/0"]
    assert (a["c1"], a["c2"], a["c4"]) == ([2, 2, 2], [2, 2, 2], [1, 2, 2])  # (passed, answered, asked)
    readings = {r.id: r for r in read_jsonl(run_dir / "eval" / "readings.jsonl", Reading)}
    c2, c4 = readings["r1/c2/base/q1/0"], readings["r1/c4/q1"]
    assert c2.correct and c4.correct and c2.answer == c4.answer == "42"
    assert labels["adapter/q2/0"]["filters_hit"] == ["generator_wrong"]
    leak = readings["leak/leak/base/q2/0"]  # item-b reads like item-a: only the detector makes it ANSWER_LEAKED
    assert (leak.role, leak.answer, leak.correct) == ("leak_detector", "yes", True)
    assert readings["leak/leak/base/q4/0"].error is not None and readings["leak/leak/base/q4/0"].correct is None
    # item-h's leak check failed: unknown, not "no leak" (too_easy removes it first, the filter still counts it)
    assert labels["base/q4/0"]["filters_hit"] == ["too_easy", "leak_unknown"]


def test_reader_uplift_curve_and_prefix_tables(scripted_eval: tuple[Path, dict[str, Any]]) -> None:
    run_dir, _ = scripted_eval
    rd = table(run_dir, "readers")
    # C1 on the 4 problems with items (q1-q4): r1 right on q1, q2, q4
    assert row(rd, reader="r1", condition="c1")["accuracy"] == 0.75
    assert row(rd, reader="r1", condition="c4")["accuracy"] == 0.5  # q1, q4
    assert row(rd, reader="r2", condition="c4")["accuracy"] == 0.25  # q4
    for cond in ("c2", "c2_prefill"):
        assert row(rd, reader="r1", condition=cond, generator="base")["accuracy"] == 0.75  # a, b, f
        assert row(rd, reader="r1", condition=cond, generator="adapter")["accuracy"] == 0.0
        assert row(rd, reader="r2", condition=cond, generator="adapter")["accuracy"] == 0.25  # g
    assert set(rd["reader"]) == {"r1", "r2"} and (rd["failed"] == 0).all()
    # C2 on the CoTs the generator got right (adapter/q2 is wrong) and on those the detector cleared (not b, h)
    r2 = row(rd, reader="r2", condition="c2", generator="adapter")
    assert (r2["n_gen_right"], r2["acc_gen_right"]) == (3, pytest.approx(1 / 3))
    r1 = row(rd, reader="r1", condition="c2", generator="base")
    assert (r1["n_gen_right"], r1["acc_gen_right"], r1["n_no_leak"], r1["acc_no_leak"]) == (4, 0.75, 2, 1.0)
    assert pd.isna(row(rd, reader="r1", condition="c1")["n_gen_right"])  # per problem: no CoT to condition on

    up = row(table(run_dir, "uplift"), reader="r1", generator="all")
    # 8 items: C2 right on a, b, f; C4 right on the q1 and q4 items (a, c, h, e): a of those passes C2
    assert (up["n"], up["p_c2"], up["p_c4"], up["uplift"]) == (8, 3 / 8, 0.5, 3 / 8 - 0.5)
    assert (up["p_c2_given_c4_right"], up["p_c2_given_c4_wrong"]) == (0.25, 0.5)
    assert (up["answer_uplift"], up["surprisal"]) == (1.5, 1.0)  # -0.5 - (-2.0); 1 nat per token
    # the 6 CoTs the detector cleared (not b: leaked; not h: check failed): C2 right on a, f; C4 on a, c, e
    assert (up["n_no_leak"], up["uplift_no_leak"], up["answer_uplift_no_leak"]) == (6, pytest.approx(-1 / 6), 1.5)

    curves = table(run_dir, "curves")
    assert row(curves, generator="base", reader="r1", cots="all", fraction=0.0)["accuracy"] == 0.0  # no clue
    assert row(curves, generator="base", reader="r1", cots="all", fraction=1.0)["accuracy"] == 0.75
    assert row(curves, generator="base", reader="r1", cots="all", fraction=0.0)["uplift"] == 0.0  # empty CoT
    aoc = table(run_dir, "aoc")
    assert row(aoc, generator="base", reader="r1", cots="all", measure="gold")["aoc"] == pytest.approx(0.375)
    # against the generator's own answer: adapter/q2's wrong answer (1000) is what a reader with no clue says
    own = row(curves, generator="adapter", reader="r1", cots="all", fraction=0.0)
    assert (own["accuracy"], own["agreement"], own["n_agreement"]) == (0.0, 0.25, 4)
    clean = row(curves, generator="base", reader="r1", cots="no_leak", fraction=1.0)
    assert (clean["accuracy"], clean["n"]) == (1.0, 2)  # a and f; b leaked, h unknown

    prefix = table(run_dir, "prefix")
    assert {k: row(prefix, generator="adapter")[k] for k in ("judge", "reader", "n", "n_cut", "failed", "acc_full",
                                                             "acc_prefix")} == {
        "judge": "judge", "reader": "r1", "n": 4, "n_cut": 1, "failed": 0, "acc_full": 0.0,
        "acc_prefix": 0.25}  # fmt: skip
    assert {k: row(prefix, generator="base")[k] for k in ("n", "n_cut", "acc_full", "acc_prefix")} == {
        "n": 4, "n_cut": 0, "acc_full": 0.75, "acc_prefix": 0.75}  # fmt: skip
    readings = {r.id: r for r in read_jsonl(run_dir / "eval" / "readings.jsonl", Reading)}
    cut = readings["r1/prefix/adapter/q1/0"]
    assert cut.condition == "prefix" and cut.correct
    assert not any(r.condition == "prefix" for r in readings.values() if r.item_id != "adapter/q1/0")


def test_a_failed_prefix_reading_is_dropped_and_counted_never_given_the_full_verdict() -> None:
    def reading(cond: str, item_id: str, correct: bool | None) -> Reading:
        error = None if correct is not None else "x"
        return Reading(id=f"r/{cond}/{item_id}", item_id=item_id, problem_id="q1", benchmark="math", generator="g",
                       reader="r", condition=cond, correct=correct, error=error)  # fmt: skip

    readings = [reading("c2", "i1", True), reading("prefix", "i1", None), reading("c2", "i2", False),
                reading("prefix", "i2", True), reading("c2", "i3", True)]  # fmt: skip
    meta = {i: {"judge": "j", "reader": "r", "cut": i != "i3"} for i in ("i1", "i2", "i3")}
    got = row(S.prefix_table(readings, meta), generator="g")
    # i1's prefix failed: the old table gave it the whole CoT's pass (n 3, acc_prefix 2/3)
    assert {k: got[k] for k in ("n", "n_cut", "failed", "acc_full", "acc_prefix")} == {
        "n": 2, "n_cut": 1, "failed": 1, "acc_full": 0.5, "acc_prefix": 1.0}  # fmt: skip


def test_an_undecided_generator_grade_is_counted_apart_not_wrong() -> None:
    p = PROBLEMS["q1"]
    it = EvalItem("g/q1/0", p, "clear-to-r1", "", "g", None)
    (o,) = S.item_outcomes([it], [])
    assert o.generator_correct is None and o.leak_detected is None  # no detector ran: the leak is unknown
    tax, records = S.taxonomy_tables([o])
    assert records[0]["filters_hit"] == ["no_readers", "generator_undecided", "leak_unknown"]
    assert row(tax, generator="all")["generator_wrong"] == 0


def test_judges_and_validity_tables(scripted_eval: tuple[Path, dict[str, Any]]) -> None:
    run_dir, _ = scripted_eval
    judgements = {j.id: j for j in read_jsonl(run_dir / "eval" / "judgements.jsonl", Judgement)}
    c = judgements["judge/illegibility/adapter/q1/0"]
    assert (c.chunk_scores, c.mean, c.share_above, c.threshold) == ([2.0, 8.0], 5.0, 0.5, 6.0)
    assert judgements["judge/rubric/base/q3/0"].error is not None
    assert "judge/rubric/adapter/q2/0" not in judgements  # the rubric reads correct CoTs only
    jt = table(run_dir, "judges")
    base = row(jt, kind="rubric", generator="base", transform="intact", metric="legibility")
    assert (base["n"], base["mean"], base["failed"]) == (3, 3.0, 1)  # a, b, h scored; f unparsable
    ill = row(jt, kind="illegibility", generator="adapter", transform="intact", metric="illegibility_mean")
    assert (ill["n"], ill["mean"]) == (4, (5.0 + 2 + 2 + 2) / 4)

    val = table(run_dir, "validity")
    assert set(val["transform"]) == set(CORRUPTED)
    for metric, shuffle, numsub in [("c2:r1", 0.5, 1.0), ("illegibility_mean:judge", 0.5, 1.0),
                                    ("surprisal:r1", 0.5, 0.5), ("uplift:r1", 0.5, 0.5)]:  # fmt: skip
        got = (
            row(val, metric=metric, transform="sentence_shuffle"),
            row(val, metric=metric, transform="number_substitution"),
        )
        assert [g["auroc"] for g in got] == [shuffle, numsub], metric
        assert [g["paired_win_rate"] for g in got] == [shuffle, numsub], metric
        assert [g["n_traces"] for g in got] == [1, 1]


def test_a_rerun_sends_no_request_and_writes_the_same_records(
    scripted_eval: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    first_dir, first = scripted_eval
    run_dir = tmp_path / "run"
    shutil.copytree(first_dir, run_dir)
    pool = FakePool(run_dir / "cache")
    again = eval_stage(fake_config(run_dir), pool=pool, progress=False)
    c1, c2 = first["counts"], again["counts"]
    assert c1["requests"] > 0 and c1["calls"] > 0
    assert (c2["requests"], c2["calls"]) == (0, 0) and pool.seen() == 0
    assert c2["hits"] == c1["hits"] + c1["requests"]  # every request of the first run, now from the cache
    assert outputs(run_dir) == outputs(first_dir)


def test_a_failed_request_is_not_cached_and_is_retried_alone(tmp_path: Path) -> None:
    run_dir = crafted_run(tmp_path / "run")
    fail_once = {("r2", "q2", "c1")}
    cfg = fake_config(run_dir)
    first = eval_stage(cfg, pool=FakePool(run_dir / "cache", fail_once), progress=False)
    bad = {r.id: r for r in read_jsonl(run_dir / "eval" / "readings.jsonl", Reading)}["r2/c1/q2"]
    assert bad.error == "HTTP 503" and bad.correct is None  # a failure, never a wrong answer
    assert first["counts"]["reading_failures"] == 2
    pool = FakePool(run_dir / "cache", fail_once)
    again = eval_stage(cfg, pool=pool, progress=False)
    assert again["counts"]["requests"] == 1 and pool.seen() == 1
    good = {r.id: r for r in read_jsonl(run_dir / "eval" / "readings.jsonl", Reading)}["r2/c1/q2"]
    assert good.error is None and good.correct is True
    assert again["counts"]["reading_failures"] == 1


def test_accuracy_tables_count_failures_apart(scripted_eval: tuple[Path, dict[str, Any]]) -> None:
    run_dir, _ = scripted_eval
    acc = table(run_dir, "accuracy")
    base, adapter = row(acc, generator="base", benchmark="all"), row(acc, generator="adapter", benchmark="all")
    assert (base["n"], base["failed"], base["accuracy"]) == (4, 1, 1.0)  # the failed request is not a wrong answer
    assert (adapter["n"], adapter["failed"], adapter["accuracy"]) == (4, 0, 0.75)
    paired = row(table(run_dir, "paired"), benchmark="all")
    assert (paired["a"], paired["b"], paired["n_problems"], paired["diff"]) == ("adapter", "base", 4, -0.25)


# ------------------------------------------------------------------------------- the real model, the CLI, SIGKILL

TINY = [
    "pairs.max_length=384", "pairs.transforms={sentence_shuffle: 1, number_substitution: 1}", "pairs.pairs_per_trace=2",
    "data.benchmarks=[{name: math, path: data/samples/math500_sample.jsonl, levels: null}]",
    "generate.generators=[{name: base}]", "generate.max_problems=1", "generate.sampling.max_new_tokens=16",
    "readers.solve_sampling.max_new_tokens=8", "readers.answer_sampling.max_new_tokens=4",
    "metrics.fractions=[0.0, 1.0]", "metrics.validity_traces=1", "metrics.n_boot=100", "judges.rubric=false",
]  # fmt: skip
"""The demo config shrunk: the 20 sample problems, one held-out problem sampled once by the base model (no training
needed), one validity trace in two corrupted copies, short replies; judges score label probabilities (as the demo)."""


def tiny_sets(run_dir: Path) -> list[str]:
    return [*TINY, f"run_dir={run_dir}"]


def env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip


def eval_cli(run_dir: Path) -> list[str]:
    sets = [a for s in tiny_sets(run_dir) for a in ("--set", s)]
    return [sys.executable, "-m", "legibility", "eval", "configs/demo.yaml", *sets]


def cache_entries(run_dir: Path) -> set[str]:
    return {p.name for p in (run_dir / "cache").glob("??/*.json")}


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run folder made by the real stages (problems, traces, pairs, generation), ready for `eval`."""
    from legibility.evaluate.generate import generate_stage
    from legibility.stages import pairs_stage, problems_stage, traces_stage

    run_dir = tmp_path_factory.mktemp("real") / "run"
    cfg = load_config(ROOT / "configs" / "demo.yaml", tiny_sets(run_dir))
    cwd = os.getcwd()
    os.chdir(ROOT)  # the config's data paths are relative to the repository
    try:
        problems_stage(cfg)
        traces_stage(cfg)
        pairs_stage(cfg)
        generate_stage(cfg, progress=False)
    finally:
        os.chdir(cwd)
    return run_dir


@pytest.fixture(scope="module")
def finished_eval(real_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted `legibility eval` on a copy of the real run folder."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    shutil.copytree(real_run, run_dir)
    r = subprocess.run(eval_cli(run_dir), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir


def summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "eval" / "summary.json").read_text())


@pytest.mark.slow
def test_a_rerun_with_the_embedded_model_runs_no_forward_pass(
    finished_eval: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers.models.llama import modeling_llama

    forward = modeling_llama.LlamaForCausalLM.forward
    passes = []

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        passes.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(modeling_llama.LlamaForCausalLM, "forward", counted)
    run_dir = tmp_path / "run"
    shutil.copytree(finished_eval, run_dir)
    cfg = load_config(ROOT / "configs" / "demo.yaml", tiny_sets(run_dir))
    first = summary(finished_eval)["counts"]
    assert first["requests"] > 0

    again = eval_stage(cfg, progress=False)  # the default pool: the embedded model behind the run's cache
    assert (again["counts"]["requests"], again["counts"]["calls"], len(passes)) == (0, 0, 0)
    assert again["counts"]["hits"] == first["hits"] + first["requests"]
    assert outputs(run_dir) == outputs(finished_eval)

    # the counter counts: without the one cached C1 reply (the only request with solve_sampling's 8 tokens), the
    # rerun sends exactly that request, runs the model for it, and writes the same records
    c1 = [p for p in (run_dir / "cache").glob("??/*.json")
          if json.loads(p.read_text())["key"].get("sampling", {}).get("max_new_tokens") == 8]  # fmt: skip
    assert len(c1) == 1
    c1[0].unlink()
    again = eval_stage(cfg, progress=False)
    assert again["counts"]["requests"] == 1 and len(passes) > 0
    assert outputs(run_dir) == outputs(finished_eval)


@pytest.mark.slow
def test_sigkill_mid_eval_then_rerun_gives_the_same_records_none_twice(
    real_run: Path, finished_eval: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(real_run, run_dir)
    before = cache_entries(run_dir)  # the generation's replies
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(eval_cli(run_dir), cwd=ROOT, env=env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        # kill once the evaluation has cached a few replies and the last batch's writes have settled
        deadline, seen, stable_since = time.monotonic() + 600, 0, time.monotonic()
        while time.monotonic() < deadline and proc.poll() is None:
            n = len(cache_entries(run_dir) - before)
            if n != seen:
                seen, stable_since = n, time.monotonic()
            elif n >= 2 and time.monotonic() - stable_since > 0.3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "eval finished before it could be killed: " + (tmp_path / "killed.log").read_text()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    assert proc.returncode == -signal.SIGKILL
    killed = cache_entries(run_dir) - before
    final = cache_entries(finished_eval) - before
    assert 0 < len(killed) < len(final) and killed <= final
    assert not (run_dir / "eval" / "readings.jsonl").exists()  # records are written once, at the end

    r = subprocess.run(eval_cli(run_dir), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert outputs(run_dir) == outputs(finished_eval)
    for name, kind in (("readings.jsonl", Reading), ("judgements.jsonl", Judgement)):
        ids = [x.id for x in read_jsonl(run_dir / "eval" / name, kind)]
        assert len(ids) == len(set(ids)) > 0, name
    assert cache_entries(run_dir) == cache_entries(finished_eval)
    # nothing the killed run finished is sent again: the same lookups, fewer requests by at least its replies
    full, resumed = summary(finished_eval)["counts"], summary(run_dir)["counts"]
    assert resumed["requests"] + resumed["hits"] == full["requests"] + full["hits"]
    assert resumed["requests"] <= full["requests"] - len(killed)
