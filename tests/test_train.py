"""DPO + LoRA training: config mapping, data checks, chat-template prefixes, end-to-end runs (tiny models).

The loss itself is checked numerically in test_loss.py."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from legibility.config import REFERENCE_TARGET_MODULES, ExperimentConfig, TrainConfig
from legibility.errors import LegibilityError
from legibility.train import (
    batch_plan,
    last_checkpoint,
    length_report,
    read_pairs,
    run_training,
    train_from_config,
    world_size,
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
    assert TrainConfig(trl={"loss_type": ["ipo"]}).trl_loss() == (["ipo"], [1.0])
    assert TrainConfig(trl={"loss_type": "hinge", "loss_weights": [2]}).trl_loss() == (["hinge"], [2.0])


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"lora_r": 0}, "lora_r"),
        ({"learning_rate": 1e-5, "lerning_rate": 1}, "lerning_rate"),
        ({"lora_target_modules": []}, "lora_target_modules"),
    ],
)
def test_bad_train_config(kwargs, msg):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=msg):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        (
            {"trl": {"padding_fre": True}},
            r"^train\.trl\.padding_fre: not a DPOConfig field \(did you mean padding_free\?\)$",
        ),
        ({"trl": {"seed": 1}}, r"^train\.trl\.seed: set by train\.seed"),
        ({"trl": {"output_dir": "x"}}, r"^train\.trl\.output_dir: set by --out"),
        ({"trl": {"lr_scheduler_kwargs": {"num_cycles": 2}}}, r"num_cycles: set by train\.num_cycles"),
        ({"lora": {"target_modules": ["q_proj"]}}, r"^train\.lora\.target_modules: set by train\.lora_target_modules"),
    ],
)
def test_bad_library_options_fail_before_anything_loads(kwargs, msg, tmp_path):
    with pytest.raises(LegibilityError, match=msg):
        TrainConfig(**kwargs).check()
    with pytest.raises(LegibilityError, match=msg):  # also when run_training is called directly, before any model
        run_training(TrainConfig(**kwargs), "no-such-model", tmp_path / "out", TRAIN)
    assert not (tmp_path / "out").exists()


def test_read_pairs_names_file_line_field(tmp_path):
    lines = TRAIN.read_text().splitlines()
    bad = json.loads(lines[1])
    del bad["chosen"]
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join([lines[0], json.dumps(bad)]) + "\n")
    with pytest.raises(LegibilityError, match=r"bad\.jsonl:2: TrainPair\.chosen"):
        read_pairs(p)


def test_eval_sample_spreads_over_transforms():
    from legibility.train import stratified_sample

    groups = ["a"] * 10 + ["b"] * 2 + ["c"] * 5
    picked = stratified_sample(list(range(17)), groups, 7, seed=1)
    assert sorted(Counter(groups[i] for i in picked).values()) == [2, 2, 3] and picked == sorted(set(picked))
    assert picked == stratified_sample(list(range(17)), groups, 7, seed=1)
    assert stratified_sample([3, 4], groups, 5, seed=1) == [3, 4]


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


def _trl_lengths(tok, path: Path) -> list[int]:
    """Each pair's longer side, prompt+completion, as TRL 1.16 tokenizes it."""
    out = []
    for line in path.read_text().splitlines():
        pair = json.loads(line)
        out.append(max(len(_trl_split(tok, {**pair, "chosen": pair[side]})[1]) for side in ("chosen", "rejected")))
    return out


