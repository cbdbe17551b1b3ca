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
    layer_norm_isa(Isa::f32_level(), x, rows, dim, gamma, beta, eps, out);
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
    layer_norm_inplace_isa(Isa::f32_level(), x, rows, dim, gamma, beta, eps);
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
    add_layer_norm_isa(
        Isa::f32_level(),
        x,
        residual,
        rows,
        dim,
        gamma,
        beta,
        eps,
        out,
    );
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
    layer_norm_no_affine_isa(Isa::f32_level(), x, rows, dim, eps, out);
}

/// [`layer_norm_no_affine`] in place, with the pulp body instantiated for `isa`.
///
/// # Panics
/// If `x` does not hold `rows·dim` values.
pub fn layer_norm_no_affine_inplace_isa(
    isa: Isa,
    x: &mut [f32],
    rows: usize,
    dim: usize,
    eps: f32,
) {
    check_matrix("layer_norm_no_affine_inplace", "x", x.len(), rows, dim);
    run_layer_norm(isa, Source::InPlace, x, dim, None, eps);
}

/// [`layer_norm_no_affine`] in place.
///
/// # Panics
/// If `x` does not hold `rows·dim` values.
#[inline]
pub fn layer_norm_no_affine_inplace(x: &mut [f32], rows: usize, dim: usize, eps: f32) {
    layer_norm_no_affine_inplace_isa(Isa::f32_level(), x, rows, dim, eps);
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
    modulate_isa(Isa::f32_level(), x, rows, dim, shift, scale);
}

mod backward;
pub use backward::{layer_norm_backward, layer_norm_backward_isa, layer_norm_backward_ref};

#[cfg(test)]
mod tests;
