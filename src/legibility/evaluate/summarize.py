"""From evaluation records to the tables a report shows: pure functions, no model, no files.

Every table is a DataFrame with fixed columns (the report and `legibility.results` read them by name):
readers, uplift, taxonomy, curves, aoc, prefix, validity, agreement, judges; task accuracy and the paired
comparison come from `evaluate.accuracy`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from legibility.evaluate import agreement, curves, stats, taxonomy, validity
from legibility.evaluate.items import EvalItem
from legibility.records import Judgement, Reading

SUBSETS = ("gen_right", "no_leak")
"""CoT subsets reported beside "all": the generator's answer was right; the leak detectors said NO."""
READERS_COLUMNS = ["reader", "condition", "generator", "n", "accuracy", "low", "high", "failed",
                   *(f"{k}_{sub}" for sub in SUBSETS for k in ("n", "acc", "low", "high"))]  # fmt: skip
UPLIFT_COLUMNS = ["reader", "generator", "n", "p_c2", "p_c4", "uplift", "p_c2_given_c4_right",
                  "p_c2_given_c4_wrong", "answer_uplift", "surprisal", "n_no_leak", "uplift_no_leak",
                  "answer_uplift_no_leak"]  # fmt: skip
TAXONOMY_COLUMNS = ["generator", "n_items", *taxonomy.FILTERS, *(lab.value for lab in taxonomy.Label)]
CURVES_COLUMNS = ["generator", "reader", "cots", "fraction", "accuracy", "agreement", "uplift", "n", "n_agreement"]
AOC_COLUMNS = ["generator", "reader", "cots", "measure", "aoc", "low", "high", "auc", "n_traces"]
PREFIX_COLUMNS = ["generator", "judge", "reader", "n", "n_cut", "failed", "acc_full", "acc_prefix"]
VALIDITY_COLUMNS = ["metric", "transform", "strength", "auroc", "low", "high", "paired_win_rate", "n_traces",
                    "n_corrupted"]  # fmt: skip
AGREEMENT_COLUMNS = ["kind", "a", "b", "value", "n"]
JUDGES_COLUMNS = ["judge", "kind", "generator", "transform", "metric", "n", "mean", "failed"]


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


def generated(r: Reading) -> bool:
    """A reading of a generated CoT or of the bare question (not of a validity copy, ids "{trace}#{transform}")."""
    return r.item_id is None or "#" not in r.item_id


# ------------------------------------------------------------------------------------------------ readers


def _accuracy_cells(rs: Sequence[Reading], n_boot: int, seed: Any, suffix: str = "") -> dict[str, Any]:
    """n, accuracy and its question-clustered interval over the readings with a verdict."""
    ok = [r for r in rs if r.correct is not None]
    row: dict[str, Any] = {f"n{suffix}": len(ok)}
    if ok:
        iv = stats.clustered_mean([float(bool(r.correct)) for r in ok], [r.problem_id for r in ok], n_boot=n_boot,
                                  seed=seed)  # fmt: skip
        row |= {f"{'acc' if suffix else 'accuracy'}{suffix}": iv.estimate, f"low{suffix}": iv.low,
                f"high{suffix}": iv.high}  # fmt: skip
    return row


def readers_table(readings: Sequence[Reading], items: Sequence[EvalItem], n_boot: int, seed: int) -> pd.DataFrame:
    """Reader accuracy per reader x condition (x generator for C2), question-clustered 95% intervals; failed
    readings are counted, never scored. Only intact CoTs (the validity copies have their own table).

    C2 rows also give the accuracy on the CoTs whose generator was right (`*_gen_right`: a reader cannot recover
    a right answer from a wrong CoT, so over every CoT reader accuracy moves with task accuracy by construction)
    and on the CoTs the leak detectors cleared (`*_no_leak`: a leaked answer is copied, not read)."""
    right = {it.id for it in items if it.correct is True}
    leaks = leak_verdicts(readings)
    groups: dict[tuple[str, str, str], list[Reading]] = defaultdict(list)
    for r in readings:
        if r.role != "reasoning_reader" or r.condition not in ("c1", "c2", "c2_prefill", "c4"):
            continue
        if not generated(r):
            continue
        groups[(r.reader, r.condition, r.generator or "")].append(r)
    rows = []
    for k, ((reader, cond, gen), rs) in enumerate(sorted(groups.items())):
        row = {"reader": reader, "condition": cond, "generator": gen, "failed": sum(r.correct is None for r in rs)}
        row |= _accuracy_cells(rs, n_boot, np.random.default_rng([seed, k]))
        if cond in ("c2", "c2_prefill"):
            subsets = {"gen_right": [r for r in rs if r.item_id in right],
                       "no_leak": [r for r in rs if leaks.get(r.item_id or "") is False]}  # fmt: skip
            for j, (sub, part) in enumerate(subsets.items(), 1):
                row |= _accuracy_cells(part, n_boot, np.random.default_rng([seed, k, j]), f"_{sub}")
        rows.append(row)
    return _frame(rows, READERS_COLUMNS)


