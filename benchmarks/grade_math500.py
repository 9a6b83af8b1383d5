"""Grade every MATH-500 reference solution against its own answer: the grader's agreement figure.

    python benchmarks/grade_math500.py [path/to/math500_test.json]

Prints the fraction graded correct, each miss (index, unique_id, gold, what was read, why) and the time.
A reference solution is right by construction, so every miss is a grader (or data) problem.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from legibility.grading import grade
from legibility.records import Problem

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "math" / "math500_test.json"


def main(path: Path = DEFAULT) -> int:
    items = json.loads(path.read_text(encoding="utf-8"))
    start = time.perf_counter()
    misses = []
    for i, item in enumerate(items):
        problem = Problem(
            id=item["unique_id"],
            benchmark="math",
            question=item["problem"],
            answer=item["answer"],
            source=f"{path}#{i}",
        )
        g = grade(problem, item["solution"])
        if not g.correct:
            misses.append((i, item["unique_id"], item["answer"], g.answer, g.reason))
    elapsed = time.perf_counter() - start
    n = len(items)
    print(f"MATH-500 reference solutions graded correct: {n - len(misses)}/{n} = {(n - len(misses)) / n:.4f}")
    for i, uid, gold, read, reason in misses:
        print(f"  miss #{i} {uid}: gold {gold!r}, read {read!r}: {reason}")
    print(f"time: {elapsed:.2f} s ({1000 * elapsed / n:.1f} ms per item)")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT))
