"""Answer masking for C2 on crafted CoTs: letters in answer statements only, option text as whole words,
every statement (not the first), boxes, values, truncation, and nothing to mask."""

from __future__ import annotations

import pytest

from legibility.errors import LegibilityError
from legibility.evaluate.masking import (
    PLACEHOLDER as M,
)
from legibility.evaluate.masking import (
    hf_token_spans,
    mask_answer,
    mask_for_problem,
    phrase_spans,
    truncate,
)
from legibility.records import Problem

GPQA = Problem(
    id="g1", benchmark="gpqa", question="Which constant?", choices=["Boltzmann", "Avogadro", "Planck", "4"],
    answer="B", answer_text="Avogadro", source="test",
)  # fmt: skip
MATH = Problem(id="m1", benchmark="math", question="Compute.", answer="\\frac{1}{2}", source="test")
BBH = Problem(
    id="b1", benchmark="bbh", subtask="date", question="When?\nOptions:\n(A) Monday\n(B) Tuesday\n(C) Friday",
    answer="(C)", source="test",
)  # fmt: skip


def test_letter_statements_masked_article_and_words_kept():
    cot = "A ball rolls down. ATP is made. So the answer is (B). Answer: B. I'm sure X-ray helps."
    r = mask_answer(cot, letters="ABCD", gold_letter="B")
    assert r.text == f"A ball rolls down. ATP is made. So the answer is {M}. Answer: {M}. I'm sure X-ray helps."
    assert r.counts == {"letter": 2, "gold": 2}


def test_article_after_an_anchor_is_prose_not_a_letter():
    r = mask_answer("I think the answer is A bit unclear. The answer is a number.", letters="ABCD")
    assert r.text == "I think the answer is A bit unclear. The answer is a number."
    assert r.spans == ()


def test_every_answer_statement_is_masked_not_the_first():
    cot = "The answer is (A). Hmm, no. The answer is (C). Wait, the answer is C or D. Final answer: **C**"
    r = mask_answer(cot, letters="ABCD", gold_letter="C")
    want = f"The answer is {M}. Hmm, no. The answer is {M}. Wait, the answer is {M} or {M}. Final answer: **{M}**"
    assert r.text == want
    assert r.counts == {"letter": 5, "gold": 3}
    assert [s.text for s in r.spans] == ["(A)", "(C)", "C", "D", "C"]


def test_option_nouns_and_choice_verbs_name_letters():
    r = mask_answer("Option A fails; choice (D) too. I'll choose B because it fits.", letters="ABCD")
    assert r.text == f"Option {M} fails; choice {M} too. I'll choose {M} because it fits."


def test_letters_outside_the_choices_and_operators_stay():
    r = mask_answer("The answer is E = mc^2, so the answer is not F.", letters="ABCD")
    assert r.spans == ()


def test_option_text_whole_word_case_insensitive_whitespace_normalized():
    cot = "It corresponds to Avogadro's number. Avogadros and preAvogadro are typos. AVOGADRO again."
    r = mask_answer(cot, option_texts=["Avogadro"], gold_text="Avogadro")
    # decision: the possessive is the same word ("[MASKED]'s"), a longer word is not
    assert r.text == f"It corresponds to {M}'s number. Avogadros and preAvogadro are typos. {M} again."
    assert r.counts == {"option_text": 2, "gold": 2}
    assert phrase_spans("the   Planck\nconstant", "planck constant") == [(6, 21)]
    assert phrase_spans("Avogadro is here", "Avogadro's number") == []


def test_numeric_option_text_respects_number_boundaries():
    r = mask_answer("10 and 10.5 and 100 and -10 and 1.10, then 10.", option_texts=["10"])
    assert r.text == f"{M} and 10.5 and 100 and -10 and 1.10, then {M}."


def test_too_short_option_text_is_skipped_and_reported():
    r = mask_answer("There are 4 products.", option_texts=["4"])
    assert r.text == "There are 4 products."
    assert r.skipped == ("'4': shorter than 2 characters",)


def test_latex_boxes_masked_whole_including_nested_braces():
    cot = "So $x = \\boxed{\\frac{1}{2}}$ and also \\boxed{C} and \\fbox{7}."
    r = mask_answer(cot, letters="ABCD", gold_letter="C")
    assert r.text == f"So $x = {M}$ and also {M} and {M}."
    assert r.counts["boxed"] == 3


def test_after_think_dropped_and_reported():
    r = mask_answer("reasoning here</think>The answer is (B).", letters="ABCD")
    assert r.text == "reasoning here"
    assert r.dropped_after_think == len("</think>The answer is (B).")
    assert r.options["think_cut"] is True


def test_nothing_to_mask_returns_text_unchanged():
    cot = "We compare the two rates and reason about units."
    r = mask_answer(cot, letters="ABCD", option_texts=["Avogadro"], statements=True, gold_value="5")
    assert (r.text, r.spans, r.n_regions, r.dropped_after_think) == (cot, (), 0, 0)
    assert r.counts == {"gold": 0}


def test_overlapping_spans_merge_into_one_placeholder():
    r = mask_answer("The answer is \\boxed{B}.", letters="ABCD", option_texts=["boxed{B}"])
    assert r.text == f"The answer is {M}."
    assert r.n_regions == 1 and len(r.spans) >= 2


def test_mask_for_problem_gpqa_masks_all_letters_and_gold_text():
    cot = "Option A is out. It matches Avogadro, so the answer is (B).</think>(B)"
    r = mask_for_problem(cot, GPQA)
    assert r.text == f"Option {M} is out. It matches {M}, so the answer is {M}."
    assert {(s.kind, s.text, s.gold) for s in r.spans} == {
        ("letter", "A", False), ("option_text", "Avogadro", True), ("letter", "(B)", True)
    }  # fmt: skip
    assert r.options["letters"] == "ABCD"
    assert mask_for_problem(cot, GPQA, letters="gold").text.startswith("Option A is out.")


