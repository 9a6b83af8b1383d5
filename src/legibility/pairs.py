"""DPO pair construction: original CoT vs its corrupted copy, split by problem, exported for TRL and Together."""

from __future__ import annotations

import json
import math
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from legibility.config import PairsConfig
from legibility.errors import LegibilityError, where
from legibility.records import Message, Pair, Trace, write_json, write_jsonl
from legibility.responses import completion
from legibility.transforms import TRANSFORMS, apply

# ---------------------------------------------------------------------------------------------- building


@dataclass
class PairSet:
    """What a build produced, plus what it could not make and why (nothing is dropped silently)."""

    train: list[Pair]
    val: list[Pair]
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count

    @property
    def all(self) -> list[Pair]:
        return self.train + self.val


def _weights(cfg: PairsConfig) -> dict[str, float]:
    unknown = set(cfg.transforms) - set(TRANSFORMS)
    if unknown:
        raise LegibilityError(
            f"pairs.transforms: unknown transform(s) {sorted(unknown)} (known: {', '.join(TRANSFORMS)})"
        )
    weights = {name: float(cfg.transforms.get(name, 1.0 if not cfg.transforms else 0.0)) for name in TRANSFORMS}
    if any(w < 0 for w in weights.values()):
        raise LegibilityError("pairs.transforms: weights must be >= 0")
    if not any(weights.values()):
        raise LegibilityError("pairs.transforms: every weight is 0, nothing to build")
    return weights


def _transform_order(weights: dict[str, float], rng: random.Random) -> list[str]:
    """Weighted sampling without replacement (Efraimidis-Spirakis keys): heavier transforms tend to come first."""
    keyed = [(rng.random() ** (1.0 / w), name) for name, w in weights.items() if w > 0]
    return [name for _, name in sorted(keyed, reverse=True)]


def _donor_pool(trace: Trace, pool: list[Trace], rng: random.Random, k: int = 4) -> list[Trace]:
    """A few random traces of *other* problems (rejection sampling: the pool is large, the draw is small)."""
    others = [t for t in (pool[rng.randrange(len(pool))] for _ in range(8 * k)) if t.problem_id != trace.problem_id]
    if len(others) < k:  # tiny pools: fall back to an exact filter
        others = [t for t in pool if t.problem_id != trace.problem_id]
        rng.shuffle(others)
    seen: dict[str, Trace] = {}
    for t in others:
        seen.setdefault(t.id, t)
    return list(seen.values())[:k]


def split_problems(problem_ids: Iterable[tuple[str, str]], val_fraction: float, seed: int) -> set[str]:
    """Validation problem ids: per benchmark, a seeded shuffle and the first round(fraction * n) of them,
    so every benchmark is represented and no problem lands on both sides."""
    by_bench: dict[str, list[str]] = defaultdict(list)
    for bench, pid in sorted(set(problem_ids)):
        by_bench[bench].append(pid)
    val: set[str] = set()
    for bench, ids in sorted(by_bench.items()):
        rng = random.Random(f"{seed}:split:{bench}")
        rng.shuffle(ids)
        val.update(ids[: round(val_fraction * len(ids))])
    return val


