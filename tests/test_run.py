"""`legibility run`: every stage over one run folder, skipping what is done, resuming what was cut short.

- A run killed (SIGKILL to its process group) in the pairs stage, again in training (after its first checkpoint)
  and again in evaluation (after some replies were cached) finishes, rerun after rerun, with the records of an
  uninterrupted run, byte for byte; completed stages are never redone (their files keep their bytes and times),
  training resumes from its checkpoint, evaluation resends nothing it had cached; a further run does nothing and
  says so.
- A second run of a finished folder skips every stage and loads no model.
- A changed config reruns the stage that reads it and every later one, saying what changed; `--only` and `--from`
  force stages; `status` shows each stage's state and what changed since it ran; unknown stage names are one-line
  errors.

The config is configs/demo.yaml shrunk (`TINY`): the 20 sample problems, pairs of at most 384 tokens over two
transforms, two DPO steps (a checkpoint after each), one held-out problem sampled once per generator, short reader
replies, one validity trace. The uninterrupted reference run works in the background while the killed run works.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from legibility import run as R
from legibility.config import ExperimentConfig, load_config
from legibility.errors import LegibilityError
from legibility.train import last_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "demo.yaml"
TINY = [
    "data.benchmarks=[{name: math, path: data/samples/math500_sample.jsonl, levels: null}]",
    "pairs.max_length=384", "pairs.transforms={sentence_shuffle: 1, number_substitution: 1}", "pairs.pairs_per_trace=2",
    "train.max_steps=2", "train.trl.save_steps=1", "train.trl.eval_steps=2", "train.max_length=384",
    "train.max_eval_pairs=1", "train.per_device_train_batch_size=1",
    "generate.max_problems=1", "generate.sampling.max_new_tokens=16",
    "readers.solve_sampling.max_new_tokens=8", "readers.answer_sampling.max_new_tokens=4",
    "judges.rubric=false", "metrics.fractions=[0.0, 1.0]", "metrics.validity_traces=1", "metrics.n_boot=100",
]  # fmt: skip
RECORDS = ("pairs/train.jsonl", "pairs/val.jsonl", "pairs/together_train.jsonl", "pairs/together_val.jsonl",
           "pairs/split.json", "eval/readings.jsonl", "eval/judgements.jsonl", "eval/taxonomy.jsonl",
           "train/adapter/adapter_model.safetensors")  # fmt: skip


def env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip


def run_args(run_dir: Path, *extra: str) -> list[str]:
    sets = [a for s in [*TINY, f"run_dir={run_dir}"] for a in ("--set", s)]
    return [sys.executable, "-m", "legibility", "run", str(CONFIG), *sets, *extra]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "legibility", *args], cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=900)  # fmt: skip


def config(run_dir: Path, *extra: str) -> ExperimentConfig:
    return load_config(CONFIG, [*TINY, f"run_dir={run_dir}", *extra])


def run_here(cfg: ExperimentConfig, **kw: str) -> tuple[dict[str, str], str]:
    """The runner in this process (the cheap cases); its console output as plain text."""
    buf = io.StringIO()
    outcome = R.run(cfg, console=Console(file=buf, width=200, color_system=None), **kw)
    return outcome, buf.getvalue()


def state(run_dir: Path, stage: str) -> str | None:
    st = R.read_state(run_dir, stage)
    return None if st is None else st.get("status")


def files(run_dir: Path, *names: str) -> dict[str, tuple[bytes, int]]:
    """Bytes and modification time of each file (a file rewritten with the same bytes still shows)."""
    return {n: ((run_dir / n).read_bytes(), (run_dir / n).stat().st_mtime_ns) for n in names}


def every_file(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    names = [str(p.relative_to(run_dir)) for p in sorted(run_dir.rglob("*")) if p.is_file()]
    return files(run_dir, *(n for n in names if n != "config.yaml"))  # the runner writes its config every time


def cache_entries(run_dir: Path) -> set[str]:
    return {p.name for p in (run_dir / "cache").glob("??/*.json")}


def generations(run_dir: Path) -> list[dict[str, object]]:
    """eval/generations.jsonl without each record's model meta (it names the adapter's folder)."""
    rows = map(json.loads, (run_dir / "eval" / "generations.jsonl").read_text().splitlines())
    return [{k: v for k, v in g.items() if k != "model"} for g in rows]


def logged(run_dir: Path) -> list[tuple[int, str]]:
    """(step, kind) of each line of train/metrics.jsonl."""
    kinds = ("eval_loss", "train_runtime", "loss")
    rows = map(json.loads, (run_dir / "train" / "metrics.jsonl").read_text().splitlines())
    return [(m["step"], next(k for k in kinds if k in m)) for m in rows]


def skipped(out: str, *stages: str) -> bool:
    return all(f"{s}: up to date, skipped" in out for s in stages)


class Background:
    """`legibility run` in a subprocess of its own process group, its output in a log file."""

    def __init__(self, run_dir: Path, log: Path, *extra: str) -> None:
        self.run_dir, self.log = run_dir, log
        self.started = time.time()
        with log.open("w") as f:
            self.proc = subprocess.Popen(run_args(run_dir, *extra), cwd=ROOT, env=env(), stdout=f,
                                         stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float = 900) -> str:
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            self.kill()
        assert rc == 0, self.output()[-4000:]
        return self.output()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=60)

    def kill_in(self, stage: str, ready: Callable[[], bool] = lambda: True, timeout: float = 900) -> str:
        """SIGKILL the whole process group once `stage` runs (in this process) and `ready()` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"ended before it could be killed in {stage}:\n{self.output()[-4000:]}"
            st = R.read_state(self.run_dir, stage)
            running = st is not None and st.get("status") == "running" and st.get("started", 0) >= self.started - 1
            if running and ready():
                self.kill()
                assert self.proc.returncode == -signal.SIGKILL
                return self.output()
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"never reached {stage}:\n{self.output()[-4000:]}")


