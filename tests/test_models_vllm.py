"""The `vllm` backend. Without vLLM or a GPU (here, CI): its pure parts (SamplingParams mapping, reading target
log-probs out of prompt log-probs, RequestOutput -> Completion, adapter rank), the missing-vllm error, and the whole
class against a stand-in `vllm` module whose engine computes prompt log-probs with the embedded model, so scores are
checked against the hf backend's and prompts against hf's rendering. With vLLM and a CUDA GPU: the real engine."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import os
import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from conftest import GPU_SKIP

from legibility.config import ModelSpec
from legibility.errors import LegibilityError
from legibility.models.base import ChatModel, Sampling
from legibility.models.build import ModelPool
from legibility.models.hf import HFChatModel, _request_seed
from legibility.models.vllm import (
    SCORE_KWARGS,
    VLLMChatModel,
    adapter_rank,
    import_vllm,
    sampling_kwargs,
    target_logprobs,
    to_completion,
)
from legibility.records import Message

VLLM_PARAMS = Path(__file__).parent / "data" / "vllm_params.json"
QUESTIONS = ["What is 2+2?", "Name a color.", "Write a haiku about the sea, the wind and the sun.", "Hi"]
HAVE_VLLM = importlib.util.find_spec("vllm") is not None
needs_gpu = pytest.mark.skipif(not (torch.cuda.is_available() and HAVE_VLLM), reason=GPU_SKIP)


def vllm_names() -> dict[str, list[str]]:
    """The parameter names of the vLLM API the backend calls: the installed vLLM's signatures, else the list
    recorded from vLLM's sources (tests/data/vllm_params.json). LoRARequest's in positional order."""
    if not HAVE_VLLM:
        return {k: v["names"] for k, v in json.loads(VLLM_PARAMS.read_text()).items() if isinstance(v, dict)}
    import vllm
    from vllm.engine.arg_utils import EngineArgs
    from vllm.lora.request import LoRARequest

    def sig(f: Any) -> list[str]:
        return [n for n, p in inspect.signature(f).parameters.items() if n != "self" and p.kind != p.VAR_KEYWORD]

    return {
        "SamplingParams": sig(vllm.SamplingParams),
        "LLM.__init__": sig(vllm.LLM.__init__),
        "LLM.generate": sig(vllm.LLM.generate),
        "EngineArgs": [f.name for f in dataclasses.fields(EngineArgs)],
        "LoRARequest": sig(LoRARequest),
    }


VLLM_NAMES = vllm_names()
SAMPLING_NAMES = frozenset(VLLM_NAMES["SamplingParams"])
LLM_NAMES = frozenset(VLLM_NAMES["LLM.__init__"]) | frozenset(VLLM_NAMES["EngineArgs"])  # LLM(**kw) -> EngineArgs


def _refuse_unknown(what: str, names: frozenset[str], kwargs: dict[str, Any]) -> None:
    """As vLLM does (TypeError: unexpected keyword argument), for a name its signature does not have."""
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise TypeError(f"{what} got unexpected keyword argument(s) {unknown}")


def user(text: str) -> list[Message]:
    return [Message(role="user", content=text)]


# -- pure helpers ----------------------------------------------------------------------------------------------


@dataclass
class Logprob:  # vllm.logprobs.Logprob's shape
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:  # vllm.outputs.CompletionOutput's fields that the backend reads
    text: str
    token_ids: list[int]
    finish_reason: str | None
    stop_reason: int | str | None = None
    index: int = 0


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None


def test_sampling_kwargs_greedy_and_sampled():
    greedy = sampling_kwargs(Sampling(max_new_tokens=64, temperature=0.0, top_p=0.9, seed=3, stop=("\n\n", "")), 40, 7)
    assert greedy == {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 40, "seed": None, "stop": ["\n\n"],
                      "include_stop_str_in_output": False, "skip_special_tokens": True}  # fmt: skip
    sampled = sampling_kwargs(Sampling(temperature=0.6, top_p=0.95, seed=1), 512, 12345)
    assert (sampled["temperature"], sampled["top_p"], sampled["seed"], sampled["max_tokens"]) == (0.6, 0.95, 12345, 512)
    assert sampled["stop"] == [] and "top_k" not in sampled and "min_p" not in sampled  # off: vLLM's own default
    qwen = sampling_kwargs(Sampling(temperature=0.6, top_p=0.95, top_k=20, min_p=0.05), 512, 1)
    assert (qwen["top_k"], qwen["min_p"]) == (20, 0.05)
    greedy_k = sampling_kwargs(Sampling(temperature=0.0, top_k=20, min_p=0.05), 8, None)
    assert "top_k" not in greedy_k and "min_p" not in greedy_k  # greedy: the filters change nothing
    assert SCORE_KWARGS == {"n": 1, "temperature": 0.0, "max_tokens": 1, "prompt_logprobs": 0}


def test_target_logprobs_reads_the_target_positions():
    # prompt [5, 6, 7] + target [8, 9]: entry k holds log p(token k | tokens < k); entry 0 is None
    plp = [None, {6: Logprob(-0.1)}, {7: Logprob(-0.2), 1: Logprob(-3.0)}, {8: Logprob(-0.3, 2), 2: Logprob(-0.05, 1)},
           {9: -0.4}]  # fmt: skip
    assert target_logprobs(plp, 3, [8, 9]) == [-0.3, -0.4]
    assert target_logprobs(plp, 1, [6, 7]) == [-0.1, -0.2]
    assert target_logprobs(plp, 3, []) == []
    with pytest.raises(ValueError, match="no prompt log-probs"):
        target_logprobs(None, 3, [8])
    with pytest.raises(ValueError, match="non-empty prompt"):
        target_logprobs(plp, 0, [5])
    with pytest.raises(ValueError, match="entries"):
        target_logprobs(plp, 4, [9, 10])
    with pytest.raises(ValueError, match=r"id 9\) at prompt position 3"):
        target_logprobs(plp, 3, [9])  # an off-by-one never passes silently


def test_to_completion_maps_finish_and_stop():
    meta = {"backend": "vllm"}
    eos = to_completion(RequestOutput([1, 2], [CompletionOutput("Four.", [10, 11, 2], "stop", None)]), 2, meta)
    assert (eos.text, eos.finish_reason, eos.prompt_tokens, eos.completion_tokens, eos.ok) == ("Four.", "stop", 2, 3,
                                                                                              True)  # fmt: skip
    assert eos.meta == {"backend": "vllm", "stop_string": None}
    stop = to_completion(RequestOutput([1], [CompletionOutput("a", [10, 11], "stop", "\n\n")]), 1, meta)
    assert stop.meta["stop_string"] == "\n\n" and stop.finish_reason == "stop"
    token_stop = to_completion(RequestOutput([1], [CompletionOutput("a", [10, 7], "stop", 7)]), 1, meta)
    assert token_stop.meta["stop_string"] is None
    length = to_completion(RequestOutput([1], [CompletionOutput("abc", [1, 2, 3], "length")]), 1, meta)
    assert length.truncated and length.completion_tokens == 3
    aborted = to_completion(RequestOutput([1], [CompletionOutput("", [], "abort")]), 1, meta)
    assert not aborted.ok and "abort" in aborted.error and aborted.finish_reason is None
    empty = to_completion(RequestOutput([1], []), 1, meta)
    assert not empty.ok and "no output" in empty.error


def test_adapter_rank(tmp_path):
    assert adapter_rank(tmp_path) is None
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "rank_pattern": {"q_proj": 32}}))
    assert adapter_rank(tmp_path) == 32
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4}))
    assert adapter_rank(tmp_path) == 4


def test_missing_vllm_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError
    with pytest.raises(LegibilityError, match=r"pip install 'legibility\[vllm\]'"):
        import_vllm()
    with pytest.raises(LegibilityError, match=r"pip install 'legibility\[vllm\]'"):
        VLLMChatModel("embedded")
    pool = ModelPool(tmp_path / "cache")
    with pytest.raises(LegibilityError, match=r"legibility\[vllm\]"):
        pool.get(ModelSpec(name="reader", backend="vllm", model="embedded"))


# -- the class against a stand-in vllm module ------------------------------------------------------------------


class FakeSamplingParams:
    """vllm.SamplingParams: keyword arguments only, and only the names vLLM's has."""

    def __init__(self, **kwargs: Any) -> None:
        _refuse_unknown("SamplingParams", SAMPLING_NAMES, kwargs)
        self.kwargs = kwargs
        self.max_tokens = kwargs.get("max_tokens", 16)
        self.prompt_logprobs = kwargs.get("prompt_logprobs")


