"""`legibility run CONFIG`: every stage over one run folder, skipping what is done and resuming what was cut short.

problems -> traces (import) -> pairs -> train -> generate (base and adapter) -> eval (readers, judges) -> report

Each stage records, in `{run_dir}/stages/{stage}.json`, a fingerprint of what it depends on: its config sections,
the code (every source file of the package), and the bytes of its input files. A rerun skips a stage whose
fingerprint matches and whose last run finished; resumes one that was interrupted (training from its newest
checkpoint, generation from the records already appended, evaluation from the model cache); and reruns a stage whose
fingerprint changed, and every stage after it, saying why.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from legibility.config import ExperimentConfig, dump_config
from legibility.errors import LegibilityError
from legibility.records import write_json

STAGES = ("problems", "traces", "pairs", "train", "generate", "eval", "report")


def _code_hash() -> str:
    """sha256 over the package's source files (path and bytes), so any code change is a new fingerprint."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _hash_path(p: Path) -> str | None:
    """A file's sha256, a folder's over its files (names and bytes, sorted), None when missing."""
    if p.is_file():
        return hashlib.sha256(p.read_bytes()).hexdigest()
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(str(f.relative_to(p)).encode() + b"\0" + f.read_bytes() + b"\0")
        return h.hexdigest()
    return None


@dataclass(frozen=True)
class Stage:
    name: str
    sections: Callable[[ExperimentConfig], Any]  # the config this stage reads
    inputs: Callable[[ExperimentConfig], list[Path]]  # files whose bytes it reads
    run: Callable[[ExperimentConfig, str, Console], str]
    """(cfg, mode, console) -> a one-line result; mode "fresh" (never run here), "resume" (interrupted, same
    fingerprint) or "rerun" (ran before with another fingerprint, or forced: its old outputs may go)."""
    adopt: Callable[[ExperimentConfig, bool], str | None] | None = None
    """(cfg, forced) -> a result for outputs made outside the runner that match this config, None when there are
    none; raises when there are outputs it must not overwrite."""


def _run_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.run_dir)


# ------------------------------------------------------------------------------------------------ the stages


def _problems(cfg: ExperimentConfig, mode: str, console: Console) -> str:
    from legibility.stages import problems_stage

    return f"{len(problems_stage(cfg))} problems"


def _traces(cfg: ExperimentConfig, mode: str, console: Console) -> str:
    from legibility.stages import traces_stage
    from legibility.tables import print_trace_stats

    traces = traces_stage(cfg)
    print_trace_stats(traces, console)
    return f"{len(traces)} traces"


def _pairs(cfg: ExperimentConfig, mode: str, console: Console) -> str:
    from legibility.stages import pairs_stage
    from legibility.tables import print_pair_stats

    stats = pairs_stage(cfg)
    print_pair_stats(stats, console)
    c = stats["counts"]
    return f"{c['train']} train / {c['val']} val pairs ({c['train_problems']} / {c['val_problems']} problems)"


def _train(cfg: ExperimentConfig, mode: str, console: Console) -> str:
    from legibility.train import last_checkpoint, train_from_config

    out = _run_dir(cfg) / "train"
    if mode == "rerun" and out.exists():
        shutil.rmtree(out)  # a rerun by the runner (it made this folder): old checkpoints belong to another recipe
    out = train_from_config(cfg, resume=mode == "resume" and last_checkpoint(out) is not None)
    summary = json.loads((out / "summary.json").read_text())
    from legibility.tables import print_eval_table

    if summary.get("initial_eval"):
        print_eval_table(summary["initial_eval"], console, "step 0: the base model's own preference")
    if summary.get("final_eval"):
        print_eval_table(summary["final_eval"], console, f"step {summary['global_step']}: after training")
    return f"{summary['global_step']} steps, train loss {summary['train_metrics']['train_loss']:.4f}"


def _train_inputs(cfg: ExperimentConfig) -> list[Path]:
    return [cfg.path(cfg.train.train_file)] + ([cfg.path(cfg.train.eval_file)] if cfg.train.eval_file else [])


