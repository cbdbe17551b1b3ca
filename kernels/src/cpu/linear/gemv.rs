//! Half-precision matrix-vector products: `y[j] = Σ_p w[j·k + p]·x[p]` for an f16 or bf16
//! `[n, k]` table (scoring a query against an f16 / bf16 item table), widening the weights in
//! registers, without a temporary f32 row. f16 rows without inf/NaN take the three-operation
//! decode of the f16 weight storage, the few rows holding an inf or NaN its exact one; bf16 is
//! a shift.
//!
//! Tolerance against the references (f64 accumulation): `1e-5·(1 + Σ|x_i·w_i|)` per output, as
//! every `linear` path.

use super::super::convert::{Format, load_widen_u16};
use super::super::isa::Isa;
use super::weights::{F16ExactReader, F16FiniteReader, Reader, has_non_finite};
use half::{bf16, f16};
use pulp::{Simd, WithSimd};

#[track_caller]
fn check_gemv(op: &str, w: usize, x: usize, y: usize, n: usize, k: usize) {
    assert_eq!(w, n * k, "{op}: w has {w} values, expected n·k = {n}·{k}");
    assert_eq!(x, k, "{op}: x has {x} values, expected k = {k}");
    assert_eq!(y, n, "{op}: y has {y} values, expected n = {n}");
}

/// How a gemv body turns loaded 16-bit lanes into f32 (chosen per row).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Decode {
    /// f16, exact for every input (the convert kernel), for rows holding an inf or NaN.
    F16Exact,
    /// f16, exact for finite inputs only, three operations per vector.
    F16Finite,
    /// bf16: a shift (NaNs stay NaN; their payload does not matter in a product).
    Bf16,
}

impl Decode {
    #[inline(always)]
    fn load<S: Simd>(self, s: S, w: &[u16]) -> S::f32s {
        match self {
            Decode::F16Exact => F16ExactReader.part(s, w),
            Decode::F16Finite => F16FiniteReader.part(s, w),
            Decode::Bf16 => s.transmute_f32s_u32s(
                s.wrapping_dyn_shl_u32s(load_widen_u16(s, w), s.splat_u32s(16)),
            ),
        }
    }
}

/// Dot product of a row of 16-bit floats with `x`, widening the lanes in registers (no
/// temporary f32 row).
#[inline(always)]
fn dot_half_simd<S: Simd>(s: S, decode: Decode, w: &[u16], x: &[f32]) -> f32 {
    let lanes = S::F32_LANES;
    let (x_head, x_tail) = S::as_simd_f32s(x);
    let (w_head, w_tail) = w.split_at(x_head.len() * lanes);
    let mut acc = [s.splat_f32s(0.0); 4];
    let mut xs = x_head.chunks_exact(4);
    let mut ws = w_head.chunks_exact(4 * lanes);
    for (xv, wv) in (&mut xs).zip(&mut ws) {
        for q in 0..4 {
            let wq = decode.load(s, &wv[q * lanes..(q + 1) * lanes]);
            acc[q] = s.mul_add_f32s(wq, xv[q], acc[q]);
        }
    }
    for (&xv, wv) in xs
        .remainder()
        .iter()
        .zip(ws.remainder().chunks_exact(lanes))
    {
        acc[0] = s.mul_add_f32s(decode.load(s, wv), xv, acc[0]);
    }
    if !x_tail.is_empty() {
        // Missing lanes widen from 0 to +0.0 and meet x's zero padding.
        let wv = decode.load(s, w_tail);
        acc[1] = s.mul_add_f32s(wv, s.partial_load_f32s(x_tail), acc[1]);
    }
    let sum = s.add_f32s(s.add_f32s(acc[0], acc[1]), s.add_f32s(acc[2], acc[3]));
    s.reduce_sum_f32s(sum)
}

struct GemvHalfBody<'a> {
    format: Format,
    w: &'a [u16],
    x: &'a [f32],
    y: &'a mut [f32],
    k: usize,
}

impl WithSimd for GemvHalfBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self { format, w, x, y, k } = self;
        for (j, out) in y.iter_mut().enumerate() {
            let row = &w[j * k..(j + 1) * k];
            let decode = match format {
                Format::Bf16 => Decode::Bf16,
                Format::F16 if has_non_finite(s, row, None) => Decode::F16Exact,
                Format::F16 => Decode::F16Finite,
            };
            *out = dot_half_simd(s, decode, row, x);
        }
    }
}

/// Reference `y[j] = Σ_p w[j·k + p]·x[p]` for an f16 `[n, k]` table, f64 accumulation.
///
/// # Panics
/// If `w.len() != n·k`, `x.len() != k` or `y.len() != n`.
pub fn gemv_f16_ref(w: &[f16], x: &[f32], y: &mut [f32], n: usize, k: usize) {
    check_gemv("gemv_f16", w.len(), x.len(), y.len(), n, k);
    for j in 0..n {
        let mut acc = 0.0f64;
        for p in 0..k {
            acc += w[j * k + p].to_f64() * x[p] as f64;
        }
        y[j] = acc as f32;
    }
}

