"""Agreement between readers and judges: Cohen's kappa for pairs, Krippendorff's alpha for many.

Why both: kappa is the familiar pairwise number (which two readers disagree?), alpha handles any number
of raters, missing ratings, and scores as well as labels (nominal for labels, ordinal or interval for
scores). Missing ratings are None or NaN: kappa drops the items either rater missed, alpha uses what
there is. Computed by scikit-learn (`cohen_kappa_score`) and the `krippendorff` package.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from itertools import combinations
from typing import Any, Literal

import krippendorff
import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

from legibility.errors import LegibilityError

Level = Literal["nominal", "ordinal", "interval", "ratio"]


def is_missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def cohen_kappa(
    a: Sequence[Hashable | None], b: Sequence[Hashable | None], *, weights: Literal["linear", "quadratic"] | None = None
) -> float:
    """Cohen's kappa on the items both raters rated; nan when fewer than two remain or chance agreement is
    total (both raters always give the same single label). weights: for ordinal scores."""
    if len(a) != len(b):
        raise LegibilityError(f"kappa needs paired ratings: {len(a)} vs {len(b)}")
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if not is_missing(x) and not is_missing(y)]
    if len(pairs) < 2:
        return float("nan")
    xs, ys = zip(*pairs, strict=True)
    if len(set(xs) | set(ys)) < 2:
        return float("nan")
    labels = sorted(set(xs) | set(ys), key=str) if weights is None else None
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(cohen_kappa_score(list(xs), list(ys), labels=labels, weights=weights))


def pairwise_kappa(
    ratings: Mapping[str, Sequence[Hashable | None]], *, weights: Literal["linear", "quadratic"] | None = None
) -> pd.DataFrame:
    """Cohen's kappa for every pair of raters, as a symmetric rater x rater table (diagonal 1)."""
    names = list(ratings)
    out = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for x, y in combinations(names, 2):
        out.loc[x, y] = out.loc[y, x] = cohen_kappa(ratings[x], ratings[y], weights=weights)
    return out


def reliability_matrix(ratings: Mapping[str, Sequence[Any]], level: Level = "nominal") -> np.ndarray:
    """Raters x items floats, NaN for missing. Nominal labels (any hashable) become integer codes; other
    levels must already be numbers."""
    names = list(ratings)
    n = {len(v) for v in ratings.values()}
    if len(n) != 1:
        raise LegibilityError(f"every rater needs a rating (or None) per item; lengths {sorted(n)}")
    if level == "nominal":
        code: dict[Hashable, int] = {}
        rows = [[np.nan if is_missing(x) else code.setdefault(x, len(code)) for x in ratings[r]] for r in names]
    else:
        rows = [[np.nan if is_missing(x) else float(x) for x in ratings[r]] for r in names]
    return np.array(rows, dtype=float)


def krippendorff_alpha(ratings: Mapping[str, Sequence[Any]], level: Level = "nominal") -> float:
    """Krippendorff's alpha over raters (judges, readers) rating the same items; items with fewer than two
    ratings carry no information and are left out; nan when no item has two ratings or values never vary."""
    m = reliability_matrix(ratings, level)
    m = m[:, (~np.isnan(m)).sum(axis=0) >= 2]
    if m.shape[1] == 0 or len(np.unique(m[~np.isnan(m)])) < 2:
        return float("nan")
    return float(krippendorff.alpha(reliability_data=m, level_of_measurement=level))
