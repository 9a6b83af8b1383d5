"""BIG-Bench Hard task files (`{"canary", "examples": [{"input", "target"}]}`), from a folder or one file.

Lettered tasks ("Options:\\n(A) ...") become multiple choice: the options block is cut from the question into
`choices` and the gold letter is read from the "(B)" target. Other tasks stay free-form (answer = target);
their unlettered "Options:\\n- Yes\\n- No" lists stay in the question. `source` is "path#index".

Four upstream examples are broken: movie_recommendation #163 and ruin_names #99, #144 have a non-letter
target and options split at commas (no letter is right); snarks #88 has a single, truncated option.
Lettered items whose target is not "(X)", or with fewer than two options, are skipped with a logged
warning. Ids keep the file index, so they never shift.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from legibility.benchmarks.prompts import LETTERS, letters
from legibility.errors import LegibilityError
from legibility.records import Problem

DEFAULT_SUBTASKS = (
    "date_understanding",
    "disambiguation_qa",
    "logical_deduction_five_objects",
    "movie_recommendation",
    "snarks",
    "tracking_shuffled_objects_three_objects",
)
"""Six lettered multiple-choice tasks of different kinds (dates, pronouns, ordering, taste, sarcasm, state
tracking), 2 to 6 options each, so one grader ("Answer: X") covers them all."""

ALL_SUBTASKS = (
    "boolean_expressions",
    "causal_judgement",
    "date_understanding",
    "disambiguation_qa",
    "dyck_languages",
    "formal_fallacies",
    "geometric_shapes",
    "hyperbaton",
    "logical_deduction_five_objects",
    "logical_deduction_seven_objects",
    "logical_deduction_three_objects",
    "movie_recommendation",
    "multistep_arithmetic_two",
    "navigate",
    "object_counting",
    "penguins_in_a_table",
    "reasoning_about_colored_objects",
    "ruin_names",
    "salient_translation_error_detection",
    "snarks",
    "sports_understanding",
    "temporal_sequences",
    "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects",
    "tracking_shuffled_objects_three_objects",
    "web_of_lies",
    "word_sorting",
)

HF_DATASET = "lukaemon/bbh"
HF_SPLIT = "test"  # one config per task

Subtasks = str | Sequence[str] | None

_OPTIONS = re.compile(r"\n*Options:\n((?:\([A-Z]\) [^\n]*(?:\n|$))+)\s*$")
_OPTION = re.compile(r"^\(([A-Z])\) (.*)$")
_TARGET = re.compile(r"^\(([A-Z])\)$")

log = logging.getLogger(__name__)


def load(path: str | os.PathLike, *, subtasks: Subtasks = None) -> list[Problem]:
    """Load tasks from a folder of `{task}.json` files (default: DEFAULT_SUBTASKS) or one task file."""
    p = Path(path)
    if p.is_file():
        wanted = resolve_subtasks(subtasks, available=[p.stem], default=[p.stem])
        files = [p]
    elif p.is_dir():
        available = sorted(f.stem for f in p.glob("*.json"))
        if not available:
            raise LegibilityError(f"{p}: no BBH task files (*.json)")
        wanted = resolve_subtasks(subtasks, available=available)
        files = [p / f"{t}.json" for t in wanted]
    else:
        raise LegibilityError(f"{p}: no such BBH file or folder")
    out: list[Problem] = []
    for task, f in zip(wanted, files, strict=True):
        out.extend(load_task_file(f, task=task))
    return out


def resolve_subtasks(
    subtasks: Subtasks, *, available: Sequence[str], default: Sequence[str] = DEFAULT_SUBTASKS
) -> list[str]:
    """None -> `default`, "all" -> every available task, else names (a list or "a,b"), checked."""
    if subtasks is None:
        names = list(default)
    elif isinstance(subtasks, str) and subtasks.strip().lower() == "all":
        names = list(available)
    else:
        raw = subtasks.split(",") if isinstance(subtasks, str) else subtasks
        names = [s.strip() for s in raw if s.strip()]
        if not names:
            raise LegibilityError("subtasks: empty list")
    unknown = [n for n in names if n not in available]
    if unknown:
        raise LegibilityError(f"unknown BBH subtask(s) {', '.join(unknown)} (available: {', '.join(available)})")
    return list(dict.fromkeys(names))


def load_task_file(path: Path, *, task: str) -> list[Problem]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LegibilityError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
        raise LegibilityError(f"{path}: expected a BBH task file {{'canary', 'examples': [...]}}")
    return from_examples(task, data["examples"], canary=data.get("canary"), origin=str(path))


def from_examples(
    task: str, examples: Iterable[Mapping[str, Any]], *, canary: str | None, origin: str
) -> list[Problem]:
    """Problems from one task's examples; `origin` prefixes each `source` ("origin#index")."""
    out = []
    for i, ex in enumerate(examples):
        problem = from_example(task, ex, index=i, canary=canary, source=f"{origin}#{i}")
        if problem is not None:
            out.append(problem)
    return out


def from_example(
    task: str, example: Mapping[str, Any], *, index: int, canary: str | None, source: str
) -> Problem | None:
    """One problem; None for a lettered item whose target is not a letter (see the module docstring)."""
    if not isinstance(example, Mapping):
        raise LegibilityError(f"{source}: expected an object with input and target")
    text = _field(example, "input", source)
    target = _field(example, "target", source)
    question, choices = split_options(text)
    answer, answer_text = target, None
    if choices is not None:
        m = _TARGET.match(target)
        if not m or len(choices) < 2:
            why = f"target {target!r} is not a letter" if not m else "only one option"
            log.warning("%s: skipped: broken upstream item (%s)", source, why)
            return None
        if m.group(1) not in letters(len(choices)):
            raise LegibilityError(
                f"{source}: target: expected one of ({letters(len(choices))[0]}) to "
                f"({letters(len(choices))[-1]}), got {target!r}"
            )
        answer = m.group(1)
        answer_text = choices[letters(len(choices)).index(answer)]
    return Problem(
        id=f"bbh/{task}/{index}",
        benchmark="bbh",
        subtask=task,
        question=question,
        choices=choices,
        answer=answer,
        answer_text=answer_text,
        source=source,
        meta={"canary": canary} if canary else {},
    )


def split_options(text: str) -> tuple[str, list[str] | None]:
    """Cut a trailing lettered "Options:" block: (question, choices), or (text, None) if there is none.

    Letters must run A, B, C, ... in order; anything else is left in the question as free text.
    """
    m = _OPTIONS.search(text)
    if not m:
        return text, None
    choices = []
    for i, line in enumerate(m.group(1).rstrip("\n").split("\n")):
        opt = _OPTION.match(line)
        if not opt or i >= len(LETTERS) or opt.group(1) != LETTERS[i]:
            return text, None
        choices.append(opt.group(2).strip())
    return text[: m.start()].rstrip(), choices


def _field(example: Mapping[str, Any], key: str, source: str) -> str:
    value = example.get(key)
    if not isinstance(value, str) or not value.strip():
        raise LegibilityError(f"{source}: {key}: missing or empty")
    return value.strip()
