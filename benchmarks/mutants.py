"""Planted bugs the test suite must catch: a small mutation test of the project's critical code (`make mutants`).

Why: a suite can stay green while checking nothing that matters (an interval test that only checks
low <= estimate <= high passes a 90% interval; a property "if the transform changed the text, ..." passes when
every transform declines). Each mutant below is a plausible bug, written as an exact text replacement in one
source file, with the test files that should catch it. For each, the repository (src, tests, benchmarks, data,
configs, docs, scripts and the top-level project files) is copied to a temporary folder, the bug planted there
(the old text must occur exactly once, else the mutant is "not applicable": the code moved and the mutant needs
updating), and pytest runs those test files with `PYTHONPATH=<copy>/src -x -q -m "not slow"`. The table says,
per mutant, caught (and the first failing test), survived, or not applicable. A baseline run of every listed
test file on the unmutated copy comes first: a mutant "caught" by a test that fails anyway proves nothing.

    python benchmarks/mutants.py                  # every mutant (sequential; tens of minutes on 2 cores)
    python benchmarks/mutants.py --only taxonomy  # mutants whose name contains "taxonomy"
    python benchmarks/mutants.py --list           # the mutants and whether each still applies, without running

Exit status: 0 when every applicable mutant was caught, 1 otherwise (or when the baseline fails).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY_DIRS = ("src", "tests", "benchmarks", "data", "configs", "docs", "scripts")
COPY_FILES = ("pyproject.toml", "README.md", "Makefile", "LICENSE")
IGNORE = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache", "*.egg-info", "runs", ".ruff_cache")
TIMEOUT_S = 1800


@dataclass(frozen=True)
class Mutant:
    """One planted bug: `old` (exactly once in `file`) becomes `new`; `tests` should then fail."""

    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    slow: bool = False  # also run the tests marked slow


STATS = "src/legibility/evaluate/stats.py"
READERS = "src/legibility/evaluate/readers.py"
TAXONOMY = "src/legibility/evaluate/taxonomy.py"

MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "stats: 90% instead of 95% interval",
        STATS,
        "np.percentile(r, [50 * (1 - level), 50 * (1 + level)])",
        "np.percentile(r, [50 * (1 - 0.9), 50 * (1 + 0.9)])",
        ("tests/test_eval_stats.py",),
    ),
    Mutant(
        "stats: paired bootstrap ignores arm B and the pairing",
        STATS,
        "[w @ d / len(d) for w in cluster_weights(len(d), n_boot, rng)]",
        "[w @ a / len(d) - b.mean() for w in cluster_weights(len(d), n_boot, rng)]",
        ("tests/test_eval_stats.py",),
    ),
    Mutant(
        "taxonomy: too_easy applies before too_hard",
        TAXONOMY,
        '"too_hard", "too_easy", "leak_unknown")',
        '"too_easy", "too_hard", "leak_unknown")',
        ("tests/test_eval_taxonomy.py",),
    ),
    Mutant(
        "taxonomy: too_easy also needs a C2 majority",
        TAXONOMY,
        '"too_easy": majority(v.c4[0], v.c4[2])',
        '"too_easy": majority(v.c4[0], v.c4[2]) and majority(v.c2[0], v.c2[2])',
        ("tests/test_eval_taxonomy.py",),
    ),
    Mutant(
        "taxonomy: same-as-C4 count includes wrong C2 answers",
        TAXONOMY,
        "if r.c2_correct and r.c2_answer is not None",
        "if r.c2_answer is not None",
        ("tests/test_eval_taxonomy.py",),
    ),
    Mutant(
        "pairs: split hash without the benchmark",
        "src/legibility/pairs.py",
        'hashlib.sha256(f"{seed}\\x1f{benchmark}\\x1f{problem_id}".encode())',
        'hashlib.sha256(f"{seed}\\x1f{problem_id}".encode())',
        ("tests/test_pairs.py",),
    ),
    Mutant(
        "pairs: donors may come from the same problem",
        "src/legibility/pairs.py",
        "if t.problem_id != trace.problem_id]\n    if len(others) < k:",
        "]\n    if len(others) < k:",
        ("tests/test_pairs.py", "tests/test_leakage.py"),
    ),
    Mutant(
        "text: sentences never split inside a line",
        "src/legibility/text.py",
        "marks = sorted({c - 1 for c in cuts if 0 < c <= len(masked) and masked[c - 1].isspace()})",
        "marks = []",
        ("tests/test_fuzz_text.py",),
    ),
    Mutant(
        "transforms: every transform declines",
        "src/legibility/transforms.py",
        'new, meta = fn(doc, donors, random.Random(f"{name}:{seed}"))',
        'raise CannotTransform("declined")',
        ("tests/test_fuzz_transforms.py",),
    ),
    Mutant(
        "traces: the importer rejects every file",
        "src/legibility/traces.py",
        "if not p.is_file():",
        "if True:",
        ("tests/test_fuzz_import.py",),
    ),
    Mutant(
        "grading: the first box instead of the last",
        "src/legibility/grading.py",
        "content = boxes[-1][2]\n        if content is None:  # the last box never closes",
        "content = boxes[0][2]\n        if content is None:  # the last box never closes",
        ("tests/test_grading.py", "tests/test_grader_corpus.py"),
    ),
    Mutant(
        "masking: boxed answers are not masked",
        "src/legibility/evaluate/masking.py",
        "for s, e in box_spans(text):",
        "for s, e in box_spans(text)[:0]:",
        ("tests/test_eval_masking.py",),
    ),
    Mutant(
        "readers: uplift sign flipped (baseline minus with-CoT)",
        READERS,
        "else lps[a] - lps[b] for a, b in pairs",
        "else lps[b] - lps[a] for a, b in pairs",
        ("tests/test_eval_readers.py",),
    ),
    Mutant(
        "readers: uplift baseline is the C4 prompt again (the prompt change counted as uplift)",
        READERS,
        'c2_chat(p, "", think=think)) for p, c in',
        "c4_chat(p)) for p, c in",
        ("tests/test_eval_readers.py",),
    ),
    Mutant(
        "readers: a leak verdict must be the whole line again (`LEAK: YES - ...` lost)",
        READERS,
        "found = [m.group(1).upper() for m in _LEAK_LABEL.finditer(line)]",
        "found = [m.group(1).upper() for m in _LEAK_LABEL.finditer(line) if line.rstrip(' .*').endswith(m.group(1))]",
        ("tests/test_eval_readers.py",),
    ),
    Mutant(
        "taxonomy: a failed leak check reads as no leak",
        TAXONOMY,
        '"leak_unknown": item.leak_detected is None,',
        '"leak_unknown": False,',
        ("tests/test_eval_taxonomy.py",),
    ),
    Mutant(
        "taxonomy: C2 majority over the readers that answered, not those asked",
        TAXONOMY,
        "Label.REASONING_LEGIBLE if majority(v.c2[0], v.c2[2])",
        "Label.REASONING_LEGIBLE if majority(v.c2[0], v.c2[1])",
        ("tests/test_eval_taxonomy.py",),
    ),
    Mutant(
        "together: lora_alpha sent as the rank",
        "src/legibility/together.py",
        '"lora_alpha": t.lora_alpha,',
        '"lora_alpha": t.lora_r,',
        ("tests/test_together.py",),
    ),
    Mutant(
        "vllm: engine argument max_loras misnamed",
        "src/legibility/models/vllm.py",
        '"max_loras": 1',
        '"max_lora": 1',
        ("tests/test_models_vllm.py",),
    ),
    Mutant(
        "report: paired difference interval bounds swapped",
        "src/legibility/report/evaluation.py",
        'interval(r["diff"], r["low"], r["high"])',
        'interval(r["diff"], r["high"], r["low"])',
        ("tests/test_report.py",),
    ),
    Mutant(
        "train: the rejected side's normalized reward divided by the chosen side's token count",
        "src/legibility/train.py",
        '"rewards_norm": (beta * (pc - rc) / nc, beta * (pr - rr) / nr),',
        '"rewards_norm": (beta * (pc - rc) / nc, beta * (pr - rr) / nc),',
        ("tests/test_loss.py", "tests/test_train.py"),
    ),
)


def copy_repo(dest: Path) -> None:
    """The parts of the repository the tests read, without caches or run folders."""
    for d in COPY_DIRS:
        if (ROOT / d).is_dir():
            shutil.copytree(ROOT / d, dest / d, ignore=IGNORE)
    for f in COPY_FILES:
        if (ROOT / f).is_file():
            shutil.copy2(ROOT / f, dest / f)


def applies(m: Mutant, root: Path = ROOT) -> str | None:
    """None when the mutant's old text occurs exactly once in its file, else why it does not apply."""
    path = root / m.file
    if not path.is_file():
        return f"{m.file} not found"
    n = path.read_text(encoding="utf-8").count(m.old)
    return None if n == 1 else f"old text found {n} times in {m.file}"


