"""Import reasoning traces produced elsewhere, join them to their problems and re-grade them against gold.

Traces arrive in the shapes people have: a full response with `<think>...</think>` then the answer; separate
reasoning and answer fields; OpenAI chat-completion objects (also inside Batch API result lines); or anything
else through an explicit field mapping. A file's own `is_correct` is never trusted: we always re-grade, and record
both verdicts (`Trace.correct` flexible, `Trace.correct_strict` strict; see `legibility.grading`).

A gold-like field (`answer`, `gold`, `solution`, `target`, `label`) is never read as the model's answer unless
mapped explicitly (`answer="answer"`): MATH dumps `{"problem", "reasoning", "answer"}` hold the gold there, and
reading it as the model's answer would mark every trace correct. Which field fills each role is logged once per
file and kept in each trace's `meta["fields"]`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from legibility.benchmarks import messages, prompt
from legibility.errors import LegibilityError, where
from legibility.grading import grade
from legibility.records import Problem, Trace
from legibility.responses import completion, split_think

log = logging.getLogger(__name__)

# Field names seen in the wild, tried in order. A user mapping (`reasoning="my_field"`) goes first.
FIELDS: dict[str, tuple[str, ...]] = {
    "response": ("full_response", "response", "output", "completion", "generation", "text"),
    "reasoning": ("reasoning_content", "reasoning", "reasoning_trace", "message_thinking", "thinking", "cot"),
    "answer": ("answer_text", "message_content", "content", "final_answer", "model_answer", "prediction"),
    "question": ("problem", "question", "prompt", "input"),
    "problem_id": ("problem_id", "item_id", "custom_id", "unique_id", "id"),
    "generator": ("generator", "model_name", "model"),
    "gold": ("gold", "ground_truth", "gtruth_answer", "gold_answer", "target", "solution_answer", "answer"),
}

GOLD_LIKE = ("answer", "gold", "solution", "target", "label")
"""Keys that hold the reference answer in common dumps: never the model's answer unless mapped explicitly."""

SHUFFLED = frozenset({"gpqa"})
"""Benchmarks whose choice order we set (by seed): a trace made elsewhere may have answered another order.
BBH's lettered options are part of its data, so every copy has the same order."""


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
    fields: dict[str, str] = field(default_factory=dict)  # role -> the record key (path) it was read from
    gold_as_answer: str | None = None  # a gold-like key present while no model answer was found


_TEXT_ROLES = ("response", "reasoning", "answer")


