"""The nine off-policy corruptions of a CoT that make the rejected side of a DPO pair.

Every transform is a pure function of (CoT, donors, seeded RNG): the same inputs and seed give the same
output on any machine (the RNG is `random.Random(f"{name}:{seed}")`, which hashes str seeds with SHA-512,
not with Python's salted `hash()`), so a pair set can be rebuilt exactly.

A transform that cannot change a CoT (one sentence, no numbers, no usable donor) raises `CannotTransform`
inside; `apply` turns that into a result with `changed=False` and `reason`, and does the same for an output
that happens to equal the input, so a successful result always differs from the original. The pair builder
checks `.changed` and picks another transform.

A result is written between think tags (`responses.completion`), so an output holding "</think>" would end
the CoT early and corrupt the final answer's split: `apply` declines it, and donors holding the tag are
never picked. The nine transforms take their text only from the CoT and the picked donor and never join
pieces without whitespace, so a tag in an output comes from the CoT: `apply` scans the output only when the
CoT holds one (a new transform must keep to that). Why: scanning every 17 KB output cost 5-8% of a pair
build, the cached check on the CoT and donors nothing.

Donors are other problems' CoTs (the builder filters out the same problem): plain strings, objects with
`.reasoning` and `.id` (records.Trace), or `(text, segments)` tuples. Only the donor the seeded RNG picks is
touched (segmented once per process: `text.sentences` is cached), so passing every other trace is cheap.

Reordered sentences carry their own separator (`text.separator`): "\\n\\n" after a paragraph end, "\\n" after
a line break, else a space. Adding a transform: one function decorated with `@register("name")`.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from itertools import accumulate
from typing import Any

from legibility.errors import LegibilityError
from legibility.responses import THINK_CLOSE  # where split_think ends the CoT
from legibility.text import Segment, join, rebuild, sentences, separator


class CannotTransform(LegibilityError):
    """This transform cannot change this CoT (too short, no numbers, no usable donor)."""


@dataclass(frozen=True)
class TransformResult:
    """The corrupted CoT and what was done (meta goes into Pair.transform_meta); text is the input when
    changed is False."""

    text: str
    meta: dict[str, Any] = field(default_factory=dict)
    changed: bool = True
    reason: str | None = None  # why not, when changed is False


@dataclass(frozen=True)
class Doc:
    """A CoT with its sentences, and its trace id when it came from a Trace."""

    text: str
    segs: list[Segment]
    id: str | None = None


@lru_cache(maxsize=4096)
def holds_think_close(text: str) -> bool:
    """Does `text` hold "</think>"? Cached: CoTs and donors recur, and a scan of a long trace takes ~20 us."""
    return THINK_CLOSE in text


Donor = Any  # str | records.Trace (anything with .reasoning and .id) | tuple[str, Sequence[Segment]]
Transform = Callable[[Doc, Sequence[Donor], random.Random], tuple[str, dict[str, Any]]]
TRANSFORMS: dict[str, Transform] = {}


def register(name: str, fn: Transform | None = None) -> Any:
    """`@register("name")` on a function, or `register("name", partial(fn, ...))`."""
    if fn is not None:
        TRANSFORMS[name] = fn
        return fn
    return lambda f: register(name, f)


def as_doc(d: Donor) -> Doc:
    if isinstance(d, str):
        return Doc(d, sentences(d))
    if isinstance(d, tuple):
        return Doc(d[0], list(d[1]))
    return Doc(d.reasoning, sentences(d.reasoning), getattr(d, "id", None))


def pick_donor(
    rng: random.Random, donors: Sequence[Donor], ok: Callable[[Doc], bool] = lambda d: bool(d.segs)
) -> tuple[Doc, dict[str, Any]]:
    """A random usable donor: start at a seeded index, walk on until `ok` (O(1) when most donors are usable).
    A donor holding "</think>" is never usable: its text would end the CoT early in a completion."""
    if not donors:
        raise CannotTransform("no donors")
    start = rng.randrange(len(donors))
    for k in range(len(donors)):
        i = (start + k) % len(donors)
        d = as_doc(donors[i])
        if not holds_think_close(d.text) and ok(d):
            return d, {"donor_index": i} | ({"donor_id": d.id} if d.id is not None else {})
    raise CannotTransform("no usable donor")


def need(doc: Doc, n: int = 2) -> int:
    if len(doc.segs) < n:
        raise CannotTransform(f"needs {n}+ sentences, has {len(doc.segs)}")
    return len(doc.segs)


def reorder(doc: Doc, order: list[int]) -> str:
    """The sentences in `order` (all of them, or a subsequence when deleting); refuses an order that only moves
    whitespace ("Hmm. Hmm." swapped). A shorter order always changes the sentences, so only a full one is
    compared (zipping a shorter one with strict=True raised ValueError: issue #10)."""
    if len(order) == len(doc.segs) and all(doc.segs[i].text == s.text for i, s in zip(order, doc.segs, strict=True)):
        raise CannotTransform("reordering leaves the same sentences in the same places")
    return rebuild(doc.text, doc.segs, order)


def same_sentences(a: Doc, b: Doc) -> bool:
    return len(a.segs) == len(b.segs) and all(x.text == y.text for x, y in zip(a.segs, b.segs, strict=True))


@register("cross_substitution")
def cross_substitution(doc: Doc, donors: Sequence[Donor], rng: random.Random) -> tuple[str, dict]:
    """The whole CoT of another problem: fluent, but unrelated to this question."""
    d, meta = pick_donor(rng, donors, lambda d: bool(d.segs) and not same_sentences(d, doc))
    return d.text, meta


def splice(doc: Doc, donors: Sequence[Donor], rng: random.Random, frac: float) -> tuple[str, dict]:
    """Keep the first `frac` of the sentences (at least one, not all), then the donor's CoT from the same
    fraction of its sentences on: the reasoning starts on topic and drifts to another problem."""
    n = need(doc)
    k = min(n - 1, max(1, int(n * frac + 0.5)))
    d, meta = pick_donor(rng, donors)
    m = len(d.segs)
    j = min(m - 1, int(m * frac + 0.5))
    head = doc.text[: doc.segs[k - 1].end] + separator(doc.text, doc.segs, k - 1)
    tail = d.text[d.segs[j].start : d.segs[-1].end]
    meta |= {"fraction": frac, "n_sentences": n, "kept_sentences": k}
    meta |= {"donor_start_sentence": j, "donor_sentences": m - j}
    return head + tail, meta


register("donor_splice_50", partial(splice, frac=0.5))
register("donor_splice_25", partial(splice, frac=0.25))


@register("sentence_shuffle")
def sentence_shuffle(doc: Doc, donors: Sequence[Donor], rng: random.Random) -> tuple[str, dict]:
    """A random permutation of the sentences that changes the text (never the identity)."""
    n = need(doc)
    texts = [s.text for s in doc.segs]
    if len(set(texts)) < 2:
        raise CannotTransform("all sentences are identical")
    order = list(range(n))
    for _ in range(20):
        rng.shuffle(order)
        if [texts[i] for i in order] != texts:
            break
    else:  # only when most sentences repeat: a rotation always differs once two sentences do
        order = [*range(1, n), 0]
    return reorder(doc, order), {"n_sentences": n, "permutation": order}


@register("adjacent_swap")
def adjacent_swap(doc: Doc, donors: Sequence[Donor], rng: random.Random) -> tuple[str, dict]:
    """Swap sentences 0<->1, 2<->3, ...; an odd last sentence stays: local order broken, content kept."""
    n = need(doc)
    order = [i ^ 1 if i ^ 1 < n else i for i in range(n)]
    return reorder(doc, order), {"n_sentences": n, "swapped_pairs": n // 2}


@register("sentence_deletion_30")
def sentence_deletion_30(doc: Doc, donors: Sequence[Donor], rng: random.Random) -> tuple[str, dict]:
    """Drop round(30%) of the sentences (at least one, never all) at random, keeping the rest in order."""
    n = need(doc)
    k = min(n - 1, max(1, round(0.3 * n)))
    deleted = sorted(rng.sample(range(n), k))
    gone = set(deleted)
    order = [i for i in range(n) if i not in gone]
    return reorder(doc, order), {"n_sentences": n, "fraction": 0.3, "deleted": deleted, "kept": n - k}


DISTRACTOR_EVERY = 2  # one donor sentence after every second original sentence (after the only one if n == 1)


@register("distractor_injection")
def distractor_injection(doc: Doc, donors: Sequence[Donor], rng: random.Random) -> tuple[str, dict]:
    """Interleave a run of consecutive sentences from a donor CoT into this one, which stays whole and in
    order. Each donor sentence takes the separator of the original sentence it follows."""
    n = need(doc, 1)
    d, meta = pick_donor(rng, donors)
    after = list(range(DISTRACTOR_EVERY - 1, n, DISTRACTOR_EVERY)) or [n - 1]
    m, start = len(d.segs), rng.randrange(len(d.segs))
    picked = [(start + t) % m for t in range(len(after))]
    items, slots = [], dict(zip(after, picked, strict=True))
    for i, s in enumerate(doc.segs):
        sep = separator(doc.text, doc.segs, i)
        items.append((s.text, sep))
        if i in slots:
            items.append((d.segs[slots[i]].text, sep))
    meta |= {"n_sentences": n, "after": after, "donor_sentence_indices": picked, "inserted": len(after)}
    return join(items), meta


# A number: digits with an optional decimal part, not glued to a word or a subscript ("x2", "a_1", "\frac12"
# are left alone), so LaTeX command names, environment names and braces are never touched; only digits change.
# \begin{...} / \end{...} arguments are matched as a whole first, so numbers inside them are skipped.
# (the leading lookahead is a prefilter: it halves the time of this, the hottest regex)
_NUMBER = re.compile(r"(?=[\\\d])(?:(\\(?:begin|end)\s*\{[^{}]*\})|((?<![\w.])\d+(?:\.\d+)?))")


def find_numbers(text: str) -> list[re.Match]:
    """The numbers `number_substitution` may replace, in order (public so tests can align before/after)."""
    return [m for m in _NUMBER.finditer(text) if m[2]]


@lru_cache(maxsize=4096)
def _number_pool(text: str) -> tuple[list[tuple[str, float]], list[int]]:
    """A donor's distinct numbers with their values, and cumulative counts to draw them by frequency
    (cached, since donors recur; distinct values keep the cache ~5x smaller than every occurrence)."""
    counts = Counter((m[0], float(m[0])) for m in find_numbers(text))
    return list(counts), list(accumulate(counts.values()))


def _fits(new: str, v: float, value: float, width: int | None, glued: bool) -> bool:
    """A replacement differs in value, keeps an unbraced exponent's width, and keeps a decimal before ".14"."""
    return v != value and (width is None or len(new) == width) and (not glued or "." in new)


@register("number_substitution")
def number_substitution(doc: Doc, donors: Sequence[Donor], rng: random.Random) -> tuple[str, dict]:
    """Replace every number with a different number drawn from a donor CoT, as often as the donor uses it
    (same grammar, wrong values).

    A number right after `^` (an unbraced exponent, one token in LaTeX) is replaced by one of the same
    length, so `x^2` never becomes `x^13`; a position with no different donor number is left as it was.
    """
    # re.split gives [text, env, number, text, env, number, ...]: one C pass, no Match objects (it's the
    # hot loop: a 3,000-word math trace holds ~700 numbers)
    parts = _NUMBER.split(doc.text)
    idx = [k for k in range(2, len(parts), 3) if parts[k]]
    if not idx:
        raise CannotTransform("no numbers")
    d, meta = pick_donor(rng, donors, lambda d: bool(_number_pool(d.text)[0]))
    pool, cum = _number_pool(d.text)
    replaced = 0
    for k, (new, v) in zip(idx, rng.choices(pool, cum_weights=cum, k=len(idx)), strict=True):
        old = parts[k]
        value, exp = float(old), parts[k - 2].endswith("^")
        # "144.3.14": an integer put before ".14" would merge with it into one number; keep a decimal there
        glued = parts[k + 1][:1] == "." and parts[k + 1][1:2].isdigit()
        width = len(old) if exp else None
        if not _fits(new, v, value, width, glued):  # redraw a few times, then take any that fits
            for new, v in rng.choices(pool, cum_weights=cum, k=3):
                if _fits(new, v, value, width, glued):
                    break
            else:
                ok = [x for x, xv in pool if _fits(x, xv, value, width, glued)]
                if not ok:
                    continue
                new = ok[rng.randrange(len(ok))]
        parts[k] = new
        replaced += 1
    if not replaced:
        raise CannotTransform("the donor has no number different from this CoT's")
    return "".join(p for p in parts if p), meta | {"numbers": len(idx), "replaced": replaced}


@register("sentence_reversal")
def sentence_reversal(doc: Doc, donors: Sequence[Donor], rng: random.Random) -> tuple[str, dict]:
    """All sentences in reverse order."""
    n = need(doc)
    return reorder(doc, list(range(n - 1, -1, -1))), {"n_sentences": n}


def apply(
    name: str,
    text: str,
    donors: Sequence[Donor] = (),
    seed: int | str = 0,
    segments: Sequence[Segment] | None = None,
) -> TransformResult:
    """Apply transform `name` to `text`; `segments` (from `text.sentences`) skips re-segmenting."""
    fn = TRANSFORMS.get(name)
    if fn is None:
        raise LegibilityError(f"unknown transform {name!r}; known: {', '.join(TRANSFORMS)}")
    doc = Doc(text, list(segments) if segments is not None else sentences(text))
    try:
        new, meta = fn(doc, donors, random.Random(f"{name}:{seed}"))
    except CannotTransform as e:
        return TransformResult(text, {"reason": str(e)}, changed=False, reason=str(e))
    # a tag in the output can only be the CoT's own (see the module doc), so the scan is off the hot path
    if new == text or (holds_think_close(text) and THINK_CLOSE in new):
        reason = "output equals input" if new == text else f"output holds {THINK_CLOSE}"
        return TransformResult(text, {"reason": reason}, changed=False, reason=reason)
    return TransformResult(new, meta)
