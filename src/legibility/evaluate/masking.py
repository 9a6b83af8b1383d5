"""Answer removal for reader condition C2: the generator's CoT with its final answer taken out.

What is removed, in this order, and why:
1. Everything from `</think>` on (the final answer turn). Then, optionally, the last N tokens or the last
   p of the tokens (whitespace tokens, or spans from a passed tokenizer): the answer usually sits at the end.
2. Explicit answer statements in what is left, each replaced by one placeholder (the same for every kind,
   so the placeholder does not say what it hid):
   - every `\\boxed{...}` / `\\fbox{...}` (in a CoT a box is a final answer, letter or value);
   - option letters, only where a statement names them: "the answer is (B)", "Answer: **B**", "correct
     option is B", "option B", "choice (C)", "I'll choose B", "B or C". A bare capital is never masked: the
     article in "A ball rolls" and letters inside words ("ATP", "X-ray", "I'm") stay. A lowercase letter
     is never an option. Letters, not just the gold one, are masked by default (`mask_for_problem`):
     masking only the gold letter would leak it by elimination ("option [MASKED] fits; option A fails");
   - option text, case-insensitive, as a whole phrase: its words in order with any whitespace between,
     and word boundaries at both ends (a number also may not continue with a digit, ".5" or sit after a
     minus). Decision on possessives: "corresponds to Avogadro's number" with option text "Avogadro" IS
     masked ("[MASKED]'s number": the apostrophe ends the word, and the name is the leak); "Avogadros" and
     "preAvogadro" are not; option text "Avogadro's number" does not match a bare "Avogadro". LaTeX
     spellings of an option ("$10^{-4}$" vs "10^-4") are not normalised: that is the leak judge's job.
     Option texts shorter than `min_text_chars` are skipped (masking every "4" would erase the reasoning)
     and listed in `skipped`;
   - for MATH and free-form answers, the value of every answer statement ("the answer is 14/3",
     "Final answer: $x=5$"): a math span after the anchor, else the text up to the end of the clause.
     Optionally every whole-token occurrence of the gold value (off by default: it erases working).
   Every statement is masked, not only the first (the reference's "first 'the answer is'" bug).
Spans are reported with offsets into the input text (step 1 only cuts the tail, so offsets stay valid),
with a `gold` flag where it is known, since leakage decides the taxonomy.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from legibility.errors import LegibilityError
from legibility.grading import LETTERS, grade, normalize_text
from legibility.records import Problem

PLACEHOLDER = "[MASKED]"
THINK_CLOSE = "</think>"

TokenSpans = Callable[[str], Sequence[tuple[int, int]]]
"""A tokenizer as a function: text -> (start, end) character spans of its tokens, in order."""


@dataclass(frozen=True)
class MaskedSpan:
    kind: str  # "boxed" | "letter" | "option_text" | "statement" | "gold_value"
    start: int  # offsets into the input text
    end: int
    text: str
    gold: bool | None = None  # the masked answer is the gold one (None: unknown)


@dataclass(frozen=True)
class MaskResult:
    text: str
    spans: tuple[MaskedSpan, ...]
    options: dict[str, Any]  # every option applied (letters, option texts, truncation, placeholder, ...)
    dropped_after_think: int = 0  # characters from </think> on
    truncated_tokens: int = 0
    skipped: tuple[str, ...] = ()  # option texts not masked, and why
    n_regions: int = 0  # placeholders written (overlapping spans merge into one)

    @property
    def counts(self) -> dict[str, int]:
        """Masked spans per kind, plus "gold" (spans known to hold the gold answer)."""
        c = Counter(s.kind for s in self.spans)
        c["gold"] = sum(1 for s in self.spans if s.gold)
        return dict(c)


# -------------------------------------------------------------------------------------------- truncation


def whitespace_tokens(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"\S+", text)]


def hf_token_spans(tokenizer: Any) -> TokenSpans:
    """Adapt a Hugging Face fast tokenizer (one that returns offset mappings) to `TokenSpans`."""

    def spans(text: str) -> list[tuple[int, int]]:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [(int(s), int(e)) for s, e in enc["offset_mapping"] if e > s]

    return spans


def truncate(
    text: str, *, tokens: int = 0, fraction: float = 0.0, tokenizer: TokenSpans | None = None
) -> tuple[str, int]:
    """Drop the last `tokens` tokens, or the last round-half-up(`fraction` x n) of n tokens; returns the
    kept prefix (right-stripped) and how many tokens went."""
    if tokens and fraction:
        raise LegibilityError("truncate by tokens or by fraction, not both")
    if tokens < 0 or not 0.0 <= fraction <= 1.0:
        raise LegibilityError(f"bad truncation: tokens={tokens}, fraction={fraction}")
    spans = list((tokenizer or whitespace_tokens)(text))
    n = len(spans)
    drop = min(n, tokens) if tokens else int(fraction * n + 0.5 + 1e-9)
    if not drop:
        return text, 0
    return text[: spans[n - drop][0]].rstrip(), drop


# ------------------------------------------------------------------------------------------------ boxes

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def box_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each outermost `\\boxed{...}` / `\\fbox{...}`; an unclosed one runs to the end."""
    out, pos = [], 0
    while m := _BOX.search(text, pos):
        depth, k = 1, m.end()
        while k < len(text) and depth:
            if text[k] == "\\":
                k += 2
                continue
            depth += {"{": 1, "}": -1}.get(text[k], 0)
            k += 1
        end = min(k, len(text))
        out.append((m.start(), end))
        pos = end
    return out


