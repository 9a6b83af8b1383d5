"""Terminal tables for stage summaries (shared by the CLI and the demo)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from legibility.records import Trace
from legibility.traces import trace_stats


def print_trace_stats(traces: Iterable[Trace], console: Console) -> None:
    table = Table("generator", "benchmark", "total", "complete", "correct", "accuracy", "usable")
    for r in trace_stats(traces):
        acc = f"{r['correct'] / r['total']:.1%}" if r["total"] else "-"
        table.add_row(r["generator"], r["benchmark"], *(str(r[k]) for k in ("total", "complete", "correct")), acc,
                      str(r["usable"]))  # fmt: skip
    console.print(table)


def print_pair_stats(stats: dict[str, Any], console: Console) -> None:
    """Pairs per transform x benchmark x generator, token lengths, and what could not be made."""
    table = Table("transform", "benchmark", "generator", "train", "val")
    for r in stats["table"]:
        table.add_row(r["transform"], r["benchmark"], r["generator"], str(r["train"]), str(r["val"]))
    console.print(table)
    if "tokens" in stats:
        t = stats["tokens"]
        lengths = Table("split", "prompt+chosen min/median/p95/max", "prompt+rejected min/median/p95/max",
                        f"pairs > {t['max_length']} tokens", title=f"token lengths ({t['tokenizer']})")  # fmt: skip
        fmt = "{min}/{median}/{p95}/{max}"
        for split in ("train", "val"):
            s = t[split]
            lengths.add_row(split, fmt.format(**s["prompt_chosen"]), fmt.format(**s["prompt_rejected"]),
                            str(s["over_max_length"]))  # fmt: skip
        console.print(lengths)
    if stats["skipped"]:
        console.print("not made: " + ", ".join(f"{k} ({v})" for k, v in stats["skipped"].items()))


def print_eval_table(final_eval: dict[str, float], console: Console) -> None:
    """Eval loss, reward accuracy and margin per eval split ("all", then one per transform)."""
    splits = sorted({k[5 : -len("_loss")] for k in final_eval if k.startswith("eval_") and k.endswith("_loss")},
                    key=lambda s: (s != "all", s))  # fmt: skip
    table = Table("eval split", "loss", "reward accuracy", "reward margin", title="evaluation")
    for s in splits:
        get = lambda name, s=s: final_eval.get(f"eval_{s}_{name}")  # noqa: E731
        cells = [get("loss"), get("rewards/accuracies"), get("rewards/margins")]
        table.add_row(s, *("-" if v is None else f"{v:.4g}" for v in cells))
    console.print(table)
