//! Test and benchmark support shared by the seqrec crates: a small seeded RNG (no dependency,
//! reproducible across platforms), the awkward sizes every kernel is tested on, and a
//! tolerance check that reports the first offending index.

use alloc::vec::Vec;

/// Sizes every kernel test sweeps: tiny, around the 8-lane and 16-lane vector widths, primes.
pub const AWKWARD_SIZES: &[usize] = &[1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 127, 257];

/// xorshift128+ generator (shifts 23, 18, 5) seeded through splitmix64. Not cryptographic;
/// deterministic.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 2],
}

impl Rng {
    /// A generator whose stream depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        let a = next();
        let b = next();
        Rng { s: [a, b | 1] }
    }

    /// Next 64 random bits (xorshift128+).
    pub fn next_u64(&mut self) -> u64 {
        let mut s1 = self.s[0];
        let s0 = self.s[1];
        let out = s0.wrapping_add(s1);
        self.s[0] = s0;
        s1 ^= s1 << 23;
        self.s[1] = s1 ^ s0 ^ (s1 >> 18) ^ (s0 >> 5);
        out
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.next_f64() as f32
    }

    /// Uniform integer in `[0, n)`; `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.next_f64().max(1e-300);
        let u2 = self.next_f64();
        (libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(core::f64::consts::TAU * u2)) as f32
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

/// Checks `|got - want| <= atol + rtol·|want|` elementwise and panics with the first offending
/// index, both values and the context string. NaNs must match NaNs.
#[track_caller]
pub fn assert_close(context: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{context}: length {} vs {}",
        got.len(),
        want.len()
    );
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g.is_nan() && w.is_nan() {
            continue;
        }
        let err = (g - w).abs();
        assert!(
            err <= atol + rtol * w.abs(),
            "{context}: index {i}: got {g}, want {w} (|err| {err:e} > atol {atol:e} + rtol {rtol:e}·|want|)"
        );
    }
}

/// Largest absolute difference between two slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs `check` on `isa` when this CPU can, and otherwise prints a notice naming the test and
/// the path (the body of every test of [`isa_tests!`](crate::isa_tests)).
#[cfg(any(feature = "std", test))]
pub fn check_or_skip(name: &str, isa: crate::Isa, check: impl FnOnce(crate::Isa)) {
    if !isa.is_available() {
        std::eprintln!(
            "skipped: {name} {isa} ({} not available on this CPU)",
            isa.describe()
        );
        return;
    }
    check(isa);
}

/// Instantiates one `#[test]` per instruction set for a check function `fn(Isa)`, so the test
/// output names the op and the path (`cpu::norm::tests::layer_norm::v3 ... ok`). A path the CPU
/// cannot run prints a notice and returns.
#[macro_export]
macro_rules! isa_tests {
    ($name:ident, $check:path) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn scalar() {
                $check($crate::Isa::Scalar);
            }
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            #[test]
            fn v3() {
                $crate::testing::check_or_skip(stringify!($name), $crate::Isa::V3, $check);
            }
            #[cfg(target_arch = "x86_64")]
            #[test]
            fn v4() {
                $crate::testing::check_or_skip(stringify!($name), $crate::Isa::V4, $check);
            }
            #[cfg(target_arch = "aarch64")]
            #[test]
            fn neon() {
                $crate::testing::check_or_skip(stringify!($name), $crate::Isa::Neon, $check);
            }
            #[test]
            fn dispatched() {
                $check($crate::Isa::detect());
            }
        }
    };
}
