"""`legibility generate` and task accuracy: ids, seeds and grading per sample, failures counted and never scored,
resuming after a kill without losing or duplicating a record, the held-out problem sample, and accuracy tables
checked against hand-computed numbers. One short run on the real embedded model checks what records pin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from legibility import benchmarks
from legibility.config import ExperimentConfig, GenerateConfig, ModelSpec, SamplingConfig
from legibility.errors import LegibilityError
from legibility.evaluate.generate import (
    GENERATIONS,
    SUMMARY,
    generate,
    generate_stage,
    read_generations,
    select_problems,
)
from legibility.models.base import Completion, Sampling
from legibility.pairs import split_manifest
from legibility.records import Generation, Message, Problem, read_jsonl, write_json, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "samples" / "math500_sample.jsonl"
TESTS = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------------------- fakes


def math(pid: str, answer: str, question: str | None = None) -> Problem:
    return Problem(id=pid, benchmark="math", question=question or f"What is {pid}?", answer=answer, source="t")


def bbh(pid: str, answer: str = "(A)") -> Problem:
    return Problem(id=pid, benchmark="bbh", subtask="t", question=f"Pick for {pid}. Options:\n(A) x\n(B) y",
                   answer=answer, source="t")  # fmt: skip


Reply = Callable[[Problem, int], Completion]


class Scripted:
    """A ChatModel whose reply is a function of (problem, seed); counts calls and requests like CachedModel."""

    supports_scoring = False

    def __init__(self, problems: list[Problem], reply: Reply, name: str = "fake", delay: float = 0.0) -> None:
        self.by_question = {p.question: p for p in problems}
        self.reply = reply
        self.name = name
        self.delay = delay
        self.meta = {"backend": "fake", "model": name, "revision": "r1", "chat_template_sha256": "t1"}
        self.calls: list[tuple[int, Sampling]] = []
        self.requests = 0

    def _problem(self, chat: list[Message]) -> Problem:
        text = chat[-1].content
        return next(p for q, p in self.by_question.items() if text.startswith(q))

    def generate(self, chats: list[list[Message]], sampling: Sampling) -> list[Completion]:
        self.calls.append((len(chats), sampling))
        self.requests += len(chats)
        if self.delay:
            time.sleep(self.delay)
        return [self.reply(self._problem(c), sampling.seed) for c in chats]

    def continue_(self, chats, sampling):  # pragma: no cover - not used by generate
        raise NotImplementedError

    def score(self, chats, targets):  # pragma: no cover
        raise NotImplementedError


class Pool:
    """`ModelPool.get` for fakes: one model per spec name."""

    def __init__(self, models: dict[str, Scripted]) -> None:
        self.models = models

    def get(self, spec: ModelSpec) -> Scripted:
        return self.models[spec.name]


def boxed(answer: str, seed: int) -> Completion:
    return Completion(f"<think>Working on it, seed {seed}.</think>\n\n\\boxed{{{answer}}}", "stop", 5, 9)


def alternating(p: Problem, seed: int) -> Completion:
    """Right on even seeds, wrong on odd ones: both verdicts in every run."""
    return boxed(p.answer if seed % 2 == 0 else "x", seed)


def config(run_dir: Path, **generate: Any) -> ExperimentConfig:
    gens = [ModelSpec(name="base", batch_size=2), ModelSpec(name="adapter", batch_size=2)]
    g = {"generators": gens, "problems": "all", "samples": 2, "sampling": SamplingConfig(seed=10), **generate}
    return ExperimentConfig(name="t", run_dir=str(run_dir), generate=GenerateConfig(**g))


def write_problems(run_dir: Path, problems: list[Problem]) -> None:
    write_jsonl(run_dir / "problems.jsonl", problems)


def math500(n: int = 20) -> list[Problem]:
    return benchmarks.load("math", SAMPLE, levels=None)[:n]


# ----------------------------------------------------------------------------------------------- generate()


def test_generate_ids_seeds_grading_failures_and_truncation():
    p1, p2, p3 = math("p1", "4"), math("p2", "7"), math("p3", "9")
    script = {
        ("p1", 10): boxed("4", 10),  # strictly right
        ("p1", 11): Completion("<think>2 and 2</think>\n\n4", "stop"),  # right only by the flexible fallback
        ("p2", 10): Completion("", error="HTTP 500: upstream down"),  # failed request
        ("p2", 11): Completion("<think>7 7 7 7 7", "length"),  # cut off mid-thought
        ("p3", 10): boxed("8", 10),  # wrong
        ("p3", 11): boxed("9", 11),
    }
    model = Scripted([p1, p2, p3], lambda p, seed: script[(p.id, seed)])
    out: list[list[Generation]] = []
    generate(model, "gen", [p1, p2, p3], 2, SamplingConfig(seed=10, max_new_tokens=64), "Be brief.",
             on_batch=out.append, batch_size=2)  # fmt: skip

    # sample-major batches, each call one seed: k=0 -> [p1, p2], [p3]; k=1 -> [p1, p2], [p3]
    assert [(n, s.seed) for n, s in model.calls] == [(2, 10), (1, 10), (2, 11), (1, 11)]
    assert [len(b) for b in out] == [2, 1, 2, 1]
    recs = {r.id: r for b in out for r in b}
    assert sorted(recs) == sorted(f"gen/{p}/{k}" for p in ("p1", "p2", "p3") for k in (0, 1))
    for r in recs.values():
        assert r.sampling == {
            "max_new_tokens": 64,
            "temperature": 0.6,
            "top_p": 0.95,
            "top_k": None,
            "min_p": 0.0,
            "seed": 10 + r.sample,
            "stop": [],
        }
        assert r.model["revision"] == "r1" and r.model["name"] == "fake" and r.generator == "gen"
        assert [m.role for m in r.prompt] == ["system", "user"] and r.prompt[0].content == "Be brief."

    a, b = recs["gen/p1/0"], recs["gen/p1/1"]
    assert (a.correct, a.correct_strict, a.extracted, a.complete) == (True, True, "4", True)
    assert (a.reasoning, a.answer_text, a.finish_reason, a.truncated) == ("Working on it, seed 10.", "\\boxed{4}",
                                                                           "stop", False)  # fmt: skip
    assert a.meta["prompt_tokens"] == 5 and a.meta["completion_tokens"] == 9
    assert (b.correct, b.correct_strict) == (True, False)

    failed = recs["gen/p2/0"]
    assert failed.error == "HTTP 500: upstream down"
    assert (failed.correct, failed.correct_strict, failed.complete, failed.finish_reason) == (False, None, False, None)

    cut = recs["gen/p2/1"]
    assert (cut.truncated, cut.finish_reason, cut.complete, cut.correct, cut.error) == (True, "length", False, False,
                                                                                        None)  # fmt: skip
    assert cut.reasoning == "7 7 7 7 7" and cut.answer_text == ""
    assert (recs["gen/p3/0"].correct, recs["gen/p3/0"].correct_strict) == (False, False)
    assert recs["gen/p3/1"].correct_strict is True


def test_generate_skips_done_ids_and_sends_nothing_when_all_done():
    ps = [math("p1", "4"), math("p2", "7")]
    model = Scripted(ps, alternating)
    got: list[Generation] = []
    generate(model, "g", ps, 2, SamplingConfig(), done={"g/p1/0", "g/p2/1"}, on_batch=got.extend, batch_size=8)
    assert sorted(r.id for r in got) == ["g/p1/1", "g/p2/0"]
    assert [(n, s.seed) for n, s in model.calls] == [(1, 0), (1, 1)]
    model.calls.clear()
    generate(model, "g", ps, 2, SamplingConfig(), done={f"g/{p.id}/{k}" for p in ps for k in (0, 1)},
             on_batch=got.extend)  # fmt: skip
    assert model.calls == []


# ------------------------------------------------------------------------------------------- generate_stage


def flaky(fail_ids: set[str]) -> Reply:
    """Fails each (problem, seed) in `fail_ids` the first time only, as a backend outage would."""
    failed: set[str] = set()

    def reply(p: Problem, seed: int) -> Completion:
        key = f"{p.id}@{seed}"
        if key in fail_ids and key not in failed:
            failed.add(key)
            return Completion("", error="timeout")
        return alternating(p, seed)

    return reply


def test_stage_writes_file_and_summary_retries_failures_and_resumes_with_no_request(tmp_path: Path):
    ps = [math(f"q{i}", str(i)) for i in range(3)]
    write_problems(tmp_path, ps)
    cfg = config(tmp_path)
    models = {"base": Scripted(ps, flaky({"q1@10"}), "base"), "adapter": Scripted(ps, alternating, "adapter")}
    pool = Pool(models)

    summary = generate_stage(cfg, pool=pool, progress=False)
    recs = read_jsonl(tmp_path / GENERATIONS, Generation)
    assert [r.id for r in recs] == [f"{g}/q{i}/{k}" for g in ("base", "adapter") for i in range(3) for k in (0, 1)]
    base = summary["generators"]["base"]
    assert {k: base[k] for k in ("n", "failed", "truncated", "incomplete", "correct", "correct_strict")} == {
        "n": 6, "failed": 1, "truncated": 0, "incomplete": 0, "correct": 2, "correct_strict": 2}  # fmt: skip
    assert summary["generators"]["adapter"]["correct"] == 3 and summary["generators"]["adapter"]["failed"] == 0
    assert base["requests"] == 6 and base["model"]["revision"] == "r1"
    assert summary["sampling"]["seed"] == 10 and summary["samples"] == 2 and summary["problems"] == 3
    assert json.loads((tmp_path / SUMMARY).read_text()) == summary

    # rerun: only the failed request is sent again, and it replaces the failure (one record per id)
    summary = generate_stage(cfg, pool=pool, progress=False)
    assert summary["generators"]["base"]["requests"] == 1 and summary["generators"]["adapter"]["requests"] == 0
    assert summary["generators"]["base"]["failed"] == 0 and summary["generators"]["base"]["correct"] == 3
    recs2 = read_jsonl(tmp_path / GENERATIONS, Generation)
    assert [r.id for r in recs2] == [r.id for r in recs]
    assert recs2[2].error is None and recs2[2].correct

    # finished: nothing is sent
    before = [m.requests for m in models.values()]
    summary = generate_stage(cfg, pool=pool, progress=False)
    assert [m.requests for m in models.values()] == before
    assert summary["generators"]["base"]["resumed"] == 6
    assert read_jsonl(tmp_path / GENERATIONS, Generation) == recs2


def test_stage_drops_a_torn_last_line_keeps_whole_ones_and_refuses_a_bad_middle_line(tmp_path: Path):
    ps = [math(f"q{i}", str(i)) for i in range(2)]
    write_problems(tmp_path, ps)
    cfg = config(tmp_path, generators=[ModelSpec(name="base")])
    model = Scripted(ps, alternating, "base")
    generate_stage(cfg, pool=Pool({"base": model}), progress=False)
    path = tmp_path / GENERATIONS
    full = path.read_bytes()
    lines = full.splitlines(keepends=True)

    # killed mid-append: two whole lines, then half of the third
    path.write_bytes(b"".join(lines[:2]) + lines[2][:40])
    assert [r.id for r in read_generations(path)] == ["base/q0/0", "base/q0/1"]
    assert path.read_bytes() == b"".join(lines[:2])  # rewritten without the torn line, whole lines untouched
    generate_stage(cfg, pool=Pool({"base": model}), progress=False)
    assert path.read_bytes() == full and model.requests == 4 + 2

    # killed between a record and its newline: the record is whole and kept
    path.write_bytes(b"".join(lines[:3]).rstrip(b"\n"))
    assert len(read_generations(path)) == 3 and path.read_bytes() == b"".join(lines[:3])

    # a damaged line that is not the last is never skipped silently
    path.write_bytes(lines[0] + b'{"id": "bro\n' + lines[1])
    with pytest.raises(LegibilityError, match=r"generations.jsonl:2"):
        generate_stage(cfg, pool=Pool({"base": model}), progress=False)


def test_stage_refuses_records_made_with_other_settings(tmp_path: Path):
    ps = [math("q0", "0")]
    write_problems(tmp_path, ps)
    cfg = config(tmp_path, generators=[ModelSpec(name="base")])
    generate_stage(cfg, pool=Pool({"base": Scripted(ps, alternating, "base")}), progress=False)
    hotter = config(tmp_path, generators=[ModelSpec(name="base")], sampling=SamplingConfig(seed=10, temperature=1.0))
    with pytest.raises(LegibilityError, match="another sampling"):
        generate_stage(hotter, pool=Pool({"base": Scripted(ps, alternating, "base")}), progress=False)
    other = Scripted(ps, alternating, "base")
    other.meta["revision"] = "r2"
    with pytest.raises(LegibilityError, match="another model revision"):
        generate_stage(cfg, pool=Pool({"base": other}), progress=False)


def test_stage_fails_on_a_missing_adapter_before_generating(tmp_path: Path):
    write_problems(tmp_path, [math("q0", "0")])
    cfg = config(tmp_path, generators=[ModelSpec(name="base"), ModelSpec(name="adapter", adapter="{run_dir}/train/a")])
    model = Scripted([math("q0", "0")], alternating, "base")
    with pytest.raises(LegibilityError, match=r"adapter: adapter folder .*train/a not found"):
        generate_stage(cfg, pool=Pool({"base": model}), progress=False)
    assert model.requests == 0


def run_fake_stage(run_dir: str, delay: float) -> None:
    """The subprocess body of the kill test: the fakes of this module, `delay` seconds per backend call."""
    ps = read_jsonl(Path(run_dir) / "problems.jsonl", Problem)
    pool = Pool({n: Scripted(ps, alternating, n, delay=delay) for n in ("base", "adapter")})
    generate_stage(config(Path(run_dir)), pool=pool, progress=False)


def run_script(run_dir: Path, delay: float) -> subprocess.Popen:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(ROOT / "src")!r}, {str(TESTS)!r}]
        from test_eval_generate import run_fake_stage
        run_fake_stage({str(run_dir)!r}, {delay!r})
        """
    )
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path: Path):
    ps = math500(8)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    for d in (killed, clean):
        write_problems(d, ps)
    total = 2 * len(ps) * 2  # generators x problems x samples; 8 calls of 2 per generator

    proc = run_script(killed, delay=0.25)
    path = killed / GENERATIONS
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not path.is_file() or path.read_bytes().count(b"\n") < 3):
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    partial = read_generations(path)
    assert 3 <= len(partial) < total

    for d in (killed, clean):
        p = run_script(d, delay=0.0)
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    resumed, reference = read_jsonl(path, Generation), read_jsonl(clean / GENERATIONS, Generation)
    assert len(resumed) == total and len({r.id for r in resumed}) == total
    assert resumed == reference
    assert {r.id: r for r in partial}.items() <= {r.id: r for r in resumed}.items()  # nothing made twice differently


