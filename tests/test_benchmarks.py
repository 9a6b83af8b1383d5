"""Benchmark loaders and prompts, on the real shared data and small synthetic inputs.

GPQA text must never reach test output: GPQA assertions compare ids and counts, never question or option text.
"""

from __future__ import annotations

import csv
import json
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
from conftest import BBH, MATH500

from legibility.benchmarks import BENCHMARKS, load, looks_like_hf, messages, prompt
from legibility.benchmarks import bbh as bbh_mod
from legibility.benchmarks.math import parse_level
from legibility.errors import LegibilityError
from legibility.grading import extract_boxed
from legibility.records import Message, Problem

INCORRECT = ("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
# upstream bugs: options split at commas (non-letter targets), and a single truncated option
BROKEN_BBH = {"bbh/movie_recommendation/163", "bbh/ruin_names/99", "bbh/ruin_names/144", "bbh/snarks/88"}


@pytest.fixture
def synthetic(fixtures: Path) -> Path:
    return fixtures / "synthetic_diamond_layout.csv"


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _write_rows(path: Path, header: list[str], rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


# --- GPQA, real file -------------------------------------------------------------------------------------


def test_gpqa_real_all_rows_with_gold_letter(gpqa_csv: Path) -> None:
    problems = load("gpqa", gpqa_csv)
    _, rows = _read_rows(gpqa_csv)
    assert len(problems) == len(rows) == 198
    by_id = {f"gpqa/{r['Record ID'].strip()}": r for r in rows}
    assert len({p.id for p in problems}) == 198
    wrong_gold = [
        p.id
        for p in problems
        if not p.choices
        or len(p.choices) != 4
        or p.answer not in "ABCD"
        or p.choices["ABCD".index(p.answer)] != by_id[p.id]["Correct Answer"].strip()
        or p.answer_text != by_id[p.id]["Correct Answer"].strip()
        or sorted(p.choices) != sorted(by_id[p.id][c].strip() for c in ("Correct Answer", *INCORRECT))
    ]
    assert not wrong_gold
    assert all(p.benchmark == "gpqa" and p.subject and p.source.startswith(f"{gpqa_csv}:") for p in problems)
    assert {p.meta["high_level_domain"] for p in problems} == {"Physics", "Chemistry", "Biology"}
    assert all(p.meta.get("canary") for p in problems)
    assert problems[0].source == f"{gpqa_csv}:2"


def test_gpqa_real_shuffle_deterministic_and_seeded(gpqa_csv: Path) -> None:
    a, b = load("gpqa", gpqa_csv), load("gpqa", gpqa_csv, seed=42)
    assert len(a) == len(b) and all(p == q for p, q in zip(a, b, strict=True))  # no diff: it would print GPQA text
    c = load("gpqa", gpqa_csv, seed=7)
    assert [p.id for p in a] == [p.id for p in c]
    differ = sum(p.choices != q.choices for p, q in zip(a, c, strict=True))
    assert differ > 150  # 23 of 24 orders differ, so about 190 of 198


@pytest.mark.parametrize("seed", [42, 0, 1, 2])
def test_gpqa_real_letter_distribution_not_degenerate(gpqa_csv: Path, seed: int) -> None:
    counts = Counter(p.answer for p in load("gpqa", gpqa_csv, seed=seed))
    assert set(counts) == set("ABCD")
    assert all(0.15 * 198 <= n <= 0.40 * 198 for n in counts.values()), dict(counts)


# --- GPQA, synthetic fixture ------------------------------------------------------------------------------


def test_gpqa_synthetic_layout(synthetic: Path) -> None:
    problems = load("gpqa", synthetic)
    assert len(problems) == 6
    first = problems[0]
    assert first.id == "gpqa/recSynthetic00001"
    assert "\n" in first.question  # a quoted field spanning lines
    assert "It halves" in first.choices and " It halves " not in first.choices  # options stripped
    assert "Ribosome" in problems[1].choices
    assert first.subject == "Physics (general)" and first.meta["high_level_domain"] == "Physics"
    # source = the physical line each row starts on: row 1 spans lines 2-4 (two embedded newlines)
    assert [p.source.rsplit(":", 1)[1] for p in problems[:2]] == ["2", "5"]
    assert all(p.choices[ord(p.answer) - 65] == p.answer_text for p in problems)


def test_gpqa_order_independent_of_other_rows(synthetic: Path, tmp_path: Path) -> None:
    header, rows = _read_rows(synthetic)
    full = {p.id: p.choices for p in load("gpqa", synthetic, seed=3)}
    fewer = _write_rows(tmp_path / "fewer.csv", header, rows[2:][::-1])
    part = {p.id: p.choices for p in load("gpqa", fewer, seed=3)}
    assert len(part) == 4
    assert all(full[k] == v for k, v in part.items())


def test_gpqa_missing_column(synthetic: Path, tmp_path: Path) -> None:
    header, rows = _read_rows(synthetic)
    bad = _write_rows(tmp_path / "nocol.csv", [h for h in header if h != "Correct Answer"], rows)
    with pytest.raises(LegibilityError) as e:
        load("gpqa", bad)
    assert str(bad) in str(e.value) and "'Correct Answer'" in str(e.value)


def test_gpqa_empty_field_names_file_line_field(synthetic: Path, tmp_path: Path) -> None:
    header, rows = _read_rows(synthetic)
    rows[1]["Incorrect Answer 2"] = "   "
    bad = _write_rows(tmp_path / "empty.csv", header, rows)
    with pytest.raises(LegibilityError) as e:
        load("gpqa", bad)
    msg = str(e.value)
    assert f"{bad}:5" in msg and "row 2" in msg and "'Incorrect Answer 2'" in msg


def test_gpqa_duplicate_record_id(synthetic: Path, tmp_path: Path) -> None:
    header, rows = _read_rows(synthetic)
    bad = _write_rows(tmp_path / "dup.csv", header, [*rows, rows[0]])
    with pytest.raises(LegibilityError, match="duplicate Record ID"):
        load("gpqa", bad)


# --- MATH ------------------------------------------------------------------------------------------------


def test_math500_levels() -> None:
    path = MATH500
    raw = json.loads(path.read_text(encoding="utf-8"))
    expected = sum(1 for x in raw if int(x["level"]) >= 3)
    problems = load("math", path)
    assert len(problems) == expected
    assert all(p.level in (3, 4, 5) for p in problems)
    everything = load("math", path, levels=None)
    assert len(everything) == 500 == len({p.id for p in everything})
    assert len(load("math", path, levels=[5])) == sum(1 for x in raw if x["level"] == 5)
    first = everything[0]
    assert first.id == f"math/{raw[0]['unique_id']}" and first.source == f"{path}#0"
    assert first.answer == raw[0]["answer"] and first.meta["solution"] == raw[0]["solution"]
    assert first.subject == raw[0]["subject"] and first.choices is None


def test_math_boxed_extraction_matches_math500() -> None:
    raw = json.loads((MATH500).read_text(encoding="utf-8"))
    mismatched = [x["unique_id"] for x in raw if extract_boxed(x["solution"]) != x["answer"]]
    assert not mismatched


def test_math_original_jsonl_layout(tmp_path: Path) -> None:
    """Original MATH: no `answer`, `type` for subject, "Level N" strings; JSONL here."""
    raw = json.loads((MATH500).read_text(encoding="utf-8"))[:20]
    path = tmp_path / "math.jsonl"
    lines = [
        {
            "problem": x["problem"],
            "solution": x["solution"],
            "type": x["subject"],
            "level": f"Level {x['level']}",
        }
        for x in raw
    ]
    lines[3]["level"] = "Level ?"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    problems = load("math", path, levels=None)
    assert [p.answer for p in problems] == [x["answer"] for x in raw]
    assert [p.id for p in problems[:2]] == ["math/0", "math/1"]
    assert problems[1].source == f"{path}:2"
    assert problems[3].level is None and problems[0].level == raw[0]["level"]
    assert problems[0].subject == raw[0]["subject"]
    assert len(load("math", path, levels="all")) == 20
    assert all(p.level is not None for p in load("math", path))  # unknown level is not in 3-5


def test_math_folder_of_problem_files(tmp_path: Path) -> None:
    (tmp_path / "test" / "algebra").mkdir(parents=True)
    item = {
        "problem": "What is $1+1$?",
        "level": "Level 3",
        "type": "Algebra",
        "solution": "It is $\\boxed{2}$.",
    }
    (tmp_path / "test" / "algebra" / "7.json").write_text(json.dumps(item), encoding="utf-8")
    [p] = load("math", tmp_path)
    assert p.id == "math/test/algebra/7.json" and p.answer == "2" and p.level == 3


def test_math_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"problem": "x", "solution": "no box here", "level": 3}]), encoding="utf-8")
    with pytest.raises(LegibilityError, match=r"bad\.json#0: answer"):
        load("math", path)
    path.write_text(json.dumps([{"solution": "\\boxed{1}", "level": 3}]), encoding="utf-8")
    with pytest.raises(LegibilityError, match=r"bad\.json#0: problem"):
        load("math", path)
    path.write_text("[{", encoding="utf-8")
    with pytest.raises(LegibilityError, match="not valid JSON"):
        load("math", path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{ 2 }", "2"),
        ("\\fbox{x^{2}}", "x^{2}"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("hence $\\boxed 5$.", "5"),
        ("\\boxed{unbalanced", None),
        ("no answer", None),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


def test_parse_level() -> None:
    assert [parse_level(v) for v in (4, "4", "Level 4", "Level ?", None)] == [4, 4, 4, None, None]
    with pytest.raises(LegibilityError):
        parse_level("hard")


# --- BBH -------------------------------------------------------------------------------------------------


def test_bbh_default_subtasks() -> None:
    problems = load("bbh", BBH)
    assert list(dict.fromkeys(p.subtask for p in problems)) == list(bbh_mod.DEFAULT_SUBTASKS)
    assert len(bbh_mod.DEFAULT_SUBTASKS) == 6
    for p in problems:
        assert p.choices and 2 <= len(p.choices) <= 26, p.id
        k = ord(p.answer) - ord("A")
        assert 0 <= k < len(p.choices) and p.answer_text == p.choices[k], p.id
        assert "Options:" not in p.question and p.id == f"bbh/{p.subtask}/{p.source.rsplit('#', 1)[1]}"
        assert p.meta["canary"].startswith("BENCHMARK DATA SHOULD NEVER APPEAR")
    snark = next(p for p in problems if p.id == "bbh/snarks/0")
    assert snark.question == "Which statement is sarcastic?" and len(snark.choices) == 2


def test_bbh_all_tasks() -> None:
    folder = BBH
    problems = load("bbh", folder, subtasks="all")
    files = sorted(folder.glob("*.json"))
    assert len(files) == 27 and {p.subtask for p in problems} == {f.stem for f in files}
    total = sum(len(json.loads(f.read_text(encoding="utf-8"))["examples"]) for f in files)
    ids = {p.id for p in problems}
    assert len(ids) == len(problems) == total - len(BROKEN_BBH) and not ids & BROKEN_BBH
    free = [p for p in problems if p.subtask in ("boolean_expressions", "navigate", "dyck_languages")]
    assert free and all(p.choices is None and p.answer for p in free)
    nav = next(p for p in free if p.subtask == "navigate")
    assert nav.question.endswith("Options:\n- Yes\n- No") and nav.answer in ("Yes", "No")


def test_bbh_single_file_and_subtask_errors() -> None:
    folder = BBH
    one = load("bbh", folder / "web_of_lies.json")
    assert len(one) == 250 and {p.subtask for p in one} == {"web_of_lies"}
    two = load("bbh", folder, subtasks="snarks, hyperbaton")
    assert [p.subtask for p in (two[0], two[-1])] == ["snarks", "hyperbaton"]
    with pytest.raises(LegibilityError) as e:
        load("bbh", folder, subtasks=["snarks", "nope"])
    assert "nope" in str(e.value) and "word_sorting" in str(e.value)


def test_bbh_split_options() -> None:
    q, choices = bbh_mod.split_options("Pick one:\nOptions:\n(A) red\n(B) blue ")
    assert (q, choices) == ("Pick one:", ["red", "blue"])
    assert bbh_mod.split_options("Is it?\nOptions:\n- Yes\n- No")[1] is None
    assert bbh_mod.split_options("Pick:\nOptions:\n(A) x\n(C) y")[1] is None  # letters must run A, B, ...


def test_bbh_bad_target_letter(tmp_path: Path) -> None:
    path = tmp_path / "toy.json"
    path.write_text(json.dumps({"canary": "c", "examples": [{"input": "Q\nOptions:\n(A) a\n(B) b", "target": "(C)"}]}))
    with pytest.raises(LegibilityError, match=r"toy\.json#0: target"):
        load("bbh", path)


# --- load() dispatch, Hugging Face wiring ----------------------------------------------------------------


def test_load_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    assert BENCHMARKS == ("gpqa", "math", "bbh")
    with pytest.raises(LegibilityError, match=r"^unknown benchmark 'x' \(choose from gpqa, math, bbh\)$"):
        load("x", tmp_path)
    missing = tmp_path / "nope.csv"
    with pytest.raises(LegibilityError, match=r"nope\.csv"):
        load("gpqa", missing)
    with pytest.raises(LegibilityError, match="no option levels"):
        load("gpqa", tmp_path, levels=[3])
    assert load("math", tmp_path / "empty.jsonl", seed=1) == []  # seed is accepted (and ignored) everywhere
    with pytest.raises(LegibilityError, match="no option split"):
        load("math", tmp_path, split="test")  # split/config only for Hugging Face names


def test_looks_like_hf() -> None:
    assert looks_like_hf("Idavidrein/gpqa") and looks_like_hf("HuggingFaceH4/MATH-500")
    assert looks_like_hf("lukaemon/bbh")
    assert not looks_like_hf("data/gpqa.csv") and not looks_like_hf("/abs/dir/x") and not looks_like_hf("a/b/c")


@pytest.fixture
def fake_hf(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """A stand-in `datasets` module serving `tables[(name, config)]`; it never touches the network."""
    hf = types.SimpleNamespace(calls=[], tables={})

    def load_dataset(name: str, config: str | None = None, split: str | None = None) -> list[dict]:
        hf.calls.append((name, config, split))
        if (name, config) not in hf.tables:
            raise ConnectionError("Couldn't reach 'huggingface.co' (offline)")
        return hf.tables[(name, config)]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return hf


def test_hf_unavailable_is_a_clear_error(fake_hf: types.SimpleNamespace) -> None:
    with pytest.raises(LegibilityError) as e:
        load("math", "HuggingFaceH4/MATH-500")
    assert "HuggingFaceH4/MATH-500" in str(e.value) and "offline" in str(e.value).lower()


def test_hf_column_mapping(fake_hf: types.SimpleNamespace, synthetic: Path) -> None:
    tables = fake_hf.tables
    _, rows = _read_rows(synthetic)
    tables[("Idavidrein/gpqa", "gpqa_diamond")] = rows
    tables[("HuggingFaceH4/MATH-500", None)] = [
        {
            "problem": "p",
            "solution": "\\boxed{3}",
            "answer": "3",
            "subject": "Algebra",
            "level": 4,
            "unique_id": "u",
        }
    ]
    tables[("lukaemon/bbh", "snarks")] = [{"input": "Which?\nOptions:\n(A) x\n(B) y", "target": "(B)"}]
    gp = load("gpqa", "Idavidrein/gpqa")
    assert [p.choices for p in gp] == [p.choices for p in load("gpqa", synthetic)]
    assert gp[0].source == "hf:Idavidrein/gpqa/gpqa_diamond:train#0"
    [m] = load("math", "hf:HuggingFaceH4/MATH-500", levels=None)
    assert (m.id, m.answer, m.level, m.source) == ("math/u", "3", 4, "hf:HuggingFaceH4/MATH-500:test#0")
    [b] = load("bbh", "lukaemon/bbh", subtasks=["snarks"])
    assert (b.id, b.answer, b.choices) == ("bbh/snarks/0", "B", ["x", "y"])
    assert ("lukaemon/bbh", "snarks", "test") in fake_hf.calls


# --- prompts, determinism --------------------------------------------------------------------------------


def _problem(**kw: object) -> Problem:
    base = {"id": "t/0", "benchmark": "bbh", "question": "Q?", "answer": "A", "source": "s#0"}
    return Problem.model_validate({**base, **kw})


def test_prompts() -> None:
    math_p = prompt(_problem(benchmark="math", question="1+1?", answer="2"))
    assert math_p == "1+1?\n\nAfter your reasoning, state your final answer inside \\boxed{} notation."
    mc = prompt(_problem(benchmark="gpqa", choices=["w", "x", "y", "z"]))
    assert mc == (
        "Q?\n\n(A) w\n(B) x\n(C) y\n(D) z\n\nAfter your reasoning, give your final answer as a single letter "
        'in the form "Answer: X" where X is one of A, B, C, D.'
    )
    assert prompt(_problem(choices=["p", "q"])).endswith("one of A, B.")
    free = prompt(_problem(answer="True"))
    assert free == 'Q?\n\nAfter your reasoning, state your final answer after "Answer:".'
    assert messages(_problem()) == [Message(role="user", content=prompt(_problem()))]
    sys_msgs = messages(_problem(), system="Be brief.")
    assert [m.role for m in sys_msgs] == ["system", "user"] and sys_msgs[0].content == "Be brief."


def test_same_files_same_problems(gpqa_csv: Path) -> None:
    for name, path in [
        ("gpqa", gpqa_csv),
        ("math", MATH500),
        ("bbh", BBH),
    ]:
        first, second = load(name, path), load(name, path)
        assert len(first) == len(second) and all(p == q for p, q in zip(first, second, strict=True)), name
