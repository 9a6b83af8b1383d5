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
    long = stats.get("long_pairs")
    if long and long["over_max_length"]:
        console.print(f"over {long['max_length']} tokens: {long['over_max_length']} pairs ({long['policy']}): "
                      f"{long['truncated_chosen']} chosen and {long['truncated_rejected']} rejected CoTs cut at a "
                      f"sentence, {long['dropped']} pairs dropped")  # fmt: skip
    for bench in stats.get("split", {}).get("benchmarks_without_val", []):
        console.print(f"warning: benchmark {bench} has no validation problem (raise val_fraction or add problems)")
    if stats["skipped"]:
        console.print("not made: " + ", ".join(f"{k} ({v})" for k, v in stats["skipped"].items()))
    if stats.get("errors"):
        kinds = ", ".join(f"{k} x{v}" for k, v in stats["errors_by_type"].items())
        console.print(f"errors: {len(stats['errors'])} traces raised and made no pairs ({kinds}); "
                      "trace ids in stats.json \"errors\" (--strict stops at the first)", markup=False)  # fmt: skip


def print_eval_table(metrics: dict[str, float], console: Console, title: str = "evaluation") -> None:
    """One evaluation, all pairs then each transform: the model's own preference (pref: log-probs of chosen vs
    rejected) and the DPO rewards (beta * log ratio to the base model), each per token ("norm", what the loss
    compares) beside summed over tokens ("sum", TRL's rewards/*). Reads LegibilityDPOTrainer's eval_* keys."""
    groups = sorted(g for k in metrics if k.startswith("eval_") and k.endswith("_pairs") and (g := k[5:-6]))
    kinds = [("pref", "logps"), ("reward", "rewards")]
    # before any update every reward is 0 by construction: leave those columns out rather than print zeros
    if all(not v for k, v in metrics.items() if k.startswith("eval_") and "rewards" in k):
        kinds = kinds[:1]
    cols = [(f"{label} {stat}\n{norm}", f"{base}{'_norm' if norm == 'norm' else ''}/{metric}")
            for label, base in kinds for stat, metric in (("acc", "accuracies"), ("margin", "margins"))
            for norm in ("norm", "sum")]  # fmt: skip
    table = Table("transform", "pairs", *(c[0] for c in cols), title=title)
    for name, prefix in [("all", "eval_"), *((g, f"eval_{g}_") for g in groups)]:
        values = [(key, metrics.get(prefix + key)) for _, key in cols]
        cells = ["-" if v is None else f"{v:.0%}" if key.endswith("accuracies") else f"{v:+.3g}" for key, v in values]
        n = metrics.get(prefix + "pairs")
        table.add_row(name, "-" if n is None else str(int(n)), *cells)
    loss = metrics.get("eval_loss")
    table.caption = (f"eval loss {loss:.4g}; " if loss is not None else "") + (
        "acc: share of pairs with chosen > rejected; margin: mean chosen - rejected; "
        "norm: per token (what the loss compares), sum: summed over tokens (TRL's)"
    )
    console.print(table)


def _pct(v: Any) -> str:
    try:
        return "-" if v is None or v != v else f"{float(v):.0%}"
    except (TypeError, ValueError):
        return "-"


def _n(v: Any) -> str:
    return "0" if v != v or v is None else str(int(v))


def print_generate_summary(summary: dict[str, Any], console: Console) -> None:
    """Per generator: samples, failures, truncations and accuracy (flexible and strict)."""
    table = Table("generator", "samples", "failed", "truncated", "correct", "strict", title="generation")
    for name, g in summary.get("generators", {}).items():
        n = g.get("n", 0) - g.get("failed", 0)
        table.add_row(
            name,
            str(g.get("n", 0)),
            str(g.get("failed", 0)),
            str(g.get("truncated", 0)),
            _pct(g.get("correct", 0) / n if n else None),
            _pct(g.get("correct_strict", 0) / n if n else None),
        )
    console.print(table)


