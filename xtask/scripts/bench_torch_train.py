"""Upstream nanochat's training step on PyTorch, timed the way `nanochat bench train` times ours.

The reference side of `cargo xtask bench-cpu-vs-torch` (CPU) and of the GPU profiling run (CUDA):
builds upstream's `GPT` (karpathy/nanochat HEAD, `nanochat/gpt.py`) with the model dial of
`scripts/base_train.py` (model_dim = depth x 64 rounded up to head_dim, n_head = n_kv_head =
model_dim / head_dim), initialises it as upstream does (meta device, `to_empty`, `init_weights`),
builds `setup_optimizer()` (MuonAdamW with upstream's defaults) and times
`loss = model(x, y); loss.backward(); opt.step(); model.zero_grad(set_to_none=True)` on fresh
random tokens each step. Prints one JSON line last on stdout: median step (s), every step, tokens
per second (upstream's `print0` and our per-step log go elsewhere / to stderr).

Devices and dtypes:
  --device cpu   (default) as before: float32 compute unless NANOCHAT_DTYPE or --dtype says otherwise.
  --device cuda  the model is materialised on the GPU (`to_empty(device="cuda")`), the tokens are
                 drawn on the GPU, `torch.cuda.synchronize()` runs before every clock read, TF32 is
                 allowed for float32 matmuls as upstream's `compute_init` does, and the JSON adds
                 `gpu` and `peak_memory_gb` (torch.cuda.max_memory_allocated after warm-up / 1e9).
  --dtype        upstream's compute dtype, read from env NANOCHAT_DTYPE when nanochat.common is
                 imported (master weights stay float32; Linear casts them). Default: float32 on
                 CPU, bfloat16 on CUDA (upstream's own auto-detection on SM >= 80).
  On CUDA upstream tries Flash Attention 3 from the Hugging Face hub (`kernels` package) and falls
  back to SDPA; HF_HUB_OFFLINE=1 is set (unless already set) so an offline machine fails over at
  once. The JSON's `attn` says which ran ("fa3" or "sdpa").

Extras: --compile wraps the model in torch.compile(dynamic=False) as base_train.py does (the
optimizer's fused steps are always compiled by upstream); --peak-flops F (or "auto" on CUDA, from
upstream's get_peak_flops table) adds `mfu` in percent, 100 x flops_per_token x tok_per_sec / F,
with flops_per_token from upstream's `model.estimate_flops()`; --phases synchronises after the
forward and after the backward and reports the medians `phases: {forward_s, backward_s,
optimizer_s}` (optimizer_s covers opt.step() and zero_grad).

Run from anywhere with upstream's repository root on PYTHONPATH (or --nanochat DIR).
"""

import argparse
import json
import os
import statistics
import sys
import time


def peak_flops_arg(s):
    return s if s == "auto" else float(s)


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
p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
p.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
               help="compute dtype (NANOCHAT_DTYPE); default float32 on cpu, bfloat16 on cuda")
p.add_argument("--peak-flops", type=peak_flops_arg, default=None,
               help="peak FLOP/s of the device for `mfu` (percent), or 'auto' (cuda: upstream's table)")
p.add_argument("--phases", action="store_true",
               help="also time forward / backward / optimizer separately (synchronising between them)")
args = p.parse_args()

if args.nanochat:
    sys.path.insert(0, args.nanochat)
# Upstream reads NANOCHAT_DTYPE once, when nanochat.common is imported: set it first.
if args.dtype is not None:
    os.environ["NANOCHAT_DTYPE"] = args.dtype
else:
    os.environ.setdefault("NANOCHAT_DTYPE", "float32" if args.device == "cpu" else "bfloat16")
if args.device == "cuda":
    # No internet on the benchmark machine: let upstream's FA3 probe fail fast (or use a cached kernel).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from nanochat.gpt import GPT, GPTConfig  # noqa: E402
import nanochat.common as nc_common  # noqa: E402
import nanochat.flash_attention as nc_flash  # noqa: E402

cuda = args.device == "cuda"
if cuda:
    assert torch.cuda.is_available(), "--device cuda but torch.cuda.is_available() is False"
    torch.set_float32_matmul_precision("high")  # as upstream's compute_init on cuda


def sync():
    if cuda:
        torch.cuda.synchronize()


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
model.to_empty(device=args.device)
model.init_weights()
opt = model.setup_optimizer()
step_model = torch.compile(model, dynamic=False) if args.compile else model

B, T = args.device_batch_size, args.seq_len
g = torch.Generator(device=args.device).manual_seed(0)

times, warmup_times = [], []
phase_times = {"forward_s": [], "backward_s": [], "optimizer_s": []}
for step in range(args.warmup + args.steps):
    if step == args.warmup and cuda:
        sync()
        torch.cuda.reset_peak_memory_stats()
    # A fresh random batch every step, drawn before the clock starts, as `nanochat bench train`
    # does: a fixed batch is memorised within a few steps and the tiny activations that follow
    # slow the CPU down.
    row = torch.randint(0, args.vocab_size, (B, T + 1), generator=g, device=args.device)
    x, y = row[:, :-1].contiguous(), row[:, 1:].contiguous()
    sync()
    t0 = time.perf_counter()
    loss = step_model(x, y)
    if args.phases:
        sync()
        t1 = time.perf_counter()
    loss.backward()
    if args.phases:
        sync()
        t2 = time.perf_counter()
    opt.step()
    model.zero_grad(set_to_none=True)
    sync()
    t3 = time.perf_counter()
    dt = t3 - t0
    extra = ""
    if args.phases:
        extra = f" (fwd {(t1 - t0) * 1e3:.1f} bwd {(t2 - t1) * 1e3:.1f} opt {(t3 - t2) * 1e3:.1f})"
    print(f"torch step {step} ({'warm-up' if step < args.warmup else 'timed'}): {dt * 1e3:.1f} ms"
          f"{extra} loss {loss.item():.4f}", file=sys.stderr)
    if step >= args.warmup:
        times.append(dt)
        if args.phases:
            phase_times["forward_s"].append(t1 - t0)
            phase_times["backward_s"].append(t2 - t1)
            phase_times["optimizer_s"].append(t3 - t2)
    else:
        warmup_times.append(dt)

median = statistics.median(times)
tok_per_sec = B * T / median
result = {
    "impl": "torch" + ("+compile" if args.compile else ""),
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "params": sum(p.numel() for p in model.parameters()),
    "median_step_s": median,
    "step_s": times,
    "tok_per_sec": tok_per_sec,
    "device": args.device,
    "dtype": str(nc_common.COMPUTE_DTYPE).removeprefix("torch."),
    "attn": "fa3" if getattr(nc_flash, "USE_FA3", False) else "sdpa",
    "warmup_step_s": warmup_times,
}
if cuda:
    result["gpu"] = torch.cuda.get_device_name()
    result["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
flops_per_token = model.estimate_flops() if hasattr(model, "estimate_flops") else None
if flops_per_token is not None:
    result["flops_per_token"] = flops_per_token
peak = args.peak_flops
if peak == "auto":
    get_peak = getattr(nc_common, "get_peak_flops", None)
    peak = get_peak(torch.cuda.get_device_name()) if (cuda and get_peak) else None
if peak is not None and flops_per_token is not None and peak not in (0, float("inf")):
    result["peak_flops"] = peak
    result["mfu"] = 100.0 * flops_per_token * tok_per_sec / peak
if args.phases:
    result["phases"] = {k: statistics.median(v) for k, v in phase_times.items()}
print(json.dumps(result))