class Settled:
    """True once at least `n` cache entries were added since the first call and none for `quiet` seconds: the
    kill lands between two model calls, not among one call's cache writes."""

    def __init__(self, run_dir: Path, n: int = 2, quiet: float = 0.3) -> None:
        self.run_dir, self.n, self.quiet = run_dir, n, quiet
        self.before: set[str] | None = None
        self.count, self.since = 0, time.monotonic()

    def __call__(self) -> bool:
        now = cache_entries(self.run_dir)
        if self.before is None:
            self.before = now
        added = len(now - self.before)
        if added != self.count:
            self.count, self.since = added, time.monotonic()
            return False
        return added >= self.n and time.monotonic() - self.since > self.quiet


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    """The uninterrupted run, started at once and left to work in the background; `.wait()` for it."""
    base = tmp_path_factory.mktemp("reference")
    bg = Background(base / "run", base / "run.log")
    yield bg
    bg.kill()


@pytest.fixture
def done(reference: Background) -> Iterator[Path]:
    """The finished reference folder, restored after the test (same path: fingerprints name their inputs' paths)."""
    reference.wait()
    run_dir = reference.run_dir
    keep = run_dir.parent / "kept"
    shutil.copytree(run_dir, keep)  # copy2: times kept too
    yield run_dir
    shutil.rmtree(run_dir)
    keep.rename(run_dir)


@pytest.fixture
def here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the config's data paths are relative to the repository, as for the subprocesses


# ----------------------------------------------------------------------------------------------- the tests


