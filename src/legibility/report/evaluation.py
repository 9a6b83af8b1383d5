"""Report section 3, Results: task accuracy, readers, taxonomy, the legibility tax, early answering, judges,
and the validity of every metric against the nine corruptions. Reads eval/tables/*.csv (and a few records)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from legibility.evaluate.taxonomy import FILTERS as TAXONOMY_FILTERS
from legibility.evaluate.validity import STRENGTHS, TRANSFORM_STRENGTH
from legibility.report import figures
from legibility.report.doc import DASH, Cell, Figure, NotRun, Para, Section, Table, fmt, frame_table, interval

FILTERS = list(TAXONOMY_FILTERS)
LABELS = ["ANSWER_LEAKED", "REASONING_LEGIBLE", "ILLEGIBLE"]
SPACED = {k: k.replace("_", " ") for k in ["n_items", *FILTERS, *LABELS]}
NOT_RUN = "not run: no eval/ folder (`legibility generate` and `legibility eval` write it)"


def generators(res: Any) -> list[str]:
    """Evaluation generators in one order for every figure: the config's, then first seen in the tables."""
    seen: list[str] = []
    cfg = ((res.config.get("generate") or {}).get("generators")) or []
    names = [g.get("name") for g in cfg if isinstance(g, dict)]
    for name in ("accuracy", "readers", "uplift", "taxonomy", "curves", "judges"):
        df = res.tables.get(name)
        if df is not None and "generator" in df:
            names += [g for g in df["generator"].dropna().astype(str)]
    if not res.generations.empty:
        names += res.generations["generator"].astype(str).tolist()
    present = set()
    for df in res.tables.values():
        if "generator" in df:
            present |= set(df["generator"].dropna().astype(str))
    if not res.generations.empty:
        present |= set(res.generations["generator"].astype(str))
    for n in names:
        if n and n != "all" and n in present and n not in seen:
            seen.append(n)
    return seen


def section(res: Any) -> Section:
    s = Section("results", "Results")
    es = res.eval_summary
    counts = es.get("counts") or {}
    if counts:
        s.add(
            Para(
                "Evaluation counts: "
                + ", ".join(
                    f"{k.replace('_', ' ')} {fmt(v)}" for k, v in counts.items() if not isinstance(v, dict | list)
                )
                + "."
            )
        )
    timings = es.get("timings") or es.get("timings_s") or {}
    if timings:
        s.add(Para("Wall time (s): " + ", ".join(f"{k.replace('_', ' ')} {fmt(v)}" for k, v in timings.items()) + "."))
    gens = generators(res)
    builders = [_accuracy, _readers, _taxonomy, _tax, _curves, _judges, _validity]
    s.children = [b(res, gens) for b in builders]
    return s


def _empty(s: Section, res: Any, *names: str) -> Section | None:
    """The section with a "not run" line when no table it reads exists."""
    if not res.has_eval:
        return s.add(NotRun(NOT_RUN))
    if all(res.table(n).empty for n in names):
        return s.add(NotRun(f"not run: no rows in eval/tables/{' or '.join(n + '.csv' for n in names)}"))
    return None


def _accuracy(res: Any, gens: list[str]) -> Section:
    s = Section("results-accuracy", "Task accuracy")
    g = res.generations
    if not g.empty and res.has_eval:
        df = g.assign(failed=g["error"].notna(), truncated=g.get("truncated", False)).groupby("generator", sort=False)
        t = pd.DataFrame(
            {
                "n": df.size(),
                "failed": df["failed"].sum(),
                "truncated": df["truncated"].sum(),
                "correct": df["correct"].sum(),
            }
        ).reset_index()
        if "reasoning_chars" in g:
            t["median CoT chars"] = df["reasoning_chars"].median().to_numpy()
        s.add(frame_table(t, caption="generations (eval/generations.jsonl): failed requests are counted, never graded"))
    if (done := _empty(s, res, "accuracy")) is not None:
        return done
    acc, paired = res.table("accuracy"), res.table("paired")
    png = figures.accuracy(acc, paired, gens)
    if png:
        s.add(
            Figure(
                "task_accuracy",
                png,
                "Task accuracy per benchmark with 95% problem-clustered bootstrap "
                "intervals; right: the paired difference on shared problems.",
            )
        )
    rows = [
        [
            r["generator"],
            r["benchmark"],
            fmt(r["n"], True),
            fmt(r.get("n_problems"), True),
            interval(r["accuracy"], r["low"], r["high"]),
            fmt(r.get("accuracy_strict")),
            fmt(r.get("failed"), True),
        ]
        for _, r in acc.iterrows()
    ]
    s.add(Table(["generator", "benchmark", "n", "problems", "accuracy [95% CI]", "strict", "failed"], rows))
    if not paired.empty:
        has_p = bool("p_value" in paired and paired["p_value"].notna().any())
        rows = []
        for _, r in paired.iterrows():
            row = [
                f"{_named(r['a'], 'a')} − {_named(r['b'], 'b')}",
                r["benchmark"],
                fmt(r["n_problems"], True),
                fmt(r["acc_a"]),
                fmt(r["acc_b"]),
                interval(r["diff"], r["low"], r["high"]),
            ]
            if has_p:
                row.append(fmt(r["p_value"]) + (f" ({r['test']})" if isinstance(r.get("test"), str) else ""))
            rows.append(row)
        cols = ["comparison", "benchmark", "problems", "acc a", "acc b", "diff [95% CI]", *(["p (test)"] * has_p)]
        s.add(Table(cols, rows, "paired comparison on the problems both generators answered"))
    return s