def _box_content(box: str) -> str:
    return box[box.index("{") + 1 :].removesuffix("}")


# ---------------------------------------------------------------------------------------------- letters

_GLUE_WORDS = (
    r"is|would|should|must|will|be|then|therefore|thus|clearly|likely|probably|definitely|indeed|option|choice|letter"
)
_GLUE = (
    r"(?:\s|\*|_|:|=|-|—|\$|\\\(|\\\[|\{|\\(?:text|textbf|mathrm|mathbf)\s*\{"
    rf"|(?i:\b(?:{_GLUE_WORDS})\b))*?"
)
# Anchors after which a capital letter is an answer: answer nouns (then glue), option nouns (directly), verbs.
_ANSWER_ANCHOR = (
    r"(?i:\b(?:final\s+answer|answer|correct\s+(?:option|choice|letter|one)|best\s+(?:option|choice)"
    r"|right\s+(?:option|choice)|choose|chose|choosing|select|selecting|pick|go\s+with)\b)"
)
_NOUN_ANCHOR = r"(?i:\b(?:option|choice)\s*)"
_LETTER = r"(?P<open>\()?(?P<letter>[A-Z])(?(open)\))(?![A-Za-z0-9_'’-])"
_STATEMENT = re.compile(rf"{_ANSWER_ANCHOR}{_GLUE}{_LETTER}|{_NOUN_ANCHOR}(?P<nopen>\()?(?P<nletter>[A-Z])(?(nopen)\))"
                        r"(?![A-Za-z0-9_'’-])")  # fmt: skip
_CONT = re.compile(
    r"(?:\*\*|\)|\s)*\s*(?:,|/|&|(?i:\bor\b|\band\b))\s*(?i:(?:option|choice)\s+)?"
    r"(?P<open>\()?(?P<letter>[A-Z])(?(open)\))(?![A-Za-z0-9_'’-])"
)
# After an unbracketed letter, a lowercase word makes it prose ("the answer is A ball") except these.
_WORDS_AFTER = frozenset(
    ["is", "are", "was", "because", "since", "as", "and", "or", "which", "both", "seems", "looks", "appears"]
)
_OPERATOR = re.compile(r"\s*(?:[=<>+^/]|\*(?!\*)|\\(?:cdot|times|div|pm|leq?|geq?|neq|approx|to)\b)")


def _stands_alone(text: str, end: int, bracketed: bool) -> bool:
    if bracketed:
        return True
    rest = text[end : end + 40]
    if _OPERATOR.match(rest):  # "E = mc^2"
        return False
    word = re.match(r"[ \t]+([a-z]+)", rest)
    return not word or word.group(1) in _WORDS_AFTER


def letter_spans(text: str, letters: str) -> list[tuple[int, int, str]]:
    """(start, end, letter) of every option letter in `letters` that an answer statement names."""
    out = []
    for m in _STATEMENT.finditer(text):
        if m.group("letter"):
            key, bracketed, strict = "letter", bool(m.group("open")), True
        else:
            key, bracketed, strict = "nletter", True, False  # "option A ..." labels an option whatever follows
        letter = m.group(key)
        if letter not in letters or (strict and not _stands_alone(text, m.end(), bracketed)):
            continue
        bracket = "open" if key == "letter" else "nopen"
        s = m.start(bracket) if m.group(bracket) else m.start(key)
        out.append((s, m.end(), letter))
        pos = m.end()
        while (c := _CONT.match(text, pos)) and c.group("letter") in letters:
            if not _stands_alone(text, c.end(), bool(c.group("open"))):
                break
            out.append((c.start("open") if c.group("open") else c.start("letter"), c.end(), c.group("letter")))
            pos = c.end()
    return out


# ----------------------------------------------------------------------------------------- option text


