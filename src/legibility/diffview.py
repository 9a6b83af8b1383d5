"""Show a pair so a researcher can check a transform by eye: the two CoTs diffed sentence by sentence."""

from __future__ import annotations

import difflib
import json

from rich.console import Group
from rich.panel import Panel
from rich.text import Text

from legibility.records import Pair
from legibility.responses import split_think
from legibility.text import sentences


def sentence_diff(original: str, corrupted: str) -> Text:
    """An inline diff over sentences: kept ones plain, removed ones red and struck, added ones green."""
    a = [s.text for s in sentences(original)]
    b = [s.text for s in sentences(corrupted)]
    out = Text()
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            for s in a[i1:i2]:
                out.append(s + "\n")
        if op in ("delete", "replace"):
            for s in a[i1:i2]:
                out.append("- " + s + "\n", style="red strike")
        if op in ("insert", "replace"):
            for s in b[j1:j2]:
                out.append("+ " + s + "\n", style="green")
    return out


def render_pair(pair: Pair, index: int | None = None) -> Group:
    chosen, rejected = split_think(pair.chosen), split_think(pair.rejected)
    original, corrupted = (chosen, rejected) if pair.direction == "legible" else (rejected, chosen)
    head = Text()
    head.append(f"pair {index if index is not None else ''} {pair.id}\n", style="bold")
    head.append(f"transform {pair.transform}  direction {pair.direction} (preferred: ")
    head.append("original" if pair.direction == "legible" else "corrupted", style="bold")
    head.append(f")\nbenchmark {pair.benchmark}  generator {pair.generator}  donor {pair.donor_trace_id}\n")
    head.append("meta " + json.dumps(pair.transform_meta, sort_keys=True)[:400])
    prompt = Text("\n".join(f"[{m.role}] {m.content}" for m in pair.prompt))
    return Group(
        head,
        Panel(prompt, title="prompt", title_align="left"),
        Panel(
            sentence_diff(original.reasoning, corrupted.reasoning),
            title="CoT: original -> corrupted (red removed, green added)",
            title_align="left",
        ),
        Panel(Text(original.answer), title="final answer (same on both sides)", title_align="left"),
    )
