//! Row-wise softmax and log-softmax, in place on a row-major `[rows, cols]` `f32` matrix.
//!
//! Both are the numerically stable, max-subtracted forms: `softmax(x)_j = e^{x_j − m} / Σ_k
//! e^{x_k − m}` and `log_softmax(x)_j = (x_j − m) − ln Σ_k e^{x_k − m}` with `m = max_k x_k`, so
//! no input below `+∞` overflows. Entries may be `−∞` (a hard mask) or large negative (RecBole's
//! −10000 additive masks): they get probability 0 (log-probability `x_j − m − ln Σ`).
//! A row whose every entry is `−∞` has no distribution: `softmax_rows` fills it with zeros and
//! `log_softmax_rows` leaves it at `−∞` (PyTorch gives NaN for both). Inputs must not be `+∞` or
//! NaN.
//!
//! The fast paths use the polynomial [`exp_f32s`] (relative error below 2e-7, exactly 0 below
//! −87.3: weights under `e^{−87}` relative to the row's largest are flushed to zero).
//! Tolerance against the f64 reference: softmax `1e-7 + 3e-6·p` per probability `p`;
//! log-softmax `1e-6 + 5e-7·|y|`.

use super::isa::Isa;
use super::math::{self, exp_f32s};
use pulp::{Simd, WithSimd};

#[track_caller]
fn check_shape(op: &str, len: usize, rows: usize, cols: usize) {
    assert_eq!(
        Some(len),
        rows.checked_mul(cols),
        "{op}: x has {len} values, expected rows·cols = {rows}·{cols}"
    );
}

/// Reference [`softmax_rows`] with f64 arithmetic.
///
/// # Panics
/// If `x` does not hold `rows·cols` values.
pub fn softmax_rows_ref(x: &mut [f32], rows: usize, cols: usize) {
    check_shape("softmax_rows", x.len(), rows, cols);
    if cols == 0 {
        return;
    }
    for row in x.chunks_exact_mut(cols) {
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        if m == f64::NEG_INFINITY {
            row.fill(0.0);
            continue;
        }
        let sum: f64 = row.iter().map(|&v| libm::exp(v as f64 - m)).sum();
        for v in row.iter_mut() {
            *v = (libm::exp(*v as f64 - m) / sum) as f32;
        }
    }
}

/// Reference [`log_softmax_rows`] with f64 arithmetic.
///
/// # Panics
/// If `x` does not hold `rows·cols` values.
pub fn log_softmax_rows_ref(x: &mut [f32], rows: usize, cols: usize) {
    check_shape("log_softmax_rows", x.len(), rows, cols);
    if cols == 0 {
        return;
    }
    for row in x.chunks_exact_mut(cols) {
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        if m == f64::NEG_INFINITY {
            continue;
        }
        let sum: f64 = row.iter().map(|&v| libm::exp(v as f64 - m)).sum();
        let lse = libm::log(sum);
        for v in row.iter_mut() {
            *v = (*v as f64 - m - lse) as f32;
        }
    }
}

/// The last (partial) vector of a row, padded with `−∞` instead of pulp's zeros so that it is
/// neutral for both the max and the exponential sum.
#[inline(always)]
fn load_tail_neg_inf<S: Simd>(s: S, tail: &[f32]) -> S::f32s {
    let mut pad = [f32::NEG_INFINITY; 16]; // no instruction set has more than 16 f32 lanes
    let lanes = S::F32_LANES.min(pad.len());
    pad[..tail.len()].copy_from_slice(tail);
    s.partial_load_f32s(&pad[..lanes])
}

/// Maximum of a row (`−∞` for an empty row).
#[inline(always)]
pub(crate) fn row_max<S: Simd>(s: S, row: &[f32]) -> f32 {
    let (head, tail) = S::as_simd_f32s(row);
    let mut acc = [s.splat_f32s(f32::NEG_INFINITY); 2];
    let mut pairs = head.chunks_exact(2);
    for p in &mut pairs {
        acc[0] = s.max_f32s(acc[0], p[0]);
        acc[1] = s.max_f32s(acc[1], p[1]);
    }
    for &v in pairs.remainder() {
        acc[0] = s.max_f32s(acc[0], v);
    }
    if !tail.is_empty() {
        acc[1] = s.max_f32s(acc[1], load_tail_neg_inf(s, tail));
    }
    s.reduce_max_f32s(s.max_f32s(acc[0], acc[1]))
}

