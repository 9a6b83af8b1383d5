"""DPO + LoRA training: loss mapping, data checks, chat-template prefixes, and end-to-end runs (tiny models)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from legibility.config import REFERENCE_TARGET_MODULES, ExperimentConfig, TrainConfig
from legibility.errors import LegibilityError
from legibility.train import (
    last_checkpoint,
    length_report,
    read_pairs,
    run_training,
)

FIXTURES = Path(__file__).parent / "fixtures"
TRAIN = FIXTURES / "train_pairs_train.jsonl"
VAL = FIXTURES / "train_pairs_val.jsonl"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def embedded_dir() -> str:
    """The embedded model as an HF checkpoint (converted once per machine, ~20 s; then < 1 s)."""
    from legibility.models import resolve_model

    return resolve_model("embedded")


# ------------------------------------------------------------------------------------------ config / mapping


def test_reference_loss_mapping():
    t = TrainConfig()
    assert t.trl_loss() == (["sigmoid_norm", "sft"], [1.0, 0.5])
    assert t.beta == 0.3 and t.effective_batch_size == 8 and t.max_length == 40960
    assert TrainConfig(normalize_by_length=False, rpo_alpha=0).trl_loss() == (["sigmoid"], [1.0])
    assert TrainConfig(loss_type=["ipo"]).trl_loss() == (["ipo"], [1.0])


def test_loss_names_match_installed_trl():
    """Our list of loss names is TRL's: a TRL upgrade that renames one fails here, not mid-run."""
    import inspect

    from trl.trainer import dpo_trainer

    src = inspect.getsource(dpo_trainer.DPOTrainer._compute_loss)
    for name in ("sigmoid_norm", "sft", "sigmoid"):
        assert f'loss_type == "{name}"' in src


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"loss_type": ["sigmoid", "nope"]}, "unknown loss type"),
        ({"loss_type": ["sigmoid"], "loss_weights": [1.0, 2.0]}, "one weight per"),
        ({"lora_r": 0}, "lora_r"),
        ({"learning_rate": 1e-5, "lerning_rate": 1}, "lerning_rate"),
    ],
)
def test_bad_train_config(kwargs, msg):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=msg):
        TrainConfig(**kwargs)


def test_read_pairs_names_file_line_field(tmp_path):
    lines = TRAIN.read_text().splitlines()
    bad = json.loads(lines[1])
    del bad["chosen"]
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join([lines[0], json.dumps(bad)]) + "\n")
    with pytest.raises(LegibilityError, match=r"bad\.jsonl:2: TrainPair\.chosen"):
        read_pairs(p)


# ------------------------------------------------------------------------------------------ tokenization


def _trl_split(tok, pair: dict) -> tuple[list[int], list[int], list[int]]:
    """Tokenize exactly as TRL 1.16's DPOTrainer._prepare_dataset does for conversational pairs."""
    from trl.data_utils import _tokenize, common_prefix_length

    prompt = _tokenize(tok, pair["prompt"], add_generation_prompt=True)["input_ids"]
    full = _tokenize(tok, pair["prompt"] + pair["chosen"])["input_ids"]
    return prompt, full, full[common_prefix_length(prompt, full) :]


def _assert_prefix(tok, end: str) -> None:
    for line in TRAIN.read_text().splitlines():
        pair = json.loads(line)
        prompt, full, completion = _trl_split(tok, pair)
        assert full[: len(prompt)] == prompt, "prompt tokens are not a prefix of prompt+completion"
        assert tok.decode(completion) == pair["chosen"][0]["content"] + end


def test_prefix_embedded_tokenizer(embedded_dir):
    from legibility.models import load_tokenizer

    _assert_prefix(load_tokenizer(embedded_dir), "<|im_end|>\n")


@pytest.mark.parametrize("template", ["qwen3", "qwen3_training"])
def test_prefix_qwen3_templates(tiny_qwen3, template):
    """Qwen3's template rewrites the think block (strip + re-add newlines); our completions round-trip."""
    from legibility.models import load_tokenizer
    from legibility.train import resolve_chat_template

    tok = load_tokenizer(str(tiny_qwen3), resolve_chat_template(template))
    _assert_prefix(tok, "<|im_end|>\n")


def test_length_report_counts_drops_and_truncation(embedded_dir):
    from legibility.models import load_tokenizer

    tok = load_tokenizer(embedded_dir)
    pairs = read_pairs(TRAIN)
    keep, rep = length_report(pairs, tok, max_length=40)
    # SmolLM's template adds a default system turn: ~30 tokens; explicit system prompts are shorter than that
    assert rep["pairs"] == 8 and rep["kept"] == len(keep)
    assert rep["truncated"] == rep["kept"] > 0
    keep, rep = length_report(pairs, tok, max_length=10)
    assert rep["dropped_prompt_too_long"] == 8 and keep == []


