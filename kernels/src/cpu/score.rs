//! Catalog scoring: the scores of user vectors against the rows of an item table, in f32 and
//! against an int8 copy of the table.
//!
//! Layout: row-major. `scores` computes `out[r·n + j] = users[r] · items[j]` for `users`
//! `[m, d]` and `items` `[n, d]` (f32). The int8 table is `q` `[n, d]` (`i8`) with one f32
//! scale per row, built by [`quantize_rows_i8`] (symmetric, round to nearest:
//! `items[j][p] ≈ scales[j]·q[j·d + p]`); a query is quantized the same way by
//! [`quantize_query_i8`] (`x[p] ≈ t·xq[p]`), and `scores_i8` computes
//! `out[j] = (Σ_p q[j·d + p]·xq[p]) · scales[j] · t` with an exact integer sum.
//!
//! Order of summation: [`scores`] sums every score in one fixed order, lane-wise fused
//! multiply-adds over the vectors of `d` (a partial last vector zero-filled) followed by the
//! instruction set's horizontal sum, whatever `m`, `n` and the tile that computes it (dot tiles
//! of up to 3 users × 4 items, see `linear`): any share of a scan, and one item re-scored
//! alone, get the scores a full scan gives them. [`scores_batch_isa`] (broadcast tiles, for a
//! batch of users) sums in its tiles' order, about three times faster for many users.
//!
//! The int8 scan is a filter with a guarantee: [`i8_error_bound`] gives `C` such that for every
//! row, `|fl(items[j]·x) − out[j]| ≤ scales[j]·C` for an f32 dot product summed in any order,
//! so `out[j] + scales[j]·C` bounds the exact f32 score from above, and a top-k that re-scores
//! in f32 only the rows whose bound reaches its threshold
//! ([`super::topk::TopK::push_block_bounded`]) returns exactly the f32 top-k while reading a
//! quarter of the bytes, four times faster per row than f32 once the table is in cache.
//!
//! Paths: `*_ref` plain loops with f64 accumulation; `scores_isa` the dot tiles as pulp bodies;
//! `scores_i8_isa` AVX512-VNNI `vpdpbusd` (16 rows reduced together) on x86-64-v4 with VNNI,
//! AVX2 integer multiply-adds (`vpmaddubsw`/`vpmaddwd`, 8 rows reduced together) on
//! x86-64-v3 and a portable integer loop elsewhere, the same bits on every path;
//! the fast paths dispatch to the best instruction set (`scores`: [`Isa::f32_level`], v3 where
//! AVX-512 runs at half width; `scores_i8`: the detected level, with VNNI). Tolerance against the reference:
//! `scores`, `1e-5·(1 + Σ|x_p·w_p|)` per score (f32 sums in another order); `scores_i8`,
//! `2⁻²¹` relative (the integer sum is exact, the two f32 products round, the reference's f64
//! products once).

use super::isa::Isa;
use super::linear::{broadcast_tiles_isa, dot_tiles_isa};
use alloc::vec::Vec;

#[track_caller]
fn check_scores(users: &[f32], items: &[f32], out: &[f32], m: usize, n: usize, d: usize) {
    assert_eq!(
        users.len(),
        m * d,
        "scores: users has {} values, expected m·d = {m}·{d}",
        users.len()
    );
    assert_eq!(
        items.len(),
        n * d,
        "scores: items has {} values, expected n·d = {n}·{d}",
        items.len()
    );
    assert_eq!(
        out.len(),
        m * n,
        "scores: out has {} values, expected m·n = {m}·{n}",
        out.len()
    );
}

/// Reference `out[r·n + j] = users[r] · items[j]` with f64 accumulation.
///
/// # Panics
/// As [`scores`].
pub fn scores_ref(users: &[f32], items: &[f32], out: &mut [f32], m: usize, n: usize, d: usize) {
    check_scores(users, items, out, m, n, d);
    for r in 0..m {
        for j in 0..n {
            let acc: f64 = (0..d)
                .map(|p| users[r * d + p] as f64 * items[j * d + p] as f64)
                .sum();
            out[r * n + j] = acc as f32;
        }
    }
}

/// [`scores`] with the dot tiles instantiated for `isa`; allocates nothing.
///
/// # Panics
/// As [`scores`].
pub fn scores_isa(
    isa: Isa,
    users: &[f32],
    items: &[f32],
    out: &mut [f32],
    m: usize,
    n: usize,
    d: usize,
) {
    check_scores(users, items, out, m, n, d);
    dot_tiles_isa(isa, users, items, out, m, d, n, false);
}

