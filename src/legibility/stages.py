"""Config-driven stage wrappers: each reads the previous stage's file from the run folder and writes its own.

Thin on purpose: the work is in benchmarks/traces/pairs/train, which notebooks call directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from legibility import benchmarks
from legibility.config import ExperimentConfig
from legibility.errors import LegibilityError
from legibility.records import Problem, Trace, read_jsonl, write_jsonl


def problems_stage(cfg: ExperimentConfig) -> list[Problem]:
    """Load every benchmark source into `{run_dir}/problems.jsonl`."""
    problems: list[Problem] = []
    for src in cfg.data.benchmarks:
        options: dict[str, Any] = {"seed": src.seed}
        if src.name == "math":
            options["levels"] = src.levels
        if src.name == "bbh" and src.subtasks is not None:
            options["subtasks"] = src.subtasks
        problems += benchmarks.load(src.name, src.path, **options)
    write_jsonl(Path(cfg.run_dir) / "problems.jsonl", problems)
    return problems


def traces_stage(cfg: ExperimentConfig, problems: list[Problem] | None = None) -> list[Trace]:
    """Import, join and re-grade every trace source into `{run_dir}/traces.jsonl`."""
    from legibility.traces import import_traces

    if problems is None:
        problems = read_jsonl(Path(cfg.run_dir) / "problems.jsonl", Problem)
    traces: list[Trace] = []
    for src in cfg.data.traces:
        bench = src.benchmark
        pool = [p for p in problems if bench is None or p.benchmark == bench]
        if not pool:
            raise LegibilityError(f"data.traces: {src.path}: no problems loaded for benchmark {bench!r}")
        traces += import_traces(
            src.path,
            pool,
            generator=src.generator,
            benchmark=bench,
            progress=True,
            allow_unmatched=True,
            **src.fields,
        )
    write_jsonl(Path(cfg.run_dir) / "traces.jsonl", traces)
    return traces


def pairs_stage(cfg: ExperimentConfig, traces: list[Trace] | None = None) -> dict[str, Any]:
    """Build, split and export pairs into `{run_dir}/pairs/` (train/val for TRL and Together, stats.json,
    split.json); returns the stats written beside them.

    split.json also lists the problems of `{run_dir}/problems.jsonl` that have no usable trace (a problem's side
    depends on its id alone, so evaluation can use every held-out one); stats.json's provenance records the traces
    file and its hash when the traces were read from it."""
    from legibility import pairs as P

    run = Path(cfg.run_dir)
    inputs: list[Path] = []
    if traces is None:
        traces = read_jsonl(run / "traces.jsonl", Trace)
        inputs.append(run / "traces.jsonl")
    problems = read_jsonl(run / "problems.jsonl", Problem) if (run / "problems.jsonl").is_file() else []
    _, stats = P.build_and_write(traces, cfg.pairs, run / "pairs", inputs=inputs, problems=problems, progress=True)
    return stats
