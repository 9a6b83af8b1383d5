"""One run folder as pandas frames, for notebooks and the report.

`load(run_dir)` reads whatever the stages wrote (problems, traces, pairs, training log, evaluation records and
tables, summaries, config) and leaves None or an empty frame for what a run lacks, so a half-finished run still
loads. Records are validated with their pydantic models (a malformed line is an error naming the file and line),
then flattened: nested dicts become dotted columns (`meta.temperature`, `transform_meta.truncated.chosen.tokens`).

Long texts (CoTs, completions, raw replies) can be gigabytes on a real run: `text=False` drops them while
streaming and keeps only their lengths (`*_chars` columns, present either way), which is all the report needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel

from legibility.errors import LegibilityError, where
from legibility.records import Generation, Judgement, Problem, Reading, Trace, parse_line

__all__ = ["TABLES", "Results", "load"]

TABLES: dict[str, list[str]] = {
    "accuracy": ["generator", "benchmark", "n", "n_problems", "accuracy", "low", "high", "accuracy_strict", "failed"],
    "paired": ["a", "b", "benchmark", "n_problems", "acc_a", "acc_b", "diff", "low", "high"],
    "readers": ["reader", "condition", "generator", "n", "accuracy", "low", "high", "failed", "n_gen_right",
                "acc_gen_right", "low_gen_right", "high_gen_right", "n_no_leak", "acc_no_leak", "low_no_leak",
                "high_no_leak"],
    "uplift": ["reader", "generator", "n", "p_c2", "p_c4", "uplift", "p_c2_given_c4_right", "p_c2_given_c4_wrong",
               "answer_uplift", "surprisal", "n_no_leak", "uplift_no_leak", "answer_uplift_no_leak"],
    "taxonomy": ["generator", "n_items", "no_readers", "generator_undecided", "generator_wrong", "too_hard",
                 "too_easy", "leak_unknown", "ANSWER_LEAKED", "REASONING_LEGIBLE", "ILLEGIBLE"],
    "curves": ["generator", "reader", "cots", "fraction", "accuracy", "agreement", "uplift", "n", "n_agreement"],
    "aoc": ["generator", "reader", "cots", "measure", "aoc", "low", "high", "auc", "n_traces"],
    "prefix": ["generator", "judge", "reader", "n", "n_cut", "failed", "acc_full", "acc_prefix"],
    "validity": ["metric", "transform", "strength", "auroc", "low", "high", "paired_win_rate", "n_traces",
                 "n_corrupted"],
    "agreement": ["kind", "a", "b", "value", "n"],
    "judges": ["judge", "kind", "generator", "transform", "metric", "n", "mean", "failed"],
}  # fmt: skip
"""The eval stage's tables (eval/tables/NAME.csv) and their columns, as the report reads them."""

# Text fields per file: dropped with text=False, measured (`{name}_chars`) always.
_TEXT = {
    "problems": ("question",),
    "traces": ("prompt", "reasoning", "answer_text"),
    "generations": ("prompt", "reasoning", "answer_text", "raw"),
    "readings": ("text",),
    "judgements": ("text",),
    "pairs": ("prompt", "chosen", "rejected"),
}


@dataclass
class Results:
    """Everything a run folder holds. Frames are empty (with no rows) when the file is missing; dicts are {}."""

    run_dir: Path
    name: str
    problems: pd.DataFrame
    traces: pd.DataFrame
    pairs: pd.DataFrame  # train + val, `split` column
    generations: pd.DataFrame
    readings: pd.DataFrame
    judgements: pd.DataFrame
    labels: pd.DataFrame  # eval/taxonomy.jsonl, one row per item
    train_log: pd.DataFrame  # train/metrics.jsonl, one row per log line, `kind` in train|eval|summary
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # eval/tables/*.csv by name
    pairs_stats: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)
    train_summary: dict[str, Any] = field(default_factory=dict)
    train_data_report: dict[str, Any] = field(default_factory=dict)
    eval_summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # what was read: key -> path relative to run_dir

    def table(self, name: str) -> pd.DataFrame:
        """An eval table by name, or an empty frame with its documented columns when the run has none."""
        df = self.tables.get(name)
        return df if df is not None else pd.DataFrame(columns=TABLES.get(name, []))

    @property
    def has_eval(self) -> bool:
        return bool(self.tables) or not self.generations.empty or bool(self.eval_summary)

    def frames(self) -> dict[str, pd.DataFrame]:
        """The record frames by name (for a quick look: `{k: len(v) for k, v in res.frames().items()}`)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), pd.DataFrame)}


# ------------------------------------------------------------------------------------------------ reading


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield lineno, line


def _measure(row: dict[str, Any], kind: str, text: bool) -> dict[str, Any]:
    for key in _TEXT.get(kind, ()):
        if key not in row:
            continue
        value = row[key]
        if isinstance(value, list):  # messages (pairs) or replies (judgements)
            parts = [m.get("content", "") if isinstance(m, dict) else (m or "") for m in value]
            row[f"{key}_chars"] = sum(len(p) for p in parts)
            if kind == "pairs" and key in ("chosen", "rejected") and text:
                row[key] = parts[-1] if parts else ""  # the completion itself, as `Pair` holds it
        else:
            row[f"{key}_chars"] = len(value or "")
        if not text:
            del row[key]
    return row


def _records(path: Path, kind: str, model: type[BaseModel] | None, text: bool) -> list[dict[str, Any]]:
    """Validated rows (model dumps, so defaults are filled in), texts measured and maybe dropped."""
    rows = []
    for lineno, line in _lines(path):
        if model is not None:
            row = parse_line(line, model, path, lineno).model_dump(mode="json")
        else:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise LegibilityError(f"{where(path, lineno)}: not valid JSON ({e.msg})") from None
            if kind == "pairs" and isinstance(row.get("transform_meta"), str):
                row["transform_meta"] = json.loads(row["transform_meta"] or "{}")
        rows.append(_measure(row, kind, text))
    return rows


def _flatten(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Nested dicts to dotted columns (`meta.temperature`); lists (messages, chunk scores) stay as objects."""
    return pd.json_normalize(rows) if rows else pd.DataFrame()


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LegibilityError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    return data if isinstance(data, dict) else {"value": data}


