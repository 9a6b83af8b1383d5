"""The `openai` backend against a tiny fake OpenAI-compatible server on loopback, behind a fault-injecting proxy.

The fake's reply is derived from the request (last message, seed, temperature, max_tokens, stop), so a test knows
each request's right answer and can tell a lost, duplicated or misplaced answer from a correct one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from faultproxy import FaultProxy

from legibility.errors import LegibilityError
from legibility.models.base import ChatModel, Sampling
from legibility.models.cache import DiskCache
from legibility.models.openai_api import OpenAIChatModel, _retry_after
from legibility.records import Message
from legibility.responses import split_think

KEY_ENV = "LEGIBILITY_TEST_OPENAI_KEY"
FAKE_KEY = "sk-fake-LEAKCHECK-7f3a9c1e5b"


def _answer(body: dict) -> str:
    last = body["messages"][-1]["content"]
    stop = ",".join(body.get("stop") or [])
    return f"A[{last}] seed={body['seed']} t={body['temperature']:g} max={body['max_tokens']} stop={stop}"


class FakeOpenAI:
    """`POST /v1/chat/completions` on 127.0.0.1 with deterministic replies; counts what it answered.

    Special user messages: "THINK ..." (reply split as vLLM does, `reasoning_content`), "REASON ..." (`reasoning`),
    "BAD ..." (400), "ECHO-AUTH" (400 whose body echoes the Authorization header, as a careless server might)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()  # canonical request body -> times answered
        self.auth: Counter[str] = Counter()  # "ok" / "missing" / "wrong" (never the header itself)
        self.bodies: list[dict] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                auth = self.headers.get("Authorization")
                with fake._lock:
                    fake.counts[json.dumps(body, sort_keys=True)] += 1
                    fake.bodies.append(body)
                    fake.auth["missing" if auth is None else "ok" if auth == f"Bearer {FAKE_KEY}" else "wrong"] += 1
                status, payload = fake.reply(body, auth)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def reply(self, body: dict, auth: str | None) -> tuple[int, dict]:
        last = body["messages"][-1]["content"]
        if last.startswith("BAD"):
            return 400, {"error": {"message": "bad request"}}
        if last == "ECHO-AUTH":
            return 400, {"error": {"message": f"invalid key in header: {auth}"}}
        message: dict = {"role": "assistant", "content": _answer(body)}
        if body.get("continue_final_message"):
            message["content"] = " and more"
        if last.startswith("THINK"):
            message = {"role": "assistant", "content": "42", "reasoning_content": "step by step"}
        elif last.startswith("REASON"):
            message = {"role": "assistant", "content": "7", "reasoning": "count"}
        elif body.get("continue_final_message") and "<think>" in last:
            message = {"role": "assistant", "content": "done", "reasoning_content": " more thought"}
        finish = "length" if body["max_tokens"] < 8 else "stop"
        usage = {"prompt_tokens": sum(len(m["content"].split()) for m in body["messages"]), "completion_tokens": 5}
        return 200, {
            "id": "x",
            "object": "chat.completion",
            "model": body["model"],
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    return KEY_ENV


@pytest.fixture
def upstream():
    fake = FakeOpenAI()
    yield fake
    fake.close()


def _model(url: str, key_env: str | None, **kw) -> OpenAIChatModel:
    kw = {"concurrency": 8, "max_retries": 6, "timeout_s": 2.0, "backoff_base_s": 0.01, "backoff_max_s": 0.05} | kw
    return OpenAIChatModel(f"{url}/v1", "fake-model", api_key_env=key_env, **kw)


def _chat(text: str) -> list[Message]:
    return [Message(role="system", content="be brief"), Message(role="user", content=text)]


def _body(text: str, s: Sampling) -> dict:
    """What the backend should send for `_chat(text)`: the fake's answer is computed from it."""
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]
    body = {"messages": messages, "seed": s.seed, "temperature": s.temperature, "max_tokens": s.max_new_tokens}
    return body | ({"stop": list(s.stop)} if s.stop else {})


