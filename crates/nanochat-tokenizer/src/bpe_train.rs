//! Byte-level BPE training that learns exactly the merges upstream's trainer learns (a port of
//! karpathy/rustbpe's `train_from_iterator` and `train_core_incremental`).
//!
//! 1. **Chunk counting**: documents are split into chunks ([`Splitter`]) in parallel with rayon,
//!    each worker counting chunks in its own map, then merged into one map of unique chunks and
//!    their counts.
//! 2. **Merging**: every unique chunk becomes a word of byte ids. Pair counts (weighted by word
//!    counts) and, for every pair, the words it occurs in are built once. A max-heap orders pairs
//!    by count, ties broken toward the smaller pair, with lazy refresh: a popped pair whose count
//!    changed since it was queued is re-queued with its current count. Merging a pair rewrites
//!    only the words it occurs in and applies ±count deltas to the neighbouring pairs.
//!
//! The merge chosen at every step is therefore the pair with the highest current count, the
//! smallest pair among equals — the same as rustbpe, so the same input gives the same merges.
//! Unlike rustbpe, words live in one flat arena rewritten in place and per-pair word lists are
//! plain vectors de-duplicated with a per-word stamp, which keeps the merge loop cache-friendly.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::error::TokenizerError;
use crate::pretokenize::Splitter;

type Pair = (u32, u32);

/// Unique chunks of the training text with their counts.
#[derive(Debug, Default)]
pub struct ChunkCounts {
    counts: FxHashMap<Box<str>, u64>,
}

impl ChunkCounts {
    /// An empty count.
    pub fn new() -> Self {
        Self::default()
    }

    /// Splits `docs` in parallel and adds their chunks.
    pub fn add_docs(&mut self, docs: &[String], splitter: &Splitter) -> Result<(), TokenizerError> {
        let local = docs
            .par_iter()
            .with_min_len(4)
            .try_fold(FxHashMap::<&str, u64>::default, |mut m, d| {
                splitter.for_each(d, |c| *m.entry(c).or_insert(0) += 1)?;
                Ok::<_, TokenizerError>(m)
            })
            .try_reduce(FxHashMap::default, |a, b| {
                let (mut big, small) = if a.len() >= b.len() { (a, b) } else { (b, a) };
                for (k, v) in small {
                    *big.entry(k).or_insert(0) += v;
                }
                Ok(big)
            })?;
        for (chunk, n) in local {
            match self.counts.get_mut(chunk) {
                Some(c) => *c += n,
                None => {
                    self.counts.insert(chunk.into(), n);
                }
            }
        }
        Ok(())
    }

    /// Number of unique chunks.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// Words of byte ids in one arena, rewritten in place as merges shrink them.
struct Words {
    ids: Vec<u32>,
    start: Vec<usize>,
    len: Vec<u32>,
    count: Vec<i64>,
}

impl Words {
    fn from_counts(chunks: ChunkCounts) -> Self {
        let n = chunks.counts.len();
        let mut w = Words {
            ids: Vec::new(),
            start: Vec::with_capacity(n),
            len: Vec::with_capacity(n),
            count: Vec::with_capacity(n),
        };
        for (chunk, c) in chunks.counts {
            w.start.push(w.ids.len());
            w.len.push(chunk.len() as u32);
            w.count.push(c as i64);
            w.ids.extend(chunk.bytes().map(u32::from));
        }
        w
    }

