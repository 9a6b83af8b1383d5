"""A local OpenAI-compatible `/v1/chat/completions` server with a chosen latency, for the queue's tests and for
`benchmarks/bench_eval_api.py`: throughput against an endpoint is concurrency / latency, and this server lets the
client side be measured alone.

- Latency per request: fixed (`cv=0`) or log-normal with mean `latency_s` and coefficient of variation `cv`.
- Replies are a pure function of the request body (`reply_text`), so two runs that send the same requests get the
  same answers whatever order they arrive in: the leak detector, the judges' formats and answers are recognised
  from the prompt, so every reading and judgement path is exercised.
- asyncio on its own thread: one event loop holds thousands of waiting requests for little CPU (a thread per
  connection would compete with the client on a 2-core machine).
- Bounded and local: it listens on 127.0.0.1 only, takes at most `max_connections` connections at once and bodies
  up to 8 MiB; `in_flight_peak` and `served` count what it saw.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import threading
from typing import Any

MAX_BODY = 8 << 20


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16)


def reply_text(body: dict[str, Any]) -> str:
    """The reply to a request, from its content only."""
    msgs = body.get("messages") or []
    last = str(msgs[-1].get("content", "")) if msgs else ""
    allc = "\n".join(str(m.get("content", "")) for m in msgs)
    h = _h(json.dumps(body, sort_keys=True))
    if body.get("continue_final_message"):
        return ["42}", " 7}", " B"][h % 3]
    if "LEAK: YES" in last:
        return "LEAK: YES" if ("leaky" in last or h % 4 == 0) else ("LEAK: NO" if h % 7 else "maybe")
    if "Legibility: N" in last:
        return f"Legibility: {h % 5}\nCoverage: {(h >> 3) % 5}" if h % 9 else "It is fine."
    if "Score: N" in last:
        return f"Score: {8 if 'garbled' in last else 1 + h % 9}"
    if "garbled" in allc:
        return "\\boxed{1000}"
    return ["The answer is \\boxed{42}.", "\\boxed{7}", "Answer: B", "\\boxed{12}", "I am not sure."][h % 5]


class LatencyServer:
    """`with LatencyServer(0.3, cv=1.0) as s: OpenAIChatModel(s.base_url, "m", api_key_env=None, ...)`."""

    def __init__(self, latency_s: float = 0.3, cv: float = 0.0, seed: int = 0, max_connections: int = 1024) -> None:
        if latency_s < 0 or cv < 0 or max_connections < 1:
            raise ValueError("latency_s >= 0, cv >= 0 and max_connections >= 1")
        self.latency_s, self.cv = latency_s, cv
        self._rng = random.Random(seed)
        self.served = 0
        self.in_flight = 0
        self.in_flight_peak = 0
        self.busy_s = 0.0
        """Sum of the latencies served: busy_s / wall is the average number of requests in flight."""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._max = max_connections
        self._thread = threading.Thread(target=self._run, name="latency-server", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def delay(self) -> float:
        if self.cv == 0 or self.latency_s == 0:
            return self.latency_s
        sigma2 = math.log1p(self.cv**2)
        return self._rng.lognormvariate(math.log(self.latency_s) - sigma2 / 2, math.sqrt(sigma2))

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._slots = asyncio.Semaphore(self._max)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", 0, backlog=2048))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self._slots:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    headers = {}
                    for line in head.decode("latin-1").split("\r\n")[1:]:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                    n = int(headers.get("content-length", "0"))
                    if n > MAX_BODY:
                        break
                    body = json.loads(await reader.readexactly(n)) if n else {}
                    self.in_flight += 1
                    self.in_flight_peak = max(self.in_flight_peak, self.in_flight)
                    wait = self.delay()
                    try:
                        await asyncio.sleep(wait)
                    finally:
                        self.in_flight -= 1
                        self.busy_s += wait
                    data = json.dumps(self._payload(body)).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                 + str(len(data)).encode() + b"\r\n\r\n" + data)  # fmt: skip
                    await writer.drain()
                    self.served += 1
                    if headers.get("connection", "").lower() == "close":
                        break
            except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
                pass
            finally:
                writer.close()

    @staticmethod
    def _payload(body: dict[str, Any]) -> dict[str, Any]:
        text = reply_text(body)
        finish = "length" if len(text.split()) > int(body.get("max_tokens", 512)) else "stop"
        return {"id": "x", "object": "chat.completion", "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split())}}  # fmt: skip

    def close(self) -> None:
        async def stop() -> None:
            self._server.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> LatencyServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
