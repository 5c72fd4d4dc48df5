//! Next-token sampling (upstream `engine.py`, `sample_next_token`, plus the knobs users expect
//! from OpenAI-style servers): temperature (0 = greedy argmax), top-k, top-p (nucleus), min-p,
//! and a repetition penalty over a window of recent tokens. Runs on the host over one row of
//! logits with a seeded generator, so the same seed gives the same text on every backend.

use nanochat_core::GenerationParams;
use rand_mt::Mt64;

/// A seeded source of uniform numbers.
pub struct Sampler {
    rng: Mt64,
}

impl Sampler {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Mt64::new(seed),
        }
    }

    fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Picks a token from `logits` (one row) given the row's recent tokens.
    pub fn sample(&mut self, logits: &[f32], recent: &[u32], p: &GenerationParams) -> u32 {
        let mut logits: Vec<f32> = logits.to_vec();
        if p.repetition_penalty != 1.0 {
            let start = recent.len().saturating_sub(p.repetition_window);
            let mut seen = std::collections::HashSet::new();
            for &t in &recent[start..] {
                if seen.insert(t)
                    && let Some(l) = logits.get_mut(t as usize)
                {
                    // CTRL-style: shrink positive logits, push negative ones further down.
                    let r = p.repetition_penalty as f32;
                    *l = if *l > 0.0 { *l / r } else { *l * r };
                }
            }
        }
        if p.temperature == 0.0 {
            return argmax(&logits);
        }
        // Candidates sorted by logit (descending), ties by id.
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_by(|&a, &b| {
            logits[b as usize]
                .total_cmp(&logits[a as usize])
                .then(a.cmp(&b))
        });
        if let Some(k) = p.top_k {
            idx.truncate(k.max(1));
        }
        let t = p.temperature as f32;
        let max = logits[idx[0] as usize];
        let mut probs: Vec<f64> = idx
            .iter()
            .map(|&i| (((logits[i as usize] - max) / t) as f64).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= total);
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p;
            let keep = probs.iter().take_while(|&&q| q >= floor).count().max(1);
            probs.truncate(keep);
        }
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = 0;
            for q in &probs {
                keep += 1;
                acc += q;
                if acc >= p.top_p {
                    break;
                }
            }
            probs.truncate(keep.max(1));
        }
        let total: f64 = probs.iter().sum();
        let mut u = self.uniform() * total;
        for (j, q) in probs.iter().enumerate() {
            if u < *q {
                return idx[j];
            }
            u -= q;
        }
        idx[probs.len() - 1]
    }
}

/// Index of the largest logit (the first on ties, like torch).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f64, top_k: Option<usize>) -> GenerationParams {
        GenerationParams {
            temperature,
            top_k,
            ..GenerationParams::default()
        }
    }

    #[test]
    fn greedy_and_top_k_one_pick_the_max() {
        let logits = [0.1, 3.0, 2.9, -1.0];
        let mut s = Sampler::new(0);
        assert_eq!(s.sample(&logits, &[], &params(0.0, None)), 1);
        for _ in 0..20 {
            assert_eq!(s.sample(&logits, &[], &params(1.5, Some(1))), 1);
        }
    }

    #[test]
    fn same_seed_same_draws_and_filters_hold() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(seed);
            (0..30)
                .map(|_| s.sample(&logits, &[], &params(1.0, Some(5))))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        // top-k 5: only the 5 largest logits ever appear.
        let mut order: Vec<u32> = (0..50).collect();
        order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        assert!(draw(3).iter().all(|t| order[..5].contains(t)));
        // top-p tiny → always the most likely token.
        let p = GenerationParams {
            top_p: 1e-6,
            ..params(1.0, None)
        };
        let mut s = Sampler::new(1);
        assert!((0..20).all(|_| s.sample(&logits, &[], &p) == order[0]));
    }

    #[test]
    fn repetition_penalty_discourages_recent_tokens() {
        let logits = [2.0, 1.9];
        let p = GenerationParams {
            repetition_penalty: 2.0,
            ..params(0.0, None)
        };
        assert_eq!(Sampler::new(0).sample(&logits, &[0], &p), 1);
    }
}
