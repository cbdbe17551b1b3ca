//! The backward of an affine LayerNorm `y = x̂·γ + β`, `x̂ = (x − μ)·r`, `r = 1/sqrt(σ² + eps)`
//! (the trainer's, and any caller that differentiates [`super::layer_norm`]): per row, with
//! `g = dy ⊙ γ`,
//!
//! `dx = r·(g − mean(g) − x̂·mean(g ⊙ x̂))`, `dγ += dy ⊙ x̂`, `dβ += dy`.
//!
//! The statistics are recomputed from the forward's input `x` with the forward's corrected
//! two-pass algorithm (so `x̂` is the one the forward produced, to rounding). The reference
//! works in `f64`; the fast path in `f32` lanes, within `1e-5·(1 + |dx|)`-ish of it (its tests
//! bound each output by the sizes of the sums it takes).

use super::super::isa::Isa;
use super::super::math;
use super::check_matrix;
use pulp::{Simd, WithSimd};

#[track_caller]
fn check(
    x: &[f32],
    rows: usize,
    dim: usize,
    gamma: &[f32],
    d_out: &[f32],
    dx: &[f32],
    dg: &[f32],
    db: &[f32],
) {
    check_matrix("layer_norm_backward", "x", x.len(), rows, dim);
    check_matrix("layer_norm_backward", "d_out", d_out.len(), rows, dim);
    check_matrix("layer_norm_backward", "dx", dx.len(), rows, dim);
    for (name, v) in [("gamma", gamma), ("d_gamma", dg), ("d_beta", db)] {
        super::check_vector("layer_norm_backward", name, v.len(), dim);
    }
}

/// Reference [`layer_norm_backward`] with `f64` statistics and sums.
///
/// # Panics
/// As [`layer_norm_backward`].
pub fn layer_norm_backward_ref(
    x: &[f32],
    rows: usize,
    dim: usize,
    eps: f32,
    gamma: &[f32],
    d_out: &[f32],
    dx: &mut [f32],
    d_gamma: &mut [f32],
    d_beta: &mut [f32],
) {
    check(x, rows, dim, gamma, d_out, dx, d_gamma, d_beta);
    if dim == 0 {
        return;
    }
    let n = dim as f64;
    for ((x, dy), dx) in x
        .chunks_exact(dim)
        .zip(d_out.chunks_exact(dim))
        .zip(dx.chunks_exact_mut(dim))
    {
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x
            .iter()
            .map(|&v| (v as f64 - mean) * (v as f64 - mean))
            .sum::<f64>()
            / n;
        let r = 1.0 / libm::sqrt(var + eps as f64);
        let xhat = |j: usize| (x[j] as f64 - mean) * r;
        let g = |j: usize| dy[j] as f64 * gamma[j] as f64;
        let (mut mean_g, mut mean_gx) = (0.0, 0.0);
        for j in 0..dim {
            mean_g += g(j);
            mean_gx += g(j) * xhat(j);
            d_gamma[j] += (dy[j] as f64 * xhat(j)) as f32;
            d_beta[j] += dy[j];
        }
        (mean_g, mean_gx) = (mean_g / n, mean_gx / n);
        for j in 0..dim {
            dx[j] = (r * (g(j) - mean_g - xhat(j) * mean_gx)) as f32;
        }
    }
}

/// Sum of the lanes of `acc` plus the scalar tail sum `tail`.
#[inline(always)]
fn total<S: Simd>(s: S, acc: S::f32s, tail: f32) -> f32 {
    s.reduce_sum_f32s(acc) + tail
}

struct Body<'a> {
    x: &'a [f32],
    dim: usize,
    eps: f32,
    gamma: &'a [f32],
    d_out: &'a [f32],
    dx: &'a mut [f32],
    d_gamma: &'a mut [f32],
    d_beta: &'a mut [f32],
}

