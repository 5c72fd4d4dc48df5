"""Upstream nanochat's Engine on PyTorch, timed the way `nanochat bench infer` times ours.

The reference side of `cargo xtask bench-cpu-vs-torch --infer`: a randomly initialised upstream
`GPT` (the model dial of `scripts/base_train.py`, upstream's defaults: sequence 2048, window
pattern SSSL) and upstream's `Engine.generate` as `scripts/infer_bench.py` drives it: the first
`next()` is the batch-1 prefill of the prompt, the cache replicated to every row and the first
sampled token (time to first token); every later `next()` is one decode step for all rows.
Greedy (temperature 0). The special tokens are ids no row can sample, so the tool-use state
machine never triggers. Prints one JSON line.
"""

import argparse
import json
import os
import sys
import time

p = argparse.ArgumentParser()
p.add_argument("--nanochat", default=None, help="upstream nanochat checkout (the folder holding nanochat/)")
p.add_argument("--depth", type=int, default=4)
p.add_argument("--head-dim", type=int, default=128)
p.add_argument("--aspect-ratio", type=int, default=64)
p.add_argument("--vocab-size", type=int, default=32768)
p.add_argument("--seq-len", type=int, default=2048)
p.add_argument("--window-pattern", default="SSSL")
p.add_argument("--prompt-tokens", type=int, default=128)
p.add_argument("--decode-tokens", type=int, default=64)
p.add_argument("--batch-sizes", default="1,8")
p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
args = p.parse_args()

if args.nanochat:
    sys.path.insert(0, args.nanochat)
os.environ.setdefault("NANOCHAT_DTYPE", "float32")

import torch  # noqa: E402
from nanochat.engine import Engine  # noqa: E402
from nanochat.gpt import GPT, GPTConfig  # noqa: E402

if args.threads > 0:
    torch.set_num_threads(args.threads)
torch.manual_seed(42)


class NoSpecials:
    """The tokenizer surface `Engine.generate` touches, with specials no row can sample."""

    def encode_special(self, _name):
        return -1

    def get_bos_token_id(self):
        return -1

    def encode(self, text, prepend=None):
        return []

    def decode(self, ids):
        return ""


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
model.eval()
engine = Engine(model, NoSpecials())
prompt = [(i * 7919 + 13) % max(args.vocab_size - 16, 1) for i in range(args.prompt_tokens)]


def run(batch, decode_tokens):
    gen = engine.generate(prompt, num_samples=batch, max_tokens=decode_tokens, temperature=0.0)
    t0 = time.perf_counter()
    next(gen)
    ttft = time.perf_counter() - t0
    steps = []
    while True:
        t0 = time.perf_counter()
        try:
            next(gen)
        except StopIteration:
            break
        steps.append(time.perf_counter() - t0)
    return ttft, steps


with torch.inference_mode():
    run(1, 2)  # warm-up
    ttft, _ = run(1, 2)
    decode = []
    for b in [int(x) for x in args.batch_sizes.split(",")]:
        _, steps = run(b, args.decode_tokens)
        secs = sum(steps[1:])  # the first decode step is untimed, as in `nanochat bench infer`
        n = max(len(steps) - 1, 1)
        decode.append({"batch_size": b, "tok_per_sec": n * b / secs, "ms_per_step": 1000 * secs / n})
        print(f"torch decode batch {b}: {n * b / secs:.0f} tok/s", file=sys.stderr)

print(json.dumps({
    "impl": "torch",
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "prompt_tokens": args.prompt_tokens,
    "decode_tokens": args.decode_tokens,
    "ttft_ms": 1000 * ttft,
    "prefill_tok_per_sec": args.prompt_tokens / ttft,
    "decode": decode,
}))
