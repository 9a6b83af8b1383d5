"""The `openai` backend against a real OpenAI-compatible server: `transformers serve` on the embedded model, offline.

`transformers serve` needs the `serving` extras (fastapi, uvicorn, starlette, openai). It loads the local checkpoint
folder given as its forced model before it starts listening, so a 200 from `/health` means the model is ready. No
skip: without the extras, or if the server cannot start offline, this test fails and shows the server's log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from legibility.models import resolve_model
from legibility.models.base import Sampling
from legibility.models.openai_api import OpenAIChatModel
from legibility.records import Message

pytestmark = pytest.mark.slow
START_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """`transformers serve` on 127.0.0.1, offline, pinned to the embedded checkpoint; stopped at teardown."""
    checkpoint = resolve_model("embedded")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1"}
    # One torch thread: a 135M model gains nothing from more, and on a busy small machine extra threads that
    # wait on each other made 16 tokens take tens of seconds instead of one or two.
    env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", checkpoint]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--log-level", "warning"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"transformers serve not healthy after {START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield url, checkpoint
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_generate_through_transformers_serve(server, tmp_path: Path) -> None:
    url, checkpoint = server
    chats = [
        [Message(role="user", content="What is the capital of France?")],
        [Message(role="system", content="You are brief."), Message(role="user", content="Name a primary color.")],
        [Message(role="user", content="Say hello.")],
    ]
    model = OpenAIChatModel(f"{url}/v1", checkpoint, api_key_env=None, concurrency=3, timeout_s=60, cache_dir=tmp_path)
    with model:
        out = model.generate(chats, Sampling(max_new_tokens=16))
        assert [c.error for c in out] == [None, None, None]
        for c in out:
            assert sum(ch.isalpha() for ch in c.text) >= 3, c.text  # real words, not an empty or junk reply
            assert c.finish_reason in ("stop", "length")
            assert 0 < c.completion_tokens <= 16 and c.prompt_tokens > 0
            assert c.meta["backend"] == "openai" and c.meta["model"] == checkpoint
        assert "paris" in out[0].text.lower()
        again = model.generate(chats, Sampling(max_new_tokens=16))  # from the cache, identical
        assert [c.text for c in again] == [c.text for c in out] and all(c.meta["cached"] for c in again)
