//! Catalog scoring: the scores of user vectors against the rows of an item table, in f32 and
//! against an int8 copy of the table.
//!
//! Layout: row-major. `scores` computes `out[r·n + j] = users[r] · items[j]` for `users`
//! `[m, d]` and `items` `[n, d]` (f32). The int8 table is `q` `[n, d]` (`i8`) with one f32
//! scale per row, built by [`quantize_rows_i8`] (symmetric, round to nearest:
//! `items[j][p] ≈ scales[j]·q[j·d + p]`); `scores_i8` computes
//! `out[j] = scales[j] · Σ_p q[j·d + p]·x[p]` for one f32 vector `x`.
//!
//! Order of summation: every f32 score is summed in one fixed order, lane-wise fused
//! multiply-adds over the vectors of `d` (a partial last vector zero-filled) followed by the
//! instruction set's horizontal sum, whatever `m`, `n` and the tile that computes it (dot tiles
//! of up to 3 users × 4 items, see `linear`). So a batch of users scores bit for bit as each of
//! its users alone, and re-scoring one item gives the score a full scan gave it.
//!
//! The int8 scan is a filter with a guarantee: [`i8_error_bound`] gives `C(x)` such that for
//! every row, `|fl(items[j]·x) − out[j]| ≤ scales[j]·C(x)` for an f32 dot product summed in any
//! order, so `out[j] + scales[j]·C(x)` bounds the exact f32 score from above, and a top-k that
//! re-scores in f32 only the rows whose bound reaches its threshold
//! ([`super::topk::TopK::push_block_bounded`]) returns exactly the f32 top-k while reading a
//! quarter of the bytes.
//!
//! Paths: `*_ref` plain loops with f64 accumulation; `*_isa` pulp bodies; the fast paths
//! dispatch to the best instruction set. Tolerance of the fast paths against the reference:
//! `1e-5·(1 + Σ|x_p·w_p|)` per score (f32 sums in another order; the int8 values widen
//! exactly, `w_p = q_p` and the scale multiplies the sum).

use super::isa::Isa;
use super::linear::dot_tiles_isa;
use alloc::vec::Vec;
use pulp::{Simd, WithSimd};

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
    dot_tiles_isa(isa, users, items, out, m, d, n);
}

