//! Elementary functions shared by the kernels.
//!
//! Scalar versions go through `libm` (the crate is `no_std`); the SIMD versions are polynomial
//! approximations written once over `pulp::Simd`:
//! - [`exp_f32s`]: Cephes `expf` (range reduction by ln 2, degree-6 polynomial); relative error
//!   below 2e-7 on [-87, 88]; returns exactly 0 below -87.3 (so masked scores vanish) and
//!   saturates at `exp(88.7)` above.
//! - [`tanh_f32s`]: `(1 - e^{-2|x|}) / (1 + e^{-2|x|})` with the sign restored; absolute error
//!   below 3e-7.
//! - [`sigmoid_f32s`]: `1 / (1 + e^{-x})`; absolute error below 2e-7.
//! - [`erf_f32s`]: Abramowitz & Stegun 7.1.26; absolute error below 1.5e-7 in exact arithmetic,
//!   below 4e-7 in f32.

use pulp::Simd;

/// `e^x` (scalar).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    libm::expf(x)
}

/// `tanh(x)` (scalar).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    libm::tanhf(x)
}

/// `erf(x)` (scalar).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    libm::erff(x)
}

/// `sqrt(x)` (scalar).
#[inline(always)]
pub fn sqrt(x: f32) -> f32 {
    libm::sqrtf(x)
}

/// `x` rounded to the nearest integer, ties away from zero (scalar).
#[inline(always)]
pub fn round(x: f32) -> f32 {
    libm::roundf(x)
}

/// Natural logarithm `ln(x)` (scalar).
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    libm::logf(x)
}

/// Logistic sigmoid (scalar), stable for large |x|.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + libm::expf(-x))
    } else {
        let e = libm::expf(x);
        e / (1.0 + e)
    }
}

/// Exact (erf-form) GELU, PyTorch's default: `0.5·x·(1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * core::f32::consts::FRAC_1_SQRT_2))
}

/// √(2/π), the scale of GELU's tanh approximation.
pub const GELU_TANH_C: f32 = 0.797_884_6;

/// GELU's tanh approximation: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::tanhf(GELU_TANH_C * (x + 0.044_715 * x * x * x)))
}

const EXP_HI: f32 = 88.376_26;
const EXP_LO: f32 = -87.336_55;

/// Vectorised `e^x` (Cephes expf).
#[inline(always)]
pub fn exp_f32s<S: Simd>(s: S, x: S::f32s) -> S::f32s {
    let below = s.less_than_f32s(x, s.splat_f32s(EXP_LO));
    let x = s.min_f32s(s.max_f32s(x, s.splat_f32s(EXP_LO)), s.splat_f32s(EXP_HI));
    // n = round(x / ln 2) via the 1.5·2^23 trick: the low mantissa bits of `j` hold n.
    let magic = s.splat_f32s(12_582_912.0);
    let j = s.mul_add_f32s(x, s.splat_f32s(core::f32::consts::LOG2_E), magic);
    let n = s.sub_f32s(j, magic);
    // r = x - n·ln2 in two steps (Cody-Waite).
    let r = s.negate_mul_add_f32s(n, s.splat_f32s(0.693_359_4), x);
    let r = s.negate_mul_add_f32s(n, s.splat_f32s(-2.121_944_4e-4), r);
    let mut p = s.splat_f32s(1.987_569_1e-4);
    p = s.mul_add_f32s(p, r, s.splat_f32s(1.398_199_9e-3));
    p = s.mul_add_f32s(p, r, s.splat_f32s(8.333_452e-3));
    p = s.mul_add_f32s(p, r, s.splat_f32s(4.166_579_6e-2));
    p = s.mul_add_f32s(p, r, s.splat_f32s(1.666_666_5e-1));
    // Cephes lists 5.0000001e-1, which rounds to exactly 0.5 in f32.
    p = s.mul_add_f32s(p, r, s.splat_f32s(0.5));
    let r2 = s.mul_f32s(r, r);
    let y = s.add_f32s(s.mul_add_f32s(p, r2, r), s.splat_f32s(1.0));
    // 2^n: ((bits(j) - bits(magic)) + 127) << 23
    let bits = s.transmute_u32s_f32s(j);
    let e = s.add_u32s(
        s.sub_u32s(bits, s.splat_u32s(0x4B40_0000)),
        s.splat_u32s(127),
    );
    let pow2 = s.transmute_f32s_u32s(s.wrapping_dyn_shl_u32s(e, s.splat_u32s(23)));
    let out = s.mul_f32s(y, pow2);
    s.select_f32s(below, s.splat_f32s(0.0), out)
}

/// Vectorised logistic sigmoid.
#[inline(always)]
pub fn sigmoid_f32s<S: Simd>(s: S, x: S::f32s) -> S::f32s {
    let one = s.splat_f32s(1.0);
    let e = exp_f32s(s, s.sub_f32s(s.splat_f32s(0.0), x));
    s.div_f32s(one, s.add_f32s(one, e))
}

/// `|x|` lane-wise by clearing the sign bit. pulp's `Simd::abs_f32s` builds its mask with a
/// trait method that is not `#[inline(always)]`, which left an out-of-line call (and no
/// AVX-512 inside it) in every GELU step of some builds.
#[inline(always)]
pub fn abs_f32s<S: Simd>(s: S, x: S::f32s) -> S::f32s {
    s.and_f32s(x, s.splat_f32s(f32::from_bits(0x7FFF_FFFF)))
}

