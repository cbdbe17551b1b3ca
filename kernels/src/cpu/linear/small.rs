//! Register-blocked products for small matrices, written once as pulp bodies and allocating
//! nothing (the only scratch is a 16 KiB panel on the stack, and one more for widened weights).
//! They are the bodies of [`super::linear_isa`] (and its 16-bit siblings, for weights in any
//! storage: [`Weights`]) and [`super::matmul_isa`] when the few-row kernel does not run.
//!
//! - Broadcast tiles (`matmul`, and `linear` with many rows): the output is computed in tiles
//!   of [`MR`] rows × [`NRV`] vectors of columns, `MR·NRV` accumulators that each step `p`
//!   updates with the broadcast left-hand value times `NRV` vectors of row `p` of the
//!   right-hand side (on x86-64-v3, 6 × 16 floats in 12 registers). The right-hand side is read
//!   in panels of `NRV·lanes` columns × at most `kc` rows: for `matmul` the rows of `b` in
//!   place (a zero-padded copy at the right edge; a copy of every panel when `b` is wide and
//!   many rows reuse it), for `linear` a transposed copy of `NRV·lanes` rows of `w`, both in
//!   the stack panel (weights in another storage are first widened row by row into a second
//!   stack buffer, with their row scales). The columns are processed in chunks of at most
//!   [`MAX_PANELS`] panels (as many as the stack panel holds at this depth); within a chunk
//!   every tile row runs across all its panels, so the chunk of the right-hand side stays in
//!   cache and each output row is written in long runs. Depths beyond `kc` are summed in
//!   blocks. Tiles of one to three rows (the edge) split the depth over several sets of
//!   accumulators to keep enough independent chains.
//! - Dot tiles (`linear` with f32 weights and few rows for its depth, where transposing `w`
//!   would cost more than it saves): [`DOT_R`] rows of `x` × [`DOT_C`] rows of `w`, one
//!   accumulator per pair, reduced horizontally at the end; `w` is walked in blocks of rows
//!   that stay in cache while every row of `x` passes over them.
//!
//! Edge rows use the same tiles with fewer rows; edge columns use partial loads and stores.

use super::weights::{Ahead, LINE, Weights};

/// Distance of the weight prefetches of the dot tiles (one per line of each tile of `w`). Without
/// them a table streamed from memory (the catalog scan) runs at half speed with 512-bit loads:
/// one core scanning 352,602 × 64 f32 rows on AMD EPYC (Zen 4) took 22 ms at v4 and 11.8 ms at
/// v3 before, 9.4 ms and 8.3 ms with them (one run).
const DOT_PREFETCH_BYTES: usize = 4096;
use pulp::{Simd, WithSimd};

/// Output rows per broadcast tile.
const MR: usize = 6;
/// Vectors of output columns per broadcast tile.
const NRV: usize = 2;
/// Floats in the on-stack panel (16 KiB): a panel holds `kc ≤ PANEL / (NRV·lanes)` rows.
const PANEL: usize = 4096;
/// Most panels in a chunk of columns.
const MAX_PANELS: usize = 16;
/// `matmul` copies every panel of `b` when `b` has at least this many columns (and the panels
/// are reused by enough rows).
const PACK_MIN_COLS: usize = 512;
/// Rows of `x` per dot tile.
const DOT_R: usize = 3;
/// Rows of `w` per dot tile.
const DOT_C: usize = 4;
/// Floats of `w` per block of rows in the dot path (32 KiB).
const DOT_BLOCK: usize = 8192;

/// Whether `linear` takes the dot tiles: when `x` has at most half as many rows as the depth
/// (measured crossover on x86-64-v3: the reductions cost about as much as the transposition
/// there).
#[inline(always)]
fn linear_prefers_dot(m: usize, k: usize) -> bool {
    2 * m <= k
}

/// `NRV` vectors of zeros.
#[inline(always)]
fn zeros<S: Simd>(s: S) -> [S::f32s; NRV] {
    [s.splat_f32s(0.0); NRV]
}

/// `values` (at most `NRV`·lanes long) as `NRV` vectors, zero-filled past the end.
#[inline(always)]
fn load_row<S: Simd>(s: S, values: &[f32]) -> [S::f32s; NRV] {
    let (head, tail) = S::as_simd_f32s(values);
    // Vector by vector: a slice copy of variable length would become a call to memcpy.
    core::array::from_fn(|v| match head.get(v) {
        Some(&h) => h,
        None if v == head.len() && !tail.is_empty() => s.partial_load_f32s(tail),
        None => s.splat_f32s(0.0),
    })
}

