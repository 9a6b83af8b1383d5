"""Answer grading: every accuracy number depends on it, so wrong answers must never pass."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import BBH, MATH500

from legibility.errors import LegibilityError
from legibility.grading import (
    AmbiguousAnswer,
    Grade,
    extract_boxed,
    extract_letter,
    grade,
    normalize_text,
    perturbations,
    self_check,
)
from legibility.records import Problem


def math(answer: str) -> Problem:
    return Problem(id="m", benchmark="math", question="q", answer=answer, source="test")


def mc(answer: str = "C", n: int = 4, benchmark: str = "gpqa") -> Problem:
    # Synthetic question, not GPQA text.
    choices = ["12 kJ/mol", "42 kJ/mol", "7 kJ/mol", "0.5 kJ/mol", "1 J", "2 J"][:n]
    return Problem(
        id="g",
        benchmark=benchmark,
        question="What is the made-up barrier of the toy reaction?",  # type: ignore[arg-type]
        choices=choices,
        answer=answer,
        source="test",
    )


def free(answer: str) -> Problem:
    return Problem(id="b", benchmark="bbh", subtask="t", question="q", answer=answer, source="test")


# ------------------------------------------------------------------------------------- extract_boxed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $\boxed{5}$.", "5"),
        (r"\boxed{1} then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)"),
        (r"\fbox{7}", "7"),
        (r"the answer is \boxed 5.", "5"),
        (r"\boxed {12}", "12"),
        (r"\boxed{\text{(C)}}", r"\text{(C)}"),
        ("no box here", None),
        (r"\boxed{\frac{1}{2", None),  # cut off: no answer
        (r"\boxed{\boxed{4}}", r"\boxed{4}"),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


# ---------------------------------------------------------------------------------------------- MATH


@pytest.mark.parametrize(
    ("gold", "pred"),
    [
        (r"\frac{1}{2}", "0.5"),
        (r"\frac12", r"\frac{1}{2}"),
        (r"\frac{1}{2}", r"\dfrac{1}{2}"),
        ("0.5", r"\frac12"),
        (r"90^\circ", "90"),
        ("90", r"90^\circ"),
        (r"\text{(C)}", "C"),
        (r"\text{(C)}", r"\text{(C)}"),
        (r"\text{(C)}", r"\text{C}"),
        ("(3,4]", "(3,4]"),
        ("1,2", "2,1"),
        ("1,2", r"\{1,2\}"),
        ("(15,-29)", "(15, -29)"),
        (r"\frac{\pi}{2}", r"\pi/2"),
        (r"2\pi", r"2 \pi"),
        (r"-\frac{\pi}{6}", r"-\pi/6"),
        ("5", r"5\text{ cm}"),
        (r"5\text{ cm}", "5"),
        (r"\frac{270}7\text{ degrees}", r"\frac{270}{7}"),
        (r"\text{Evelyn}", r"\text{Evelyn}"),
        (r"\text{east}", r"\text{East}"),
        (r"10,\!080", "10080"),
        (r"\$32,\!348", "32348"),
        ("50", r"50\%"),
        ("5", "x=5"),
        (r"2\sqrt{2}", r"\sqrt{8}"),
        ("x^2+1", "1+x^2"),
        (r"\{1\pm\sqrt{5},-2\}", r"-2, 1+\sqrt5, 1-\sqrt5"),
        (r"x \in [-2,7]", "[-2,7]"),
        (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"),
        ("6", "6.0"),
    ],
)
def test_math_equivalent(gold: str, pred: str) -> None:
    g = grade(math(gold), f"Work.\n\nThe answer is $\\boxed{{{pred}}}$.")
    assert g == Grade(pred, True, "math-verify", None, True, pred, "box")


@pytest.mark.parametrize(
    ("gold", "pred"),
    [
        ("3", "4"),
        (r"\frac{1}{2}", r"\frac{1}{3}"),
        (r"\text{(C)}", "D"),
        ("(3,4]", "(3,4)"),
        ("1,2", "1"),
        ("2", "2,3"),
        ("(15,-29)", "(-29,15)"),
        (r"2\pi", "6.28"),
        (r"\sqrt{2}", "1.414"),
        ("50", "0.5"),
        ("5", "x=4"),
        ("x^2+1", "y^2+1"),
        (r"\text{Evelyn}", r"\text{Navin}"),
        (r"\text{even}", r"\text{odd}"),
        ("1+i", "1-i"),
        ("1", r"\infty"),
        ("3", r"\text{no solution}"),
        (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 2 \\ 1 \end{pmatrix}"),
        ("-5", "5"),
        ("10", "100"),
    ],
)
def test_math_not_equivalent(gold: str, pred: str) -> None:
    g = grade(math(gold), f"\\boxed{{{pred}}}")
    assert g.answer == pred
    assert g.correct is False
    assert g.reason


def test_math_reads_only_after_think() -> None:
    reply = "<think>Maybe \\boxed{3}? No.</think>\n\nThe answer is $\\boxed{4}$."
    assert grade(math("4"), reply).correct
    assert not grade(math("3"), reply).correct


def test_math_last_box_wins() -> None:
    g = grade(math("4"), r"First \boxed{3}, corrected: \boxed{4}")
    assert (g.answer, g.correct) == ("4", True)


def test_math_without_think_needs_a_box() -> None:
    g = grade(math("4"), "Let me think. 2+2 is 4, so the answer is 4. Hmm, or maybe")
    assert g == Grade(None, False, "math-verify", "no \\boxed{}")


def test_math_unfinished_think_is_no_answer() -> None:
    g = grade(math("4"), "<think>2+2 = \\boxed{4}? let me check again, 2+2")  # no </think>: still reasoning
    # An opened, never closed think block is a truncated reply: its boxes are still reasoning.
    assert (g.answer, g.correct) == (None, False)
    assert grade(math("4"), "no tags at all, so \\boxed{4}").correct  # no think block: the last box counts
    g = grade(math("4"), "<think>2+2 is 4, the answer is 4, let me verify")
    assert (g.answer, g.correct) == (None, False)


@pytest.mark.parametrize(
    "after",
    [
        "The final answer is $\\frac{1}{2}$.",
        "**Answer:** $\\frac{1}{2}$",
        "$\\frac{1}{2}$",
        "0.5",
        "Adding up, the probability is $\\frac{1}{2}$.",
    ],
)
def test_math_after_think_without_box(after: str) -> None:
    g = grade(math(r"\frac{1}{2}"), f"<think>work</think>\n\n{after}")
    assert g.correct, g


def test_math_after_think_without_box_wrong() -> None:
    g = grade(math(r"\frac{1}{2}"), "<think>work</think>\n\nThe final answer is $\\frac{1}{3}$.")
    assert not g.correct


def test_math_empty_or_cut_off_box() -> None:
    assert not grade(math("3"), r"\boxed{}").correct
    assert grade(math("3"), r"\boxed{\frac{3}{1").answer is None


def test_math_pathological_input_terminates() -> None:
    reply = "\\boxed{" + "(" * 200 + "1" + ")" * 200 + "^{" * 50 + "9" * 2000 + "}" * 50 + "}"
    g = grade(math("3"), reply)
    assert g.correct is False
    assert g.undecided and "too long" in (g.reason or "")  # 2,551 characters: not handed to math-verify


def test_math_verify_timeout_is_undecided(monkeypatch: pytest.MonkeyPatch) -> None:
    """A timeout inside math-verify is recorded as undecided, not as a silent "wrong" (nor a hang)."""
    from math_verify.errors import TimeoutException

    import legibility.grading as grading

    def slow(*args: object, **kwargs: object) -> bool:
        raise TimeoutException("Operation timed out!")

    monkeypatch.setattr(grading, "verify", slow)
    g = grade(math("2"), r"\boxed{2}")
    assert (g.correct, g.strict, g.undecided, g.answer) == (False, False, True, "2")
    assert g.reason == "math-verify timeout (comparing)"
    monkeypatch.setattr(grading, "parse", slow)
    g = grade(math("3"), r"\boxed{2}")
    assert (g.undecided, g.reason) == (True, "math-verify timeout (parsing)")


def test_grader_bug_is_recorded_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    import legibility.grading as grading

    def broken(*args: object) -> None:
        raise RecursionError("deep")

    monkeypatch.setattr(grading, "_grade_free", broken)
    g = grade(free("True"), "So the answer is True.")
    assert (g.correct, g.undecided, g.reason) == (False, True, "grader error: RecursionError")


def test_long_replies_are_graded_in_bounded_time_off_the_main_thread() -> None:
    """Off the main thread math-verify has no timeout, so the input is capped: a 2 MB reply of unclosed boxes,
    answer statements and brackets still grades in well under a second per call."""
    reply = "</think>" + ("\\boxed{ The answer is (A) or " * 20_000) + ("{" * 50_000) + "Answer: 5"
    out: list[tuple[Grade, float]] = []

    def run() -> None:
        for p in (math("5"), free("5"), mc("A")):
            t = time.perf_counter()
            out.append((grade(p, reply), time.perf_counter() - t))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert len(out) == 3
    assert max(dt for _, dt in out) < 2.0, [dt for _, dt in out]


def test_math_off_main_thread() -> None:
    out: list[Grade] = []
    t = threading.Thread(target=lambda: out.append(grade(math(r"\frac{1}{2}"), r"\boxed{0.5}")))
    t.start()
    t.join(timeout=60)
    assert out and out[0].correct


def test_math500_self_check_can_fail() -> None:
    """Gold stated as an answer and each reference solution grade right; perturbed gold (off by one, sign,
    another fraction, a near-miss decimal, a set for a tuple) and another problem's gold grade wrong."""
    from legibility import benchmarks

    problems = benchmarks.load("math", MATH500, levels=None)
    n, misses = self_check(problems)
    kinds = {m.check for m in misses}
    print(f"\nMATH-500 self-check: {n - len(misses)}/{n} checks passed")
    for m in misses:
        print("  miss:", m.problem_id, m.check, m.gold, m.grade.answer, m.grade.reason)
    assert len(problems) == 500 and n > 2500
    assert not misses, sorted(kinds)


