"""Together AI fine-tuning backend: the same recipe as `legibility.train`, run as a hosted DPO + LoRA job.

Hyperparameters come from the recipe fields of the `train:` section (one recipe, two backends; its `trl:` and
`lora:` pass-through options are local only, and listed as warnings); `together:` only holds what is
Together-specific. The API key is read from the environment (TOGETHER_API_KEY) at submit time and is never
written, logged or returned; a dry run needs neither a key nor the network. SDK failures (a refused key, no
network, a request the SDK's own checks refuse) are one-line `LegibilityError`s naming the step (`sdk_problem`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from legibility.config import TogetherConfig
from legibility.errors import LegibilityError
from legibility.provenance import sha256_file
from legibility.records import iter_jsonl

if TYPE_CHECKING:
    from legibility.config import ExperimentConfig

T = TypeVar("T")

PLACEHOLDER_TRAIN_ID = "<file id of the uploaded train_file>"
PLACEHOLDER_VAL_ID = "<file id of the uploaded validation_file>"


class _Msg(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class _Input(BaseModel):
    messages: list[_Msg] = Field(min_length=1)


class TogetherPreference(BaseModel):
    """One line of Together's preference format (OpenAI style); the SDK's local check (together 2.x/3.x) only
    checks for one JSON object a line and leaves the rest to the server, after the upload."""

    model_config = ConfigDict(extra="forbid")

    input: _Input
    preferred_output: list[_Msg] = Field(min_length=1, max_length=1)
    non_preferred_output: list[_Msg] = Field(min_length=1, max_length=1)


def check(path: Path) -> None:
    """Run the SDK's own file check, then the preference schema, so a bad file fails before the upload."""
    try:
        from together.lib.utils import check_file
    except ImportError:
        raise LegibilityError("the Together backend needs the together SDK: pip install 'together>=2.0'") from None
    if not path.is_file():
        raise LegibilityError(f"{path}: no such file (export the pairs first)")
    report = check_file(path, purpose="fine-tune")
    if not report.get("is_check_passed"):
        raise LegibilityError(f"{path}: Together file check failed: {report.get('message')}")
    for rec in iter_jsonl(path, TogetherPreference):
        if rec.preferred_output[0].role != "assistant" or rec.non_preferred_output[0].role != "assistant":
            raise LegibilityError(f"{path}: preferred/non_preferred outputs must be assistant messages")


def _files(cfg: ExperimentConfig) -> tuple[Path, Path | None]:
    tc = cfg.together
    train = cfg.path(tc.train_file)
    val = cfg.path(tc.validation_file) if tc.validation_file else None
    if val is not None and not val.is_file():
        if tc.validation_file != TogetherConfig.model_fields["validation_file"].default:
            raise LegibilityError(f"together.validation_file: {val}: no such file")
        val = None
    return train, val


def build_request(cfg: ExperimentConfig, has_validation: bool) -> dict[str, Any]:
    """Keyword arguments for `Together().fine_tuning.create` (together SDK 2.x names), file ids as placeholders."""
    t, tc = cfg.train, cfg.together
    for key in ("loss_type", "loss_weights"):
        if key in t.trl:
            raise LegibilityError(f"train.trl.{key}: Together trains only DPO (+ RPO, length normalization), "
                                  "i.e. train.beta, train.rpo_alpha, train.normalize_by_length")  # fmt: skip
    return {
        "training_file": PLACEHOLDER_TRAIN_ID,
        "validation_file": PLACEHOLDER_VAL_ID if has_validation else "",
        "model": tc.model,
        "training_method": "dpo",
        "dpo_beta": t.beta,
        "rpo_alpha": t.rpo_alpha if t.rpo_alpha > 0 else None,
        "dpo_normalize_logratios_by_length": t.normalize_by_length,
        "lora": True,
        "lora_r": t.lora_r,
        "lora_alpha": t.lora_alpha,
        "lora_dropout": t.lora_dropout,
        "lora_trainable_modules": ",".join(t.lora_target_modules),
        "learning_rate": t.learning_rate,
        "lr_scheduler_type": t.lr_scheduler_type,
        "scheduler_num_cycles": t.num_cycles,
        "min_lr_ratio": tc.min_lr_ratio,
        "warmup_ratio": t.warmup_ratio,
        "batch_size": t.effective_batch_size,
        "n_epochs": max(1, round(t.num_train_epochs)),
        "max_grad_norm": t.max_grad_norm,
        "weight_decay": t.weight_decay,
        "random_seed": t.seed,
        "max_seq_length": t.max_length,
        "packing": t.packing,
        "n_evals": tc.n_evals if has_validation else 0,
        "n_checkpoints": tc.n_checkpoints,
        "suffix": tc.suffix,
        "wandb_project_name": tc.wandb_project_name,
        "wandb_name": tc.wandb_name,
    }


