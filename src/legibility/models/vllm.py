"""The `vllm` backend: vLLM's offline engine (`vllm.LLM`) in this process, on GPUs (the `vllm` extra).

It reads requests exactly as the `hf` backend does, so the two can stand in for each other:
- Prompts are rendered and tokenized here, with the model's tokenizer (and the spec's `chat_template`), by the
  same rules as hf (`hf.continuation_prompt` for `continue_`), and reach vLLM as token ids: vLLM's own chat
  rendering never runs, so the prompt tokens are hf's.
- `score` uses hf's target tokenization (the suffix of tokenize(prompt + target) after tokenize(prompt)) and
  reads the target's log-probs from vLLM's prompt log-probs: one request of prompt + target tokens with
  `max_tokens=1, prompt_logprobs=0`, whose entry k is {token k: log p(token k | tokens < k)} (entry 0 is None).
  vLLM computes them from the raw logits (no temperature or penalties), as hf does.
- Sampling: each request gets hf's seed, sha256(Sampling.seed, rendered prompt), through vLLM's per-request
  seeded generator, so a sample depends on the request alone and identical requests get identical samples (vary
  Sampling.seed for several samples of one chat). The draws differ from hf's: same seed, other backend, other text.
  Greedy requests carry no seed. Top-k and min-p are Sampling's (off unless set); the rest (penalties) stay at
  vLLM's neutral defaults: the model's generation_config never leaks in, since every request brings its own
  SamplingParams.
- Failures: vLLM checks a whole `generate` call's prompts before it runs any, so lengths are checked here first
  (an over-long or empty prompt is an error record), and a call that raises is retried one request at a time, so
  one bad request becomes `Completion(error=...)` / `Scores(error=...)` and the rest still run.

Batching is vLLM's (continuous batching over a paged KV cache): each call hands vLLM all its requests at once.
Prefix caching is off by default: with it on, vLLM's prompt log-probs have depended on which requests ran before
(vllm-project/vllm#42019), and scores must not. Turn it on (`prefix_caching=True`) for generation-only use.
Determinism: vLLM's kernels are not batch-invariant, so greedy texts can differ at near-ties between calls with
other companions, and from hf's (bfloat16 vs float32 besides).
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from legibility.errors import LegibilityError
from legibility.models import load_tokenizer, resolve_model
from legibility.models.base import Completion, Sampling, Scores
from legibility.models.hf import (
    _WEIGHT_SUFFIXES,
    _as_dicts,
    _files_digest,
    _request_seed,
    _short_hash,
    continuation_prompt,
)
from legibility.records import Message

if TYPE_CHECKING:
    from legibility.config import ModelSpec

__all__ = [
    "VLLMChatModel",
    "adapter_rank",
    "import_vllm",
    "release_vllm_state",
    "sampling_kwargs",
    "target_logprobs",
    "to_completion",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

INSTALL_HINT = "pip install 'legibility[vllm]'"
ADAPTER_NAME = "adapter"
ADAPTER_ID = 1  # vLLM identifies a LoRA by this int (> 0) within one engine; we load one adapter per engine


def import_vllm() -> ModuleType:
    """The `vllm` module, or a LegibilityError that says how to install it."""
    try:
        import vllm
    except ImportError as e:
        raise LegibilityError(
            f"the vllm backend needs vLLM, which is not installed ({type(e).__name__}: {e}): {INSTALL_HINT} on a "
            "machine with a CUDA GPU; or use backend: hf, or backend: openai against a `vllm serve` server"
        ) from e
    return vllm


def _lora_request_class(vllm: ModuleType) -> Any:
    try:
        from vllm.lora.request import LoRARequest

        return LoRARequest
    except ImportError:
        cls = getattr(vllm, "LoRARequest", None)
        if cls is None:
            raise LegibilityError("this vLLM has no LoRARequest (vllm.lora.request); cannot load an adapter") from None
        return cls


# -- pure helpers (tested without vLLM) ------------------------------------------------------------------------


def sampling_kwargs(sampling: Sampling, max_tokens: int, seed: int | None) -> dict[str, Any]:
    """`vllm.SamplingParams` keyword arguments for one request: the Sampling's settings, the rest vLLM's neutral
    defaults. Greedy (temperature 0) gets top_p 1 and no seed; stop strings are cut from the text, as hf does.
    Top-k and min-p are passed only when set (sampling): off is vLLM's own default, whichever spelling (0 or -1) its
    version takes for it."""
    greedy = sampling.temperature <= 0
    filters: dict[str, Any] = {}
    if not greedy and sampling.top_k is not None:
        filters["top_k"] = int(sampling.top_k)
    if not greedy and sampling.min_p > 0:
        filters["min_p"] = float(sampling.min_p)
    return {
        "n": 1,
        "temperature": 0.0 if greedy else float(sampling.temperature),
        "top_p": 1.0 if greedy else float(sampling.top_p),
        **filters,
        "max_tokens": int(max_tokens),
        "seed": None if greedy else seed,
        "stop": [s for s in sampling.stop if s],
        "include_stop_str_in_output": False,
        "skip_special_tokens": True,
    }


SCORE_KWARGS: dict[str, Any] = {"n": 1, "temperature": 0.0, "max_tokens": 1, "prompt_logprobs": 0}
"""One sampled token (vLLM needs at least one) and, per prompt position, the log-prob of the prompt's own token."""


