//! The storage of the weights of `linear`, and how each storage is read as f32.
//!
//! The weights are `w[n, k]` row-major (PyTorch's `[out, in]`), stored as f32
//! ([`F32Weights`]), f16 ([`F16Weights`]) or i16 with one f32 scale per row ([`I16Weights`]).
//! Every storage widens exactly: each stored value becomes the f32 it denotes, so a product
//! over any storage is an f32 product over the widened values. The row-count regimes (`few`,
//! `small`) are written once over the [`Weights`] trait, which offers the two ways they read:
//!
//! - in registers, a block of rows at a time: [`Weights::read_rows`] picks the [`Reader`] for
//!   the block (f16 scans the rows for inf/NaN first, which chooses its decode) and the
//!   regime multiplies with it; a row's scale then multiplies each of its sums
//!   ([`Weights::scale`]);
//! - into f32 rows ([`Weights::widen_row`], the values times their row's scale), or in place
//!   when the storage is f32 ([`Weights::f32_in_place`]).
//!
//! This module depends on nothing above it: the storage modules know no regime, and the
//! regimes no storage.

mod f16_weights;
mod f32_weights;
mod i16_weights;

pub(super) use f16_weights::{F16ExactReader, F16FiniteReader, F16Weights, has_non_finite};
pub(super) use f32_weights::F32Weights;
pub(super) use i16_weights::I16Weights;
pub use i16_weights::quantize_rows_i16;

use bytemuck::Pod;
use pulp::Simd;

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

/// Reads stored weights as f32 vectors, in units of two vectors (`2·lanes` values: a cache
/// line of f32 on x86-64-v3).
pub(super) trait Reader: Copy {
    /// The stored type.
    type Elem: Pod;
    /// The two vectors of the unit at `w` (exactly `2·lanes` values).
    fn unit<S: Simd>(self, s: S, w: &[Self::Elem]) -> [S::f32s; 2];
    /// At most `lanes` values, zero-padded.
    fn part<S: Simd>(self, s: S, w: &[Self::Elem]) -> S::f32s;
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

/// What a regime runs with the [`Reader`] a storage picked for a block of rows (a closure
/// generic over the reader).
pub(super) trait ReadWith<E> {
    type Output;
    /// `scanned`: whether the storage read the rows while picking `rd` (prefetching ahead as
    /// they came in), so that reading them again need not prefetch.
    fn run<Rd: Reader<Elem = E>>(self, rd: Rd, scanned: bool) -> Self::Output;
}

/// The weights `w[n, k]` of `linear` in one storage.
pub(super) trait Weights: Copy {
    /// The stored type (f32, or the bit patterns of 16-bit values).
    type Elem: Pod;
    /// The `n·k` stored values.
    fn values(&self) -> &[Self::Elem];
    /// The values as f32 in place, where they are stored so.
    #[inline(always)]
    fn f32_in_place(&self) -> Option<&[f32]> {
        None
    }
    /// The factor of row `j` (1 but for scaled integer rows), by which the sums of the values
    /// read with [`Weights::read_rows`] are multiplied.
    #[inline(always)]
    fn scale(&self, _j: usize) -> f32 {
        1.0
    }
    /// Runs `f` with the reader of `rows` (equal-length slices of [`Weights::values`], about
    /// to be multiplied). Storages that look at the rows to pick the reader read them here,
    /// prefetching `ahead` as they come in, and tell `f` so.
    fn read_rows<S: Simd, F: ReadWith<Self::Elem>>(
        &self,
        s: S,
        rows: &[&[Self::Elem]],
        ahead: Ahead,
        f: F,
    ) -> F::Output;
    /// Widens the `dst.len()` values of row `j` from the flat index `at` to `dst`, times the
    /// row's scale.
    fn widen_row<S: Simd>(&self, s: S, j: usize, at: usize, dst: &mut [f32]);
}

/// Widens `src` to `dst` (equal lengths) a vector at a time with `rd`, times `scale` if given.
#[inline(always)]
fn widen_with<S: Simd, Rd: Reader>(
    s: S,
    rd: Rd,
    src: &[Rd::Elem],
    scale: Option<f32>,
    dst: &mut [f32],
) {
    let lanes = S::F32_LANES;
    let scale = scale.map(|v| s.splat_f32s(v));
    let (head, tail) = S::as_mut_simd_f32s(dst);
    let nv = head.len();
    for (v, d) in head.iter_mut().enumerate() {
        *d = times(s, rd.part(s, &src[v * lanes..(v + 1) * lanes]), scale);
    }
    if !tail.is_empty() {
        let v = times(s, rd.part(s, &src[nv * lanes..]), scale);
        s.partial_store_f32s(tail, v);
    }
}

/// `v·scale`, or `v` without a scale.
#[inline(always)]
fn times<S: Simd>(s: S, v: S::f32s, scale: Option<S::f32s>) -> S::f32s {
    match scale {
        Some(sv) => s.mul_f32s(v, sv),
        None => v,
    }
}
