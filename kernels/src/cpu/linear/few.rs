//! Few-row products: `y[m, n] = x[m, k]·w[n, k]ᵀ + b` for `m ≤ FEW_MAX_ROWS` (one short text,
//! one request), where every weight is read once from memory and the product runs at memory
//! speed, for weights in any storage ([`Weights`]). Which shapes take it is decided by
//! `super::linear_isa` and its 16-bit siblings.
//!
//! Dot tiles of up to [`R`] rows of `x` × [`C`] rows of `w`, walked one column tile (`C` rows
//! of `w`) at a time and, within it, over depth chunks of at most [`KC`] values: every row
//! block of `x` reuses the chunk from L1, so the weights stream from memory once, in order. The
//! vector partial sums of each (row, weight row) pair stay in a stack array across the chunks
//! and are reduced once at the end, then multiplied by the weight row's scale. The weights are
//! prefetched a whole number of column tiles, at least [`PREFETCH_BYTES`], ahead (the `C` rows
//! of a tile are read side by side, so that the hardware prefetchers alone fall behind at these
//! short rows), but never past the end of the weights: a product split across threads by
//! blocks of rows of `w` would otherwise fetch the start of the next thread's block into this
//! core's caches as well.
//!
//! Each chunk is read with the [`Reader`] its storage picks ([`Weights::read_rows`]): f32 in
//! place; f16 and i16 widened exactly in registers, by every row block (for f16 this was
//! measured cheaper than widening a chunk once into a stack buffer; see PERFORMANCE.md). A
//! storage that scans the chunk to pick its reader (f16, for inf/NaN) brings it in from
//! memory, prefetching ahead, in that scan; the dot tiles then prefetch nothing.
//!
//! Tolerance: as every `linear` path, `1e-5·(1 + Σ|x_i·w_i|)` per output against the f64
//! reference (of the exactly widened weights).

use super::weights::{Ahead, LINE, ReadWith, Reader, Weights};
use pulp::Simd;

/// Most rows of a few-row product (the size of the stack array of partial sums).
pub(super) const FEW_MAX_ROWS: usize = 32;

/// Rows of `x` per dot tile.
const R: usize = 4;
/// Rows of `w` per dot tile: 4 × 2 = 8 accumulators, two weight vectors and one of `x` take 11
/// of the 16 AVX2 registers, leaving room for the f16 decode.
const C: usize = 2;
/// Depth of a chunk (values).
const KC: usize = 512;
/// Least distance of the weight prefetches.
const PREFETCH_BYTES: usize = 8192;

/// The few-row product `y = x·wᵀ + bias`; shapes checked by the caller, `0 < m ≤ FEW_MAX_ROWS`,
/// `k` and `n` positive.
pub(super) struct FewRows<'a, W> {
    pub x: &'a [f32],
    pub w: W,
    pub bias: Option<&'a [f32]>,
    pub y: &'a mut [f32],
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

impl<W: Weights> pulp::WithSimd for FewRows<'_, W> {
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
        let mut acc = [[s.splat_f32s(0.0); C]; FEW_MAX_ROWS];
        // Prefetch distance in values: whole column tiles, at least PREFETCH_BYTES.
        let ahead = Ahead {
            values: (PREFETCH_BYTES / core::mem::size_of::<W::Elem>()).div_ceil(C * k) * C * k,
            end: w.values().as_ptr_range().end as usize,
        };
        let tile = Tile {
            x,
            bias,
            m,
            k,
            n,
            ahead,
        };
        let mut j0 = 0;
        while j0 + C <= n {
            column_tile::<S, W, C>(s, &tile, w, y, &mut acc, j0);
            j0 += C;
        }
        while j0 < n {
            column_tile::<S, W, 1>(s, &tile, w, y, &mut acc, j0);
            j0 += 1;
        }
    }
}

/// What every column tile shares.
struct Tile<'a> {
    x: &'a [f32],
    bias: Option<&'a [f32]>,
    m: usize,
    k: usize,
    n: usize,
    ahead: Ahead,
}

/// Outputs `y[i, j0 + c]` for every row `i` and `c < CC`.
#[inline(always)]
fn column_tile<S: Simd, W: Weights, const CC: usize>(
    s: S,
    t: &Tile<'_>,
    w: W,
    y: &mut [f32],
    acc: &mut [[S::f32s; C]; FEW_MAX_ROWS],
    j0: usize,
) {
    let Tile {
        x,
        bias,
        m,
        k,
        n,
        ahead,
    } = *t;
    for p0 in (0..k).step_by(KC) {
        let kc = KC.min(k - p0);
        let first = p0 == 0;
        let x = &x[p0..];
        // Rows j0 .. j0 + CC of w (stride k), depth p0 .. p0 + kc.
        let chunk = &w.values()[j0 * k + p0..(j0 + CC - 1) * k + p0 + kc];
        let rows: [_; CC] = core::array::from_fn(|c| &chunk[c * k..c * k + kc]);
        let blocks = RowBlocks::<S, _, CC> {
            s,
            x,
            w: chunk,
            kc,
            m,
            k,
            acc: &mut *acc,
            first,
            ahead,
        };
        w.read_rows(s, &rows, ahead, blocks);
    }
    for (i, acc) in acc[..m].iter().enumerate() {
        for (c, &a) in acc[..CC].iter().enumerate() {
            let b = bias.map_or(0.0, |b| b[j0 + c]);
            y[i * n + j0 + c] = s.reduce_sum_f32s(a) * w.scale(j0 + c) + b;
        }
    }
}