def print_eval_summary(eval_dir: Any, summary: dict[str, Any], console: Console) -> None:
    """One screen: task accuracy, reader accuracy per condition, the taxonomy, and the validity AUROCs (mean
    over transforms per metric); every number's detail is in eval/tables/*.csv."""
    from pathlib import Path

    import pandas as pd

    tables = Path(eval_dir) / "tables"

    def read(name: str) -> pd.DataFrame:
        p = tables / f"{name}.csv"
        return pd.read_csv(p, keep_default_na=False, na_values=[""]) if p.is_file() else pd.DataFrame()

    acc = read("accuracy")
    t = Table("generator", "benchmark", "n", "accuracy [95% CI]", "strict", title="task accuracy")
    for r in acc.itertuples():
        t.add_row(
            r.generator,
            r.benchmark,
            str(r.n),
            _pct(r.accuracy) + ("" if r.low != r.low else f" [{_pct(r.low)}, {_pct(r.high)}]"),  # nan: 1 problem
            _pct(r.accuracy_strict),
        )
    console.print(t)
    rd = read("readers")
    if not rd.empty:
        t = Table("reader", "condition", "generator", "n", "accuracy", "failed", title="readers")
        for r in rd.itertuples():
            t.add_row(
                r.reader,
                r.condition,
                str(r.generator or "") if r.generator == r.generator else "",
                str(r.n),
                _pct(r.accuracy),
                str(r.failed),
            )
        console.print(t)
    if not rd.empty and "acc_gen_right" in rd:
        c2 = rd[rd["condition"].isin(["c2", "c2_prefill"])]
        t = Table("reader", "cond", "generator", "all CoTs", "gen right", "no leak", title="C2 on subsets of the CoTs")
        for r in c2.to_dict("records"):
            t.add_row(str(r["reader"]), str(r["condition"]), str(r["generator"]), _pct(r["accuracy"]),
                      f"{_pct(r['acc_gen_right'])} ({_n(r['n_gen_right'])})",
                      f"{_pct(r['acc_no_leak'])} ({_n(r['n_no_leak'])})")  # fmt: skip
        console.print(t)
    tx = read("taxonomy")
    if not tx.empty:
        filters = {"n_items": "CoTs", "no_readers": "no rdr", "generator_undecided": "undecided",
                   "generator_wrong": "gen wrong", "too_hard": "hard", "too_easy": "easy",
                   "leak_unknown": "leak ?"}  # fmt: skip
        labels = {"ANSWER_LEAKED": "LEAKED", "REASONING_LEGIBLE": "LEGIBLE", "ILLEGIBLE": "ILLEGIBLE"}
        for short, title in ((filters, "taxonomy: filtered, in order"), (labels, "taxonomy: labelled")):
            cols = [c for c in short if c in tx.columns]
            t = Table("gen", *(short[c] for c in cols), title=title)
            for r in tx.to_dict("records"):
                t.add_row(str(r["generator"]), *(str(r[c]) for c in cols))
            console.print(t)
    va = read("validity")
    if not va.empty:
        agg = va.groupby("metric")["auroc"].agg(["mean", "min", "max"]).reset_index()
        t = Table("metric", "AUROC mean", "min", "max", title="validity: intact ranked above corrupted (per transform)")
        for r in agg.itertuples():
            t.add_row(r.metric, f"{r.mean:.2f}", f"{r.min:.2f}", f"{r.max:.2f}")
        console.print(t)
    c = summary.get("counts", {})
    console.print(
        f"requests sent {c.get('requests', 0)}, cache hits {c.get('hits', 0)}; failures: "
        f"{c.get('reading_failures', 0)} readings, {c.get('judgement_failures', 0)} judgements; "
        f"{summary.get('timings_s', {}).get('total', 0):.0f} s. Tables: {tables}"
    )
    if summary.get("note"):
        console.print(summary["note"], style="dim")
