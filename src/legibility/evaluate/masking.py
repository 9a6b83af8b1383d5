"""Answer removal for reader condition C2: the generator's CoT with its final answer taken out.

What is removed, in this order, and why:
1. Everything from `</think>` on (the final answer turn). Then, optionally, the last N tokens or the last
   p of the tokens (whitespace tokens, or spans from a passed tokenizer): the answer usually sits at the end.
2. Explicit answer statements in what is left, each replaced by one placeholder (the same for every kind,
   so the placeholder does not say what it hid):
   - every `\\boxed{...}` / `\\fbox{...}` (in a CoT a box is a final answer, letter or value);
   - option letters wherever they stand as an answer (only the problem's option letters: A-D for GPQA, the
     BBH task's range): after an answer noun or choice verb ("the answer must be B", "Answer: **B**", "correct
     option is B", "option B", "I'd go with B", "Final: B"); in brackets ("(B) fits best", not "P(A)"); in bold
     ("**B**", "**(B)**"); ending a clause after a conclusion word ("So it's B.", "Therefore, B.", "Hence D") or
     after "is" in a sentence that speaks of an answer ("The one that fits is B."); before a verdict at a clause
     start ("B is correct", "A and C are wrong", "Only C remains"); alone as a sentence or line ("B.", "B) ..."
     as a line label); and the rest of a list ("C or D"). Kept: a capital touching a letter, digit, apostrophe
     or hyphen ("ATP", "X-ray", "I'm", "B-cells"), one a lowercase word follows ("A ball", "the answer is A bit
     off"), one an operator follows ("A = B"), one inside $...$, and one a word names ("point B", "vitamin C",
     "matrix A", "compound A"; decision: "Plan B" is a name, kept). A lowercase letter is never an option.
     Every option letter is masked by default (`mask_for_problem`), not just the gold one: masking only the
     gold letter would leak it by elimination ("option [MASKED] fits; option A fails");
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
   - with `gold_value="everywhere"` (`readers.masking.gold_value`), every occurrence of the gold value too, as
     whole tokens in its usual spellings (\\dfrac = \\frac, a simple fraction as "14/3", "\\left(" = "(", "π",
     "90°" / "90 degrees"). Not the gold: a longer number ("14", "4.5"), an exponent, coefficient or fraction part
     ("x^4", "4x", "3/4"), a macro's argument ("\\frac{4}{3}", "\\sqrt{4}"), a negative ("-4", "-π"). A one-letter
     gold is never masked everywhere (listed in `skipped`). Off by default: on the shipped MATH traces it touches
     20% of the sentences (40% for one-digit golds, which sit in the question's own numbers).
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

_NOT_WORD = r"(?![A-Za-z0-9_'’-])"  # a letter touching one of these is part of a word ("ATP", "X-ray", "I'm", "B's")
_GLUE_WORDS = (
    r"is|would|should|must|will|be|then|here|now|still|therefore|thus|so|clearly|likely|probably|definitely|obviously"
    r"|indeed|simply|actually|option|choice|letter"
)
_GLUE = (
    r"(?:\s|\*|_|:|,|=|-|—|\$|\\\(|\\\[|\{|\\(?:text|textbf|mathrm|mathbf)\s*\{"
    rf"|(?i:\b(?:{_GLUE_WORDS})\b))*?"
)
# Strong anchors: after these (and glue) a capital option letter is an answer, whatever ends the clause.
_ANSWER_ANCHOR = (
    r"(?i:\b(?:final\s+answer|answer|final(?=\s*:)|(?:correct|right|best|only)\s+(?:option|choice|letter|one|answer|fit"
    r"|match)|choose|chose|choosing|select|selecting|pick|picking|(?:go|going|went)\s+with|opt\s+for|settle\s+on"
    r"|settled\s+on)\b)"
)
_NOUN_ANCHOR = r"(?i:\b(?:options?|choices?)\s*)"
_LETTER = rf"(?P<open>\()?(?P<letter>[A-Z])(?(open)\)){_NOT_WORD}"
_STATEMENT = re.compile(rf"{_ANSWER_ANCHOR}{_GLUE}{_LETTER}|{_NOUN_ANCHOR}(?P<nopen>\()?(?P<nletter>[A-Z])(?(nopen)\))"
                        rf"{_NOT_WORD}")  # fmt: skip
# Weak anchors: after these a letter is an answer only where it ends the clause ("So it's B.", "Therefore, B.").
_CONCLUSION = re.compile(
    r"(?i:\b(?:so|thus|therefore|hence|consequently|it[’']s|it\s+is|it\s+must\s+be|must\s+be|should\s+be|would\s+be"
    r"|that[’']s|that\s+leaves|leaves|leaving|only)\b)(?:[\s,:*]|(?i:\b(?:it[’']s|it\s+is|must\s+be|then|clearly"
    rf"|probably|likely|definitely|just|only)\b))*?{_LETTER}"
)
# "The one that fits is B.": a plain "is" names an answer when its sentence speaks of one.
_IS_LETTER = re.compile(rf"(?i:\b(?:is|be)\b)[\s*]*{_LETTER}")
_ANSWERISH = re.compile(r"(?i)\b(?:answer|option|choice|one|correct|right|best|fits?|match(?:es)?|winner|likely)\b")
_LETTER_END = re.compile(r"(?:\*\*)?[ \t]*(?:[.!?;]|$|\n|,?\s+(?i:because|since|as|given|here)\b)", re.M)
# Predicates after a letter (or a list of them) that make it an answer: "B is correct", "A and C are wrong", "B fits".
_LIST = rf"(?P<list>\(?[A-Z]\)?{_NOT_WORD}(?:\s*(?:,|/|&|(?i:\band\b|\bor\b))\s*\(?[A-Z]\)?{_NOT_WORD})*)"
_PREDICATE = re.compile(
    rf"{_LIST}(?:\*\*)?\s+(?:(?i:is|are|was|seems|looks|appears|must\s+be|would\s+be|should\s+be)\s+(?:\w+ly\s+)?"
    r"(?i:correct|incorrect|right|wrong|the\s+(?:answer|correct|right|best|only|most)|best|our\s+answer|eliminated"
    r"|ruled\s+out)\b|(?i:fits|matches|works|wins|remains|fails|it\s+is|does(?:n[’']t|\s+not)\s+(?:fit|work|match))\b)"
)
# A letter standing alone as a sentence or line ("B.", "(B)", "**B**", "B)" as a label), or bold anywhere.
_ALONE = re.compile(r"(?P<letter>[A-Z])(?:\*\*)?(?:[.!?)]+(?=\s|\*|$)|[ \t]*(?:\*\*)?[ \t]*(?=\n|$))", re.M)
_BRACKETED = re.compile(r"(?<![A-Za-z0-9_\\^)\]}])\((?P<letter>[A-Z])\)")
_BOLD = re.compile(r"(?:\*\*|__|\\textbf\{)\s*(?P<span>\(?(?P<letter>[A-Z])\)?)\s*[.:]?\s*(?:\*\*|__|\})")
_CONT = re.compile(
    r"(?:\*\*|\)|\s)*\s*(?:,|/|&|(?i:\bor\b|\band\b))\s*(?i:(?:option|choice)\s+)?"
    rf"(?P<open>\()?(?P<letter>[A-Z])(?(open)\)){_NOT_WORD}"
)
# After an unbracketed letter, a lowercase word makes it prose ("the answer is A ball") except these.
_WORDS_AFTER = frozenset(
    ["is", "are", "was", "because", "since", "as", "and", "or", "which", "both", "seems", "looks", "appears", "it",
     "fits", "matches", "works", "here"]
)  # fmt: skip
_OPERATOR = re.compile(r"\s*(?:[=<>+^/]|\*(?!\*)|\\(?:cdot|times|div|pm|leq?|geq?|neq|approx|to|subset|cup|cap)\b"
                       r"|[⊂⊆∪∩→≤≥≠≈×·])")  # fmt: skip
_CLAUSE_WORDS = frozenset(
    ["so", "thus", "therefore", "hence", "then", "and", "but", "only", "clearly", "option", "choice"]
)
_MATH_SPAN = re.compile(r"\$\$.*?\$\$|\$[^$\n]*\$|\\\(.*?\\\)|\\\[.*?\\\]", re.S)


def _stands_alone(text: str, end: int, bracketed: bool) -> bool:
    if bracketed:
        return True
    rest = text[end : end + 40]
    if _OPERATOR.match(rest):  # "E = mc^2"
        return False
    word = re.match(r"[ \t]+([a-z]+)", rest)
    return not word or word.group(1) in _WORDS_AFTER


def _before(text: str, start: int) -> tuple[str, bool]:
    """Up to 40 characters before `start` less trailing spaces and markup ("**", "- ", "> "), and whether anything
    was stripped; the text's start reads as a new line."""
    raw = ("\n" if start <= 40 else "") + text[max(0, start - 40) : start]
    before = raw.rstrip(" \t*_>#-")
    return before, len(before) < len(raw)


