//! `linear` with half-precision weights: `y[m, n] = x[m, k]·w[n, k]ᵀ + b[n]` for an f16 `w`
//! (PyTorch layout), f32 `x`, `b` and `y`: the transformer layers of a text encoder stored in
//! half the bytes, which halves the time of the memory-bound few-row products.
//!
//! The weights are widened exactly, so the product is the f32 product with the f16 values:
//! few rows (at most `FEW_MAX_ROWS`) widen them chunk by chunk in the few-row kernel (see
//! `few`), more rows while packing the panels of the broadcast tiles (see `small`). Rows
//! without inf/NaN use the three-operation decode (`convert::f16_finite_sext_to_f32s`), the
//! others the exact convert kernel, as in `gemv_f16`.
//!
//! Tolerance against [`linear_f16_ref`] (f64 accumulation of the widened weights):
//! `1e-5·(1 + Σ|x_i·w_i|)` per output, as every f32 linear path.

use super::super::isa::Isa;
use super::{
    Decode, check_linear_dims, f16_row_has_non_finite, few, linear_ref_widened, linear_weights_isa,
};
use half::f16;
use pulp::Simd;

/// f16 weights as their bit patterns.
#[derive(Copy, Clone)]
pub(super) struct F16Weights<'a>(pub &'a [u16]);

/// Whether `w` holds an inf or NaN (as [`f16_row_has_non_finite`]), prefetching the line
/// ahead of each line of `w`.
#[inline(always)]
pub(super) fn f16_non_finite<S: Simd>(s: S, w: &[u16], ahead: few::Ahead) -> bool {
    let (head, tail) = S::as_simd_u16s(w);
    let lanes = core::mem::size_of::<S::u16s>() / 2;
    let per_line = (few::LINE / 2 / lanes).max(1);
    let mut max = s.splat_u16s(0);
    for (v, &h) in head.iter().enumerate() {
        if v % per_line == 0 {
            ahead.fetch(w, v * lanes);
        }
        max = s.max_u16s(max, s.and_u16s(h, s.splat_u16s(0x7FFF)));
    }
    let lanes: &[u16] = bytemuck::cast_slice(core::slice::from_ref(&max));
    lanes.iter().chain(tail).any(|&h| h & 0x7FFF >= 0x7C00)
}

/// Widens `src` to `dst` (equal lengths) exactly.
#[inline(always)]
pub(super) fn widen_f16<S: Simd>(s: S, src: &[u16], dst: &mut [f32]) {
    let lanes = S::F32_LANES;
    let (head, tail) = S::as_mut_simd_f32s(dst);
    let nv = head.len();
    if f16_row_has_non_finite(s, src) {
        for (v, d) in head.iter_mut().enumerate() {
            *d = Decode::F16Exact.load(s, &src[v * lanes..(v + 1) * lanes]);
        }
        if !tail.is_empty() {
            s.partial_store_f32s(tail, Decode::F16Exact.load(s, &src[nv * lanes..]));
        }
        return;
    }
    for (v, d) in head.iter_mut().enumerate() {
        *d = Decode::F16Finite.load(s, &src[v * lanes..(v + 1) * lanes]);
    }
    if !tail.is_empty() {
        s.partial_store_f32s(tail, Decode::F16Finite.load(s, &src[nv * lanes..]));
    }
}

/// Reference `y = x·wᵀ + b` for f16 weights, with f64 accumulation.
///
/// # Panics
/// As [`linear_f16_isa`].
pub fn linear_f16_ref(
    x: &[f32],
    w: &[f16],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    check_linear_dims("linear_f16", x, w, bias, y, m, k, n);
    linear_ref_widened(x, w, f16::to_f64, bias, y, (m, k, n));
}

/// `y = x·wᵀ + b` for f16 weights with the pulp kernels for `isa`: the few-row kernel for at
/// most `FEW_MAX_ROWS` rows, the broadcast tiles (widening while packing) above; allocates
/// nothing.
///
/// # Panics
/// If `x.len() != m·k`, `w.len() != n·k`, `y.len() != m·n`, or a bias is given whose length is
/// not `n`.
pub fn linear_f16_isa(
    isa: Isa,
    x: &[f32],
    w: &[f16],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    check_linear_dims("linear_f16", x, w, bias, y, m, k, n);
    let w = F16Weights(bytemuck::cast_slice(w));
    linear_weights_isa(isa, x, w, bias, y, (m, k, n), few::f16_takes_few_rows(m));
}

