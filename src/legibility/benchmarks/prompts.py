"""Prompt templates: one place to change how every benchmark item is asked.

The instructions fix the final-answer format (\\boxed{} for MATH, "Answer: X" otherwise) so graders can read
the answer back without per-model heuristics.
"""

from __future__ import annotations

import string

from legibility.errors import LegibilityError
from legibility.records import Message, Problem

LETTERS = string.ascii_uppercase

MATH_INSTRUCTION = "After your reasoning, state your final answer inside \\boxed{} notation."
MC_INSTRUCTION = (
    'After your reasoning, give your final answer as a single letter in the form "Answer: X" '
    "where X is one of {letters}."
)
FREE_FORM_INSTRUCTION = 'After your reasoning, state your final answer after "Answer:".'

CHOICE_LINE = "({letter}) {text}"
PROMPT_LAYOUT = "{question}\n\n{instruction}"
MC_PROMPT_LAYOUT = "{question}\n\n{options}\n\n{instruction}"


def letters(n: int) -> str:
    """The first `n` option letters ("ABCD" for 4)."""
    if not 1 <= n <= len(LETTERS):
        raise LegibilityError(f"cannot letter {n} choices (1 to {len(LETTERS)})")
    return LETTERS[:n]


def prompt(problem: Problem) -> str:
    """The user-turn text for one problem."""
    if problem.benchmark == "math":
        return PROMPT_LAYOUT.format(question=problem.question, instruction=MATH_INSTRUCTION)
    if problem.choices:
        keys = letters(len(problem.choices))
        options = "\n".join(CHOICE_LINE.format(letter=k, text=t) for k, t in zip(keys, problem.choices, strict=True))
        instruction = MC_INSTRUCTION.format(letters=", ".join(keys))
        return MC_PROMPT_LAYOUT.format(question=problem.question, options=options, instruction=instruction)
    return PROMPT_LAYOUT.format(question=problem.question, instruction=FREE_FORM_INSTRUCTION)


def messages(problem: Problem, system: str | None = None) -> list[Message]:
    """A chat prompt: one user turn, preceded by a system turn when `system` is given."""
    out = [Message(role="system", content=system)] if system else []
    out.append(Message(role="user", content=prompt(problem)))
    return out
