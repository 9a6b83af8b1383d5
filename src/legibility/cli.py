"""The `legibility` command: a thin layer over the Python API (every command is a few calls into a module)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from legibility.errors import LegibilityError
from legibility.tables import print_pair_stats, print_trace_stats

app = typer.Typer(
    help="Chain-of-thought legibility: benchmarks, traces, transforms, DPO pairs, training.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
traces_app = typer.Typer(help="Import, re-grade and count reasoning traces.", no_args_is_help=True)
pairs_app = typer.Typer(help="Build and inspect DPO preference pairs.", no_args_is_help=True)
benchmarks_app = typer.Typer(help="Load benchmark problems.", no_args_is_help=True)
app.add_typer(traces_app, name="traces")
app.add_typer(pairs_app, name="pairs")
app.add_typer(benchmarks_app, name="benchmarks")

console = Console()
err = Console(stderr=True, soft_wrap=True)  # errors stay one line, however narrow the terminal
_state = {"debug": False}

Levels = Annotated[str | None, typer.Option(help="MATH levels 1-5, comma-separated (e.g. 3,4,5), or 'all'.")]
Subtasks = Annotated[
    str | None,
    typer.Option(help="BBH subtasks, comma-separated, or 'all'; default the six multiple-choice ones."),
]
Sets = Annotated[list[str] | None, typer.Option("--set", help="Override a config field: dotted.key=value.")]


@app.callback()
def _main(debug: Annotated[bool, typer.Option(help="Show Python tracebacks on errors.")] = False) -> None:
    import logging

    from rich.logging import RichHandler

    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, show_time=False)],
    )


def parse_levels(levels: str | None) -> list[int] | None:
    """`--levels`: "3,4,5" -> [3, 4, 5]; "all" or nothing -> None (every level)."""
    if levels is None or levels.strip().lower() in ("", "all"):
        return None
    try:
        out = [int(x) for x in levels.split(",")]
    except ValueError:
        raise LegibilityError(f"--levels {levels!r}: expected levels 1-5, comma-separated (3,4,5), or 'all'") from None
    if not all(1 <= x <= 5 for x in out):
        raise LegibilityError(f"--levels {levels!r}: MATH levels are 1 to 5")
    return out


def _load_problems(benchmark: str, path: str, levels: str | None, subtasks: str | None, seed: int) -> list[Any]:
    """Problems from a benchmark file, or from a problems JSONL written by `benchmarks load`."""
    from legibility import benchmarks
    from legibility.records import Problem, read_jsonl

    p = Path(path)
    if p.suffix == ".jsonl" and p.is_file():
        with p.open(encoding="utf-8") as f:
            first = f.readline()
        try:
            is_records = {"id", "benchmark", "question"} <= set(json.loads(first))
        except (json.JSONDecodeError, TypeError):
            is_records = False
        if is_records:
            return [q for q in read_jsonl(p, Problem) if q.benchmark == benchmark]
    options: dict[str, Any] = {"seed": seed}
    if benchmark == "math":
        options["levels"] = parse_levels(levels)
    if benchmark == "bbh" and subtasks:
        options["subtasks"] = "all" if subtasks == "all" else subtasks.split(",")
    return benchmarks.load(benchmark, path, **options)


@benchmarks_app.command("load")
def benchmarks_load(
    name: Annotated[str, typer.Argument(help="gpqa, math or bbh.")],
    path: Annotated[str, typer.Argument(help="Benchmark file or folder (or a dataset name when online).")],
    out: Annotated[Path, typer.Option(help="Write the problems here as JSONL.")],
    levels: Levels = "3,4,5",
    subtasks: Subtasks = None,
    seed: Annotated[int, typer.Option(help="Seed for the choice order of multiple-choice items.")] = 42,
) -> None:
    """Load a benchmark into Problem records (JSONL)."""
    from legibility.records import write_jsonl

    problems = _load_problems(name, path, levels, subtasks, seed)
    write_jsonl(out, problems)
    console.print(f"{len(problems)} {name} problems -> {out}")


@traces_app.command("import")
def traces_import(
    paths: Annotated[list[Path], typer.Argument(help="Trace files: JSONL, JSON arrays or chat-completion objects.")],
    out: Annotated[Path, typer.Option(help="Write the graded traces here (JSONL).")],
    benchmark: Annotated[str, typer.Option(help="gpqa, math or bbh.")],
    problems: Annotated[
        str | None, typer.Option(help="Benchmark file the traces answer; omit for self-contained files.")
    ] = None,
    generator: Annotated[str | None, typer.Option(help="Generator name (else read from each record).")] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field",
            help="Field mapping role=name (roles: response, reasoning, answer, question, problem_id, "
            "generator, gold; dotted names reach nested objects).",
        ),
    ] = None,
    levels: Levels = None,
    subtasks: Subtasks = "all",
    seed: Annotated[int, typer.Option(help="Seed used for the benchmark's choice order.")] = 42,
    allow_unmatched: Annotated[bool, typer.Option(help="Skip (and count) traces matching no problem.")] = False,
    choice_order: Annotated[
        str | None,
        typer.Option(
            help="'ours': the traces saw our option order (same --seed). Needed for multiple-choice traces "
            "joined by bare question text (not by id or our rendered prompt)."
        ),
    ] = None,
    strict: Annotated[bool, typer.Option(help="Stop at the first grading error (default: keep it ungraded).")] = False,
) -> None:
    """Import traces produced elsewhere: join each to its problem and re-grade it against gold (strict and
    flexible verdicts)."""
    from legibility.records import write_jsonl
    from legibility.traces import grade_report, import_traces

    if choice_order not in (None, "ours"):
        raise LegibilityError(f"--choice-order {choice_order!r}: the only order that can be stated is 'ours'")

    mapping = {}
    for item in field or []:
        role, sep, name = item.partition("=")
        if not sep:
            raise LegibilityError(f"--field {item!r}: expected role=field_name")
        mapping[role] = name
    probs = _load_problems(benchmark, problems, levels, subtasks, seed) if problems else None
    traces = import_traces(
        paths,
        probs,
        generator=generator,
        benchmark=benchmark,
        allow_unmatched=allow_unmatched,
        assume_choice_order=choice_order == "ours",
        strict=strict,
        progress=True,
        **mapping,
    )
    write_jsonl(out, traces)
    console.print(f"{len(traces)} traces -> {out}")
    print_trace_stats(traces, console)
    r = grade_report(traces)
    console.print(
        f"correct: {r['correct']} flexible, {r['correct_strict']} strict ({r['flexible_only']} only by a fallback "
        f"answer form); {r['no_answer']} without an answer, {r['undecided']} undecided, {r['errors']} grading errors",
        markup=False,
    )


@traces_app.command("stats")
def traces_stats(file: Annotated[Path, typer.Argument(help="A traces JSONL file.")]) -> None:
    """Counts per generator x benchmark: total, complete, correct, usable (complete and correct)."""
    from legibility.records import Trace, read_jsonl

    print_trace_stats(read_jsonl(file, Trace), console)


@app.command("grade")
def grade_cmd(
    benchmark: Annotated[str, typer.Option(help="gpqa, math or bbh.")],
    problems: Annotated[str, typer.Option(help="Benchmark file holding the problem.")],
    id: Annotated[str, typer.Option("--id", help="Problem id (with or without the benchmark prefix).")],
    response: Annotated[str, typer.Option(help="The model's response text ('-' reads stdin).")],
    seed: Annotated[int, typer.Option(help="Seed used for the choice order.")] = 42,
) -> None:
    """Show how one response is graded: extracted answer, gold, verdict and why."""
    from legibility.grading import grade

    text = sys.stdin.read() if response == "-" else response
    probs = _load_problems(benchmark, problems, None, "all", seed)
    match = [p for p in probs if p.id in (id, f"{benchmark}/{id}")]
    if not match:
        raise LegibilityError(f"{problems}: no problem with id {id!r} (ids look like {probs[0].id!r})")
    g = grade(match[0], text)
    console.print(f"problem   {match[0].id}", markup=False)
    console.print(f"gold      {match[0].answer}", markup=False)
    console.print(f"extracted {g.answer}" + (f"  (by {g.rule})" if g.rule else ""), markup=False)
    console.print(f"method    {g.method}", markup=False)
    console.print(f"correct   {g.correct}" + (f"  ({g.reason})" if g.reason else ""), markup=False)
    console.print(f"strict    {g.strict}" + ("" if g.strict_answer is not None else "  (no explicit final answer)"),
                  markup=False)  # fmt: skip
    if g.undecided:
        console.print("undecided True  (not graded: see the reason)", markup=False)


@pairs_app.command("build")
def pairs_build(
    traces: Annotated[Path, typer.Argument(help="Graded traces (JSONL from `traces import`).")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    config: Annotated[Path | None, typer.Option(help="Experiment config; its `pairs` section is used.")] = None,
    direction: Annotated[str | None, typer.Option(help="legible (original preferred) or illegible.")] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(help="Tokenizer for lengths and long pairs: local path or 'embedded'; 'none' skips both."),
    ] = None,
    max_length: Annotated[int | None, typer.Option(help="Token limit of prompt+completion (see long_pairs).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for transforms and the split.")] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Stop at the first trace whose transforms raise (default: count it).")
    ] = False,
    set_: Sets = None,
) -> None:
    """Corrupt each usable trace with the nine transforms; split by problem; export TRL + Together files."""
    from legibility import pairs as P
    from legibility.config import PairsConfig
    from legibility.records import Trace, read_jsonl

    cfg = PairsConfig()
    if config is not None:
        from legibility.config import load_config

        cfg = load_config(config, set_ or []).pairs
    elif set_:
        cfg = _apply_sets(cfg, set_, prefix="pairs.")
    explicit = {"direction": direction, "tokenizer": tokenizer, "max_length": max_length, "seed": seed}
    explicit |= {"strict": True} if strict else {}
    cfg = cfg.model_copy(update={k: v for k, v in explicit.items() if v is not None})
    cfg = PairsConfig.model_validate(cfg.model_dump())
    pairset, stats = P.build_and_write(read_jsonl(traces, Trace), cfg, out, inputs=[traces], progress=True)
    print_pair_stats(stats, console)
    console.print(f"{len(pairset.train)} train + {len(pairset.val)} val pairs -> {out}/")


def _apply_sets(cfg: Any, sets: list[str], prefix: str) -> Any:
    import yaml

    data = cfg.model_dump()
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith(prefix) or key[len(prefix) :] not in data:
            raise LegibilityError(f"--set {item!r}: expected {prefix}<field>=value (fields: {', '.join(data)})")
        data[key[len(prefix) :]] = yaml.safe_load(value)
    return type(cfg).model_validate(data)


@pairs_app.command("show")
def pairs_show(
    file: Annotated[Path, typer.Argument(help="A pair file (train.jsonl / val.jsonl).")],
    index: Annotated[int, typer.Option(help="Which pair (0-based).")] = 0,
) -> None:
    """Print one pair with the transform's effect visible (a sentence-level diff)."""
    from legibility.diffview import render_pair
    from legibility.pairs import read_pairs

    pairs = read_pairs(file)
    if not 0 <= index < len(pairs):
        raise LegibilityError(f"{file}: --index {index} out of range (0..{len(pairs) - 1})")
    console.print(render_pair(pairs[index], index))