/// Rows are summed in blocks of this many values (f32 vector accumulators within a block, the
/// block sums added in f64), so the rounding of a long sum does not grow with its length.
const SUM_BLOCK: usize = 256;

/// Replaces `row` by `e^{row − max}` and returns the sum of the new values. An empty or
/// all-`−∞` row becomes zeros and the sum is 0; otherwise the sum is at least 1.
#[inline(always)]
pub(crate) fn exp_shifted_row<S: Simd>(s: S, row: &mut [f32]) -> f32 {
    let m = row_max(s, row);
    if m == f32::NEG_INFINITY {
        row.fill(0.0);
        return 0.0;
    }
    let mv = s.splat_f32s(m);
    let mut total = 0.0f64;
    for block in row.chunks_mut(SUM_BLOCK) {
        let (head, tail) = S::as_mut_simd_f32s(block);
        let mut acc = [s.splat_f32s(0.0); 2];
        let mut pairs = head.chunks_exact_mut(2);
        for p in &mut pairs {
            let e0 = exp_f32s(s, s.sub_f32s(p[0], mv));
            let e1 = exp_f32s(s, s.sub_f32s(p[1], mv));
            p[0] = e0;
            p[1] = e1;
            acc[0] = s.add_f32s(acc[0], e0);
            acc[1] = s.add_f32s(acc[1], e1);
        }
        for v in pairs.into_remainder() {
            let e = exp_f32s(s, s.sub_f32s(*v, mv));
            *v = e;
            acc[0] = s.add_f32s(acc[0], e);
        }
        if !tail.is_empty() {
            let e = exp_f32s(s, s.sub_f32s(s.partial_load_f32s(tail), mv));
            s.partial_store_f32s(tail, e);
            // Reload: the lanes past the tail come back as zeros and add nothing.
            acc[1] = s.add_f32s(acc[1], s.partial_load_f32s(tail));
        }
        total += s.reduce_sum_f32s(s.add_f32s(acc[0], acc[1])) as f64;
    }
    total as f32
}

/// `row ← row·factor`.
#[inline(always)]
pub(crate) fn scale_row<S: Simd>(s: S, row: &mut [f32], factor: f32) {
    let f = s.splat_f32s(factor);
    let (head, tail) = S::as_mut_simd_f32s(row);
    for v in head {
        *v = s.mul_f32s(*v, f);
    }
    for v in tail {
        *v *= factor;
    }
}

struct SoftmaxBody<'a> {
    x: &'a mut [f32],
    cols: usize,
    log: bool,
}

impl WithSimd for SoftmaxBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self { x, cols, log } = self;
        for row in x.chunks_exact_mut(cols) {
            if log {
                log_softmax_row(s, row);
            } else {
                let sum = exp_shifted_row(s, row);
                if sum > 0.0 {
                    scale_row(s, row, 1.0 / sum);
                }
            }
        }
    }
}

#[inline(always)]
fn log_softmax_row<S: Simd>(s: S, row: &mut [f32]) {
    let m = row_max(s, row);
    if m == f32::NEG_INFINITY {
        return;
    }
    let mv = s.splat_f32s(m);
    let mut total = 0.0f64;
    for block in row.chunks(SUM_BLOCK) {
        let (head, tail) = S::as_simd_f32s(block);
        let mut acc = [s.splat_f32s(0.0); 2];
        let mut pairs = head.chunks_exact(2);
        for p in &mut pairs {
            acc[0] = s.add_f32s(acc[0], exp_f32s(s, s.sub_f32s(p[0], mv)));
            acc[1] = s.add_f32s(acc[1], exp_f32s(s, s.sub_f32s(p[1], mv)));
        }
        for &v in pairs.remainder() {
            acc[0] = s.add_f32s(acc[0], exp_f32s(s, s.sub_f32s(v, mv)));
        }
        if !tail.is_empty() {
            let v = load_tail_neg_inf(s, tail);
            acc[1] = s.add_f32s(acc[1], exp_f32s(s, s.sub_f32s(v, mv)));
        }
        total += s.reduce_sum_f32s(s.add_f32s(acc[0], acc[1])) as f64;
    }
    let lse = math::ln(total as f32);
    let lse_v = s.splat_f32s(lse);
    // (x − m) − lse: x − m is exact near the max, and lse ∈ [0, ln cols].
    let (head, tail) = S::as_mut_simd_f32s(row);
    for v in head.iter_mut() {
        *v = s.sub_f32s(s.sub_f32s(*v, mv), lse_v);
    }
    for v in tail.iter_mut() {
        *v = (*v - m) - lse;
    }
}