def test_bbh_self_check_can_fail() -> None:
    """BBH: gold right; every other letter, the flipped truth value, a Dyck sequence one bracket short, swapped
    words and numbers off by one wrong."""
    from legibility import benchmarks

    problems = benchmarks.load("bbh", BBH, subtasks="all")
    n, misses = self_check(problems)
    assert n > 20_000
    assert not misses, [(m.problem_id, m.check, m.response, m.grade.answer) for m in misses[:20]]


def test_self_check_catches_a_lenient_grader(monkeypatch: pytest.MonkeyPatch) -> None:
    """The self-check is not a tautology: math-verify's default float rounding, or comparing a set with a tuple,
    shows up as misses."""
    import legibility.grading as grading

    problems = [math(r"\frac{1}{2}"), math("(1,2)").model_copy(update={"id": "m2"})]
    assert self_check(problems)[1] == []
    monkeypatch.setattr(grading, "FLOAT_ROUNDING", 6)
    monkeypatch.setattr(grading, "_bracket_kind", lambda text: None)
    misses = self_check(problems)[1]
    assert {m.check for m in misses} == {"perturbed:near-miss-decimal", "perturbed:set-for-tuple"}


def test_perturbations() -> None:
    assert perturbations("12") == [("off-by-one", "13"), ("sign", "-(12)"), ("near-miss-decimal", "12.0000003")]
    assert ("fraction", r"\frac{1}{3}") in perturbations(r"\frac{1}{2}")
    assert ("near-miss-decimal", "0.5000003") in perturbations(r"\frac{1}{2}")
    assert ("set-for-tuple", r"\{1,2\}") in perturbations("(1,2)")
    assert ("sign", "5") in perturbations("-5")
    assert perturbations("B", n_choices=3) == [("other-letter", "A"), ("other-letter", "C")]
    assert perturbations("True") == [("flipped", "False")]
    assert perturbations("] ) }") == [("one-bracket-short", "] )")]
    assert perturbations("apple banana") == [("words-swapped", "banana apple")]


