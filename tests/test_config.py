"""The experiment YAML schema: shipped configs validate, typos and bad overrides fail with file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from legibility.config import ExperimentConfig, dump_config, load_config
from legibility.errors import LegibilityError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", ["demo.yaml", "qwen3-8b-legibility-dpo.yaml"])
def test_shipped_configs_validate_and_round_trip(name, tmp_path):
    cfg = load_config(CONFIGS / name)
    again = load_config(_write(tmp_path, dump_config(cfg)))
    assert again == cfg


def test_reference_config_is_the_reference_recipe():
    cfg = load_config(CONFIGS / "qwen3-8b-legibility-dpo.yaml")
    t = cfg.train
    assert cfg.model == "Qwen/Qwen3-8B" and cfg.seed == 42
    assert (t.beta, t.rpo_alpha, t.normalize_by_length) == (0.3, 0.5, True)
    assert t.trl_loss() == (["sigmoid_norm", "sft"], [1.0, 0.5])
    assert (t.learning_rate, t.lr_scheduler_type, t.num_cycles, t.warmup_ratio) == (5e-6, "cosine", 0.5, 0.05)
    assert t.effective_batch_size == 8 and t.num_train_epochs == 1 and t.max_steps == -1
    assert (t.max_grad_norm, t.weight_decay, t.seed, t.max_length, t.packing) == (1.0, 0.0, 42, 40960, False)
    assert (t.lora_r, t.lora_alpha, t.lora_dropout) == (16, 16, 0.0)
    assert t.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    # the defaults are the reference too, so a minimal config trains the reference recipe
    assert ExperimentConfig(name="x").train == t.model_copy(
        update={
            "chat_template": None,
            "attn_implementation": None,
            "save_steps": 100,
            "eval_steps": None,
            "report_to": ["none"],
        }
    )


def test_global_seed_is_the_sections_default(tmp_path):
    cfg = load_config(_write(tmp_path, "name: a\nseed: 7\ntrain: {seed: 9}\n"))
    assert (cfg.seed, cfg.pairs.seed, cfg.train.seed) == (7, 7, 9)
    assert load_config(_write(tmp_path, dump_config(cfg))) == cfg


def test_defaults_and_run_dir(tmp_path):
    cfg = load_config(_write(tmp_path, "name: abc\n"))
    assert cfg.run_dir == "runs/abc" and cfg.model == "embedded"
    assert cfg.path(cfg.train.train_file) == Path("runs/abc/pairs/train.jsonl")
    assert cfg.path(cfg.together.train_file) == Path("runs/abc/pairs/together_train.jsonl")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: a\ntrain: {lerning_rate: 1.0e-5}\n", "exp.yaml: train.lerning_rate: unknown field"),
        ("name: a\nbogus: 1\n", "exp.yaml: bogus: unknown field"),
        ("name: a\ndata: {benchmarks: [{name: gsm8k, path: x}]}\n", "exp.yaml: data.benchmarks.0.name: Input"),
        ("name: a\ndata: {traces: [{path: x, generatr: y}]}\n", "data.traces.0.generatr: unknown field"),
        ("name: a\npairs: {val_fraction: 2}\n", "exp.yaml: pairs.val_fraction:"),
        ("name: a\ntogether: {n_evals: -1}\n", "exp.yaml: together.n_evals:"),
        ("train: {}\n", "exp.yaml: name: Field required"),
        ("name: a\ntrain: [1, 2\n", "not valid YAML"),
        ("- 1\n", "mapping at the top level"),
    ],
)
def test_errors_are_one_line_with_file_and_field(tmp_path, text, expected):
    with pytest.raises(LegibilityError) as e:
        load_config(_write(tmp_path, text))
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_overrides(tmp_path):
    p = _write(tmp_path, "name: a\ntrain: {beta: 0.1}\n")
    cfg = load_config(
        p,
        [
            "train.beta=0.5",
            "train.lora_target_modules=[q_proj, v_proj]",
            "train.report_to=tensorboard",
            "pairs.transforms.shuffle_words=0",
            "data.benchmarks=[{name: math, path: m.jsonl, levels: [5]}]",
            "name=b",
            "train.eval_file=null",
        ],
    )
    assert cfg.train.beta == 0.5 and cfg.train.lora_target_modules == ["q_proj", "v_proj"]
    assert cfg.train.report_to == ["tensorboard"] and cfg.pairs.transforms == {"shuffle_words": 0}
    assert cfg.data.benchmarks[0].levels == [5] and cfg.train.eval_file is None
    assert cfg.run_dir == "runs/b"


@pytest.mark.parametrize(
    "item, expected",
    [
        ("train.betta=1", "exp.yaml: --set 'train.betta=1': unknown key 'train.betta'"),
        ("trian.beta=1", "unknown key 'trian.beta'"),
        ("train.beta.x=1", "unknown key 'train.beta.x'"),
        ("train.beta", "expected dotted.key=value"),
        ("train.beta=abc", "exp.yaml: train.beta: Input should be a valid number"),
    ],
)
def test_bad_overrides(tmp_path, item, expected):
    with pytest.raises(LegibilityError, match=None) as e:
        load_config(_write(tmp_path, "name: a\n"), [item])
    assert expected in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(LegibilityError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
