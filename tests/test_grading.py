"""Answer grading: every accuracy number depends on it, so wrong answers must never pass."""

from __future__ import annotations

import json
import threading

import pytest
from conftest import MATH500

from legibility.errors import LegibilityError
from legibility.grading import AmbiguousAnswer, Grade, extract_boxed, extract_letter, grade, normalize_text
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
    assert g == Grade(pred, True, "math-verify", None)


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


def test_math_off_main_thread() -> None:
    out: list[Grade] = []
    t = threading.Thread(target=lambda: out.append(grade(math(r"\frac{1}{2}"), r"\boxed{0.5}")))
    t.start()
    t.join(timeout=60)
    assert out and out[0].correct


def test_math500_reference_solutions_grade_correct() -> None:
    from legibility import benchmarks
    from legibility.grading import reference_misses

    problems = benchmarks.load("math", MATH500, levels=None)
    misses = reference_misses(problems)
    rate = 1 - len(misses) / len(problems)
    print(f"\nMATH-500 reference solutions graded correct: {rate:.4f} ({len(problems) - len(misses)}/{len(problems)})")
    for p, g in misses:
        print("  miss:", p.id, p.answer, g.answer, g.reason)
    assert len(problems) == 500
    assert rate >= 0.99, [(p.id, g.reason) for p, g in misses]


def test_math500_answers_do_not_match_other_answers() -> None:
    """False positives: each reference solution against a different problem's (distinct) answer."""
    items = json.loads(MATH500.read_text(encoding="utf-8"))[:150]
    passed = []
    for i, item in enumerate(items):
        other = items[(i + 1) % len(items)]["answer"]
        if grade(math(other), f"\\boxed{{{item['answer']}}}").correct:  # the two golds agree ("5", "x=5")
            continue
        g = grade(math(other), item["solution"])
        if g.correct:
            passed.append((i, item["answer"], other))
    assert not passed


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
        "(C)",
        "C",
        "C) 7 kJ/mol",
        "**(C) 7 kJ/mol**",
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
    g = grade(mc("C"), f"<think>A looks tempting but (B) is off.</think>\n\n{after}")
    assert g == Grade("C", True, "letter", None), after


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
    assert g == Grade("B", False, "letter", "chose B, gold C")


def test_mc_reads_only_after_think() -> None:
    g = grade(mc("C"), "<think>The answer is C? No.</think>Answer: D")
    assert (g.answer, g.correct) == ("D", False)


def test_mc_no_think_whole_reply() -> None:
    assert grade(mc("C"), "Comparing (A) and (B)... So the answer is (C).").correct
    g = grade(mc("C"), "Comparing (A) with (B), the barrier of (C) looks")  # reasoning, no statement
    assert (g.answer, g.correct) == (None, False)


def test_mc_choice_text_fallback() -> None:
    g = grade(mc("B"), "<think>x</think>The answer is 42 kJ/mol.")
    assert g == Grade("B", True, "choice-text", None)
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
