"""The training loss and the normalized reward metrics, recomputed independently with plain torch.

The reference recipe (Together: dpo_beta, dpo_normalize_logratios_by_length, rpo_alpha), as TRL 1.16's
loss_type=["sigmoid_norm", "sft"], loss_weights=[1, rpo_alpha], must equal

    L = mean_i -log sigmoid(beta * (dc_i / |yc_i| - dr_i / |yr_i|))  +  rpo_alpha * NLL

dc, dr: log-probs of the chosen / rejected completion summed over its tokens, policy minus reference; |y|: its
token count. NLL: TRL's "sft" term is the negative log-likelihood per chosen-completion token pooled over the
micro-batch (the sum over every chosen token of every pair, divided by the number of those tokens), not a mean of
per-pair means, so a pair with a longer chosen completion weighs more; the reference below uses that definition.

Here the log-probs come from the model's ordinary forward (full logits, log_softmax in float64, one unpadded pair at
a time), not from TRL's fused LM head on a padded batch. The LoRA B matrices are random, so the policy differs from
the reference (adapters disabled) and a wrong sign, normalization or pairing would show.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")

from legibility.config import TRL_LOSS_TYPES, TrainConfig  # noqa: E402
from legibility.train import trainer_class  # noqa: E402

BETA, ALPHA = 0.3, 0.5
TRANSFORMS = ["cut", "pad"]
# (prompt, chosen, rejected, transform): completion lengths differ within and across pairs, so length matters
PAIRS = [
    ("w1 w2 w3", " w4 w5 w6 w7", " w4 w7", "cut"),
    ("w8 w9", " w10 w11 w12", " w10 w11 w12 w13 w14 w15 w16", "pad"),
    ("w3 w5 w7 w9 w11", " w2", " w2 w4 w6", "pad"),
    ("w20", " w21 w22 w23 w24 w25 w26", " w21 w26", "cut"),
    ("w30 w31 w32", " w33 w34", " w33 w35 w36 w37", "pad"),
]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[EOS]": 1, "[UNK]": 2, **{f"w{i}": i + 3 for i in range(40)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]", unk_token="[UNK]")


def _trainer(out: Path, **trl):
    from datasets import Dataset
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = _tokenizer()
    torch.manual_seed(0)
    cfg = Qwen3Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
        initializer_range=0.3,  # logits far from uniform, so the adapters move the log-probs visibly
    )  # fmt: skip
    model = Qwen3ForCausalLM(cfg)
    rows = [{"prompt": p, "chosen": c, "rejected": r, "transform_id": TRANSFORMS.index(t)} for p, c, r, t in PAIRS]
    ds = Dataset.from_list(rows)
    t = TrainConfig(beta=BETA, rpo_alpha=ALPHA, lora_r=4, lora_alpha=64, lora_target_modules=["q_proj", "v_proj",
                    "down_proj"], trl={"report_to": "none", "activation_checkpointing": False, **trl})  # fmt: skip
    args = t.dpo_config(str(out), bf16=False, use_cpu=True, per_device_eval_batch_size=2, disable_tqdm=True)
    trainer = trainer_class()(model=model, args=args, train_dataset=ds, eval_dataset=ds, processing_class=tok,
                              peft_config=t.lora_config(), transforms=TRANSFORMS)  # fmt: skip
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 1.0)
    return trainer


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    return _trainer(tmp_path_factory.mktemp("loss"))


def _completion_logps(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """Per-token log-probs of `completion` after `prompt`, from the ordinary forward's full logits."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].double()
    logps = logits.log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
    return logps[len(prompt) - 1 :]


def _independent(trainer) -> list[dict]:
    """Per pair: policy and reference per-token log-probs of both completions, on TRL's tokenization."""
    model = trainer.model
    out = []
    for ex in trainer.train_dataset:
        row = {"transform": TRANSFORMS[ex["transform_id"]]}
        for side in ("chosen", "rejected"):
            row[f"policy_{side}"] = _completion_logps(model, ex["prompt_ids"], ex[f"{side}_ids"])
            with model.disable_adapter():
                row[f"ref_{side}"] = _completion_logps(model, ex["prompt_ids"], ex[f"{side}_ids"])
        out.append(row)
    return out


def _expected_metrics(rows: list[dict]) -> dict[str, float]:
    c = torch.tensor([BETA * (r["policy_chosen"].sum() - r["ref_chosen"].sum()) for r in rows])
    r_ = torch.tensor([BETA * (r["policy_rejected"].sum() - r["ref_rejected"].sum()) for r in rows])
    nc = torch.tensor([float(len(r["policy_chosen"])) for r in rows])
    nr = torch.tensor([float(len(r["policy_rejected"])) for r in rows])
    pc = torch.tensor([r["policy_chosen"].mean() for r in rows])
    pr = torch.tensor([r["policy_rejected"].mean() for r in rows])
    return {
        "rewards_norm/chosen": (c / nc).mean().item(),
        "rewards_norm/rejected": (r_ / nr).mean().item(),
        "rewards_norm/margins": (c / nc - r_ / nr).mean().item(),
        "rewards_norm/accuracies": (c / nc > r_ / nr).double().mean().item(),
        "rewards/margins": (c - r_).mean().item(),
        "rewards/accuracies": (c > r_).double().mean().item(),
        "logps_norm/margins": (pc - pr).mean().item(),
        "logps_norm/accuracies": (pc > pr).double().mean().item(),
        "pairs": float(len(rows)),
    }


