//! The Gaussian noise of sampling, reproducible from a seed on every platform: SplitMix64
//! (Steele, Lea and Flood) for 64-bit words, the top 53 bits as a uniform in `(0, 1)`, and
//! Box–Muller pairs evaluated with `libm` (no platform math library), so that a seed gives the
//! same samples everywhere.

/// A seeded stream of standard normal values.
#[derive(Clone, Debug)]
pub struct Noise {
    state: u64,
    spare: Option<f64>,
}

impl Noise {
    /// The stream of `seed`.
    pub fn new(seed: u64) -> Noise {
        Noise {
            state: seed,
            spare: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `(0, 1)`.
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    /// The next standard normal value.
    pub fn normal(&mut self) -> f64 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = libm::sqrt(-2.0 * libm::log(u1));
        let a = core::f64::consts::TAU * u2;
        self.spare = Some(r * libm::sin(a));
        r * libm::cos(a)
    }

    /// Fills `out` with standard normal values.
    pub fn fill(&mut self, out: &mut [f32]) {
        for v in out {
            *v = self.normal() as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_stream_of_standard_normals() {
        let (mut a, mut b) = (Noise::new(7), Noise::new(7));
        let n = 20_000;
        let xs: alloc::vec::Vec<f64> = (0..n).map(|_| a.normal()).collect();
        assert!(xs.iter().all(|&x| x == b.normal()));
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        // Standard errors: 0.007 for the mean, 0.01 for the variance.
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
        assert_ne!(Noise::new(8).normal(), Noise::new(7).normal());
    }
}
