"""PyTorch's own speed on this machine's accelerator for the kernels a nanochat training step leans on.

The reference side of the GPU profiling run: how fast plain PyTorch (cuBLAS, its SDPA kernels) does
the big GEMMs and the causal attention of a d12 nanochat step, so that our kernels' times can be
read against what the hardware gives a stock library. Prints one JSON document on stdout:

  gpu, driver     torch.cuda.get_device_name() and the driver from
                  `nvidia-smi --query-gpu=name,driver_version --format=csv,noheader` (null when
                  there is no nvidia-smi); torch, cuda (torch.version.cuda), cudnn versions.
  matmul          for each --shapes entry MxKxN (default the GEMMs of a d12 step at B*T = 32 x 2048
                  = 65536 rows, model dim 768, MLP 3072, vocab 32768): `torch.matmul(a, b)` with
                  a [M,K], b [K,N] (`ms`, `tflops` = 2MKN / time), and the model's own layout
                  `F.linear(a, w)` with w [N,K] (x @ W^T: `linear_ms`, `linear_tflops`).
  attention       F.scaled_dot_product_attention(q, k, v, is_causal=True) with q, k, v [B,H,T,D]
                  requiring grad: `forward_ms`, `fwd_bwd_ms` (forward then autograd.grad of all
                  three), `backward_ms` = fwd_bwd_ms - forward_ms, `tflops_fwd` (causal forward
                  FLOPs 4*B*H*T^2*D/2) and `tflops_bwd` (2.5x the forward FLOPs, FlashAttention's
                  convention). `bthd_view` repeats it on transposed views of [B,T,H,D] tensors, as
                  upstream's SDPA fallback feeds them; on CUDA `backends` forces each of SDPA's
                  flash / efficient / cudnn kernels in turn (an error where one does not apply).

Timing: after --warmup untimed calls, each of --iters calls is timed on its own (CUDA events on
the GPU; perf_counter on the CPU, where the work is synchronous) and the median is reported.
Every section is guarded: an exception becomes {"error": "..."} and the other sections still run.
--dtype (default bfloat16) is the tensors' dtype; on the CPU an op that fails in it is retried in
float32, and `dtype_used` in each entry says which ran. --small shrinks every size (rows 512,
attention batch 2 x seq 256, 3 iterations after 1 warm-up) for a dry run on the CPU in seconds.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
import traceback

import torch
import torch.nn.functional as F

D12_SHAPES = "65536x768x768,65536x768x3072,65536x3072x768,65536x768x32768"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

p = argparse.ArgumentParser()
p.add_argument("--device", choices=["cpu", "cuda"], default=None,
               help="default: cuda when available, else cpu")
p.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
p.add_argument("--shapes", default=D12_SHAPES, help="comma-separated MxKxN GEMMs")
p.add_argument("--iters", type=int, default=None, help="timed calls per measurement (default 20; 3 with --small)")
p.add_argument("--warmup", type=int, default=None, help="untimed calls first (default 5; 1 with --small)")
p.add_argument("--attn-batch", type=int, default=32)
p.add_argument("--seq-len", type=int, default=2048)
p.add_argument("--heads", type=int, default=6)
p.add_argument("--head-dim", type=int, default=128)
p.add_argument("--no-attn-backends", action="store_true", help="skip the per-backend SDPA timings (cuda)")
p.add_argument("--small", action="store_true", help="shrink every size for a quick CPU dry run")
args = p.parse_args()

device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
cuda = device == "cuda"
dtype = DTYPES[args.dtype]
iters = args.iters if args.iters is not None else (3 if args.small else 20)
warmup = args.warmup if args.warmup is not None else (1 if args.small else 5)
if args.small:
    args.attn_batch, args.seq_len = min(args.attn_batch, 2), min(args.seq_len, 256)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def err(e):
    return {"error": f"{type(e).__name__}: {e}".strip()[:2000]}


def time_ms(fn):
    """Median milliseconds of `iters` separately timed calls of fn, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(iters)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        ts = [start.elapsed_time(end) for start, end in events]
    else:
        ts = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def with_fallback(run):
    """run(dtype) -> dict; on the CPU, retried in float32 when the requested dtype fails."""
    try:
        out = run(dtype)
        out["dtype_used"] = args.dtype
        return out
    except Exception as e:  # noqa: BLE001
        if cuda or dtype == torch.float32:
            raise
        log(f"  {args.dtype} failed on cpu ({type(e).__name__}: {e}); retrying in float32")
        out = run(torch.float32)
        out["dtype_used"] = "float32"
        out["fallback_reason"] = f"{type(e).__name__}: {e}"[:500]
        return out


def driver_info():
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        )
    except Exception:  # noqa: BLE001  (no nvidia-smi, or it hung)
        return None
    line = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
    return line.rsplit(",", 1)[-1].strip() if line else None


