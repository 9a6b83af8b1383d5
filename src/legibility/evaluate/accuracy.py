"""Task accuracy of the generations: per generator and benchmark, and generator A against B on shared problems.

Why it is computed this way:
- Failed requests (`error` set) are counted (`failed`) and left out of every rate: a backend outage is not a
  wrong answer.
- K samples of one problem are not independent, so intervals resample whole problems (`stats.clustered_mean`);
  the comparison is paired per problem (`stats.compare_paired`: each shared problem's mean over its samples).
- A row's bootstrap seed is derived from (seed, generator, benchmark), so its interval does not move when other
  generators or benchmarks are added to the table.
- An undecided grade (math-verify timeout) has no strict verdict; it counts as not strictly correct, as it counts
  as not correct in the flexible verdict, and the `undecided` column says how many there were.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from legibility.errors import LegibilityError
from legibility.evaluate.stats import N_BOOT, clustered_mean, compare_paired
from legibility.records import Generation

__all__ = ["ALL", "accuracy_table", "paired_table"]

ALL = "all"
"""The benchmark name of the rows over every benchmark."""

ACCURACY_COLUMNS = ["generator", "benchmark", "n", "n_problems", "accuracy", "low", "high", "accuracy_strict",
                    "undecided", "failed"]  # fmt: skip
PAIRED_COLUMNS = ["benchmark", "n_problems", "acc_a", "acc_b", "diff", "low", "high", "p_value", "test",
                  "n_only_a", "n_only_b"]  # fmt: skip


def _rng(seed: int, *names: str) -> np.random.Generator:
    digest = hashlib.sha256("\x1f".join(names).encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "big")])


def _question(g: Generation) -> tuple[str, str]:
    """The cluster: problem ids are unique within a benchmark, not necessarily across benchmarks."""
    return (g.benchmark, g.problem_id)


def _benchmarks(gens: Iterable[Generation]) -> list[str]:
    return [*sorted({g.benchmark for g in gens}), ALL]


def _accuracy_row(generator: str, benchmark: str, rows: Sequence[Generation], n_boot: int, seed: int) -> dict:
    ok = [g for g in rows if g.error is None]
    row = {"generator": generator, "benchmark": benchmark, "n": len(ok), "n_problems": len({_question(g) for g in ok}),
           "failed": len(rows) - len(ok), "undecided": sum(g.correct_strict is None for g in ok)}  # fmt: skip
    if not ok:
        return row | {"accuracy": np.nan, "low": np.nan, "high": np.nan, "accuracy_strict": np.nan}
    iv = clustered_mean([float(g.correct) for g in ok], [_question(g) for g in ok], n_boot=n_boot,
                        seed=_rng(seed, generator, benchmark))  # fmt: skip
    strict = float(np.mean([bool(g.correct_strict) for g in ok]))
    return row | {"accuracy": iv.estimate, "low": iv.low, "high": iv.high, "accuracy_strict": strict}


def accuracy_table(gens: Iterable[Generation], n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """One row per generator (first-seen order) and benchmark (sorted, then "all"): n samples graded (failures
    excluded), n_problems, flexible accuracy with a problem-clustered 95% bootstrap interval (low, high), strict
    accuracy, undecided grades and failed requests."""
    gs = list(gens)
    by_gen: dict[str, list[Generation]] = {}
    for g in gs:
        by_gen.setdefault(g.generator, []).append(g)
    rows = []
    for name, mine in by_gen.items():
        for bench in _benchmarks(mine):
            subset = mine if bench == ALL else [g for g in mine if g.benchmark == bench]
            rows.append(_accuracy_row(name, bench, subset, n_boot, seed))
    return pd.DataFrame(rows, columns=ACCURACY_COLUMNS)


def _one_question(bench: str, verdicts: list[list[bool]], questions: list[list[tuple[str, str]]]) -> dict:
    """One shared problem with several samples: scipy's permutation test needs two, so the sign-flip test is
    done here (its two flips are d and -d: p = 1) and the bootstrap has one cluster to draw (low = high = d)."""
    (q,) = set(questions[0]) & set(questions[1])
    acc = [
        float(np.mean([v for v, qq in zip(vs, qs, strict=True) if qq == q]))
        for vs, qs in zip(verdicts, questions, strict=True)
    ]
    d = acc[0] - acc[1]
    return {"benchmark": bench, "n_problems": 1, "acc_a": acc[0], "acc_b": acc[1], "diff": d, "low": d, "high": d,
            "p_value": 1.0, "test": "sign-flip permutation", "n_only_a": len(set(questions[0])) - 1,
            "n_only_b": len(set(questions[1])) - 1}  # fmt: skip


def paired_table(
    gens: Iterable[Generation], a: str, b: str, n_boot: int = N_BOOT, seed: int = 0, *, strict: bool = False
) -> pd.DataFrame:
    """Generator `a` against `b` per benchmark (sorted, then "all") on the problems both answered (failed requests
    left out): per-problem accuracy over each arm's samples, the difference a - b with a problem-clustered 95%
    bootstrap interval, and the paired test's p-value (McNemar exact with one sample per problem and arm, else a
    sign-flip permutation test; named in `test`). A benchmark with no shared problem gets a row of NaNs.
    `strict` compares strict verdicts instead of flexible ones."""
    gs = [g for g in gens if g.generator in (a, b)]
    for name in (a, b):
        if not any(g.generator == name for g in gs):
            raise LegibilityError(f"paired comparison: no generations of generator {name!r}")
    ok = [g for g in gs if g.error is None]
    rows = []
    for bench in _benchmarks(gs):
        subset = ok if bench == ALL else [g for g in ok if g.benchmark == bench]
        arms = [[g for g in subset if g.generator == name] for name in (a, b)]
        verdicts = [[bool(g.correct_strict if strict else g.correct) for g in arm] for arm in arms]
        questions = [[_question(g) for g in arm] for arm in arms]
        shared = set(questions[0]) & set(questions[1])
        if not shared:
            n_a, n_b = len(set(questions[0])), len(set(questions[1]))
            rows.append({"benchmark": bench, "n_problems": 0, "n_only_a": n_a, "n_only_b": n_b, "test": None})
            continue
        if len(shared) == 1 and max(qs.count(q) for qs in questions for q in shared) > 1:
            rows.append(_one_question(bench, verdicts, questions))
            continue
        c = compare_paired(verdicts[0], questions[0], verdicts[1], questions[1], n_boot=n_boot,
                           seed=int(_rng(seed, a, b, bench).integers(2**63)))  # fmt: skip
        rows.append({
            "benchmark": bench, "n_problems": c.n_questions, "acc_a": c.accuracy_a, "acc_b": c.accuracy_b,
            "diff": c.difference, "low": c.low, "high": c.high, "p_value": c.p_value, "test": c.test,
            "n_only_a": c.n_only_a, "n_only_b": c.n_only_b,
        })  # fmt: skip
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)
