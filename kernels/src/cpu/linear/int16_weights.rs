//! `linear` with 16-bit integer weights: `y[m, n] = x[m, k]·(s[n] ⊙ q[n, k])ᵀ + b[n]` for an
//! i16 `q` with one f32 scale per row (PyTorch layout), f32 `x`, `b` and `y`: the transformer
//! layers of a text encoder in half the bytes, like f16, but with about four times less
//! rounding error on weights without large outliers in their row.
//!
//! [`quantize_rows_i16`] builds `q` and `s` (symmetric, `s[j] = max |w[j, ·]| / 32767`). Every
//! `q` value is exact in f32 (it is widened with a magic-number add and subtract, two
//! operations), so the products are f32 products: few rows (at most `FEW_MAX_ROWS`) widen the
//! weights chunk by chunk in the few-row kernel and multiply each output's sum by its row's
//! scale (see `few`), more rows widen them scaled while packing the panels of the broadcast
//! tiles (see `small`).
//!
//! Tolerance against [`linear_i16_ref`] (f64 accumulation of `x·q`, times the scale):
//! `1e-5·(1 + Σ|x_i·q_i·s|)` per output, as every f32 linear path.

use super::super::isa::Isa;
use super::super::math;
use super::{check_linear_dims, few, linear_weights_isa};
use pulp::Simd;

/// i16 weights (as their bit patterns) and one scale per row.
#[derive(Copy, Clone)]
pub(super) struct I16Weights<'a> {
    pub q: &'a [u16],
    pub scales: &'a [f32],
}

/// `1.5·2^23`: the f32 whose mantissa holds a sign-extended 16-bit integer added to its bits.
const MAGIC: f32 = 12_582_912.0;

/// Widens 16-bit integers loaded sign-extended (`convert::load_widen_i16`) to f32, exactly:
/// `bits(1.5·2^23) + v` is the f32 `1.5·2^23 + v` for `|v| < 2^22`, and subtracting
/// `1.5·2^23` leaves `v`.
#[inline(always)]
pub(super) fn i16_sext_to_f32s<S: Simd>(s: S, v: S::u32s) -> S::f32s {
    let biased = s.add_u32s(v, s.splat_u32s(MAGIC.to_bits()));
    s.sub_f32s(s.transmute_f32s_u32s(biased), s.splat_f32s(MAGIC))
}

/// Widens `src` times `scale` to `dst` (equal lengths).
#[inline(always)]
pub(super) fn widen_i16_scaled<S: Simd>(s: S, src: &[u16], scale: f32, dst: &mut [f32]) {
    use super::super::convert::load_widen_i16;
    let lanes = S::F32_LANES;
    let sv = s.splat_f32s(scale);
    let (head, tail) = S::as_mut_simd_f32s(dst);
    let nv = head.len();
    for (v, d) in head.iter_mut().enumerate() {
        let w = load_widen_i16(s, &src[v * lanes..(v + 1) * lanes]);
        *d = s.mul_f32s(i16_sext_to_f32s(s, w), sv);
    }
    if !tail.is_empty() {
        let w = load_widen_i16(s, &src[nv * lanes..]);
        s.partial_store_f32s(tail, s.mul_f32s(i16_sext_to_f32s(s, w), sv));
    }
}

/// Rows whose largest magnitude is below this are stored as zeros (scale 0): their products
/// are below any f32 tolerance, and `max / 32767` would lose precision or underflow.
const TINY_ROW: f32 = 1.0e-30;

/// Quantizes `w` (`[n, k]`, finite) row by row: `scales[j] = max_p |w[j·k + p]| / 32767` and
/// `q[j·k + p] = round(w[j·k + p] / scales[j])` (ties away from zero, within ±32767); a row
/// whose largest magnitude is below 1e-30 gets zeros and scale 0. The error of each weight is
/// at most half its row's scale. A plain loop: it runs once, when a model is loaded.
///
/// # Panics
/// If `w.len() != n·k`, `q.len() != n·k`, `scales.len() != n`, or a weight is not finite.
pub fn quantize_rows_i16(w: &[f32], n: usize, k: usize, q: &mut [i16], scales: &mut [f32]) {
    let op = "quantize_rows_i16";
    assert_eq!(
        w.len(),
        n * k,
        "{op}: w has {} values, expected n·k = {n}·{k}",
        w.len()
    );
    assert_eq!(
        q.len(),
        n * k,
        "{op}: q has {} values, expected n·k = {n}·{k}",
        q.len()
    );
    assert_eq!(
        scales.len(),
        n,
        "{op}: scales has {} values, expected n = {n}",
        scales.len()
    );
    if k == 0 {
        scales.fill(0.0);
        return;
    }
    for (j, ((row, qrow), scale)) in w
        .chunks_exact(k)
        .zip(q.chunks_exact_mut(k))
        .zip(scales)
        .enumerate()
    {
        if let Some(p) = row.iter().position(|v| !v.is_finite()) {
            panic!("{op}: w[{j}, {p}] = {} is not finite", row[p]);
        }
        let max = row.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
        if max < TINY_ROW {
            qrow.fill(0);
            *scale = 0.0;
            continue;
        }
        *scale = max / 32767.0;
        for (qv, &v) in qrow.iter_mut().zip(row) {
            *qv = math::round(v / *scale).clamp(-32767.0, 32767.0) as i16;
        }
    }
}

