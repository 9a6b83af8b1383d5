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


class Generation(Trace):
    """A CoT sampled by `legibility generate`: a graded Trace plus everything needed to pin and reproduce it."""

    sample: int = 0  # k of the K samples per problem
    raw: str = ""  # the completion exactly as returned, think block included
    finish_reason: str | None = None  # "stop" | "length" | None (failed)
    truncated: bool = False  # finish_reason == "length"
    error: str | None = None  # a failed request: never graded as wrong, counted in the summary
    sampling: dict[str, Any] = Field(default_factory=dict)  # max_new_tokens, temperature, top_p, seed
    model: dict[str, Any] = Field(default_factory=dict)  # backend, model, revision, adapter (+hash), chat template hash


Condition = Literal["c1", "c2", "c2_prefill", "c4", "leak", "early", "prefix"]


class Reading(Record):
    """One reader on one CoT (or on the bare question, for C1/C4) under one condition.

    `item_id` is the CoT read (a Generation id, or `{trace_id}#{transform}` for the validity copies); C1 and C4
    readings depend only on the problem and carry item_id None. `correct` is None when the request failed."""

    id: str
    item_id: str | None
    problem_id: str
    benchmark: Benchmark
    generator: str | None = None
    reader: str
    role: Literal["reasoning_reader", "leak_detector"] = "reasoning_reader"
    condition: Condition
    transform: str = "intact"  # validity copies: the corruption applied; "intact" otherwise
    fraction: float | None = None  # early answering: the share of the CoT's sentences kept
    answer: str | None = None  # the answer read from the reader's reply (leak: "yes"/"no")
    correct: bool | None = None  # flexible verdict (leak: the detector fired)
    correct_strict: bool | None = None
    agrees: bool | None = None  # early answering: the reply states the generator's own final answer (None: unknown)
    uplift: float | None = None  # log p(gold | C2 with the CoT) - log p(gold | C2 with an empty CoT), nats
    surprisal: float | None = None  # mean per-token surprisal of the CoT given the question, nats
    text: str = ""  # the reader's raw reply
    error: str | None = None
    masking: dict[str, Any] = Field(default_factory=dict)  # what was removed from the CoT, and how


class Judgement(Record):
    """One judge's score of one CoT: the 0-4 rubric, or the chunked 1-9 illegibility score."""

    id: str
    item_id: str
    problem_id: str
    benchmark: Benchmark
    generator: str | None = None
    judge: str
    kind: Literal["rubric", "illegibility"]
    prompt_version: str
    method: Literal["generate", "label_probs"]
    transform: str = "intact"
    legibility: float | None = None  # rubric, 0-4
    coverage: float | None = None  # rubric, 0-4
    chunk_scores: list[float | None] = Field(default_factory=list)  # illegibility, 1-9 per chunk (None: failed)
    mean: float | None = None  # illegibility: mean over the scored chunks
    share_above: float | None = None  # illegibility: share of scored chunks above the threshold
    threshold: float | None = None
    text: list[str] = Field(default_factory=list)  # raw replies (generate) or empty (label_probs)
    label_mass: list[float | None] = Field(default_factory=list)  # label_probs: P(any label reply), per chunk / rubric
    error: str | None = None


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
