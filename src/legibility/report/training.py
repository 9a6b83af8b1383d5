"""Report section 2, Training: loss and normalized reward metrics vs step, and per transform.

Reads train/metrics.jsonl as the trainer writes it: training lines (loss, rewards_norm/*), evaluation lines from
step 0 (eval_*, and eval_{transform}_* per transform, with eval_{transform}_pairs), and a closing summary line.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from legibility.report import figures
from legibility.report.doc import Figure, NotRun, Para, Section, Table, fmt

_PAIRS = re.compile(r"^eval_(.+)_pairs$")


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
    if batch := summ.get("batch"):
        facts.append(
            f"global batch {fmt(batch['global'])} ({fmt(batch['world_size'])} process(es) x "
            f"{fmt(batch['per_device'])} per device x {fmt(batch['gradient_accumulation_steps'])} accumulation)"
        )
    elif summ.get("effective_batch_size"):  # summaries before the batch record: already over every process
        facts.append(f"global batch {fmt(summ['effective_batch_size'])}")
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
