"""docs/config.md is generated from the config schema: it must be what the generator gives now, list every field of
every section, and show the reference run's values."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from legibility import config_reference as cr
from legibility.config import TRL_DEFAULTS, ExperimentConfig, PairsConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "config.md"
REFERENCE = ROOT / cr.REFERENCE_CONFIG
REGENERATE = f"regenerate it: {cr.REGENERATE}"


@pytest.fixture(scope="module")
def reference() -> ExperimentConfig:
    return load_config(REFERENCE)


@pytest.fixture(scope="module")
def text(reference) -> str:
    return cr.reference_markdown(reference=reference)


@pytest.fixture(scope="module")
def rows(text) -> dict[str, list[str]]:
    """Field rows by dotted key: [type, default, reference, description], with `\\|` back to `|`."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^\| `([^`]+)` \| (.*) \|$", line)
        if m:
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", m.group(2))]
            if len(cells) == 4:  # a field row (the DPOConfig / LoraConfig tables have fewer columns)
                out[m.group(1)] = cells
    return out


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """Every (dotted key, owning model) of the schema, list items as `key[].field`."""
    out = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        out.append((dotted, model))
        sub, is_list = cr._model_of(field.annotation)
        if sub is not None:
            out += _fields(sub, f"{dotted}[]." if is_list else f"{dotted}.")
    return out


# ------------------------------------------------------------------------------------------------ the file is current


def test_checked_in_doc_is_what_the_generator_gives(text):
    assert DOC.is_file(), REGENERATE
    assert DOC.read_text(encoding="utf-8") == text, REGENERATE
    assert cr.check(DOC, text) is None


def test_generated_text_is_deterministic(reference, text):
    assert cr.reference_markdown(reference=reference) == text


class _PatchedPairs(PairsConfig):
    new_knob: int = Field(default=3, ge=0)
    """A field added without regenerating the doc."""


class _PatchedExperiment(ExperimentConfig):
    pairs: _PatchedPairs = Field(default_factory=_PatchedPairs)


def test_a_new_field_makes_the_check_fail(reference, text):
    patched = _PatchedExperiment.model_validate(reference.model_dump())
    new = cr.reference_markdown(_PatchedExperiment, patched)
    assert new != text
    assert "| `pairs.new_knob` | `int >= 0` | `3` | = | A field added without regenerating the doc. |" in new
    problem = cr.check(DOC, new)
    assert problem is not None and "out of date" in problem and "\n" not in problem


