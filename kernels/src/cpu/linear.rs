//! Linear layers and matrix products.
//!
//! Layout: row-major. `linear` follows PyTorch's `nn.Linear`: `y[m, n] = x[m, k] · w[n, k]ᵀ + b[n]`
//! (weights stored `[out, in]`). `matmul` is the plain product `c[m, n] = a[m, k] · b[k, n]`.
//! `gemv_f16` / `gemv_bf16` compute `y[j] = Σ_p w[j·k + p]·x[p]` for a half-precision `[n, k]`
//! table (scoring a query against an f16 / bf16 item table), widening the weights in registers.
//! `linear_f16` is `linear` with f16 weights (the `half_weights` submodule: a text encoder's
//! layers in half the bytes), `linear_i16` with i16 weights and one scale per row (the
//! `int16_weights` submodule: the same bytes, less rounding). Strided products (`MatRef`,
//! `MatMut`, `gemm`) live in [`super::matrix`] and are re-exported here.
//!
//! Paths: `*_ref` plain loops (f64 accumulation); `linear_isa` / `matmul_isa` register-blocked
//! pulp kernels that allocate nothing (the `small` submodule: broadcast tiles of 6 rows × 2
//! vectors over panels of the right-hand side, `linear` transposing `w` panel by panel into a
//! 16 KiB stack buffer, or dot tiles of 3 rows of `x` × 4 rows of `w` when `x` has at most
//! `k/2` rows), and for 2 to 8 rows of `linear` the few-row kernel that streams `w` from
//! memory with prefetching (the `few` submodule). The fast paths `linear` / `matmul` run them
//! for every shape except large batches against a catalog-sized right-hand side ([`prefers_gemm`]: more than
//! [`SMALL_MAX_ROWS`] rows and more than [`GEMM_MIN_RHS`] weights), which go through the `gemm`
//! crate under `std` (it allocates a packing buffer on every call): its cache blocking wins
//! there, and everywhere else our kernels are about as fast or faster (much faster for a few
//! rows: `gemm`'s packing costs the same whatever the rows). The measurements behind these
//! choices are in PERFORMANCE.md ("Linear kernels: which path runs when"). Note that `gemm`
//! computes
//! `dst := alpha·dst + beta·lhs·rhs` (alpha/beta swapped relative to BLAS); `matrix::gemm_raw`
//! is the only place that calls it. The f16 gemv widens rows without inf/NaN with a 3-operation
//! decode that is exact for finite values (see `convert::f16_finite_sext_to_f32s`) and the
//! few rows holding an inf or NaN with the exact convert kernel.
//!
//! Tolerance of every fast path against the reference: `1e-5·(1 + Σ|x_i·w_i|)` per output
//! (f32 accumulation in a different order; the half-precision weights are widened exactly).

use super::convert::{
    Format, f16_bits_to_f32s, f16_finite_sext_to_f32s, load_widen_i16, load_widen_u16,
};
use super::isa::Isa;
#[cfg(feature = "std")]
use super::matrix::gemm_raw;
use half::{bf16, f16};
use pulp::{Simd, WithSimd};

pub use super::matrix::{MatMut, MatRef, gemm};

mod few;
mod half_weights;
mod int16_weights;
mod small;

pub use half_weights::{linear_f16, linear_f16_isa, linear_f16_ref};
pub use int16_weights::{linear_i16, linear_i16_isa, linear_i16_ref, quantize_rows_i16};

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
    linear_weights_isa(isa, x, w, bias, y, (m, k, n), few::f32_takes_few_rows(m));
}

/// The body of the `linear*_isa` functions for any weight storage, shapes checked: completes
/// the products with nothing to sum (`m` or `n` zero: nothing to write; `k` zero: every row is
/// the bias, or zeros), then runs the few-row kernel when `few_rows`, else the tiles of
/// `small`.
#[inline]
fn linear_weights_isa<W: few::FewWeights + small::PackWeights>(
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
        w,
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
/// [`super::score`]); allocates nothing.
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
) {
    if empty_product(x, w, y, m, k, n) {
        return;
    }
    isa.run(small::LinearDot { x, w, y, m, k, n });
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
        return;
    }
    linear_isa(Isa::detect(), x, w, bias, y, m, k, n);
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
    if k > 0 && n > 0 && prefers_gemm(m, k, n) {
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
        return;
    }
    matmul_isa(Isa::detect(), a, b, c, m, k, n, accumulate);
}

// ---------------------------------------------------------------------------------------------
// Half-precision matrix-vector products: scoring a query against an f16 / bf16 item table.

#[track_caller]
fn check_gemv(op: &str, w: usize, x: usize, y: usize, n: usize, k: usize) {
    assert_eq!(w, n * k, "{op}: w has {w} values, expected n·k = {n}·{k}");
    assert_eq!(x, k, "{op}: x has {x} values, expected k = {k}");
    assert_eq!(y, n, "{op}: y has {y} values, expected n = {n}");
}