def _sentence_start(text: str, start: int) -> bool:
    """Does a sentence or line begin at `start`?"""
    before, spaced = _before(text, start)
    return before.endswith("\n") or (spaced and before.endswith((".", "!", "?", ":")))


def _clause_start(text: str, start: int) -> bool:
    """Does a clause begin at `start`? (a sentence or line, after , ; : ( or a conclusion word like "so")."""
    before, _ = _before(text, start)
    if before.endswith(("\n", ".", "!", "?", ",", ";", ":", "(")):
        return True
    word = re.search(r"([A-Za-z]+)$", before)
    return bool(word) and word.group(1).lower() in _CLAUSE_WORDS


def _in(spans: Sequence[tuple[int, int]], pos: int) -> bool:
    return any(s <= pos < e for s, e in spans)


def letter_spans(text: str, letters: str) -> list[tuple[int, int, str]]:
    """(start, end, letter) of every option letter in `letters` that stands as an answer (module docstring rules)."""
    if not letters:
        return []
    math = [m.span() for m in _MATH_SPAN.finditer(text)]
    found: dict[tuple[int, int], str] = {}

    def add(s: int, e: int, letter: str) -> None:
        found[(s, e)] = letter
        pos = e
        while (c := _CONT.match(text, pos)) and c.group("letter") in letters:
            if not _stands_alone(text, c.end(), bool(c.group("open"))):
                break
            found[(c.start("open") if c.group("open") else c.start("letter"), c.end())] = c.group("letter")
            pos = c.end()

    def span(m: re.Match[str], key: str = "letter", bracket: str = "open") -> tuple[int, int]:
        return (m.start(bracket) if m.group(bracket) else m.start(key)), m.end()

    for m in _STATEMENT.finditer(text):  # strong anchors ("the answer is B", "option (C)", "I'd go with B")
        if m.group("letter"):
            if m.group("letter") in letters and _stands_alone(text, m.end(), bool(m.group("open"))):
                add(*span(m), m.group("letter"))
        elif m.group("nletter") in letters:  # "option A ..." labels an option whatever follows
            add(*span(m, "nletter", "nopen"), m.group("nletter"))
    for m in _BRACKETED.finditer(text):  # "(B) fits best", "compare (A) and (C)"; not "P(A)"
        if m.group("letter") in letters:
            add(*m.span(), m.group("letter"))
    for m in _BOLD.finditer(text):  # "**B**", "**(B)**", "\textbf{B}"
        if m.group("letter") in letters:
            add(*m.span("span"), m.group("letter"))
    for pat in (_CONCLUSION, _IS_LETTER):  # "So it's B.", "Therefore, B.", "The one that fits is B."
        for m in pat.finditer(text):
            s, e = span(m)
            if m.group("letter") not in letters or _in(math, s) or not _LETTER_END.match(text, e):
                continue
            if pat is _IS_LETTER:
                sentence = text[max(0, text.rfind(".", 0, m.start()) + 1, text.rfind("\n", 0, m.start()) + 1) : s]
                if not _ANSWERISH.search(sentence):
                    continue
            add(s, e, m.group("letter"))
    for m in _PREDICATE.finditer(text):  # "B is correct", "A and C are wrong", "B fits"
        if _in(math, m.start()) or not _clause_start(text, m.start()):
            continue
        for lm in re.finditer(rf"\(?([A-Z])\)?{_NOT_WORD}", m.group("list")):
            if lm.group(1) in letters:
                add(m.start("list") + lm.start(), m.start("list") + lm.end(), lm.group(1))
    for m in _ALONE.finditer(text):  # "B." or "B" as a whole sentence or line, "B) ..." as a line label
        if m.group("letter") in letters and not _in(math, m.start()) and _sentence_start(text, m.start()):
            add(m.start(), m.start() + 1, m.group("letter"))
    out: list[tuple[int, int, str]] = []
    for s, e, letter in sorted(((s, e, x) for (s, e), x in found.items()), key=lambda t: (t[0], -t[1])):
        if not out or s >= out[-1][1]:  # one span per letter: "**(B)**" is found by two rules
            out.append((s, e, letter))
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


