"""Throughput and peak memory of one DPO + LoRA training step (policy forward+backward, reference forward).

Runs `LegibilityDPOTrainer.training_step` (TRL's, plus the normalized metrics) with the reference recipe's config
on synthetic pre-tokenized pairs (random token ids, 1/8 prompt, 7/8 completion), so the numbers include everything
a real step does except the optimizer update (tiny for LoRA).

    python benchmarks/bench_dpo_step.py                   # CPU: embedded SmolLM2-135M, 512 ... 40,960 tokens
    python benchmarks/bench_dpo_step.py --device cuda     # GPU: random Qwen3-8B-shaped model, 8k ... 40,960
    python benchmarks/bench_dpo_step.py --estimate        # the README's per-GPU memory table (computed)
    options: --gradient-checkpointing on|off, --activation-offloading, --liger (needs liger-kernel),
             --timeout S (per length; longer lengths are skipped after one runs out)

Each length runs in a fresh subprocess so peak memory (RSS on CPU, torch.cuda.max_memory_allocated on GPU)
belongs to that length alone. tokens/s counts every token of the step: pairs x 2 sequences x length.
`--estimate` prints what a 40,960-token pair needs per GPU on Qwen3-8B with each option, from `estimate_gb` (an
ESTIMATE: bytes of the tensors a step keeps, see its docstring), beside the same formula for the embedded model so
it can be checked against a CPU measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Qwen3-8B's dimensions (config.json of Qwen/Qwen3-8B).
QWEN3_8B = dict(
    vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rope_theta=1000000.0,
    tie_word_embeddings=False, rms_norm_eps=1e-6,
)  # fmt: skip


SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, head_dim=64, vocab_size=49152)  # fmt: skip


def _params(d: dict) -> int:
    h, i, n, q, kv = (d["hidden_size"], d["intermediate_size"], d["num_hidden_layers"],
                      d["num_attention_heads"] * d["head_dim"], d["num_key_value_heads"] * d["head_dim"])  # fmt: skip
    layer = h * q + 2 * h * kv + q * h + 3 * h * i
    return n * layer + d["vocab_size"] * h * (1 if d.get("tie_word_embeddings", True) else 2)


def _lora_params(d: dict, r: int = 16) -> int:
    h, i, q, kv = d["hidden_size"], d["intermediate_size"], d["num_attention_heads"] * d["head_dim"], \
        d["num_key_value_heads"] * d["head_dim"]  # fmt: skip
    return d["num_hidden_layers"] * r * ((h + q) * 2 + (h + kv) * 2 + 2 * (h + i) + (i + h))


def estimate_gb(d: dict, length: int, *, nbytes: int = 2, checkpointing: bool = True, offloading: bool = False,
                liger: bool = False, shards: int = 1) -> dict[str, float]:  # fmt: skip
    """GB one process needs for a DPO + LoRA step on one pair (2 sequences of `length` tokens in one padded batch,
    as TRL 1.16 forwards them), memory-efficient attention (sdpa / flash: no length^2 term), TRL's fused LM head
    (log-probs in chunks: no vocab x tokens logits). An ESTIMATE from tensor sizes, no allocator overhead:
    weights (bf16; / shards under FSDP, plus one gathered layer); LoRA params + grads + Adam state in fp32;
    checkpointed layer inputs (tokens x hidden per layer; on the CPU with activation offloading, 2 layers in
    flight); one layer's saved tensors while it is recomputed for backward (norm inputs, q/k/v/attention out, the
    MLP's gate, up, act x up; Liger's SwiGLU/RMSNorm keep ~1 MLP tensor and 1 norm input fewer); without
    checkpointing every layer's saved tensors stay."""
    h, i, n = d["hidden_size"], d["intermediate_size"], d["num_hidden_layers"]
    q, kv = d["num_attention_heads"] * d["head_dim"], d["num_key_value_heads"] * d["head_dim"]
    tokens = 2 * length
    weights = _params(d) * nbytes / shards + (_params(d) / n * nbytes if shards > 1 else 0)
    lora = _lora_params(d) * 16 / shards
    per_layer_saved = tokens * nbytes * (2 * h + q + 2 * kv + q + h + 3 * i + i - ((i + h) if liger else 0))
    inputs = n * tokens * h * nbytes
    if not checkpointing:
        acts = n * per_layer_saved
    else:
        acts = (2 * tokens * h * nbytes if offloading else inputs) + per_layer_saved
    flow = 3 * tokens * h * nbytes  # the gradient flowing back, the residual, the layer's output
    parts = {"weights": weights, "lora_state": lora, "activations": acts, "grad_flow": flow}
    out = {k: round(v / 1e9, 1) for k, v in parts.items()}
    out["total"] = round(sum(parts.values()) / 1e9, 1)
    return out


