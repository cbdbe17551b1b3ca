//! Convolutions of the sequential recommenders: NextItNet's dilated causal conv1d and Caser's
//! vertical and horizontal convolutions.
//!
//! Layout: row-major `f32`, sequences time-major (`x[t, c]`, `[len, channels]`).
//!
//! - Causal conv1d (NextItNet): PyTorch weight `[out, in, 1, k]` (= `[out, in, k]`), tap
//!   `j = k − 1` at the current position, tap 0 the furthest in the past, zero left padding:
//!   `y[t, o] = bias[o] + Σ_j Σ_c W[o, c, j] · x[t − (k−1−j)·d, c]` with `x[τ < 0] = 0`. The fast
//!   paths take the weight repacked by [`pack_conv_taps`] **tap-major `[k, in, out]`**
//!   (`taps[(j·in + c)·out + o] = W[o, c, j]`), so that tap `j` is an `[in, out]` matrix applied to
//!   the rows shifted back by `(k−1−j)·d`.
//! - Caser vertical: `out[v, e] = b[v] + Σ_t w[v, t]·x[t, e]` (weight `[nv, 1, L, 1]` = `[nv, L]`,
//!   no activation).
//! - Caser horizontal, one height `h`: `out[f] = max_{s=0..=L−h} ReLU(b[f] + Σ_{a<h} Σ_c
//!   w[f, a, c]·x[s+a, c])` (weight `[nf, 1, h, e]` = `[nf, h·e]`). Window `s` is the contiguous
//!   slice `x[s·e .. (s+h)·e]`, so every term is one dot product of length `h·e`.
//!
//! Paths: `*_ref` plain loops with f64 accumulation (the conv reference takes the unpacked
//! PyTorch weight); `*_isa` pulp bodies (conv and vertical: per output row, register blocks of up
//! to eight vectors of outputs accumulating scalar × row products; horizontal: the
//! eight-rows-at-a-time dot product of [`super::gru`] over the filters of each window); the
//! fast paths use `gemm` under `std` where it pays (one product per tap for the conv, one
//! product with overlapping rows per height for the horizontal conv) and the pulp bodies
//! otherwise.
//!
//! Tolerance of every fast path against the reference: `1e-5·(1 + Σ|terms|)` per output, where
//! `Σ|terms|` is the sum of the absolute products and bias entering it (f32 accumulation in a
//! different order), as for [`super::linear`].

use super::gru::dot_rows_simd;
use super::isa::Isa;
use alloc::vec::Vec;
use pulp::{Simd, WithSimd};

/// How far back (in rows) tap `j` of a width-`k` kernel with dilation `d` reads; saturates
/// instead of overflowing (a shift that large reads nothing).
#[inline(always)]
fn tap_shift(k: usize, j: usize, dilation: usize) -> usize {
    (k - 1 - j).saturating_mul(dilation)
}

/// `y += Σ_i coef[i] · rows[i·stride .. i·stride + y.len()]`: register blocks of `N` vectors of
/// `y` held across the whole sum (one broadcast and `N` loads per `N` fused multiply-adds).
#[inline(always)]
fn axpy_rows<S: Simd>(s: S, y: &mut [f32], coef: &[f32], rows: &[f32], stride: usize) {
    let n = y.len();
    let (y_head, y_tail) = S::as_mut_simd_f32s(y);
    let nv = y_head.len();
    let mut v = 0;
    while v + 8 <= nv {
        axpy_block::<8, S>(s, &mut y_head[v..v + 8], v, coef, rows, stride, n);
        v += 8;
    }
    if v + 4 <= nv {
        axpy_block::<4, S>(s, &mut y_head[v..v + 4], v, coef, rows, stride, n);
        v += 4;
    }
    while v < nv {
        axpy_block::<1, S>(s, &mut y_head[v..v + 1], v, coef, rows, stride, n);
        v += 1;
    }
    if !y_tail.is_empty() {
        let mut acc = s.partial_load_f32s(y_tail);
        for (i, &a) in coef.iter().enumerate() {
            let (_, row_tail) = S::as_simd_f32s(&rows[i * stride..i * stride + n]);
            acc = s.mul_add_f32s(s.splat_f32s(a), s.partial_load_f32s(row_tail), acc);
        }
        s.partial_store_f32s(y_tail, acc);
    }
}

