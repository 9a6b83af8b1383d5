"""What the readers and judges read: one CoT with its problem, whoever wrote it.

Two sources feed the evaluation:
- generations (`eval/generations.jsonl`): CoTs sampled from each generator on the held-out problems; these get the
  taxonomy, task accuracy and the curves;
- held-out pairs (`pairs/val.jsonl`): each validation trace intact ("chosen") and its corrupted copies ("rejected",
  one per transform); these get the validity check (does a metric rank the intact CoT above its corruptions?).
Validation pairs never reached training (split by problem), so the reader sees text the adapter never saw.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from legibility.errors import LegibilityError
from legibility.records import Generation, Pair, Problem
from legibility.responses import split_think

INTACT = "intact"


@dataclass(frozen=True)
class EvalItem:
    id: str  # a Generation id, or "{trace_id}#{transform}" for validity copies
    problem: Problem
    cot: str  # the reasoning, no think tags, nothing masked yet
    answer_text: str  # what followed </think>
    generator: str
    correct: bool | None  # the generator's verdict (flexible); None: failed or not graded
    correct_strict: bool | None = None
    transform: str = INTACT  # validity copies: the corruption; "intact" otherwise
    trace_id: str | None = None  # the trace the validity copies share


def from_generations(gens: Iterable[Generation], problems: Mapping[str, Problem]) -> list[EvalItem]:
    """Completed generations (failed requests are left out: they are counted, never read)."""
    out = []
    for g in gens:
        if g.error is not None:
            continue
        p = problems.get(g.problem_id)
        if p is None:
            raise LegibilityError(f"generation {g.id}: problem {g.problem_id} is not in problems.jsonl")
        out.append(EvalItem(g.id, p, g.reasoning, g.answer_text, g.generator, g.correct, g.correct_strict,
                            trace_id=g.id))  # fmt: skip
    return out


def from_pairs(pairs: Iterable[Pair], problems: Mapping[str, Problem], max_traces: int | None = None) -> list[EvalItem]:
    """Each validation trace once intact and once per corrupted copy, traces in file order (the first
    `max_traces` of them). Only legible-direction pairs: their chosen side is the original."""
    by_trace: dict[str, list[Pair]] = {}
    for pr in pairs:
        if pr.direction == "legible" and pr.split in (None, "val"):
            by_trace.setdefault(pr.trace_id, []).append(pr)
    out: list[EvalItem] = []
    for tid in list(by_trace)[: max_traces or None]:
        group = by_trace[tid]
        p = problems.get(group[0].problem_id)
        if p is None:
            raise LegibilityError(f"pair {group[0].id}: problem {group[0].problem_id} is not in problems.jsonl")
        intact = split_think(group[0].chosen)
        out.append(EvalItem(f"{tid}#{INTACT}", p, intact.reasoning, intact.answer, group[0].generator, True, True,
                            INTACT, tid))  # fmt: skip
        seen = set()
        for pr in group:
            if pr.transform in seen:
                continue
            seen.add(pr.transform)
            bad = split_think(pr.rejected)
            out.append(EvalItem(f"{tid}#{pr.transform}", p, bad.reasoning, bad.answer, pr.generator, True, True,
                                pr.transform, tid))  # fmt: skip
    return out