def target_logprobs(prompt_logprobs: Sequence[Mapping[int, Any] | None] | None, start: int,
                    target: Sequence[int]) -> list[float]:  # fmt: skip
    """The log-probs of `target` (token ids at prompt positions start, start+1, ...) from vLLM's prompt log-probs.

    `prompt_logprobs[k]` maps token ids to `Logprob` objects (or bare floats) for position k, and holds the prompt's
    own token k whatever the number of alternatives asked for; entry 0 is None (nothing predicts the first token).
    Raises ValueError when an entry is missing, so a mismatch never passes as a score.
    """
    if prompt_logprobs is None:
        raise ValueError("vLLM returned no prompt log-probs (prompt_logprobs was not set?)")
    if start < 1:
        raise ValueError(f"target starts at position {start}; it needs a non-empty prompt before it")
    if len(prompt_logprobs) < start + len(target):
        raise ValueError(f"{len(prompt_logprobs)} prompt log-prob entries for {start} prompt + {len(target)} target "
                         "tokens")  # fmt: skip
    out = []
    for k, token in enumerate(target):
        entry = prompt_logprobs[start + k]
        if entry is None or token not in entry:
            raise ValueError(f"no log-prob for target token {k} (id {token}) at prompt position {start + k}")
        value = entry[token]
        out.append(float(getattr(value, "logprob", value)))
    return out


def to_completion(output: Any, prompt_tokens: int, meta: dict[str, Any]) -> Completion:
    """A `Completion` from one `vllm.RequestOutput`. vLLM's `token_ids` include the end token when one stopped the
    request (hf counts it too); `stop_reason` is the stop string that matched (a str), an int stop token or None."""
    outputs = getattr(output, "outputs", None) or []
    if not outputs:
        return Completion("", prompt_tokens=prompt_tokens, error="vLLM returned no output sequence", meta=meta)
    o = outputs[0]
    reason = o.finish_reason
    n = len(o.token_ids or ())
    if reason not in ("stop", "length"):
        return Completion(o.text or "", None, prompt_tokens, n, f"vLLM finished the request with {reason!r}", meta)
    stop = o.stop_reason if isinstance(o.stop_reason, str) else None
    return Completion(o.text, reason, prompt_tokens, n, None, {**meta, "stop_string": stop})


