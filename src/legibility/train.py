"""DPO + LoRA training with TRL's `DPOTrainer` and a PEFT `LoraConfig`, defaults = the reference (Together) recipe.

The reference run's loss (DPO, beta 0.3, log ratios normalized by length, plus RPO's NLL term with alpha 0.5) is
expressed in TRL 1.16 as a weighted multi-loss (checked numerically against plain torch in tests/test_loss.py):

    loss_type=["sigmoid_norm", "sft"], loss_weights=[1.0, rpo_alpha]

- `sigmoid_norm`: -logsigmoid(beta * (chosen_logratio / n_chosen_tokens - rejected_logratio / n_rejected_tokens)),
  i.e. Together's `dpo_normalize_logratios_by_length=True`. (`sigmoid` is the unnormalized DPO loss.)
- `sft`: NLL of the chosen completions per token, pooled over the micro-batch, i.e. RPO (`rpo_alpha`).

The reference model is the base model with the LoRA adapters disabled (PEFT default; no second copy in memory).
TRL's rewards/* metrics sum the log ratios; `LegibilityDPOTrainer` also logs the normalized ones the loss compares,
and the model's own preference, overall and per transform, from step 0 on (see its docstring).

Pairs longer than `train.max_length` (prompt+completion, as TRL tokenizes) are dropped and counted
(`train.long_pairs: drop`, ours: a truncated pair would lose its final answer), or truncated by TRL's collator at
max_length keeping the start and counted exactly as the reference card did ("N of M training samples truncated",
`train.long_pairs: truncate`): the count is made here with TRL's own tokenization, before training.

Batch: `train.batch_size` is the global batch (the card's 8). At start-up the gradient accumulation is derived from
the number of processes (WORLD_SIZE, set by torchrun and accelerate) and the per-device batch, so
`accelerate launch --config_file configs/accelerate/ddp.yaml -m legibility.train CONFIG` on 8 GPUs trains the same
recipe as one GPU; summary.json records world size, per-device batch, accumulation and global batch.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from legibility.config import TrainConfig
from legibility.errors import LegibilityError
from legibility.records import Message, iter_jsonl, write_json

if TYPE_CHECKING:
    import torch

    from legibility.config import ExperimentConfig

log = logging.getLogger("legibility.train")


class TrainPair(BaseModel):
    """One line of the training file, TRL's conversational preference format plus our bookkeeping fields."""

    model_config = ConfigDict(extra="ignore")

    prompt: list[Message] = Field(min_length=1)
    chosen: list[Message] = Field(min_length=1)
    rejected: list[Message] = Field(min_length=1)
    id: str
    transform: str
    benchmark: str
    generator: str
    problem_id: str


# ----------------------------------------------------------------------------------------------- helpers


def resolve_chat_template(value: str | None) -> Path | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    if p.is_file():
        return p
    if "/" not in value and not value.endswith(".jinja"):
        import trl

        shipped = Path(trl.__file__).parent / "chat_templates" / f"{value}.jinja"
        if shipped.is_file():
            return shipped
    raise LegibilityError(f"train.chat_template: {value}: no such file (nor a template shipped with TRL)")


def read_pairs(path: Path) -> list[TrainPair]:
    """Validate every line first, so a bad record fails with file:line: field before any model is loaded."""
    pairs = list(iter_jsonl(path, TrainPair))
    if not pairs:
        raise LegibilityError(f"{path}: no pairs")
    return pairs


def _msgs(messages: list[Message]) -> list[dict[str, str]]:
    return [m.model_dump() for m in messages]


def _chat_ids(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> list[int]:
    """Token ids as TRL's DPOTrainer makes them (trl.data_utils._tokenize for conversational input)."""
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
    )
    return list(out["input_ids"])


