"""Pair-builder throughput at the reference run's scale: 20,000 pairs from 2,000 traces of ~3,000 words.

Times three things separately, in one process (one core): building (segmentation + transforms + records,
the >= 1,000 pairs/s target), writing the export files, and the long-pair policy with a fast tokenizer in batches
(one pass over the distinct texts without offsets for every pair's token length, then the CoT cut of the sides
over --max-length only; the statistics reuse those lengths).
Traces are synthesized from the real ones as in bench_transforms.py.

    .venv/bin/python benchmarks/bench_pairs.py [--traces 2000] [--per-trace 10] [--tokenizer embedded|none]
        [--max-length 7000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_transforms import TRACES, real_cots, synthesize

from legibility.config import PairsConfig
from legibility.pairs import build_pairs, fit_to_length, pair_stats, write_pairs
from legibility.records import Message, Trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=2000)
    ap.add_argument("--words", type=int, default=3000)
    ap.add_argument("--per-trace", type=int, default=10)
    ap.add_argument("--tokenizer", default="embedded")
    ap.add_argument("--max-length", type=int, default=7000, help="token limit for the long-pair policy")
    args = ap.parse_args()

    cots = synthesize(real_cots(TRACES), args.traces, args.words)
    traces = [
        Trace(id=f"bench/math/{i}/0", problem_id=f"math/{i}", benchmark="math", generator="bench",
              prompt=[Message(role="user", content=f"Problem {i}. State your answer in \\boxed{{}}.")],
              reasoning=cot, answer_text=f"The answer is $\\boxed{{{i}}}$.", correct=True, source=f"synthetic#{i}")
        for i, cot in enumerate(cots)
    ]  # fmt: skip
    cfg = PairsConfig(pairs_per_trace=args.per_trace, tokenizer=None)
    print(f"{len(traces)} traces, {sum(map(len, cots)) / 1e6:.1f} MB of CoT, "
          f"{sum(len(c.split()) for c in cots) / len(cots):.0f} words each")  # fmt: skip

    t0 = time.perf_counter()
    ps = build_pairs(traces, cfg)
    t_build = time.perf_counter() - t0
    n = len(ps.all)
    print(f"build: {n} pairs in {t_build:.2f} s = {n / t_build:.0f} pairs/s "
          f"({len(ps.train)} train / {len(ps.val)} val; not made: {dict(ps.skipped)})")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        files = write_pairs(ps, tmp, pair_stats(ps, cfg))
        t_write = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in files.values()) / 1e6
    print(f"write: {size:.0f} MB (TRL + Together, train + val) in {t_write:.2f} s")

    if args.tokenizer != "none":
        from legibility.models import load_tokenizer

        tok = load_tokenizer(args.tokenizer)
        cfg = cfg.model_copy(update={"tokenizer": args.tokenizer, "max_length": args.max_length})
        print(f"peak RSS before token lengths: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        t0, c0 = time.perf_counter(), time.process_time()
        fitted = fit_to_length(ps, cfg, tok)
        stats = pair_stats(fitted, cfg, tok, args.tokenizer)
        t_tok, c_tok = time.perf_counter() - t0, time.process_time() - c0
        tr = stats["tokens"]["train"]["prompt_chosen"]
        long = stats["long_pairs"]
        print(
            f"token lengths + long pairs ({args.tokenizer}, one pass, batches of 256): {t_tok:.2f} s for "
            f"{n} pairs ({n / t_tok:.0f} pairs/s; CPU time {c_tok:.2f} s, robust to a loaded machine)"
        )
        print(
            f"  over {args.max_length} tokens: {long['over_max_length']} pairs; CoT cut: {long['truncated_chosen']} "
            f"chosen, {long['truncated_rejected']} rejected; dropped {long['dropped']} {long['dropped_reasons']}"
        )
        print(f"  prompt+chosen tokens after: median {tr['median']:.0f}, p95 {tr['p95']}, max {tr['max']}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