@dataclass
class FakeLoRARequest:  # vllm.lora.request.LoRARequest's first three fields, in its order (checked below)
    lora_name: str
    lora_int_id: int
    lora_path: str


@dataclass
class Call:
    prompts: list[list[int]]
    params: list[FakeSamplingParams]
    lora_request: Any
    use_tqdm: Any


@dataclass
class FakeLLM:
    """vllm.LLM's surface that the backend uses. Prompt log-probs come from `scorer` (the embedded model), one
    request at a time; generation answers "reply N" (N prompt tokens) in min(max_tokens, 5) tokens. A prompt with a
    token in `poison` makes the whole call raise, as vLLM's request validation does."""

    kwargs: dict[str, Any]
    calls: list[Call] = field(default_factory=list)
    scorer: Any = None
    poison: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.llm_engine = SimpleNamespace(
            model_config=SimpleNamespace(max_model_len=self.kwargs.get("max_model_len", 8192), dtype=torch.bfloat16)
        )

    def generate(self, prompts, sampling_params, *, use_tqdm=True, lora_request=None):
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        ids = [p["prompt_token_ids"] for p in prompts]
        self.calls.append(Call(ids, params, lora_request, use_tqdm))
        if any(t in self.poison for row in ids for t in row):
            raise ValueError("boom")
        return [self._one(row, p) for row, p in zip(ids, params, strict=True)]

    def _one(self, row: list[int], p: FakeSamplingParams) -> RequestOutput:
        plp = None
        if p.prompt_logprobs is not None:
            with torch.no_grad():
                logp = self.scorer(torch.tensor([row])).logits[0].float().log_softmax(-1)
            plp = [None] + [{row[k]: Logprob(logp[k - 1, row[k]].item(), 1)} for k in range(1, len(row))]
        n = min(p.max_tokens, 5)
        out = CompletionOutput(
            f"reply {len(row)}", list(range(100, 100 + n)), "length" if n == p.max_tokens else "stop"
        )
        return RequestOutput(row, [out], plp)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def hf() -> HFChatModel:
    return HFChatModel("embedded", batch_size=4)


