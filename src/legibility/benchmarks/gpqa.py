"""GPQA (Diamond) from the original CSV layout, with deterministically shuffled choices.

The CSV always lists the correct answer first, so choices are shuffled. Each item gets its own RNG seeded
from `seed` and its Record ID: adding or removing rows never changes another item's order.
`source` is "path:line" with the physical line the row *starts* on (fields hold newlines, so rows span
several lines; the header is line 1).
"""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from legibility.benchmarks.prompts import letters
from legibility.errors import LegibilityError
from legibility.records import Problem

DEFAULT_SEED = 42
CORRECT = "Correct Answer"
INCORRECT = ("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
REQUIRED = ("Question", CORRECT, *INCORRECT, "Record ID")
SUBJECT = "Subdomain"
DOMAIN = "High-level domain"
CANARY = "Canary String"

HF_DATASET = "Idavidrein/gpqa"
HF_CONFIG = "gpqa_diamond"
HF_SPLIT = "train"

Row = tuple[str, int, Mapping[str, Any]]  # (source, row number from 1, row)


def load(path: str | os.PathLike, *, seed: int = DEFAULT_SEED) -> list[Problem]:
    """Load a GPQA CSV file; see the module docstring for shuffling and `source`."""
    p = Path(path)
    if not p.is_file():
        raise LegibilityError(f"{p}: no such GPQA CSV file")
    return from_rows(read_csv(p), seed=seed)


def read_csv(path: Path) -> Iterator[Row]:
    """Yield rows with the line each starts on; a missing required column fails before any row."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise LegibilityError(f"{path}: empty file (expected a GPQA CSV header)")
        for col in REQUIRED:
            if col not in header:
                raise LegibilityError(f"{path}: missing column {col!r}")
        n = 0
        start = reader.line_num + 1
        for values in reader:
            line, start = start, reader.line_num + 1
            if not any(v.strip() for v in values):
                continue
            n += 1
            if len(values) != len(header):
                raise LegibilityError(f"{path}:{line}: row {n} has {len(values)} fields, the header has {len(header)}")
            yield f"{path}:{line}", n, dict(zip(header, values, strict=True))


def from_rows(rows: Iterable[Row], *, seed: int = DEFAULT_SEED) -> list[Problem]:
    """Problems from CSV-shaped rows (also used for the Hugging Face copy, which has the same columns)."""
    out: list[Problem] = []
    seen: dict[str, str] = {}
    for source, n, row in rows:
        problem = from_row(row, source=source, n=n, seed=seed)
        if problem.id in seen:
            raise LegibilityError(f"{source}: duplicate Record ID (first at {seen[problem.id]})")
        seen[problem.id] = source
        out.append(problem)
    return out


def from_row(row: Mapping[str, Any], *, source: str, n: int, seed: int = DEFAULT_SEED) -> Problem:
    fields = {}
    for col in REQUIRED:
        value = row.get(col)
        text = "" if value is None else str(value).strip()
        if not text:
            raise LegibilityError(f"{source}: row {n}: field {col!r} is empty")
        fields[col] = text
    record_id = fields["Record ID"]
    choices, answer = shuffle_choices(fields[CORRECT], [fields[c] for c in INCORRECT], seed, record_id)
    meta: dict[str, Any] = {"record_id": record_id, "high_level_domain": _opt(row, DOMAIN)}
    if canary := _opt(row, CANARY):
        meta["canary"] = canary
    return Problem(
        id=f"gpqa/{record_id}",
        benchmark="gpqa",
        question=fields["Question"],
        choices=choices,
        answer=answer,
        answer_text=fields[CORRECT],
        subject=_opt(row, SUBJECT),
        source=source,
        meta=meta,
    )


def shuffle_choices(correct: str, incorrect: list[str], seed: int, record_id: str) -> tuple[list[str], str]:
    """Shuffle [correct, *incorrect] with an RNG keyed on (seed, record_id); return choices and gold letter.

    random.Random with a str seed hashes it with SHA-512, so the order is stable across processes
    (unlike hash(), which is salted per process).
    """
    options = [(correct, True)] + [(t, False) for t in incorrect]
    random.Random(f"{seed}:{record_id}").shuffle(options)
    gold = next(i for i, (_, is_gold) in enumerate(options) if is_gold)
    return [t for t, _ in options], letters(len(options))[gold]


def _opt(row: Mapping[str, Any], col: str) -> str | None:
    value = row.get(col)
    text = "" if value is None else str(value).strip()
    return text or None
