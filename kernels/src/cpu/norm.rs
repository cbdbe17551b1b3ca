//! Layer normalisation and adaLN modulation over the rows of a row-major `[rows, dim]` `f32`
//! matrix.
//!
//! Semantics are PyTorch's `nn.LayerNorm` (and so RecBole's): per row,
//! `y = (x − μ) / sqrt(σ² + eps) · γ + β` with the mean μ and the *biased* variance σ² of the
//! row, `eps` inside the square root. [`add_layer_norm`] is the fused post-LN residual
//! `LN(x + residual)` (the sum is rounded to `f32` first, as the unfused PyTorch pair does);
//! [`layer_norm_no_affine`] is `elementwise_affine=False` (γ = 1, β = 0, never read);
//! [`modulate`] is adaLN's `x·(1 + scale) + shift` with `shift`/`scale` of length `dim`
//! broadcast over the rows.
//!
//! Numerics of the fast paths: a two-pass formulation. Pass 1 sums `x − K` with the row's first
//! element as pivot `K`, so that a constant row gives a mean of exactly `K`; pass 2 centres the
//! row on that mean and accumulates `Σd` and `Σd²`, and the mean and the variance are then
//! corrected by the residual `Σd/n` (the corrected two-pass algorithm of Chan, Golub & LeVeque).
//! A large common offset (values around 1000 ± 1, where the one-pass `E[x²] − E[x]²` loses every
//! digit) costs no accuracy, and constant rows give exactly `β`.
//!
//! The references (`*_ref`) compute the statistics and the output in `f64`.
//! Tolerance of every fast path against the reference, per element:
//! `1e-6·(1 + |x̂·γ| + |β|)` where `x̂` is the normalised value (a few `f32` roundings of a
//! value of that size); [`modulate`]: `1e-6·(|x·(1 + scale)| + |shift|)`.

use super::isa::Isa;
use super::math;
use alloc::vec;
use pulp::{Simd, WithSimd};

#[track_caller]
fn check_matrix(op: &str, name: &str, len: usize, rows: usize, dim: usize) {
    assert_eq!(
        Some(len),
        rows.checked_mul(dim),
        "{op}: {name} has {len} values, expected rows·dim = {rows}·{dim}"
    );
}

#[track_caller]
fn check_vector(op: &str, name: &str, len: usize, dim: usize) {
    assert_eq!(
        len, dim,
        "{op}: {name} has {len} values, expected dim = {dim}"
    );
}

#[track_caller]
fn check_affine(op: &str, gamma: &[f32], beta: &[f32], dim: usize) {
    check_vector(op, "gamma", gamma.len(), dim);
    check_vector(op, "beta", beta.len(), dim);
}

// ---------------------------------------------------------------------------------------------
// References (f64 statistics)
// ---------------------------------------------------------------------------------------------

/// Normalises one row given in f64 and writes it to `out` (the reference kernel).
fn normalize_row_ref(row: &[f64], affine: Option<(&[f32], &[f32])>, eps: f32, out: &mut [f32]) {
    let n = row.len() as f64;
    let mean = row.iter().sum::<f64>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let rstd = 1.0 / libm::sqrt(var + eps as f64);
    for (j, (o, &v)) in out.iter_mut().zip(row).enumerate() {
        let y = (v - mean) * rstd;
        *o = match affine {
            Some((g, b)) => (y * g[j] as f64 + b[j] as f64) as f32,
            None => y as f32,
        };
    }
}

/// Reference [`layer_norm`]: f64 mean and biased variance, f64 output rounded once.
///
/// # Panics
/// If `x` or `out` does not hold `rows·dim` values, or `gamma`/`beta` not `dim`.
pub fn layer_norm_ref(
    x: &[f32],
    rows: usize,
    dim: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    check_matrix("layer_norm", "x", x.len(), rows, dim);
    check_matrix("layer_norm", "out", out.len(), rows, dim);
    check_affine("layer_norm", gamma, beta, dim);
    let mut buf = vec![0.0f64; dim];
    for r in 0..rows {
        for j in 0..dim {
            buf[j] = x[r * dim + j] as f64;
        }
        normalize_row_ref(
            &buf,
            Some((gamma, beta)),
            eps,
            &mut out[r * dim..(r + 1) * dim],
        );
    }
}