#[track_caller]
fn check_linear_i16(
    x: &[f32],
    q: &[i16],
    scales: &[f32],
    bias: Option<&[f32]>,
    y: &[f32],
    m: usize,
    k: usize,
    n: usize,
) {
    check_linear_dims("linear_i16", x, q, bias, y, m, k, n);
    assert_eq!(
        scales.len(),
        n,
        "linear_i16: scales has {} values, expected n = {n}",
        scales.len()
    );
}

/// Reference `y = x·(s ⊙ q)ᵀ + b` with f64 accumulation: `b[j] + s[j]·Σ_p x[i, p]·q[j, p]`.
///
/// # Panics
/// As [`linear_i16_isa`].
pub fn linear_i16_ref(
    x: &[f32],
    q: &[i16],
    scales: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    check_linear_i16(x, q, scales, bias, y, m, k, n);
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                acc += x[i * k + p] as f64 * q[j * k + p] as f64;
            }
            y[i * n + j] = (acc * scales[j] as f64 + bias.map_or(0.0, |b| b[j] as f64)) as f32;
        }
    }
}

/// `y = x·(s ⊙ q)ᵀ + b` for i16 weights with one scale per row, with the pulp kernels for
/// `isa`: the few-row kernel for at most `FEW_MAX_ROWS` rows, the broadcast tiles (widening
/// and scaling while packing) above; allocates nothing.
///
/// # Panics
/// If `x.len() != m·k`, `q.len() != n·k`, `scales.len() != n`, `y.len() != m·n`, or a bias is
/// given whose length is not `n`.
pub fn linear_i16_isa(
    isa: Isa,
    x: &[f32],
    q: &[i16],
    scales: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    check_linear_i16(x, q, scales, bias, y, m, k, n);
    let w = I16Weights {
        q: bytemuck::cast_slice(q),
        scales,
    };
    linear_weights_isa(isa, x, w, bias, y, (m, k, n), few::f16_takes_few_rows(m));
}