def leak_verdicts(readings: Sequence[Reading]) -> dict[str, bool | None]:
    """Per item the leak detectors read: True when a strict majority of the detectors with a verdict say it
    leaks, False when not, None when none gave a verdict (every check failed: unknown, never "no leak")."""
    got: dict[str, list[bool | None]] = defaultdict(list)
    for r in readings:
        if r.condition == "leak" and r.item_id is not None:
            got[r.item_id].append(r.correct)
    out: dict[str, bool | None] = {}
    for item_id, fired in got.items():
        known = [f for f in fired if f is not None]
        out[item_id] = taxonomy.majority(sum(known), len(known)) if known else None
    return out


def item_outcomes(items: Sequence[EvalItem], readings: Sequence[Reading]) -> list[taxonomy.ItemOutcome]:
    """Protocol v3 inputs per generated CoT: C1/C4 per (reader, problem), C2 per (reader, item), which conditions
    each reader was asked (a reading exists, failed or not), and the leak detectors' verdict (`leak_verdicts`;
    None, unknown, when no detector gave one or none ran)."""
    per_problem: dict[tuple[str, str, str], Reading] = {}
    per_item: dict[tuple[str, str, str], Reading] = {}
    roles: dict[str, str] = {}
    for r in readings:
        roles[r.reader] = r.role
        if r.condition in ("c1", "c4"):
            per_problem[(r.reader, r.condition, r.problem_id)] = r
        elif r.condition == "c2" and r.item_id is not None:
            per_item[(r.reader, r.condition, r.item_id)] = r
    reasoning = sorted(n for n, role in roles.items() if role == "reasoning_reader")
    leaks = leak_verdicts(readings)
    out = []
    for it in items:
        outs = []
        for name in reasoning:
            c1 = per_problem.get((name, "c1", it.problem.id))
            c4 = per_problem.get((name, "c4", it.problem.id))
            c2 = per_item.get((name, "c2", it.id))
            asked = frozenset(k for k, r in (("c1", c1), ("c2", c2), ("c4", c4)) if r is not None)
            outs.append(taxonomy.ReaderOutcome(
                name, c1.correct if c1 else None, c2.correct if c2 else None, c4.correct if c4 else None,
                c2.answer if c2 else None, c4.answer if c4 else None, asked=asked,  # type: ignore[arg-type]
            ))  # fmt: skip
        out.append(taxonomy.ItemOutcome(it.id, it.correct, leaks.get(it.id), tuple(outs), it.generator,
                                        it.problem.id))  # fmt: skip
    return out


def taxonomy_tables(outcomes: Sequence[taxonomy.ItemOutcome]) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Per generator (and "all"): every filter's sequential count and the label counts; plus one record per item."""
    rows, records = [], []
    by_gen: dict[str, list[taxonomy.ItemOutcome]] = defaultdict(list)
    for o in outcomes:
        by_gen[o.generator or ""].append(o)
    for gen, group in [*sorted(by_gen.items()), ("all", list(outcomes))]:
        res = taxonomy.classify(group)
        rows.append({"generator": gen, "n_items": res.n_items, **res.filter_counts, **res.label_counts})
        if gen == "all":
            for lab in res.items:
                records.append({
                    "item_id": lab.item_id, "generator": lab.generator,
                    "label": lab.label.value if lab.label else None, "filtered_by": lab.filtered_by,
                    "filters_hit": list(lab.filters_hit), "c1": list(lab.votes.c1), "c2": list(lab.votes.c2),
                    "c4": list(lab.votes.c4),
                })  # fmt: skip
    return _frame(rows, TAXONOMY_COLUMNS), records