/// One panel of the right-hand side: row `p` is the `NRV` vectors at `b[p·ldb ..]`; it feeds
/// output columns `col .. col + width`, whose starting value is `init` (or the current output
/// when `None`).
#[derive(Copy, Clone)]
struct Panel<'a, S: Simd> {
    b: &'a [f32],
    ldb: usize,
    col: usize,
    width: usize,
    init: Option<[S::f32s; NRV]>,
}

/// One step of a broadcast tile: `acc[r] += rows[r][p]·b_p` for the `NRV` vectors of `b_p`.
#[inline(always)]
fn step<S: Simd, const R: usize>(
    s: S,
    rows: &[&[f32]; R],
    p: usize,
    b_p: &[f32],
    acc: &mut [[S::f32s; NRV]; R],
) {
    let (bv, _) = S::as_simd_f32s(b_p);
    let bv: [S::f32s; NRV] = core::array::from_fn(|v| bv[v]);
    for r in 0..R {
        let av = s.splat_f32s(rows[r][p]);
        for v in 0..NRV {
            acc[r][v] = s.mul_add_f32s(av, bv[v], acc[r][v]);
        }
    }
}

/// `R`×(`NRV`·lanes) sums `Σ_p a[r·lda + p]·panel[p]` for `p < kc`, accumulated in `U`
/// interleaved sets (steps `p ≡ u mod U`) so that tiles of few rows still have enough
/// independent multiply-add chains to hide their latency.
#[inline(always)]
fn broadcast_tile<S: Simd, const R: usize, const U: usize>(
    s: S,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    kc: usize,
) -> [[S::f32s; NRV]; R] {
    let nr = NRV * S::F32_LANES;
    let mut acc = [[zeros(s); R]; U];
    // Re-slicing every row to exactly `kc` values lets the compiler drop the bounds checks.
    let rows: [&[f32]; R] = core::array::from_fn(|r| &a[r * lda..r * lda + kc]);
    let mut p = 0;
    while p + U <= kc {
        for (u, acc) in acc.iter_mut().enumerate() {
            step::<S, R>(s, &rows, p + u, &b[(p + u) * ldb..(p + u) * ldb + nr], acc);
        }
        p += U;
    }
    for (u, p) in (p..kc).enumerate() {
        step::<S, R>(s, &rows, p, &b[p * ldb..p * ldb + nr], &mut acc[u]);
    }
    let mut sum = acc[0];
    for acc in &acc[1..] {
        for r in 0..R {
            for v in 0..NRV {
                sum[r][v] = s.add_f32s(sum[r][v], acc[r][v]);
            }
        }
    }
    sum
}

/// Writes a tile: `y[r·ldy + c] = base + acc[r][c]` for `c < width`, where `base` is `init`
/// when given and the current value of `y` otherwise.
#[inline(always)]
fn store_tile<S: Simd, const R: usize>(
    s: S,
    acc: &[[S::f32s; NRV]; R],
    y: &mut [f32],
    ldy: usize,
    width: usize,
    init: Option<&[S::f32s; NRV]>,
) {
    for (r, acc_r) in acc.iter().enumerate() {
        let row = &mut y[r * ldy..r * ldy + width];
        let (head, tail) = S::as_mut_simd_f32s(row);
        let full = head.len();
        for (v, out) in head.iter_mut().enumerate() {
            let base = init.map_or(*out, |b| b[v]);
            *out = s.add_f32s(base, acc_r[v]);
        }
        if !tail.is_empty() {
            let base = init.map_or_else(|| s.partial_load_f32s(tail), |b| b[full]);
            s.partial_store_f32s(tail, s.add_f32s(base, acc_r[full]));
        }
    }
}

