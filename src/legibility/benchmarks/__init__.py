"""Benchmark loaders (GPQA, MATH, BBH) into `Problem` records, and their prompts.

`load(name, path)` reads a local file or folder; a path that does not exist locally but looks like a
Hugging Face dataset name ("owner/name", or "hf:owner/name") is fetched with `datasets.load_dataset`.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from legibility.benchmarks import bbh, gpqa
from legibility.benchmarks import math as math_
from legibility.benchmarks.prompts import messages, prompt
from legibility.errors import LegibilityError
from legibility.records import Problem

__all__ = ["BENCHMARKS", "load", "looks_like_hf", "messages", "prompt"]

BENCHMARKS = ("gpqa", "math", "bbh")

_LOADERS: dict[str, Callable[..., list[Problem]]] = {"gpqa": gpqa.load, "math": math_.load, "bbh": bbh.load}
_HF_OPTIONS = ("split", "config")
_HF_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_FILE_SUFFIXES = (".json", ".jsonl", ".csv")


def load(name: str, path: str | os.PathLike, **options: Any) -> list[Problem]:
    """Load benchmark `name` from `path`. Options: gpqa `seed`; math `levels`; bbh `subtasks`;
    for Hugging Face datasets also `split` and `config` (the defaults match each benchmark's usual copy).
    Every benchmark accepts `seed` so callers can pass one seed throughout; only GPQA shuffles."""
    if name not in _LOADERS:
        raise LegibilityError(f"unknown benchmark {name!r} (choose from {', '.join(BENCHMARKS)})")
    text = os.fspath(path)
    hf = text[3:] if text.startswith("hf:") else None
    if hf is None and not Path(text).exists() and looks_like_hf(text):
        hf = text
    _check_options(name, options, hf=hf is not None)
    if name != "gpqa":
        options.pop("seed", None)
    if hf is not None:
        return load_hf(name, hf, **options)
    if not Path(text).exists():
        raise LegibilityError(f"{text}: no such file or folder")
    return _LOADERS[name](Path(text), **options)


def looks_like_hf(text: str) -> bool:
    """Is `text` "owner/name" with no file suffix: "Idavidrein/gpqa" yes, "data/gpqa.csv" no."""
    return bool(_HF_NAME.match(text)) and not text.lower().endswith(_FILE_SUFFIXES)


def load_hf(
    name: str, dataset: str, *, split: str | None = None, config: str | None = None, **options: Any
) -> list[Problem]:
    """Load a Hugging Face copy; columns match the local layouts (lukaemon/bbh: one config per task)."""
    if name == "gpqa":
        config, split = config or gpqa.HF_CONFIG, split or gpqa.HF_SPLIT
        ds = _hf_dataset(dataset, config, split)
        origin = f"hf:{dataset}/{config}:{split}"
        return gpqa.from_rows(((f"{origin}#{i}", i + 1, row) for i, row in enumerate(ds)), **options)
    if name == "math":
        config, split = config or math_.HF_CONFIG, split or math_.HF_SPLIT
        ds = _hf_dataset(dataset, config, split)
        origin = f"hf:{dataset}" + (f"/{config}" if config else "") + f":{split}"
        return math_.from_items(((f"{origin}#{i}", row, None) for i, row in enumerate(ds)), **options)
    if config is not None:
        raise LegibilityError("bbh: choose tasks with subtasks=, not config=")
    split = split or bbh.HF_SPLIT
    tasks = bbh.resolve_subtasks(options.get("subtasks"), available=bbh.ALL_SUBTASKS)
    out: list[Problem] = []
    for task in tasks:
        ds = _hf_dataset(dataset, task, split)
        out.extend(bbh.from_examples(task, ds, canary=None, origin=f"hf:{dataset}/{task}:{split}"))
    return out


def _hf_dataset(dataset: str, config: str | None, split: str) -> Any:
    try:
        from datasets import load_dataset
    except ImportError:
        raise LegibilityError(f"{dataset}: loading from Hugging Face needs the `datasets` package") from None
    try:
        return load_dataset(dataset, config, split=split)
    except Exception as e:
        reason = (str(e).strip().splitlines() or [""])[0][:300]
        raise LegibilityError(
            f"could not load Hugging Face dataset {dataset!r} (config {config!r}, split {split!r}): "
            f"{type(e).__name__}: {reason}. Offline, or a gated dataset without `hf auth login`? "
            "Pass a local file or folder instead."
        ) from None


def _check_options(name: str, options: dict[str, Any], *, hf: bool) -> None:
    params = inspect.signature(_LOADERS[name]).parameters
    allowed = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    allowed += [] if "seed" in allowed else ["seed"]
    if hf:
        allowed += [o for o in _HF_OPTIONS if not (name == "bbh" and o == "config")]
    unknown = [k for k in options if k not in allowed]
    if unknown:
        raise LegibilityError(
            f"benchmark {name!r} takes no option {', '.join(unknown)} (options: {', '.join(allowed) or 'none'})"
        )