def _norm_question(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _text(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _lookup(record: dict, role: str, mapping: dict[str, str]) -> tuple[Any, str | None]:
    """(value, key it came from) for a role: the mapped path (dotted for nested), else the first known name."""
    if role in mapping:
        path = mapping[role]
        value: Any = record
        for key in path.split("."):
            if not isinstance(value, dict) or key not in value:
                return None, None
            value = value[key]
        return value, path
    mapped = set(mapping.values())
    names = [n for n in FIELDS[role] if n not in mapped and record.get(n) not in (None, "")]
    for name in names:
        if _text(record[name]):
            return record[name], name
    if names and role in _TEXT_ROLES:  # a known name holding an object or a list: say so, do not skip it
        return record[names[0]], names[0]
    return None, None


def _get(record: dict, role: str, mapping: dict[str, str]) -> Any:
    return _lookup(record, role, mapping)[0]


def _string(value: Any, source: str, key: str | None, role: str) -> str | None:
    """A text field's value; a mapped field holding an object or a list is an error naming it."""
    if value is None:
        return None
    if not _text(value):
        raise LegibilityError(f"{source}: field {key}: expected text for {role}, got {type(value).__name__}")
    return str(value)


def _chat_completion(record: dict) -> tuple[dict, str] | None:
    """The chat-completion object inside a record and its key prefix (plain, or a Batch API result line)."""
    response = record.get("response")
    body = response.get("body") if isinstance(response, dict) else None
    for candidate, prefix in ((record, ""), (response, "response."), (body, "response.body.")):
        choices = candidate.get("choices") if isinstance(candidate, dict) else None
        # A list of option strings (a multiple-choice item) is not a completion: look for message objects.
        if isinstance(choices, list) and choices and isinstance(choices[0], dict) and "message" in choices[0]:
            return candidate, prefix
    return None


def _question_from_messages(record: dict) -> str | None:
    request = record.get("request")
    for holder in (record, request, request.get("body") if isinstance(request, dict) else None):
        if isinstance(holder, dict) and isinstance(holder.get("messages"), list):
            users = [m.get("content") for m in holder["messages"] if isinstance(m, dict) and m.get("role") == "user"]
            if users and isinstance(users[-1], str):
                return users[-1]
    return None


def parse_record(record: Any, source: str, mapping: dict[str, str]) -> RawTrace:
    """Read one record in any supported shape; an error names the source line and the field."""
    if not isinstance(record, dict):
        raise LegibilityError(f"{source}: expected a JSON object, got {type(record).__name__}")
    fields: dict[str, str] = {}
    found = None if ("response" in mapping or "reasoning" in mapping) else _chat_completion(record)
    value, key = _lookup(record, "question", mapping)
    question = value if isinstance(value, str) else None
    if key and question is not None:
        fields["question"] = key
    if found is not None:
        chat, prefix = found
        choice = chat["choices"][0]
        message = choice.get("message")
        if not isinstance(message, dict):
            raise LegibilityError(f"{source}: field {prefix}choices.0.message: expected an object")
        content = _string(message.get("content") or "", source, f"{prefix}choices.0.message.content", "response")
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        fields["response"] = f"{prefix}choices.0.message.content"
        if reasoning:
            rkey = "reasoning_content" if message.get("reasoning_content") else "reasoning"
            cot = _string(reasoning, source, f"{prefix}choices.0.message.{rkey}", "reasoning") or ""
            cot, answer, closed = cot.strip(), (content or "").strip(), True
            fields["reasoning"] = f"{prefix}choices.0.message.{rkey}"
        else:
            cot, answer, closed = split_think(content or "")
        # A reply cut by the token limit is incomplete even if it has an answer-looking tail.
        complete = closed and bool(answer) and choice.get("finish_reason") not in ("length", "max_tokens")
        value, key = _lookup(record, "generator", mapping)
        generator = value if value is not None else chat.get("model")
        fields["generator"] = key or f"{prefix}model"
        if question is None:
            question = _question_from_messages(record)
            fields["question"] = "messages (last user turn)" if question is not None else ""
    else:
        full, key = _lookup(record, "response", mapping)
        gold_as_answer = None
        if full is not None and "reasoning" not in mapping:
            # The full text is the ground truth: split fields written by other tools can lose truncation.
            cot, answer, closed = split_think(_string(full, source, key, "response") or "")
            complete = closed and bool(answer)
            fields["response"] = key or ""
        else:
            cot_value, rkey = _lookup(record, "reasoning", mapping)
            answer_value, akey = _lookup(record, "answer", mapping)
            cot_value = _string(cot_value, source, rkey, "reasoning")
            if not cot_value or not cot_value.strip():
                wanted = (
                    mapping.get("reasoning")
                    or mapping.get("response")
                    or ("one of " + ", ".join(FIELDS["response"] + FIELDS["reasoning"]))
                )
                raise LegibilityError(f"{source}: field {wanted}: missing or empty (no reasoning found)")
            cot = cot_value.strip()
            answer = (_string(answer_value, source, akey, "answer") or "").strip()
            complete = bool(answer)
            fields["reasoning"] = rkey or ""
            if akey and answer:
                fields["answer"] = akey
            elif "answer" not in mapping:
                gold_as_answer = next((k for k in GOLD_LIKE if k in record), None)
        value, key = _lookup(record, "generator", mapping)
        generator = value
        if key:
            fields["generator"] = key
    pid, pkey = _lookup(record, "problem_id", mapping)
    gold, gkey = _lookup(record, "gold", mapping)
    for role, k, v in (("problem_id", pkey, pid), ("gold", gkey, gold)):
        if k and v is not None:
            fields[role] = k
    return RawTrace(
        source=source,
        question=question,
        problem_id=None if pid is None or isinstance(pid, dict | list) else str(pid),
        generator=None if generator is None or isinstance(generator, dict | list) else str(generator),
        gold=None if gold is None or isinstance(gold, dict | list) else str(gold),
        reasoning=cot,
        answer=answer,
        complete=complete,
        meta={k: record[k] for k in ("temperature", "timestamp") if k in record},
        fields={k: v for k, v in fields.items() if v},
        gold_as_answer=None if found is not None else gold_as_answer,
    )


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _text_only(value: Any, text: str, p: Path, lineno: int | None) -> Any:
    """`value` (parsed from `text`), refused when it holds a lone UTF-16 surrogate. A JSON escape can spell one
    ("\\ud800") but no UTF-8 file can hold it, so a trace holding it would fail later, with a traceback, when
    hashed or written; only text with such an escape is checked, so the usual record costs one regex scan."""
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            bad = f"\\u{ord(e.object[e.start]):04x}"
            raise LegibilityError(f"{where(p, lineno)}: not valid JSON text (a lone surrogate {bad})") from None
    return value


def _load_json(text: str, p: Path, lineno: int) -> Any:
    """json.loads with every failure as a `file:line` LegibilityError (bad JSON, too deep, huge numbers, a lone
    surrogate)."""
    try:
        return _text_only(json.loads(text), text, p, lineno)
    except json.JSONDecodeError as e:
        line = lineno + e.lineno - 1
        col = f" at column {e.colno}" if e.lineno == 1 else ""
        raise LegibilityError(f"{where(p, line)}: not valid JSON ({e.msg}{col})") from None
    except (ValueError, RecursionError) as e:
        raise LegibilityError(f"{where(p, lineno)}: not valid JSON ({type(e).__name__}: {str(e)[:80]})") from None


def read_raw(path: str | Path, mapping: dict[str, str] | None = None) -> Iterator[RawTrace]:
    """Records from a JSONL file, a JSON array, or a single JSON object. The detected field mapping is logged
    once per file (one line per distinct mapping)."""
    p = Path(path)
    if not p.is_file():
        raise LegibilityError(f"{p}: no such file")
    mapping = mapping or {}
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LegibilityError(f"{p}: not UTF-8 text (byte {e.start})") from None
    seen: set[tuple[tuple[str, str], ...]] = set()
    warned = False
    for raw in _records(p, text, mapping):
        key = tuple(sorted(raw.fields.items()))
        if key not in seen:
            seen.add(key)
            roles = ", ".join(f"{r}={k}" for r, k in raw.fields.items())
            log.info("%s: fields %s", p, roles or "(none)")
        if raw.gold_as_answer and not warned:
            warned = True
            log.warning(
                "%s: field %r looks like the gold answer and is never read as the model's: these records have no "
                "model answer (incomplete). If it is the model's answer, map it: --field answer=%s",
                p, raw.gold_as_answer, raw.gold_as_answer,
            )  # fmt: skip
        yield raw


def _records(p: Path, text: str, mapping: dict[str, str]) -> Iterator[RawTrace]:
    stripped = text.lstrip()
    if stripped.startswith("["):
        items = _load_json(text, p, 1)
        for i, item in enumerate(items if isinstance(items, list) else [items]):
            yield parse_record(item, f"{p}#{i}", mapping)
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = _load_json(line, p, lineno)
        except LegibilityError:
            if lineno == 1 and stripped.startswith("{"):  # one pretty-printed object
                try:
                    whole = json.loads(text)
                except (ValueError, RecursionError):
                    whole = None
                if whole is not None:
                    yield parse_record(_text_only(whole, text, p, None), str(p), mapping)
                    return
            raise
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
    """Join traces to problems by id (with or without the benchmark prefix), by our rendered prompt (question,
    options and instruction), or by exact question text."""

    def __init__(self, problems: Sequence[Problem]):
        self.by_id = {p.id: p for p in problems}
        for p in problems:
            self.by_id.setdefault(p.id.split("/", 1)[-1], p)
        self.by_question: dict[str, Problem] = {}
        self.by_prompt: dict[str, Problem] = {}
        for p in problems:
            self.by_question.setdefault(_norm_question(p.question), p)
            self.by_prompt.setdefault(_norm_question(prompt(p)), p)

    def match(self, raw: RawTrace) -> tuple[Problem | None, str | None]:
        """(problem, how it was joined: "id" | "prompt" | "question"), or (None, None)."""
        if raw.problem_id is not None and raw.problem_id in self.by_id:
            return self.by_id[raw.problem_id], "id"
        if raw.question:
            text = _norm_question(raw.question)
            if text in self.by_prompt:
                return self.by_prompt[text], "prompt"
            if text in self.by_question:
                return self.by_question[text], "question"
        return None, None

    def find(self, raw: RawTrace) -> Problem | None:
        return self.match(raw)[0]


_LETTER = re.compile(r"^\(?([A-Z])\)?$")


def check_choice_order(raw: RawTrace, problem: Problem, how: str | None = None, assume_ours: bool = False) -> None:
    """A multiple-choice trace made elsewhere answers *its* option order. When the file states its gold letter
    and it is not ours, the orders differ and every grade would be wrong: stop rather than mis-grade. Joined by
    bare question text to a problem whose order we shuffled, the order is unknown: stop unless `assume_ours`."""
    if not problem.choices:
        return
    m = _LETTER.match(raw.gold.strip()) if raw.gold is not None else None
    if m and m.group(1) != problem.answer:
        raise LegibilityError(
            f"{raw.source}: field {raw.fields.get('gold', 'gold')}: letter {m.group(1)} but the problem's gold is "
            f"{problem.answer}: the traces were made with another choice order (check --seed, or map their own "
            "choices)"
        )
    if how == "question" and problem.benchmark in SHUFFLED and not assume_ours:
        raise LegibilityError(
            f"{raw.source}: joined to {problem.id} by its bare question text, which does not say in which order its "
            "options were shown, so its letter cannot be graded: join by id or by our rendered prompt, or state "
            "that the traces used our order (--choice-order ours, assume_choice_order=True)"
        )


def import_traces(
    paths: str | Path | Iterable[str | Path],
    problems: Sequence[Problem] | None,
    *,
    generator: str | None = None,
    benchmark: str | None = None,
    allow_unmatched: bool = False,
    assume_choice_order: bool = False,
    strict: bool = False,
    progress: bool = False,
    **field_mapping: str,
) -> list[Trace]:
    """Read, join and re-grade traces. `field_mapping` maps roles (response, reasoning, answer, question,
    problem_id, generator, gold) to field names (dotted for nested) for shapes we do not know.

    Without `problems`, each trace must carry its question and gold answer (and `benchmark` must be given).
    A trace matching no problem is an error naming its line, unless `allow_unmatched` (then it is skipped
    and the count is logged as a warning). A multiple-choice trace joined by bare question text needs
    `assume_choice_order` (see `check_choice_order`).

    Each trace gets both verdicts (`correct` flexible, `correct_strict` strict) and `meta["fields"]`,
    `meta["grade_rule"]`. A grade that fails (or is undecided) is kept ungraded (`correct_strict` None,
    `meta["grade_error"]` / `meta["undecided"]`), counted and reported at the end; `strict` re-raises instead.
    `grade_report` sums it up.
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
            problem, how = index.match(raw)
            if problem is None:
                if allow_unmatched:
                    unmatched += 1
                    continue
                hint = f"id {raw.problem_id!r}" if raw.problem_id else "its question text"
                raise LegibilityError(f"{raw.source}: matched no problem by {hint} (wrong --problems file?)")
            check_choice_order(raw, problem, how, assume_choice_order)
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
        meta: dict[str, Any] = {**raw.meta, "fields": dict(raw.fields)}
        correct, correct_strict, extracted = False, None, None
        if raw.answer:
            try:
                # Graded as the full reply, so the grader reads the same answer region as for a raw response.
                g = grade(problem, completion(raw.reasoning, raw.answer), raise_errors=strict)
            except Exception as e:
                if strict:
                    raise
                meta["grade_error"] = f"{type(e).__name__}: {str(e)[:200]}"
            else:
                extracted, meta["grade_rule"] = g.answer, g.rule
                if g.undecided:
                    meta["undecided"] = g.reason
                else:
                    correct, correct_strict = g.correct, g.strict
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
                extracted=extracted,
                correct=correct,
                correct_strict=correct_strict,
                complete=raw.complete,
                source=raw.source,
                meta=meta,
            )
        )
    _log_report(grade_report(traces))
    return traces


def grade_report(traces: Iterable[Trace]) -> dict[str, int]:
    """How the grades came out: `correct` (flexible) and `correct_strict`, how many were right only by a fallback
    (`flexible_only`: no explicit final-answer form), `undecided` and `errors` (kept ungraded), `no_answer`.

    A large `flexible_only` means that selecting "correct" traces selects by answer style too: compare both."""
    out = dict.fromkeys(
        ("traces", "graded", "correct", "correct_strict", "flexible_only", "undecided", "errors", "no_answer"), 0
    )
    for t in traces:
        out["traces"] += 1
        if "grade_error" in t.meta:
            out["errors"] += 1
        elif "undecided" in t.meta:
            out["undecided"] += 1
        elif t.correct_strict is None:
            out["no_answer"] += 1
        else:
            out["graded"] += 1
            out["correct"] += t.correct
            out["correct_strict"] += t.correct_strict
            out["flexible_only"] += t.correct and not t.correct_strict
    return out


def _log_report(r: dict[str, int]) -> None:
    log.info(
        "graded %d of %d traces: %d correct (flexible), %d strict; %d right only by a fallback; "
        "%d without an answer",
        r["graded"], r["traces"], r["correct"], r["correct_strict"], r["flexible_only"], r["no_answer"],
    )  # fmt: skip
    if r["errors"] or r["undecided"]:
        log.warning(
            "%d traces could not be graded (meta['grade_error']) and %d were undecided (meta['undecided']); "
            "they are kept, ungraded",
            r["errors"], r["undecided"],
        )  # fmt: skip


def trace_stats(traces: Iterable[Trace]) -> list[dict[str, Any]]:
    """Counts per generator x benchmark: total, complete, correct (flexible), correct_strict, usable (correct
    among complete)."""
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
                "correct_strict": sum(bool(t.correct_strict) for t in ts),
                "usable": sum(t.correct and t.complete for t in ts),
            }
        )
    return rows
