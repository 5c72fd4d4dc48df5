//! Next-token sampling (upstream `engine.py`, `sample_next_token`, plus the knobs users expect
//! from OpenAI-style servers): temperature (0 = greedy argmax), top-k, top-p (nucleus), min-p,
//! a repetition penalty over a window of recent tokens, OpenAI's presence and frequency
//! penalties over the completion so far, and a logit bias. Runs on the host over one row of
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

    /// Picks a token from `logits` (one row) given the row's recent tokens (prompt and
    /// completion: the repetition penalty's window) and its completion so far (presence and
    /// frequency penalties).
    ///
    /// Cost: O(vocab) plus O(k log k) with top-k (the k best are selected, not the whole
    /// vocabulary sorted); the whole vocabulary is sorted only for top-p without top-k.
    pub fn sample(
        &mut self,
        logits: &[f32],
        recent: &[u32],
        completion: &[u32],
        p: &GenerationParams,
    ) -> u32 {
        let adjusted;
        let logits = if adjusts(p) {
            adjusted = adjust(logits, recent, completion, p);
            &adjusted[..]
        } else {
            logits
        };
        if p.temperature == 0.0 {
            return argmax(logits);
        }
        // Candidates by logit (descending), ties by id: the k best when top-k is set, in that
        // order; every token otherwise, sorted only when top-p needs the order.
        let by_logit = |a: &u32, b: &u32| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        };
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        match p.top_k {
            Some(k) => {
                let k = k.clamp(1, idx.len().max(1));
                if k < idx.len() {
                    idx.select_nth_unstable_by(k - 1, by_logit);
                    idx.truncate(k);
                }
                idx.sort_unstable_by(by_logit);
            }
            None if p.top_p < 1.0 => idx.sort_unstable_by(by_logit),
            None => {}
        }
        let t = p.temperature as f32;
        let max = idx
            .iter()
            .map(|&i| logits[i as usize])
            .fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(u32, f64)> = idx
            .iter()
            .map(|&i| (i, (((logits[i as usize] - max) / t) as f64).exp()))
            .collect();
        let total: f64 = probs.iter().map(|c| c.1).sum();
        probs.iter_mut().for_each(|c| c.1 /= total);
        if p.min_p > 0.0 {
            // The top token has probability exp(0) / total.
            let floor = p.min_p / total;
            probs.retain(|c| c.1 >= floor);
        }
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = 0;
            for c in &probs {
                keep += 1;
                acc += c.1;
                if acc >= p.top_p {
                    break;
                }
            }
            probs.truncate(keep.max(1));
        }
        let total: f64 = probs.iter().map(|c| c.1).sum();
        let mut u = self.uniform() * total;
        for &(i, q) in &probs {
            if u < q {
                return i;
            }
            u -= q;
        }
        probs.last().map_or_else(|| argmax(logits), |c| c.0)
    }
}

/// Whether `p` changes the logits before sampling.
fn adjusts(p: &GenerationParams) -> bool {
    p.repetition_penalty != 1.0
        || p.presence_penalty != 0.0
        || p.frequency_penalty != 0.0
        || !p.logit_bias.is_empty()
}

/// The logits with the logit bias added, recent tokens penalised (CTRL-style: positive logits
/// shrink, negative ones are pushed further down; each distinct token of the window once), and
/// OpenAI's penalties subtracted: `count · frequency + (count > 0) · presence` for every token
/// of the completion so far.
fn adjust(logits: &[f32], recent: &[u32], completion: &[u32], p: &GenerationParams) -> Vec<f32> {
    let mut out = logits.to_vec();
    for (&id, &bias) in &p.logit_bias {
        if let Some(l) = out.get_mut(id as usize) {
            *l += bias as f32;
        }
    }
    if p.repetition_penalty != 1.0 {
        let start = recent.len().saturating_sub(p.repetition_window);
        let mut seen = std::collections::HashSet::new();
        let r = p.repetition_penalty as f32;
        for &t in &recent[start..] {
            if seen.insert(t)
                && let Some(l) = out.get_mut(t as usize)
            {
                *l = if *l > 0.0 { *l / r } else { *l * r };
            }
        }
    }
    if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
        let mut counts = std::collections::HashMap::<u32, usize>::new();
        for &t in completion {
            *counts.entry(t).or_default() += 1;
        }
        for (t, c) in counts {
            if let Some(l) = out.get_mut(t as usize) {
                *l -= (c as f64 * p.frequency_penalty + p.presence_penalty) as f32;
            }
        }
    }
    out
}

/// A generated token's log-probability and the most likely alternatives at its position
/// (OpenAI's `logprobs`), under the model's raw distribution: `log_softmax(logits)`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    /// The token chosen.
    pub token: u32,
    /// Its log-probability.
    pub logprob: f32,
    /// The `top` most likely tokens with theirs, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// [`TokenLogprobs`] of `token` with `top` alternatives, from one row of logits. O(vocab)