@pytest.fixture
def fake_vllm(monkeypatch, hf):
    """A stand-in `vllm` (LLM, SamplingParams, lora.request.LoRARequest, distributed.parallel_state's clean-up) in
    sys.modules; `.engines` lists the FakeLLMs built, `.events` each engine built ("build") and each clean-up call
    (the engine's "shutdown", "destroy_model_parallel", "destroy_distributed_environment") in order."""
    mod = ModuleType("vllm")
    mod.__version__ = "0.0-fake"
    mod.engines = []
    mod.events = []

    def make_llm(model, **kwargs):
        _refuse_unknown("LLM", LLM_NAMES, kwargs)
        engine = FakeLLM({"model": model, **kwargs}, scorer=hf._base)
        engine.llm_engine.shutdown = lambda: mod.events.append("shutdown")
        mod.engines.append(engine)
        mod.events.append("build")
        return engine

    mod.LLM = make_llm
    mod.SamplingParams = FakeSamplingParams
    lora, request = ModuleType("vllm.lora"), ModuleType("vllm.lora.request")
    request.LoRARequest = FakeLoRARequest
    lora.request = request
    mod.lora = lora
    distributed, parallel_state = ModuleType("vllm.distributed"), ModuleType("vllm.distributed.parallel_state")
    for name in ("destroy_model_parallel", "destroy_distributed_environment"):
        setattr(parallel_state, name, lambda name=name: mod.events.append(name))
    distributed.parallel_state = parallel_state
    mod.distributed = distributed
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)
    monkeypatch.setitem(sys.modules, "vllm.distributed", distributed)
    monkeypatch.setitem(sys.modules, "vllm.distributed.parallel_state", parallel_state)
    return mod


