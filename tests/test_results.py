"""`legibility.results.load` on a fabricated run folder, and the fabricator the report tests share.

`make_run` writes a small but complete run (problems, traces, pairs with stats and split, a training log,
summaries, config, and an eval/ folder with every table and a few records of each kind) from a seeded
generator, so the tests need no model, no runs/ folder (not in git) and no time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from legibility.config import ExperimentConfig, dump_config
from legibility.errors import LegibilityError
from legibility.evaluate.validity import TRANSFORM_STRENGTH
from legibility.pairs import trl_row
from legibility.records import (
    Generation,
    Judgement,
    Message,
    Pair,
    Problem,
    Reading,
    Trace,
    write_json,
    write_jsonl,
)
from legibility.results import TABLES, load

GENERATORS = ("deepseek-r1", "r1-distill-qwen-7b")  # trace sources
EVAL_GENERATORS = ("base", "adapter")
READERS = ("reader-a", "reader-b")
TRANSFORMS = ("cross_substitution", "sentence_shuffle", "number_substitution", "adjacent_swap")
PROVENANCE: dict[str, Any] = {
    "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False},
    "packages": {"legibility": "0.1.0", "torch": "2.13.0+cpu", "transformers": "5.24.0", "trl": "1.16.0"},
    "python": "3.11.7",
    "inputs": [{"path": "runs/fab/traces.jsonl", "sha256": "ab" * 32, "bytes": 12345}],
    "seed": 42,
    "config": {"seed": 42},
}
COT = "First we expand the product. Then we collect like terms. The sum is {a}. So the answer is {a}."


def _problems() -> list[Problem]:
    math = [
        Problem(
            id=f"math/p{i}",
            benchmark="math",
            question=f"What is {i} + {i}?",
            answer=str(2 * i),
            level=3 + i % 3,
            source=f"fixture:{i}",
        )
        for i in range(10)
    ]
    bbh = [
        Problem(
            id=f"bbh/q{i}",
            benchmark="bbh",
            subtask="logical_deduction",
            question=f"Which is first? ({i})",
            choices=["red", "blue", "green"],
            answer="ABC"[i % 3],
            source=f"fixture:{i}",
        )
        for i in range(6)
    ]
    return math + bbh


def _traces(problems: list[Problem], rng: np.random.Generator) -> list[Trace]:
    out = []
    for g in GENERATORS:
        for p in problems:
            ok = bool(rng.random() < 0.75)
            out.append(
                Trace(
                    id=f"{g}/{p.id}/0",
                    problem_id=p.id,
                    benchmark=p.benchmark,
                    subtask=p.subtask,
                    generator=g,
                    prompt=[Message(role="user", content=p.question)],
                    reasoning=COT.format(a=p.answer) * (1 + len(g) % 3),
                    answer_text=f"The answer is {p.answer}.",
                    extracted=p.answer,
                    correct=ok,
                    correct_strict=ok and bool(rng.random() < 0.8),
                    complete=bool(rng.random() < 0.95),
                    meta={"temperature": 0.6},
                )
            )
    return out


def _pairs(traces: list[Trace], val: set[str], rng: np.random.Generator) -> list[Pair]:
    out = []
    for t in traces:
        if not t.correct:
            continue
        for tr in TRANSFORMS:
            meta: dict[str, Any] = {"seed": 1}
            if rng.random() < 0.3:
                before = int(rng.integers(900, 2400))
                meta["truncated"] = {
                    "chosen": {"kept_sentences": 3, "sentences": 8, "tokens": 760, "tokens_before": before}
                }
            out.append(
                Pair(
                    id=f"{t.id}/{tr}",
                    prompt=t.prompt,
                    chosen=f"<think>\n{t.reasoning}\n</think>\n\n{t.answer_text}",
                    rejected=f"<think>\n{t.reasoning[::-1]}\n</think>\n\n{t.answer_text}",
                    transform=tr,
                    transform_meta=meta,
                    trace_id=t.id,
                    donor_scope="split",
                    split="val" if t.problem_id in val else "train",
                    problem_id=t.problem_id,
                    generator=t.generator,
                    benchmark=t.benchmark,
                    subtask=t.subtask,
                )
            )
    return out


def _pair_stats(pairs: list[Pair]) -> dict[str, Any]:
    table = []
    for tr in TRANSFORMS:
        for b in ("bbh", "math"):
            for g in GENERATORS:
                mine = [p for p in pairs if (p.transform, p.benchmark, p.generator) == (tr, b, g)]
                table.append(
                    {
                        "transform": tr,
                        "benchmark": b,
                        "generator": g,
                        "train": sum(p.split == "train" for p in mine),
                        "val": sum(p.split == "val" for p in mine),
                    }
                )

    def summary(n: int, lo: int) -> dict[str, Any]:
        return {"n": n, "min": lo, "median": 700.0, "p95": 765, "max": 768}

    n_train = sum(p.split == "train" for p in pairs)
    return {
        "direction": "legible",
        "seed": 42,
        "counts": {"train": n_train, "val": len(pairs) - n_train, "traces": len({p.trace_id for p in pairs})},
        "by_transform": {tr: sum(p.transform == tr for p in pairs) for tr in TRANSFORMS},
        "table": table,
        "skipped": {"trace incorrect": 7, "trace incomplete": 1},
        "errors": [],
        "errors_by_type": {},
        "long_pairs": {
            "policy": "truncate_cot",
            "max_length": 768,
            "over_max_length": 30,
            "truncated_chosen": 21,
            "truncated_rejected": 12,
            "dropped": 4,
            "dropped_reasons": {"prompt and final answer alone exceed max_length": 4},
        },
        "tokens": {
            "tokenizer": "embedded",
            "max_length": 768,
            "train": {
                "prompt_chosen": summary(n_train, 310),
                "prompt_rejected": summary(n_train, 290),
                "over_max_length": 0,
            },
            "val": {
                "prompt_chosen": summary(len(pairs) - n_train, 402),
                "prompt_rejected": summary(len(pairs) - n_train, 388),
                "over_max_length": 0,
            },
        },
        "provenance": PROVENANCE,
    }


def _eval_metrics(step: int, rng: np.random.Generator, trained: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "step": step,
        "epoch": step / 8,
        "time": 1.7e9 + step,
        "eval_loss": 1.25 - 0.02 * step,
        "eval_pairs": 16.0,
    }
    for prefix in ("", *(f"{t}_" for t in TRANSFORMS)):
        acc = float(rng.uniform(0.4, 1.0)) if trained else 0.0
        row |= {
            f"eval_{prefix}rewards_norm/accuracies": acc,
            f"eval_{prefix}rewards_norm/margins": float(rng.normal(2e-4, 1e-4)) * step,
            f"eval_{prefix}rewards/accuracies": acc,
            f"eval_{prefix}logps_norm/accuracies": float(rng.uniform(0.4, 1.0)),
            f"eval_{prefix}logps_norm/margins": float(rng.normal(0.05, 0.02)),
        }
        if prefix:
            row[f"eval_{prefix}pairs"] = 4.0
    return row


def _train_log(rng: np.random.Generator) -> list[dict[str, Any]]:
    rows = [_eval_metrics(0, rng, trained=False)]
    for step in range(1, 9):
        rows.append(
            {
                "step": step,
                "epoch": step / 8,
                "time": 1.7e9 + step,
                "loss": 1.3 - 0.03 * step + rng.normal(0, 0.02),
                "grad_norm": 3.1,
                "learning_rate": 5e-6,
                "rewards_norm/accuracies": float(rng.uniform(0.3, 0.9)),
                "rewards_norm/margins": float(rng.normal(3e-4, 1e-4)) * step,
                "rewards/accuracies": 0.5,
            }
        )
        if step % 4 == 0:
            rows.append(_eval_metrics(step, rng, trained=True))
    rows.append({"step": 8, "epoch": 1.0, "time": 1.7e9 + 9, "train_loss": 1.2, "train_runtime": 300.0})
    return rows


def _gen(g: str, p: Problem, rng: np.random.Generator, k: int) -> Generation:
    ok = bool(rng.random() < (0.45 if g == "base" else 0.55))
    failed = k == 3 and g == "adapter"
    return Generation(
        id=f"{g}/{p.id}/0",
        problem_id=p.id,
        benchmark=p.benchmark,
        subtask=p.subtask,
        generator=g,
        reasoning="" if failed else COT.format(a=p.answer),
        answer_text="" if failed else f"Answer: {p.answer}",
        correct=ok and not failed,
        correct_strict=ok and not failed,
        raw="<think>...</think>",
        finish_reason=None if failed else "stop",
        error="timeout" if failed else None,
        sampling={"temperature": 0.6, "seed": 0},
        model={"backend": "hf", "model": "embedded"},
    )


def _readings(gens: list[Generation], rng: np.random.Generator) -> list[Reading]:
    out = []
    for g in gens[:8]:
        for reader in READERS:
            for cond in ("c2", "c4"):
                ok = bool(rng.random() < (0.6 if cond == "c2" else 0.3))
                out.append(
                    Reading(
                        id=f"{reader}/{cond}/{g.id}",
                        item_id=g.id if cond == "c2" else None,
                        problem_id=g.problem_id,
                        benchmark=g.benchmark,
                        generator=g.generator if cond == "c2" else None,
                        reader=reader,
                        condition=cond,
                        answer="4",
                        correct=ok,
                        correct_strict=ok,
                        uplift=float(rng.normal(0.3, 0.2)) if cond == "c2" else None,
                        masking={"removed": 1, "rule": "box"},
                    )
                )
    return out


def _judgements(gens: list[Generation], rng: np.random.Generator) -> list[Judgement]:
    out = []
    for g in gens:
        if g.error:
            continue
        shift = 0.4 if g.generator == "adapter" else 0.0
        out.append(
            Judgement(
                id=f"judge/rubric/{g.id}",
                item_id=g.id,
                problem_id=g.problem_id,
                benchmark=g.benchmark,
                generator=g.generator,
                judge="judge",
                kind="rubric",
                prompt_version="v1",
                method="generate",
                legibility=float(min(4, max(0, round(rng.normal(2.2 + shift, 1))))),
                coverage=float(min(4, max(0, round(rng.normal(2.0 + shift, 1))))),
            )
        )
        chunks = [float(np.clip(rng.normal(4.5 - 2 * shift, 1.5), 1, 9)) for _ in range(2)]
        out.append(
            Judgement(
                id=f"judge/illegibility/{g.id}",
                item_id=g.id,
                problem_id=g.problem_id,
                benchmark=g.benchmark,
                generator=g.generator,
                judge="judge",
                kind="illegibility",
                prompt_version="v1",
                method="label_probs",
                chunk_scores=chunks,
                mean=float(np.mean(chunks)),
                share_above=float(np.mean([c > 6 for c in chunks])),
                threshold=6.0,
            )
        )
    return out


def _labels(gens: list[Generation], rng: np.random.Generator) -> list[dict[str, Any]]:
    out = []
    for g in gens:
        hit = [f for f, p in (("generator_wrong", 0 if g.correct else 1), ("too_easy", 0.2)) if rng.random() < p]
        label = None if hit else str(rng.choice(["ANSWER_LEAKED", "REASONING_LEGIBLE", "ILLEGIBLE"]))
        out.append(
            {
                "item_id": g.id,
                "generator": g.generator,
                "label": label,
                "filtered_by": hit[0] if hit else None,
                "filters_hit": hit,
                "c1": [1, 2],
                "c2": [1, 2],
                "c4": [0, 2],
            }
        )
    return out


def _ci(p: float, n: int) -> tuple[float, float]:
    half = 1.96 * (p * (1 - p) / max(n, 1)) ** 0.5
    return max(0.0, p - half), min(1.0, p + half)


def _tables(rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    acc, readers, uplift, tax, curves, aoc, prefix, judges = [], [], [], [], [], [], [], []
    base_acc = {"base": 0.42, "adapter": 0.47}
    for g in EVAL_GENERATORS:
        for b, n in (("bbh", 12), ("math", 20), ("all", 32)):
            p = base_acc[g] + rng.normal(0, 0.05)
            acc.append(
                {
                    "generator": g,
                    "benchmark": b,
                    "n": n,
                    "n_problems": n,
                    "accuracy": p,
                    "low": _ci(p, n)[0],
                    "high": _ci(p, n)[1],
                    "accuracy_strict": p - 0.05,
                    "failed": int(g == "adapter"),
                }
            )
        n_items = 16
        counts = {
            "no_readers": 0,
            "generator_undecided": 1,
            "generator_wrong": 7,
            "too_hard": 1,
            "too_easy": 2,
            "leak_unknown": 1,
        }
        rest = n_items - sum(counts.values())
        leaked = int(rng.integers(0, 2))
        legible = int(rng.integers(1, rest - leaked))
        tax.append(
            {
                "generator": g,
                "n_items": n_items,
                **counts,
                "ANSWER_LEAKED": leaked,
                "REASONING_LEGIBLE": legible,
                "ILLEGIBLE": rest - leaked - legible,
            }
        )
        for r in READERS:
            for cond in ("c2", "c2_prefill"):
                p = 0.55 + rng.normal(0, 0.08)
                readers.append(
                    {
                        "reader": r,
                        "condition": cond,
                        "generator": g,
                        "n": 16,
                        "accuracy": p,
                        "low": _ci(p, 16)[0],
                        "high": _ci(p, 16)[1],
                        "failed": 0,
                        "n_gen_right": 9,
                        "acc_gen_right": p + 0.1,
                        "low_gen_right": _ci(p + 0.1, 9)[0],
                        "high_gen_right": _ci(p + 0.1, 9)[1],
                        "n_no_leak": 12,
                        "acc_no_leak": p - 0.1,
                        "low_no_leak": _ci(p - 0.1, 12)[0],
                        "high_no_leak": _ci(p - 0.1, 12)[1],
                    }
                )
            p2, p4 = 0.55 + rng.normal(0, 0.05), 0.3
            uplift.append(
                {
                    "reader": r,
                    "generator": g,
                    "n": 16,
                    "p_c2": p2,
                    "p_c4": p4,
                    "uplift": p2 - p4,
                    "p_c2_given_c4_right": 0.9,
                    "p_c2_given_c4_wrong": 0.4,
                    "answer_uplift": float(rng.normal(0.4, 0.1)),
                    "surprisal": float(rng.normal(1.2, 0.1)),
                }
            )
            ys = np.clip(np.linspace(0.2, 0.6, 11) + rng.normal(0, 0.03, 11), 0, 1)
            curves += [
                {
                    "generator": g,
                    "reader": r,
                    "cots": "all",
                    "fraction": f / 10,
                    "accuracy": float(y),
                    "agreement": float(y) + 0.1,
                    "uplift": float(y) - 0.2,
                    "n": 14,
                }
                for f, y in enumerate(ys)
            ]
            a = float(np.mean(ys[-1] - ys))
            aoc.append(
                {
                    "generator": g,
                    "reader": r,
                    "cots": "all",
                    "measure": "gold",
                    "aoc": a,
                    "low": a - 0.05,
                    "high": a + 0.05,
                    "auc": 0.4,
                    "n_traces": 14,
                }
            )
            prefix.append(
                {
                    "generator": g,
                    "judge": "judge",
                    "reader": r,
                    "n": 14,
                    "n_cut": 3,
                    "acc_full": 0.55,
                    "acc_prefix": 0.5,
                }
            )
        for kind, metrics in (
            ("rubric", ("legibility", "coverage")),
            ("illegibility", ("illegibility_mean", "illegibility_share")),
        ):
            for m in metrics:
                judges.append(
                    {
                        "judge": "judge",
                        "kind": kind,
                        "generator": g,
                        "transform": "intact",
                        "metric": m,
                        "n": 15,
                        "mean": float(rng.uniform(1, 4)),
                        "failed": 1,
                    }
                )
    for r in READERS:
        for cond in ("c1", "c4"):
            p = 0.35 if cond == "c1" else 0.28
            readers.append(
                {
                    "reader": r,
                    "condition": cond,
                    "generator": None,
                    "n": 16,
                    "accuracy": p,
                    "low": _ci(p, 16)[0],
                    "high": _ci(p, 16)[1],
                    "failed": 1,
                }
            )
    validity = []
    for metric in (
        "c2:reader-a",
        "uplift:reader-a",
        "surprisal:reader-a",
        "legibility:judge",
        "illegibility_mean:judge",
    ):
        for t in TRANSFORMS:
            au = float(np.clip(rng.normal(0.7, 0.15), 0, 1))
            validity.append(
                {
                    "metric": metric,
                    "transform": t,
                    "strength": TRANSFORM_STRENGTH[t],
                    "auroc": au,
                    "low": au - 0.1,
                    "high": min(1.0, au + 0.1),
                    "paired_win_rate": au,
                    "n_traces": 8,
                    "n_corrupted": 8,
                }
            )
    paired = [
        {
            "a": "adapter",
            "b": "base",
            "benchmark": b,
            "n_problems": n,
            "acc_a": 0.5,
            "acc_b": 0.45,
            "diff": 0.05,
            "low": -0.08,
            "high": 0.18,
        }
        for b, n in (("bbh", 12), ("math", 20), ("all", 32))
    ]
    agreement = [
        {"kind": "cohen_kappa", "a": "reader-a", "b": "reader-b", "value": 0.41, "n": 30},
        {"kind": "krippendorff_alpha", "a": "readers+judges", "b": "legible (binary)", "value": 0.22, "n": 30},
    ]
    frames = {
        "accuracy": acc,
        "paired": paired,
        "readers": readers,
        "uplift": uplift,
        "taxonomy": tax,
        "curves": curves,
        "aoc": aoc,
        "prefix": prefix,
        "validity": validity,
        "agreement": agreement,
        "judges": judges,
    }
    return {k: pd.DataFrame(v, columns=TABLES[k]) for k, v in frames.items()}


def make_run(root: Path, *, with_eval: bool = True, name: str = "fab") -> Path:
    """A complete, plausible run folder under `root / name` (deterministic: same files every call)."""
    rng = np.random.default_rng(7)
    run = root / name
    problems = _problems()
    val = {p.id for p in problems[::4]}
    traces = _traces(problems, rng)
    pairs = _pairs(traces, val, rng)
    write_jsonl(run / "problems.jsonl", problems)
    write_jsonl(run / "traces.jsonl", traces)
    write_jsonl(run / "pairs" / "train.jsonl", (trl_row(p) for p in pairs if p.split == "train"))
    write_jsonl(run / "pairs" / "val.jsonl", (trl_row(p) for p in pairs if p.split == "val"))
    write_json(run / "pairs" / "stats.json", _pair_stats(pairs))
    write_json(run / "pairs" / "split.json", {"seed": 42, "benchmarks": {"math": {"val": sorted(val)}}})
    cfg = ExperimentConfig(name=name, run_dir=str(run))
    (run / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    write_jsonl(run / "train" / "metrics.jsonl", _train_log(rng))
    report = {s: {"pairs": 40, "kept": 39, "dropped_too_long": 1, "max_length": 768} for s in ("train", "eval")}
    write_json(run / "train" / "data_report.json", report)
    write_json(
        run / "train" / "summary.json",
        {
            "global_step": 8,
            "train_metrics": {"train_loss": 1.2},
            "loss_type": ["sigmoid_norm", "sft"],
            "effective_batch_size": 8,
            "data": report,
            "provenance": PROVENANCE,
        },
    )
    if not with_eval:
        return run
    held = [p for p in problems if p.id in val] + problems[1:5]
    gens = [_gen(g, p, rng, k) for g in EVAL_GENERATORS for k, p in enumerate(held)]
    write_jsonl(run / "eval" / "generations.jsonl", gens)
    write_jsonl(run / "eval" / "readings.jsonl", _readings(gens, rng))
    write_jsonl(run / "eval" / "judgements.jsonl", _judgements(gens, rng))
    write_jsonl(run / "eval" / "taxonomy.jsonl", _labels(gens, rng))
    for tname, df in _tables(rng).items():
        (run / "eval" / "tables").mkdir(parents=True, exist_ok=True)
        df.to_csv(run / "eval" / "tables" / f"{tname}.csv", index=False)
    note = "Numbers from a small model (SmolLM2-135M as generator, reader and judge) mean little."
    write_json(
        run / "eval" / "summary.json",
        {
            "note": note,
            "counts": {"generations": len(gens), "generation_failures": 1, "readings": 64},
            "timings_s": {"readers": 12.5, "judges": 3.25},
            "provenance": PROVENANCE,
        },
    )
    return run


# --------------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("results"))


def test_load_reads_every_part(run: Path) -> None:
    res = load(run)
    assert res.name == "fab"
    assert len(res.problems) == 16 and {"id", "benchmark", "question", "answer", "question_chars"} <= set(res.problems)
    assert {
        "id",
        "generator",
        "benchmark",
        "correct",
        "correct_strict",
        "complete",
        "reasoning_chars",
        "meta.temperature",
    } <= set(res.traces)
    assert set(res.pairs["split"]) == {"train", "val"}
    assert {"transform", "chosen", "rejected", "chosen_chars", "transform_meta.truncated.chosen.tokens_before"} <= set(
        res.pairs
    )
    assert isinstance(res.pairs["chosen"].iloc[0], str) and res.pairs["chosen"].iloc[0].startswith("<think>")
    assert {"id", "generator", "error", "truncated", "sampling.temperature", "model.backend"} <= set(res.generations)
    assert {"reader", "condition", "correct", "uplift", "masking.rule"} <= set(res.readings)
    assert {"judge", "kind", "legibility", "mean", "chunk_scores"} <= set(res.judgements)
    assert {"item_id", "generator", "label", "filtered_by", "filters_hit"} <= set(res.labels)
    assert set(res.train_log["kind"]) == {"train", "eval", "summary"}
    assert res.train_log.loc[res.train_log["kind"] == "eval", "step"].tolist() == [0, 4, 8]
    assert res.pairs_stats["long_pairs"]["dropped"] == 4 and res.train_summary["global_step"] == 8
    assert res.train_data_report["train"]["kept"] == 39
    assert res.eval_summary["note"] and res.config["name"] == "fab"
    assert res.files["config"] == "config.yaml" and res.has_eval


def test_tables_have_documented_columns(run: Path) -> None:
    res = load(run)
    assert set(res.tables) == set(TABLES)
    for name, cols in TABLES.items():
        assert list(res.tables[name].columns) == cols, name
    readers = res.table("readers")
    assert readers.loc[readers["condition"] == "c1", "generator"].isna().all()  # empty for C1/C4
    assert readers["accuracy"].dtype == float


def test_text_false_keeps_lengths_only(run: Path) -> None:
    res = load(run, text=False)
    for frame, gone in ((res.pairs, "chosen"), (res.traces, "reasoning"), (res.generations, "raw")):
        assert gone not in frame and f"{gone}_chars" in frame
    full = load(run)
    assert (res.pairs["chosen_chars"] == full.pairs["chosen"].str.len()).all()


def test_missing_parts_are_empty(tmp_path: Path) -> None:
    run = make_run(tmp_path, with_eval=False)
    res = load(run)
    assert res.generations.empty and res.tables == {} and res.eval_summary == {} and not res.has_eval
    assert list(res.table("accuracy").columns) == TABLES["accuracy"]
    (tmp_path / "bare").mkdir()
    bare = load(tmp_path / "bare")
    assert bare.traces.empty and bare.train_log.empty and bare.config == {} and bare.name == "bare"


def test_bad_line_names_file_and_line(tmp_path: Path) -> None:
    run = make_run(tmp_path, with_eval=False)
    with (run / "traces.jsonl").open("a") as f:
        f.write('{"id": 1}\n')
    with pytest.raises(LegibilityError, match=r"traces\.jsonl:33"):
        load(run)
    with pytest.raises(LegibilityError, match="no such run folder"):
        load(tmp_path / "nope")


def test_load_twice_is_equal(run: Path) -> None:
    a, b = load(run, text=False), load(run, text=False)
    pd.testing.assert_frame_equal(a.pairs, b.pairs)
    assert json.dumps(a.pairs_stats) == json.dumps(b.pairs_stats)