/// One register block of [`axpy_rows`]: the `N` vectors of `y` starting at vector `v`.
#[inline(always)]
fn axpy_block<const N: usize, S: Simd>(
    s: S,
    y: &mut [S::f32s],
    v: usize,
    coef: &[f32],
    rows: &[f32],
    stride: usize,
    n: usize,
) {
    let mut acc: [S::f32s; N] = core::array::from_fn(|q| y[q]);
    for (i, &a) in coef.iter().enumerate() {
        let (row, _) = S::as_simd_f32s(&rows[i * stride..i * stride + n]);
        let row = &row[v..v + N];
        let av = s.splat_f32s(a);
        for q in 0..N {
            acc[q] = s.mul_add_f32s(av, row[q], acc[q]);
        }
    }
    y.copy_from_slice(&acc);
}

// ---------------------------------------------------------------------------------------------
// Dilated causal conv1d (NextItNet)

/// Repacks a PyTorch conv weight `[out_ch, in_ch, 1, k]` (or `[out_ch, in_ch, k]`, the same
/// memory) into the tap-major layout `[k, in_ch, out_ch]` the fast paths take:
/// `taps[(j·in_ch + c)·out_ch + o] = w[(o·in_ch + c)·k + j]`.
///
/// # Panics
/// If `w.len() != out_ch·in_ch·k`.
pub fn pack_conv_taps(w: &[f32], out_ch: usize, in_ch: usize, k: usize) -> Vec<f32> {
    assert_eq!(
        w.len(),
        out_ch * in_ch * k,
        "pack_conv_taps: w has {} values, expected out·in·k = {out_ch}·{in_ch}·{k}",
        w.len()
    );
    let mut taps = alloc::vec![0.0; w.len()];
    for o in 0..out_ch {
        for c in 0..in_ch {
            for j in 0..k {
                taps[(j * in_ch + c) * out_ch + o] = w[(o * in_ch + c) * k + j];
            }
        }
    }
    taps
}

#[track_caller]
fn check_conv(
    x_len: usize,
    x_rows: usize,
    in_ch: usize,
    w_len: usize,
    bias: Option<&[f32]>,
    out_ch: usize,
    k: usize,
    dilation: usize,
) {
    assert!(k >= 1, "causal_conv1d: kernel width k must be at least 1");
    assert!(dilation >= 1, "causal_conv1d: dilation must be at least 1");
    assert!(
        x_len >= x_rows * in_ch,
        "causal_conv1d: x has {x_len} values, expected at least rows·in = {x_rows}·{in_ch}"
    );
    assert_eq!(
        w_len,
        out_ch * in_ch * k,
        "causal_conv1d: weight has {w_len} values, expected out·in·k = {out_ch}·{in_ch}·{k}"
    );
    if let Some(b) = bias {
        assert_eq!(
            b.len(),
            out_ch,
            "causal_conv1d: bias has {} values, expected out = {out_ch}",
            b.len()
        );
    }
}

#[track_caller]
fn check_conv_full(x: &[f32], len: usize, in_ch: usize, out_ch: usize, y: &[f32]) {
    assert_eq!(
        x.len(),
        len * in_ch,
        "causal_conv1d: x has {} values, expected len·in = {len}·{in_ch}",
        x.len()
    );
    assert_eq!(
        y.len(),
        len * out_ch,
        "causal_conv1d: y has {} values, expected len·out = {len}·{out_ch}",
        y.len()
    );
}

