//! Few-row products: `y[m, n] = x[m, k]·w[n, k]ᵀ + b` for `m ≤ FEW_MAX_ROWS` (one short text,
//! one request), where every weight is read once from memory and the product runs at memory
//! speed. The body of [`super::linear_isa`], [`super::linear_f16_isa`] and
//! [`super::linear_i16_isa`] for such shapes.
//!
//! Dot tiles of up to [`R`] rows of `x` × [`C`] rows of `w`, walked one column tile (`C` rows
//! of `w`) at a time and, within it, over depth chunks of at most [`KC`] values: every row
//! block of `x` reuses the chunk from L1, so the weights stream from memory once, in order. The
//! vector partial sums of each (row, weight row) pair stay in a stack array across the chunks
//! and are reduced once at the end. The weights are prefetched a whole number of column tiles,
//! at least [`PREFETCH_BYTES`], ahead (the `C` rows of a tile are read side by side, so that
//! the hardware prefetchers alone fall behind at these short rows), but never past the end of
//! the weights: a product split across threads by blocks of rows of `w` would otherwise fetch
//! the start of the next thread's block into this core's caches as well.
//!
//! f32 weights are read in place. f16 and i16 weights are widened exactly in registers, by
//! every row block (for f16 this measured cheaper than widening a chunk once into a stack
//! buffer; see PERFORMANCE.md); i16 sums are scaled by their row's scale at the end. An f16
//! chunk's rows are first scanned for inf/NaN (the scan is also what brings them
//! in from memory, prefetching ahead): without, they take the three-operation decode, with,
//! the full one (see [`super::Decode`]).
//!
//! Tolerance: as every `linear` path, `1e-5·(1 + Σ|x_i·w_i|)` per output against the f64
//! reference (of the exactly widened weights).

use super::half_weights::{F16Weights, f16_non_finite};
use super::int16_weights::{I16Weights, i16_sext_to_f32s};
use super::{Decode, f16_bits_to_f32s, f16_finite_sext_to_f32s, load_widen_i16, load_widen_u16};
use bytemuck::Pod;
use pulp::Simd;

/// Most rows of a few-row product (the size of the stack array of partial sums).
pub(super) const FEW_MAX_ROWS: usize = 32;

/// Whether `linear` (f32 weights) takes the few-row kernel: from 2 to 8 rows, where streaming
/// the weights from memory beats the tiles of `small`; a single row streams faster through the
/// `small` dot tiles of 8 weight rows, and with more rows the register tiles of `small` catch
/// up (measurements in PERFORMANCE.md).
#[inline]
pub(super) fn f32_takes_few_rows(m: usize) -> bool {
    (2..=8).contains(&m)
}

/// Whether `linear_f16` takes the few-row kernel: up to [`FEW_MAX_ROWS`] rows. Reading half the
/// bytes and decoding them in registers keeps it ahead of the widening broadcast tiles for
/// more rows than with f32 weights (measurements in PERFORMANCE.md).
#[inline]
pub(super) fn f16_takes_few_rows(m: usize) -> bool {
    m <= FEW_MAX_ROWS
}

/// Rows of `x` per dot tile.
const R: usize = 4;
/// Rows of `w` per dot tile: 4 × 2 = 8 accumulators, two weight vectors and one of `x` take 11
/// of the 16 AVX2 registers, leaving room for the f16 decode.
const C: usize = 2;
/// Depth of a chunk (values).
const KC: usize = 512;
/// Least distance of the weight prefetches.
const PREFETCH_BYTES: usize = 8192;
/// Bytes in a cache line (the prefetch granularity).
pub(super) const LINE: usize = 64;

/// Where the weights are prefetched: `values` past the value being read, never past the end
/// of the weights (the address `end`), which would fetch another thread's block of a split
/// product (or unrelated memory) into this core's caches.
#[derive(Copy, Clone)]
pub(super) struct Ahead {
    pub values: usize,
    pub end: usize,
}

impl Ahead {
    /// Prefetches the line `self.values` values past `row[i]`, if it lies within the weights.
    #[inline(always)]
    pub(super) fn fetch<T>(self, row: &[T], i: usize) {
        let p = row.as_ptr().wrapping_add(i + self.values);
        if (p as usize) < self.end {
            prefetch(p.cast());
        }
    }
}

