"""The experiment YAML schema: shipped configs validate, typos and bad overrides fail with file and field."""

from __future__ import annotations

import subprocess
import sys
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
    assert (t.batch_size, t.per_device_train_batch_size) == (8, 1)  # the card's batch of 8, global
    # the card truncated long pairs at the trainer: kept whole by the pairs stage, truncated and counted in training
    assert (cfg.pairs.long_pairs, t.long_pairs) == ("keep", "truncate")
    # the defaults are the reference recipe too (long pairs: ours, never losing a final answer)
    default = t.model_copy(update={"chat_template": None, "trl": {}, "long_pairs": "drop"})
    assert ExperimentConfig(name="x").train == default


def test_recipe_reaches_the_real_dpo_and_lora_configs():
    """The recipe fields arrive in TRL's and PEFT's own objects under their names (what the trainer gets)."""
    t = load_config(CONFIGS / "qwen3-8b-legibility-dpo.yaml").train
    args = t.dpo_config("out", bf16=False)
    assert (args.beta, args.loss_type, args.loss_weights) == (0.3, ["sigmoid_norm", "sft"], [1.0, 0.5])
    assert (args.learning_rate, args.lr_scheduler_type) == (5e-6, "cosine")
    assert args.lr_scheduler_kwargs == {"num_cycles": 0.5}
    assert (args.warmup_steps, args.per_device_train_batch_size, args.gradient_accumulation_steps) == (0.05, 1, 8)
    assert (args.seed, args.data_seed, args.max_grad_norm, args.weight_decay) == (42, 42, 1.0, 0.0)
    assert (args.max_length, args.truncation_mode) == (40960, "keep_start")  # the card's: TRL cuts the end
    assert t.model_copy(update={"long_pairs": "drop"}).dpo_config("out", bf16=False).max_length is None
    assert (args.save_steps, args.eval_steps, args.eval_on_start, args.report_to) == (0.1, 0.1, True, ["tensorboard"])
    assert args.model_init_kwargs == {"attn_implementation": "sdpa"} and args.activation_checkpointing
    lora = t.lora_config()
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.bias) == (16, 16, 0.0, "none")
    assert lora.target_modules == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_any_trl_and_peft_option_passes_through(tmp_path):
    text = ("name: a\ntrain:\n  trl: {padding_free: true, use_weighting: true, ld_alpha: 0.5, loss_type: [ipo],"
            " lr_scheduler_kwargs: {min_lr_rate: 0.1}}\n  lora: {use_rslora: true, bias: all}\n")  # fmt: skip
    t = load_config(_write(tmp_path, text)).train
    args = t.dpo_config("out", bf16=False)
    assert (args.padding_free, args.use_weighting, args.ld_alpha) == (True, True, 0.5)
    assert (args.loss_type, args.loss_weights) == (["ipo"], [1.0])
    assert args.lr_scheduler_kwargs == {"num_cycles": 0.5, "min_lr_rate": 0.1}
    lora = t.lora_config()
    assert (lora.use_rslora, lora.bias, lora.r) == (True, "all", 16)