def uplift_table(outcomes: Sequence[taxonomy.ItemOutcome], readings: Sequence[Reading]) -> pd.DataFrame:
    """Per reader x generator: C2 over C4 (a C2 pass whose answer equals the C4 answer is a pass, not a fail),
    and the mean continuous measures (answer uplift and CoT surprisal, nats) on intact generated CoTs; over all
    CoTs and, `*_no_leak`, over the CoTs the leak detectors cleared."""
    cont: dict[tuple[str, str], list[Reading]] = defaultdict(list)
    for r in readings:
        if r.condition == "c2" and r.item_id is not None and generated(r):
            cont[(r.reader, r.generator or "")].append(r)
    clean = {o.item_id for o in outcomes if o.leak_detected is False}
    by_gen: dict[str, list[taxonomy.ItemOutcome]] = defaultdict(list)
    for o in outcomes:
        by_gen[o.generator or ""].append(o)
    rows = []
    for gen, group in [*sorted(by_gen.items()), ("all", list(outcomes))]:
        unleaked = taxonomy.reader_uplift([o for o in group if o.item_id in clean])
        for name, u in taxonomy.reader_uplift(group).items():
            rs = [r for (rd, g), v in cont.items() if rd == name and (gen == "all" or g == gen) for r in v]
            nl = unleaked.get(name)
            rows.append({
                "reader": name, "generator": gen, "n": u.n, "p_c2": u.p_c2, "p_c4": u.p_c4, "uplift": u.uplift,
                "p_c2_given_c4_right": u.p_c2_given_c4_right, "p_c2_given_c4_wrong": u.p_c2_given_c4_wrong,
                "answer_uplift": _mean(r.uplift for r in rs), "surprisal": _mean(r.surprisal for r in rs),
                "n_no_leak": nl.n if nl else 0, "uplift_no_leak": nl.uplift if nl else math.nan,
                "answer_uplift_no_leak": _mean(r.uplift for r in rs if r.item_id in clean),
            })  # fmt: skip
    return _frame(rows, UPLIFT_COLUMNS)


def _mean(values: Iterable[float | None]) -> float:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


# ------------------------------------------------------------------------------------------------- curves


