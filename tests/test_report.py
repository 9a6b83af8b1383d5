"""`legibility.report.write_report` on fabricated run folders: every section, no external request, images that
decode, Markdown tables and linked figures, "not run" sections for a run without eval/, identical bytes twice."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from test_results import make_run

from legibility.report import FIGURES, write_report
from legibility.report.doc import fmt, interval
from legibility.results import TABLES

SECTIONS = (
    "data", "data-traces", "data-pairs", "data-lengths", "training", "training-curves", "training-transforms",
    "results", "results-accuracy", "results-readers", "results-taxonomy", "results-tax", "results-curves",
    "results-judges", "results-validity", "rerun",
)  # fmt: skip
EVAL_SECTIONS = [s for s in SECTIONS if s.startswith("results-")]
PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Ids, every attribute that can load something, script tags and inline images of one HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.scripts: list[dict[str, str | None]] = []
        self.images: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        for key in ("src", "href", "srcset", "data", "action", "poster"):
            if a.get(key) is not None:
                self.links.append((tag, key, str(a[key])))
        if tag == "script":
            self.scripts.append(a)
        if tag == "img":
            self.images.append(str(a.get("src")))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report")
    full, bare = make_run(root), make_run(root, with_eval=False, name="noeval")
    write_report(full)
    write_report(bare)
    return {"full": full, "bare": bare}


def test_every_section_and_figure(runs: dict[str, Path]) -> None:
    page = Page((runs["full"] / "report.html").read_text(encoding="utf-8"))
    assert set(SECTIONS) <= page.ids
    assert len(page.images) == len(FIGURES)  # every figure has data in the fabricated run
    for src in page.images:
        head, _, data = src.partition(",")
        assert head == "data:image/png;base64"
        assert base64.b64decode(data).startswith(PNG)


def test_html_is_self_contained(runs: dict[str, Path]) -> None:
    text = (runs["full"] / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    assert not page.scripts and "<script" not in text.lower()
    for tag, key, value in page.links:
        assert not re.match(r"\s*(https?:)?//", value, re.I), (tag, key, value)
        assert value.startswith(("#", "data:image/")), (tag, key, value)
    assert "@import" not in text and "url(" not in text  # no stylesheet or font fetched from CSS either


def test_html_content(runs: dict[str, Path]) -> None:
    text = (runs["full"] / "report.html").read_text(encoding="utf-8")
    assert "Legibility report: fab" in text
    assert "Numbers from a small model" in text  # the eval summary's note
    assert "0123456789abcdef0123456789abcdef01234567" in text  # git commit from provenance
    rerun = text.split('<section id="rerun">', 1)[1]
    assert "git checkout 0123456789abcdef0123456789abcdef01234567" in rerun
    assert re.search(r"legibility run \S+config\.yaml --out \S+-rerun", rerun), rerun[:2000]
    # validity table beside the reference card's strengths, coloured
    assert "<td>sentence_shuffle</td><td>Moderate</td>" in text and "background-color:#" in text
    assert "not run" not in text


def test_markdown_tables_and_figures(runs: dict[str, Path]) -> None:
    run = runs["full"]
    md = (run / "report.md").read_text(encoding="utf-8")
    for sid in SECTIONS:
        assert f'<a id="{sid}"></a>' in md
    assert "| transform | reference strength |" in md
    assert "| generator | benchmark | n | problems | accuracy [95% CI] | strict | failed |" in md
    links = re.findall(r"!\[[^\]]*\]\((report_files/[^)]+\.png)\)", md)
    assert sorted(Path(x).stem for x in links) == sorted(FIGURES)
    for link in links:
        assert (run / link).read_bytes().startswith(PNG)
    assert "http" not in md


def test_run_without_eval_says_not_run(runs: dict[str, Path]) -> None:
    run = runs["bare"]
    text = (run / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    assert set(SECTIONS) <= page.ids
    for sid in EVAL_SECTIONS:
        block = text.split(f'<section id="{sid}">', 1)[1].split("</section>", 1)[0]
        assert 'class="notrun"' in block and "not run" in block, sid
    assert 'id="fig-training_curves"' in text and 'id="fig-pair_lengths"' in text  # earlier stages still shown
    md = (run / "report.md").read_text(encoding="utf-8")
    assert md.count("> *not run") == len(EVAL_SECTIONS)
    assert not (run / "report_files" / "task_accuracy.png").exists()


def test_empty_folder_still_reports(tmp_path: Path) -> None:
    html_path, md_path = write_report(tmp_path)
    text = html_path.read_text(encoding="utf-8")
    assert set(SECTIONS) <= Page(text).ids
    assert text.count('class="notrun"') >= len(SECTIONS) - 4  # every leaf section (not the four parents)
    assert md_path.is_file() and not (tmp_path / "report_files").exists()


def test_deterministic_bytes(runs: dict[str, Path]) -> None:
    run = runs["full"]
    before = {p: p.read_bytes() for p in [run / "report.html", run / "report.md", *(run / "report_files").glob("*")]}
    write_report(run)
    after = {p: p.read_bytes() for p in [run / "report.html", run / "report.md", *(run / "report_files").glob("*")]}
    assert before == after


def test_stale_figures_are_removed(tmp_path: Path) -> None:
    run = make_run(tmp_path, with_eval=False)
    write_report(run)
    assert (run / "report_files" / "training_curves.png").is_file()
    (run / "train" / "metrics.jsonl").unlink()
    mine = run / "report_files" / "notes.png"
    mine.write_bytes(b"not ours")
    write_report(run)
    assert not (run / "report_files" / "training_curves.png").exists() and mine.exists()
    assert (run / "report_files" / "pair_lengths.png").is_file()
    assert "not run: no train/metrics.jsonl" in (run / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.5, "0.500"), (0.12345, "0.123"), (12.0, "12.0"), (123.4, "123"), (1234.5, "1,234"), (7, "7"), (None, "–"),
     (float("nan"), "–"), (0.0, "0"), (-0.0456, "-0.0456"), (2e-5, "2.00e-05")],
)  # fmt: skip
def test_three_significant_digits(value: object, text: str) -> None:
    assert fmt(value) == text


def test_interval_format() -> None:
    assert interval(0.5, 0.25, 0.75) == "0.500 [0.250, 0.750]"
    assert interval(0.5, float("nan"), 0.75) == "0.500"
    assert fmt(3.0, count=True) == "3"


def test_sparse_eval_tables_still_render(tmp_path: Path) -> None:
    """Header-only tables, missing intervals, extra columns and a None note (what a tiny model's run writes)."""
    run = make_run(tmp_path)
    tables = run / "eval" / "tables"
    for name, cols in TABLES.items():
        pd.DataFrame(columns=cols).to_csv(tables / f"{name}.csv", index=False)
    acc = pd.DataFrame([{"generator": "base", "benchmark": "all", "n": 3, "n_problems": 3, "accuracy": 0.0,
                         "accuracy_strict": 0.0, "failed": 0, "undecided": 1}])  # fmt: skip
    acc.to_csv(tables / "accuracy.csv", index=False)
    (tables / "validity.csv").unlink()
    summary = json.loads((run / "eval" / "summary.json").read_text())
    (run / "eval" / "summary.json").write_text(json.dumps(summary | {"note": None}))
    html_path, _ = write_report(run)
    text = html_path.read_text(encoding="utf-8")
    assert 'id="fig-task_accuracy"' in text and "0 [" not in text  # no interval printed for a missing one
    assert "no rows in eval/tables/validity.csv" in text and "no rows in eval/tables/readers.csv" in text
    assert 'class="note"' not in text