/// Reference dilated causal conv1d with the **unpacked** PyTorch weight `w` `[out, in, k]`.
///
/// # Panics
/// As [`causal_conv1d`] (with `w.len() == out·in·k`).
pub fn causal_conv1d_ref(
    x: &[f32],
    len: usize,
    in_ch: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    out_ch: usize,
    k: usize,
    dilation: usize,
    y: &mut [f32],
) {
    check_conv(x.len(), len, in_ch, w.len(), bias, out_ch, k, dilation);
    check_conv_full(x, len, in_ch, out_ch, y);
    for t in 0..len {
        for o in 0..out_ch {
            let mut acc = bias.map_or(0.0, |b| b[o] as f64);
            for j in 0..k {
                let back = tap_shift(k, j, dilation);
                if back > t {
                    continue; // zero left padding
                }
                for c in 0..in_ch {
                    acc += w[(o * in_ch + c) * k + j] as f64 * x[(t - back) * in_ch + c] as f64;
                }
            }
            y[t * out_ch + o] = acc as f32;
        }
    }
}

/// Output rows `t0 .. t0 + y.len()/out_ch` of the causal conv, one row at a time.
struct ConvRowsBody<'a> {
    x: &'a [f32],
    in_ch: usize,
    taps: &'a [f32],
    bias: Option<&'a [f32]>,
    out_ch: usize,
    k: usize,
    dilation: usize,
    t0: usize,
    y: &'a mut [f32],
}

impl WithSimd for ConvRowsBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self {
            x,
            in_ch,
            taps,
            bias,
            out_ch,
            k,
            dilation,
            t0,
            y,
        } = self;
        let panel = in_ch * out_ch;
        for (r, y_row) in y.chunks_exact_mut(out_ch).enumerate() {
            let t = t0 + r;
            match bias {
                Some(b) => y_row.copy_from_slice(b),
                None => y_row.fill(0.0),
            }
            for j in 0..k {
                let back = tap_shift(k, j, dilation);
                if back > t {
                    continue; // zero left padding
                }
                let src = t - back;
                let coef = &x[src * in_ch..(src + 1) * in_ch];
                axpy_rows(s, y_row, coef, &taps[j * panel..(j + 1) * panel], out_ch);
            }
        }
    }
}

/// Dilated causal conv1d with the pulp body for `isa` (row by row).
///
/// # Panics
/// As [`causal_conv1d`].
pub fn causal_conv1d_isa(
    isa: Isa,
    x: &[f32],
    len: usize,
    in_ch: usize,
    taps: &[f32],
    bias: Option<&[f32]>,
    out_ch: usize,
    k: usize,
    dilation: usize,
    y: &mut [f32],
) {
    check_conv(x.len(), len, in_ch, taps.len(), bias, out_ch, k, dilation);
    check_conv_full(x, len, in_ch, out_ch, y);
    if len == 0 || out_ch == 0 {
        return;
    }
    isa.run(ConvRowsBody {
        x,
        in_ch,
        taps,
        bias,
        out_ch,
        k,
        dilation,
        t0: 0,
        y,
    });
}

/// Dilated causal conv1d, NextItNet's `Conv2d(in, out, (1, k), dilation=(1, d))` over a
/// left-zero-padded sequence: `x` `[len, in_ch]` → `y` `[len, out_ch]`, with the weight packed
/// by [`pack_conv_taps`]. Under `std`, one `gemm` per tap accumulates the tap's `[in, out]`
/// matrix applied to the shifted rows; without it, the pulp body.
///
/// # Panics
/// If `k == 0`, `dilation == 0`, `x.len() != len·in_ch`, `taps.len() != k·in_ch·out_ch`, a bias
/// is given whose length is not `out_ch`, or `y.len() != len·out_ch`.
pub fn causal_conv1d(
    x: &[f32],
    len: usize,
    in_ch: usize,
    taps: &[f32],
    bias: Option<&[f32]>,
    out_ch: usize,
    k: usize,
    dilation: usize,
    y: &mut [f32],
) {
    check_conv(x.len(), len, in_ch, taps.len(), bias, out_ch, k, dilation);
    check_conv_full(x, len, in_ch, out_ch, y);
    #[cfg(feature = "std")]
    if len > 1 && in_ch > 0 && out_ch > 0 {
        match bias {
            Some(b) => y
                .chunks_exact_mut(out_ch)
                .for_each(|r| r.copy_from_slice(b)),
            None => y.fill(0.0),
        }
        let panel = in_ch * out_ch;
        for j in 0..k {
            let back = tap_shift(k, j, dilation);
            if back >= len {
                continue; // the tap only ever reads the zero padding
            }
            let m = len - back;
            super::linear::matmul(
                &x[..m * in_ch],
                &taps[j * panel..(j + 1) * panel],
                &mut y[back * out_ch..],
                m,
                in_ch,
                out_ch,
                true,
            );
        }
        return;
    }
    causal_conv1d_isa(
        Isa::detect(),
        x,
        len,
        in_ch,
        taps,
        bias,
        out_ch,
        k,
        dilation,
        y,
    );
}