def _reference_loss(rows: list[dict], normalize: bool = True, sft: str = "pooled") -> float:
    logsigmoid = torch.nn.functional.logsigmoid
    dpo = []
    for r in rows:
        dc = r["policy_chosen"].sum() - r["ref_chosen"].sum()
        dr = r["policy_rejected"].sum() - r["ref_rejected"].sum()
        if normalize:
            dc, dr = dc / len(r["policy_chosen"]), dr / len(r["policy_rejected"])
        dpo.append(-logsigmoid(BETA * (dc - dr)))
    if sft == "pooled":  # TRL's: every chosen token of the micro-batch weighs the same
        chosen = torch.cat([r["policy_chosen"] for r in rows])
        nll = -chosen.sum() / len(chosen)
    else:  # a mean of per-pair means, for contrast
        nll = -torch.stack([r["policy_chosen"].mean() for r in rows]).mean()
    return (torch.stack(dpo).mean() + ALPHA * nll).item()


def test_loss_matches_independent_computation(trainer):
    rows = _independent(trainer)
    expected = _reference_loss(rows)

    examples = [trainer.train_dataset[i] for i in range(len(PAIRS))]
    batch = trainer._prepare_inputs(trainer.data_collator(examples))  # padded, as in training
    assert batch["transform_id"].tolist() == [TRANSFORMS.index(t) for *_, t in PAIRS]
    trainer.model.train()
    trainer._metrics["train"].clear()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()
    assert abs(loss - expected) < 1e-5, (loss, expected)
    # the check can fail: summed log ratios, or a per-pair NLL average, give another number
    assert abs(loss - _reference_loss(rows, normalize=False)) > 1e-3
    assert abs(loss - _reference_loss(rows, sft="per-pair")) > 1e-3

    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    for key, value in _expected_metrics(rows).items():
        if key != "pairs":
            assert logged[key] == pytest.approx(value, abs=1e-5), key
    assert logged["rewards_norm/margins"] != pytest.approx(logged["rewards/margins"], abs=1e-3)


def test_eval_metrics_are_grouped_by_transform(trainer):
    """One evaluation pass (batches of 2 over 5 pairs: a short last batch) gives exact per-pair means."""
    rows = _independent(trainer)
    metrics = trainer.evaluate()
    groups = {"": rows, **{f"{t}_": [r for r in rows if r["transform"] == t] for t in TRANSFORMS}}
    for prefix, group in groups.items():
        for key, value in _expected_metrics(group).items():
            assert metrics[f"eval_{prefix}{key}"] == pytest.approx(value, abs=1e-5), prefix + key
    assert metrics["eval_cut_pairs"] == 2 and metrics["eval_pad_pairs"] == 3


def test_precomputed_reference_gives_the_same_metrics(trainer, tmp_path):
    """With precompute_ref_log_probs the reference log-probs come from the batch, not from a second forward."""
    other = _trainer(tmp_path, precompute_ref_log_probs=True)
    assert other.precompute_ref_logps
    a, b = trainer.evaluate(), other.evaluate()
    for key in ("eval_rewards_norm/margins", "eval_pad_rewards_norm/accuracies", "eval_logps_norm/margins"):
        assert b[key] == pytest.approx(a[key], abs=1e-5), key


LABEL_SMOOTHING, DISCOPOP_TAU = 0.1, 0.05  # TRL's discopop_tau default; label smoothing > 0 so its terms count