def test_faults_every_request_answered_once_in_order_then_cached(tmp_path: Path, key_env: str, upstream) -> None:
    """30% faults of every kind: each request ends as its own answer or a failure record, in input order; the
    upstream answers each distinct request at most once; a rerun resends only the failures; a third run sends 0."""
    s = Sampling(max_new_tokens=32, seed=3)
    texts = [f"q{i}" for i in range(48)] + ["q5", "q17", "q5", "q40"]  # duplicates are answered, not resent
    chats = [_chat(t) for t in texts]
    with FaultProxy(upstream.url, rate=0.3, seed=11, burst=2, stall_s=2.5, retry_after=0.02) as proxy:
        model = _model(proxy.url, key_env, max_retries=2, timeout_s=2.0, cache_dir=tmp_path / "cache")
        first = model.generate(chats, s)
        assert len(first) == len(chats)
        assert sum(proxy.faults.values()) > 0 and set(proxy.faults) == {"drop", "reset", "stall", "429", "500"}
        failed = set()
        for text, c in zip(texts, first, strict=True):
            if c.ok:
                assert c.text == _answer(_body(text, s)) and c.finish_reason == "stop"
            else:  # a failure is a record, never an (empty, wrong) answer
                assert c.error and c.finish_reason is None and c.text == "" and c.meta["attempts"] == 3
                failed.add(text)
        distinct = {t: c for t, c in zip(texts, first, strict=True)}
        assert proxy.requests == sum(c.meta["attempts"] for c in distinct.values())  # no hidden extra sends
        assert upstream.total == len(distinct) - len(failed) and set(upstream.counts.values()) == {1}
        assert all(first[texts.index(t)] == c for t, c in zip(texts, first, strict=True))  # duplicates share

        proxy.rate = 0.0  # the outage is over: only the failures are sent again
        before = proxy.requests
        second = model.generate(chats, s)
        assert proxy.requests - before == len(failed) and upstream.total == len(distinct)
        assert [c.text for c in second] == [_answer(_body(t, s)) for t in texts]
        assert all(c.meta["cached"] == (t not in failed) for t, c in zip(texts, second, strict=True))

        proxy.rate = 0.3
        before = proxy.requests
        third = model.generate(chats, s)
        assert proxy.requests == before and upstream.total == len(distinct)  # 0 requests sent
        assert [c.text for c in third] == [c.text for c in second] and all(c.meta["cached"] for c in third)
        model.close()


def test_total_outage_gives_failure_records_that_are_not_cached(tmp_path: Path, key_env: str, upstream) -> None:
    chats = [_chat(f"q{i}") for i in range(6)]
    s = Sampling(max_new_tokens=32)
    with FaultProxy(upstream.url, rate=1.0, seed=1, weights={"500": 1, "drop": 1, "reset": 1}) as proxy:
        model = _model(proxy.url, key_env, max_retries=2, cache_dir=tmp_path / "cache")
        out = model.generate(chats, s)
        assert [c.ok for c in out] == [False] * 6
        assert all(c.finish_reason is None and c.text == "" and c.meta["attempts"] == 3 for c in out)
        assert proxy.requests == 18 and upstream.total == 0 and len(DiskCache(tmp_path / "cache")) == 0
        proxy.rate = 0.0
        again = model.generate(chats, s)
        assert all(c.ok and not c.meta["cached"] for c in again) and upstream.total == 6


def test_retry_after_is_honoured_and_bounded(key_env: str, upstream) -> None:
    delays: list[float] = []
    s = Sampling(max_new_tokens=32)
    for retry_after, cap, expected in ((0.2, 5.0, 0.2), (3600, 0.05, 0.05)):
        with FaultProxy(upstream.url, rate=1.0, weights={"429": 1}, retry_after=retry_after, max_faults=1) as proxy:
            model = _model(proxy.url, key_env, max_retry_after_s=cap)
            model._sleep = lambda d: (delays.append(d), time.sleep(d))
            t0 = time.monotonic()
            [c] = model.generate([_chat("hi")], s)
            assert c.ok and c.meta["attempts"] == 2 and proxy.faults == {"429": 1}
            assert delays[-1] == pytest.approx(expected) and time.monotonic() - t0 >= expected
            assert time.monotonic() - t0 < 2.0  # Retry-After: 3600 was capped, not obeyed


def test_backoff_is_full_jitter_below_the_exponential_bound(key_env: str, upstream) -> None:
    with FaultProxy(upstream.url, rate=1.0, weights={"500": 1}) as proxy:
        model = _model(proxy.url, key_env, max_retries=5, backoff_base_s=0.01, backoff_max_s=0.08)
        delays: list[float] = []
        model._sleep = delays.append
        [c] = model.generate([_chat("hi")], Sampling())
    assert not c.ok and "HTTP 500" in c.error and c.meta["status"] == 500 and c.meta["attempts"] == 6
    assert len(delays) == 5 and all(0 <= d <= min(0.08, 0.01 * 2**k) for k, d in enumerate(delays))