/// Hints the cache to load the line holding `p`.
#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint without architectural effect: it never faults and reads
    // nothing into the program, whatever the address (`p` comes from `wrapping_add` and may lie
    // past the weights).
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Reads weights as f32 vectors, in units of two vectors (`2·lanes` values: a cache line of
/// f32 on x86-64-v3).
trait Reader: Copy {
    /// The stored type.
    type Elem: Pod;
    /// The two vectors of the unit at `w` (exactly `2·lanes` values).
    fn unit<S: Simd>(self, s: S, w: &[Self::Elem]) -> [S::f32s; 2];
    /// At most `lanes` values, zero-padded.
    fn part<S: Simd>(self, s: S, w: &[Self::Elem]) -> S::f32s;
}

/// f32 weights.
#[derive(Copy, Clone)]
struct F32Reader;

impl Reader for F32Reader {
    type Elem = f32;
    #[inline(always)]
    fn unit<S: Simd>(self, _s: S, w: &[f32]) -> [S::f32s; 2] {
        let (head, _) = S::as_simd_f32s(w);
        [head[0], head[1]]
    }
    #[inline(always)]
    fn part<S: Simd>(self, s: S, w: &[f32]) -> S::f32s {
        s.partial_load_f32s(w)
    }
}

/// Widens one vector of 16-bit weights (at most `lanes` values, zero-padded) to f32: a
/// [`Reader`] of 16-bit weights, which reads a unit as two such vectors.
trait Widen16: Copy {
    fn widen<S: Simd>(self, s: S, w: &[u16]) -> S::f32s;
}

impl<Wd: Widen16> Reader for Wd {
    type Elem = u16;
    #[inline(always)]
    fn unit<S: Simd>(self, s: S, w: &[u16]) -> [S::f32s; 2] {
        let lanes = S::F32_LANES;
        [
            self.widen(s, &w[..lanes]),
            self.widen(s, &w[lanes..2 * lanes]),
        ]
    }
    #[inline(always)]
    fn part<S: Simd>(self, s: S, w: &[u16]) -> S::f32s {
        self.widen(s, w)
    }
}

/// f16 weights without inf/NaN ([`Decode::F16Finite`]).
#[derive(Copy, Clone)]
struct F16FiniteReader;

impl Widen16 for F16FiniteReader {
    #[inline(always)]
    fn widen<S: Simd>(self, s: S, w: &[u16]) -> S::f32s {
        f16_finite_sext_to_f32s(s, load_widen_i16(s, w))
    }
}

/// Any f16 weights ([`Decode::F16Exact`]).
#[derive(Copy, Clone)]
struct F16ExactReader;

impl Widen16 for F16ExactReader {
    #[inline(always)]
    fn widen<S: Simd>(self, s: S, w: &[u16]) -> S::f32s {
        f16_bits_to_f32s(s, load_widen_u16(s, w))
    }
}

/// i16 weights (the row scales are applied to the sums).
#[derive(Copy, Clone)]
struct I16Reader;

impl Widen16 for I16Reader {
    #[inline(always)]
    fn widen<S: Simd>(self, s: S, w: &[u16]) -> S::f32s {
        i16_sext_to_f32s(s, load_widen_i16(s, w))
    }
}

/// One depth chunk of a column tile as the dot tiles read it: rows of `ld` values.
pub(super) enum Chunk<'b> {
    /// f32 values, prefetched by the dot tiles.
    F32 { w: &'b [f32], ld: usize },
    /// i16 values widened in registers, prefetched by the dot tiles.
    I16 { w: &'b [u16], ld: usize },
    /// f16 values widened in registers.
    F16 {
        w: &'b [u16],
        ld: usize,
        decode: Decode,
    },
}

/// The weights of a few-row product.
pub(super) trait FewWeights: Copy {
    /// Bytes per weight.
    const BYTES: usize;
    /// The address one past the last weight.
    fn end(self) -> usize;
    /// The factor of the sums of row `j` (1 but for scaled integer rows).
    #[inline(always)]
    fn scale(self, _j: usize) -> f32 {
        1.0
    }
    /// Rows `j0 .. j0 + CC`, depth `p0 .. p0 + kc` (rows of `k` values), prefetching `ahead`.
    fn chunk<'b, S: Simd, const CC: usize>(
        self,
        s: S,
        at: (usize, usize),
        size: (usize, usize),
        ahead: Ahead,
    ) -> Chunk<'b>
    where
        Self: 'b;
}

impl FewWeights for &[f32] {
    const BYTES: usize = 4;
    #[inline(always)]
    fn end(self) -> usize {
        self.as_ptr_range().end as usize
    }
    #[inline(always)]
    fn chunk<'b, S: Simd, const CC: usize>(
        self,
        _s: S,
        (j0, p0): (usize, usize),
        (kc, k): (usize, usize),
        _ahead: Ahead,
    ) -> Chunk<'b>
    where
        Self: 'b,
    {
        Chunk::F32 {
            w: &self[j0 * k + p0..(j0 + CC - 1) * k + p0 + kc],
            ld: k,
        }
    }
}

impl FewWeights for F16Weights<'_> {
    const BYTES: usize = 2;
    #[inline(always)]
    fn end(self) -> usize {
        self.0.as_ptr_range().end as usize
    }
    /// Scans the chunk's rows for inf/NaN, which brings them in from memory (prefetching
    /// ahead), then hands them to the dot tiles to widen in registers.
    #[inline(always)]
    fn chunk<'b, S: Simd, const CC: usize>(
        self,
        s: S,
        (j0, p0): (usize, usize),
        (kc, k): (usize, usize),
        ahead: Ahead,
    ) -> Chunk<'b>
    where
        Self: 'b,
    {
        let mut finite = true;
        for c in 0..CC {
            let at = (j0 + c) * k + p0;
            finite &= !f16_non_finite(s, &self.0[at..at + kc], ahead);
        }
        let decode = if finite {
            Decode::F16Finite
        } else {
            Decode::F16Exact
        };
        Chunk::F16 {
            w: &self.0[j0 * k + p0..(j0 + CC - 1) * k + p0 + kc],
            ld: k,
            decode,
        }
    }
}