def _named(value: Any, default: str) -> str:
    """A generator name from a table cell; `default` where the table left it out."""
    return value if isinstance(value, str) and value else default


def _readers(res: Any, gens: list[str]) -> Section:
    s = Section("results-readers", "Readers and uplift")
    if (done := _empty(s, res, "readers", "uplift")) is not None:
        return done
    rd, up = res.table("readers"), res.table("uplift")
    png = figures.readers(rd, up, gens)
    if png:
        s.add(
            Figure(
                "readers",
                png,
                "C1: the reader solves alone; C4: answers with no CoT; C2: reads the "
                "generator's masked CoT (c2_prefill: the CoT prefilled). Right: C2 over C4 "
                "per reader and generator.",
            )
        )
    if not rd.empty:
        rows = [
            [
                r["reader"],
                r["condition"],
                r["generator"] if isinstance(r["generator"], str) else DASH,
                fmt(r["n"], True),
                interval(r["accuracy"], r["low"], r["high"]),
                *(_subset_cell(r, sub) for sub in ("gen_right", "no_leak")),
                fmt(r["failed"], True),
            ]
            for _, r in figures.reader_order(rd, gens).iterrows()
        ]
        heads = ["reader", "condition", "generator", "n", "all CoTs [95% CI]", "generator right (n)", "no leak (n)"]
        s.add(
            Table(
                [*heads, "failed"],
                rows,
                "reader accuracy over every CoT, over the CoTs whose generator was right (a reader cannot recover a "
                "right answer from a wrong CoT), and over the CoTs the leak detectors cleared (a leaked answer is "
                "copied, not read); failed readings (request errors, replies cut off with no complete answer) are "
                "counted apart, never scored",
            )
        )
    s.add(
        frame_table(
            up,
            caption="uplift: P(C2 right) − P(C4 right) and the conditional rates; answer uplift (log p(gold | "
            "hand-off with the masked CoT) − log p(gold | the same hand-off with an empty CoT), nats: 0 for an "
            "empty CoT) and CoT surprisal (nats/token) are means; the *no leak* columns repeat them over the CoTs "
            "the leak detectors cleared",
            rename={
                "p_c2_given_c4_right": "P(C2 | C4 right)",
                "p_c2_given_c4_wrong": "P(C2 | C4 wrong)",
                "answer_uplift": "answer uplift",
                "p_c2": "P(C2)",
                "p_c4": "P(C4)",
                "n_no_leak": "n no leak",
                "uplift_no_leak": "uplift no leak",
                "answer_uplift_no_leak": "answer uplift no leak",
            },
        )
    )
    return s


def _subset_cell(r: Any, sub: str) -> str:
    """Accuracy on a subset of the CoTs with its interval and n; a dash for rows with no CoT (C1, C4)."""
    n = r.get(f"n_{sub}")
    if n is None or pd.isna(n):
        return DASH
    return f"{interval(r.get(f'acc_{sub}'), r.get(f'low_{sub}'), r.get(f'high_{sub}'))} ({fmt(n, True)})"


