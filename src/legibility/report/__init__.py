"""`legibility report RUN_DIR`: one page that says what a run did and found, as report.html (self-contained) and
report.md (+ report_files/*.png).

Sections: Data, Training, Results, How to rerun; each is present even when its stage has not run (a "not run"
line says why). Deterministic: no dates, paths relative to the run folder, PNGs without timestamps, so the same
inputs give the same bytes and a report can be diffed or checked in.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from legibility.report import data, evaluation, html, markdown, rerun, training
from legibility.report.doc import Document
from legibility.results import Results, load

__all__ = ["FILES_DIR", "build", "write_report"]

FILES_DIR = "report_files"
FIGURES = (
    "pair_lengths",
    "training_curves",
    "transform_accuracy",
    "task_accuracy",
    "readers",
    "taxonomy",
    "legibility_tax",
    "early_answering",
    "judge_scores",
)
"""Every figure's file stem: a stale one (its data gone) is removed from report_files/, nothing else is."""


def build(res: Results) -> Document:
    """The report as a Document (both renderers read it)."""
    done = [
        name
        for name, ok in (
            ("pairs", bool(res.pairs_stats) or not res.pairs.empty),
            ("train", not res.train_log.empty),
            ("eval", res.has_eval),
        )
        if ok
    ]
    missing = [n for n in ("pairs", "train", "eval") if n not in done]
    subtitle = f"Run folder `{res.run_dir.resolve().name}`: " + (
        f"stages {', '.join(done)}" if done else "no stage output"
    )
    subtitle += f"; not run: {', '.join(missing)}." if missing else "."
    note = res.eval_summary.get("note") or None
    sections = [data.section(res), training.section(res), evaluation.section(res), rerun.section(res)]
    return Document(f"Legibility report: {res.name}", subtitle, note, sections)


def _write(path: Path, content: bytes) -> None:
    """Atomic, and untouched when the bytes are already there (keeps mtimes for make-like tools)."""
    if path.is_file() and path.read_bytes() == content:
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        os.chmod(tmp, 0o644)  # a report is for sharing (mkstemp makes files private)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write RUN_DIR/report.html and RUN_DIR/report.md (figures in RUN_DIR/report_files/); returns both paths."""
    run = Path(run_dir)
    doc = build(load(run, text=False))
    figs = doc.figures()
    files = run / FILES_DIR
    if figs:
        files.mkdir(exist_ok=True)
    for f in figs:
        _write(files / f"{f.name}.png", f.png)
    made = {f.name for f in figs}
    for stem in FIGURES:
        if stem not in made:
            (files / f"{stem}.png").unlink(missing_ok=True)
    html_path, md_path = run / "report.html", run / "report.md"
    _write(html_path, html.render(doc).encode("utf-8"))
    _write(md_path, markdown.render(doc, FILES_DIR).encode("utf-8"))
    return html_path, md_path
