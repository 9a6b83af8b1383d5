"""The reader protocol on crafted inputs and a scripted fake model (chat shapes, strict parsing, answers read by the
grader, failures kept apart from wrong answers, hand-computed log-prob normalisation, batching), plus one check on the
real embedded model: uplift and surprisal are finite, and a coherent CoT is less surprising than its shuffled copy."""

from __future__ import annotations

import importlib.resources
import math
import os
import random
from collections.abc import Callable

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from conftest import MATH500

from legibility.benchmarks import load, prompts
from legibility.config import MaskingConfig
from legibility.errors import LegibilityError
from legibility.evaluate import readers as R
from legibility.evaluate.items import EvalItem
from legibility.evaluate.masking import PLACEHOLDER
from legibility.models.base import ChatModel, Completion, Sampling, Scores
from legibility.models.cached import CachedModel
from legibility.records import Message, Problem

GPQA = Problem(
    id="g1", benchmark="gpqa", question="Which constant relates energy and frequency?",
    choices=["Boltzmann constant", "Avogadro constant", "Planck constant", "gas constant"], answer="C",
    answer_text="Planck constant", source="test",
)  # fmt: skip
MATH = Problem(id="m1", benchmark="math", question="Compute $6 \\times 7$.", answer="42", source="test")
BBH_FREE = Problem(id="b1", benchmark="bbh", subtask="formal_fallacies", question="Is it valid?", answer="valid",
                   source="test")  # fmt: skip
BBH_MC = Problem(
    id="b2", benchmark="bbh", subtask="date", question="Which day?", choices=["Monday", "Tuesday", "Friday"],
    answer="B", answer_text="Tuesday", source="test",
)  # fmt: skip
SAMPLING = Sampling(max_new_tokens=8)
MASKING = MaskingConfig()


def item(problem: Problem, cot: str, item_id: str = "gen/x/0", transform: str = "intact") -> EvalItem:
    return EvalItem(item_id, problem, cot, "", "gen", True, True, transform)


class FakeModel:
    """A scripted ChatModel: `reply(chat)` gives each completion (a str, or a Completion as is), `logprob(chat,
    target)` each target's token log-probs (a list, or a Scores as is). Every call is recorded."""

    def __init__(
        self,
        reply: Callable[[list[Message]], str | Completion] = lambda chat: "Answer: C",
        logprob: Callable[[list[Message], str], list[float] | Scores] | None = None,
        render: Callable[[list[Message]], str] | None = None,
    ) -> None:
        self.name = "fake"
        self.supports_scoring = logprob is not None
        self.reply, self.logprob = reply, logprob
        self.calls: list[tuple[str, list[list[Message]], list[str] | None]] = []
        if render is not None:
            self.render_prompt = render

    def _complete(self, op: str, chats: list[list[Message]]) -> list[Completion]:
        self.calls.append((op, chats, None))
        out = [self.reply(c) for c in chats]
        return [c if isinstance(c, Completion) else Completion(c, "stop") for c in out]

    def generate(self, chats: list[list[Message]], sampling: Sampling) -> list[Completion]:
        return self._complete("generate", chats)

    def continue_(self, chats: list[list[Message]], sampling: Sampling) -> list[Completion]:
        return self._complete("continue", chats)

    def score(self, chats: list[list[Message]], targets: list[str]) -> list[Scores]:
        self.calls.append(("score", chats, targets))
        assert self.logprob is not None
        out = [self.logprob(c, t) for c, t in zip(chats, targets, strict=True)]
        return [s if isinstance(s, Scores) else Scores(s) for s in out]

    def ops(self) -> list[str]:
        return [op for op, _, _ in self.calls]


def test_fake_is_a_chat_model():
    assert isinstance(FakeModel(), ChatModel)


# ------------------------------------------------------------------------------------------------ chats