def plant(m: Mutant, root: Path) -> None:
    path = root / m.file
    text = path.read_text(encoding="utf-8")
    if text.count(m.old) != 1:
        raise RuntimeError(f"{m.name}: not applicable ({applies(m, root)})")
    path.write_text(text.replace(m.old, m.new), encoding="utf-8")


@dataclass(frozen=True)
class Outcome:
    status: str  # "caught" | "survived" | "not applicable" | "error"
    detail: str  # the first failing test, or why
    seconds: float


_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.M)


def run_tests(root: Path, tests: tuple[str, ...], slow: bool) -> tuple[int, str]:
    """pytest on `tests` inside the copy at `root`, importing the copy's package; (exit code, output)."""
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root / 'tests'}", "HYPOTHESIS_PROFILE": "default"}
    env.pop("LEGIBILITY_STRICT_SKIPS", None)
    where = subprocess.run(
        [sys.executable, "-c", "import legibility; print(legibility.__file__)"],
        cwd=root, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not Path(where).resolve().is_relative_to(root.resolve()):
        raise RuntimeError(f"the copy imports legibility from {where}, not from {root}/src")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    if not slow:
        cmd[4:4] = ["-m", "not slow"]
    try:
        p = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {TIMEOUT_S} s"
    return p.returncode, p.stdout + p.stderr


def first_failure(output: str) -> str:
    m = _FAILED.search(output)
    if m:
        return m.group(1)
    tail = [line for line in output.strip().splitlines() if line.strip()]
    return tail[-1][:120] if tail else "(no output)"


def run_mutant(m: Mutant) -> Outcome:
    t0 = time.monotonic()
    why = applies(m)
    if why is not None:
        return Outcome("not applicable", why, 0.0)
    with tempfile.TemporaryDirectory(prefix="mutant-") as d:
        root = Path(d)
        copy_repo(root)
        plant(m, root)
        rc, out = run_tests(root, m.tests, m.slow)
    dt = time.monotonic() - t0
    if rc == 0:
        return Outcome("survived", "", dt)
    if rc in (1, 2):  # 1: a test failed; 2: interrupted, e.g. by a collection error the bug caused
        return Outcome("caught", first_failure(out), dt)
    return Outcome("error", f"pytest exit {rc}: {first_failure(out)}", dt)


def baseline(mutants: list[Mutant]) -> tuple[bool, str]:
    """Every listed test file on the unmutated copy: they must pass for "caught" to mean anything."""
    files = tuple(dict.fromkeys(f for m in mutants for f in m.tests))
    slow = any(m.slow for m in mutants)
    with tempfile.TemporaryDirectory(prefix="mutant-base-") as d:
        root = Path(d)
        copy_repo(root)
        rc, out = run_tests(root, files, slow)
    return rc == 0, "" if rc == 0 else first_failure(out)


def table(rows: list[tuple[Mutant, Outcome]]) -> str:
    w = max(len(m.name) for m, _ in rows)
    lines = [f"{'mutant':<{w}}  {'result':<14}  {'s':>5}  first failing test / why", "-" * (w + 60)]
    for m, o in rows:
        lines.append(f"{m.name:<{w}}  {o.status:<14}  {o.seconds:>5.0f}  {o.detail}")
    counts = {s: sum(o.status == s for _, o in rows) for s in ("caught", "survived", "not applicable", "error")}
    lines.append(", ".join(f"{v} {k}" for k, v in counts.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="run the mutants whose name contains this text")
    ap.add_argument("--list", action="store_true", help="list the mutants and whether each applies; run nothing")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run of the unmutated copy")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or args.only.lower() in m.name.lower()]
    if not chosen:
        print(f"no mutant matches {args.only!r}", file=sys.stderr)
        return 2
    if args.list:
        for m in chosen:
            print(f"{m.name}: {applies(m) or 'applies'} ({', '.join(m.tests)})")
        return 0
    if not args.no_baseline:
        ok, why = baseline([m for m in chosen if applies(m) is None])
        print(f"baseline (unmutated): {'passes' if ok else 'FAILS: ' + why}", flush=True)
        if not ok:
            return 1
    rows = []
    for m in chosen:
        o = run_mutant(m)
        print(f"  {m.name}: {o.status} {o.detail}", flush=True)
        rows.append((m, o))
    print()
    print(table(rows))
    return 0 if all(o.status == "caught" for _, o in rows if o.status != "not applicable") else 1


if __name__ == "__main__":
    sys.exit(main())
