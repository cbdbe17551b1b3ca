//! The trainer's seeded random generator: parameter initialisation, dropout masks, shuffling,
//! negative sampling, data splits and synthetic data all draw from it, so a seed fixes a
//! training run.
//!
//! **Algorithm.** xorshift128+ (Vigna, "Further scramblings of Marsaglia's xorshift
//! generators", shifts 23, 18, 5): a 128-bit state `(s0, s1)`, one 64-bit output
//! `s0 + s1` per step. The state is seeded from a `u64` through two steps of splitmix64, with
//! the low bit of the second word set so the state is never all zero. Derived draws:
//!
//! - [`Rng::next_f64`]: the top 53 bits scaled to `[0, 1)`;
//! - [`Rng::below`]: `⌊hi32 · n / 2³²⌋` from the top 32 bits (Lemire's multiply-shift without
//!   the rejection step, so a bias of at most `n / 2³²`, negligible for the catalog sizes here);
//! - [`Rng::normal`]: Box–Muller from two uniforms (one normal per pair, the sine half dropped),
//!   computed with `libm` so that results do not depend on the platform's math library.
//!
//! The stream equals that of `seqrec_kernels::testing::Rng` (the kernels' test helper) for every
//! seed, so checkpoints trained before the trainer had its own generator are reproduced; a test
//! compares the two. Not cryptographic.

/// A seeded xorshift128+ generator (see the module docs).
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 2],
}

impl Rng {
    /// A generator whose stream depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut splitmix64 = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        let a = splitmix64();
        let b = splitmix64();
        Rng { s: [a, b | 1] }
    }

    /// The generator's state: [`Rng::from_state`] continues the stream from here (how an
    /// interrupted training run resumes with the draws it would have made).
    pub fn state(&self) -> [u64; 2] {
        self.s
    }

    /// The generator whose state [`Rng::state`] returned; `None` for the all-zero state, which
    /// no generator has (xorshift128+ would stay at zero).
    pub fn from_state(s: [u64; 2]) -> Option<Rng> {
        (s != [0, 0]).then_some(Rng { s })
    }

    /// The next 64 random bits (one xorshift128+ step).
    pub fn next_u64(&mut self) -> u64 {
        let mut s1 = self.s[0];
        let s0 = self.s[1];
        let out = s0.wrapping_add(s1);
        self.s[0] = s0;
        s1 ^= s1 << 23;
        self.s[1] = s1 ^ s0 ^ (s1 >> 18) ^ (s0 >> 5);
        out
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.next_f64() as f32
    }

    /// Uniform integer in `[0, n)`.
    ///
    /// # Panics
    /// If `n` is 0 (a caller bug: there is nothing to draw from).
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// A standard normal draw (Box–Muller; two uniforms per draw).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.next_f64().max(1e-300);
        let u2 = self.next_f64();
        (libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(std::f64::consts::TAU * u2)) as f32
    }

    /// `n` values from `N(0, std²)`.
    pub fn normal_vec(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * std).collect()
    }

    /// `n` values uniform in `[lo, hi)`.
    pub fn uniform_vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;
    use seqrec_kernels::testing::Rng as KernelsRng;

    /// Every derived draw equals the kernels' generator's, over a few thousand outputs of
    /// several seeds (the seeds the training loops derive included).
    #[test]
    fn streams_equal_the_kernels_test_generator() {
        for seed in [0, 1, 7, 2020, 2020 ^ 0x5EED, 2020 ^ 0xA5A5, u64::MAX] {
            let (mut a, mut b) = (Rng::new(seed), KernelsRng::new(seed));
            for i in 0..4000 {
                assert_eq!(a.next_u64(), b.next_u64(), "seed {seed}, draw {i}");
            }
            for n in [1, 2, 3, 17, 1000, 1 << 20] {
                for _ in 0..200 {
                    assert_eq!(a.below(n), b.below(n), "seed {seed}, below({n})");
                }
            }
            for _ in 0..500 {
                assert_eq!(a.next_f64().to_bits(), b.next_f64().to_bits());
                assert_eq!(a.normal().to_bits(), b.normal().to_bits());
                assert_eq!(
                    a.uniform(-0.5, 2.0).to_bits(),
                    b.uniform(-0.5, 2.0).to_bits()
                );
            }
            assert_eq!(a.normal_vec(300, 0.02), b.normal_vec(300, 0.02));
            assert_eq!(a.uniform_vec(300, -1.0, 1.0), b.uniform_vec(300, -1.0, 1.0));
        }
    }

    #[test]
    fn draws_stay_in_range() {
        let mut r = Rng::new(3);
        for _ in 0..10_000 {
            assert!(r.below(5) < 5);
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
            let u = r.uniform(-2.0, 3.0);
            assert!((-2.0..3.0).contains(&u));
        }
    }
}