def adapter_rank(adapter: str | Path) -> int | None:
    """The largest LoRA rank in a PEFT adapter folder's adapter_config.json (r and any rank_pattern), or None."""
    path = Path(adapter) / "adapter_config.json"
    if not path.is_file():
        return None
    cfg = json.loads(path.read_text(encoding="utf-8"))
    ranks = [cfg.get("r"), *(cfg.get("rank_pattern") or {}).values()]
    ranks = [r for r in ranks if isinstance(r, int)]
    return max(ranks) if ranks else None


def _isolated(batch: list[int], run: Callable[[list[int]], list[T]], fail: Callable[[int, str], T]) -> list[T]:
    """Run the batch in one call; if it raises, run its items one by one so one bad item cannot sink the others."""
    try:
        return run(batch)
    except Exception as e:  # engine-side validation, OOM, a bad adapter: each becomes a per-item error record
        if len(batch) == 1:
            log.warning("vllm: request %d failed: %s: %s", batch[0], type(e).__name__, e)
            return [fail(batch[0], f"{type(e).__name__}: {e}")]
        log.warning("vllm: a call of %d requests failed (%s: %s); retrying them one by one", len(batch),
                    type(e).__name__, e)  # fmt: skip
        out: list[T] = []
        for i in batch:
            out += _isolated([i], run, fail)
        return out


def _engine_max_len(llm: Any) -> int | None:
    for owner in (llm, getattr(llm, "llm_engine", None)):
        n = getattr(getattr(owner, "model_config", None), "max_model_len", None)
        if isinstance(n, int):
            return n
    return None


def _engine_dtype(llm: Any) -> str | None:
    for owner in (llm, getattr(llm, "llm_engine", None)):
        dtype = getattr(getattr(owner, "model_config", None), "dtype", None)
        if dtype is not None:
            return str(dtype).removeprefix("torch.")
    return None


def _revision(path: str) -> str | None:
    """As hf records it: the hub commit of the config, else a digest of the weight files' names and sizes."""
    try:
        from transformers import AutoConfig

        commit = getattr(AutoConfig.from_pretrained(path), "_commit_hash", None)
    except Exception:  # a hub id offline, a config transformers cannot read: fall back to the folder
        commit = None
    return commit or _files_digest(Path(path), lambda p: p.name.endswith(_WEIGHT_SUFFIXES), content=False)


def release_vllm_state() -> None:
    """vLLM's process-wide clean-up between engines (`vllm.distributed.parallel_state`'s destroy_model_parallel and
    destroy_distributed_environment, where this vLLM has them), then gc and the CUDA cache. Never raises: a
    clean-up that fails is logged, and the next engine reports its own error if memory is still held."""
    try:
        from vllm.distributed import parallel_state
    except Exception:
        parallel_state = None
    for name in ("destroy_model_parallel", "destroy_distributed_environment"):
        fn = getattr(parallel_state, name, None)
        if callable(fn):
            try:
                fn()
            except Exception as e:
                log.warning("vllm: %s failed: %s: %s", name, type(e).__name__, e)
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception as e:
        log.warning("vllm: emptying the CUDA cache failed: %s: %s", type(e).__name__, e)


