"""LLM judges: strict reply parsing (both directions), one model call per runner, chunking and its summaries,
failure records instead of guesses, label-probability expectations computed by hand, and the real embedded model
run both ways on one short CoT."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from legibility.errors import LegibilityError
from legibility.evaluate import judges as J
from legibility.evaluate.items import EvalItem
from legibility.models.base import ChatModel, Completion, Sampling, Scores
from legibility.records import Message, Problem

GPQA = Problem(id="gpqa/1", benchmark="gpqa", question="Which gas is most abundant in air?",
               choices=["Oxygen", "Nitrogen", "Argon", "Carbon dioxide"], answer="B", source="test")  # fmt: skip
MATH = Problem(id="math/1", benchmark="math", question="What is 2 + 3?", answer="5", source="test")


def item(cot: str, id: str = "gen/gpqa/1/0", problem: Problem = GPQA, transform: str = "intact") -> EvalItem:
    return EvalItem(id, problem, cot, "Answer: B", "gen", True, True, transform, id)


class FakeModel:
    """A scripted ChatModel: replies in request order (a str, or a Completion for failures) and a log-prob per
    (chat text, target). Records every call, so tests can count model calls and requests."""

    def __init__(
        self,
        replies: list[str | Completion] | None = None,
        logprobs: Callable[[str, str], Scores] | None = None,
        supports_scoring: bool = True,
    ) -> None:
        self.name = "fake"
        self.supports_scoring = supports_scoring
        self.replies = list(replies or [])
        self.logprobs = logprobs
        self.calls: list[tuple[str, list[list[Message]], list[str]]] = []

    def generate(self, chats: list[list[Message]], sampling: Sampling) -> list[Completion]:
        self.calls.append(("generate", chats, []))
        assert len(chats) == len(self.replies), "scripted replies must match the requests"
        return [r if isinstance(r, Completion) else Completion(r, "stop") for r in self.replies]

    def continue_(self, chats: list[list[Message]], sampling: Sampling) -> list[Completion]:
        raise AssertionError("judges never continue")

    def score(self, chats: list[list[Message]], targets: list[str]) -> list[Scores]:
        self.calls.append(("score", chats, targets))
        assert self.logprobs is not None
        return [self.logprobs(c[-1].content, t) for c, t in zip(chats, targets, strict=True)]


def test_fake_is_a_chat_model():
    assert isinstance(FakeModel(), ChatModel)


# ------------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Legibility: 3\nCoverage: 4", (3, 4)),
        ("Legibility: 0\nCoverage: 0", (0, 0)),
        ("legibility:4\nCOVERAGE :  2  ", (4, 2)),  # label case and spaces around the colon
        ("Coverage: 1\nLegibility: 2", (2, 1)),  # any order
        ("Legibility: 3\r\nCoverage: 4\r\n", (3, 4)),
        ("\tLegibility: 3\t\nCoverage: 4", (3, 4)),
        ("Here is my rating.\nLegibility: 2\nCoverage: 1\nThe steps are terse.", (2, 1)),  # prose tolerated
        ("Legibility: 2\nCoverage: 1\nLegibility: 2", (2, 1)),  # repeated consistently
        ("<think>Legibility: 1? or 3.5</think>\nLegibility: 3\nCoverage: 3", (3, 3)),  # think block skipped
        ("The legibility is high.\nLegibility: 4\nCoverage: 4", (4, 4)),  # "legibility" not as a label: prose
    ],
)
def test_parse_rubric_accepts(text, expected):
    assert J.parse_rubric(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Legibility: 3",  # coverage missing
        "Coverage: 3",
        "Legibility: 5\nCoverage: 1",  # out of range
        "Legibility: -1\nCoverage: 1",
        "Legibility: 3.5\nCoverage: 4",
        "Legibility: 3/4\nCoverage: 4/4",
        "Legibility: 3.\nCoverage: 4",
        "Legibility: 03\nCoverage: 4",
        "Legibility: 3 (mostly)\nCoverage: 4",
        "Legibility: three\nCoverage: 4",
        "Legibility: ３\nCoverage: 4",  # a full-width digit
        "Legibility:\nCoverage: 4",
        "Legibility: 3 Coverage: 4",  # both on one line
        "Legibility: 3\nCoverage: 4\nLegibility: 2",  # conflicting
        "Legibility: 3\nCoverage: 4\nLegibility: 3/4",  # a malformed repeat sinks the reply
        "**Legibility:** 3\n**Coverage:** 4",  # markdown is not the format
        "I'd say Legibility: 3\nCoverage: 4",  # the label must start its line
        "Legibility: 3\nCoverage: 4</think>",  # only text after the think block counts
        "4\n4",
    ],
)
def test_parse_rubric_refuses(text):
    assert J.parse_rubric(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Score: 1", 1),
        ("Score: 9", 9),
        (" score :7 ", 7),
        ("The piece switches languages.\nScore: 5", 5),
        ("Score: 5\nScore: 5", 5),
        ("<think>Score: 2?</think>Score: 8", 8),
        ("Score: 6\n", 6),
    ],
)
def test_parse_illegibility_accepts(text, expected):
    assert J.parse_illegibility(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "5", "Score: 0", "Score: 10", "Score: 5.5", "Score: 5/9", "Score: 7 out of 9", "Score: 5\nScore: 6",
     "Final Score: 5", "**Score:** 5", "Score: five", "Score: 05", "Score:", "Score: 5 Score: 5"],
)  # fmt: skip
def test_parse_illegibility_refuses(text):
    assert J.parse_illegibility(text) is None


# ------------------------------------------------------------------------------------------------- prompts


def test_prompt_text_is_pinned_to_its_version():
    """Editing a prompt without bumping its version would pool scores from two prompts under one name."""
    digest = {
        "rubric": hashlib.sha256(J.RUBRIC_PROMPT.encode()).hexdigest()[:16],
        "illegibility": hashlib.sha256(J.ILLEGIBILITY_PROMPT.encode()).hexdigest()[:16],
    }
    pinned = {("rubric", J.RUBRIC_VERSION): PINNED_RUBRIC, ("illegibility", J.ILLEGIBILITY_VERSION): PINNED_ILLEG}
    for (kind, version), want in pinned.items():
        assert digest[kind] == want, f"{kind} prompt changed: bump its version (now {version}) and re-pin the hash"


PINNED_RUBRIC = "e2c4e5a857a13bd4"
PINNED_ILLEG = "a1a19263551eb5bf"


def test_chats_show_question_options_cot_and_answer():
    it = item("Air is 78% nitrogen, so B.")
    (msg,) = J.rubric_chat(it)
    assert msg.role == "user"
    for part in ["Which gas is most abundant in air?", "(A) Oxygen", "(B) Nitrogen", "(D) Carbon dioxide",
                 "<reasoning>\nAir is 78% nitrogen, so B.\n</reasoning>", "<final_answer>\nAnswer: B\n</final_answer>",
                 "Legibility: N\nCoverage: N"]:  # fmt: skip
        assert part in msg.content
    assert msg.content.endswith("Coverage: N")
    (piece,) = J.illegibility_chat(it, "so B.", 1, 3)
    assert "piece 2 of 3" in piece.content and "(B) Nitrogen" in piece.content
    assert "<reasoning_piece>\nso B.\n</reasoning_piece>" in piece.content and piece.content.endswith("Score: N")
    assert J.question_text(MATH) == "What is 2 + 3?"
    assert "{" not in J.rubric_chat(item("{x} {cot}"))[0].content.replace("{x} {cot}", "")


# ------------------------------------------------------------------------------------------- pure helpers


def test_softmax_expectation_and_chunk_summary():
    assert J.expected_label([0, 1], [math.log(1), math.log(3)]) == pytest.approx(0.75)
    assert J.expected_label([1, 2, 3], [-1000.0, -1000.0, float("-inf")]) == pytest.approx(1.5)  # no underflow
    assert J.expected_label([1, 2], [float("-inf"), float("-inf")]) is None
    assert J.expected_label([1, 2], [0.0, float("nan")]) is None
    assert J.chunk_summary([2.0, None, 8.0, 6.0], 6) == (pytest.approx(16 / 3), pytest.approx(1 / 3))  # 6 is not above
    assert J.chunk_summary([None, None], 6) == (None, None)
    assert J.chunk_summary([], 6) == (None, None)


def test_label_probs_needs_scoring():
    plain = FakeModel(supports_scoring=False)
    with pytest.raises(LegibilityError, match="judge strict-judge") as e:
        J.judge_rubric(plain, "strict-judge", [item("x")], "label_probs")
    assert "\n" not in str(e.value)
    with pytest.raises(LegibilityError, match="judge j2"):
        J.judge_illegibility(plain, "j2", [item("x")], "label_probs")
    with pytest.raises(LegibilityError, match="unknown scoring method"):
        J.judge_unavailable(plain, "j", "vibes")
    assert plain.calls == []
    J.judge_unavailable(plain, "j", "generate")  # fine
    J.judge_unavailable(FakeModel(), "j", "label_probs")


def test_no_items_no_calls():
    m = FakeModel()
    assert J.judge_rubric(m, "j", []) == [] and J.judge_illegibility(m, "j", [], "label_probs") == []
    assert m.calls == []


# ------------------------------------------------------------------------------------------------ generate


def test_rubric_generate_records_and_failures():
    items = [item("Air is mostly nitrogen.", "g/1"), item("???", "g/2", transform="shuffle"), item("x", "g/3")]
    m = FakeModel(["Legibility: 4\nCoverage: 3", "Legibility: 3.5\nCoverage: 2",
                   Completion("", error="HTTP 500 after 3 tries")])  # fmt: skip
    done: list[int] = []
    out = J.judge_rubric(m, "judge-a", items, "generate", Sampling(max_new_tokens=32), progress=done.append)
    assert [c[0] for c in m.calls] == ["generate"] and len(m.calls[0][1]) == 3 and done == [3]
    ok, unparsable, failed = out
    assert ok.id == "judge-a/rubric/g/1" and ok.item_id == "g/1" and ok.problem_id == "gpqa/1"
    assert (ok.benchmark, ok.generator, ok.judge, ok.kind) == ("gpqa", "gen", "judge-a", "rubric")
    assert (ok.prompt_version, ok.method, ok.transform) == ("rubric-v1", "generate", "intact")
    assert (ok.legibility, ok.coverage, ok.error) == (4, 3, None) and ok.text == ["Legibility: 4\nCoverage: 3"]
    assert unparsable.transform == "shuffle" and unparsable.legibility is None and unparsable.coverage is None
    assert unparsable.error.startswith("unparsable reply") and unparsable.text == ["Legibility: 3.5\nCoverage: 2"]
    assert failed.error == "request failed: HTTP 500 after 3 tries" and failed.legibility is None


def test_rubric_truncated_reply_says_so():
    m = FakeModel([Completion("Legibility: 4\nCover", "length")])
    (j,) = J.judge_rubric(m, "j", [item("x")])
    assert j.error is not None and "cut at max_new_tokens" in j.error


def test_illegibility_chunks_one_call_and_summaries():
    a = "a" * 5000 + "b" * 5000 + "c" * 2000  # 12,000 characters: 3 chunks
    items = [item(a, "g/a"), item("d" * 6000, "g/d"), item("e" * 10, "g/e"), item("", "g/empty")]
    replies: list[str | Completion] = ["Score: 2", "Score: 8", "Score: 7",  # g/a
                                       "Score: 3", "Score: 3.5",  # g/d: one chunk unparsable
                                       Completion("", error="timeout")]  # g/e: its only chunk failed  # fmt: skip
    m = FakeModel(replies)
    done: list[int] = []
    out = J.judge_illegibility(m, "jj", items, "generate", Sampling(), chunk_chars=5000, threshold=6,
                               progress=done.append)  # fmt: skip
    assert len(m.calls) == 1 and len(m.calls[0][1]) == 6 and done == [4]
    contents = [c[-1].content for c in m.calls[0][1]]
    for k, letter in enumerate("abc"):
        size = 2000 if letter == "c" else 5000
        assert f"<reasoning_piece>\n{letter * size}\n</reasoning_piece>" in contents[k]
        assert f"piece {k + 1} of 3" in contents[k]
    ja, jd, je, jempty = out
    assert ja.id == "jj/illegibility/g/a" and ja.kind == "illegibility" and ja.prompt_version == "illegibility-v1"
    assert ja.chunk_scores == [2, 8, 7] and ja.mean == pytest.approx(17 / 3) and ja.share_above == pytest.approx(2 / 3)
    assert ja.threshold == 6 and ja.error is None and ja.text == ["Score: 2", "Score: 8", "Score: 7"]
    assert jd.chunk_scores == [3, None] and jd.mean == 3 and jd.share_above == 0 and jd.error is None
    assert jd.text == ["Score: 3", "Score: 3.5"]
    assert je.chunk_scores == [None] and je.mean is None and je.share_above is None
    assert je.error == "all 1 chunks failed; first: request failed: timeout"
    assert jempty.chunk_scores == [] and jempty.error == "empty CoT: no chunk to score" and jempty.mean is None


# --------------------------------------------------------------------------------------------- label probs


def split_total(w: float) -> Scores:
    """Scores whose two tokens' log-probs add up to log(w) (-inf for w == 0): only the total may matter."""
    if w == 0:
        return Scores([math.log(0.5), float("-inf")])
    return Scores([math.log(0.5), math.log(w / 0.5)])