def test_retry_after_header_forms() -> None:
    assert _retry_after(httpx.Headers({"Retry-After": "1.5"})) == 1.5
    assert _retry_after(httpx.Headers({"retry-after-ms": "250", "Retry-After": "9"})) == 0.25
    assert _retry_after(httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0  # a past date
    assert _retry_after(httpx.Headers({"Retry-After": "soon"})) is None
    assert _retry_after(httpx.Headers({})) is None


def test_client_errors_fail_at_once(key_env: str, upstream) -> None:
    model = _model(upstream.url, key_env)
    [bad, good] = model.generate([_chat("BAD input"), _chat("fine")], Sampling())
    assert not bad.ok and bad.meta["attempts"] == 1 and bad.meta["status"] == 400 and bad.finish_reason is None
    assert good.ok and upstream.total == 2


def test_nothing_listening_is_a_failure_record(key_env: str) -> None:
    model = _model("http://127.0.0.1:9", key_env, max_retries=1)  # port 9 (discard): nothing listens here
    [c] = model.generate([_chat("hi")], Sampling())
    assert not c.ok and "connection error" in c.error and c.meta["attempts"] == 2


def test_request_fields_results_and_meta(key_env: str, upstream) -> None:
    s = Sampling(max_new_tokens=5, temperature=0.7, top_p=0.9, top_k=20, min_p=0.05, seed=42, stop=("\n\n", "END"))
    model = _model(upstream.url, key_env, extra_body={"repetition_penalty": 1.05},
                   chat_template_kwargs={"enable_thinking": False})  # fmt: skip
    [c] = model.generate([_chat("hello")], s)
    model.generate([_chat("plain")], Sampling(max_new_tokens=5, temperature=0.7))
    body, plain = upstream.bodies
    assert body == {
        "model": "fake-model",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        "max_tokens": 5,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 20,
        "min_p": 0.05,
        "seed": 42,
        "stop": ["\n\n", "END"],
        "chat_template_kwargs": {"enable_thinking": False},
        "repetition_penalty": 1.05,
    }
    assert "top_k" not in plain and "min_p" not in plain, "off filters are not sent: plain OpenAI endpoints refuse them"
    assert model.meta["enable_thinking"] is False and model.meta["chat_template_kwargs"] == {"enable_thinking": False}
    assert c.text == _answer(body) and c.finish_reason == "length" and c.truncated
    assert (c.prompt_tokens, c.completion_tokens) == (3, 5)
    assert c.meta == {
        "backend": "openai",
        "base_url": f"{upstream.url}/v1",
        "model": "fake-model",
        "attempts": 1,
        "cached": False,
        "system_fingerprint": "fp_fake",
    }
    assert isinstance(model, ChatModel) and model.name == "fake-model" and upstream.auth == {"ok": 2}
    with pytest.raises(LegibilityError, match=r"extra_body sets \['top_k'\]"):
        _model(upstream.url, key_env, extra_body={"top_k": 20})


def test_every_sampling_field_is_in_the_cache_key(tmp_path: Path, key_env: str, upstream) -> None:
    model = _model(upstream.url, key_env, cache_dir=tmp_path)
    base = Sampling(max_new_tokens=32)
    variants = [
        base,
        Sampling(max_new_tokens=33),
        Sampling(max_new_tokens=32, temperature=0.5),
        Sampling(max_new_tokens=32, top_p=0.5),
        Sampling(max_new_tokens=32, top_k=20),
        Sampling(max_new_tokens=32, min_p=0.1),
        Sampling(max_new_tokens=32, seed=1),
        Sampling(max_new_tokens=32, stop=("x",)),
    ]
    for s in variants:
        model.generate([_chat("same")], s)
    assert upstream.total == len(variants)
    other = _model(upstream.url, key_env, cache_dir=tmp_path, extra_body={"repetition_penalty": 1.1})
    other.generate([_chat("same")], base)
    assert upstream.total == len(variants) + 1  # backend options count too
    for s in variants:
        model.generate([_chat("same")], s)
    assert upstream.total == len(variants) + 1


def test_reasoning_fields_are_reassembled_into_think_blocks(key_env: str, upstream) -> None:
    model = _model(upstream.url, key_env)
    a, b = model.generate([_chat("THINK please"), _chat("REASON please")], Sampling())
    assert a.text == "<think>step by step</think>42" and a.meta["reasoning_field"] == "reasoning_content"
    assert b.text == "<think>count</think>7" and b.meta["reasoning_field"] == "reasoning"
    assert split_think(a.text) == ("step by step", "42", True)


def test_continue_is_unsupported_unless_enabled(key_env: str, upstream) -> None:
    chats = [[*_chat("hi"), Message(role="assistant", content="Partial")]]
    [c] = _model(upstream.url, key_env).continue_(chats, Sampling())
    assert not c.ok and "unsupported" in c.error and c.finish_reason is None and upstream.total == 0
    with pytest.raises(LegibilityError, match="assistant"):
        _model(upstream.url, key_env).continue_([_chat("hi")], Sampling())

    model = _model(upstream.url, key_env, supports_continue=True)
    think = [[*_chat("hi"), Message(role="assistant", content="<think>so far")]]
    [c] = model.continue_(chats, Sampling())
    [t] = model.continue_(think, Sampling())
    assert c.text == " and more" and upstream.bodies[0]["messages"][-1] == {"role": "assistant", "content": "Partial"}
    assert upstream.bodies[0]["continue_final_message"] is True and upstream.bodies[0]["add_generation_prompt"] is False
    assert t.text == " more thought</think>done"  # the prefill opened the think block; it is not opened twice


def test_score_is_unsupported(key_env: str, upstream) -> None:
    model = _model(upstream.url, key_env)
    [sc] = model.score([_chat("hi")], ["4"])
    assert model.supports_scoring is False and sc.error and sc.token_logprobs == [] and upstream.total == 0


def test_missing_key_variable_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEGIBILITY_NO_SUCH_KEY", raising=False)
    with pytest.raises(LegibilityError, match="LEGIBILITY_NO_SUCH_KEY"):
        OpenAIChatModel("http://127.0.0.1:9/v1", "m", api_key_env="LEGIBILITY_NO_SUCH_KEY")


def test_api_key_never_reaches_disk_logs_or_errors(
    tmp_path: Path, key_env: str, upstream, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """The key is sent (the server checks it) but appears in no file written, log line, output, repr or record."""
    caplog.set_level(logging.DEBUG)
    with FaultProxy(upstream.url, rate=0.5, seed=2, weights={"500": 1, "429": 1}) as proxy:
        model = _model(proxy.url, key_env, cache_dir=tmp_path / "cache")
        out = model.generate([_chat("a"), _chat("ECHO-AUTH"), _chat("THINK b")], Sampling())
        out += model.generate([_chat("a")], Sampling())  # from the cache
    assert upstream.auth["ok"] >= 3 and set(upstream.auth) == {"ok"}
    assert out[1].error and "[redacted]" in out[1].error  # the server echoed the key; the record does not
    print(repr(model), out, model.__dict__)
    logging.getLogger("legibility").warning("records: %s", out)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written  # the cache wrote entries, and none holds the key
    for p in written:
        assert FAKE_KEY.encode() not in p.read_bytes(), p
    captured = capfd.readouterr()
    assert FAKE_KEY not in caplog.text and FAKE_KEY not in captured.out + captured.err
    assert "records:" in caplog.text and "OpenAIChatModel(" in captured.out  # the checks above saw real text


def test_spec_reaches_the_server_and_hand_off_follows_keeps_think_blocks(tmp_path: Path, upstream) -> None:
    """enable_thinking on an openai spec goes to the server as chat_template_kwargs (it was dropped); the C2
    hand-off of a server-rendered reader is plain text unless the config says its template keeps think blocks."""
    from legibility.config import ReaderSpec
    from legibility.evaluate import readers as R
    from legibility.models.build import ModelPool

    pool = ModelPool(tmp_path, run_dir=tmp_path)
    spec = ReaderSpec(name="r", backend="openai", base_url=f"{upstream.url}/v1", model="fake-model",
                      enable_thinking=False)  # fmt: skip
    plain = pool.get(spec)
    plain.generate([_chat("hi")], Sampling(max_new_tokens=9))
    assert upstream.bodies[-1]["chat_template_kwargs"] == {"enable_thinking": False}
    assert R.handoff_keeps_cot(plain) is False and R.resolve_handoff(plain) == "plain"
    keeps = pool.get(spec.model_copy(update={"keeps_think_blocks": True}))
    assert keeps is not plain and R.resolve_handoff(keeps) == "think"
    assert R.resolve_handoff(plain, "think") == "think"  # an explicit mode still wins