# ---------------------------------------------------------------------------------------------- gold value

GoldValueScope = Literal["statements", "everywhere"]
# LaTeX spellings one value has in a CoT: \dfrac = \frac, "\left(" = "(", "\pi" = "π", "^\circ" = "°" = " degrees".
_ATOM_ALTS = {
    "\\frac": r"\\[dt]?frac", "\\dfrac": r"\\[dt]?frac", "\\tfrac": r"\\[dt]?frac", "\\pi": r"(?:\\pi(?![A-Za-z])|π)",
    "\\sqrt": r"(?:\\sqrt|√)", "(": r"(?:\\left\s*)?\(", ")": r"(?:\\right\s*)?\)", "[": r"(?:\\left\s*)?\[",
    "]": r"(?:\\right\s*)?\]", "-": r"[-−]", "\\cdot": r"(?:\\cdot|\\times|×|·)",
}  # fmt: skip
_ATOM = re.compile(r"\^\\circ|\^\{\\circ\}|\\[A-Za-z]+|\\.|\S")
_SIMPLE_FRAC = re.compile(r"\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}|\\[dt]?frac(\d)(\d)")
_MACRO_ARG = re.compile(r"(?:\\(?!text|mathrm|mathbf|textbf|boxed)[A-Za-z]+|\})\s*\{$")


