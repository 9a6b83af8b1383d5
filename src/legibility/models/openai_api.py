"""The `openai` backend: any server that speaks OpenAI's chat-completions API (vLLM, Together, `transformers serve`).

Design, and why:
- HTTP with `httpx` directly, not the `openai` client: we keep the server's raw JSON (vendor fields such as
  `reasoning_content` or vLLM's extras would otherwise hide in typed models' `model_extra`), cache exactly that JSON,
  see every status code and `Retry-After` header, and classify transport errors ourselves, with no second retry
  layer underneath ours.
- One request queue per endpoint (per instance): a persistent pool of `concurrency` worker threads. `submit` puts
  one request on it and returns a `Future`, so every stage of an evaluation (readers x conditions, leak checks,
  judges, generation) shares the same `concurrency` slots and keeps them full until the work runs out; `generate`
  and `continue_` are thin wrappers that submit a list and wait for it. Threads work from any caller (`asyncio.run`
  fails inside a running event loop, e.g. a notebook).
- One HTTP/1.1 connection per worker thread (a thread-local `httpx.Client` with a pool of one): a shared pool of
  N connections scans its connections and waiters under one lock for every request, which at concurrency 128 cost
  more CPU than the requests themselves (106 req/s against an ideal of 427).
- A deadline per attempt: the reply's headers must come within `timeout_s` (httpx's per-operation timeouts) and the
  whole reply by `timeout_s` after the attempt started; a watchdog shuts the socket of a reply still arriving at
  its deadline, so a server that stalls or trickles bytes cannot hold a request past it.
- Retries: on 408/409/429/5xx, timeouts, refused or reset connections and truncated bodies, up to `max_retries`
  times, sleeping `uniform(0, min(backoff_max_s, backoff_base_s * 2**attempt))` ("full jitter", so clients that
  failed together do not retry together), or the server's `Retry-After` (capped at `max_retry_after_s`). Other
  4xx (and 501) are the request's fault and fail at once. A request that still fails comes back as
  `Completion(error=..., finish_reason=None)`: recorded, never graded as a wrong answer, and not cached, so a rerun
  tries it again.
- Identical requests in one call are sent once and their answer shared (a rerun would get the cached one anyway):
  to draw several samples of one prompt, vary `Sampling.seed`.
- The API key: the config holds only the NAME of the environment variable. The key is read from the environment
  for each request's header and is never stored on the object, in cache keys or entries, in records, in logs or in
  error messages (any server text that echoes it is redacted).
- Reasoning: when the server splits a reasoning model's thinking off (`message.reasoning_content`, vLLM/DeepSeek;
  or `message.reasoning`, some gateways), `Completion.text` reassembles the raw form `<think>{reasoning}</think>
  {content}`, verbatim (no whitespace added or stripped; `responses.split_think` strips), so graders see the same
  text as from the `hf` backend. For `continue_` from a prefill with an unclosed `<think>`, the opening tag is
  already in the prompt and is not repeated.
- What the server does that we cannot check is said, not assumed: the chat template is the server's, so template
  variables (`enable_thinking`) go as the request's `chat_template_kwargs` (read by vLLM and SGLang), and
  `keeps_think_blocks` states whether that template keeps an earlier turn's think block (the C2 hand-off reads
  it; Qwen3's and the R1 distills' templates delete it, hence the default False). Top-k and min-p go as the
  `top_k` / `min_p` body fields (vLLM, SGLang, Together) only when set, so plain OpenAI endpoints still work.
"""

from __future__ import annotations

import contextlib
import email.utils
import heapq
import itertools
import logging
import math
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from legibility.errors import LegibilityError
from legibility.models.base import Completion, Sampling, Scores
from legibility.models.cache import DiskCache, key_hash
from legibility.records import Message

__all__ = ["OpenAIChatModel"]

log = logging.getLogger(__name__)