/// plus O(top log top).
pub fn token_logprobs(logits: &[f32], token: u32, top: usize) -> TokenLogprobs {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let log_z = f64::from(max) + sum.ln();
    let lp = |id: usize| (f64::from(logits[id]) - log_z) as f32;
    let mut ids: Vec<usize> = (0..logits.len()).collect();
    let top = top.min(ids.len());
    if top > 0 && top < ids.len() {
        ids.select_nth_unstable_by(top - 1, |&a, &b| logits[b].total_cmp(&logits[a]));
    }
    ids.truncate(top);
    ids.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    TokenLogprobs {
        token,
        logprob: lp(token as usize),
        top: ids.into_iter().map(|id| (id as u32, lp(id))).collect(),
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
        assert_eq!(s.sample(&logits, &[], &[], &params(0.0, None)), 1);
        for _ in 0..20 {
            assert_eq!(s.sample(&logits, &[], &[], &params(1.5, Some(1))), 1);
        }
    }

    #[test]
    fn same_seed_same_draws_and_filters_hold() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(seed);
            (0..30)
                .map(|_| s.sample(&logits, &[], &[], &params(1.0, Some(5))))
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
        assert!((0..20).all(|_| s.sample(&logits, &[], &[], &p) == order[0]));
    }

    /// The sampler as it was (the whole vocabulary sorted for every draw): the fast path must
    /// draw the same tokens with top-k, and the same tokens with top-p.
    fn sample_by_full_sort(s: &mut Sampler, logits: &[f32], p: &GenerationParams) -> u32 {
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
            let (mut acc, mut keep) = (0.0, 0);
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
        let mut u = s.uniform() * total;
        for (j, q) in probs.iter().enumerate() {
            if u < *q {
                return idx[j];
            }
            u -= q;
        }
        idx[probs.len() - 1]
    }

    #[test]
    fn selecting_the_top_k_draws_what_sorting_everything_drew() {
        // Repeated values check the tie order (by id) too.
        let logits: Vec<f32> = (0..1500)
            .map(|i| ((i as f32 * 0.61).sin() * 8.0).round() / 2.0)
            .collect();
        for (top_k, top_p, min_p) in [
            (Some(50), 1.0, 0.0),
            (Some(1), 1.0, 0.0),
            (Some(7), 0.5, 0.0),
            (Some(200), 0.9, 0.05),
            (Some(5_000), 1.0, 0.0),
            (None, 0.8, 0.0),
            (None, 0.95, 0.1),
        ] {
            let p = GenerationParams {
                top_p,
                min_p,
                ..params(0.9, top_k)
            };
            let (mut fast, mut slow) = (Sampler::new(5), Sampler::new(5));
            for _ in 0..100 {
                assert_eq!(
                    fast.sample(&logits, &[], &[], &p),
                    sample_by_full_sort(&mut slow, &logits, &p),
                    "{top_k:?} {top_p} {min_p}"
                );
            }
        }
    }

    #[test]
    fn without_filters_every_token_keeps_its_probability() {
        // No top-k, top-p or min-p: no order is needed; the draws follow the softmax.
        let logits = [0.0f32, 1.0, 2.0];
        let p = params(1.0, None);
        let mut s = Sampler::new(11);
        let mut counts = [0usize; 3];
        let n = 20_000;
        for _ in 0..n {
            counts[s.sample(&logits, &[], &[], &p) as usize] += 1;
        }
        let z: f64 = [0.0f64, 1.0, 2.0].iter().map(|x| x.exp()).sum();
        for (i, &c) in counts.iter().enumerate() {
            let expected = (i as f64).exp() / z;
            let got = c as f64 / n as f64;
            assert!(
                (got - expected).abs() < 0.01,
                "token {i}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn logit_bias_and_openai_penalties_move_the_choice() {
        let logits = [2.0f32, 1.5, 1.0];
        let greedy = params(0.0, None);
        let biased = GenerationParams {
            logit_bias: [(2, 5.0)].into(),
            ..greedy.clone()
        };
        assert_eq!(Sampler::new(0).sample(&logits, &[], &[], &biased), 2);
        let banned = GenerationParams {
            logit_bias: [(0, -100.0)].into(),
            ..params(1.0, None)
        };
        let mut s = Sampler::new(3);
        assert!((0..200).all(|_| s.sample(&logits, &[], &[], &banned) != 0));
        // Presence: token 0 is in the completion once, 2.0 - 0.6 < 1.5.
        let presence = GenerationParams {
            presence_penalty: 0.6,
            ..greedy.clone()
        };
        assert_eq!(Sampler::new(0).sample(&logits, &[0], &[0], &presence), 1);
        // Only the completion counts: the same token in the prompt alone is not penalised.
        assert_eq!(Sampler::new(0).sample(&logits, &[0], &[], &presence), 0);
        // Frequency: token 0 twice at 0.3 each (2.0 - 0.6 = 1.4 < 1.5); once is not enough.
        let frequency = GenerationParams {
            frequency_penalty: 0.3,
            ..greedy
        };
        assert_eq!(Sampler::new(0).sample(&logits, &[], &[0, 0], &frequency), 1);
        assert_eq!(Sampler::new(0).sample(&logits, &[], &[0], &frequency), 0);
    }

    #[test]
    fn repetition_penalty_discourages_recent_tokens() {
        let logits = [2.0, 1.9];
        let p = GenerationParams {
            repetition_penalty: 2.0,
            ..params(0.0, None)
        };
        assert_eq!(Sampler::new(0).sample(&logits, &[0], &[], &p), 1);
    }

    #[test]
    fn logprobs_are_a_normalised_log_softmax_with_the_best_alternatives() {
        let logits = [1.0f32, 3.0, 2.0, -1.0];
        let lp = token_logprobs(&logits, 2, 2);
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        assert!((f64::from(lp.logprob) - (2.0 - z.ln())).abs() < 1e-6);
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
        let total: f64 = (0..4)
            .map(|i| f64::from(token_logprobs(&logits, i, 0).logprob).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert_eq!(token_logprobs(&logits, 0, 9).top.len(), 4);
    }
}