class VLLMChatModel:
    """A `ChatModel` on `vllm.LLM`, optionally with one PEFT LoRA adapter (vLLM's LoRA support).

    `model` is anything `resolve_model` takes ("embedded", a folder, a hub id); `chat_template` replaces the
    model's template (a .jinja path, or the template text); `enable_thinking` is passed to templates that read it.
    `tensor_parallel_size`, `gpu_memory_utilization`, `max_model_len` (None: the model's), `dtype` (None: "auto",
    the checkpoint's) and `seed` go to `vllm.LLM`; `max_lora_rank` must be >= the adapter's rank (checked here).
    `engine_kwargs` are passed to `vllm.LLM` as they are (e.g. {"enforce_eager": True}).
    """

    supports_scoring = True

    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        *,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        max_lora_rank: int = 16,
        dtype: str | None = None,
        chat_template: str | None = None,
        enable_thinking: bool | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        prefix_caching: bool = False,
        seed: int = 0,
        engine_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        vllm = import_vllm()
        self.name = model if adapter is None else f"{model}+adapter:{adapter}"
        self.enable_thinking = enable_thinking
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self._SamplingParams = vllm.SamplingParams

        if adapter is not None:
            if not Path(adapter).is_dir():
                raise LegibilityError(f"{self.name}: adapter folder {adapter} not found (train first)")
            rank = adapter_rank(adapter)
            if rank is not None and rank > max_lora_rank:
                raise LegibilityError(
                    f"{self.name}: the adapter's LoRA rank is {rank}, over max_lora_rank {max_lora_rank}; "
                    f"set max_lora_rank: {rank} (or more) in the model spec"
                )

        path = resolve_model(model)
        is_template_text = chat_template is not None and ("{{" in chat_template or "{%" in chat_template)
        self.tokenizer = load_tokenizer(path, None if is_template_text else chat_template)
        if is_template_text:
            self.tokenizer.chat_template = chat_template

        kwargs: dict[str, Any] = {
            "model": path, "tokenizer": path, "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization, "dtype": dtype or "auto", "seed": seed,
            "enable_prefix_caching": prefix_caching, "enable_lora": adapter is not None,
        }  # fmt: skip
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if adapter is not None:
            kwargs |= {"max_lora_rank": max_lora_rank, "max_loras": 1}
        kwargs |= dict(engine_kwargs or {})
        self.llm = vllm.LLM(**kwargs)
        self.lora_request = None
        if adapter is not None:
            self.lora_request = _lora_request_class(vllm)(ADAPTER_NAME, ADAPTER_ID, str(Path(adapter).resolve()))
        self.max_model_len = _engine_max_len(self.llm) or max_model_len

        template = self.tokenizer.chat_template if isinstance(self.tokenizer.chat_template, str) else None
        versions = {"vllm": getattr(vllm, "__version__", None)}
        for mod in ("torch", "transformers"):
            try:
                versions[mod] = __import__(mod).__version__
            except Exception:
                versions[mod] = None
        self.meta: dict[str, Any] = {
            "backend": "vllm",
            "model": model,
            "revision": _revision(path),
            "adapter": adapter,
            "adapter_sha256": None if adapter is None else _files_digest(
                Path(adapter), lambda p: p.name.startswith("adapter_"), content=True),
            "chat_template_sha256": None if template is None else _short_hash(template.encode()),
            "enable_thinking": enable_thinking,
            "chat_template_kwargs": self.chat_template_kwargs or None,
            "dtype": _engine_dtype(self.llm) or dtype,
            "tensor_parallel_size": tensor_parallel_size,
            "prefix_caching": prefix_caching,
            "versions": versions,
        }  # fmt: skip

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> VLLMChatModel:
        """From a config's `ModelSpec` (backend: vllm); `batch_size` has no use here (vLLM schedules itself)."""
        return cls(
            spec.model, adapter=spec.adapter, tensor_parallel_size=spec.tensor_parallel_size,
            gpu_memory_utilization=spec.gpu_memory_utilization, max_model_len=spec.max_model_len,
            max_lora_rank=spec.max_lora_rank, dtype=spec.dtype, chat_template=spec.chat_template,
            enable_thinking=spec.enable_thinking, chat_template_kwargs=spec.chat_template_kwargs,
        )  # fmt: skip

    def close(self) -> None:
        """Free the engine and its GPU memory now, not whenever garbage collection gets to it: several engines are
        built one after another in one process (generators, then readers, then judges), and each reserves most of
        the GPU. Shuts the engine down, drops it, tears down vLLM's model-parallel groups and distributed state
        (else the next engine finds them initialised), then gc.collect() and torch.cuda.empty_cache(). Safe to
        call twice; ModelPool calls it before loading the next model and at the end."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        for owner in (engine, getattr(engine, "engine_core", None)):
            shutdown = getattr(owner, "shutdown", None)
            if callable(shutdown):
                try:
                    shutdown()
                except Exception as e:
                    log.warning("vllm: engine shutdown failed: %s: %s", type(e).__name__, e)
                break
        del llm, engine
        release_vllm_state()

    # -- rendering (as hf) -----------------------------------------------------------------------------------

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
        if self.max_model_len is not None and n > self.max_model_len:
            return f"input has {n} tokens, over the engine's max_model_len {self.max_model_len}"
        return None

    def _generate(self, prompts: list[list[int]], params: Any) -> list[Any]:
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False,
                                 lora_request=self.lora_request)  # fmt: skip
        if len(outs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outs)} outputs for {len(prompts)} prompts")
        return outs

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

        def meta(i: int) -> dict[str, Any]:
            return {**self.meta, **extra, "decoding": {**decoding, "request_seed": seeds[i]}}

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

        def cap(i: int) -> int:
            room = None if self.max_model_len is None else self.max_model_len - len(ids[i])
            return sampling.max_new_tokens if room is None else max(1, min(sampling.max_new_tokens, room))

        def run(batch: list[int]) -> list[Completion]:
            params = [self._SamplingParams(**sampling_kwargs(sampling, cap(i), seeds[i])) for i in batch]
            outs = self._generate([ids[i] for i in batch], params)
            return [to_completion(o, len(ids[i]), meta(i)) for i, o in zip(batch, outs, strict=True)]

        def fail(i: int, msg: str) -> Completion:
            return Completion("", prompt_tokens=len(ids[i]), error=msg, meta=meta(i))

        order = list(ids)
        if order:
            for i, c in zip(order, _isolated(order, run, fail), strict=True):
                results[i] = c
        return results  # type: ignore[return-value]

    # -- scoring ---------------------------------------------------------------------------------------------

    def score(self, chats: list[list[Message]], targets: list[str]) -> list[Scores]:
        """Log-probs of each target's tokens as the assistant reply (after the generation prompt), in order.

        Target tokens are the suffix of tokenize(prompt + target) after tokenize(prompt), as in hf; if the prompt's
        tokens are not a prefix of that (a merge across the boundary), prompt and target are tokenized apart.
        """
        if len(chats) != len(targets):
            raise LegibilityError(f"score: {len(chats)} chats but {len(targets)} targets")
        results: list[Scores | None] = [None] * len(chats)
        items: dict[int, tuple[list[int], list[int]]] = {}
        for i, (chat, target) in enumerate(zip(chats, targets, strict=True)):
            try:
                rendered = self.render_prompt(chat)
            except Exception as e:
                results[i] = Scores([], error=f"{type(e).__name__}: {e}")
                continue
            if not target:
                results[i] = Scores([], [])
                continue
            prompt, joint = self._encode(rendered), self._encode(rendered + target)
            tgt = joint[len(prompt) :] if joint[: len(prompt)] == prompt else self._encode(target)
            # + 1: vLLM samples one token after the prompt, which must fit too
            problem = "empty prompt" if not prompt else self._too_long(len(prompt) + len(tgt) + 1)
            if problem:
                results[i] = Scores([], error=problem)
            else:
                items[i] = (prompt, tgt)

        def one(output: Any, prompt: list[int], tgt: list[int]) -> Scores:
            try:
                values = target_logprobs(getattr(output, "prompt_logprobs", None), len(prompt), tgt)
            except ValueError as e:
                return Scores([], error=str(e))
            return Scores(values, [self.tokenizer.decode([t]) for t in tgt])

        def run(batch: list[int]) -> list[Scores]:
            outs = self._generate([items[i][0] + items[i][1] for i in batch], self._SamplingParams(**SCORE_KWARGS))
            return [one(o, *items[i]) for i, o in zip(batch, outs, strict=True)]

        order = list(items)
        if order:
            scored = _isolated(order, run, lambda i, msg: Scores([], error=msg))
            for i, s in zip(order, scored, strict=True):
                results[i] = s
        return results  # type: ignore[return-value]
