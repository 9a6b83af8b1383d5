"""Legibility evaluation (issue #8): pure functions over plain data and records, no model calls.

- `stats`: accuracy with question-clustered bootstrap intervals, paired generator comparisons, AUROC.
- `masking`: answer removal for reader condition C2.
- `taxonomy`: protocol v3 filters and labels (ANSWER_LEAKED / REASONING_LEGIBLE / ILLEGIBLE).
- `agreement`: Cohen's kappa and Krippendorff's alpha between readers and judges.
- `curves`: early-answering cuts, area over / under the curve, the legible-prefix cut.
- `validity`: every metric's AUROC of intact above corrupted, per corruption.

Import the submodules directly; this package imports none of them, so using one does not load the
statistics stack of the others.
"""