def build_pairs(traces: Sequence[Trace], cfg: PairsConfig | None = None, progress: bool = False) -> PairSet:
    """Pairs from traces: each usable trace against corrupted copies of itself. Deterministic in (traces, cfg)."""
    cfg = cfg or PairsConfig()
    weights = _weights(cfg)
    skipped: Counter[str] = Counter()
    usable = []
    for t in sorted(traces, key=lambda t: t.id):
        if cfg.only_complete and not t.complete:
            skipped["trace incomplete"] += 1
        elif cfg.only_correct and not t.correct:
            skipped["trace incorrect"] += 1
        elif not t.prompt:
            raise LegibilityError(f"{t.source or t.id}: field prompt: empty (re-import the trace)")
        else:
            usable.append(t)
    pools: dict[str, list[Trace]] = defaultdict(list)
    for t in usable:
        pools[t.benchmark if cfg.donor_scope == "benchmark" else "*"].append(t)
    val_ids = split_problems(((t.benchmark, t.problem_id) for t in usable), cfg.val_fraction, cfg.seed)
    system = [Message(role="system", content=cfg.system_prompt)] if cfg.system_prompt else []

    items: Iterable[Trace] = usable
    if progress:
        from rich.progress import track

        items = track(usable, description="building pairs")
    train: list[Pair] = []
    val: list[Pair] = []
    for trace in items:
        pool = pools[trace.benchmark if cfg.donor_scope == "benchmark" else "*"]
        rng = random.Random(f"{cfg.seed}:{trace.id}")
        original = completion(trace.reasoning, trace.answer_text)
        seen = {trace.reasoning}
        made = 0
        for rnd in range(-(-cfg.pairs_per_trace // len(TRANSFORMS)) + 1):  # enough rounds, plus one spare
            for name in _transform_order(weights, rng):
                if made == cfg.pairs_per_trace:
                    break
                donors = _donor_pool(trace, pool, rng)
                result = apply(name, trace.reasoning, donors, seed=f"{cfg.seed}:{trace.id}:{name}:{rnd}")
                if not result.changed:  # counted per attempt; the builder then tries the next transform
                    skipped[f"attempt {name}: {result.reason or 'no change'}"] += 1
                    continue
                if result.text in seen:
                    skipped[f"attempt {name}: same text as an earlier pair of this trace"] += 1
                    continue
                seen.add(result.text)
                corrupted = completion(result.text, trace.answer_text)
                chosen, rejected = (original, corrupted) if cfg.direction == "legible" else (corrupted, original)
                pair = Pair(
                    id=f"{trace.id}/{name}" + (f"/{rnd}" if rnd else ""),
                    prompt=system + list(trace.prompt),
                    chosen=chosen,
                    rejected=rejected,
                    direction=cfg.direction,
                    transform=name,
                    transform_meta=result.meta,
                    trace_id=trace.id,
                    donor_trace_id=result.meta.get("donor_id"),
                    problem_id=trace.problem_id,
                    generator=trace.generator,
                    benchmark=trace.benchmark,
                    subtask=trace.subtask,
                )
                (val if trace.problem_id in val_ids else train).append(pair)
                made += 1
        if made < cfg.pairs_per_trace:
            skipped["trace with fewer pairs than asked"] += 1
    return PairSet(train=train, val=val, skipped=skipped)


# ---------------------------------------------------------------------------------------------- export


TRL_REQUIRED = ("prompt", "chosen", "rejected", "id", "transform", "trace_id", "problem_id", "generator", "benchmark")


def trl_row(pair: Pair) -> dict[str, Any]:
    """TRL's conversational preference format; our metadata rides along in extra columns (TRL ignores them)."""
    return {
        "prompt": [m.model_dump() for m in pair.prompt],
        "chosen": [{"role": "assistant", "content": pair.chosen}],
        "rejected": [{"role": "assistant", "content": pair.rejected}],
        "id": pair.id,
        "direction": pair.direction,
        "transform": pair.transform,
        # A JSON string, not a nested object: its keys differ per transform, which Arrow cannot unify.
        "transform_meta": json.dumps(pair.transform_meta, sort_keys=True),
        "trace_id": pair.trace_id,
        "donor_trace_id": pair.donor_trace_id,
        "problem_id": pair.problem_id,
        "generator": pair.generator,
        "benchmark": pair.benchmark,
        "subtask": pair.subtask,
    }


def pair_from_trl_row(row: dict[str, Any]) -> Pair:
    """Inverse of `trl_row`, so a pair file is all one needs to inspect or reuse pairs."""
    for key in TRL_REQUIRED:
        if key not in row:
            raise KeyError(key)
    meta = row.get("transform_meta") or "{}"
    return Pair(
        id=row["id"],
        prompt=[Message(**m) for m in row["prompt"]],
        chosen=row["chosen"][-1]["content"],
        rejected=row["rejected"][-1]["content"],
        direction=row.get("direction", "legible"),
        transform=row["transform"],
        transform_meta=json.loads(meta) if isinstance(meta, str) else meta,
        trace_id=row["trace_id"],
        donor_trace_id=row.get("donor_trace_id"),
        problem_id=row["problem_id"],
        generator=row["generator"],
        benchmark=row["benchmark"],
        subtask=row.get("subtask"),
    )


def together_row(pair: Pair) -> dict[str, Any]:
    """Together AI's preference format (checked by `together.lib.utils.check_file` in the tests)."""
    return {
        "input": {"messages": [m.model_dump() for m in pair.prompt]},
        "preferred_output": [{"role": "assistant", "content": pair.chosen}],
        "non_preferred_output": [{"role": "assistant", "content": pair.rejected}],
    }


def read_pairs(path: str | Path) -> list[Pair]:
    """Read a TRL pair file written by `write_pairs`; errors name the file, line and field."""
    p = Path(path)
    if not p.is_file():
        raise LegibilityError(f"{p}: no such file")
    pairs = []
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise LegibilityError(f"{where(p, lineno)}: not valid JSON ({e.msg})") from None
            try:
                pairs.append(pair_from_trl_row(row))
            except KeyError as e:
                raise LegibilityError(f"{where(p, lineno, e.args[0])}: missing") from None
            except (TypeError, IndexError, ValidationError) as e:
                raise LegibilityError(f"{where(p, lineno)}: malformed pair ({e})") from None
    return pairs


# ---------------------------------------------------------------------------------------------- statistics


def _summary(values: list[int]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "min": None, "median": None, "p95": None, "max": None}
    v = sorted(values)
    return {
        "n": len(v),
        "min": v[0],
        "median": float(statistics.median(v)),
        "p95": v[min(len(v) - 1, math.ceil(0.95 * len(v)) - 1)],  # nearest-rank percentile
        "max": v[-1],
    }


def token_lengths(
    pairs: Sequence[Pair], tokenizer: Any, batch_size: int = 256, progress: bool = False
) -> list[tuple[int, int]]:
    """(prompt+chosen, prompt+rejected) token counts as the trainer sees them: through the chat template.

    Each distinct text is templated and tokenized once (the original side repeats across a trace's pairs),
    and in batches, so the fast tokenizer's Rust side does the work."""
    texts: dict[str, int] = {}
    keys: list[tuple[int, int]] = []

    def key(prompt: list[Message], content: str) -> int:
        msgs = [m.model_dump() for m in prompt] + [{"role": "assistant", "content": content}]
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(msgs, tokenize=False)
        else:
            text = "\n\n".join(m["content"] for m in msgs)
        return texts.setdefault(text, len(texts))

    for p in pairs:
        keys.append((key(p.prompt, p.chosen), key(p.prompt, p.rejected)))
    ordered = list(texts)
    lengths: list[int] = []
    starts: Iterable[int] = range(0, len(ordered), batch_size)
    if progress:
        from rich.progress import track

        starts = track(starts, description=f"tokenizing {len(ordered)} texts")
    for i in starts:
        enc = tokenizer(ordered[i : i + batch_size], add_special_tokens=False)["input_ids"]
        lengths.extend(len(ids) for ids in enc)
    return [(lengths[a], lengths[b]) for a, b in keys]


def pair_stats(
    pairset: PairSet,
    cfg: PairsConfig,
    tokenizer: Any | None = None,
    tokenizer_name: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Counts per transform x benchmark x generator, and token lengths against max_length per split."""
    cells: Counter[tuple[str, str, str, str]] = Counter()
    for split, pairs in (("train", pairset.train), ("val", pairset.val)):
        for p in pairs:
            cells[(p.transform, p.benchmark, p.generator, split)] += 1
    table = []
    for t, b, g in sorted({k[:3] for k in cells}):
        table.append(
            {
                "transform": t,
                "benchmark": b,
                "generator": g,
                "train": cells[(t, b, g, "train")],
                "val": cells[(t, b, g, "val")],
            }
        )
    stats: dict[str, Any] = {
        "direction": cfg.direction,
        "seed": cfg.seed,
        "counts": {
            "train": len(pairset.train),
            "val": len(pairset.val),
            "train_problems": len({p.problem_id for p in pairset.train}),
            "val_problems": len({p.problem_id for p in pairset.val}),
            "traces": len({p.trace_id for p in pairset.all}),
        },
        "by_transform": dict(sorted(Counter(p.transform for p in pairset.all).items())),
        "table": table,
        "skipped": dict(sorted(pairset.skipped.items())),
        "config": cfg.model_dump(mode="json"),
    }
    if tokenizer is not None:
        tokens: dict[str, Any] = {"tokenizer": tokenizer_name, "max_length": cfg.max_length}
        for split, pairs in (("train", pairset.train), ("val", pairset.val)):
            lens = token_lengths(pairs, tokenizer, progress=progress)
            tokens[split] = {
                "prompt_chosen": _summary([a for a, _ in lens]),
                "prompt_rejected": _summary([b for _, b in lens]),
                "over_max_length": sum(max(a, b) > cfg.max_length for a, b in lens),
            }
        stats["tokens"] = tokens
    return stats


def write_pairs(pairset: PairSet, out: str | Path, stats: dict[str, Any]) -> dict[str, Path]:
    """The build's files: TRL train/val, Together train/val, stats. Each written atomically."""
    out = Path(out)
    files = {
        "train": write_jsonl(out / "train.jsonl", (trl_row(p) for p in pairset.train)),
        "val": write_jsonl(out / "val.jsonl", (trl_row(p) for p in pairset.val)),
        "together_train": write_jsonl(out / "together_train.jsonl", (together_row(p) for p in pairset.train)),
        "together_val": write_jsonl(out / "together_val.jsonl", (together_row(p) for p in pairset.val)),
        "stats": write_json(out / "stats.json", stats),
    }
    return files