@pytest.mark.slow
def test_killed_in_pairs_train_and_eval_each_rerun_finishes_as_if_never_killed(
    reference: Background, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"

    # 1. killed in the pairs stage
    out = Background(run_dir, tmp_path / "1.log").kill_in("pairs")
    assert [state(run_dir, s) for s in R.STAGES] == ["done", "done", "running", None, None, None, None], out
    early = files(run_dir, "problems.jsonl", "traces.jsonl", "stages/problems.json", "stages/traces.json")
    rows = {r["stage"]: r for r in R.status(run_dir)}
    assert [rows[s]["state"] for s in R.STAGES] == ["done", "done", "interrupted", *["never run"] * 4]
    assert rows["traces"]["result"] == "60 traces" and rows["pairs"]["stale"] == ""

    # 2. pairs resume; killed in training once its first checkpoint is complete
    bg = Background(run_dir, tmp_path / "2.log")
    out = bg.kill_in("train", lambda: last_checkpoint(run_dir / "train") is not None)
    assert skipped(out, "problems", "traces") and "pairs (interrupted, resuming)" in out, out
    assert files(run_dir, *early) == early
    assert state(run_dir, "pairs") == "done" and state(run_dir, "train") == "running"
    assert not (run_dir / "train" / "adapter").exists()
    pairs = files(run_dir, *(n for n in RECORDS if n.startswith("pairs/")), "pairs/stats.json", "stages/pairs.json")

    # 3. training resumes from that checkpoint; generation; killed in evaluation after some replies are cached
    bg, settled = Background(run_dir, tmp_path / "3.log"), Settled(run_dir)
    out = bg.kill_in("eval", settled)
    assert skipped(out, "problems", "traces", "pairs") and "train (interrupted, resuming)" in out, out
    assert files(run_dir, *early, *pairs) == early | pairs
    summary = json.loads((run_dir / "train" / "summary.json").read_text())
    assert summary["global_step"] == 2 and summary["resumed_from"] == str(run_dir / "train" / "checkpoint-1")
    assert state(run_dir, "eval") == "running" and not (run_dir / "eval" / "readings.jsonl").exists()
    trained = files(run_dir, "train/summary.json", "train/adapter/adapter_model.safetensors",
                    "eval/generations.jsonl", "stages/train.json", "stages/generate.json")  # fmt: skip
    assert settled.before is not None
    killed = cache_entries(run_dir) - settled.before  # the replies the killed evaluation had cached

    # 4. evaluation resumes from the cache and the run ends
    out = Background(run_dir, tmp_path / "4.log").wait()
    assert skipped(out, "problems", "traces", "pairs", "train", "generate"), out
    assert "eval (interrupted, resuming)" in out and "report (never run)" in out
    assert files(run_dir, *early, *pairs, *trained) == early | pairs | trained
    assert all(state(run_dir, s) == "done" for s in R.STAGES)
    assert (run_dir / "report.html").is_file()

    # the same records as the uninterrupted run, byte for byte (the adapter too: training resumed exactly)
    reference.wait()
    ref = reference.run_dir
    for name in RECORDS:
        assert (run_dir / name).read_bytes() == (ref / name).read_bytes(), name
    assert generations(run_dir) == generations(ref)
    assert logged(run_dir) == logged(ref)  # one line per logged step and kind: step 1 is not logged twice
    # and no reply sent twice: the resumed evaluation made the same lookups, and sent none the killed one had
    full = json.loads((ref / "eval/summary.json").read_text())["counts"]
    resumed = json.loads((run_dir / "eval/summary.json").read_text())["counts"]
    loss = [json.loads((d / "train/summary.json").read_text())["train_metrics"]["train_loss"] for d in (run_dir, ref)]
    assert loss[0] == pytest.approx(loss[1], abs=1e-9)  # over every step, not only those after the resume
    assert resumed["requests"] + resumed["hits"] == full["requests"] + full["hits"]
    assert len(killed) > 0 and 0 < resumed["requests"] <= full["requests"] - len(killed)

    # 5. once more: nothing to do, and nothing is touched
    before = every_file(run_dir)
    out = Background(run_dir, tmp_path / "5.log").wait()
    assert skipped(out, *R.STAGES) and "nothing to do" in out, out
    assert every_file(run_dir) == before


@pytest.mark.slow
def test_a_second_run_skips_every_stage_and_loads_no_model(
    done: Path, here: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = (done.parent / "run.log").read_text()
    assert all(f"{s} (never run)" in out for s in R.STAGES), out
    before = every_file(done)

    def no(*a: object, **k: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("legibility.models.build._load", no)
    monkeypatch.setattr("legibility.train.train_from_config", no)
    outcome, out = run_here(config(done))
    assert outcome == dict.fromkeys(R.STAGES, "skipped")
    assert skipped(out, *R.STAGES) and f"nothing to do: every stage is up to date in {done}" in out
    assert every_file(done) == before  # state files, records, summaries, the cache: same bytes, same times


@pytest.mark.slow
def test_a_changed_config_reruns_its_stage_and_the_later_ones_and_status_says_why(done: Path, here: None) -> None:
    rerun = ("eval/readings.jsonl", "eval/judgements.jsonl", "eval/taxonomy.jsonl", "eval/summary.json",
             "eval/tables/", "report", "stages/eval.json", "stages/report.json")  # fmt: skip
    kept = {k: v for k, v in every_file(done).items() if not k.startswith(rerun)}
    assert "eval/generations.jsonl" in kept and "train/adapter/adapter_model.safetensors" in kept
    first = json.loads((done / "eval" / "summary.json").read_text())["counts"]
    outcome, out = run_here(config(done, "judges.threshold=5"))
    assert outcome == {**dict.fromkeys(R.STAGES[:5], "skipped"), "eval": "ran", "report": "ran"}
    assert "eval (config changed)" in out and "report (inputs changed)" in out, out  # eval/summary.json is new
    assert {k: v for k, v in every_file(done).items() if k in kept} == kept
    counts = json.loads((done / "eval" / "summary.json").read_text())["counts"]
    assert counts["requests"] == 0 and counts["hits"] == first["requests"] + first["hits"]  # the threshold is in
    # no prompt: every reply comes from the cache
    assert '"threshold": 5.0' in (done / "eval" / "judgements.jsonl").read_text()

    rows = {r["stage"]: r for r in R.status(done)}  # reads the run's config.yaml: the one just run
    assert {s: (r["state"], r["stale"]) for s, r in rows.items()} == dict.fromkeys(R.STAGES, ("done", ""))
    rows = {r["stage"]: r for r in R.status(done, config(done))}  # the config before: the old threshold
    assert {s: r["stale"] for s, r in rows.items()} == {**dict.fromkeys(R.STAGES, ""), "eval": "config"}

    with (done / "pairs" / "val.jsonl").open("a") as f:
        f.write("\n")  # an input of training and evaluation changes
    r = cli("status", str(done))
    assert r.returncode == 0, r.stderr
    lines = {ln.split("│")[1].strip(): ln for ln in r.stdout.splitlines() if ln.count("│") > 3}
    assert set(R.STAGES) <= set(lines), r.stdout
    for s in R.STAGES:
        assert re.search(r"│ done\s+│", lines[s]) and ("inputs" in lines[s]) == (s in ("train", "eval")), r.stdout
    assert "2 steps" in lines["train"]


@pytest.mark.slow
def test_only_and_from_force_stages(done: Path, here: None) -> None:
    before = every_file(done)
    outcome, out = run_here(config(done), only="report")
    assert outcome == {"report": "ran"} and "report (forced (--from/--only))" in out, out
    assert all(f"{s}:" not in out and f"{s} (" not in out for s in R.STAGES[:-1])
    kept = {k: v for k, v in before.items() if not k.startswith(("report", "stages/report.json"))}
    assert {k: v for k, v in every_file(done).items() if k in kept} == kept

    outcome, out = run_here(config(done), from_stage="eval")
    assert outcome == {**dict.fromkeys(R.STAGES[:5], "skipped"), "eval": "ran", "report": "ran"}
    assert "eval (forced (--from/--only))" in out and "report (forced (--from/--only))" in out, out
    assert json.loads((done / "eval" / "summary.json").read_text())["counts"]["requests"] == 0
    for name in ("eval/readings.jsonl", "eval/judgements.jsonl"):
        assert (done / name).read_bytes() == before[name][0]

    stages = ", ".join(R.STAGES)
    with pytest.raises(LegibilityError, match=re.escape(f"--from 'nope': not a stage; stages are {stages}")):
        run_here(config(done), from_stage="nope")
    r = cli("run", str(CONFIG), "--set", f"run_dir={done}", *[a for s in TINY for a in ("--set", s)], "--only", "eval2")
    assert r.returncode == 2 and r.stderr == f"error: --only 'eval2': not a stage; stages are {stages}\n", r.stderr
    r = cli("status", str(done / "nope"))
    assert r.returncode == 2 and r.stderr == f"error: {done / 'nope'}: no such run folder\n"


@pytest.mark.slow
def test_an_adapter_trained_outside_the_runner_is_adopted_only_when_it_matches(
    done: Path, here: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU recipe trains with `accelerate launch -m legibility.train`, then `legibility run` goes on: the runner
    must take that adapter as its train stage when it matches, and never train over (delete) one that does not."""

    def no(*a: object, **k: object) -> None:
        raise AssertionError("the runner trained")

    monkeypatch.setattr("legibility.train.train_from_config", no)
    before = every_file(done)
    (done / "stages" / "train.json").unlink()  # as after `accelerate launch`: the runner never ran train
    for extra, kw, message in [
        (["train.beta=0.5"], {}, "; its train differs from this config's"),
        (["model=smollm2"], {}, "; its model differs from this config's"),  # another name for the same model
        ([], {"only": "train"}, "--from/--only would train over it"),
    ]:
        with pytest.raises(LegibilityError, match=re.escape(f"{done / 'train'}: holds training the runner did not "
                                                            "start") + ".*" + re.escape(message)):  # fmt: skip
            run_here(config(done, *extra), **kw)
        assert R.read_state(done, "train") is None
    summary = done / "train" / "summary.json"
    trained = json.loads(summary.read_text())
    assert trained["batch"]["global"] == 2  # the demo's batch_size
    for batch in ({**trained["batch"], "gradient_accumulation_steps": 8, "global": 16}, None):  # 8 GPUs, old record
        summary.write_text(json.dumps({**trained, "batch": batch}))
        with pytest.raises(LegibilityError, match=rf"; its global batch was {batch and 16}, this config's train\."):
            run_here(config(done))
    data, mtime = before["train/summary.json"]
    summary.write_bytes(data)
    os.utime(summary, ns=(mtime, mtime))
    (done / "pairs" / "train.jsonl").write_bytes(before["pairs/train.jsonl"][0] + b"\n")
    with pytest.raises(LegibilityError, match=r"on another train\.jsonl"):
        run_here(config(done))  # pairs is up to date (its inputs did not change); its output did
    data, mtime = before["pairs/train.jsonl"]
    (done / "pairs" / "train.jsonl").write_bytes(data)
    os.utime(done / "pairs" / "train.jsonl", ns=(mtime, mtime))  # the file as it was, for the comparison below

    outcome, out = run_here(config(done))
    assert outcome == {**dict.fromkeys(R.STAGES, "skipped"), "train": "adopted"}, out
    assert "train: adopted: 2 steps trained outside the runner" in out
    assert R.read_state(done, "train")["status"] == "done"
    after = every_file(done)
    assert {k: v for k, v in after.items() if k != "stages/train.json"} == {
        k: v for k, v in before.items() if k != "stages/train.json"
    }
    outcome, out = run_here(config(done))
    assert outcome == dict.fromkeys(R.STAGES, "skipped") and "nothing to do" in out

    shutil.rmtree(done / "train" / "adapter")
    (done / "train" / "summary.json").unlink()
    (done / "stages" / "train.json").unlink()
    with pytest.raises(LegibilityError, match=r"and no finished summary\.json; move it away to train here"):
        run_here(config(done))
    assert (done / "train" / "metrics.jsonl").is_file()  # nothing of it was deleted


def test_a_copied_run_folder_keeps_its_fingerprints(tmp_path: Path) -> None:
    from legibility.config import load_config
    from legibility.run import STAGE_LIST, fingerprint

    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        (d / "pairs").mkdir(parents=True)
        (d / "problems.jsonl").write_text("{}\n")
        (d / "traces.jsonl").write_text("{}\n")
    pairs = next(s for s in STAGE_LIST if s.name == "pairs")
    fps = [fingerprint(pairs, load_config(ROOT / "configs/demo.yaml", [f"run_dir={d}"]), "code") for d in (a, b)]
    assert fps[0] == fps[1]
    (b / "traces.jsonl").write_text("{}\n{}\n")  # the check can fail: other bytes, another fingerprint
    assert fingerprint(pairs, load_config(ROOT / "configs/demo.yaml", [f"run_dir={b}"]), "code") != fps[0]