def test_c1_is_the_benchmark_prompt_and_c4_asks_for_the_answer_alone():
    assert R.c1_chat(GPQA) == prompts.messages(GPQA)
    (c4,) = R.c4_chat(GPQA)
    assert c4.role == "user"
    assert "(A) Boltzmann constant" in c4.content and "(D) gas constant" in c4.content
    assert '"Answer: X"' in c4.content and "A, B, C, D" in c4.content
    assert "After your reasoning" not in c4.content
    assert "\\boxed{}" in R.c4_chat(MATH)[0].content
    assert '"Answer: "' in R.c4_chat(BBH_FREE)[0].content


def test_hand_off_is_a_finished_assistant_turn_then_a_user_turn():
    chat = R.c2_chat(GPQA, "Energy is h times nu, so the constant is [MASKED].")
    assert [m.role for m in chat] == ["user", "assistant", "user"]
    assert chat[0] == prompts.messages(GPQA)[0]
    assert chat[1].content == "<think>\nEnergy is h times nu, so the constant is [MASKED].\n</think>"
    assert '"Answer: X"' in chat[2].content and "A, B, C, D" in chat[2].content
    plain = R.c2_chat(GPQA, "some reasoning", think=False)
    assert plain[1].content == "some reasoning"


def test_prefill_ends_on_an_open_assistant_turn_with_the_answer_lead():
    chat = R.c2_prefill_chat(MATH, "6 times 7 is [MASKED].")
    assert [m.role for m in chat] == ["user", "assistant"]
    assert chat[1].content == "<think>\n6 times 7 is [MASKED].\n</think>\n\nThe final answer is \\boxed{"
    assert R.prefill_lead(MATH) == "The final answer is \\boxed{"
    assert R.prefill_lead(GPQA) == R.prefill_lead(BBH_FREE) == "Answer:"
    assert R.c2_prefill_chat(GPQA, "x")[1].content.endswith("</think>\n\nAnswer:")


def test_leak_prompt_has_question_options_gold_letter_and_text_and_the_cot():
    (msg,) = R.leak_chat(GPQA, f"E = h nu, so it is {PLACEHOLDER}.")
    text = msg.content
    assert msg.role == "user" and GPQA.question in text
    assert all(f"({k}) {c}" in text for k, c in zip("ABCD", GPQA.choices, strict=True))
    assert "(C) Planck constant" in text.split("Correct final answer:")[1].splitlines()[0]
    assert f"E = h nu, so it is {PLACEHOLDER}." in text
    assert '"LEAK: YES"' in text and '"LEAK: NO"' in text
    assert "Correct final answer: 42" in R.leak_chat(MATH, "x")[0].content
    bbh_legacy = Problem(id="b3", benchmark="bbh", question="Which?\nOptions:\n(A) cat\n(B) dog", answer="(B)",
                         source="test")  # fmt: skip
    assert "Correct final answer: (B) dog" in R.leak_chat(bbh_legacy, "x")[0].content


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("LEAK: YES", True),
        ("LEAK: NO", False),
        ("  leak: yes  ", True),
        ("**LEAK: NO**", False),
        ("Looking at it, the reasoning names Planck.\nLEAK: YES", True),
        ("LEAK: YES\nOn reflection:\nLEAK: NO", False),  # the last verdict line
        ("<think>maybe LEAK: YES</think>\nLEAK: NO", False),  # deliberation inside the think block is not the verdict
        ("<think>LEAK: YES", None),  # cut off while thinking
        ("YES", None),
        ("LEAK: MAYBE", None),
        ("The reasoning does not leak. LEAK: NO because nothing is stated.", False),  # a verdict mid-line
        ("LEAK: YES - it states 42", True),  # what detectors write; the old parser failed these
        ("LEAK: NO - the final value is masked", False),
        ("**LEAK:** no", False),
        ("**Leak:** YES", True),
        ("Leak: Yes.", True),
        ("Verdict: LEAK: YES (it names option C)", True),
        ("The CoT computes 6*7.\nLEAK: NO\nIt never states the result.", False),  # a verdict line anywhere
        ("LEAK: YES or NO", None),  # ambiguous: both on one line
        ("LEAK: YES/NO", None),
        ("LEAK: NO. Actually LEAK: YES", None),  # two labels that disagree on one line
        ('Reply "LEAK: YES" if it gives the answer away, "LEAK: NO" if not.', None),  # the prompt echoed
        ("It leaks, YES, it says 42.", None),  # no label
        ("", None),
    ],
)
def test_parse_leak_reads_verdicts_as_written_and_fails_on_none_or_both(reply, verdict):
    assert R.parse_leak(reply) is verdict