def test_other_gold_equal_values_are_not_misses() -> None:
    """Two golds with the same value in other notation (x=5 / 5, 30^\\circ / 30) are not false positives."""
    problems = [math("5"), math("x=5").model_copy(update={"id": "m2"})]
    assert self_check(problems) == (6, [])  # 5: gold, off by one, sign, near miss; x=5: gold, off by one
    problems = [math("5"), math("6").model_copy(update={"id": "m2"})]
    assert self_check(problems) == (10, [])  # different values: each also checks the other's gold


# ------------------------------------------------------------------------------------ multiple choice


@pytest.mark.parametrize(
    "after",
    [
        r"\boxed{C}",
        r"$\boxed{\text{C}}$",
        r"\boxed{\textbf{(C)}}",
        r"\boxed{(C) 7 kJ/mol}",
        "Answer: C",
        "The answer is (C).",
        "the answer is C",
        "**Answer:** C",
        "**Answer: C**",
        "Final answer: C",
        "The correct option is **C**.",
        "Answer: A\n\nWait, that is wrong. Final answer: C",
        "Answer: C, because the barrier is lowest.",
        "So the answer is C, not A.",
        "The answer is: Option C",
        "The answer is C because A overestimates it.",
        "Answer - C",
        r"the answer is \(C\)",
        "Answer: $C$",
    ],
)
def test_mc_letter_forms(after: str) -> None:
    """Explicit answer forms: right under both the strict and the flexible reading."""
    g = grade(mc("C"), f"<think>A looks tempting but (B) is off.</think>\n\n{after}")
    assert (g.answer, g.correct, g.method, g.reason, g.strict) == ("C", True, "letter", None, True), after


