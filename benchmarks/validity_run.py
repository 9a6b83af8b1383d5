"""Validity of the continuous reader measures on more held-out traces than the demo holds.

Builds the demo's problems, traces and pairs with a larger validation side (so at least --traces held-out traces
exist), then scores every held-out trace and its corrupted copies with the embedded reader under C2 (answer uplift
against the same hand-off with an empty CoT, and CoT surprisal) and prints the AUROC of intact-above-corrupted per
transform (`evaluate.validity`), with intervals that resample whole traces. No training, no generation: these two
measures need neither.

    .venv/bin/python benchmarks/validity_run.py [--traces 24] [--val-fraction 0.45] [--out runs/validity-check]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from legibility.config import MaskingConfig, load_config
from legibility.evaluate import readers as R
from legibility.evaluate.items import from_pairs
from legibility.evaluate.summarize import validity_frame, validity_values
from legibility.models.base import Sampling
from legibility.models.hf import HFChatModel
from legibility.pairs import read_pairs
from legibility.records import Problem, read_jsonl
from legibility.run import run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--traces", type=int, default=24, help="held-out traces to score (each with its copies)")
    ap.add_argument("--val-fraction", type=float, default=0.45)
    ap.add_argument("--out", default="runs/validity-check")
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()

    cfg = load_config(args.config, overrides=[f"run_dir={args.out}", f"pairs.val_fraction={args.val_fraction}"])
    t0 = time.perf_counter()
    run(cfg, stop_after="pairs", console=Console(quiet=True))
    out = Path(cfg.run_dir)
    problems = {p.id: p for p in read_jsonl(out / "problems.jsonl", Problem)}
    items = from_pairs(read_pairs(out / "pairs" / "val.jsonl"), problems, args.traces)
    n_traces = len({it.id.rpartition("#")[0] for it in items})
    took = time.perf_counter() - t0
    print(f"{n_traces} held-out traces, {len(items)} CoTs (intact + corrupted); pairs in {took:.0f} s")

    t1 = time.perf_counter()
    model = HFChatModel("embedded", batch_size=4)
    readings = R.run_c2(model, "smollm2", items, MaskingConfig(), Sampling(max_new_tokens=16), scores=True)
    t_read = time.perf_counter() - t1
    print(f"C2 + uplift + surprisal on {len(items)} CoTs in {t_read:.0f} s")

    df = validity_frame(validity_values(readings, [], []), n_boot=args.n_boot, seed=0)
    df = df[df["metric"].str.startswith(("uplift", "surprisal"))]
    cells = {(r.transform, r.metric): f"{r.auroc:.2f} [{r.low:.2f}, {r.high:.2f}]" for r in df.itertuples()}
    metrics = sorted(df["metric"].unique())
    print("| transform | strength (reference card) | traces | " + " | ".join(metrics) + " |")
    print("|---" * (3 + len(metrics)) + "|")
    for transform, g in df.groupby("transform", sort=False):
        row = [cells.get((transform, m), "–") for m in metrics]
        print(f"| {transform} | {g['strength'].iloc[0]} | {g['n_traces'].max()} | " + " | ".join(row) + " |")
    print("mean AUROC:", df.groupby("metric")["auroc"].mean().round(3).to_dict())
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
