"""Answer grading: read the final answer from a reply and compare it with the gold answer.

Every accuracy number in the project goes through `grade`, so it errs on the side of "wrong": an answer
that cannot be read unambiguously is graded incorrect (with a reason), never guessed.

Two verdicts per reply, because which traces count as "correct" must not depend on how a model phrases its
answer without anyone noticing:

- strict: explicit final-answer forms only: `\\boxed{}` / `\\fbox{}`, "Final answer: X", "The answer is X",
  "Answer: X", "The correct option is (C)". A "final answer" statement or a box outranks a plain "answer"
  statement wherever it stands ("Final answer: C. Answer A is wrong because..." is C).
- flexible (`Grade.correct`): the strict answer when there is one, else a fallback: a bare expression, the last
  math of the closing paragraph (MATH), a bare letter on the first or last line, an answer that is one choice's
  exact text (multiple choice), a one-line reply (free form).

Where the answer is read: with a `</think>`, only the text after it; without one, the whole reply (where MATH reads
only boxes: a reply that is all reasoning has no answer). A reply that opens `<think>` and never closes it was
cut off: no answer, whatever it boxed on the way. Asides ("Note: ...", "Explanation: ...", a parenthesis of prose)
never hold the answer.

- MATH: math-verify (`verify(gold, pred)`, gold first), with decimals compared to 10 places (0.5000001 is not 1/2)
  and a set never equal to a tuple or interval (`\\{1,2\\}` is not `(1,2)`).
- Multiple choice (`problem.choices`, or a gold like "(B)" as in BBH): the letter of the answer statement. Two
  different letters in that statement is wrong, not "take the first".
- Free form (BBH): normalized exact match (`normalize_text`).

Pure functions, no I/O, never raises on any reply (only on a problem whose multiple-choice gold is not a letter).
math-verify's timeouts use SIGALRM, which only works in the main thread: there a timeout is an *undecided* grade
(`Grade.undecided`), never a hang or a silent "wrong". Off the main thread they are switched off, so the input is
capped instead (`MAX_REGION`, `MAX_ANSWER`) and every regex is linear or bounded.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

from math_verify import parse, verify
from math_verify.errors import TimeoutException

from legibility.errors import LegibilityError
from legibility.records import Problem
from legibility.responses import split_think

TIMEOUT_S = 5
"""Seconds math-verify may spend parsing one answer or comparing one pair (main thread only)."""

MAX_REGION = 20_000
"""Characters of the answer region read (its tail): the final answer is at the end, and the cost stays bounded."""

MAX_ANSWER = 1_000
"""Longest answer handed to math-verify (the longest MATH-500 gold is 53 characters); longer is undecided."""

FLOAT_ROUNDING = 10
"""Decimal places math-verify compares a decimal at (its default, 6, takes 0.5000001 for 1/2)."""

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

STRICT_RULES = frozenset({"box", "final-answer", "answer-statement"})
"""Rules that read an explicit final-answer form; the others ("bare", "closing-paragraph", "letter-line",
"choice-text", "single-line") are the flexible fallbacks."""


@dataclass(frozen=True, slots=True)
class Grade:
    """One reply's grade. `answer`/`correct` are the flexible reading, `strict_answer`/`strict` the strict one."""

    answer: str | None  # the answer read from the reply (a letter for multiple choice), None if none
    correct: bool  # the flexible verdict
    method: str  # "math-verify" | "letter" | "choice-text" | "exact"
    reason: str | None = None  # why there is no answer, or why it is wrong; None when (flexibly) correct
    strict: bool = False  # the strict verdict: correct by an explicit final-answer form
    strict_answer: str | None = None  # the answer an explicit final-answer form gave, None if none
    rule: str | None = None  # which rule read `answer` (see STRICT_RULES)
    undecided: bool = False  # the grader could not decide (math-verify timeout, answer too long): not "wrong"


class AmbiguousAnswer(ValueError):
    """The final answer statement names two or more different letters ("Answer: A or C")."""

    def __init__(self, letters: list[str]):
        self.letters = letters
        super().__init__(f"two different final letters: {', '.join(letters)}")


class _Undecided(Exception):
    """math-verify timed out, or the answer is too long to hand it: the grade is undecided."""

    def __init__(self, reason: str, answer: str | None = None):
        self.reason, self.answer = reason, answer
        super().__init__(reason)