def _per_pair_loss(loss_type: str, rows: list[dict]) -> torch.Tensor:
    """Each TRL 1.16 loss (trl/trainer/dpo_trainer.py, `_compute_loss`) written out from its paper's formula on the
    independent log-probs: dc, dr are the chosen / rejected log ratios (policy minus reference, summed over the
    completion), d = dc - dr, n its token count. One value per pair (sft: the pooled NLL), the loss is their mean."""
    ls, b, sig, logsig = LABEL_SMOOTHING, BETA, torch.sigmoid, torch.nn.functional.logsigmoid
    pc = torch.stack([r["policy_chosen"].sum() for r in rows])
    pr = torch.stack([r["policy_rejected"].sum() for r in rows])
    rc = torch.stack([r["ref_chosen"].sum() for r in rows])
    rr = torch.stack([r["ref_rejected"].sum() for r in rows])
    nc = torch.tensor([float(len(r["policy_chosen"])) for r in rows], dtype=pc.dtype)
    nr = torch.tensor([float(len(r["policy_rejected"])) for r in rows], dtype=pc.dtype)
    dc, dr = pc - rc, pr - rr
    d = dc - dr

    def smoothed(z: torch.Tensor) -> torch.Tensor:  # conservative DPO: the label is wrong with probability ls
        return -(1 - ls) * logsig(b * z) - ls * logsig(-b * z)

    if loss_type == "sigmoid":
        return -logsig(b * d)
    if loss_type == "sigmoid_norm":
        return -logsig(b * (dc / nc - dr / nr))
    if loss_type == "hinge":
        return torch.clamp(1 - b * d, min=0)
    if loss_type == "ipo":
        return (dc / nc - dr / nr - 1 / (2 * b)) ** 2
    if loss_type == "exo_pair":  # KL(softmax(b * [dc, dr]) || [1 - ls, ls])
        q = sig(b * d)
        return q * (torch.log(q) - math.log1p(-ls)) + (1 - q) * (torch.log(1 - q) - math.log(ls))
    if loss_type == "nca_pair":
        return -logsig(b * dc) - 0.5 * logsig(-b * dc) - 0.5 * logsig(-b * dr)
    if loss_type == "robust":
        return (-(1 - ls) * logsig(b * d) + ls * logsig(-b * d)) / (1 - 2 * ls)
    if loss_type == "bco_pair":
        return -logsig(b * dc) - logsig(-b * dr)
    if loss_type == "sppo_hard":
        return (dc - 0.5 / b) ** 2 + (dr + 0.5 / b) ** 2
    if loss_type == "aot":  # sorted policy margins against sorted reference margins
        return smoothed(torch.sort(pc - pr).values - torch.sort(rc - rr).values)
    if loss_type == "aot_unpaired":
        return smoothed(torch.sort(dc).values - torch.sort(dr).values)
    if loss_type == "apo_zero":
        return 1 - sig(b * dc) + sig(b * dr)
    if loss_type == "apo_down":
        return sig(b * dc) + 1 - sig(b * d)
    if loss_type == "discopop":
        m = sig(b * d / DISCOPOP_TAU)
        return -logsig(b * d) * (1 - m) + torch.exp(-b * d) * m
    if loss_type == "sft":
        chosen = torch.cat([r["policy_chosen"] for r in rows])
        return (-chosen.sum() / len(chosen)).expand(len(rows))
    raise AssertionError(f"no independent formula for {loss_type}")


@pytest.fixture(scope="module")
def independent_rows(trainer) -> list[dict]:
    return _independent(trainer)


@pytest.mark.parametrize("loss_type", TRL_LOSS_TYPES)
def test_every_accepted_loss_name_runs_in_trl(trainer, independent_rows, loss_type):
    """Every name config.py accepts is a loss TRL computes (it raises on any other, at the first step), and gives a
    finite number equal to the formula computed independently on all five pairs (a padded batch, as in
    training). A NaN or infinite loss fails here: a failure is never a loss value."""
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))]))
    saved = trainer.loss_types, trainer.loss_weights, trainer.label_smoothing
    trainer.loss_types, trainer.loss_weights, trainer.label_smoothing = [loss_type], [1.0], LABEL_SMOOTHING
    try:
        with torch.no_grad():
            loss = trainer.compute_loss(trainer.model, batch)
    finally:
        trainer.loss_types, trainer.loss_weights, trainer.label_smoothing = saved
    assert trainer.args.discopop_tau == DISCOPOP_TAU
    assert loss.ndim == 0 and math.isfinite(loss.item()), loss
    expected = _per_pair_loss(loss_type, independent_rows).mean().item()
    assert math.isfinite(expected)
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-5), (loss_type, loss.item(), expected)


def test_independent_losses_tell_the_variants_apart(independent_rows):
    """The check above can fail: on these pairs, variants that differ only in sorting, smoothing or length
    normalization give different numbers (with two pairs, aot's sort kept the pairing and equalled sigmoid)."""
    value = {t: _per_pair_loss(t, independent_rows).mean().item() for t in TRL_LOSS_TYPES}
    for a, b in [("sigmoid", "aot"), ("sigmoid", "aot_unpaired"), ("sigmoid", "sigmoid_norm"), ("sigmoid", "robust"),
                 ("ipo", "sppo_hard"), ("apo_zero", "apo_down"), ("nca_pair", "bco_pair")]:  # fmt: skip
        assert abs(value[a] - value[b]) > 1e-4, (a, b)


def test_exo_pair_needs_label_smoothing(tmp_path):
    """exo_pair's target distribution is [1 - label_smoothing, label_smoothing]: with TRL's default 0 its loss is
    log(0) = inf at every step, so the config refuses it before a run starts."""
    from legibility.errors import LegibilityError

    t = TrainConfig(trl={"loss_type": ["exo_pair"], "loss_weights": [1.0], "report_to": "none"})
    with pytest.raises(LegibilityError, match=r"train\.trl\.label_smoothing"):
        t.dpo_config(str(tmp_path), bf16=False, use_cpu=True)
    smoothed = TrainConfig(trl={"loss_type": ["exo_pair"], "loss_weights": [1.0], "label_smoothing": 1e-3,
                                "report_to": "none"})  # fmt: skip
    assert smoothed.dpo_config(str(tmp_path), bf16=False, use_cpu=True).label_smoothing == 1e-3
