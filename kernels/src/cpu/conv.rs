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
//! to eight vectors of outputs accumulating scalar × row products; horizontal: dot products of
//! two windows × four filters per block, sharing every load). Fast paths: the causal conv runs
//! one register-blocked [`super::linear::matmul`] per tap (allocation-free) for more than one
//! row and its pulp body for a single row; both Caser convolutions use their pulp bodies.
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
    debug_assert!((v + N) * core::mem::size_of::<S::f32s>() <= n * 4);
    let lanes = core::mem::size_of::<S::f32s>() / core::mem::size_of::<f32>();
    let (col0, width) = (v * lanes, N * lanes);
    let mut acc: [S::f32s; N] = core::array::from_fn(|q| y[q]);
    for (i, &a) in coef.iter().enumerate() {
        let start = i * stride + col0;
        // Exactly N full vectors (`width` is N·lanes), so the indexing below is check-free.
        let (block, _) = S::as_simd_f32s(&rows[start..start + width]);
        let av = s.splat_f32s(a);
        for q in 0..N {
            acc[q] = s.mul_add_f32s(av, block[q], acc[q]);
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
/// by [`pack_conv_taps`]. For more than one row, one [`super::linear::matmul`] per tap
/// accumulates the tap's `[in, out]` matrix applied to the shifted rows; for one, the pulp
/// body.
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
        // Two windows at a time share every load of the filters.
        let windows = scores.len() / nf;
        let mut pairs = scores.chunks_exact_mut(2 * nf);
        for (pair, rows) in (&mut pairs).enumerate() {
            let (row0, row1) = rows.split_at_mut(nf);
            let s0 = 2 * pair * e;
            let x0 = &x[s0..s0 + he];
            let x1 = &x[s0 + e..s0 + e + he];
            dot_rows_pair_simd(s, w, x0, x1, row0, row1);
        }
        let last = pairs.into_remainder();
        if !last.is_empty() {
            let s0 = (windows - 1) * e;
            dot_rows_simd(s, w, &x[s0..s0 + he], last);
        }
    }
}

/// `out0[i] = w_i · x0` and `out1[i] = w_i · x1` for every row `w_i` of `w` (rows of length
/// `x0.len() == x1.len()`): blocks of four rows × two vectors, eight accumulation chains for six
/// loads, so the two products cost little more than one.
#[inline(always)]
fn dot_rows_pair_simd<S: Simd>(
    s: S,
    w: &[f32],
    x0: &[f32],
    x1: &[f32],
    out0: &mut [f32],
    out1: &mut [f32],
) {
    let k = x0.len();
    debug_assert!(x1.len() == k && w.len() == out0.len() * k && out1.len() == out0.len());
    if k == 0 {
        out0.fill(0.0);
        out1.fill(0.0);
        return;
    }
    let (x0_head, x0_tail) = S::as_simd_f32s(x0);
    let (x1_head, x1_tail) = S::as_simd_f32s(x1);
    let x1_head = &x1_head[..x0_head.len()];
    let tails = if x0_tail.is_empty() {
        None
    } else {
        Some([s.partial_load_f32s(x0_tail), s.partial_load_f32s(x1_tail)])
    };
    let xs = [x0_head, x1_head];
    let mut w_blocks = w.chunks_exact(4 * k);
    let mut o0 = out0.chunks_exact_mut(4);
    let mut o1 = out1.chunks_exact_mut(4);
    for ((wb, ob0), ob1) in (&mut w_blocks).zip(&mut o0).zip(&mut o1) {
        dot_pair_block::<4, S>(s, wb, k, xs, tails, [ob0, ob1]);
    }
    let w_rest = w_blocks.remainder();
    let (o0, o1) = (o0.into_remainder(), o1.into_remainder());
    for ((wb, ob0), ob1) in w_rest
        .chunks_exact(k)
        .zip(o0.chunks_exact_mut(1))
        .zip(o1.chunks_exact_mut(1))
    {
        dot_pair_block::<1, S>(s, wb, k, xs, tails, [ob0, ob1]);
    }
}

/// One block of [`dot_rows_pair_simd`]: `N` rows of `w` against both vectors.
#[inline(always)]
fn dot_pair_block<const N: usize, S: Simd>(
    s: S,
    w: &[f32],
    k: usize,
    [x0, x1]: [&[S::f32s]; 2],
    tails: Option<[S::f32s; 2]>,
    [out0, out1]: [&mut [f32]; 2],
) {
    let nv = x0.len();
    let x1 = &x1[..nv];
    let rows: [(&[S::f32s], &[f32]); N] =
        core::array::from_fn(|i| S::as_simd_f32s(&w[i * k..(i + 1) * k]));
    let heads: [&[S::f32s]; N] = core::array::from_fn(|i| &rows[i].0[..nv]);
    let mut acc0 = [s.splat_f32s(0.0); N];
    let mut acc1 = [s.splat_f32s(0.0); N];
    for v in 0..nv {
        let (a, b) = (x0[v], x1[v]);
        for i in 0..N {
            let wv = heads[i][v];
            acc0[i] = s.mul_add_f32s(wv, a, acc0[i]);
            acc1[i] = s.mul_add_f32s(wv, b, acc1[i]);
        }
    }
    if let Some([t0, t1]) = tails {
        for i in 0..N {
            let wt = s.partial_load_f32s(rows[i].1);
            acc0[i] = s.mul_add_f32s(wt, t0, acc0[i]);
            acc1[i] = s.mul_add_f32s(wt, t1, acc1[i]);
        }
    }
    for i in 0..N {
        out0[i] = s.reduce_sum_f32s(acc0[i]);
        out1[i] = s.reduce_sum_f32s(acc1[i]);
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
/// then the max over the `l − height + 1` windows, into `out` `[nf]`. `scratch` receives the
/// scores of every window and filter (`[windows, nf]`). Fast path: the pulp body (two windows
/// × four filters per block; it beats `gemm`, which has to pack the overlapping windows).
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
    caser_horizontal_isa(Isa::detect(), x, l, e, height, w, b, nf, out, scratch);
}

#[cfg(test)]
mod tests;