impl FewWeights for I16Weights<'_> {
    const BYTES: usize = 2;
    #[inline(always)]
    fn end(self) -> usize {
        self.q.as_ptr_range().end as usize
    }
    #[inline(always)]
    fn scale(self, j: usize) -> f32 {
        self.scales[j]
    }
    #[inline(always)]
    fn chunk<'b, S: Simd, const CC: usize>(
        self,
        _s: S,
        (j0, p0): (usize, usize),
        (kc, k): (usize, usize),
        _ahead: Ahead,
    ) -> Chunk<'b>
    where
        Self: 'b,
    {
        Chunk::I16 {
            w: &self.q[j0 * k + p0..(j0 + CC - 1) * k + p0 + kc],
            ld: k,
        }
    }
}

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

impl<W: FewWeights> pulp::WithSimd for FewRows<'_, W> {
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
            values: (PREFETCH_BYTES / W::BYTES).div_ceil(C * k) * C * k,
            end: w.end(),
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
fn column_tile<S: Simd, W: FewWeights, const CC: usize>(
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
        match w.chunk::<S, CC>(s, (j0, p0), (kc, k), ahead) {
            Chunk::F32 { w, ld } => {
                let rd = F32Reader;
                row_blocks::<S, _, CC>(s, rd, x, w, (ld, kc), (m, k), acc, first, Some(ahead));
            }
            Chunk::I16 { w, ld } => {
                let rd = I16Reader;
                row_blocks::<S, _, CC>(s, rd, x, w, (ld, kc), (m, k), acc, first, Some(ahead));
            }
            Chunk::F16 { w, ld, decode } => match decode {
                Decode::F16Finite => {
                    let rd = F16FiniteReader;
                    row_blocks::<S, _, CC>(s, rd, x, w, (ld, kc), (m, k), acc, first, None);
                }
                _ => {
                    let rd = F16ExactReader;
                    row_blocks::<S, _, CC>(s, rd, x, w, (ld, kc), (m, k), acc, first, None);
                }
            },
        }
    }
    for (i, acc) in acc[..m].iter().enumerate() {
        for (c, &a) in acc[..CC].iter().enumerate() {
            let b = bias.map_or(0.0, |b| b[j0 + c]);
            y[i * n + j0 + c] = s.reduce_sum_f32s(a) * w.scale(j0 + c) + b;
        }
    }
}

/// Every row block of `x` (rows of stride `k`, from the chunk's first column) against one
/// chunk `w` (`CC` rows of stride `ld`, `kc` values each); `first` starts the sums at zero.
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
    let mut a: [[S::f32s; CC]; RR] = core::array::from_fn(|r| {
        core::array::from_fn(|c| if first { s.splat_f32s(0.0) } else { acc[r][c] })
    });
    // Units per cache line of weights (at least one): one prefetch per row and line.
    let per_line = (LINE / core::mem::size_of::<Rd::Elem>() / unit).max(1);
    for u in 0..nu {
        if let Some(ahead) = pf {
            if u % per_line == 0 {
                for row in &ws {
                    ahead.fetch(row, u * unit);
                }
            }
        }
        let wv: [[S::f32s; 2]; CC] =
            core::array::from_fn(|c| rd.unit(s, &ws[c][u * unit..(u + 1) * unit]));
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
        let wv: [S::f32s; CC] = core::array::from_fn(|c| rd.part(s, &ws[c][p..end]));
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

/// Test shapes `(m, k, n)` of the 16-bit weight products: every m from one row to past the
/// few-row limit, awkward depths (one crossing the few-row chunk of 512 and the broadcast panel
/// depth) for each `(m, n)` of `at_depths`, widths around the tiles, and empty products.
#[cfg(test)]
pub(super) fn test_shapes(at_depths: &[(usize, usize)]) -> alloc::vec::Vec<(usize, usize, usize)> {
    use crate::testing::AWKWARD_SIZES;
    let mut v = alloc::vec::Vec::new();
    for m in 1..=FEW_MAX_ROWS + 2 {
        v.push((m, 33, 7));
    }
    for &k in AWKWARD_SIZES.iter().chain(&[384, 600, 1100]) {
        for &(m, n) in at_depths {
            v.push((m, k, n));
        }
    }
    for &n in AWKWARD_SIZES {
        v.push((3, 40, n));
        v.push((20, 40, n));
    }
    v.extend([(0, 4, 4), (4, 0, 4), (4, 4, 0), (65, 33, 63)]);
    v
}
