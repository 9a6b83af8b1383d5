"""`legibility.report.write_report` on fabricated run folders: every section, no external request, images that
decode, Markdown tables and linked figures, "not run" sections for a run without eval/, identical bytes twice."""

from __future__ import annotations

import base64
import json
import math
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


def test_measures_are_shown_as_defined(runs: dict[str, Path]) -> None:
    """The filters a failed check or an undecided grade lands in are shown; the legibility tax plots C2 accuracy on
    right CoTs; reader accuracy is given over all CoTs and the unleaked ones side by side."""
    md = (runs["full"] / "report.md").read_text(encoding="utf-8")
    assert "leak unknown" in md and "generator undecided" in md
    assert "readers ASKED" in md
    assert "reader C2 accuracy (generator right)" in md
    assert "generator right (n)" in md and "no leak (n)" in md
    assert "own_answer" in md or "own final answer" in md


def test_legibility_tax_is_conditioned_on_right_cots() -> None:
    from types import SimpleNamespace

    import pandas as pd

    from legibility.report.evaluation import tax_points

    acc = pd.DataFrame([{"generator": "g", "benchmark": "all", "n": 10, "accuracy": 0.4, "low": 0.2, "high": 0.6}])
    rd = pd.DataFrame([{"reader": "r", "condition": "c2", "generator": "g", "accuracy": 0.3, "low": 0.1,
                        "high": 0.5, "n_gen_right": 4, "acc_gen_right": 0.75, "low_gen_right": 0.5,
                        "high_gen_right": 1.0}])  # fmt: skip
    res = SimpleNamespace(table=lambda name: {"accuracy": acc, "readers": rd}[name])
    pts = tax_points(res, ["g"])
    assert (pts["x"].iloc[0], pts["y"].iloc[0], pts["n"].iloc[0]) == (0.4, 0.75, 4)  # not the 0.3 over all CoTs
    no_column = SimpleNamespace(table=lambda name: {"accuracy": acc, "readers": rd.iloc[:, :6]}[name])
    assert tax_points(no_column, ["g"]).empty  # an old table: no point rather than the confounded one


# -- the numbers on the page are the numbers in eval/tables ---------------------------------------------------


class Rows(HTMLParser):
    """The cell texts of every table row in one HTML fragment (a cell's <small> line joined after a space)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "small" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def html_rows(text: str, sid: str) -> list[list[str]]:
    return Rows(text.split(f'<section id="{sid}">', 1)[1].split("</section>", 1)[0]).rows


def md_rows(text: str, sid: str) -> list[list[str]]:
    block = text.split(f'<a id="{sid}"></a>', 1)[1].split('<a id="', 1)[0]
    return [
        [c.strip() for c in line.strip()[1:-1].split(" | ")] for line in block.splitlines() if line.startswith("| ")
    ]


def sig3(v: object, count: bool = False) -> str:
    """The report's number format, written out again: three significant digits, counts as integers, a dash for
    nothing (the values of the fabricated run lie where these rules hold)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if count or isinstance(v, int):
        assert float(v).is_integer(), v
        return str(int(v))
    x = float(v)
    if x == 0:
        return "0"
    assert 1e-3 <= abs(x) < 1000, x
    return f"{x:#.3g}".rstrip(".")


def ci(est: object, low: object, high: object) -> str:
    return f"{sig3(est)} [{sig3(low)}, {sig3(high)}]"