/// [`scores_isa`] for a part of a table read from memory (larger than the caches): the same
/// scores, the items prefetched ahead of the tiles.
///
/// # Panics
/// As [`scores`].
pub fn scores_streamed_isa(
    isa: Isa,
    users: &[f32],
    items: &[f32],
    out: &mut [f32],
    m: usize,
    n: usize,
    d: usize,
) {
    check_scores(users, items, out, m, n, d);
    dot_tiles_isa(isa, users, items, out, m, d, n, true);
}

/// `out[r·n + j] = users[r] · items[j]` with the broadcast tiles (6 users × 16 items of
/// registers, the items packed transposed: no horizontal sums), about three times the
/// throughput of [`scores_isa`] for a batch of users, for `isa`. Each score is summed in the
/// order of its tile (not that of a single user's scan: equal to [`scores`] up to f32
/// rounding); allocates nothing.
///
/// # Panics
/// As [`scores`].
pub fn scores_batch_isa(
    isa: Isa,
    users: &[f32],
    items: &[f32],
    out: &mut [f32],
    m: usize,
    n: usize,
    d: usize,
) {
    check_scores(users, items, out, m, n, d);
    broadcast_tiles_isa(isa, users, items, out, m, d, n);
}

/// `out[r·n + j] = users[r] · items[j]` for `m` users and `n` items of width `d`, every score
/// summed in the same order whatever `m` and `n` (see the module docs), on the best
/// instruction set.
///
/// # Panics
/// If `users.len() != m·d`, `items.len() != n·d` or `out.len() != m·n`.
#[inline]
pub fn scores(users: &[f32], items: &[f32], out: &mut [f32], m: usize, n: usize, d: usize) {
    scores_isa(Isa::f32_level(), users, items, out, m, n, d);
}

// ---------------------------------------------------------------------------------------------
// The int8 item table.

/// Rows whose largest magnitude is below this are stored as zeros with the scale
/// `2·max|w|` (so that the bound `scale·C` still covers their whole score): their products
/// would lose the relative accuracy the bound assumes.
const TINY_ROW: f32 = 1.0e-18;

/// Quantizes `w` (`[n, d]`, finite) row by row: `scales[j] = max_p |w[j·d + p]| / 127` and
/// `q[j·d + p] = round(w[j·d + p] / scales[j])` (ties away from zero, within ±127); an all-zero
/// row gets scale 0. A plain loop: it runs once, when a model is loaded.
///
/// # Panics
/// If `w.len() != n·d`, `q.len() != n·d` or `scales.len() != n`.
pub fn quantize_rows_i8(w: &[f32], n: usize, d: usize, q: &mut [i8], scales: &mut [f32]) {
    assert_eq!(
        w.len(),
        n * d,
        "quantize_rows_i8: w has {} values, expected n·d = {n}·{d}",
        w.len()
    );
    assert_eq!(
        q.len(),
        n * d,
        "quantize_rows_i8: q has {} values, expected n·d = {n}·{d}",
        q.len()
    );
    assert_eq!(
        scales.len(),
        n,
        "quantize_rows_i8: scales has {} values, expected n = {n}",
        scales.len()
    );
    if d == 0 {
        scales.fill(0.0);
        return;
    }
    for ((row, qrow), scale) in w.chunks_exact(d).zip(q.chunks_exact_mut(d)).zip(scales) {
        let max = row.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
        if max < TINY_ROW {
            qrow.fill(0);
            *scale = 2.0 * max;
            continue;
        }
        *scale = max / 127.0;
        for (qv, &v) in qrow.iter_mut().zip(row) {
            *qv = super::math::round(v / *scale).clamp(-127.0, 127.0) as i8;
        }
    }
}

/// A quantized table owned in memory: `q` `[n, d]` and `scales` `[n]`, as
/// [`quantize_rows_i8`] writes them.
pub fn quantize_rows_i8_vec(w: &[f32], n: usize, d: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = alloc::vec![0i8; n * d];
    let mut scales = alloc::vec![0f32; n];
    quantize_rows_i8(w, n, d, &mut q, &mut scales);
    (q, scales)
}

/// Widest rows the int8 scan handles: its quantized query lives on the stack (wider tables are
/// for the caller to scan in f32).
pub const I8_MAX_DIM: usize = 4096;