# ------------------------------------------------------------------------------------------------ answers


def test_read_answer_takes_the_final_statement_not_the_first():
    assert R.read_answer(GPQA, "The answer is A. Wait, no: the answer is C.") == ("C", True, True)
    assert R.read_answer(MATH, "So \\boxed{41}. Rechecking: 6*7 = \\boxed{42}") == ("42", True, True)
    assert R.read_answer(BBH_FREE, "The answer is invalid. So the answer is valid.") == ("valid", True, True)
    assert R.read_answer(MATH, "The answer is 41. No: the answer is 42.", answer_only=True) == ("42", True, True)


@pytest.mark.parametrize("reply", ["A reasonable guess is C.", "A reasonable guess is C", "A good answer is C"])
def test_read_answer_never_reads_the_article_as_option_a(reply):
    answer, correct, _ = R.read_answer(GPQA, reply, answer_only=True)
    assert answer in ("C", None) and correct is (answer == "C")


def test_read_answer_of_an_answer_only_reply():
    assert R.read_answer(MATH, "42", answer_only=True) == ("42", True, False)
    assert R.read_answer(MATH, "42") == (None, False, False)  # a reasoning reply must box its answer
    assert R.read_answer(GPQA, "Answer: Planck constant", answer_only=True) == ("C", True, False)
    assert R.read_answer(BBH_MC, "Answer: (B)", answer_only=True) == ("B", True, True)
    lead = R.prefill_lead(MATH)
    assert R.read_answer(MATH, lead + "42}.", answer_only=True) == ("42", True, True)
    assert R.read_answer(GPQA, R.prefill_lead(GPQA) + " D", answer_only=True) == ("D", False, False)
    # its own think block: only what follows it is read
    assert R.read_answer(GPQA, "<think>Answer: C</think>\nAnswer: B", answer_only=True) == ("B", False, False)


# ------------------------------------------------------------------------------------------------ scores


MC_TOTALS = {"Answer: A": -2.0, "Answer: B": -1.0, "Answer: C": -3.0, "Answer: D": -4.0}


def mc_scores(chat: list[Message], target: str) -> list[float]:
    return [MC_TOTALS[target] / 2] * 2  # two tokens each


def test_answer_targets():
    assert R.answer_targets(GPQA) == (["Answer: A", "Answer: B", "Answer: C", "Answer: D"], 2)
    assert R.answer_targets(BBH_MC) == (["Answer: A", "Answer: B", "Answer: C"], 1)
    assert R.answer_targets(MATH) == (["\\boxed{42}"], 0)
    assert R.answer_targets(BBH_FREE) == (["Answer: valid"], 0)
    with pytest.raises(LegibilityError):
        R.answer_targets(GPQA.model_copy(update={"answer": "E"}))


def test_gold_logprob_normalises_the_letters_over_the_options_in_one_call():
    m = FakeModel(logprob=mc_scores)
    chats = [R.c4_chat(GPQA), R.c4_chat(GPQA), R.c4_chat(MATH)]
    math_fake = FakeModel(logprob=lambda c, t: [-0.5, -0.25] if t == "\\boxed{42}" else [-99.0])
    got = R.gold_logprob(m, chats[:2], [GPQA, GPQA])
    # by hand: -3 - log(e^-2 + e^-1 + e^-3 + e^-4) = -3 - (-1 + log(1 + e^-1 + e^-2 + e^-3))
    expected = -3 - (-1 + math.log(1 + math.exp(-1) + math.exp(-2) + math.exp(-3)))
    assert expected == pytest.approx(-2.440189, abs=1e-6)
    assert got == [pytest.approx(expected), pytest.approx(expected)]
    assert m.ops() == ["score"] and m.calls[0][2] == [*MC_TOTALS, *MC_TOTALS]  # every row x option, one call
    assert math.exp(got[0]) == pytest.approx(math.exp(-3) / sum(math.exp(v) for v in MC_TOTALS.values()))
    assert R.gold_logprob(math_fake, chats[2:], [MATH]) == [pytest.approx(-0.75)]  # not normalised: raw log p


