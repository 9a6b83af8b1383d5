"""Answer grading: read the final answer from a reply and compare it with the gold answer.

Every accuracy number in the project goes through `grade`, so it errs on the side of "wrong": an answer
that cannot be read unambiguously is graded incorrect (with a reason), never guessed.

Where the answer is read: with a `</think>`, only the text after it; without one, the whole reply (a
reply that is all reasoning and never states an answer gets `answer=None`). A reply that opens `<think>`
and never closes it was cut off: no answer, whatever it boxed on the way.

- MATH: the last `\\boxed{}` (or `\\fbox{}`), compared with math-verify (`verify(gold, pred)`, gold first).
  After a `</think>` only, a reply without a box may also state it as "the final answer is $x$" /
  "Answer: x", be a bare expression, or end on it (the last math of its closing paragraph).
- Multiple choice (`problem.choices`, or a gold like "(B)" as in BBH): the letter of the last answer
  statement (`\\boxed{C}`, "Answer: C", "the answer is (C)", ...). Two different letters in that statement
  is wrong, not "take the first". Fallback: an answer whose text equals exactly one choice's text.
- Free form (BBH): normalized exact match (`normalize_text`).

Pure functions, no I/O. math-verify's timeouts use SIGALRM, which only works in the main thread; off the
main thread they are switched off (a pathological expression could then hang that thread).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from legibility.errors import LegibilityError
from legibility.records import Problem
from legibility.responses import split_think

TIMEOUT_S = 5
"""Seconds math-verify may spend parsing one answer or comparing one pair (main thread only)."""

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True, slots=True)
class Grade:
    answer: str | None  # the answer read from the reply (a letter for multiple choice), None if none
    correct: bool
    method: str  # "math-verify" | "letter" | "choice-text" | "exact"
    reason: str | None = None  # why there is no answer, or why it is wrong; None when correct


class AmbiguousAnswer(ValueError):
    """The final answer statement names two or more different letters ("Answer: A or C")."""

    def __init__(self, letters: list[str]):
        self.letters = letters
        super().__init__(f"two different final letters: {', '.join(letters)}")


# ---------------------------------------------------------------------------------------------- boxes

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _boxes(text: str) -> list[tuple[int, int, str | None]]:
    """All boxes as (start, end, content); content None when the braces never close (a cut-off reply)."""
    out: list[tuple[int, int, str | None]] = []
    for m in _BOX.finditer(text):
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for k in range(i, len(text)):
                if text[k] == "{" and text[k - 1] != "\\":
                    depth += 1
                elif text[k] == "}" and text[k - 1] != "\\":
                    depth -= 1
                    if depth == 0:
                        out.append((m.start(), k + 1, text[i + 1 : k]))
                        break
            else:
                out.append((m.start(), len(text), None))
        elif i > m.end():  # "\boxed 5": one space-delimited token
            tok = re.match(r"[^\s$]+", text[i:])
            if tok:
                out.append((m.start(), i + tok.end(), tok.group(0).rstrip(".,;")))
    # A box inside another box is not a separate answer: keep the outermost.
    return [b for b in out if not any(o[0] < b[0] and b[1] <= o[1] for o in out)]


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (balanced braces) or `\\boxed 5`; None if there is
    none or the last one is cut off."""
    boxes = _boxes(text)
    if not boxes:
        return None
    content = boxes[-1][2]
    return content.strip() if content is not None else None


# ------------------------------------------------------------------------------------ normalization

_WRAP = re.compile(r"\\(?:text|textbf|textit|textrm|texttt|mathrm|mathbf|mbox|boxed|fbox)\s*\{([^{}]*)\}")
_DASHES = str.maketrans({"−": "-", "–": "-", "—": "-", "‘": "'", "’": "'", "“": '"', "”": '"'})
_EDGE = " \t\n.,;:!?\"'`*_"


def normalize_text(s: str) -> str:
    """Free-form answers compared as text: unwrap \\text{}/\\boxed{}, drop markdown and $, lowercase,
    collapse spaces, strip surrounding punctuation (not brackets: Dyck answers are brackets)."""
    s = s.translate(_DASHES)
    prev = None
    while prev != s:
        prev, s = s, _WRAP.sub(r"\1", s)
    s = re.sub(r"\\[()\[\]]", " ", s)  # \( \) \[ \]
    s = s.replace("**", "").replace("__", "").replace("`", "").replace("$", "")
    s = re.sub(r"\s+", " ", s.lower())
    return s.strip(_EDGE)


