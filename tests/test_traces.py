"""Trace import on the real sample traces shipped in data/samples/traces: shapes, joins, re-grading, completeness."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import MARKYX, MATH500, RASBT, TRACES

from legibility import benchmarks
from legibility.errors import LegibilityError
from legibility.grading import grade
from legibility.records import Problem
from legibility.traces import grade_report, import_traces, trace_stats


@pytest.fixture(scope="module")
def math500() -> list[Problem]:
    return benchmarks.load("math", MATH500, levels=None)


def test_markyx_traces_join_and_regrade(math500: list[Problem]) -> None:
    files = sorted(TRACES.glob("*.jsonl"))
    traces = import_traces(files, math500)
    assert len(traces) == 70
    by_id = {p.id: p for p in math500}
    raw = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    for t, r in zip(traces, raw, strict=True):
        problem = by_id[t.problem_id]
        assert problem.question == r["problem"]  # joined by exact question text
        assert problem.answer == r["ground_truth"]
        assert t.generator == r["model_name"]
        assert t.prompt[-1].content.startswith(problem.question)
        # Re-graded by us, independently of the file's own verdict.
        assert t.correct == grade(problem, r["full_response"]).correct
    # The file's is_correct is known to be wrong: our grades must disagree with it somewhere.
    assert any(t.correct != r["is_correct"] for t, r in zip(traces, raw, strict=True))
    # R1-Distill-Qwen-7B item 9 never closed its think block: kept, marked incomplete, not correct.
    cut = [t for t, r in zip(traces, raw, strict=True) if "</think>" not in r["full_response"]]
    assert cut and all(not t.complete and not t.correct for t in cut)
    assert all(t.complete for t, r in zip(traces, raw, strict=True) if "</think>" in r["full_response"])
    # Ids are unique and stable: generator/problem/sample.
    assert len({t.id for t in traces}) == len(traces)
    assert import_traces(files, math500) == traces


def test_markyx_first_item_regraded(math500: list[Problem]) -> None:
    # The file marks R1's first answer "(3, pi/2)" wrong (it extracted "2"); it is right.
    traces = import_traces(TRACES / "math500_deepseek_r1.jsonl", math500)
    first = traces[0]
    assert first.problem_id == "math/test/precalculus/807.json"
    assert first.correct and first.complete


def test_rasbt_self_contained() -> None:
    traces = []
    for name, gen in (
        ("sample_openrouter_outputs.json", "deepseek-r1"),
        ("sample_ollama_outputs.json", "r1-8b"),
    ):
        traces += import_traces(RASBT / name, None, benchmark="math", generator=gen)
    assert len(traces) == 10
    raw = [
        r
        for n in ("sample_openrouter_outputs.json", "sample_ollama_outputs.json")
        for r in json.loads((RASBT / n).read_text())
    ]
    for t, r in zip(traces, raw, strict=True):
        assert t.reasoning == r["message_thinking"].strip()
        assert t.answer_text == r["message_content"].strip()
        problem = Problem(
            id=t.problem_id, benchmark="math", question=r["problem"], answer=r["gtruth_answer"], source="x"
        )
        assert t.correct == grade(problem, r["message_content"]).correct
    assert sum(t.correct for t in traces) >= 5  # R1's answers on easy train problems are mostly right
    rows = trace_stats(traces)
    assert {(r["generator"], r["total"]) for r in rows} == {("deepseek-r1", 5), ("r1-8b", 5)}


def _problem() -> Problem:
    return Problem(id="math/t1", benchmark="math", question="What is 1+1?", answer="2", source="t")


def test_chat_completion_objects(tmp_path: Path) -> None:
    rows = [
        {  # reasoning in its own field, as DeepSeek's and vLLM's servers return it
            "id": "chatcmpl-1",
            "model": "deepseek-reasoner",
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "reasoning_content": "1 plus 1 is 2.",
                        "content": "The answer is $\\boxed{2}$.",
                    },
                    "finish_reason": "stop",
                }
            ],
            "messages": [{"role": "user", "content": "What is 1+1?"}],
        },
        {  # Batch API result line, think tags inline, cut by the token limit
            "custom_id": "t1",
            "response": {
                "body": {
                    "model": "qwq",
                    "choices": [{"message": {"content": "<think>Let me add"}, "finish_reason": "length"}],
                }
            },
        },
    ]
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    a, b = import_traces(f, [_problem()])
    assert (a.generator, a.reasoning, a.correct, a.complete) == (
        "deepseek-reasoner",
        "1 plus 1 is 2.",
        True,
        True,
    )
    assert (b.generator, b.reasoning, b.correct, b.complete) == ("qwq", "Let me add", False, False)


def test_field_mapping_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text(
        json.dumps({"q": "What is 1+1?", "out": {"cot": "one and one", "final": "\\boxed{2}"}})
        + "\n"
        + json.dumps({"q": "What is 1+1?", "out": {"final": "\\boxed{3}"}})
        + "\n"
    )
    with pytest.raises(LegibilityError, match=r"t\.jsonl:2: field out\.cot"):
        import_traces(f, [_problem()], generator="g", question="q", reasoning="out.cot", answer="out.final")
    f.write_text(f.read_text().splitlines()[0] + "\n")
    (t,) = import_traces(f, [_problem()], generator="g", question="q", reasoning="out.cot", answer="out.final")
    assert t.correct and t.reasoning == "one and one"
    with pytest.raises(LegibilityError, match="unknown field mapping"):
        import_traces(f, [_problem()], nonsense="x")
    other = Problem(id="math/t2", benchmark="math", question="What is 2+2?", answer="4", source="t")
    with pytest.raises(LegibilityError, match=r"t\.jsonl:1: matched no problem"):
        import_traces(f, [other], generator="g", question="q", reasoning="out.cot", answer="out.final")
    assert import_traces(f, [other], generator="g", allow_unmatched=True, question="q", reasoning="out.cot") == []
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "What is 1+1?", "full_response": "<think>x</think> 2"}\n{oops\n')
    with pytest.raises(LegibilityError, match=r"bad\.jsonl:2: not valid JSON"):
        import_traces(bad, [_problem()], generator="g")


def _mc() -> Problem:
    return Problem(id="gpqa/rec1", benchmark="gpqa", question="Which gas is noble?", choices=["N2", "Ar", "O2", "H2"],
                   answer="B", answer_text="Ar", source="t")  # fmt: skip


def test_mc_traces_join_by_rendered_prompt_and_check_choice_order(tmp_path: Path) -> None:
    problem = _mc()
    f = tmp_path / "t.jsonl"
    row = {"prompt": benchmarks.prompt(problem), "response": "<think>argon</think>\n\nAnswer: B", "gold": "(B)"}
    f.write_text(json.dumps(row) + "\n")
    (t,) = import_traces(f, [problem], generator="g")
    assert t.problem_id == "gpqa/rec1" and t.correct and t.extracted == "B"
    f.write_text(json.dumps({**row, "gold": "C"}) + "\n")
    with pytest.raises(LegibilityError, match=r"t\.jsonl:1: field gold: letter C .* another choice order"):
        import_traces(f, [problem], generator="g")


# ------------------------------------------------------------------- strict and flexible verdicts (#7)


def test_import_records_strict_and_flexible_verdicts(math500: list[Problem]) -> None:
    traces = import_traces(MARKYX, math500)
    by_id = {p.id: p for p in math500}
    raw = [json.loads(line) for f in MARKYX for line in f.read_text().splitlines()]
    for t, r in zip(traces, raw, strict=True):
        g = grade(by_id[t.problem_id], r["full_response"])
        assert t.correct == g.correct
        assert t.correct_strict == (g.strict if t.answer_text else None)
        assert t.meta["fields"]["response"] == "full_response" and t.meta["fields"]["gold"] == "ground_truth"
    report = grade_report(traces)
    assert report == {"traces": 70, "graded": 69, "correct": 60, "correct_strict": 56, "flexible_only": 4,
                      "undecided": 0, "errors": 0, "no_answer": 1}  # fmt: skip
    # The four right only by a fallback are all R1's unboxed answers: a "correct" filter on the flexible verdict
    # keeps them, on the strict one drops them. Both counts are there to compare.
    loose = [t for t in traces if t.correct and not t.correct_strict]
    assert {t.generator for t in loose} == {"deepseek-reasoner"}
    assert {t.meta["grade_rule"] for t in loose} == {"closing-paragraph"}


# ------------------------------------------------------------------------------- import hygiene (#7)


def test_gold_like_answer_field_is_never_read_as_the_model_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A MATH dump {"problem", "reasoning", "answer"} holds the gold in "answer": reading it as the model's answer
    would mark every trace correct."""
    f = tmp_path / "dump.jsonl"
    f.write_text(json.dumps({"problem": "What is 1+1?", "reasoning": "1 and 1 make 3, surely.", "answer": "2"}) + "\n")
    with caplog.at_level(logging.INFO, logger="legibility.traces"):
        (t,) = import_traces(f, [_problem()], generator="g")
    assert (t.answer_text, t.extracted, t.complete, t.correct, t.correct_strict) == ("", None, False, False, None)
    assert t.meta["fields"] == {"question": "problem", "reasoning": "reasoning", "gold": "answer"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'answer' looks like the gold answer" in w and "--field answer=answer" in w for w in warnings)
    # Self-contained, the same field is the gold it is.
    (t,) = import_traces(f, None, benchmark="math", generator="g")
    assert t.problem_id.startswith("math/") and not t.correct and not t.complete
    # Mapped explicitly, it is the model's answer.
    (t,) = import_traces(f, [_problem()], generator="g", answer="answer")
    assert (t.answer_text, t.correct, t.correct_strict, t.meta["fields"]["answer"]) == ("2", True, False, "answer")


@pytest.mark.parametrize("key", ["gold", "solution", "target", "label"])
def test_no_gold_like_key_is_a_model_answer(tmp_path: Path, key: str) -> None:
    f = tmp_path / "dump.jsonl"
    f.write_text(json.dumps({"question": "What is 1+1?", "reasoning": "two", key: "\\boxed{2}"}) + "\n")
    (t,) = import_traces(f, [_problem()], generator="g")
    assert (t.answer_text, t.correct, t.complete) == ("", False, False)


def test_detected_fields_are_logged_once_per_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "t.jsonl"
    row = {"problem": "What is 1+1?", "full_response": "<think>x</think>\\boxed{2}", "model_name": "m"}
    f.write_text("\n".join(json.dumps(row) for _ in range(3)) + "\n")
    with caplog.at_level(logging.INFO, logger="legibility.traces"):
        traces = import_traces(f, [_problem()])
    lines = [r.getMessage() for r in caplog.records if "fields" in r.getMessage()]
    assert lines == [f"{f}: fields question=problem, response=full_response, generator=model_name"]
    assert all(t.meta["fields"] == {"question": "problem", "response": "full_response", "generator": "model_name"}
               for t in traces)  # fmt: skip


def test_mc_joined_by_bare_question_needs_a_stated_choice_order(tmp_path: Path) -> None:
    """GPQA's option order is ours (seeded): a trace joined by its bare question text may have seen another."""
    problem = _mc()
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"question": problem.question, "response": "<think>argon</think>Answer: B"}) + "\n")
    with pytest.raises(LegibilityError, match=r"t\.jsonl:1: joined to gpqa/rec1 by its bare question text.*--choice"):
        import_traces(f, [problem], generator="g")
    (t,) = import_traces(f, [problem], generator="g", assume_choice_order=True)
    assert t.correct
    f.write_text(json.dumps({"id": "gpqa/rec1", "response": "<think>argon</think>Answer: B"}) + "\n")
    (t,) = import_traces(f, [problem], generator="g")  # joined by id: the order is ours
    assert t.correct
    bbh = Problem(id="bbh/t/0", benchmark="bbh", subtask="t", question="Which is first?", choices=["red", "blue"],
                  answer="B", source="t")  # fmt: skip
    f.write_text(json.dumps({"question": "Which is first?", "response": "<think>x</think>Answer: B"}) + "\n")
    (t,) = import_traces(f, [bbh], generator="g")  # BBH's letters are part of its data
    assert t.correct


