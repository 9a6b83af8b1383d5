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
    """Build, split and export pairs into `{run_dir}/pairs/`; returns the stats written beside them."""
    from legibility import pairs as P

    if traces is None:
        traces = read_jsonl(Path(cfg.run_dir) / "traces.jsonl", Trace)
    pairset = P.build_pairs(traces, cfg.pairs, progress=True)
    tok = None
    if cfg.pairs.tokenizer and cfg.pairs.tokenizer.lower() != "none":
        from legibility.models import load_tokenizer

        tok = load_tokenizer(cfg.pairs.tokenizer)
    stats = P.pair_stats(pairset, cfg.pairs, tok, cfg.pairs.tokenizer, progress=True)
    P.write_pairs(pairset, Path(cfg.run_dir) / "pairs", stats)
    return stats
