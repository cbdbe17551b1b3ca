//! f16 weights (as their bit patterns), widened exactly: rows without inf/NaN with the
//! three-operation decode (`convert::f16_finite_sext_to_f32s`), rows holding one with the exact
//! convert kernel (`convert::f16_bits_to_f32s`). The same decoders serve `gemv_f16`.

use super::{Ahead, LINE, ReadWith, Weights, Widen16, widen_with};
use crate::cpu::convert::{
    f16_bits_to_f32s, f16_finite_sext_to_f32s, load_widen_i16, load_widen_u16,
};
use half::f16;
use pulp::Simd;

/// f16 weights, `[n, k]` row-major, as their bit patterns.
#[derive(Copy, Clone)]
pub(in crate::cpu::linear) struct F16Weights<'a>(&'a [u16]);

impl<'a> F16Weights<'a> {
    pub(in crate::cpu::linear) fn new(w: &'a [f16]) -> Self {
        Self(bytemuck::cast_slice(w))
    }
}

/// f16 values without inf/NaN, in three operations.
#[derive(Copy, Clone)]
pub(in crate::cpu::linear) struct F16FiniteReader;

impl Widen16 for F16FiniteReader {
    #[inline(always)]
    fn widen<S: Simd>(self, s: S, w: &[u16]) -> S::f32s {
        f16_finite_sext_to_f32s(s, load_widen_i16(s, w))
    }
}

/// Any f16 values.
#[derive(Copy, Clone)]
pub(in crate::cpu::linear) struct F16ExactReader;

impl Widen16 for F16ExactReader {
    #[inline(always)]
    fn widen<S: Simd>(self, s: S, w: &[u16]) -> S::f32s {
        f16_bits_to_f32s(s, load_widen_u16(s, w))
    }
}

/// Whether a row of f16 bit patterns holds an inf or NaN (exponent bits all ones), prefetching
/// the line `ahead` of each line of `w` when given.
#[inline(always)]
pub(in crate::cpu::linear) fn has_non_finite<S: Simd>(
    s: S,
    w: &[u16],
    ahead: Option<Ahead>,
) -> bool {
    let (head, tail) = S::as_simd_u16s(w);
    let lanes = core::mem::size_of::<S::u16s>() / 2;
    let per_line = (LINE / 2 / lanes).max(1);
    let mut max = s.splat_u16s(0);
    for (v, &h) in head.iter().enumerate() {
        if let Some(ahead) = ahead
            && v % per_line == 0
        {
            ahead.fetch(w, v * lanes);
        }
        max = s.max_u16s(max, s.and_u16s(h, s.splat_u16s(0x7FFF)));
    }
    // Lane values rather than a mask: pulp's scalar 16-bit mask is a `bool` whose
    // `first_true_m16s` does not report lane 0.
    let lanes: &[u16] = bytemuck::cast_slice(core::slice::from_ref(&max));
    lanes.iter().chain(tail).any(|&h| h & 0x7FFF >= 0x7C00)
}

impl Weights for F16Weights<'_> {
    type Elem = u16;
    #[inline(always)]
    fn values(&self) -> &[u16] {
        self.0
    }
    /// Scans every row for inf/NaN, which brings them in from memory (prefetching ahead):
    /// the three-operation decode when none holds one, else the exact one.
    #[inline(always)]
    fn read_rows<S: Simd, F: ReadWith<u16>>(
        &self,
        s: S,
        rows: &[&[u16]],
        ahead: Ahead,
        f: F,
    ) -> F::Output {
        let mut finite = true;
        for row in rows {
            finite &= !has_non_finite(s, row, Some(ahead));
        }
        if finite {
            f.run(F16FiniteReader, true)
        } else {
            f.run(F16ExactReader, true)
        }
    }
    #[inline(always)]
    fn widen_row<S: Simd>(&self, s: S, _j: usize, at: usize, dst: &mut [f32]) {
        let src = &self.0[at..at + dst.len()];
        if has_non_finite(s, src, None) {
            widen_with(s, F16ExactReader, src, None, dst);
        } else {
            widen_with(s, F16FiniteReader, src, None, dst);
        }
    }
}
