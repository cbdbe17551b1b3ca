//! Linear layers and matrix products.
//!
//! Layout: row-major. `linear` follows PyTorch's `nn.Linear`: `y[m, n] = x[m, k] · w[n, k]ᵀ + b[n]`
//! (weights stored `[out, in]`). `matmul` is the plain product `c[m, n] = a[m, k] · b[k, n]`.
//! `gemv_f16` / `gemv_bf16` compute `y[j] = Σ_p w[j·k + p]·x[p]` for a half-precision `[n, k]`
//! table (scoring a query against an f16 / bf16 item table), widening the weights in registers.
//! Strided products (`MatRef`, `MatMut`, `gemm`) live in [`super::matrix`] and are re-exported
//! here.
//!
//! Paths: `*_ref` plain loops (f64 accumulation); `linear_isa` a pulp kernel reading `w` in
//! place, register-tiled over 4 rows × 3 output features (the fast path for a few rows, see
//! `tiled_is_faster`, and the only path without `std`); under `std`, products with more rows
//! go through the `gemm` crate. Note that `gemm` computes `dst := alpha·dst + beta·lhs·rhs` (alpha/beta swapped
//! relative to BLAS); `matrix::gemm_raw` is the only place that calls it. The f16 gemv widens rows without inf/NaN with a 3-operation
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
    assert_eq!(
        x.len(),
        m * k,
        "linear: x has {} values, expected m·k = {m}·{k}",
        x.len()
    );
    assert_eq!(
        w.len(),
        n * k,
        "linear: w has {} values, expected n·k = {n}·{k}",
        w.len()
    );
    assert_eq!(
        y.len(),
        m * n,
        "linear: y has {} values, expected m·n = {m}·{n}",
        y.len()
    );
    if let Some(b) = bias {
        assert_eq!(
            b.len(),
            n,
            "linear: bias has {} values, expected {n}",
            b.len()
        );
    }
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
    for i in 0..m {
        for j in 0..n {
            let mut acc = bias.map_or(0.0, |b| b[j] as f64);
            for p in 0..k {
                acc += x[i * k + p] as f64 * w[j * k + p] as f64;
            }
            y[i * n + j] = acc as f32;
        }
    }
}

struct LinearBody<'a> {
    x: &'a [f32],
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    y: &'a mut [f32],
    m: usize,
    k: usize,
    n: usize,
}

