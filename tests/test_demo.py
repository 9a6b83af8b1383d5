"""`make demo` end to end (shrunk to one training step), so the README's main command cannot rot; and the demo
deletes only a run folder it made itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from legibility.demo import MARKER, run
from legibility.errors import LegibilityError

ROOT = Path(__file__).resolve().parents[1]
NO_DATA = "data.benchmarks=[{name: math, path: nope.jsonl}]"


@pytest.mark.slow
def test_demo_runs_every_stage(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    sets = [f"run_dir={run_dir}", "train.max_steps=1", "train.trl.save_steps=1", "train.trl.eval_steps=1",
            "pairs.max_length=512", "train.max_length=512", "train.max_eval_pairs=2"]  # fmt: skip
    args = [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "legibility.demo", "configs/demo.yaml", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("problems.jsonl", "traces.jsonl", "pairs/train.jsonl", "pairs/together_train.jsonl",
                 "pairs/stats.json", "train/metrics.jsonl", "train/adapter/adapter_config.json", MARKER):  # fmt: skip
        assert (run_dir / name).is_file(), name
    stats = json.loads((run_dir / "pairs/stats.json").read_text())
    assert set(stats["by_transform"]) >= {"sentence_shuffle", "number_substitution", "donor_splice_50"}
    assert stats["tokens"]["tokenizer"] == "embedded"
    summary = json.loads((run_dir / "train/summary.json").read_text())
    assert summary["data"]["train"]["dropped_too_long"] == 0  # the pairs stage made every pair fit
    assert summary["initial_eval"]["eval_pairs"] == summary["final_eval"]["eval_pairs"] == 2
    assert "step 0: the base model's own preference" in r.stdout and "step 1: after training" in r.stdout
    assert "pref acc" in r.stdout
    # the console gets one short line a log and the tables; the metric dicts go to metrics.jsonl
    assert "eval  step 0/1: loss" in r.stdout and "train step 1/1: loss" in r.stdout
    assert not re.search(r"\{'\w+", r.stdout), "a raw dict reached the console"
    assert "LoRA parameters" in r.stdout and "demo finished" in r.stdout


def test_demo_never_deletes_a_folder_it_did_not_make(tmp_path: Path) -> None:
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "checkpoint-100").mkdir()
    with pytest.raises(LegibilityError, match=rf"mine: exists and was not made by the demo \(no {MARKER} file\)"):
        run("configs/demo.yaml", [f"run_dir={run_dir}", NO_DATA])
    assert (run_dir / "checkpoint-100").is_dir()
    (run_dir / MARKER).write_text("")  # a folder the demo made is replaced (then it fails, on the missing data)
    with pytest.raises(LegibilityError, match=r"nope\.jsonl"):
        run("configs/demo.yaml", [f"run_dir={run_dir}", NO_DATA])
    assert not (run_dir / "checkpoint-100").exists() and (run_dir / MARKER).is_file()