# ------------------------------------------------------------------------------------------ tiny Qwen3


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory) -> Path:
    """A 2-layer random Qwen3 and a byte-level BPE tokenizer trained offline, with Qwen3's chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    from legibility.train import resolve_chat_template

    out = tmp_path_factory.mktemp("tiny_qwen3")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    text = [json.loads(ln)["chosen"][0]["content"] for ln in TRAIN.read_text().splitlines()] * 5
    text += ["user assistant system What is the answer? Think step by step."] * 5
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(text, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", additional_special_tokens=specials
    )
    tok.chat_template = resolve_chat_template("qwen3").read_text()
    tok.save_pretrained(out)
    cfg = Qwen3Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=512, tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    Qwen3ForCausalLM(cfg).save_pretrained(out)
    return out


def _cfg(model: str, run_dir: Path, **train) -> ExperimentConfig:
    base = {
        "train_file": str(TRAIN), "eval_file": str(VAL), "max_length": 256, "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1, "per_device_eval_batch_size": 4, "gradient_checkpointing": False,
        "learning_rate": 1e-3, "save_steps": 2, "logging_steps": 1,
    }  # fmt: skip
    return ExperimentConfig(name="t", run_dir=str(run_dir), model=model, train={**base, **train})


def test_train_tiny_qwen3_per_transform_eval_and_adapters(tiny_qwen3, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = _cfg(str(tiny_qwen3), tmp_path, max_steps=3, eval_steps=2, chat_template="qwen3_training")
    out = run_training(cfg)
    assert out == tmp_path / "train"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == 3 and summary["loss_type"] == ["sigmoid_norm", "sft"]
    logs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    train_logs = [r for r in logs if "loss" in r]
    assert [r["step"] for r in train_logs] == [1, 2, 3]
    for key in ("rewards/margins", "rewards/accuracies", "rewards/chosen", "logps/chosen", "learning_rate"):
        assert key in train_logs[-1]
    merged = {k for r in logs for k in r}
    for split in ("all", "shuffle_words", "drop_sentences"):
        for m in ("loss", "rewards/accuracies", "rewards/margins"):
            assert f"eval_{split}_{m}" in merged, f"eval_{split}_{m}"
    assert summary["final_eval"]["eval_all_rewards/accuracies"] is not None  # the last step is evaluated too
    for path in (out / "checkpoint-2", out / "adapter"):
        ac = json.loads((path / "adapter_config.json").read_text())
        assert (ac["r"], ac["lora_alpha"], ac["lora_dropout"]) == (16, 16, 0.0)
        assert sorted(ac["target_modules"]) == sorted(REFERENCE_TARGET_MODULES)
        assert (path / "adapter_model.safetensors").is_file()
        base = AutoModelForCausalLM.from_pretrained(tiny_qwen3)
        PeftModel.from_pretrained(base, path)
    assert (out / "adapter" / "tokenizer_config.json").is_file()
    with pytest.raises(LegibilityError, match="--resume"):
        run_training(cfg)


def test_train_reports_dropped_and_truncated(tiny_qwen3, tmp_path):
    from legibility.models import load_tokenizer
    from legibility.train import _chat_ids

    tok = load_tokenizer(str(tiny_qwen3))
    pairs = read_pairs(TRAIN)
    lens = sorted(len(_chat_ids(tok, [m.model_dump() for m in p.prompt], add_generation_prompt=True)) for p in pairs)
    limit = lens[-1]  # the longest prompts (with a system turn) reach it and are dropped, the rest truncated
    cfg = _cfg(str(tiny_qwen3), tmp_path, max_steps=1, max_length=limit, eval_file=None)
    out = run_training(cfg)
    rep = json.loads((out / "summary.json").read_text())["data"]["train"]
    assert rep["dropped_prompt_too_long"] == lens.count(limit) > 0
    assert rep["truncated"] == rep["kept"] == 8 - rep["dropped_prompt_too_long"]


def test_unknown_target_module(tiny_qwen3, tmp_path):
    cfg = _cfg(str(tiny_qwen3), tmp_path, max_steps=1, lora_target_modules=["q_proj", "qkv_proj"])
    with pytest.raises(LegibilityError, match="qkv_proj"):
        run_training(cfg)


# ------------------------------------------------------------------------------------------ embedded, end to end


@pytest.mark.slow
def test_kill_and_resume_embedded(embedded_dir, tmp_path):
    """SIGKILL after checkpoint-2, resume: same final step as an uninterrupted epoch, metrics continue."""
    from peft import PeftModel

    from legibility.config import dump_config
    from legibility.models import load_model

    cfg = _cfg("embedded", tmp_path, per_device_train_batch_size=1, save_steps=1, eval_file=None,
               max_length=128, learning_rate=1e-4)  # fmt: skip
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(dump_config(cfg))
    out = tmp_path / "train"
    uninterrupted_steps = 8  # 8 pairs, batch 1, one epoch
    proc = subprocess.Popen(
        [sys.executable, "-m", "legibility.train", str(cfg_path), "--out", str(out)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 180
        while not (out / "checkpoint-2" / "trainer_state.json").is_file():
            if proc.poll() is not None:
                pytest.fail(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
            assert time.time() < deadline, "no checkpoint-2 within 3 minutes"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    ckpt = last_checkpoint(out)
    assert ckpt is not None and int(ckpt.name.split("-")[1]) < uninterrupted_steps, "killed too late"
    assert not (out / "summary.json").exists()

    run_training(cfg, out, resume=True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == uninterrupted_steps
    assert summary["resumed_from"] == str(ckpt)
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(ln)]  # fmt: skip
    assert steps == list(range(1, uninterrupted_steps + 1))
    for path in (out / "checkpoint-2", out / "adapter"):
        PeftModel.from_pretrained(load_model("embedded"), path)
