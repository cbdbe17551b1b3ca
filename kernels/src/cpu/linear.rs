//! Linear layers and matrix products.
//!
//! Layout: row-major. `linear` follows PyTorch's `nn.Linear`: `y[m, n] = x[m, k] · w[n, k]ᵀ + b[n]`
//! (weights stored `[out, in]`). `matmul` is the plain product `c[m, n] = a[m, k] · b[k, n]`.
//! `linear_f16` is `linear` with f16 weights (a text encoder's layers in half the bytes),
//! `linear_i16` with i16 weights and one f32 scale per row (the same bytes, less rounding;
//! [`quantize_rows_i16`] builds them). `gemv_f16` / `gemv_bf16` compute
//! `y[j] = Σ_p w[j·k + p]·x[p]` for a half-precision `[n, k]` table (scoring a query against an
//! f16 / bf16 item table), widening the weights in registers. Strided products (`MatRef`,
//! `MatMut`, `gemm`) live in [`super::matrix`] and are re-exported here.
//!
//! Paths: `*_ref` plain loops (f64 accumulation); `*_isa` pulp kernels for `isa` that allocate
//! nothing; the fast paths without a suffix run the `*_isa` kernels on the detected instruction
//! set (f32 products: [`Isa::f32_level`], which is v3 where AVX-512 runs at half width), or
//! `gemm`. Which kernel a product takes depends on its shape, its row count first:
//!
//! - **Few rows** (the `few` submodule): a kernel that streams the weights from memory once,
//!   with prefetching, for the products that run at memory speed (one request, one short
//!   text): `linear` with 2 to 8 rows, `linear_f16` / `linear_i16` with up to
//!   `FEW_MAX_ROWS` (32) rows, where reading half the bytes and widening them in registers
//!   pays for more rows (`f32_takes_few_rows`, `w16_takes_few_rows`).
//! - **Small matrices** (the `small` submodule): register-blocked broadcast tiles of 6 rows × 2
//!   vectors over panels of the right-hand side (`linear` transposing `w` panel by panel into a
//!   16 KiB stack buffer, widening 16-bit weights on the way), or, for f32 weights, dot tiles
//!   of 3 rows of `x` × 4 rows of `w` when `x` has at most `k/2` rows. `matmul_isa` always runs
//!   the broadcast tiles.
//! - **gemm**: `linear` and `matmul` (f32 only) go through the `gemm` crate under `std` for
//!   large batches against a catalog-sized right-hand side only ([`prefers_gemm`]: more than
//!   [`SMALL_MAX_ROWS`] rows and more than [`GEMM_MIN_RHS`] weights), where its cache blocking
//!   wins; everywhere else our kernels are about as fast or faster (much faster for a few rows:
//!   `gemm`'s packing costs the same whatever the rows) and allocate nothing (`gemm` allocates
//!   a packing buffer on every call). Note that `gemm` computes
//!   `dst := alpha·dst + beta·lhs·rhs` (alpha/beta swapped relative to BLAS);
//!   `matrix::gemm_raw` is the only place that calls it.
//!
//! The measurements behind these choices are in PERFORMANCE.md ("Linear kernels: which path
//! runs when").
//!
//! Modules, each depending only on those after it: this file (entry points, shape checks,
//! references, the choice of path) and `gemv`; the regimes `few` and `small`, written once over
//! the weight storage trait; `weights` (that trait, prefetching) and its storage modules (f32,
//! f16, i16: how each storage is widened to f32, and `quantize_rows_i16`), which `gemv` also
//! uses for its f16 decode.
//!
//! Tolerance of every fast path against the reference: `1e-5·(1 + Σ|x_i·w_i|)` per output
//! (f32 accumulation in a different order; 16-bit weights are widened exactly, and for i16 the
//! reference's `w` is `s[j]·q[j, p]`).

use super::isa::Isa;
#[cfg(feature = "std")]
use super::matrix::gemm_raw;
use half::f16;
use weights::{F16Weights, F32Weights, I16Weights, Weights};

#[cfg(feature = "std")]
pub use super::matrix::set_gemm_threads;
pub use super::matrix::{MatMut, MatRef, gemm};

mod few;
mod gemv;
mod small;
#[cfg(test)]
mod tests;
mod weights;

pub use gemv::{gemv_bf16, gemv_bf16_isa, gemv_bf16_ref, gemv_f16, gemv_f16_isa, gemv_f16_ref};
pub use weights::quantize_rows_i16;