def section_matmul():
    rows = []
    for spec in args.shapes.split(","):
        m, k, n = (int(v) for v in spec.strip().lower().split("x"))
        if args.small:
            m = min(m, 512)
        log(f"matmul {m}x{k}x{n} …")
        flops = 2.0 * m * k * n

        def run(dt, m=m, k=k, n=n, flops=flops):
            a = torch.randn(m, k, device=device, dtype=dt)
            b = torch.randn(k, n, device=device, dtype=dt)
            w = torch.randn(n, k, device=device, dtype=dt)
            c = torch.empty(m, n, device=device, dtype=dt)
            ms = time_ms(lambda: torch.matmul(a, b, out=c))
            lin_ms = time_ms(lambda: F.linear(a, w))
            del a, b, w, c
            return {"m": m, "k": k, "n": n, "ms": ms, "tflops": flops / (ms * 1e-3) / 1e12,
                    "linear_ms": lin_ms, "linear_tflops": flops / (lin_ms * 1e-3) / 1e12}

        try:
            rows.append(with_fallback(run))
        except Exception as e:  # noqa: BLE001
            rows.append({"m": m, "k": k, "n": n, **err(e)})
        if cuda:
            torch.cuda.empty_cache()
    return rows


def attention_once(dt, layout="bhtd"):
    B, H, T, D = args.attn_batch, args.heads, args.seq_len, args.head_dim
    if layout == "bhtd":
        q, k, v = (torch.randn(B, H, T, D, device=device, dtype=dt, requires_grad=True) for _ in range(3))
        qkv = (q, k, v)
        views = lambda: qkv  # noqa: E731
    else:  # [B,T,H,D] leaves, handed to SDPA as transposed views (upstream's fallback path)
        qkv = tuple(torch.randn(B, T, H, D, device=device, dtype=dt, requires_grad=True) for _ in range(3))
        views = lambda: tuple(t.transpose(1, 2) for t in qkv)  # noqa: E731
    grad_out = torch.randn(B, H, T, D, device=device, dtype=dt)

    def fwd():
        return F.scaled_dot_product_attention(*views(), is_causal=True)

    def fwd_bwd():
        out = F.scaled_dot_product_attention(*views(), is_causal=True)
        torch.autograd.grad(out, qkv, grad_out)

    fwd_ms = time_ms(fwd)
    fb_ms = time_ms(fwd_bwd)
    flops_fwd = 4.0 * B * H * T * T * D / 2
    bwd_ms = fb_ms - fwd_ms
    return {
        "batch": B, "heads": H, "seq_len": T, "head_dim": D,
        "forward_ms": fwd_ms, "fwd_bwd_ms": fb_ms, "backward_ms": bwd_ms,
        "tflops_fwd": flops_fwd / (fwd_ms * 1e-3) / 1e12,
        "tflops_bwd": 2.5 * flops_fwd / (bwd_ms * 1e-3) / 1e12 if bwd_ms > 0 else None,
    }


def section_attention():
    log(f"attention B={args.attn_batch} H={args.heads} T={args.seq_len} D={args.head_dim} …")
    out = with_fallback(lambda dt: attention_once(dt, "bhtd"))
    used = DTYPES[out["dtype_used"]]
    try:
        log("attention, transposed [B,T,H,D] views …")
        out["bthd_view"] = {k: v for k, v in attention_once(used, "bthd").items()
                            if k.endswith("_ms") or k.startswith("tflops")}
    except Exception as e:  # noqa: BLE001
        out["bthd_view"] = err(e)
    if cuda and not args.no_attn_backends:
        out["backends"] = {}
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            names = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION"}
            for name, attr in names.items():
                log(f"attention, backend {name} …")
                try:
                    with sdpa_kernel(getattr(SDPBackend, attr)):
                        r = attention_once(used, "bhtd")
                    out["backends"][name] = {k: v for k, v in r.items()
                                             if k.endswith("_ms") or k.startswith("tflops")}
                except Exception as e:  # noqa: BLE001
                    out["backends"][name] = err(e)
                torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001
            out["backends"] = err(e)
    return out


def guarded(name, fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        log(f"{name} failed:\n{traceback.format_exc()}")
        return err(e)


result = {"device": device, "dtype": args.dtype, "iters": iters, "warmup": warmup, "small": args.small}
result["gpu"] = guarded("gpu", lambda: torch.cuda.get_device_name() if cuda else None)
result["driver"] = guarded("driver", driver_info)
result["torch"] = torch.__version__
result["cuda"] = torch.version.cuda
result["cudnn"] = guarded("cudnn", lambda: torch.backends.cudnn.version() if cuda else None)
if not cuda:
    result["threads"] = torch.get_num_threads()
if cuda:
    torch.backends.cuda.matmul.allow_tf32 = True  # only affects --dtype float32, as upstream's "high"
result["matmul"] = guarded("matmul", section_matmul)
result["attention"] = guarded("attention", section_attention)
if cuda:
    result["peak_memory_gb"] = guarded("peak_memory", lambda: torch.cuda.max_memory_allocated() / 1e9)
print(json.dumps(result, indent=1))