def test_the_stand_in_takes_only_vllms_parameter_names(fake_vllm):
    """The fakes check the backend's argument names against vLLM's (the installed one, or the recorded list), not
    against this file's expectations: a misspelled keyword fails as it would on a GPU."""
    recorded = json.loads(VLLM_PARAMS.read_text())
    for key in ("SamplingParams", "LLM.__init__", "LLM.generate", "EngineArgs", "LoRARequest"):
        assert recorded[key]["file"].startswith("vllm/") and len(recorded[key]["commit"]) == 40, key
    for kw in (sampling_kwargs(Sampling(temperature=0.7, stop=("x",)), 8, 3), sampling_kwargs(Sampling(), 8, None),
               SCORE_KWARGS):  # fmt: skip
        assert set(kw) <= SAMPLING_NAMES, set(kw) - SAMPLING_NAMES
        FakeSamplingParams(**kw)
    with pytest.raises(TypeError, match="tempreature"):
        FakeSamplingParams(tempreature=0.5)
    generate = [n for n in inspect.signature(FakeLLM.generate).parameters if n != "self"]
    assert generate[:2] == VLLM_NAMES["LLM.generate"][:2] and set(generate) <= set(VLLM_NAMES["LLM.generate"])
    assert [f.name for f in dataclasses.fields(FakeLoRARequest)] == VLLM_NAMES["LoRARequest"][:3]  # positional

    VLLMChatModel("embedded", engine_kwargs={"enforce_eager": True, "max_num_seqs": 8})
    assert fake_vllm.engines[-1].kwargs["enforce_eager"] is True
    with pytest.raises(TypeError, match="enforce_eagr"):
        VLLMChatModel("embedded", engine_kwargs={"enforce_eagr": True})


def test_engine_arguments_and_meta(fake_vllm, hf):
    spec = ModelSpec(name="r", backend="vllm", model="embedded", tensor_parallel_size=2, gpu_memory_utilization=0.5,
                     max_model_len=1024, dtype="bfloat16", enable_thinking=False, batch_size=3)  # fmt: skip
    m = VLLMChatModel.from_spec(spec)
    assert isinstance(m, ChatModel) and m.supports_scoring and m.name == "embedded"
    (engine,) = fake_vllm.engines
    assert engine.kwargs == {"model": engine.kwargs["model"], "tokenizer": engine.kwargs["model"],
                             "tensor_parallel_size": 2, "gpu_memory_utilization": 0.5, "dtype": "bfloat16", "seed": 0,
                             "enable_prefix_caching": False, "enable_lora": False, "max_model_len": 1024}  # fmt: skip
    assert m.max_model_len == 1024 and m.lora_request is None
    assert m.meta["backend"] == "vllm" and m.meta["model"] == "embedded" and m.meta["dtype"] == "bfloat16"
    assert m.meta["enable_thinking"] is False and m.meta["versions"]["vllm"] == "0.0-fake"
    assert m.meta["adapter"] is None is m.meta["adapter_sha256"]
    for k in ("revision", "chat_template_sha256"):  # the same checkpoint and template as hf records
        assert m.meta[k] == hf.meta[k] and m.meta[k]
    m.close()
    m.close()
    assert m.llm is None


def test_model_pool_builds_the_vllm_backend(fake_vllm, tmp_path):
    pool = ModelPool(tmp_path / "cache")
    m = pool.get(ModelSpec(name="reader", backend="vllm", model="embedded"))
    assert isinstance(m.inner, VLLMChatModel) and len(fake_vllm.engines) == 1
    pool.close()
    assert m.inner.llm is None


RELEASE = ["shutdown", "destroy_model_parallel", "destroy_distributed_environment"]


def test_close_releases_the_engine_explicitly(fake_vllm, monkeypatch):
    """close() does not leave the GPU to garbage collection: the engine is shut down and dropped (no reference
    left), vLLM's parallel state torn down, and the CUDA cache emptied; a second close does nothing."""
    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(list(fake_vllm.events)))
    m = VLLMChatModel("embedded")
    engine = weakref.ref(fake_vllm.engines.pop())
    m.close()
    assert fake_vllm.events == ["build", *RELEASE]
    assert emptied == [["build", *RELEASE]]  # the cache is emptied after the clean-up, not before
    assert m.llm is None and engine() is None
    m.close()
    assert fake_vllm.events == ["build", *RELEASE] and len(emptied) == 1