/// One register tile of the pulp linear kernel: `y[i0 + r, j0 + c]` for `r < R`, `c < C`, as
/// `R·C` vector accumulators over `k` (each weight vector loaded once per tile and used by `R`
/// rows, each input vector used by `C` features), reduced horizontally at the end.
#[inline(always)]
fn linear_tile<S: Simd, const R: usize, const C: usize>(
    s: S,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    (k, n): (usize, usize),
    (i0, j0): (usize, usize),
    ahead: &[f32],
) {
    let xr: [&[f32]; R] = core::array::from_fn(|r| &x[(i0 + r) * k..(i0 + r + 1) * k]);
    let wr: [&[f32]; C] = core::array::from_fn(|c| &w[(j0 + c) * k..(j0 + c + 1) * k]);
    let vecs = k / S::F32_LANES;
    // Every head is cut to the same `vecs` length so that the indexing below needs no checks.
    let xh: [&[S::f32s]; R] = core::array::from_fn(|r| &S::as_simd_f32s(xr[r]).0[..vecs]);
    let wh: [&[S::f32s]; C] = core::array::from_fn(|c| &S::as_simd_f32s(wr[c]).0[..vecs]);
    let mut acc = [[s.splat_f32s(0.0); C]; R];
    // `ahead` (weights of a later tile) is prefetched spread evenly over this tile's steps,
    // one 64-byte line (16 values) at a time.
    let lines = ahead.len().div_ceil(16);
    let per_step = lines.div_ceil(vecs.max(1));
    let mut next_line = 0;
    for p in 0..vecs {
        for _ in 0..per_step {
            if next_line < lines {
                prefetch(ahead.as_ptr().wrapping_add(16 * next_line));
                next_line += 1;
            }
        }
        let wv: [S::f32s; C] = core::array::from_fn(|c| wh[c][p]);
        for r in 0..R {
            let xv = xh[r][p];
            for c in 0..C {
                acc[r][c] = s.mul_add_f32s(xv, wv[c], acc[r][c]);
            }
        }
    }
    if k % S::F32_LANES != 0 {
        // Zero-padded partial loads: the missing lanes add 0·0.
        let wv: [S::f32s; C] =
            core::array::from_fn(|c| s.partial_load_f32s(S::as_simd_f32s(wr[c]).1));
        for r in 0..R {
            let xv = s.partial_load_f32s(S::as_simd_f32s(xr[r]).1);
            for c in 0..C {
                acc[r][c] = s.mul_add_f32s(xv, wv[c], acc[r][c]);
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            y[(i0 + r) * n + j0 + c] =
                s.reduce_sum_f32s(acc[r][c]) + bias.map_or(0.0, |b| b[j0 + c]);
        }
    }
}

/// Rows `i0 .. i0 + rows` (`rows` a multiple of `R`) of `y`: output features in tiles of `C`
/// (the weight rows of a tile stay in L1 while every row block uses them), then one feature at
/// a time for the last `n mod C`.
#[inline(always)]
fn linear_rows<S: Simd, const R: usize, const C: usize>(
    s: S,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    (k, n): (usize, usize),
    (i0, rows): (usize, usize),
) {
    let mut j0 = 0;
    while j0 + C <= n {
        // The row blocks share the prefetch of the weights PREFETCH_TILES tiles ahead.
        let a = ((j0 + PREFETCH_TILES * C) * k).min(w.len());
        let ahead = &w[a..(a + C * k).min(w.len())];
        let blocks = rows / R;
        for (b, i) in (i0..i0 + rows).step_by(R).enumerate() {
            let part = &ahead[b * ahead.len() / blocks..(b + 1) * ahead.len() / blocks];
            linear_tile::<S, R, C>(s, x, w, bias, y, (k, n), (i, j0), part);
        }
        j0 += C;
    }
    for j in j0..n {
        for i in (i0..i0 + rows).step_by(R) {
            linear_tile::<S, R, 1>(s, x, w, bias, y, (k, n), (i, j), &[]);
        }
    }
}

/// How many weight tiles ahead of the current one [`linear_rows`] prefetches: with the few
/// rows of a decode-sized product, the kernel reads weights at memory speed, and the hardware
/// prefetchers do not follow its `C` interleaved row streams far enough.
const PREFETCH_TILES: usize = 4;

/// Hints the cache to load the line holding `p`.
#[inline(always)]
fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint without architectural effect: it never faults and reads
    // nothing into the program, whatever the address (`p` comes from `wrapping_add` and may lie
    // past the slice).
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl WithSimd for LinearBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self {
            x,
            w,
            bias,
            y,
            m,
            k,
            n,
        } = self;
        // Blocks of 4 rows × 3 features (12 accumulators, 3 weight vectors: 16 AVX2
        // registers); the last m mod 4 rows get tiles wide enough to keep ≥ 8 accumulators in
        // flight (1 × 8 for a row vector). Rows are sliced by index, so k = 0 needs no special
        // case: every sum is then empty and y is the bias (or 0).
        let main = m / 4 * 4;
        linear_rows::<S, 4, 3>(s, x, w, bias, y, (k, n), (0, main));
        match m - main {
            1 => linear_rows::<S, 1, 8>(s, x, w, bias, y, (k, n), (main, 1)),
            2 => linear_rows::<S, 2, 4>(s, x, w, bias, y, (k, n), (main, 2)),
            3 => linear_rows::<S, 3, 3>(s, x, w, bias, y, (k, n), (main, 3)),
            _ => {}
        }
    }
}

/// `y = x·wᵀ + b` with the register-tiled pulp kernel for `isa` (few-row / no_std path).
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
    if m == 0 || n == 0 {
        return;
    }
    isa.run(LinearBody {
        x,
        w,
        bias,
        y,
        m,
        k,
        n,
    });
}

/// Whether [`linear`] sends an `m`×`k` input to the register-tiled pulp kernel rather than to
/// `gemm` (under `std`). `gemm` packs `w` on every call, which costs more than a product over
/// a few rows; the tiled kernel pays a horizontal reduction per output instead, which short
/// rows (small `k`) do not amortise. Measured crossovers (one core, AVX2): `m ≈ k/4` up to
/// `k = 384` (e.g. 4 × 384 × 1536: 73 GFLOP/s tiled, 23 through `gemm`; 64 × 64 × 23716: 58
/// against 84), and the input rows must stay in L2 (`m·k ≤ 2¹⁶`).
fn tiled_is_faster(m: usize, k: usize) -> bool {
    m <= 8 || (m <= 64 && 4 * m <= k && m * k <= 1 << 16)
}

/// `y = x·wᵀ + b`, fast path: the register-tiled pulp kernel for a few rows, `gemm` for more
/// (under `std`).
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
    if !tiled_is_faster(m, k) && k > 0 && n > 0 {
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

/// `c = a·b (+ c if accumulate)`, row-major, through `gemm` under `std` and a pulp
/// axpy kernel otherwise.
pub fn matmul(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize, accumulate: bool) {
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
    if !accumulate {
        c.fill(0.0);
    }
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    #[cfg(feature = "std")]
    {
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
    #[cfg(not(feature = "std"))]
    super::matrix::gemm_isa(
        Isa::detect(),
        MatMut::row_major(c, m, n),
        MatRef::row_major(a, m, k),
        MatRef::row_major(b, k, n),
        true,
    );
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
mod tests;
