//! Encode throughput: our pre-tokenizer vs fancy-regex, and full encoding with our tokenizer
//! (trained on the first train shard) vs GPT-2's and GPT-4's tiktoken-rs encoders, on the
//! validation shard's documents.

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nanochat_tokenizer::pretokenize::Splitter;
use nanochat_tokenizer::tok_train::{TokTrainOptions, train_tokenizer};
use nanochat_tokenizer::{SPLIT_PATTERN, Tokenizer};

/// Documents of the validation shard (the last) or the train shards, up to `max_chars`.
fn docs(val: bool, max_chars: usize) -> Vec<String> {
    let files = common::pretrain_shards();
    let n = files.len();
    let split = if val || n < 2 {
        &files[n - 1..]
    } else {
        &files[..n - 1]
    };
    let mut out = Vec::new();
    let mut chars = 0;
    for d in split.iter().flat_map(|f| common::shard_docs(f)) {
        chars += d.len();
        out.push(d);
        if chars > max_chars {
            break;
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let val = docs(true, 2_000_000);
    let bytes: usize = val.iter().map(String::len).sum();
    let train = docs(false, 4_000_000);
    let opts = TokTrainOptions {
        vocab_size: 8192,
        ..Default::default()
    };
    let (ours, _) = train_tokenizer(train.into_iter().map(Ok::<_, String>), &opts).unwrap();

    let mut g = c.benchmark_group("split");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.sample_size(10);
    let fast = Splitter::new(SPLIT_PATTERN).unwrap();
    let slow = Splitter::regex(SPLIT_PATTERN).unwrap();
    g.bench_function("fast scanner", |b| {
        b.iter(|| {
            val.iter()
                .map(|d| fast.split(d).unwrap().len())
                .sum::<usize>()
        })
    });
    g.bench_function("fancy-regex", |b| {
        b.iter(|| {
            val.iter()
                .map(|d| slow.split(d).unwrap().len())
                .sum::<usize>()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.sample_size(10);
    let enc = |t: &Tokenizer| val.iter().map(|d| t.encode(d).len()).sum::<usize>();
    g.bench_function("ours (8k vocab)", |b| b.iter(|| enc(&ours)));
    g.bench_function("ours batch (rayon)", |b| {
        b.iter(|| ours.encode_batch(&val, None, None).len())
    });
    let gpt2 = tiktoken_rs::r50k_base_singleton();
    let gpt4 = tiktoken_rs::cl100k_base_singleton();
    g.bench_function("gpt2 tiktoken-rs", |b| {
        b.iter(|| {
            val.iter()
                .map(|d| gpt2.encode_ordinary(d).len())
                .sum::<usize>()
        })
    });
    g.bench_function("gpt4 tiktoken-rs", |b| {
        b.iter(|| {
            val.iter()
                .map(|d| gpt4.encode_ordinary(d).len())
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