/// Shape check of the `linear` family (`op` names the function in the messages; `w` holds the
/// weights in whatever storage).
#[track_caller]
fn check_linear_dims<T>(
    op: &str,
    x: &[f32],
    w: &[T],
    bias: Option<&[f32]>,
    y: &[f32],
    m: usize,
    k: usize,
    n: usize,
) {
    let (x, w, y) = (x.len(), w.len(), y.len());
    assert_eq!(x, m * k, "{op}: x has {x} values, expected m·k = {m}·{k}");
    assert_eq!(w, n * k, "{op}: w has {w} values, expected n·k = {n}·{k}");
    assert_eq!(y, m * n, "{op}: y has {y} values, expected m·n = {m}·{n}");
    if let Some(b) = bias.map(<[f32]>::len) {
        assert_eq!(b, n, "{op}: bias has {b} values, expected {n}");
    }
}

#[track_caller]
fn check_linear(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &[f32],
    m: usize,
    k: usize,
    n: usize,
) {
    check_linear_dims("linear", x, w, bias, y, m, k, n);
}

/// Reference `y = x·wᵀ + b` with f64 accumulation.
pub fn linear_ref(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    check_linear(x, w, bias, y, m, k, n);
    linear_ref_widened(x, w, |v| v as f64, bias, y, (m, k, n));
}

/// The loops of the references of `linear` and `linear_f16`, shapes checked: `y = x·wᵀ + b`
/// with f64 accumulation of the weights widened by `wide`.
fn linear_ref_widened<T: Copy>(
    x: &[f32],
    w: &[T],
    wide: impl Fn(T) -> f64,
    bias: Option<&[f32]>,
    y: &mut [f32],
    (m, k, n): (usize, usize, usize),
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = bias.map_or(0.0, |b| b[j] as f64);
            for p in 0..k {
                acc += x[i * k + p] as f64 * wide(w[j * k + p]);
            }
            y[i * n + j] = acc as f32;
        }
    }
}

/// `y = x·wᵀ + b` with the register-blocked pulp kernels for `isa`; allocates nothing.
///
/// # Panics
/// If `x.len() != m·k`, `w.len() != n·k`, `y.len() != m·n`, or a bias is given whose length is
/// not `n`.
pub fn linear_isa(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    check_linear(x, w, bias, y, m, k, n);
    let few_rows = f32_takes_few_rows(m);
    linear_weights_isa(isa, x, F32Weights(w), bias, y, (m, k, n), few_rows);
}

/// The body of the `linear*_isa` functions for any weight storage, shapes checked: completes
/// the products with nothing to sum (`m` or `n` zero: nothing to write; `k` zero: every row is
/// the bias, or zeros), then runs the few-row kernel when `few_rows`, else the tiles of
/// `small`.
#[inline]
fn linear_weights_isa<W: Weights>(
    isa: Isa,
    x: &[f32],
    w: W,
    bias: Option<&[f32]>,
    y: &mut [f32],
    (m, k, n): (usize, usize, usize),
    few_rows: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in y.chunks_exact_mut(n) {
            match bias {
                Some(b) => row.copy_from_slice(b),
                None => row.fill(0.0),
            }
        }
        return;
    }
    if few_rows {
        isa.run(few::FewRows {
            x,
            w,
            bias,
            y,
            m,
            k,
            n,
        });
        return;
    }
    isa.run(small::LinearSmall {
        x,
        w,
        bias,
        y,
        m,
        k,
        n,
        broadcast: false,
    });
}

/// Checks the operands of a bias-free `y = x·wᵀ` and completes the products with nothing to
/// sum (`m`, `n` or `k` zero): true when nothing is left to compute.
fn empty_product(x: &[f32], w: &[f32], y: &mut [f32], m: usize, k: usize, n: usize) -> bool {
    check_linear(x, w, None, y, m, k, n);
    if k == 0 {
        y.fill(0.0);
    }
    m == 0 || n == 0 || k == 0
}

/// `y = x·wᵀ` (no bias) with the broadcast tiles for `isa` whatever the shape (`w` packed
/// transposed panel by panel; no horizontal sums): the batched catalog scan, where `x` holds
/// the users of a batch and `w` a block of item rows; allocates nothing.
///
/// # Panics
/// If `x.len() != m·k`, `w.len() != n·k` or `y.len() != m·n`.
pub(crate) fn broadcast_tiles_isa(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    if empty_product(x, w, y, m, k, n) {
        return;
    }
    isa.run(small::LinearSmall {
        x,
        w: F32Weights(w),
        bias: None,
        y,
        m,
        k,
        n,
        broadcast: true,
    });
}