# ------------------------------------------------------------------------------------------- select_problems


def test_select_heldout_reads_split_json_and_filters(tmp_path: Path):
    ps = [*math500(), bbh("b1"), bbh("b2"), bbh("b3")]
    write_problems(tmp_path, ps)
    cfg = config(tmp_path, problems="heldout")
    with pytest.raises(LegibilityError, match=r"pairs/split.json: no such file.*legibility pairs build"):
        select_problems(cfg)
    split = split_manifest([(p.benchmark, p.id) for p in ps], 0.5, seed=3)
    write_json(tmp_path / "pairs" / "split.json", split)
    val = {pid for s in split["benchmarks"].values() for pid in s["val"]}
    assert 0 < len(val) < len(ps)
    assert [p.id for p in select_problems(cfg)] == [p.id for p in ps if p.id in val]  # problems.jsonl order
    only_math = select_problems(config(tmp_path, problems="heldout", benchmarks=["math"]))
    assert only_math and all(p.benchmark == "math" and p.id in val for p in only_math)
    assert len(select_problems(config(tmp_path, problems="all"))) == len(ps)

    split["benchmarks"]["math"]["val"].append("math/not/there.json")
    write_json(tmp_path / "pairs" / "split.json", split)
    with pytest.raises(LegibilityError, match=r"not in .*problems\.jsonl"):
        select_problems(cfg)