def _taxonomy(res: Any, gens: list[str]) -> Section:
    s = Section("results-taxonomy", "Taxonomy")
    if (done := _empty(s, res, "taxonomy")) is not None:
        return done
    tax = res.table("taxonomy")
    order = {g: i for i, g in enumerate([*gens, "all"])}
    tax = tax.assign(_o=tax["generator"].map(order).fillna(len(order))).sort_values("_o", kind="stable")
    png = figures.taxonomy(tax.reset_index(drop=True), FILTERS + LABELS)
    if png:
        s.add(
            Figure(
                "taxonomy",
                png,
                "Every item under the first filter that removes it (grey), the rest labelled. "
                "A right C2 answer is never counted as a fail.",
            )
        )
    s.add(
        Para(
            "Filters, in order: no reader gave a C2 verdict; the generator's grade was undecided; the generator "
            "was wrong; most readers asked fail C1 (too hard); most readers asked pass C4 (too easy); no leak "
            'detector gave a verdict (leak unknown: never read as "no leak"). Every majority is a strict '
            "majority of the readers ASKED: a reader that could not read (a failed request, a reply cut off, a CoT "
            "beyond its context) counts and does not pass, so the bar does not drop on long CoTs."
        )
    )
    s.add(frame_table(tax, ["generator", "n_items", *FILTERS, *LABELS], rename=SPACED))
    lab = res.labels
    if not lab.empty and "filters_hit" in lab:
        rows = []
        for g, grp in lab.groupby("generator", sort=False):
            hits = [f for fs in grp["filters_hit"] if isinstance(fs, list) for f in fs]
            rows.append([str(g), fmt(len(grp)), *(fmt(hits.count(f)) for f in FILTERS)])
        s.add(
            Table(
                ["generator", "items", *(SPACED[f] for f in FILTERS)],
                rows,
                "each filter on its own (eval/taxonomy.jsonl): items it would remove, whichever came first",
            )
        )
    return s


def tax_points(res: Any, gens: list[str]) -> pd.DataFrame:
    """One point per generator and reader: task accuracy (the "all" row, else n-weighted over benchmarks) and the
    reader's C2 accuracy on the CoTs that generator got right, with their intervals. Over every CoT, C2 accuracy
    would move with task accuracy by construction (a wrong CoT leads to a wrong answer); tables without the
    conditioned column give no point."""
    acc, rd = res.table("accuracy"), res.table("readers")
    rows = []
    for g in gens:
        a = acc[acc["generator"] == g]
        if a.empty:
            continue
        if (a["benchmark"] == "all").any():
            x = a[a["benchmark"] == "all"].iloc[0]
            xs = (x["accuracy"], x["low"], x["high"])
        else:
            w = a["n"].fillna(0).to_numpy(float)
            xs = (float(np.average(a["accuracy"], weights=w)) if w.sum() else np.nan, np.nan, np.nan)
        c2 = rd[(rd["generator"] == g) & (rd["condition"] == "c2")]
        for _, r in c2.iterrows():
            if pd.isna(r.get("acc_gen_right")):
                continue
            rows.append(
                {
                    "generator": g,
                    "reader": r["reader"],
                    "x": xs[0],
                    "x_low": xs[1],
                    "x_high": xs[2],
                    "y": r["acc_gen_right"],
                    "y_low": r.get("low_gen_right"),
                    "y_high": r.get("high_gen_right"),
                    "n": r.get("n_gen_right"),
                }
            )
    return pd.DataFrame(rows)


def _tax(res: Any, gens: list[str]) -> Section:
    s = Section("results-tax", "Legibility tax")
    if (done := _empty(s, res, "accuracy")) is not None:
        return done
    pts = tax_points(res, gens)
    if pts.empty:
        return s.add(
            NotRun("not run: needs task accuracy and reader C2 accuracy on right CoTs for the same generators")
        )
    png = figures.legibility_tax(pts.dropna(subset=["x", "y"]), gens)
    if png:
        s.add(
            Figure(
                "legibility_tax",
                png,
                "Each generator's task accuracy against how often a reader recovers its answer from "
                "the masked CoT (C2) on the CoTs the generator got right, so the y axis does not move "
                "with the x axis by construction. Up and right: accurate and legible.",
            )
        )
    rows = [
        [
            r["generator"],
            r["reader"],
            interval(r["x"], r["x_low"], r["x_high"]),
            interval(r["y"], r["y_low"], r["y_high"]),
            fmt(r["n"], True),
        ]
        for _, r in pts.iterrows()
    ]
    return s.add(Table(["generator", "reader", "task accuracy", "reader C2 accuracy (generator right)", "n"], rows))


def _curves(res: Any, gens: list[str]) -> Section:
    s = Section("results-curves", "Early answering")
    if (done := _empty(s, res, "curves", "aoc", "prefix")) is not None:
        return done
    cv, aoc = res.table("curves"), res.table("aoc")
    png = figures.early_answering(cv, aoc, gens)
    if png:
        s.add(
            Figure(
                "early_answering",
                png,
                "Reader answers when the CoT is cut after a share of its sentences, over every CoT: "
                "solid, right against gold; dashed, the same as the generator's own final answer "
                "(Lanham's variant). AOC (area over the gold curve): large when the answer needs the CoT.",
            )
        )
    if not aoc.empty:
        rows = [
            [
                r["generator"],
                r["reader"],
                _text(r.get("cots"), "all"),
                _text(r.get("measure"), "gold"),
                interval(r["aoc"], r["low"], r["high"]),
                fmt(r["auc"]),
                fmt(r["n_traces"], True),
            ]
            for _, r in aoc.iterrows()
        ]
        s.add(
            Table(
                ["generator", "reader", "CoTs", "against", "AOC [95% CI]", "AUC", "traces"],
                rows,
                "early answering over every CoT and over the CoTs the leak detectors cleared (no_leak), against "
                "gold and against the generator's own final answer (own_answer; CoTs with no answer left out)",
            )
        )
    s.add(
        frame_table(
            res.table("prefix"),
            caption="legible prefix: C2 accuracy on the whole CoT vs cut before the "
            "first chunk the judge scores illegible; a CoT whose prefix reading failed is dropped and counted",
            rename={"n_cut": "cut", "acc_full": "acc (whole CoT)", "acc_prefix": "acc (prefix)"},
        )
    )
    return s


