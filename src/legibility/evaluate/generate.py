"""`legibility generate`: K CoTs per held-out problem from each generator (base, adapter), graded as they arrive.

Why it is built this way:
- Samples are reproducible and distinct: sample k is drawn with seed `sampling.seed + k`, so K samples of one chat
  differ (backends derive the request's random stream from the seed and the prompt) and a rerun redraws the same.
- A queued backend (openai) gets every request at once on its bounded pool, and the replies are graded and
  appended as they arrive (each wake-up's replies as one batch), so no slow reply holds back the others; local
  backends (hf, vllm) run batches of `batch_size`.
- A kill loses at most the batch in flight: every finished batch is appended to `eval/generations.jsonl` and
  fsync'd before the next request. A rerun reads the file back (dropping a torn last line, never a complete one),
  skips what is done and retries what failed; at the end the file is rewritten atomically with exactly one record
  per id, in a fixed order, so an interrupted run ends with the same file as an uninterrupted one.
- A failed request is recorded with its error and never graded: it is counted in the summary, not scored wrong.
- Records made by another model, prompt or sampling are never mixed in silently: the stage refuses to continue.
- The problem sample (`generate.max_problems`) is the first N per benchmark by sha256 of the problem id: the same
  in every process and on every machine (Python's `hash()` of a string is salted per process).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from legibility.benchmarks.prompts import messages
from legibility.config import ExperimentConfig, ModelSpec, SamplingConfig
from legibility.errors import LegibilityError
from legibility.grading import grade
from legibility.models.base import ChatModel, Completion, Sampling
from legibility.models.queue import is_queued
from legibility.records import Generation, Message, Problem, dumps, parse_line, read_jsonl, write_json, write_jsonl
from legibility.responses import split_think

__all__ = [
    "GENERATIONS",
    "SUMMARY",
    "ModelSource",
    "generate",
    "generate_stage",
    "heldout_ids",
    "make_generation",
    "read_generations",
    "sample_problems",
    "sample_sampling",
    "select_problems",
    "summarize",
]

GENERATIONS = "eval/generations.jsonl"
SUMMARY = "eval/generate_summary.json"

IDENTITY_KEYS = ("backend", "model", "revision", "adapter_sha256", "chat_template_sha256", "enable_thinking", "dtype")
"""Model meta that decides what a model writes: records that differ here were made by another model. Not the device,
library versions or the spec's name, which may change between a run and its continuation."""


class ModelSource(Protocol):
    """What the stage needs from a pool (`models.build.ModelPool`, or a test's fakes)."""

    def get(self, spec: ModelSpec) -> ChatModel: ...


# --------------------------------------------------------------------------------------------- problems


def id_hash(problem_id: str) -> str:
    """The stable sort key of the `max_problems` sample."""
    return hashlib.sha256(problem_id.encode("utf-8")).hexdigest()


def heldout_ids(split_path: Path) -> dict[str, set[str]]:
    """Validation problem ids per benchmark from `pairs/split.json` (written by `pairs.split_manifest`)."""
    if not split_path.is_file():
        raise LegibilityError(
            f"{split_path}: no such file; build pairs first (`legibility pairs build <run_dir>/traces.jsonl "
            f"--out {split_path.parent}`), or set generate.problems: all"
        )
    try:
        data = json.loads(split_path.read_text(encoding="utf-8"))
        return {b: set(sides.get("val", [])) for b, sides in data["benchmarks"].items()}
    except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as e:
        raise LegibilityError(f"{split_path}: not a split manifest ({type(e).__name__}: {e})") from None


def sample_problems(problems: Sequence[Problem], max_problems: int | None) -> list[Problem]:
    """Per benchmark, the first `max_problems` by sha256 of the id; kept in their input order."""
    if max_problems is None:
        return list(problems)
    by_bench: dict[str, list[Problem]] = {}
    for p in problems:
        by_bench.setdefault(p.benchmark, []).append(p)
    keep = {p.id for ps in by_bench.values() for p in sorted(ps, key=lambda p: id_hash(p.id))[:max_problems]}
    return [p for p in problems if p.id in keep]


