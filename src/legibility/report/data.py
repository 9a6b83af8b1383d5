"""Report section 1, Data: traces per generator x benchmark, pairs per transform x benchmark, pair lengths."""

from __future__ import annotations

from typing import Any

import pandas as pd

from legibility.report import figures
from legibility.report.doc import Figure, NotRun, Para, Section, Table, fmt, frame_table

TOKENS_BEFORE = "transform_meta.truncated.{side}.tokens_before"
DASH_TEXT = "not recorded"


def section(res: Any) -> Section:
    s = Section("data", "Data")
    s.children = [_traces(res), _pairs(res), _lengths(res)]
    return s


def _traces(res: Any) -> Section:
    s = Section("data-traces", "Traces")
    t = res.traces
    if t.empty:
        return s.add(NotRun("not run: no traces.jsonl in the run folder"))
    t = t.assign(correct_strict=t["correct_strict"].fillna(False).astype(bool))
    g = t.groupby(["generator", "benchmark"], sort=True)
    df = pd.DataFrame(
        {
            "n": g.size(),
            "complete": g["complete"].sum(),
            "correct_strict": g["correct_strict"].sum(),
            "correct": g["correct"].sum(),
        }
    ).reset_index()
    df["acc_strict"] = df["correct_strict"] / df["n"]
    df["acc_flexible"] = df["correct"] / df["n"]
    total = {
        "generator": "all",
        "benchmark": "",
        **{k: int(df[k].sum()) for k in ("n", "complete", "correct_strict", "correct")},
    }
    total |= {"acc_strict": total["correct_strict"] / total["n"], "acc_flexible": total["correct"] / total["n"]}
    df = pd.concat([df, pd.DataFrame([total])], ignore_index=True)
    names = {
        "correct_strict": "correct (strict)",
        "correct": "correct (flexible)",
        "acc_strict": "strict acc",
        "acc_flexible": "flexible acc",
    }
    return s.add(
        Para(
            "Imported traces, re-graded against gold: strict reads explicit final-answer forms only, flexible adds "
            "the fallbacks. Pairs use the verdict named in `pairs.grading`."
        ),
        frame_table(df, rename=names),
    )


def _pairs(res: Any) -> Section:
    s = Section("data-pairs", "Pairs")
    st = res.pairs_stats
    if st.get("table"):
        df = pd.DataFrame(st["table"])
    elif not res.pairs.empty:
        p = res.pairs
        df = p.groupby(["transform", "benchmark", "generator", "split"]).size().unstack("split", fill_value=0)
        df = df.reset_index()
    else:
        return s.add(NotRun("not run: no pairs/stats.json or pair files"))
    for col in ("train", "val"):
        if col not in df:
            df[col] = 0
    by = df.groupby(["transform", "benchmark"], sort=True)[["train", "val"]].sum().reset_index()
    wide = by.pivot(index="transform", columns="benchmark", values=["train", "val"]).fillna(0).astype(int)
    benches = sorted(by["benchmark"].unique())
    rows = []
    for tr, r in wide.iterrows():
        cells = [tr]
        for b in benches:
            cells += [fmt(int(r[("train", b)])), fmt(int(r[("val", b)]))]
        cells.append(fmt(int(sum(r[("train", b)] + r[("val", b)] for b in benches))))
        rows.append(cells)
    cols = ["transform", *[f"{b} {sp}" for b in benches for sp in ("train", "val")], "total"]
    counts = st.get("counts", {})
    lines = []
    if counts:
        lines.append(
            f"{fmt(counts.get('train'))} train and {fmt(counts.get('val'))} validation pairs from "
            f"{fmt(counts.get('traces'))} traces; problems split by a stable hash (`pairs/split.json`), "
            f"direction {st.get('direction', DASH_TEXT)}."
        )
    if st.get("skipped"):
        lines.append("Traces not used: " + ", ".join(f"{k} ({fmt(v)})" for k, v in st["skipped"].items()) + ".")
    if st.get("errors"):
        lines.append(f"{len(st['errors'])} traces raised in a transform and made no pairs (ids in stats.json).")
    for b in st.get("split", {}).get("benchmarks_without_val", []):
        lines.append(f"Benchmark {b} has no validation problem.")
    return s.add(*(Para(x) for x in lines), Table(cols, rows, "pairs per transform x benchmark and split"))