/// `R` rows of `a` (from its first row) against every panel of a chunk, with `U` sets of
/// accumulators (see [`broadcast_tile`]).
#[inline(always)]
fn tile_row<S: Simd, const R: usize, const U: usize>(
    s: S,
    a: &[f32],
    lda: usize,
    kc: usize,
    panels: &[Panel<'_, S>],
    y: &mut [f32],
    ldy: usize,
) {
    for panel in panels {
        let acc = broadcast_tile::<S, R, U>(s, a, lda, panel.b, panel.ldb, kc);
        let init = panel.init.as_ref();
        store_tile::<S, R>(s, &acc, &mut y[panel.col..], ldy, panel.width, init);
    }
}

/// The broadcast tiles of all `m` rows of `a` (depth `kc`) against a chunk of panels; edge
/// tiles of one to three rows split the depth over several sets of accumulators (at least
/// eight independent chains each).
#[inline(always)]
fn broadcast_chunk<S: Simd>(
    s: S,
    a: &[f32],
    lda: usize,
    kc: usize,
    panels: &[Panel<'_, S>],
    y: &mut [f32],
    ldy: usize,
    m: usize,
) {
    let mut i = 0;
    while i + MR <= m {
        tile_row::<S, MR, 1>(s, &a[i * lda..], lda, kc, panels, &mut y[i * ldy..], ldy);
        i += MR;
    }
    if i == m {
        return;
    }
    let (a, y) = (&a[i * lda..], &mut y[i * ldy..]);
    match m - i {
        1 => tile_row::<S, 1, 4>(s, a, lda, kc, panels, y, ldy),
        2 => tile_row::<S, 2, 2>(s, a, lda, kc, panels, y, ldy),
        3 => tile_row::<S, 3, 2>(s, a, lda, kc, panels, y, ldy),
        4 => tile_row::<S, 4, 1>(s, a, lda, kc, panels, y, ldy),
        _ => tile_row::<S, 5, 1>(s, a, lda, kc, panels, y, ldy),
    }
}

/// Depth blocks and column chunks of the broadcast drivers for panels `nr` columns wide:
/// `(kc_max, columns per chunk)`, so that a chunk's panels fill the stack panel at most.
#[inline(always)]
fn blocking(nr: usize, k: usize) -> (usize, usize) {
    let kc_max = PANEL / nr;
    let kc = kc_max.min(k);
    let panels = (PANEL / (kc * nr)).clamp(1, MAX_PANELS);
    (kc_max, panels * nr)
}

/// A placeholder for the unused slots of a chunk's panel array.
#[inline(always)]
fn no_panel<'a, S: Simd>() -> Panel<'a, S> {
    Panel {
        b: &[],
        ldb: 0,
        col: 0,
        width: 0,
        init: None,
    }
}

/// `c = (accumulate ? c : 0) + a·b` with broadcast tiles; shapes checked by the caller, and
/// `m`, `k`, `n` all positive.
pub(super) struct MatmulSmall<'a> {
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub c: &'a mut [f32],
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub accumulate: bool,
}

impl WithSimd for MatmulSmall<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self {
            a,
            b,
            c,
            m,
            k,
            n,
            accumulate,
        } = self;
        let nr = NRV * S::F32_LANES;
        let (kc_max, chunk) = blocking(nr, k);
        // b is read in place, except for a zero-padded copy of a partial right edge, unless it
        // is wide (rows at least 2 KiB apart, so that a panel's rows crowd into few cache sets)
        // and reused by at least four tiles of rows: then every panel is copied into the stack
        // panel (it gains with many rows, loses with few: figures in PERFORMANCE.md).
        let pack_all = m >= 4 * MR && n >= PACK_MIN_COLS;
        let mut packed = [0.0f32; PANEL];
        for jc in (0..n).step_by(chunk) {
            let cw = chunk.min(n - jc);
            let nq = cw.div_ceil(nr);
            for p0 in (0..k).step_by(kc_max) {
                let kc = kc_max.min(k - p0);
                for (q, dst) in packed.chunks_exact_mut(kc * nr).take(nq).enumerate() {
                    let width = nr.min(cw - q * nr);
                    if pack_all || width < nr {
                        pack_rows(s, dst, &b[p0 * n + jc + q * nr..], n, width, kc);
                    }
                }
                let init = (p0 == 0 && !accumulate).then(|| zeros(s));
                let panels: [Panel<'_, S>; MAX_PANELS] = core::array::from_fn(|q| {
                    let col = q * nr;
                    if q >= nq {
                        return no_panel();
                    }
                    let width = nr.min(cw - col);
                    let (b, ldb) = if pack_all || width < nr {
                        (&packed[q * kc * nr..(q + 1) * kc * nr], nr)
                    } else {
                        (&b[p0 * n + jc + col..], n)
                    };
                    Panel {
                        b,
                        ldb,
                        col,
                        width,
                        init,
                    }
                });
                broadcast_chunk(s, &a[p0..], k, kc, &panels[..nq], &mut c[jc..], n, m);
            }
        }
    }
}