def select_problems(cfg: ExperimentConfig) -> list[Problem]:
    """The problems `generate` samples: `{run_dir}/problems.jsonl`, held-out side only by default, filtered by
    benchmark, sampled per benchmark; in problems.jsonl order."""
    run = Path(cfg.run_dir)
    path = run / "problems.jsonl"
    if not path.is_file():
        raise LegibilityError(
            f"{path}: no such file; load the problems first (`legibility benchmarks load <name> <file> --out {path}`)"
        )
    problems = read_jsonl(path, Problem)
    seen: set[str] = set()
    for p in problems:
        if p.id in seen:
            raise LegibilityError(f"{path}: problem id {p.id} appears twice (generation ids would collide)")
        seen.add(p.id)
    g = cfg.generate
    if g.problems == "heldout":
        split_path = run / "pairs" / "split.json"
        val = heldout_ids(split_path)
        wanted = {(b, pid) for b, ids in val.items() for pid in ids}
        missing = sorted(wanted - {(p.benchmark, p.id) for p in problems})
        if missing:
            raise LegibilityError(
                f"{split_path}: {len(missing)} validation problems are not in {path} (e.g. {missing[0][1]}): "
                "were the pairs built from other problem files?"
            )
        problems = [p for p in problems if (p.benchmark, p.id) in wanted]
    if g.benchmarks is not None:
        problems = [p for p in problems if p.benchmark in g.benchmarks]
    return sample_problems(problems, g.max_problems)


# ------------------------------------------------------------------------------------------- generating


def sample_sampling(sampling: SamplingConfig, k: int) -> Sampling:
    """Decoding settings of sample k: the configured ones with seed `sampling.seed + k`."""
    return Sampling(
        max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
        top_k=sampling.top_k, min_p=sampling.min_p, seed=sampling.seed + k,
    )  # fmt: skip


def _sampling_dict(s: Sampling) -> dict[str, Any]:
    return {**dataclasses.asdict(s), "stop": list(s.stop)}


def model_meta(model: ChatModel) -> dict[str, Any]:
    """What a record says about its model: the backend's meta (model, revision, adapter hash, chat template hash,
    dtype, device, library versions), plus the model's name."""
    return {"name": model.name, **dict(getattr(model, "meta", None) or {})}