def _clean_gold(gold: str) -> str:
    g = gold.strip().strip("$").strip()
    g = re.sub(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}", r"\1", g)
    return re.sub(r"\\left|\\right|\\!|\\,|\\;", "", g).strip()


def _atoms_pattern(value: str) -> str:
    atoms = _ATOM.findall(value)
    out = []
    for a in atoms:
        if a in ("^\\circ", "^{\\circ}"):
            out.append(r"(?:\^\s*\{?\s*\\circ\s*\}?|°|\s*degrees?\b)")
        else:
            out.append(_ATOM_ALTS.get(a, re.escape(a)))
    return r"\s*".join(out)


def gold_value_pattern(gold: str) -> re.Pattern[str] | None:
    """The gold value as whole tokens, in the spellings it takes in a CoT (module docstring); None when it is too
    short to mask without erasing words (one letter or symbol)."""
    g = _clean_gold(gold)
    if not g or (len(g) < 2 and not g.isdigit()):
        return None
    alts = [_atoms_pattern(g)]
    if f := _SIMPLE_FRAC.fullmatch(g.lstrip("-−")):  # \frac{14}{3} is also written 14/3
        num, den = (f.group(1), f.group(2)) if f.group(1) is not None else (f.group(3), f.group(4))
        sign = r"[-−]\s*" if g[0] in "-−" else ""
        alts.append(sign + r"\(?" + _atoms_pattern(num) + r"\)?\s*/\s*\(?" + _atoms_pattern(den) + r"\)?")
    body = "(?:" + "|".join(alts) + ")"
    first, last = g[0], g[-1]
    left = r"(?<![\w.^_/])" if first.isalnum() or first == "\\" else r"(?<![\w)])" if first in "-−" else ""
    if first.isalnum() or first == "\\":  # "-4" and "-\pi" are other values
        left += r"(?<![-−])(?<!\d[.,])"
    right = r"(?![\w^/])" if last.isalnum() else ""
    if last.isdigit():
        right += r"(?![.,]\d)"
    return re.compile(left + body + right)


def gold_value_spans(text: str, gold: str) -> list[tuple[int, int]]:
    """Every whole-token occurrence of the gold value, less a number that is a macro's argument: the "4" of
    "\\frac{4}{3}" or "\\sqrt{4}" is not the value 4."""
    pat = gold_value_pattern(gold)
    if pat is None:
        return []
    out = []
    for m in pat.finditer(text):
        s, e = m.span()
        if text[s - 1 : s] == "{" and (_MACRO_ARG.search(text, max(0, s - 12), s) or text.startswith("}{", e)):
            continue
        out.append((s, e))
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
        if gold_value_pattern(gold_value) is None:
            skipped.append(f"{gold_value!r}: too short to mask everywhere")
        spans += [MaskedSpan("gold_value", s, e, text[s:e], True) for s, e in gold_value_spans(text, gold_value)]

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
    gold_value: GoldValueScope = "statements",
    **kwargs: Any,
) -> MaskResult:
    """`mask_answer` with what the problem says to mask. Multiple choice (GPQA, or BBH with "(B)" golds):
    answer-statement letters (all the problem's letters by default, see the module docstring) and the gold
    option's text (or every option's, choice_texts="all"); MATH and free form: boxes and answer-statement
    values, with the gold as `gold_value`, and with gold_value="everywhere" every whole-token occurrence of the gold
    value (`readers.masking.gold_value`). Other keyword arguments go to `mask_answer` (truncation, ...)."""
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
    return mask_answer(
        cot, statements=True, gold_value=problem.answer, gold_check=grade_check(problem),
        mask_gold_value_everywhere=gold_value == "everywhere", **kwargs,
    )  # fmt: skip
