"""Report section 2 (Training): the learning-rate line says when a run was not trained at the reference's rate."""

from __future__ import annotations

import html
from pathlib import Path

import yaml
from test_results import make_run

from legibility.report import write_report
from legibility.report.training import REFERENCE_LR, learning_rate_note


def _with_lr(run: Path, lr: float) -> Path:
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    cfg["train"]["learning_rate"] = lr
    (run / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return run


def test_reference_rate_is_the_reference_configs() -> None:
    ref = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/qwen3-8b-legibility-dpo.yaml").read_text())
    assert REFERENCE_LR == float(ref["train"]["learning_rate"]) == 5e-6


def test_note_only_when_the_rate_differs() -> None:
    assert learning_rate_note({"train": {"learning_rate": 5e-6}}) is None
    assert learning_rate_note({"train": {"learning_rate": "5.0e-06"}}) is None  # as YAML may hand it back
    assert learning_rate_note({}) is None
    note = learning_rate_note({"train": {"learning_rate": 2e-4}})
    assert note is not None and note.startswith("Learning rate 0.0002, not the reference's 5e-06:")
    assert "does not move the adapter measurably" in note


def test_report_says_the_rate_is_not_the_references(tmp_path: Path) -> None:
    raised = _with_lr(make_run(tmp_path, with_eval=False, name="raised"), 2e-4)
    same = _with_lr(make_run(tmp_path, with_eval=False, name="same"), 5e-6)
    write_report(raised)
    write_report(same)
    for ext in ("md", "html"):
        text, plain = (html.unescape((r / f"report.{ext}").read_text()) for r in (raised, same))
        assert "Learning rate 0.0002, not the reference's 5e-06" in text
        assert "not the reference's" not in plain