@app.command("train")
def train_cmd(
    config: Annotated[Path, typer.Argument(help="Experiment config (YAML).")],
    out: Annotated[Path | None, typer.Option(help="Run folder (default: {run_dir}/train).")] = None,
    resume: Annotated[bool, typer.Option(help="Resume from the last checkpoint in the run folder.")] = False,
    backend: Annotated[str, typer.Option(help="local (TRL) or together (Together AI fine-tuning).")] = "local",
    dry_run: Annotated[bool, typer.Option(help="together: print the exact request, send nothing.")] = False,
    set_: Sets = None,
) -> None:
    """DPO + LoRA training with the config's recipe, locally with TRL or as a Together AI job."""
    from legibility.config import load_config

    cfg = load_config(config, set_ or [])
    if backend == "local":
        from legibility.train import train_from_config

        path = train_from_config(cfg, out, resume=resume, config_path=config)
        console.print(f"adapter -> {path / 'adapter'} (metrics: {path / 'metrics.jsonl'})")
    elif backend == "together":
        from legibility.together import submit

        request = submit(cfg, dry_run=dry_run)
        console.print_json(json.dumps(request))
    else:
        raise LegibilityError(f"--backend {backend!r}: choose local or together")


@app.command("generate")
def generate_cmd(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (its generate: section).")],
    set_: Sets = None,
) -> None:
    """Sample K CoTs per held-out problem from each generator (base, adapter, API models); resumable."""
    from legibility.config import load_config
    from legibility.evaluate.generate import generate_stage
    from legibility.tables import print_generate_summary

    cfg = load_config(config, set_ or [])
    print_generate_summary(generate_stage(cfg), console)
    console.print(f"generations -> {Path(cfg.run_dir) / 'eval' / 'generations.jsonl'}")


