"""Property tests for trace import: any file (random JSON lines, mixed record shapes, broken JSON, bad bytes) either
imports or fails with a `LegibilityError` naming the file (and its line, or its array index), never another
exception or a traceback. `HYPOTHESIS_PROFILE=long` runs 5000 examples per property.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import strategies as st
from strategies import exercised_share

from legibility.errors import LegibilityError
from legibility.records import Problem, Trace, dumps
from legibility.traces import import_traces

PROBLEMS = [
    Problem(id="math/t1", benchmark="math", question="What is 1+1?", answer="2", source="t"),
    Problem(id="gpqa/rec1", benchmark="gpqa", question="Which gas is noble?", choices=["N2", "Ar", "O2", "H2"],
            answer="B", source="t"),
    Problem(id="bbh/t/0", benchmark="bbh", subtask="t", question="not ( True ) is", answer="False", source="t"),
]  # fmt: skip

texts = st.one_of(
    st.sampled_from(["What is 1+1?", "Which gas is noble?", "not ( True ) is", "", "<think>x</think>\\boxed{2}",
                     "<think>argon</think>Answer: B", "Answer: False", "</think>", "2", "(B)", "math/t1", "gpqa/rec1",
                     "\ud800", "a\udfffb"]),  # lone surrogates: JSON escapes them, UTF-8 cannot hold them
    st.text(max_size=40),
)  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
KEYS = ["problem", "question", "prompt", "input", "full_response", "response", "output", "reasoning",
        "reasoning_content", "message_thinking", "answer", "answer_text", "message_content", "content", "gold",
        "ground_truth", "target", "solution", "label", "id", "item_id", "custom_id", "model", "model_name",
        "generator", "choices", "messages", "request", "finish_reason", "temperature"]  # fmt: skip


def _message() -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {}, optional={"content": json_values | texts, "reasoning_content": json_values | texts, "role": texts}
    )


chat = st.fixed_dictionaries(
    {"choices": st.lists(st.fixed_dictionaries({"message": st.one_of(_message(), json_values)},
                                               optional={"finish_reason": json_values}), min_size=1, max_size=2)},
    optional={"model": json_values, "messages": st.lists(st.one_of(_message(), json_values), max_size=3)},
)  # fmt: skip
ANSWERS = ["2", "\\boxed{2}", "Answer: B", "(B)", "False", "Yes", ""]


def good_records(text: st.SearchStrategy[str], self_contained: bool = False) -> st.SearchStrategy[dict]:
    """Well-formed records with fuzzed content, in three shapes the importer reads (question + full response;
    separate reasoning and answer fields; a chat completion with its request's messages), each on a question of
    PROBLEMS. `self_contained`: each also carries its gold and its model, as a file imported without problems
    must. Without such records almost no generated file imports, and "what imports is a valid trace" holds
    vacuously."""
    question = st.sampled_from([p.question for p in PROBLEMS])
    # mapped, not filtered: a filter that rejects often makes Hypothesis drop the example, so good files would
    # be rare among the examples that run
    cot = st.tuples(st.sampled_from(["We add.", "Argon is inert", "so"]), text).map(
        lambda t: " ".join(t).replace("</think>", "")
    )
    final = st.one_of(st.sampled_from(ANSWERS), text).map(lambda t: t.replace("</think>", ""))
    full = st.tuples(cot, final).map(lambda t: f"<think>{t[0]}</think>{t[1]}")
    choices = st.tuples(cot, final).map(
        lambda t: [{"message": {"reasoning_content": t[0], "content": t[1]}, "finish_reason": "stop"}]
    )
    extra = {"gold": st.sampled_from(["2", "False", "\\frac{1}{2}"]), "model": st.sampled_from(["m", "r1"])}
    required, optional = (extra, {}) if self_contained else ({}, extra)
    return st.one_of(
        st.fixed_dictionaries({"problem": question, "response": full, **required}, optional=optional),
        st.fixed_dictionaries(
            {"question": question, "reasoning": cot, "answer_text": final, **required}, optional=optional
        ),
        st.fixed_dictionaries(
            {"choices": choices, "messages": question.map(lambda q: [{"role": "user", "content": q}]), **required},
            optional=optional,
        ),
    )


def good_files(self_contained: bool = False) -> st.SearchStrategy[str]:
    """JSONL files of one or two good records (text without lone surrogates: every one should import)."""
    return st.lists(good_records(st.text(max_size=40), self_contained).map(json.dumps), min_size=1, max_size=2).map(
        "\n".join
    )


records = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), st.one_of(texts, json_values), max_size=7),
    chat,
    chat.map(lambda c: {"custom_id": "math/t1", "response": {"body": c}}),
    json_values,
    good_records(texts),
)
lines = st.one_of(
    records.map(json.dumps),
    st.text(max_size=60),  # broken JSON, or none at all
    records.map(lambda r: json.dumps(r)[: max(1, len(json.dumps(r)) // 2)]),  # cut mid-record
    st.just(""),
)
contents = st.one_of(
    st.lists(lines, max_size=8).map("\n".join),
    st.lists(records, max_size=5).map(json.dumps),  # a JSON array
    records.map(lambda r: json.dumps(r, indent=2)),  # one pretty-printed object
)
WHERE = re.compile(r"^(?P<file>.+?)(?::(?P<line>\d+)|#(?P<index>\d+))?: ")


def _import(content: str | bytes, **kw: object) -> bool:
    """Import one file; True when it gave at least one trace. Only the project's one-line `LegibilityError`
    naming the file may escape as a refusal: any other exception fails the test."""
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "traces.jsonl"
        f.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        try:
            traces = import_traces(f, **kw)  # type: ignore[arg-type]
        except LegibilityError as e:
            msg = str(e)
            m = WHERE.match(msg)
            assert m and m.group("file") == str(f), msg  # names the file, then its line or index where there is one
            assert "\n" not in msg, msg  # the CLI prints it as one line
            event("LegibilityError: " + re.sub(r"[^a-z ]", "", msg[m.end() :].split(":")[0])[:30])
            return False
        event(f"imported {min(len(traces), 3)}{'+' if len(traces) > 2 else ''} traces")
        assert all(isinstance(t, Trace) for t in traces)
        for t in traces:
            assert isinstance(t.meta.get("fields"), dict)
            assert t.correct_strict is None or isinstance(t.correct_strict, bool)
            assert not (t.correct_strict and not t.correct)
            dumps(t).encode("utf-8")  # every imported trace can be written to traces.jsonl
        return bool(traces)


# Fuzzed files (`contents`) are mostly refused, as they should be. So each example also imports a good file
# (`good_files`), which should import but for a multiple-choice question joined by its text without
# `assume_choice_order` (a refusal by design) or the gpqa benchmark without problems, and each test asserts that
# at least half the good files imported (seen: 0.7 to 0.8 in both); an importer that refuses every file gives
# 0. (A good file in both, rather than one file or the other: Hypothesis picks the first branch of a one_of far
# more often than the second.)
SETTINGS = {"suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}


def test_import_with_problems_never_crashes() -> None:
    def with_problems(fuzzed: str, good: str, unmatched: bool, order: bool) -> bool:
        kw = {"problems": PROBLEMS, "generator": "g", "allow_unmatched": unmatched, "assume_choice_order": order}
        _import(fuzzed, **kw)
        return _import(good, **kw)

    share = exercised_share(with_problems, contents, good_files(), st.booleans(), st.booleans(), **SETTINGS)
    assert share >= 0.5


def test_self_contained_import_never_crashes() -> None:
    def self_contained(fuzzed: str, good: str, benchmark: str, generator: str | None) -> bool:
        _import(fuzzed, problems=None, benchmark=benchmark, generator=generator)
        return _import(good, problems=None, benchmark=benchmark, generator=generator)

    benchmarks, generators = st.sampled_from(["math", "bbh", "gpqa"]), st.sampled_from([None, "g"])
    share = exercised_share(self_contained, contents, good_files(True), benchmarks, generators, **SETTINGS)
    assert share >= 0.4


@given(content=st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(content: bytes) -> None:
    _import(content, problems=PROBLEMS, generator="g", allow_unmatched=True)


def test_lone_surrogate_escape_is_a_one_line_error_and_a_pair_is_text(tmp_path: Path) -> None:
    """JSON can spell a lone UTF-16 surrogate ("\\ud800") that no UTF-8 file holds: it used to escape as a
    UnicodeEncodeError (hashing a self-contained question, or writing traces.jsonl). A proper pair is an emoji."""
    ok = {"question": "What is 1+1? \U0001f914", "response": "<think>add \U0001f914</think>\\boxed{2}", "gold": "2"}
    bad = {**ok, "question": "What is 1+1? \ud800"}
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps(ok) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")  # escaped: ASCII on disk
    for kw in ({"problems": None, "benchmark": "math"}, {"problems": PROBLEMS, "allow_unmatched": True}):
        with pytest.raises(LegibilityError, match=rf"^{re.escape(str(f))}:2: .*lone surrogate \\ud800\)$"):
            import_traces(f, generator="g", **kw)  # type: ignore[arg-type]
    f.write_text(json.dumps(ok) + "\n", encoding="utf-8")
    (t,) = import_traces(f, None, benchmark="math", generator="g")
    assert t.reasoning == "add \U0001f914" and t.correct and dumps(t).encode("utf-8")