/// Reference [`layer_norm_inplace`].
///
/// # Panics
/// If `x` does not hold `rows·dim` values, or `gamma`/`beta` not `dim`.
pub fn layer_norm_inplace_ref(
    x: &mut [f32],
    rows: usize,
    dim: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    let input = x.to_vec();
    layer_norm_ref(&input, rows, dim, gamma, beta, eps, x);
}

/// Reference [`add_layer_norm`]: the sum `x + residual` is rounded to f32 (as PyTorch's unfused
/// `LayerNorm(x + residual)` does), the statistics and output are f64.
///
/// # Panics
/// If `x`, `residual` or `out` does not hold `rows·dim` values, or `gamma`/`beta` not `dim`.
pub fn add_layer_norm_ref(
    x: &[f32],
    residual: &[f32],
    rows: usize,
    dim: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    check_matrix("add_layer_norm", "x", x.len(), rows, dim);
    check_matrix("add_layer_norm", "residual", residual.len(), rows, dim);
    check_matrix("add_layer_norm", "out", out.len(), rows, dim);
    check_affine("add_layer_norm", gamma, beta, dim);
    let mut buf = vec![0.0f64; dim];
    for r in 0..rows {
        for j in 0..dim {
            buf[j] = (x[r * dim + j] + residual[r * dim + j]) as f64;
        }
        normalize_row_ref(
            &buf,
            Some((gamma, beta)),
            eps,
            &mut out[r * dim..(r + 1) * dim],
        );
    }
}

/// Reference [`layer_norm_no_affine`].
///
/// # Panics
/// If `x` or `out` does not hold `rows·dim` values.
pub fn layer_norm_no_affine_ref(x: &[f32], rows: usize, dim: usize, eps: f32, out: &mut [f32]) {
    check_matrix("layer_norm_no_affine", "x", x.len(), rows, dim);
    check_matrix("layer_norm_no_affine", "out", out.len(), rows, dim);
    let mut buf = vec![0.0f64; dim];
    for r in 0..rows {
        for j in 0..dim {
            buf[j] = x[r * dim + j] as f64;
        }
        normalize_row_ref(&buf, None, eps, &mut out[r * dim..(r + 1) * dim]);
    }
}

