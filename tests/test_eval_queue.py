"""Evaluation as one queue: the pipeline against a served OpenAI-compatible fake writes the same bytes whatever the
order replies come back in, and the same bytes as the sequential design did (its records, recorded once in
`fixtures/eval_queue/` from the code before the queue, for the same deterministic server; its validity table's
strength column since set to the reference card's labels, which changed after it was recorded).

Also: a cached rerun sends nothing; the openai backend keeps one bounded pool per endpoint across callers; an
attempt cannot outlive its deadline against a server that stalls or trickles bytes.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from latency_server import LatencyServer
from test_eval_pipeline import crafted_run

from legibility.config import ExperimentConfig
from legibility.evaluate.pipeline import eval_stage
from legibility.models.base import Sampling
from legibility.models.openai_api import OpenAIChatModel
from legibility.records import Message

FIXTURE = Path(__file__).parent / "fixtures" / "eval_queue"
FILES = ("readings.jsonl", "judgements.jsonl", "taxonomy.jsonl")


def queue_config(run_dir: Path, base_url: str, concurrency: int) -> ExperimentConfig:
    def spec(name: str, **kw: Any) -> dict[str, Any]:
        return {"name": name, "backend": "openai", "model": f"fake-{name}", "base_url": base_url,
                "concurrency": concurrency, "timeout_s": 30, "supports_continue": True, **kw}  # fmt: skip

    sampling = {"max_new_tokens": 16, "temperature": 0.0, "top_p": 1.0}
    return ExperimentConfig.model_validate({
        "name": "queue", "run_dir": str(run_dir),
        "readers": {"readers": [spec("r1"), spec("r2"), spec("leak", role="leak_detector")],
                    "answer_sampling": sampling, "solve_sampling": sampling},
        "judges": {"judges": [spec("j1"), spec("j2")], "scoring": "generate", "chunk_chars": 100, "threshold": 6},
        "metrics": {"fractions": [0.0, 0.5, 1.0], "n_boot": 100},
    })  # fmt: skip


def outputs(run_dir: Path) -> dict[str, bytes]:
    """Every record file and table the stage writes (summary.json holds timings, so it is left out)."""
    out = run_dir / "eval"
    files = {name: (out / name).read_bytes() for name in FILES}
    files |= {f"tables/{p.name}": p.read_bytes() for p in sorted((out / "tables").glob("*.csv"))}
    return files


def evaluate(tmp: Path, server: LatencyServer, concurrency: int) -> tuple[dict[str, bytes], dict[str, Any]]:
    run_dir = crafted_run(tmp)
    summary = eval_stage(queue_config(run_dir, server.base_url, concurrency), progress=False)
    return outputs(run_dir), summary


@pytest.fixture(scope="module")
def server():
    with LatencyServer(0.01, cv=1.0, seed=3) as s:
        yield s


def test_out_of_order_replies_write_the_same_bytes_as_the_sequential_design(server, tmp_path: Path) -> None:
    """Concurrency 1 (one request at a time, in submission order) and 16 (random latency, replies out of order)
    write identical files, identical to those the sequential design wrote (the fixture)."""
    one, _ = evaluate(tmp_path / "c1", server, 1)
    many, summary = evaluate(tmp_path / "c16", server, 16)
    assert summary["counts"]["requests"] > 100 and summary["counts"]["readings"] > 50
    assert one.keys() == many.keys() and len(one) > 5
    assert [k for k in one if one[k] != many[k]] == []
    expected = {p.relative_to(FIXTURE).as_posix(): p.read_bytes() for p in sorted(FIXTURE.rglob("*")) if p.is_file()}
    assert expected.keys() == many.keys()
    assert [k for k in many if many[k] != expected[k]] == []


def test_a_cached_rerun_sends_nothing_and_writes_the_same_bytes(server, tmp_path: Path) -> None:
    first, _ = evaluate(tmp_path / "run", server, 8)
    before = server.served
    summary = eval_stage(queue_config(tmp_path / "run", server.base_url, 8), progress=False)
    assert summary["counts"]["requests"] == 0 and server.served == before
    assert outputs(tmp_path / "run") == first


def test_one_pool_per_endpoint_keeps_concurrency_in_flight_across_callers() -> None:
    """Four callers of one model, 40 requests each, at concurrency 8: the server sees 8 at once, never more, and
    the callers overlap (160 requests one after another would take 8 s; the bound is loose for a busy machine)."""
    with LatencyServer(0.05) as s, OpenAIChatModel(s.base_url, "m", api_key_env=None, concurrency=8) as model:
        chats = [[[Message(role="user", content=f"{c}-{i}")] for i in range(40)] for c in range(4)]
        t = time.perf_counter()
        with ThreadPoolExecutor(4) as ex:
            got = list(ex.map(lambda cs: model.generate(cs, Sampling(max_new_tokens=8)), chats))
        wall = time.perf_counter() - t
    assert all(c.ok for cs in got for c in cs) and s.served == 160
    assert s.in_flight_peak == 8
    assert wall < 160 * 0.05 / 2


class Staller:
    """Accepts connections on 127.0.0.1 and answers `mode`: "silent" (reads the request, never replies) or
    "trickle" (headers at once, then one body byte every 0.2 s for ever)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            if self.mode == "trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            while not self.stop.is_set():
                time.sleep(0.2)
                if self.mode == "trickle":
                    conn.sendall(b" ")
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize("mode", ["silent", "trickle"])
def test_an_attempt_cannot_outlive_timeout_s(mode: str) -> None:
    """A server that never answers, and one that sends a byte every 0.2 s (each read on time, the reply never
    whole): the request fails as a timeout within timeout_s (1 s), never hangs."""
    staller = Staller(mode)
    try:
        with OpenAIChatModel(staller.url, "m", api_key_env=None, max_retries=0, timeout_s=1.0) as model:
            t = time.perf_counter()
            (c,) = model.generate([[Message(role="user", content="hi")]], Sampling())
            took = time.perf_counter() - t
    finally:
        staller.close()
    assert not c.ok and "timeout" in (c.error or "")
    assert took < 1.6