/// `y = w·x` for an f16 `[n, k]` table with the pulp body instantiated for `isa`.
///
/// # Panics
/// If `w.len() != n·k`, `x.len() != k` or `y.len() != n`.
pub fn gemv_f16_isa(isa: Isa, w: &[f16], x: &[f32], y: &mut [f32], n: usize, k: usize) {
    check_gemv("gemv_f16", w.len(), x.len(), y.len(), n, k);
    isa.run(GemvHalfBody {
        format: Format::F16,
        w: bytemuck::cast_slice(w),
        x,
        y,
        k,
    });
}

/// `y[j] = Σ_p w[j·k + p]·x[p]` for an f16 `[n, k]` table (e.g. scoring a query against the
/// item embeddings), widening on the fly, on the best instruction set.
///
/// # Panics
/// If `w.len() != n·k`, `x.len() != k` or `y.len() != n`.
#[inline]
pub fn gemv_f16(w: &[f16], x: &[f32], y: &mut [f32], n: usize, k: usize) {
    gemv_f16_isa(Isa::detect(), w, x, y, n, k);
}

/// Reference `y[j] = Σ_p w[j·k + p]·x[p]` for a bf16 `[n, k]` table, f64 accumulation.
///
/// # Panics
/// If `w.len() != n·k`, `x.len() != k` or `y.len() != n`.
pub fn gemv_bf16_ref(w: &[bf16], x: &[f32], y: &mut [f32], n: usize, k: usize) {
    check_gemv("gemv_bf16", w.len(), x.len(), y.len(), n, k);
    for j in 0..n {
        let mut acc = 0.0f64;
        for p in 0..k {
            acc += w[j * k + p].to_f64() * x[p] as f64;
        }
        y[j] = acc as f32;
    }
}

/// `y = w·x` for a bf16 `[n, k]` table with the pulp body instantiated for `isa`.
///
/// # Panics
/// If `w.len() != n·k`, `x.len() != k` or `y.len() != n`.
pub fn gemv_bf16_isa(isa: Isa, w: &[bf16], x: &[f32], y: &mut [f32], n: usize, k: usize) {
    check_gemv("gemv_bf16", w.len(), x.len(), y.len(), n, k);
    isa.run(GemvHalfBody {
        format: Format::Bf16,
        w: bytemuck::cast_slice(w),
        x,
        y,
        k,
    });
}

/// `y[j] = Σ_p w[j·k + p]·x[p]` for a bf16 `[n, k]` table, widening on the fly, on the best
/// instruction set.
///
/// # Panics
/// If `w.len() != n·k`, `x.len() != k` or `y.len() != n`.
#[inline]
pub fn gemv_bf16(w: &[bf16], x: &[f32], y: &mut [f32], n: usize, k: usize) {
    gemv_bf16_isa(Isa::detect(), w, x, y, n, k);
}

#[cfg(test)]
mod tests {
    use super::super::linear_ref;
    use super::super::tests::assert_linear_close;
    use super::*;
    use crate::testing::{AWKWARD_SIZES, Rng};
    use alloc::vec;
    use alloc::vec::Vec;

    fn check_gemv_half(isa: Isa) {
        let mut rng = Rng::new(6);
        let mut shapes: Vec<(usize, usize)> = AWKWARD_SIZES.iter().map(|&k| (5, k)).collect();
        shapes.extend([(0, 8), (3, 0), (1, 64), (300, 64), (17, 100)]);
        for (n, k) in shapes {
            let x = rng.normal_vec(k, 1.0);
            let wf = rng.normal_vec(n * k, 0.5);
            let w16: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
            let wb16: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
            let w16f: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
            let wb16f: Vec<f32> = wb16.iter().map(|v| v.to_f32()).collect();

            let mut want = vec![0.0; n];
            let mut got = vec![f32::NAN; n];
            gemv_f16_ref(&w16, &x, &mut want, n, k);
            gemv_f16_isa(isa, &w16, &x, &mut got, n, k);
            // Same tolerance as linear: 1e-5·(1 + Σ|x·w|), with w the exactly widened table.
            assert_linear_close(
                &alloc::format!("gemv_f16 {isa} {n}x{k}"),
                &got,
                &want,
                &x,
                &w16f,
                1,
                k,
                n,
            );

            gemv_bf16_ref(&wb16, &x, &mut want, n, k);
            gemv_bf16_isa(isa, &wb16, &x, &mut got, n, k);
            assert_linear_close(
                &alloc::format!("gemv_bf16 {isa} {n}x{k}"),
                &got,
                &want,
                &x,
                &wb16f,
                1,
                k,
                n,
            );
        }
    }
    crate::isa_tests!(gemv_half, check_gemv_half);