def test_length_report_drops_long_pairs(embedded_dir):
    from legibility.models import load_tokenizer

    tok = load_tokenizer(embedded_dir)
    pairs = read_pairs(TRAIN)
    lengths = _trl_lengths(tok, TRAIN)
    limit = sorted(lengths)[len(lengths) // 2]
    keep, rep = length_report(pairs, tok, max_length=limit)
    assert keep == [i for i, n in enumerate(lengths) if n <= limit]  # the lengths TRL's sequences will have
    assert rep["kept"] == len(keep) and rep["dropped_too_long"] == 8 - len(keep) > 0
    assert sum(rep["dropped_by_transform"].values()) == rep["dropped_too_long"]
    assert rep["longest_kept_tokens"] <= limit < rep["longest_tokens"] == max(lengths)
    keep, rep = length_report(pairs, tok, max_length=10)
    assert keep == [] and rep["dropped_too_long"] == 8


def test_length_report_truncates_as_the_card_counts(embedded_dir):
    """long_pairs truncate: every pair over the limit stays (TRL cuts its end) and is counted, exactly those."""
    from legibility.models import load_tokenizer

    tok = load_tokenizer(embedded_dir)
    pairs = read_pairs(TRAIN)
    lengths = _trl_lengths(tok, TRAIN)
    limit = sorted(lengths)[len(lengths) // 2]
    keep, rep = length_report(pairs, tok, max_length=limit, policy="truncate")
    assert keep == list(range(8)) and rep["dropped_too_long"] == 0
    assert rep["truncated"] == sum(n > limit for n in lengths) > 0
    assert rep["truncated_ids"] == [p.id for p, n in zip(pairs, lengths, strict=True) if n > limit]
    assert rep["longest_kept_tokens"] == limit < rep["longest_tokens"]
    keep, rep = length_report(pairs, tok, max_length=10, policy="truncate")  # the prompt alone fills 10 tokens:
    assert keep == [] and rep["dropped_too_long"] == 8 and rep["truncated"] == 0  # TRL would filter them out


@pytest.mark.parametrize("world, accumulation", [(1, 8), (2, 4), (4, 2), (8, 1)])
def test_the_launchers_world_size_sets_the_accumulation(monkeypatch, world, accumulation):
    """WORLD_SIZE (torchrun, accelerate launch) and the per-device batch make the card's global batch of 8."""
    monkeypatch.setenv("WORLD_SIZE", str(world))
    plan = batch_plan(TrainConfig(), world_size())
    assert plan == {"world_size": world, "per_device": 1, "gradient_accumulation_steps": accumulation, "global": 8}
    monkeypatch.delenv("WORLD_SIZE")
    assert world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(LegibilityError, match=r"^train\.batch_size: 8 \(the global batch\) is not a multiple"):
        batch_plan(TrainConfig(), world_size())


def test_a_batch_that_does_not_divide_fails_before_the_model_loads(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "3")
    r = subprocess.run(
        [sys.executable, "-m", "legibility.train", str(_cfg_file(tmp_path, _cfg("no-such-model", tmp_path)))],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )  # fmt: skip
    assert r.returncode == 2 and r.stderr.startswith("error: train.batch_size: 2 (the global batch) is not a multiple")
    assert r.stderr.count("\n") == 1, r.stderr


def _cfg_file(tmp_path: Path, cfg: ExperimentConfig) -> Path:
    from legibility.config import dump_config

    path = tmp_path / "cfg.yaml"
    path.write_text(dump_config(cfg))
    return path


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


def _cfg(model: str, run_dir: Path, trl: dict | None = None, **train) -> ExperimentConfig:
    """One process, one micro-batch per step (the global batch is the per-device one unless `batch_size` is set)."""
    per_device = train.get("per_device_train_batch_size", 2)
    base = {"train_file": str(TRAIN), "eval_file": str(VAL), "max_length": 256, "per_device_train_batch_size": 2,
            "batch_size": per_device, "learning_rate": 1e-3}  # fmt: skip
    base_trl = {"per_device_eval_batch_size": 4, "activation_checkpointing": False, "save_steps": 2}
    return ExperimentConfig(
        name="t", run_dir=str(run_dir), model=model, train={**base, **train, "trl": {**base_trl, **(trl or {})}}
    )


NORM = ("rewards_norm/accuracies", "rewards_norm/margins", "rewards_norm/chosen", "rewards_norm/rejected")
SUMMED = ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")
PREF = ("logps_norm/accuracies", "logps_norm/margins", "logps/accuracies", "logps/margins")


def test_train_tiny_qwen3_per_transform_eval_and_adapters(tiny_qwen3, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = _cfg(str(tiny_qwen3), tmp_path, max_steps=3, chat_template="qwen3_training", trl={"eval_steps": 2})
    out = train_from_config(cfg)
    assert out == tmp_path / "train"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == 3 and summary["loss_type"] == ["sigmoid_norm", "sft"]
    assert summary["transforms"] == ["sentence_deletion_30", "sentence_shuffle"]
    logs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    train_logs = [r for r in logs if "loss" in r]
    assert [r["step"] for r in train_logs] == [1, 2, 3]
    for key in (*NORM, *SUMMED, *PREF, "logps/chosen", "learning_rate"):
        assert key in train_logs[-1], key
    # one evaluation pass per evaluation: at step 0 (before any update), at eval_steps, and at the end
    evals = [r for r in logs if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, 2, 3]
    for r in evals:
        assert r["eval_pairs"] == 4 and r["eval_sentence_shuffle_pairs"] == r["eval_sentence_deletion_30_pairs"] == 2
        for prefix in ("eval_", "eval_sentence_shuffle_", "eval_sentence_deletion_30_"):
            for m in (*NORM, *SUMMED, *PREF):
                assert prefix + m in r, prefix + m
        for m in (*NORM, *SUMMED, *PREF):  # the overall numbers are the pair-weighted means of the transforms'
            parts = (r[f"eval_{t}_{m}"] * r[f"eval_{t}_pairs"] for t in ("sentence_shuffle", "sentence_deletion_30"))
            assert sum(parts) / 4 == pytest.approx(r[f"eval_{m}"], abs=1e-9)
    step0 = evals[0]
    assert all(step0[f"eval_{m}"] == 0 for m in NORM + SUMMED)  # the policy is the reference before any update
    assert step0["eval_logps_norm/chosen"] < 0 and step0["eval_logps/chosen"] < step0["eval_logps_norm/chosen"]
    assert summary["initial_eval"] == {k: v for k, v in step0.items() if k.startswith("eval_")}
    assert summary["final_eval"]["eval_rewards_norm/margins"] == evals[-1]["eval_rewards_norm/margins"] != 0
    assert summary["trl_args"]["max_length"] is None and summary["data"]["eval"]["kept"] == 4
    prov = summary["provenance"]
    assert [(f["path"], f["sha256"]) for f in prov["inputs"]] == [
        (str(f), hashlib.sha256(f.read_bytes()).hexdigest()) for f in (TRAIN, VAL)
    ]
    assert prov["seed"] == 42 and prov["config"]["train"]["max_length"] == 256 and prov["packages"]["trl"]
    assert "commit" in prov["git"]
    for path in (out / "checkpoint-2", out / "adapter"):
        ac = json.loads((path / "adapter_config.json").read_text())
        assert (ac["r"], ac["lora_alpha"], ac["lora_dropout"]) == (16, 16, 0.0)
        assert sorted(ac["target_modules"]) == sorted(REFERENCE_TARGET_MODULES)
        assert (path / "adapter_model.safetensors").is_file()
        base = AutoModelForCausalLM.from_pretrained(tiny_qwen3)
        PeftModel.from_pretrained(base, path)
    assert (out / "adapter" / "tokenizer_config.json").is_file()
    with pytest.raises(LegibilityError, match="--resume"):
        train_from_config(cfg)


def test_train_drops_long_pairs_never_truncates(tiny_qwen3, tmp_path):
    from legibility.models import load_tokenizer

    lengths = _trl_lengths(load_tokenizer(str(tiny_qwen3)), TRAIN)
    limit = sorted(lengths)[len(lengths) // 2]
    cfg = _cfg(str(tiny_qwen3), tmp_path, max_steps=1, max_length=limit, eval_file=None)
    out = train_from_config(cfg)
    summary = json.loads((out / "summary.json").read_text())
    rep = summary["data"]["train"]
    assert rep == json.loads((out / "data_report.json").read_text())["train"]
    assert rep["dropped_too_long"] == sum(n > limit for n in lengths) > 0 and rep["kept"] == 8 - rep["dropped_too_long"]
    assert summary["trl_args"]["max_length"] is None  # the collator never truncates what is left
    with pytest.raises(LegibilityError, match=r"every pair is longer than train\.max_length=10 tokens"):
        train_from_config(_cfg(str(tiny_qwen3), tmp_path / "b", max_steps=1, max_length=10, eval_file=None))


def test_train_truncates_long_pairs_the_cards_way(tiny_qwen3, tmp_path):
    """long_pairs truncate: TRL's collator cuts at max_length (keep_start), and the count is the card's note."""
    from legibility.models import load_tokenizer
    from legibility.report.training import section
    from legibility.results import _train_log

    lengths = _trl_lengths(load_tokenizer(str(tiny_qwen3)), TRAIN)
    limit = sorted(lengths)[len(lengths) // 2]
    cfg = _cfg(str(tiny_qwen3), tmp_path, max_steps=1, max_length=limit, eval_file=None, long_pairs="truncate",
               batch_size=4)  # fmt: skip
    out = train_from_config(cfg)
    summary = json.loads((out / "summary.json").read_text())
    rep = summary["data"]["train"]
    n = sum(n > limit for n in lengths)
    assert rep["kept"] == 8 and rep["truncated"] == n > 0 and rep["note"] == f"{n} of 8 training samples truncated"
    assert (summary["trl_args"]["max_length"], summary["trl_args"]["truncation_mode"]) == (limit, "keep_start")
    assert summary["batch"] == {"world_size": 1, "per_device": 2, "gradient_accumulation_steps": 2, "global": 4}
    assert summary["trl_args"]["gradient_accumulation_steps"] == 2 and summary["effective_batch_size"] == 4

    res = SimpleNamespace(train_summary=summary, train_log=_train_log(out / "metrics.jsonl"))
    (facts, *_) = section(res).children[0].blocks  # what the report says of the run, first
    assert "global batch 4 pairs per optimizer step (2 per device × 2 accumulation steps × 1 processes)" in facts.text
    assert f"{n} of 8 training samples truncated at {limit} tokens (train file)" in facts.text


def test_unknown_target_module(tiny_qwen3, tmp_path):
    cfg = _cfg(str(tiny_qwen3), tmp_path, max_steps=1, lora_target_modules=["q_proj", "qkv_proj"])
    with pytest.raises(LegibilityError, match="qkv_proj"):
        train_from_config(cfg)


def test_missing_pairs_name_the_command_that_builds_them(tmp_path):
    cfg = ExperimentConfig(name="t", run_dir=str(tmp_path / "run"))
    with pytest.raises(LegibilityError) as e:
        train_from_config(cfg, config_path="exp.yaml")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path}/run/pairs/train.jsonl: no such file") and "\n" not in msg
    assert f"legibility pairs build {tmp_path}/run/traces.jsonl --out {tmp_path}/run/pairs --config exp.yaml" in msg
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "traces.jsonl").write_text("")
    with pytest.raises(LegibilityError, match=r"no such file; build the pairs first: legibility pairs build"):
        train_from_config(cfg, config_path="exp.yaml")
    # the command line: one line on stderr, exit code 2
    config = tmp_path / "exp.yaml"
    config.write_text(f"name: t\nrun_dir: {tmp_path}/run\n")
    r = subprocess.run([sys.executable, "-m", "legibility", "train", str(config)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    run = tmp_path / "run"
    assert f"legibility pairs build {run}/traces.jsonl --out {run}/pairs --config {config}" in r.stderr


# ------------------------------------------------------------------------------------------ embedded, end to end


@pytest.mark.slow
def test_kill_and_resume_embedded(embedded_dir, tmp_path):
    """SIGKILL after checkpoint-2, resume: same final step as an uninterrupted epoch, metrics continue."""
    from peft import PeftModel

    from legibility.config import dump_config
    from legibility.models import load_model

    cfg = _cfg("embedded", tmp_path, per_device_train_batch_size=1, trl={"save_steps": 1}, eval_file=None,
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

    train_from_config(cfg, out, resume=True)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["global_step"] == uninterrupted_steps
    assert summary["resumed_from"] == str(ckpt)
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(ln)]  # fmt: skip
    assert steps == list(range(1, uninterrupted_steps + 1))
    for path in (out / "checkpoint-2", out / "adapter"):
        PeftModel.from_pretrained(load_model("embedded"), path)


@pytest.mark.slow
def test_two_real_processes_train_the_global_batch(embedded_dir, tmp_path):
    """torchrun starts two gloo processes on CPU (world size 2): accumulation 1 makes the global batch of 2, the
    two ranks agree, and summary.json records how (~1 minute on 2 cores)."""
    torchrun = Path(sys.executable).parent / "torchrun"
    cfg = _cfg("embedded", tmp_path, per_device_train_batch_size=1, batch_size=2, max_steps=2, eval_file=None,
               max_length=128, learning_rate=1e-4, trl={"save_steps": 100})  # fmt: skip
    r = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "-m", "legibility.train", str(_cfg_file(tmp_path, cfg)),
         "--set", "train.trl.use_cpu=true"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "train" / "summary.json").read_text())
    assert summary["batch"] == {"world_size": 2, "per_device": 1, "gradient_accumulation_steps": 1, "global": 2}
    assert summary["global_step"] == 2 and summary["trl_args"]["use_cpu"] is True
    assert r.stderr.count("trained 2 steps") == 2  # both ranks ran to the end
