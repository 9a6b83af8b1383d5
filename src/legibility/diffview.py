"""Show a pair so a researcher can check a transform by eye: the two CoTs diffed sentence by sentence."""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter

from rich.console import Group
from rich.panel import Panel
from rich.text import Text

from legibility.records import Pair
from legibility.responses import split_think
from legibility.text import sentences

_WORDS = re.compile(r"\S+|\s+")


def _word_diff(a: str, b: str, out: Text) -> None:
    """One edited sentence: removed words red and struck, added words green (number substitution, say)."""
    wa, wb = _WORDS.findall(a), _WORDS.findall(b)
    out.append("~ ", style="yellow")
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=wa, b=wb, autojunk=False).get_opcodes():
        if op == "equal":
            out.append("".join(wa[i1:i2]))
            continue
        if i2 > i1:
            out.append("".join(wa[i1:i2]), style="red strike")
        if j2 > j1:
            out.append("".join(wb[j1:j2]), style="bold green")
    out.append("\n")


def sentence_diff(original: str, corrupted: str) -> Text:
    """The corrupted CoT in its own order, each sentence marked against the original:
    plain = unchanged in place, yellow `moved from #i` = reordered, green `+` = new (donor),
    `~` = edited in place (word diff), red `-` = deleted."""
    a = [s.text for s in sentences(original)]
    b = [s.text for s in sentences(corrupted)]
    where_a: dict[str, list[int]] = {}
    for i, s in enumerate(a):
        where_a.setdefault(s, []).append(i)
    in_b = Counter(b)
    out = Text()
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            for s in a[i1:i2]:
                out.append("  " + s + "\n")
            continue
        if op == "replace" and i2 - i1 == j2 - j1:
            pairs = list(zip(a[i1:i2], b[j1:j2], strict=True))
            if all(difflib.SequenceMatcher(a=x, b=y).ratio() > 0.6 for x, y in pairs):
                for x, y in pairs:
                    _word_diff(x, y, out)
                continue
        for s in a[i1:i2]:
            if not in_b[s]:  # gone for good (a sentence that moved is shown where it landed)
                out.append("- " + s + "\n", style="red strike")
        for s in b[j1:j2]:
            if s in where_a:
                out.append(f"moved from #{where_a[s][0]}: ", style="yellow")
                out.append(s + "\n")
            else:
                out.append("+ " + s + "\n", style="green")
    return out


def render_pair(pair: Pair, index: int | None = None) -> Group:
    chosen, rejected = split_think(pair.chosen), split_think(pair.rejected)
    original, corrupted = (chosen, rejected) if pair.direction == "legible" else (rejected, chosen)
    head = Text()
    head.append(f"pair {'' if index is None else index} {pair.id}\n", style="bold")
    head.append(f"transform {pair.transform}  direction {pair.direction} (preferred: ")
    head.append("original" if pair.direction == "legible" else "corrupted", style="bold")
    head.append(f")\nbenchmark {pair.benchmark}  generator {pair.generator}  donor {pair.donor_trace_id}\n")
    meta = json.dumps(pair.transform_meta, sort_keys=True)
    head.append("meta " + (meta if len(meta) <= 300 else meta[:300] + " ..."))
    prompt = Text("\n".join(f"[{m.role}] {m.content}" for m in pair.prompt))
    legend = "CoT, corrupted order: plain kept, yellow moved, green + added, ~ edited, red - deleted"
    return Group(
        head,
        Panel(prompt, title="prompt", title_align="left"),
        Panel(sentence_diff(original.reasoning, corrupted.reasoning), title=legend, title_align="left"),
        Panel(Text(original.answer), title="final answer (same on both sides)", title_align="left"),
    )