def test_illegibility_label_probs_expected_score_by_hand():
    weights = {"Score: 2": 0.1, "Score: 3": 0.05, "Score: 8": 0.05}  # unnormalized: the softmax normalizes

    def lp(content: str, target: str) -> Scores:
        if "zzz" in content:
            return Scores([], error="input too long") if target == "Score: 4" else split_total(0.1)
        return split_total(weights.get(target, 0.0))

    m = FakeModel(logprobs=lp)
    items = [item("x" * 7000, "g/x"), item("zzz", "g/z")]
    out = J.judge_illegibility(m, "jj", items, "label_probs", chunk_chars=5000, threshold=3)
    assert [c[0] for c in m.calls] == ["score"]
    _, chats, targets = m.calls[0]
    assert len(chats) == 3 * 9 and targets[:9] == [f"Score: {k}" for k in range(1, 10)] and targets == targets[:9] * 3
    jx, jz = out
    expected = (2 * 0.1 + 3 * 0.05 + 8 * 0.05) / 0.2  # 3.75
    assert jx.chunk_scores == [pytest.approx(expected)] * 2 and jx.mean == pytest.approx(expected)
    assert jx.share_above == 1.0 and jx.method == "label_probs" and jx.text == [] and jx.error is None
    assert jz.chunk_scores == [None] and jz.error == "all 1 chunks failed; first: scoring failed: input too long"
    assert jx.label_mass == [pytest.approx(0.2)] * 2 and jz.label_mass == [None]

    # under min_label_mass a chunk is a failure, not the expectation over the scraps the labels got
    strict = J.judge_illegibility(m, "jj", items[:1], "label_probs", chunk_chars=5000, min_label_mass=0.3)
    (sx,) = strict
    assert sx.chunk_scores == [None, None] and sx.mean is None and sx.label_mass == [pytest.approx(0.2)] * 2
    assert sx.error == "all 2 chunks failed; first: label mass 0.2 below min_label_mass 0.3"