/// `y = x·(s ⊙ q)ᵀ + b` for i16 weights on the best instruction set ([`linear_i16_isa`]).
///
/// # Panics
/// As [`linear_i16_isa`].
#[inline]
pub fn linear_i16(
    x: &[f32],
    q: &[i16],
    scales: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    linear_i16_isa(Isa::detect(), x, q, scales, bias, y, m, k, n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;
    use alloc::vec;
    use alloc::vec::Vec;

    /// Random integer weights over the whole i16 range (both extremes included) and scales.
    fn weights(rng: &mut Rng, n: usize, k: usize) -> (Vec<i16>, Vec<f32>) {
        let mut q: Vec<i16> = (0..n * k)
            .map(|_| rng.uniform(-32767.5, 32767.5) as i16)
            .collect();
        if n * k >= 2 {
            (q[0], q[n * k - 1]) = (-32768, 32767);
        }
        let scales = (0..n).map(|_| rng.uniform(1e-6, 1e-4)).collect();
        (q, scales)
    }

    /// `1e-5·(1 + Σ|x·q·s|)` per output: f32 sums of exact products in another order.
    fn assert_close(
        ctx: &str,
        got: &[f32],
        want: &[f32],
        x: &[f32],
        q: &[i16],
        s: &[f32],
        k: usize,
        n: usize,
    ) {
        assert_eq!(got.len(), want.len(), "{ctx}");
        for (at, (&g, &r)) in got.iter().zip(want).enumerate() {
            let (i, j) = (at / n, at % n);
            let mag: f32 = (0..k)
                .map(|p| (x[i * k + p] * q[j * k + p] as f32 * s[j]).abs())
                .sum();
            assert!(
                (g - r).abs() <= 1e-5 * (1.0 + mag),
                "{ctx}: y[{at}] got {g} want {r}"
            );
        }
    }

    fn check_linear_i16(isa: Isa) {
        let mut rng = Rng::new(41);
        for (m, k, n) in few::test_shapes(&[(1, 5), (4, 13), (11, 17), (40, 9)]) {
            let x = rng.normal_vec(m * k, 1.0);
            let (q, s) = weights(&mut rng, n, k);
            let b = rng.normal_vec(n, 0.5);
            for bias in [None, Some(&b[..])] {
                let mut want = vec![0.0; m * n];
                linear_i16_ref(&x, &q, &s, bias, &mut want, m, k, n);
                let mut got = vec![f32::NAN; m * n];
                linear_i16_isa(isa, &x, &q, &s, bias, &mut got, m, k, n);
                let ctx = alloc::format!("linear_i16 {isa} {m}x{k}x{n} bias={}", bias.is_some());
                assert_close(&ctx, &got, &want, &x, &q, &s, k, n);
            }
        }
    }
    crate::isa_tests!(linear_i16_paths, check_linear_i16);

    #[test]
    fn linear_i16_fast_path_matches_the_reference() {
        let mut rng = Rng::new(42);
        for (m, k, n) in [(1, 384, 100), (4, 1536, 30), (8, 384, 57), (40, 384, 70)] {
            let x = rng.normal_vec(m * k, 1.0);
            let (q, s) = weights(&mut rng, n, k);
            let b = rng.normal_vec(n, 0.5);
            let mut want = vec![0.0; m * n];
            linear_i16_ref(&x, &q, &s, Some(&b), &mut want, m, k, n);
            let mut got = vec![0.0; m * n];
            linear_i16(&x, &q, &s, Some(&b), &mut got, m, k, n);
            let ctx = alloc::format!("linear_i16 {m}x{k}x{n}");
            assert_close(&ctx, &got, &want, &x, &q, &s, k, n);
        }
    }

    #[test]
    fn quantize_rows_i16_bounds_the_error_by_half_a_step() {
        let mut rng = Rng::new(43);
        let (n, k) = (9, 77);
        let mut w = rng.normal_vec(n * k, 0.05);
        w[3 * k..4 * k].fill(0.0); // an all-zero row
        w[5 * k..6 * k].fill(1e-35); // a row below the tiny threshold
        w[7 * k + 4] = -2.5; // an outlier sets its row's scale
        let (mut q, mut s) = (vec![0i16; n * k], vec![0.0f32; n]);
        quantize_rows_i16(&w, n, k, &mut q, &mut s);
        for j in 0..n {
            let row = &w[j * k..(j + 1) * k];
            let max = row.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
            if max < TINY_ROW {
                assert_eq!(s[j], 0.0, "row {j}");
                assert!(q[j * k..(j + 1) * k].iter().all(|&v| v == 0), "row {j}");
                continue;
            }
            // The step is max/32767 (f32 division: relative error 6e-8).
            assert!(
                (s[j] - max / 32767.0).abs() <= 1e-7 * s[j],
                "row {j}: scale {}",
                s[j]
            );
            // The largest magnitude maps to ±32767 exactly.
            assert!(
                q[j * k..(j + 1) * k].iter().any(|&v| v.abs() == 32767),
                "row {j}"
            );
            for (p, &v) in row.iter().enumerate() {
                let back = q[j * k + p] as f32 * s[j];
                // Half a step, plus f32 rounding of the division and the product.
                let bound = 0.5 * s[j] * (1.0 + 1e-6) + 1e-7 * v.abs();
                assert!((back - v).abs() <= bound, "w[{j}, {p}] = {v} -> {back}");
            }
        }
        assert_eq!(q[7 * k + 4], -32767);
    }

    #[test]
    fn widening_is_exact_over_the_i16_range() {
        // Every i16 value through the vector widening (scale 1), in one row.
        let src: Vec<u16> = (i16::MIN..=i16::MAX).map(|v| v as u16).collect();
        let mut dst = vec![0.0f32; src.len()];
        Isa::detect().run(Widen {
            src: &src,
            dst: &mut dst,
        });
        for (&h, &f) in src.iter().zip(&dst) {
            assert_eq!(f, h as i16 as f32);
        }
    }

    struct Widen<'a> {
        src: &'a [u16],
        dst: &'a mut [f32],
    }

    impl pulp::WithSimd for Widen<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, s: S) {
            widen_i16_scaled(s, self.src, 1.0, self.dst);
        }
    }

    #[test]
    #[should_panic(expected = "linear_i16: scales has 3 values, expected n = 2")]
    fn linear_i16_checks_scales() {
        linear_i16(&[0.0; 4], &[0; 8], &[1.0; 3], None, &mut [0.0; 2], 1, 4, 2);
    }

    #[test]
    #[should_panic(expected = "quantize_rows_i16: w[1, 0] = NaN is not finite")]
    fn quantize_rows_i16_rejects_non_finite_weights() {
        let w = [0.5, 0.25, f32::NAN, 1.0];
        quantize_rows_i16(&w, 2, 2, &mut [0; 4], &mut [0.0; 2]);
    }
}
