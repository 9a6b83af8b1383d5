"""`make demo` (`python -m legibility.demo`, which is `legibility run configs/demo.yaml`) end to end, shrunk to one
training step and a short evaluation, so the README's main command cannot rot: every stage runs, the report is
written, the console gets tables and one short line a log (never a raw dict); a second `make demo` does nothing
and says so."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from legibility.config import TrainConfig, load_config
from legibility.run import STAGES, read_state

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.benchmarks=[{name: math, path: data/samples/math500_sample.jsonl, levels: null}]",
    "pairs.max_length=384", "train.max_length=384", "train.max_steps=1", "train.trl.save_steps=1",
    "train.trl.eval_steps=1", "train.max_eval_pairs=2", "train.per_device_train_batch_size=1",
    "generate.max_problems=1", "generate.sampling.max_new_tokens=16",
    "readers.solve_sampling.max_new_tokens=8", "readers.answer_sampling.max_new_tokens=4",
    "judges.rubric=false", "metrics.fractions=[0.0, 1.0]", "metrics.validity_traces=1", "metrics.n_boot=100",
]  # fmt: skip
"""The 20 sample problems (all traced: one is held out), pairs cut to 384 tokens over the nine transforms, one DPO
step, one held-out problem sampled once by the base model and the adapter, short reader replies, one validity
trace in its corrupted copies; judges score label probabilities, as in the demo."""


def demo(run_dir: Path) -> subprocess.CompletedProcess[str]:
    args = [a for s in [f"run_dir={run_dir}", *TINY] for a in ("--set", s)]
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "legibility.demo", "configs/demo.yaml", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)  # fmt: skip


def test_readme_states_the_demo_configs_training() -> None:
    """The README's demo paragraph quotes configs/demo.yaml's steps, learning rate, batch and pair length."""
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    para = readme.split("### What `make demo` does", 1)[1].split("##", 1)[0]
    cfg = load_config(ROOT / "configs" / "demo.yaml")
    m = re.search(r"(\d+) DPO \+ LoRA steps at learning rate (\S+) with the reference loss \(batch (\d+);", para)
    assert m, para[:600]
    assert int(m[1]) == cfg.train.max_steps and float(m[2]) == cfg.train.learning_rate
    assert int(m[3]) == cfg.train.batch_size
    tokens = re.search(r"pairs of at most (\d+) tokens", para)
    assert tokens and int(tokens[1]) == cfg.pairs.max_length == cfg.train.max_length
    ref = re.search(r"The learning rate is not the reference's ([\d.e-]+):", para)
    assert ref and float(ref[1]) == TrainConfig.model_fields["learning_rate"].default != cfg.train.learning_rate


@pytest.mark.slow
def test_demo_runs_every_stage_then_has_nothing_to_do(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    r = demo(run_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    for stage in STAGES:
        assert f"{stage} (never run)" in out and re.search(rf"│ {stage}\s+│ ran\s+│", out), stage
        assert read_state(run_dir, stage)["status"] == "done", stage  # type: ignore[index]
    for name in ("problems.jsonl", "traces.jsonl", "pairs/train.jsonl", "pairs/val.jsonl", "pairs/together_train.jsonl",
                 "pairs/split.json", "pairs/stats.json", "train/metrics.jsonl", "train/adapter/adapter_config.json",
                 "eval/generations.jsonl", "eval/readings.jsonl", "eval/judgements.jsonl", "eval/taxonomy.jsonl",
                 "eval/summary.json", "report.html", "report.md"):  # fmt: skip
        assert (run_dir / name).is_file(), name

    stats = json.loads((run_dir / "pairs/stats.json").read_text())
    assert set(stats["by_transform"]) >= {"sentence_shuffle", "number_substitution", "sentence_reversal"}
    assert stats["tokens"]["tokenizer"] == "embedded"
    summary = json.loads((run_dir / "train/summary.json").read_text())
    assert summary["global_step"] == 1
    assert summary["data"]["train"]["dropped_too_long"] == 0  # the pairs stage made every pair fit
    assert summary["initial_eval"]["eval_pairs"] == summary["final_eval"]["eval_pairs"] == 2
    gens = {json.loads(x)["generator"] for x in (run_dir / "eval/generations.jsonl").read_text().splitlines()}
    assert gens == {"base", "adapter"}
    evaluation = json.loads((run_dir / "eval/summary.json").read_text())
    assert evaluation["counts"]["readings"] > 0 and evaluation["counts"]["validity_items"] > 1
    assert evaluation["judge_method"] == "label_probs" and evaluation["note"]  # the small-model caveat
    html, md = (run_dir / "report.html").read_text(), (run_dir / "report.md").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and md.startswith("#")

    # the console: tables and one short line a log; the metric dicts go to train/metrics.jsonl
    assert "eval  step 0/1: loss" in out and "train step 1/1: loss" in out and "pref acc" in out
    assert "step 0: the base model's own preference" in out and "step 1: after training" in out
    assert "1 steps, train loss" in out and "report.html and report.md" in out
    assert not re.search(r"\{'\w+", out + r.stderr), "a raw dict reached the console"
    assert "demo finished in" in out and f"report: {run_dir / 'report.html'}" in out

    times = {s: (run_dir / "stages" / f"{s}.json").stat().st_mtime_ns for s in STAGES}
    again = demo(run_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(f"{s}: up to date, skipped" in again.stdout for s in STAGES), again.stdout
    assert f"nothing to do: every stage is up to date in {run_dir}" in again.stdout
    assert {s: (run_dir / "stages" / f"{s}.json").stat().st_mtime_ns for s in STAGES} == times