/// Reference [`modulate`] (f64 arithmetic, rounded once).
///
/// # Panics
/// If `x` does not hold `rows·dim` values, or `shift`/`scale` not `dim`.
pub fn modulate_ref(x: &mut [f32], rows: usize, dim: usize, shift: &[f32], scale: &[f32]) {
    check_matrix("modulate", "x", x.len(), rows, dim);
    check_vector("modulate", "shift", shift.len(), dim);
    check_vector("modulate", "scale", scale.len(), dim);
    for r in 0..rows {
        for j in 0..dim {
            let v = &mut x[r * dim + j];
            *v = (*v as f64 * (1.0 + scale[j] as f64) + shift[j] as f64) as f32;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// pulp bodies
// ---------------------------------------------------------------------------------------------

/// Where the values to normalise come from; the result always lands in the output buffer.
#[derive(Copy, Clone)]
enum Source<'a> {
    /// The output buffer already holds them.
    InPlace,
    /// Copy from `x`.
    Copy(&'a [f32]),
    /// `x + residual`, rounded to f32.
    Add(&'a [f32], &'a [f32]),
}

/// `row ← src` (per `source`, row `r`) and returns `Σ (row_j − row_0)`, the pivot being the
/// first stored value.
#[inline(always)]
fn fill_and_pivot_sum<S: Simd>(s: S, source: Source<'_>, r: usize, row: &mut [f32]) -> (f32, f32) {
    let dim = row.len();
    match source {
        Source::InPlace => {}
        Source::Copy(x) => row.copy_from_slice(&x[r * dim..(r + 1) * dim]),
        Source::Add(x, res) => {
            let x = &x[r * dim..(r + 1) * dim];
            let res = &res[r * dim..(r + 1) * dim];
            let (x_head, x_tail) = S::as_simd_f32s(x);
            let (r_head, r_tail) = S::as_simd_f32s(res);
            let (o_head, o_tail) = S::as_mut_simd_f32s(row);
            for ((o, &a), &b) in o_head.iter_mut().zip(x_head).zip(r_head) {
                *o = s.add_f32s(a, b);
            }
            for ((o, &a), &b) in o_tail.iter_mut().zip(x_tail).zip(r_tail) {
                *o = a + b;
            }
        }
    }
    let pivot = row[0];
    let pv = s.splat_f32s(pivot);
    let (head, tail) = S::as_simd_f32s(row);
    let mut acc = [s.splat_f32s(0.0); 2];
    let mut pairs = head.chunks_exact(2);
    for p in &mut pairs {
        acc[0] = s.add_f32s(acc[0], s.sub_f32s(p[0], pv));
        acc[1] = s.add_f32s(acc[1], s.sub_f32s(p[1], pv));
    }
    for &v in pairs.remainder() {
        acc[0] = s.add_f32s(acc[0], s.sub_f32s(v, pv));
    }
    let mut sum = s.reduce_sum_f32s(s.add_f32s(acc[0], acc[1]));
    for &v in tail {
        sum += v - pivot;
    }
    (pivot, sum)
}

/// `row ← row − mean`; returns `(Σd, Σd²)` of the centred values.
#[inline(always)]
fn center<S: Simd>(s: S, row: &mut [f32], mean: f32) -> (f32, f32) {
    let mv = s.splat_f32s(mean);
    let (head, tail) = S::as_mut_simd_f32s(row);
    let zero = s.splat_f32s(0.0);
    let (mut c0, mut c1, mut q0, mut q1) = (zero, zero, zero, zero);
    let mut pairs = head.chunks_exact_mut(2);
    for p in &mut pairs {
        let d0 = s.sub_f32s(p[0], mv);
        let d1 = s.sub_f32s(p[1], mv);
        p[0] = d0;
        p[1] = d1;
        c0 = s.add_f32s(c0, d0);
        c1 = s.add_f32s(c1, d1);
        q0 = s.mul_add_f32s(d0, d0, q0);
        q1 = s.mul_add_f32s(d1, d1, q1);
    }
    for v in pairs.into_remainder() {
        let d = s.sub_f32s(*v, mv);
        *v = d;
        c0 = s.add_f32s(c0, d);
        q0 = s.mul_add_f32s(d, d, q0);
    }
    let mut c = s.reduce_sum_f32s(s.add_f32s(c0, c1));
    let mut q = s.reduce_sum_f32s(s.add_f32s(q0, q1));
    for v in tail {
        let d = *v - mean;
        *v = d;
        c += d;
        q += d * d;
    }
    (c, q)
}

/// Normalises `row` in place, given its pivot and `Σ (row_j − pivot)`.
#[inline(always)]
fn normalize_row<S: Simd>(
    s: S,
    row: &mut [f32],
    pivot: f32,
    pivot_sum: f32,
    affine: Option<(&[f32], &[f32])>,
    eps: f32,
) {
    let n = row.len() as f32;
    let mean = pivot + pivot_sum / n;
    let (c, q) = center(s, row, mean);
    // Corrected two-pass: the true mean is mean + c/n, and Σ(d − c/n)² = Σd² − c·(c/n).
    let corr = c / n;
    let var = ((q - c * corr) / n).max(0.0);
    let rstd = 1.0 / math::sqrt(var + eps);
    let (corr_v, rstd_v) = (s.splat_f32s(corr), s.splat_f32s(rstd));
    let (head, tail) = S::as_mut_simd_f32s(row);
    match affine {
        Some((gamma, beta)) => {
            let (g_head, g_tail) = S::as_simd_f32s(gamma);
            let (b_head, b_tail) = S::as_simd_f32s(beta);
            for ((v, &g), &b) in head.iter_mut().zip(g_head).zip(b_head) {
                let t = s.mul_f32s(s.sub_f32s(*v, corr_v), rstd_v);
                *v = s.mul_add_f32s(t, g, b);
            }
            if !tail.is_empty() {
                let t = s.mul_f32s(s.sub_f32s(s.partial_load_f32s(tail), corr_v), rstd_v);
                let y = s.mul_add_f32s(t, s.partial_load_f32s(g_tail), s.partial_load_f32s(b_tail));
                s.partial_store_f32s(tail, y);
            }
        }
        None => {
            for v in head.iter_mut() {
                *v = s.mul_f32s(s.sub_f32s(*v, corr_v), rstd_v);
            }
            if !tail.is_empty() {
                let t = s.mul_f32s(s.sub_f32s(s.partial_load_f32s(tail), corr_v), rstd_v);
                s.partial_store_f32s(tail, t);
            }
        }
    }
}

struct LayerNormBody<'a> {
    source: Source<'a>,
    out: &'a mut [f32],
    dim: usize,
    affine: Option<(&'a [f32], &'a [f32])>,
    eps: f32,
}

impl WithSimd for LayerNormBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self {
            source,
            out,
            dim,
            affine,
            eps,
        } = self;
        for (r, row) in out.chunks_exact_mut(dim).enumerate() {
            let (pivot, sum) = fill_and_pivot_sum(s, source, r, row);
            normalize_row(s, row, pivot, sum, affine, eps);
        }
    }
}

