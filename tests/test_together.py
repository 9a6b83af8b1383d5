"""Together backend: the request uses the SDK's own parameter names, files pass its check, the key never leaks."""

from __future__ import annotations

import inspect
import json
import shutil
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import httpx
import pytest

from legibility import together as tg
from legibility.config import ExperimentConfig, load_config
from legibility.errors import LegibilityError

FIXTURE = Path(__file__).parent / "fixtures" / "train_together.jsonl"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FAKE_KEY = "tgp_v1_FAKEKEYdonotleak0123456789"
FAKE_WANDB_KEY = "wandb_FAKEKEYdonotleak9876543210"


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


LIMITS = {  # GET /v1/fine-tunes/models/limits, as Together answers for Qwen3-8B (a LoRA DPO job of batch 8 fits)
    "model_name": "Qwen/Qwen3-8B", "default_gradient_accumulation_steps": 1, "max_learning_rate": 1.0,
    "min_learning_rate": 0.0, "max_num_checkpoints": 100, "max_num_epochs": 20, "max_num_evals": 100,
    "max_seq_length_dpo": 131072, "max_seq_length_sft": 131072, "min_max_seq_length": 512, "merge_output_lora": False,
    "supports_full_training": True, "supports_reasoning": True, "supports_tools": True, "supports_vision": False,
    "lora_training": {"default_rank": 64, "max_rank": 64, "min_batch_size": 8, "max_batch_size": 64,
                      "max_batch_size_dpo": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
}  # fmt: skip


def _form(request: httpx.Request) -> dict[str, str]:
    """The fields of a multipart/form-data body."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    msg = BytesParser(policy=HTTP).parsebytes(head + request.content)
    return {part.get_param("name", header="content-disposition"): part.get_content() for part in msg.iter_parts()}


class FakeTogetherAPI:
    """Together's REST API on an `httpx.MockTransport`: the endpoints that the real SDK's `files.upload` (ask for an
    upload URL, PUT the bytes there, preprocess) and `fine_tuning.create` (model limits, price estimate, the job)
    call. It records each request as the SDK's own builders made it; nothing leaves the process."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.uploads: dict[str, dict] = {}  # file id -> {"form": ..., "content": bytes}
        self.job: dict | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        path = request.url.path
        if request.url.host == "storage.together.test":  # the presigned upload URL: no API key may reach it
            assert "authorization" not in request.headers
            self.uploads[path.rsplit("/", 1)[1]]["content"] = request.content
            return httpx.Response(200)
        assert request.headers["authorization"] == f"Bearer {FAKE_KEY}"
        if (request.method, path) == ("POST", "/v1/files"):
            file_id = f"file-{len(self.uploads) + 1}"
            self.uploads[file_id] = {"form": _form(request)}
            where = f"https://storage.together.test/put/{file_id}"
            return httpx.Response(302, headers={"Location": where, "X-Together-File-Id": file_id})
        if request.method == "POST" and path.startswith("/v1/files/") and path.endswith("/preprocess"):
            file_id = path.split("/")[3]
            form = self.uploads[file_id]["form"]
            return httpx.Response(200, json={"id": file_id, "bytes": len(self.uploads[file_id]["content"]),
                                             "created_at": 1, "filename": form["file_name"], "FileType": "jsonl",
                                             "object": "file", "purpose": form["purpose"]})  # fmt: skip
        if (request.method, path) == ("GET", "/v1/fine-tunes/models/limits"):
            assert request.url.params["model_name"] == LIMITS["model_name"]
            return httpx.Response(200, json=LIMITS)
        if (request.method, path) == ("POST", "/v1/fine-tunes/estimate-price"):
            return httpx.Response(200, json={"estimation_available": True, "allowed_to_proceed": True})
        if (request.method, path) == ("POST", "/v1/fine-tunes"):
            self.job = json.loads(request.content)
            # the API echoes parameters back (here the W&B key inside a URL): nothing stored may keep it
            echo = f"https://wandb.test/?key={self.job.get('wandb_key')}"
            return httpx.Response(200, json={"id": "ft-1", "created_at": "2026-01-01T00:00:00Z",
                                             "updated_at": "2026-01-01T00:00:00Z", "status": "pending",
                                             "model": self.job["model"], "wandb_url": echo})  # fmt: skip
        return httpx.Response(404, json={"error": f"no route {request.method} {path}"})


def submit_offline(cfg, monkeypatch, api: Any = None) -> tuple[FakeTogetherAPI, dict]:
    """`tg.submit` through the real `together.Together` client, its HTTP client on a `FakeTogetherAPI` transport
    (or `api`, any httpx handler); returns (the API with what it received, submit's result)."""
    import together

    api = FakeTogetherAPI() if api is None else api

    class OfflineTogether(together.Together):
        def __init__(self, **kwargs):
            super().__init__(**kwargs, base_url="https://api.together.test", max_retries=0,
                             http_client=httpx.Client(transport=httpx.MockTransport(api)))  # fmt: skip

    monkeypatch.setattr(together, "Together", OfflineTogether)
    monkeypatch.setenv("TOGETHER_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_WANDB_KEY)
    return api, tg.submit(cfg)


def test_submit_sends_what_the_sdk_builds_from_our_request(cfg, monkeypatch):
    """The real SDK builds the requests (its own parameter names and checks: a misnamed or missing keyword raises,
    a value out of its model limits raises), and the bodies on the wire carry the recipe of `train:` and
    `together:`: both files uploaded byte for byte, then one DPO + LoRA job on their ids. No key is stored."""
    tc = cfg.together.model_copy(update={"wandb_project_name": "legibility", "wandb_name": "run-1"})
    train = cfg.train.model_copy(update={"lora_alpha": 32})  # not the rank: a swapped field must show
    cfg = cfg.model_copy(update={"together": tc, "train": train})
    assert cfg.train.lora_alpha != cfg.train.lora_r
    api, result = submit_offline(cfg, monkeypatch)
    t, pairs = cfg.train, Path(cfg.run_dir) / "pairs"

    assert list(api.uploads) == ["file-1", "file-2"]
    for file_id, name in (("file-1", "together_train.jsonl"), ("file-2", "together_val.jsonl")):
        up = api.uploads[file_id]
        assert up["form"]["file_name"] == name and up["form"]["purpose"] == "fine-tune"
        assert up["form"]["file_type"] == "jsonl" and up["content"] == (pairs / name).read_bytes()

    job = api.job
    assert job is not None
    assert (job["model"], job["training_file"], job["validation_file"]) == (tc.model, "file-1", "file-2")
    assert job["training_method"] == {
        "method": "dpo", "dpo_beta": t.beta, "dpo_normalize_logratios_by_length": t.normalize_by_length,
        "rpo_alpha": t.rpo_alpha, "dpo_reference_free": False,
    }  # fmt: skip
    assert job["training_type"] == {
        "type": "Lora", "lora_r": t.lora_r, "lora_alpha": t.lora_alpha, "lora_dropout": t.lora_dropout,
        "lora_trainable_modules": ",".join(t.lora_target_modules),
    }  # fmt: skip
    assert job["lr_scheduler"] == {
        "lr_scheduler_type": t.lr_scheduler_type,
        "lr_scheduler_args": {"min_lr_ratio": tc.min_lr_ratio, "num_cycles": t.num_cycles},
    }
    wire = {
        "learning_rate": t.learning_rate, "n_epochs": round(t.num_train_epochs), "batch_size": t.effective_batch_size,
        "warmup_ratio": t.warmup_ratio, "max_grad_norm": t.max_grad_norm, "weight_decay": t.weight_decay,
        "random_seed": t.seed, "max_seq_length": t.max_length, "packing": t.packing, "n_evals": tc.n_evals,
        "n_checkpoints": tc.n_checkpoints, "suffix": tc.suffix, "wandb_project_name": "legibility",
        "wandb_name": "run-1", "wandb_key": FAKE_WANDB_KEY,
    }  # fmt: skip
    assert {k: job.get(k) for k in wire} == wire
    assert (t.beta, t.rpo_alpha, t.lora_r, t.learning_rate, tc.suffix) == (0.3, 0.5, 16, 5e-6, "legibility-dpo")

    assert result["job"]["id"] == "ft-1"
    assert result["request"]["training_file"] == "file-1" and result["request"]["validation_file"] == "file-2"
    stored = (Path(cfg.run_dir) / "together" / "job.json").read_text()
    assert json.loads(stored)["job"]["wandb_url"] == "https://wandb.test/?key=***"
    for secret in (FAKE_KEY, FAKE_WANDB_KEY):
        assert secret not in stored and secret not in json.dumps(result)


def test_the_sdk_refuses_a_request_outside_the_models_limits(cfg, monkeypatch):
    """What the fake client never checked: the SDK validates against the model's limits before sending a job; its
    ValueError is a one-line error naming the step (no traceback)."""
    big = cfg.model_copy(update={"train": cfg.train.model_copy(update={"batch_size": 64})})
    with pytest.raises(LegibilityError, match="batch size") as info:
        submit_offline(big, monkeypatch)
    assert "job creation" in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)


def test_refused_key_is_one_line(cfg, monkeypatch):
    """A key Together refuses (HTTP 401 from the API, the SDK's AuthenticationError) names the variable to check,
    and never shows the key."""

    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": "Invalid API key provided", "type": "invalid_api_key"}})

    with pytest.raises(LegibilityError) as info:
        submit_offline(cfg, monkeypatch, refuse)
    text = str(info.value)
    assert "TOGETHER_API_KEY" in text and "401" in text and "upload" in text and "\n" not in text
    assert FAKE_KEY not in text
    import together

    assert isinstance(info.value.__cause__, together.AuthenticationError)


def test_no_network_is_one_line(cfg, monkeypatch):
    """No route to Together (the SDK's APIConnectionError over httpx's ConnectError) says so in one line."""

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution", request=request)

    with pytest.raises(LegibilityError) as info:
        submit_offline(cfg, monkeypatch, unreachable)
    text = str(info.value)
    assert "could not reach the Together API" in text and "name resolution" in text and "\n" not in text
    import together

    assert isinstance(info.value.__cause__, together.APIConnectionError)


def test_sdk_problem_leaves_other_errors_alone():
    assert tg.sdk_problem(RuntimeError("a bug")) is None
    assert tg.sdk_problem(ValueError("ours")) is None  # a ValueError is the SDK's only inside an SDK call
    assert "refused the request" in (tg.sdk_problem(ValueError("batch size 64 > 32"), validation=True) or "")


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
    submit_offline(cfg, monkeypatch)
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