/// One output row of the causal conv on `isa`.
///
/// # Panics
/// As [`causal_conv1d_step`].
pub fn causal_conv1d_step_isa(
    isa: Isa,
    x: &[f32],
    t: usize,
    in_ch: usize,
    taps: &[f32],
    bias: Option<&[f32]>,
    out_ch: usize,
    k: usize,
    dilation: usize,
    y_row: &mut [f32],
) {
    check_conv(x.len(), t + 1, in_ch, taps.len(), bias, out_ch, k, dilation);
    assert_eq!(
        y_row.len(),
        out_ch,
        "causal_conv1d_step: y_row has {} values, expected out = {out_ch}",
        y_row.len()
    );
    if out_ch == 0 {
        return;
    }
    isa.run(ConvRowsBody {
        x,
        in_ch,
        taps,
        bias,
        out_ch,
        k,
        dilation,
        t0: t,
        y: y_row,
    });
}

/// Output row `t` of [`causal_conv1d`] alone, reading only rows `≤ t` of `x` (which may hold just
/// those `t + 1` rows, or more, which are ignored): the streaming / session step. Bit-identical
/// to row `t` of [`causal_conv1d_isa`] on the same instruction set.
///
/// # Panics
/// If `k == 0`, `dilation == 0`, `x.len() < (t+1)·in_ch`, `taps.len() != k·in_ch·out_ch`, a
/// bias is given whose length is not `out_ch`, or `y_row.len() != out_ch`.
pub fn causal_conv1d_step(
    x: &[f32],
    t: usize,
    in_ch: usize,
    taps: &[f32],
    bias: Option<&[f32]>,
    out_ch: usize,
    k: usize,
    dilation: usize,
    y_row: &mut [f32],
) {
    causal_conv1d_step_isa(
        Isa::detect(),
        x,
        t,
        in_ch,
        taps,
        bias,
        out_ch,
        k,
        dilation,
        y_row,
    );
}

// ---------------------------------------------------------------------------------------------
// Caser

#[track_caller]
fn check_vertical(x: &[f32], l: usize, e: usize, w: &[f32], b: &[f32], nv: usize, out: &[f32]) {
    let checks = [
        ("x", x.len(), l * e, "l·e"),
        ("w", w.len(), nv * l, "nv·l"),
        ("b", b.len(), nv, "nv"),
        ("out", out.len(), nv * e, "nv·e"),
    ];
    for (name, found, expected, what) in checks {
        assert_eq!(
            found, expected,
            "caser_vertical: {name} has {found} values, expected {what} = {expected} (l={l}, e={e}, nv={nv})"
        );
    }
}

/// Reference Caser vertical convolution (f64 accumulation).
///
/// # Panics
/// As [`caser_vertical`].
pub fn caser_vertical_ref(
    x: &[f32],
    l: usize,
    e: usize,
    w: &[f32],
    b: &[f32],
    nv: usize,
    out: &mut [f32],
) {
    check_vertical(x, l, e, w, b, nv, out);
    for v in 0..nv {
        for c in 0..e {
            let mut acc = b[v] as f64;
            for t in 0..l {
                acc += w[v * l + t] as f64 * x[t * e + c] as f64;
            }
            out[v * e + c] = acc as f32;
        }
    }
}

struct VerticalBody<'a> {
    x: &'a [f32],
    l: usize,
    e: usize,
    w: &'a [f32],
    b: &'a [f32],
    out: &'a mut [f32],
}