def _text(value: Any, default: str) -> str:
    return value if isinstance(value, str) and value else default


def _judges(res: Any, gens: list[str]) -> Section:
    s = Section("results-judges", "Judges")
    if (done := _empty(s, res, "judges", "agreement")) is not None:
        return done
    png = figures.judge_scores(res.judgements, gens) if not res.judgements.empty else None
    if png:
        s.add(
            Figure(
                "judge_scores",
                png,
                "Judge scores on the generators' CoTs (eval/judgements.jsonl; failed judgements left out).",
            )
        )
    jd = res.table("judges")
    if not jd.empty:
        intact = jd[jd["transform"].fillna("intact") == "intact"]
        s.add(
            frame_table(
                intact,
                ["judge", "kind", "generator", "metric", "n", "mean", "failed"],
                "mean judge scores on the generators' CoTs",
            )
        )
        bad = jd[jd["transform"].fillna("intact") != "intact"]
        if not bad.empty:
            pv = bad.pivot_table(index="transform", columns="metric", values="mean", aggfunc="mean")
            rows = [[t, *(fmt(v) for v in r)] for t, r in pv.iterrows()]
            s.add(Table(["transform", *pv.columns], rows, "mean judge scores on the corrupted validation copies"))
    s.add(
        frame_table(
            res.table("agreement"),
            caption="agreement: Cohen's kappa between readers' C2 verdicts; "
            "Krippendorff's alpha over readers and judges",
        )
    )
    return s


def _auroc_color(a: float) -> str | None:
    """White at 0.5 (blind), green toward 1 (separates as it should), red toward 0 (backwards)."""
    if a is None or np.isnan(a):
        return None
    t = float(np.clip((a - 0.5) * 2, -1, 1))
    end = (74, 157, 91) if t >= 0 else (196, 78, 82)
    k = abs(t) * 0.75
    rgb = [round(255 + (e - 255) * k) for e in end]
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _validity(res: Any, gens: list[str]) -> Section:
    s = Section("results-validity", "Validity against the corruptions")
    if (done := _empty(s, res, "validity")) is not None:
        return done
    v = res.table("validity")
    metrics = sorted(v["metric"].unique())
    rank = {x: i for i, x in enumerate(STRENGTHS)}
    strength = {
        t: (st if isinstance(st, str) else TRANSFORM_STRENGTH.get(t))
        for t, st in zip(v["transform"], v["strength"], strict=True)
    }
    transforms = sorted(strength, key=lambda t: (rank.get(strength[t] or "", len(rank)), t))
    by = {(r["metric"], r["transform"]): r for _, r in v.iterrows()}
    s.add(
        Para(
            "AUROC of intact above corrupted for every metric (rows: the corruptions, strongest first by the "
            "strength the reference model card gives each, word for word). 1: separates as it should; 0.5: "
            "blind; below 0.5: backwards. Intervals resample whole traces (none from a single trace)."
        )
    )
    # one table per model ("kind:model" metrics), at most 4 metric columns each: one table of every metric
    # ran off the page and hid the reader's columns behind a scroll bar
    owners: dict[str, list[str]] = {}
    for m in metrics:
        owners.setdefault(m.partition(":")[2] or m, []).append(m)
    for owner, ms in owners.items():
        for i in range(0, len(ms), 4):
            cols = ms[i : i + 4]
            rows: list[list[str | Cell]] = []
            for t in transforms:
                row: list[str | Cell] = [t, strength[t] or DASH]
                for m in cols:
                    r = by.get((m, t))
                    if r is None:
                        row.append(DASH)
                        continue
                    ci = f"[{fmt(r['low'])}, {fmt(r['high'])}]" if pd.notna(r["low"]) else None
                    row.append(Cell(fmt(r["auroc"]), _auroc_color(r["auroc"]), ci))
                rows.append(row)
            heads = [m.partition(":")[0] for m in cols]
            s.add(Table(["transform", "reference strength", *heads], rows, f"AUROC [95% CI] of {owner}'s metrics"))
    return s