def test_pool_closes_a_vllm_engine_before_loading_the_next_model(fake_vllm, tmp_path):
    """One engine at a time: the pool closes a vLLM model before it loads the next vLLM model or a local hf
    model (which needs the GPU memory the engine reserves), and the closed model's requests still count."""
    pool = ModelPool(tmp_path / "cache")
    first = pool.get(ModelSpec(name="gen", backend="vllm", model="embedded"))
    first.generate([user("What is 2+2?")], Sampling(max_new_tokens=4))
    assert pool.counts()["requests"] == 1
    second = pool.get(ModelSpec(name="reader", backend="vllm", model="embedded", max_model_len=1024))
    assert fake_vllm.events == ["build", *RELEASE, "build"] and first.inner.llm is None
    pool.get(ModelSpec(name="judge", backend="hf", model="embedded"))
    assert fake_vllm.events == ["build", *RELEASE, "build", *RELEASE] and second.inner.llm is None
    assert pool.counts()["requests"] == 1  # the first model's request, though it is closed
    pool.close()


def _adapter_folder(path, rank: int):
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"r": rank, "target_modules": ["q_proj"]}))
    (path / "adapter_model.safetensors").write_bytes(b"not really weights")
    return path


def test_adapter_goes_to_the_engine_and_every_request(fake_vllm, tmp_path):
    folder = _adapter_folder(tmp_path / "adapter", 8)
    m = VLLMChatModel("embedded", adapter=str(folder), max_lora_rank=16)
    (engine,) = fake_vllm.engines
    assert engine.kwargs["enable_lora"] is True and engine.kwargs["max_lora_rank"] == 16
    assert engine.kwargs["max_loras"] == 1
    assert m.lora_request == FakeLoRARequest("adapter", 1, str(folder.resolve()))
    assert m.name == f"embedded+adapter:{folder}" and m.meta["adapter_sha256"]
    m.generate([user("Hi")], Sampling(max_new_tokens=4))
    m.score([user("Hi")], ["Hello"])
    assert [c.lora_request for c in engine.calls] == [m.lora_request] * 2

    with pytest.raises(LegibilityError, match="max_lora_rank: 64"):
        VLLMChatModel("embedded", adapter=str(_adapter_folder(tmp_path / "big", 64)), max_lora_rank=16)
    with pytest.raises(LegibilityError, match="not found"):
        VLLMChatModel("embedded", adapter=str(tmp_path / "missing"))


def test_prompts_are_hf_renderings_and_requests_go_in_one_call(fake_vllm, hf):
    m = VLLMChatModel("embedded")
    (engine,) = fake_vllm.engines
    chats = [user(q) for q in QUESTIONS]
    out = m.generate(chats, Sampling(max_new_tokens=3))
    (call,) = engine.calls
    assert call.prompts == [hf._encode(hf.render_prompt(c)) for c in chats] and call.use_tqdm is False
    assert [c.text for c in out] == [f"reply {len(p)}" for p in call.prompts]
    assert all(c.ok and c.finish_reason == "length" and c.completion_tokens == 3 for c in out)
    assert [c.prompt_tokens for c in out] == [len(p) for p in call.prompts]
    assert out[0].meta["decoding"]["mode"] == "greedy" and out[0].meta["decoding"]["request_seed"] is None
    assert all(p.kwargs["seed"] is None and p.kwargs["temperature"] == 0.0 for p in call.params)

    partial = [*user("Explain why the sky is blue."), Message(role="assistant", content="Because of")]
    cont = m.continue_([partial], Sampling(max_new_tokens=8))[0]
    assert engine.calls[-1].prompts == [hf._encode(hf.render_continuation(partial))]
    assert cont.ok and cont.finish_reason == "stop" and cont.meta["continue"] is True
    assert cont.meta["continue_rule"] == "open_turn" and cont.meta["stop_string"] is None
    bad = m.continue_([user("no assistant turn")], Sampling(max_new_tokens=8))[0]
    assert not bad.ok and "assistant" in bad.error and bad.meta["continue_rule"] is None


def test_sampled_requests_carry_hf_seeds(fake_vllm, hf):
    m = VLLMChatModel("embedded")
    (engine,) = fake_vllm.engines
    chats = [user("Hi"), user("Hi"), user("Name a color.")]
    s = Sampling(max_new_tokens=4, temperature=0.7, top_p=0.9, seed=5)
    out = m.generate(chats, s)
    seeds = [p.kwargs["seed"] for p in engine.calls[-1].params]
    assert seeds == [_request_seed(5, hf.render_prompt(c)) for c in chats] and seeds[0] == seeds[1] != seeds[2]
    assert [c.meta["decoding"]["request_seed"] for c in out] == seeds
    m.generate(chats[:1], Sampling(max_new_tokens=4, temperature=0.7, top_p=0.9, seed=6))
    assert engine.calls[-1].params[0].kwargs["seed"] != seeds[0]
    assert engine.calls[-2].params[0].kwargs["top_p"] == 0.9