impl WithSimd for Body<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self {
            x,
            dim,
            eps,
            gamma,
            d_out,
            dx,
            d_gamma,
            d_beta,
        } = self;
        let n = dim as f32;
        let zero = s.splat_f32s(0.0);
        let (g_head, g_tail) = S::as_simd_f32s(gamma);
        for ((x, dy), dx) in x
            .chunks_exact(dim)
            .zip(d_out.chunks_exact(dim))
            .zip(dx.chunks_exact_mut(dim))
        {
            let (x_head, x_tail) = S::as_simd_f32s(x);
            let (y_head, y_tail) = S::as_simd_f32s(dy);
            // Mean: the sum of x − x_0 (pivot), as the forward.
            let pivot = x[0];
            let pv = s.splat_f32s(pivot);
            let mut acc = zero;
            for &v in x_head {
                acc = s.add_f32s(acc, s.sub_f32s(v, pv));
            }
            let mean = pivot + total(s, acc, x_tail.iter().map(|&v| v - pivot).sum()) / n;
            // Corrected two-pass variance.
            let mv = s.splat_f32s(mean);
            let (mut c, mut q) = (zero, zero);
            for &v in x_head {
                let d = s.sub_f32s(v, mv);
                c = s.add_f32s(c, d);
                q = s.mul_add_f32s(d, d, q);
            }
            let c = total(s, c, x_tail.iter().map(|&v| v - mean).sum());
            let q = total(s, q, x_tail.iter().map(|&v| (v - mean) * (v - mean)).sum());
            let corr = c / n;
            let var = ((q - c * corr) / n).max(0.0);
            let r = 1.0 / math::sqrt(var + eps);
            let mean = mean + corr;
            let (mv, rv) = (s.splat_f32s(mean), s.splat_f32s(r));
            // Σg, Σg·x̂, dγ, dβ.
            let (mut sg, mut sgx) = (zero, zero);
            let (dg_head, dg_tail) = S::as_mut_simd_f32s(d_gamma);
            let (db_head, db_tail) = S::as_mut_simd_f32s(d_beta);
            for ((((&xv, &yv), &gv), dgv), dbv) in x_head
                .iter()
                .zip(y_head)
                .zip(g_head)
                .zip(dg_head.iter_mut())
                .zip(db_head.iter_mut())
            {
                let xh = s.mul_f32s(s.sub_f32s(xv, mv), rv);
                let g = s.mul_f32s(yv, gv);
                sg = s.add_f32s(sg, g);
                sgx = s.mul_add_f32s(g, xh, sgx);
                *dgv = s.mul_add_f32s(yv, xh, *dgv);
                *dbv = s.add_f32s(*dbv, yv);
            }
            let (mut tg, mut tgx) = (0.0f32, 0.0f32);
            for j in 0..x_tail.len() {
                let xh = (x_tail[j] - mean) * r;
                let g = y_tail[j] * g_tail[j];
                tg += g;
                tgx += g * xh;
                dg_tail[j] += y_tail[j] * xh;
                db_tail[j] += y_tail[j];
            }
            let mean_g = total(s, sg, tg) / n;
            let mean_gx = total(s, sgx, tgx) / n;
            // dx = r·(g − mean_g − x̂·mean_gx).
            let (mg, mgx) = (s.splat_f32s(mean_g), s.splat_f32s(mean_gx));
            let (o_head, o_tail) = S::as_mut_simd_f32s(dx);
            for (((o, &xv), &yv), &gv) in o_head.iter_mut().zip(x_head).zip(y_head).zip(g_head) {
                let xh = s.mul_f32s(s.sub_f32s(xv, mv), rv);
                let g = s.mul_f32s(yv, gv);
                let t = s.negate_mul_add_f32s(xh, mgx, s.sub_f32s(g, mg));
                *o = s.mul_f32s(t, rv);
            }
            for j in 0..o_tail.len() {
                let xh = (x_tail[j] - mean) * r;
                o_tail[j] = r * (y_tail[j] * g_tail[j] - mean_g - xh * mean_gx);
            }
        }
    }
}

/// [`layer_norm_backward`] with the pulp body instantiated for `isa`.
///
/// # Panics
/// As [`layer_norm_backward`].
pub fn layer_norm_backward_isa(
    isa: Isa,
    x: &[f32],
    rows: usize,
    dim: usize,
    eps: f32,
    gamma: &[f32],
    d_out: &[f32],
    dx: &mut [f32],
    d_gamma: &mut [f32],
    d_beta: &mut [f32],
) {
    check(x, rows, dim, gamma, d_out, dx, d_gamma, d_beta);
    if dim == 0 || rows == 0 {
        return;
    }
    isa.run(Body {
        x,
        dim,
        eps,
        gamma,
        d_out,
        dx,
        d_gamma,
        d_beta,
    });
}