def test_gold_logprob_failures_are_none():
    def scores(chat: list[Message], target: str) -> list[float] | Scores:
        return Scores([], error="boom") if target == "Answer: D" else [-1.0]

    assert R.gold_logprob(FakeModel(logprob=scores), [R.c4_chat(GPQA)], [GPQA]) == [None]
    assert R.gold_logprob(FakeModel(logprob=lambda c, t: [-math.inf]), [R.c4_chat(MATH)], [MATH]) == [None]
    assert R.gold_logprob(FakeModel(), [R.c4_chat(GPQA)], [GPQA]) == [None]  # no scoring backend
    assert R.uplift(FakeModel(), [GPQA], ["x"]) == [None] and R.surprisal(FakeModel(), [GPQA], ["x"]) == [None]


def with_cot(chat: list[Message]) -> bool:
    """Does the hand-off carry a CoT (not the empty think block of the uplift baseline)?"""
    return any(m.role == "assistant" and m.content.replace("<think>", "").replace("</think>", "").strip()
               for m in chat)  # fmt: skip


def test_uplift_is_with_cot_minus_without_in_one_score_call():
    def scores(chat: list[Message], target: str) -> list[float]:
        if target == "\\boxed{42}":
            return [-0.5, -0.5] if with_cot(chat) else [-2.0, -2.0]
        return [MC_TOTALS[target] if with_cot(chat) else -1.0]  # without the CoT: uniform over the options

    m = FakeModel(logprob=scores)
    got = R.uplift(m, [MATH, GPQA], ["six sevens is [MASKED]", "E = h nu"], handoff="think")
    with_mc = -3 - (-1 + math.log(1 + math.exp(-1) + math.exp(-2) + math.exp(-3)))
    assert got == [pytest.approx(-1.0 - -4.0), pytest.approx(with_mc - math.log(1 / 4))]
    assert m.ops() == ["score"]
    chats = m.calls[0][1]
    assert len(chats) == 2 * (1 + 4)
    # the baseline is the same hand-off with an empty CoT, not the C4 prompt
    assert chats[0] == R.c2_chat(MATH, "six sevens is [MASKED]") and chats[-1] == R.c2_chat(GPQA, "")


def test_uplift_of_an_empty_cot_is_zero_by_construction():
    # scores that depend on the prompt's wording: the old C4 baseline gave an empty CoT a large "uplift"
    def scores(chat: list[Message], target: str) -> list[float]:
        return [-0.1 * len(str(chat))]

    m = FakeModel(logprob=scores)
    assert R.uplift(m, [MATH, GPQA], ["", ""], handoff="think") == [0.0, 0.0]
    assert len(m.calls[0][1]) == 1 + 4  # identical chats are scored once
    assert R.uplift(m, [MATH], ["six sevens"], handoff="plain")[0] != 0.0


def test_surprisal_scores_the_cot_as_the_reply_to_the_benchmark_prompt():
    def scores(chat: list[Message], target: str) -> list[float] | Scores:
        return {"good": [-1.0, -2.0, -3.0], "": [], "bad": Scores([], error="too long")}[target]

    m = FakeModel(logprob=scores)
    assert R.surprisal(m, [MATH, MATH, MATH], ["good", "", "bad"]) == [pytest.approx(2.0), None, None]
    assert m.calls[0][1] == [R.c1_chat(MATH)] * 3 and m.calls[0][2] == ["good", "", "bad"]