def make_generation(
    problem: Problem,
    chat: list[Message],
    k: int,
    completion: Completion,
    generator_name: str,
    sampling: Sampling,
    meta: dict[str, Any],
) -> Generation:
    """One graded record from one completion. A failed request is not graded (correct False, correct_strict
    None, `error` set); an undecided grade keeps correct_strict None with the reason in meta."""
    base: dict[str, Any] = {
        "id": f"{generator_name}/{problem.id}/{k}",
        "problem_id": problem.id,
        "benchmark": problem.benchmark,
        "subtask": problem.subtask,
        "generator": generator_name,
        "prompt": chat,
        "sample": k,
        "raw": completion.text,
        "finish_reason": completion.finish_reason,
        "truncated": completion.truncated,
        "sampling": _sampling_dict(sampling),
        "model": meta,
    }
    request_seed = (completion.meta.get("decoding") or {}).get("request_seed")  # hf: the row's random stream
    info = {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
            "request_seed": request_seed}  # fmt: skip
    info = {key: v for key, v in info.items() if v is not None}
    if not completion.ok:
        return Generation(
            **base, reasoning="", answer_text="", complete=False, correct=False, correct_strict=None,
            error=completion.error or "failed", meta=info,
        )  # fmt: skip
    split = split_think(completion.text)
    correct, strict, extracted = False, None, None
    try:
        g = grade(problem, completion.text)
    except Exception as e:  # only a malformed problem raises (a multiple-choice gold that is not a letter)
        info["grade_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    else:
        extracted, info["grade_rule"] = g.answer, g.rule
        if g.undecided:
            info["undecided"] = g.reason
        else:
            correct, strict = g.correct, g.strict
    return Generation(
        **base, reasoning=split.reasoning, answer_text=split.answer, extracted=extracted, correct=correct,
        correct_strict=strict, complete=split.closed and bool(split.answer) and not completion.truncated, meta=info,
    )  # fmt: skip


@contextlib.contextmanager
def _bar(description: str, total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar counting samples (the style of the other stages), or nothing."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def generate(
    model: ChatModel,
    generator_name: str,
    problems: Sequence[Problem],
    samples: int,
    sampling: SamplingConfig,
    system_prompt: str | None = None,
    *,
    done: set[str] | frozenset[str] = frozenset(),
    on_batch: Callable[[list[Generation]], None],
    batch_size: int = 8,
    progress: bool = False,
) -> None:
    """Sample `samples` CoTs per problem, skipping ids in `done`, and hand each batch's records to `on_batch`
    as soon as the model returns it. Sample-major order (every problem's sample 0, then sample 1, ...): one call
    carries one seed, and an interrupted run has covered the most problems."""
    if batch_size < 1:
        raise LegibilityError(f"batch_size must be >= 1, got {batch_size}")
    meta = model_meta(model)
    chats = {p.id: messages(p, system_prompt) for p in problems}
    todo = [
        (k, p) for k in range(samples) for p in problems if f"{generator_name}/{p.id}/{k}" not in done
    ]  # fmt: skip
    if is_queued(model):
        _generate_queued(model, generator_name, todo, chats, sampling, meta, on_batch, progress)
        return
    batches: list[list[tuple[int, Problem]]] = []
    for k, p in todo:
        if batches and batches[-1][0][0] == k and len(batches[-1]) < batch_size:
            batches[-1].append((k, p))
        else:
            batches.append([(k, p)])
    with _bar(f"generating {generator_name}", len(todo), progress and bool(todo)) as advance:
        for batch in batches:
            s = sample_sampling(sampling, batch[0][0])
            outs = model.generate([chats[p.id] for _, p in batch], s)
            if len(outs) != len(batch):
                raise LegibilityError(f"{generator_name}: the backend returned {len(outs)} replies for {len(batch)}")
            on_batch([make_generation(p, chats[p.id], k, c, generator_name, s, meta)
                      for (k, p), c in zip(batch, outs, strict=True)])  # fmt: skip
            advance(len(batch))


def _generate_queued(
    model: ChatModel, generator_name: str, todo: list[tuple[int, Problem]], chats: dict[str, list[Message]],
    sampling: SamplingConfig, meta: dict[str, Any], on_batch: Callable[[list[Generation]], None], progress: bool,
) -> None:  # fmt: skip
    """Every request on the model's queue at once; each wake-up's finished replies graded and handed over as one
    batch, in `todo` order within it."""
    from concurrent.futures import FIRST_COMPLETED, wait

    samplings = [sample_sampling(sampling, k) for k, _ in todo]
    futures = [model.submit("generate", chats[p.id], s) for (_, p), s in zip(todo, samplings, strict=True)]  # type: ignore[attr-defined]
    index: dict[int, list[int]] = {}
    for i, f in enumerate(futures):
        index.setdefault(id(f), []).append(i)
    pending = set(futures)
    with _bar(f"generating {generator_name}", len(todo), progress and bool(todo)) as advance:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            ready = sorted(i for f in done for i in index[id(f)])
            on_batch([make_generation(todo[i][1], chats[todo[i][1].id], todo[i][0], futures[i].result(),
                                      generator_name, samplings[i], meta) for i in ready])  # fmt: skip
            advance(len(ready))


# ------------------------------------------------------------------------------------------------ the file


def read_generations(path: Path) -> list[Generation]:
    """Records of a generations file, in file order. A torn last line (a kill mid-append) is dropped and the file
    rewritten without it; complete lines are kept byte for byte. Any other bad line is an error naming it."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline, else an unterminated line
    records: list[Generation] = []
    torn = bool(tail.strip())
    if torn and _whole(tail):  # killed between a record and its newline: the record is whole, keep it
        lines.append(tail)
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(parse_line(line.decode("utf-8"), Generation, path, i))
        except (LegibilityError, UnicodeDecodeError):
            if i == len(lines) and not torn:  # the last line can be damaged even with its newline (a disk fault)
                torn, lines = True, lines[:-1]
                break
            raise
    if torn:
        good = b"".join(line + b"\n" for line in lines)
        _replace_bytes(path, good)
    return records


def _whole(line: bytes) -> bool:
    try:
        Generation.model_validate_json(line)
    except ValueError:
        return False
    return True


def _replace_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _append(path: Path, records: Iterable[Generation]) -> None:
    """One batch as whole lines, on disk before the next request (a kill loses at most the batch in flight)."""
    text = "".join(dumps(r) + "\n" for r in records)
    with path.open("a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One writer per generations file: a second `generate` on the same run fails instead of interleaving."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    lock = path.with_name(f".{path.name}.lock")
    with lock.open("a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LegibilityError(f"{path}: another `legibility generate` is writing it") from None
        except OSError:  # a file system without locks
            pass
        yield


def merge(into: dict[str, Generation], records: Iterable[Generation]) -> dict[str, Generation]:
    """One record per id: a success over a failure, else the later one."""
    for r in records:
        old = into.get(r.id)
        if old is None or r.error is None or old.error is not None:
            into[r.id] = r
    return into


def latest(records: Iterable[Generation]) -> dict[str, Generation]:
    """One record per id of a file's records (see `merge`)."""
    return merge({}, records)


def _mismatch(record: Generation, chat: list[Message], sampling: dict[str, Any], meta: dict[str, Any]) -> str | None:
    """Why a finished record was not made by this generator's current settings, or None."""
    if [m.model_dump() for m in record.prompt] != [m.model_dump() for m in chat]:
        return "prompt"
    if record.sampling != sampling:
        return f"sampling ({record.sampling} vs {sampling})"
    for key in IDENTITY_KEYS:
        if key in record.model and key in meta and record.model[key] != meta[key]:
            return f"model {key} ({record.model[key]} vs {meta[key]})"
    return None


def _check_done(
    path: Path, name: str, model: ChatModel, problems: Sequence[Problem], cfg: ExperimentConfig,
    records: dict[str, Generation],
) -> set[str]:  # fmt: skip
    """Ids of this generator already done under the current settings; records made otherwise are an error."""
    g = cfg.generate
    meta = model_meta(model)
    done: set[str] = set()
    for k in range(g.samples):
        s = _sampling_dict(sample_sampling(g.sampling, k))
        for p in problems:
            r = records.get(f"{name}/{p.id}/{k}")
            if r is None or r.error is not None:
                continue
            why = _mismatch(r, messages(p, g.system_prompt), s, meta)
            if why:
                raise LegibilityError(
                    f"{path}: {r.id} was made with another {why}; move the file away (or use another run_dir) "
                    "to generate anew"
                )
            done.add(r.id)
    return done


def _check_adapters(cfg: ExperimentConfig) -> None:
    """A missing adapter fails before any generator runs, not after the base model's hours of sampling."""
    from legibility.models.build import resolve_spec

    for spec in cfg.generate.generators:
        adapter = resolve_spec(spec, cfg.model, cfg.run_dir).adapter
        if spec.backend != "openai" and adapter is not None and not Path(adapter).is_dir():
            raise LegibilityError(
                f"generate.generators: {spec.name}: adapter folder {adapter} not found (train first: `legibility "
                "train <config>`)"
            )


def _call_size(spec: ModelSpec) -> int:
    """Requests per backend call: hf batches `batch_size` rows per forward pass; openai sends `concurrency`
    requests at once."""
    return max(spec.batch_size, spec.concurrency) if spec.backend == "openai" else spec.batch_size


def summarize(records: Iterable[Generation]) -> dict[str, int]:
    """Counts of one generator's records: failures are counted apart and never as wrong answers."""
    rs = list(records)
    ok = [r for r in rs if r.error is None]
    return {
        "n": len(rs),
        "failed": len(rs) - len(ok),
        "truncated": sum(r.truncated for r in ok),
        "incomplete": sum(not r.complete for r in ok),
        "undecided": sum(r.correct_strict is None for r in ok),
        "correct": sum(r.correct for r in ok),
        "correct_strict": sum(bool(r.correct_strict) for r in ok),
    }


def generate_stage(cfg: ExperimentConfig, pool: ModelSource | None = None, progress: bool = True) -> dict[str, Any]:
    """Every generator of `cfg.generate` on `select_problems(cfg)` into `{run_dir}/eval/generations.jsonl`,
    continuing a previous run; writes and returns `{run_dir}/eval/generate_summary.json`.

    `pool`: default a `ModelPool` caching requests under `{run_dir}/cache`, closed at the end."""
    g = cfg.generate
    names = [s.name for s in g.generators]
    if len(set(names)) != len(names):
        raise LegibilityError(f"generate.generators: names must be unique, got {names}")
    run = Path(cfg.run_dir)
    _check_adapters(cfg)
    problems = select_problems(cfg)
    if not problems:
        raise LegibilityError(f"generate: no problems selected from {run / 'problems.jsonl'} (problems: {g.problems})")
    path = run / GENERATIONS
    path.parent.mkdir(parents=True, exist_ok=True)
    own = None
    if pool is None:
        from legibility.models.build import ModelPool

        pool = own = ModelPool(cache_dir=run / "cache", default_model=cfg.model, run_dir=cfg.run_dir)
    summary: dict[str, Any] = {
        "file": str(path),
        "problems": len(problems),
        "benchmarks": {b: sum(p.benchmark == b for p in problems) for b in sorted({p.benchmark for p in problems})},
        "selection": {"problems": g.problems, "benchmarks": g.benchmarks, "max_problems": g.max_problems},
        "samples": g.samples,
        "sampling": g.sampling.model_dump(),
        "system_prompt": g.system_prompt,
        "generators": {},
    }
    try:
        with _exclusive(path):
            records = latest(read_generations(path))
            for spec in g.generators:
                model = pool.get(spec)
                done = _check_done(path, spec.name, model, problems, cfg, records)
                before = getattr(model, "requests", None)

                def keep(batch: list[Generation]) -> None:
                    _append(path, batch)
                    merge(records, batch)

                generate(model, spec.name, problems, g.samples, g.sampling, g.system_prompt, done=done,
                         on_batch=keep, batch_size=_call_size(spec), progress=progress)  # fmt: skip
                mine = [records[f"{spec.name}/{p.id}/{k}"] for k in range(g.samples) for p in problems]
                after = getattr(model, "requests", None)
                summary["generators"][spec.name] = {
                    **summarize(mine),
                    "resumed": len(done),
                    "requests": None if before is None or after is None else after - before,
                    "model": model_meta(model),
                }
            write_jsonl(path, _ordered(records, names, problems, g.samples))
    finally:
        if own is not None:
            own.close()
    write_json(run / SUMMARY, summary)
    return summary


def _ordered(records: dict[str, Generation], names: list[str], problems: Sequence[Problem], samples: int) -> list:
    """The final file's order: generator (config order), problem (selection order), sample; then records outside
    the current selection (kept, never deleted), by id."""
    wanted = [f"{n}/{p.id}/{k}" for n in names for p in problems for k in range(samples)]
    rank = {i: j for j, i in enumerate(wanted)}
    return sorted(records.values(), key=lambda r: (rank.get(r.id, len(rank)), r.id))