# ------------------------------------------------------------------------------------ robustness (#10)


def test_grading_error_is_caught_at_the_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import legibility.traces as traces_mod

    real = traces_mod.grade

    def flaky(problem: Problem, response: str, **kw: bool) -> object:
        if "boom" in response:
            raise ValueError("boom")
        return real(problem, response, **kw)

    monkeypatch.setattr(traces_mod, "grade", flaky)
    f = tmp_path / "t.jsonl"
    rows = [{"problem": "What is 1+1?", "full_response": f"<think>x</think>\\boxed{{{a}}}"} for a in ("2", "boom")]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="legibility.traces"):
        ok, bad = import_traces(f, [_problem()], generator="g")
    assert ok.correct and ok.correct_strict
    assert (bad.correct, bad.correct_strict, bad.meta["grade_error"]) == (False, None, "ValueError: boom")
    assert grade_report([ok, bad])["errors"] == 1
    assert any("1 traces could not be graded" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="boom"):
        import_traces(f, [_problem()], generator="g", strict=True)


def test_undecided_grade_is_kept_ungraded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from math_verify.errors import TimeoutException

    import legibility.grading as grading

    def slow(*args: object, **kwargs: object) -> bool:
        raise TimeoutException("Operation timed out!")

    monkeypatch.setattr(grading, "verify", slow)
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"problem": "What is 1+1?", "full_response": "<think>x</think>\\boxed{2}"}) + "\n")
    (t,) = import_traces(f, [_problem()], generator="g")
    assert (t.correct, t.correct_strict, t.meta["undecided"]) == (False, None, "math-verify timeout (comparing)")
    assert grade_report([t])["undecided"] == 1


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ("[1, 2]\n", "t.jsonl#0: expected a JSON object, got int"),
        ("5\n", "t.jsonl:1: expected a JSON object, got int"),
        ('{"problem": "q", "full_response": ["a"]}\n', "t.jsonl:1: field full_response: expected text"),
        ('{"problem": "What is 1+1?", "full_response": "<think>x</think>2"}\n"text"\n', "t.jsonl:2: expected a JSON"),
        ('{"choices": [{"message": "hi"}]}\n', "t.jsonl:1: field choices.0.message"),
        ('{"choices": [{"message": {"content": ["a", "b"]}}]}\n', "t.jsonl:1: field choices.0.message.content"),
        (
            '{"response": {"body": {"choices": [{"message": {"content": "x", "reasoning_content": {"a": 1}}}]}}}\n',
            "t.jsonl:1: field response.body.choices.0.message.reasoning_content",
        ),
        ('{"problem": "q", "reasoning": "r", "answer_text": {"a": 1}}\n', "t.jsonl:1: field answer_text"),
        ('{"problem": "q"}\n{oops\n', "t.jsonl:1: field one of"),
        ('{"problem": "q", "full_response": "x"}\n{oops\n', "t.jsonl:2: not valid JSON"),
        ("[" * 100_000 + "\n", "t.jsonl:1: not valid JSON"),
        ('{"problem": ' + "1" * 5000 + "}\n", "t.jsonl:1: not valid JSON"),
        ('[{"problem": "q", "full_response": "x"}, 5]', "t.jsonl#1: expected a JSON object, got int"),
    ],
)
def test_malformed_lines_name_file_line_and_field(tmp_path: Path, content: str, where: str) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text(content)
    with pytest.raises(LegibilityError) as e:
        import_traces(f, [_problem()], generator="g")
    assert where in str(e.value) and str(e.value).startswith(str(tmp_path))


