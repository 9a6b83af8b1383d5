"""DPO + LoRA training with TRL's `DPOTrainer` and a PEFT `LoraConfig`, defaults = the reference (Together) recipe.

The reference run's loss (DPO, beta 0.3, log ratios normalized by length, plus RPO's NLL term with alpha 0.5) is
expressed in TRL 1.16 as a weighted multi-loss (verified in trl/trainer/dpo_trainer.py, `_compute_loss`):

    loss_type=["sigmoid_norm", "sft"], loss_weights=[1.0, rpo_alpha]

- `sigmoid_norm`: -logsigmoid(beta * (chosen_logratio / n_chosen_tokens - rejected_logratio / n_rejected_tokens)),
  i.e. Together's `dpo_normalize_logratios_by_length=True`. (`sigmoid` is the unnormalized DPO loss.)
- `sft`: mean per-token NLL of the chosen completion, i.e. RPO (`rpo_alpha`, which TRL no longer has as a field).

The reference model is the base model with the LoRA adapters disabled (PEFT default; no second copy in memory).

Multi-GPU: `accelerate launch --config_file configs/accelerate/ddp.yaml -m legibility.train CONFIG` (see
configs/accelerate/ for DDP, FSDP and DeepSpeed ZeRO-3 examples). The effective batch is
per_device_train_batch_size * gradient_accumulation_steps * number of processes.
"""

from __future__ import annotations

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


def length_report(pairs: list[TrainPair], tokenizer: Any, max_length: int) -> tuple[list[int], dict[str, Any]]:
    """Token lengths as DPOTrainer computes them (chat template with / without the generation prompt).

    Returns the indices to keep and a report: pairs whose prompt alone reaches max_length are dropped (TRL would
    drop them silently), pairs whose prompt+completion exceed it are kept and truncated by the collator.
    """
    keep, dropped, truncated, longest = [], [], 0, 0
    for i, p in enumerate(pairs):
        n_prompt = len(_chat_ids(tokenizer, _msgs(p.prompt), add_generation_prompt=True))
        if n_prompt >= max_length:
            dropped.append(p.id)
            continue
        n = max(len(_chat_ids(tokenizer, _msgs(p.prompt + c))) for c in (p.chosen, p.rejected))
        longest = max(longest, n)
        truncated += n > max_length
        keep.append(i)
    return keep, {
        "pairs": len(pairs),
        "kept": len(keep),
        "dropped_prompt_too_long": len(dropped),
        "dropped_ids": dropped[:20],
        "truncated": truncated,
        "longest_tokens": longest,
        "max_length": max_length,
    }


def _chat_ids(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> list[int]:
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
    )
    return list(out["input_ids"])


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


def _trainer_class() -> type:
    from trl import DPOTrainer

    class LegibilityDPOTrainer(DPOTrainer):
        """DPOTrainer whose per-split eval metrics keep their split name.

        With a dict eval_dataset, transformers prefixes its own keys (eval_<split>_loss) but TRL logs its reward
        metrics as eval_rewards/... for every split; rename them eval_<split>_rewards/... before logging.
        """

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if not self.model.training:
                split = next(
                    (k[5:-5] for k in logs if k.startswith("eval_") and k.endswith("_loss") and k != "eval_loss"),
                    None,
                )
                if split:
                    m = self._metrics["eval"]
                    for k in list(m):
                        m[f"{split}_{k}"] = m.pop(k)
            super().log(logs, start_time)

    return LegibilityDPOTrainer


# ----------------------------------------------------------------------------------------------- training


