"""Property-based fuzzing of `text.sentences` on CoT-like text (issue #10); strategies in tests/strategies.py.

What "closed" means here, as text.protected_spans defines it:
- code fence: occurrences of ``` pair up in order (left to right, without overlap), before any math is looked
  at; a pair is a closed fence, an odd last one is unclosed and is code to the end of the text;
- math ($...$, \\[...\\], ...): between fences, the first opener wins and runs to its closer; an opener with no
  closer ("costs $5", a lone \\[) protects nothing: the text after it splits as plain text.
"""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st
from strategies import FENCES, SHORT_COT, cot_texts, exercised_share, mixed_cots

from legibility.text import Segment, protected_spans, sentences


def assert_covers(text: str, segs: list[Segment]) -> None:
    """Segments are stripped, non-empty slices of `text`, in order, without overlap, and every non-whitespace
    character of `text` is inside exactly one of them."""
    pos = 0
    for s in segs:
        assert s.text and s.text == text[s.start : s.end] == s.text.strip()
        assert s.start >= pos, "segments overlap or are out of order"
        assert not text[pos : s.start].strip(), f"non-whitespace outside every segment: {text[pos : s.start]!r}"
        pos = s.end
    assert not text[pos:].strip()


def holding(segs: list[Segment], a: int, b: int) -> bool:
    """Some segment holds all of text[a:b] (so no boundary falls inside it)."""
    return any(s.start <= a and b <= s.end for s in segs)


def fences(text: str) -> tuple[list[tuple[int, int]], int | None]:
    """The closed fences and the start of an unclosed one, by the pairing rule above (independent of text.py)."""
    marks, i = [], text.find("```")
    while i >= 0:
        marks.append(i)
        i = text.find("```", i + 3)
    closed = [(marks[k], marks[k + 1] + 3) for k in range(0, len(marks) - 1, 2)]
    return closed, marks[-1] if len(marks) % 2 else None


# Each property below also asserts that a minimum share of the generated texts exercised it (the splitter cut
# the text, a fence was there): "every segment is right" holds vacuously for a splitter that never cuts. The
# shares measured on 200 examples are about twice the minimums.


def test_segments_cover_the_text_in_order() -> None:
    def covers(text: str) -> bool:
        segs = sentences(text)
        assert_covers(text, segs)
        return len(segs) >= 2

    assert exercised_share(covers, cot_texts()) >= 0.25


def test_line_breaks_are_boundaries_outside_protected_spans() -> None:
    def line_breaks(text: str) -> bool:
        spans, _ = protected_spans(text)
        segs = sentences(text)
        for s in segs:
            for k, c in enumerate(s.text):
                if c == "\n":
                    i = s.start + k
                    assert any(a <= i < b for a, b in spans), f"line break inside {s.text!r}"
        # exercised: a line break outside protected spans lies between two segments
        return any(c == "\n" and not any(a <= i < b for a, b in spans) for i, c in enumerate(text.strip()))

    assert exercised_share(line_breaks, cot_texts()) >= 0.2


def test_fences_never_split_and_unclosed_fence_runs_to_the_end() -> None:
    def fenced(text: str) -> bool:
        segs = sentences(text)
        closed, unclosed = fences(text)
        for a, b in closed:
            assert holding(segs, a, b), f"split inside the fence {text[a:b]!r}"
        if unclosed is not None:
            assert segs[-1].start <= unclosed and segs[-1].end == len(text.rstrip()), "unclosed fence was split"
        assert protected_spans(text)[1] == closed + ([(unclosed, len(text.rstrip()))] if unclosed is not None else [])
        return bool(closed or unclosed is not None) and len(segs) >= 2

    with_fence = st.tuples(mixed_cots(8), st.sampled_from(FENCES), mixed_cots(8)).map(" ".join)
    assert exercised_share(fenced, st.one_of(cot_texts(), with_fence, with_fence)) >= 0.15


# Closed math with sentence-like content ("x. Y", "? Then", line breaks) that a bare segmenter would split.
_MATH_TOKENS = ["x", "Y", "= 1.", ". ", "? ", "! ", "\n", "\\frac{1}{2}", "2.5", "e.g. ", "Then", "A. ", "\\alpha", "…"]
_math_body = st.lists(st.sampled_from(_MATH_TOKENS), min_size=1, max_size=12).map("".join)
# $...$ by pandoc's rule: no space inside either dollar, no blank line
_inline = _math_body.map(lambda b: re.sub(r"\n\s*", "\n", b.strip())).filter(bool).map(lambda b: f"${b}$")
_display = _math_body.map(lambda b: f"\\[{b}\\]")