def test_max_problems_is_a_stable_hash_sample_per_benchmark(tmp_path: Path):
    ps = [*math500(), *(bbh(f"b{i}") for i in range(5))]
    write_problems(tmp_path, ps)
    cfg = config(tmp_path, max_problems=3)
    here = [p.id for p in select_problems(cfg)]
    assert sum(i.startswith("math/") for i in here) == 3 and sum(i.startswith("b") for i in here) == 3
    assert here == [p.id for p in ps if p.id in set(here)]  # input order kept
    # a sample as large as a benchmark keeps all of it
    assert [p.id for p in select_problems(config(tmp_path, max_problems=20))] == [p.id for p in ps]
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path[:0] = [{str(ROOT / "src")!r}, {str(TESTS)!r}]
        from test_eval_generate import config, select_problems
        from pathlib import Path
        print(json.dumps([p.id for p in select_problems(config(Path({str(tmp_path)!r}), max_problems=3))]))
        """
    )
    for hashseed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        assert json.loads(out.stdout) == here


# -------------------------------------------------------------------------------------------------- accuracy


SAME: Any = object()  # strict verdict = the flexible one


def rec(gen: str, bench: str, pid: str, k: int, correct: bool, strict: bool | None = SAME,
        error: str | None = None) -> Generation:  # fmt: skip
    """A hand-made record; a failed one (error) has no strict verdict, an undecided one passes strict=None."""
    strict = None if error else (correct if strict is SAME else strict)
    return Generation(
        id=f"{gen}/{pid}/{k}", problem_id=pid, benchmark=bench, generator=gen, reasoning="r", answer_text="a",
        correct=correct, correct_strict=strict, sample=k, error=error,
    )  # fmt: skip


def hand_records() -> list[Generation]:
    return [
        rec("base", "math", "p1", 0, True), rec("base", "math", "p1", 1, False),
        rec("base", "math", "p2", 0, True, strict=False), rec("base", "math", "p2", 1, True),
        rec("base", "bbh", "q1", 0, False), rec("base", "bbh", "q1", 1, False, error="HTTP 500"),
        rec("adapter", "math", "p1", 0, True), rec("adapter", "math", "p1", 1, True),
        rec("adapter", "math", "p2", 0, False), rec("adapter", "math", "p2", 1, True),
        rec("adapter", "bbh", "q1", 0, True), rec("adapter", "bbh", "q1", 1, False, strict=None),  # undecided
    ]  # fmt: skip


def test_accuracy_table_by_hand():
    from legibility.evaluate.accuracy import accuracy_table  # here: the kill test's subprocesses import this module

    t = accuracy_table(hand_records(), n_boot=500, seed=1)
    assert list(t.columns) == ["generator", "benchmark", "n", "n_problems", "accuracy", "low", "high",
                               "accuracy_strict", "undecided", "failed"]  # fmt: skip
    got = {(r.generator, r.benchmark): r for r in t.itertuples()}
    assert list(got) == [("base", "bbh"), ("base", "math"), ("base", "all"),
                         ("adapter", "bbh"), ("adapter", "math"), ("adapter", "all")]  # fmt: skip
    expect = {  # n, n_problems, accuracy, accuracy_strict, undecided, failed
        ("base", "math"): (4, 2, 3 / 4, 2 / 4, 0, 0),
        ("base", "bbh"): (1, 1, 0.0, 0.0, 0, 1),
        ("base", "all"): (5, 3, 3 / 5, 2 / 5, 0, 1),
        ("adapter", "math"): (4, 2, 3 / 4, 3 / 4, 0, 0),
        ("adapter", "bbh"): (2, 1, 1 / 2, 1 / 2, 1, 0),
        ("adapter", "all"): (6, 3, 4 / 6, 4 / 6, 1, 0),
    }
    for key, (n, nq, acc, strict, undecided, failed) in expect.items():
        r = got[key]
        assert (r.n, r.n_problems, r.undecided, r.failed) == (n, nq, undecided, failed), key
        assert r.accuracy == pytest.approx(acc) and r.accuracy_strict == pytest.approx(strict), key
        if nq > 1:
            assert r.low <= r.accuracy <= r.high, key
    for key in [("base", "bbh"), ("adapter", "bbh")]:  # one problem: nothing to resample, so no interval
        assert np.isnan(got[key].low) and np.isnan(got[key].high), key
    # base math: the problem means are 1/2 and 1, so a replicate's accuracy is 1/2, 3/4 or 1
    assert (got[("base", "math")].low, got[("base", "math")].high) == (0.5, 1.0)
    # a row's interval does not depend on the other rows
    alone = accuracy_table([r for r in hand_records() if r.generator == "adapter"], n_boot=500, seed=1)
    assert alone.iloc[1].to_dict() == t.iloc[4].to_dict()
    assert t.equals(accuracy_table(hand_records(), n_boot=500, seed=1))


def test_paired_table_by_hand():
    from legibility.evaluate.accuracy import paired_table

    t = paired_table(hand_records(), "adapter", "base", n_boot=500, seed=0)
    assert list(t.benchmark) == ["bbh", "math", "all"]
    rows = {r.benchmark: r for r in t.itertuples()}
    # per-problem means: adapter p1 1, p2 1/2, q1 1/2; base p1 1/2, p2 1, q1 0 (its failed sample left out)
    for bench, (n, a, b) in {"math": (2, 3 / 4, 3 / 4), "bbh": (1, 1 / 2, 0.0), "all": (3, 2 / 3, 1 / 2)}.items():
        r = rows[bench]
        assert (r.n_problems, r.n_only_a, r.n_only_b) == (n, 0, 0)
        assert (r.acc_a, r.acc_b, r.diff) == pytest.approx((a, b, a - b))
        assert r.low <= r.diff <= r.high and 0 <= r.p_value <= 1 and r.test == "sign-flip permutation"
    assert rows["math"].p_value == 1.0  # diffs +1/2 and -1/2: every sign flip is as extreme
    assert (rows["bbh"].low, rows["bbh"].high, rows["bbh"].p_value) == (0.5, 0.5, 1.0)  # one shared problem

    strict = paired_table(hand_records(), "adapter", "base", n_boot=200, strict=True)
    assert strict.set_index("benchmark").loc["math", "acc_b"] == pytest.approx(1 / 2)  # base p2 k0 only flexible

    one = [rec("a", "math", f"p{i}", 0, i < 6) for i in range(8)] + [
        rec("b", "math", f"p{i}", 0, i < 2) for i in range(8)
    ]
    one.append(rec("a", "gpqa", "g1", 0, True))  # only a answered it: a row of NaNs for gpqa
    t = paired_table(one, "a", "b", n_boot=300).set_index("benchmark")
    assert t.loc["math", "test"] == "mcnemar-exact" and t.loc["math", "diff"] == pytest.approx(0.5)
    assert t.loc["math", "p_value"] == pytest.approx(2 * 0.5**4)  # 4 discordant, all one way
    assert t.loc["gpqa", "n_problems"] == 0 and np.isnan(t.loc["gpqa", "diff"]) and t.loc["gpqa", "n_only_a"] == 1
    assert t.loc["all", "n_only_a"] == 1
    with pytest.raises(LegibilityError, match="'c'"):
        paired_table(one, "a", "c")


# ------------------------------------------------------------------------------------------- the real model


def test_real_embedded_model_records_pin_model_and_sampling(tmp_path: Path):
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        write_problems(tmp_path, math500(2))
        cfg = config(tmp_path, generators=[ModelSpec(name="base", model="embedded", batch_size=2)], samples=1,
                     sampling=SamplingConfig(max_new_tokens=16))  # fmt: skip
        summary = generate_stage(cfg, progress=False)  # the default pool: ModelPool under {run_dir}/cache
    finally:
        torch.set_num_threads(threads)
    recs = read_jsonl(tmp_path / GENERATIONS, Generation)
    assert len(recs) == 2 and summary["generators"]["base"]["n"] == 2
    assert summary["generators"]["base"]["failed"] == 0 and summary["generators"]["base"]["requests"] == 2
    for r in recs:
        assert r.error is None and r.raw and r.finish_reason in ("stop", "length")
        assert r.truncated == (r.finish_reason == "length") and r.meta["completion_tokens"] <= 16
        assert r.model["backend"] == "hf" and r.model["model"] == "embedded" and r.model["adapter"] is None
        assert r.model["revision"] and r.model["chat_template_sha256"] and r.model["versions"]["torch"]
        assert r.sampling == {"max_new_tokens": 16, "temperature": 0.6, "top_p": 0.95, "top_k": None, "min_p": 0.0,
                              "seed": 0, "stop": []}  # fmt: skip
        assert r.meta["request_seed"] is not None and r.correct_strict is not None
    assert any((tmp_path / "cache").rglob("*.json"))  # answered requests are cached for the next stage