/// Quantizes a query for the int8 scan like a table row: `xq[p] = round(x[p] / t)` with
/// `t = max_p |x[p]| / 127`, so `|xq[p]| ≤ 127`. Returns `t`, or `None` (leaving `xq`
/// unspecified) when `x` is wider than [`I8_MAX_DIM`], holds a non-finite value, or is all
/// (nearly) zero: the bound would not hold or not help, and the caller scans in f32.
///
/// # Panics
/// If `xq.len() != x.len()`.
pub fn quantize_query_i8(x: &[f32], xq: &mut [i8]) -> Option<f32> {
    assert_eq!(
        xq.len(),
        x.len(),
        "quantize_query_i8: xq has {} values, expected {}",
        xq.len(),
        x.len()
    );
    let max = x.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
    if x.len() > I8_MAX_DIM || !max.is_finite() || x.iter().any(|v| v.is_nan()) || max < TINY_ROW {
        return None;
    }
    let t = max / 127.0;
    for (qv, &v) in xq.iter_mut().zip(x) {
        *qv = super::math::round(v / t).clamp(-127.0, 127.0) as i8;
    }
    Some(t)
}

/// `C` for the rows of a table quantized by [`quantize_rows_i8`] and the query `x` quantized
/// by [`quantize_query_i8`] with scale `t`: for every row `j` and any f32 dot product
/// `fl(w_j·x)` of the original row, summed in any order with or without fused multiply-adds,
/// `|fl(w_j·x) − scores_i8(..)[j]| ≤ scales[j]·C`.
///
/// Derivation, with `u = 2⁻²⁴`, `γ = d·u/(1 − d·u)`, `‖x‖₁ = Σ|x_p|` and row scale `s`:
/// rounding to the nearest int8 leaves `|w_p − s·q_p| ≤ s·(½ + 127u)` and
/// `|x_p − t·xq_p| ≤ t·(½ + 127u)`, so the real scores of the original pair and of the
/// quantized pair differ by at most `s·(½ + 127u)·‖x‖₁ + s·t·(½ + 127u)·Σ|q_p|`, with
/// `Σ|q_p| ≤ 127·d`; the integer sum is exact and the two f32 products by the scales (and the
/// conversion, beyond 2²⁴) add at most `3u·s·t·127²·d`; the f32 product of the original row errs
/// by at most `γ·max|w|·‖x‖₁ ≤ γ·127·s·(1 + 2u)·‖x‖₁`. Hence
/// `C = ‖x‖₁·(½ + 127u + 127γ(1 + 2u)) + t·127·d·(½ + 127u + 3·127u)`, computed in f64 with a
/// further `2⁻¹⁶` relative margin. Rows stored as zeros (below `TINY_ROW`) have
/// `s = 2·max|w|`, so `s·C ≥ max|w|·‖x‖₁` covers their whole score.
pub fn i8_error_bound(x: &[f32], t: f32) -> f32 {
    let d = x.len() as f64;
    let u = 1.0 / (1u64 << 24) as f64;
    let gamma = d * u / (1.0 - d * u);
    let l1: f64 = x.iter().map(|&v| (v as f64).abs()).sum();
    let c = l1 * (0.5 + 127.0 * u + 127.0 * gamma * (1.0 + 2.0 * u))
        + t as f64 * 127.0 * d * (0.5 + 127.0 * u + 3.0 * 127.0 * u);
    // f64 → f32 rounds to nearest: one more relative 2⁻²⁴, inside the margin.
    (c * (1.0 + 1.0 / 65536.0)) as f32
}

#[track_caller]
fn check_i8(q: &[i8], scales: &[f32], xq: &[i8], out: &[f32], n: usize) {
    let d = xq.len();
    assert_eq!(
        q.len(),
        n * d,
        "scores_i8: q has {} values, expected n·d = {n}·{d}",
        q.len()
    );
    assert_eq!(
        scales.len(),
        n,
        "scores_i8: scales has {} values, expected n = {n}",
        scales.len()
    );
    assert_eq!(
        out.len(),
        n,
        "scores_i8: out has {} values, expected n = {n}",
        out.len()
    );
    assert!(
        d <= I8_MAX_DIM,
        "scores_i8: rows of {d} values, expected at most I8_MAX_DIM = {I8_MAX_DIM}"
    );
    assert!(
        !xq.contains(&i8::MIN),
        "scores_i8: xq holds -128, expected values in -127..=127"
    );
}

