"""The masking corpus (tests/data/masking_corpus.jsonl): real sentences from BBH's CoT prompts and the shipped MATH
traces, and hand-written cases, each with the masked text it must give. Every rule has rows on both sides (must
mask, must keep); all mismatches are reported at once."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from legibility.evaluate.masking import mask_for_problem
from legibility.grading import LETTERS
from legibility.records import Problem

CORPUS = Path(__file__).parent / "data" / "masking_corpus.jsonl"
# Option texts that no corpus sentence uses by accident, so a row tests the rule it names.
TEXTS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def problem(row: dict) -> Problem:
    """The problem context a row names: benchmark, gold, option count (GPQA: choices; BBH: options in the question)."""
    texts = TEXTS[: row.get("n_options", 0)]
    if row["benchmark"] == "gpqa":
        return Problem(id=row["id"], benchmark="gpqa", question="Which?", choices=texts, answer=row["gold"], source="c")
    if row["benchmark"] == "bbh":
        options = "\n".join(f"({letter}) {t}" for letter, t in zip(LETTERS, texts, strict=False))
        question = f"Which?\nOptions:\n{options}"
        return Problem(id=row["id"], benchmark="bbh", question=question, answer=f"({row['gold']})", source="c")
    return Problem(id=row["id"], benchmark="math", question="Compute.", answer=row["gold"], source="c")


def test_corpus_covers_both_sides_of_every_rule(rows):
    assert len(rows) >= 60
    assert len({r["id"] for r in rows}) == len(rows)
    sides = Counter((r["rule"], r["side"]) for r in rows)
    for rule in {r["rule"] for r in rows}:
        assert sides[(rule, "mask")] and sides[(rule, "keep")], f"rule {rule} lacks a side: {dict(sides)}"
    for r in rows:
        assert r["side"] == "keep" or r["input"] != r["expected"], f"{r['id']}: a must-mask row that masks nothing"
        assert "gpqa" not in r["source"].lower(), f"{r['id']}: no GPQA text in the repository"


def test_every_corpus_row_masks_as_expected(rows):
    bad = []
    for r in rows:
        scope = {"gold_value": r["gold_value"]} if "gold_value" in r else {}
        got = mask_for_problem(r["input"], problem(r), **scope).text
        if got != r["expected"]:
            bad.append(
                f"{r['id']} [{r['rule']}/{r['side']}] {r['input']!r}\n    want {r['expected']!r}\n    got  {got!r}"
            )
    assert not bad, f"{len(bad)} of {len(rows)} rows differ:\n" + "\n".join(bad)