    fn word(&self, i: usize) -> &[u32] {
        &self.ids[self.start[i]..self.start[i] + self.len[i] as usize]
    }
}

/// Merges every non-overlapping occurrence of `(a, b)` in `ids` (left to right) into `new`,
/// reporting each pair-count change as `delta(pair, ±1)`; returns the new length.
fn merge_word(ids: &mut [u32], (a, b): Pair, new: u32, mut delta: impl FnMut(Pair, i64)) -> usize {
    let n = ids.len();
    let (mut r, mut w) = (0, 0);
    while r < n {
        if r + 1 < n && ids[r] == a && ids[r + 1] == b {
            if w > 0 {
                let x = ids[w - 1];
                delta((x, a), -1);
                delta((x, new), 1);
            }
            delta((a, b), -1);
            if r + 2 < n {
                let y = ids[r + 2];
                delta((b, y), -1);
                delta((new, y), 1);
            }
            ids[w] = new;
            w += 1;
            r += 2;
        } else {
            ids[w] = ids[r];
            w += 1;
            r += 1;
        }
    }
    w
}

/// Learns up to `num_merges` merges from the counted chunks; merge `i` creates token
/// `256 + i`. Stops early if no pair is left. `progress` is called with the number of merges
/// done after each one.
pub fn learn_merges(
    chunks: ChunkCounts,
    num_merges: usize,
    mut progress: impl FnMut(usize),
) -> Vec<Pair> {
    let mut words = Words::from_counts(chunks);
    let nwords = words.len.len();

    // Initial pair counts and the words each pair occurs in.
    let mut pair_counts: FxHashMap<Pair, i64> = FxHashMap::default();
    let mut positions: FxHashMap<Pair, Vec<u32>> = FxHashMap::default();
    for i in 0..nwords {
        let c = words.count[i];
        let word = words.word(i);
        for p in word.windows(2) {
            let pair = (p[0], p[1]);
            *pair_counts.entry(pair).or_insert(0) += c;
            let pos = positions.entry(pair).or_default();
            if pos.last() != Some(&(i as u32)) {
                pos.push(i as u32);
            }
        }
    }
    let mut heap: BinaryHeap<(i64, Reverse<Pair>)> = pair_counts
        .iter()
        .filter(|(_, c)| **c > 0)
        .map(|(p, c)| (*c, Reverse(*p)))
        .collect();

    let mut merges = Vec::with_capacity(num_merges);
    let mut stamp = vec![u32::MAX; nwords];
    let mut created: FxHashMap<Pair, Vec<u32>> = FxHashMap::default();
    while merges.len() < num_merges {
        let Some((count, Reverse(pair))) = heap.pop() else {
            break;
        };
        let current = pair_counts.get(&pair).copied().unwrap_or(0);
        if current <= 0 {
            continue;
        }
        if count != current {
            heap.push((current, Reverse(pair)));
            continue;
        }
        let merge_idx = merges.len() as u32;
        let new_id = 256 + merge_idx;
        merges.push(pair);

        let pos = positions.remove(&pair).unwrap_or_default();
        for &wi in &pos {
            let w = wi as usize;
            if stamp[w] == merge_idx {
                continue;
            }
            stamp[w] = merge_idx;
            let c = words.count[w];
            let (start, len) = (words.start[w], words.len[w] as usize);
            let new_len = merge_word(&mut words.ids[start..start + len], pair, new_id, |p, d| {
                *pair_counts.entry(p).or_insert(0) += d * c;
                if d > 0 {
                    let list = created.entry(p).or_default();
                    if list.last() != Some(&wi) {
                        list.push(wi);
                    }
                }
            });
            words.len[w] = new_len as u32;
        }
        for (p, list) in created.drain() {
            let c = pair_counts.get(&p).copied().unwrap_or(0);
            if c > 0 {
                heap.push((c, Reverse(p)));
                positions.insert(p, list);
            }
        }
        progress(merges.len());
    }
    merges
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanochat_core::tokenizer_config::SPLIT_PATTERN;

    /// The straightforward definition: repeatedly merge the most frequent pair (smallest on
    /// ties), recounting everything each time.
    fn naive(chunks: &[(&str, u64)], num_merges: usize) -> Vec<Pair> {
        let mut words: Vec<(Vec<u32>, i64)> = chunks
            .iter()
            .map(|(s, c)| (s.bytes().map(u32::from).collect(), *c as i64))
            .collect();
        let mut merges = Vec::new();
        for m in 0..num_merges {
            let mut counts: std::collections::BTreeMap<Pair, i64> = Default::default();
            for (w, c) in &words {
                for p in w.windows(2) {
                    *counts.entry((p[0], p[1])).or_insert(0) += c;
                }
            }
            let Some((&best, _)) = counts
                .iter()
                .filter(|(_, c)| **c > 0)
                .max_by_key(|(p, c)| (**c, Reverse(**p)))
            else {
                break;
            };
            let new = 256 + m as u32;
            for (w, _) in &mut words {
                let n = merge_word(w, best, new, |_, _| {});
                w.truncate(n);
            }
            merges.push(best);
        }
        merges
    }

    #[test]
    fn incremental_equals_naive_recount() {
        let text = "the theme then: aaaa aaa abab abab ba ba the the 1212 121 thee";
        let splitter = Splitter::new(SPLIT_PATTERN).unwrap();
        let mut counts = ChunkCounts::new();
        counts
            .add_docs(&[text.to_string(), "aaaa the".to_string()], &splitter)
            .unwrap();
        let mut chunk_list: Vec<(String, u64)> = counts
            .counts
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        chunk_list.sort();
        let borrowed: Vec<(&str, u64)> = chunk_list.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let expected = naive(&borrowed, 40);
        assert_eq!(learn_merges(counts, 40, |_| {}), expected);
    }

    #[test]
    fn overlapping_runs_are_counted_exactly() {
        // "aaaa" merged by (a,a) becomes [X, X]: the deltas must leave (a,a) at zero.
        let mut ids = vec![97, 97, 97, 97];
        let mut total = 0;
        let n = merge_word(&mut ids, (97, 97), 256, |p, d| {
            if p == (97, 97) {
                total += d;
            }
        });
        assert_eq!(&ids[..n], &[256, 256]);
        assert_eq!(total, -3);
    }
}
