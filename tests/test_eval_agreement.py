"""Cohen's kappa and Krippendorff's alpha against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from legibility.errors import LegibilityError
from legibility.evaluate.agreement import cohen_kappa, krippendorff_alpha, pairwise_kappa, reliability_matrix

# a: Y Y N N Y N;  b: Y N N N Y Y
# observed agreement p_o = 4/6 (items 1, 3, 4, 5); each rater says Y 3 times of 6,
# so chance agreement p_e = (3/6)(3/6) + (3/6)(3/6) = 1/2; kappa = (2/3 - 1/2) / (1 - 1/2) = 1/3
A = ["Y", "Y", "N", "N", "Y", "N"]
B = ["Y", "N", "N", "N", "Y", "Y"]


def test_cohen_kappa_by_hand():
    assert cohen_kappa(A, B) == pytest.approx(1 / 3, abs=1e-9)


def test_cohen_kappa_drops_items_either_rater_missed():
    assert cohen_kappa([*A, None, "Y"], [*B, "N", float("nan")]) == pytest.approx(1 / 3, abs=1e-9)


def test_cohen_kappa_edge_cases():
    assert cohen_kappa(A, A) == pytest.approx(1.0, abs=1e-9)
    assert math.isnan(cohen_kappa(["Y", "Y"], ["Y", "Y"]))  # chance agreement is total
    assert math.isnan(cohen_kappa(["Y"], ["N"]))
    with pytest.raises(LegibilityError):
        cohen_kappa(["Y"], ["Y", "N"])


def test_pairwise_kappa_table():
    t = pairwise_kappa({"a": A, "b": B, "c": A})
    assert list(t.index) == ["a", "b", "c"]
    assert t.loc["a", "b"] == t.loc["b", "a"] == pytest.approx(1 / 3, abs=1e-9)
    assert t.loc["a", "c"] == pytest.approx(1.0)
    assert np.allclose(np.diag(t.to_numpy()), 1.0)


def test_krippendorff_nominal_by_hand():
    # units: (a,a) (a,b) (b,b) (b,b). Coincidences (each unit has m=2 values, weight 1/(m-1) = 1):
    # o_aa = 2, o_ab = o_ba = 1, o_bb = 4; n_a = 3, n_b = 5, n = 8.
    # alpha = 1 - (n-1) * sum_{c!=k} o_ck / sum_{c!=k} n_c n_k = 1 - 7 * 2 / 30 = 8/15
    r = {"r1": ["a", "a", "b", "b"], "r2": ["a", "b", "b", "b"]}
    assert krippendorff_alpha(r, "nominal") == pytest.approx(8 / 15, abs=1e-9)


def test_krippendorff_interval_by_hand_with_missing_values():
    # units (1,1) (2,2) (3,4); delta = (c-k)^2. D_o = (1/n) sum o_ck delta = (1 + 1) / 6.
    # n_1 = n_2 = 2, n_3 = n_4 = 1, n = 6; sum_{c<k} n_c n_k (c-k)^2 = 4 + 8 + 18 + 2 + 8 + 1 = 41,
    # D_e = 2 * 41 / (6 * 5) = 82/30; alpha = 1 - (2/6) / (82/30) = 1 - 10/82 = 36/41.
    r = {"r1": [1, 2, 3], "r2": [1, 2, 4]}
    assert krippendorff_alpha(r, "interval") == pytest.approx(36 / 41, abs=1e-9)
    # a rater with nothing and a unit rated once carry no information: same alpha
    r2 = {"r1": [1, 2, 3, 5.0], "r2": [1, 2, 4, None], "r3": [None, np.nan, None, None]}
    assert krippendorff_alpha(r2, "interval") == pytest.approx(36 / 41, abs=1e-9)


def test_reliability_matrix_codes_labels_and_marks_missing():
    m = reliability_matrix({"x": ["yes", None, "no"], "y": ["no", "yes", float("nan")]})
    assert m[0, 0] == m[1, 1] == 0 and m[0, 2] == m[1, 0] == 1
    assert np.isnan(m[0, 1]) and np.isnan(m[1, 2])
    with pytest.raises(LegibilityError):
        reliability_matrix({"x": [1], "y": [1, 2]})


def test_krippendorff_degenerate_is_nan():
    assert math.isnan(krippendorff_alpha({"a": ["x", "x"], "b": ["x", "x"]}))
    assert math.isnan(krippendorff_alpha({"a": ["x", None], "b": [None, "y"]}))
