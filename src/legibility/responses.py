"""Where a reasoning model's reply splits into CoT and final answer, and how a completion is written back."""

from __future__ import annotations

import re
from typing import NamedTuple

_OPEN = re.compile(r"^\s*<think>\s*", re.S)
THINK_CLOSE = "</think>"


class Split(NamedTuple):
    reasoning: str
    answer: str
    closed: bool  # a </think> was found


def split_think(text: str) -> Split:
    """Split "<think>cot</think>answer". Some chat templates put <think> in the prompt, so the opening tag
    is optional; without a closing tag the whole text is (unfinished) reasoning."""
    body = _OPEN.sub("", text, count=1)
    if THINK_CLOSE in body:
        cot, _, answer = body.partition(THINK_CLOSE)
        return Split(cot.strip(), answer.strip(), True)
    return Split(body.strip(), "", False)


def completion(reasoning: str, answer: str) -> str:
    """The assistant turn a pair is trained on: the CoT in think tags, then the final answer.

    A CoT holding `</think>` would end the think block early and turn its tail into the "answer": refused."""
    if THINK_CLOSE in reasoning:
        raise ValueError("the reasoning holds </think>: its completion would not split back into CoT and answer")
    return f"<think>\n{reasoning}\n</think>\n\n{answer}"
