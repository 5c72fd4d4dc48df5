"""The GPU profile in one device call (issues #16 and #17): what a first CUDA run costs, where
a training step's time goes, and the same measurements on PyTorch on the same GPU.

Run through `xtask/scripts/gpu_profile.sh` (which unpacks what it carries); every measurement
is a subprocess with its own time limit, and the whole profile stops adding optional parts when
`--budget` seconds are used up. Writes to `--out`:

- `results.json`: every measurement, as the commands printed it;
- `results.md`: the table for `docs/performance.md`, with the command of each number;
- `log.txt`: every command's output;
- `kernel-cache.tar.gz`: the kernel caches this run filled (carry it back for a warm rerun).

`--dry-run` runs the same plumbing on the CPU at toy sizes (or `--device wgpu`), to check the
script before a device session is spent on it.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import tarfile
import time

p = argparse.ArgumentParser()
p.add_argument("--bin", required=True, help="the nanochat binary")
p.add_argument("--out", required=True)
p.add_argument("--work", required=True, help="base dir of the runs (kernel caches live here)")
p.add_argument("--fixtures", required=True, help="the model fixture folder")
p.add_argument("--upstream", default=None, help="folder holding upstream's nanochat/ package")
p.add_argument("--python", default=sys.executable)
p.add_argument("--device", default="cuda")
p.add_argument("--budget", type=float, default=480.0, help="seconds for the whole profile")
p.add_argument("--dry-run", action="store_true", help="toy sizes (CPU or WGPU)")
p.add_argument("--wgpu", action="store_true", help="also the d12 step on --device wgpu")
p.add_argument("--d20", action="store_true", help="also d20 when the budget allows")
args = p.parse_args()

here = os.path.dirname(os.path.abspath(__file__))
os.makedirs(args.out, exist_ok=True)
start = time.time()
log = open(os.path.join(args.out, "log.txt"), "a")
results = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "device": args.device,
           "dry_run": args.dry_run, "runs": {}}
env = dict(os.environ, NANOCHAT_BASE_DIR=args.work, NANOCHAT_FIXTURE_DIR=args.fixtures,
           PYTHONUNBUFFERED="1")

# Sizes: upstream's reference table (d12, 32 x 2048, window L), or toys for the dry run.
if args.dry_run:
    D12 = "--depth 2 --device-batch-size 2 --seq-len 64 --vocab-size 512 --head-dim 64"
    TORCH_D12 = "--depth 2 --device-batch-size 2 --seq-len 64 --vocab-size 512 --head-dim 64"
    D20 = "--depth 3 --device-batch-size 2 --seq-len 64 --vocab-size 512 --head-dim 64"
    ATTN = "--batch 2 --seq-len 64 --heads 2 --head-dim 64"
    MATMUL = "--depth 2 --device-batch-size 2 --seq-len 64 --vocab-size 512"
    REF = "--small"
else:
    D12 = "--depth 12 --device-batch-size 32 --seq-len 2048 --vocab-size 32768"
    TORCH_D12 = D12
    D20 = "--depth 20 --device-batch-size 32 --seq-len 2048 --vocab-size 32768"
    ATTN = "--batch 32 --seq-len 2048 --heads 6 --head-dim 128"
    MATMUL = "--depth 12 --device-batch-size 32 --seq-len 2048 --vocab-size 32768"
    REF = ""
DTYPE = "bf16" if args.device.startswith("cuda") else "f32"


def left():
    return args.budget - (time.time() - start)


def run(name, cmd, limit, optional=False, extra_env=None):
    """Runs `cmd` (a string) with a time limit (and `extra_env` on top of the profile's
    environment); records wall time, status and the last JSON line it printed."""
    if optional and left() < limit:
        results["runs"][name] = {"skipped": f"{left():.0f} s left of the budget, needs {limit}"}
        return None
    limit = max(10, min(limit, left()))
    log.write(f"\n$ {cmd}\n")
    log.flush()
    t0 = time.time()
    try:
        proc = subprocess.run(shlex.split(cmd), env=dict(env, **(extra_env or {})), capture_output=True,
                              text=True, timeout=limit)
        out, err, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        code = "timeout"
    wall = time.time() - t0
    log.write(out + err)
    log.flush()
    parsed = None
    for line in reversed(out.strip().splitlines()):
        try:
            parsed = json.loads(line)
            break
        except ValueError:
            continue
    if parsed is None:
        try:
            parsed = json.loads(out)
        except ValueError:
            pass
    shown = " ".join(f"{k}={v}" for k, v in (extra_env or {}).items())
    rec = {"cmd": f"{shown} {cmd}".strip(), "wall_s": round(wall, 2), "status": code, "result": parsed}
    if code != 0:
        rec["stderr_tail"] = err[-1500:]
    results["runs"][name] = rec
    save()
    return rec


def tuned_keys():
    """Autotune results in the kernel caches (one JSON line per tuned kernel key)."""
    n = 0
    for dirpath, _, files in os.walk(os.path.join(args.work, "kernel-cache")):
        if "autotune" in dirpath.split(os.sep):
            for f in files:
                with open(os.path.join(dirpath, f), "rb") as fh:
                    n += fh.read().count(b"\n")
    return n


def save():
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


nc = args.bin
dev = f"--device {args.device} --dtype {DTYPE}"
# The GPU and its driver.
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20).stdout.strip()
except (OSError, subprocess.SubprocessError):
    smi = None
results["gpu"] = smi
# GPU memory, sampled by nvidia-smi all along (peak memory of the runs).
mem = None
if smi:
    mem = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,memory.used", "--format=csv,noheader,nounits",
                            "-lms", "250"], stdout=open(os.path.join(args.out, "mem.csv"), "w"))

# 1. The forward against PyTorch's fixture and the training attention against the CPU kernel
#    (bf16 tolerance), cold: it also pays first compiles.
run("parity", f"{nc} bench parity {dev} --fixture-dir {args.fixtures}", 180)
# PyTorch's kernels at the same shapes (quick, and they leave our caches cold).
torch_dev = "cuda" if args.device.startswith("cuda") else "cpu"
run("torch_kernels", f"{args.python} {here}/gpu_torch_ref.py --device {torch_dev} {REF}", 120, optional=True)
# 2. The first d12 step with whatever caches there are (cold on a fresh machine).
keys_before = tuned_keys()
run("d12_first_step", f"{nc} bench train {D12} --window-pattern L {dev} --steps 1 --warmup 0", 240)
results["autotune_keys_of_first_step"] = tuned_keys() - keys_before
# 3. The same again, with the caches of 2: the warm first step; then the steady state.
run("d12_first_step_warm", f"{nc} bench train {D12} --window-pattern L {dev} --steps 1 --warmup 0", 90)
run("d12", f"{nc} bench train {D12} --window-pattern L {dev} --steps 10 --warmup 2 --device-name H200", 120)
# 3b. The linear layers through cuBLASLt (opt-in, NANOCHAT_CUBLASLT=1; #17): parity of the ops first,
#     then the same steady-state step.
if args.device.startswith("cuda"):
    LT = {"NANOCHAT_CUBLASLT": "1"}
    run("parity_cublaslt", f"{nc} bench parity {dev} --fixture-dir {args.fixtures}", 90, optional=True,
        extra_env=LT)
    run("d12_cublaslt", f"{nc} bench train {D12} --window-pattern L {dev} --steps 10 --warmup 2 "
        f"--device-name H200", 150, optional=True, extra_env=LT)
    run("matmul_cublaslt", f"{nc} bench matmul {MATMUL} {dev}", 60, optional=True, extra_env=LT)
run("d12_phases", f"{nc} bench train {D12} --window-pattern L {dev} --steps 3 --warmup 1 --phases", 90, optional=True)
# 4. Our kernels at the step's shapes.
run("matmul", f"{nc} bench matmul {MATMUL} {dev}", 120, optional=True)
run("attention", f"{nc} bench attention {ATTN} {dev}", 90, optional=True)
# 5. Upstream's step on PyTorch (torch.compile, bf16 on CUDA), same shapes.
if args.upstream:
    compile_flag = "" if args.dry_run else "--compile"
    run("torch_d12", f"{args.python} {here}/bench_torch_train.py --nanochat {args.upstream} {TORCH_D12} "
        f"--window-pattern L --device {torch_dev} --steps 10 --warmup 3 {compile_flag} --peak-flops 989e12", 180,
        optional=True)
# 6. The WGPU path (Vulkan), and d20 when time allows.
if args.wgpu:
    run("d12_wgpu", f"{nc} bench train {D12} --window-pattern L --device wgpu --steps 2 --warmup 1", 150,
        optional=True)
if args.d20:
    run("d20", f"{nc} bench train {D20} --window-pattern L {dev} --steps 5 --warmup 1 --device-name H200", 180,
        optional=True)
if mem:
    mem.terminate()

# Peak memory per run window is not separable from one sampler; record the overall peak.
try:
    used = [float(l.split(",")[1]) for l in open(os.path.join(args.out, "mem.csv")) if "," in l]
    results["peak_gpu_memory_gib"] = round(max(used) / 1024, 2) if used else None
except (OSError, ValueError):
    results["peak_gpu_memory_gib"] = None

# The kernel caches, for a warm rerun.
cache = os.path.join(args.work, "kernel-cache")
if os.path.isdir(cache):
    with tarfile.open(os.path.join(args.out, "kernel-cache.tar.gz"), "w:gz") as t:
        t.add(cache, arcname="kernel-cache")
results["seconds"] = round(time.time() - start, 1)
save()


# The table.
def get(name, *path):
    v = results["runs"].get(name, {})
    for k in path:
        v = v.get(k) if isinstance(v, dict) else None
    return v


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


rows = [
    ("first d12 step, cold caches (process wall s)", fmt(get("d12_first_step", "wall_s"), ".2f"), get("d12_first_step", "cmd")),
    ("first d12 step, warm caches (process wall s)", fmt(get("d12_first_step_warm", "wall_s"), ".2f"), get("d12_first_step_warm", "cmd")),
    ("d12 median step (ms)", fmt((get("d12", "result", "result", "median_step_s") or 0) * 1e3 or None, ".1f"), get("d12", "cmd")),
    ("d12 tok/s", fmt(get("d12", "result", "result", "tok_per_sec"), ".0f"), get("d12", "cmd")),
    ("d12 MFU (%)", fmt(get("d12", "result", "result", "mfu"), ".1f"), get("d12", "cmd")),
    ("d12 median step, linear layers through cuBLASLt (ms)",
     fmt((get("d12_cublaslt", "result", "result", "median_step_s") or 0) * 1e3 or None, ".1f"), get("d12_cublaslt", "cmd")),
    ("d12 tok/s, cuBLASLt", fmt(get("d12_cublaslt", "result", "result", "tok_per_sec"), ".0f"), get("d12_cublaslt", "cmd")),
    ("upstream d12 tok/s (PyTorch)", fmt(get("torch_d12", "result", "tok_per_sec"), ".0f"), get("torch_d12", "cmd")),
    ("upstream d12 peak memory (GB)", fmt(get("torch_d12", "result", "peak_memory_gb"), ".1f"), get("torch_d12", "cmd")),
    ("autotune keys the first step created", str(results.get("autotune_keys_of_first_step")), get("d12_first_step", "cmd")),
    ("peak GPU memory over the profile (GiB, nvidia-smi)", fmt(results.get("peak_gpu_memory_gib"), ".1f"), "nvidia-smi -lms 250"),
]
ph = get("d12_phases", "result", "result", "phases") or {}
for k in ("forward_s", "backward_s", "optimizer_s"):
    rows.append((f"d12 {k[:-2]} (ms)", fmt(ph.get(k) and ph[k] * 1e3, ".1f"), get("d12_phases", "cmd")))
for run_name, how in (("matmul", ""), ("matmul_cublaslt", ", cuBLASLt")):
    for m in get(run_name, "result", "matmul") or []:
        rows.append((f"ours matmul {m['m']}x{m['k']}x{m['n']}{how} (TFLOP/s)", fmt(m["tflops"], ".1f"), get(run_name, "cmd")))
for m in (get("torch_kernels", "result", "matmul") or []):
    if isinstance(m, dict) and "tflops" in m:
        rows.append((f"torch.matmul {m['m']}x{m['k']}x{m['n']} (TFLOP/s)", fmt(m["tflops"], ".1f"), get("torch_kernels", "cmd")))
att = get("attention", "result", "attention") or {}
rows.append(("ours attention fwd / fwd+bwd (ms)", f"{fmt(att.get('forward_ms'), '.1f')} / {fmt(att.get('forward_backward_ms'), '.1f')}", get("attention", "cmd")))
sdpa = get("torch_kernels", "result", "attention") or {}
rows.append(("SDPA fwd / fwd+bwd (ms)", f"{fmt(sdpa.get('forward_ms'), '.1f')} / {fmt(sdpa.get('fwd_bwd_ms'), '.1f')}", get("torch_kernels", "cmd")))
par = get("parity", "result", "parity") or []
for r in par:
    rows.append((f"forward vs PyTorch, {r['fixture']} ({r['dtype']})", f"{r['vs_torch']:.2e} (tol {r['tolerance']:.0e})", get("parity", "cmd")))
for run_name, how in (("parity", ""), ("parity_cublaslt", ", cuBLASLt")):
    for r in get(run_name, "result", "ops") or []:
        c = r["case"]
        errs = " / ".join(f"{e:.1e}" for e in r["max_rel"])
        what = (f"[B,T,H,Hkv,D]={c['shape']} window {c['window']}" if r["op"] == "attention"
                else f"x {c['x']} · w [{c['x'][2]}, {c['n']}]")
        rows.append((f"{r['op']} {what} ({r['dtype']}{how}) vs CPU: {' / '.join(r['values'])}",
                     f"{errs} (tol {r['tolerance']:.0e})", get(run_name, "cmd")))
if args.wgpu:
    rows.append(("d12 median step on WGPU (ms)", fmt((get("d12_wgpu", "result", "result", "median_step_s") or 0) * 1e3 or None, ".1f"), get("d12_wgpu", "cmd")))
with open(os.path.join(args.out, "results.md"), "w") as f:
    f.write(f"GPU: {smi or 'none'}; {results['started']}; profile {results['seconds']} s\n\n")
    f.write("| measurement | value | command |\n|---|---|---|\n")
    for name, value, cmd in rows:
        f.write(f"| {name} | {value} | `{cmd or '-'}` |\n")
print(open(os.path.join(args.out, "results.md")).read())
