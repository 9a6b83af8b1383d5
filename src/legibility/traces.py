"""Import reasoning traces produced elsewhere, join them to their problems and re-grade them against gold.

Traces arrive in the shapes people have: a full response with `<think>...</think>` then the answer; separate
reasoning and answer fields; OpenAI chat-completion objects (also inside Batch API result lines); or anything
else through an explicit field mapping. A file's own `is_correct` is never trusted: we always re-grade.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from legibility.benchmarks import messages, prompt
from legibility.errors import LegibilityError, where
from legibility.grading import grade
from legibility.records import Problem, Trace
from legibility.responses import completion, split_think

# Field names seen in the wild, tried in order. A user mapping (`reasoning="my_field"`) goes first.
log = logging.getLogger(__name__)

FIELDS: dict[str, tuple[str, ...]] = {
    "response": ("full_response", "response", "output", "completion", "generation", "text"),
    "reasoning": ("reasoning_content", "reasoning", "reasoning_trace", "message_thinking", "thinking", "cot"),
    "answer": ("answer_text", "message_content", "content", "final_answer", "answer"),
    "question": ("problem", "question", "prompt", "input"),
    "problem_id": ("problem_id", "item_id", "custom_id", "unique_id", "id"),
    "generator": ("generator", "model_name", "model"),
    "gold": ("gold", "ground_truth", "gtruth_answer", "gold_answer", "target", "solution_answer"),
}


@dataclass(frozen=True)
class RawTrace:
    """One record as read from disk, before joining and grading."""

    source: str
    question: str | None
    problem_id: str | None
    generator: str | None
    gold: str | None
    reasoning: str
    answer: str
    complete: bool
    meta: dict[str, Any]


def _norm_question(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _get(record: dict, role: str, mapping: dict[str, str]) -> Any:
    if role in mapping:
        path = mapping[role]
        value: Any = record
        for key in path.split("."):  # dotted paths reach into nested objects
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value
    for name in FIELDS[role]:
        if isinstance(record.get(name), str | int) and record[name] != "":
            return record[name]
    return None


def _chat_completion(record: dict) -> dict | None:
    """The chat-completion object inside a record, if it is one (plain, or a Batch API result line)."""
    response = record.get("response")
    body = response.get("body") if isinstance(response, dict) else None
    for candidate in (record, response, body):
        choices = candidate.get("choices") if isinstance(candidate, dict) else None
        # A list of option strings (a multiple-choice item) is not a completion: look for message objects.
        if isinstance(choices, list) and choices and isinstance(choices[0], dict) and "message" in choices[0]:
            return candidate
    return None


def _question_from_messages(record: dict) -> str | None:
    request = record.get("request")
    for holder in (record, request, request.get("body") if isinstance(request, dict) else None):
        if isinstance(holder, dict) and isinstance(holder.get("messages"), list):
            users = [m.get("content") for m in holder["messages"] if m.get("role") == "user"]
            if users and isinstance(users[-1], str):
                return users[-1]
    return None


def parse_record(record: dict, source: str, mapping: dict[str, str]) -> RawTrace:
    """Read one record in any supported shape; error names the source line and the missing field."""
    if not isinstance(record, dict):
        raise LegibilityError(f"{source}: expected a JSON object, got {type(record).__name__}")
    completion = None if ("response" in mapping or "reasoning" in mapping) else _chat_completion(record)
    question = _get(record, "question", mapping)
    if completion is not None:
        choice = completion["choices"][0]
        message = choice.get("message") or {}
        content = message.get("content") or ""
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if reasoning:
            cot, answer, closed = reasoning.strip(), content.strip(), True
        else:
            cot, answer, closed = split_think(content)
        # A reply cut by the token limit is incomplete even if it has an answer-looking tail.
        complete = closed and bool(answer) and choice.get("finish_reason") not in ("length", "max_tokens")
        generator = _get(record, "generator", mapping) or completion.get("model")
        question = question if isinstance(question, str) else _question_from_messages(record)
    else:
        full = _get(record, "response", mapping)
        if isinstance(full, str) and "reasoning" not in mapping:
            # The full text is the ground truth: split fields written by other tools can lose truncation.
            cot, answer, closed = split_think(full)
            complete = closed and bool(answer)
        else:
            cot = _get(record, "reasoning", mapping)
            answer = _get(record, "answer", mapping) or ""
            if not isinstance(cot, str) or not cot.strip():
                wanted = (
                    mapping.get("reasoning")
                    or mapping.get("response")
                    or ("one of " + ", ".join(FIELDS["response"] + FIELDS["reasoning"]))
                )
                raise LegibilityError(f"{source}: field {wanted}: missing or empty (no reasoning found)")
            cot, answer = cot.strip(), str(answer).strip()
            complete = bool(answer)
        generator = _get(record, "generator", mapping)
    pid = _get(record, "problem_id", mapping)
    gold = _get(record, "gold", mapping)
    return RawTrace(
        source=source,
        question=question if isinstance(question, str) else None,
        problem_id=None if pid is None else str(pid),
        generator=None if generator is None else str(generator),
        gold=None if gold is None else str(gold),
        reasoning=cot,
        answer=answer,
        complete=complete,
        meta={k: record[k] for k in ("temperature", "timestamp") if k in record},
    )


def read_raw(path: str | Path, mapping: dict[str, str] | None = None) -> Iterator[RawTrace]:
    """Records from a JSONL file, a JSON array, or a single JSON object."""
    p = Path(path)
    if not p.is_file():
        raise LegibilityError(f"{p}: no such file")
    mapping = mapping or {}
    text = p.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise LegibilityError(f"{where(p, e.lineno)}: not valid JSON ({e.msg})") from None
        for i, item in enumerate(items):
            yield parse_record(item, f"{p}#{i}", mapping)
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == 1 and stripped.startswith("{"):  # one pretty-printed object
                try:
                    yield parse_record(json.loads(text), str(p), mapping)
                    return
                except json.JSONDecodeError:
                    pass
            raise LegibilityError(f"{where(p, lineno)}: not valid JSON ({e.msg} at column {e.colno})") from None
        yield parse_record(item, f"{p}:{lineno}", mapping)


def problem_from_trace(raw: RawTrace, benchmark: str) -> Problem:
    """A problem built from a self-contained trace file (question + gold inside), for traces on problems
    we have no benchmark file for (e.g. MATH train). Multiple-choice needs its choices, so only math/bbh."""
    if benchmark not in ("math", "bbh"):
        raise LegibilityError(f"{raw.source}: --problems is required for {benchmark} traces (choices needed)")
    if not raw.question or raw.gold is None:
        missing = "question" if not raw.question else "gold answer"
        raise LegibilityError(f"{raw.source}: field {missing}: missing, and no --problems file was given")
    digest = hashlib.sha1(_norm_question(raw.question).encode()).hexdigest()[:12]
    return Problem(
        id=f"{benchmark}/{digest}",
        benchmark=benchmark,
        question=raw.question,
        answer=raw.gold,  # type: ignore[arg-type]
        source=raw.source,
    )


class ProblemIndex:
    """Join traces to problems by id (with or without the benchmark prefix) or by exact question text."""

    def __init__(self, problems: Sequence[Problem]):
        self.by_id = {p.id: p for p in problems}
        for p in problems:
            self.by_id.setdefault(p.id.split("/", 1)[-1], p)
        self.by_text: dict[str, Problem] = {}
        for p in problems:
            self.by_text.setdefault(_norm_question(p.question), p)
        for p in problems:  # traces whose "question" is our full rendered prompt (options and instruction)
            self.by_text.setdefault(_norm_question(prompt(p)), p)

    def find(self, raw: RawTrace) -> Problem | None:
        if raw.problem_id is not None and raw.problem_id in self.by_id:
            return self.by_id[raw.problem_id]
        if raw.question:
            return self.by_text.get(_norm_question(raw.question))
        return None


_LETTER = re.compile(r"^\(?([A-Z])\)?$")


def check_choice_order(raw: RawTrace, problem: Problem) -> None:
    """A multiple-choice trace made elsewhere answers *its* option order. When the file states its gold letter
    and it is not ours, the orders differ and every grade would be wrong: stop rather than mis-grade."""
    if not problem.choices or raw.gold is None:
        return
    m = _LETTER.match(raw.gold.strip())
    if m and m.group(1) != problem.answer:
        raise LegibilityError(
            f"{raw.source}: field gold: letter {m.group(1)} but the problem's gold is {problem.answer}: the traces "
            "were made with another choice order (check --seed, or map their own choices)"
        )


def import_traces(
    paths: str | Path | Iterable[str | Path],
    problems: Sequence[Problem] | None,
    *,
    generator: str | None = None,
    benchmark: str | None = None,
    allow_unmatched: bool = False,
    progress: bool = False,
    **field_mapping: str,
) -> list[Trace]:
    """Read, join and re-grade traces. `field_mapping` maps roles (response, reasoning, answer, question,
    problem_id, generator, gold) to field names (dotted for nested) for shapes we do not know.

    Without `problems`, each trace must carry its question and gold answer (and `benchmark` must be given).
    A trace matching no problem is an error naming its line, unless `allow_unmatched` (then it is skipped
    and the count is logged as a warning).
    """
    unknown = set(field_mapping) - set(FIELDS)
    if unknown:
        raise LegibilityError(f"unknown field mapping {sorted(unknown)} (known: {', '.join(FIELDS)})")
    if isinstance(paths, str | Path):
        paths = [paths]
    index = ProblemIndex(problems) if problems is not None else None
    if index is None and benchmark is None:
        raise LegibilityError("give --problems, or --benchmark for self-contained trace files")
    raws = [raw for path in paths for raw in read_raw(path, field_mapping)]
    joined: list[tuple[RawTrace, Problem]] = []
    unmatched = 0
    for raw in raws:
        if index is not None:
            problem = index.find(raw)
            if problem is None:
                if allow_unmatched:
                    unmatched += 1
                    continue
                hint = f"id {raw.problem_id!r}" if raw.problem_id else "its question text"
                raise LegibilityError(f"{raw.source}: matched no problem by {hint} (wrong --problems file?)")
            check_choice_order(raw, problem)
        else:
            problem = problem_from_trace(raw, benchmark)  # type: ignore[arg-type]
        joined.append((raw, problem))
    if unmatched:
        log.warning("%d of %d traces matched no problem and were skipped", unmatched, len(raws))
    items: Iterable[tuple[RawTrace, Problem]] = joined
    if progress:
        from rich.progress import track

        items = track(joined, description="grading traces")
    samples: Counter[tuple[str, str]] = Counter()
    traces = []
    for raw, problem in items:
        gen = generator or raw.generator
        if not gen:
            raise LegibilityError(f"{raw.source}: field generator: missing (give --generator)")
        k = samples[(gen, problem.id)]
        samples[(gen, problem.id)] += 1
        # Graded as the full reply, so the grader reads the same answer region as for a raw response.
        g = grade(problem, completion(raw.reasoning, raw.answer)) if raw.answer else None
        traces.append(
            Trace(
                id=f"{gen}/{problem.id}/{k}",
                problem_id=problem.id,
                benchmark=problem.benchmark,
                subtask=problem.subtask,
                generator=gen,
                prompt=messages(problem),
                reasoning=raw.reasoning,
                answer_text=raw.answer,
                extracted=g.answer if g else None,
                correct=bool(g and g.correct),
                complete=raw.complete,
                source=raw.source,
                meta=raw.meta,
            )
        )
    return traces


def trace_stats(traces: Iterable[Trace]) -> list[dict[str, Any]]:
    """Counts per generator x benchmark: total, complete, correct (and correct among complete)."""
    groups: dict[tuple[str, str], list[Trace]] = defaultdict(list)
    for t in traces:
        groups[(t.generator, t.benchmark)].append(t)
    rows = []
    for (gen, bench), ts in sorted(groups.items()):
        rows.append(
            {
                "generator": gen,
                "benchmark": bench,
                "total": len(ts),
                "complete": sum(t.complete for t in ts),
                "correct": sum(t.correct for t in ts),
                "usable": sum(t.correct and t.complete for t in ts),
            }
        )
    return rows