/// `out[r·n + j] = users[r] · items[j]` for `m` users and `n` items of width `d`, every score
/// summed in the same order whatever `m` and `n` (see the module docs), on the best
/// instruction set.
///
/// # Panics
/// If `users.len() != m·d`, `items.len() != n·d` or `out.len() != m·n`.
#[inline]
pub fn scores(users: &[f32], items: &[f32], out: &mut [f32], m: usize, n: usize, d: usize) {
    scores_isa(Isa::detect(), users, items, out, m, n, d);
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

/// `C(x)` for the rows of a table quantized by [`quantize_rows_i8`]: for every row `j` and any
/// f32 dot product `fl(w_j·x)` of the original row, summed in any order with or without fused
/// multiply-adds, `|fl(w_j·x) − scores_i8(x)[j]| ≤ scales[j]·C(x)`. Infinite or NaN when `x` is
/// not finite (the bound is then unusable).
///
/// Derivation, with `u = 2⁻²⁴`, `γ = d·u/(1 − d·u)` and `‖x‖₁ = Σ|x_p|`: rounding to the
/// nearest int8 leaves `|w_p − s·q_p| ≤ s·(½ + 127u)`, so the real scores of the row and of its
/// dequantized copy differ by at most `s·(½ + 127u)·‖x‖₁`; the f32 int8 sum errs by at most
/// `γ·127·‖x‖₁` before the scale multiplies it (one more rounding, `127u` relative), the f32
/// product of the original row by at most `γ·max|w|·‖x‖₁ ≤ γ·127·s·‖x‖₁`. Hence
/// `C = ‖x‖₁·(½ + 127u + 127·(2γ + 2u))`, computed here with `‖x‖₁` rounded upwards and a
/// further `2⁻¹⁶` relative margin. Rows stored as zeros (below `TINY_ROW`) have `s = 2·max|w|`,
/// so `s·C ≥ max|w|·‖x‖₁` covers their whole score.
pub fn i8_error_bound(x: &[f32]) -> f32 {
    let d = x.len() as f64;
    let u = 1.0 / (1u64 << 24) as f64;
    let gamma = d * u / (1.0 - d * u);
    let l1: f64 = x.iter().map(|&v| (v as f64).abs()).sum();
    let c = l1 * (0.5 + 127.0 * u + 127.0 * (2.0 * gamma + 2.0 * u)) * (1.0 + 1.0 / 65536.0);
    // f64 → f32 rounds to nearest: one more relative 2⁻²⁴ is inside the margin above.
    c as f32
}

#[track_caller]
fn check_i8(q: &[i8], scales: &[f32], x: &[f32], out: &[f32], n: usize) {
    let d = x.len();
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
}

/// Reference `out[j] = scales[j] · Σ_p q[j·d + p]·x[p]` (`d = x.len()`), f64 accumulation.
///
/// # Panics
/// As [`scores_i8`].
pub fn scores_i8_ref(q: &[i8], scales: &[f32], x: &[f32], out: &mut [f32], n: usize) {
    check_i8(q, scales, x, out, n);
    let d = x.len();
    for j in 0..n {
        let acc: f64 = (0..d).map(|p| q[j * d + p] as f64 * x[p] as f64).sum();
        out[j] = (acc * scales[j] as f64) as f32;
    }
}

/// Most f32 lanes of any instruction set (the widening buffer).
const MAX_LANES: usize = 16;

/// Loads `src.len() <= S::F32_LANES` int8 values widened to f32 lanes (missing lanes 0).
#[inline(always)]
fn load_i8_f32s<S: Simd>(_s: S, src: &[i8]) -> S::f32s {
    let lanes = S::F32_LANES;
    let mut buf = [0f32; MAX_LANES];
    if src.len() == lanes {
        // Constant trip count after monomorphisation: one widening load and a conversion.
        for i in 0..lanes {
            buf[i] = src[i] as f32;
        }
    } else {
        for (b, &v) in buf.iter_mut().zip(src) {
            *b = v as f32;
        }
    }
    S::as_simd_f32s(&buf[..lanes]).0[0]
}

/// Rows of the int8 table per tile (independent accumulation chains).
const I8_ROWS: usize = 4;

/// `R` int8 rows (`[R, d]`) against `x`: `out[i] = scales[i]·Σ_p q[i·d + p]·x[p]`.
#[inline(always)]
fn i8_tile<S: Simd, const R: usize>(
    s: S,
    q: &[i8],
    scales: &[f32],
    x_head: &[S::f32s],
    x_tail: Option<S::f32s>,
    d: usize,
    out: &mut [f32],
) {
    let lanes = S::F32_LANES;
    let nv = x_head.len();
    let rows: [&[i8]; R] = core::array::from_fn(|i| &q[i * d..(i + 1) * d]);
    let mut acc = [s.splat_f32s(0.0); R];
    for (v, &xv) in x_head.iter().enumerate() {
        for i in 0..R {
            let wv = load_i8_f32s(s, &rows[i][v * lanes..(v + 1) * lanes]);
            acc[i] = s.mul_add_f32s(wv, xv, acc[i]);
        }
    }
    if let Some(xt) = x_tail {
        for i in 0..R {
            let wv = load_i8_f32s(s, &rows[i][nv * lanes..]);
            acc[i] = s.mul_add_f32s(wv, xt, acc[i]);
        }
    }
    for i in 0..R {
        out[i] = s.reduce_sum_f32s(acc[i]) * scales[i];
    }
}

struct ScoresI8<'a> {
    q: &'a [i8],
    scales: &'a [f32],
    x: &'a [f32],
    out: &'a mut [f32],
}

impl WithSimd for ScoresI8<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self { q, scales, x, out } = self;
        let d = x.len();
        let (x_head, x_tail) = S::as_simd_f32s(x);
        let x_tail = (!x_tail.is_empty()).then(|| s.partial_load_f32s(x_tail));
        let mut j = 0;
        let n = out.len();
        while j + I8_ROWS <= n {
            let (qb, sb) = (&q[j * d..(j + I8_ROWS) * d], &scales[j..j + I8_ROWS]);
            i8_tile::<S, I8_ROWS>(s, qb, sb, x_head, x_tail, d, &mut out[j..j + I8_ROWS]);
            j += I8_ROWS;
        }
        while j < n {
            let (qb, sb) = (&q[j * d..(j + 1) * d], &scales[j..j + 1]);
            i8_tile::<S, 1>(s, qb, sb, x_head, x_tail, d, &mut out[j..j + 1]);
            j += 1;
        }
    }
}

/// [`scores_i8`] with the pulp body instantiated for `isa`.
///
/// # Panics
/// As [`scores_i8`].
pub fn scores_i8_isa(isa: Isa, q: &[i8], scales: &[f32], x: &[f32], out: &mut [f32], n: usize) {
    check_i8(q, scales, x, out, n);
    if n == 0 {
        return;
    }
    if x.is_empty() {
        out.fill(0.0);
        return;
    }
    isa.run(ScoresI8 { q, scales, x, out });
}

/// `out[j] = scales[j] · Σ_p q[j·d + p]·x[p]` for `n` int8 rows of width `d = x.len()`,
/// widening in registers, on the best instruction set.
///
/// # Panics
/// If `q.len() != n·d`, `scales.len() != n` or `out.len() != n`.
#[inline]
pub fn scores_i8(q: &[i8], scales: &[f32], x: &[f32], out: &mut [f32], n: usize) {
    scores_i8_isa(Isa::detect(), q, scales, x, out, n);
}

#[cfg(test)]
mod tests;
