"""`transformers serve` on the embedded model, offline on loopback: the real OpenAI-compatible server that the
`openai` backend's end-to-end tests (test_serve_embedded.py, test_eval_serve.py) talk to.

`transformers serve` needs the `serving` extras (fastapi, uvicorn, starlette, openai). It loads the local checkpoint
folder given as its forced model before it starts listening, so a 200 from `/health` means the model is ready. No
skip: without the extras, or if the server cannot start offline, the test fails and shows the server's log.
The server is pinned to the checkpoint: requests must name it (`Served.model`) or get a 400.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from legibility.models import resolve_model

START_TIMEOUT_S = 90


@dataclass(frozen=True)
class Served:
    url: str  # http://127.0.0.1:PORT (no version path)
    model: str  # the checkpoint folder: the model name requests must carry
    log: Path

    @property
    def base_url(self) -> str:
        """What `OpenAIChatModel` / `ModelSpec.base_url` take: the URL with its version path."""
        return f"{self.url}/v1"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.is_file() else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_embedded(log_dir: Path) -> Iterator[Served]:
    """`transformers serve` on 127.0.0.1, offline, pinned to the embedded checkpoint, on CPU; stopped on exit."""
    checkpoint = resolve_model("embedded")
    port = free_port()
    log_path = log_dir / "serve.log"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1"}
    # One torch thread: a 135M model gains nothing from more, and on a busy small machine extra threads that
    # wait on each other made 16 tokens take tens of seconds instead of one or two.
    env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", checkpoint]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--log-level", "warning"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    served = Served(f"http://127.0.0.1:{port}", checkpoint, log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited ({proc.returncode}):\n{served.log_tail()}")
            try:
                if httpx.get(f"{served.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not healthy after {START_TIMEOUT_S} s:\n{served.log_tail()}")
            time.sleep(0.5)
        yield served
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
