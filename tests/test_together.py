"""Together backend: the request uses the SDK's own parameter names, files pass its check, the key never leaks."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from legibility import together as tg
from legibility.config import ExperimentConfig, load_config
from legibility.errors import LegibilityError

FIXTURE = Path(__file__).parent / "fixtures" / "train_together.jsonl"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FAKE_KEY = "tgp_v1_FAKEKEYdonotleak0123456789"


@pytest.fixture
def cfg(tmp_path) -> ExperimentConfig:
    pairs = tmp_path / "run" / "pairs"
    pairs.mkdir(parents=True)
    shutil.copy(FIXTURE, pairs / "together_train.jsonl")
    shutil.copy(FIXTURE, pairs / "together_val.jsonl")
    ref = load_config(CONFIGS / "qwen3-8b-legibility-dpo.yaml")
    return ref.model_copy(update={"run_dir": str(tmp_path / "run")})


def test_fixture_passes_sdk_check():
    from together.lib.utils import check_file

    assert check_file(FIXTURE, purpose="fine-tune")["is_check_passed"]


def test_dry_run_is_the_reference_request(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("TOGETHER_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    from typer.testing import CliRunner

    from legibility.cli import app
    from legibility.config import dump_config

    config = tmp_path / "config.yaml"
    config.write_text(dump_config(cfg))
    run = CliRunner().invoke(app, ["train", str(config), "--backend", "together", "--dry-run"])
    assert run.exit_code == 0, run.output
    printed = run.output
    result = tg.submit(cfg, dry_run=True)
    assert json.loads(printed) == result
    req = result["request"]
    expected = {
        "model": "Qwen/Qwen3-8B", "training_method": "dpo", "dpo_beta": 0.3, "rpo_alpha": 0.5,
        "dpo_normalize_logratios_by_length": True, "lora": True, "lora_r": 16, "lora_alpha": 16,
        "lora_dropout": 0.0, "lora_trainable_modules": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        "learning_rate": 5e-6, "lr_scheduler_type": "cosine", "scheduler_num_cycles": 0.5, "warmup_ratio": 0.05,
        "batch_size": 8, "n_epochs": 1, "max_grad_norm": 1.0, "weight_decay": 0.0, "random_seed": 42,
        "max_seq_length": 40960, "packing": False, "n_evals": 10, "n_checkpoints": 10,
    }  # fmt: skip
    assert {k: req[k] for k in expected} == expected
    assert req["validation_file"] == tg.PLACEHOLDER_VAL_ID
    # every parameter name is one the installed SDK's create() accepts
    from together.resources.fine_tuning import FineTuningResource

    params = inspect.signature(FineTuningResource.create).parameters
    assert set(req) <= set(params), set(req) - set(params)
    assert FAKE_KEY not in printed and FAKE_KEY not in json.dumps(result)
    for p in tmp_path.rglob("*"):
        assert not p.is_file() or FAKE_KEY not in p.read_text(errors="ignore")


def test_dry_run_needs_no_key_and_no_validation(cfg, monkeypatch):
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    (Path(cfg.run_dir) / "pairs" / "together_val.jsonl").unlink()
    req = tg.submit(cfg, dry_run=True)["request"]
    assert req["validation_file"] == "" and req["n_evals"] == 0


def test_missing_key(cfg, monkeypatch):
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    with pytest.raises(LegibilityError, match="TOGETHER_API_KEY"):
        tg.submit(cfg)


def test_bad_file_fails_with_sdk_message(cfg):
    bad = Path(cfg.run_dir) / "pairs" / "together_train.jsonl"
    bad.write_text("[1, 2]\n")
    with pytest.raises(LegibilityError, match=r"together_train\.jsonl: Together file check failed: .*line 1"):
        tg.submit(cfg, dry_run=True)


def test_bad_preference_record_names_line_and_field(cfg):
    bad = Path(cfg.run_dir) / "pairs" / "together_train.jsonl"
    line = json.loads(FIXTURE.read_text().splitlines()[0])
    del line["non_preferred_output"]
    bad.write_text(FIXTURE.read_text() + json.dumps(line) + "\n")
    with pytest.raises(LegibilityError, match=r"together_train.jsonl:5: TogetherPreference.non_preferred_output"):
        tg.submit(cfg, dry_run=True)


def test_missing_files(cfg):
    (Path(cfg.run_dir) / "pairs" / "together_train.jsonl").unlink()
    with pytest.raises(LegibilityError, match="export the pairs first"):
        tg.submit(cfg, dry_run=True)
    cfg2 = cfg.model_copy(update={"together": cfg.together.model_copy(update={"validation_file": "nope.jsonl"})})
    with pytest.raises(LegibilityError, match=r"together\.validation_file"):
        tg.submit(cfg2, dry_run=True)


def submit_with_fake_client(cfg, monkeypatch) -> tuple[dict, dict]:
    """`tg.submit` with the SDK client replaced; returns (the calls it made, its result)."""
    import together

    calls: dict = {"uploads": []}

    class FakeClient:
        def __init__(self, api_key):
            calls["key_ok"] = api_key == FAKE_KEY
            self.files = SimpleNamespace(upload=self._upload)
            self.fine_tuning = SimpleNamespace(create=self._create)

        def _upload(self, file, purpose, check):
            calls["uploads"].append(Path(file).name)
            return SimpleNamespace(id=f"file-{len(calls['uploads'])}")

        def _create(self, **kwargs):
            calls["create"] = kwargs
            return SimpleNamespace(model_dump=lambda mode: {"id": "ft-1", "echo": FAKE_KEY})

    monkeypatch.setattr(together, "Together", FakeClient)
    monkeypatch.setenv("TOGETHER_API_KEY", FAKE_KEY)
    return calls, tg.submit(cfg)


def test_submit_with_fake_client(cfg, monkeypatch):
    """The real path, with the SDK client replaced: uploads both files, creates one job, stores no key."""
    calls, result = submit_with_fake_client(cfg, monkeypatch)
    assert calls["key_ok"] and calls["uploads"] == ["together_train.jsonl", "together_val.jsonl"]
    assert calls["create"]["training_file"] == "file-1" and calls["create"]["validation_file"] == "file-2"
    assert result["job"]["id"] == "ft-1"
    stored = (Path(cfg.run_dir) / "together" / "job.json").read_text()
    assert FAKE_KEY not in stored and FAKE_KEY not in json.dumps(result)


def test_explicit_loss_type_is_refused(cfg):
    cfg2 = cfg.model_copy(update={"train": cfg.train.model_copy(update={"trl": {"loss_type": ["ipo"]}})})
    with pytest.raises(LegibilityError, match=r"train\.trl\.loss_type: Together trains only DPO"):
        tg.submit(cfg2, dry_run=True)


def test_local_only_options_are_listed(cfg):
    """The reference config's trl:/lora: options cannot reach a hosted job; the dry run says so, the request is
    unchanged."""
    result = tg.submit(cfg, dry_run=True)
    assert any(
        "train.trl is for the local backend" in w and "precompute_ref_log_probs" in w for w in result["warnings"]
    )
    plain = cfg.model_copy(update={"train": cfg.train.model_copy(update={"trl": {}, "lora": {}})})
    bare = tg.submit(plain, dry_run=True)
    assert "warnings" not in bare and bare["request"] == result["request"]


def test_the_runner_adopts_the_adapter_of_this_runs_job_only(cfg, monkeypatch):
    """After `legibility train --backend together` and a download into train/adapter/, `legibility run` goes on
    from that adapter, but not when the recipe or the pairs changed since the job was sent, and never trains over
    it."""
    from legibility.run import _adopt_train

    run = Path(cfg.run_dir)
    assert _adopt_train(cfg, False) is None  # nothing in train/: the runner trains
    submit_with_fake_client(cfg, monkeypatch)
    (run / "train" / "adapter").mkdir(parents=True)
    (run / "train" / "adapter" / "adapter_config.json").write_text("{}")
    assert _adopt_train(cfg, False) == "adopted: the adapter of Together job ft-1"
    with pytest.raises(LegibilityError, match="--from/--only would train over it"):
        _adopt_train(cfg, True)
    other = cfg.model_copy(update={"train": cfg.train.model_copy(update={"beta": 0.1, "learning_rate": 1e-5})})
    with pytest.raises(LegibilityError, match=r"job.json: the job was sent with other settings \(dpo_beta, "
                                              r"learning_rate\); move train/ away"):  # fmt: skip
        _adopt_train(other, False)
    with (run / "pairs" / "together_val.jsonl").open("a") as f:
        f.write("\n")
    with pytest.raises(LegibilityError, match=r"together_val\.jsonl changed since the job was sent"):
        _adopt_train(cfg, False)
    assert (run / "train" / "adapter" / "adapter_config.json").is_file()