fn run_layer_norm(
    isa: Isa,
    source: Source<'_>,
    out: &mut [f32],
    dim: usize,
    affine: Option<(&[f32], &[f32])>,
    eps: f32,
) {
    if dim == 0 || out.is_empty() {
        return;
    }
    isa.run(LayerNormBody {
        source,
        out,
        dim,
        affine,
        eps,
    });
}

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

/// [`layer_norm`] with the pulp body instantiated for `isa`.
///
/// # Panics
/// If `x` or `out` does not hold `rows·dim` values, or `gamma`/`beta` not `dim`.
pub fn layer_norm_isa(
    isa: Isa,
    x: &[f32],
    rows: usize,
    dim: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    check_matrix("layer_norm", "x", x.len(), rows, dim);
    check_matrix("layer_norm", "out", out.len(), rows, dim);
    check_affine("layer_norm", gamma, beta, dim);
    run_layer_norm(isa, Source::Copy(x), out, dim, Some((gamma, beta)), eps);
}

/// Layer norm of each row of `x` (`[rows, dim]`) into `out`:
/// `(x − μ)/sqrt(σ² + eps)·γ + β`, biased variance (PyTorch `nn.LayerNorm`).
///
/// # Panics
/// If `x` or `out` does not hold `rows·dim` values, or `gamma`/`beta` not `dim`.
#[inline]
pub fn layer_norm(
    x: &[f32],
    rows: usize,
    dim: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    layer_norm_isa(Isa::detect(), x, rows, dim, gamma, beta, eps, out);
}

/// [`layer_norm_inplace`] with the pulp body instantiated for `isa`.
///
/// # Panics
/// If `x` does not hold `rows·dim` values, or `gamma`/`beta` not `dim`.
pub fn layer_norm_inplace_isa(
    isa: Isa,
    x: &mut [f32],
    rows: usize,
    dim: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    check_matrix("layer_norm_inplace", "x", x.len(), rows, dim);
    check_affine("layer_norm_inplace", gamma, beta, dim);
    run_layer_norm(isa, Source::InPlace, x, dim, Some((gamma, beta)), eps);
}

/// [`layer_norm`] in place.
///
/// # Panics
/// If `x` does not hold `rows·dim` values, or `gamma`/`beta` not `dim`.
#[inline]
pub fn layer_norm_inplace(
    x: &mut [f32],
    rows: usize,
    dim: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    layer_norm_inplace_isa(Isa::detect(), x, rows, dim, gamma, beta, eps);
}

/// [`add_layer_norm`] with the pulp body instantiated for `isa`.
///
/// # Panics
/// If `x`, `residual` or `out` does not hold `rows·dim` values, or `gamma`/`beta` not `dim`.
pub fn add_layer_norm_isa(
    isa: Isa,
    x: &[f32],
    residual: &[f32],
    rows: usize,
    dim: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    check_matrix("add_layer_norm", "x", x.len(), rows, dim);
    check_matrix("add_layer_norm", "residual", residual.len(), rows, dim);
    check_matrix("add_layer_norm", "out", out.len(), rows, dim);
    check_affine("add_layer_norm", gamma, beta, dim);
    run_layer_norm(
        isa,
        Source::Add(x, residual),
        out,
        dim,
        Some((gamma, beta)),
        eps,
    );
}