/// `y = x·wᵀ` (no bias) with the dot tiles for `isa` whatever the shape: every output is the
/// lane-wise fused multiply-add sum over the vectors of its row pair followed by the
/// instruction set's horizontal sum, in an order that depends on neither `m` nor `n` (see
/// [`super::score`]); allocates nothing. `stream`: prefetch `w` ahead, for a table read from
/// memory (same results).
///
/// # Panics
/// If `x.len() != m·k`, `w.len() != n·k` or `y.len() != m·n`.
pub(crate) fn dot_tiles_isa(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    stream: bool,
) {
    if empty_product(x, w, y, m, k, n) {
        return;
    }
    isa.run(small::LinearDot {
        x,
        w,
        y,
        m,
        k,
        n,
        stream,
    });
}

/// Whether `linear` (f32 weights) takes the few-row kernel: from 2 to 8 rows, where streaming
/// the weights from memory beats the tiles of `small`; a single row streams faster through the
/// `small` dot tiles of 8 weight rows, and with more rows the register tiles of `small` catch
/// up (measurements in PERFORMANCE.md).
#[inline]
fn f32_takes_few_rows(m: usize) -> bool {
    (2..=8).contains(&m)
}

/// Whether `linear_f16` and `linear_i16` (16-bit weights) take the few-row kernel: up to
/// `FEW_MAX_ROWS` rows. Reading half the bytes and widening them in registers keeps it ahead
/// of the widening broadcast tiles for more rows than with f32 weights (measurements in
/// PERFORMANCE.md).
#[inline]
fn w16_takes_few_rows(m: usize) -> bool {
    m <= few::FEW_MAX_ROWS
}

/// Products with at most this many rows always run on our allocation-free kernels (every
/// per-request product of the sequence encoders at the usual sequence lengths).
pub const SMALL_MAX_ROWS: usize = 64;

/// Right-hand sides (`w` of `linear`, `b` of `matmul`) with more values than this are
/// catalog-sized (4 MiB, beyond the L2 cache): with more than [`SMALL_MAX_ROWS`] rows, such
/// products go through `gemm` (under `std`), whose cache blocking is faster there.
pub const GEMM_MIN_RHS: usize = 1 << 20;

/// Whether a product of this shape goes through the `gemm` crate rather than our kernels:
/// only batches of more than [`SMALL_MAX_ROWS`] rows against a catalog-sized right-hand side
/// (more than [`GEMM_MIN_RHS`] values). Everywhere else our kernels are about as fast as
/// `gemm` or faster (much faster for a few rows) and allocate nothing (figures in
/// PERFORMANCE.md).
#[inline]
pub fn prefers_gemm(m: usize, k: usize, n: usize) -> bool {
    cfg!(feature = "std") && m > SMALL_MAX_ROWS && k.saturating_mul(n) > GEMM_MIN_RHS
}

/// `y = x·wᵀ + b` through the `gemm` crate whatever the shape ([`linear`] takes it for the
/// shapes of [`prefers_gemm`]; a trainer takes it for its large batches, whose products may
/// also spread over threads: [`set_gemm_threads`]).
///
/// # Panics
/// As [`linear_isa`].
#[cfg(feature = "std")]
pub fn linear_gemm(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    check_linear(x, w, bias, y, m, k, n);
    if m == 0 || k == 0 || n == 0 {
        linear_isa(Isa::f32_level(), x, w, bias, y, m, k, n);
        return;
    }
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(n) {
            row.copy_from_slice(b);
        }
    }
    // SAFETY: x is m×k row-major (row stride k, col stride 1); wᵀ is read from w ([n,k]
    // row-major) as a k×n matrix with row stride 1 and column stride k; y is m×n row-major.
    // The lengths were checked above, so every index touched is in bounds, and y does not
    // alias x or w (it is a distinct &mut).
    unsafe {
        gemm_raw(
            y.as_mut_ptr(),
            n as isize,
            1,
            x.as_ptr(),
            k as isize,
            1,
            w.as_ptr(),
            1,
            k as isize,
            m,
            k,
            n,
            bias.is_some(),
        )
    };
}