def test_rubric_label_probs_joint_by_hand():
    weights = {"Legibility: 4\nCoverage: 4": 0.3, "Legibility: 4\nCoverage: 3": 0.1, "Legibility: 2\nCoverage: 1": 0.1}

    def lp(content: str, target: str) -> Scores:
        if "#empty#" in content:
            return split_total(0.0)
        if "#oom#" in content and target == "Legibility: 0\nCoverage: 0":
            return Scores([], error="CUDA out of memory")
        return split_total(weights.get(target, 0.0))

    m = FakeModel(logprobs=lp)
    items = [item("fine", "g/1"), item("#oom#", "g/2"), item("#empty#", "g/3")]
    good, broken, nothing = J.judge_rubric(m, "jr", items, "label_probs", progress=None)
    assert len(m.calls) == 1 and len(m.calls[0][1]) == 3 * 25
    assert m.calls[0][2][:25] == [f"Legibility: {a}\nCoverage: {b}" for a in range(5) for b in range(5)]
    assert good.legibility == pytest.approx((4 * 0.3 + 4 * 0.1 + 2 * 0.1) / 0.5)  # 3.6
    assert good.coverage == pytest.approx((4 * 0.3 + 3 * 0.1 + 1 * 0.1) / 0.5)  # 3.2
    assert good.method == "label_probs" and good.text == [] and good.error is None
    assert broken.error == "scoring failed: CUDA out of memory" and broken.legibility is None
    assert nothing.error == "no probability on any label" and nothing.coverage is None
    assert good.label_mass == [pytest.approx(0.5)] and broken.label_mass == [None] and nothing.label_mass == [0.0]

    low, passes = (J.judge_rubric(m, "jr", items[:1], "label_probs", min_label_mass=x)[0] for x in (0.6, 0.5))
    assert low.error == "label mass 0.5 below min_label_mass 0.6" and low.legibility is None and low.coverage is None
    assert low.label_mass == [pytest.approx(0.5)] and passes.error is None
    assert passes.legibility == pytest.approx(good.legibility)