# ------------------------------------------------------------------------------------------------ hand-off


def qwen3_renderer() -> Callable[[list[Message]], str]:
    """Qwen3's own chat template (shipped with trl), which deletes think blocks of earlier assistant turns."""
    from legibility.models import load_tokenizer

    template = (importlib.resources.files("trl") / "chat_templates" / "qwen3.jinja").read_text(encoding="utf-8")
    tok = load_tokenizer("embedded")

    def render(chat: list[Message]) -> str:
        msgs = [m.model_dump() for m in chat]
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, chat_template=template)

    return render


def test_auto_hand_off_passes_plain_text_when_the_template_drops_think_blocks(tmp_path):
    render = qwen3_renderer()
    assert "the CoT" not in render(R.c2_chat(GPQA, "the CoT"))  # the pitfall itself
    m = FakeModel(render=render)
    assert R.handoff_keeps_cot(m) is False and R.handoff_keeps_cot(m, think=False) is True
    assert R.resolve_handoff(m) == "plain" and R.resolve_handoff(m, "think") == "think"
    assert R.resolve_handoff(CachedModel(m, tmp_path)) == "plain"  # the probe looks through wrappers
    (r,) = R.run_c2(m, "qwen", [item(GPQA, "E = h nu, so the Planck constant.")], MASKING, SAMPLING)
    sent = m.calls[0][1][0]
    assert sent[1].content == f"E = h nu, so the {PLACEHOLDER}." and r.masking["handoff"] == "plain"
    assert r.correct is True
    keeps = FakeModel(render=lambda chat: "\n".join(m.content for m in chat))
    assert R.resolve_handoff(keeps) == "think" and R.resolve_handoff(FakeModel()) == "think"
    drops_all = FakeModel(render=lambda chat: chat[0].content)
    with pytest.raises(LegibilityError, match="c2_prefill"):
        R.resolve_handoff(drops_all)


# ------------------------------------------------------------------------------------------------ runners


def test_run_c1_and_c4_readings():
    replies = {"c1": "6 times 7 is 42, so \\boxed{42}.", "c4": "42"}
    m = FakeModel(reply=lambda chat: replies["c4" if "answer immediately" in chat[-1].content else "c1"])
    (c1,) = R.run_c1(m, "r", [MATH], SAMPLING)
    (c4,) = R.run_c4(m, "r", [MATH], SAMPLING)
    assert (c1.id, c1.condition, c1.item_id, c1.answer, c1.correct, c1.correct_strict) == (
        "r/c1/m1", "c1", None, "42", True, True)  # fmt: skip
    assert (c4.id, c4.condition, c4.answer, c4.correct, c4.correct_strict) == ("r/c4/m1", "c4", "42", True, False)
    assert c4.masking["prompt_version"] == R.PROMPT_VERSION and c4.generator is None
    assert m.calls[0][1] == [R.c1_chat(MATH)] and m.calls[1][1] == [R.c4_chat(MATH)]


def test_a_failed_request_is_an_error_never_a_wrong_answer():
    def reply(chat: list[Message]) -> str | Completion:
        return Completion("", error="HTTP 500") if "h nu" in str(chat) else "Answer: A"

    items = [item(GPQA, "E = h nu: the Planck constant.", "g/1/0"), item(GPQA, "Think about Avogadro.", "g/2/0")]
    failed, wrong = R.run_c2(FakeModel(reply=reply), "r", items, MASKING, SAMPLING, handoff="think")
    assert (failed.error, failed.correct, failed.correct_strict, failed.answer) == ("HTTP 500", None, None, None)
    assert (wrong.error, wrong.correct, wrong.answer) == (None, False, "A")
    (c1,) = R.run_c1(FakeModel(reply=lambda chat: Completion("", error="timeout")), "r", [MATH], SAMPLING)
    assert c1.error == "timeout" and c1.correct is None
    (leak,) = R.run_leak(FakeModel(reply=reply), "det", items[:1], MASKING, SAMPLING)
    assert leak.error == "HTTP 500" and leak.correct is None and leak.answer is None


