"""`legibility eval`: readers and judges over the generated CoTs and the held-out validity copies, then the tables.

Steps, each timed: readers (C1/C4 per problem; C2, prefill C2, leak detection, early answering, uplift and
surprisal per CoT) and judges (rubric, chunked illegibility) -> legible-prefix ablation -> tables -> files.

One queue per endpoint: every reader x condition and judge x kind is a job. Jobs of a queued backend (openai) run
at once, each on its own thread that only submits requests to the model's bounded pool and scores the replies as
they arrive, so the pool stays full across readers, conditions and judges; jobs of a local backend (hf, vllm) run
one after another on this thread and batch as before. Each CoT is masked once (`readers.MaskMemo`) for every
reader and condition. Records are gathered in the jobs' fixed order and written sorted, so they are byte-identical
whatever order the replies came in.
Resuming: every model call goes through the run's disk cache (`{run_dir}/cache`), and records are written once,
atomically, at the end. A killed evaluation reruns from the cache to the same records; a finished one reruns with 0
requests and 0 forward passes (`summary.json` counts them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from legibility.config import ExperimentConfig
from legibility.errors import LegibilityError
from legibility.evaluate import judges as J
from legibility.evaluate import readers as R
from legibility.evaluate import summarize as S
from legibility.evaluate.curves import legible_prefix
from legibility.evaluate.items import EvalItem, from_generations, from_pairs
from legibility.models.base import Sampling
from legibility.models.build import ModelPool
from legibility.models.queue import is_queued
from legibility.pairs import read_pairs
from legibility.provenance import provenance
from legibility.records import Generation, Judgement, Problem, Reading, read_jsonl, write_json, write_jsonl

NOTE = (
    "Numbers from a small model (the embedded SmolLM2-135M as generator, reader and judge) mean little: it rarely "
    "solves the problems and barely follows answer formats, so accuracies sit near floor, the taxonomy is mostly "
    "filtered, and judges often fail to parse. The continuous measures (uplift, surprisal, label-probability "
    "judge scores) are still real numbers and the validity table shows which of them separate intact from "
    "corrupted CoTs even for this model. Rerun with Qwen3-8B and stronger readers for findings."
)


def sampling(cfg: Any) -> Sampling:
    """A config's `SamplingConfig` as the backends' `Sampling`, every field carried (top-k and min-p included)."""
    return Sampling(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                    top_k=cfg.top_k, min_p=cfg.min_p, seed=cfg.seed)  # fmt: skip


class _Progress:
    """One rich progress bar per step, all in one live display so steps that run at once each move their own bar
    (quiet when `enabled` is False)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None

    @contextmanager
    def live(self) -> Iterator[None]:
        """The display for the steps opened inside; outside it each step shows on its own."""
        if not self.enabled or self._bar is not None:
            yield
            return
        self._bar = self._new()
        try:
            with self._bar:
                yield
        finally:
            self._bar = None

    @staticmethod
    def _new() -> Any:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        return Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        transient=False)  # fmt: skip

    @contextmanager
    def step(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        if not self.enabled or total == 0:
            yield lambda n: None
            return
        if self._bar is not None:
            task = self._bar.add_task(label, total=total)
            yield lambda n: self._bar.advance(task, n)
            return
        with self._new() as bar:
            task = bar.add_task(label, total=total)
            yield lambda n: bar.advance(task, n)


Job = tuple[Any, Callable[[], list[Any]]]
"""(model, work): one reader x condition or judge x kind."""


def run_jobs(jobs: Sequence[Job]) -> list[list[Any]]:
    """Every job's records, in job order. Jobs of queued models run at once on threads (they wait on the model's
    pool, which bounds what is in flight); the others run here one after another, in order, as local backends
    need. The first error raises after the running jobs end."""
    results: list[list[Any] | None] = [None] * len(jobs)
    queued = [i for i, (model, _) in enumerate(jobs) if is_queued(model)]
    with ThreadPoolExecutor(max_workers=max(1, len(queued)), thread_name_prefix="eval-job") as ex:
        futures = {i: ex.submit(jobs[i][1]) for i in queued}
        try:
            for i, (_, work) in enumerate(jobs):
                if i not in futures:
                    results[i] = work()
        finally:
            for i, f in futures.items():
                results[i] = f.result()
    return [r if r is not None else [] for r in results]


def load_inputs(cfg: ExperimentConfig) -> tuple[dict[str, Problem], list[Generation], list[EvalItem], list[EvalItem]]:
    run = Path(cfg.run_dir)
    problems_path, gens_path = run / "problems.jsonl", run / "eval" / "generations.jsonl"
    if not problems_path.is_file():
        raise LegibilityError(f"{problems_path}: no such file (make it with `legibility pairs build` or `run`)")
    if not gens_path.is_file():
        raise LegibilityError(f"{gens_path}: no such file (make it with `legibility generate CONFIG`)")
    problems = {p.id: p for p in read_jsonl(problems_path, Problem)}
    gens = read_jsonl(gens_path, Generation)
    items = from_generations(gens, problems)
    val: list[EvalItem] = []
    if cfg.metrics.validity:
        val_path = run / "pairs" / "val.jsonl"
        if not val_path.is_file():
            raise LegibilityError(f"{val_path}: no such file (metrics.validity needs held-out pairs: pairs build)")
        val = from_pairs(read_pairs(val_path), problems, cfg.metrics.validity_traces)
    return problems, gens, items, val


def reader_jobs(cfg: ExperimentConfig, pool: ModelPool, items: list[EvalItem], val: list[EvalItem], bar: _Progress,
                masks: R.MaskMemo | None = None) -> list[Job]:  # fmt: skip
    """One job per reader x condition (leak detection, C1, C4, C2, C2 prefill, early answering), in config order."""
    rc, m = cfg.readers, cfg.metrics
    answer, solve = sampling(rc.answer_sampling), sampling(rc.solve_sampling)
    problems = list({it.problem.id: it.problem for it in items}.values())
    every = items + val
    masks = masks or R.MaskMemo(rc.masking)
    jobs: list[Job] = []

    def job(model: Any, label: str, total: int, run: Callable[..., list[Reading]], *args: Any, **kw: Any) -> None:
        def work() -> list[Reading]:
            with bar.step(label, total) as adv:
                return run(model, *args, progress=adv, **kw)

        jobs.append((model, work))

    for spec in rc.readers:
        model = pool.get(spec)
        name = spec.name
        if spec.role == "leak_detector":
            job(model, f"{name}: leak detection", len(items), R.run_leak, name, items, rc.masking, answer, masks=masks)
            continue
        scores = (m.uplift or m.surprisal) and model.supports_scoring
        if "c1" in rc.conditions:
            job(model, f"{name}: C1 (solves alone)", len(problems), R.run_c1, name, problems, solve)
        if "c4" in rc.conditions:
            job(model, f"{name}: C4 (no CoT)", len(problems), R.run_c4, name, problems, answer)
        if "c2" in rc.conditions:
            job(model, f"{name}: C2 (hand-off)", len(every), R.run_c2, name, every, rc.masking, answer, prefill=False,
                scores=scores, masks=masks)  # fmt: skip
        if "c2_prefill" in rc.conditions and getattr(model, "supports_continue", True):
            job(model, f"{name}: C2 (prefill)", len(items), R.run_c2, name, items, rc.masking, answer, prefill=True,
                scores=False, masks=masks)  # fmt: skip
        if m.early_answering:
            job(model, f"{name}: early answering", len(every) * len(m.fractions), R.run_cut, name, every, rc.masking,
                m.fractions, answer, scores=m.uplift and scores, masks=masks)  # fmt: skip
    return jobs


def judge_jobs(cfg: ExperimentConfig, pool: ModelPool, items: list[EvalItem], val: list[EvalItem],
               bar: _Progress) -> list[Job]:  # fmt: skip
    """One job per judge x kind (rubric on correct CoTs, chunked illegibility), in config order; a method the
    backend cannot run fails here, before any request."""
    jc = cfg.judges
    every = items + val
    jobs: list[Job] = []
    for spec in jc.judges:
        model = pool.get(spec)
        J.judge_unavailable(model, spec.name, jc.scoring)
        if jc.rubric:
            correct = [it for it in every if it.correct]

            def rubric(model: Any = model, name: str = spec.name, correct: list[EvalItem] = correct) -> list[Judgement]:
                with bar.step(f"{name}: rubric (correct CoTs)", len(correct)) as adv:
                    return J.judge_rubric(model, name, correct, jc.scoring, sampling(jc.sampling), progress=adv,
                                          min_label_mass=jc.min_label_mass)  # fmt: skip

            jobs.append((model, rubric))
        if jc.illegibility:

            def illegibility(model: Any = model, name: str = spec.name) -> list[Judgement]:
                with bar.step(f"{name}: illegibility", len(every)) as adv:
                    return J.judge_illegibility(
                        model, name, every, jc.scoring, sampling(jc.sampling), chunk_chars=jc.chunk_chars,
                        threshold=jc.threshold, progress=adv, min_label_mass=jc.min_label_mass,
                    )  # fmt: skip

            jobs.append((model, illegibility))
    return jobs


def run_readers(cfg: ExperimentConfig, pool: ModelPool, items: list[EvalItem], val: list[EvalItem],
                bar: _Progress) -> list[Reading]:  # fmt: skip
    """Every reader's readings, in config order (readers and conditions of a queued backend run at once)."""
    with bar.live():
        return [r for rs in run_jobs(reader_jobs(cfg, pool, items, val, bar)) for r in rs]


def run_judges(cfg: ExperimentConfig, pool: ModelPool, items: list[EvalItem], val: list[EvalItem],
               bar: _Progress) -> list[Judgement]:  # fmt: skip
    """Every judge's judgements, in config order."""
    with bar.live():
        return [j for js in run_jobs(judge_jobs(cfg, pool, items, val, bar)) for j in js]


def run_prefix(
    cfg: ExperimentConfig, pool: ModelPool, items: list[EvalItem], judgements: list[Judgement], bar: _Progress,
    masks: R.MaskMemo | None = None,
) -> tuple[list[Reading], dict[str, dict[str, Any]]]:  # fmt: skip
    """Cut each generated CoT at the first chunk the first judge scores illegible and force an answer from the
    first reasoning reader; CoTs with no such chunk keep their C2 answer (nothing is cut)."""
    readers = [s for s in cfg.readers.readers if s.role == "reasoning_reader"]
    if not (cfg.metrics.legible_prefix and cfg.judges.illegibility and readers and cfg.judges.judges):
        return [], {}
    judge, reader = cfg.judges.judges[0].name, readers[0]
    by_item = {j.item_id: j for j in judgements if j.judge == judge and j.kind == "illegibility" and j.error is None}
    meta: dict[str, dict[str, Any]] = {}
    cut_items = []
    for it in items:
        j = by_item.get(it.id)
        if j is None or any(s is None for s in j.chunk_scores):
            continue
        cut = legible_prefix(it.cot, [float(s) for s in j.chunk_scores], cfg.judges.threshold, cfg.judges.chunk_chars)
        meta[it.id] = {"judge": judge, "reader": reader.name, "cut": cut.first_illegible is not None}
        if cut.first_illegible is not None:
            cut_items.append(replace(it, cot=cut.text))
    if not cut_items:
        return [], meta
    model = pool.get(reader)
    with bar.step(f"{reader.name}: legible prefix", len(cut_items)) as adv:
        got = R.run_c2(model, reader.name, cut_items, cfg.readers.masking, sampling(cfg.readers.answer_sampling),
                       prefill=False, scores=False, progress=adv, masks=masks)  # fmt: skip
    return [r.model_copy(update={"condition": "prefix", "id": r.id.replace("/c2/", "/prefix/", 1)}) for r in got], meta


def eval_stage(cfg: ExperimentConfig, pool: ModelPool | None = None, progress: bool = True) -> dict[str, Any]:
    """Run every reader and judge, write records, tables and `eval/summary.json`; returns the summary."""
    from legibility.evaluate.accuracy import accuracy_table

    run = Path(cfg.run_dir)
    out = run / "eval"
    bar = _Progress(progress)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    _, gens, items, val = load_inputs(cfg)
    own_pool = pool is None
    pool = pool or ModelPool(run / "cache", cfg.model, cfg.run_dir)
    try:
        t = time.perf_counter()
        masks = R.MaskMemo(cfg.readers.masking)
        with bar.live():  # readers and judges in one queue per endpoint
            n_readers = len(jobs := reader_jobs(cfg, pool, items, val, bar, masks))
            jobs += judge_jobs(cfg, pool, items, val, bar)
            done = run_jobs(jobs)
        readings = [r for rs in done[:n_readers] for r in rs]
        judgements = [j for js in done[n_readers:] for j in js]
        timings["readers_and_judges"] = time.perf_counter() - t
        t = time.perf_counter()
        prefix, prefix_meta = run_prefix(cfg, pool, items, judgements, bar, masks)
        readings += prefix
        timings["legible_prefix"] = time.perf_counter() - t
        for model in {id(m): m for m, _ in jobs}.values():  # every reply on disk before the records are
            flush = getattr(model, "flush", None)
            if callable(flush):
                flush()
        counts = pool.counts()
    finally:
        if own_pool:
            pool.close()

    t = time.perf_counter()
    m = cfg.metrics
    outcomes = S.item_outcomes(items, readings)
    taxonomy, labels = S.taxonomy_tables(outcomes)
    curves, aoc = S.curve_tables(readings, m.fractions, m.n_boot, m.seed)
    gen_names = [g.name for g in cfg.generate.generators]
    tables = {
        "accuracy": accuracy_table(gens, m.n_boot, m.seed),
        "paired": _paired(gens, gen_names, m.n_boot, m.seed),
        "readers": S.readers_table(readings, items, m.n_boot, m.seed),
        "uplift": S.uplift_table(outcomes, readings),
        "taxonomy": taxonomy,
        "curves": curves,
        "aoc": aoc,
        "prefix": S.prefix_table(readings, prefix_meta),
        "validity": S.validity_frame(S.validity_values(readings, judgements, m.fractions), m.n_boot, m.seed),
        "agreement": S.agreement_table(readings, judgements, cfg.judges.threshold),
        "judges": S.judges_table(judgements),
    }
    timings["tables"] = time.perf_counter() - t

    readings.sort(key=lambda r: r.id)
    judgements.sort(key=lambda j: j.id)
    write_jsonl(out / "readings.jsonl", readings)
    write_jsonl(out / "judgements.jsonl", judgements)
    write_jsonl(out / "taxonomy.jsonl", labels)
    for name, df in tables.items():
        if df is not None:
            (out / "tables").mkdir(parents=True, exist_ok=True)
            df.to_csv(out / "tables" / f"{name}.csv", index=False)
    timings["total"] = time.perf_counter() - t0
    summary = {
        "note": NOTE if _all_small(cfg) else None,
        "counts": {
            "generations": len(gens), "generation_failures": sum(g.error is not None for g in gens),
            "items": len(items), "validity_items": len(val), "readings": len(readings),
            "reading_failures": sum(r.error is not None for r in readings), "judgements": len(judgements),
            "judgement_failures": sum(j.error is not None for j in judgements), **counts,
        },
        "judge_method": cfg.judges.scoring,
        "prompt_versions": {"readers": R.PROMPT_VERSION, "rubric": J.RUBRIC_VERSION,
                            "illegibility": J.ILLEGIBILITY_VERSION},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "provenance": provenance(cfg, [run / "problems.jsonl", run / "eval" / "generations.jsonl",
                                       run / "pairs" / "val.jsonl"], cfg.metrics.seed),
    }  # fmt: skip
    write_json(out / "summary.json", summary)
    return summary


def _paired(gens: list[Generation], names: list[str], n_boot: int, seed: int) -> Any:
    """The second generator (the adapter, by default) against the first (the base): diff = second - first."""
    from legibility.evaluate.accuracy import paired_table

    if len(names) < 2 or not gens:
        return None
    df = paired_table(gens, names[1], names[0], n_boot, seed)
    df.insert(0, "b", names[0])
    df.insert(0, "a", names[1])
    return df


def _all_small(cfg: ExperimentConfig) -> bool:
    from legibility.models import embedded

    specs = [*cfg.generate.generators, *cfg.readers.readers, *cfg.judges.judges]
    return all(embedded.is_alias(s.model.replace("{model}", cfg.model)) for s in specs)
