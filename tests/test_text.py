"""Sentence segmentation: offsets, protected spans, boundaries, on real traces and generated text."""

from __future__ import annotations

import json
import re

import pytest
from conftest import TRACES
from hypothesis import given, settings
from hypothesis import strategies as st

from legibility.text import Segment, protected_spans, rebuild, sentences, separator


def real_cots() -> list[str]:
    """Every reasoning trace in data/samples/traces (markyx316 JSONL and rasbt JSON)."""
    out = []
    for p in sorted(TRACES.glob("*.jsonl")):
        out += [json.loads(line)["reasoning_trace"] for line in p.read_text(encoding="utf-8").splitlines() if line]
    for p in sorted(TRACES.glob("*.json")):
        out += [d["message_thinking"] for d in json.loads(p.read_text(encoding="utf-8"))]
    assert len(out) >= 80
    return out


def texts(t: str) -> list[str]:
    return [s.text for s in sentences(t)]


def check_offsets(text: str, segs: list[Segment]) -> None:
    """In order, non-overlapping, stripped, non-empty, whitespace-only gaps: the text is rebuilt exactly."""
    pos, parts = 0, []
    for s in segs:
        assert text[s.start : s.end] == s.text and s.text and s.text == s.text.strip()
        assert s.start >= pos and not text[pos : s.start].strip()
        parts += [text[pos : s.start], s.text]
        pos = s.end
    assert not text[pos:].strip()
    assert "".join(parts) + text[pos:] == text


# Spans found independently of the implementation, with the simplest patterns, for the real-data check.
SPAN_PATTERNS = [
    re.compile(r"\\\((?:(?!\n\n).)*?\\\)", re.S),
    re.compile(r"\\\[.*?\\\]", re.S),
    re.compile(r"\$\$.*?\$\$", re.S),
    re.compile(r"(?<![$\\])\$(?=[^\s$])[^$\n]*?(?<=\S)\$(?![\d$])"),  # $x$, not money ("$60 and $30")
    re.compile(r"\\begin\{(\w+\*?)\}.*?\\end\{\1\}", re.S),
    re.compile(r"\d+\.\d+"),
]


def boxed_spans(text: str) -> list[tuple[int, int]]:
    out = []
    for m in re.finditer(r"\\boxed\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append((m.start(), i))
    return out


def assert_unsplit(segs: list[Segment], spans: list[tuple[int, int]], text: str) -> None:
    starts = [s.start for s in segs]
    ends = [s.end for s in segs]
    for a, b in spans:
        inside = [x for x in starts + ends if a < x < b]
        assert not inside, f"split inside {text[a:b]!r}"


@pytest.fixture(scope="module")
def cots() -> list[str]:
    return real_cots()


def test_real_traces_offsets_reconstruct(cots: list[str]) -> None:
    for t in cots:
        check_offsets(t, sentences(t))
    assert sum(len(sentences(t)) for t in cots) > 5000


def test_real_traces_never_split_math_boxed_decimals(cots: list[str]) -> None:
    checked = 0
    for t in cots:
        spans = [m.span() for p in SPAN_PATTERNS for m in p.finditer(t)] + boxed_spans(t)
        assert_unsplit(sentences(t), spans, t)
        checked += len(spans)
    assert checked > 1000  # the traces do hold thousands of \(..\), \[..\], decimals and \boxed{}


def test_real_traces_blank_lines_are_boundaries(cots: list[str]) -> None:
    for t in cots:
        for s in sentences(t):
            if "```" not in s.text and "\\[" not in s.text and "$$" not in s.text and "\\begin" not in s.text:
                assert "\n\n" not in s.text.strip(), s.text


def test_decimals_and_abbreviations() -> None:
    t = "The value is 3.14 and e.g. 2.5 works, i.e. both do. We compare A vs. B, etc. and see Fig. 3 here. Next."
    assert texts(t) == [
        "The value is 3.14 and e.g. 2.5 works, i.e. both do.",
        "We compare A vs. B, etc. and see Fig. 3 here.",
        "Next.",
    ]


def test_math_spans_are_never_split() -> None:
    t = (
        "We have $x = 2. Y$ here. Then \\(a. B\\) too. Display $$a.\n\nB$$ done. Also \\[p. Q\\] ok. "
        "And \\begin{align} a &= 1. \\\\ B &= 2. \\end{align} fine. So \\boxed{3. {4. X}} yes. End."
    )
    assert texts(t) == [
        "We have $x = 2. Y$ here.",
        "Then \\(a. B\\) too.",
        "Display $$a.\n\nB$$ done.",
        "Also \\[p. Q\\] ok.",
        "And \\begin{align} a &= 1. \\\\ B &= 2. \\end{align} fine.",
        "So \\boxed{3. {4. X}} yes.",
        "End.",
    ]


def test_math_ending_a_sentence_and_money() -> None:
    assert texts("So \\(x = 1\\). \\(y\\) is 2.") == ["So \\(x = 1\\).", "\\(y\\) is 2."]
    t = "He gets $60 a day, but they subtract $30. At the end, he got $660. So what?"
    assert texts(t) == ["He gets $60 a day, but they subtract $30.", "At the end, he got $660.", "So what?"]


def test_lists_lines_and_paragraphs() -> None:
    t = "Steps:\n1. First step. It is easy.\n2. Second step\n- a bullet\n* another\n\nNew paragraph without end\nx = 3"
    assert texts(t) == [
        "Steps:",
        "1. First step.",
        "It is easy.",
        "2. Second step",
        "- a bullet",
        "* another",
        "New paragraph without end",
        "x = 3",
    ]


def test_code_fence_is_one_segment() -> None:
    t = "Code:\n```python\nx = 1. Y = 2\n\nprint(x)\n```\nAfter it. Done."
    assert texts(t) == ["Code:", "```python\nx = 1. Y = 2\n\nprint(x)\n```", "After it.", "Done."]
    assert texts("Open fence:\n```\nno end. Here") == ["Open fence:", "```\nno end. Here"]


def test_quotation_is_not_split() -> None:
    t = 'We are given: "A hexagon has six sides. What is its perimeter?" So we compute.'
    assert texts(t) == ['We are given: "A hexagon has six sides. What is its perimeter?"', "So we compute."]


def test_empty_and_whitespace() -> None:
    assert sentences("") == [] and sentences(" \n\n ") == []
    assert texts("  one  ") == ["one"]


def test_rebuild_separators() -> None:
    t = "A one. B two.\nC three.\n\nD four."
    segs = sentences(t)
    assert [separator(t, segs, i) for i in range(4)] == [" ", "\n", "\n\n", "\n\n"]
    assert rebuild(t, segs, [0, 1, 2, 3]) == t
    assert rebuild(t, segs, [3, 0]) == "D four.\n\nA one."


TOKENS = [
    "word", "Then", "3.14", "42", "e.g.", "i.e.", "vs.", "Fig.", "A.", ".", "?", "!", "...", " ", " ", "  ",
    "\n", "\n\n", "\n- ", "\n1. ", "$", "$x$", "$$", "\\(", "\\)", "\\[", "\\]", "\\boxed{", "{", "}", "```",
    "\\begin{align}", "\\end{align}", '"', "(", ")", "\t", "é", "π/2.",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=60))
