"""The `hf` backend: a local transformers model (plus an optional PEFT adapter), batched, on CPU or GPU.

It is the only backend with log-probs for any text (`score`), so surprisal, uplift and label probabilities for
trained adapters all go through it.

Batching: requests are sorted by prompt length and cut into batches of `batch_size` (less padding), left-padded
with an attention mask, and decoded by `model.generate` with the KV cache; results come back in request order.
Scoring shares prompts: rows whose prompt tokens are identical (a judge's labels after one chat, uplift's
targets after one CoT) run the prompt once and score their targets from its KV cache (`share_prompts`).

Determinism, honestly:
- Greedy (`temperature == 0`) is a pure function of the logits. A request decoded alone or in any batch gets the
  same tokens unless batch shape changes the floating-point logits enough to flip an argmax between two near-tied
  tokens. In float32 on CPU we observe identical texts (tested); in bfloat16 on a GPU long generations can
  diverge at such ties. Same batch, same machine, same versions: bit-identical.
- Sampling draws each token with the row's own `torch.Generator` (CPU, so the random stream does not depend on
  the device), inside a logits processor that returns a one-hot score; `generate` then runs greedily on that, so
  no row consumes another row's random numbers. The row's seed is sha256(Sampling.seed, rendered prompt), so a
  sample depends on the request alone, not on what else is batched, and identical requests get identical
  samples (as the openai backend and the request cache assume): for n samples of one chat, vary Sampling.seed.
  The same floating-point caveat as greedy applies: a different batch shape changes the probabilities by
  ~1e-7, which changes a token only when the uniform draw falls that close to a CDF boundary.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import peft
import torch
import transformers
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from legibility.errors import LegibilityError
from legibility.models import load_model, load_tokenizer, resolve_model
from legibility.models.base import Completion, Sampling, Scores
from legibility.records import Message

__all__ = ["HFChatModel", "continuation_prompt"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_Items = dict[int, tuple[list[int], list[int]]]
"""Scoring rows by request index: (prompt tokens, target tokens)."""

SENTINEL = "<<legibility-open-assistant-turn-7f3a>>"
"""Stands in for the assistant content so the text before it is the open turn, whatever the template appends."""

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".index.json")


def _as_dicts(chat: Sequence[Message | dict[str, str]]) -> list[dict[str, str]]:
    return [m if isinstance(m, dict) else {"role": m.role, "content": m.content} for m in chat]


def continuation_prompt(tokenizer: PreTrainedTokenizerBase, chat: Sequence[Message | dict[str, str]],
                        **template_kwargs: Any) -> tuple[str, str]:  # fmt: skip
    """The prompt text for continuing `chat`'s last (assistant) message, and the rule that built it.

    The open turn is the chat rendered with a sentinel as the assistant content, cut at the sentinel: no
    end-of-turn token after it. Templates that rewrite finished assistant turns are reconciled with the
    generation prompt, because the model continues what it would have seen while writing the content:
    - "generation_prompt": the open turn extends the generation prompt (e.g. Qwen3 writes an empty think block
      into finished turns); the content follows the generation prompt, as it did when it was generated;
    - "open_turn": the open turn equals the generation prompt, or the generation prompt forces text that the
      content already starts with (e.g. DeepSeek-R1's "<think>\\n");
    - "forced_prefix": the generation prompt forces text the content lacks; the content follows it;
    - "sentinel": the two renderings disagree otherwise; the sentinel cut is used as is.
    A content that opens its own think block (C2 prefill) replaces an empty one that the chosen prefix ends with
    (Qwen3 with enable_thinking false writes "<think>\n\n</think>\n\n"), so the model never sees two think
    blocks in one turn; the rule then gets "+think" (e.g. "open_turn+think").
    """
    msgs = _as_dicts(chat)
    if not msgs or msgs[-1]["role"] != "assistant":
        raise LegibilityError("continue_ needs a chat whose last message is a (partial) assistant message")
    head, partial = msgs[:-1], msgs[-1]["content"]
    gen = tokenizer.apply_chat_template(head, tokenize=False, add_generation_prompt=True, **template_kwargs)
    full = tokenizer.apply_chat_template(
        [*head, {"role": "assistant", "content": SENTINEL}], tokenize=False, add_generation_prompt=False,
        **template_kwargs,
    )  # fmt: skip
    cut = full.find(SENTINEL)
    if cut < 0:
        raise LegibilityError("the chat template drops the assistant message's content; cannot continue it")
    open_turn = full[:cut]
    if open_turn == gen:
        head, rule = open_turn, "open_turn"
    elif open_turn.startswith(gen):
        head, rule = gen, "generation_prompt"
    elif gen.startswith(open_turn):
        forced = gen[len(open_turn) :]
        if partial.startswith(forced) or (forced.strip() and partial.lstrip().startswith(forced.strip())):
            head, rule = open_turn, "open_turn"
        else:
            head, rule = gen, "forced_prefix"
    else:
        head, rule = open_turn, "sentinel"
    empty = _EMPTY_THINK.search(head)
    if empty is not None and partial.lstrip().startswith("<think>"):
        return head[: empty.start()] + partial, f"{rule}+think"
    return head + partial, rule


_EMPTY_THINK = re.compile(r"<think>\s*</think>\s*$")
"""An empty think block closing a prompt (Qwen3's generation prompt with thinking off)."""


def _short_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _files_digest(folder: Path, names: Callable[[Path], bool], content: bool) -> str | None:
    """Hash of a folder's matching files: names + sizes (cheap, for multi-GB weights) or full content (adapters,
    where two adapters of the same rank always have the same sizes)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and names(p)) if folder.is_dir() else []
    if not files:
        return None
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}\0{p.stat().st_size}\0".encode())
        if content:
            with p.open("rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()[:16]


def _request_seed(seed: int, prompt: str) -> int:
    digest = hashlib.sha256(f"{seed}\0{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class HFChatModel:
    """A `ChatModel` on a local transformers checkpoint, optionally with a PEFT adapter on top.

    `model` is anything `resolve_model` takes ("embedded", a folder, a hub id); `chat_template` replaces the
    model's template (a .jinja path, or the template text itself); `enable_thinking` and `chat_template_kwargs`
    are passed to templates that read them (Qwen3). The checkpoint's generation_config is replaced by a bare one
    (its end and padding tokens only): decoding is what `Sampling` says, nothing the checkpoint ships (Qwen3's
    top_k 20, suppressed tokens) slips in. `max_score_tokens` bounds rows x target tokens per scoring pass,
    since the logits for every target position are held at once (vocab floats per token). `share_prompts` lets
    `score` run a prompt shared by several rows once and score their targets from its KV cache (same log-probs up
    to float rounding).
    """

    supports_scoring = True

    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        batch_size: int = 8,
        dtype: torch.dtype | str | None = None,
        chat_template: str | None = None,
        enable_thinking: bool | None = None,
        device: str | None = None,
        max_score_tokens: int = 8192,
        share_prompts: bool = True,
        chat_template_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if batch_size < 1:
            raise LegibilityError(f"batch_size must be >= 1, got {batch_size}")
        self.name = model if adapter is None else f"{model}+adapter:{adapter}"
        self.batch_size = batch_size
        self.max_score_tokens = max_score_tokens
        self.share_prompts = share_prompts
        self.enable_thinking = enable_thinking
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

        path = resolve_model(model)
        is_template_text = chat_template is not None and ("{{" in chat_template or "{%" in chat_template)
        self.tokenizer = load_tokenizer(path, None if is_template_text else chat_template)
        if is_template_text:
            self.tokenizer.chat_template = chat_template
        kwargs = {"device_map": str(self.device)} if self.device.type == "cuda" else {}
        base = load_model(path, dtype, **kwargs)
        if self.device.type != "cuda":
            base = base.to(self.device)
        self._base = base
        self.model = base
        if adapter is not None:
            self.model = peft.PeftModel.from_pretrained(base, adapter)
            if self.model.active_peft_config.is_prompt_learning:  # virtual tokens own the cache: nothing to share
                self.share_prompts = False
        self.model.eval()
        params = inspect.signature(base.forward).parameters
        self._logits_to_keep = "logits_to_keep" in params
        self._cache_arg = "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5.x

        text_config = base.config.get_text_config()
        self.max_positions: int | None = getattr(text_config, "max_position_embeddings", None)
        gen_eos = base.generation_config.eos_token_id
        eos = {gen_eos} if isinstance(gen_eos, int) else set(gen_eos or ())
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_ids = sorted(eos)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        # transformers fills every field our GenerationConfig leaves unset from the model's: start from nothing
        base.generation_config = GenerationConfig(
            bos_token_id=base.generation_config.bos_token_id, eos_token_id=self.eos_ids, pad_token_id=self.pad_id
        )

        template = self.tokenizer.chat_template if isinstance(self.tokenizer.chat_template, str) else None
        self.meta: dict[str, Any] = {
            "backend": "hf",
            "model": model,
            "revision": getattr(base.config, "_commit_hash", None)
            or _files_digest(Path(path), lambda p: p.name.endswith(_WEIGHT_SUFFIXES), content=False),
            "adapter": adapter,
            "adapter_sha256": None if adapter is None else _files_digest(
                Path(adapter), lambda p: p.name.startswith("adapter_"), content=True),
            "chat_template_sha256": None if template is None else _short_hash(template.encode()),
            "enable_thinking": enable_thinking,
            "chat_template_kwargs": self.chat_template_kwargs or None,
            "dtype": str(base.dtype).removeprefix("torch."),
            "device": str(self.device),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "peft": peft.__version__},
        }  # fmt: skip

    # -- rendering -------------------------------------------------------------------------------------------

    def _template_kwargs(self) -> dict[str, Any]:
        thinking = {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}
        return {**self.chat_template_kwargs, **thinking}

    def render_prompt(self, chat: Sequence[Message | dict[str, str]]) -> str:
        """The chat as the model sees it before replying (template + generation prompt)."""
        return self.tokenizer.apply_chat_template(
            _as_dicts(chat), tokenize=False, add_generation_prompt=True, **self._template_kwargs()
        )

    def render_continuation(self, chat: Sequence[Message | dict[str, str]]) -> str:
        """The prompt `continue_` decodes from: the open assistant turn ending in the partial content."""
        return continuation_prompt(self.tokenizer, chat, **self._template_kwargs())[0]

    def _encode(self, text: str) -> list[int]:
        # Templates write their own special tokens (BOS included); adding them again would double them.
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _too_long(self, n: int) -> str | None:
        if self.max_positions is not None and n > self.max_positions:
            return f"input has {n} tokens, over the model's {self.max_positions} positions"
        return None

    # -- batching --------------------------------------------------------------------------------------------

    def _batches(self, order: list[int], rows_cost: Callable[[list[int]], int] | None = None) -> list[list[int]]:
        """Consecutive slices of `order` (sorted by length) of at most batch_size rows (and of cost <= budget)."""
        out: list[list[int]] = []
        for i in order:
            if (
                out
                and len(out[-1]) < self.batch_size
                and (rows_cost is None or rows_cost([*out[-1], i]) <= self.max_score_tokens)
            ):
                out[-1].append(i)
            else:
                out.append([i])
        return out

    def _isolated(
        self, batch: list[int], run: Callable[[list[int]], list[T]], fail: Callable[[int, str], T]
    ) -> list[T]:
        """Run a batch; on an exception retry its items one by one, so one bad item cannot sink the others."""
        try:
            return run(batch)
        except Exception as e:  # OOM, index errors, template errors: all become per-item error records
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(batch) == 1:
                log.warning("hf: request %d failed: %s: %s", batch[0], type(e).__name__, e)
                return [fail(batch[0], f"{type(e).__name__}: {e}")]
            out: list[T] = []
            for i in batch:
                out += self._isolated([i], run, fail)
            return out

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[r, width - len(row) :] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- generation ------------------------------------------------------------------------------------------

    def generate(self, chats: list[list[Message]], sampling: Sampling) -> list[Completion]:
        """One completion per chat, in order; failed items carry `error`."""
        prompts: list[str | Exception] = []
        for chat in chats:
            try:
                prompts.append(self.render_prompt(chat))
            except Exception as e:
                prompts.append(e)
        return self._complete(prompts, sampling, {})

    def continue_(self, chats: list[list[Message]], sampling: Sampling) -> list[Completion]:
        """Continue each chat's last (assistant) message; the completion holds only the new text."""
        prompts: list[str | Exception] = []
        rules: list[str | None] = []
        for chat in chats:
            try:
                text, rule = continuation_prompt(self.tokenizer, chat, **self._template_kwargs())
                prompts.append(text)
                rules.append(rule)
            except Exception as e:
                prompts.append(e)
                rules.append(None)
        out = self._complete(prompts, sampling, {"continue": True})
        return [
            Completion(c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens, c.error,
                       {**c.meta, "continue_rule": rule})
            for c, rule in zip(out, rules, strict=True)
        ]  # fmt: skip

    def _complete(self, prompts: list[str | Exception], sampling: Sampling, extra: dict[str, Any]) -> list[Completion]:
        sample = sampling.temperature > 0
        decoding = {**asdict(sampling), "stop": list(sampling.stop), "mode": "sample" if sample else "greedy"}
        seeds = [_request_seed(sampling.seed, p) if sample and isinstance(p, str) else None for p in prompts]

        def meta(i: int, **more: Any) -> dict[str, Any]:
            return {**self.meta, **extra, "decoding": {**decoding, "request_seed": seeds[i]}, **more}

        results: list[Completion | None] = [None] * len(prompts)
        ids: dict[int, list[int]] = {}
        for i, p in enumerate(prompts):
            if isinstance(p, Exception):
                results[i] = Completion("", error=f"{type(p).__name__}: {p}", meta=meta(i))
                continue
            toks = self._encode(p)
            problem = self._too_long(len(toks) + 1) if toks else "empty prompt"
            if problem:
                results[i] = Completion("", prompt_tokens=len(toks), error=problem, meta=meta(i))
            else:
                ids[i] = toks

        def run(batch: list[int]) -> list[Completion]:
            return self._generate_batch([ids[i] for i in batch], [seeds[i] for i in batch], sampling,
                                        [meta(i) for i in batch])  # fmt: skip

        def fail(i: int, msg: str) -> Completion:
            return Completion("", prompt_tokens=len(ids[i]), error=msg, meta=meta(i))

        for batch in self._batches(sorted(ids, key=lambda i: (len(ids[i]), i))):
            for i, c in zip(batch, self._isolated(batch, run, fail), strict=True):
                results[i] = c
        return results  # type: ignore[return-value]

    def _generate_batch(self, rows: list[list[int]], seeds: list[int | None], sampling: Sampling,
                        metas: list[dict[str, Any]]) -> list[Completion]:  # fmt: skip
        input_ids, mask = self._left_pad(rows)
        width = input_ids.shape[1]
        caps = [sampling.max_new_tokens if self.max_positions is None else
                min(sampling.max_new_tokens, self.max_positions - len(r)) for r in rows]  # fmt: skip
        stopper = _RowStopper(self.tokenizer, width, [s for s in sampling.stop if s], caps)
        processors = LogitsProcessorList()
        if sampling.temperature > 0:
            processors.append(_RowSampler([s or 0 for s in seeds], sampling.temperature, sampling.top_p,
                                          sampling.top_k, sampling.min_p))  # fmt: skip
        config = GenerationConfig(
            max_new_tokens=max(caps), do_sample=False, num_beams=1, eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id, repetition_penalty=1.0, no_repeat_ngram_size=0, min_new_tokens=0,
            use_cache=True,
        )  # fmt: skip  # neutral values set explicitly: the model's generation_config must not leak into decoding
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                generation_config=config,
                logits_processor=processors,
                stopping_criteria=StoppingCriteriaList([stopper]),
            )
        eos = set(self.eos_ids)
        completions = []
        for r, row in enumerate(rows):
            new = out[r, width:].tolist()
            limit = stopper.done_at.get(r, len(new))
            n = next((k + 1 for k, t in enumerate(new[:limit]) if t in eos), None)
            hit_eos = n is not None
            n = n if hit_eos else min(limit, len(new))
            text = self._decode_new(row, new[: n - 1] if hit_eos else new[:n])
            stop = _first_stop(text, sampling.stop)
            if stop is not None:
                text = text[: stop[0]]
            reason = "stop" if hit_eos or stop is not None else "length"
            completions.append(Completion(text, reason, len(row), n, None,
                                          {**metas[r], "stop_string": None if stop is None else stop[1]}))  # fmt: skip
        return completions

    def _decode_new(self, prompt: list[int], new: list[int]) -> str:
        """The new tokens' text as it reads after the prompt (decoding them alone can drop a leading space in
        SentencePiece tokenizers)."""
        full = self.tokenizer.decode(prompt + new, skip_special_tokens=True)
        head = self.tokenizer.decode(prompt, skip_special_tokens=True)
        return full[len(head) :] if full.startswith(head) else self.tokenizer.decode(new, skip_special_tokens=True)

    # -- scoring ---------------------------------------------------------------------------------------------

    def score(self, chats: list[list[Message]], targets: list[str]) -> list[Scores]:
        """Log-probs of each target's tokens as the assistant reply (after the generation prompt), in order.

        Target tokens are the suffix of tokenize(prompt + target) after tokenize(prompt), i.e. the tokenization
        the model would produce; if the prompt's tokens are not a prefix of that (a merge across the boundary),
        prompt and target are tokenized separately and concatenated.

        With `share_prompts`, rows whose prompt tokens are identical (a judge's label targets after one chat) run
        that prompt once and score their targets from its KV cache; rows with a prompt of their own are scored
        whole, prompt + target in one padded pass.
        """
        if len(chats) != len(targets):
            raise LegibilityError(f"score: {len(chats)} chats but {len(targets)} targets")
        results: list[Scores | None] = [None] * len(chats)
        items: _Items = {}
        encoded: dict[str, list[int]] = {}  # rendered prompt -> its tokens (judges repeat one chat per label)
        for i, (chat, target) in enumerate(zip(chats, targets, strict=True)):
            try:
                rendered = self.render_prompt(chat)
            except Exception as e:
                results[i] = Scores([], error=f"{type(e).__name__}: {e}")
                continue
            if not target:
                results[i] = Scores([], [])
                continue
            if rendered not in encoded:
                encoded[rendered] = self._encode(rendered)
            prompt, joint = encoded[rendered], self._encode(rendered + target)
            tgt = joint[len(prompt) :] if joint[: len(prompt)] == prompt else self._encode(target)
            problem = "empty prompt" if not prompt else self._too_long(len(prompt) + len(tgt))
            if problem:
                results[i] = Scores([], error=problem)
            else:
                items[i] = (prompt, tgt)

        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (prompt, _) in items.items():
            groups.setdefault(tuple(prompt) if self.share_prompts else (i,), []).append(i)
        shared = [g for g in groups.values() if len(g) > 1]
        alone = [g[0] for g in groups.values() if len(g) == 1]
        done = self._score_rows(alone, items)
        shared.sort(key=lambda g: (len(items[g[0]][0]), g[0]))
        for k in range(0, len(shared), self.batch_size):  # prompt passes of batch_size prompts, as a normal batch
            done.update(self._score_groups(shared[k : k + self.batch_size], items))
        for i, s in done.items():
            results[i] = s
        return results  # type: ignore[return-value]

    def _score_rows(self, rows: list[int], items: _Items) -> dict[int, Scores]:
        """Rows scored whole (prompt + target), length-sorted batches; a failing row fails alone."""

        def cost(batch: list[int]) -> int:
            return len(batch) * (max(len(items[i][1]) for i in batch) + 1)

        done: dict[int, Scores] = {}
        order = sorted(rows, key=lambda i: (len(items[i][0]) + len(items[i][1]), i))
        for batch in self._batches(order, cost):
            scored = self._isolated(batch, lambda b: self._score_batch([items[i] for i in b]),
                                    lambda i, msg: Scores([], error=msg))  # fmt: skip
            done.update(zip(batch, scored, strict=True))
        return done

    def _score_batch(self, rows: list[tuple[list[int], list[int]]]) -> list[Scores]:
        """One forward pass: left padding puts every target at the end, so only the last max_target+1 positions'
        logits are computed (`logits_to_keep`), and position ids restart at 0 after each row's padding."""
        input_ids, mask = self._left_pad([p + t for p, t in rows])
        keep = max(len(t) for _, t in rows) + 1
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask, "use_cache": False,
                                  "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}  # fmt: skip
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = keep
        with torch.inference_mode():
            logits = self.model(**kwargs).logits[:, -keep:]
            out = []
            for r, (_, tgt) in enumerate(rows):
                # position keep-1-k predicts the row's first target token (k target tokens end at the last position)
                lp = logits[r, keep - 1 - len(tgt) : keep - 1].float().log_softmax(-1)
                ids = torch.tensor(tgt, device=lp.device)
                vals = lp.gather(-1, ids[:, None]).squeeze(-1).tolist()
                out.append(Scores(vals, [self.tokenizer.decode([t]) for t in tgt]))
        return out

    def _score_groups(self, groups: list[list[int]], items: _Items) -> dict[int, Scores]:
        """Shared-prompt scoring of some groups; when it fails, each group alone, and a group that still fails
        is scored row by row the unshared way (so a bad target fails alone, as it would unshared)."""
        try:
            return self._shared_batch(groups, items)
        except Exception as e:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(groups) > 1:
                return {i: s for g in groups for i, s in self._score_groups([g], items).items()}
            log.warning("hf: shared-prompt scoring of requests %s failed (%s: %s); scoring them unshared",
                        groups[0], type(e).__name__, e)  # fmt: skip
            return self._score_rows(groups[0], items)

    def _shared_batch(self, groups: list[list[int]], items: _Items) -> dict[int, Scores]:
        """Each group's prompt runs once (left-padded batch of prompts, KV cache kept); its last logit scores every
        target's first token. Then the targets minus their last token (which predicts nothing), right-padded, run on
        a copy of the cache whose rows are their group's prompt (repeated), in passes of at most batch_size rows
        and max_score_tokens logit positions, like unshared batches. Targets of a group that differ only in their
        last token ("Score: 1".."Score: 9") feed the same tokens: that row runs once for all of them."""
        prompt_ids, mask = self._left_pad([items[g[0]][0] for g in groups])
        kwargs: dict[str, Any] = {"input_ids": prompt_ids, "attention_mask": mask, "use_cache": True,
                                  "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)}  # fmt: skip
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        lengths = mask.sum(-1)
        vals: dict[int, list[float]] = {}
        feeds: dict[tuple[int, tuple[int, ...]], list[int]] = {}  # (group, fed target tokens) -> its rows
        with torch.inference_mode():
            out = self.model(**kwargs)
            cache = getattr(out, self._cache_arg)
            first = out.logits[:, -1].float().log_softmax(-1)
            for k, g in enumerate(groups):
                for i in g:
                    tgt = items[i][1]
                    vals[i] = [first[k, tgt[0]].item()]
                    if len(tgt) > 1:
                        feeds.setdefault((k, tuple(tgt[:-1])), []).append(i)
            del out, first
            keys = sorted(feeds, key=lambda key: (len(key[1]), feeds[key][0]))

            def cost(batch: list[int]) -> int:  # logit positions held: one per fed token, plus the first token's
                return len(batch) * (max(len(keys[j][1]) for j in batch) + 1)

            for batch in self._batches(list(range(len(keys))), cost):
                sel = [keys[j] for j in batch]
                width = max(len(fed) for _, fed in sel)
                ids = torch.full((len(sel), width), self.pad_id, dtype=torch.long)
                tmask = torch.zeros((len(sel), width), dtype=torch.long)
                for r, (_, fed) in enumerate(sel):
                    ids[r, : len(fed)] = torch.tensor(fed, dtype=torch.long)
                    tmask[r, : len(fed)] = 1
                src = torch.tensor([k for k, _ in sel], device=self.device)
                positions = lengths[src][:, None] + torch.arange(width, device=self.device)[None, :]
                if self.max_positions is not None:  # only right padding can pass the end; its outputs are unused
                    positions = positions.clamp(max=self.max_positions - 1)
                logits = self.model(
                    input_ids=ids.to(self.device), attention_mask=torch.cat([mask[src], tmask.to(self.device)], -1),
                    position_ids=positions, use_cache=True, **{self._cache_arg: _cache_rows(cache, src)},
                ).logits  # fmt: skip
                for r, key in enumerate(sel):
                    lp = logits[r, : len(key[1])].float().log_softmax(-1)
                    for i in feeds[key]:
                        tail = torch.tensor(items[i][1][1:], device=lp.device)
                        vals[i] += lp.gather(-1, tail[:, None]).squeeze(-1).tolist()
                del logits
        return {i: Scores(vals[i], [self.tokenizer.decode([t]) for t in items[i][1]]) for g in groups for i in g}


def _cache_rows(cache: Any, rows: torch.Tensor) -> Any:
    """A cache holding `rows` of `cache` in that order (repeats allowed), for one more forward pass; `cache`
    itself is left as it was. Layers are copied shallowly: `batch_select_indices` gives each copy new tensors,
    and dynamic layers grow by concatenation into new tensors, never in place."""
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    out.batch_select_indices(rows)
    return out


def _first_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    found = [(text.find(s), s) for s in stops if s and s in text]
    return min(found) if found else None


class _RowStopper(StoppingCriteria):
    """Per-row stop: a stop string in the new text, or the row's own token cap (context limit). Records the
    number of new tokens at which each row stopped, since generate pads finished rows afterwards."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, width: int, stops: list[str], caps: list[int]) -> None:
        self.tokenizer, self.width, self.stops, self.caps = tokenizer, width, stops, caps
        self.window = max((len(s) for s in stops), default=0) + 4  # tokens; every token decodes to >= 1 char
        self.done_at: dict[int, int] = {}

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        n = input_ids.shape[1] - self.width
        # one device-to-host copy per step, and only when there are stop strings to look for
        tails = input_ids[:, max(self.width, input_ids.shape[1] - self.window) :].tolist() if self.stops else []
        for r in range(input_ids.shape[0]):
            if r in self.done_at:
                continue
            tail = self.tokenizer.decode(tails[r], skip_special_tokens=True) if tails else ""
            if n >= self.caps[r] or any(s in tail for s in self.stops):
                self.done_at[r] = n
        done = [r in self.done_at for r in range(input_ids.shape[0])]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _RowSampler(LogitsProcessor):
    """Temperature, top-k, top-p and min-p sampling with one CPU generator per row, returned as a one-hot score so
    that greedy `generate` emits the drawn token. The filters run in transformers' order (temperature, top-k,
    top-p over what top-k kept, min-p against the top token). Inverse-CDF sampling over the sorted distribution:
    one uniform per row per step, so each row's random stream is its own."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, top_k: int | None = None,
                 min_p: float = 0.0) -> None:  # fmt: skip
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature, self.top_p, self.top_k, self.min_p = temperature, top_p, top_k, min_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = (scores.float() / self.temperature).softmax(-1)
        sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
        if self.top_k is not None and self.top_k < sorted_p.shape[-1]:
            sorted_p[:, self.top_k :] = 0.0
        if self.top_p < 1.0:  # keep the smallest head whose mass (of what is left) reaches top_p
            mass = sorted_p.sum(-1, keepdim=True)
            sorted_p = sorted_p.masked_fill(sorted_p.cumsum(-1) - sorted_p >= self.top_p * mass, 0.0)
        if self.min_p > 0.0:
            sorted_p = sorted_p.masked_fill(sorted_p < self.min_p * sorted_p[:, :1], 0.0)
        cdf = sorted_p.cumsum(-1)
        u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in self.generators])
        target = (u.to(cdf.device) * cdf[:, -1].double()).to(cdf.dtype)[:, None]
        pos = torch.searchsorted(cdf, target, right=True)
        pos = torch.minimum(pos, (sorted_p > 0).sum(-1, keepdim=True) - 1)
        token = order.gather(-1, pos)
        return torch.full_like(scores, float("-inf")).scatter_(-1, token, 0.0)
