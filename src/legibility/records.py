"""Typed records passed between stages, and their JSONL I/O.

Every stage reads and writes these, so a run directory can be reloaded in a notebook with `read_jsonl`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from legibility.errors import LegibilityError, where

Benchmark = Literal["gpqa", "math", "bbh"]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Message(Record):
    role: Literal["system", "user", "assistant"]
    content: str


class Problem(Record):
    """One benchmark item. For multiple choice `answer` is the gold letter, `choices` the options in order."""

    id: str
    benchmark: Benchmark
    subtask: str | None = None
    question: str
    choices: list[str] | None = None
    answer: str
    answer_text: str | None = None  # the gold choice's text (MC) or None
    level: int | None = None
    subject: str | None = None
    source: str  # "path:line" or "path#index" it came from
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def multiple_choice(self) -> bool:
        return bool(self.choices)


class Trace(Record):
    """One reasoning trace (CoT + final answer) from one generator on one problem, graded against gold."""

    id: str  # "{generator}/{problem_id}/{sample}"
    problem_id: str
    benchmark: Benchmark
    subtask: str | None = None
    generator: str
    prompt: list[Message] = Field(default_factory=list)  # the chat the generator answered (benchmark prompt)
    reasoning: str  # the CoT, without <think> tags
    answer_text: str  # what came after </think>
    extracted: str | None = None  # the answer the grader read from answer_text
    correct: bool = False  # the flexible verdict (explicit answer forms, then the fallbacks)
    correct_strict: bool | None = None  # the strict verdict (explicit final-answer forms only); None: not graded so
    complete: bool = True  # False when </think> or a final answer is missing (e.g. truncated)
    source: str | None = None  # "path:line"
    meta: dict[str, Any] = Field(default_factory=dict)


class Pair(Record):
    """A DPO preference pair: the same prompt and final answer, an original and a corrupted CoT."""

    id: str
    prompt: list[Message]
    chosen: str  # assistant completion: "<think>\n{cot}\n</think>\n\n{answer}"
    rejected: str
    direction: Literal["legible", "illegible"] = "legible"
    transform: str
    transform_meta: dict[str, Any] = Field(default_factory=dict)
    trace_id: str
    donor_trace_id: str | None = None
    donor_scope: str | None = None  # PairsConfig.donor_scope the donors were drawn under
    split: Literal["train", "val"] | None = None
    problem_id: str
    generator: str
    benchmark: Benchmark
    subtask: str | None = None


R = TypeVar("R", bound=BaseModel)


def _field_of(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(record)"
    return f"{loc}: {first['msg']}"


def parse_line(line: str, model: type[R], path: str | os.PathLike, lineno: int) -> R:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as e:
        raise LegibilityError(f"{where(path, lineno)}: not valid JSON ({e.msg} at column {e.colno})") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise LegibilityError(f"{where(path, lineno)}: {model.__name__}.{_field_of(e)}") from None


def iter_jsonl(path: str | os.PathLike, model: type[R]) -> Iterator[R]:
    """Yield validated records; a malformed line raises naming file, line and field (never a silent skip)."""
    p = Path(path)
    if not p.is_file():
        raise LegibilityError(f"{p}: no such file")
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield parse_line(line, model, p, lineno)


def read_jsonl(path: str | os.PathLike, model: type[R]) -> list[R]:
    return list(iter_jsonl(path, model))


def dumps(record: BaseModel | dict) -> str:
    data = record.model_dump(mode="json") if isinstance(record, BaseModel) else record
    return json.dumps(data, ensure_ascii=False, sort_keys=False)


def write_jsonl(path: str | os.PathLike, records: Iterable[BaseModel | dict]) -> Path:
    """Write atomically (temp file in the same folder, then rename): a crash never leaves half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for r in records:
                f.write(dumps(r) + "\n")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Atomic JSON write (stats, manifests)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=2)
            f.write("\n")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