def print_estimates(length: int = 40960) -> None:
    """The README's table: Qwen3-8B, one 40,960-token pair per GPU, each option."""
    rows = [
        ("no gradient checkpointing", dict(checkpointing=False)),
        ("gradient checkpointing (default)", {}),
        ("+ liger kernels (RMSNorm, SwiGLU)", dict(liger=True)),
        ("+ activation offloading", dict(offloading=True)),
        ("FSDP x 8 + checkpointing", dict(shards=8)),
        ("FSDP x 8 + checkpointing + offloading", dict(shards=8, offloading=True)),
    ]
    print(f"ESTIMATE, Qwen3-8B bf16, LoRA r16, 1 pair = 2 x {length} tokens, per GPU (GB, no allocator overhead)")
    print(f"{'options':<40} {'weights':>8} {'LoRA':>6} {'activ.':>7} {'flow':>6} {'total':>7}")
    for name, kw in rows:
        e = estimate_gb(QWEN3_8B, length, **kw)
        print(f"{name:<40} {e['weights']:>8} {e['lora_state']:>6} {e['activations']:>7} {e['grad_flow']:>6} "
              f"{e['total']:>7}")  # fmt: skip
    for n in (2048, 4096):
        e = estimate_gb(SMOLLM2_135M, n, nbytes=4)
        print(f"check on CPU: embedded SmolLM2-135M fp32 at {n} tokens, checkpointing: estimate {e['total']} GB of "
              f"tensors ({e['activations']} GB activations)")  # fmt: skip


def _model_and_tokenizer(device: str):
    import torch

    if device == "cpu":
        from legibility.models import load_model, load_tokenizer

        return load_model("embedded", dtype=torch.float32), load_tokenizer("embedded")

    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(**QWEN3_8B)
    cfg._attn_implementation = "sdpa"
    with torch.device(device):
        torch.set_default_dtype(torch.bfloat16)
        model = Qwen3ForCausalLM(cfg)  # random init: only shapes matter for speed and memory
        torch.set_default_dtype(torch.float32)
    vocab = {f"t{i}": i for i in range(QWEN3_8B["vocab_size"])}
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t0")), pad_token="t0", eos_token="t1"
    )
    return model, tok


