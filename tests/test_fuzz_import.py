"""Property tests for trace import: any file (random JSON lines, mixed record shapes, broken JSON, bad bytes) either
imports or fails with a `LegibilityError` naming the file (and its line, or its array index), never another
exception or a traceback. `HYPOTHESIS_PROFILE=long` runs 5000 examples per property.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from legibility.errors import LegibilityError
from legibility.records import Problem, Trace
from legibility.traces import import_traces

PROBLEMS = [
    Problem(id="math/t1", benchmark="math", question="What is 1+1?", answer="2", source="t"),
    Problem(id="gpqa/rec1", benchmark="gpqa", question="Which gas is noble?", choices=["N2", "Ar", "O2", "H2"],
            answer="B", source="t"),
    Problem(id="bbh/t/0", benchmark="bbh", subtask="t", question="not ( True ) is", answer="False", source="t"),
]  # fmt: skip

texts = st.one_of(
    st.sampled_from(["What is 1+1?", "Which gas is noble?", "not ( True ) is", "", "<think>x</think>\\boxed{2}",
                     "<think>argon</think>Answer: B", "Answer: False", "</think>", "2", "(B)", "math/t1", "gpqa/rec1"]),
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
records = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), st.one_of(texts, json_values), max_size=7),
    chat,
    chat.map(lambda c: {"custom_id": "math/t1", "response": {"body": c}}),
    json_values,
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


def _import(content: str | bytes, **kw: object) -> None:
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
            return
        except UnicodeEncodeError:
            return  # lone surrogates cannot be written as UTF-8: not a file anyone can have
        event(f"imported {min(len(traces), 3)}{'+' if len(traces) > 2 else ''} traces")
        assert all(isinstance(t, Trace) for t in traces)
        for t in traces:
            assert isinstance(t.meta.get("fields"), dict)
            assert t.correct_strict is None or isinstance(t.correct_strict, bool)
            assert not (t.correct_strict and not t.correct)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(content=contents, unmatched=st.booleans(), order=st.booleans())
def test_import_with_problems_never_crashes(content: str, unmatched: bool, order: bool) -> None:
    _import(content, problems=PROBLEMS, generator="g", allow_unmatched=unmatched, assume_choice_order=order)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(content=contents, benchmark=st.sampled_from(["math", "bbh", "gpqa"]), generator=st.sampled_from([None, "g"]))
def test_self_contained_import_never_crashes(content: str, benchmark: str, generator: str | None) -> None:
    _import(content, problems=None, benchmark=benchmark, generator=generator)


@given(content=st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(content: bytes) -> None:
    _import(content, problems=PROBLEMS, generator="g", allow_unmatched=True)