/// Fused post-LN residual: `out = LayerNorm(x + residual)` row by row, the sum rounded to f32
/// (bit-for-bit the input PyTorch's unfused pair normalises).
///
/// # Panics
/// If `x`, `residual` or `out` does not hold `rows·dim` values, or `gamma`/`beta` not `dim`.
#[inline]
pub fn add_layer_norm(
    x: &[f32],
    residual: &[f32],
    rows: usize,
    dim: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    add_layer_norm_isa(Isa::detect(), x, residual, rows, dim, gamma, beta, eps, out);
}

/// [`layer_norm_no_affine`] with the pulp body instantiated for `isa`.
///
/// # Panics
/// If `x` or `out` does not hold `rows·dim` values.
pub fn layer_norm_no_affine_isa(
    isa: Isa,
    x: &[f32],
    rows: usize,
    dim: usize,
    eps: f32,
    out: &mut [f32],
) {
    check_matrix("layer_norm_no_affine", "x", x.len(), rows, dim);
    check_matrix("layer_norm_no_affine", "out", out.len(), rows, dim);
    run_layer_norm(isa, Source::Copy(x), out, dim, None, eps);
}

/// Layer norm without the affine part (`elementwise_affine=False`, as in DiT):
/// `(x − μ)/sqrt(σ² + eps)`.
///
/// # Panics
/// If `x` or `out` does not hold `rows·dim` values.
#[inline]
pub fn layer_norm_no_affine(x: &[f32], rows: usize, dim: usize, eps: f32, out: &mut [f32]) {
    layer_norm_no_affine_isa(Isa::detect(), x, rows, dim, eps, out);
}

struct ModulateBody<'a> {
    x: &'a mut [f32],
    dim: usize,
    shift: &'a [f32],
    scale: &'a [f32],
}

impl WithSimd for ModulateBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self {
            x,
            dim,
            shift,
            scale,
        } = self;
        let one = s.splat_f32s(1.0);
        let (sh_head, sh_tail) = S::as_simd_f32s(shift);
        let (sc_head, sc_tail) = S::as_simd_f32s(scale);
        for row in x.chunks_exact_mut(dim) {
            let (head, tail) = S::as_mut_simd_f32s(row);
            for ((v, &sh), &sc) in head.iter_mut().zip(sh_head).zip(sc_head) {
                *v = s.mul_add_f32s(*v, s.add_f32s(one, sc), sh);
            }
            if !tail.is_empty() {
                let v = s.partial_load_f32s(tail);
                let sc = s.add_f32s(one, s.partial_load_f32s(sc_tail));
                let y = s.mul_add_f32s(v, sc, s.partial_load_f32s(sh_tail));
                s.partial_store_f32s(tail, y);
            }
        }
    }
}

/// [`modulate`] with the pulp body instantiated for `isa`.
///
/// # Panics
/// If `x` does not hold `rows·dim` values, or `shift`/`scale` not `dim`.
pub fn modulate_isa(
    isa: Isa,
    x: &mut [f32],
    rows: usize,
    dim: usize,
    shift: &[f32],
    scale: &[f32],
) {
    check_matrix("modulate", "x", x.len(), rows, dim);
    check_vector("modulate", "shift", shift.len(), dim);
    check_vector("modulate", "scale", scale.len(), dim);
    if dim == 0 || rows == 0 {
        return;
    }
    isa.run(ModulateBody {
        x,
        dim,
        shift,
        scale,
    });
}

