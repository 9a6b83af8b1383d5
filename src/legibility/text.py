"""Sentence segmentation fit for reasoning traces (LaTeX, code fences, lists, equation lines).

Offsets always index the original text, so transforms can cut and splice a CoT without re-tokenising it.

How it works, and why:
1. Mask: math spans ($...$, $$...$$, \\(...\\), \\[...\\], \\begin{env}...\\end{env}), \\boxed{...}, code fences,
   decimal points, list markers ("1.") and the inner punctuation of "quotations" are overwritten with
   same-length placeholders, so no rule can split inside them and every offset stays valid. Fences come
   first, as in Markdown: ``` marks pair up in order, and an odd last one is code to the end of the text (a
   reply cut off mid-code). Math is then matched between fences, the first opener winning; an opener with
   no closer there ("costs $5", a lone \\[) protects nothing. So "$5" before a fence never pairs with a "$"
   in the code.
2. Hard boundaries: every line break of the masked text (blank-line paragraphs, list items, equation lines;
   pysbd treats a newline as a boundary too) and both edges of a code fence, which is a segment of its own.
3. Inside a line, each candidate end ([.!?] or an ellipsis, then whitespace) is settled by a fast rule where
   pysbd's answer is known ("word. Next", "f(x). Then", "is 3. 5", "Really? Yes", "wait... let"), and the
   pieces still holding an ambiguous one (abbreviations "e.g. the", "etc. So", "No. 5"; "?"/"!" before a
   lowercase word) go to pysbd, a maintained rule-based segmenter, cached per process by piece. Why: pysbd
   alone runs at ~250 KB/s, ~2 min for 2,000 traces of ~17 KB; this way it sees ~1% of the text and the
   whole runs at ~8 MB/s (~4 s for 2,000 traces, benchmarks/bench_transforms.py). One deliberate
   difference from pysbd: "point A. Then" is a boundary (in reasoning text a capital is a variable, rarely
   an initial).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

import pysbd
from pysbd.lang.english import English


class Segment(NamedTuple):
    """One sentence: `text == original[start:end]`, no leading or trailing whitespace."""

    text: str
    start: int
    end: int


MASK = "X"  # a capital letter: masked math reads as a word, so "\\(x\\). \\(y\\) is" still has a boundary

# an environment name is a word ("align*"): "\\begin{ $x$ }" is no opener, and must not hide the math in it
_OPEN = re.compile(r"\$\$|\\\[|\\\(|\\begin\{([\w*]+)\}|\\boxed\{|(?<!\\)\$")
# pandoc's rule for $...$: no space after the opening $, none before the closing one, no digit after it
# ("$60 and $30" is money, not math), and no blank line inside
_DOLLAR = re.compile(r"\$(?=[^\s$])(?:[^$\\\n]|\\.|\n(?![ \t]*\n))*?(?<=[^\s\\])\$(?!\d)", re.S)
_DECIMAL = re.compile(r"(?<=\d)\.(?=\d)")
_LIST_MARK = re.compile(r"(?m)^([ \t]*(?:\d{1,3}|[A-Za-z]))\.(?=[ \t])")
_SPAN = re.compile(r"\S(?:[^\n]*\S)?")  # a stripped, non-empty line
# a place a sentence may end: terminal punctuation (not the 2nd or 3rd dot of "..."), closers, space, next char
_END = re.compile(r"(\.\.\.|…|(?<!\.)\.|[!?]+)[\"'”’)\]}]*\s+(\S)")
_CLOSERS = frozenset("\"'”’)]}°")
_QUOTE = re.compile(r'"[^"\n]{1,1000}"|“[^”\n]{1,1000}”')
_INNER_PUNCT = re.compile(r"[.!?](?=.)")
_ABBREV = frozenset(English.Abbreviation.ABBREVIATIONS)
_SEGMENTER = pysbd.Segmenter(language="en", clean=False)
_MAX_INLINE = 2000  # an unclosed \( or \boxed{ must not swallow the rest of the trace


def _brace_end(text: str, i: int, end: int) -> int | None:
    """Index just past the brace matching text[i - 1] == "{", or None when it does not close soon (before `end`)."""
    depth, n = 1, min(end, i + _MAX_INLINE)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _close(text: str, closer: str, i: int, end: int, inline: bool) -> int | None:
    """Index just past the first `closer` in text[i:end]; inline math must close soon, within its paragraph."""
    j = text.find(closer, i, min(end, i + _MAX_INLINE + len(closer)) if inline else end)
    if j < 0 or (inline and "\n\n" in text[i:j]):
        return None
    return j + len(closer)


def code_fences(text: str) -> list[tuple[int, int]]:
    """Code fences: ``` marks pair up in order; an odd last one runs to the end of the stripped text."""
    out = []
    i = text.find("```")
    while i >= 0:
        j = text.find("```", i + 3)
        if j < 0:
            out.append((i, len(text.rstrip())))
            break
        out.append((i, j + 3))
        i = text.find("```", j + 3)
    return out