def phrase_pattern(phrase: str) -> re.Pattern[str] | None:
    """A case-insensitive pattern for `phrase` as a whole phrase (see the module docstring); None if empty."""
    words = phrase.strip().strip(".,;:").split()
    if not words:
        return None
    body = r"\s+".join(re.escape(w) for w in words)
    first, last = words[0][0], words[-1][-1]
    left = r"(?<!\w)" if first.isalnum() or first == "_" else ""
    right = r"(?!\w)" if last.isalnum() or last == "_" else ""
    if first.isdigit() or (first in "-−." and len(words[0]) > 1):
        left += r"(?<!\d[.,])(?<![-−])"
    if last.isdigit():
        right += r"(?![.,]\d)"
    return re.compile(left + body + right, re.IGNORECASE)


def phrase_spans(text: str, phrase: str) -> list[tuple[int, int]]:
    pat = phrase_pattern(phrase)
    return [m.span() for m in pat.finditer(text)] if pat else []


# ------------------------------------------------------------------------------------ value statements

_VALUE_ANCHOR = re.compile(
    r"(?i:\b(?:final\s+answer|answer))(?:\s|\*|_)*(?i:(?:is|would\s+be|should\s+be|must\s+be|will\s+be)\b|:|=)"
    r"\s{0,4}(?:\*\*)?\s{0,4}"  # "**Final Answer:**\n\n$5$" too
)
_MATH_VALUE = re.compile(r"\$\$.{0,400}?\$\$|\$[^$\n]{1,400}\$|\\\(.{0,400}?\\\)|\\\[.{0,400}?\\\]", re.S)
_CLAUSE_END = re.compile(r"[.;,!?]?\s*(?:\n|$)|[.;,!?]\s|\s+(?i:because|since|as|which|so|but|and\s+(?:so|thus))\b")
_MAX_VALUE = 120


def statement_spans(text: str) -> list[tuple[int, int]]:
    """The value of every "the answer is ..." / "Answer: ..." statement (boxes are handled apart)."""
    out = []
    for m in _VALUE_ANCHOR.finditer(text):
        start = m.end()
        if _BOX.match(text, start):
            continue
        if v := _MATH_VALUE.match(text, start):
            out.append(v.span())
            continue
        end_m = _CLAUSE_END.search(text, start, min(len(text), start + _MAX_VALUE))
        end = end_m.start() if end_m else min(len(text), start + _MAX_VALUE)
        value = text[start:end].rstrip("*_ \t")
        if value.strip():
            out.append((start, start + len(value)))
    return out


# ------------------------------------------------------------------------------------------------ mask


def _same_text(value: str, gold: str | None) -> bool | None:
    if gold is None:
        return None
    return re.sub(r"\s+", "", normalize_text(value)) == re.sub(r"\s+", "", normalize_text(gold))


def grade_check(problem: Problem) -> Callable[[str], bool | None]:
    """Is a masked value the problem's gold answer? Asked of `grade` (math-verify for MATH), as a box."""

    def check(value: str) -> bool | None:
        v = value.strip()
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if v.startswith(left) and v.endswith(right) and len(v) >= len(left) + len(right):
                v = v[len(left) : len(v) - len(right)].strip()
                break
        if box := box_spans(v):
            v = _box_content(v[box[0][0] : box[0][1]])
        try:
            return grade(problem, "\\boxed{" + v + "}").correct
        except Exception:  # a grader failure must not stop masking: the flag is then unknown
            return None

    return check


