"""Grade every MATH-500 reference solution against its own answer: the grader's agreement figure.

    python benchmarks/grade_math500.py [path/to/math500_test.json]

Prints the fraction graded correct, each miss (unique_id, gold, what was read, why) and the time.
A reference solution is right by construction, so every miss is a grader (or data) problem.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from legibility import benchmarks
from legibility.grading import reference_misses

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "math" / "math500_test.json"


def main(path: Path = DEFAULT) -> int:
    problems = benchmarks.load("math", path, levels=None)
    start = time.perf_counter()
    misses = reference_misses(problems)
    elapsed = time.perf_counter() - start
    n = len(problems)
    print(f"MATH-500 reference solutions graded correct: {n - len(misses)}/{n} = {(n - len(misses)) / n:.4f}")
    for p, g in misses:
        print(f"  miss {p.id}: gold {p.answer!r}, read {g.answer!r}: {g.reason}")
    print(f"time: {elapsed:.2f} s ({1000 * elapsed / n:.1f} ms per item)")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT))