def run_one(device: str, length: int, pairs: int, gradient_checkpointing: bool, repeats: int,
            offloading: bool = False, liger: bool = False) -> dict:  # fmt: skip
    import torch
    from datasets import Dataset

    from legibility.config import TrainConfig
    from legibility.train import trainer_class

    model, tok = _model_and_tokenizer(device)
    g = torch.Generator().manual_seed(0)
    n_prompt = max(1, length // 8)
    low, high = 10, min(tok.vocab_size, 30000)

    def ids(n: int) -> list[int]:
        return torch.randint(low, high, (n,), generator=g).tolist()

    rows = [
        {"prompt_ids": ids(n_prompt), "chosen_ids": ids(length - n_prompt), "rejected_ids": ids(length - n_prompt),
         "transform_id": 0}
        for _ in range(pairs)
    ]  # fmt: skip
    bf16 = device != "cpu"
    # The reference recipe (config defaults: loss, LoRA r/alpha/targets), batch and length set for the benchmark.
    trl = {"activation_checkpointing": gradient_checkpointing, "report_to": "none",
           "activation_offloading": offloading, "use_liger_kernel": liger}  # fmt: skip
    recipe = TrainConfig(batch_size=pairs, per_device_train_batch_size=pairs, max_length=length, trl=trl)
    args = recipe.dpo_config("/tmp/bench_dpo_step", bf16=bf16, use_cpu=device == "cpu", dataloader_pin_memory=False,
                             disable_tqdm=True, eval_strategy="no", eval_on_start=False)  # fmt: skip
    peft = recipe.lora_config()
    # DPOTrainer tokenizes text itself; give it a dummy dataset and collate our token rows with its own collator.
    dummy = Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}])
    trainer = trainer_class()(
        model=model, args=args, train_dataset=dummy, processing_class=tok, peft_config=peft, transforms=["t"]
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    trainer.current_gradient_accumulation_steps = 1  # set by the train loop, read by training_step
    if gradient_checkpointing:  # Trainer.train() turns it on; we call training_step directly
        trainer.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    batch = trainer._prepare_inputs(trainer.data_collator(rows))
    assert batch["input_ids"].shape == (2 * pairs, length), batch["input_ids"].shape
    # Warm-up on a short batch (first-call costs: kernels, allocator, lazy init) without adding to peak memory.
    short = [{k: v[:16] if isinstance(v, list) else v for k, v in r.items()} for r in rows]
    trainer.training_step(trainer.model, trainer._prepare_inputs(trainer.data_collator(short)))
    if device != "cpu":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        trainer.training_step(trainer.model, batch)
        if device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    step = min(times)
    if device == "cpu":
        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    else:
        peak_gb = torch.cuda.max_memory_allocated() / 2**30
    tokens = 2 * pairs * length
    return {
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "model": "SmolLM2-135M (embedded)" if device == "cpu" else "Qwen3-8B-shaped (random)",
        "dtype": "bf16" if bf16 else "fp32",
        "length": length,
        "pairs": pairs,
        "gradient_checkpointing": gradient_checkpointing,
        "activation_offloading": offloading,
        "liger": liger,
        "step_s": round(step, 2),
        "tokens_per_s": round(tokens / step, 1),
        "peak_memory_gb": round(peak_gb, 2),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--lengths", default=None, help="comma-separated (default 512,1024,2048 / 8192,16384,32768)")
    ap.add_argument("--pairs", default=None, help="pairs per step per length (default 4,2,1 on CPU, 1 on GPU)")
    ap.add_argument("--gradient-checkpointing", choices=["on", "off"], default="on")
    ap.add_argument("--activation-offloading", action="store_true")
    ap.add_argument("--liger", action="store_true", help="use_liger_kernel (pip install liger-kernel)")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per length; longer lengths are skipped")
    ap.add_argument("--estimate", action="store_true", help="print the computed per-GPU table and exit")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: length,pairs in a subprocess
    a = ap.parse_args()
    gc = {"on": True, "off": False}.get(a.gradient_checkpointing, True)
    if a.estimate:
        print_estimates()
        return
    if a.one:
        length, pairs = map(int, a.one.split(","))
        print(json.dumps(run_one(a.device, length, pairs, gc, a.repeats, a.activation_offloading, a.liger)))
        return
    if a.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("no CUDA device")
    default_lengths, default_pairs = (
        ("512,1024,2048,4096,8192,16384,40960", "4,2,1") if a.device == "cpu" else ("8192,16384,32768,40960", "1")
    )
    lengths = [int(x) for x in (a.lengths or default_lengths).split(",")]
    pairs = [int(x) for x in (a.pairs or default_pairs).split(",")]
    pairs = pairs + [pairs[-1]] * (len(lengths) - len(pairs))
    results = []
    for length, n in zip(lengths, pairs, strict=False):
        cmd = [sys.executable, __file__, "--device", a.device, "--one", f"{length},{n}", "--repeats", str(a.repeats),
               "--gradient-checkpointing", "on" if gc else "off"]  # fmt: skip
        cmd += ["--activation-offloading"] * a.activation_offloading + ["--liger"] * a.liger
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
        except subprocess.TimeoutExpired:
            results.append({"length": length, "pairs": n, "error": f"over {a.timeout:g} s; longer lengths skipped"})
            print(json.dumps(results[-1]), flush=True)
            break
        if proc.returncode:
            err = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
            res = {"length": length, "pairs": n, "error": err}
        else:
            res = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(res)
        print(json.dumps(res), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    print(f"\n{'length':>7} {'pairs':>5} {'step s':>8} {'tokens/s':>9} {'peak GB':>8}")
    for r in results:
        if "error" in r:
            print(f"{r['length']:>7} {r['pairs']:>5}  error: {r['error']}")
        else:
            print(f"{r['length']:>7} {r['pairs']:>5} {r['step_s']:>8} {r['tokens_per_s']:>9} {r['peak_memory_gb']:>8}")


if __name__ == "__main__":
    main()
