"""A tiny document model both renderers read, so report.html and report.md always say the same thing.

Sections hold blocks (paragraphs, tables, figures, code, "not run" notes). Numbers are formatted here, once:
three significant digits, counts as integers, a missing value as an en dash.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

DASH = "–"

COUNTS = {
    "n",
    "n_problems",
    "failed",
    "n_items",
    "n_traces",
    "n_corrupted",
    "n_cut",
    "train",
    "val",
    "pairs",
    "kept",
    "total",
    "complete",
    "correct",
    "correct_strict",
    "count",
    "dropped",
    "truncated",
    "errors",
    "no_readers",
    "generator_wrong",
    "too_hard",
    "too_easy",
    "ANSWER_LEAKED",
    "REASONING_LEGIBLE",
    "ILLEGIBLE",
}
"""Columns printed as integers (a CSV column with a missing value reads back as floats)."""


def is_count(column: str) -> bool:
    return column in COUNTS or column.startswith(("n_", "dropped", "longest", "max_length", "evaluated"))


def fmt(value: Any, count: bool = False) -> str:
    """Three significant digits (trailing zeros kept: 0.500, 12.0), thousands as integers, NaN/None as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (count and isinstance(value, float) and float(value).is_integer()):
        return f"{int(value):,}"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) < 1e-3:
            return f"{value:.2e}"
        text = f"{value:#.3g}"
        return text.rstrip(".") if "e" not in text else text
    return str(value)


_NUM = re.compile(r"^[−\-+]?[\d,]*\.?\d+(e[+-]?\d+)?%?( \[.*\])?$")


def numeric(text: str) -> bool:
    """Whether a formatted cell reads as a number (right-aligned by the renderers)."""
    return text == DASH or bool(_NUM.match(text))


def numeric_columns(table: Table) -> list[bool]:
    """Per column, whether to right-align it: every cell a number or a dash, and at least one number."""
    out = []
    for i in range(len(table.columns)):
        texts = [(c.text if isinstance(c, Cell) else str(c)) for r in table.rows if i < len(r) for c in [r[i]]]
        out.append(any(x != DASH for x in texts) and all(numeric(x) for x in texts))
    return out


def interval(est: Any, low: Any, high: Any) -> str:
    """`0.512 [0.401, 0.620]`, or the estimate alone when the interval is missing."""
    if fmt(low) == DASH or fmt(high) == DASH:
        return fmt(est)
    return f"{fmt(est)} [{fmt(low)}, {fmt(high)}]"


@dataclass
class Cell:
    """A table cell with a background colour (the validity table) and a second line in small print."""

    text: str
    color: str | None = None
    small: str | None = None


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str | Cell]]
    caption: str = ""


@dataclass
class Figure:
    name: str  # file stem under report_files/
    png: bytes
    caption: str


@dataclass
class Para:
    text: str  # plain text; `code` spans are marked up by the renderers


@dataclass
class NotRun:
    text: str


@dataclass
class Code:
    text: str
    caption: str = ""


Block = Table | Figure | Para | NotRun | Code


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    children: list[Section] = field(default_factory=list)

    def add(self, *blocks: Block | None) -> Section:
        self.blocks.extend(b for b in blocks if b is not None)
        return self

    def figures(self) -> Iterable[Figure]:
        yield from (b for b in self.blocks if isinstance(b, Figure))
        for c in self.children:
            yield from c.figures()


@dataclass
class Document:
    title: str
    subtitle: str
    note: str | None
    sections: list[Section]

    def figures(self) -> list[Figure]:
        return [f for s in self.sections for f in s.figures()]


def frame_table(
    df: pd.DataFrame | None,
    columns: Sequence[str] | None = None,
    caption: str = "",
    rename: dict[str, str] | None = None,
) -> Table | None:
    """A DataFrame as a Table (None when it has no rows); only `columns` that exist, in that order."""
    if df is None or df.empty:
        return None
    cols = [c for c in (columns or list(df.columns)) if c in df.columns]
    rows = [[fmt(_plain(r[c]), count=is_count(c)) for c in cols] for _, r in df.iterrows()]
    names = [(rename or {}).get(c, c) for c in cols]
    return Table(names, rows, caption)


def _plain(v: Any) -> Any:
    """numpy scalars as Python values (so ints stay ints)."""
    return v.item() if hasattr(v, "item") and not isinstance(v, str | bytes) else v
