"""Throughput of segmentation + transforms at pair-builder scale: 2,000 traces of ~3,000 words, 20,000 transforms.

Synthetic traces are real paragraphs (shared/data/traces) shuffled and concatenated, seeded, so the text has
the real mix of LaTeX, lists and equation lines. Because paragraphs recur across synthetic traces, the pysbd
piece cache hits more than it would on 2,000 distinct traces; the "cold" line clears that cache before
every trace to show the worst case. One process, one core.

    .venv/bin/python benchmarks/bench_transforms.py [--traces 2000] [--words 3000] [--per-trace 10]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from pathlib import Path

from legibility import text as text_mod
from legibility.text import sentences
from legibility.transforms import TRANSFORMS, apply

TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"


def real_cots(folder: Path) -> list[str]:
    out = []
    for p in sorted(folder.glob("*/*.jsonl")):
        out += [json.loads(line)["reasoning_trace"] for line in p.read_text(encoding="utf-8").splitlines() if line]
    for p in sorted(folder.glob("*/*.json")):
        out += [d["message_thinking"] for d in json.loads(p.read_text(encoding="utf-8"))]
    return [t for t in out if t.strip()]


def synthesize(cots: list[str], n: int, words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    paras = [p.strip() for t in cots for p in t.split("\n\n") if p.strip()]
    out = []
    for _ in range(n):
        picked, count = [], 0
        while count < words:
            p = rng.choice(paras)
            picked.append(p)
            count += len(p.split())
        out.append("\n\n".join(picked))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=TRACES)
    ap.add_argument("--traces", type=int, default=2000)
    ap.add_argument("--words", type=int, default=3000)
    ap.add_argument("--per-trace", type=int, default=10)
    args = ap.parse_args()

    traces = synthesize(real_cots(args.data), args.traces, args.words)
    mb = sum(map(len, traces)) / 1e6
    print(f"{len(traces)} traces, {mb:.1f} MB, {sum(len(t.split()) for t in traces) / len(traces):.0f} words each")

    t0 = time.perf_counter()
    segs = [sentences(t) for t in traces]
    t_seg = time.perf_counter() - t0
    n_sents = sum(map(len, segs))

    names = list(TRANSFORMS)
    unchanged, k = 0, 0
    t0 = time.perf_counter()
    for i, t in enumerate(traces):
        donors = traces[:i] + traces[i + 1 :]
        for j in range(args.per_trace):
            r = apply(names[k % len(names)], t, donors, f"{i}:{j}", segments=segs[i])
            unchanged += not r.changed
            k += 1
    t_tf = time.perf_counter() - t0

    total = t_seg + t_tf
    print(f"segmentation: {t_seg:.2f} s, {len(traces) / t_seg:.0f} traces/s, {mb / t_seg:.1f} MB/s, "
          f"{n_sents / len(traces):.0f} sentences/trace")  # fmt: skip
    print(f"transforms:   {t_tf:.2f} s, {k / t_tf:.0f} transforms/s ({unchanged} reported unchanged)")
    print(f"total:        {total:.2f} s, {k / total:.0f} pairs/s including segmentation")

    sample = traces[: min(200, len(traces))]
    text_mod._sentences.cache_clear()
    t0 = time.perf_counter()
    for t in sample:
        text_mod._cuts.cache_clear()  # no pysbd piece seen before: the worst case, all-distinct traces
        sentences(t)
    t_cold = time.perf_counter() - t0
    print(f"cold segmentation (no cache): {len(sample) / t_cold:.0f} traces/s, "
          f"{sum(map(len, sample)) / 1e6 / t_cold:.1f} MB/s")  # fmt: skip
    print(f"peak RSS:     {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
