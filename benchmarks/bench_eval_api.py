"""Evaluation against an OpenAI-compatible endpoint: requests/s against the ideal (concurrency / mean latency).

Starts the local latency server (`tests/latency_server.py`: 127.0.0.1 only, fixed or log-normal latency), builds a
run folder of N synthetic MATH-style CoTs (half base, half adapter, two per problem), runs `eval_stage` with 2
readers x C1/C4/C2/C2-prefill and 2 judges (rubric + illegibility) on the openai backend, then reruns it from the
cache. Prints requests/s, the fraction of ideal, the average number in flight (server side), and where the
process's Python threads spent their time (sampled stacks, by thread kind and by what they ran).

    python benchmarks/bench_eval_api.py --cots 120 --concurrency 32 --latency 0.3 --cv 0
    python benchmarks/bench_eval_api.py --cv 1
    python benchmarks/bench_eval_api.py --concurrency 128
    python benchmarks/bench_eval_api.py --backend-only --concurrency 128 --requests 2000
    python benchmarks/bench_eval_api.py --cache-entries 100000   # a rerun's read cost at 100k cached requests
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from latency_server import LatencyServer  # noqa: E402

from legibility.benchmarks.prompts import messages  # noqa: E402
from legibility.config import ExperimentConfig  # noqa: E402
from legibility.records import Generation, Problem, write_jsonl  # noqa: E402

SENTENCES = ["We first write the sum as {a} plus {b}.", "Adding the tens gives {t}.", "Then the units give {u}.",
             "Let me check this again carefully, since carrying can go wrong.", "So far the partial total is {t}.",
             "Next we combine both parts of the computation.", "This matches the estimate from before.",
             "Hmm, wait, we should double-check the units digit.", "Everything is consistent with the question.",
             "So the result should be {s}."]  # fmt: skip


def make_run(run_dir: Path, n_cots: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    problems, gens = [], []
    for i in range(max(1, n_cots // 2)):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        problems.append(Problem(id=f"p{i}", benchmark="math", question=f"What is {a} + {b}?", answer=str(a + b),
                                source="bench"))  # fmt: skip
    for k in range(n_cots):
        p = problems[k // 2]
        a, b = (int(x) for x in p.question[8:-1].split(" + "))
        cot = " ".join(s.format(a=a, b=b, t=(a // 10 + b // 10) * 10, u=a % 10 + b % 10, s=a + b)
                       for s in SENTENCES * 3)  # fmt: skip
        name = "base" if k % 2 == 0 else "adapter"
        answer = f"The answer is \\boxed{{{a + b}}}."
        gens.append(Generation(id=f"{name}/{p.id}/0", problem_id=p.id, benchmark="math", generator=name,
                               prompt=messages(p), reasoning=cot, answer_text=answer, correct=True,
                               correct_strict=True, complete=True,
                               raw=f"<think>\n{cot}\n</think>\n\n{answer}"))  # fmt: skip
    write_jsonl(run_dir / "problems.jsonl", problems)
    write_jsonl(run_dir / "eval" / "generations.jsonl", gens)


def config(run_dir: Path, base_url: str, concurrency: int) -> ExperimentConfig:
    def spec(name: str) -> dict:
        return {"name": name, "backend": "openai", "model": f"bench-{name}", "base_url": base_url,
                "concurrency": concurrency, "timeout_s": 60, "supports_continue": True}  # fmt: skip

    s = {"max_new_tokens": 64, "temperature": 0.0, "top_p": 1.0}
    return ExperimentConfig.model_validate({
        "name": "bench", "run_dir": str(run_dir),
        "readers": {"readers": [spec("r1"), spec("r2")], "answer_sampling": s, "solve_sampling": s},
        "judges": {"judges": [spec("j1"), spec("j2")], "scoring": "generate", "chunk_chars": 1200},
        "metrics": {"early_answering": False, "legible_prefix": False, "validity": False},
    })  # fmt: skip


class Sampler:
    """Samples every Python thread's stack every `interval` s: (thread kind, activity) -> samples."""

    KINDS = (("MainThread", "main"), ("eval-job", "eval jobs"), ("openai", "http workers"),
             ("cache-writer", "cache writer"))  # fmt: skip
    ACTIVITIES = (("masking", "masking"), ("grading", "grading"), ("math_verify", "grading"), ("cache", "cache"),
                  ("httpx", "http client"), ("httpcore", "http client"), ("json", "json"), ("pydantic", "records"),
                  ("records", "records"), ("summarize", "tables"), ("pandas", "tables"),
                  ("numpy", "tables"))  # fmt: skip

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        names = {}
        while not self._stop.wait(self.interval):
            for t in threading.enumerate():
                names[t.ident] = t.name
            for ident, frame in sys._current_frames().items():
                if ident == threading.get_ident():
                    continue
                name = names.get(ident, "?")
                kind = next((k for p, k in self.KINDS if name.startswith(p)), None)
                if kind is None:
                    continue
                self.counts[(kind, self._activity(frame))] += 1

    def _activity(self, frame) -> str:  # type: ignore[no-untyped-def]
        top = frame.f_code.co_filename
        if (frame.f_code.co_name, Path(top).name) in (("read", "sync.py"), ("_worker", "thread.py")):
            return "waiting"  # a socket read (httpcore's sync backend), an idle pool worker
        if frame.f_code.co_name in ("wait", "_wait_for_tstate_lock", "get", "select", "recv_into", "readinto",
                                    "accept", "sleep", "result", "acquire", "join"):  # fmt: skip
            return "waiting"
        f = frame
        while f is not None:
            fn = f.f_code.co_filename
            for key, label in self.ACTIVITIES:
                if key in fn:
                    return label
            f = f.f_back
        return f"other ({Path(top).stem})"

    def report(self, wall: float) -> str:
        rows = []
        for (kind, act), n in sorted(self.counts.items(), key=lambda kv: -kv[1]):
            secs = n * self.interval
            if secs >= 0.05 * max(1.0, wall) / 10:
                rows.append(f"    {kind:<13} {act:<22} {secs:7.2f} thread-s")
        return "\n".join(rows)


