"""`make demo` end to end (shrunk to one training step), so the README's main command cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_runs_every_stage(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    sets = [f"run_dir={run_dir}", "train.max_steps=1", "train.save_steps=1", "train.eval_steps=1",
            "train.max_length=256", "train.max_eval_pairs=2"]  # fmt: skip
    args = [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "legibility.demo", "configs/demo.yaml", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("problems.jsonl", "traces.jsonl", "pairs/train.jsonl", "pairs/together_train.jsonl",
                 "pairs/stats.json", "train/metrics.jsonl", "train/adapter/adapter_config.json"):  # fmt: skip
        assert (run_dir / name).is_file(), name
    stats = json.loads((run_dir / "pairs/stats.json").read_text())
    assert set(stats["by_transform"]) >= {"sentence_shuffle", "number_substitution", "donor_splice_50"}
    assert stats["tokens"]["tokenizer"] == "embedded"
    assert "LoRA parameters" in r.stdout and "demo finished" in r.stdout