def world_size() -> int:
    """Processes training together, as the launcher announces them (torchrun and accelerate set WORLD_SIZE)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise LegibilityError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r}: not a number of processes") from None


def batch_plan(t: TrainConfig, world: int) -> dict[str, int]:
    """How the global batch is made on `world` processes (summary.json's `batch`)."""
    accumulation = t.accumulation(world)
    return {
        "world_size": world,
        "per_device": t.per_device_train_batch_size,
        "gradient_accumulation_steps": accumulation,
        "global": world * t.per_device_train_batch_size * accumulation,
    }


def truncation_note(report: dict[str, Any], split: str) -> str:
    """The reference card's wording: "N of M training samples truncated"."""
    return f"{report['truncated']} of {report['pairs']} {split} samples truncated"


def length_report(
    pairs: list[TrainPair], tokenizer: Any, max_length: int, policy: str = "drop"
) -> tuple[list[int], dict[str, Any]]:
    """The pairs that train, and a report of those over max_length.

    A pair's length is that of its longer side, prompt+completion tokenized with the chat template as DPOTrainer
    does (the sequence TRL builds is exactly that long). "drop": longer pairs are left out, so no pair loses its
    final answer; drops are counted per transform, since a transform that lengthens one side is dropped more.
    "truncate": longer pairs stay and TRL's collator cuts them (keep_start): counted as truncated, exactly the
    pairs TRL will cut; one whose prompt alone fills max_length (TRL would filter it out) is dropped and counted.
    """
    from trl.data_utils import common_prefix_length

    keep, dropped, truncated, longest_kept, longest = [], [], [], 0, 0
    for i, p in enumerate(pairs):
        sides = [_chat_ids(tokenizer, _msgs(p.prompt + c)) for c in (p.chosen, p.rejected)]
        n = max(map(len, sides))
        longest = max(longest, n)
        if n > max_length:
            if policy != "truncate":
                dropped.append(p)
                continue
            prompt = _chat_ids(tokenizer, _msgs(p.prompt), add_generation_prompt=True)
            if min(common_prefix_length(prompt, ids) for ids in sides) >= max_length:
                dropped.append(p)
                continue
            truncated.append(p)
        longest_kept = max(longest_kept, min(n, max_length))
        keep.append(i)
    return keep, {
        "pairs": len(pairs),
        "kept": len(keep),
        "policy": policy,
        "dropped_too_long": len(dropped),
        "dropped_by_transform": dict(sorted(Counter(p.transform for p in dropped).items())),
        "dropped_ids": [p.id for p in dropped[:20]],
        "truncated": len(truncated),
        "truncated_by_transform": dict(sorted(Counter(p.transform for p in truncated).items())),
        "truncated_ids": [p.id for p in truncated[:20]],
        "longest_kept_tokens": longest_kept,
        "longest_tokens": longest,
        "max_length": max_length,
    }


def stratified_sample(indices: list[int], groups: list[str], n: int, seed: int) -> list[int]:
    """`n` of `indices`, as even across groups (`groups[i]` is index i's transform) as they allow, seeded; sorted."""
    rng = random.Random(seed)
    by_group: dict[str, list[int]] = {}
    for i in indices:
        by_group.setdefault(groups[i], []).append(i)
    queues = [rng.sample(v, len(v)) for _, v in sorted(by_group.items())]
    out: list[int] = []
    n = min(n, len(indices))
    while len(out) < n:
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop())
    return sorted(out)


def _check_target_modules(model: Any, targets: list[str]) -> None:
    import torch

    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = [t for t in targets if t not in names]
    if missing:
        raise LegibilityError(
            f"train.lora_target_modules: {missing} not in the model; its linear layers are {sorted(names)}"
        )


def last_checkpoint(out: Path) -> Path | None:
    """The newest checkpoint whose trainer_state.json (written last) is complete; a half-written one is skipped."""
    best: tuple[int, Path] | None = None
    for d in out.glob("checkpoint-*"):
        try:
            step = int(d.name.split("-", 1)[1])
            json.loads((d / "trainer_state.json").read_text())
        except (ValueError, OSError):
            continue
        if best is None or step > best[0]:
            best = (step, d)
    return best[1] if best else None