@pytest.mark.parametrize("after", ["(C)", "C", "C) 7 kJ/mol", "**(C) 7 kJ/mol**"])
def test_mc_bare_letter_line_is_flexible_only(after: str) -> None:
    g = grade(mc("C"), f"<think>A looks tempting but (B) is off.</think>\n\n{after}")
    assert (g.answer, g.correct, g.rule) == ("C", True, "letter-line")
    assert (g.strict, g.strict_answer) == (False, None)


@pytest.mark.parametrize(
    "after",
    [
        r"\boxed{E=mc^2}",
        "E = 3 so it depends.",
        "Answer: I think the barrier is low.",
        "Answer: A bit more analysis is needed.",
        "Answer: E = mc^2",
        "I am not sure.",
        "A bit of both.",
        "Answer: X-ray data is missing",
        "answer: a",
        "the answer: A has the highest barrier",
    ],
)
def test_mc_not_a_letter(after: str) -> None:
    g = grade(mc("A"), f"<think>x</think>\n\n{after}")
    assert (g.answer, g.correct) == (None, False), (after, g)


@pytest.mark.parametrize(
    ("after", "letters"),
    [
        ("Answer: A or C", "A, C"),
        (r"\boxed{A, C}", "A, C"),
        (r"\boxed{A \text{ or } C}", "A, C"),
        ("The answer is A and B.", "A, B"),
        ("The answer is (B) or (C).", "B, C"),
        ("Answer: C/D", "C, D"),
        ("The answer is C or maybe D.", "C, D"),
    ],
)
def test_mc_two_final_letters_is_wrong(after: str, letters: str) -> None:
    g = grade(mc("C"), f"<think>x</think>\n\n{after}")
    assert g.correct is False
    assert g.answer is None
    assert g.reason == f"two different final letters: {letters}"
    with pytest.raises(AmbiguousAnswer):
        extract_letter(after, 4)


def test_mc_same_letter_twice_is_fine() -> None:
    assert grade(mc("C"), r"<think>x</think>The answer is C. \boxed{C}").correct
    assert extract_letter(r"\boxed{C, C}", 4) == "C"


def test_mc_out_of_range_letter() -> None:
    g = grade(mc("C"), "<think>x</think>Answer: E")
    assert (g.answer, g.correct) == ("E", False)
    assert "not one of the 4" in (g.reason or "")
    assert extract_letter("Answer: E", 4) is None
    assert extract_letter("Answer: E", 5) == "E"


def test_mc_wrong_letter() -> None:
    g = grade(mc("C"), "<think>x</think>The answer is (B).")
    assert g == Grade("B", False, "letter", "chose B, gold C", False, "B", "answer-statement")


def test_mc_reads_only_after_think() -> None:
    g = grade(mc("C"), "<think>The answer is C? No.</think>Answer: D")
    assert (g.answer, g.correct) == ("D", False)


def test_mc_no_think_whole_reply() -> None:
    assert grade(mc("C"), "Comparing (A) and (B)... So the answer is (C).").correct
    g = grade(mc("C"), "Comparing (A) with (B), the barrier of (C) looks")  # reasoning, no statement
    assert (g.answer, g.correct) == (None, False)


def test_mc_choice_text_fallback() -> None:
    g = grade(mc("B"), "<think>x</think>The answer is 42 kJ/mol.")
    assert g == Grade("B", True, "choice-text", None, False, None, "choice-text")  # a fallback: not strict
    g = grade(mc("B"), r"<think>x</think>\boxed{7 kJ/mol}")
    assert (g.answer, g.correct, g.method) == ("C", False, "choice-text")
    g = grade(mc("B"), "<think>x</think>The answer is about 40 kJ/mol.")  # no exact text match
    assert (g.answer, g.correct) == (None, False)


