"""A fault-injecting HTTP proxy on loopback, to test a client's retries against the failures real servers produce.

`FaultProxy(upstream)` listens on 127.0.0.1 (a random port) and forwards each request to `upstream`, except that a
seeded share `rate` of requests instead get one fault, chosen by weight:
- "drop": the socket is closed without a response (a crashed worker or a load balancer dropping the request);
- "reset": the socket is reset (RST), the client sees "connection reset by peer";
- "stall": nothing is sent for `stall_s` (past the client's timeout), then the socket is closed;
- "429": Too Many Requests, with `Retry-After: retry_after` when that is set;
- "500": Internal Server Error.
A fault repeats for `burst` consecutive requests (outages come in bursts). Every fault is injected before the
request reaches the upstream, so the upstream sees each request it answers once. Bounded: at most `max_faults`
faults, stalls end at once on `close()`, and the proxy closes itself after `lifetime_s` even if a test forgot to.
Counters: `requests` (arrived), `forwarded`, `faults` (by kind), `outcomes` (arrival order).
Only loopback addresses, ever: the proxy binds 127.0.0.1 and refuses an upstream that is not loopback.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import random
import socket
import struct
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("drop", "reset", "stall", "429", "500")
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "host"}


def _loopback(host: str) -> bool:
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
    except (OSError, ValueError):
        return False


class FaultProxy:
    """See the module doc. Use as a context manager (or call `close()`); `url` is `http://127.0.0.1:PORT`."""

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.3,
        seed: int = 0,
        weights: dict[str, float] | None = None,
        burst: int = 1,
        stall_s: float = 1.0,
        retry_after: float | None = None,
        max_faults: int | None = None,
        lifetime_s: float = 120.0,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not _loopback(parts.hostname):
            raise ValueError(f"FaultProxy: upstream must be http:// on a loopback address, got {upstream!r}")
        self.upstream_host, self.upstream_port = parts.hostname, parts.port or 80
        self.rate = rate
        self.weights = dict(weights or dict.fromkeys(FAULTS, 1.0))
        if not set(self.weights) <= set(FAULTS):
            raise ValueError(f"FaultProxy: unknown faults {set(self.weights) - set(FAULTS)}")
        self.burst = max(1, burst)
        self.stall_s = min(stall_s, 30.0)
        self.retry_after = retry_after
        self.max_faults = max_faults
        self.requests = 0
        self.forwarded = 0
        self.faults: Counter[str] = Counter()
        self.outcomes: list[str] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._burst_kind: str | None = None
        self._burst_left = 0
        self._stop = threading.Event()
        self._closed = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(lifetime_s, self.close)
        self._timer.daemon = True
        self._timer.start()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()

    def _decide(self) -> str:
        """The next request's fate: "forward" or a fault kind (seeded, in arrival order)."""
        with self._lock:
            self.requests += 1
            kind = "forward"
            budget_left = self.max_faults is None or sum(self.faults.values()) < self.max_faults
            if self._burst_left > 0 and budget_left and self.rate > 0:  # rate 0 ends an outage, bursts too
                self._burst_left -= 1
                kind = self._burst_kind or "forward"
            elif self._rng.random() < self.rate and budget_left:
                kinds = list(self.weights)
                kind = self._rng.choices(kinds, weights=[self.weights[k] for k in kinds])[0]
                self._burst_kind, self._burst_left = kind, self.burst - 1
            if kind == "forward":
                self.forwarded += 1
            else:
                self.faults[kind] += 1
            self.outcomes.append(kind)
            return kind

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, so clients meet stale pooled connections too
            timeout = 10  # idle keep-alive connections end, so handler threads do not linger

            def log_message(self, format: str, *args: object) -> None:  # quiet: tests read their own counters
                pass

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                kind = proxy._decide()
                if kind == "forward":
                    self._forward(body)
                elif kind in ("429", "500"):
                    extra = {"Retry-After": f"{proxy.retry_after:g}"} if kind == "429" and proxy.retry_after else {}
                    self._reply(int(kind), {"error": {"message": f"injected {kind}", "type": "fault"}}, extra)
                else:
                    if kind == "stall":
                        proxy._stop.wait(proxy.stall_s)
                    if kind == "reset":  # linger 0: close() sends RST instead of FIN
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.close()

            def _reply(self, status: int, payload: dict, headers: dict[str, str]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _forward(self, body: bytes) -> None:
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP and k.lower() not in ("content-length", "server", "date"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    conn.close()

        return Handler
