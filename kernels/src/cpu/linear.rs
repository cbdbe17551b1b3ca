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
//! is the only place that calls it. The half-precision gemv is in the `gemv` submodule.
//!
//! Tolerance of every fast path against the reference: `1e-5·(1 + Σ|x_i·w_i|)` per output
//! (f32 accumulation in a different order; the half-precision weights are widened exactly).

use super::convert::{f16_bits_to_f32s, f16_finite_sext_to_f32s, load_widen_i16, load_widen_u16};
use super::isa::Isa;
#[cfg(feature = "std")]
use super::matrix::gemm_raw;

pub use super::matrix::{MatMut, MatRef, gemm};

mod few;
mod gemv;
mod half_weights;
mod int16_weights;
mod small;

use gemv::{Decode, f16_row_has_non_finite};
pub use gemv::{gemv_bf16, gemv_bf16_isa, gemv_bf16_ref, gemv_f16, gemv_f16_isa, gemv_f16_ref};
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{AWKWARD_SIZES, Rng};
    use alloc::vec;
    use alloc::vec::Vec;

    /// Per-output tolerance: 1e-5·(1 + Σ|x_i·w_i|), i.e. f32 rounding of a length-k sum.
    pub(super) fn assert_linear_close(
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
}