impl WithSimd for VerticalBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self { x, l, e, w, b, out } = self;
        for (v, row) in out.chunks_exact_mut(e).enumerate() {
            row.fill(b[v]);
            axpy_rows(s, row, &w[v * l..(v + 1) * l], x, e);
        }
    }
}

/// Caser vertical convolution with the pulp body for `isa`.
///
/// # Panics
/// As [`caser_vertical`].
pub fn caser_vertical_isa(
    isa: Isa,
    x: &[f32],
    l: usize,
    e: usize,
    w: &[f32],
    b: &[f32],
    nv: usize,
    out: &mut [f32],
) {
    check_vertical(x, l, e, w, b, nv, out);
    if e == 0 || nv == 0 {
        return;
    }
    isa.run(VerticalBody { x, l, e, w, b, out });
}

/// Caser's vertical convolution `out[v, e] = b[v] + Σ_t w[v, t]·x[t, e]` over the image `x`
/// `[l, e]` with `nv` filters `w` `[nv, l]` (PyTorch `[nv, 1, l, 1]`), no activation; `out` is
/// `[nv, e]`, v-major as Caser flattens it. Fast path: the pulp body (the product is too small
/// for `gemm` to pay).
///
/// # Panics
/// If `x.len() != l·e`, `w.len() != nv·l`, `b.len() != nv` or `out.len() != nv·e`.
pub fn caser_vertical(
    x: &[f32],
    l: usize,
    e: usize,
    w: &[f32],
    b: &[f32],
    nv: usize,
    out: &mut [f32],
) {
    caser_vertical_isa(Isa::detect(), x, l, e, w, b, nv, out);
}

/// Length of the `scratch` slice [`caser_horizontal`] needs: one score per window and filter,
/// `(l − height + 1)·nf`.
pub fn caser_horizontal_scratch_len(l: usize, height: usize, nf: usize) -> usize {
    (l + 1).saturating_sub(height) * nf
}

#[track_caller]
fn check_horizontal(
    x: &[f32],
    l: usize,
    e: usize,
    height: usize,
    w: &[f32],
    b: &[f32],
    nf: usize,
    out: &[f32],
) {
    assert!(
        height >= 1 && height <= l,
        "caser_horizontal: height is {height}, expected 1..=l = 1..={l}"
    );
    let checks = [
        ("x", x.len(), l * e, "l·e"),
        ("w", w.len(), nf * height * e, "nf·height·e"),
        ("b", b.len(), nf, "nf"),
        ("out", out.len(), nf, "nf"),
    ];
    for (name, found, expected, what) in checks {
        assert_eq!(
            found, expected,
            "caser_horizontal: {name} has {found} values, expected {what} = {expected} (l={l}, e={e}, height={height}, nf={nf})"
        );
    }
}

#[track_caller]
fn check_horizontal_scratch(scratch: &[f32], l: usize, height: usize, nf: usize) {
    let needed = caser_horizontal_scratch_len(l, height, nf);
    assert!(
        scratch.len() >= needed,
        "caser_horizontal: scratch has {} values, expected at least (l−height+1)·nf = {needed}",
        scratch.len()
    );
}

/// Reference Caser horizontal convolution of one height (f64 accumulation, ReLU, then max).
///
/// # Panics
/// As [`caser_horizontal`] (no scratch).
pub fn caser_horizontal_ref(
    x: &[f32],
    l: usize,
    e: usize,
    height: usize,
    w: &[f32],
    b: &[f32],
    nf: usize,
    out: &mut [f32],
) {
    check_horizontal(x, l, e, height, w, b, nf, out);
    let he = height * e;
    for f in 0..nf {
        let mut best = f64::NEG_INFINITY;
        for s in 0..=l - height {
            let mut acc = b[f] as f64;
            for p in 0..he {
                acc += w[f * he + p] as f64 * x[s * e + p] as f64;
            }
            best = best.max(acc.max(0.0)); // ReLU, then max over the windows
        }
        out[f] = best as f32;
    }
}