/// Copies `kc` rows of `width ≤ NRV·lanes` values of `b` (row stride `ldb`) into `panel`
/// (`kc` rows of `NRV` vectors), zero-filling columns `width..`.
#[inline(always)]
fn pack_rows<S: Simd>(s: S, panel: &mut [f32], b: &[f32], ldb: usize, width: usize, kc: usize) {
    let (panel, _) = S::as_mut_simd_f32s(panel);
    for (p, dst) in panel.chunks_exact_mut(NRV).take(kc).enumerate() {
        dst.copy_from_slice(&load_row(s, &b[p * ldb..p * ldb + width]));
    }
}

/// Packs rows `j .. j + width` (`width ≤ nr`) of `w`, depth `p0 .. p0 + kc`, transposed into
/// `panel` (see [`pack_transposed`]): f32 weights from where they are, others widened row by
/// row into `wide` (`width·kc ≤ PANEL` values) first.
#[inline(always)]
fn pack_weights<S: Simd, W: Weights>(
    s: S,
    w: &W,
    wide: &mut [f32],
    panel: &mut [f32],
    nr: usize,
    (j, p0): (usize, usize),
    (width, kc, k): (usize, usize, usize),
) {
    if let Some(w) = w.f32_in_place() {
        pack_transposed(panel, nr, &w[j * k + p0..], k, width, kc);
        return;
    }
    for (c, dst) in wide.chunks_exact_mut(kc).take(width).enumerate() {
        w.widen_row(s, j + c, (j + c) * k + p0, dst);
    }
    pack_transposed(panel, nr, wide, kc, width, kc);
}

/// `y = x·wᵀ + bias` (`w` is `[n, k]`, in any storage); shapes checked by the caller, and `m`,
/// `k`, `n` all positive. With `broadcast`, always the broadcast tiles (else the dot tiles when
/// `x` has few rows for its depth and `w` is f32).
pub(super) struct LinearSmall<'a, W> {
    pub x: &'a [f32],
    pub w: W,
    pub bias: Option<&'a [f32]>,
    pub y: &'a mut [f32],
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub broadcast: bool,
}

impl<W: Weights> WithSimd for LinearSmall<'_, W> {
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
            broadcast,
        } = self;
        let shape = (m, k, n);
        match w.f32_in_place() {
            Some(w) if !broadcast && linear_prefers_dot(m, k) => {
                linear_dot(s, x, w, bias, y, m, k, n, false);
            }
            // f32 weights are packed from where they are: no buffer of widened rows.
            Some(_) => broadcast_linear(s, x, &w, bias, y, shape, &mut []),
            None => broadcast_linear(s, x, &w, bias, y, shape, &mut [0.0; PANEL]),
        }
    }
}

/// `linear` with broadcast tiles, `w` packed transposed panel by panel (through `wide`, a
/// buffer of `PANEL` values, when it is not f32).
#[inline(always)]
fn broadcast_linear<S: Simd, W: Weights>(
    s: S,
    x: &[f32],
    w: &W,
    bias: Option<&[f32]>,
    y: &mut [f32],
    (m, k, n): (usize, usize, usize),
    wide: &mut [f32],
) {
    let nr = NRV * S::F32_LANES;
    let (kc_max, chunk) = blocking(nr, k);
    let mut packed = [0.0f32; PANEL];
    for jc in (0..n).step_by(chunk) {
        let cw = chunk.min(n - jc);
        let nq = cw.div_ceil(nr);
        for p0 in (0..k).step_by(kc_max) {
            let kc = kc_max.min(k - p0);
            for (q, dst) in packed.chunks_exact_mut(kc * nr).take(nq).enumerate() {
                let width = nr.min(cw - q * nr);
                pack_weights(s, w, wide, dst, nr, (jc + q * nr, p0), (width, kc, k));
            }
            let panels: [Panel<'_, S>; MAX_PANELS] = core::array::from_fn(|q| {
                if q >= nq {
                    return no_panel();
                }
                let col = q * nr;
                let width = nr.min(cw - col);
                let j = jc + col;
                Panel {
                    b: &packed[q * kc * nr..(q + 1) * kc * nr],
                    ldb: nr,
                    col,
                    width,
                    init: (p0 == 0)
                        .then(|| bias.map_or_else(|| zeros(s), |b| load_row(s, &b[j..j + width]))),
                }
            });
            broadcast_chunk(s, &x[p0..], k, kc, &panels[..nq], &mut y[jc..], n, m);
        }
    }
}