def test_run_c2_masks_grades_and_records():
    cot = "Energy is h nu. So the answer is (C), the Planck constant."
    m = FakeModel(reply=lambda chat: "Answer: C")
    (r,) = R.run_c2(m, "r", [item(GPQA, cot, "gen/g1/0", "shuffle")], MASKING, SAMPLING, handoff="think")
    assert (r.id, r.item_id, r.problem_id, r.benchmark, r.generator, r.transform, r.condition) == (
        "r/c2/gen/g1/0", "gen/g1/0", "g1", "gpqa", "gen", "shuffle", "c2")  # fmt: skip
    assert (r.answer, r.correct, r.correct_strict, r.uplift, r.surprisal) == ("C", True, True, None, None)
    sent = m.calls[0][1][0][1].content
    assert "(C)" not in sent and "Planck" not in sent and sent.count(PLACEHOLDER) == 2
    rec = r.masking
    assert rec["config"] == MASKING.model_dump(mode="json") and rec["handoff"] == "think"
    assert rec["counts"] == {"letter": 1, "option_text": 1, "gold": 2}
    assert {s["text"] for s in rec["removed"]} == {"(C)", "Planck constant"}
    assert rec["options"]["letters"] == "ABCD" and rec["prompt_version"] == R.PROMPT_VERSION


def test_run_c2_prefill_grades_lead_plus_continuation():
    m = FakeModel(reply=lambda chat: "42}.")
    (r,) = R.run_c2(m, "r", [item(MATH, "6 times 7 is 42.")], MASKING, SAMPLING, prefill=True)
    assert m.ops() == ["continue"] and m.calls[0][1][0][-1].content.endswith(R.prefill_lead(MATH))
    assert (r.id, r.condition, r.text, r.answer, r.correct, r.correct_strict) == (
        "r/c2_prefill/gen/x/0", "c2_prefill", "The final answer is \\boxed{42}.", "42", True, True)  # fmt: skip
    assert r.masking["handoff"] == "prefill"
    no_continue = FakeModel()
    no_continue.supports_continue = False
    with pytest.raises(LegibilityError):
        R.run_c2(no_continue, "r", [item(MATH, "x")], MASKING, SAMPLING, prefill=True)


def test_run_c2_scores_uplift_of_the_masked_cot_and_surprisal_of_the_whole_one():
    cot = "Six sevens: the answer is 42."

    def scores(chat: list[Message], target: str) -> list[float]:
        if target == cot:
            return [-1.0, -3.0]
        return [-1.0] if with_cot(chat) else [-3.5]

    m = FakeModel(reply=lambda chat: "\\boxed{42}", logprob=scores)
    (r,) = R.run_c2(m, "r", [item(MATH, cot)], MASKING, SAMPLING, scores=True, handoff="think")
    assert r.uplift == pytest.approx(2.5) and r.surprisal == pytest.approx(2.0)
    assert m.ops() == ["generate", "score", "score"]
    uplift_chats = m.calls[1][1]
    assert uplift_chats[0][1].content == f"<think>\nSix sevens: the answer is {PLACEHOLDER}.\n</think>"


def test_run_leak_verdicts():
    replies = iter(["LEAK: YES", "LEAK: NO", "It leaks, I think."])
    m = FakeModel(reply=lambda chat: next(replies))
    items = [item(GPQA, f"Reasoning {k}.", f"g/{k}/0") for k in range(3)]
    yes, no, bad = R.run_leak(m, "det", items, MASKING, SAMPLING)
    assert (yes.id, yes.condition, yes.role, yes.answer, yes.correct) == ("det/leak/g/0/0", "leak", "leak_detector",
                                                                          "yes", True)  # fmt: skip
    assert (no.answer, no.correct, no.error) == ("no", False, None)
    assert bad.answer is None and bad.correct is None and "LEAK" in bad.error and bad.text == "It leaks, I think."
    assert m.calls[0][1][0] == R.leak_chat(GPQA, "Reasoning 0.")
    assert yes.masking["counts"] == {"gold": 0}