# ---------------------------------------------------------------------------------------------- boxes

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _matching_braces(text: str) -> dict[int, int]:
    """Position of each unescaped "{" -> position of its "}" (unclosed ones absent), in one linear pass."""
    match: dict[int, int] = {}
    stack: list[int] = []
    for m in re.finditer(r"(?<!\\)[{}]", text):
        if m.group() == "{":
            stack.append(m.start())
        elif stack:
            match[stack.pop()] = m.start()
    return match


def _boxes(text: str) -> list[tuple[int, int, str | None]]:
    """All boxes as (start, end, content); content None when the braces never close (a cut-off reply)."""
    out: list[tuple[int, int, str | None]] = []
    braces: dict[int, int] | None = None
    for m in _BOX.finditer(text):
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            braces = _matching_braces(text) if braces is None else braces
            k = braces.get(i)
            out.append((m.start(), k + 1, text[i + 1 : k]) if k is not None else (m.start(), len(text), None))
        elif i > m.end():  # "\boxed 5": one space-delimited token
            tok = re.match(r"[^\s$]+", text[i : i + 200])
            if tok:
                out.append((m.start(), i + tok.end(), tok.group(0).rstrip(".,;")))
    # A box inside another box is not a separate answer: keep the outermost (boxes come sorted by start).
    kept: list[tuple[int, int, str | None]] = []
    for b in out:
        if not kept or b[0] >= kept[-1][1] or b[0] == kept[-1][0]:
            kept.append(b)
    return kept


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


def _unwrap(s: str) -> str:
    prev = None
    for _ in range(20):  # nesting depth; bounded so no input can loop long
        if prev == s:
            break
        prev, s = s, _WRAP.sub(r"\1", s)
    return s


def normalize_text(s: str) -> str:
    """Free-form answers compared as text: unwrap \\text{}/\\boxed{}, drop markdown and $, lowercase,
    collapse spaces, strip surrounding punctuation (not brackets: Dyck answers are brackets)."""
    s = _unwrap(s.translate(_DASHES))
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
    num = re.compile(r"-?\d{1,30}(?:\.\d{1,30})?")
    if num.fullmatch(g) and num.fullmatch(p):
        return Fraction(g) == Fraction(p)
    return False


# ------------------------------------------------------------------------------------------- asides

# A line or sentence opening with one of these is commentary on the answer, not the answer.
_ASIDE = r"(?:notes?|explanation|remarks?|check(?:ing)?|verification|justification|caveat|p\.?\s?s\.?)"
_ASIDE_LINE = re.compile(rf"(?im)^[ \t>#*_-]*{_ASIDE}[ \t*_]*[:.][^\n]*")
_ASIDE_SENTENCE = re.compile(rf"(?i)(?<=[.!?])[ \t]+[*_]*{_ASIDE}[ \t*_]*:[^\n]*")
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")
_PROSE_PAREN = re.compile(r"(?<!\\)\((?=[^()\n]{0,300}?(?<![\\A-Za-z])[A-Za-z]{3})[^()\n\\]{0,300}\)")


def _blank(m: re.Match[str]) -> str:
    return " " * len(m.group())


def _mask_asides(region: str) -> str:
    """The region with aside lines and sentences blanked out (same length, so positions still compare)."""
    return _ASIDE_SENTENCE.sub(_blank, _ASIDE_LINE.sub(_blank, region))


def _drop_prose_parens(text: str) -> str:
    """ "12 (checked for n = 1, 2)" -> "12 ": a parenthesis holding words is a remark; "(3, \\pi)" stays."""
    return _PROSE_PAREN.sub(" ", text)


# ---------------------------------------------------------------------------------- statements

