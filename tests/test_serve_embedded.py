"""The `openai` backend against a real OpenAI-compatible server: `transformers serve` on the embedded model, offline.

The server (started by `serving.serve_embedded`) needs the `serving` extras; no skip: without them, or if the
server cannot start offline, this test fails and shows the server's log.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from serving import Served, serve_embedded

from legibility.models.base import Sampling
from legibility.models.openai_api import OpenAIChatModel
from legibility.records import Message

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with serve_embedded(tmp_path_factory.mktemp("serve")) as served:
        yield served


def test_generate_through_transformers_serve(server: Served, tmp_path: Path) -> None:
    chats = [
        [Message(role="user", content="What is the capital of France?")],
        [Message(role="system", content="You are brief."), Message(role="user", content="Name a primary color.")],
        [Message(role="user", content="Say hello.")],
    ]
    model = OpenAIChatModel(server.base_url, server.model, api_key_env=None, concurrency=3, timeout_s=60,
                            cache_dir=tmp_path)  # fmt: skip
    with model:
        out = model.generate(chats, Sampling(max_new_tokens=16))
        assert [c.error for c in out] == [None, None, None]
        for c in out:
            assert sum(ch.isalpha() for ch in c.text) >= 3, c.text  # real words, not an empty or junk reply
            assert c.finish_reason in ("stop", "length")
            assert 0 < c.completion_tokens <= 16 and c.prompt_tokens > 0
            assert c.meta["backend"] == "openai" and c.meta["model"] == server.model
        assert "paris" in out[0].text.lower()
        again = model.generate(chats, Sampling(max_new_tokens=16))  # from the cache, identical
        assert [c.text for c in again] == [c.text for c in out] and all(c.meta["cached"] for c in again)