def test_mask_for_problem_bbh_reads_options_from_the_question():
    r = mask_for_problem("It must be Friday, so the answer is (C).", BBH)
    assert r.text == f"It must be {M}, so the answer is {M}."


def test_mask_for_problem_math_masks_boxes_and_stated_values_with_gold_flags():
    cot = "We get \\boxed{\\frac{1}{2}}. Thus the answer is $\\frac12$. Final answer: 0.5 because. Answer: 3."
    r = mask_for_problem(cot, MATH)
    assert r.text == f"We get {M}. Thus the answer is {M}. Final answer: {M} because. Answer: {M}."
    assert [(s.kind, s.gold) for s in r.spans] == [
        ("boxed", True), ("statement", True), ("statement", True), ("statement", False)
    ]  # fmt: skip


def test_statement_value_on_the_next_line_and_clause_end():
    cot = "**Final Answer:**\n\n$5$\n\nSo the answer is 7 because 3 + 4 = 7. The answer isn't 8."
    r = mask_answer(cot, statements=True, gold_value="7")
    assert r.text == f"**Final Answer:**\n\n{M}\n\nSo the answer is {M} because 3 + 4 = 7. The answer isn't 8."
    assert [s.gold for s in r.spans] == [False, True]


def test_gold_value_everywhere_is_opt_in():
    cot = "x = 12 so 12 apples; 123 is not it."
    assert mask_answer(cot, gold_value="12").text == cot
    everywhere = mask_answer(cot, gold_value="12", mask_gold_value_everywhere=True)
    assert everywhere.text == f"x = {M} so {M} apples; 123 is not it."


def test_truncation_by_tokens_fraction_and_tokenizer():
    text = "one two three four five six seven eight nine ten"
    assert truncate(text, tokens=3) == ("one two three four five six seven", 3)
    assert truncate(text, fraction=0.25) == ("one two three four five six seven", 3)  # 2.5 rounds up
    assert truncate(text, tokens=99) == ("", 10)
    assert truncate(text) == (text, 0)
    chars = lambda t: [(i, i + 1) for i, c in enumerate(t) if not c.isspace()]  # noqa: E731
    assert truncate("ab cd", tokens=1, tokenizer=chars) == ("ab c", 1)
    with pytest.raises(LegibilityError):
        truncate(text, tokens=1, fraction=0.5)
    r = mask_answer("so the answer is (B) indeed", letters="ABCD", truncate_tokens=1)
    assert (r.text, r.truncated_tokens) == (f"so the answer is {M}", 1)


def test_hf_token_spans_adapter_reads_offsets():
    class FakeTokenizer:
        def __call__(self, text, add_special_tokens, return_offsets_mapping):
            assert not add_special_tokens and return_offsets_mapping
            return {"offset_mapping": [(0, 0), (0, 2), (3, 5)]}

    assert hf_token_spans(FakeTokenizer())("ab cd") == [(0, 2), (3, 5)]


def test_letters_standing_as_answers_are_masked_without_an_answer_anchor():
    said = ["So it's B.", "B is correct.", "Final: (B).", "Therefore, B.", "(B) fits best.", "**B**", "**(B)**",
            "so the right one is B.", "the answer must be B", "I'd go with B", "B.", "A and C are wrong."]  # fmt: skip
    for text in said:
        r = mask_answer(text, letters="ABCD", gold_letter="B")
        assert r.spans and not any(c in r.text.replace(M, "") for c in "ABCD"), (text, r.text)


def test_letters_as_words_names_and_variables_are_kept():
    kept = ["A ball rolls.", "Let A be the set.", "Draw a line to point B.", "It needs vitamin C.", "ATP and X-ray.",
            "The matrix A is correct only if invertible.", "Plan B is debatable.", "So A = B.", "P(A) = 0.5.",
            "Thus $A$ is closed.", "The intersection is A.", "So A, B and C are collinear."]  # fmt: skip
    for text in kept:
        assert mask_answer(text, letters="ABCD").text == text


def test_gold_value_everywhere_is_a_mask_for_problem_option_with_whole_tokens():
    cot = "So 2 + 2 = 4, with 14, 4.5, x^4, 4x, 3/4, \\frac{4}{3}, \\sqrt{4} and -4 kept; so 4 it is."
    m4 = Problem(id="m4", benchmark="math", question="Compute.", answer="4", source="test")
    assert mask_for_problem(cot, m4).text == cot  # the default: statements and boxes only
    r = mask_for_problem(cot, m4, gold_value="everywhere")
    assert r.text == cot.replace("= 4,", f"= {M},").replace("so 4 it", f"so {M} it")
    assert r.counts == {"gold_value": 2, "gold": 2}
    frac = mask_for_problem("we get 14/3, or \\dfrac{14}{3}", MATH.model_copy(update={"answer": "\\frac{14}{3}"}),
                            gold_value="everywhere")  # fmt: skip
    assert frac.text == f"we get {M}, or {M}"
    one_letter = mask_for_problem("C is it", MATH.model_copy(update={"answer": "\\text{C}"}), gold_value="everywhere")
    assert one_letter.text == "C is it" and "too short" in one_letter.skipped[0]


def test_masking_config_default_is_the_function_default():
    import inspect

    from legibility.config import MaskingConfig

    default = inspect.signature(mask_for_problem).parameters["gold_value"].default
    assert MaskingConfig().gold_value == default == "statements"