/// `y = x·wᵀ + b` for f16 weights on the best instruction set ([`linear_f16_isa`]).
///
/// # Panics
/// As [`linear_f16_isa`].
#[inline]
pub fn linear_f16(
    x: &[f32],
    w: &[f16],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    linear_f16_isa(Isa::detect(), x, w, bias, y, m, k, n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;
    use alloc::vec;
    use alloc::vec::Vec;

    /// Weights as f16 and their exact f32 values.
    fn weights(rng: &mut Rng, len: usize) -> (Vec<f16>, Vec<f32>) {
        let w: Vec<f16> = (0..len)
            .map(|_| f16::from_f32(rng.normal() * 0.5))
            .collect();
        let wf = w.iter().map(|v| v.to_f32()).collect();
        (w, wf)
    }

    fn assert_close(
        ctx: &str,
        got: &[f32],
        want: &[f32],
        x: &[f32],
        wf: &[f32],
        k: usize,
        n: usize,
    ) {
        assert_eq!(got.len(), want.len(), "{ctx}");
        for (at, (&g, &r)) in got.iter().zip(want).enumerate() {
            let (i, j) = (at / n, at % n);
            let mag: f32 = (0..k).map(|p| (x[i * k + p] * wf[j * k + p]).abs()).sum();
            // f32 sums of the exactly widened weights in another order: 1e-5·(1 + Σ|x·w|).
            assert!(
                (g - r).abs() <= 1e-5 * (1.0 + mag),
                "{ctx}: y[{at}] got {g} want {r}"
            );
        }
    }

    fn check_linear_f16(isa: Isa) {
        let mut rng = Rng::new(31);
        for (m, k, n) in few::test_shapes(&[(1, 5), (4, 13), (11, 17)]) {
            let x = rng.normal_vec(m * k, 1.0);
            let (w, wf) = weights(&mut rng, n * k);
            let b = rng.normal_vec(n, 0.5);
            for bias in [None, Some(&b[..])] {
                let mut want = vec![0.0; m * n];
                linear_f16_ref(&x, &w, bias, &mut want, m, k, n);
                let mut got = vec![f32::NAN; m * n];
                linear_f16_isa(isa, &x, &w, bias, &mut got, m, k, n);
                let ctx = alloc::format!("linear_f16 {isa} {m}x{k}x{n} bias={}", bias.is_some());
                assert_close(&ctx, &got, &want, &x, &wf, k, n);
            }
        }
    }
    crate::isa_tests!(linear_f16_paths, check_linear_f16);

    /// Inf, NaN and subnormal weights on both paths (few rows, broadcast tiles): outputs follow the reference (inf and
    /// NaN propagate to their outputs only, subnormals are widened exactly).
    fn check_linear_f16_specials(isa: Isa) {
        let mut rng = Rng::new(32);
        for m in [2, 13, 40] {
            let (k, n) = (70, 6);
            let x: Vec<f32> = (0..m * k).map(|_| rng.uniform(0.5, 1.5)).collect();
            let (mut w, _) = weights(&mut rng, n * k);
            w[k - 1] = f16::INFINITY; // row 0: +inf in the tail
            w[k] = f16::NAN; // row 1: NaN in the first lane
            for p in 0..k {
                w[2 * k + p] = f16::from_bits(1 + (p as u16 % 0x3FF)); // row 2: subnormals
                w[3 * k + p] = f16::from_bits(if p % 2 == 0 { 0x7BFF } else { 0xFBFF }); // ±65504
            }
            w[5 * k + 3] = f16::NEG_INFINITY; // row 5: -inf
            let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
            let mut want = vec![0.0; m * n];
            linear_f16_ref(&x, &w, None, &mut want, m, k, n);
            let mut got = vec![0.0; m * n];
            linear_f16_isa(isa, &x, &w, None, &mut got, m, k, n);
            for i in 0..m {
                for j in 0..n {
                    let (g, r) = (got[i * n + j], want[i * n + j]);
                    let ctx = alloc::format!("linear_f16 {isa} m={m} y[{i},{j}]: {g} vs {r}");
                    match j {
                        0 | 5 => assert!(g.is_infinite() && g == r, "{ctx}"),
                        1 => assert!(g.is_nan(), "{ctx}"),
                        _ => {
                            let mag: f32 =
                                (0..k).map(|p| (x[i * k + p] * wf[j * k + p]).abs()).sum();
                            // The f32 tolerance, and relative for the tiny subnormal row.
                            assert!((g - r).abs() <= 1e-5 * (1.0 + mag), "{ctx}");
                            assert!((g - r).abs() <= 1e-5 * r.abs() || j != 2, "{ctx}");
                        }
                    }
                }
            }
        }
    }
    crate::isa_tests!(linear_f16_specials, check_linear_f16_specials);

    #[test]
    fn linear_f16_fast_path_matches_the_f32_product_of_the_widened_weights() {
        let mut rng = Rng::new(33);
        for (m, k, n) in [(1, 384, 100), (4, 1536, 30), (8, 384, 57), (40, 384, 70)] {
            let x = rng.normal_vec(m * k, 1.0);
            let (w, wf) = weights(&mut rng, n * k);
            let b = rng.normal_vec(n, 0.5);
            let mut want = vec![0.0; m * n];
            super::super::linear_ref(&x, &wf, Some(&b), &mut want, m, k, n);
            let mut got = vec![0.0; m * n];
            linear_f16(&x, &w, Some(&b), &mut got, m, k, n);
            assert_close(
                &alloc::format!("linear_f16 {m}x{k}x{n}"),
                &got,
                &want,
                &x,
                &wf,
                k,
                n,
            );
        }
    }

    #[test]
    #[should_panic(expected = "linear_f16: w has 6 values, expected n·k = 2·4")]
    fn linear_f16_checks_w() {
        linear_f16(&[0.0; 4], &[f16::ZERO; 6], None, &mut [0.0; 2], 1, 4, 2);
    }
}