def _metrics_callback(path: Path) -> Any:
    from transformers import TrainerCallback

    class MetricsLog(TrainerCallback):
        """Append every log dict (train and eval) with step/epoch to metrics.jsonl; on resume, drop the entries
        past the checkpoint's step so the history stays one line per logged step."""

        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            if state.global_step > 0 and path.is_file():
                lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
                kept = [ln for ln in lines if json.loads(ln).get("step", 0) <= state.global_step]
                path.write_text("".join(ln + "\n" for ln in kept))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            rec = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3), **logs}
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")

    return MetricsLog()


def _console_line(logs: dict[str, float], state: Any) -> str | None:
    """One short line a log: loss and what the loss compares (normalized), never a raw dict (those go to
    metrics.jsonl, per transform too)."""
    eval_ = any(k.startswith("eval_") for k in logs)
    pre = "eval_" if eval_ else ""
    shown = (("loss", "loss"), ("rewards_norm/accuracies", "norm reward acc"), ("rewards_norm/margins", "norm margin"),
             ("logps_norm/accuracies", "norm pref acc"), ("logps_norm/margins", "norm pref margin"))  # fmt: skip
    cells = [f"{label} {logs[pre + k]:.4g}" for k, label in shown if isinstance(logs.get(pre + k), int | float)]
    if not cells:
        return None
    steps = f"{state.global_step}/{state.max_steps}" if state.max_steps else str(state.global_step)
    return f"{'eval ' if eval_ else 'train'} step {steps}: " + ", ".join(cells)


