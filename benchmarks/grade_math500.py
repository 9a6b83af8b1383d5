"""The grader's self-check on MATH-500 (and BBH): checks that can fail, with the time they take.

    python benchmarks/grade_math500.py [path/to/math500_test.json] [path/to/bbh/]

Per problem (`legibility.grading.self_check`): the gold stated as an answer and the reference solution must grade
right; the perturbed gold (off by one, sign flipped, another fraction, a near-miss decimal, a set for a tuple,
another letter) and another problem's gold must grade wrong. Prints the checks passed, each miss and the time.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

from legibility import benchmarks
from legibility.grading import self_check

DATA = Path(__file__).resolve().parents[1] / "data"


def run(name: str, path: Path, **options: object) -> int:
    problems = benchmarks.load(name, path, **options)
    start = time.perf_counter()
    n, misses = self_check(problems)
    elapsed = time.perf_counter() - start
    print(f"{name}: {len(problems)} problems, {n - len(misses)}/{n} self-checks passed")
    for kind, count in sorted(Counter(m.check for m in misses).items()):
        print(f"  {kind}: {count} misses")
    for m in misses:
        want = "right" if m.expected else "wrong"
        print(f"  miss {m.problem_id} [{m.check}]: gold {m.gold!r}, read {m.grade.answer!r} (should be {want}): "
              f"{m.grade.reason}")  # fmt: skip
    print(f"  time: {elapsed:.2f} s ({1000 * elapsed / max(n, 1):.2f} ms per check)")
    return len(misses)


def main(math_path: Path = DATA / "math" / "math500_test.json", bbh_path: Path = DATA / "bbh") -> int:
    misses = run("math", math_path, levels=None)
    if bbh_path.exists():
        misses += run("bbh", bbh_path, subtasks="all")
    return 1 if misses else 0


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:3]]
    sys.exit(main(*args))
