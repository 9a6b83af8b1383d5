"""The `hf` backend on the embedded model: batching changes nothing, scores are the model's log-probs, continuation
prompts stay open, adapters load, and one bad request never sinks its batch."""

from __future__ import annotations

import logging
import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from legibility.models import load_model, load_tokenizer
from legibility.models.base import ChatModel, Sampling
from legibility.models.hf import HFChatModel, continuation_prompt
from legibility.records import Message

QUESTIONS = ["What is 2+2?", "Name a color.", "Write a haiku about the sea, the wind and the sun.", "Hi"]


def user(text: str) -> list[Message]:
    return [Message(role="user", content=text)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core box, two OpenMP threads that wait on each other at every small
    decoding step made these tests ~10x slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def hf() -> HFChatModel:
    return HFChatModel("embedded", batch_size=4)


@pytest.fixture(scope="module")
def greedy(hf) -> str:
    """The model's own greedy reply to the first question (long enough to split and shuffle)."""
    text = hf.generate([user("Explain why the sky is blue.")], Sampling(max_new_tokens=24))[0].text
    assert len(text.split()) >= 8
    return text


def test_generate_batched_equals_one_at_a_time(hf):
    chats = [user(q) for q in QUESTIONS]
    s = Sampling(max_new_tokens=12)
    batched = hf.generate(chats, s)
    alone = [hf.generate([c], s)[0] for c in chats]
    assert [c.text for c in batched] == [c.text for c in alone]
    assert all(c.ok and c.text for c in batched)
    for chat, c, a in zip(chats, batched, alone, strict=True):
        assert (c.finish_reason, c.prompt_tokens, c.completion_tokens) == (
            a.finish_reason, a.prompt_tokens, a.completion_tokens)  # fmt: skip
        assert c.completion_tokens <= 12 and (c.finish_reason == "stop" or c.completion_tokens == 12)
        assert c.prompt_tokens == len(hf.tokenizer(hf.render_prompt(chat), add_special_tokens=False)["input_ids"])
    assert {c.finish_reason for c in batched} == {"stop", "length"}  # "Hi" ends early, the haiku does not
    m = batched[0].meta
    assert m["backend"] == "hf" and m["model"] == "embedded" and len(m["revision"]) == 16
    assert m["chat_template_sha256"] and m["decoding"]["mode"] == "greedy" and m["decoding"]["max_new_tokens"] == 12
    assert isinstance(hf, ChatModel) and hf.supports_scoring and hf.name == "embedded"


def test_sampling_depends_on_request_not_batch(hf):
    chats = [user(q) for q in QUESTIONS[:3]]
    s = Sampling(max_new_tokens=12, temperature=1.0, seed=7)
    batched = hf.generate([*chats, chats[0]], s)
    alone = [hf.generate([c], s)[0] for c in chats]
    assert [c.text for c in batched[:3]] == [c.text for c in alone]
    assert batched[3].text == batched[0].text, "the same request is the same sample (as the request cache assumes)"
    other_seed = hf.generate(chats[:1], Sampling(max_new_tokens=12, temperature=1.0, seed=8))[0]
    assert other_seed.text != batched[0].text
    assert batched[0].meta["decoding"]["request_seed"] != other_seed.meta["decoding"]["request_seed"]


def test_stop_strings_and_length(hf, greedy):
    chat = user("Explain why the sky is blue.")
    word = greedy.split()[4]
    stopped = hf.generate([chat], Sampling(max_new_tokens=24, stop=(word,)))[0]
    assert stopped.finish_reason == "stop" and stopped.meta["stop_string"] == word
    assert stopped.text == greedy[: greedy.index(word)]
    short = hf.generate([chat], Sampling(max_new_tokens=3))[0]
    assert short.finish_reason == "length" and short.completion_tokens == 3 and greedy.startswith(short.text)


def test_score_batched_single_and_by_hand(hf, greedy):
    chats = [user(q) for q in QUESTIONS]
    targets = [greedy, "Blue.", "\n\nTwo lines\nof text", "The answer is 4, since 2 + 2 = 4."]
    batched = hf.score(chats, targets)
    alone = [hf.score([c], [t])[0] for c, t in zip(chats, targets, strict=True)]
    for b, a, t in zip(batched, alone, targets, strict=True):
        assert b.error is None and b.tokens == a.tokens and "".join(b.tokens) == t
        assert max(abs(x - y) for x, y in zip(b.token_logprobs, a.token_logprobs, strict=True)) < 1e-4

    # By hand: one forward pass over prompt + target, log_softmax, the target tokens' entries.
    prompt = hf.render_prompt(chats[3])
    n_prompt = len(hf.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([hf.tokenizer(prompt + targets[3], add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logp = hf.model(ids).logits[0].log_softmax(-1)
    expected = [logp[j - 1, ids[0, j]].item() for j in range(n_prompt, ids.shape[1])]
    assert len(expected) == len(batched[3].token_logprobs)
    assert max(abs(x - y) for x, y in zip(expected, batched[3].token_logprobs, strict=True)) < 1e-4
    assert hf.score([chats[0]], [""])[0].token_logprobs == []


def test_own_greedy_text_scores_higher_than_shuffled(hf, greedy):
    words = greedy.split()
    shuffled = words[:]
    random.Random(0).shuffle(shuffled)
    assert shuffled != words
    own, mixed = hf.score([user("Explain why the sky is blue.")] * 2, [greedy, " ".join(shuffled)])
    assert own.mean_surprisal + 3 < mixed.mean_surprisal  # observed: 0.7 vs 7.5 nats


def test_continue_prompt_is_open_and_continues(hf, greedy):
    chat = user("Explain why the sky is blue.")
    cut = greedy.index(greedy.split()[5]) - 1  # the prefix ends before a space, as the greedy tokens split there
    prefix, rest = greedy[:cut], greedy[cut:]
    partial = [*chat, Message(role="assistant", content=prefix)]
    rendered = hf.render_continuation(partial)
    assert rendered == hf.render_prompt(chat) + prefix
    assert rendered.endswith("<|im_start|>assistant\n" + prefix)
    c = hf.continue_([partial], Sampling(max_new_tokens=8))[0]
    assert c.ok and c.meta["continue_rule"] == "open_turn"
    assert rest.startswith(c.text) and len(c.text) > 5, (c.text, rest)


QWEN_LIKE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{% endif %}"
)
R1_LIKE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ '<User>' + m['content'] }}"
    "{% else %}{{ '<Assistant>' + m['content'].split('</think>')[-1] + '<eos>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<Assistant><think>\\n' }}{% endif %}"
)


@pytest.mark.parametrize(
    ("template", "kwargs", "partial", "expected", "rule"),
    [
        (QWEN_LIKE, {}, "<think>\nHmm", "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\nHmm",
         "generation_prompt"),
        (QWEN_LIKE, {"enable_thinking": False}, "It is 4",
         "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nIt is 4", "open_turn"),
        (R1_LIKE, {}, "<think>\nHmm", "<User>Q<Assistant><think>\nHmm", "open_turn"),
        (R1_LIKE, {}, "Hmm", "<User>Q<Assistant><think>\nHmm", "forced_prefix"),
        # thinking off: the prefill's own think block replaces the template's empty one (never two in one turn)
        (QWEN_LIKE, {"enable_thinking": False}, "<think>\nCoT\n</think>\n\nAnswer:",
         "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\nCoT\n</think>\n\nAnswer:", "open_turn+think"),
    ],
)  # fmt: skip
def test_continuation_prompt_reconciles_templates(template, kwargs, partial, expected, rule):
    tok = load_tokenizer("embedded")
    tok.chat_template = template
    chat = [Message(role="user", content="Q"), Message(role="assistant", content=partial)]
    assert continuation_prompt(tok, chat, **kwargs) == (expected, rule)


@pytest.mark.parametrize("thinking", [None, True, False])
def test_c2_prefill_has_one_think_block_under_qwen3s_template(thinking):
    """Qwen3's own template (shipped with trl) with thinking off writes an empty think block into the generation
    prompt; the C2 prefill's think block must take its place, whatever enable_thinking says."""
    import importlib.resources

    from legibility.evaluate.readers import c2_prefill_chat
    from legibility.records import Problem

    tok = load_tokenizer("embedded")
    tok.chat_template = (importlib.resources.files("trl") / "chat_templates" / "qwen3.jinja").read_text()
    problem = Problem(id="p", benchmark="math", question="What is 2 + 3?", answer="5", source="test")
    kwargs = {} if thinking is None else {"enable_thinking": thinking}
    text, _ = continuation_prompt(tok, c2_prefill_chat(problem, "Two plus three is five."), **kwargs)
    turn = text.rpartition("<|im_start|>assistant\n")[2]
    assert text.count("<think>") == 1 and turn.startswith("<think>\nTwo plus three is five.\n</think>\n\n"), text


def test_adapter_changes_scores(hf, tmp_path, caplog):
    from peft import LoraConfig, get_peft_model

    base = load_model("embedded")
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:  # zero-initialized by PEFT, which would make the adapter a no-op
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    lora.save_pretrained(tmp_path)
    del lora, base

    tuned = HFChatModel("embedded", adapter=str(tmp_path), batch_size=4)
    assert tuned.name == f"embedded+adapter:{tmp_path}" and tuned.meta["adapter_sha256"]
    chats, targets = [user(q) for q in QUESTIONS[:2]], ["Four.", "Blue."]
    a, b = hf.score(chats, targets), tuned.score(chats, targets)
    for x, y in zip(a, b, strict=True):
        assert x.tokens == y.tokens
        assert max(abs(u - v) for u, v in zip(x.token_logprobs, y.token_logprobs, strict=True)) > 1e-2
    with caplog.at_level(logging.WARNING, logger="legibility.models.hf"):
        shared = tuned.score([chats[0]] * 2, ["Four.", "Four, of course."])  # one prompt: adapter on the KV cache
    assert not caplog.records, "the shared path ran (no fallback)"
    tuned.share_prompts = False
    for x, y in zip(shared, tuned.score([chats[0]] * 2, ["Four.", "Four, of course."]), strict=True):
        assert x.tokens == y.tokens
        assert max(abs(u - v) for u, v in zip(x.token_logprobs, y.token_logprobs, strict=True)) < 1e-4


def test_over_long_input_is_an_error_record(hf):
    too_long = "hello " * (hf.max_positions + 10)
    chats = [user("Hi"), user(too_long), user("Name a color.")]
    out = hf.generate(chats, Sampling(max_new_tokens=4))
    assert out[0].ok and out[2].ok and out[0].text and out[2].text
    assert not out[1].ok and "positions" in out[1].error and out[1].prompt_tokens > hf.max_positions
    scores = hf.score(chats, ["Hello", "x", "Blue"])
    assert scores[0].error is None is scores[2].error and scores[1].error and scores[1].token_logprobs == []


def test_a_failing_item_does_not_sink_its_batch(hf, monkeypatch):
    """The forward pass itself raises for one request; its batch is split and the others still succeed."""
    chats = [user(q) for q in QUESTIONS[:3]] + [user("xyzzy plugh")]
    others = {t for c in chats[:3] for t in hf.tokenizer(hf.render_prompt(c))["input_ids"]}
    poison = set(hf.tokenizer("xyzzy plugh", add_special_tokens=False)["input_ids"]) - others
    assert poison
    forward = hf.model.forward

    def flaky(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and any(int(t) in poison for t in ids.flatten()):
            raise RuntimeError("boom")
        return forward(*args, **kwargs)

    monkeypatch.setattr(hf.model, "forward", flaky)
    out = hf.generate(chats, Sampling(max_new_tokens=4))
    assert [c.ok for c in out] == [True, True, True, False] and out[3].error == "RuntimeError: boom"
    scores = hf.score(chats, ["Four", "Blue", "Waves", "Hello"])
    assert [s.error is None for s in scores] == [True, True, True, False] and all(s.token_logprobs for s in scores[:3])


LONG = "Explain step by step: " + " ".join(f"fact {k} is that {k}*{k}={k * k}." for k in range(20))


def _forward_widths(hf, monkeypatch) -> list[int]:
    """Records the sequence width of every forward pass of `hf.model` (prompt tokens fed, padding included)."""
    widths: list[int] = []
    forward = hf.model.forward

    def counting(*args, **kwargs):
        widths.append(kwargs["input_ids"].shape[1])
        return forward(*args, **kwargs)

    monkeypatch.setattr(hf.model, "forward", counting)
    return widths


def test_score_shared_prompt_equals_unshared(hf, monkeypatch, caplog):
    """Rows after one chat run its prompt once and score from its KV cache; the log-probs are those of the
    unshared path (prompt + target in one pass), errors and empty targets stay per row, in order."""
    long, color, too_long = user(LONG), user("Name a color."), user("hello " * (hf.max_positions + 10))
    rows = [
        (long, "Score: 1"), (color, "Blue."), (long, "Score: 9"), (user("What is 2+2?"), "4"),
        (long, "The answer, in short, is that the sum is large."), (too_long, "x"),
        (color, "Red, or maybe green, or some other colour entirely."), (long, "x"), (user("Hi"), "Hello there!"),
        (long, ""), (long, "Score: 5\nCoverage: 3"), (long, "No."), (color, "Blue."),
    ]  # fmt: skip  # 6 scored rows after `long` (> batch_size 4: several target passes on one cache), 3 after color
    chats, targets = [c for c, _ in rows], [t for _, t in rows]
    assert hf.share_prompts
    widths = _forward_widths(hf, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="legibility.models.hf"):
        shared = hf.score(chats, targets)
    assert not caplog.records, "the shared path ran (no fallback)"
    n_long = len(hf.tokenizer(hf.render_prompt(long), add_special_tokens=False)["input_ids"])
    assert sum(w >= n_long for w in widths) == 1, "the long prompt runs once"
    monkeypatch.setattr(hf, "max_score_tokens", 12)  # target passes of 1-3 rows
    small = hf.score(chats, targets)
    monkeypatch.setattr(hf, "share_prompts", False)
    widths.clear()
    unshared = hf.score(chats, targets)
    assert sum(w >= n_long for w in widths) >= 2

    assert shared[5].error and "positions" in shared[5].error and shared[5].token_logprobs == []
    assert shared[9].error is None and shared[9].token_logprobs == []
    for s, m, u, t in zip(shared, small, unshared, targets, strict=True):
        assert s.error == m.error == u.error and s.tokens == m.tokens == u.tokens
        if s.error is None:
            assert "".join(s.tokens) == t
            for other in (m, u):
                assert max((abs(x - y) for x, y in zip(s.token_logprobs, other.token_logprobs, strict=True)),
                           default=0.0) < 1e-4  # fmt: skip
    assert sum(len(s.token_logprobs) for s in shared) > 40


def test_shared_prompt_failures_stay_per_row(hf, monkeypatch, caplog):
    """A shared prompt whose pass fails fails its rows only; a target that fails its group's pass sends the
    group back to the unshared path, where it fails alone."""
    clean = [user("Name a color."), user("What is 2+2?")]
    clean_targets = ["Blue.", "Red, I think.", "Four.", "It is 4."]
    seen = {t for c in clean for t in hf.tokenizer(hf.render_prompt(c))["input_ids"]}
    seen |= {t for x in clean_targets for t in hf.tokenizer(x, add_special_tokens=False)["input_ids"]}
    poison = set(hf.tokenizer("xyzzy plugh", add_special_tokens=False)["input_ids"]) - seen
    assert poison
    bad = user("xyzzy plugh")
    rows = [(clean[0], "Blue."), (bad, "Hello"), (clean[1], "Four."), (clean[0], "xyzzy plugh and more"),
            (bad, "Hi there"), (clean[1], "It is 4."), (clean[0], "Red, I think.")]  # fmt: skip
    chats, targets = [c for c, _ in rows], [t for _, t in rows]
    expected = hf.score(chats, targets)
    forward = hf.model.forward

    def flaky(*args, **kwargs):
        if any(int(t) in poison for t in kwargs["input_ids"].flatten()):
            raise RuntimeError("boom")
        return forward(*args, **kwargs)

    monkeypatch.setattr(hf.model, "forward", flaky)
    with caplog.at_level(logging.WARNING, logger="legibility.models.hf"):
        out = hf.score(chats, targets)
    assert any("shared-prompt scoring" in r.message for r in caplog.records)
    assert [s.error for s in out] == [None, "RuntimeError: boom", None, "RuntimeError: boom", "RuntimeError: boom",
                                      None, None]  # fmt: skip
    for s, e in zip(out, expected, strict=True):
        if s.error is None:
            assert s.tokens == e.tokens
            assert max(abs(x - y) for x, y in zip(s.token_logprobs, e.token_logprobs, strict=True)) < 1e-4


def test_top_k_and_min_p_filter_the_draw(hf, greedy):
    """top_k 1 (or min_p 1: only the top token) at temperature 1 is greedy; unfiltered sampling is not; both are
    recorded with the sample."""
    chat = [user("Explain why the sky is blue.")]
    free = hf.generate(chat, Sampling(max_new_tokens=24, temperature=1.0, seed=3))[0]
    top1 = hf.generate(chat, Sampling(max_new_tokens=24, temperature=1.0, seed=3, top_k=1))[0]
    minp = hf.generate(chat, Sampling(max_new_tokens=24, temperature=1.0, seed=3, min_p=1.0))[0]
    assert top1.text == greedy and minp.text == greedy and free.text != greedy
    assert (top1.meta["decoding"]["top_k"], minp.meta["decoding"]["min_p"]) == (1, 1.0)


def test_top_k_then_top_p_then_min_p_by_hand():
    """The sampler's filters on one distribution: which tokens can be drawn, computed by hand."""
    from legibility.models.hf import _RowSampler

    probs = torch.tensor([[0.4, 0.3, 0.2, 0.06, 0.04]])

    def support(**kw) -> set[int]:
        sampler = _RowSampler(list(range(200)), 1.0, kw.pop("top_p", 1.0), **kw)
        drawn = sampler(torch.zeros((200, 1), dtype=torch.long), probs.log().repeat(200, 1))
        return set(drawn.argmax(-1).tolist())

    assert support() == {0, 1, 2, 3, 4}
    assert support(top_k=2) == {0, 1}
    assert support(top_p=0.5) == {0, 1}  # 0.4 < 0.5 <= 0.7
    assert support(top_k=2, top_p=0.5) == {0}  # top_p over what top_k kept: 0.5 <= 0.4 / 0.7
    assert support(min_p=0.45) == {0, 1, 2}  # p >= 0.45 x 0.4 = 0.18
    assert support(top_k=4, min_p=0.45) == {0, 1, 2}


def test_checkpoint_generation_config_does_not_leak(monkeypatch, greedy):
    """A checkpoint's generation_config (Qwen3 ships sampling settings; others suppress tokens) must not change
    decoding: what Sampling says is what runs."""
    from legibility.models import hf as hf_module

    tok = load_tokenizer("embedded")
    first = tok(greedy, add_special_tokens=False)["input_ids"][0]

    def loaded(*args, **kwargs):
        model = load_model(*args, **kwargs)
        model.generation_config.suppress_tokens = [first]
        model.generation_config.do_sample, model.generation_config.top_k = True, 1
        return model

    monkeypatch.setattr(hf_module, "load_model", loaded)
    other = HFChatModel("embedded", batch_size=4)
    assert other.generate([user("Explain why the sky is blue.")], Sampling(max_new_tokens=24))[0].text == greedy