def _compact_console_logs(trainer: Any) -> None:
    """Replace transformers' console logging (a raw dict per log) by `_console_line`; the progress bar stays."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cls in (PrinterCallback, ProgressCallback):
        if trainer.pop_callback(cls) is None:
            continue

        class Compact(cls):  # type: ignore[misc,valid-type]
            def on_log(self, args, state, control, logs=None, **kwargs):
                if not state.is_world_process_zero or not (line := _console_line(logs or {}, state)):
                    return
                bar = getattr(self, "training_bar", None)
                (bar.write if bar is not None else print)(line)

        trainer.add_callback(Compact())


# ----------------------------------------------------------------------------------------------- metrics

# TRL logs these itself on training batches (as means of batch means); evaluation replaces them by exact means.
_TRL_KEYS = {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
             "logps/rejected"}  # fmt: skip


def pair_metrics(rows: torch.Tensor, beta: float) -> dict[str, float]:
    """Means over pairs. `rows`: one per pair, columns policy chosen/rejected summed log-probs, reference
    chosen/rejected summed log-probs, chosen/rejected completion token counts (as `LegibilityDPOTrainer` records).

    rewards/*: TRL's beta * (summed) log ratio; rewards_norm/*: beta * log ratio / tokens, what sigmoid_norm compares;
    logps/*, logps_norm/*: the policy's own summed / per-token log-probs (its preference, reference-free).
    accuracies: share of pairs where chosen > rejected (strict, as TRL: all rewards are 0 before training).
    """
    pc, pr, rc, rr, nc, nr = rows[:, :6].double().unbind(1)
    out = {"pairs": float(len(rows))}
    kinds = {
        "rewards": (beta * (pc - rc), beta * (pr - rr)),
        "rewards_norm": (beta * (pc - rc) / nc, beta * (pr - rr) / nr),
        "logps": (pc, pr),
        "logps_norm": (pc / nc, pr / nr),
    }
    for kind, (c, r) in kinds.items():
        out[f"{kind}/chosen"] = c.mean().item()
        out[f"{kind}/rejected"] = r.mean().item()
        out[f"{kind}/accuracies"] = (c > r).double().mean().item()
        out[f"{kind}/margins"] = (c - r).mean().item()
    return out


def grouped_metrics(rows: torch.Tensor, beta: float, transforms: list[str]) -> dict[str, float]:
    """`pair_metrics` over all rows, and per transform (column 6 indexes `transforms`) as `<transform>_<key>`."""
    out = pair_metrics(rows, beta)
    ids = rows[:, 6].long()
    for i, name in enumerate(transforms):
        sel = rows[ids == i]
        if len(sel):
            out.update({f"{name}_{k}": v for k, v in pair_metrics(sel, beta).items()})
    return out


class _WithTransform:
    """TRL's preference collator, plus each pair's `transform_id` (TRL's collator leaves unknown keys out)."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = self.collator(examples)
        if "transform_id" in examples[0]:
            batch["transform_id"] = torch.tensor([ex["transform_id"] for ex in examples])
        return batch


@functools.cache
def trainer_class() -> type:
    """`LegibilityDPOTrainer`, built on first use so that importing this module does not import TRL."""
    import torch
    from trl import DPOTrainer

    class LegibilityDPOTrainer(DPOTrainer):
        """DPOTrainer that also logs what the loss compares, and the model's own preference, overall and per transform.

        TRL's rewards/* are beta * log ratios summed over tokens, but sigmoid_norm compares them per token, so where a
        transform changes the length (deletion, distractors, splices) the summed numbers mislead. For every pair the
        policy's and the reference's summed log-probs and both token counts are read from the forward passes TRL's
        loss already makes (a forward hook: no extra forward), and `pair_metrics` are logged beside TRL's:
        rewards_norm/* (the objective's), logps/* and logps_norm/* (the policy's own preference: at step 0, with
        `eval_on_start`, the base model's, while every reward is still 0). Evaluation is one pass; its pairs carry a
        `transform_id` through the collator and the metrics are aggregated over exact per-pair values, overall
        (eval_<metric>) and per transform (eval_<transform>_<metric>, with eval_<transform>_pairs).

        The normalized metrics use plain summed log-probs (TRL's `ld_alpha` weighting is not applied to them).
        """

        def __init__(self, *args: Any, transforms: list[str] | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.transforms = list(transforms or [])
            self.data_collator = _WithTransform(self.data_collator)  # after __init__'s reference precompute
            self._eval_rows: list[torch.Tensor] | None = None

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()  # else Trainer drops the column before the collator
            if "transform_id" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "transform_id"]

        def compute_ref_log_probs(self, model: Any, inputs: dict[str, Any]) -> Any:
            return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != "transform_id"})

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:  # fmt: skip
            transform_id = inputs.pop("transform_id", None)
            calls: list[torch.Tensor] = []

            def keep(_module: Any, _args: Any, output: Any) -> None:
                if getattr(output, "log_probs", None) is not None:  # the fused LM head's per-token log-probs
                    calls.append(output.log_probs.detach())

            modules = [self.model] + ([self.ref_model] if self.ref_model is not None else [])
            hooks = [self.accelerator.unwrap_model(m).register_forward_hook(keep) for m in modules]
            try:
                result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            finally:
                for h in hooks:
                    h.remove()
            self._record(inputs, calls, transform_id)
            return result

        def _record(self, inputs: dict[str, Any], calls: list[torch.Tensor], transform_id: Any) -> None:
            """TRL's `_compute_loss` runs the policy, then the reference unless its log-probs were precomputed."""
            if len(calls) < (1 if self.precompute_ref_logps else 2):
                return  # a model whose forward we cannot read: TRL's own metrics only
            mask = inputs["completion_mask"]
            seq_len = mask.size(1) - 1
            logps = calls[0][:, -seq_len:].float().sum(1)
            if self.precompute_ref_logps:
                ref = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]]).to(logps)
            else:
                ref = calls[1][:, -seq_len:].float().sum(1)
            n = mask.sum(1).clamp(min=1).to(logps)  # as sigmoid_norm counts completion tokens
            b = logps.size(0) // 2  # the batch is [chosen..., rejected...]
            tid = transform_id.to(logps) if transform_id is not None else torch.full_like(logps[:b], -1)
            rows = torch.stack([logps[:b], logps[b:], ref[:b], ref[b:], n[:b], n[b:], tid], dim=1)
            if self.model.training:
                for k, v in pair_metrics(self.accelerator.gather(rows), self.beta).items():
                    if k not in _TRL_KEYS and k != "pairs":
                        self._metrics["train"][k].append(v)
            elif self._eval_rows is not None:
                self._eval_rows.append(self.accelerator.gather_for_metrics(rows).cpu())

        def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
            self._eval_rows = []
            try:
                output = super().evaluation_loop(*args, **kwargs)
                rows = torch.cat(self._eval_rows) if self._eval_rows else None
            finally:
                self._eval_rows = None
            if rows is not None:  # exact per-pair means replace TRL's means of batch means; `log` adds eval_
                metrics = grouped_metrics(rows, self.beta, self.transforms)
                self._metrics["eval"].update({k: [v] for k, v in metrics.items()})
            return output

    return LegibilityDPOTrainer


# ----------------------------------------------------------------------------------------------- training


def _dataset(path: Path, keep: list[int], pairs: list[TrainPair], transforms: list[str]) -> Any:
    """The kept pairs in TRL's conversational format, with each pair's transform as an index into `transforms`."""
    from datasets import load_dataset

    ds = load_dataset("json", data_files=str(path), split="train").select(keep)
    ds = ds.add_column("transform_id", [transforms.index(pairs[i].transform) for i in keep])
    return ds.select_columns(["prompt", "chosen", "rejected", "transform_id"])


def _eval_entry(history: list[dict[str, Any]], step: int) -> dict[str, Any]:
    """The eval_* metrics logged at `step` (merged, in case transformers logged them in parts)."""
    out: dict[str, Any] = {}
    for h in history:
        if h.get("step") == step:
            out.update({k: v for k, v in h.items() if k.startswith("eval_")})
    return out


def run_training(
    train: TrainConfig,
    model: str,
    out: str | Path,
    train_file: str | Path,
    eval_file: str | Path | None = None,
    *,
    resume: bool = False,
    experiment: ExperimentConfig | None = None,
) -> Path:
    """Train LoRA adapters on `model` with DPO; returns `out` (checkpoints, adapter/, metrics.jsonl, summary.json).

    `train` is the config's `train:` section; the files are resolved paths (`train_from_config` resolves a whole
    experiment's). `resume=True` continues from the newest complete checkpoint in `out` (optimizer, scheduler, RNG
    and data order restored by the Trainer), so an interrupted run ends at the same step as an uninterrupted one.
    `experiment`, when given, is recorded beside the run (config.yaml) and as the summary's resolved config
    (provenance: git commit, package versions, train/eval file hashes, seed; `train` alone otherwise).
    """
    import torch

    from legibility.config import dump_config
    from legibility.models import load_model, load_tokenizer, resolve_model
    from legibility.provenance import provenance

    t = train
    out = Path(out)
    train_path = Path(train_file)
    eval_path = Path(eval_file) if eval_file is not None else None
    for p in (train_path, eval_path):
        if p is not None and not p.is_file():
            raise LegibilityError(f"{p}: no such file (build the pairs first: legibility pairs build)")
    t.check()  # a bad TRL or PEFT option fails here, before anything is loaded or written
    batch = batch_plan(t, world_size())  # so does a global batch the processes cannot make
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = last_checkpoint(out)
    if checkpoint is not None and not resume:
        raise LegibilityError(f"{out}: has checkpoints from an earlier run; pass --resume or another --out")
    if resume and checkpoint is None:
        log.warning("%s: no checkpoint to resume from; starting from scratch", out)
    if checkpoint is None:
        (out / "metrics.jsonl").unlink(missing_ok=True)

    # Data: validate and measure before loading the model.
    train_pairs = read_pairs(train_path)
    eval_pairs = read_pairs(eval_path) if eval_path else []
    model_dir = resolve_model(model)
    tokenizer = load_tokenizer(model_dir, resolve_chat_template(t.chat_template))
    keep, report = length_report(train_pairs, tokenizer, t.max_length, t.long_pairs)
    eval_keep, eval_report = (
        length_report(eval_pairs, tokenizer, t.max_length, t.long_pairs) if eval_pairs else ([], {})
    )
    if t.max_eval_pairs is not None and len(eval_keep) > t.max_eval_pairs:
        eval_keep = stratified_sample(eval_keep, [p.transform for p in eval_pairs], t.max_eval_pairs, t.seed)
        eval_report["evaluated"] = len(eval_keep)
    for name, r in (("training", report), ("validation", eval_report)):
        if r and r["truncated"]:
            r["note"] = truncation_note(r, name)
            log.warning("%s at max_length %d tokens (by transform: %s)", r["note"], t.max_length,
                        r["truncated_by_transform"])  # fmt: skip
        if r and r["dropped_too_long"]:
            why = "prompt alone fills" if t.long_pairs == "truncate" else "longer than"
            log.warning("%s: %d of %d pairs dropped, %s max_length %d tokens (by transform: %s)", name,
                        r["dropped_too_long"], r["pairs"], why, t.max_length, r["dropped_by_transform"])  # fmt: skip
    if not keep:
        raise LegibilityError(
            f"{train_path}: every pair is longer than train.max_length={t.max_length} tokens (the longest "
            f"{report['longest_tokens']}); raise it, or build the pairs with pairs.max_length <= it"
        )
    if eval_pairs and not eval_keep:
        log.warning("%s: no validation pair fits max_length %d; training without evaluation", eval_path, t.max_length)
    transforms = sorted({p.transform for p in train_pairs + eval_pairs})
    train_ds = _dataset(train_path, keep, train_pairs, transforms)
    eval_ds = _dataset(eval_path, eval_keep, eval_pairs, transforms) if eval_path and eval_keep else None

    # Run-time values, each only where `train.trl` does not set it.
    cuda = torch.cuda.is_available()
    runtime: dict[str, Any] = {}
    if not {"bf16", "fp16"} & set(t.trl):
        runtime["bf16"] = bool(cuda and torch.cuda.is_bf16_supported())  # bf16 on CPU made a step >10x slower
    if "dataloader_pin_memory" not in t.trl:
        runtime["dataloader_pin_memory"] = cuda
    if "disable_tqdm" not in t.trl:
        runtime["disable_tqdm"] = not sys.stderr.isatty()
    if eval_ds is None:
        runtime.update(eval_strategy="no", eval_on_start=False)
    elif checkpoint is not None and resume:
        runtime["eval_on_start"] = False  # step 0 is on record from the first run
    args = t.dpo_config(str(out), batch["world_size"], **runtime)
    if args.world_size != batch["world_size"]:
        raise LegibilityError(f"the launcher runs {args.world_size} processes but WORLD_SIZE is "
                              f"{batch['world_size']}: start training with torchrun or accelerate launch")  # fmt: skip
    peft_config = t.lora_config()
    # TRL reads model_init_kwargs only when it loads the model itself; we load it (the embedded model, the target
    # module check), with the same meaning.
    init_kwargs = dict(args.model_init_kwargs or {})
    args.model_init_kwargs = None
    init_kwargs.setdefault("dtype", torch.bfloat16 if args.bf16 else torch.float32)
    policy = load_model(model_dir, **init_kwargs)
    _check_target_modules(policy, t.lora_target_modules)

    trainer = trainer_class()(
        model=policy,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_metrics_callback(out / "metrics.jsonl")],
        transforms=transforms,
    )
    _compact_console_logs(trainer)
    if trainer.is_world_process_zero():
        if experiment is not None:
            (out / "config.yaml").write_text(dump_config(experiment), encoding="utf-8")
        write_json(out / "data_report.json", {"train": report, "eval": eval_report})

    started = time.time()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if resume and checkpoint else None)
    step = trainer.state.global_step
    history = trainer.state.log_history
    initial_eval = _eval_entry(history, 0) if eval_ds is not None else {}
    final_eval = _eval_entry(history, step) if eval_ds is not None and step > 0 else {}
    if eval_ds is not None and not final_eval:  # transformers evaluates at the last step only on an eval_steps mark
        final_eval = trainer.evaluate()
    trainer.save_model(str(out / "adapter"))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out / "adapter")
        loss_type, loss_weights = t.trl_loss()
        write_json(
            out / "summary.json",
            {
                "global_step": step,
                "train_metrics": result.metrics | _train_loss(history),
                "initial_eval": initial_eval,
                "final_eval": final_eval,
                "loss_type": loss_type,
                "loss_weights": loss_weights,
                "effective_batch_size": batch["global"],
                "batch": batch,
                "transforms": transforms,
                "data": {"train": report, "eval": eval_report},
                "trl_args": {**t.trl_kwargs(batch["world_size"]), **runtime},
                "lora_args": t.lora_kwargs(),
                "provenance": provenance(experiment or t, [p for p in (train_path, eval_path) if p], t.seed),
                "adapter": str(out / "adapter"),
                "resumed_from": str(checkpoint) if resume and checkpoint else None,
                "seconds": round(time.time() - started, 1),
            },
        )
    log.info("trained %d steps; adapter in %s", step, out / "adapter")
    return out


def _train_loss(history: list[dict[str, Any]]) -> dict[str, float]:
    """The mean train loss over every step, from the log history a checkpoint restores: the trainer's own figure
    covers only the steps since a resume. Each logged loss weighs by the steps it averages."""
    total, prev, steps = 0.0, 0, 0
    for e in history:
        if "loss" in e and "step" in e and e["step"] > prev:
            total += e["loss"] * (e["step"] - prev)
            steps += e["step"] - prev
            prev = e["step"]
    return {"train_loss": total / steps} if steps else {}


def _no_pairs(cfg: ExperimentConfig, path: Path, config_path: str | os.PathLike | None) -> str:
    config = config_path or "CONFIG"
    traces = Path(cfg.run_dir) / "traces.jsonl"
    build = f"legibility pairs build {traces} --out {path.parent} --config {config}"
    if traces.is_file():
        return f"{path}: no such file; build the pairs first: {build}"
    return (f"{path}: no such file; build the traces ({traces}, legibility traces import) and then the pairs "
            f"({build}), or run every stage on a fresh run_dir with: python -m legibility.demo {config}")  # fmt: skip


def train_from_config(
    cfg: ExperimentConfig,
    out: str | Path | None = None,
    resume: bool = False,
    config_path: str | os.PathLike | None = None,
) -> Path:
    """`run_training` on an experiment: its `train:` section, model and files (`{run_dir}/train` by default).

    A missing train file is one error naming the command that builds it (`config_path` fills it in).
    """
    t = cfg.train
    train_path = cfg.path(t.train_file)
    if not train_path.is_file():
        raise LegibilityError(_no_pairs(cfg, train_path, config_path))
    eval_path = cfg.path(t.eval_file) if t.eval_file else None
    if eval_path is not None and not eval_path.is_file():
        if t.eval_file != TrainConfig.model_fields["eval_file"].default:
            raise LegibilityError(f"train.eval_file: {eval_path}: no such file")
        log.warning("%s: not found; training without evaluation", eval_path)
        eval_path = None
    out = Path(out) if out is not None else cfg.path("{run_dir}/train")
    return run_training(t, cfg.model, out, train_path, eval_path, resume=resume, experiment=cfg)


def main(argv: list[str] | None = None) -> None:
    """`python -m legibility.train CONFIG [--out DIR] [--resume] [--set k=v ...]` (also under accelerate)."""
    import argparse

    from legibility.config import load_config

    ap = argparse.ArgumentParser(prog="python -m legibility.train", description=main.__doc__)
    ap.add_argument("config")
    ap.add_argument("--out", default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        train_from_config(load_config(a.config, a.overrides), a.out, a.resume, config_path=a.config)
    except LegibilityError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