def test_scores_equal_hf_scores(fake_vllm, hf):
    """The fake engine's prompt log-probs are the embedded model's own, so reading the right positions gives hf's
    numbers; any misalignment (off by one, the prompt's tail) would differ by whole nats."""
    m = VLLMChatModel("embedded")
    chats = [user(q) for q in QUESTIONS]
    targets = [
        "Blue, like the sky on a clear day.",
        "Four.",
        "\n\nTwo lines\nof text",
        "The answer is 4, since 2 + 2 = 4.",
    ]
    ours, theirs = m.score(chats, targets), hf.score(chats, targets)
    for a, b, t in zip(ours, theirs, targets, strict=True):
        assert a.error is None and a.tokens == b.tokens and "".join(a.tokens) == t
        assert max(abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs, strict=True)) < 1e-4
    (engine,) = fake_vllm.engines
    assert engine.calls[-1].params[0].kwargs == SCORE_KWARGS and len(engine.calls) == 1
    assert m.score([chats[0]], [""])[0].token_logprobs == []
    with pytest.raises(LegibilityError, match="2 chats but 1 targets"):
        m.score(chats[:2], ["x"])


def test_over_long_inputs_are_error_records_and_max_tokens_fits(fake_vllm):
    m = VLLMChatModel("embedded", max_model_len=64)
    (engine,) = fake_vllm.engines
    chats = [user("Hi"), user("hello " * 80), user("Name a color.")]
    out = m.generate(chats, Sampling(max_new_tokens=512))
    assert out[0].ok and out[2].ok and not out[1].ok and "max_model_len 64" in out[1].error
    assert out[1].prompt_tokens > 64
    assert engine.calls[-1].prompts == [m._encode(m.render_prompt(c)) for c in (chats[0], chats[2])]
    assert [p.kwargs["max_tokens"] for p in engine.calls[-1].params] == [64 - len(p) for p in engine.calls[-1].prompts]
    scores = m.score(chats, ["Hello", "x", "Blue " * 60])
    assert scores[0].error is None and "max_model_len" in scores[1].error and "max_model_len" in scores[2].error


def test_a_failing_request_does_not_sink_the_others(fake_vllm):
    m = VLLMChatModel("embedded")
    (engine,) = fake_vllm.engines
    chats = [user(q) for q in QUESTIONS[:3]] + [user("xyzzy plugh")]
    others = {t for c in chats[:3] for t in m._encode(m.render_prompt(c))}
    engine.poison = set(m._encode("xyzzy plugh")) - others
    assert engine.poison
    out = m.generate(chats, Sampling(max_new_tokens=4))
    assert [c.ok for c in out] == [True, True, True, False] and out[3].error == "ValueError: boom"
    assert [len(c.prompts) for c in engine.calls] == [4, 1, 1, 1, 1]  # the batch, then one by one
    scores = m.score(chats, ["Four", "Blue", "Waves", "Hello"])
    assert [s.error for s in scores] == [None, None, None, "ValueError: boom"]
    assert all(s.token_logprobs for s in scores[:3])


def test_a_missing_prompt_logprob_is_an_error_record(fake_vllm, monkeypatch):
    m = VLLMChatModel("embedded")
    (engine,) = fake_vllm.engines
    one, drop = engine._one, iter([False, True, False])

    def sometimes_without_logprobs(row, p):
        out = one(row, p)
        if next(drop):
            out.prompt_logprobs = None
        return out

    monkeypatch.setattr(engine, "_one", sometimes_without_logprobs)
    scores = m.score([user(q) for q in QUESTIONS[:3]], ["Four", "Blue", "Waves"])
    assert scores[0].error is None is scores[2].error and scores[0].token_logprobs and scores[2].token_logprobs
    assert scores[1].token_logprobs == [] and "no prompt log-probs" in scores[1].error


# -- the real engine (CUDA + vLLM) -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine():
    m = VLLMChatModel("embedded", dtype="bfloat16", gpu_memory_utilization=0.3, max_model_len=2048)
    yield m
    m.close()


