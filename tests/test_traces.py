"""Trace import on the real sample traces shipped in data/samples/traces: shapes, joins, re-grading, completeness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import MATH500, RASBT, TRACES

from legibility import benchmarks
from legibility.errors import LegibilityError
from legibility.grading import grade
from legibility.records import Problem
from legibility.traces import import_traces, trace_stats


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