/// The backward of [`super::layer_norm`] over `rows` rows of `dim` values: given the forward's
/// input `x`, `γ` and the output gradient `d_out`, writes `dx` and adds the parameter gradients
/// into `d_gamma` and `d_beta` (see the module docs). A modulated LayerNorm
/// `LN(x)·(1 + scale) + shift` is this with `γ = 1 + scale`: its `d_gamma` is the gradient of
/// `scale` and its `d_beta` that of `shift`.
///
/// # Panics
/// If `x`, `d_out` or `dx` does not hold `rows·dim` values, or `gamma`, `d_gamma`, `d_beta`
/// not `dim`.
#[inline]
pub fn layer_norm_backward(
    x: &[f32],
    rows: usize,
    dim: usize,
    eps: f32,
    gamma: &[f32],
    d_out: &[f32],
    dx: &mut [f32],
    d_gamma: &mut [f32],
    d_beta: &mut [f32],
) {
    layer_norm_backward_isa(
        Isa::f32_level(),
        x,
        rows,
        dim,
        eps,
        gamma,
        d_out,
        dx,
        d_gamma,
        d_beta,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{AWKWARD_SIZES, Rng};
    use alloc::vec;
    use alloc::vec::Vec;

    /// Every path against the reference on rows of several kinds (normal, a large common
    /// offset, a tiny spread where eps matters, constant), awkward widths, SASRec's and
    /// PyTorch's eps. Each output within 2e-5 of the size of the terms it is made of, plus what
    /// rounding the mean costs a row with a large offset.
    #[test]
    fn every_path_matches_the_reference() {
        let mut rng = Rng::new(5);
        for isa in Isa::available() {
            for &dim in AWKWARD_SIZES.iter().chain(&[64usize, 384]) {
                for eps in [1e-12f32, 1e-5] {
                    let rows = 7;
                    let x: Vec<f32> = (0..rows * dim)
                        .map(|i| match (i / dim.max(1)) % 4 {
                            0 => rng.normal(),
                            1 => 1000.0 + rng.uniform(-1.0, 1.0),
                            2 => 0.5 + 1e-3 * rng.normal(),
                            _ => 2.5,
                        })
                        .collect();
                    let gamma: Vec<f32> = (0..dim).map(|_| 1.0 + 0.3 * rng.normal()).collect();
                    let dy = rng.normal_vec(rows * dim, 1.0);
                    let start = rng.normal_vec(dim, 0.1);
                    let (mut dx, mut dg, mut db) =
                        (vec![0.0; rows * dim], start.clone(), start.clone());
                    let (mut rx, mut rg, mut rb) =
                        (vec![0.0; rows * dim], start.clone(), start.clone());
                    layer_norm_backward_isa(
                        isa, &x, rows, dim, eps, &gamma, &dy, &mut dx, &mut dg, &mut db,
                    );
                    layer_norm_backward_ref(
                        &x, rows, dim, eps, &gamma, &dy, &mut rx, &mut rg, &mut rb,
                    );
                    // Per row, how far rounding the mean may move x̂ (see below).
                    let mut xhat_err = vec![0.0f64; rows];
                    for r in 0..rows {
                        let row = r * dim..(r + 1) * dim;
                        let var = {
                            let m =
                                x[row.clone()].iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
                            x[row.clone()]
                                .iter()
                                .map(|&v| (v as f64 - m).powi(2))
                                .sum::<f64>()
                                / dim as f64
                        };
                        let rstd = 1.0 / (var + eps as f64).sqrt();
                        let scale: f64 = dy[row.clone()]
                            .iter()
                            .zip(&gamma)
                            .map(|(&a, &b)| (a * b).abs() as f64)
                            .sum::<f64>();
                        // Rounding the mean of values of size |x|max moves x̂ by
                        // r·ε·|x|max, which the centring amplifies for a large common offset.
                        let xmax = x[row.clone()]
                            .iter()
                            .fold(0.0f64, |m, &v| m.max(v.abs() as f64));
                        xhat_err[r] = 8.0 * f32::EPSILON as f64 * xmax * rstd;
                        let shift = xhat_err[r] * rstd * scale;
                        for j in row {
                            let tol = 2e-5
                                * rstd
                                * (scale / dim as f64 + (dy[j] * gamma[j % dim]).abs() as f64)
                                + shift
                                + 1e-30;
                            assert!(
                                ((dx[j] - rx[j]) as f64).abs() <= tol,
                                "{isa:?} dim {dim} eps {eps:e} row {r}: dx[{j}] = {} vs {} (tol {tol:e})",
                                dx[j],
                                rx[j]
                            );
                        }
                    }
                    let sum_abs = |j: usize| (0..rows).map(|r| dy[r * dim + j].abs()).sum::<f32>();
                    for j in 0..dim {
                        let moved: f64 = (0..rows)
                            .map(|r| dy[r * dim + j].abs() as f64 * xhat_err[r])
                            .sum();
                        let tol = 1e-5 * (1.0 + sum_abs(j)) + moved as f32;
                        assert!(
                            (dg[j] - rg[j]).abs() <= tol,
                            "{isa:?} dim {dim}: d_gamma[{j}] {} vs {}",
                            dg[j],
                            rg[j]
                        );
                        assert!(
                            (db[j] - rb[j]).abs() <= tol,
                            "{isa:?} dim {dim}: d_beta[{j}] {} vs {}",
                            db[j],
                            rb[j]
                        );
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "layer_norm_backward: d_out has 5 values, expected rows·dim = 2·3")]
    fn a_short_gradient_is_named() {
        let (x, g) = ([0.0f32; 6], [1.0f32; 3]);
        let (mut dx, mut dg, mut db) = ([0.0f32; 6], [0.0f32; 3], [0.0f32; 3]);
        layer_norm_backward(&x, 2, 3, 1e-5, &g, &[0.0; 5], &mut dx, &mut dg, &mut db);
    }
}
