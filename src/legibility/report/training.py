"""Report section 2, Training: loss and normalized reward metrics vs step, and per transform.

Reads train/metrics.jsonl as the trainer writes it: training lines (loss, rewards_norm/*), evaluation lines from
step 0 (eval_*, and eval_{transform}_* per transform, with eval_{transform}_pairs), and a closing summary line.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from legibility.config import TrainConfig
from legibility.report import figures
from legibility.report.doc import Figure, NotRun, Para, Section, Table, fmt

_PAIRS = re.compile(r"^eval_(.+)_pairs$")
REFERENCE_LR: float = TrainConfig.model_fields["learning_rate"].default
"""The reference recipe's learning rate (TrainConfig's default, as in configs/qwen3-8b-legibility-dpo.yaml)."""


def learning_rate_note(config: dict[str, Any] | None) -> str | None:
    """One line when the run's learning rate is not the reference's, saying why a short run raises it: a reader
    comparing base and adapter must know the adapter was not trained with the reference recipe. None when it is
    the reference's or the config does not say."""
    lr = ((config or {}).get("train") or {}).get("learning_rate")
    if lr is None or float(lr) == REFERENCE_LR:
        return None
    return (
        f"Learning rate {float(lr):g}, not the reference's {REFERENCE_LR:g}: a short run (the demo's 4 steps) at "
        f"{REFERENCE_LR:g} does not move the adapter measurably (rewards by about 1e-6), so base and adapter would "
        "write the same CoTs."
    )


def section(res: Any) -> Section:
    s = Section("training", "Training")
    s.children = [_curves(res), _transforms(res)]
    return s


def _curves(res: Any) -> Section:
    s = Section("training-curves", "Loss and reward vs step")
    log = res.train_log
    if log.empty:
        return s.add(NotRun("not run: no train/metrics.jsonl"))
    summ = res.train_summary
    facts = []
    if "global_step" in summ:
        facts.append(f"{fmt(summ['global_step'])} optimizer steps")
    batch = batch_fact(summ)
    if batch:
        facts.append(batch)
    for split, r in (summ.get("data") or {}).items():
        if isinstance(r, dict) and r.get("note"):
            facts.append(f"{r['note']} at {fmt(r['max_length'])} tokens ({split} file)")
    if summ.get("loss_type"):
        weights = summ.get("loss_weights") or []
        pairs = [f"{t}×{fmt(w)}" for t, w in zip(summ["loss_type"], weights, strict=False)] or summ["loss_type"]
        facts.append("loss " + " + ".join(pairs))
    tm = summ.get("train_metrics") or {}
    if "train_loss" in tm:
        facts.append(f"mean train loss {fmt(tm['train_loss'])}")
    if facts:
        s.add(Para("; ".join(facts) + "."))
    if note := learning_rate_note(getattr(res, "config", None)):
        s.add(Para(note))
    png = figures.training_curves(log)
    if png:
        s.add(
            Figure(
                "training_curves",
                png,
                "Training logs (lines) and evaluations on the validation pairs (markers, from step 0: the base "
                "model). Normalized: per-token log ratios, what the loss compares. Rewards are 0 at step 0 by "
                "construction; the model's own preference (log-probs of chosen above rejected) is not.",
            )
        )
    return s


def batch_fact(summ: dict[str, Any]) -> str | None:
    """The batch per optimizer step as train/summary.json records it: the global batch (over every process), its
    parts where the summary's `batch` record has them; older summaries' `effective_batch_size` is global too, so it
    is never "per process"."""
    b = summ.get("batch") or {}
    n = b.get("global") or summ.get("effective_batch_size")
    if not n:
        return None
    parts = [(b.get(k), label) for k, label in (("per_device", "per device"),
                                                ("gradient_accumulation_steps", "accumulation steps"),
                                                ("world_size", "processes"))]  # fmt: skip
    known = [f"{fmt(v)} {label}" for v, label in parts if v]
    how = " × ".join(known) if len(known) == len(parts) else "all processes together"
    return f"global batch {fmt(n)} pairs per optimizer step ({how})"


def _eval_rows(log: pd.DataFrame) -> tuple[pd.Series | None, pd.Series | None]:
    ev = log[log["kind"] == "eval"].sort_values("step", kind="stable") if "kind" in log else log.iloc[0:0]
    if ev.empty:
        return None, None
    return ev.iloc[0], ev.iloc[-1]


def transform_frame(log: pd.DataFrame) -> tuple[pd.DataFrame, int | None, int | None]:
    """One row per transform ("all" first): pairs, the last evaluation's normalized reward accuracy and margin,
    the own preference (normalized log-prob accuracy) at the first and last evaluation."""
    first, last = _eval_rows(log)
    if last is None or first is None:
        return pd.DataFrame(), None, None
    names = sorted(m.group(1) for k in log.columns if (m := _PAIRS.match(k)))
    rows = []
    for name, pre in [("all", "eval_"), *((t, f"eval_{t}_") for t in names)]:
        rows.append(
            {
                "transform": name,
                "n": _int(last.get(pre + "pairs")),
                "reward_acc": last.get(pre + "rewards_norm/accuracies"),
                "reward_margin": last.get(pre + "rewards_norm/margins"),
                "pref_0": first.get(pre + "logps_norm/accuracies"),
                "pref_last": last.get(pre + "logps_norm/accuracies"),
            }
        )
    return pd.DataFrame(rows), int(first["step"]), int(last["step"])


def _int(v: Any) -> int | None:
    return None if v is None or pd.isna(v) else int(v)


def _transforms(res: Any) -> Section:
    s = Section("training-transforms", "Per transform")
    if res.train_log.empty:
        return s.add(NotRun("not run: no train/metrics.jsonl"))
    df, first, last = transform_frame(res.train_log)
    if df.empty:
        return s.add(NotRun("not run: no evaluation in train/metrics.jsonl (no validation pairs?)"))
    png = figures.transform_bars(df[df["transform"] != "all"].reset_index(drop=True), first, last)
    if png:
        s.add(
            Figure(
                "transform_accuracy",
                png,
                f"Per transform, the share of validation pairs whose chosen side wins: DPO reward accuracy "
                f"(normalized) at the last evaluation (step {last}) and the model's own preference at step "
                f"{first} and step {last}. Dotted line: chance.",
            )
        )
    rows = [
        [r["transform"], fmt(r["n"]), *(fmt(r[k]) for k in ("reward_acc", "reward_margin", "pref_0", "pref_last"))]
        for _, r in df.iterrows()
    ]
    cols = [
        "transform",
        "pairs",
        f"reward acc (norm), step {last}",
        f"reward margin (norm), step {last}",
        f"own preference, step {first}",
        f"own preference, step {last}",
    ]
    return s.add(Table(cols, rows, "validation pairs per transform (train/metrics.jsonl)"))