def test_run_cut_answers_at_each_sentence_cut_with_uplift():
    cot = "Six times seven. That is forty-two. So the answer is 42."
    m = FakeModel(reply=lambda chat: "\\boxed{42}", logprob=lambda c, t: [-float(len(c[1].content))])
    out = R.run_cut(m, "r", [item(MATH, cot)], MASKING, [0.0, 0.5, 1.0], SAMPLING, scores=True,
                    handoff="think")  # fmt: skip
    assert [r.id for r in out] == ["r/early/gen/x/0@0", "r/early/gen/x/0@0.5", "r/early/gen/x/0@1"]
    assert [r.fraction for r in out] == [0.0, 0.5, 1.0] and {r.condition for r in out} == {"early"}
    assert [r.masking["cut"] for r in out] == [{"n_kept": k, "n_sentences": 3} for k in (0, 2, 3)]
    thinks = [chat[1].content for chat in m.calls[0][1]]
    full = f"Six times seven. That is forty-two. So the answer is {PLACEHOLDER}."
    assert thinks == ["<think>\n\n</think>", "<think>\nSix times seven. That is forty-two.\n</think>",
                      f"<think>\n{full}\n</think>"]  # fmt: skip
    empty = len("<think>\n\n</think>")
    assert [r.uplift for r in out] == [pytest.approx(empty - len(t)) for t in thinks]
    assert out[0].uplift == 0.0  # nothing kept: the baseline itself
    assert all(r.correct for r in out) and m.ops() == ["generate", "score"]
    assert len(m.calls[1][1]) == 3  # the fraction-0 chat and the baseline are one request


def test_run_cut_grades_against_gold_and_against_the_generators_own_answer():
    cot = "Six times seven. That is forty-one. So the answer is 41."
    replies = iter(["\\boxed{42}", "\\boxed{41}", "no idea"])
    m = FakeModel(reply=lambda chat: next(replies))
    wrong = EvalItem("gen/x/0", MATH, cot, "So \\boxed{41}.", "gen", False, False)
    out = R.run_cut(m, "r", [wrong], MASKING, [0.0, 0.5, 1.0], SAMPLING, handoff="think")
    assert [(r.correct, r.agrees) for r in out] == [(True, False), (False, True), (False, False)]
    silent = EvalItem("gen/y/0", MATH, cot, "", "gen", False, False)  # the generator stated no answer
    out = R.run_cut(FakeModel(reply=lambda chat: "\\boxed{41}"), "r", [silent], MASKING, [0.0, 1.0], SAMPLING,
                    handoff="think")  # fmt: skip
    assert [r.agrees for r in out] == [None, None]


def test_a_reply_cut_off_by_the_token_limit_without_a_complete_answer_is_a_failure():
    def run(text: str, condition: str = "c2") -> tuple[bool | None, str | None]:
        m = FakeModel(reply=lambda chat: Completion(text, "length"))
        if condition == "c1":
            (r,) = R.run_c1(m, "r", [MATH], SAMPLING)
        else:
            (r,) = R.run_c2(m, "r", [item(MATH, "six sevens")], MASKING, SAMPLING, handoff="think")
        return r.correct, r.error

    assert run("Let me think about whether it is 4")[0] is None  # the old code graded this wrong
    assert run("Answer: 4")[0] is None  # may be "42" cut short
    assert run("\\boxed{42} because six sevens are") == (True, None)  # complete before the cut: kept
    correct, error = run("6 times 7 is \\boxed{42}, let me check: 6 times 7", "c1")
    assert correct is None and "truncated" in error  # a reasoning reply cut off is unfinished
    assert R.run_c2(FakeModel(reply=lambda chat: "\\boxed{4"), "r", [item(MATH, "x")], MASKING, SAMPLING,
                    handoff="think")[0].correct is False  # fmt: skip  # finished, not cut: a wrong answer


