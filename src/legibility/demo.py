"""`make demo`: every stage on the shipped sample data with the embedded model, in a few minutes on a CPU.

problems -> traces (imported, re-graded) -> pairs (nine transforms, split, TRL + Together files) -> DPO + LoRA
training -> the adapter loaded back with `PeftModel.from_pretrained`. Writes everything under runs/demo/.

The demo starts from scratch each time, so it deletes its run folder first, but only a folder it made itself
(marked with a `.legibility-demo` file): any other existing folder is refused, never deleted.

    python -m legibility.demo [CONFIG] [--set dotted.key=value ...]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from legibility.config import load_config
from legibility.diffview import render_pair
from legibility.errors import LegibilityError
from legibility.pairs import read_pairs
from legibility.stages import pairs_stage, problems_stage, traces_stage
from legibility.tables import print_eval_table, print_pair_stats, print_trace_stats

console = Console()
MARKER = ".legibility-demo"


def _args(argv: list[str]) -> tuple[str, list[str]]:
    config, sets = "configs/demo.yaml", []
    it = iter(argv)
    for a in it:
        if a == "--set":
            sets.append(next(it, ""))
        else:
            config = a
    return config, sets


def _fresh_run_dir(run_dir: Path) -> None:
    """Empty `run_dir` so the demo shows every stage, deleting only a folder the demo made (its marker file)."""
    if run_dir.exists():
        if not run_dir.is_dir():
            raise LegibilityError(f"{run_dir}: exists and is not a folder; set another run_dir (--set run_dir=...)")
        if any(run_dir.iterdir()):
            if not (run_dir / MARKER).is_file():
                raise LegibilityError(
                    f"{run_dir}: exists and was not made by the demo (no {MARKER} file); the demo deletes its run "
                    "folder to start from scratch, so it only replaces its own: move it, or set another run_dir "
                    "(--set run_dir=...)"
                )
            shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / MARKER).write_text("made by python -m legibility.demo, which deletes this folder on its next run\n")


def run(config: str = "configs/demo.yaml", overrides: list[str] | None = None) -> Path:
    cfg = load_config(config, overrides or [])
    run_dir = Path(cfg.run_dir)
    _fresh_run_dir(run_dir)
    t0 = time.perf_counter()

    console.print(Rule("1. problems"))
    problems = problems_stage(cfg)
    console.print(f"{len(problems)} problems -> {run_dir / 'problems.jsonl'}")

    console.print(Rule("2. traces: imported, joined to their problems, re-graded"))
    traces = traces_stage(cfg, problems)
    print_trace_stats(traces, console)

    console.print(Rule("3. pairs: nine transforms, split by problem, TRL + Together exports"))
    stats = pairs_stage(cfg, traces)
    print_pair_stats(stats, console)
    train_pairs = read_pairs(run_dir / "pairs" / "train.jsonl")
    example = next(p for p in train_pairs if p.transform == "number_substitution")
    console.print(render_pair(example, train_pairs.index(example)))

    console.print(Rule("4. DPO + LoRA training (reference recipe, shrunk for a CPU)"))
    from legibility.train import train_from_config

    out = train_from_config(cfg, config_path=config)
    adapter = out / "adapter"
    summary = json.loads((out / "summary.json").read_text())
    step = summary["global_step"]
    console.print(f"{step} steps, train loss {summary['train_metrics']['train_loss']:.4f}")
    if summary.get("initial_eval"):
        print_eval_table(summary["initial_eval"], console, "step 0: the base model's own preference")
    if summary.get("final_eval"):
        print_eval_table(summary["final_eval"], console, f"step {step}: after training")

    console.print(Rule("5. the adapter loads with PeftModel.from_pretrained"))
    from peft import PeftModel

    from legibility.models import load_model

    model = PeftModel.from_pretrained(load_model(cfg.model), str(adapter))
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    console.print(
        f"{adapter}: {lora:,} LoRA parameters on {', '.join(sorted(model.peft_config['default'].target_modules))}"
    )
    console.print(f"demo finished in {time.perf_counter() - t0:.0f} s; everything is under {run_dir}/")
    return run_dir


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Library deprecation chatter (transformers 5 renamed gradient checkpointing) is not for demo users.
    warnings.filterwarnings("ignore", category=FutureWarning)
    import datasets

    datasets.disable_progress_bars()
    try:
        run(*_args(sys.argv[1:]))
    except LegibilityError as e:
        Console(stderr=True).print(f"error: {e}", markup=False, highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