def test_import_is_light():
    """`import legibility.config` pulls in none of torch, transformers, TRL, PEFT (the CLI and notebooks import it)."""
    code = "import sys, legibility.config; print(sorted({'torch', 'transformers', 'trl', 'peft'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_config_is_a_leaf():
    """The schemas import no stage (config once imported train/pairs/together, which imported config: a cycle)."""
    code = "import sys, legibility.config; print(sorted(m for m in sys.modules if m.startswith('legibility.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['legibility.config', 'legibility.errors']"


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
        (
            "name: a\ntrain: {trl: {padding_fre: true}}\n",
            "exp.yaml: train.trl.padding_fre: not a DPOConfig field (did you mean padding_free?)",
        ),
        (
            "name: a\ntrain: {lora: {use_rslor: true}}\n",
            "exp.yaml: train.lora.use_rslor: not a LoraConfig field (did you mean use_rslora?)",
        ),
        ("name: a\ntrain: {trl: {learning_rate: 1.0e-5}}\n", "train.trl.learning_rate: set by train.learning_rate"),
        ("name: a\ntrain: {trl: {max_length: 10}}\n", "train.trl.max_length: set by train.max_length and"),
        ("name: a\ntrain: {lora: {r: 8}}\n", "exp.yaml: train.lora.r: set by train.lora_r"),
        ("name: a\ntrain: {trl: {loss_type: [sigmoid, nope]}}\n", "train.trl.loss_type: unknown ['nope']"),
        ("name: a\ntrain: {trl: {loss_type: [ipo], loss_weights: [1, 2]}}\n", "train.trl.loss_weights: one weight"),
        ("name: a\ntrain: {trl: {loss_weights: [1]}}\n", "train.trl.loss_weights: needs train.trl.loss_type"),
        (
            "name: a\ntrain: {trl: {eval_strategy: sometimes}}\n",
            "exp.yaml: train.trl.eval_strategy: DPOConfig refused it: sometimes is not a valid",
        ),
        ("name: a\ntrain: {lora_target_modules: []}\n", "exp.yaml: train.lora_target_modules: List should have"),
        (
            "name: a\ntrain: {report_to: none}\n",
            "exp.yaml: train.report_to: unknown field: set it as train.trl.report_to",
        ),
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
            "train.trl.report_to=tensorboard",
            "train.lora.use_rslora=true",
            "pairs.transforms.sentence_shuffle=0",
            "data.benchmarks=[{name: math, path: m.jsonl, levels: [5]}]",
            "name=b",
            "train.eval_file=null",
        ],
    )
    assert cfg.train.beta == 0.5 and cfg.train.lora_target_modules == ["q_proj", "v_proj"]
    assert cfg.train.trl == {"report_to": "tensorboard"} and cfg.train.lora == {"use_rslora": True}
    assert cfg.pairs.transforms == {"sentence_shuffle": 0}
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


def test_transform_names_match_the_registry_and_typos_fail_at_load(tmp_path: Path) -> None:
    from legibility.config import TRANSFORM_NAMES
    from legibility.transforms import TRANSFORMS

    assert tuple(TRANSFORMS) == TRANSFORM_NAMES
    p = tmp_path / "c.yaml"
    p.write_text("name: x\npairs: {transforms: {sentence_shufle: 1}}\n")
    with pytest.raises(LegibilityError, match=r"c.yaml: pairs.transforms: .*sentence_shufle") as e:
        load_config(p)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------- backends refuse, not ignore

_OPENAI = "{name: api, backend: openai, base_url: 'http://127.0.0.1:8000/v1'"


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"generate: {{generators: [{_OPENAI}, adapter: a/b}}]}}",
         "exp.yaml: generate.generators.0.adapter: Value error, not available on the openai backend (the server"),
        (f"judges: {{judges: [{_OPENAI}, chat_template: t.jinja}}]}}",
         "exp.yaml: judges.judges.0.chat_template: Value error, not available on the openai backend"),
        (f"judges: {{judges: [{_OPENAI}, extra_body: {{top_k: 20}}}}]}}",
         "exp.yaml: judges.judges.0.extra_body: Value error, top_k is set by the spec or the sampling settings"),
        (f"judges: {{judges: [{_OPENAI}, extra_body: {{chat_template_kwargs: {{}}}}}}]}}",
         "judges.judges.0.extra_body: Value error, chat_template_kwargs is set by the spec"),
        ("judges: {judges: [{name: j, enable_thinking: false, chat_template_kwargs: {enable_thinking: true}}]}",
         "exp.yaml: judges.judges.0: Value error, chat_template_kwargs.enable_thinking (True) contradicts"),
        ("readers: {readers: [{name: r, keeps_think_blocks: true}]}",
         "exp.yaml: readers.readers.0.keeps_think_blocks: Value error, only for the openai backend"),
        ("generate: {sampling: {top_k: 0}}", "exp.yaml: generate.sampling.top_k: Input should be greater than"),
        ("generate: {sampling: {min_p: 1.5}}", "exp.yaml: generate.sampling.min_p: Input should be less than"),
        ("judges: {min_label_mass: -0.1}", "exp.yaml: judges.min_label_mass: Input should be greater than"),
    ],
)  # fmt: skip
def test_backends_refuse_fields_they_cannot_honour(tmp_path, text, expected):
    """A field a backend would ignore (an adapter or a chat template on a server; extra_body overriding what the
    sampling settings send) is a one-line load error naming the field."""
    with pytest.raises(LegibilityError) as e:
        load_config(_write(tmp_path, f"name: a\n{text}\n"))
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_openai_template_kwargs_and_hand_off_fields(tmp_path):
    cfg = load_config(_write(tmp_path, (
        "name: a\n"
        f"readers: {{readers: [{_OPENAI}, enable_thinking: false, keeps_think_blocks: true,"
        " chat_template_kwargs: {thinking_budget: 0}}]}\n"
    )))  # fmt: skip
    (r,) = cfg.readers.readers
    assert r.keeps_think_blocks is True and r.template_kwargs() == {"thinking_budget": 0, "enable_thinking": False}
    s = cfg.generate.sampling
    assert cfg.judges.min_label_mass == 0.5 and s.top_k is None and s.min_p == 0


