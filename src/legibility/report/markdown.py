"""The Document as Markdown: pipe tables, figures as PNG files in `report_files/` linked by relative path, and
explicit anchors (`<a id>`) so links into the report keep working whatever renders it."""

from __future__ import annotations

from legibility.report.doc import Block, Cell, Code, Document, Figure, NotRun, Para, Section, Table, numeric_columns


def _esc(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _cell(c: str | Cell) -> str:
    if isinstance(c, Cell):
        return _esc(c.text + (f" {c.small}" if c.small else ""))
    return _esc(str(c))


def _table(t: Table) -> str:
    rows = [[_cell(c) for c in r] for r in t.rows]
    right = numeric_columns(t)
    out = [
        "| " + " | ".join(_esc(c) for c in t.columns) + " |",
        "|" + "|".join("---:" if r else "---" for r in right) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    if t.caption:
        out += ["", f"*{t.caption}*"]
    return "\n".join(out)


def _block(b: Block, files: str) -> str:
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Figure):
        return f"![{_esc(b.caption)}]({files}/{b.name}.png)\n\n*{b.caption}*"
    if isinstance(b, NotRun):
        return f"> *{b.text}*"
    if isinstance(b, Code):
        lang = "yaml" if b.caption.startswith("the resolved config") else "bash"
        return (f"*{b.caption}*\n\n" if b.caption else "") + f"```{lang}\n{b.text.rstrip()}\n```"
    if isinstance(b, Para):
        return b.text
    raise TypeError(type(b))


def _section(s: Section, number: str, level: int, files: str) -> list[str]:
    out = [f'<a id="{s.id}"></a>', "", f"{'#' * level} {number} {s.title}", ""]
    for b in s.blocks:
        out += [_block(b, files), ""]
    for i, c in enumerate(s.children, 1):
        out += _section(c, f"{number}{i}.", level + 1, files)
    return out


def render(doc: Document, files: str = "report_files") -> str:
    out = [f"# {doc.title}", "", doc.subtitle, ""]
    if doc.note:
        out += [f"> **Note.** {doc.note}", ""]
    out += ["## Contents", ""]
    for i, s in enumerate(doc.sections, 1):
        out.append(f"{i}. [{s.title}](#{s.id})")
        out += [f"   {j}. [{c.title}](#{c.id})" for j, c in enumerate(s.children, 1)]
    out.append("")
    for i, s in enumerate(doc.sections, 1):
        out += _section(s, f"{i}.", 2, files)
    return "\n".join(out).rstrip() + "\n"