def _texts_equal(gold: str, pred: str) -> bool:
    g, p = normalize_text(gold), normalize_text(pred)
    if not g or not p:
        return False
    if g == p:
        return True
    if not re.search(r"[a-z0-9]", g):  # brackets only (Dyck): spacing does not matter
        return re.sub(r"\s", "", g) == re.sub(r"\s", "", p)
    num = re.compile(r"-?\d+(?:\.\d+)?")
    if num.fullmatch(g) and num.fullmatch(p):
        return math.isclose(float(g), float(p), rel_tol=0, abs_tol=1e-9)
    return False


# ---------------------------------------------------------------------------------- letter answers

_ANCHOR = (
    r"(?i:\b(?:final\s+answer|answer|correct\s+(?:option|choice|letter)|best\s+(?:option|choice)))"
    r"(?![A-Za-z])"
)
# What may sit between the anchor and the letter: punctuation, markdown, LaTeX wrappers, a few verbs.
_GLUE = (
    r"(?:\s|\*|_|:|=|-|—|\$|\\[(\[]|\{|\(|\[|\\(?:text|textbf|mathrm|mathbf|boxed)\b"
    r"|(?i:\b(?:is|would|should|must|will|be|option|choice|letter|then|therefore|thus|clearly)\b))*?"
)
_STATEMENT = re.compile(_ANCHOR + _GLUE + r"(?P<letter>[A-Z])(?![A-Za-z0-9_])")
_CONT = re.compile(
    r"[)}*$\s\\)\]]*?\s*(?:,|/|&|\band/or\b|\band\b|\bor\b)\s*"
    r"(?:\*\*|\$|\\text\{|\(|(?i:option|choice|maybe|possibly|perhaps|probably)\s+)*"
    r"(?P<letter>[A-Z])(?![A-Za-z0-9_])"
)
# A letter then a lowercase word is prose ("Answer: A bit ...", "the answer I think", "answer B gives"),
# except for these words.
_WORDS_AFTER_LETTER = {"is", "are", "was", "because", "since", "as", "and", "or", "which", "both"}
_OPERATOR_AFTER = re.compile(
    r"\s*(?:[=<>+^]|/(?!\s*\(?[A-Z](?![A-Za-z0-9]))|\\(?:cdot|times|div|pm|mp|leq?|geq?|neq|approx|equiv|sim|to|rightarrow)\b)"
)


def _letter_stands_alone(text: str, end: int, letter: str) -> bool:
    """A letter is an answer only as a token on its own: not "E = mc^2", "I'm", "A bit", "X-ray"."""
    rest = text[end : end + 40]
    if _OPERATOR_AFTER.match(rest) or re.match(r"['’][A-Za-z]|-[A-Za-z0-9]", rest):
        return False
    word = re.match(r"[ \t]+([a-z]+)", rest)
    return not word or word.group(1) in _WORDS_AFTER_LETTER


def _letters_in_box(content: str) -> list[str] | None:
    """The letter(s) a box names ("C", "\\text{(C)}", "A, C"), or None if it is not a letter answer."""
    s = content
    prev = None
    while prev != s:
        prev, s = s, _WRAP.sub(r"\1", s)
    s = re.sub(r"^(?i:option|choice)\s+", "", s.replace("**", "").replace("$", "").strip())
    one = r"\(?([A-Z])\)?"
    if m := re.fullmatch(one + r"\.?", s):
        return [m.group(1)]
    if re.fullmatch(one + r"(?:\s*(?:,|/|&|\band\b|\bor\b|\\text\{\s*(?:and|or)\s*\})\s*" + one + ")+", s):
        return re.findall(r"[A-Z]", s)
    if m := re.match(r"\(?([A-Z])\)\s", s):  # "(C) 42 kJ"
        return [m.group(1)]
    return None


@dataclass(frozen=True, slots=True)
class _Letters:
    letters: list[str]  # distinct, in order; empty when none found
    raw: str | None = None  # the non-letter final answer text (for the choice-text fallback)


def _dedupe(letters: list[str]) -> list[str]:
    return list(dict.fromkeys(letters))