TIER_FINAL, TIER_ANSWER = 2, 1
_ANCHOR = (
    r"(?i:\b(?P<anchor>final\s+answer|answer|correct\s+(?:option|choice|letter)|best\s+(?:option|choice)))"
    r"(?![A-Za-z])"
)
# Between the anchor and the answer: markdown, then a copula or a colon ("answer is", "Answer:", "answer - C").
# "answer A is wrong" and "this answer follows" have none, so they are mentions, not statements.
_SEP = (
    r"[ \t]{0,8}(?:\*\*|__|\*|_)?[ \t]{0,8}"
    r"(?P<sep>(?i:is|would\s+be|should\s+be|will\s+be|must\s+be)\b[ \t]{0,8}:?|:|=|[-–—](?=\s))"
)
_STATEMENT = re.compile(_ANCHOR + _SEP)
_HEADING = re.compile(r"(?im)^[ \t#>*_]{0,8}final\s+answer[ \t*_:]{0,8}$")
# A word right before "answer" that makes it a mention: "this answer is consistent", "each answer is".
_MENTION = {"this", "that", "each", "an", "no", "any", "every", "which", "whose", "other", "another", "previous",
            "wrong", "incorrect", "first", "initial"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Statement:
    tier: int
    pos: int  # where the answer text starts
    rule: str  # "final-answer" | "answer-statement"


def _statements(masked: str, *, letters: bool = False) -> list[_Statement]:
    """Answer statements in a masked region, best first (a "final answer" before a plain "answer", then last
    first). Multiple-choice anchors ("the correct option is") only when reading `letters`."""
    found: list[_Statement] = []
    for m in _STATEMENT.finditer(masked):
        anchor = m.group("anchor").lower()
        if not letters and not anchor.endswith("answer"):
            continue
        before = re.search(r"([A-Za-z]+)[ \t*_]{1,3}$", masked[max(0, m.start() - 20) : m.start()])
        if before and before.group(1).lower() in _MENTION:
            continue
        final = anchor.startswith("final")
        found.append(_Statement(TIER_FINAL if final else TIER_ANSWER, m.end(), "final-answer" if final else
                                "answer-statement"))  # fmt: skip
    for m in _HEADING.finditer(masked):
        found.append(_Statement(TIER_FINAL, m.end(), "final-answer"))
    return sorted(found, key=lambda s: (s.tier, s.pos), reverse=True)


def _statement_text(region: str, pos: int) -> str:
    """The stated answer: the rest of the line, or the next paragraph when the line ends at the colon."""
    rest = region[pos : pos + 2000]
    line, _, after = rest.partition("\n")
    if line.strip(" \t*_:"):
        return line.strip(" \t*_")
    para = re.split(r"\n[ \t]*\n", after.lstrip("\n"), maxsplit=1)[0]
    return para.strip(" \t\n*_")[:600]


# ---------------------------------------------------------------------------------- letter answers

# What may sit between the separator and the letter: markdown, LaTeX wrappers, a few words.
_GLUE = re.compile(
    r"(?:\s|\*|_|:|\$|\\[(\[]|\{|\(|\[|\\(?:text|textbf|mathrm|mathbf|boxed)\b"
    r"|(?i:\b(?:is|would|should|must|will|be|option|choice|letter|then|therefore|thus|clearly)\b)){0,12}?"
    r"(?P<letter>[A-Z])(?![A-Za-z0-9_])"
)
_CONT = re.compile(
    r"[)}*$\\\]]{0,6}[ \t]{0,4}(?:,|/|&|\band/or\b|\band\b|\bor\b)[ \t]{0,4}"
    r"(?:\*\*|\$|\\text\{|\(|(?i:option|choice|maybe|possibly|perhaps|probably)\s){0,3}[ \t]{0,4}"
    r"(?P<letter>[A-Z])(?![A-Za-z0-9_])"
)
# A letter then a lowercase word is prose ("Answer: A bit ...", "the answer I think", "answer B gives"),
# except for these words.
_WORDS_AFTER_LETTER = {"is", "are", "was", "because", "since", "as", "and", "or", "which", "both"}
_OPERATOR_AFTER = re.compile(
    r"\s*(?:[=<>+^]|/(?!\s*\(?[A-Z](?![A-Za-z0-9]))|\\(?:cdot|times|div|pm|mp|leq?|geq?|neq|approx|equiv|sim|to|rightarrow)\b)"
)


def _letter_stands_alone(text: str, end: int) -> bool:
    """A letter is an answer only as a token on its own: not "E = mc^2", "I'm", "A bit", "X-ray"."""
    rest = text[end : end + 40]
    if _OPERATOR_AFTER.match(rest) or re.match(r"['’][A-Za-z]|-[A-Za-z0-9]", rest):
        return False
    word = re.match(r"[ \t]+([a-z]+)", rest)
    return not word or word.group(1) in _WORDS_AFTER_LETTER


def _letters_in_box(content: str) -> list[str] | None:
    """The letter(s) a box names ("C", "\\text{(C)}", "A, C"), or None if it is not a letter answer."""
    s = _unwrap(content)
    s = re.sub(r"^(?i:option|choice)\s+", "", s.replace("**", "").replace("$", "").strip())
    one = r"\(?([A-Z])\)?"
    if m := re.fullmatch(one + r"\.?", s):
        return [m.group(1)]
    if len(s) < 200 and re.fullmatch(
        one + r"(?:\s*(?:,|/|&|\band\b|\bor\b|\\text\{\s*(?:and|or)\s*\})\s*" + one + ")+", s
    ):
        return re.findall(r"[A-Z]", s)
    if m := re.match(r"\(?([A-Z])\)\s", s):  # "(C) 42 kJ"
        return [m.group(1)]
    return None


def _dedupe(letters: list[str]) -> list[str]:
    return list(dict.fromkeys(letters))


def _statement_letters(region: str, pos: int) -> list[str] | None:
    """The letter(s) right after a statement's separator ("is (B) or (C)"), or None if no lone letter follows."""
    m = _GLUE.match(region, pos)
    if not m or not _letter_stands_alone(region, m.end()):
        return None
    letters, end = [m.group("letter")], m.end()
    while (c := _CONT.match(region, end)) and _letter_stands_alone(region, c.end()):
        letters.append(c.group("letter"))
        end = c.end()
    return _dedupe(letters)


@dataclass(frozen=True, slots=True)
class _Letters:
    letters: list[str]  # letters of the best explicit statement (box, "final answer", "answer"); [] if none
    rule: str | None  # the STRICT_RULES entry that read them
    edge: list[str]  # letters of a bare letter on the first or last line (flexible fallback)
    raw: str | None  # a non-letter stated answer (or a one-line reply), for the choice-text fallback


_BARE_LETTER = re.compile(r"^(?:\*\*|__)?\s*(?:\(([A-Z])\)|([A-Z])(?:[.):]|\*\*|$))")


def _find_letters(region: str) -> _Letters:
    masked = _mask_asides(region)
    best: tuple[int, int, list[str], str] | None = None  # (tier, position, letters, rule)
    raw: tuple[int, str] | None = None
    for start, end, content in _boxes(region):
        if content is None:
            continue
        letters = _letters_in_box(content)
        if letters is not None:
            if best is None or (TIER_FINAL, end) > best[:2]:
                best = (TIER_FINAL, end, _dedupe(letters), "box")
        elif raw is None or start > raw[0]:
            raw = (start, content)
    for s in _statements(masked, letters=True):
        if best is not None and (s.tier, s.pos) <= best[:2]:
            break  # statements come best first: none later can win
        letters = _statement_letters(region, s.pos)
        if letters is not None:
            best = (s.tier, s.pos, letters, s.rule)
            break
        text = _statement_text(region, s.pos)
        if text and (raw is None or s.pos > raw[0]):
            raw = (s.pos, re.split(r"\.(?:\s|$)", _drop_prose_parens(text), maxsplit=1)[0])
    lines = [ln.strip() for ln in region.strip().splitlines() if ln.strip()]
    edge = [m for ln in (lines[:1] + lines[-1:]) if (m := _BARE_LETTER.match(ln))]
    if raw is None and len(lines) == 1:
        raw = (0, lines[0])
    return _Letters(
        best[2] if best else [],
        best[3] if best else None,
        _dedupe([m.group(1) or m.group(2) for m in edge]),
        raw[1] if raw else None,
    )


def extract_letter(text: str, n_choices: int, *, strict: bool = False) -> str | None:
    """The letter (A.. up to `n_choices`) of the final answer in `text`, or None.

    The best statement wins (a box or "Final answer: C" over a later "answer A is ..."); without one, a bare
    letter on the first or last line (not when `strict`). Raises `AmbiguousAnswer` when the answer names
    different letters. A final letter outside A..n_choices is no answer (None).
    """
    found = _find_letters(text[-MAX_REGION:])
    letters = found.letters or ([] if strict else found.edge)
    if len(letters) > 1:
        raise AmbiguousAnswer(letters)
    if letters and LETTERS.index(letters[0]) < n_choices:
        return letters[0]
    return None


# -------------------------------------------------------------------------------------- math-verify


def _timeout() -> int | None:
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


# Numbers sympy would expand digit by digit, in C code no timeout can interrupt (9^{9^{9}} has 370 million digits):
# an exponent of 6+ digits, a numeric power tower, E-notation beyond 1E999, a factorial of 4+ digits.
_HUGE = re.compile(
    r"\^\s*\{?\s*\(?\s*[+-]?\s*\d{6,}"
    r"|\d\s*\)?\s*\^\s*\{?\s*\(?\s*[+-]?\s*\d+\s*\)?\s*\^"
    r"|\d\s*[eE]\s*[+-]?\s*\d{4,}"
    r"|\d{4,}\s*!"
)


def _parse(text: str, timeout: int | None) -> list[Any]:
    """math-verify's parse; a timeout or a number too large to expand is undecided, any other failure is "could
    not parse" ([])."""
    if _HUGE.search(text):
        raise _Undecided("number too large to verify safely")
    try:
        return list(parse(text, parsing_timeout=timeout, raise_on_error=True))  # type: ignore[arg-type]
    except TimeoutException:
        raise _Undecided("math-verify timeout (parsing)") from None
    except Exception:
        return []


@lru_cache(maxsize=4096)
def _parse_gold(gold: str, timeout: int | None) -> tuple[Any, ...]:
    # Wrapping gold in \boxed{} and "$...$" agree on all of MATH-500; \boxed matches how predictions go in.
    return tuple(_parse("\\boxed{" + gold + "}", timeout))


def _bracket_kind(text: str) -> str | None:
    """ "set" for \\{...\\}, "tuple" for (...) / [...] (a pair or an interval), None for a bare list or value."""
    s = re.sub(r"\\(?:left|right|big|Big)(?![A-Za-z])|\$|\s", "", _unwrap(text))
    if re.fullmatch(r"(?:\\\{|\\lbrace).*(?:\\\}|\\rbrace)", s):
        return "set"
    if re.fullmatch(r"[(\[].*,.*[)\]]", s):
        return "tuple"
    return None


def _equivalent(
    gold: str, gold_parsed: Sequence[Any], pred: Sequence[Any], pred_text: str, timeout: int | None
) -> bool:
    kinds = (_bracket_kind(gold), _bracket_kind(pred_text))
    if None not in kinds and kinds[0] != kinds[1]:
        return False  # "\{1,2\}" is a set, "(1,2)" a pair or an interval: never the same answer
    for g in gold_parsed:
        for p in pred:
            try:
                if verify(g, p, float_rounding=FLOAT_ROUNDING, timeout_seconds=timeout, raise_on_error=True):
                    return True
            except TimeoutException:
                raise _Undecided("math-verify timeout (comparing)", pred_text) from None
            except Exception:
                continue
    return False


# ------------------------------------------------------------------------------------------- MATH


@dataclass(frozen=True, slots=True)
class _Read:
    text: str  # the answer as written
    pred: list[Any]  # math-verify's parse of it ([]: could not parse)
    rule: str


def _answer_expression(text: str) -> str:
    """The math of a stated answer: its first math span ("is $\\frac12$ and x = 3" -> \\frac12), else its
    leading expression up to the first prose word or sentence end ("12 ways." -> "12")."""
    span = re.search(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", text, re.S)
    if span:
        return next(g for g in span.groups() if g is not None).strip()
    text = re.split(r"\.(?:\s|$)", _drop_prose_parens(text), maxsplit=1)[0]
    kept = []
    for tok in text.split():
        if re.fullmatch(r"[*_]*[A-Za-z]{2,}[.,;:!?*_]*", tok):
            break
        kept.append(tok)
    return " ".join(kept).strip(" .,;:*_")


def _math_strict(region: str, after_think: bool, timeout: int | None) -> _Read | None:
    """The last box; after </think>, else the best "final answer is $x$" / "Answer: x" statement."""
    boxes = _boxes(region)
    if boxes:
        content = boxes[-1][2]
        if content is None:  # the last box never closes: a cut-off reply
            return None
        text = content.strip()
        return _Read(text, _parse_answer(text, timeout), "box")
    if not after_think:
        return None
    for s in _statements(_mask_asides(region)):
        text = _answer_expression(_statement_text(region, s.pos))
        if text:
            return _Read(text, _parse_answer(text, timeout), s.rule)
    return None


def _parse_answer(text: str, timeout: int | None) -> list[Any]:
    if len(text) > MAX_ANSWER:
        raise _Undecided(f"answer too long to verify ({len(text)} characters)", text[:80] + "...")
    return _parse("\\boxed{" + text + "}", timeout) if text else []


def _math_fallback(region: str, timeout: int | None) -> _Read | None:
    """After </think> with no explicit answer: a bare expression, else the last math of the closing paragraph
    (asides and prose parentheses dropped: "There are 5 ways.\\n\\nNote: we used 2 cases." reads 5)."""
    text = region.strip()
    if not text:
        return None
    no_words = not _WORD.search(re.sub(r"\\[A-Za-z]+|\\text\{[^{}]*\}", " ", text))
    if no_words and len(text) <= 200:  # the reply after </think> is a bare expression: "$\frac{1}{2}$"
        math_text = text if ("$" in text or "\\(" in text or "\\[" in text) else f"${text.rstrip('.')}$"
        pred = _parse(math_text, timeout)
        rule = "bare"
    else:
        paragraphs = [p for p in re.split(r"\n[ \t]*\n", _mask_asides(text)) if p.strip()]
        if not paragraphs:
            return None
        last = _drop_prose_parens(paragraphs[-1])[-500:]
        pred = _parse(last, timeout)
        rule = "closing-paragraph"
    if not pred:
        return None
    answer = next((p for p in pred if isinstance(p, str)), str(pred[0]))
    return _Read(answer, pred, rule)


def _math_verdict(problem: Problem, read: _Read, timeout: int | None) -> tuple[bool, str | None]:
    if not read.pred:
        return False, "could not parse the answer"
    gold = list(_parse_gold(problem.answer, timeout))
    if _equivalent(problem.answer, gold, read.pred, read.text, timeout):
        return True, None
    return False, f"not equivalent to gold {problem.answer}"


def _grade_math(problem: Problem, region: str, after_think: bool) -> Grade:
    timeout = _timeout()
    strict = _math_strict(region, after_think, timeout)
    if strict is not None:
        ok, reason = _math_verdict(problem, strict, timeout)
        return Grade(strict.text, ok, "math-verify", reason, ok, strict.text, strict.rule)
    flex = _math_fallback(region, timeout) if after_think else None
    if flex is None:
        return Grade(None, False, "math-verify", "no final answer" if after_think else "no \\boxed{}")
    ok, reason = _math_verdict(problem, flex, timeout)
    return Grade(flex.text, ok, "math-verify", reason, False, None, flex.rule)


# ------------------------------------------------------------------------------------ multiple choice


def _gold_letter(problem: Problem) -> str | None:
    m = re.fullmatch(r"\s*\(?([A-Z])\)?\s*", problem.answer)
    return m.group(1) if m else None


def _n_choices(problem: Problem) -> tuple[int, list[str]]:
    if problem.choices:
        return len(problem.choices), list(problem.choices)
    labels = re.findall(r"(?m)^\s*\(([A-Z])\)", problem.question)  # BBH keeps options in the question
    return (LETTERS.index(max(labels)) + 1 if labels else len(LETTERS)), []


def _letter_verdict(letters: list[str], n: int, gold: str) -> tuple[str | None, bool, str | None]:
    if len(letters) > 1:
        return None, False, f"two different final letters: {', '.join(letters)}"
    letter = letters[0]
    if LETTERS.index(letter) >= n:
        return letter, False, f"{letter} is not one of the {n} choices"
    ok = letter == gold
    return letter, ok, None if ok else f"chose {letter}, gold {gold}"


def _grade_letter(problem: Problem, region: str, gold: str) -> Grade:
    n, choices = _n_choices(problem)
    found = _find_letters(region)
    if found.letters:
        letter, ok, reason = _letter_verdict(found.letters, n, gold)
        return Grade(letter, ok, "letter", reason, ok, letter, found.rule)
    if found.edge:
        letter, ok, reason = _letter_verdict(found.edge, n, gold)
        return Grade(letter, ok, "letter", reason, False, None, "letter-line")
    if found.raw is not None and any(choices):  # the stated answer is exactly one choice's text
        hits = [LETTERS[i] for i, c in enumerate(choices) if c and _texts_equal(c, found.raw)]
        if len(hits) == 1:
            ok = hits[0] == gold
            return Grade(hits[0], ok, "choice-text", None if ok else f"chose {hits[0]}, gold {gold}", False,
                         None, "choice-text")  # fmt: skip
    return Grade(None, False, "letter", "no answer letter")


# ---------------------------------------------------------------------------------------- free form


def _free_strict(region: str) -> tuple[str, str] | None:
    """(answer, rule) of the best explicit statement: a box or "final answer" before a plain "answer"."""
    best: tuple[int, int, str, str] | None = None
    for start, _, content in _boxes(region):
        if content is not None and content.strip() and (best is None or (TIER_FINAL, start) > best[:2]):
            best = (TIER_FINAL, start, content, "box")
    for s in _statements(_mask_asides(region)):
        if best is not None and (s.tier, s.pos) <= best[:2]:
            break
        text = re.split(r"\.(?:\s|$)", _drop_prose_parens(_statement_text(region, s.pos)), maxsplit=1)[0]
        if normalize_text(text):
            best = (s.tier, s.pos, text, s.rule)
            break
    return (best[2].strip(), best[3]) if best else None


def _grade_free(problem: Problem, region: str) -> Grade:
    strict = _free_strict(region)
    if strict is not None:
        answer, rule = strict
        ok = _texts_equal(problem.answer, answer)
        reason = None if ok else f"{normalize_text(answer)!r} != {normalize_text(problem.answer)!r}"
        return Grade(answer, ok, "exact", reason, ok, answer, rule)
    lines = [ln for ln in region.strip().splitlines() if ln.strip()]
    if len(lines) == 1 and len(lines[0]) <= 200 and normalize_text(lines[0]):
        answer = lines[0].strip()
        ok = _texts_equal(problem.answer, answer)
        reason = None if ok else f"{normalize_text(answer)!r} != {normalize_text(problem.answer)!r}"
        return Grade(answer, ok, "exact", reason, False, None, "single-line")
    return Grade(None, False, "exact", "no final answer")


# -------------------------------------------------------------------------------------- dispatching


def _method(problem: Problem) -> str:
    return "math-verify" if problem.benchmark == "math" and not problem.choices else "letter"


def grade(problem: Problem, response: str, *, raise_errors: bool = False) -> Grade:
    """Grade one reply against `problem.answer` (see the module docstring for the rules). Never raises on a
    reply (a grader bug is an undecided grade, or raised with `raise_errors`); raises `LegibilityError` only
    for a multiple-choice problem whose gold is not a letter."""
    gold = _gold_letter(problem)
    letter_graded = bool(problem.choices) or (gold is not None and problem.benchmark != "math")
    if problem.choices and gold is None:
        raise LegibilityError(f"{problem.id}: multiple-choice gold {problem.answer!r} is not a letter")
    method = "letter" if letter_graded else _method(problem)
    if not isinstance(response, str):
        return Grade(None, False, method, f"response is {type(response).__name__}, not text")
    try:
        split = split_think(response)
        if not split.closed and "<think>" in response:
            # An opened but never closed think block is a truncated reply: whatever it boxed was still thinking.
            return Grade(None, False, method, "unfinished <think> block (truncated reply)")
        region = (split.answer if split.closed else response)[-MAX_REGION:]
        if letter_graded:
            return _grade_letter(problem, region, gold)  # type: ignore[arg-type]
        if problem.benchmark == "math":
            return _grade_math(problem, region, split.closed)
        return _grade_free(problem, region)
    except _Undecided as u:
        return Grade(u.answer, False, method, u.reason, undecided=True)
    except (Exception, TimeoutException) as e:  # a grader bug must not stop an import: record it, undecided
        if raise_errors:
            raise
        return Grade(None, False, method, f"grader error: {type(e).__name__}", undecided=True)


# ------------------------------------------------------------------------------------- self-check


def perturbations(gold: str, *, n_choices: int | None = None) -> list[tuple[str, str]]:
    """Answers near `gold` that must grade WRONG, as (kind, answer): another letter (multiple choice, with
    `n_choices`); the first number off by one; the sign flipped; a fraction's denominator changed; a near-miss
    decimal (gold + 3e-7); a set for a tuple; a flipped truth value or yes/no; a Dyck sequence one bracket short;
    two words of a list swapped. Kinds that do not apply to `gold` are left out."""
    out: list[tuple[str, str]] = []
    letter = re.fullmatch(r"\s*\(?([A-Z])\)?\s*", gold)
    if n_choices is not None:
        if letter:
            for other in LETTERS[:n_choices]:
                if other != letter.group(1):
                    out.append(("other-letter", other))
        return out
    text = normalize_text(gold)
    flips = {"true": "False", "false": "True", "yes": "No", "no": "Yes", "valid": "invalid", "invalid": "valid"}
    if text in flips:
        return [("flipped", flips[text])]
    if gold.strip() and not re.search(r"[A-Za-z0-9]", gold):  # Dyck: brackets only
        return [("one-bracket-short", gold.strip()[:-1].strip())] if len(gold.strip()) > 1 else []
    mc = re.fullmatch(r"\\text\{\s*\(([A-Z])\)\s*\}", gold.strip())
    if mc:
        return [("other-letter", f"\\text{{({LETTERS[(LETTERS.index(mc.group(1)) + 1) % 5]})}}")]
    words = gold.split()
    if len(words) > 1 and all(re.fullmatch(r"[a-z']+", w) for w in words) and words[0] != words[1]:
        return [("words-swapped", " ".join([words[1], words[0], *words[2:]]))]
    if m := re.search(r"\d+", gold):
        out.append(("off-by-one", gold[: m.start()] + str(int(m.group()) + 1) + gold[m.end() :]))
    plain = gold.strip()
    if re.search(r"[1-9]", plain) and not re.search(r"=|\\in\b|\\text|,|\\pm|\\mp", plain):
        out.append(("sign", plain[1:].strip() if plain.startswith("-") else f"-({plain})"))
    if m := re.search(r"\\d?frac\{([^{}]+)\}\{(\d+)\}", gold):
        out.append(("fraction", gold[: m.start(2)] + str(int(m.group(2)) + 1) + gold[m.end(2) :]))
    value = _simple_value(plain)
    if value is not None:
        out.append(("near-miss-decimal", f"{float(value) + 3e-7:.7f}"))
    tup = re.fullmatch(r"(?:\\left)?\((.*,.*)(?:\\right)?\)", plain)
    if tup:
        out.append(("set-for-tuple", f"\\{{{tup.group(1)}\\}}"))
    return out


def _simple_value(gold: str) -> Fraction | None:
    """The value of an integer, decimal or \\frac{a}{b} gold (for the near-miss decimal), else None."""
    if re.fullmatch(r"-?\d{1,15}(?:\.\d{1,15})?", gold):
        return Fraction(gold)
    m = re.fullmatch(r"(-?)\\d?frac\{(\d{1,15})\}\{(\d{1,15})\}", gold)
    if m and int(m.group(3)):
        return Fraction(int(m.group(2)), int(m.group(3))) * (-1 if m.group(1) else 1)
    return None


@dataclass(frozen=True, slots=True)
class CheckMiss:
    """One self-check the grader failed: what was graded against which gold, and what it said."""

    problem_id: str
    check: str  # "gold" | "reference" | "perturbed:<kind>" | "other-gold"
    gold: str
    response: str
    grade: Grade
    expected: bool


def _stated(problem: Problem, answer: str) -> str:
    """A reply stating `answer` the way each benchmark's replies do."""
    if problem.benchmark == "math" and not problem.choices:
        return f"\\boxed{{{answer}}}"
    return f"So the answer is {answer}."


def _squash(s: str) -> str:
    s = re.sub(r"\\[dt]frac", r"\\frac", re.sub(r"\\left|\\right|\\!|\\,|\s|\$", "", s))
    s = re.sub(r"\^\{?\\circ\}?", "", s)  # 30^\circ is 30 (degrees are the unit MATH answers leave out)
    return re.sub(r"^[A-Za-z]=", "", s)  # "x=5" states the value 5


def _same_text(a: str, b: str) -> bool:
    return _squash(a) == _squash(b)


def self_check(problems: Sequence[Problem], *, other_shifts: Iterable[int] = (1,)) -> tuple[int, list[CheckMiss]]:
    """Checks that can fail, for the grader itself: (number of checks, misses).

    Per problem: its gold stated as an answer must grade right, and so must its reference solution
    (`meta["solution"]`, MATH); each of `perturbations(gold)` must grade wrong; the gold of the problem
    `shift` places on (same benchmark and subtask) must grade wrong unless the two golds are the same text.
    """
    misses: list[CheckMiss] = []
    n = 0

    def check(p: Problem, kind: str, response: str, expected: bool) -> None:
        nonlocal n
        n += 1
        g = grade(p, response)
        if g.correct != expected or g.undecided:
            misses.append(CheckMiss(p.id, kind, p.answer, response, g, expected))

    groups: dict[tuple[str, str | None, bool], list[Problem]] = {}
    for p in problems:
        groups.setdefault((p.benchmark, p.subtask, bool(p.choices)), []).append(p)
    for group in groups.values():
        for i, p in enumerate(group):
            check(p, "gold", _stated(p, p.answer), True)
            if isinstance(p.meta.get("solution"), str):
                check(p, "reference", p.meta["solution"], True)
            n_choices = _n_choices(p)[0] if p.choices or (p.benchmark != "math" and _gold_letter(p)) else None
            for kind, wrong in perturbations(p.answer, n_choices=n_choices):
                check(p, f"perturbed:{kind}", _stated(p, wrong), False)
            if n_choices is not None:
                continue  # another item's letter is just another letter
            for shift in other_shifts:
                other = group[(i + shift) % len(group)].answer
                if len(group) > 1 and not _same_text(other, p.answer):
                    check(p, "other-gold", _stated(p, other), False)
    return n, misses