def mask_answer(
    cot: str,
    *,
    letters: str = "",
    gold_letter: str | None = None,
    option_texts: Sequence[str] = (),
    gold_text: str | None = None,
    statements: bool = False,
    gold_value: str | None = None,
    mask_gold_value_everywhere: bool = False,
    gold_check: Callable[[str], bool | None] | None = None,
    boxes: bool = True,
    truncate_tokens: int = 0,
    truncate_fraction: float = 0.0,
    tokenizer: TokenSpans | None = None,
    min_text_chars: int = 2,
    placeholder: str = PLACEHOLDER,
) -> MaskResult:
    """Remove the final answer from a CoT (see the module docstring for the rules and their order).

    letters: option letters to mask in answer statements ("" = none); option_texts: texts to mask as
    phrases; statements: mask answer-statement values (MATH, free form); gold_* and gold_check (is this
    boxed or stated value the gold answer?) only set the `gold` flags (gold_value is compared as normalised
    text when there is no gold_check, and masked everywhere with mask_gold_value_everywhere)."""
    same = gold_check or (lambda v: _same_text(v, gold_value if gold_value is not None else gold_text))
    options: dict[str, Any] = {
        "letters": letters, "option_texts": list(option_texts), "statements": statements, "boxes": boxes,
        "mask_gold_value_everywhere": mask_gold_value_everywhere, "truncate_tokens": truncate_tokens,
        "truncate_fraction": truncate_fraction, "tokenizer": getattr(tokenizer, "__name__", None) if tokenizer else
        "whitespace", "min_text_chars": min_text_chars, "placeholder": placeholder,
    }  # fmt: skip
    text, dropped = cot, 0
    if (k := cot.find(THINK_CLOSE)) >= 0:
        text, dropped = cot[:k], len(cot) - k
    options["think_cut"] = k >= 0
    text, n_trunc = truncate(text, tokens=truncate_tokens, fraction=truncate_fraction, tokenizer=tokenizer)

    spans: list[MaskedSpan] = []
    if boxes:
        for s, e in box_spans(text):
            content = _box_content(text[s:e])
            inner = re.sub(r"\\text\{([^{}]*)\}", r"\1", content).strip().strip("()").strip()
            if gold_letter is not None and re.fullmatch(r"[A-Z]", inner):
                gold = inner == gold_letter
            else:
                gold = same(text[s:e])
            spans.append(MaskedSpan("boxed", s, e, text[s:e], gold))
    if letters:
        for s, e, letter in letter_spans(text, letters):
            spans.append(MaskedSpan("letter", s, e, text[s:e], None if gold_letter is None else letter == gold_letter))
    skipped = []
    for phrase in option_texts:
        if len(re.sub(r"\s", "", phrase.strip().strip(".,;:"))) < min_text_chars:
            skipped.append(f"{phrase!r}: shorter than {min_text_chars} characters")
            continue
        gold = None if gold_text is None else normalize_text(phrase) == normalize_text(gold_text)
        spans += [MaskedSpan("option_text", s, e, text[s:e], gold) for s, e in phrase_spans(text, phrase)]
    if statements:
        spans += [MaskedSpan("statement", s, e, text[s:e], same(text[s:e]))
                  for s, e in statement_spans(text)]  # fmt: skip
    if mask_gold_value_everywhere and gold_value:
        spans += [MaskedSpan("gold_value", s, e, text[s:e], True) for s, e in phrase_spans(text, gold_value)]

    spans.sort(key=lambda sp: (sp.start, -sp.end))
    regions: list[list[int]] = []
    for sp in spans:
        if regions and sp.start < regions[-1][1]:
            regions[-1][1] = max(regions[-1][1], sp.end)
        else:
            regions.append([sp.start, sp.end])
    parts, pos = [], 0
    for s, e in regions:
        parts += [text[pos:s], placeholder]
        pos = e
    parts.append(text[pos:])
    return MaskResult("".join(parts), tuple(spans), options, dropped, n_trunc, tuple(skipped), len(regions))


def _bbh_options(question: str) -> dict[str, str]:
    """BBH keeps its options in the question, one "(A) text" per line."""
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"(?m)^\s*\(([A-Z])\)\s*(.+)$", question)}


def mask_for_problem(
    cot: str,
    problem: Problem,
    *,
    letters: Literal["all", "gold"] = "all",
    choice_texts: Literal["gold", "all"] = "gold",
    **kwargs: Any,
) -> MaskResult:
    """`mask_answer` with what the problem says to mask. Multiple choice (GPQA, or BBH with "(B)" golds):
    answer-statement letters (all the problem's letters by default, see the module docstring) and the gold
    option's text (or every option's, choice_texts="all"); MATH and free form: boxes and answer-statement
    values, with the gold as `gold_value`. Other keyword arguments go to `mask_answer` (truncation, ...)."""
    gold = re.fullmatch(r"\s*\(?([A-Z])\)?\s*", problem.answer)
    if problem.choices or (gold and problem.benchmark != "math"):
        if not gold:
            raise LegibilityError(f"{problem.id}: multiple-choice gold {problem.answer!r} is not a letter")
        g = gold.group(1)
        texts = dict(zip(LETTERS, problem.choices, strict=False)) if problem.choices else _bbh_options(problem.question)
        gold_text = problem.answer_text or texts.get(g)
        all_letters = "".join(texts) or LETTERS
        chosen = list(texts.values()) if choice_texts == "all" else [gold_text] if gold_text else []
        return mask_answer(
            cot, letters=all_letters if letters == "all" else g, gold_letter=g, option_texts=chosen,
            gold_text=gold_text, **kwargs,
        )  # fmt: skip
    return mask_answer(cot, statements=True, gold_value=problem.answer, gold_check=grade_check(problem), **kwargs)
