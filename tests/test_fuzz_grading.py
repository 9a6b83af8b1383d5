"""Property tests: `grade` never raises on any reply, always returns a consistent Grade, and finishes in bounded time.

Replies are built from real answer fragments, LaTeX with unbalanced braces and nested boxes, decimals, letters, CJK,
emoji and whitespace. `HYPOTHESIS_PROFILE=long` runs 5000 examples per property (the default profile 200).
"""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from legibility.grading import STRICT_RULES, Grade, grade
from legibility.records import Problem

LIMIT_S = 10.0
"""Longest one grade may take (math-verify's own timeouts are 5 s per parse or comparison, main thread only)."""

SLOWEST: dict[str, tuple[float, str]] = {}

FRAGMENTS = [
    # answer forms and their look-alikes
    "\\boxed{", "\\boxed", "\\fbox{", "}", "{", "\\}", "\\{", "$", "$$", "\\(", "\\)", "\\[", "\\]",
    "Answer:", "answer", "Final answer:", "**Final Answer**\n", "The answer is ", "the answer is (",
    "So the answer is ", "This answer follows", "The correct option is ", "Note: ", "Explanation: answer ",
    "(checked for n = 1, 2)",
    "</think>", "<think>", "\n", "\n\n", " ", "\t", ".", ",", " or ", " and ", "/", "=", "-", "−", "(", ")", "[", "]",
    # letters and options
    "A", "B", "C", "D", "E", "(A)", "(B)", "(C)", "(D)", "**C**", "C)", "Option C", "I", "X-ray", "E = mc^2",
    # math
    "\\frac{", "\\dfrac{1}{2}", "\\frac12", "\\sqrt{", "\\pi", "\\infty", "^", "_", "^{", "\\circ", "\\text{",
    "\\text{(C)}", "\\left(", "\\right)", "\\begin{pmatrix}", "\\end{pmatrix}", "\\\\", "&", "\\%", "\\$", "\\cdot",
    "x", "i", "n", "10^{10^{10}}", "9" * 60, "2^{2^{2^{2^{2}}}}", "0.5000001", "0.3333333333", "1,2", "(3,4]",
    "x \\in [-2,7]", "\\{1\\pm\\sqrt{5},-2\\}", "6 - 5i", "-50", "] ) }", "True", "False", "valid", "Yes", "no",
    # real answer fragments (sample traces, MATH-500)
    "Thus, the point in polar coordinates is \\((3, \\frac{\\pi}{2})\\).", "\\[\n\\boxed{\\dfrac{3}{56}}\n\\]",
    "Sum: \\( 2 + \\frac{5}{3} + 1 = \\frac{14}{3} \\).", "Thus, 196 has **9** positive whole-number divisors.",
    "Evelyn has the greatest average speed", "the perimeter is \\(6 \\times 7 = 42\\) inches.",
    # other scripts and symbols
    "答案是", "（C）", "答え：", "🙂", "🔥", "\u200b", "\u00a0", "é", "\\u0000",
]  # fmt: skip

numbers = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.integers(0, 12).flatmap(lambda k: st.decimals(allow_nan=False, allow_infinity=False, places=k)).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
pieces = st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12), numbers)
replies = st.one_of(
    st.lists(pieces, max_size=40).map("".join),
    st.text(max_size=300),
    st.just(""),
    st.sampled_from(["   ", "\n\n\n", "</think>", "<think>", "<think></think>", "\\boxed{}", "}{", "$$$$"]),
)


def _math(answer: str) -> Problem:
    return Problem(id="m", benchmark="math", question="q", answer=answer, source="fuzz")


PROBLEMS = [
    _math("\\frac{1}{2}"), _math("\\left( 3, \\frac{\\pi}{2} \\right)"), _math("90^\\circ"), _math("\\text{(C)}"),
    _math("x \\in [-2,7]"), _math("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"), _math("10,\\!080"), _math("6 - 5i"),
    Problem(id="g", benchmark="gpqa", question="Toy question?", choices=["12 kJ", "42 kJ", "7 kJ", "1 J"], answer="C",
            source="fuzz"),
    Problem(id="b1", benchmark="bbh", subtask="t", question="Q?\nOptions:\n(A) red\n(B) blue", answer="(B)",
            source="fuzz"),
    Problem(id="b2", benchmark="bbh", subtask="t", question="q", answer="True", source="fuzz"),
    Problem(id="b3", benchmark="bbh", subtask="t", question="q", answer="] ) }", source="fuzz"),
    Problem(id="b4", benchmark="bbh", subtask="t", question="q", answer="-50", source="fuzz"),
]  # fmt: skip


def _check(problem: Problem, reply: str, key: str) -> Grade:
    start = time.perf_counter()
    g = grade(problem, reply)
    elapsed = time.perf_counter() - start
    if elapsed > SLOWEST.get(key, (0.0, ""))[0]:
        SLOWEST[key] = (elapsed, reply[:120])
    assert isinstance(g, Grade)
    assert elapsed < LIMIT_S, (elapsed, reply[:200])
    assert not (g.reason or "").startswith("grader error"), (g.reason, reply[:200])  # a bug, not an undecided grade
    assert not (g.strict and not g.correct)
    assert not g.strict or (g.strict_answer == g.answer and g.rule in STRICT_RULES)
    assert g.correct == (g.reason is None)
    assert not (g.undecided and g.correct)
    assert g.answer is None or isinstance(g.answer, str)
    return g


@pytest.fixture(scope="module", autouse=True)
def report_slowest() -> object:
    yield
    for key, (t, reply) in sorted(SLOWEST.items()):
        print(f"\nslowest grade ({key}): {t:.3f} s on {reply!r}")


@given(problem=st.sampled_from(PROBLEMS), reply=replies)
def test_grade_never_raises_and_is_bounded(problem: Problem, reply: str) -> None:
    _check(problem, reply, "main thread")


@given(problem=st.sampled_from(PROBLEMS), reply=replies, think=st.booleans())
def test_grade_after_think_never_raises(problem: Problem, reply: str, think: bool) -> None:
    """The same replies as the answer section of a closed think block (where the fallbacks run)."""
    _check(problem, ("<think>reasoning</think>\n\n" if think else "</think>") + reply, "main thread")


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(problem=st.sampled_from(PROBLEMS), reply=replies)
def test_grade_off_the_main_thread_is_bounded(problem: Problem, reply: str) -> None:
    """Off the main thread math-verify runs without its SIGALRM timeout: the input caps must keep it bounded."""
    out: list[Grade] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(_check(problem, "</think>" + reply, "worker thread"))
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout=LIMIT_S * 3)
    assert not t.is_alive(), f"grade hung off the main thread on {reply[:200]!r}"
    if errors:
        raise errors[0]
    assert out