def _math_spans(text: str, pos: int, end: int, spans: list[tuple[int, int]]) -> None:
    """Append the math spans of text[pos:end] (a stretch between fences) to `spans`: the first opener wins."""
    while m := _OPEN.search(text, pos, end):
        tok, s, e = m.group(), m.start(), None
        if tok == "$$":
            e = _close(text, "$$", m.end(), end, False)
        elif tok == "\\[":
            e = _close(text, "\\]", m.end(), end, False)
        elif tok == "\\(":
            e = _close(text, "\\)", m.end(), end, True)
        elif tok == "$":
            # a match longer than _MAX_INLINE is refused anyway, so the search stops there
            d = _DOLLAR.match(text, s, min(end, s + _MAX_INLINE + 1))
            e = d.end() if d else None
        elif tok.startswith("\\begin"):
            e = _close(text, "\\end{" + m.group(1) + "}", m.end(), end, False)
        else:  # \boxed{
            e = _brace_end(text, m.end(), end)
        if e is None:
            pos = m.end()
        else:
            spans.append((s, e))
            pos = e


def protected_spans(text: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(all protected spans, code fences among them), both as sorted, non-overlapping (start, end). Fences
    first, then math in the stretches between them, so no math span reaches into code (see the module doc)."""
    spans: list[tuple[int, int]] = []
    fenced = code_fences(text)
    pos = 0
    for s, e in fenced:
        _math_spans(text, pos, s, spans)
        spans.append((s, e))
        pos = e
    _math_spans(text, pos, len(text), spans)
    return spans, fenced


def mask(text: str) -> tuple[str, list[tuple[int, int]]]:
    """Same-length copy of `text` that no segmenter can split inside a protected span; plus the fences."""
    spans, fences = protected_spans(text)
    masked = _LIST_MARK.sub(r"\1" + MASK, _DECIMAL.sub("0", text))
    if spans:
        parts, pos = [], 0
        for s, e in spans:
            parts += [masked[pos:s], MASK * (e - s)]
            pos = e
        parts.append(masked[pos:])
        masked = "".join(parts)
    # like pysbd, never split inside a quotation (a quoted problem statement is one unit)
    masked = _QUOTE.sub(lambda m: m[0][0] + _INNER_PUNCT.sub(MASK, m[0][1:-2]) + m[0][-2:], masked)
    return masked, fences


@lru_cache(maxsize=1 << 16)
def _cuts(piece: str) -> tuple[int, ...]:
    """Offsets where pysbd starts a new sentence inside `piece` (a masked, stripped piece of one line)."""
    cuts, pos = [], 0
    for sent in _SEGMENTER.segment(piece):
        sent = sent.strip()
        j = piece.find(sent, pos) if sent else -1
        if j < 0:  # pysbd altered the text: keep the rest as one sentence rather than guess
            break
        if j > 0 and (not cuts or j > cuts[-1]):
            cuts.append(j)
        pos = j + len(sent)
    return tuple(cuts)


def _rule(s: str, m: re.Match) -> bool | None:
    """Is this candidate a boundary? True/False where pysbd's answer is known (checked on real traces),
    None where it is pysbd's call (abbreviations: "e.g. the", "etc. So", "No. 5")."""
    punct, nxt = m.groups()
    opens = nxt.isupper() or nxt in "\"'“‘(["
    if punct in ("...", "…"):  # "Wait... Let" ends a sentence, "wait... let" and "1 + ... + n" do not
        return opens
    if punct != ".":  # "Really? Yes" ends one; "Hmm! maybe" is pysbd's call
        return True if opens or nxt.isdigit() else None
    i = m.start()
    if i and s[i - 1] in _CLOSERS:  # "f(x). Then"
        return True
    j = i
    while j and (s[j - 1].isalnum() or s[j - 1] in "_'’"):
        j -= 1
    word = s[j:i]
    if not word or (j and s[j - 1] == ".") or word.lower() in _ABBREV:  # "+. So", "e.g. the", "etc. So"
        return None
    # pysbd reads "point A. Then" as an initial; in reasoning text a capital letter is a variable, so we cut
    return True


def _line_cuts(line: str) -> list[int]:
    """Sentence starts inside one masked, stripped line that holds an ambiguous boundary: the settled
    ones, plus pysbd's inside each piece between them that still holds an unsettled one."""
    cuts, prev = [], 0
    for m in _END.finditer(line):
        rule = _rule(line, m)
        if rule:
            cuts.append(m.start(2))
    out = []
    for c in [*cuts, len(line)]:
        piece = line[prev:c].rstrip()
        if any(_rule(piece, m) is None for m in _END.finditer(piece)):
            out += [prev + k for k in _cuts(piece)]
        if c < len(line):
            out.append(c)
        prev = c
    return out


@lru_cache(maxsize=4096)
def _sentences(text: str) -> tuple[Segment, ...]:
    """The segments, cached: the pair builder segments each trace once and reuses it as a donor many times."""
    masked, fences = mask(text)
    cuts, ambiguous = [], set()  # ambiguous: starts of lines holding a boundary only pysbd can settle
    for m in _END.finditer(masked):
        rule = _rule(masked, m)
        if rule:
            cuts.append(m.start(2))
        elif rule is None and "\n" not in m.group():
            ambiguous.add(masked.rfind("\n", 0, m.start()) + 1)
    for ls in ambiguous:
        le = masked.find("\n", ls) % (len(masked) + 1)
        line = masked[ls:le]
        lead = ls + len(line) - len(line.lstrip())
        cuts += [lead + c for c in _line_cuts(line.strip())]
    for s, e in fences:
        cuts += [s, e + 1]
    # every boundary becomes a line break in a same-length copy; segments are then its stripped lines
    marks = sorted({c - 1 for c in cuts if 0 < c <= len(masked) and masked[c - 1].isspace()})
    if marks:
        parts, pos = [], 0
        for i in marks:
            parts += [masked[pos:i], "\n"]
            pos = i + 1
        parts.append(masked[pos:])
        masked = "".join(parts)
    return tuple(Segment(text[m.start() : m.end()], m.start(), m.end()) for m in _SPAN.finditer(masked))


def sentences(text: str) -> list[Segment]:
    """Split a CoT into sentences with offsets into `text`; cached per process, since donors recur."""
    return list(_sentences(text))


def join(items: list[tuple[str, str]]) -> str:
    """Join (sentence, separator after it) pairs; the last separator is dropped."""
    if not items:
        return ""
    return "".join(t + sep for t, sep in items[:-1]) + items[-1][0]


def separator(text: str, segs: list[Segment], i: int) -> str:
    """The whitespace that followed segment i, normalised: "\\n\\n" after a paragraph (and after the last
    segment, which ends the text), "\\n" after a line break, else a space. Reordered sentences carry their
    own separator, so a moved equation line or paragraph end keeps its layout."""
    if i + 1 >= len(segs):
        return "\n\n"
    nl = text.count("\n", segs[i].end, segs[i + 1].start)
    return "\n\n" if nl >= 2 else "\n" if nl == 1 else " "


def rebuild(text: str, segs: list[Segment], order: list[int]) -> str:
    """`segs[i] for i in order`, each followed by its own normalised separator (see `separator`)."""
    return join([(segs[i].text, separator(text, segs, i)) for i in order])