def test_reference_generation_uses_qwen3_thinking_sampling():
    cfg = load_config(CONFIGS / "qwen3-8b-legibility-dpo.yaml")
    s = cfg.generate.sampling
    assert (s.temperature, s.top_p, s.top_k, s.min_p) == (0.6, 0.95, 20, 0.0)
    assert cfg.judges.min_label_mass == 0.5


@pytest.mark.parametrize("world, accumulation", [(1, 8), (2, 4), (4, 2), (8, 1)])
def test_the_global_batch_is_the_cards_on_any_number_of_processes(world, accumulation):
    """train.batch_size is the global batch: the accumulation is derived from the processes, so 8 GPUs train the
    card's 2,412 steps of 8 pairs, not 302 steps of 64."""
    t = load_config(CONFIGS / "qwen3-8b-legibility-dpo.yaml").train
    assert t.accumulation(world) == accumulation
    args = t.dpo_config("out", world, bf16=False)
    assert args.gradient_accumulation_steps * args.per_device_train_batch_size * world == 8
    assert t.trl_kwargs(world)["gradient_accumulation_steps"] == accumulation


def test_a_batch_that_does_not_divide_is_one_line():
    t = load_config(CONFIGS / "qwen3-8b-legibility-dpo.yaml").train
    with pytest.raises(
        LegibilityError,
        match=r"^train\.batch_size: 8 \(the global batch\) is not a multiple of "
        r"per_device_train_batch_size 1 x 3 process\(es\) = 3;",
    ) as e:
        t.accumulation(3)
    assert "\n" not in str(e.value)
    with pytest.raises(LegibilityError, match=r"x 8 process\(es\) = 16"):
        t.model_copy(update={"per_device_train_batch_size": 2}).dpo_config("out", 8)


def test_gradient_accumulation_is_not_a_setting(tmp_path):
    """It is derived (else a GPU count would change the recipe): the old key names what to set instead."""
    with pytest.raises(LegibilityError, match=r"gradient_accumulation_steps is derived .* set train\.batch_size"):
        load_config(_write(tmp_path, "name: x\ntrain: {gradient_accumulation_steps: 1}\n"))
    with pytest.raises(LegibilityError, match=r"unknown key 'train\.gradient_accumulation_steps'"):
        load_config(CONFIGS / "demo.yaml", ["train.gradient_accumulation_steps=8"])
    with pytest.raises(LegibilityError, match=r"train\.trl\.gradient_accumulation_steps: derived from"):
        load_config(CONFIGS / "demo.yaml", ["train.trl.gradient_accumulation_steps=8"]).train.check()