CACHE_VERSION = 1
"""Bump when the request or the stored response changes shape, so stale entries stop matching."""
RETRY_STATUS = frozenset({408, 409, 425, 429})  # plus every 5xx
VLLM_CONTINUE = {"continue_final_message": True, "add_generation_prompt": False}
OWNED_KEYS = ("model", "messages", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop",
              "chat_template_kwargs", *VLLM_CONTINUE)  # fmt: skip
"""Body keys the request writes from its arguments and `Sampling`; `extra_body` may not replace them."""
_ERROR_BODY_CHARS = 300
_NO_CONTINUE = (
    "continue_ unsupported: this server is not known to continue a final assistant message "
    "(construct with supports_continue=True for vLLM)"
)


@dataclass
class _Outcome:
    """One request's end: the server's JSON, or why it failed; and how many attempts that took."""

    data: dict[str, Any] | None
    error: str | None
    attempts: int
    status: int | None = None
    cached: bool = False


class OpenAIChatModel:
    """A `ChatModel` over an OpenAI-compatible `/chat/completions` endpoint.

    `base_url` follows the OpenAI client's convention and includes the version path (`http://127.0.0.1:8000/v1`,
    `https://api.together.xyz/v1`). `api_key_env` names the environment variable holding the key (None: the server
    needs none). `extra_body` is merged into every request (e.g. vLLM's `{"repetition_penalty": 1.05}`); it may not
    set what the other arguments and `Sampling` set (`OWNED_KEYS`). `chat_template_kwargs` (e.g.
    `{"enable_thinking": False}`) is sent with every request for servers that render templates with them.
    `keeps_think_blocks` says the server's template keeps earlier think blocks (see the module docstring).
    `supports_continue` says the server continues a final assistant message when asked the vLLM way; other
    servers get no request and every `continue_` comes back as a failure record saying so. `timeout_s` bounds
    each wait on the server (connecting, and the whole wait for a reply, which is not streamed): set it above the
    longest generation.
    """

    supports_scoring: bool = False

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 8,
        max_retries: int = 6,
        timeout_s: float = 60,
        cache_dir: Path | None = None,
        extra_body: dict[str, Any] | None = None,
        *,
        supports_continue: bool = False,
        chat_template_kwargs: dict[str, Any] | None = None,
        keeps_think_blocks: bool = False,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_retry_after_s: float = 60.0,
        name: str | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise LegibilityError(f"openai backend: base_url must start with http:// or https://, got {base_url!r}")
        if concurrency < 1 or max_retries < 0 or timeout_s <= 0 or backoff_base_s < 0 or max_retry_after_s < 0:
            raise LegibilityError(
                "openai backend: need concurrency >= 1, max_retries >= 0, timeout_s > 0, backoff and retry-after >= 0"
            )
        if api_key_env is not None and not os.environ.get(api_key_env):
            raise LegibilityError(
                f"openai backend: environment variable {api_key_env} (the API key) is not set; "
                "pass api_key_env=None for a server that needs no key"
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = name or model
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout_s = float(timeout_s)
        self.extra_body = dict(extra_body or {})
        clash = sorted(set(self.extra_body) & set(OWNED_KEYS))
        if clash:
            raise LegibilityError(f"openai backend: extra_body sets {clash}, which the request writes itself")
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.keeps_think_blocks = keeps_think_blocks
        self.supports_continue = supports_continue
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_retry_after_s = max_retry_after_s
        self.cache = DiskCache(cache_dir) if cache_dir is not None else None
        # who answers, recorded with every sample (no key, no headers): generation refuses to mix records from two
        self.meta: dict[str, Any] = {"backend": "openai", "model": model, "base_url": self.base_url,
                                     "extra_body": self.extra_body,
                                     "chat_template_kwargs": self.chat_template_kwargs or None,
                                     "enable_thinking": self.chat_template_kwargs.get("enable_thinking")}  # fmt: skip
        self._url = f"{self.base_url}/chat/completions"
        self._local = threading.local()  # each worker thread's own client (one connection)
        self._clients: list[httpx.Client] = []
        self._clients_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._watchdog = _Watchdog()
        self._sleep: Callable[[float], None] = time.sleep  # tests swap it to record the delays
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"OpenAIChatModel(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
            f"concurrency={self.concurrency}, max_retries={self.max_retries}, cache={self.cache!r})"
        )

    def close(self) -> None:
        """Finish what is queued, then close the workers' connections."""
        with self._executor_lock:
            ex, self._executor = self._executor, None
        if ex is not None:
            ex.shutdown(wait=True)
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for c in clients:
            c.close()
        self._watchdog.stop()

    def _client(self) -> httpx.Client:
        """This thread's client: one keep-alive HTTP/1.1 connection, no pool shared with other threads."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(timeout=httpx.Timeout(self.timeout_s),
                                  limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))  # fmt: skip
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _pool(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="openai")
            return self._executor

    def __enter__(self) -> OpenAIChatModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- ChatModel -----

    def generate(self, chats: list[list[Message]], sampling: Sampling) -> list[Completion]:
        """One completion per chat, in input order; failures come back as error records."""
        return self._run("generate", chats, sampling)

    def continue_(self, chats: list[list[Message]], sampling: Sampling) -> list[Completion]:
        """Continue each chat's final assistant message (vLLM's `continue_final_message`); only the new text."""
        for i, chat in enumerate(chats):
            if not chat or _role(chat[-1]) != "assistant":
                raise LegibilityError(f"continue_: chat {i} does not end with an assistant message")
        if not self.supports_continue:
            return [self._failure(_Outcome(None, _NO_CONTINUE, 0)) for _ in chats]
        return self._run("continue", chats, sampling)

    def score(self, chats: list[list[Message]], targets: list[str]) -> list[Scores]:
        """Not available over the chat API here (`supports_scoring` is False): one error record per target."""
        if len(chats) != len(targets):
            raise LegibilityError(f"score: {len(chats)} chats but {len(targets)} targets")
        why = "score unsupported by the openai backend (needs prompt log-probs; use the hf or vllm backend)"
        return [Scores(token_logprobs=[], error=why) for _ in chats]

    # ----- requests -----

    def _body(self, op: str, chat: list[Message], sampling: Sampling) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": _role(m), "content": _content(m)} for m in chat],
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": sampling.seed,
        }
        if sampling.top_k is not None:  # not OpenAI's API: sent only when set (vLLM, SGLang, Together read them)
            body["top_k"] = sampling.top_k
        if sampling.min_p > 0:
            body["min_p"] = sampling.min_p
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        if self.chat_template_kwargs:
            body["chat_template_kwargs"] = dict(self.chat_template_kwargs)
        if op == "continue":
            body.update(VLLM_CONTINUE)
        body.update(self.extra_body)
        return body

    def _cache_key(self, op: str, body: dict[str, Any], sampling: Sampling) -> dict[str, Any]:
        """Everything that shapes the answer (the full body holds model, messages, sampling and extra_body);
        never the API key."""
        return {
            "v": CACHE_VERSION,
            "backend": "openai",
            "op": op,
            "url": self._url,
            "body": body,
            "sampling": {**asdict(sampling), "stop": list(sampling.stop)},
        }

    def submit(self, op: str, chat: list[Message], sampling: Sampling) -> Future[Completion]:
        """Queue one request ("generate" or "continue") on this endpoint's pool; the future's result is its
        `Completion` (a failure record, never an exception, for network and server errors)."""
        if op not in ("generate", "continue"):
            raise LegibilityError(f"openai backend: cannot submit {op!r} (generate or continue)")
        if op == "continue":
            if not chat or _role(chat[-1]) != "assistant":
                raise LegibilityError("continue_: the chat does not end with an assistant message")
            if not self.supports_continue:
                done: Future[Completion] = Future()
                done.set_result(self._failure(_Outcome(None, _NO_CONTINUE, 0)))
                return done
        body = self._body(op, chat, sampling)
        key = self._cache_key(op, body, sampling) if self.cache is not None else None
        open_think = op == "continue" and _unclosed_think(_content(chat[-1]))
        return self._pool().submit(self._request, body, key, open_think)

    def _request(self, body: dict[str, Any], key: dict[str, Any] | None, open_think: bool) -> Completion:
        """One request on a worker thread: the backend's own cache, else the server (stored at once on success)."""
        hit = self.cache.get(key) if self.cache is not None and key is not None else None
        if hit is not None:
            return self._completion(_Outcome(hit, None, 0, 200, cached=True), open_think)
        out = self._send(body)
        if out.data is None:
            return self._failure(out)
        if self.cache is not None and key is not None:
            try:
                self.cache.put(key, out.data)  # a killed run keeps it
            except OSError as e:  # a full disk costs a resend next time, not this run's answers
                log.warning("openai: cannot write the cache (%s)", e)
        return self._completion(out, open_think)

    def _run(self, op: str, chats: list[list[Message]], sampling: Sampling) -> list[Completion]:
        """Submit every distinct request and wait for all; identical requests share one answer."""
        futures: dict[str, Future[Completion]] = {}
        order = []
        for chat in chats:
            h = key_hash(self._cache_key(op, self._body(op, chat, sampling), sampling))
            if h not in futures:
                futures[h] = self.submit(op, chat, sampling)
            order.append(h)
        results = [futures[h].result() for h in order]
        n_failed = sum(not r.ok for r in results)
        if n_failed:
            log.warning("openai %s: %d of %d requests failed after retries", self.base_url, n_failed, len(results))
        return results

    def _send(self, body: dict[str, Any]) -> _Outcome:
        """POST once, retrying transient failures with backoff; never raises for network or server errors."""
        error, status = "", None
        for attempt in range(self.max_retries + 1):
            retry_after: float | None = None
            try:
                resp = self._post(body)
            except _Deadline:
                error, status, retryable = f"timeout: no whole reply {self.timeout_s:g} s after sending", None, True
            except httpx.TimeoutException as e:
                error, status, retryable = f"timeout after {self.timeout_s:g} s ({type(e).__name__})", None, True
            except (httpx.NetworkError, httpx.RemoteProtocolError) as e:
                error, status, retryable = f"connection error ({type(e).__name__}: {e})", None, True
            except httpx.HTTPError as e:  # a bad URL or protocol: retrying cannot help
                return _Outcome(None, self._redact(f"request error ({type(e).__name__}: {e})"), attempt + 1)
            else:
                status = resp.status_code
                if status == 200:
                    try:
                        data = resp.json()
                    except ValueError:
                        error, retryable = "HTTP 200 with a body that is not JSON (truncated?)", True
                    else:
                        if _has_message(data):
                            return _Outcome(data, None, attempt + 1, status)
                        snippet = self._redact(resp.text[:_ERROR_BODY_CHARS])
                        return _Outcome(None, f"HTTP 200 without choices[0].message: {snippet}", attempt + 1, status)
                else:
                    error = f"HTTP {status}: {resp.text[:_ERROR_BODY_CHARS]}"
                    retryable = status in RETRY_STATUS or (status >= 500 and status != 501)  # 501: permanent
                    retry_after = _retry_after(resp.headers)
            if not retryable or attempt == self.max_retries:
                return _Outcome(None, self._redact(error), attempt + 1, status)
            delay = self._delay(attempt, retry_after)
            log.debug("openai: attempt %d failed (%s); retrying in %.3f s", attempt + 1, status or "no response", delay)
            self._sleep(delay)
        raise AssertionError("unreachable")  # the loop always returns

    def _post(self, body: dict[str, Any]) -> httpx.Response:
        """One attempt, bounded by `timeout_s` in all (see the module docstring): headers within the read timeout,
        then the body by the deadline, or `_Deadline`."""
        deadline = time.monotonic() + self.timeout_s
        with self._client().stream("POST", self._url, json=body, headers=self._headers()) as resp:
            stream = resp.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            token = self._watchdog.arm(deadline, sock) if isinstance(sock, socket.socket) else None
            try:
                resp.read()
            except (httpx.NetworkError, httpx.RemoteProtocolError):
                if time.monotonic() >= deadline:
                    raise _Deadline from None
                raise
            finally:
                if token is not None:
                    self._watchdog.disarm(token)
        if time.monotonic() > deadline:
            raise _Deadline
        return resp

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after_s)
        with self._rng_lock:
            return self._rng.uniform(0.0, min(self.backoff_max_s, self.backoff_base_s * 2**attempt))

    def _headers(self) -> dict[str, str]:
        """Read the key from the environment per request, so it lives in no attribute of this object."""
        if self.api_key_env is None:
            return {}
        key = os.environ.get(self.api_key_env, "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        return text.replace(key, "[redacted]") if len(key) >= 4 else text

    # ----- results -----

    def _meta(self, out: _Outcome) -> dict[str, Any]:
        return {
            "backend": "openai",
            "base_url": self.base_url,
            "model": self.model,
            "attempts": out.attempts,
            "cached": out.cached,
        }

    def _failure(self, out: _Outcome) -> Completion:
        meta = self._meta(out)
        if out.status is not None:
            meta["status"] = out.status
        return Completion(text="", finish_reason=None, error=out.error or "failed", meta=meta)

    def _completion(self, out: _Outcome, open_think: bool) -> Completion:
        data = out.data or {}
        choice = data["choices"][0]
        message = choice["message"]
        content = _text(message.get("content"))
        meta = self._meta(out)
        reasoning = None
        for field in ("reasoning_content", "reasoning"):
            if isinstance(message.get(field), str) and message[field]:
                reasoning, meta["reasoning_field"] = message[field], field
                break
        text = content if reasoning is None else f"{'' if open_think else '<think>'}{reasoning}</think>{content}"
        if data.get("system_fingerprint"):
            meta["system_fingerprint"] = data["system_fingerprint"]
        if data.get("model") and data["model"] != self.model:
            meta["served_model"] = data["model"]
        usage = data.get("usage") or {}
        return Completion(
            text=text,
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            meta=meta,
        )


class _Deadline(Exception):
    """An attempt's whole reply did not arrive by its deadline."""


class _Watchdog:
    """Shuts the socket of every reply still arriving at its deadline: a blocked read then returns at once (a
    timeout per read alone lets a server that trickles a byte now and then hold a request forever). One thread per
    model, started on the first arm."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, socket.socket] = {}
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def arm(self, deadline: float, sock: socket.socket) -> int:
        with self._cond:
            token = next(self._ids)
            self._armed[token] = sock
            heapq.heappush(self._heap, (deadline, token))
            if self._thread is None:
                self._stopped = False
                self._thread = threading.Thread(target=self._loop, name="openai-deadline", daemon=True)
                self._thread.start()
            elif self._heap[0][1] == token:
                self._cond.notify()
            return token

    def disarm(self, token: int) -> None:
        with self._cond:
            self._armed.pop(token, None)

    def stop(self) -> None:
        with self._cond:
            self._stopped, thread, self._thread = True, self._thread, None
            self._cond.notify()
        if thread is not None:
            thread.join(timeout=5)

    def _loop(self) -> None:
        with self._cond:
            while not self._stopped:
                while self._heap and self._heap[0][1] not in self._armed:  # disarmed: drop
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, token = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                sock = self._armed.pop(token)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _role(m: Message | dict[str, Any]) -> str:
    return m["role"] if isinstance(m, dict) else m.role


def _content(m: Message | dict[str, Any]) -> str:
    return m["content"] if isinstance(m, dict) else m.content


def _text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _has_message(data: Any) -> bool:
    choices = data.get("choices") if isinstance(data, dict) else None
    return bool(choices) and isinstance(choices[0], dict) and isinstance(choices[0].get("message"), dict)


def _unclosed_think(prefix: str) -> bool:
    return prefix.rfind("<think>") > prefix.rfind("</think>")


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asks us to wait: `retry-after-ms` (OpenAI), `Retry-After` seconds or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            v = float(ms) / 1000
            return v if math.isfinite(v) and v >= 0 else None
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        v = float(raw)
        return v if math.isfinite(v) and v >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