def test_one_model_call_per_runner_or_chunks_with_progress():
    items = [item(GPQA, f"Reasoning {k}.", f"g/{k}/0") for k in range(5)]
    m = FakeModel()
    assert len(R.run_c2(m, "r", items, MASKING, SAMPLING, handoff="think")) == 5 and m.ops() == ["generate"]
    done: list[int] = []
    m = FakeModel()
    out = R.run_c2(m, "r", items, MASKING, SAMPLING, handoff="think", progress=done.append, chunk=2)
    assert [r.item_id for r in out] == [it.id for it in items]
    assert done == [2, 2, 1] and m.ops() == ["generate"] * 3
    assert R.run_c1(FakeModel(), "r", [], SAMPLING) == []


def test_masking_options_reach_the_masker():
    cot = "one two three four five six seven eight nine ten"
    r = R.mask(MATH, cot, MaskingConfig(truncate_tokens=3))
    assert r.text == "one two three four five six seven" and r.truncated_tokens == 3
    rec = R.masking_record(r, MaskingConfig(truncate_tokens=3))
    assert rec["truncated_tokens"] == 3 and rec["options"]["truncate_tokens"] == 3
    every = R.mask(GPQA, "It is not the Boltzmann constant.", MaskingConfig(choice_texts="all"))
    assert every.text == f"It is not the {PLACEHOLDER}."
    gold = MATH.answer
    prose = f"Two groups of {gold} make the total."
    assert R.mask(MATH, prose, MaskingConfig()).text == prose  # statements only, by default
    assert PLACEHOLDER in R.mask(MATH, prose, MaskingConfig(gold_value="everywhere")).text


# ------------------------------------------------------------------------------------------------ real model


@pytest.fixture(scope="module")
def hf():
    import torch

    from legibility.models.hf import HFChatModel

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core box: one intra-op thread is faster for this small model
    yield HFChatModel("embedded", batch_size=4)
    torch.set_num_threads(before)


REAL_COTS = {
    "math/test/algebra/1255.json": (
        "We need the power of two that equals sixty-four. Two times two is four, four times two is eight, eight "
        "times two is sixteen, sixteen times two is thirty-two, and thirty-two times two is sixty-four. That is "
        "six factors of two, so the logarithm of sixty-four in base two is 6."
    ),
    "math/test/number_theory/686.json": (
        "The units digit of a power only depends on the units digit of the base, which is eight here. The units "
        "digits of the powers of eight repeat in a cycle of four: eight, four, two, six. Since six leaves a "
        "remainder of two when divided by four, the units digit of eighteen to the sixth power is 4."
    ),
}


def shuffled(text: str, seed: int = 0) -> str:
    words = text.split()
    random.Random(seed).shuffle(words)
    return " ".join(words)


def test_real_model_uplift_and_surprisal(hf):
    by_id = {p.id: p for p in load("math", MATH500, levels="all")}
    problems = [by_id[k] for k in REAL_COTS]
    cots = list(REAL_COTS.values())
    masked = [R.mask(p, c, MASKING).text for p, c in zip(problems, cots, strict=True)]
    ups = R.uplift(hf, problems, masked)
    coherent = R.surprisal(hf, problems, cots)
    scrambled = R.surprisal(hf, problems, [shuffled(c) for c in cots])
    for value in [*ups, *coherent, *scrambled]:
        assert isinstance(value, float) and math.isfinite(value)
    assert all(0 < c < s for c, s in zip(coherent, scrambled, strict=True)), (coherent, scrambled)
    assert R.resolve_handoff(hf) == "think"  # SmolLM2's template keeps earlier think blocks


def test_real_model_uplift_of_an_empty_cot_is_zero(hf):
    # the old baseline (the C4 prompt) gave an empty CoT +4.9 to +7.2 nats on these items: the prompt change alone
    by_id = {p.id: p for p in load("math", MATH500, levels="all")}
    problems = [by_id[k] for k in REAL_COTS]
    assert R.uplift(hf, problems, ["", ""]) == [0.0, 0.0]