def test_non_utf8_file_is_a_one_line_error(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_bytes(b'{"problem": "\xff\xfe"}\n')
    with pytest.raises(LegibilityError, match=r"t\.jsonl: not UTF-8 text"):
        import_traces(f, [_problem()], generator="g")


def test_mixed_shapes_in_one_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Full responses, split fields and chat completions in one file: each line read in its own shape, each
    distinct mapping logged once."""
    rows = [
        {"problem": "What is 1+1?", "full_response": "<think>one and one</think>\\boxed{2}"},
        {"problem": "What is 1+1?", "reasoning": "one and one", "answer_text": "Answer: 2"},
        {"messages": [{"role": "user", "content": "What is 1+1?"}],
         "choices": [{"message": {"content": "<think>one and one</think>2"}, "finish_reason": "stop"}]},
        {"problem": "What is 1+1?", "full_response": "<think>one and one</think>\\boxed{3}"},
    ]  # fmt: skip
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with caplog.at_level(logging.INFO, logger="legibility.traces"):
        traces = import_traces(f, [_problem()], generator="g")
    assert [(t.correct, t.correct_strict) for t in traces] == [(True, True), (True, True), (True, False),
                                                               (False, False)]  # fmt: skip
    assert len([r for r in caplog.records if ": fields " in r.getMessage()]) == 3