def test_roundtrip_on_generated_text(tokens: list[str]) -> None:
    t = "".join(tokens)
    check_offsets(t, sentences(t))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["So", "Then we get", "Hmm, wait", "Note that", "We see"]),
            st.sampled_from(["$a. B$", "\\(x = 1. Y\\)", "\\[p. Q\\]", "\\boxed{2. X}", "3.5", "$$u. V$$", "7"]),
            st.sampled_from([".", "?", "!"]),
        ),
        min_size=1,
        max_size=12,
    ),
    st.lists(st.sampled_from([" ", "\n", "\n\n"]), min_size=12, max_size=12),
)
def test_generated_sentences_split_exactly(sents: list[tuple[str, str, str]], seps: list[str]) -> None:
    parts = [f"{a} {m} is it{p}" for a, m, p in sents]
    t = "".join(p + s for p, s in zip(parts, seps, strict=False)).rstrip()
    assert texts(t) == parts


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_roundtrip_on_arbitrary_text(t: str) -> None:
    check_offsets(t, sentences(t))


# Regressions found by issue #10's fuzzing (tests/test_fuzz_text.py); each fails on the code before its fix.


def test_regression_dollar_before_fence_never_pairs_into_the_code() -> None:
    """A "$" before a fence paired with a "$" inside the code (math was matched before fences), so the closed
    fence was split. Fences now come first, as in Markdown."""
    t = "$```\nre.match(r'^\\d+$', s). Then\n```"  # the fuzzer's minimal example
    assert texts(t) == [t]
    t = 'It costs $5 so\n```python\nm = re.match(r"^\\d+$", s). Then x\n```\nDone. Yes.'
    assert texts(t) == ["It costs $5 so", '```python\nm = re.match(r"^\\d+$", s). Then x\n```', "Done.", "Yes."]


def test_regression_display_math_never_reaches_into_a_fence() -> None:
    """An opener before a fence ("\\[", "\\begin{align}") paired with a closer inside the code."""
    t = "See \\[x\n```\ncode. Here \\] more. X\n```\nAfter. Then."
    assert texts(t) == ["See \\[x", "```\ncode. Here \\] more. X\n```", "After.", "Then."]
    t = "So \\begin{align} a ``` b. C \\end{align} d ``` e. F"
    assert texts(t) == ["So \\begin{align} a", "``` b. C \\end{align} d ```", "e.", "F"]
    t = "\\[```\\[ (p - 1) - (q - 1) = p - q \\]"  # the fuzzer's minimal example: the fence went unseen
    assert protected_spans(t) == ([(2, len(t))], [(2, len(t))])  # the unclosed fence runs to the end


def test_regression_bogus_begin_never_hides_math() -> None:
    """A "\\begin{" with no name took everything up to the next "}" as its name ("\\begin{ $. x$ }"); unclosed, the
    scan went on after that "}", so the math inside was never seen, and split."""
    t = "\\begin{ $. x$ }"  # the fuzzer's minimal example
    assert texts(t) == [t]
    assert texts("So \\begin{ $a. B$ } holds. Then \\begin{align*} x. Y \\end{align*} too.") == [
        "So \\begin{ $a. B$ } holds.",
        "Then \\begin{align*} x. Y \\end{align*} too.",
    ]
