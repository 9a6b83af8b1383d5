"""Evaluation stages through the `openai` backend against a real server: `transformers serve` on the embedded model,
offline on loopback (`serving.serve_embedded`), with `faultproxy.FaultProxy` counting (and, in the fault test,
breaking) every HTTP request between the client and the server.

- generation (`generate_stage`): records carry the model and the finish reasons; a rerun sends 0 requests, both
  when the generations file holds the records and when only the disk cache does;
- readers C1, C2 (hand-off), C4 and leak detection on CoTs from the sample traces: answers or error records, never
  a failure scored as wrong; C2 prefill is refused (or skipped by the pipeline) for a server that cannot continue,
  and a server that rejects the continue request gives error records, not wrong answers;
- faults: connections refused (the server is down), then 30% stalls, drops, resets, 429 and 500 bursts with retries,
  then healed, then down again: one record per request, ids unique, no failure scored, most requests succeed, the
  summary counts the failures, and each rerun sends exactly the requests that failed before.

The embedded model (SmolLM2-135M) rarely answers right or follows formats: the tests check the plumbing, not the
answers. Kept short: few items, short CoTs, a handful of new tokens per request, one torch thread on the server.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from conftest import MARKYX, TRACES
from faultproxy import FAULTS, FaultProxy
from serving import Served, free_port, serve_embedded

from legibility import benchmarks
from legibility.config import (
    ExperimentConfig,
    GenerateConfig,
    MaskingConfig,
    MetricsConfig,
    ModelSpec,
    ReadersConfig,
    ReaderSpec,
    SamplingConfig,
)
from legibility.errors import LegibilityError
from legibility.evaluate import pipeline
from legibility.evaluate import readers as R
from legibility.evaluate.generate import GENERATIONS, SUMMARY, generate_stage, read_generations, summarize
from legibility.evaluate.items import EvalItem
from legibility.models.build import ModelPool
from legibility.models.cached import CachedModel
from legibility.records import Generation, Problem, Reading, write_jsonl

pytestmark = pytest.mark.slow

SAMPLE = TRACES.parent / "math500_sample.jsonl"
MASKING = MaskingConfig()
ANSWER = SamplingConfig(max_new_tokens=8, temperature=0.0, top_p=1.0)  # C2, C4, leak: a short greedy answer
SOLVE = SamplingConfig(max_new_tokens=16, temperature=0.0, top_p=1.0)  # C1
TRANSPORT = ("HTTP 429", "HTTP 500", "timeout after", "connection error")  # how a failed request is recorded


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve_embedded(tmp_path_factory.mktemp("serve")) as served:
        yield served


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return benchmarks.load("math", SAMPLE, levels=None)


@pytest.fixture(scope="module")
def items(problems: list[Problem]) -> list[EvalItem]:
    """The three shortest sample traces on distinct problems, as the readers get them (short prompts: fast)."""
    from legibility.traces import import_traces

    by_id = {p.id: p for p in problems}
    out: list[EvalItem] = []
    for t in sorted(import_traces(MARKYX, problems), key=lambda t: (len(t.reasoning), t.id)):
        if len(out) < 3 and t.problem_id not in {it.problem.id for it in out}:
            out.append(EvalItem(t.id, by_id[t.problem_id], t.reasoning, t.answer_text, t.generator, t.correct,
                                t.correct_strict, trace_id=t.id))  # fmt: skip
    assert len(out) == 3 and all(0 < len(it.cot) < 1000 for it in out)
    return out


def openai_spec(base_url: str, model: str, **kw) -> ModelSpec:
    kw = {"name": "served", "concurrency": 2, "max_retries": 2, "timeout_s": 60} | kw
    return ModelSpec(backend="openai", base_url=base_url, model=model, api_key_env=None, **kw)


def assert_readings(readings: list[Reading], ids: list[str], *, transport_ok: bool) -> None:
    """One reading per request, in order, ids unique; an error is never a verdict (correct None; a failed request
    has no answer either);
    `transport_ok`: no request failed on its way (only an undecided grade or an unparseable verdict may be an
    error)."""
    assert [r.id for r in readings] == ids and len(set(ids)) == len(ids)
    for r in readings:
        if r.error is not None:
            assert r.correct is None and r.correct_strict is None, r
            if r.error.startswith(TRANSPORT):
                assert r.answer is None, r
        else:
            assert isinstance(r.correct, bool), r
        if transport_ok:
            assert r.error is None or not r.error.startswith(TRANSPORT), r.error


def assert_generations(path: Path, ids: list[str]) -> list[Generation]:
    """One record per id (in the stage's order), ids unique; failures are never graded."""
    records = read_generations(path)
    assert [g.id for g in records] == ids and len(set(ids)) == len(ids)
    for g in records:
        if g.error is not None:
            assert g.error.startswith(TRANSPORT) and g.finish_reason is None and g.raw == "", g
            assert g.correct is False and g.correct_strict is None and g.extracted is None and not g.complete
        else:
            assert g.finish_reason in ("stop", "length") and g.truncated == (g.finish_reason == "length")
    return records


# ------------------------------------------------------------------------------------------------ generation


def test_generate_stage_through_the_server(server: Served, problems: list[Problem], tmp_path: Path) -> None:
    run = tmp_path / "run"
    chosen = problems[:2]
    write_jsonl(run / "problems.jsonl", chosen)
    path = run / GENERATIONS
    with FaultProxy(server.url, rate=0.0, lifetime_s=600) as proxy:  # rate 0: counts the requests, breaks none
        spec = openai_spec(f"{proxy.url}/v1", server.model)
        sampling_cfg = SamplingConfig(max_new_tokens=16, temperature=0.7, top_p=0.95, seed=5)
        gen = GenerateConfig(generators=[spec], problems="all", samples=2, sampling=sampling_cfg)
        cfg = ExperimentConfig(name="serve", run_dir=str(run), generate=gen)
        ids = [f"served/{p.id}/{k}" for p in chosen for k in range(2)]
        n = len(ids)

        summary = generate_stage(cfg, progress=False)
        records = assert_generations(path, ids)
        s = summary["generators"]["served"]
        assert proxy.requests == n and s["requests"] == n and s["resumed"] == 0
        assert {k: s[k] for k in summarize(records)} == summarize(records) and s["n"] == n and s["failed"] == 0
        assert json.loads((run / SUMMARY).read_text()) == summary
        for g in records:
            k = g.sample
            assert g.error is None and g.generator == "served" and sum(ch.isalpha() for ch in g.raw) >= 3, g.raw
            assert g.sampling == {"max_new_tokens": 16, "temperature": 0.7, "top_p": 0.95, "top_k": None,
                                  "min_p": 0.0, "seed": 5 + k, "stop": []}  # fmt: skip
            assert 0 < g.meta["completion_tokens"] <= 16 and g.meta["prompt_tokens"] > 0
            assert g.model["name"] == server.model  # the served model names every record
            assert g.model["backend"] == "openai" and g.model["model"] == server.model
            assert g.prompt[-1].content.startswith(next(p.question for p in chosen if p.id == g.problem_id))
            if g.truncated:
                assert not g.complete
            assert g.correct_strict is not None or "undecided" in g.meta  # graded, never silently skipped

        # a rerun: everything done, 0 requests, the same file
        before = path.read_bytes()
        again = generate_stage(cfg, progress=False)
        assert proxy.requests == n and again["generators"]["served"] | {"resumed": 0} == s | {"requests": 0}
        assert again["generators"]["served"]["resumed"] == n and path.read_bytes() == before

        # the generations file gone, the disk cache kept: still 0 requests, the same records
        path.unlink()
        third = generate_stage(cfg, progress=False)
        assert proxy.requests == n and third["generators"]["served"]["requests"] == 0
        assert path.read_bytes() == before


# ------------------------------------------------------------------------------------------------ readers


def test_readers_through_the_server(server: Served, items: list[EvalItem], tmp_path: Path) -> None:
    probs = [it.problem for it in items]
    answer, solve = pipeline.sampling(ANSWER), pipeline.sampling(SOLVE)
    with FaultProxy(server.url, rate=0.0, lifetime_s=600) as proxy:
        spec = openai_spec(f"{proxy.url}/v1", server.model)
        pool = ModelPool(tmp_path / "cache", run_dir=tmp_path)
        model = pool.get(spec)
        assert isinstance(model, CachedModel) and not model.supports_continue and not model.supports_scoring

        c1 = R.run_c1(model, "served", probs, solve)
        c4 = R.run_c4(model, "served", probs, answer)
        c2 = R.run_c2(model, "served", items, MASKING, answer)
        leak = R.run_leak(model, "served-leak", items, MASKING, answer)
        # a queued backend (openai) gets each request as its own call on its pool: calls == requests
        # every request reached the server; a transport retry (seen about once in ten runs on a loaded machine,
        # cause not found) may send one twice, so the server's count is a floor, the pool's exact
        assert proxy.requests >= 12 and pool.counts() == {"calls": 12, "requests": 12, "hits": 0}

        assert_readings(c1, [f"served/c1/{p.id}" for p in probs], transport_ok=True)
        assert_readings(c4, [f"served/c4/{p.id}" for p in probs], transport_ok=True)
        assert_readings(c2, [f"served/c2/{it.id}" for it in items], transport_ok=True)
        assert_readings(leak, [f"served-leak/leak/{it.id}" for it in items], transport_ok=True)
        for r in [*c1, *c4, *c2]:
            # a reply cut off at the token limit with no complete answer is a failure record, never a verdict
            assert r.error is None or r.error.startswith(("undecided grade", "truncated:")), r.error
            assert r.text.strip(), r  # the server's reply is on record
        for r in c2:  # the server renders, unprobed, and keeps_think_blocks is not set: the CoT goes as plain text
            assert r.masking["handoff"] == "plain" and r.masking["prompt_version"] == R.PROMPT_VERSION
            assert r.item_id in {it.id for it in items} and r.uplift is None and r.surprisal is None
        for r in leak:  # a verdict, or an error saying there was none: never a "no" by default
            assert (r.answer, r.correct) in (("yes", True), ("no", False)) or (
                r.error == "no 'LEAK: YES' / 'LEAK: NO' line in the reply" and r.answer is None and r.correct is None
            ), r

        # C2 prefill: this server cannot continue an assistant turn; the runner refuses before sending anything
        with pytest.raises(LegibilityError, match="cannot continue"):
            R.run_c2(model, "served", items, MASKING, answer, prefill=True)
        assert proxy.requests == 12

        # the pipeline skips prefill for such a reader and gets everything else from the cache
        readers = ReadersConfig(
            readers=[ReaderSpec(**spec.model_dump() | {"name": "served"}),
                     ReaderSpec(**spec.model_dump() | {"name": "served-leak"}, role="leak_detector")],
            conditions=["c1", "c2", "c2_prefill", "c4"], masking=MASKING, answer_sampling=ANSWER, solve_sampling=SOLVE,
        )  # fmt: skip
        metrics = MetricsConfig(uplift=False, surprisal=False, early_answering=False, legible_prefix=False,
                                validity=False)  # fmt: skip
        cfg = ExperimentConfig(name="serve", run_dir=str(tmp_path), readers=readers, metrics=metrics)
        got = pipeline.run_readers(cfg, pool, items, [], pipeline._Progress(False))
        assert proxy.requests == 12 and pool.counts()["requests"] == 12
        assert Counter(r.condition for r in got) == {"c1": 3, "c4": 3, "c2": 3, "leak": 3}
        assert sorted(got, key=lambda r: r.id) == sorted([*c1, *c4, *c2, *leak], key=lambda r: r.id)

        # a server that is told it continues, and rejects the request (422): error records, not wrong answers
        cont = pool.get(spec.model_copy(update={"supports_continue": True}))
        for n in (1, 2):  # failures are not cached: the rerun asks again (one attempt each: a 422 is final)
            pre = R.run_c2(cont, "served", items, MASKING, answer, prefill=True)
            assert_readings(pre, [f"served/c2_prefill/{it.id}" for it in items], transport_ok=True)
            for r, it in zip(pre, items, strict=True):
                assert r.error.startswith("HTTP 422") and "continue_final_message" in r.error, r.error
                assert r.answer is None and r.correct is None and r.text == R.prefill_lead(it.problem)
            assert proxy.requests == 12 + 3 * n
        pool.close()


# ------------------------------------------------------------------------------------------------ faults


class Relay:
    """A TCP relay on a fixed loopback port to an upstream port, that can be switched off and on: while off, nothing
    listens on the port and connections are refused (the server is down, as the client sees it). An upstream reset
    is passed on as a reset."""

    def __init__(self, upstream_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.upstream_port = upstream_port
        self._listener: socket.socket | None = None
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the port is free again at once
        listener.settimeout(0.05)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            socks, self._socks = self._socks, set()
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
        except OSError:  # reset (or closed by stop): reset the other side too
            with contextlib.suppress(OSError):
                dst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                dst.close()


def test_faults_refused_then_flaky_then_healed(server: Served, problems: list[Problem], items: list[EvalItem],
                                              tmp_path: Path) -> None:  # fmt: skip
    """The same evaluation four times: the server down (every connection refused), flaky (30% faults of every kind,
    bursts of two, retried), healed, and down again. Each run: one record per request, ids unique, failures recorded
    and never scored, the generate summary counting them; each rerun sends exactly the requests that failed before
    (the disk cache and the generations file hold the rest)."""
    run = tmp_path / "run"
    chosen = problems[:4]
    write_jsonl(run / "problems.jsonl", chosen)
    path = run / GENERATIONS
    answer = pipeline.sampling(ANSWER)
    gen_ids = [f"served/{p.id}/{k}" for p in chosen for k in range(2)]
    c2_ids = [f"served/c2/{it.id}" for it in items]
    n = len(gen_ids) + len(c2_ids)

    with FaultProxy(server.url, rate=0.3, seed=50, burst=2, stall_s=11, retry_after=0.1, lifetime_s=600) as proxy:
        relay = Relay(int(proxy.url.rsplit(":", 1)[1]))
        # timeout: above any real wait here (two requests of a few tokens in flight), below the proxy's stalls
        spec = openai_spec(f"{relay.url}/v1", server.model, max_retries=3, timeout_s=10)
        sampling_cfg = SamplingConfig(max_new_tokens=4, temperature=0.7, top_p=0.95, seed=1)
        gen = GenerateConfig(generators=[spec], problems="all", samples=2, sampling=sampling_cfg)
        cfg = ExperimentConfig(name="faults", run_dir=str(run), generate=gen)

        def evaluate() -> tuple[dict, list[Generation], list[Reading], dict[str, int]]:
            """One run in a fresh pool (as a new process would): generate, then C2 over the trace items."""
            pool = ModelPool(run / "cache", run_dir=run)
            model = pool.get(spec)
            model.inner.backoff_base_s, model.inner.backoff_max_s = 0.05, 0.4  # short sleeps (no ModelSpec field)
            try:
                summary = generate_stage(cfg, pool, progress=False)["generators"]["served"]
                readings = R.run_c2(model, "served", items, MASKING, answer)
                counts = pool.counts()
            finally:
                pool.close()
            records = assert_generations(path, gen_ids)
            assert_readings(readings, c2_ids, transport_ok=False)
            assert {k: summary[k] for k in summarize(records)} == summarize(records)  # the summary counts failures
            assert summary["failed"] == sum(g.error is not None for g in records)
            return summary, records, readings, counts

        def failed(records: list[Generation], readings: list[Reading]) -> set[str]:
            """Requests that failed on their way; a reply that came back but gives no verdict (cut off with no
            complete answer, an undecided grade) is a failure record too, but a cached, final one."""
            return {g.id for g in records if g.error} | {r.id for r in readings if r.error and not verdictless(r)}

        def verdictless(r: Reading) -> bool:
            return (r.error or "").startswith(("truncated:", "undecided grade"))

        try:
            # 1. down: every connection refused, every request a failure record after its retries; nothing cached
            summary, records, readings, counts = evaluate()
            assert proxy.requests == 0 and failed(records, readings) == {*gen_ids, *c2_ids}
            assert all("ConnectError" in x.error for x in [*records, *readings])
            assert summary["failed"] == summary["n"] == len(gen_ids) and summary["correct"] == summary["undecided"] == 0
            assert counts["requests"] == n and counts["hits"] == 0

            # 2. up but flaky: faults of every kind at 30%, in bursts; retries carry most requests through
            relay.start()
            summary, records, readings, counts = evaluate()
            lost = failed(records, readings)
            assert summary["resumed"] == 0 and counts["requests"] == n  # the failures of run 1 were not done
            # seed 50: every kind (each a burst of two) by arrival 15, and one stall burst (~10 s) in all
            assert set(proxy.faults) == set(FAULTS)
            assert len(lost) <= n // 3, (lost, proxy.faults)  # most succeed
            assert proxy.forwarded >= n - len(lost)  # every answer went through the server
            ok = {r.id: r for r in readings if r.id not in lost}  # replies that came back (cached), verdict or not

            # 3. healed: only the failures of run 2 are sent, once each; the successes come from the file and the cache
            proxy.rate = 0.0
            sent = proxy.requests
            summary, records, readings, counts = evaluate()
            assert failed(records, readings) == set()
            gen_lost = len(lost & set(gen_ids))
            assert summary["requests"] == gen_lost and summary["resumed"] == len(gen_ids) - gen_lost
            assert counts["requests"] == len(lost) and counts["hits"] == len(ok)
            assert proxy.requests - sent == len(lost)
            assert all(r == ok[r.id] for r in readings if r.id in ok)  # cached readings are the earlier ones

            # 4. down again: nothing to send, so nothing fails
            relay.stop()
            before = path.read_bytes()
            summary, records, readings, counts = evaluate()
            assert failed(records, readings) == set() and counts["requests"] == 0 and summary["resumed"] == len(gen_ids)
            assert proxy.requests - sent == len(lost) and path.read_bytes() == before
        finally:
            relay.stop()
