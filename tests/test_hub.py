"""Hub ids that cannot be fetched are one-line errors naming the config field and what to do: offline (the real
path, with an empty cache), a repository that does not exist and a gated one (the real huggingface_hub exception
classes, raised under transformers' OSError as transformers raises them)."""

from __future__ import annotations

import httpx
import pytest
import transformers
from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

from legibility.config import ModelSpec, PairsConfig
from legibility.errors import LegibilityError
from legibility.hub import HubError, hub_errors, hub_problem
from legibility.models import load_model, load_tokenizer
from legibility.models.build import ModelPool
from legibility.pairs import build_and_write

HUB_ID = "no-such-org/no-such-model-legibility"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network and an empty Hugging Face cache, as on a fresh machine without internet."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("transformers.utils.hub.constants.HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))


def _http(status: int) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", f"https://huggingface.co/{HUB_ID}/resolve/main/x"))


def _raise_like_transformers(kind: str):
    """A `from_pretrained` that fails as transformers does: its OSError, the hub's exception as the cause."""

    def from_pretrained(*args, **kwargs):
        if kind == "gated":
            cause = GatedRepoError("403 Client Error: access to this gated repo is restricted", response=_http(403))
            message = "You are trying to access a gated repo.\nMake sure to have access to it."
        else:
            cause = RepositoryNotFoundError("401 Client Error: Repository Not Found", response=_http(401))
            message = f"{HUB_ID} is not a local folder and is not a valid model identifier listed on the hub"
        raise OSError(message) from cause

    return from_pretrained


def _one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text, text
    return text


def test_offline_tokenizer_names_pairs_tokenizer_and_what_to_do(offline, tmp_path):
    """The 134-line traceback of `pairs.tokenizer: Qwen/...` offline, now one line naming the field."""
    cfg = PairsConfig(tokenizer=HUB_ID)
    with pytest.raises(HubError) as info:
        build_and_write([], cfg, tmp_path / "pairs")
    text = _one_line(info.value)
    assert text.startswith(f"pairs.tokenizer {HUB_ID!r} ")
    assert "offline" in text and "local folder" in text and "online" in text
    assert isinstance(info.value, LegibilityError)


def test_offline_model_in_the_pool_names_the_spec(offline, tmp_path):
    pool = ModelPool(tmp_path / "cache")
    with pytest.raises(HubError) as info:
        pool.get(ModelSpec(name="qwen-reader", backend="hf", model=HUB_ID))
    text = _one_line(info.value)
    assert text.startswith(f"qwen-reader: model {HUB_ID!r} ") and "offline" in text


@pytest.mark.parametrize(
    ("kind", "says"), [("gated", ("gated", "HF_TOKEN", "local folder")), ("missing", ("no model repository",))]
)
def test_gated_and_missing_repos(monkeypatch, kind, says):
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", _raise_like_transformers(kind))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", _raise_like_transformers(kind))
    for load in (load_tokenizer, load_model):
        with pytest.raises(HubError) as info:
            load(HUB_ID)
        text = _one_line(info.value)
        assert text.startswith(f"model {HUB_ID!r} ")
        for word in says:
            assert word in text, (word, text)
    with pytest.raises(HubError, match=r"^pairs\.tokenizer 'x' "), hub_errors("pairs.tokenizer", "x"):
        load_tokenizer(HUB_ID)  # an outer block names its own field


def test_other_errors_keep_their_traceback():
    """Only hub failures are translated: a bug, or a broken local folder, is not a hub problem."""
    assert hub_problem(RuntimeError("a bug")) is None
    assert hub_problem(OSError("Unable to load weights from pytorch checkpoint file")) is None
    with pytest.raises(RuntimeError, match="a bug"), hub_errors("pairs.tokenizer", "x"):
        raise RuntimeError("a bug")
    with pytest.raises(LegibilityError, match=r"^mine$"), hub_errors("pairs.tokenizer", "x"):
        raise LegibilityError("mine")  # our own errors pass through unchanged
    connect = OSError("We couldn't connect to 'https://huggingface.co' to load the files")
    connect.__cause__ = httpx.ConnectError("[Errno -3] Temporary failure in name resolution")
    assert "offline" in (hub_problem(connect) or "")


def test_a_bare_network_error_is_a_hub_problem_only_where_the_hub_is_asked():
    """At the CLI boundary a connection error of another client (an API reader, the together SDK) is no hub
    failure; inside a hub load it is."""
    bare = httpx.ConnectError("[Errno -3] Temporary failure in name resolution")
    assert hub_problem(bare, bare_network=False) is None
    assert "offline" in (hub_problem(bare) or "")