/// How a gemv body turns loaded 16-bit lanes into f32.
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
            Decode::F16Exact => f16_bits_to_f32s(s, load_widen_u16(s, w)),
            Decode::F16Finite => f16_finite_sext_to_f32s(s, load_widen_i16(s, w)),
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

/// Whether a row of f16 bit patterns holds an inf or NaN (exponent bits all ones).
#[inline(always)]
fn f16_row_has_non_finite<S: Simd>(s: S, w: &[u16]) -> bool {
    let (head, tail) = S::as_simd_u16s(w);
    let mut max = s.splat_u16s(0);
    for &v in head {
        max = s.max_u16s(max, s.and_u16s(v, s.splat_u16s(0x7FFF)));
    }
    // Lane values rather than a mask: pulp's scalar 16-bit mask is a `bool` whose
    // `first_true_m16s` does not report lane 0.
    let lanes: &[u16] = bytemuck::cast_slice(core::slice::from_ref(&max));
    lanes.iter().chain(tail).any(|&h| h & 0x7FFF >= 0x7C00)
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
                Format::F16 if f16_row_has_non_finite(s, row) => Decode::F16Exact,
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
    use super::*;
    use crate::testing::{AWKWARD_SIZES, Rng};
    use alloc::vec;
    use alloc::vec::Vec;

    /// Per-output tolerance: 1e-5·(1 + Σ|x_i·w_i|), i.e. f32 rounding of a length-k sum.
    fn assert_linear_close(
        ctx: &str,
        got: &[f32],
        want: &[f32],
        x: &[f32],
        w: &[f32],
        m: usize,
        k: usize,
        n: usize,
    ) {
        for i in 0..m {
            for j in 0..n {
                let mag: f32 = (0..k).map(|p| (x[i * k + p] * w[j * k + p]).abs()).sum();
                let (g, r) = (got[i * n + j], want[i * n + j]);
                assert!(
                    (g - r).abs() <= 1e-5 * (1.0 + mag),
                    "{ctx}: y[{i},{j}] got {g} want {r}"
                );
            }
        }
    }

    fn shapes() -> Vec<(usize, usize, usize)> {
        let mut v = Vec::new();
        for &k in AWKWARD_SIZES {
            v.push((1, k, 3));
            v.push((3, k, 17));
        }
        for &n in AWKWARD_SIZES {
            v.push((2, 64, n));
        }
        v.extend([(0, 4, 4), (4, 0, 4), (65, 33, 63), (1, 64, 1000)]);
        v
    }

    fn check_linear_isa(isa: Isa) {
        let mut rng = Rng::new(3);
        for (m, k, n) in shapes() {
            let x = rng.normal_vec(m * k, 1.0);
            let w = rng.normal_vec(n * k, 0.5);
            let b = rng.normal_vec(n, 0.5);
            for bias in [None, Some(&b[..])] {
                let mut want = vec![0.0; m * n];
                linear_ref(&x, &w, bias, &mut want, m, k, n);
                let mut got = vec![f32::NAN; m * n];
                linear_isa(isa, &x, &w, bias, &mut got, m, k, n);
                assert_linear_close(
                    &alloc::format!("linear {isa} {m}x{k}x{n}"),
                    &got,
                    &want,
                    &x,
                    &w,
                    m,
                    k,
                    n,
                );
            }
        }
    }
    crate::isa_tests!(linear_pulp, check_linear_isa);

    #[test]
    fn linear_fast_path_matches_reference() {
        let mut rng = Rng::new(4);
        for (m, k, n) in shapes() {
            let x = rng.normal_vec(m * k, 1.0);
            let w = rng.normal_vec(n * k, 0.5);
            let b = rng.normal_vec(n, 0.5);
            for bias in [None, Some(&b[..])] {
                let mut want = vec![0.0; m * n];
                linear_ref(&x, &w, bias, &mut want, m, k, n);
                let mut got = vec![f32::NAN; m * n];
                linear(&x, &w, bias, &mut got, m, k, n);
                assert_linear_close(
                    &alloc::format!("linear gemm {m}x{k}x{n}"),
                    &got,
                    &want,
                    &x,
                    &w,
                    m,
                    k,
                    n,
                );
            }
        }
    }

    #[test]
    fn matmul_fast_path_matches_reference() {
        let mut rng = Rng::new(5);
        for (m, k, n) in shapes() {
            let a = rng.normal_vec(m * k, 1.0);
            let b = rng.normal_vec(k * n, 0.5);
            let c0 = rng.normal_vec(m * n, 1.0);
            for accumulate in [false, true] {
                let mut want = c0.clone();
                matmul_ref(&a, &b, &mut want, m, k, n, accumulate);
                let mut got = c0.clone();
                matmul(&a, &b, &mut got, m, k, n, accumulate);
                // 1e-5 absolute + 1e-5 relative, scaled by sqrt(k) for the longer sums.
                let tol = 1e-5 * (1.0 + k as f32).sqrt() * 4.0;
                crate::testing::assert_close(
                    &alloc::format!("matmul {m}x{k}x{n} acc={accumulate}"),
                    &got,
                    &want,
                    tol,
                    1e-5,
                );
            }
        }
    }

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