/// `out[f] = max_s ReLU(b[f] + scores[s, f])` over the `[windows, nf]` scores.
fn relu_max_pool(scores: &[f32], b: &[f32], out: &mut [f32]) {
    let nf = out.len();
    out.fill(0.0); // every ReLU output is >= 0, and there is at least one window
    for row in scores.chunks_exact(nf) {
        for ((o, &sc), &bf) in out.iter_mut().zip(row).zip(b) {
            *o = o.max(bf + sc);
        }
    }
}

struct HorizontalBody<'a> {
    x: &'a [f32],
    e: usize,
    he: usize,
    w: &'a [f32],
    scores: &'a mut [f32],
    nf: usize,
}

impl WithSimd for HorizontalBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self {
            x,
            e,
            he,
            w,
            scores,
            nf,
        } = self;
        for (win, row) in scores.chunks_exact_mut(nf).enumerate() {
            dot_rows_simd(s, w, &x[win * e..win * e + he], row);
        }
    }
}

/// Caser horizontal convolution of one height with the pulp body for `isa`.
///
/// # Panics
/// As [`caser_horizontal`].
pub fn caser_horizontal_isa(
    isa: Isa,
    x: &[f32],
    l: usize,
    e: usize,
    height: usize,
    w: &[f32],
    b: &[f32],
    nf: usize,
    out: &mut [f32],
    scratch: &mut [f32],
) {
    check_horizontal(x, l, e, height, w, b, nf, out);
    check_horizontal_scratch(scratch, l, height, nf);
    if nf == 0 {
        return;
    }
    let scores = &mut scratch[..caser_horizontal_scratch_len(l, height, nf)];
    isa.run(HorizontalBody {
        x,
        e,
        he: height * e,
        w,
        scores: &mut *scores,
        nf,
    });
    relu_max_pool(scores, b, out);
}

/// Caser's horizontal convolution of one height `height` (1..=l): `nf` filters `w`
/// `[nf, height, e]` (PyTorch `[nf, 1, height, e]`) over every window of `x` `[l, e]`, ReLU,
/// then the max over the `l − height + 1` windows, into `out` `[nf]`. Under `std` the scores of
/// all windows are one `gemm` whose left operand is `x` read with overlapping rows (window `s`
/// starts at `s·e`); without it, the pulp body.
///
/// # Panics
/// If `height` is not in `1..=l`, `x.len() != l·e`, `w.len() != nf·height·e`,
/// `b.len() != nf`, `out.len() != nf`, or
/// `scratch.len() < caser_horizontal_scratch_len(l, height, nf)`.
pub fn caser_horizontal(
    x: &[f32],
    l: usize,
    e: usize,
    height: usize,
    w: &[f32],
    b: &[f32],
    nf: usize,
    out: &mut [f32],
    scratch: &mut [f32],
) {
    check_horizontal(x, l, e, height, w, b, nf, out);
    check_horizontal_scratch(scratch, l, height, nf);
    #[cfg(feature = "std")]
    if nf > 0 && e > 0 {
        let windows = l - height + 1;
        let he = height * e;
        let scores = &mut scratch[..windows * nf];
        // SAFETY: scores is windows×nf row-major (row stride nf, column stride 1). The left
        // operand is windows×he with element (s, p) at x[s·e + p]; its largest index is
        // (windows−1)·e + he − 1 = l·e − 1 < x.len() (checked), and overlapping rows are only
        // read. The right operand is he×nf with element (p, f) at w[f·he + p], largest index
        // nf·he − 1 < w.len() (checked). scores is a distinct &mut, so it aliases neither.
        unsafe {
            super::linear::gemm_raw(
                scores.as_mut_ptr(),
                nf as isize,
                1,
                x.as_ptr(),
                e as isize,
                1,
                w.as_ptr(),
                1,
                he as isize,
                windows,
                he,
                nf,
                false,
            )
        };
        relu_max_pool(scores, b, out);
        return;
    }
    caser_horizontal_isa(Isa::detect(), x, l, e, height, w, b, nf, out, scratch);
}

#[cfg(test)]
mod tests;
