"""The grader against a hand-checked corpus of real replies (tests/data/grader_corpus.jsonl).

Rows are real answer sections of the sample traces, MATH-500 reference solutions, BBH's 3-shot CoT answers, and
rewrites of them that exercise each reading rule in both directions (right gold and wrong gold). Each row's strict
and flexible verdicts were read and checked by hand, never produced by the grader. Rows marked `exclude` are
genuinely ambiguous (their reason says why) and are reported, not scored.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import MATH500

from legibility.benchmarks import bbh
from legibility.grading import STRICT_RULES, grade
from legibility.records import Problem

CORPUS = Path(__file__).resolve().parent / "data" / "grader_corpus.jsonl"
ROWS = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
SCORED = [r for r in ROWS if not r.get("exclude")]


def problem(row: dict) -> Problem:
    if row["benchmark"] == "bbh":  # built as the loader builds it: lettered options become choices
        p = bbh.from_example(row["subtask"], {"input": row["question"], "target": row["gold"]}, index=0, canary=None,
                             source=row["source"])  # fmt: skip
        assert p is not None
        return p
    return Problem(id=row.get("problem_id") or row["id"], benchmark="math", question=row.get("question", "-"),
                   answer=row["gold"], source=row["source"])  # fmt: skip


def test_corpus_shape() -> None:
    """At least 150 rows; every benchmark kind (MATH, BBH multiple choice, BBH free form) in both directions."""
    assert len(SCORED) >= 150
    ids = [r["id"] for r in ROWS]
    assert len(ids) == len(set(ids))
    kinds: Counter[tuple[str, bool, bool]] = Counter()
    for r in ROWS:
        assert set(r) >= {"id", "benchmark", "response", "gold", "expected_correct_strict",
                          "expected_correct_flexible", "reason", "source"}, r["id"]  # fmt: skip
        assert r["reason"].strip() and "\n" not in r["reason"]
        assert not (r["expected_correct_strict"] and not r["expected_correct_flexible"]), r["id"]
        if not r.get("exclude"):
            kind = "bbh-mc" if r["benchmark"] == "bbh" and problem(r).choices else r["benchmark"]
            kinds[(kind, r["expected_correct_strict"], r["expected_correct_flexible"])] += 1
    for kind in ("math", "bbh-mc", "bbh"):
        assert kinds[(kind, True, True)] and kinds[(kind, False, False)], kind
        assert kinds[(kind, False, True)], f"{kind}: no row right only by a fallback"


def test_math_rows_name_real_problems() -> None:
    """Rows on MATH-500 problems carry that problem's id; a row whose gold is the real one matches the data."""
    gold = {item["unique_id"]: item["answer"] for item in json.loads(MATH500.read_text(encoding="utf-8"))}
    for r in ROWS:
        if r["id"].startswith("math500-ref-") and not r["id"].endswith("othergold"):
            assert gold[r["problem_id"]] == r["gold"], r["id"]


def test_grader_agrees_with_the_hand_checked_corpus() -> None:
    """100% agreement on the strict and the flexible verdict; accuracy printed per verdict and benchmark."""
    wrong: list[str] = []
    tally: Counter[str] = Counter()
    for r in SCORED:
        g = grade(problem(r), r["response"])
        bench = "bbh-mc" if r["benchmark"] == "bbh" and problem(r).choices else r["benchmark"]
        strict_ok = g.strict == r["expected_correct_strict"]
        flexible_ok = g.correct == r["expected_correct_flexible"]
        tally[f"{bench} n"] += 1
        tally[f"{bench} strict"] += strict_ok
        tally[f"{bench} flexible"] += flexible_ok
        assert not g.undecided, (r["id"], g.reason)
        assert g.strict == (g.correct and g.rule in STRICT_RULES), r["id"]
        if not (strict_ok and flexible_ok):
            want = (r["expected_correct_strict"], r["expected_correct_flexible"])
            wrong.append(f"{r['id']}: strict {g.strict}, flexible {g.correct} (want {want[0]}, {want[1]}); "
                         f"read {g.answer!r} by {g.rule}: {g.reason}")  # fmt: skip
    n = len(SCORED)
    strict_acc = sum(tally[f"{b} strict"] for b in ("math", "bbh-mc", "bbh")) / n
    flexible_acc = sum(tally[f"{b} flexible"] for b in ("math", "bbh-mc", "bbh")) / n
    print(f"\ngrader corpus: {n} scored rows ({len(ROWS) - n} excluded); strict {strict_acc:.1%}, "
          f"flexible {flexible_acc:.1%}")  # fmt: skip
    for b in ("math", "bbh-mc", "bbh"):
        print(f"  {b}: {tally[f'{b} n']} rows, strict {tally[f'{b} strict']}, flexible {tally[f'{b} flexible']}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("row", [r for r in ROWS if r.get("exclude")], ids=lambda r: r["id"])
def test_excluded_rows_say_why(row: dict) -> None:
    assert "ambiguous" in row["reason"]
    grade(problem(row), row["response"])  # still graded without error