def _find_letters(region: str) -> _Letters:
    """The letters of the last answer statement (boxed or anchored), else of a bare "(C)" line."""
    found: list[tuple[int, list[str]]] = []  # (end position, letters)
    raw: tuple[int, str] | None = None
    for start, end, content in _boxes(region):
        if content is None:
            continue
        letters = _letters_in_box(content)
        if letters is not None:
            found.append((end, letters))
        elif raw is None or start > raw[0]:
            raw = (start, content)
    for m in _STATEMENT.finditer(region):
        letter = m.group("letter")
        if not _letter_stands_alone(region, m.end(), letter):
            continue
        letters, pos = [letter], m.end()
        while (c := _CONT.match(region, pos)) and _letter_stands_alone(region, c.end(), c.group("letter")):
            letters.append(c.group("letter"))
            pos = c.end()
        found.append((m.end(), letters))
    for m in re.finditer(_ANCHOR + r"\s*\**\s*(?:is|:)\s*:?\s*\**\s*(?P<text>[^\n]+)", region):
        if raw is None or m.start() > raw[0]:
            raw = (m.start(), m.group("text"))
    if found:
        return _Letters(_dedupe(max(found, key=lambda f: f[0])[1]), None)
    # No answer statement: a reply whose first or last line is just a letter ("(C)", "C.", "**C) 42 kJ**").
    lines = [ln.strip() for ln in region.strip().splitlines() if ln.strip()]
    bare = re.compile(r"^(?:\*\*|__)?\s*(?:\(([A-Z])\)|([A-Z])(?:[.):]|\*\*|$))")
    edge = [m for ln in (lines[:1] + lines[-1:]) if (m := bare.match(ln))]
    letters = _dedupe([m.group(1) or m.group(2) for m in edge])
    if letters:
        return _Letters(letters, None)
    if raw is None and len(lines) == 1:
        raw = (0, lines[0])
    return _Letters([], raw[1] if raw else None)


def extract_letter(text: str, n_choices: int) -> str | None:
    """The letter (A.. up to `n_choices`) of the final answer statement in `text`, or None.

    The last statement wins ("Answer: A ... Final answer: C" is C). Raises `AmbiguousAnswer` when that
    statement names different letters. A final letter outside A..n_choices is no answer (None).
    """
    found = _find_letters(text).letters
    if len(found) > 1:
        raise AmbiguousAnswer(found)
    if found and LETTERS.index(found[0]) < n_choices:
        return found[0]
    return None


# -------------------------------------------------------------------------------------- math-verify


def _timeout() -> int | None:
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=4096)
def _parse_gold(gold: str, timeout: int | None) -> tuple[Any, ...]:
    # Wrapping gold in \boxed{} and "$...$" agree on all of MATH-500; \boxed matches how predictions go in.
    return tuple(parse("\\boxed{" + gold + "}", parsing_timeout=timeout))  # type: ignore[arg-type]


_ANCHORED = [
    LatexExtractionConfig(try_extract_without_anchor=False),
    ExprExtractionConfig(try_extract_without_anchor=False),
]
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")


def _math_answer(region: str, after_think: bool, timeout: int | None) -> tuple[str | None, list[Any]]:
    """(answer text, parsed prediction) from the last box; after </think>, also anchored or bare math."""
    boxed = extract_boxed(region)
    if boxed is not None:
        return boxed, parse("\\boxed{" + boxed + "}", parsing_timeout=timeout)  # type: ignore[arg-type]
    if not after_think or not region.strip():
        return None, []
    tail = region[-4000:]
    no_words = not _WORD.search(re.sub(r"\\[A-Za-z]+|\\text\{[^{}]*\}", " ", tail))
    if no_words and len(tail) <= 200:  # the reply after </think> is a bare expression: "$\frac{1}{2}$"
        pred = parse(tail if "$" in tail or "\\(" in tail else f"${tail.strip().rstrip('.')}$", parsing_timeout=timeout)  # type: ignore[arg-type]
    else:  # "The final answer is $x$." / "Answer: x"
        pred = parse(tail, extraction_config=_ANCHORED, parsing_timeout=timeout)  # type: ignore[arg-type]
        if not pred:  # no anchor: the last math in the closing paragraph ("Thus the sum is $\frac{14}{3}$.")
            last = re.split(r"\n\s*\n", tail.strip())[-1][-500:]
            pred = parse(last, parsing_timeout=timeout)  # type: ignore[arg-type]
    if not pred:
        return None, []
    text = next((p for p in pred if isinstance(p, str)), str(pred[0]))
    return text, pred