@st.composite
def texts_with_math(draw: st.DrawFn) -> tuple[str, list[tuple[int, int]]]:
    """Fuzzed text with closed math dropped in, set off by whitespace, and where each piece of math lies.

    Whatever stray delimiter precedes it ("$5", an unclosed \\[ or \\boxed{), nothing can pair with a delimiter
    inside such math but its own closer, which covers it whole; so no boundary may fall inside. ($$...$$ is
    left out: like a fence its opener and closer are the same, so a stray "$$" before it flips the pairing.)"""
    parts, spans, pos = [], [], 0
    for filler, math in draw(st.lists(st.tuples(mixed_cots(8), st.one_of(_inline, _display)), max_size=6)):
        filler += draw(st.sampled_from([" ", "\n", "\n\n", " So "]))
        parts += [filler, math, draw(st.sampled_from([" ", ". ", ".\n", "\n\n", " is it. Then "]))]
        spans.append((pos + len(filler), pos + len(filler) + len(math)))
        pos += sum(map(len, parts[-3:]))
    return "".join(parts) + draw(mixed_cots(8)), spans


def test_closed_math_is_never_split() -> None:
    def math_held(case: tuple[str, list[tuple[int, int]]]) -> bool:
        text, spans = case
        segs = sentences(text)
        assert_covers(text, segs)
        for a, b in spans:  # a fence around it, closed or not, swallows it whole: still held
            assert holding(segs, a, b), f"split inside {text[a:b]!r}"
        return bool(spans) and len(segs) >= 2

    assert exercised_share(math_held, texts_with_math()) >= 0.25


OPENERS = ["$", "$$", "\\[", "\\(", "\\begin{align}", "\\boxed{", "\\begin{", "{", "\\text{"]
PLAIN = [s for s in SHORT_COT if s not in ("Hmm.", "Wait.", "Yes.")]


@given(
    mixed_cots(12).filter(lambda t: t.count("```") % 2 == 0),
    st.sampled_from(OPENERS),
    st.lists(st.sampled_from(PLAIN), min_size=1, max_size=4),
)
def test_unclosed_math_protects_nothing(junk: str, opener: str, plain: list[str]) -> None:
    """An opener with no closer is plain text: the sentences after it split as if it were not there."""
    text = f"{junk}\n\n{opener} {' '.join(plain)}"
    got = [s.text for s in sentences(text)]
    assert len(got) >= len(plain)
    assert got[-len(plain)].endswith(f"{opener} {plain[0]}") and got[len(got) - len(plain) + 1 :] == plain[1:]


# Plain sentences with known boundaries: ordinary words (none an abbreviation pysbd knows), a capital first
# letter, one closing mark, joined by spaces or line breaks. The splitter must return exactly these sentences.
VOCABULARY = [
    "apple", "river", "number", "triangle", "compute", "value", "square", "answer", "check", "result", "angle",
    "circle", "first", "second", "total", "equal", "prime", "digit", "factor", "product", "simple", "careful",
    "method", "again", "twelve", "seven", "eleven", "height", "width", "length", "area", "side",
]  # fmt: skip
_sentence = st.tuples(
    st.lists(st.sampled_from(VOCABULARY), min_size=1, max_size=8),
    st.sampled_from([".", ".", "?", "!"]),
    st.sampled_from(["", "", " 12", " 3.5"]),  # a number before the mark: "is 3.5." ends there too
).map(lambda t: " ".join(t[0]).capitalize() + t[2] + t[1])


@given(
    st.lists(st.tuples(_sentence, st.sampled_from([" ", " ", "  ", "\n", "\n\n", " \n"])), min_size=1, max_size=8),
    st.sampled_from(["", " ", "\n"]),
)
def test_plain_sentences_split_exactly_at_their_boundaries(parts: list[tuple[str, str]], lead: str) -> None:
    text = lead + "".join(s + sep for s, sep in parts)
    segs = sentences(text)
    assert [s.text for s in segs] == [s for s, _ in parts]
    starts = [len(lead) + sum(len(s) + len(sep) for s, sep in parts[:k]) for k in range(len(parts))]
    assert [s.start for s in segs] == starts