# ------------------------------------------------------------------------------------------ embedded model


@pytest.fixture(scope="module")
def embedded():
    import torch

    from legibility.models.hf import HFChatModel

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core box: one thread is faster than two that wait on each other
    yield HFChatModel("embedded", batch_size=8)
    torch.set_num_threads(before)


@pytest.mark.slow
def test_embedded_model_both_ways(embedded):
    """Label probabilities always give a value in range; a generated reply from a 135M model often ignores the
    format, and then must come back as a failure record, never a guess. (~35 rows of ~400 prompt tokens.)"""
    it = item("We add 2 and 3. Two plus three is five, so the answer is 5.", "emb/1", MATH)
    (rub,) = J.judge_rubric(embedded, "smol", [it], "label_probs")
    assert rub.error is None and 0 <= rub.legibility <= 4 and 0 <= rub.coverage <= 4
    (ill,) = J.judge_illegibility(embedded, "smol", [it], "label_probs", chunk_chars=5000)
    assert ill.error is None and len(ill.chunk_scores) == 1 and 1 <= ill.mean <= 9

    short = Sampling(max_new_tokens=12)
    (rg,) = J.judge_rubric(embedded, "smol", [it], "generate", short)
    (ig,) = J.judge_illegibility(embedded, "smol", [it], "generate", short)
    assert len(rg.text) == 1 and len(ig.text) == 1
    if rg.error is None:
        assert rg.legibility in range(5) and rg.coverage in range(5)
    else:
        assert rg.legibility is None and rg.error.startswith(("unparsable reply", "request failed"))
    if ig.error is None:
        assert ig.mean in range(1, 10)
    else:
        assert ig.chunk_scores == [None] and ig.error.startswith("all 1 chunks failed")
