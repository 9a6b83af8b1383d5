"""DPO pair construction: original CoT vs its corrupted copy, split by problem, exported for TRL and Together.

Research-validity rules this module keeps (each has a test):
- A problem's side of the train/validation split is a stable hash of (seed, benchmark, problem id), so adding
  problems never moves existing ones, and every pair of a problem lands on the same side.
- Donor CoTs (splices, substitutions, distractors) come from the trace's own side of the split, never from the
  same problem: no validation text reaches a training pair (`leaked_spans` is the check).
- Pair counts and transform weights are honoured over the enabled transforms (`quotas`).
- A pair too long for the trainer has its CoT cut at a sentence boundary, keeping `</think>` and the final answer,
  or is dropped, or kept for the trainer to truncate (`fit_to_length`); all are counted. Lengths come from one
  tokenization pass over the distinct texts; only the sides over the limit are cut.
- A trace whose transforms raise is skipped and reported with its id (`PairsConfig.strict` re-raises instead).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import ValidationError

from legibility.config import PairsConfig
from legibility.errors import LegibilityError, where
from legibility.records import Message, Pair, Problem, Trace, write_json, write_jsonl
from legibility.responses import THINK_CLOSE, completion
from legibility.text import sentences
from legibility.transforms import TRANSFORMS, apply

log = logging.getLogger(__name__)

Side = Literal["train", "val"]

# ---------------------------------------------------------------------------------------------- the split


def problem_side(seed: int, benchmark: str, problem_id: str, val_fraction: float) -> Side:
    """A problem's side: sha256 of (seed, benchmark, problem id) read as a number in [0, 1), against the fraction.

    A function of the problem alone, so adding problems never moves existing ones. The price: a small benchmark
    may get no validation problem at all (probability (1 - fraction) ** n). No rule that depends on the other
    problems can promise one without moving problems when more are added (with {a} and {b} each needing its one
    validation problem, {a, b} would have to hold both), so `split_manifest` reports such benchmarks instead."""
    digest = hashlib.sha256(f"{seed}\x1f{benchmark}\x1f{problem_id}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def split_problems(problem_ids: Iterable[tuple[str, str]], val_fraction: float, seed: int) -> set[str]:
    """Validation problem ids among (benchmark, problem id) pairs (see `problem_side`)."""
    return {pid for bench, pid in set(problem_ids) if problem_side(seed, bench, pid, val_fraction) == "val"}


def split_manifest(problem_ids: Iterable[tuple[str, str]], val_fraction: float, seed: int) -> dict[str, Any]:
    """`pairs/split.json`: train and validation problem ids per benchmark, and how they were drawn, so later
    stages evaluate on exactly the held-out problems."""
    by_bench: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"train": [], "val": []})
    for bench, pid in sorted(set(problem_ids)):
        by_bench[bench][problem_side(seed, bench, pid, val_fraction)].append(pid)
    empty = sorted(b for b, s in by_bench.items() if val_fraction > 0 and not s["val"])
    for bench in empty:
        n = len(by_bench[bench]["train"])
        log.warning(
            "split: benchmark %s has no validation problem (%d problems, val_fraction %g)", bench, n, val_fraction
        )
    return {
        "seed": seed,
        "val_fraction": val_fraction,
        "rule": "val iff int(sha256(f'{seed}\\x1f{benchmark}\\x1f{problem_id}')[:8 bytes]) / 2**64 < val_fraction",
        "benchmarks": dict(sorted(by_bench.items())),
        "benchmarks_without_val": empty,
    }


# ---------------------------------------------------------------------------------------------- building


class TraceError(Exception):
    """An exception raised while building one trace's pairs (other than a transform declining)."""

    def __init__(self, transform: str | None, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {error}")
        self.transform = transform
        self.error = error


@dataclass
class PairSet:
    """What a build produced, plus what it could not make and why (nothing is dropped silently)."""

    train: list[Pair]
    val: list[Pair]
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count
    errors: list[dict[str, str | None]] = field(default_factory=list)  # {trace_id, transform, error}
    split: dict[str, Any] = field(default_factory=dict)  # split.json
    grading: dict[str, Any] = field(default_factory=dict)  # which verdict filtered the traces
    long: dict[str, Any] | None = None  # the long-pair policy's counts (`fit_to_length`); None: not applied
    tokens: dict[str, tuple[int, int]] | None = None  # pair id -> (prompt+chosen, prompt+rejected) tokens

    @property
    def all(self) -> list[Pair]:
        return self.train + self.val


def _weights(cfg: PairsConfig) -> dict[str, float]:
    """The enabled transforms (weight > 0), in registry order, with their weights."""
    unknown = set(cfg.transforms) - set(TRANSFORMS)
    if unknown:
        raise LegibilityError(
            f"pairs.transforms: unknown transform(s) {sorted(unknown)} (known: {', '.join(TRANSFORMS)})"
        )
    weights = {name: float(cfg.transforms.get(name, 1.0 if not cfg.transforms else 0.0)) for name in TRANSFORMS}
    if any(w < 0 or not math.isfinite(w) for w in weights.values()):
        raise LegibilityError("pairs.transforms: weights must be finite and >= 0")
    if not any(weights.values()):
        raise LegibilityError("pairs.transforms: every weight is 0, nothing to build")
    return {name: w for name, w in weights.items() if w > 0}


def quotas(weights: dict[str, float], n: int, rng: random.Random) -> dict[str, int]:
    """How many of a trace's n pairs each enabled transform makes: n * w / sum(w), rounded down, plus one more
    for the fractional parts by systematic sampling (exact arithmetic). So the expected count of each is exactly
    proportional to its weight, the total is exactly n, and with equal weights and n <= the number of transforms
    every pair has a different transform."""
    total = sum(map(Fraction, weights.values()))
    exact = {name: n * Fraction(w) / total for name, w in weights.items()}
    out = {name: math.floor(v) for name, v in exact.items()}
    fracs = [(name, v - out[name]) for name, v in exact.items() if v > out[name]]
    rng.shuffle(fracs)
    u, cum = Fraction(rng.random()), Fraction(0)
    for name, f in fracs:  # one point in each unit step from u: it falls in this interval with probability f
        out[name] += math.ceil(cum + f - u) - math.ceil(cum - u)
        cum += f
    return out


def _donor_pool(trace: Trace, pool: list[Trace], rng: random.Random, k: int = 4) -> list[Trace]:
    """A few random traces of *other* problems (rejection sampling: the pool is large, the draw is small)."""
    if not pool:
        return []
    others = [t for t in (pool[rng.randrange(len(pool))] for _ in range(8 * k)) if t.problem_id != trace.problem_id]
    if len(others) < k:  # tiny pools: fall back to an exact filter
        others = [t for t in pool if t.problem_id != trace.problem_id]
        rng.shuffle(others)
    seen: dict[str, Trace] = {}
    for t in others:
        seen.setdefault(t.id, t)
    return list(seen.values())[:k]


def _pool_key(trace: Trace, side: Side, scope: str) -> tuple[str, str]:
    """Donor pools never cross the split; the scope may narrow them to the trace's benchmark or generator."""
    if scope == "split+benchmark":
        return side, trace.benchmark
    if scope == "split+generator":
        return side, trace.generator
    return side, ""


def _verdict(trace: Trace, grading: str) -> bool:
    """The grade `only_correct` filters on; traces graded before strict verdicts existed fall back to `correct`."""
    if grading == "strict" and trace.correct_strict is not None:
        return trace.correct_strict
    return trace.correct


MAX_FAILS = 3  # consecutive failed attempts (declined, or a text this trace already has) before a transform stops


def _trace_pairs(
    trace: Trace,
    cfg: PairsConfig,
    weights: dict[str, float],
    pool: list[Trace],
    side: Side,
    system: list[Message],
    skipped: Counter[str],
) -> list[Pair]:
    """One trace's pairs: each transform makes its quota; one that cannot (it declines, or gives only texts this
    trace already has, MAX_FAILS times in a row) stops, and the rest of the pairs asked for are drawn by weight
    from the transforms still able to make new texts. Every failed attempt is counted in `skipped`."""
    rng = random.Random(f"{cfg.seed}:{trace.id}")
    original = completion(trace.reasoning, trace.answer_text)
    seen = {trace.reasoning}
    made: Counter[str] = Counter()
    attempts: Counter[str] = Counter()
    stopped: set[str] = set()
    pairs: list[Pair] = []

    def make(name: str) -> bool:
        for _ in range(MAX_FAILS):
            try:
                if attempt(name):
                    return True
            except Exception as e:
                raise TraceError(name, e) from e
        stopped.add(name)
        return False

    def attempt(name: str) -> bool:
        k = attempts[name]
        attempts[name] += 1
        donors = _donor_pool(trace, pool, rng)
        result = apply(name, trace.reasoning, donors, seed=f"{cfg.seed}:{trace.id}:{name}:{k}")
        if not result.changed:
            skipped[f"attempt {name}: {result.reason or 'no change'}"] += 1
            return False
        if result.text in seen:
            skipped[f"attempt {name}: same text as an earlier pair of this trace"] += 1
            return False
        seen.add(result.text)
        corrupted = completion(result.text, trace.answer_text)
        chosen, rejected = (original, corrupted) if cfg.direction == "legible" else (corrupted, original)
        pairs.append(
            Pair(
                id=f"{trace.id}/{name}" + (f"/{made[name]}" if made[name] else ""),
                prompt=system + list(trace.prompt),
                chosen=chosen,
                rejected=rejected,
                direction=cfg.direction,
                transform=name,
                transform_meta=result.meta,
                trace_id=trace.id,
                donor_trace_id=result.meta.get("donor_id"),
                donor_scope=cfg.donor_scope,
                split=side,
                problem_id=trace.problem_id,
                generator=trace.generator,
                benchmark=trace.benchmark,
                subtask=trace.subtask,
            )
        )
        made[name] += 1
        return True

    for name, quota in quotas(weights, cfg.pairs_per_trace, rng).items():
        while made[name] < quota and name not in stopped:
            make(name)
    while len(pairs) < cfg.pairs_per_trace:
        live = [name for name in weights if name not in stopped]
        if not live:
            skipped["trace with fewer pairs than asked"] += 1
            break
        make(rng.choices(live, weights=[weights[name] for name in live])[0])
    return pairs


def build_pairs(
    traces: Sequence[Trace],
    cfg: PairsConfig | None = None,
    progress: bool = False,
    *,
    tokenizer: Any | None = None,
) -> PairSet:
    """Pairs from traces: each usable trace against corrupted copies of itself. Deterministic in (traces, cfg).

    With a tokenizer, the long-pair policy (`fit_to_length`) is applied to the result."""
    cfg = cfg or PairsConfig()
    weights = _weights(cfg)
    skipped: Counter[str] = Counter()
    usable = []
    no_strict = 0
    for t in sorted(traces, key=lambda t: t.id):
        if cfg.only_complete and not t.complete:
            skipped["trace incomplete"] += 1
        elif cfg.only_correct and not _verdict(t, cfg.grading):
            skipped["trace incorrect"] += 1
        elif not t.prompt:
            raise LegibilityError(f"{t.source or t.id}: field prompt: empty (re-import the trace)")
        elif THINK_CLOSE in t.reasoning:  # its own completion would end the CoT early: the chosen side is broken
            skipped["trace reasoning holds </think>"] += 1
        else:
            usable.append(t)
            no_strict += t.correct_strict is None
    sides: dict[str, Side] = {t.id: problem_side(cfg.seed, t.benchmark, t.problem_id, cfg.val_fraction) for t in usable}
    pools: dict[tuple[str, str], list[Trace]] = defaultdict(list)
    for t in usable:
        pools[_pool_key(t, sides[t.id], cfg.donor_scope)].append(t)
    system = [Message(role="system", content=cfg.system_prompt)] if cfg.system_prompt else []

    items: Iterable[Trace] = usable
    if progress:
        from rich.progress import track

        items = track(usable, description="building pairs")
    out: dict[Side, list[Pair]] = {"train": [], "val": []}
    errors: list[dict[str, str | None]] = []
    for trace in items:
        side = sides[trace.id]
        mine: Counter[str] = Counter()  # merged only when the trace succeeds
        try:
            pairs = _trace_pairs(
                trace, cfg, weights, pools[_pool_key(trace, side, cfg.donor_scope)], side, system, mine
            )
        except Exception as e:
            transform, error = (e.transform, e.error) if isinstance(e, TraceError) else (None, e)
            if cfg.strict:
                error.add_note(
                    f"while building the pairs of trace {trace.id}" + (f" ({transform})" if transform else "")
                )
                raise error from None
            log.warning("trace %s: %s raised %s: %s (no pairs made)", trace.id, transform, type(error).__name__, error)
            errors.append({"trace_id": trace.id, "transform": transform, "error": f"{type(error).__name__}: {error}"})
            skipped[f"trace error ({type(error).__name__})"] += 1
            continue
        skipped.update(mine)
        out[side].extend(pairs)
    pairset = PairSet(
        train=out["train"],
        val=out["val"],
        skipped=skipped,
        errors=errors,
        split=split_manifest(((t.benchmark, t.problem_id) for t in traces), cfg.val_fraction, cfg.seed),
        grading={
            "verdict": cfg.grading,
            "only_correct": cfg.only_correct,
            "usable_without_strict_verdict": no_strict if cfg.grading == "strict" else None,
        },
    )
    if tokenizer is not None:
        pairset = fit_to_length(pairset, cfg, tokenizer, progress=progress)
    return pairset


# ---------------------------------------------------------------------------------------------- long pairs


def _render(tokenizer: Any, prompt: Sequence[Message], content: str) -> str:
    """The text the trainer tokenizes: the chat template over prompt + assistant turn (plain join without one)."""
    msgs = [m.model_dump() for m in prompt] + [{"role": "assistant", "content": content}]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(msgs, tokenize=False)
    return "\n\n".join(m["content"] for m in msgs)


def _count(tokenizer: Any, texts: list[str]) -> list[int]:
    """Token counts of `texts` (no special tokens added). A fast tokenizer whose Rust side neither truncates nor pads
    counts through `encode_batch_fast` (no offsets, no Python-side conversion: the same ids, about 1.3x faster)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    fast = getattr(backend, "encode_batch_fast", None)
    if fast is not None and backend.truncation is None and backend.padding is None:
        return [len(e) for e in fast(texts, add_special_tokens=False)]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _cot_and_answer(content: str) -> tuple[str, str]:
    """Inverse of `responses.completion` (a CoT never holds `</think>`: the importer splits at the first one)."""
    head, sep, answer = content.partition("\n</think>\n\n")
    if not sep or not head.startswith("<think>\n"):
        raise LegibilityError(f"not a completion written by responses.completion: {content[:60]!r}...")
    return head[len("<think>\n") :], answer


def _cot_token_ends(tokenizer: Any, rendered: list[str], cots: list[str]) -> list[list[int] | None]:
    """For each rendered text, the sorted end offsets (relative to its CoT) of the tokens inside its CoT, from one
    batched tokenization with offsets of the rendered texts (fast tokenizers); None where the tokenizer cannot give
    offsets or the CoT is not found verbatim in the rendered text. `fit_cot`'s size estimate, checked there."""
    try:
        offsets = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    except Exception:  # slow tokenizers raise NotImplementedError, stand-ins a TypeError
        return [None] * len(rendered)
    out: list[list[int] | None] = []
    for text, cot, spans in zip(rendered, cots, offsets, strict=True):
        start = text.rfind(cot)
        if start < 0 or not cot:
            out.append(None)
            continue
        stop = start + len(cot)
        out.append(sorted(e - start for _, e in spans if start < e <= stop))
    return out


def fit_cot(
    prompt: Sequence[Message],
    content: str,
    tokenizer: Any,
    max_length: int,
    total: int | None = None,
    token_ends: list[int] | None = None,
) -> tuple[str, dict[str, int]] | None:
    """`content` with its CoT cut after whole sentences so prompt+completion fits max_length tokens, keeping
    `</think>` and the final answer; None when not even one sentence fits. `total`: the known size of the uncut
    text (saves a tokenization); `token_ends`: the CoT's token end offsets (`_cot_token_ends`, batched by the
    caller), else the CoT is tokenized here with offsets when the tokenizer can.

    Sizes are exact (the chat template, tokenized), but a cut costs about two tokenizations, not one per sentence:
    with a fast tokenizer the CoT's token offsets give each prefix's size to within the token or two where it meets
    `</think>`, and the guess is checked; otherwise (or if the check fails) a search interpolates on characters,
    then bisects, for the longest prefix that fits."""
    cot, answer = _cot_and_answer(content)
    ends = [0, *(s.end for s in sentences(cot))]  # ends[k]: characters of the first k sentences

    def size(k: int) -> int:
        return _count(tokenizer, [_render(tokenizer, prompt, completion(cot[: ends[k]], answer))])[0]

    def done(k: int, tokens: int) -> tuple[str, dict[str, int]] | None:
        info = {"kept_sentences": k, "sentences": len(ends) - 1, "tokens": tokens}
        return (completion(cot[: ends[k]], answer), info) if k else None

    lo, f_lo = 0, size(0)
    if f_lo > max_length:
        return None
    hi = len(ends) - 1
    f_hi = total if total is not None else size(hi)
    if f_hi <= max_length:  # it fits already (once trailing whitespace is gone)
        return done(hi, f_hi)
    if token_ends is None and hi > 1:
        token_ends = _cot_token_ends(tokenizer, [cot], [cot])[0]
    if hi <= 1:
        token_ends = None
    if token_ends is not None:
        est = [f_lo + bisect.bisect_right(token_ends, e) for e in ends]  # nondecreasing in k
        error = 0  # what the estimate missed at the last check (the tokens where the cut meets `</think>`)
        for _ in range(3):
            k = bisect.bisect_right(est, max_length - error, 0, hi) - 1
            if not lo < k < hi:
                break
            f = size(k)
            if f <= max_length:
                return done(k, f)
            hi, f_hi, error = k, f, f - est[k]
    step = 0
    while hi - lo > 1:
        if step < 4 and f_hi > f_lo:
            target = ends[lo] + (ends[hi] - ends[lo]) * (max_length - f_lo) / (f_hi - f_lo)
            k = min(max(bisect.bisect_right(ends, target) - 1, lo + 1), hi - 1)
        else:
            k = (lo + hi) // 2
        step += 1
        f = size(k)
        if f <= max_length:
            lo, f_lo = k, f
        else:
            hi, f_hi = k, f
    return done(lo, f_lo)


def _key(prompt: Sequence[Message], content: str) -> tuple[tuple[tuple[str, str], ...], str]:
    """What a rendered text depends on: the prompt's messages and the assistant turn (dedup key)."""
    return tuple((m.role, m.content) for m in prompt), content


def _fit_long(
    todo: list[tuple[Sequence[Message], str, int]], tokenizer: Any, max_length: int, batch_size: int = 32
) -> list[tuple[str, dict[str, int]] | None]:
    """`fit_cot` for each over-long (prompt, content, tokens): the offsets its size estimate needs come from one
    batched tokenization per `batch_size` texts (in chunks, so at most that many offset lists are held)."""
    out: list[tuple[str, dict[str, int]] | None] = []
    for i in range(0, len(todo), batch_size):
        chunk = todo[i : i + batch_size]
        cots = [_cot_and_answer(content)[0] for _, content, _ in chunk]
        rendered = [_render(tokenizer, prompt, content) for prompt, content, _ in chunk]
        ends = _cot_token_ends(tokenizer, rendered, cots)
        for (prompt, content, n), e in zip(chunk, ends, strict=True):
            out.append(fit_cot(prompt, content, tokenizer, max_length, total=n, token_ends=e))
    return out


def fit_to_length(pairset: PairSet, cfg: PairsConfig, tokenizer: Any, progress: bool = False) -> PairSet:
    """Apply `cfg.long_pairs` to every pair whose prompt+chosen or prompt+rejected exceeds `cfg.max_length` tokens.

    A trainer truncating at the end would cut the final answer off (the very thing both sides share); instead
    "truncate_cot" cuts the over-long side's CoT at a sentence boundary (`fit_cot`) and "drop" leaves the pair
    out. A pair is also dropped when its prompt and answer alone do not fit, or when cutting made both sides
    equal. "keep" leaves over-long pairs as they are, for a trainer that truncates them as the reference card did
    (`train.long_pairs: truncate`, which counts them). Counts go to `PairSet.long`, the final token counts to
    `PairSet.tokens`.

    One tokenization pass over the distinct texts (no offsets) measures every pair; only the sides over the limit
    are then cut, each distinct one once."""
    pairs = pairset.all
    lengths = token_lengths(pairs, tokenizer, progress=progress)
    cache: dict[tuple[tuple[tuple[str, str], ...], str], tuple[str, dict[str, int]] | None] = {}
    if cfg.long_pairs == "truncate_cot":
        todo: dict[tuple[tuple[tuple[str, str], ...], str], tuple[Sequence[Message], str, int]] = {}
        for pair, sizes in zip(pairs, lengths, strict=True):
            for name, n in zip(("chosen", "rejected"), sizes, strict=True):
                if n > cfg.max_length:
                    todo.setdefault(_key(pair.prompt, getattr(pair, name)), (pair.prompt, getattr(pair, name), n))
        cache = dict(zip(todo, _fit_long(list(todo.values()), tokenizer, cfg.max_length), strict=True))
    kept: dict[Side, list[Pair]] = {"train": [], "val": []}
    tokens: dict[str, tuple[int, int]] = {}
    counts: Counter[str] = Counter()
    by_transform: dict[str, Counter[str]] = defaultdict(Counter)
    reasons: Counter[str] = Counter()
    for i, (pair, (a, b)) in enumerate(zip(pairs, lengths, strict=True)):
        side: Side = "train" if i < len(pairset.train) else "val"
        if max(a, b) <= cfg.max_length or cfg.long_pairs == "keep":
            counts["over_max_length"] += max(a, b) > cfg.max_length
            kept[side].append(pair)
            tokens[pair.id] = (a, b)
            continue
        counts["over_max_length"] += 1
        reason = "over max_length (long_pairs: drop)" if cfg.long_pairs == "drop" else None
        update: dict[str, str] = {}
        meta: dict[str, dict[str, int]] = {}
        sizes = {"chosen": a, "rejected": b}
        for name, n in sizes.items():
            if reason is not None or n <= cfg.max_length:
                continue
            fit = cache[_key(pair.prompt, getattr(pair, name))]
            if fit is None:
                reason = "prompt and final answer alone exceed max_length"
                continue
            update[name], info = fit
            meta[name] = info | {"tokens_before": n}
            sizes[name] = info["tokens"]
        if reason is None and update.get("chosen", pair.chosen) == update.get("rejected", pair.rejected):
            reason = "chosen and rejected equal once cut"
        if reason is not None:
            counts["dropped"] += 1
            by_transform[pair.transform]["dropped"] += 1
            reasons[reason] += 1
            continue
        for name in meta:
            counts[f"truncated_{name}"] += 1
            by_transform[pair.transform][f"truncated_{name}"] += 1
        new = pair.model_copy(update=update | {"transform_meta": pair.transform_meta | {"truncated": meta}})
        kept[side].append(new)
        tokens[new.id] = (sizes["chosen"], sizes["rejected"])
    long = {
        "policy": cfg.long_pairs,
        "max_length": cfg.max_length,
        **{k: counts[k] for k in ("over_max_length", "truncated_chosen", "truncated_rejected", "dropped")},
        "dropped_reasons": dict(sorted(reasons.items())),
        "lengths_before": [max(a, b) for a, b in lengths],  # every pair before the policy, dropped ones too
        "by_transform": {t: dict(sorted(c.items())) for t, c in sorted(by_transform.items())},
    }
    return replace(pairset, train=kept["train"], val=kept["val"], long=long, tokens=tokens)


# ---------------------------------------------------------------------------------------------- leakage


class Leak(NamedTuple):
    """A training pair holding a span of a validation CoT."""

    pair_id: str
    side: str  # "chosen" or "rejected"
    span: str  # the first shared span, words joined by one space


def _spans(text: str, n: int) -> Iterable[str]:
    words = text.split()
    return (" ".join(words[i : i + n]) for i in range(len(words) - n + 1))


def leaked_spans(train: Iterable[Pair], val: Iterable[str], n: int = 20) -> list[Leak]:
    """Training pairs whose chosen or rejected side contains n consecutive words of a validation CoT: the check
    that no held-out text reaches training. Words are whitespace-separated, so a changed layout hides nothing."""
    held = {s for text in val for s in _spans(text, n)}
    leaks = []
    for p in train:
        for side in ("chosen", "rejected"):
            span = next((s for s in _spans(getattr(p, side), n) if s in held), None)
            if span is not None:
                leaks.append(Leak(p.id, side, span))
    return leaks


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
        "donor_scope": pair.donor_scope,
        "split": pair.split,
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
        donor_scope=row.get("donor_scope"),
        split=row.get("split"),
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

    One pass over the distinct (prompt, completion)s (the original side repeats across a trace's pairs): each is
    templated and counted once, in batches through the Rust tokenizer without offsets (`_count`). The rendered
    texts are dropped batch by batch, so memory holds little beyond the pairs."""
    index: dict[tuple[tuple[tuple[str, str], ...], str], int] = {}
    todo: list[tuple[Sequence[Message], str]] = []
    keys = []
    for p in pairs:
        ab = []
        for content in (p.chosen, p.rejected):
            key = _key(p.prompt, content)
            if key not in index:
                index[key] = len(todo)
                todo.append((p.prompt, content))
            ab.append(index[key])
        keys.append((ab[0], ab[1]))
    lengths: list[int] = []
    starts: Iterable[int] = range(0, len(todo), batch_size)
    if progress:
        from rich.progress import track

        starts = track(starts, description=f"tokenizing {len(todo)} texts")
    for i in starts:
        lengths.extend(_count(tokenizer, [_render(tokenizer, pr, c) for pr, c in todo[i : i + batch_size]]))
    return [(lengths[a], lengths[b]) for a, b in keys]


def pair_stats(
    pairset: PairSet,
    cfg: PairsConfig,
    tokenizer: Any | None = None,
    tokenizer_name: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Counts per transform x benchmark x generator, the split, what was not made and why, and token lengths
    against max_length per split (reusing the counts `fit_to_length` measured, else with `tokenizer`).

    Deterministic in its inputs (no timestamps), so a rebuild writes a byte-identical stats.json."""
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
    errors = Counter(e["error"].partition(":")[0] for e in pairset.errors)
    stats: dict[str, Any] = {
        "direction": cfg.direction,
        "seed": cfg.seed,
        "donor_scope": cfg.donor_scope,
        "counts": {
            "train": len(pairset.train),
            "val": len(pairset.val),
            "train_problems": len({p.problem_id for p in pairset.train}),
            "val_problems": len({p.problem_id for p in pairset.val}),
            "traces": len({p.trace_id for p in pairset.all}),
            "errors": len(pairset.errors),
        },
        "split": {
            "val_fraction": cfg.val_fraction,
            "benchmarks": {
                b: {k: len(v) for k, v in s.items()} for b, s in pairset.split.get("benchmarks", {}).items()
            },
            "benchmarks_without_val": pairset.split.get("benchmarks_without_val", []),
        },
        "grading": pairset.grading,
        "by_transform": dict(sorted(Counter(p.transform for p in pairset.all).items())),
        "table": table,
        "skipped": dict(sorted(pairset.skipped.items())),
        "errors": pairset.errors,
        "errors_by_type": dict(sorted(errors.items())),
        "long_pairs": pairset.long,
        "config": cfg.model_dump(mode="json"),
    }
    if pairset.tokens is not None or tokenizer is not None:
        tokens: dict[str, Any] = {"tokenizer": tokenizer_name, "max_length": cfg.max_length}
        for split, pairs in (("train", pairset.train), ("val", pairset.val)):
            if pairset.tokens is not None:
                lens = [pairset.tokens[p.id] for p in pairs]
            else:
                lens = token_lengths(pairs, tokenizer, progress=progress)
            tokens[split] = {
                "prompt_chosen": _summary([a for a, _ in lens]),
                "prompt_rejected": _summary([b for _, b in lens]),
                "over_max_length": sum(max(a, b) > cfg.max_length for a, b in lens),
                # per pair, in file order: the report's length histogram
                "lengths": {"prompt_chosen": [a for a, _ in lens], "prompt_rejected": [b for _, b in lens]},
            }
        stats["tokens"] = tokens
    return stats


def write_pairs(pairset: PairSet, out: str | Path, stats: dict[str, Any]) -> dict[str, Path]:
    """The build's files: TRL train/val, Together train/val, stats, the split. Each written atomically."""
    out = Path(out)
    files = {
        "train": write_jsonl(out / "train.jsonl", (trl_row(p) for p in pairset.train)),
        "val": write_jsonl(out / "val.jsonl", (trl_row(p) for p in pairset.val)),
        "together_train": write_jsonl(out / "together_train.jsonl", (together_row(p) for p in pairset.train)),
        "together_val": write_jsonl(out / "together_val.jsonl", (together_row(p) for p in pairset.val)),
        "stats": write_json(out / "stats.json", stats),
        "split": write_json(out / "split.json", pairset.split),
    }
    return files


def build_and_write(
    traces: Sequence[Trace],
    cfg: PairsConfig,
    out: str | Path,
    *,
    inputs: Sequence[str | Path] = (),
    problems: Iterable[Problem] = (),
    progress: bool = False,
) -> tuple[PairSet, dict[str, Any]]:
    """The whole pairs stage (CLI and `stages.pairs_stage`): build, apply the long-pair policy with
    `cfg.tokenizer` (None or "none" skips it), count, and write `out/` with provenance of `inputs` in stats.json.
    `problems` (all the run's problems) widen split.json to problems without usable traces."""
    from legibility.provenance import provenance

    tokenizer = None
    if cfg.tokenizer and cfg.tokenizer.lower() != "none":
        from legibility.hub import hub_errors
        from legibility.models import load_tokenizer

        with hub_errors("pairs.tokenizer", cfg.tokenizer):
            tokenizer = load_tokenizer(cfg.tokenizer)
    pairset = build_pairs(traces, cfg, progress=progress, tokenizer=tokenizer)
    extra = [(p.benchmark, p.id) for p in problems]
    if extra:
        keys = [(t.benchmark, t.problem_id) for t in traces] + extra
        pairset = replace(pairset, split=split_manifest(keys, cfg.val_fraction, cfg.seed))
    stats = pair_stats(pairset, cfg, tokenizer, cfg.tokenizer if tokenizer is not None else None, progress=progress)
    stats["provenance"] = provenance(cfg, [Path(p) for p in inputs], cfg.seed)
    write_pairs(pairset, out, stats)
    return pairset, stats
