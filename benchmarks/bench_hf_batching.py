"""The hf backend's batching gain: tokens/s batched vs one request at a time, same model, same texts.

Generation: the first N MATH-500 prompts (the benchmark's own chat), greedy, a fixed number of new tokens.
Scoring: N CoTs from data/samples/traces (cut to a token budget) as the assistant reply to their problem.
Both modes run the same requests through the same HFChatModel; only batch_size differs, and the outputs are
compared (greedy texts identical, scores within 1e-4), so the speed-up is not bought with different answers.
Labels (shared prompts): a judge's label probabilities, --judge-n CoTs in a rating chat x --labels short targets
("Score: 1".."Score: 9"), scored with `share_prompts` on (each chat's prompt runs once, targets from its KV cache)
and off (every row runs prompt + target); its tokens are the requests' prompt + target tokens.

    .venv/bin/python benchmarks/bench_hf_batching.py [--model embedded] [--n 32] [--new-tokens 64]
        [--cot-tokens 256] [--batch-size 8] [--threads 1] [--device cpu|cuda]
        [--judge-n 8] [--labels 9] [--ops generate,score,labels]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from legibility import benchmarks
from legibility.benchmarks.prompts import messages
from legibility.models.base import Sampling
from legibility.models.hf import HFChatModel
from legibility.records import Message

DATA = Path(__file__).resolve().parents[1] / "data"


def cot_items(folder: Path, n: int) -> list[tuple[str, str]]:
    """(problem, CoT) pairs from the sample traces, in file order."""
    out = []
    for p in sorted(folder.glob("*.jsonl")):
        for line in p.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            if d.get("reasoning_trace", "").strip():
                out.append((d["problem"], d["reasoning_trace"]))
    for p in sorted(folder.glob("*.json")):
        out += [(d["problem"], d["message_thinking"]) for d in json.loads(p.read_text(encoding="utf-8"))
                if d.get("message_thinking", "").strip()]  # fmt: skip
    return out[:n]


def fill(lengths: list[int], batch_size: int) -> float:
    """Real tokens / padded tokens when length-sorted requests are cut into batches (as HFChatModel does)."""
    xs = sorted(lengths)
    batches = [xs[i : i + batch_size] for i in range(0, len(xs), batch_size)]
    return sum(xs) / sum(len(b) * max(b) for b in batches)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--cot-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--judge-n", type=int, default=8, help="CoTs rated in the shared-prompt (labels) measurement")
    ap.add_argument("--labels", type=int, default=9, help="label targets per rated CoT")
    ap.add_argument("--ops", default="generate,score,labels", help="comma-separated measurements to run")
    args = ap.parse_args()
    ops = set(args.ops.split(","))
    if args.threads:
        torch.set_num_threads(args.threads)

    model = HFChatModel(args.model, batch_size=args.batch_size, device=args.device)
    problems = benchmarks.load("math", DATA / "math" / "math500_test.json", levels=None)[: args.n]
    chats = [messages(p) for p in problems]
    sampling = Sampling(max_new_tokens=args.new_tokens)
    tok = model.tokenizer
    items = cot_items(DATA / "samples" / "traces", args.n)
    score_chats = [[Message(role="user", content=q)] for q, _ in items]

    def cut(text: str) -> str:
        return tok.decode(tok(text, add_special_tokens=False)["input_ids"][: args.cot_tokens])

    targets = [cut(c) for _, c in items]
    model.generate(chats[:2], Sampling(max_new_tokens=4))  # warm-up (lazy init, allocator)

    rows = []  # (op, mode, tokens, seconds); the last row of each op is its baseline
    notes = []
    if "generate" in ops:
        gen = {}
        for bs in (args.batch_size, 1):
            model.batch_size = bs
            out, dt = timed(lambda: model.generate(chats, sampling))
            gen[bs] = out
            rows.append(("generate", f"batch {bs}", sum(c.completion_tokens or 0 for c in out), dt))
        same = sum(a.text == b.text for a, b in zip(gen[args.batch_size], gen[1], strict=True))
        notes.append(f"generate: identical greedy texts batched vs alone {same}/{len(chats)}, {len(chats)} MATH-500 "
                     f"prompts x {args.new_tokens} new tokens; batch fill (real/padded tokens) "
                     f"{fill([c.prompt_tokens or 0 for c in gen[1]], args.batch_size):.2f}")  # fmt: skip

    if "score" in ops:
        sc = {}
        for bs in (args.batch_size, 1):
            model.batch_size = bs
            out, dt = timed(lambda: model.score(score_chats, targets))
            sc[bs] = out
            rows.append(("score", f"batch {bs}", sum(len(s.token_logprobs) for s in out), dt))
        score_lens = [len(tok(model.render_prompt(c) + t, add_special_tokens=False)["input_ids"])
                      for c, t in zip(score_chats, targets, strict=True)]  # fmt: skip
        notes.append(f"score: max |score diff| batched vs alone {max_diff(sc[args.batch_size], sc[1]):.2e}, "
                     f"{len(targets)} CoTs <= {args.cot_tokens} tokens; batch fill "
                     f"{fill(score_lens, args.batch_size):.2f}")  # fmt: skip

    if "labels" in ops:
        model.batch_size = args.batch_size
        rated = [[Message(role="user", content=rating_prompt(q, cut(c)))]
                 for q, c in cot_items(DATA / "samples" / "traces", args.judge_n)]  # fmt: skip
        labels = [f"Score: {k}" for k in range(1, args.labels + 1)]
        label_chats, label_targets = [c for c in rated for _ in labels], labels * len(rated)
        n = sum(len(tok(model.render_prompt(c) + t, add_special_tokens=False)["input_ids"])
                for c, t in zip(label_chats, label_targets, strict=True))  # fmt: skip
        lab = {}
        for shared in (True, False):
            model.share_prompts = shared
            lab[shared], dt = timed(lambda: model.score(label_chats, label_targets))
            rows.append(("labels", "shared" if shared else "unshared", n, dt))
        model.share_prompts = True
        prompt_lens = [len(tok(model.render_prompt(c), add_special_tokens=False)["input_ids"]) for c in rated]
        notes.append(f"labels: max |score diff| shared vs unshared {max_diff(lab[True], lab[False]):.2e}, "
                     f"{len(rated)} rating prompts ({min(prompt_lens)}-{max(prompt_lens)} tokens) x {len(labels)} "
                     f"labels, batch {args.batch_size}")  # fmt: skip

    print(f"model {model.name} ({model.meta['dtype']}, {model.meta['device']}, {torch.get_num_threads()} threads)")
    print(f"{'op':<10}{'mode':>10}{'tokens':>8}{'seconds':>9}{'tok/s':>9}{'speed-up':>10}")
    base = {op: n / dt for op, _, n, dt in rows}  # the last row of each op
    for op, mode, n, dt in rows:
        print(f"{op:<10}{mode:>10}{n:>8}{dt:>9.2f}{n / dt:>9.1f}{n / dt / base[op]:>9.2f}x")
    for line in notes:
        print(line)


def max_diff(a: list, b: list) -> float:
    return max((abs(x - y) for s, t in zip(a, b, strict=True)
                for x, y in zip(s.token_logprobs, t.token_logprobs, strict=True)), default=0.0)  # fmt: skip


def rating_prompt(problem: str, cot: str) -> str:
    """A judge-style rating request (the shape of the label-probability judges: one long chat, short replies)."""
    return (f"Problem:\n{problem}\n\nReasoning:\n{cot}\n\nHow legible is this reasoning, from 1 (illegible) to 9 "
            "(perfectly clear)? Reply with 'Score: N' only.")  # fmt: skip


if __name__ == "__main__":
    main()
