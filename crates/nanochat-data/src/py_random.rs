//! The parts of CPython's `random.Random` that upstream's evaluations depend on, bit for bit:
//! seeding from an integer (MT19937 `init_by_array` over the integer's 32-bit words),
//! `getrandbits`, `_randbelow`, `shuffle` and `sample`. The generator core is `rand_mt`'s
//! MT19937; the algorithms on top follow CPython's `Lib/random.py`.

use rand_mt::Mt;

/// A `random.Random(seed)` stand-in.
pub struct PyRandom {
    mt: Mt,
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed.
    pub fn new(seed: u64) -> Self {
        // CPython: key = the 32-bit words of |seed|, least significant first ([0] for 0).
        let mut key = vec![seed as u32];
        if seed >> 32 != 0 {
            key.push((seed >> 32) as u32);
        }
        Self {
            mt: Mt::new_with_key(key),
        }
    }

    /// `getrandbits(k)` for `1 <= k <= 64`.
    pub fn getrandbits(&mut self, k: u32) -> u64 {
        assert!((1..=64).contains(&k), "getrandbits({k})");
        if k <= 32 {
            return (self.mt.next_u32() >> (32 - k)) as u64;
        }
        // Words least significant first; the last one keeps only its top bits.
        let low = self.mt.next_u32() as u64;
        let high = (self.mt.next_u32() >> (64 - k)) as u64;
        low | (high << 32)
    }

    /// `_randbelow(n)`: uniform in `0..n` by rejection on `n.bit_length()` bits.
    pub fn randbelow(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let k = 64 - n.leading_zeros();
        loop {
            let r = self.getrandbits(k);
            if r < n {
                return r;
            }
        }
    }

    /// `random()`: a float in [0, 1) with 53 random bits, as CPython draws it.
    pub fn random(&mut self) -> f64 {
        let a = self.getrandbits(27);
        let b = self.getrandbits(26);
        (a as f64 * 67_108_864.0 + b as f64) / 9_007_199_254_740_992.0
    }

    /// `choice(seq)` (`seq` must not be empty).
    pub fn choice<'a, T>(&mut self, seq: &'a [T]) -> &'a T {
        &seq[self.randbelow(seq.len() as u64) as usize]
    }

    /// `shuffle(x)` in place (Fisher–Yates from the end).
    pub fn shuffle<T>(&mut self, x: &mut [T]) {
        for i in (1..x.len()).rev() {
            let j = self.randbelow(i as u64 + 1) as usize;
            x.swap(i, j);
        }
    }

    /// `sample(population, k)`: `k` distinct elements, with CPython's choice between the pool
    /// and the set-tracking algorithm.
    pub fn sample<T: Clone>(&mut self, population: &[T], k: usize) -> Vec<T> {
        let n = population.len();
        assert!(k <= n, "sample larger than population");
        let mut setsize = 21usize;
        if k > 5 {
            // 4 ** ceil(log(3k, 4)) computed as CPython does, in floating point.
            let exp = ((3 * k) as f64).ln() / 4f64.ln();
            setsize += 4usize.pow(exp.ceil() as u32);
        }
        if n <= setsize {
            let mut pool = population.to_vec();
            (0..k)
                .map(|i| {
                    let j = self.randbelow((n - i) as u64) as usize;
                    let v = pool[j].clone();
                    pool[j] = pool[n - i - 1].clone();
                    v
                })
                .collect()
        } else {
            let mut selected = std::collections::HashSet::new();
            (0..k)
                .map(|_| {
                    let mut j = self.randbelow(n as u64) as usize;
                    while selected.contains(&j) {
                        j = self.randbelow(n as u64) as usize;
                    }
                    selected.insert(j);
                    population[j].clone()
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values printed by CPython 3.11:
    //   r = random.Random(1337); [r.getrandbits(32) for _ in range(3)]
    //   r = random.Random(42); x = list(range(10)); r.shuffle(x); x
    //   random.Random(1234).sample(range(100), 10)
    //   random.Random(7).sample(range(10), 3)
    const PY_BITS_1337: [u64; 3] = [2653228291, 3975144315, 2290358181];
    const PY_SHUFFLE_42: [u32; 10] = [7, 3, 2, 8, 5, 6, 9, 4, 0, 1];
    const PY_SAMPLE_1234: [u32; 10] = [99, 56, 14, 0, 11, 74, 4, 85, 88, 10];
    const PY_SAMPLE_7: [u32; 3] = [5, 2, 6];

    #[test]
    fn matches_cpython() {
        let mut r = PyRandom::new(1337);
        let got: Vec<u64> = (0..3).map(|_| r.getrandbits(32)).collect();
        assert_eq!(got, PY_BITS_1337);
        let mut x: Vec<u32> = (0..10).collect();
        PyRandom::new(42).shuffle(&mut x);
        assert_eq!(x, PY_SHUFFLE_42);
        let pop: Vec<u32> = (0..100).collect();
        assert_eq!(PyRandom::new(1234).sample(&pop, 10), PY_SAMPLE_1234);
        let pop: Vec<u32> = (0..10).collect();
        assert_eq!(PyRandom::new(7).sample(&pop, 3), PY_SAMPLE_7);
        // random.Random(5): [r.random() for _ in range(2)], r.choice("hello")
        let mut r = PyRandom::new(5);
        assert_eq!(r.random(), 0.6229016948897019);
        assert_eq!(r.random(), 0.7417869892607294);
        assert_eq!(*r.choice(&['h', 'e', 'l', 'l', 'o']), 'o');
    }
}
