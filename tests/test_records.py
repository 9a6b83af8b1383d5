"""Records and JSONL I/O: round trips, file:line:field errors, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from legibility.errors import LegibilityError
from legibility.records import Problem, Trace, read_jsonl, write_jsonl
from legibility.responses import completion, split_think


def _problem(i: int) -> Problem:
    return Problem(id=f"math/{i}", benchmark="math", question=f"What is {i}+1?", answer=str(i + 1), source="t")


def test_round_trip(tmp_path: Path) -> None:
    problems = [_problem(i) for i in range(3)]
    path = write_jsonl(tmp_path / "sub" / "p.jsonl", problems)
    assert read_jsonl(path, Problem) == problems
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left


def test_errors_name_file_line_field(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    lines = [_problem(0).model_dump_json(), '{"id": "x", "benchmark": "nope"}', "{broken"]
    path.write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(LegibilityError, match=r"p\.jsonl:2: Problem\.benchmark: "):
        read_jsonl(path, Problem)
    path.write_text(lines[0] + "\n\n" + lines[2] + "\n")
    with pytest.raises(LegibilityError, match=r"p\.jsonl:3: not valid JSON"):
        read_jsonl(path, Problem)
    with pytest.raises(LegibilityError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl", Trace)


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [_problem(0)])
    before = path.read_text()

    def broken():
        yield _problem(1)
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(path, broken())
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.jsonl"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>\nsteps\n</think>\n\nThe answer is 4.", ("steps", "The answer is 4.", True)),
        ("steps only, template opened the tag\n</think>\nB", ("steps only, template opened the tag", "B", True)),
        ("<think>cut off mid", ("cut off mid", "", False)),
    ],
)
def test_split_think(text: str, expected: tuple[str, str, bool]) -> None:
    assert tuple(split_think(text)) == expected


def test_completion_round_trips_through_split() -> None:
    assert tuple(split_think(completion("a. b.", "C"))) == ("a. b.", "C", True)