@app.command("eval")
def eval_cmd(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (readers:, judges:, metrics: sections).")],
    set_: Sets = None,
) -> None:
    """Readers (C1/C2/C4, leak detection, uplift, surprisal), judges, curves, taxonomy and validity tables."""
    from legibility.config import load_config
    from legibility.evaluate.pipeline import eval_stage
    from legibility.tables import print_eval_summary

    cfg = load_config(config, set_ or [])
    summary = eval_stage(cfg)
    print_eval_summary(Path(cfg.run_dir) / "eval", summary, console)


@app.command("run")
def run_cmd(
    config: Annotated[Path, typer.Argument(help="Experiment YAML.")],
    out: Annotated[Path | None, typer.Option(help="Run folder (default: the config's run_dir).")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="Rerun from this stage on.")] = None,
    only: Annotated[str | None, typer.Option(help="Run only this stage.")] = None,
    set_: Sets = None,
) -> None:
    """Every stage, traces to report, over one run folder: skips what is done, resumes what was interrupted."""
    from legibility.config import load_config
    from legibility.run import run

    sets = list(set_ or []) + ([f"run_dir={out}"] if out is not None else [])
    run(load_config(config, sets), from_stage=from_, only=only, console=console)


@app.command("status")
def status_cmd(run_dir: Annotated[Path, typer.Argument(help="A run folder.")]) -> None:
    """Each stage's state in a run folder, and whether its config, code or inputs changed since it ran."""
    from legibility.run import print_status, status

    if not run_dir.is_dir():
        raise LegibilityError(f"{run_dir}: no such run folder")
    print_status(status(run_dir), console, run_dir)


