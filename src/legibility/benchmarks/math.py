"""MATH / MATH-500: a JSON array, JSONL, or a folder of one-problem JSON files (the original MATH layout).

Fields: `problem`, `solution`, `answer`, `subject` (original MATH: `type`), `level`, `unique_id`.
Original MATH has no `answer`: it is then the last \\boxed{...} (or \\fbox{...}) in the solution.
`source` is "path#index" for JSON arrays, "path:line" for JSONL, and "path" for one-problem files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from legibility.errors import LegibilityError
from legibility.grading import extract_boxed
from legibility.records import Problem

DEFAULT_LEVELS = (3, 4, 5)
"""Levels 1-2 are solved by short CoTs; the harder ones give longer traces to work on."""

HF_DATASET = "HuggingFaceH4/MATH-500"
HF_CONFIG: str | None = None
HF_SPLIT = "test"

Item = tuple[str, Mapping[str, Any], str | None]  # (source, item, default unique_id)
Levels = Iterable[int] | int | str | None

_LEVEL = re.compile(r"^(?:level\s*)?(\d+|\?)$", re.IGNORECASE)


def load(path: str | os.PathLike, *, levels: Levels = DEFAULT_LEVELS) -> list[Problem]:
    """Load MATH problems whose level is in `levels` (None or "all" keeps every item, unknown levels too)."""
    p = Path(path)
    if p.is_dir():
        items: Iterable[Item] = _read_folder(p)
    elif p.is_file():
        items = _read_file(p)
    else:
        raise LegibilityError(f"{p}: no such MATH file or folder")
    return from_items(items, levels=levels)


def from_items(items: Iterable[Item], *, levels: Levels = DEFAULT_LEVELS) -> list[Problem]:
    keep = _levels(levels)
    out: list[Problem] = []
    seen: dict[str, str] = {}
    for index, (source, item, default_uid) in enumerate(items):
        problem = from_item(item, source=source, index=index, default_uid=default_uid)
        if problem.id in seen:
            raise LegibilityError(f"{source}: duplicate id {problem.id!r} (first at {seen[problem.id]})")
        seen[problem.id] = source
        if keep is None or problem.level in keep:
            out.append(problem)
    return out


def from_item(item: Mapping[str, Any], *, source: str, index: int, default_uid: str | None = None) -> Problem:
    if not isinstance(item, Mapping):
        raise LegibilityError(f"{source}: expected a JSON object, got {type(item).__name__}")
    question = _text(item, "problem", source)
    solution = _opt(item.get("solution"))
    answer = _opt(item.get("answer"))
    if answer is None:
        if solution is None:
            raise LegibilityError(f"{source}: answer: missing, and no solution to read a \\boxed{{}} from")
        answer = extract_boxed(solution)
        if not answer:
            raise LegibilityError(f"{source}: answer: missing, and the solution has no \\boxed{{...}}")
    uid = _opt(item.get("unique_id")) or default_uid
    meta: dict[str, Any] = {"solution": solution} if solution is not None else {}
    if uid:
        meta["unique_id"] = uid
    return Problem(
        id=f"math/{uid}" if uid else f"math/{index}",
        benchmark="math",
        question=question,
        answer=answer,
        level=parse_level(item.get("level"), source),
        subject=_opt(item.get("subject")) or _opt(item.get("type")),
        source=source,
        meta=meta,
    )


def parse_level(value: Any, source: str = "") -> int | None:
    """3, "3" or "Level 3" -> 3; "Level ?" or missing -> None."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and (m := _LEVEL.match(value.strip())):
        return None if m.group(1) == "?" else int(m.group(1))
    raise LegibilityError(f"{source}: level: expected an int or 'Level N', got {value!r}")


def _read_file(path: Path) -> Iterator[Item]:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if path.suffix != ".jsonl" and stripped.startswith("["):
        data = _json(text, path)
        for i, item in enumerate(data):
            yield f"{path}#{i}", item, None
        return
    if path.suffix != ".jsonl" and stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # several objects: JSONL
        if isinstance(data, dict):
            yield str(path), data, None
            return
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield f"{path}:{lineno}", _json(line, f"{path}:{lineno}"), None


def _read_folder(folder: Path) -> Iterator[Item]:
    """Original MATH: one problem per file; unique_id defaults to the path below `folder`, as in MATH-500."""
    files = sorted(folder.rglob("*.json"))
    if not files:
        raise LegibilityError(f"{folder}: no .json files")
    for f in files:
        data = _json(f.read_text(encoding="utf-8"), f)
        if isinstance(data, list):
            for i, item in enumerate(data):
                yield f"{f}#{i}", item, None
        else:
            yield str(f), data, f.relative_to(folder).as_posix()


def _json(text: str, where: object) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LegibilityError(f"{where}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


def _levels(levels: Levels) -> set[int | None] | None:
    if levels is None or (isinstance(levels, str) and levels.strip().lower() == "all"):
        return None
    if isinstance(levels, int):
        return {levels}
    items = levels.replace(",", " ").split() if isinstance(levels, str) else levels
    try:
        return {int(x) for x in items}
    except (TypeError, ValueError):
        raise LegibilityError(f"levels: expected integers like 3,4,5 or 'all', got {levels!r}") from None


def _text(item: Mapping[str, Any], key: str, source: str) -> str:
    value = _opt(item.get(key))
    if value is None:
        raise LegibilityError(f"{source}: {key}: missing or empty")
    return value


def _opt(value: Any) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None