/// Every row block of `x` (rows of stride `k`, from the chunk's first column) against one
/// chunk `w` (`CC` rows of stride `k`, `kc` values each), with the reader its storage picked;
/// `first` starts the sums at zero. The first row block prefetches `ahead` unless the storage
/// scanned the chunk.
struct RowBlocks<'a, S: Simd, E, const CC: usize> {
    s: S,
    x: &'a [f32],
    w: &'a [E],
    kc: usize,
    m: usize,
    k: usize,
    acc: &'a mut [[S::f32s; C]; FEW_MAX_ROWS],
    first: bool,
    ahead: Ahead,
}

impl<S: Simd, E, const CC: usize> ReadWith<E> for RowBlocks<'_, S, E, CC> {
    type Output = ();
    #[inline(always)]
    fn run<Rd: Reader<Elem = E>>(self, rd: Rd, scanned: bool) {
        let Self {
            s,
            x,
            w,
            kc,
            m,
            k,
            acc,
            first,
            ahead,
        } = self;
        let pf = if scanned { None } else { Some(ahead) };
        row_blocks::<S, Rd, CC>(s, rd, x, w, (k, kc), (m, k), acc, first, pf);
    }
}

/// [`RowBlocks`] with the reader `rd` (chunk rows of stride `ld`).
#[inline(always)]
fn row_blocks<S: Simd, Rd: Reader, const CC: usize>(
    s: S,
    rd: Rd,
    x: &[f32],
    w: &[Rd::Elem],
    (ld, kc): (usize, usize),
    (m, k): (usize, usize),
    acc: &mut [[S::f32s; C]; FEW_MAX_ROWS],
    first: bool,
    pf: Option<Ahead>,
) {
    let mut i = 0;
    while i < m {
        // Only the first row block brings the chunk in: prefetch there.
        let pf = if i == 0 { pf } else { None };
        let (x, acc) = (&x[i * k..], &mut acc[i..]);
        let sh = (k, ld, kc);
        match m - i {
            1 => dot_tile::<S, Rd, 1, CC>(s, rd, x, w, sh, acc, first, pf),
            2 => dot_tile::<S, Rd, 2, CC>(s, rd, x, w, sh, acc, first, pf),
            3 => dot_tile::<S, Rd, 3, CC>(s, rd, x, w, sh, acc, first, pf),
            _ => dot_tile::<S, Rd, R, CC>(s, rd, x, w, sh, acc, first, pf),
        }
        i += R;
    }
}

/// `acc[r][c] (= 0 if first) += Σ_p x[r·ldx + p]·w[c·ldw + p]` over `p < kc` for `r < RR`,
/// `c < CC`, prefetching ahead of every weight row when `pf` is `Some(ahead)`.
#[inline(always)]
fn dot_tile<S: Simd, Rd: Reader, const RR: usize, const CC: usize>(
    s: S,
    rd: Rd,
    x: &[f32],
    w: &[Rd::Elem],
    (ldx, ldw, kc): (usize, usize, usize),
    acc: &mut [[S::f32s; C]],
    first: bool,
    pf: Option<Ahead>,
) {
    let lanes = S::F32_LANES;
    // Units of two vectors; every row is viewed as `nu` whole units (as `[T; 2·lanes]`-sized
    // elements) so that the loop indexes without checks.
    let unit = 2 * lanes;
    let nu = kc / unit;
    let xs: [&[f32]; RR] = core::array::from_fn(|r| &x[r * ldx..r * ldx + kc]);
    let ws: [&[Rd::Elem]; CC] = core::array::from_fn(|c| &w[c * ldw..c * ldw + kc]);
    let xu: [&[[S::f32s; 2]]; RR] =
        core::array::from_fn(|r| bytemuck::cast_slice(&S::as_simd_f32s(xs[r]).0[..2 * nu]));
    // Vectors are gathered with loops, not `core::array::from_fn`: its closures are not
    // always inlined into this target-feature body (a crate built without LTO, with several
    // codegen units), and out of line every SIMD operation in them becomes a call (the i16
    // text encoder ran eight times slower).
    let mut a = [[s.splat_f32s(0.0); CC]; RR];
    if !first {
        for r in 0..RR {
            a[r].copy_from_slice(&acc[r][..CC]);
        }
    }
    // Units per cache line of weights (at least one): one prefetch per row and line.
    let per_line = (LINE / core::mem::size_of::<Rd::Elem>() / unit).max(1);
    for u in 0..nu {
        if let Some(ahead) = pf
            && u % per_line == 0
        {
            for row in &ws {
                ahead.fetch(row, u * unit);
            }
        }
        let mut wv = [[s.splat_f32s(0.0); 2]; CC];
        for c in 0..CC {
            wv[c] = rd.unit(s, &ws[c][u * unit..(u + 1) * unit]);
        }
        for h in 0..2 {
            for r in 0..RR {
                let xv = xu[r][u][h];
                for c in 0..CC {
                    a[r][c] = s.mul_add_f32s(xv, wv[c][h], a[r][c]);
                }
            }
        }
    }
    // The last kc mod 2·lanes values, a vector at a time (zero-padded: missing lanes add 0·0).
    let mut p = nu * unit;
    while p < kc {
        let end = (p + lanes).min(kc);
        let mut wv = [s.splat_f32s(0.0); CC];
        for c in 0..CC {
            wv[c] = rd.part(s, &ws[c][p..end]);
        }
        for r in 0..RR {
            let xv = s.partial_load_f32s(&xs[r][p..end]);
            for c in 0..CC {
                a[r][c] = s.mul_add_f32s(xv, wv[c], a[r][c]);
            }
        }
        p = end;
    }
    for r in 0..RR {
        acc[r][..CC].copy_from_slice(&a[r]);
    }
}