def _grade_math(problem: Problem, region: str, after_think: bool) -> Grade:
    timeout = _timeout()
    answer, pred = _math_answer(region, after_think, timeout)
    if answer is None:
        return Grade(None, False, "math-verify", "no \\boxed{}" if not after_think else "no final answer")
    if not pred:
        return Grade(answer, False, "math-verify", "could not parse the answer")
    gold = list(_parse_gold(problem.answer, timeout))
    if verify(gold, pred, timeout_seconds=timeout):
        return Grade(answer, True, "math-verify")
    return Grade(answer, False, "math-verify", f"not equivalent to gold {problem.answer}")


# -------------------------------------------------------------------------------------- dispatching


def _gold_letter(problem: Problem) -> str | None:
    m = re.fullmatch(r"\s*\(?([A-Z])\)?\s*", problem.answer)
    return m.group(1) if m else None


def _grade_letter(problem: Problem, region: str, gold: str) -> Grade:
    if problem.choices:
        choices = list(problem.choices)
    else:  # BBH keeps its options in the question: "(A) ...", one per line
        labels = re.findall(r"(?m)^\s*\(([A-Z])\)", problem.question)
        choices = [] if not labels else [""] * (LETTERS.index(max(labels)) + 1)
    n = len(choices) or len(LETTERS)
    found = _find_letters(region)
    if len(found.letters) > 1:
        return Grade(None, False, "letter", f"two different final letters: {', '.join(found.letters)}")
    if found.letters:
        letter = found.letters[0]
        if LETTERS.index(letter) >= n:
            return Grade(letter, False, "letter", f"{letter} is not one of the {n} choices")
        ok = letter == gold
        return Grade(letter, ok, "letter", None if ok else f"chose {letter}, gold {gold}")
    # Fallback: the stated answer is exactly one choice's text.
    if found.raw is not None and any(choices):
        hits = [LETTERS[i] for i, c in enumerate(choices) if c and _texts_equal(c, found.raw)]
        if len(hits) == 1:
            ok = hits[0] == gold
            return Grade(hits[0], ok, "choice-text", None if ok else f"chose {hits[0]}, gold {gold}")
    return Grade(None, False, "letter", "no answer letter")


_FREE_ANCHOR = re.compile(
    r"(?i:\b(?:final\s+answer|answer))(?![A-Za-z])\s*(?:\*\*|__)?\s*(?:is|would\s+be|should\s+be|:)?\s*:?"
    r"(?:\s|\*\*|__)*(?P<text>[^\n]+)"
)


def _free_answer(region: str) -> str | None:
    found: list[tuple[int, str]] = [(s, c) for s, _, c in _boxes(region) if c is not None]
    for m in _FREE_ANCHOR.finditer(region):
        text = re.split(r"\.\s", m.group("text"), maxsplit=1)[0]
        found.append((m.start(), text))
    if found:
        return max(found, key=lambda f: f[0])[1].strip()
    lines = [ln for ln in region.strip().splitlines() if ln.strip()]
    return lines[0].strip() if len(lines) == 1 and len(lines[0]) <= 200 else None


def _grade_free(problem: Problem, region: str) -> Grade:
    answer = _free_answer(region)
    if answer is None or not normalize_text(answer):
        return Grade(None, False, "exact", "no final answer")
    ok = _texts_equal(problem.answer, answer)
    return Grade(
        answer,
        ok,
        "exact",
        None if ok else f"{normalize_text(answer)!r} != {normalize_text(problem.answer)!r}",
    )


def grade(problem: Problem, response: str) -> Grade:
    """Grade one reply against `problem.answer` (see the module docstring for the rules)."""
    split = split_think(response)
    region = split.answer if split.closed else response
    method = "math-verify" if problem.benchmark == "math" and not problem.choices else "letter"
    if not split.closed and "<think>" in response:
        # An opened but never closed think block is a truncated reply: whatever it boxed was still thinking.
        return Grade(None, False, method, "unfinished <think> block (truncated reply)")
    gold = _gold_letter(problem)
    if problem.choices or (gold is not None and problem.benchmark != "math"):
        if gold is None:
            raise LegibilityError(f"{problem.id}: multiple-choice gold {problem.answer!r} is not a letter")
        return _grade_letter(problem, region, gold)
    if problem.benchmark == "math":
        return _grade_math(problem, region, split.closed)
    return _grade_free(problem, region)


def reference_misses(problems: Iterable[Problem]) -> list[tuple[Problem, Grade]]:
    """The grader's self-check: each MATH problem's own reference solution (`meta["solution"]`) graded against
    its answer. A reference solution is right by construction, so every miss is a grader or data bug."""
    misses = []
    for p in problems:
        g = grade(p, p.meta["solution"])
        if not g.correct:
            misses.append((p, g))
    return misses