/// [`softmax_rows`] with the pulp body instantiated for `isa`.
///
/// # Panics
/// If `x` does not hold `rows·cols` values.
pub fn softmax_rows_isa(isa: Isa, x: &mut [f32], rows: usize, cols: usize) {
    check_shape("softmax_rows", x.len(), rows, cols);
    if cols == 0 || rows == 0 {
        return;
    }
    isa.run(SoftmaxBody {
        x,
        cols,
        log: false,
    });
}

/// Numerically stable softmax of each row of `x` (`[rows, cols]`), in place. An all-`−∞` row
/// becomes zeros.
///
/// # Panics
/// If `x` does not hold `rows·cols` values.
#[inline]
pub fn softmax_rows(x: &mut [f32], rows: usize, cols: usize) {
    softmax_rows_isa(Isa::detect(), x, rows, cols);
}

/// [`log_softmax_rows`] with the pulp body instantiated for `isa`.
///
/// # Panics
/// If `x` does not hold `rows·cols` values.
pub fn log_softmax_rows_isa(isa: Isa, x: &mut [f32], rows: usize, cols: usize) {
    check_shape("log_softmax_rows", x.len(), rows, cols);
    if cols == 0 || rows == 0 {
        return;
    }
    isa.run(SoftmaxBody { x, cols, log: true });
}