def _side_summary(tokens: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for split in ("train", "val"):
        for side in ("prompt_chosen", "prompt_rejected"):
            s = tokens.get(split, {}).get(side)
            if s:
                out[f"{split} · {side.replace('_', '+')}"] = s
    return out


def _lengths(res: Any) -> Section:
    s = Section("data-lengths", "Pair lengths")
    st = res.pairs_stats
    tokens = st.get("tokens") or {}
    long = st.get("long_pairs") or {}
    max_length = tokens.get("max_length") or long.get("max_length")
    before: dict[str, list[int]] = {}
    for side in ("chosen", "rejected"):
        col = TOKENS_BEFORE.format(side=side)
        if col in res.pairs:
            vals = res.pairs[col].dropna().astype(int).tolist()
            if vals:
                before[side] = vals
    # per-pair token counts, if a later pairs stage stores them (tokens.<split>.lengths.<side>: [int, ...])
    lengths: dict[str, list[int]] = {}
    for split in ("train", "val"):
        for side, vals in (tokens.get(split, {}).get("lengths") or {}).items():
            lengths.setdefault(side.replace("_", "+"), []).extend(int(v) for v in vals)
    if not tokens and not long and not before and not res.train_data_report:
        return s.add(NotRun("not run: pairs/stats.json has no token statistics (pairs.tokenizer: null?)"))
    png = figures.pair_lengths(_side_summary(tokens), max_length, before, lengths or None)
    if png:
        s.add(
            Figure(
                "pair_lengths",
                png,
                f"Token lengths of prompt + completion ({tokens.get('tokenizer', '?')} "
                f"tokenizer) against max_length {fmt(max_length)}.",
            )
        )
    if not lengths:
        s.add(
            Para(
                "Per-pair token counts are not stored: `pairs/stats.json` keeps min / median / p95 / max per split "
                "and side (left), and each cut CoT keeps its count before the cut in its pair's "
                "`transform_meta.truncated` (right). Dropped pairs leave no count."
            )
        )
    summ = _side_summary(tokens)
    if summ:
        rows = [
            [k, *(fmt(v.get(c), count=c != "median") for c in ("n", "min", "median", "p95", "max"))]
            for k, v in summ.items()
        ]
        s.add(Table(["split · side", "n", "min", "median", "p95", "max"], rows, "tokens after the long-pair policy"))
    if long:
        reasons = ", ".join(f"{k}: {fmt(v)}" for k, v in (long.get("dropped_reasons") or {}).items())
        s.add(
            Para(
                f"Long pairs (policy `{long.get('policy')}`, max_length {fmt(long.get('max_length'))}): "
                f"{fmt(long.get('over_max_length'))} over the limit; {fmt(long.get('truncated_chosen'))} chosen "
                f"and {fmt(long.get('truncated_rejected'))} rejected CoTs cut at a sentence; "
                f"{fmt(long.get('dropped'))} pairs dropped" + (f" ({reasons})" if reasons else "") + "."
            )
        )
        by = long.get("by_transform") or {}
        if by:
            rows = [
                [t, *(fmt(v.get(k, 0)) for k in ("truncated_chosen", "truncated_rejected", "dropped"))]
                for t, v in sorted(by.items())
            ]
            s.add(Table(["transform", "cut chosen", "cut rejected", "dropped"], rows, "long pairs per transform"))
    dr = res.train_data_report
    if dr:
        df = pd.DataFrame(
            [
                {"split": k, **{c: v for c, v in d.items() if not isinstance(v, list | dict)}}
                for k, d in dr.items()
                if isinstance(d, dict)
            ]
        )
        s.add(
            frame_table(
                df,
                caption="training data (train/data_report.json): pairs over train.max_length are "
                "dropped, never truncated",
            )
        )
    return s