def run_training(cfg: ExperimentConfig, out: str | Path | None = None, resume: bool = False) -> Path:
    """Train LoRA adapters with DPO; returns `out` (checkpoints, adapter/, metrics.jsonl, summary.json).

    `resume=True` continues from the newest complete checkpoint in `out` (optimizer, scheduler, RNG and data
    order restored by the Trainer), so an interrupted run ends at the same step as an uninterrupted one.
    """
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from trl import DPOConfig

    from legibility.config import dump_config
    from legibility.models import load_model, load_tokenizer, resolve_model

    t = cfg.train
    out = Path(out) if out is not None else cfg.path("{run_dir}/train")
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = last_checkpoint(out)
    if checkpoint is not None and not resume:
        raise LegibilityError(f"{out}: has checkpoints from an earlier run; pass --resume or another --out")
    if resume and checkpoint is None:
        log.warning("%s: no checkpoint to resume from; starting from scratch", out)
    if not resume:
        (out / "metrics.jsonl").unlink(missing_ok=True)

    # Data: validate before loading anything heavy.
    train_path = cfg.path(t.train_file)
    train_pairs = read_pairs(train_path)
    eval_path = cfg.path(t.eval_file) if t.eval_file else None
    if eval_path is not None and not eval_path.is_file():
        if t.eval_file != TrainConfig.model_fields["eval_file"].default:
            raise LegibilityError(f"train.eval_file: {eval_path}: no such file")
        log.warning("%s: not found; training without evaluation", eval_path)
        eval_path = None
    eval_pairs = read_pairs(eval_path) if eval_path else []

    model_dir = resolve_model(cfg.model)
    tokenizer = load_tokenizer(model_dir, resolve_chat_template(t.chat_template))
    keep, report = length_report(train_pairs, tokenizer, t.max_length)
    eval_keep, eval_report = length_report(eval_pairs, tokenizer, t.max_length) if eval_pairs else ([], {})
    if t.max_eval_pairs is not None and len(eval_keep) > t.max_eval_pairs:
        eval_keep = sorted(random.Random(t.seed).sample(eval_keep, t.max_eval_pairs))
        eval_report["evaluated"] = len(eval_keep)
    for name, r in (("train", report), ("eval", eval_report)):
        if r and (r["dropped_prompt_too_long"] or r["truncated"]):
            log.warning(
                "%s: %d of %d pairs dropped (prompt alone >= max_length %d), %d truncated to max_length",
                name, r["dropped_prompt_too_long"], r["pairs"], t.max_length, r["truncated"],
            )  # fmt: skip
    if not keep:
        raise LegibilityError(f"{train_path}: every pair's prompt is longer than train.max_length={t.max_length}")

    columns = ["prompt", "chosen", "rejected", "transform"]
    train_ds = load_dataset("json", data_files=str(train_path), split="train").select(keep).select_columns(columns)
    eval_ds: Any = None
    if eval_path and eval_keep:
        full = load_dataset("json", data_files=str(eval_path), split="train").select(eval_keep)
        full = full.select_columns(columns)
        eval_ds = {"all": full}
        if t.eval_per_transform:
            for tr in sorted(Counter(full["transform"])):
                eval_ds[tr] = full.filter(lambda ex, tr=tr: ex["transform"] == tr)

    cuda = torch.cuda.is_available()
    bf16 = t.bf16 if t.bf16 is not None else bool(cuda and torch.cuda.is_bf16_supported())
    model_kwargs = {"attn_implementation": t.attn_implementation} if t.attn_implementation else {}
    model = load_model(model_dir, dtype=torch.bfloat16 if bf16 else torch.float32, **model_kwargs)
    _check_target_modules(model, t.lora_target_modules)

    loss_type, loss_weights = t.trl_loss()
    eval_steps = t.eval_steps if t.eval_steps is not None else t.save_steps
    args = DPOConfig(
        output_dir=str(out),
        beta=t.beta,
        loss_type=loss_type,
        loss_weights=loss_weights,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        lr_scheduler_kwargs={"num_cycles": t.num_cycles} if t.lr_scheduler_type.startswith("cosine") else {},
        warmup_steps=t.warmup_ratio,  # float < 1 = ratio of total steps (transformers 5)
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        max_grad_norm=t.max_grad_norm,
        weight_decay=t.weight_decay,
        optim=t.optim,
        seed=t.seed,
        data_seed=t.seed,
        max_length=t.max_length,
        truncation_mode="keep_start",
        activation_checkpointing=t.gradient_checkpointing,  # transformers 5 name of gradient_checkpointing
        precompute_ref_log_probs=t.precompute_ref_log_probs,
        bf16=bf16,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if eval_ds else "no",
        eval_steps=eval_steps if eval_ds else None,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        report_to=[r for r in t.report_to if r != "none"] or "none",
        disable_tqdm=not sys.stderr.isatty(),
        dataloader_pin_memory=cuda,
    )
    peft_config = LoraConfig(
        r=t.lora_r,
        lora_alpha=t.lora_alpha,
        lora_dropout=t.lora_dropout,
        target_modules=list(t.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_metrics_callback(out / "metrics.jsonl")],
    )
    if trainer.is_world_process_zero():
        (out / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
        write_json(out / "data_report.json", {"train": report, "eval": eval_report})

    started = time.time()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if resume and checkpoint else None)
    final_eval: dict[str, float] = {}
    step = trainer.state.global_step
    if eval_ds:
        # transformers evaluates at the last step itself; evaluate only if it did not
        for h in trainer.state.log_history:
            if h.get("step") == step and any(k.startswith("eval_") for k in h):
                final_eval.update({k: v for k, v in h.items() if k.startswith("eval_")})
        if not final_eval:
            final_eval = trainer.evaluate()
    trainer.save_model(str(out / "adapter"))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out / "adapter")
        write_json(
            out / "summary.json",
            {
                "global_step": step,
                "train_metrics": result.metrics,
                "final_eval": final_eval,
                "loss_type": loss_type,
                "loss_weights": loss_weights,
                "effective_batch_size": t.effective_batch_size * trainer.args.world_size,
                "data": {"train": report, "eval": eval_report},
                "adapter": str(out / "adapter"),
                "resumed_from": str(checkpoint) if resume and checkpoint else None,
                "seconds": round(time.time() - started, 1),
            },
        )
    log.info("trained %d steps; adapter in %s", step, out / "adapter")
    return out


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
        run_training(load_config(a.config, a.overrides), a.out, a.resume)
    except LegibilityError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
