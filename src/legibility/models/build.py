"""From a config's `ModelSpec` to a cached `ChatModel`, loading each distinct checkpoint once per process.

Readers, judges and generators often share a checkpoint (the demo uses SmolLM2-135M for all three): `ModelPool`
keeps one loaded backend per (backend, model, adapter, ...) and wraps each in the evaluation's disk cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from legibility.config import ModelSpec
from legibility.errors import LegibilityError
from legibility.models.base import ChatModel
from legibility.models.cached import CachedModel

__all__ = ["ModelPool", "resolve_spec"]


def resolve_spec(spec: ModelSpec, default_model: str, run_dir: str | Path) -> ModelSpec:
    """`{model}` and `{run_dir}` filled in."""

    def fill(v: str | None) -> str | None:
        return None if v is None else v.replace("{model}", default_model).replace("{run_dir}", str(run_dir))

    return spec.model_copy(update={"model": fill(spec.model), "adapter": fill(spec.adapter)})


def _load(spec: ModelSpec) -> ChatModel:
    """The backend for `spec`; a hub id that cannot be fetched is a one-line error naming the spec."""
    from legibility.hub import hub_errors

    with hub_errors(f"{spec.name}: model", spec.model or ""):
        return _load_backend(spec)


def _load_backend(spec: ModelSpec) -> ChatModel:
    if spec.backend == "hf":
        from legibility.models.hf import HFChatModel

        if spec.adapter is not None and not Path(spec.adapter).is_dir():
            raise LegibilityError(f"{spec.name}: adapter folder {spec.adapter} not found (train first)")
        return HFChatModel(
            spec.model, adapter=spec.adapter, batch_size=spec.batch_size, dtype=spec.dtype,
            chat_template=spec.chat_template, enable_thinking=spec.enable_thinking,
            chat_template_kwargs=spec.chat_template_kwargs, max_score_tokens=spec.max_score_tokens,
        )  # fmt: skip
    if spec.backend == "openai":
        from legibility.models.openai_api import OpenAIChatModel

        if not spec.base_url:
            raise LegibilityError(f"{spec.name}: the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1)")
        return OpenAIChatModel(
            spec.base_url, spec.model, api_key_env=spec.api_key_env, concurrency=spec.concurrency,
            max_retries=spec.max_retries, timeout_s=spec.timeout_s, extra_body=spec.extra_body,
            supports_continue=spec.supports_continue, chat_template_kwargs=spec.template_kwargs(),
            keeps_think_blocks=getattr(spec, "keeps_think_blocks", False),
        )  # fmt: skip
    from legibility.models.vllm import VLLMChatModel

    return VLLMChatModel.from_spec(spec)


def identity(spec: ModelSpec, model: ChatModel) -> dict[str, Any]:
    """What makes two models answer alike (the cache key's model part): never the spec's name or the device."""
    meta = getattr(model, "meta", None) or {}
    ident: dict[str, Any] = {"backend": spec.backend, "model": spec.model, "adapter": spec.adapter}
    for k in ("revision", "adapter_sha256", "chat_template_sha256", "enable_thinking", "chat_template_kwargs", "dtype"):
        if meta.get(k) is not None:
            ident[k] = meta[k]
    if spec.backend == "openai":
        ident |= {"base_url": spec.base_url, "extra_body": spec.extra_body}
    return ident


class ModelPool:
    """Loads each distinct model once; `get(spec)` returns it behind the disk cache in `cache_dir`."""

    def __init__(self, cache_dir: str | Path, default_model: str = "embedded", run_dir: str | Path = ".") -> None:
        self.cache_dir = Path(cache_dir)
        self.default_model = default_model
        self.run_dir = run_dir
        self._models: dict[tuple, CachedModel] = {}
        self._retired = {"calls": 0, "requests": 0, "hits": 0}  # counts of the models closed to make room

    def get(self, spec: ModelSpec) -> CachedModel:
        spec = resolve_spec(spec, self.default_model, self.run_dir)
        key = tuple(sorted((k, repr(v)) for k, v in spec.model_dump(exclude={"name"}).items() if k != "role"))
        if key not in self._models:
            if spec.backend != "openai":  # a local model needs the GPU memory a vLLM engine holds
                self._evict_vllm()
            inner = _load(spec)
            self._models[key] = CachedModel(inner, self.cache_dir, identity=identity(spec, inner))
        return self._models[key]

    def _evict_vllm(self) -> None:
        """A vLLM engine reserves most of the GPU's memory (gpu_memory_utilization), so the next local model (a
        reader after the generators, a judge after the readers) is loaded only after the engine is closed
        explicitly (`VLLMChatModel.close`), not left to garbage collection. Its cache stays on disk, its counts
        in `counts()`."""
        for key, m in list(self._models.items()):
            if (m.meta or {}).get("backend") == "vllm" or type(m.inner).__name__ == "VLLMChatModel":
                close = getattr(m.inner, "close", None)
                if close is not None:
                    close()
                for k in self._retired:
                    self._retired[k] += getattr(m, k)
                del self._models[key]

    @property
    def models(self) -> list[CachedModel]:
        return list(self._models.values())

    def counts(self) -> dict[str, int]:
        """Backend calls, requests sent and cache hits, summed over every model (a rerun: requests 0)."""
        ms = self.models
        return {k: self._retired[k] + sum(getattr(m, k) for m in ms) for k in ("calls", "requests", "hits")}

    def flush(self) -> None:
        """Every model's cache entries on disk (they are written by a writer thread)."""
        for m in self.models:
            m.flush()

    def close(self) -> None:
        self.flush()
        for m in self.models:
            close = getattr(m.inner, "close", None)
            if close is not None:
                close()
