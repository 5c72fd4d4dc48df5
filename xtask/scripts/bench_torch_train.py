"""Upstream nanochat's training step on PyTorch, timed the way `nanochat bench train` times ours.

The reference side of `cargo xtask bench-cpu-vs-torch`: builds upstream's `GPT` (karpathy/nanochat
HEAD, `nanochat/gpt.py`) with the model dial of `scripts/base_train.py` (model_dim = depth x 64
rounded up to head_dim, n_head = n_kv_head = model_dim / head_dim), initialises it as upstream does
(meta device, `to_empty`, `init_weights`), builds `setup_optimizer()` (MuonAdamW with upstream's
defaults) and times `loss = model(x, y); loss.backward(); opt.step(); model.zero_grad(set_to_none=True)`
on fresh random tokens each step. Prints one JSON line: median step (s), every step, tokens per second.

Run from anywhere with upstream's repository root on PYTHONPATH (or --nanochat DIR).
"""

import argparse
import json
import os
import statistics
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--nanochat", default=None, help="upstream nanochat checkout (the folder holding nanochat/)")
p.add_argument("--depth", type=int, default=4)
p.add_argument("--head-dim", type=int, default=128)
p.add_argument("--aspect-ratio", type=int, default=64)
p.add_argument("--device-batch-size", type=int, default=8)
p.add_argument("--seq-len", type=int, default=256)
p.add_argument("--vocab-size", type=int, default=8192)
p.add_argument("--window-pattern", default="L")
p.add_argument("--steps", type=int, default=8)
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
p.add_argument("--compile", action="store_true", help="torch.compile the model")
args = p.parse_args()

if args.nanochat:
    sys.path.insert(0, args.nanochat)
os.environ.setdefault("NANOCHAT_DTYPE", "float32")

import torch  # noqa: E402
from nanochat.gpt import GPT, GPTConfig  # noqa: E402

if args.threads > 0:
    torch.set_num_threads(args.threads)
torch.manual_seed(42)
model_dim = ((args.depth * args.aspect_ratio + args.head_dim - 1) // args.head_dim) * args.head_dim
n_head = model_dim // args.head_dim
config = GPTConfig(
    sequence_len=args.seq_len, vocab_size=args.vocab_size, n_layer=args.depth,
    n_head=n_head, n_kv_head=n_head, n_embd=model_dim, window_pattern=args.window_pattern,
)
with torch.device("meta"):
    model = GPT(config)
model.to_empty(device="cpu")
model.init_weights()
opt = model.setup_optimizer()
step_model = torch.compile(model, dynamic=False) if args.compile else model

B, T = args.device_batch_size, args.seq_len
g = torch.Generator().manual_seed(0)

times = []
for step in range(args.warmup + args.steps):
    # A fresh random batch every step, drawn before the clock starts, as `nanochat bench train`
    # does: a fixed batch is memorised within a few steps and the tiny activations that follow
    # slow the CPU down.
    row = torch.randint(0, args.vocab_size, (B, T + 1), generator=g)
    x, y = row[:, :-1].contiguous(), row[:, 1:].contiguous()
    t0 = time.perf_counter()
    loss = step_model(x, y)
    loss.backward()
    opt.step()
    model.zero_grad(set_to_none=True)
    dt = time.perf_counter() - t0
    print(f"torch step {step} ({'warm-up' if step < args.warmup else 'timed'}): {dt * 1e3:.1f} ms "
          f"loss {loss.item():.4f}", file=sys.stderr)
    if step >= args.warmup:
        times.append(dt)

median = statistics.median(times)
print(json.dumps({
    "impl": "torch" + ("+compile" if args.compile else ""),
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "params": sum(p.numel() for p in model.parameters()),
    "median_step_s": median,
    "step_s": times,
    "tok_per_sec": B * T / median,
}))