/// Vectorised `tanh`.
#[inline(always)]
pub fn tanh_f32s<S: Simd>(s: S, x: S::f32s) -> S::f32s {
    let one = s.splat_f32s(1.0);
    let sign_mask = s.splat_f32s(-0.0);
    let ax = abs_f32s(s, x);
    let t = exp_f32s(s, s.mul_f32s(ax, s.splat_f32s(-2.0)));
    let y = s.div_f32s(s.sub_f32s(one, t), s.add_f32s(one, t));
    // copy the sign of x onto y (y >= 0)
    s.or_f32s(y, s.and_f32s(x, sign_mask))
}

/// Vectorised [`gelu_tanh`].
#[inline(always)]
pub fn gelu_tanh_f32s<S: Simd>(s: S, x: S::f32s) -> S::f32s {
    let x3 = s.mul_f32s(s.mul_f32s(x, x), x);
    let inner = s.mul_f32s(
        s.splat_f32s(GELU_TANH_C),
        s.mul_add_f32s(x3, s.splat_f32s(0.044_715), x),
    );
    let half_x = s.mul_f32s(x, s.splat_f32s(0.5));
    s.mul_add_f32s(half_x, tanh_f32s(s, inner), half_x)
}

/// Vectorised `erf` (Abramowitz & Stegun 7.1.26).
#[inline(always)]
pub fn erf_f32s<S: Simd>(s: S, x: S::f32s) -> S::f32s {
    let one = s.splat_f32s(1.0);
    let sign_mask = s.splat_f32s(-0.0);
    let ax = abs_f32s(s, x);
    let t = s.div_f32s(one, s.mul_add_f32s(s.splat_f32s(0.327_591_1), ax, one));
    let mut p = s.splat_f32s(1.061_405_4);
    p = s.mul_add_f32s(p, t, s.splat_f32s(-1.453_152_1));
    p = s.mul_add_f32s(p, t, s.splat_f32s(1.421_413_7));
    p = s.mul_add_f32s(p, t, s.splat_f32s(-0.284_496_72));
    p = s.mul_add_f32s(p, t, s.splat_f32s(0.254_829_6));
    p = s.mul_f32s(p, t);
    let e = exp_f32s(s, s.sub_f32s(s.splat_f32s(0.0), s.mul_f32s(ax, ax)));
    let y = s.negate_mul_add_f32s(p, e, one);
    s.or_f32s(y, s.and_f32s(x, sign_mask))
}

/// Vectorised exact GELU: `0.5·x·(1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu_f32s<S: Simd>(s: S, x: S::f32s) -> S::f32s {
    let half_x = s.mul_f32s(x, s.splat_f32s(0.5));
    let e = erf_f32s(
        s,
        s.mul_f32s(x, s.splat_f32s(core::f32::consts::FRAC_1_SQRT_2)),
    );
    s.mul_add_f32s(half_x, e, half_x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Isa;
    use crate::testing::Rng;
    use alloc::vec::Vec;

    fn eval_simd(isa: Isa, which: &'static str, xs: &[f32]) -> Vec<f32> {
        struct Body<'a> {
            which: &'a str,
            xs: &'a [f32],
        }
        impl pulp::WithSimd for Body<'_> {
            type Output = Vec<f32>;
            #[inline(always)]
            fn with_simd<S: Simd>(self, s: S) -> Vec<f32> {
                self.xs
                    .iter()
                    .map(|&x| {
                        let v = s.splat_f32s(x);
                        let y = match self.which {
                            "exp" => exp_f32s(s, v),
                            "sigmoid" => sigmoid_f32s(s, v),
                            "tanh" => tanh_f32s(s, v),
                            "erf" => erf_f32s(s, v),
                            _ => gelu_f32s(s, v),
                        };
                        let mut out = [0.0f32; 16];
                        s.partial_store_f32s(&mut out[..1], y);
                        out[0]
                    })
                    .collect()
            }
        }
        isa.run(Body { which, xs })
    }

    fn reference(which: &str, x: f32) -> f64 {
        let x = x as f64;
        match which {
            "exp" => libm::exp(x),
            "sigmoid" => 1.0 / (1.0 + libm::exp(-x)),
            "tanh" => libm::tanh(x),
            "erf" => libm::erf(x),
            _ => 0.5 * x * (1.0 + libm::erf(x / core::f64::consts::SQRT_2)),
        }
    }

    #[test]
    fn simd_math_matches_f64_on_every_isa() {
        let mut rng = Rng::new(7);
        let mut xs: Vec<f32> = (0..4000).map(|_| rng.uniform(-12.0, 12.0)).collect();
        xs.extend([
            0.0, -0.0, 1e-6, -1e-6, 80.0, -80.0, -100.0, -10_000.0, 100.0,
        ]);
        for isa in Isa::available() {
            // (function, absolute tolerance, relative tolerance)
            for (which, atol, rtol) in [
                ("exp", 1e-30, 3e-7),
                ("sigmoid", 3e-7, 0.0),
                ("tanh", 4e-7, 0.0),
                ("erf", 5e-7, 0.0),
                ("gelu", 5e-7, 4e-7),
            ] {
                let got = eval_simd(isa, which, &xs);
                for (&x, &g) in xs.iter().zip(&got) {
                    let want = reference(which, x);
                    if which == "exp" && x > 88.0 {
                        continue; // saturates by design
                    }
                    let err = (g as f64 - want).abs();
                    assert!(
                        err <= atol + rtol * want.abs(),
                        "{which} on {isa}: x={x} got {g} want {want} (err {err:e})"
                    );
                }
            }
        }
    }
}