/// Numerically stable log-softmax of each row of `x` (`[rows, cols]`), in place. An all-`−∞`
/// row stays `−∞`.
///
/// # Panics
/// If `x` does not hold `rows·cols` values.
#[inline]
pub fn log_softmax_rows(x: &mut [f32], rows: usize, cols: usize) {
    log_softmax_rows_isa(Isa::detect(), x, rows, cols);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{AWKWARD_SIZES, Rng};
    use alloc::format;
    use alloc::vec::Vec;

    const NEG_INF: f32 = f32::NEG_INFINITY;

    /// Rows of several kinds: normal, ±80 magnitudes, −10000 masks mixed with normal values,
    /// all −∞ but one, all −10000, all −∞.
    fn make_rows(rng: &mut Rng, rows: usize, cols: usize) -> Vec<f32> {
        let mut x = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            let keep = rng.below(cols);
            for j in 0..cols {
                x.push(match r % 6 {
                    0 => 3.0 * rng.normal(),
                    1 => rng.uniform(-80.0, 80.0),
                    2 if rng.below(3) == 0 => -10_000.0,
                    2 => rng.normal(),
                    3 if j == keep => rng.uniform(-50.0, 50.0),
                    3 => NEG_INF,
                    4 => -10_000.0,
                    _ => NEG_INF,
                });
            }
        }
        x
    }

    fn sizes() -> Vec<usize> {
        let mut v = AWKWARD_SIZES.to_vec();
        v.extend([50, 1000, 23_716]);
        v
    }

    fn check_softmax_rows(isa: Isa) {
        let mut rng = Rng::new(31);
        for cols in sizes() {
            for rows in [0, 1, 6, 12] {
                let x = make_rows(&mut rng, rows, cols);
                let mut want = x.clone();
                softmax_rows_ref(&mut want, rows, cols);
                let mut got = x.clone();
                softmax_rows_isa(isa, &mut got, rows, cols);
                // 1e-7 + 3e-6·p: e^{x−m} has relative error 2e-7, the blocked sum and the
                // scaling a few 1e-7 (observed ≤ 1.2e-6 on 23716 columns); the rounding of x − m
                // (≤ |x − m|·6e-8 relative) is below 1e-7 absolute because p ≤ e^{−|x−m|}, and
                // so are the weights below e^{−87} that the SIMD exp flushes to zero.
                crate::testing::assert_close(
                    &format!("softmax_rows {isa} {rows}x{cols}"),
                    &got,
                    &want,
                    1e-7,
                    3e-6,
                );
                for row in got.chunks_exact(cols.max(1)).take(rows) {
                    let sum: f64 = row.iter().map(|&p| p as f64).sum();
                    let empty = row.iter().all(|&p| p == 0.0);
                    assert!(
                        empty || (sum - 1.0).abs() < 5e-6,
                        "{isa} {cols}: row sums to {sum}"
                    );
                }
            }
        }
    }
    crate::isa_tests!(softmax_rows, check_softmax_rows);

    fn check_log_softmax_rows(isa: Isa) {
        let mut rng = Rng::new(32);
        for cols in sizes() {
            for rows in [0, 1, 6, 12] {
                let x = make_rows(&mut rng, rows, cols);
                let mut want = x.clone();
                log_softmax_rows_ref(&mut want, rows, cols);
                let mut got = x.clone();
                log_softmax_rows_isa(isa, &mut got, rows, cols);
                assert_log_close(
                    &format!("log_softmax_rows {isa} {rows}x{cols}"),
                    &got,
                    &want,
                );
            }
        }
    }

    /// `−∞` must match exactly; elsewhere 1e-6 + 5e-7·|y|: the roundings of x − m and of − lse
    /// (≤ 1.2e-7·|y| each) and the error of ln Σ (≤ 1e-6 absolute for Σ ≤ cols).
    #[track_caller]
    fn assert_log_close(ctx: &str, got: &[f32], want: &[f32]) {
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            if w == NEG_INF {
                assert_eq!(g, NEG_INF, "{ctx}: index {i}");
                continue;
            }
            let tol = 1e-6 + 5e-7 * w.abs();
            assert!((g - w).abs() <= tol, "{ctx}: index {i}: got {g}, want {w}");
        }
    }
    crate::isa_tests!(log_softmax_rows, check_log_softmax_rows);

    #[test]
    fn special_rows() {
        for isa in Isa::available() {
            // One finite entry among −∞: probability exactly 1 there, 0 elsewhere.
            let mut x = [
                NEG_INF, NEG_INF, 2.5, NEG_INF, NEG_INF, NEG_INF, NEG_INF, NEG_INF, NEG_INF,
            ];
            softmax_rows_isa(isa, &mut x, 1, 9);
            assert_eq!(x, [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "{isa}");
            // All −∞: zeros (softmax), −∞ (log-softmax).
            let mut x = [NEG_INF; 11];
            softmax_rows_isa(isa, &mut x, 1, 11);
            assert_eq!(x, [0.0; 11], "{isa}");
            let mut x = [NEG_INF; 11];
            log_softmax_rows_isa(isa, &mut x, 1, 11);
            assert_eq!(x, [NEG_INF; 11], "{isa}");
            // All −10000 (a fully masked RecBole row): uniform, as in PyTorch.
            let mut x = [-10_000.0f32; 10];
            softmax_rows_isa(isa, &mut x, 1, 10);
            assert!(x.iter().all(|&p| (p - 0.1).abs() < 1e-7), "{isa}: {x:?}");
            // ±80: no overflow; e^{-160} underflows to 0.
            let mut x = [80.0f32, -80.0, 80.0, 0.0];
            softmax_rows_isa(isa, &mut x, 1, 4);
            assert!((x[0] - 0.5).abs() < 1e-7 && x[1] == 0.0, "{isa}: {x:?}");
            let mut x = [80.0f32, -80.0, 80.0, 0.0];
            log_softmax_rows_isa(isa, &mut x, 1, 4);
            let ln2 = core::f32::consts::LN_2;
            assert!(
                (x[0] + ln2).abs() < 1e-6 && (x[1] + 160.0 + ln2).abs() < 1e-4,
                "{x:?}"
            );
        }
    }

    #[test]
    fn fast_paths_match_reference() {
        let mut rng = Rng::new(33);
        for (rows, cols) in [(50, 50), (1, 23_716), (3, 1)] {
            let x = make_rows(&mut rng, rows, cols);
            let mut want = x.clone();
            softmax_rows_ref(&mut want, rows, cols);
            let mut got = x.clone();
            softmax_rows(&mut got, rows, cols);
            // Same tolerance as check_softmax_rows.
            crate::testing::assert_close("softmax_rows", &got, &want, 1e-7, 3e-6);
            let mut want = x.clone();
            log_softmax_rows_ref(&mut want, rows, cols);
            let mut got = x.clone();
            log_softmax_rows(&mut got, rows, cols);
            assert_log_close("log_softmax_rows", &got, &want);
        }
    }

    #[test]
    #[should_panic(expected = "softmax_rows: x has 5 values, expected rows·cols = 2·3")]
    fn wrong_length_panics() {
        softmax_rows(&mut [0.0; 5], 2, 3);
    }
}
