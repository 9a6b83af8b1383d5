"""Where a reasoning model's reply splits into CoT and final answer, and how a completion is written back."""

from __future__ import annotations

import re
from typing import NamedTuple

_OPEN = re.compile(r"^\s*<think>\s*", re.S)
_CLOSE = "</think>"


class Split(NamedTuple):
    reasoning: str
    answer: str
    closed: bool  # a </think> was found


def split_think(text: str) -> Split:
    """Split "<think>cot</think>answer". Some chat templates put <think> in the prompt, so the opening tag
    is optional; without a closing tag the whole text is (unfinished) reasoning."""
    body = _OPEN.sub("", text, count=1)
    if _CLOSE in body:
        cot, _, answer = body.partition(_CLOSE)
        return Split(cot.strip(), answer.strip(), True)
    return Split(body.strip(), "", False)


def completion(reasoning: str, answer: str) -> str:
    """The assistant turn a pair is trained on: the CoT in think tags, then the final answer."""
    return f"<think>\n{reasoning}\n</think>\n\n{answer}"
