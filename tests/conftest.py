"""Shared test helpers.

Every dataset the tests read ships in the repository (`data/`: MATH-500 and BBH under MIT, the sample traces under
MIT / Apache-2.0), so `make test` runs in full on a clean clone. The one exception is GPQA Diamond, whose questions
must never be copied here: GPQA tests read the user's own file (`LEGIBILITY_GPQA_CSV`, or `../shared/data/gpqa/`
beside the checkout) and skip without it. With `LEGIBILITY_STRICT_SKIPS=1` (CI) any other skip fails the run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
MATH500 = DATA / "math" / "math500_test.json"
BBH = DATA / "bbh"
TRACES = DATA / "samples" / "traces"
MARKYX = sorted(TRACES.glob("*.jsonl"))  # markyx316/LLM-Reasoning-Trace-Topology, MIT
RASBT = TRACES  # sample_openrouter_outputs.json, sample_ollama_outputs.json: rasbt/reasoning-from-scratch, Apache-2.0
FIXTURES = Path(__file__).resolve().parent / "fixtures"

GPQA_SKIP = "needs the user's GPQA Diamond CSV (LEGIBILITY_GPQA_CSV or ../shared/data/gpqa/)"
GPU_SKIP = "needs a CUDA GPU"
ALLOWED_SKIPS = (GPQA_SKIP, GPU_SKIP)


def gpqa_path() -> Path | None:
    env = os.environ.get("LEGIBILITY_GPQA_CSV")
    for p in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data" / "gpqa" / "gpqa_diamond.csv"]:
        if p.is_file():
            return p
    return None


@pytest.fixture(scope="session")
def gpqa_csv() -> Path:
    """The real GPQA Diamond CSV; tests that need it skip where the user has none."""
    p = gpqa_path()
    if p is None:
        pytest.skip(GPQA_SKIP)
    return p


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


_bad_skips: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and os.environ.get("LEGIBILITY_STRICT_SKIPS") == "1":
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(a in reason for a in ALLOWED_SKIPS):
            _bad_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _bad_skips:
        print("\nLEGIBILITY_STRICT_SKIPS: only GPQA-file and GPU tests may skip; these skipped:")
        for s in _bad_skips:
            print("  " + s)
        session.exitstatus = 1


# Property tests: a few hundred examples per property in `make test`; thousands with --hypothesis-profile=long.
settings.register_profile("default", max_examples=200, deadline=None, print_blob=True)
settings.register_profile("long", max_examples=5000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