/// Packs `width` rows of `w` (row stride `k`), `kc` values each, transposed into `panel`
/// (`kc` rows of `nr` values: `panel[p·nr + c] = w[c·k + p]`), zero-filling columns
/// `width..nr`. Four rows at a time, so that every step stores four adjacent values.
#[inline(always)]
fn pack_transposed(panel: &mut [f32], nr: usize, w: &[f32], k: usize, width: usize, kc: usize) {
    let mut c = 0;
    while c + 4 <= width {
        let [r0, r1, r2, r3]: [&[f32]; 4] = core::array::from_fn(|q| &w[(c + q) * k..][..kc]);
        let rows = r0.iter().zip(r1).zip(r2).zip(r3);
        for (dst, (((&a, &b), &e), &f)) in panel.chunks_exact_mut(nr).zip(rows) {
            dst[c..c + 4].copy_from_slice(&[a, b, e, f]);
        }
        c += 4;
    }
    for (p, dst) in panel.chunks_exact_mut(nr).enumerate() {
        for q in c..nr {
            dst[q] = if q < width { w[q * k + p] } else { 0.0 };
        }
    }
}

/// `y = x·wᵀ` with the dot tiles whatever the shape (the catalog scan: every output is summed
/// in the same order for any `m` and `n`); shapes checked by the caller, `m`, `k`, `n` positive.
pub(super) struct LinearDot<'a> {
    pub x: &'a [f32],
    pub w: &'a [f32],
    pub y: &'a mut [f32],
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// Prefetch `w` ahead ([`DOT_PREFETCH_BYTES`]): for a table streamed from memory.
    pub stream: bool,
}

impl WithSimd for LinearDot<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self {
            x,
            w,
            y,
            m,
            k,
            n,
            stream,
        } = self;
        linear_dot(s, x, w, None, y, m, k, n, stream);
    }
}

/// `linear` with dot tiles: [`DOT_R`] rows of `x` × [`DOT_C`] rows of `w` (12 accumulators),
/// the last one or two rows with 1 × 8 or 2 × 6 tiles; `w` in blocks of rows that stay in
/// cache while every row of `x` passes over them.
#[inline(always)]
fn linear_dot<S: Simd>(
    s: S,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    stream: bool,
) {
    // A multiple of every tile width (4, 6, 8), so that only the last block has edge rows.
    let block = (DOT_BLOCK / k / 24).max(1) * 24;
    for jb in (0..n).step_by(block) {
        let nb = block.min(n - jb);
        let w = &w[jb * k..(jb + nb) * k];
        let bias = bias.map(|b| &b[jb..jb + nb]);
        let mut i = 0;
        while i + DOT_R <= m {
            let (xi, yi) = (&x[i * k..(i + DOT_R) * k], &mut y[i * n + jb..]);
            dot_rows::<S, DOT_R, DOT_C>(s, xi, w, bias, yi, (k, n, nb), stream);
            i += DOT_R;
        }
        if i == m {
            continue;
        }
        let (x, y) = (&x[i * k..], &mut y[i * n + jb..]);
        match m - i {
            1 => dot_rows::<S, 1, 8>(s, x, w, bias, y, (k, n, nb), stream),
            _ => dot_rows::<S, 2, 6>(s, x, w, bias, y, (k, n, nb), stream),
        }
    }
}

/// `y[r·ldy + j] = x_r · w_j + bias[j]` for the `R` rows of `x` and the `nb` rows of `w`, `C`
/// rows of `w` at a time.
#[inline(always)]
fn dot_rows<S: Simd, const R: usize, const C: usize>(
    s: S,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    (k, ldy, nb): (usize, usize, usize),
    stream: bool,
) {
    let mut j = 0;
    let ahead = Ahead {
        values: DOT_PREFETCH_BYTES / core::mem::size_of::<f32>(),
        end: w.as_ptr_range().end as usize,
    };
    while j + C <= nb {
        let tile = &w[j * k..(j + C) * k];
        if stream {
            for line in (0..tile.len()).step_by(LINE / core::mem::size_of::<f32>()) {
                ahead.fetch(tile, line);
            }
        }
        dot_tile::<S, R, C>(s, x, tile, bias, y, j, k, ldy);
        j += C;
    }
    while j < nb {
        dot_tile::<S, R, 1>(s, x, &w[j * k..(j + 1) * k], bias, y, j, k, ldy);
        j += 1;
    }
}