def _adopt_train(cfg: ExperimentConfig, forced: bool) -> str | None:
    """An adapter trained outside the runner (`accelerate launch -m legibility.train`, `legibility train`, or a
    Together job's adapter downloaded into train/adapter/) counts as the train stage when it was trained with this
    config's recipe on these exact pair files; anything else there is a one-line error, never overwritten: hours
    of GPU training are not the runner's to delete."""
    out = _run_dir(cfg) / "train"
    if not out.is_dir() or not any(out.iterdir()):
        return None
    why = f"{out}: holds training the runner did not start"
    if forced:
        raise LegibilityError(f"{why}; --from/--only would train over it: move it away first")
    together = _run_dir(cfg) / "together" / "job.json"
    if together.is_file() and (out / "adapter").is_dir() and not (out / "summary.json").exists():
        from legibility.together import adopt

        return adopt(cfg)  # downloaded from the Together job this run submitted
    try:
        summary = json.loads((out / "summary.json").read_text())
        prov = summary["provenance"]
    except (OSError, ValueError, KeyError):
        raise LegibilityError(f"{why} and no finished summary.json; move it away to train here") from None
    for section in ("model", "train"):
        if prov["config"].get(section) != _plain(getattr(cfg, section)):
            raise LegibilityError(f"{why}; its {section} differs from this config's: move it away or use its config")
    trained = (summary.get("batch") or {}).get("global")
    if trained != cfg.train.batch_size:  # what the steps were, whatever the config said (and older runs' record)
        raise LegibilityError(f"{why}; its global batch was {trained}, this config's train.batch_size is "
                              f"{cfg.train.batch_size}: move it away or train again")  # fmt: skip
    files = {i["path"]: i["sha256"] for i in prov["inputs"]}
    for path in _train_inputs(cfg):
        if str(path) in files and files[str(path)] != _hash_path(path):
            raise LegibilityError(f"{why}, on another {path.name}; move it away or rebuild those pairs")
    if str(cfg.path(cfg.train.train_file)) not in files or not (out / "adapter").is_dir():
        raise LegibilityError(f"{why}, on other pair files; move it away to train here")
    return f"adopted: {summary['global_step']} steps trained outside the runner"


def _generate(cfg: ExperimentConfig, mode: str, console: Console) -> str:
    from legibility.evaluate.generate import generate_stage
    from legibility.tables import print_generate_summary

    gens = _run_dir(cfg) / "eval" / "generations.jsonl"
    if mode == "rerun" and gens.exists():
        gens.unlink()  # a rerun by the runner: earlier samples came from other settings
    summary = generate_stage(cfg)
    print_generate_summary(summary, console)
    return f"{sum(g.get('n', 0) for g in summary.get('generators', {}).values())} samples"


def _eval(cfg: ExperimentConfig, mode: str, console: Console) -> str:
    from legibility.evaluate.pipeline import eval_stage
    from legibility.tables import print_eval_summary

    summary = eval_stage(cfg)
    print_eval_summary(_run_dir(cfg) / "eval", summary, console)
    c = summary["counts"]
    return f"{c['readings']} readings, {c['judgements']} judgements, {c['requests']} model requests"


def _report(cfg: ExperimentConfig, mode: str, console: Console) -> str:
    from legibility.report import write_report

    html, md = write_report(_run_dir(cfg))
    return f"{html} and {md.name}"


def _files(*names: str) -> Callable[[ExperimentConfig], list[Path]]:
    return lambda cfg: [_run_dir(cfg) / n for n in names]


STAGE_LIST: tuple[Stage, ...] = (
    Stage("problems", lambda c: c.data.benchmarks, lambda c: [Path(b.path) for b in c.data.benchmarks], _problems),
    Stage("traces", lambda c: c.data.traces,
          lambda c: [Path(t.path) for t in c.data.traces] + _files("problems.jsonl")(c), _traces),
    Stage("pairs", lambda c: c.pairs, _files("traces.jsonl", "problems.jsonl"), _pairs),
    Stage("train", lambda c: (c.model, c.train), _train_inputs, _train, _adopt_train),
    Stage("generate", lambda c: (c.model, c.generate), _files("problems.jsonl", "pairs/split.json", "train/adapter"),
          _generate),
    Stage("eval", lambda c: (c.model, c.readers, c.judges, c.metrics),
          _files("problems.jsonl", "eval/generations.jsonl", "pairs/val.jsonl"), _eval),
    Stage("report", lambda c: None, _files("eval/summary.json", "train/summary.json", "pairs/stats.json"), _report),
)  # fmt: skip
assert tuple(s.name for s in STAGE_LIST) == STAGES


def _plain(x: Any) -> Any:
    if hasattr(x, "model_dump"):
        return x.model_dump(mode="json")
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def fingerprint(stage: Stage, cfg: ExperimentConfig, code: str) -> dict[str, Any]:
    """What the stage depends on, each part hashed, so `status` can say which part changed."""
    config = json.dumps(_plain(stage.sections(cfg)), sort_keys=True, default=str)
    run = _run_dir(cfg)
    # run-folder files by their place in the folder, so a copied or moved run stays up to date
    inputs = {(f"{{run_dir}}/{p.relative_to(run)}" if p.is_relative_to(run) else str(p)): _hash_path(p)
              for p in stage.inputs(cfg)}  # fmt: skip
    return {"config": hashlib.sha256(config.encode()).hexdigest(), "code": code,
            "inputs": hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()}  # fmt: skip


def _state_path(run_dir: Path, stage: str) -> Path:
    return run_dir / "stages" / f"{stage}.json"