def curve_tables(readings: Sequence[Reading], fractions: Sequence[float], n_boot: int, seed: int
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Early answering on generated CoTs, per generator x reader x CoT subset ("all", and "no_leak": the leak
    detectors said NO): per cut the accuracy against gold, the agreement with the generator's own final answer
    (Lanham's variant; CoTs with no stated answer left out) and the mean uplift; the AOC of each curve
    (`measure` "gold" / "own_answer") with a question-clustered interval."""
    early = [r for r in readings if r.condition == "early" and generated(r) and r.correct is not None]
    leaks = leak_verdicts(readings)
    fr = [float(f) for f in fractions]
    rows, aocs = [], []
    for reader in sorted({r.reader for r in early}):
        for cots in ("all", "no_leak"):
            mine = [r for r in early if r.reader == reader and (cots == "all" or leaks.get(r.item_id or "") is False)]
            curves_by: dict[str, dict[str, curves.GeneratorCurve]] = defaultdict(dict)
            for measure, attr in (("gold", "correct"), ("own_answer", "agrees")):
                answers = [
                    curves.EarlyAnswer(
                        r.generator or "",
                        r.item_id or "",
                        float(r.fraction or 0.0),
                        bool(getattr(r, attr)),
                        r.problem_id,
                    )
                    for r in mine
                    if getattr(r, attr) is not None
                ]
                answers = [a for a in answers if _has_every_cut(answers, a.generator, fr)]  # fmt: skip
                for c in curves.early_answering_curves(answers, fr, n_boot=n_boot, seed=seed):
                    curves_by[c.generator][measure] = c
                    aocs.append({"generator": c.generator, "reader": reader, "cots": cots, "measure": measure,
                                 "aoc": c.aoc, "low": c.aoc_low, "high": c.aoc_high, "auc": c.auc,
                                 "n_traces": c.n_traces})  # fmt: skip
            for gen, got in sorted(curves_by.items()):
                gold, own = got.get("gold"), got.get("own_answer")
                for j, f in enumerate(fr):
                    at = [r for r in mine if r.generator == gen and float(r.fraction or 0.0) == f]
                    rows.append({"generator": gen, "reader": reader, "cots": cots, "fraction": f,
                                 "accuracy": gold.accuracy[j] if gold else math.nan,
                                 "agreement": own.accuracy[j] if own else math.nan,
                                 "uplift": _mean(r.uplift for r in at), "n": len(at),
                                 "n_agreement": sum(r.agrees is not None for r in at)})  # fmt: skip
    return _frame(rows, CURVES_COLUMNS), _frame(aocs, AOC_COLUMNS)


def _has_every_cut(answers: Sequence[curves.EarlyAnswer], generator: str, fractions: Sequence[float]) -> bool:
    """Does this generator have an answer at every cut (a curve needs them all)?"""
    return {a.fraction for a in answers if a.generator == generator} >= set(fractions)


def prefix_table(readings: Sequence[Reading], prefix_meta: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The legible-prefix ablation: accuracy with the whole (masked) CoT vs cut at the first chunk the judge
    scores illegible, per generator; `prefix_meta[item_id]` = {judge, reader, cut: bool}. A CoT whose prefix
    reading failed (or whose whole-CoT reading did) is dropped and counted in `failed`, never given the other's
    verdict."""
    full = {(r.reader, r.item_id): r for r in readings if r.condition == "c2"}
    pref = {(r.reader, r.item_id): r for r in readings if r.condition == "prefix"}
    groups: dict[tuple[str, str, str], list[tuple[bool, bool, bool]]] = defaultdict(list)
    failed: dict[tuple[str, str, str], int] = defaultdict(int)
    for item_id, m in sorted(prefix_meta.items()):
        f = full.get((m["reader"], item_id))
        if f is None:
            continue
        key = (f.generator or "", m["judge"], m["reader"])
        p = pref.get((m["reader"], item_id)) if m["cut"] else f
        if f.correct is None or p is None or p.correct is None:
            failed[key] += 1
            continue
        groups[key].append((bool(f.correct), bool(p.correct), m["cut"]))
    rows = [{"generator": g, "judge": j, "reader": r, "n": len(v), "n_cut": sum(c for _, _, c in v),
             "failed": failed.get((g, j, r), 0),
             "acc_full": float(np.mean([a for a, _, _ in v])) if v else math.nan,
             "acc_prefix": float(np.mean([b for _, b, _ in v])) if v else math.nan}
            for (g, j, r), v in sorted({k: groups.get(k, []) for k in {*groups, *failed}}.items())]  # fmt: skip
    return _frame(rows, PREFIX_COLUMNS)


# ------------------------------------------------------------------------------------------------- judges


def judge_values(j: Judgement) -> dict[str, float]:
    """The numbers one judgement contributes, by metric name."""
    if j.error is not None:
        return {}
    if j.kind == "rubric":
        return {k: v for k, v in (("legibility", j.legibility), ("coverage", j.coverage)) if v is not None}
    out = {}
    if j.mean is not None:
        out["illegibility_mean"] = j.mean
    if j.share_above is not None:
        out["illegibility_share"] = j.share_above
    return out


def judges_table(judgements: Sequence[Judgement]) -> pd.DataFrame:
    groups: dict[tuple[str, str, str, str], list[Judgement]] = defaultdict(list)
    for j in judgements:
        groups[(j.judge, j.kind, j.generator or "", j.transform)].append(j)
    rows = []
    for (judge, kind, gen, tr), js in sorted(groups.items()):
        metrics = ["legibility", "coverage"] if kind == "rubric" else ["illegibility_mean", "illegibility_share"]
        failed = sum(j.error is not None for j in js)
        for m in metrics:
            vals = [judge_values(j).get(m) for j in js]
            vals = [v for v in vals if v is not None]
            rows.append(
                {
                    "judge": judge,
                    "kind": kind,
                    "generator": gen,
                    "transform": tr,
                    "metric": m,
                    "n": len(vals),
                    "mean": float(np.mean(vals)) if vals else float("nan"),
                    "failed": failed,
                }
            )
    return _frame(rows, JUDGES_COLUMNS)


# ------------------------------------------------------------------------------------------------ validity

HIGHER_IS_LEGIBLE = {"c2": True, "uplift": True, "surprisal": False, "legibility": True, "coverage": True,
                     "illegibility_mean": False, "illegibility_share": False, "early_aoc": True}  # fmt: skip


def validity_values(readings: Sequence[Reading], judgements: Sequence[Judgement],
                    fractions: Sequence[float]) -> list[validity.MetricValue]:  # fmt: skip
    """Every metric's value on every validity CoT (ids "{trace_id}#{transform}"), named "{metric}:{who}"."""
    out: list[validity.MetricValue] = []

    def add(item_id: str | None, metric: str, who: str, value: float | None) -> None:
        if item_id is None or "#" not in item_id or value is None or math.isnan(value):
            return
        trace_id, _, transform = item_id.rpartition("#")
        out.append(validity.MetricValue(trace_id, transform, float(value), f"{metric}:{who}",
                                        HIGHER_IS_LEGIBLE[metric]))  # fmt: skip

    cuts: dict[tuple[str, str], dict[float, bool]] = defaultdict(dict)
    for r in readings:
        if r.role != "reasoning_reader":
            continue
        if r.condition == "c2":
            add(r.item_id, "c2", r.reader, None if r.correct is None else float(r.correct))
            add(r.item_id, "uplift", r.reader, r.uplift)
            add(r.item_id, "surprisal", r.reader, r.surprisal)
        elif r.condition == "early" and r.correct is not None and r.item_id and "#" in r.item_id:
            cuts[(r.reader, r.item_id)][float(r.fraction or 0.0)] = bool(r.correct)
    fr = [float(f) for f in fractions]
    for (reader, item_id), got in cuts.items():
        if set(got) >= set(fr):
            add(item_id, "early_aoc", reader, curves.area_over_curve([float(got[f]) for f in fr], fr))
    for j in judgements:
        for m, v in judge_values(j).items():
            add(j.item_id, m, j.judge, v)
    return out


def validity_frame(values: Sequence[validity.MetricValue], n_boot: int, seed: int) -> pd.DataFrame:
    checks = validity.validate(values, n_boot=n_boot, seed=seed)
    df = validity.checks_frame(checks)
    if df.empty:
        return _frame([], VALIDITY_COLUMNS)
    return df[VALIDITY_COLUMNS]


# ----------------------------------------------------------------------------------------------- agreement


def agreement_table(readings: Sequence[Reading], judgements: Sequence[Judgement], threshold: float) -> pd.DataFrame:
    """Cohen's kappa between every two reasoning readers (C2 verdicts on the same CoTs) and Krippendorff's alpha
    over readers and judges together on one binary question, "is this CoT legible": a reader's C2 pass, a rubric
    legibility of at least 3, an illegibility mean at or below the threshold."""
    c2: dict[str, dict[str, bool]] = defaultdict(dict)
    for r in readings:
        if r.condition == "c2" and r.role == "reasoning_reader" and r.correct is not None and r.item_id:
            c2[r.reader][r.item_id] = bool(r.correct)
    legible: dict[str, dict[str, bool]] = {f"reader:{k}": v for k, v in c2.items()}
    for j in judgements:
        vals = judge_values(j)
        if "legibility" in vals:
            legible.setdefault(f"judge:{j.judge}:rubric", {})[j.item_id] = vals["legibility"] >= 3
        if "illegibility_mean" in vals:
            legible.setdefault(f"judge:{j.judge}:illegibility", {})[j.item_id] = vals["illegibility_mean"] <= threshold
    rows = []
    names = sorted(c2)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = sorted(set(c2[a]) & set(c2[b]))
            k = agreement.cohen_kappa([c2[a][x] for x in shared], [c2[b][x] for x in shared])
            rows.append({"kind": "cohen_kappa", "a": a, "b": b, "value": k, "n": len(shared)})
    if len(legible) >= 2:
        ids = sorted(set().union(*(set(v) for v in legible.values())))
        ratings = {k: [v.get(x) for x in ids] for k, v in sorted(legible.items())}
        rows.append({"kind": "krippendorff_alpha", "a": "readers+judges", "b": "legible (binary)",
                     "value": agreement.krippendorff_alpha(ratings), "n": len(ids)})  # fmt: skip
    return _frame(rows, AGREEMENT_COLUMNS)