/// One dot tile: outputs `y[r, j0 + c]` for `r < R`, `c < C`.
#[inline(always)]
fn dot_tile<S: Simd, const R: usize, const C: usize>(
    s: S,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    j0: usize,
    k: usize,
    ldy: usize,
) {
    let lanes = S::F32_LANES;
    let nv = k / lanes;
    let xs: [&[f32]; R] = core::array::from_fn(|r| &x[r * k..(r + 1) * k]);
    let ws: [&[f32]; C] = core::array::from_fn(|c| &w[c * k..(c + 1) * k]);
    let xh: [&[S::f32s]; R] = core::array::from_fn(|r| &S::as_simd_f32s(xs[r]).0[..nv]);
    let wh: [&[S::f32s]; C] = core::array::from_fn(|c| &S::as_simd_f32s(ws[c]).0[..nv]);
    let mut acc = [[s.splat_f32s(0.0); C]; R];
    for v in 0..nv {
        let xv: [S::f32s; R] = core::array::from_fn(|r| xh[r][v]);
        for c in 0..C {
            let wv = wh[c][v];
            for r in 0..R {
                acc[r][c] = s.mul_add_f32s(xv[r], wv, acc[r][c]);
            }
        }
    }
    if nv * lanes < k {
        let xv: [S::f32s; R] = core::array::from_fn(|r| s.partial_load_f32s(&xs[r][nv * lanes..]));
        for c in 0..C {
            let wv = s.partial_load_f32s(&ws[c][nv * lanes..]);
            for r in 0..R {
                acc[r][c] = s.mul_add_f32s(xv[r], wv, acc[r][c]);
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            let b = bias.map_or(0.0, |b| b[j0 + c]);
            y[r * ldy + j0 + c] = s.reduce_sum_f32s(acc[r][c]) + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{linear, linear_isa, linear_ref, matmul, matmul_isa, matmul_ref};
    use crate::Isa;
    use crate::testing::Rng;
    use alloc::vec;
    use alloc::vec::Vec;

    /// Every m, k and n is drawn from these: tiny, around the tile sizes (6 rows, 2·lanes
    /// columns, dot tiles of 2 × 4), the model shapes (50 rows) and one size that crosses the
    /// panel depth (kc = 256 floats on v3).
    const SIZES: &[usize] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 33, 50, 63, 64, 65, 257];

    /// Σ|x_i·w_i| for every output of a product given as `term(i, p, j) = lhs·rhs`.
    fn magnitudes(
        m: usize,
        k: usize,
        n: usize,
        term: impl Fn(usize, usize, usize) -> f32,
    ) -> Vec<f32> {
        let mut mag = vec![0.0f32; m * n];
        for i in 0..m {
            for p in 0..k {
                for j in 0..n {
                    mag[i * n + j] += term(i, p, j).abs();
                }
            }
        }
        mag
    }

    /// Runs `f` on every shape of the cube `SIZES³`, with a seeded generator.
    fn for_each_shape(seed: u64, mut f: impl FnMut(&mut Rng, usize, usize, usize)) {
        let mut rng = Rng::new(seed);
        for &m in SIZES {
            for &k in SIZES {
                for &n in SIZES {
                    f(&mut rng, m, k, n);
                }
            }
        }
    }

    fn check_linear_small(isa: Isa) {
        for_each_shape(21, |rng, m, k, n| {
            let x = rng.normal_vec(m * k, 1.0);
            let w = rng.normal_vec(n * k, 0.5);
            let b = rng.normal_vec(n, 0.5);
            // Half the shapes with a bias, alternating so that both cover every size.
            let bias = ((m + k + n) % 2 == 0).then_some(&b[..]);
            let mut want = vec![0.0; m * n];
            linear_ref(&x, &w, bias, &mut want, m, k, n);
            let mut got = vec![f32::NAN; m * n];
            linear_isa(isa, &x, &w, bias, &mut got, m, k, n);
            let mag = magnitudes(m, k, n, |i, p, j| x[i * k + p] * w[j * k + p]);
            for (at, ((&g, &r), &mag)) in got.iter().zip(&want).zip(&mag).enumerate() {
                // f32 sums in another order: 1e-5·(1 + Σ|x·w|), as for every linear path.
                assert!(
                    (g - r).abs() <= 1e-5 * (1.0 + mag),
                    "linear {isa} {m}x{k}x{n} bias={}: y[{}, {}] got {g} want {r}",
                    bias.is_some(),
                    at / n,
                    at % n
                );
            }
        });
    }
    crate::isa_tests!(linear_small, check_linear_small);

    fn check_matmul_small(isa: Isa) {
        for_each_shape(22, |rng, m, k, n| {
            let a = rng.normal_vec(m * k, 1.0);
            let b = rng.normal_vec(k * n, 0.5);
            let c0 = rng.normal_vec(m * n, 1.0);
            let accumulate = (m + k + n) % 2 == 1;
            let mut want = c0.clone();
            matmul_ref(&a, &b, &mut want, m, k, n, accumulate);
            let mut got = if accumulate {
                c0.clone()
            } else {
                vec![f32::NAN; m * n]
            };
            matmul_isa(isa, &a, &b, &mut got, m, k, n, accumulate);
            let mag = magnitudes(m, k, n, |i, p, j| a[i * k + p] * b[p * n + j]);
            for (at, ((&g, &r), &mag)) in got.iter().zip(&want).zip(&mag).enumerate() {
                // 1e-5·(1 + Σ|terms|), the accumulated value of c counting as a term.
                let base = if accumulate { c0[at].abs() } else { 0.0 };
                assert!(
                    (g - r).abs() <= 1e-5 * (1.0 + mag + base),
                    "matmul {isa} {m}x{k}x{n} acc={accumulate}: c[{}, {}] got {g} want {r}",
                    at / n,
                    at % n
                );
            }
        });
    }
    crate::isa_tests!(matmul_small, check_matmul_small);

    /// The dispatched fast paths (our kernels or `gemm` by shape) on both sides of the
    /// thresholds, with and without bias / accumulation, and the empty shapes.
    #[test]
    fn fast_paths_match_reference_across_the_threshold() {
        let mut rng = Rng::new(23);
        // k·n = 2^20 + 16 > GEMM_MIN_RHS: gemm for 65 rows (under std), ours for 64.
        let (k_big, n_big) = (16, (1 << 20) / 16 + 1);
        assert!(k_big * n_big > super::super::GEMM_MIN_RHS);
        assert!(super::super::prefers_gemm(65, k_big, n_big) == cfg!(feature = "std"));
        assert!(!super::super::prefers_gemm(64, k_big, n_big));
        let shapes = [
            (64, k_big, n_big),
            (65, k_big, n_big),
            (300, 33, 70),
            (0, 3, 4),
            (3, 0, 4),
            (3, 4, 0),
        ];
        for (m, k, n) in shapes {
            let x = rng.normal_vec(m * k, 1.0);
            let w = rng.normal_vec(n * k, 0.5);
            let b = rng.normal_vec(n, 0.5);
            let mag = magnitudes(m, k, n, |i, p, j| x[i * k + p] * w[j * k + p]);
            for bias in [None, Some(&b[..])] {
                let mut want = vec![0.0; m * n];
                linear_ref(&x, &w, bias, &mut want, m, k, n);
                let mut got = vec![f32::NAN; m * n];
                linear(&x, &w, bias, &mut got, m, k, n);
                for at in 0..m * n {
                    // 1e-5·(1 + Σ|x·w|), as above.
                    assert!(
                        (got[at] - want[at]).abs() <= 1e-5 * (1.0 + mag[at]),
                        "linear {m}x{k}x{n}: at {at} got {} want {}",
                        got[at],
                        want[at]
                    );
                }
            }
            // matmul with b = wᵀ stored [k, n], so the magnitudes are the same.
            let bt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
            let c0 = rng.normal_vec(m * n, 1.0);
            for accumulate in [false, true] {
                let mut want = c0.clone();
                matmul_ref(&x, &bt, &mut want, m, k, n, accumulate);
                let mut got = c0.clone();
                matmul(&x, &bt, &mut got, m, k, n, accumulate);
                for at in 0..m * n {
                    // 1e-5·(1 + Σ|terms|), c counting as a term when accumulated.
                    let base = if accumulate { c0[at].abs() } else { 0.0 };
                    assert!(
                        (got[at] - want[at]).abs() <= 1e-5 * (1.0 + mag[at] + base),
                        "matmul {m}x{k}x{n} acc={accumulate}: at {at} got {} want {}",
                        got[at],
                        want[at]
                    );
                }
            }
        }
    }
}
