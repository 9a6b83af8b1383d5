"""The Document as one self-contained HTML file: CSS inline, figures as base64 PNG, no script, no external
request of any kind (no CDN, no web font, no link off the page), so it opens the same offline and in a mail."""

from __future__ import annotations

import base64
import html

from legibility.report.doc import Block, Cell, Code, Document, Figure, NotRun, Para, Section, Table, numeric_columns

CSS = """
:root { --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --accent: #2f5f96; --soft: #f8fafc; }
* { box-sizing: border-box; }
body { margin: 0; background: #eef0f3; color: var(--fg);
  font: 15px/1.55 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 980px; margin: 24px auto; background: #fff; padding: 32px 48px 48px; border-radius: 10px;
  box-shadow: 0 1px 3px rgba(0, 0, 0, .08); }
h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -.01em; }
h2 { font-size: 21px; border-bottom: 2px solid var(--line); padding-bottom: 6px; margin: 44px 0 12px; }
h3 { font-size: 16.5px; margin: 30px 0 8px; }
h2 .num, h3 .num { color: var(--muted); font-weight: 500; margin-right: 6px; }
.subtitle { color: var(--muted); margin: 0 0 16px; }
.note { background: #fff7ed; border-left: 4px solid #e07b39; padding: 10px 14px; border-radius: 4px; margin: 16px 0; }
nav.toc { background: var(--soft); border: 1px solid var(--line); border-radius: 8px; padding: 12px 22px;
  margin: 20px 0 8px; columns: 2; column-gap: 32px; }
nav.toc > ol { margin: 0; padding-left: 18px; }
nav.toc ol ol { padding-left: 18px; margin: 2px 0 6px; font-size: 14px; }
nav.toc li { break-inside: avoid; margin: 1px 0; }
nav.toc a { color: var(--accent); text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
p { margin: 8px 0; max-width: 760px; }
figure { margin: 14px 0 22px; }
figure img { width: 700px; max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; max-width: 700px; }
.table-wrap { overflow-x: auto; margin: 10px 0 20px; }
table { border-collapse: collapse; font-size: 13px; font-variant-numeric: tabular-nums; }
caption { caption-side: bottom; text-align: left; color: var(--muted); font-size: 12.5px; padding-top: 6px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap;
  vertical-align: top; }
th { background: var(--soft); font-weight: 600; border-bottom: 2px solid #d1d5db; white-space: normal;
  vertical-align: bottom; min-width: 3em; }
td.num { text-align: right; }
tbody tr:hover td { background-color: #f9fafb; }
tbody tr:hover td[style] { filter: brightness(.97); }
td small { display: block; color: #4b5563; font-size: 10.5px; }
.notrun { color: var(--muted); font-style: italic; border-left: 3px solid #d1d5db; padding: 4px 12px; }
pre { background: #0f172a; color: #e2e8f0; padding: 12px 14px; border-radius: 6px; overflow-x: auto;
  font-size: 12.5px; line-height: 1.45; margin: 6px 0 16px; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: .9em; }
p code { background: #f1f3f5; padding: 1px 4px; border-radius: 3px; }
details > summary { cursor: pointer; color: var(--accent); margin: 8px 0; }
.code-caption { color: var(--muted); font-size: 12.5px; margin: 12px 0 0; }
footer { color: var(--muted); font-size: 12px; margin-top: 40px; border-top: 1px solid var(--line); padding-top: 10px; }
"""


def _inline(text: str) -> str:
    """Escaped text with `code` spans."""
    parts = text.split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def _table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    body = []
    right = numeric_columns(t)
    for row in t.rows:
        cells = []
        for i, c in enumerate(row):
            cell = c if isinstance(c, Cell) else Cell(str(c))
            cls = ' class="num"' if i < len(right) and right[i] else ""
            style = f' style="background-color:{cell.color}"' if cell.color else ""
            small = f"<small>{html.escape(cell.small)}</small>" if cell.small else ""
            cells.append(f"<td{cls}{style}>{html.escape(cell.text)}{small}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{_inline(t.caption)}</caption>" if t.caption else ""
    return (
        f'<div class="table-wrap"><table>{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _block(b: Block) -> str:
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Figure):
        data = base64.b64encode(b.png).decode("ascii")
        alt = html.escape(b.caption, quote=True)
        return (
            f'<figure id="fig-{b.name}"><img src="data:image/png;base64,{data}" alt="{alt}">'
            f"<figcaption>{_inline(b.caption)}</figcaption></figure>"
        )
    if isinstance(b, NotRun):
        return f'<p class="notrun">{_inline(b.text)}</p>'
    if isinstance(b, Code):
        pre = f"<pre><code>{html.escape(b.text)}</code></pre>"
        if b.caption.startswith("the resolved config"):  # long: folded, opens without any script
            return f"<details><summary>{_inline(b.caption)}</summary>{pre}</details>"
        return (f'<p class="code-caption">{_inline(b.caption)}</p>' if b.caption else "") + pre
    if isinstance(b, Para):
        return f"<p>{_inline(b.text)}</p>"
    raise TypeError(type(b))


def _section(s: Section, number: str, level: int) -> str:
    tag = f"h{level}"
    out = [f'<section id="{s.id}"><{tag}><span class="num">{number}</span>{html.escape(s.title)}</{tag}>']
    out += [_block(b) for b in s.blocks]
    out += [_section(c, f"{number}{i}.", level + 1) for i, c in enumerate(s.children, 1)]
    out.append("</section>")
    return "\n".join(out)


def _toc(sections: list[Section]) -> str:
    items = []
    for s in sections:
        sub = "".join(f'<li><a href="#{c.id}">{html.escape(c.title)}</a></li>' for c in s.children)
        items.append(f'<li><a href="#{s.id}">{html.escape(s.title)}</a>' + (f"<ol>{sub}</ol>" if sub else "") + "</li>")
    return f'<nav class="toc" id="contents"><ol>{"".join(items)}</ol></nav>'


def render(doc: Document) -> str:
    note = f'<div class="note"><strong>Note.</strong> {_inline(doc.note)}</div>' if doc.note else ""
    body = "\n".join(_section(s, f"{i}.", 2) for i, s in enumerate(doc.sections, 1))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(doc.title)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<header>
<h1>{html.escape(doc.title)}</h1>
<p class="subtitle">{_inline(doc.subtitle)}</p>
{note}
{_toc(doc.sections)}
</header>
{body}
<footer>Written by <code>legibility report</code> from the files in the run folder; the same files give the same
bytes. Tables show three significant digits; intervals are 95%.</footer>
</main>
</body>
</html>
"""