/// adaLN modulation in place: `x ← x·(1 + scale) + shift`, `shift` and `scale` (length `dim`)
/// broadcast over the `rows` rows of `x`.
///
/// # Panics
/// If `x` does not hold `rows·dim` values, or `shift`/`scale` not `dim`.
#[inline]
pub fn modulate(x: &mut [f32], rows: usize, dim: usize, shift: &[f32], scale: &[f32]) {
    modulate_isa(Isa::detect(), x, rows, dim, shift, scale);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{AWKWARD_SIZES, Rng};
    use alloc::format;
    use alloc::vec::Vec;

    /// The eps values of the models we serve: SASRec 1e-12, NextItNet 1e-8, PyTorch's default
    /// 1e-5, DiT 1e-6.
    const EPS: [f32; 4] = [1e-12, 1e-8, 1e-5, 1e-6];

    fn dims() -> Vec<usize> {
        let mut d = AWKWARD_SIZES.to_vec();
        d.push(384);
        d
    }

    /// Rows of several kinds, cycling with the row index: standard normal, a large common
    /// offset (1000 ± 1, where one-pass `E[x²] − E[x]²` fails), tiny spread (std 1e-3, where eps
    /// matters), constant, and a shifted/scaled normal.
    fn make_rows(rng: &mut Rng, rows: usize, dim: usize) -> Vec<f32> {
        let mut x = Vec::with_capacity(rows * dim);
        for r in 0..rows {
            let c = rng.uniform(-3.0, 3.0);
            for _ in 0..dim {
                x.push(match r % 5 {
                    0 => rng.normal(),
                    1 => 1000.0 + rng.uniform(-1.0, 1.0),
                    2 => 0.5 + 1e-3 * rng.normal(),
                    3 => c,
                    _ => 5.0 + 3.0 * rng.normal(),
                });
            }
        }
        x
    }

    fn affine(rng: &mut Rng, dim: usize) -> (Vec<f32>, Vec<f32>) {
        let gamma = (0..dim).map(|_| 1.0 + 0.3 * rng.normal()).collect();
        let beta = rng.normal_vec(dim, 0.3);
        (gamma, beta)
    }

    /// Per element: |got − want| ≤ 1e-6·(1 + |x̂·γ| + |β|), x̂·γ recovered as want − β. A few
    /// f32 roundings of a value of that size; a wrong eps placement, an unbiased variance or a
    /// mean off by one element fails it.
    #[track_caller]
    fn assert_ln_close(ctx: &str, got: &[f32], want: &[f32], beta: Option<&[f32]>, dim: usize) {
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let b = beta.map_or(0.0, |b| b[i % dim]);
            let tol = 1e-6 * (1.0 + (w - b).abs() + b.abs());
            assert!(
                (g - w).abs() <= tol,
                "{ctx}: index {i} (row {}, col {}): got {g}, want {w}, tol {tol:e}",
                i / dim,
                i % dim
            );
        }
    }

    fn check_layer_norm(isa: Isa) {
        let mut rng = Rng::new(21);
        for dim in dims() {
            for rows in [0, 1, 5, 7] {
                for eps in EPS {
                    let x = make_rows(&mut rng, rows, dim);
                    let (gamma, beta) = affine(&mut rng, dim);
                    let mut want = vec![0.0; rows * dim];
                    layer_norm_ref(&x, rows, dim, &gamma, &beta, eps, &mut want);
                    let mut got = vec![f32::NAN; rows * dim];
                    layer_norm_isa(isa, &x, rows, dim, &gamma, &beta, eps, &mut got);
                    let ctx = format!("layer_norm {isa} {rows}x{dim} eps={eps:e}");
                    assert_ln_close(&ctx, &got, &want, Some(&beta), dim);
                }
            }
        }
    }
    crate::isa_tests!(layer_norm, check_layer_norm);

    fn check_layer_norm_inplace(isa: Isa) {
        let mut rng = Rng::new(22);
        for dim in dims() {
            for eps in EPS {
                let rows = 6;
                let x = make_rows(&mut rng, rows, dim);
                let (gamma, beta) = affine(&mut rng, dim);
                let mut want = x.clone();
                layer_norm_inplace_ref(&mut want, rows, dim, &gamma, &beta, eps);
                let mut got = x.clone();
                layer_norm_inplace_isa(isa, &mut got, rows, dim, &gamma, &beta, eps);
                let ctx = format!("layer_norm_inplace {isa} {rows}x{dim} eps={eps:e}");
                assert_ln_close(&ctx, &got, &want, Some(&beta), dim);
            }
        }
    }
    crate::isa_tests!(layer_norm_inplace, check_layer_norm_inplace);

    fn check_add_layer_norm(isa: Isa) {
        let mut rng = Rng::new(23);
        for dim in dims() {
            for eps in EPS {
                let rows = 5;
                let x = make_rows(&mut rng, rows, dim);
                // A residual of the same size as x (and, on the offset rows, one that cancels
                // most of the offset: the normalised input is the f32 sum).
                let residual: Vec<f32> = x
                    .iter()
                    .map(|&v| if v > 900.0 { -999.0 } else { rng.normal() })
                    .collect();
                let (gamma, beta) = affine(&mut rng, dim);
                let mut want = vec![0.0; rows * dim];
                add_layer_norm_ref(&x, &residual, rows, dim, &gamma, &beta, eps, &mut want);
                let mut got = vec![f32::NAN; rows * dim];
                add_layer_norm_isa(isa, &x, &residual, rows, dim, &gamma, &beta, eps, &mut got);
                let ctx = format!("add_layer_norm {isa} {rows}x{dim} eps={eps:e}");
                assert_ln_close(&ctx, &got, &want, Some(&beta), dim);
            }
        }
    }
    crate::isa_tests!(add_layer_norm, check_add_layer_norm);

    fn check_layer_norm_no_affine(isa: Isa) {
        let mut rng = Rng::new(24);
        for dim in dims() {
            for eps in EPS {
                let rows = 5;
                let x = make_rows(&mut rng, rows, dim);
                let mut want = vec![0.0; rows * dim];
                layer_norm_no_affine_ref(&x, rows, dim, eps, &mut want);
                let mut got = vec![f32::NAN; rows * dim];
                layer_norm_no_affine_isa(isa, &x, rows, dim, eps, &mut got);
                let ctx = format!("layer_norm_no_affine {isa} {rows}x{dim} eps={eps:e}");
                assert_ln_close(&ctx, &got, &want, None, dim);
            }
        }
    }
    crate::isa_tests!(layer_norm_no_affine, check_layer_norm_no_affine);

    fn check_modulate(isa: Isa) {
        let mut rng = Rng::new(25);
        for dim in dims() {
            for rows in [0, 1, 4] {
                let x = rng.normal_vec(rows * dim, 2.0);
                let shift = rng.normal_vec(dim, 1.0);
                let scale = rng.normal_vec(dim, 0.5);
                let mut want = x.clone();
                modulate_ref(&mut want, rows, dim, &shift, &scale);
                let mut got = x.clone();
                modulate_isa(isa, &mut got, rows, dim, &shift, &scale);
                for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    let j = i % dim;
                    // 1e-6·(|x·(1 + scale)| + |shift|): two f32 roundings (1 + scale, the fma).
                    let tol = 1e-6 * ((x[i] * (1.0 + scale[j])).abs() + shift[j].abs());
                    assert!(
                        (g - w).abs() <= tol,
                        "modulate {isa} {rows}x{dim}: index {i}: got {g}, want {w}"
                    );
                }
            }
        }
    }
    crate::isa_tests!(modulate, check_modulate);

    #[test]
    fn fast_paths_match_reference() {
        let mut rng = Rng::new(26);
        let (rows, dim, eps) = (50, 64, 1e-12);
        let x = make_rows(&mut rng, rows, dim);
        let res = rng.normal_vec(rows * dim, 1.0);
        let (gamma, beta) = affine(&mut rng, dim);
        let mut want = vec![0.0; rows * dim];
        let mut got = vec![f32::NAN; rows * dim];

        layer_norm_ref(&x, rows, dim, &gamma, &beta, eps, &mut want);
        layer_norm(&x, rows, dim, &gamma, &beta, eps, &mut got);
        assert_ln_close("layer_norm", &got, &want, Some(&beta), dim);

        let mut inplace = x.clone();
        layer_norm_inplace(&mut inplace, rows, dim, &gamma, &beta, eps);
        assert_eq!(inplace, got, "in-place and out-of-place layer_norm differ");

        add_layer_norm_ref(&x, &res, rows, dim, &gamma, &beta, eps, &mut want);
        add_layer_norm(&x, &res, rows, dim, &gamma, &beta, eps, &mut got);
        assert_ln_close("add_layer_norm", &got, &want, Some(&beta), dim);

        layer_norm_no_affine_ref(&x, rows, dim, eps, &mut want);
        layer_norm_no_affine(&x, rows, dim, eps, &mut got);
        assert_ln_close("layer_norm_no_affine", &got, &want, None, dim);

        let (shift, scale) = (rng.normal_vec(dim, 1.0), rng.normal_vec(dim, 0.5));
        let mut want = x.clone();
        modulate_ref(&mut want, rows, dim, &shift, &scale);
        let mut got = x.clone();
        modulate(&mut got, rows, dim, &shift, &scale);
        // The 1000 ± 1 rows reach |x·(1 + scale)| ≈ 3000: relative 1e-6.
        crate::testing::assert_close("modulate", &got, &want, 1e-5, 1e-6);
    }

    #[test]
    fn matches_pytorch_closed_form() {
        // torch.nn.functional.layer_norm([1, 2, 3, 4], (4,), eps=1e-5): μ = 2.5, biased σ² = 1.25.
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let mut out = [0.0f32; 4];
        layer_norm_no_affine(&x, 1, 4, 1e-5, &mut out);
        for (&o, &v) in out.iter().zip(&x) {
            let want = (v as f64 - 2.5) / libm::sqrt(1.25 + 1e-5);
            assert!((o as f64 - want).abs() < 1e-6, "got {o}, want {want}");
        }
        // eps sits inside the square root: a row ±1e-3 has σ² = 1e-6, so with eps = 1e-5 the
        // output is 1e-3/sqrt(1.1e-5) = 0.3015, not ±1.
        let x = [-1e-3f32, 1e-3];
        layer_norm_no_affine(&x, 1, 2, 1e-5, &mut out[..2]);
        let want = 1e-3 / libm::sqrt(1e-6 + 1e-5);
        assert!((out[1] as f64 - want).abs() < 1e-6, "got {}", out[1]);
        assert!((out[0] as f64 + want).abs() < 1e-6, "got {}", out[0]);
    }

    #[test]
    fn large_offset_rows_defeat_one_pass_but_not_layer_norm() {
        let mut rng = Rng::new(27);
        let dim = 64;
        let x: Vec<f32> = (0..dim).map(|_| 1000.0 + rng.uniform(-1.0, 1.0)).collect();
        let mut want = vec![0.0; dim];
        layer_norm_no_affine_ref(&x, 1, dim, 1e-12, &mut want);
        // The one-pass formula in f32 is useless here (this is what the tolerance guards).
        let (s1, s2) = x
            .iter()
            .fold((0.0f32, 0.0f32), |(a, b), &v| (a + v, b + v * v));
        let n = dim as f32;
        let one_pass_var = s2 / n - (s1 / n) * (s1 / n);
        let true_var: f64 = {
            let m = x.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
            x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / dim as f64
        };
        assert!(
            (one_pass_var as f64 - true_var).abs() > 0.1 * true_var,
            "one-pass variance {one_pass_var} unexpectedly close to {true_var}"
        );
        for isa in Isa::available() {
            let mut got = vec![0.0; dim];
            layer_norm_no_affine_isa(isa, &x, 1, dim, 1e-12, &mut got);
            assert_ln_close(&format!("offset row {isa}"), &got, &want, None, dim);
        }
    }

    #[test]
    fn constant_rows_give_exactly_beta() {
        let mut rng = Rng::new(28);
        for isa in Isa::available() {
            for dim in dims() {
                for c in [0.0f32, 0.1, -3.7, 1000.3, 1e-20] {
                    let x = vec![c; 3 * dim];
                    let (gamma, beta) = affine(&mut rng, dim);
                    let mut got = vec![f32::NAN; 3 * dim];
                    layer_norm_isa(isa, &x, 3, dim, &gamma, &beta, 1e-12, &mut got);
                    for (i, &g) in got.iter().enumerate() {
                        assert_eq!(g, beta[i % dim], "{isa} dim={dim} c={c} index {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn empty_shapes_are_no_ops() {
        for isa in Isa::available() {
            let mut out: [f32; 0] = [];
            layer_norm_isa(isa, &[], 0, 8, &[1.0; 8], &[0.0; 8], 1e-5, &mut out);
            layer_norm_isa(isa, &[], 3, 0, &[], &[], 1e-5, &mut out);
            modulate_isa(isa, &mut out, 3, 0, &[], &[]);
        }
    }

    #[test]
    #[should_panic(expected = "layer_norm: gamma has 3 values, expected dim = 4")]
    fn wrong_gamma_length_panics() {
        let mut out = [0.0; 8];
        layer_norm(&[0.0; 8], 2, 4, &[1.0; 3], &[0.0; 4], 1e-5, &mut out);
    }

    #[test]
    #[should_panic(expected = "add_layer_norm: residual has 7 values, expected rows·dim = 2·4")]
    fn wrong_residual_length_panics() {
        let mut out = [0.0; 8];
        add_layer_norm(
            &[0.0; 8], &[0.0; 7], 2, 4, &[1.0; 4], &[0.0; 4], 1e-5, &mut out,
        );
    }
}