    /// Tables with inf, NaN, subnormal and extreme finite weights: the outputs follow the
    /// reference (inf and NaN propagate, subnormals are exact, 65504 is finite).
    fn check_gemv_half_specials(isa: Isa) {
        let mut rng = Rng::new(8);
        for &k in AWKWARD_SIZES.iter().chain(&[100usize]) {
            let n = 6;
            let x: Vec<f32> = (0..k).map(|_| rng.uniform(0.5, 1.5)).collect();
            let mut w16: Vec<f16> = (0..n * k).map(|_| f16::from_f32(rng.normal())).collect();
            w16[k - 1] = f16::INFINITY; // row 0: +inf (in the tail or the last lane)
            w16[k] = f16::NAN; // row 1: NaN in the first lane
            for p in 0..k {
                w16[2 * k + p] = f16::from_bits(1 + (p as u16 % 0x3FF)); // row 2: subnormals
                w16[3 * k + p] = f16::from_bits(if p % 2 == 0 { 0x7BFF } else { 0xFBFF }); // ±65504
                w16[4 * k + p] = f16::from_bits(0x8000 | (p as u16 % 0x3FF)); // -0 and -subnormals
            }
            w16[5 * k + k / 2] = f16::NEG_INFINITY; // row 5: -inf mid-row
            let wb16: Vec<bf16> = w16.iter().map(|v| bf16::from_f32(v.to_f32())).collect();

            let mut want = vec![0.0; n];
            let mut got = vec![0.0; n];
            for half in ["f16", "bf16"] {
                if half == "f16" {
                    gemv_f16_ref(&w16, &x, &mut want, n, k);
                    gemv_f16_isa(isa, &w16, &x, &mut got, n, k);
                } else {
                    gemv_bf16_ref(&wb16, &x, &mut want, n, k);
                    gemv_bf16_isa(isa, &wb16, &x, &mut got, n, k);
                }
                for j in 0..n {
                    let (g, r) = (got[j], want[j]);
                    let ctx = alloc::format!("gemv_{half} {isa} k={k} row {j}: got {g}, want {r}");
                    if r.is_nan() {
                        assert!(g.is_nan(), "{ctx}");
                    } else if r.is_infinite() {
                        assert_eq!(g, r, "{ctx}");
                    } else {
                        // Finite rows: the linear tolerance with Σ|w·x| ≤ 65504·Σx.
                        let mag: f32 = (0..k).map(|p| (w16[j * k + p].to_f32() * x[p]).abs()).sum();
                        assert!((g - r).abs() <= 1e-5 * (1.0 + mag), "{ctx}");
                        // Subnormal rows are tiny but exact in f64: keep them relative too.
                        assert!(
                            (g - r).abs() <= 1e-5 * r.abs().max(1e-30) || mag > 1.0,
                            "{ctx}"
                        );
                    }
                }
                assert!(got[0].is_infinite() && got[1].is_nan() && got[5].is_infinite());
            }
        }
    }
    crate::isa_tests!(gemv_half_specials, check_gemv_half_specials);

    #[test]
    fn gemv_half_fast_paths_match_reference() {
        let mut rng = Rng::new(7);
        let (n, k) = (123, 64);
        let x = rng.normal_vec(k, 1.0);
        let w16: Vec<f16> = (0..n * k).map(|_| f16::from_f32(rng.normal())).collect();
        let wb16: Vec<bf16> = w16.iter().map(|v| bf16::from_f32(v.to_f32())).collect();
        let wf: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
        // f16 values are exact in bf16 only when they fit 8 mantissa bits, so compare each
        // path with its own reference, and the f16 path with the f32 linear reference too.
        let mut want = vec![0.0; n];
        let mut got = vec![0.0; n];
        linear_ref(&x, &wf, None, &mut want, 1, k, n);
        gemv_f16(&w16, &x, &mut got, n, k);
        assert_linear_close("gemv_f16 fast", &got, &want, &x, &wf, 1, k, n);
        let wbf: Vec<f32> = wb16.iter().map(|v| v.to_f32()).collect();
        gemv_bf16_ref(&wb16, &x, &mut want, n, k);
        gemv_bf16(&wb16, &x, &mut got, n, k);
        assert_linear_close("gemv_bf16 fast", &got, &want, &x, &wbf, 1, k, n);
    }

    #[test]
    #[should_panic(expected = "gemv_f16: x has 3 values, expected k = 4")]
    fn gemv_checks_x() {
        gemv_f16(&[f16::ZERO; 8], &[0.0; 3], &mut [0.0; 2], 2, 4);
    }
}