def read_state(run_dir: str | Path, stage: str) -> dict[str, Any] | None:
    p = _state_path(Path(run_dir), stage)
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _changed(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    if old is None or "fingerprint" not in old:
        return ["never run"]
    return [k for k in ("config", "code", "inputs") if old["fingerprint"].get(k) != new[k]]


def _pick(name: str | None, flag: str) -> int | None:
    if name is None:
        return None
    if name not in STAGES:
        raise LegibilityError(f"{flag} {name!r}: not a stage; stages are {', '.join(STAGES)}")
    return STAGES.index(name)


def run(
    cfg: ExperimentConfig,
    *,
    from_stage: str | None = None,
    only: str | None = None,
    console: Console | None = None,
    stop_after: str | None = None,
) -> dict[str, str]:
    """Run the stages that need it; returns stage -> what happened ("skipped", "ran", "resumed")."""
    console = console or Console()
    run_dir = _run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    start, only_i = _pick(from_stage, "--from"), _pick(only, "--only")
    last = _pick(stop_after, "stop_after")
    code = _code_hash()
    outcome: dict[str, str] = {}
    results: dict[str, tuple[str, float]] = {}
    cascade: str | None = None  # the first stage that reran: every later stage reruns too
    for i, stage in enumerate(STAGE_LIST):
        if only_i is not None and i != only_i:
            continue
        if last is not None and i > last:
            break
        state = read_state(run_dir, stage.name)
        fp = fingerprint(stage, cfg, code)
        changed = _changed(state, fp)
        forced = (start is not None and i >= start) or only_i == i
        done = state is not None and state.get("status") == "done" and not changed
        if done and not forced and cascade is None:
            outcome[stage.name] = "skipped"
            console.print(f"[dim]{stage.name}: up to date, skipped[/dim]")
            continue
        resume = state is not None and state.get("status") == "running" and not changed and not forced
        why = ("forced (--from/--only)" if forced else f"after {cascade}" if cascade and not changed
               else "interrupted, resuming" if resume else ", ".join(changed) + " changed"
               if changed != ["never run"] else "never run")  # fmt: skip
        p = _state_path(run_dir, stage.name)
        if state is None and stage.adopt is not None and (adopted := stage.adopt(cfg, forced)) is not None:
            write_json(p, {"status": "done", "fingerprint": fp, "seconds": 0.0, "result": adopted,
                           "finished": time.time()})  # fmt: skip
            outcome[stage.name] = "adopted"
            results[stage.name] = (adopted, 0.0)
            console.print(f"{stage.name}: {adopted}")
            continue
        console.print(Rule(f"{stage.name} ({why})"))
        write_json(p, {"status": "running", "fingerprint": fp, "started": time.time()})
        t = time.perf_counter()
        mode = "resume" if resume else "fresh" if state is None else "rerun"
        result = stage.run(cfg, mode, console)
        seconds = time.perf_counter() - t
        fp = fingerprint(stage, cfg, code)  # inputs it made itself (none today) would show here
        write_json(p, {"status": "done", "fingerprint": fp, "seconds": round(seconds, 1), "result": result,
                       "finished": time.time()})  # fmt: skip
        outcome[stage.name] = "resumed" if resume else "ran"
        results[stage.name] = (result, seconds)
        cascade = cascade or stage.name
    _print_end(console, run_dir, outcome, results)
    return outcome


def _print_end(console: Console, run_dir: Path, outcome: dict[str, str], results: dict[str, tuple[str, float]]
               ) -> None:  # fmt: skip
    if outcome and all(v == "skipped" for v in outcome.values()):
        console.print(f"nothing to do: every stage is up to date in {run_dir} (legibility status {run_dir})")
        return
    table = Table("stage", "", "seconds", "result", title=f"run {run_dir}")
    for name, what in outcome.items():
        res, s = results.get(name, ("", 0.0))
        table.add_row(name, what, f"{s:.0f}" if name in results else "-", res)
    console.print(table)
    if (run_dir / "report.html").is_file():
        console.print(f"report: {run_dir / 'report.html'}")


def status(run_dir: str | Path, cfg: ExperimentConfig | None = None) -> list[dict[str, Any]]:
    """Each stage's state: done / interrupted / never run, its time, and (given the config) whether it is stale."""
    run_dir = Path(run_dir)
    if cfg is None and (run_dir / "config.yaml").is_file():
        from legibility.config import load_config

        cfg = load_config(run_dir / "config.yaml").model_copy(update={"run_dir": str(run_dir)})
    code = _code_hash()
    rows = []
    for stage in STAGE_LIST:
        st = read_state(run_dir, stage.name)
        row = {"stage": stage.name, "state": "never run" if st is None else
               {"done": "done", "running": "interrupted"}.get(st.get("status"), "?"),
               "seconds": (st or {}).get("seconds"), "result": (st or {}).get("result", ""), "stale": ""}  # fmt: skip
        if st is not None and cfg is not None:
            changed = [c for c in _changed(st, fingerprint(stage, cfg, code)) if c != "never run"]
            row["stale"] = ", ".join(changed)
        rows.append(row)
    return rows


def print_status(rows: Iterable[dict[str, Any]], console: Console, run_dir: str | Path) -> None:
    table = Table("stage", "state", "seconds", "changed since", "result", title=str(run_dir))
    for r in rows:
        table.add_row(r["stage"], r["state"], "-" if r["seconds"] is None else f"{r['seconds']:.0f}",
                      r["stale"] or "-", r["result"])  # fmt: skip
    console.print(table)
