"""Upstream's side of `cargo xtask bench-tokenizer`: trains rustbpe (PyPI, as nanochat uses it)
on the same shards with the same document rules as `nanochat tok-train`, writes its ranks in
tiktoken format, and measures Python tiktoken's encode throughput with *our* trained ranks on the
validation shard. Prints one JSON object."""
import base64
import glob
import json
import os
import sys
import time

import pyarrow.parquet as pq
import rustbpe
import tiktoken

data_dir, vocab_size, out_ranks, our_ranks, repeats = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
MAX_CHARS, DOC_CAP, SPECIALS = 2_000_000_000, 10_000, 9
files = sorted(f for f in glob.glob(os.path.join(data_dir, "*.parquet")))
train, val = files[:-1], files[-1:]


def docs():
    # upstream tok_train.py's text_iterator
    n = 0
    for f in train:
        pf = pq.ParquetFile(f)
        for rg in range(pf.num_row_groups):
            for text in pf.read_row_group(rg).column("text").to_pylist():
                text = text[:DOC_CAP]
                n += len(text)
                yield text
                if n > MAX_CHARS:
                    return


times = []
for _ in range(repeats):
    tok = rustbpe.Tokenizer()
    t0 = time.perf_counter()
    tok.train_from_iterator(docs(), vocab_size - SPECIALS, pattern=PATTERN)
    times.append(time.perf_counter() - t0)
with open(out_ranks, "w") as f:
    for token, rank in sorted(tok.get_mergeable_ranks(), key=lambda x: x[1]):
        f.write(f"{base64.b64encode(bytes(token)).decode()} {rank}\n")

ranks = {}
with open(our_ranks) as f:
    for line in f:
        b64, rank = line.split()
        ranks[base64.b64decode(b64)] = int(rank)
enc = tiktoken.Encoding(name="ours", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens={})
val_docs = [t for f in val for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()]
nbytes = sum(len(d.encode("utf-8")) for d in val_docs)


def best(fn):
    out, b = None, float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        b = min(b, time.perf_counter() - t0)
    return b, out


single, toks = best(lambda: sum(len(enc.encode_ordinary(d)) for d in val_docs))
threads = os.cpu_count() or 1
batch, _ = best(lambda: enc.encode_ordinary_batch(val_docs, num_threads=threads))
print(json.dumps({
    "train_seconds": sorted(times)[len(times) // 2],
    "train_seconds_all": times,
    "encode_bytes": nbytes,
    "encode_tokens": toks,
    "single_thread_mb_per_s": nbytes / single / 1e6,
    "batch_mb_per_s": nbytes / batch / 1e6,
    "threads": threads,
    "tiktoken": tiktoken.__version__,
}))