@needs_gpu
def test_gpu_generate_continue_and_sampling(engine):
    chats = [user(q) for q in QUESTIONS]
    out = engine.generate(chats, Sampling(max_new_tokens=16))
    assert all(c.ok and c.text and c.finish_reason in ("stop", "length") for c in out)
    assert all(c.completion_tokens <= 16 and (c.finish_reason == "stop" or c.completion_tokens == 16) for c in out)
    s = Sampling(max_new_tokens=24, temperature=1.0, seed=3)
    a = engine.generate([chats[1], chats[1], chats[2]], s)
    b = engine.generate([chats[1]], s)
    assert a[0].text == a[1].text == b[0].text  # a sample depends on the request alone
    partial = [*user("Explain why the sky is blue."), Message(role="assistant", content="The sky is blue because")]
    cont = engine.continue_([partial], Sampling(max_new_tokens=12))[0]
    assert cont.ok and cont.text and cont.meta["continue_rule"]
    first = out[0].text.split()[0] if out[0].text.split() else None
    if first:
        stopped = engine.generate([chats[0]], Sampling(max_new_tokens=16, stop=(first,)))[0]
        assert stopped.meta["stop_string"] == first and first not in stopped.text


@needs_gpu
def test_gpu_scores_agree_with_hf(engine):
    hf_gpu = HFChatModel("embedded", batch_size=4, dtype=torch.bfloat16, device="cuda")
    chats = [user(q) for q in QUESTIONS]
    targets = ["Blue, like the sky on a clear day.", "Four.", "\n\nTwo lines\nof text", "The answer is 4."]
    ours, theirs = engine.score(chats, targets), hf_gpu.score(chats, targets)
    for a, b in zip(ours, theirs, strict=True):
        assert a.error is None and a.tokens == b.tokens
        diffs = [abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs, strict=True)]
        assert sum(diffs) / len(diffs) < 0.1 and max(diffs) < 0.5  # bfloat16, two sets of kernels
    del hf_gpu
    torch.cuda.empty_cache()


@needs_gpu
def test_gpu_adapter_matches_hf_adapter(tmp_path, engine):
    from peft import LoraConfig, get_peft_model

    from legibility.models import load_model

    base = load_model("embedded")
    lora = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:  # zero-initialized by PEFT, which would make the adapter a no-op
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    lora.save_pretrained(tmp_path)
    del lora, base
    chats, targets = [user(q) for q in QUESTIONS[:2]], ["Four, since two and two make four.", "Blue."]
    tuned = VLLMChatModel("embedded", adapter=str(tmp_path), dtype="bfloat16", gpu_memory_utilization=0.3,
                          max_model_len=2048)  # fmt: skip
    try:
        with_adapter, without = tuned.score(chats, targets), engine.score(chats, targets)
    finally:
        tuned.close()
    hf_tuned = HFChatModel("embedded", adapter=str(tmp_path), dtype=torch.bfloat16, device="cuda")
    reference = hf_tuned.score(chats, targets)
    for a, b, r in zip(with_adapter, without, reference, strict=True):
        assert a.error is None and a.tokens == r.tokens
        assert max(abs(x - y) for x, y in zip(a.token_logprobs, b.token_logprobs, strict=True)) > 1e-2
        diffs = [abs(x - y) for x, y in zip(a.token_logprobs, r.token_logprobs, strict=True)]
        assert sum(diffs) / len(diffs) < 0.1


def test_docs_say_vllm_scores_log_probs():
    """The docs once said hf was the only backend that scores log-probs, while the reference config judges with
    vLLM `label_probs`: the backend's claim and the docs agree, and a refused judge is pointed at both backends."""
    from legibility.evaluate.judges import judge_unavailable

    assert VLLMChatModel.supports_scoring
    root = Path(__file__).resolve().parents[1]
    docs = [ModelSpec.__doc__ or "", (root / "README.md").read_text(), (root / "docs" / "config.md").read_text()]
    for text in docs:
        flat = " ".join(text.split())
        assert "only backend that scores" not in flat and "hf only" not in flat.lower()
    assert "`vllm`" in docs[0] and "both score log-probs" in " ".join(docs[0].split())
    api = SimpleNamespace(supports_scoring=False, name="gpt")
    with pytest.raises(LegibilityError, match="an hf or vllm judge"):
        judge_unavailable(api, "j", "label_probs")