def expected_rows(tables: Path) -> dict[str, list[list[str]]]:
    """Per report section, the rows its tables must show, built from eval/tables/*.csv alone."""

    def read(name: str) -> list[dict]:
        return pd.read_csv(tables / f"{name}.csv").to_dict("records")

    out: dict[str, list[list[str]]] = {"results-accuracy": [], "results-readers": [], "results-taxonomy": [],
                                       "results-curves": []}  # fmt: skip
    for r in read("accuracy"):
        out["results-accuracy"].append([r["generator"], r["benchmark"], sig3(r["n"], True), sig3(r["n_problems"], True),
                                        ci(r["accuracy"], r["low"], r["high"]), sig3(r["accuracy_strict"]),
                                        sig3(r["failed"], True)])  # fmt: skip
    for r in read("paired"):  # no p-value column in the fabricated run
        diff = ci(r["diff"], r["low"], r["high"])
        out["results-accuracy"].append([f"{r['a']} − {r['b']}", r["benchmark"], sig3(r["n_problems"], True),
                                        sig3(r["acc_a"]), sig3(r["acc_b"]), diff])  # fmt: skip
    for r in read("readers"):
        gen = r["generator"] if isinstance(r["generator"], str) else "–"
        subsets = [
            "–" if pd.isna(r.get(f"n_{sub}")) else
            f"{ci(r[f'acc_{sub}'], r[f'low_{sub}'], r[f'high_{sub}'])} ({sig3(r[f'n_{sub}'], True)})"
            for sub in ("gen_right", "no_leak")
        ]  # fmt: skip
        out["results-readers"].append([r["reader"], r["condition"], gen, sig3(r["n"], True),
                                       ci(r["accuracy"], r["low"], r["high"]), *subsets,
                                       sig3(r["failed"], True)])  # fmt: skip
    for r in read("uplift"):  # every column, in the file's order
        out["results-readers"].append([r[c] if isinstance(r[c], str) else sig3(r[c], c == "n") for c in r])
    for r in read("taxonomy"):
        out["results-taxonomy"].append([r["generator"], *(sig3(r[c], True) for c in list(r)[1:])])
    for r in read("aoc"):
        cots = r.get("cots") if isinstance(r.get("cots"), str) else "all"
        measure = r.get("measure") if isinstance(r.get("measure"), str) else "gold"
        out["results-curves"].append([r["generator"], r["reader"], cots, measure,
                                      ci(r["aoc"], r["low"], r["high"]), sig3(r["auc"]),
                                      sig3(r["n_traces"], True)])  # fmt: skip
    return out


def test_table_numbers_appear_on_both_pages(runs: dict[str, Path]) -> None:
    """Values taken from eval/tables/*.csv (accuracy, readers, uplift, taxonomy, early answering, validity) are in
    report.md and report.html, formatted as the report formats them, in the row of their section's table that
    carries them: a dropped column, a swapped interval or a number from the wrong row fails."""
    run = runs["full"]
    pages = {"md": (run / "report.md").read_text(encoding="utf-8"), "html": (run / "report.html").read_text("utf-8")}
    parse = {"md": md_rows, "html": html_rows}
    expected = expected_rows(run / "eval" / "tables")
    assert all(len(rows) >= 2 for rows in expected.values()), {k: len(v) for k, v in expected.items()}
    validity = pd.read_csv(run / "eval" / "tables" / "validity.csv").to_dict("records")
    assert len(validity) >= 9
    for kind, text in pages.items():
        for sid, rows in expected.items():
            shown = parse[kind](text, sid)
            for row in rows:
                assert row in shown, (kind, sid, row, shown[:6])
        shown = parse[kind](text, "results-validity")
        for r in validity:  # one table per model: the row of the transform holds the metric's AUROC and interval
            cell = ci(r["auroc"], r["low"], r["high"]) if pd.notna(r["low"]) else sig3(r["auroc"])
            assert any(row[0] == r["transform"] and cell in row[2:] for row in shown), (kind, r)


def test_batch_is_labelled_as_the_global_batch(tmp_path: Path) -> None:
    """train/summary.json's `effective_batch_size` already includes the number of processes (8 GPUs x 1 x 8 = 64):
    the report once called it "per process"."""
    run = make_run(tmp_path, with_eval=False)
    path = run / "train" / "summary.json"
    summ = json.loads(path.read_text()) | {"effective_batch_size": 64}
    path.write_text(json.dumps(summ))
    write_report(run)
    md = (run / "report.md").read_text(encoding="utf-8")
    assert "global batch 64 pairs per optimizer step (all processes together)" in md
    assert "per process" not in md and "batch 8 " not in md
    parts = {"batch": {"global": 64, "per_device": 1, "gradient_accumulation_steps": 8, "world_size": 8}}
    path.write_text(json.dumps(summ | parts))
    write_report(run)
    md = (run / "report.md").read_text(encoding="utf-8")
    assert "global batch 64 pairs per optimizer step (1 per device × 8 accumulation steps × 8 processes)" in md