/// Reference `out[j] = scales[j]·t·Σ_p q[j·d + p]·xq[p]` (`d = xq.len()`): the integer sum in
/// i64, the scaling in f64.
///
/// # Panics
/// As [`scores_i8`].
pub fn scores_i8_ref(q: &[i8], scales: &[f32], xq: &[i8], t: f32, out: &mut [f32], n: usize) {
    check_i8(q, scales, xq, out, n);
    let d = xq.len();
    for j in 0..n {
        let sum: i64 = (0..d).map(|p| q[j * d + p] as i64 * xq[p] as i64).sum();
        out[j] = (sum as f64 * scales[j] as f64 * t as f64) as f32;
    }
}

/// The portable body: the integer sum of each row, then `(sum as f32 · scale) · t`, exactly as
/// the x86-64-v3 body computes them.
fn scores_i8_portable(q: &[i8], scales: &[f32], xq: &[i8], t: f32, out: &mut [f32]) {
    let d = xq.len();
    for ((o, row), &s) in out.iter_mut().zip(q.chunks_exact(d)).zip(scales) {
        let sum: i32 = row.iter().zip(xq).map(|(&a, &b)| a as i32 * b as i32).sum();
        *o = sum as f32 * s * t;
    }
}

/// [`scores_i8`] on `isa`: AVX512-VNNI `vpdpbusd` on x86-64-v4 where the CPU has VNNI
/// ([`i8_uses_vnni`]), AVX2 integer multiply-adds on x86-64-v3 and on v4 without VNNI (pulp's
/// portable vectors have no 8-bit multiply-add), the portable integer loop elsewhere; every
/// path gives the same bits.
///
/// # Panics
/// As [`scores_i8`].
pub fn scores_i8_isa(
    isa: Isa,
    q: &[i8],
    scales: &[f32],
    xq: &[i8],
    t: f32,
    out: &mut [f32],
    n: usize,
) {
    check_i8(q, scales, xq, out, n);
    if n == 0 {
        return;
    }
    if xq.is_empty() {
        out.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx512() && i8_uses_vnni() {
        // SAFETY: `i8_uses_vnni` checked that the CPU has AVX-512 F/BW and VNNI.
        unsafe { vnni::scores_i8_vnni(q, scales, xq, t, out) };
        return;
    }
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    if isa >= Isa::V3
        && let Some(simd) = pulp::x86::V3::try_new()
    {
        x86::scores_i8_v3(simd, q, scales, xq, t, out);
        return;
    }
    let _ = isa;
    scores_i8_portable(q, scales, xq, t, out);
}

/// Whether [`scores_i8`] runs the AVX512-VNNI body on this CPU (after `SEQREC_ISA`).
/// `SEQREC_ISA=v4,no-vnni` turns it off (the AVX2 body runs).
pub fn i8_uses_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::isa::Ext::Vnni.enabled() && vnni::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[j] = (Σ_p q[j·d + p]·xq[p]) · scales[j] · t` for `n` int8 rows of width `d = xq.len()`
/// (the integer sum exact, then two f32 products in this order), on the best instruction set.
/// `q` and `xq` hold values in `-127..=127`, as [`quantize_rows_i8`] and [`quantize_query_i8`]
/// write them (a `-128` in `q` gives unspecified scores).
///
/// # Panics
/// If `q.len() != n·d`, `scales.len() != n`, `out.len() != n`, `d > I8_MAX_DIM`, or `xq`
/// holds `-128`.
#[inline]
pub fn scores_i8(q: &[i8], scales: &[f32], xq: &[i8], t: f32, out: &mut [f32], n: usize) {
    scores_i8_isa(Isa::detect(), q, scales, xq, t, out, n);
}

/// Widest rows the bf16 filter scan handles (its split query lives on the stack).
pub const BF16_DP_MAX_DIM: usize = 1024;

/// The bound of the bf16 filter scan for one split query ([`bf16_split_query`]): for every
/// row `j` of a bf16 table with norm bound `norms[j]` ([`bf16_row_norms`]),
/// `|fl(w_j·x) − scores_bf16_dp(..)[j]| ≤ norms[j]·per_norm + abs` for the f32 dot product of
/// the widened row and the f32 query summed in any order of depth at most `2d + 32`, fused or
/// not (every f32 path of `gemv_bf16`).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Bf16Bound {
    /// Factor of the row's norm bound.
    pub per_norm: f32,
    /// Absolute term (values flushed to zero).
    pub abs: f32,
}

impl Bf16Bound {
    /// An upper bound, computed in f32, of the exact score of a row with filter score `approx`
    /// and norm bound `norm` (`+∞` where it is NaN).
    #[inline]
    pub fn upper(self, approx: f32, norm: f32) -> f32 {
        let b = approx + (norm * self.per_norm + self.abs);
        if b.is_nan() { f32::INFINITY } else { b }
    }
}

/// Upper bounds of the Euclidean norms of the `n` rows of a bf16 table `[n, d]` (summed in f64
/// and rounded up), or `None` when a row holds an inf or NaN (no bound holds there: the caller
/// scans those tables exactly).
///
/// # Panics
/// If `w.len() != n·d`.
pub fn bf16_row_norms(w: &[half::bf16], n: usize, d: usize) -> Option<Vec<f32>> {
    assert_eq!(
        w.len(),
        n * d,
        "bf16_row_norms: w has {} values, expected n·d = {n}·{d}",
        w.len()
    );
    if d == 0 {
        return Some(alloc::vec![0.0; n]);
    }
    w.chunks_exact(d)
        .map(|row| {
            let sq: f64 = row.iter().map(|v| v.to_f64() * v.to_f64()).sum();
            let norm = (libm::sqrt(sq) * (1.0 + 1.0 / 65536.0)) as f32;
            norm.is_finite().then_some(norm)
        })
        .collect()
}

/// Splits a query for the bf16 filter scan into two bf16 parts, `x ≈ hi + lo` (round to
/// nearest; parts below f32's normal range set to zero, as `vdpbf16ps` reads them), and returns
/// the scan's bound, or `None` (leaving `hi` and `lo` unspecified) when `x` is wider than
/// [`BF16_DP_MAX_DIM`] or holds a value whose bf16 rounding is not finite.
///
/// Derivation, with `u = 2⁻²⁴`, `N = 2d + 32`, `γ = N·u/(1 − N·u)`, `r = x − hi − lo` (exact in
/// f32) and `‖w_j‖ ≤ norms[j]`: the filter sums the exact products `(hi_p + lo_p)·w_p` with at
/// most `N` roundings in a chain, so it errs from `Σ(hi + lo)·w` by at most
/// `γ·‖|hi| + |lo|‖·‖w_j‖` (Cauchy–Schwarz), plus the subnormals it flushes: table values
/// and products below `2⁻¹²⁶` and partial sums there, at most
/// `2⁻¹²⁶·(2‖x‖₁ + 4d + 64)` together; `Σ(hi + lo)·w` differs from `x·w` by `|r·w| ≤ ‖r‖·‖w_j‖`;
/// the f32 dot product `fl(w_j·x)` errs by at most `γ·‖x‖·‖w_j‖`. The sum of the three is
/// computed in f64 and scaled by 9/8, which covers the f32 rounding of [`Bf16Bound::upper`]
/// (its terms are at least `γ` times the score, whose last-place rounding they dwarf).
///
/// # Panics
/// If `hi.len()` or `lo.len()` differs from `x.len()`.
pub fn bf16_split_query(
    x: &[f32],
    hi: &mut [half::bf16],
    lo: &mut [half::bf16],
) -> Option<Bf16Bound> {
    use half::bf16;
    assert!(
        hi.len() == x.len() && lo.len() == x.len(),
        "bf16_split_query: hi and lo have {} and {} values, expected {}",
        hi.len(),
        lo.len(),
        x.len()
    );
    if x.len() > BF16_DP_MAX_DIM {
        return None;
    }
    // `vdpbf16ps` reads subnormal bf16 values as zero: such parts are zero here, and what
    // they held stays in the residual.
    let part = |v: f32| {
        let b = bf16::from_f32(v);
        if b.to_f32().abs() < f32::MIN_POSITIVE {
            bf16::ZERO
        } else {
            b
        }
    };
    let (mut sq_x, mut sq_parts, mut sq_r, mut l1) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for ((&v, h), l) in x.iter().zip(hi.iter_mut()).zip(lo.iter_mut()) {
        *h = part(v);
        if !h.to_f32().is_finite() || !v.is_finite() {
            return None;
        }
        let rest = v - h.to_f32();
        *l = part(rest);
        let r = rest - l.to_f32();
        let (v, parts) = (v as f64, (h.to_f64().abs() + l.to_f64().abs()));
        sq_x += v * v;
        sq_parts += parts * parts;
        sq_r += r as f64 * r as f64;
        l1 += v.abs();
    }
    let d = x.len() as f64;
    let u = 1.0 / (1u64 << 24) as f64;
    let n = 2.0 * d + 32.0;
    let gamma = n * u / (1.0 - n * u);
    let tiny = f32::MIN_POSITIVE as f64;
    let per_norm = gamma * (libm::sqrt(sq_parts) + libm::sqrt(sq_x)) + libm::sqrt(sq_r);
    let abs = tiny * (2.0 * l1 + 4.0 * d + 64.0);
    Some(Bf16Bound {
        per_norm: (per_norm * 1.125) as f32,
        abs: (abs * 1.125) as f32,
    })
}

/// Reference of the bf16 filter scan: `out[j] = Σ_p w[j·d + p]·(hi[p] + lo[p])` in f64, for
/// `n` rows of width `d = hi.len()`.
///
/// # Panics
/// If `lo.len() != hi.len()`, `w.len() != n·d` or `out.len() != n`.
pub fn scores_bf16_dp_ref(
    w: &[half::bf16],
    hi: &[half::bf16],
    lo: &[half::bf16],
    out: &mut [f32],
    n: usize,
) {
    check_bf16_dp(w, hi, lo, out, n);
    let d = hi.len();
    for (j, o) in out.iter_mut().enumerate() {
        let row = &w[j * d..(j + 1) * d];
        let s: f64 = row
            .iter()
            .zip(hi.iter().zip(lo))
            .map(|(w, (h, l))| w.to_f64() * (h.to_f64() + l.to_f64()))
            .sum();
        *o = s as f32;
    }
}

#[track_caller]
fn check_bf16_dp(w: &[half::bf16], hi: &[half::bf16], lo: &[half::bf16], out: &[f32], n: usize) {
    let d = hi.len();
    assert_eq!(
        lo.len(),
        d,
        "scores_bf16_dp: lo has {} values, expected {d}",
        lo.len()
    );
    assert_eq!(
        out.len(),
        n,
        "scores_bf16_dp: out has {} values, expected {n}",
        out.len()
    );
    assert_eq!(
        w.len(),
        n * d,
        "scores_bf16_dp: w has {} values, expected n·d = {n}·{d}",
        w.len()
    );
}

/// The bf16 filter scan: `out[j] ≈ Σ_p w[j·d + p]·(hi[p] + lo[p])` for `n` bf16 rows of width
/// `d = hi.len()`, within [`bf16_split_query`]'s bound of every f32 score of the row, with
/// AVX512-BF16 `vdpbf16ps` where `isa` has AVX-512 and [`bf16_uses_dp`], and with f32
/// multiply-adds (the same bound) elsewhere. A top-k adds the bound
/// ([`Bf16Bound::upper`]) and re-scores exactly the rows it cannot rule out
/// ([`super::topk::TopK::push_block_bounded`]): the selection and scores of the exact bf16
/// scan, from half the multiply-add instructions.
///
/// # Panics
/// As [`scores_bf16_dp_ref`].
pub fn scores_bf16_dp_isa(
    isa: Isa,
    w: &[half::bf16],
    hi: &[half::bf16],
    lo: &[half::bf16],
    out: &mut [f32],
    n: usize,
) {
    check_bf16_dp(w, hi, lo, out, n);
    if n == 0 {
        return;
    }
    if hi.is_empty() {
        out.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx512() && bf16_uses_dp() {
        // SAFETY: `bf16_uses_dp` checked that the CPU has AVX-512 F/BW and AVX512-BF16.
        unsafe {
            bf16dp::scores_bf16_dp(
                bytemuck::cast_slice(w),
                bytemuck::cast_slice(hi),
                bytemuck::cast_slice(lo),
                out,
            )
        };
        return;
    }
    let _ = isa;
    let d = hi.len();
    for (j, o) in out.iter_mut().enumerate() {
        let row = &w[j * d..(j + 1) * d];
        let mut acc = 0.0f32;
        for (w, (h, l)) in row.iter().zip(hi.iter().zip(lo)) {
            let w = w.to_f32();
            // bf16 × bf16 products are exact in f32: one rounding per addition.
            acc += w * h.to_f32();
            acc += w * l.to_f32();
        }
        *o = acc;
    }
}

/// Whether [`scores_bf16_dp_isa`] runs the AVX512-BF16 body on this CPU at an AVX-512 level
/// (after `SEQREC_ISA`; `SEQREC_ISA=v4,no-bf16` turns it off). The engine filters bf16 tables
/// only where it does: elsewhere the widening scan is the faster one.
pub fn bf16_uses_dp() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::isa::Ext::Bf16.enabled() && bf16dp::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod bf16dp;
#[cfg(target_arch = "x86_64")]
mod vnni;
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
mod x86;

#[cfg(test)]
mod tests;