@app.command("report")
def report_cmd(run_dir: Annotated[Path, typer.Argument(help="A run folder.")]) -> None:
    """Write RUN_DIR/report.html (self-contained, offline) and RUN_DIR/report.md."""
    from legibility.report import write_report

    if not run_dir.is_dir():
        raise LegibilityError(f"{run_dir}: no such run folder")
    html, md = write_report(run_dir)
    console.print(f"report -> {html} and {md}")


def main() -> None:
    """Entry point: user errors, and hub / together SDK failures, become one line on stderr and exit code 2;
    --debug shows the traceback."""
    debug = "--debug" in sys.argv[1:]
    try:
        app()
    except LegibilityError as e:
        if debug:
            raise
        err.print(f"error: {e}", markup=False, highlight=False)
        sys.exit(2)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        if debug:
            raise
        err.print(f"error: {e.filename}: {e.strerror}", markup=False, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:
        line = external_failure(e)
        if debug or line is None:
            raise
        err.print(f"error: {line}", markup=False, highlight=False)
        sys.exit(2)


def external_failure(exc: BaseException) -> str | None:
    """One line for a failure outside our code that the user can fix (a hub download, a together SDK call) that no
    inner call already named; None for anything else (a bug keeps its traceback)."""
    from legibility.hub import hub_problem
    from legibility.together import sdk_problem

    sdk = sdk_problem(exc)
    if sdk is not None:
        return sdk
    problem = hub_problem(exc, bare_network=False)
    return None if problem is None else f"a model or tokenizer {problem}"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
