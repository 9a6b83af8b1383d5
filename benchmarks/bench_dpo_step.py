"""Throughput and peak memory of one DPO + LoRA training step (policy forward+backward, reference forward).

Runs `LegibilityDPOTrainer.training_step` (TRL's, plus the normalized metrics) with the reference recipe's config
on synthetic pre-tokenized pairs (random token ids, 1/8 prompt, 7/8 completion), so the numbers include everything
a real step does except the optimizer update (tiny for LoRA).

    python benchmarks/bench_dpo_step.py                   # CPU: embedded SmolLM2-135M at 512/1024/2048 tokens
    python benchmarks/bench_dpo_step.py --device cuda     # GPU: random Qwen3-8B-shaped model at 8k/16k/32k

Each length runs in a fresh subprocess so peak memory (RSS on CPU, torch.cuda.max_memory_allocated on GPU)
belongs to that length alone. tokens/s counts every token of the step: pairs x 2 sequences x length.
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


def run_one(device: str, length: int, pairs: int, gradient_checkpointing: bool, repeats: int) -> dict:
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
    recipe = TrainConfig(per_device_train_batch_size=pairs, gradient_accumulation_steps=1, max_length=length,
                         trl={"activation_checkpointing": gradient_checkpointing, "report_to": "none"})  # fmt: skip
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
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: length,pairs in a subprocess
    a = ap.parse_args()
    gc = {"on": True, "off": False}.get(a.gradient_checkpointing, True)
    if a.one:
        length, pairs = map(int, a.one.split(","))
        print(json.dumps(run_one(a.device, length, pairs, gc, a.repeats)))
        return
    if a.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("no CUDA device")
    default_lengths, default_pairs = ("512,1024,2048", "4,2,1") if a.device == "cpu" else ("8192,16384,32768", "1")
    lengths = [int(x) for x in (a.lengths or default_lengths).split(",")]
    pairs = [int(x) for x in (a.pairs or default_pairs).split(",")]
    pairs = pairs + [pairs[-1]] * (len(lengths) - len(pairs))
    results = []
    for length, n in zip(lengths, pairs, strict=False):
        cmd = [sys.executable, __file__, "--device", a.device, "--one", f"{length},{n}", "--repeats", str(a.repeats),
               "--gradient-checkpointing", "on" if gc else "off"]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
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