/// `y = x·wᵀ + b`, fast path: the register-blocked pulp kernels ([`linear_isa`], no
/// allocation) unless [`prefers_gemm`] (large batches against catalog-sized weights, under
/// `std`), then the `gemm` crate.
///
/// # Panics
/// As [`linear_isa`].
pub fn linear(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    check_linear(x, w, bias, y, m, k, n);
    #[cfg(feature = "std")]
    if prefers_gemm(m, k, n) {
        linear_gemm(x, w, bias, y, m, k, n);
        return;
    }
    linear_isa(Isa::f32_level(), x, w, bias, y, m, k, n);
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
    let few_rows = w16_takes_few_rows(m);
    linear_weights_isa(isa, x, F16Weights::new(w), bias, y, (m, k, n), few_rows);
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
/// `isa`: the few-row kernel for at most `FEW_MAX_ROWS` rows (each sum times its row's scale),
/// the broadcast tiles (widening and scaling while packing) above; allocates nothing.
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
    let few_rows = w16_takes_few_rows(m);
    linear_weights_isa(
        isa,
        x,
        I16Weights::new(q, scales),
        bias,
        y,
        (m, k, n),
        few_rows,
    );
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

/// Reference `c = a·b (+ c if accumulate)` with f64 accumulation.
pub fn matmul_ref(
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    check_matmul(a, b, c, m, k, n);
    for i in 0..m {
        for j in 0..n {
            let mut acc = if accumulate { c[i * n + j] as f64 } else { 0.0 };
            for p in 0..k {
                acc += a[i * k + p] as f64 * b[p * n + j] as f64;
            }
            c[i * n + j] = acc as f32;
        }
    }
}

#[track_caller]
fn check_matmul(a: &[f32], b: &[f32], c: &[f32], m: usize, k: usize, n: usize) {
    assert_eq!(
        a.len(),
        m * k,
        "matmul: a has {} values, expected {m}·{k}",
        a.len()
    );
    assert_eq!(
        b.len(),
        k * n,
        "matmul: b has {} values, expected {k}·{n}",
        b.len()
    );
    assert_eq!(
        c.len(),
        m * n,
        "matmul: c has {} values, expected {m}·{n}",
        c.len()
    );
}

/// `c = a·b (+ c if accumulate)`, row-major, with the register-blocked pulp kernel for `isa`;
/// allocates nothing.
///
/// # Panics
/// If `a.len() != m·k`, `b.len() != k·n` or `c.len() != m·n`.
pub fn matmul_isa(
    isa: Isa,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    check_matmul(a, b, c, m, k, n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.fill(0.0);
        }
        return;
    }
    isa.run(small::MatmulSmall {
        a,
        b,
        c,
        m,
        k,
        n,
        accumulate,
    });
}

/// `c = a·b (+ c if accumulate)`, row-major, fast path: [`matmul_isa`] (no allocation) unless
/// [`prefers_gemm`] (large batches against a catalog-sized `b`, under `std`), then the `gemm`
/// crate.
///
/// # Panics
/// As [`matmul_isa`].
pub fn matmul(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize, accumulate: bool) {
    check_matmul(a, b, c, m, k, n);
    #[cfg(feature = "std")]
    if prefers_gemm(m, k, n) {
        matmul_gemm(a, b, c, m, k, n, accumulate);
        return;
    }
    matmul_isa(Isa::f32_level(), a, b, c, m, k, n, accumulate);
}

/// `c = a·b (+ c if accumulate)`, row-major, through the `gemm` crate whatever the shape
/// ([`matmul`] takes it for the shapes of [`prefers_gemm`]; a trainer takes it for its large
/// batches, whose products may also spread over threads: [`set_gemm_threads`]).
///
/// # Panics
/// As [`matmul_isa`].
#[cfg(feature = "std")]
pub fn matmul_gemm(
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    check_matmul(a, b, c, m, k, n);
    if k == 0 || n == 0 {
        matmul_isa(Isa::f32_level(), a, b, c, m, k, n, accumulate);
        return;
    }
    if !accumulate {
        c.fill(0.0);
    }
    // SAFETY: all three matrices are row-major with the lengths checked above; c is a
    // distinct &mut and cannot alias a or b.
    unsafe {
        gemm_raw(
            c.as_mut_ptr(),
            n as isize,
            1,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            m,
            k,
            n,
            true,
        )
    };
}
