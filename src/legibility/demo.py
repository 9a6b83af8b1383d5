"""`make demo`: `legibility run configs/demo.yaml`, every stage on the shipped data with the embedded model.

problems -> traces (imported, re-graded) -> pairs -> DPO + LoRA training -> generation with the base model and the
adapter -> readers and judges -> report, all under runs/demo/ on 2 CPU cores. The runner skips finished stages, so
a second `make demo` does nothing and says so; `legibility run configs/demo.yaml --from pairs` redoes from a stage.

    python -m legibility.demo [CONFIG] [--set dotted.key=value ...]
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

from rich.console import Console

from legibility.config import load_config
from legibility.errors import LegibilityError

console = Console()


def _args(argv: list[str]) -> tuple[str, list[str]]:
    config, sets = "configs/demo.yaml", []
    it = iter(argv)
    for a in it:
        if a == "--set":
            sets.append(next(it, ""))
        else:
            config = a
    return config, sets


def run(config: str = "configs/demo.yaml", overrides: list[str] | None = None) -> Path:
    from legibility.run import run as run_stages

    cfg = load_config(config, overrides or [])
    t0 = time.perf_counter()
    run_stages(cfg, console=console)
    run_dir = Path(cfg.run_dir)
    console.print(f"demo finished in {time.perf_counter() - t0:.0f} s; report: {run_dir / 'report.html'}")
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