def _train_log(path: Path) -> pd.DataFrame:
    rows = []
    for lineno, line in _lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise LegibilityError(f"{where(path, lineno)}: not valid JSON ({e.msg})") from None
        # one line per trainer log call: an evaluation, a training step, or the closing summary
        row["kind"] = "eval" if "eval_loss" in row else "summary" if "train_runtime" in row else "train"
        rows.append(row)
    return pd.DataFrame(rows)


def _table(path: Path) -> pd.DataFrame:
    """A table with at least its documented columns (a missing one is all NaN), extra ones kept after them."""
    # only an empty field is missing: a model called "NA" or "null" stays a name
    df = pd.read_csv(path, keep_default_na=False, na_values=["", "nan", "NaN"])
    cols = TABLES.get(path.stem)
    if cols is None:
        return df
    return df.reindex(columns=[*cols, *(c for c in df.columns if c not in cols)])


def load(run_dir: str | Path, text: bool = True) -> Results:
    """Read a run folder (see the module doc). `text=False` keeps only the lengths of long texts."""
    run = Path(run_dir)
    if not run.is_dir():
        raise LegibilityError(f"{run}: no such run folder")
    files: dict[str, str] = {}

    def rel(key: str, p: Path) -> Path:
        files[key] = p.relative_to(run).as_posix()
        return p

    def frame(key: str, path: Path, model: type[BaseModel] | None) -> pd.DataFrame:
        return _flatten(_records(rel(key, path), key, model, text)) if path.is_file() else pd.DataFrame()

    pair_rows: list[dict[str, Any]] = []
    for split in ("train", "val"):
        p = run / "pairs" / f"{split}.jsonl"
        if p.is_file():
            for row in _records(rel(f"pairs_{split}", p), "pairs", None, text):
                row["split"] = row.get("split") or split
                pair_rows.append(row)

    def js(key: str, p: Path) -> dict[str, Any]:
        return _json(rel(key, p)) if p.is_file() else {}

    config: dict[str, Any] = {}
    for p in (run / "config.yaml", run / "train" / "config.yaml"):
        if p.is_file():
            try:
                config = yaml.safe_load(rel("config", p).read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as e:
                raise LegibilityError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
            break

    tables = {}
    tdir = run / "eval" / "tables"
    if tdir.is_dir():
        for p in sorted(tdir.glob("*.csv")):
            tables[p.stem] = _table(rel(f"table_{p.stem}", p))

    metrics = run / "train" / "metrics.jsonl"
    return Results(
        run_dir=run,
        name=str(config.get("name") or run.resolve().name),
        problems=frame("problems", run / "problems.jsonl", Problem),
        traces=frame("traces", run / "traces.jsonl", Trace),
        pairs=_flatten(pair_rows),
        generations=frame("generations", run / "eval" / "generations.jsonl", Generation),
        readings=frame("readings", run / "eval" / "readings.jsonl", Reading),
        judgements=frame("judgements", run / "eval" / "judgements.jsonl", Judgement),
        labels=frame("labels", run / "eval" / "taxonomy.jsonl", None),
        train_log=_train_log(rel("train_log", metrics)) if metrics.is_file() else pd.DataFrame(),
        tables=tables,
        pairs_stats=js("pairs_stats", run / "pairs" / "stats.json"),
        split=js("split", run / "pairs" / "split.json"),
        train_summary=js("train_summary", run / "train" / "summary.json"),
        train_data_report=js("train_data_report", run / "train" / "data_report.json"),
        eval_summary=js("eval_summary", run / "eval" / "summary.json"),
        config=config,
        files=files,
    )