def test_mc_gold_must_be_a_letter() -> None:
    p = mc("C").model_copy(update={"answer": "42 kJ/mol"})
    with pytest.raises(LegibilityError):
        grade(p, "Answer: C")


def test_bbh_letter_gold_without_choices() -> None:
    q = "Which is first?\nOptions:\n(A) red\n(B) blue\n(C) green"
    p = Problem(id="b", benchmark="bbh", subtask="t", question=q, answer="(B)", source="test")
    assert grade(p, "Red is after blue. So the answer is (B).").correct
    assert not grade(p, "So the answer is (A).").correct
    g = grade(p, "So the answer is (D).")
    assert (g.correct, g.reason) == (False, "D is not one of the 3 choices")


def test_bbh_mc_with_choices() -> None:
    p = mc("A", benchmark="bbh")
    assert grade(p, "Let's think step by step. ... So the answer is (A).").correct


# -------------------------------------------------------------------------------------- free form


@pytest.mark.parametrize(
    ("gold", "reply"),
    [
        ("True", "not ( True ) is False, so... So the answer is True."),
        ("valid", "So the answer is **valid**."),
        ("Yes", "Answer: yes"),
        ("no", "<think>hm</think>\n\nNo"),
        ("-50", "So the answer is -50."),
        ("-50", "So the answer is −50."),
        ("24", r"Answer: \boxed{24}"),
        ("] ) }", "So the answer is ] ) }."),
        ("] ) }", "So the answer is ])}."),
        ("apple banana cherry", "So the answer is apple banana cherry."),
        ("dearth, wind, & fire", "So the answer is dearth, wind, & fire."),
        ("8", "So the answer is 8. That is all."),
    ],
)
def test_free_form_correct(gold: str, reply: str) -> None:
    g = grade(free(gold), reply)
    assert g.correct, g
    assert g.method == "exact"


@pytest.mark.parametrize(
    ("gold", "reply"),
    [
        ("True", "So the answer is False."),
        ("valid", "So the answer is invalid."),
        ("-50", "So the answer is 50."),
        ("] ) }", "So the answer is ] }."),
        ("apple banana cherry", "So the answer is banana apple cherry."),
        ("8", "Let me count the objects one by one"),
        ("8", "<think>the answer is 8</think>I could not decide."),
    ],
)
def test_free_form_wrong(gold: str, reply: str) -> None:
    assert not grade(free(gold), reply).correct


def test_normalize_text() -> None:
    assert normalize_text("  **The Answer.** ") == "the answer"
    assert normalize_text(r"$\text{Valid}$") == "valid"
    assert normalize_text("] ) }") == "] ) }"
    assert normalize_text('"Yes"') == "yes"


def test_truncated_think_block_has_no_answer() -> None:
    math = Problem(id="math/t", benchmark="math", question="q", answer="\\frac{1}{2}", source="t")
    g = grade(math, "<think>so maybe \\boxed{1/2} but let me check")
    assert (g.answer, g.correct) == (None, False) and "truncated" in (g.reason or "")
    mc = Problem(id="gpqa/t", benchmark="gpqa", question="q", choices=list("wxyz"), answer="C", source="t")
    assert not grade(mc, "<think>Answer: C ... wait").correct
    assert grade(mc, "<think>hm</think>Answer: C").correct


# ------------------------------------------------------------------ regressions (#7): misreads fixed


def test_regression_free_form_answer_is_not_read_from_a_later_mention_of_answer() -> None:
    """Was read as "follows from the truth table." ("answer" without a colon or "is" is a mention)."""
    g = grade(free("False"), "Answer: False\n\nThis answer follows from the truth table.")
    assert (g.answer, g.correct, g.strict) == ("False", True, True)
    g = grade(free("True"), "Answer: False\n\nThis answer is consistent with the truth table.")
    assert (g.answer, g.correct) == ("False", False)


def test_regression_mc_final_answer_outranks_a_later_explanation_of_a_wrong_option() -> None:
    """Was graded A: "answer A is wrong" in the explanation is a mention, and "Final answer" ranks first."""
    reply = "<think>x</think>Final answer: C\nExplanation: answer A is wrong because it ignores the solvent."
    assert (grade(mc("C"), reply).answer, grade(mc("C"), reply).correct) == ("C", True)
    assert not grade(mc("A"), reply).correct
    reply = "<think>x</think>Final answer: C\n\nThe answer is A only if the solvent is ignored, which it is not."
    assert grade(mc("C"), reply).correct and not grade(mc("A"), reply).correct