def bench_pipeline(args: argparse.Namespace) -> None:
    from legibility.evaluate.pipeline import eval_stage

    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_api."))
    make_run(tmp, args.cots)
    with LatencyServer(args.latency, cv=args.cv, seed=args.seed, max_connections=4 * args.concurrency) as server:
        cfg = config(tmp, server.base_url, args.concurrency)
        t = time.perf_counter()
        with Sampler() as sampler:
            summary = eval_stage(cfg, progress=False)
        wall = time.perf_counter() - t
        served, busy = server.served, server.busy_s
        mean_latency = busy / max(1, served)
        ideal = served * mean_latency / args.concurrency
        print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min) on "
              f"{os.cpu_count()} cores")  # fmt: skip
        print(f"{args.cots} CoTs, concurrency {args.concurrency}, latency {args.latency:g} s cv {args.cv:g} "
              f"(served mean {mean_latency:.3f} s): {served} requests in {wall:.2f} s = {served / wall:.1f} req/s; "
              f"ideal {ideal:.2f} s ({args.concurrency / mean_latency:.1f} req/s): {ideal / wall:.2f} of ideal; "
              f"in flight on average {busy / wall:.1f}")  # fmt: skip
        print("  stage timings:", json.dumps(summary["timings_s"]))
        print("  where the threads' time went (sampled):")
        print(sampler.report(wall))
        t = time.perf_counter()
        again = eval_stage(cfg, progress=False)
        rerun = time.perf_counter() - t
        print(f"  cached rerun: {rerun:.2f} s, {again['counts']['hits']} cache hits, {again['counts']['requests']} "
              f"requests sent; timings {json.dumps(again['timings_s'])}")  # fmt: skip


def bench_backend(args: argparse.Namespace) -> None:
    from legibility.models.base import Sampling
    from legibility.models.openai_api import OpenAIChatModel
    from legibility.records import Message

    with LatencyServer(args.latency, cv=args.cv, max_connections=4 * args.concurrency) as server, \
            OpenAIChatModel(server.base_url, "m", api_key_env=None, concurrency=args.concurrency) as model:  # fmt: skip
        chats = [[Message(role="user", content=f"request {i}")] for i in range(args.requests)]
        t = time.perf_counter()
        out = model.generate(chats, Sampling(max_new_tokens=16))
        wall = time.perf_counter() - t
        mean = server.busy_s / max(1, server.served)
        print(f"load {os.getloadavg()[0]:.2f}; backend alone, concurrency {args.concurrency}: {len(out)} requests "
              f"({sum(not c.ok for c in out)} failed) in {wall:.2f} s = {len(out) / wall:.1f} req/s, ideal "
              f"{args.concurrency / mean:.1f}: {len(out) / wall / (args.concurrency / mean):.2f} of ideal")  # fmt: skip


def bench_cache(args: argparse.Namespace) -> None:
    """Fill a cache with `cache_entries` entries shaped like reader requests (written without fsync, to fill it
    fast), then read every entry back as a rerun would."""
    from legibility.models.cache import DiskCache, _canonical, key_hash

    root = Path(tempfile.mkdtemp(prefix="bench_cache."))
    cache = DiskCache(root)
    chat = [{"role": "user", "content": "x" * 1500}]
    keys = [{"model": {"backend": "openai", "model": "m"}, "op": "generate", "chat": chat, "i": i}
            for i in range(args.cache_entries)]  # fmt: skip
    value = {"text": "\\boxed{42}", "finish_reason": "stop", "meta": {"backend": "openai"}}
    t = time.perf_counter()
    for k in keys:
        h = key_hash(k)
        p = root / h[:2] / f"{h}.json"
        p.parent.mkdir(exist_ok=True)
        p.write_text(_canonical({"key": k, "value": value}), encoding="utf-8")
    fill = time.perf_counter() - t
    t = time.perf_counter()
    hits = sum(cache.get(k) is not None for k in keys)
    read = time.perf_counter() - t
    print(f"cache of {args.cache_entries} entries ({fill:.1f} s to fill): a rerun reads them in {read:.1f} s "
          f"({read / args.cache_entries * 1e6:.0f} us each, {hits} hits)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cots", type=int, default=120)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.3, help="mean seconds per request")
    ap.add_argument("--cv", type=float, default=0.0, help="0: fixed latency; else log-normal with this CV")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend-only", action="store_true", help="the openai backend alone, no pipeline")
    ap.add_argument("--requests", type=int, default=2000, help="--backend-only: how many")
    ap.add_argument("--cache-entries", type=int, default=0, help="measure a rerun's read cost at this many")
    args = ap.parse_args()
    if args.cache_entries:
        bench_cache(args)
    elif args.backend_only:
        bench_backend(args)
    else:
        bench_pipeline(args)


if __name__ == "__main__":
    main()