def submit(cfg: ExperimentConfig, dry_run: bool = False) -> dict[str, Any]:
    """Check and upload the preference files, then create the job. Returns {"files": ..., "request": ...}
    (+ "job" when submitted). `dry_run` stops after the file check and returns the request unsent."""
    train, val = _files(cfg)
    check(train)
    if val is not None:
        check(val)
    request = build_request(cfg, val is not None)
    result: dict[str, Any] = {
        "files": {"training_file": str(train), "validation_file": str(val) if val else None},
        # so that `legibility run` can tell whether a downloaded adapter was trained on today's pairs (`adopt`)
        "sha256": {"training_file": sha256_file(train), "validation_file": sha256_file(val) if val else None},
        "request": request,
    }
    t = cfg.train
    warnings = []
    if t.max_steps > 0 or t.num_train_epochs != round(t.num_train_epochs):
        warnings.append(
            f"Together trains whole epochs: max_steps={t.max_steps}, epochs={t.num_train_epochs} "
            f"-> n_epochs={request['n_epochs']}"
        )
    for section, options in (("trl", t.trl), ("lora", t.lora)):
        if options:
            warnings.append(f"train.{section} is for the local backend, not sent to Together: {sorted(options)}")
    if warnings:
        result["warnings"] = warnings
    if dry_run:
        return result

    key = os.environ.get("TOGETHER_API_KEY")
    if not key:
        raise LegibilityError("TOGETHER_API_KEY is not set (export it; it is never stored in configs or runs)")
    from together import Together

    kwargs = dict(request)
    if cfg.together.wandb_project_name:
        wandb_key = os.environ.get("WANDB_API_KEY")
        if not wandb_key:
            raise LegibilityError("together.wandb_project_name is set but WANDB_API_KEY is not")
        kwargs["wandb_api_key"] = wandb_key
    secrets = [key, kwargs.get("wandb_api_key")]
    client = _sdk("the client set-up", secrets, lambda: Together(api_key=key))
    for field, path in (("training_file", train), ("validation_file", val)):
        if path is not None:
            kwargs[field] = _sdk(f"the upload of {path}", secrets,
                                 lambda p=path: client.files.upload(p, purpose="fine-tune", check=True).id)  # fmt: skip
    job = _sdk("the job creation (fine_tuning.create)", secrets, lambda: client.fine_tuning.create(**kwargs))
    request["training_file"], request["validation_file"] = kwargs["training_file"], kwargs["validation_file"]
    job_data = job.model_dump(mode="json") if hasattr(job, "model_dump") else dict(job)
    result["job"] = _redact(job_data, [key, kwargs.get("wandb_api_key")])
    out = cfg.path("{run_dir}/together/job.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    return result


def sdk_problem(exc: BaseException, step: str = "a Together API call", validation: bool = False) -> str | None:
    """One line for a together SDK failure during `step`: a refused key, no network or a timeout, an HTTP error,
    and (`validation`, where every ValueError comes from the SDK's own checks) a request it refuses before sending;
    None for anything else, which keeps its traceback."""
    try:
        import together
    except ImportError:
        return None
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    if isinstance(exc, together.AuthenticationError | together.PermissionDeniedError):
        return (f"Together refused the API key during {step} (HTTP {exc.status_code}: {detail}): check "
                "TOGETHER_API_KEY")  # fmt: skip
    if isinstance(exc, together.APITimeoutError):
        return f"the Together API did not answer in time during {step}: retry later"
    if isinstance(exc, together.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        why = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        return f"could not reach the Together API during {step}{why}: check the network (or proxy) and retry"
    if isinstance(exc, together.RateLimitError):
        return f"the Together API is rate-limiting this key during {step} (HTTP 429: {detail}): retry later"
    if isinstance(exc, together.APIStatusError):
        return f"the Together API answered HTTP {exc.status_code} during {step}: {detail}"
    if isinstance(exc, together.TogetherError):
        return f"the together SDK failed during {step}: {type(exc).__name__}: {detail}"
    if validation and isinstance(exc, ValueError):
        return (f"the together SDK refused the request during {step}: {detail} (check the train: and together: "
                "fields)")  # fmt: skip
    return None


def _sdk(step: str, secrets: list[str | None], call: Callable[[], T]) -> T:
    """`call()`, with a together SDK failure turned into a one-line LegibilityError (secrets redacted)."""
    try:
        return call()
    except LegibilityError:
        raise
    except Exception as e:
        problem = sdk_problem(e, step, validation=True)
        if problem is None:
            raise
        for secret in secrets:
            if secret:
                problem = problem.replace(secret, "***")
        raise LegibilityError(problem) from e


def adopt(cfg: ExperimentConfig) -> str:
    """The one-line result of the train stage for an adapter downloaded from this run's Together job into
    `{run_dir}/train/adapter/`: the job's request must be the one this config builds today and its files must
    hold today's bytes; anything else is a one-line error."""
    job_path = cfg.path("{run_dir}/together/job.json")
    try:
        job = json.loads(job_path.read_text())
        sent, files, hashes = job["request"], job["files"], job["sha256"]
    except (OSError, ValueError, KeyError) as e:
        raise LegibilityError(f"{job_path}: no record of a submitted job ({type(e).__name__}: {e})") from None
    ids = ("training_file", "validation_file")
    today = build_request(cfg, bool(files.get("validation_file")))
    changed = sorted(k for k in today.keys() | sent.keys() if k not in ids and today.get(k) != sent.get(k))
    if changed:
        raise LegibilityError(f"{job_path}: the job was sent with other settings ({', '.join(changed)}); "
                              "move train/ away or use the job's config")  # fmt: skip
    for key in ids:
        if files.get(key) and sha256_file(Path(files[key])) != hashes.get(key):
            raise LegibilityError(f"{job_path}: {files[key]} changed since the job was sent; move train/ away")
    return f"adopted: the adapter of Together job {job.get('job', {}).get('id', '?')}"


def _redact(data: Any, secrets: list[str | None]) -> Any:
    """Defence in depth: the API echoes parameters back; never keep a key in what we store or return."""
    text = json.dumps(data, default=str)
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return json.loads(text)