def test_regression_math_closing_note_is_not_the_answer() -> None:
    """ "There are 5 ways.\n\nNote: we used 2 cases." was correct for gold 2 (the last math of the last paragraph)."""
    reply = "<think>count</think>There are 5 ways.\n\nNote: we used 2 cases."
    assert not grade(math("2"), reply).correct
    g = grade(math("5"), reply)
    assert (g.answer, g.correct, g.strict, g.rule) == ("5", True, False, "closing-paragraph")
    assert not grade(math("2"), "<think>count</think>There are 5 ways. Note: we used 2 cases.").correct


def test_regression_math_parenthetical_after_the_answer_is_not_the_answer() -> None:
    """ "The answer is 12 (checked for n = 1, 2)." was read as 1."""
    g = grade(math("12"), "<think>x</think>The answer is 12 (checked for n = 1, 2).")
    assert (g.answer, g.correct, g.strict) == ("12", True, True)
    assert not grade(math("1"), "<think>x</think>The answer is 12 (checked for n = 1, 2).").correct
    assert not grade(math("2"), "<think>x</think>Thus there are 12 ways (checked for n = 1, 2).").correct


def test_regression_math_near_miss_decimal_is_wrong() -> None:
    """math-verify's default rounding (6 places) accepted 0.5000001 for 1/2."""
    assert not grade(math(r"\frac{1}{2}"), r"\boxed{0.5000001}").correct
    assert not grade(math(r"\frac{1}{3}"), r"\boxed{0.333333}").correct
    assert grade(math(r"\frac{1}{2}"), r"\boxed{0.5}").correct
    assert grade(math("0.15"), r"\boxed{\frac{3}{20}}").correct


def test_regression_math_set_is_not_a_tuple() -> None:
    r"""math-verify accepted \{1,2\} for the pair (1,2)."""
    assert not grade(math("(1,2)"), r"\boxed{\{1,2\}}").correct
    assert not grade(math(r"\{1,2\}"), r"\boxed{(1,2)}").correct
    assert grade(math("(1,2)"), r"\boxed{(1, 2)}").correct
    assert grade(math("1,2"), r"\boxed{\{1,2\}}").correct  # a list of solutions may be written as a set


# ------------------------------------------------------------------------------- strict and flexible


@pytest.mark.parametrize(
    ("problem", "reply", "rule"),
    [
        (math("4"), "<think>x</think>So $\\boxed{4}$.", "box"),
        (math("4"), "<think>x</think>The final answer is $4$.", "final-answer"),
        (math("4"), "<think>x</think>**Final Answer**\n\n$$4$$", "final-answer"),
        (math("4"), "<think>x</think>Thus the answer is 4 apples.", "answer-statement"),
        (mc("C"), "<think>x</think>\\boxed{C}", "box"),
        (mc("C"), "<think>x</think>The correct option is (C).", "answer-statement"),
        (free("valid"), "So the answer is valid.", "answer-statement"),
        (free("valid"), "<think>x</think>Final answer: valid", "final-answer"),
    ],
)
def test_explicit_forms_are_strict(problem: Problem, reply: str, rule: str) -> None:
    g = grade(problem, reply)
    assert (g.correct, g.strict, g.rule, g.strict_answer) == (True, True, rule, g.answer)


@pytest.mark.parametrize(
    ("problem", "reply", "rule"),
    [
        (math("4"), "<think>x</think>$4$", "bare"),
        (math("4"), "<think>x</think>Adding the two cases gives $4$.", "closing-paragraph"),
        (mc("C"), "<think>x</think>(C)", "letter-line"),
        (mc("B"), "<think>x</think>42 kJ/mol", "choice-text"),
        (free("valid"), "<think>x</think>Valid.", "single-line"),
    ],
)
def test_fallbacks_are_flexible_only(problem: Problem, reply: str, rule: str) -> None:
    """Right under the flexible reading only: no explicit final-answer form, so strict is False."""
    g = grade(problem, reply)
    assert (g.correct, g.strict, g.rule, g.strict_answer) == (True, False, rule, None)


def test_strict_wrong_answer_is_wrong_under_both() -> None:
    g = grade(math("4"), "<think>x</think>The final answer is 5.\n\nAdding up gives $4$.")
    assert (g.answer, g.correct, g.strict) == ("5", False, False)
