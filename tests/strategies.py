"""Hypothesis strategies of CoT-like text: real trace sentences mixed with the inputs that break segmenters.

Why mixed: real sentences keep the fuzzer near what the pair builder sees (LaTeX, lists, equation lines),
and the hard fragments (unbalanced delimiters, unclosed fences, abbreviations, non-Latin scripts, emoji,
think tags, very long runs) are spliced in between them with every kind of whitespace. Import from tests:

    from strategies import cot_texts, cot_and_donors, answers, make_donor, exercised_share
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from types import SimpleNamespace
from typing import Any

from conftest import TRACES
from hypothesis import given, settings
from hypothesis import strategies as st

from legibility.text import sentences


@cache
def real_cots() -> tuple[str, ...]:
    """Every reasoning trace shipped in data/samples/traces, read once per process."""
    out = []
    for p in sorted(TRACES.glob("*.jsonl")):
        out += [json.loads(line)["reasoning_trace"] for line in p.read_text(encoding="utf-8").splitlines() if line]
    for p in sorted(TRACES.glob("*.json")):
        out += [d["message_thinking"] for d in json.loads(p.read_text(encoding="utf-8"))]
    return tuple(t for t in out if t.strip())


@cache
def real_sentences() -> tuple[str, ...]:
    """Distinct sentence-like pieces of the real traces, cut by a naive rule (not the code under test)."""
    out = set()
    for t in real_cots():
        for line in t.splitlines():
            out.update(x for x in re.split(r"(?<=[.!?])\s+", line.strip()) if 0 < len(x) <= 300)
    return tuple(sorted(out))


LATEX = [
    "$x = 2. Y$", "$a$", "$", "$$", "$$a.\n\nB$$", "$5", "$60 and $30", "costs $5.", "\\(", "\\)", "\\[", "\\]",
    "\\(a. B\\)", "\\[p. Q\\]", "\\[\n x = 1.\n\n Y = 2\n\\]", "\\begin{align}", "\\end{align}",
    "\\begin{align} a &= 1. \\\\ B &= 2.", "\\begin{cases} x. Y \\end{cases}", "\\begin{", "\\end{", "\\boxed{",
    "\\boxed{7}", "\\boxed{3. {4. X}}", "\\frac{1}{2}", "\\frac12", "x^2", "x^{10}", "a_1", "\\sqrt{", "\\\\",
    "\\$", "\\{", "\\}", "\\text{ e.g. }",
]  # fmt: skip
ABBREVIATIONS = [
    "e.g.", "i.e.", "Dr.", "Dr. Smith", "No. 5", "etc.", "vs.", "Fig. 3", "U.S.", "a.m.", "Mr.", "approx.", "St.",
    "e.g. the", "etc. So", "p.m. Then",
]  # fmt: skip
NUMBERS = ["7", "42", "3.14", "0.5", ".5", "5.", "1,000.50", "-3", "1e5", "10%", "2^{10}", "٣", "３．５", "1" * 40]
LISTS = ["\n1. ", "\n2) ", "\n- ", "\n* ", "\n   a. ", "\n10. ", "1.", "A.", "(i) ", "\n• "]
FENCES = [
    "```", "```python", "```python\nx = 1. Y = 2\n```", "```\nprint('a. B')\n\n```", "`x`", "````",
    "```\nre.match(r'^\\d+$', s). Then\n```", "```bash\necho $HOME. Done\n```",
    "```\nx = a$ + b. Then\n```", "```latex\n\\] end. Then \\)\n```", "```\n} \\end{align}. Done\n```",
]  # fmt: skip
QUOTES = ['"', "“", "”", "'", "‘", "’", "«", "»", '"A. B?"', "“It is 3. Yes.”", "5'11\"", "6' 2\"", '12"', "'90s"]
SCRIPTS = [
    "我们先把数字相加。", "然后检查和。", "答えは7です。", "나는 7이라고 생각한다.", "نحن نجمع الأرقام.",
    "Сначала сложим числа. Потом проверим.", "हम संख्याएँ जोड़ते हैं।", "שלום עולם.", "Ελληνικά. Ναι;",
]  # fmt: skip
EMOJI = ["🤔", "✅", "👍🏽", "🇺🇸", "👨‍👩‍👧", "❤️", "🙂.", "😀😀😀"]
BRACES = ["{", "}", "{{", "}}", "(", ")", "[", "]", "<", ">", "|"]
PUNCT = [".", "?", "!", "...", "…", "?!", ":", ";", ").", ".)", "..", '."', "!'", ",", "-", "—"]
TAGS = ["<think>", "</think>", "</think>\n\nThe answer is 7.", "<think>\nHmm.", "</ think>", "<THINK>"]
WHITESPACE = [" ", " ", "  ", "\n", "\n\n", "\t", "\r\n", "\u00a0", "\u2028", "\u3000", "\n \n", "\x0c", "\x1c"]
BLANKS = ["", " ", "\n\n", " \t\r\n", "\u3000\u2028 ", "\n \n\x0c\x1c", "\u00a0"]
WORDS = ["so", "Then", "we", "get", "Hmm", "wait", "x", "the", "answer", "is", "Let", "check", "A", "I", "sum"]
HARD = [*LATEX, *ABBREVIATIONS, *NUMBERS, *LISTS, *FENCES, *QUOTES, *SCRIPTS, *EMOJI, *BRACES, *PUNCT, *TAGS]

# Short BBH-style CoTs: the common case the four-sentence crash of issue #10 came from.
SHORT_COT = [
    "First we add the numbers.", "Then we check the sum.", "The sum is 7.", "So the answer is 7.",
    "Let's think step by step.", "The answer is (A).", "Option B is false.", "Thus, the answer is No.",
    "Hmm.", "Wait.", "Yes.", "So the answer is 7.",
]  # fmt: skip

_ALPHABETS = st.sampled_from(
    [
        st.characters(min_codepoint=0x4E00, max_codepoint=0x4E80),  # CJK
        st.characters(min_codepoint=0x0621, max_codepoint=0x064A),  # Arabic
        st.characters(min_codepoint=0x0410, max_codepoint=0x044F),  # Cyrillic
        st.characters(min_codepoint=0x1F600, max_codepoint=0x1F64F),  # emoji
        st.sampled_from("$\\{}()[]`'\"“”.!?…:;\n "),  # delimiters and punctuation only
        st.characters(codec="utf-8"),  # anything
    ]
)
random_runs = _ALPHABETS.flatmap(lambda a: st.text(a, min_size=1, max_size=12))


@st.composite
def long_sentences(draw: st.DrawFn) -> str:
    """Thousands of characters without sentence punctuation (a long equation, a run-on thought)."""
    n = draw(st.integers(300, 1500))
    w = draw(st.lists(st.sampled_from([*WORDS, "=", "+", "$x$", "\\(y\\)", "{", "e.g."]), min_size=1, max_size=5))
    glue = draw(st.sampled_from([" ", "", " + "]))
    return glue.join(w[i % len(w)] for i in range(n))


@st.composite
def truncated_traces(draw: st.DrawFn) -> str:
    """A real trace cut at a random character, as a model stopped by max_tokens leaves it (open math, fences)."""
    t = draw(st.sampled_from(real_cots()))
    start = draw(st.integers(0, len(t) - 1))
    return t[start : start + draw(st.integers(1, 3000))]


fragments = st.one_of(
    st.sampled_from(real_sentences()),
    st.sampled_from(real_sentences()),
    st.sampled_from(HARD),
    st.sampled_from(HARD),
    st.sampled_from(SHORT_COT),
    st.sampled_from(WORDS),
    random_runs,
)
separators = st.sampled_from(["", *WHITESPACE, " ", " ", " ", "\n", "\n\n"])


@st.composite
def mixed_cots(draw: st.DrawFn, max_parts: int = 24) -> str:
    """Fragments joined by random whitespace (or none: "word$", "7.Then")."""
    parts = draw(st.lists(st.tuples(fragments, separators), min_size=1, max_size=max_parts))
    return "".join(f + s for f, s in parts)


def cot_texts(max_parts: int = 24) -> st.SearchStrategy[str]:
    """Any CoT-like text: mostly mixed fragments, with short CoTs, truncated real traces, long runs, long
    sentences dropped into mixed text, and empty / whitespace-only texts."""
    mixed = mixed_cots(max_parts)
    return st.one_of(
        *[mixed] * 4,  # st.one_of picks a branch uniformly: repeating one weights it
        st.lists(st.sampled_from(SHORT_COT), min_size=1, max_size=6).map(" ".join),
        truncated_traces(),
        st.tuples(mixed, long_sentences(), mixed).map(" ".join),
        # a flat list: a generated whitespace string would take a third of all examples (Hypothesis favours
        # small search spaces), and these few are all that an empty text needs
        st.sampled_from(BLANKS),
    )


# Answers as the pair builder appends them after </think> (never holding the tag themselves).
answers = st.one_of(
    st.sampled_from(["7", "\\boxed{7}", "(A)", "No", "The answer is $\\frac{1}{2}$.", "", "答え: 7", "🙂"]),
    st.text(max_size=30).filter(lambda a: "</think>" not in a),
)

DONOR_FORMS = ("str", "tuple", "trace")


def make_donor(form: str, text: str, i: int = 0) -> Any:
    """A donor in one of the three forms transforms accept: a string, (text, segments), or a Trace-like object."""
    if form == "tuple":
        return (text, sentences(text))
    if form == "trace":
        return SimpleNamespace(reasoning=text, id=f"donor-{i}")
    return text


@st.composite
def cot_and_donors(draw: st.DrawFn) -> tuple[str, list[Any]]:
    """A CoT and a donor list (possibly empty, possibly holding the CoT itself, empty texts or whitespace), each
    donor in a random accepted form."""
    text = draw(cot_texts())
    pool = st.one_of(cot_texts(max_parts=12), st.just(text), st.just(text + "\n\n"), st.just(""))
    donors = draw(st.lists(st.tuples(st.sampled_from(DONOR_FORMS), pool), max_size=4))
    return text, [make_donor(f, d, i) for i, (f, d) in enumerate(donors)]


def in_order(text: str, parts: list[str]) -> bool:
    """Each part occurs in `text` after the previous one (greedy, so exact for a subsequence)."""
    pos = 0
    for p in parts:
        i = text.find(p, pos)
        if i < 0:
            return False
        pos = i + len(p)
    return True


def skeleton(text: str, numbers: list) -> str:
    """The text with each number replaced by "#"."""
    out, pos = [], 0
    for m in numbers:
        out += [text[pos : m.start()], "#"]
        pos = m.end()
    return "".join(out) + text[pos:]


def exercised_share(prop: Callable[..., bool], *strategies: st.SearchStrategy, **settings_kw: Any) -> float:
    """Run the property `prop` on Hypothesis examples of `strategies` and return the share of examples it
    exercised: `prop` asserts what must hold and returns whether the code under test acted on the example
    (changed the text, split it, imported a trace).

    Why: a property of the form "if the transform changed the text, the change is right" passes when the code
    never acts, so the caller also asserts a minimum share. The share is counted inside one test, so it does
    not depend on which tests run or in what order. The examples database is off: this runner is shared by
    every property, and a failing example of one would be replayed into another."""
    seen: list[bool] = []

    @settings(database=None, **settings_kw)
    @given(st.tuples(*strategies))
    def run(args: tuple) -> None:
        seen.append(bool(prop(*args)))

    run()
    return sum(seen) / len(seen)