def test_check_exits_1_with_one_line_when_the_file_differs(text, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cr, "reference_markdown", lambda **_: text)
    assert cr.main(["--check", str(DOC)]) == 0
    assert capsys.readouterr().err == ""
    edited = tmp_path / "config.md"
    edited.write_text(text.replace("| `train.beta` | `float > 0` | `0.3` |", "| `train.beta` | `float > 0` | `0.1` |"))
    assert edited.read_text() != text
    assert cr.main(["--check", str(edited)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of date" in err and cr.REGENERATE in err
    assert cr.main(["--check", str(tmp_path / "missing.md")]) == 1
    assert "missing" in capsys.readouterr().err
    assert cr.main([]) == 0
    assert capsys.readouterr().out == text


def test_module_check_runs_as_a_command(tmp_path):
    stale = tmp_path / "config.md"
    stale.write_text(DOC.read_text(encoding="utf-8") + "\nhand edit\n", encoding="utf-8")
    r = subprocess.run(
        [sys.executable, "-m", "legibility.config_reference", "--check", str(stale)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1, r.stderr
    # the message is one line (asserted in-process above); a library may warn on stderr before it
    assert r.stdout == "" and "out of date" in r.stderr.strip().splitlines()[-1]


# ------------------------------------------------------------------------------------------------ the content


def test_every_field_of_every_section_has_a_row(rows, text):
    fields = _fields(ExperimentConfig)
    assert len(fields) > 100
    missing = [k for k, _ in fields if k not in rows]
    assert not missing, missing
    assert len(rows) == len(fields)  # and nothing else
    for key, model in fields:
        field = model.model_fields[key.rsplit(".", 1)[-1]]
        assert rows[key][3] == " ".join((field.description or "").split()), key
    # fields without a docstring are listed too, with an empty description
    assert rows["pairs.seed"][3] == "" and rows["name"][3] == ""


def test_every_section_has_a_heading(text):
    sections = [k for k, _ in _fields(ExperimentConfig) if cr._model_of(_field(k).annotation)[0] is not None]
    assert len(sections) == 18
    for key in sections:
        assert re.search(rf"^##+ `{re.escape(key)}(\[\])?` \(\w+\)$", text, re.M), key
    for key in ("train.trl", "train.lora"):
        assert f"### `{key}` (any " in text


def _field(dotted: str):
    model: type[BaseModel] = ExperimentConfig
    parts = dotted.replace("[]", "").split(".")
    for part in parts[:-1]:
        model = cr._model_of(model.model_fields[part].annotation)[0]
    return model.model_fields[parts[-1]]


def test_tables_are_well_formed(text):
    width = None
    for line in text.splitlines():
        if not line.startswith("|"):
            width = None
            continue
        cells = len(re.findall(r"(?<!\\)\|", line))
        width = width or cells
        assert cells == width, line
    anchors = set(re.findall(r"\]\(#([\w-]+)\)", text))
    headings = {cr._anchor(h) for h in re.findall(r"^#+ (.*)$", text, re.M)}
    assert anchors and anchors <= headings


def test_types_and_defaults_are_readable(rows):
    assert rows["pairs.pairs_per_trace"][:2] == ["`int >= 1`", "`9`"]
    assert rows["pairs.grading"][:2] == ['`"strict" | "flexible"`', "`strict`"]
    assert rows["generate.benchmarks"][:2] == ['`list["gpqa" | "math" | "bbh"] | None`', "`null`"]
    assert rows["pairs.val_fraction"][0] == "`0 <= float < 1`"
    assert rows["train.max_eval_pairs"][0] == "`int >= 1 | None`"
    assert rows["together.suffix"][0] == "`str (max length 40) | None`"
    assert rows["name"][1] == "*required*"
    assert rows["run_dir"][1] == '`"runs/{name}"`'
    # list-of-model defaults, compactly: only the keys an item sets
    assert rows["generate.generators"][1].startswith(
        '`[{name: base}, {name: adapter, adapter: "{run_dir}/train/adapter"}]`'
    )
    assert rows["judges.judges"][1].startswith("`[{name: judge, model: embedded}]`")
    # a nested section's own defaults (a SamplingConfig made by the field's default factory)
    assert rows["readers.answer_sampling.max_new_tokens"][1] == "`32`"
    assert rows["generate.sampling.max_new_tokens"][1] == "`4096`"


def test_reference_values(rows, reference):
    # non-default in the reference run: shown
    assert rows["model"][2] == "`Qwen/Qwen3-8B`"
    assert rows["pairs.tokenizer"][2] == "`Qwen/Qwen3-8B`"
    assert rows["train.chat_template"][2] == "`qwen3_training`"
    assert rows["together.suffix"][2] == "`legibility-dpo`"
    assert rows["together.n_checkpoints"][2] == "`10`"
    assert "save_steps: 0.1" in rows["train.trl"][2]
    assert rows["data.benchmarks[].name"][2] == "`[gpqa, math, bbh]`"
    # the reference recipe is the default: "="
    assert rows["train.beta"][1:3] == ["`0.3`", "="]
    assert rows["together.model"][1:3] == ["`Qwen/Qwen3-8B`", "="]
    assert rows["run_dir"][2] == "="  # runs/{name} with the name filled in is still the default
    # every leaf of every (non-list) section: "=" exactly when it is what leaving the key out gives
    bare = ExperimentConfig(name=reference.name)
    for key, _ in _fields(ExperimentConfig):
        if "[]" in key:
            continue
        value, default = reference, bare
        for part in key.split("."):
            value, default = getattr(value, part), getattr(default, part)
        sub, is_list = cr._model_of(_field(key).annotation)
        if sub is not None and not is_list:  # a section: its own rows below
            assert rows[key][2] == "=" if value == default else rows[key][2].startswith("differs"), key
        else:
            same = value == default and not _field(key).is_required()
            assert rows[key][2] == ("=" if same else f"`{cr._yaml(value)}`"), key


def test_trl_and_lora_passthrough_are_documented(text, reference):
    trl = text.split("### `train.trl`", 1)[1].split("\n## ", 1)[0]
    for key, value in TRL_DEFAULTS.items():
        assert f"| `{key}` | `{cr._yaml(value)}` |" in trl
    assert "every step in metrics.jsonl (TRL: 10)" in trl  # the reason, from config.py's comment
    assert "| `beta` | set by train.beta" in trl  # refused: the recipe owns it
    for key in reference.train.trl_kwargs():
        assert f"| `{key}` |" in trl
    assert "| `target_modules` |" in trl and "`train.lora_target_modules`" in trl
