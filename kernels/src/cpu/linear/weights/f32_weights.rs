//! f32 weights: read in place, nothing to widen.

use super::{Ahead, ReadWith, Reader, Weights};
use pulp::Simd;

/// f32 weights, `[n, k]` row-major.
#[derive(Copy, Clone)]
pub(in crate::cpu::linear) struct F32Weights<'a>(pub(in crate::cpu::linear) &'a [f32]);

/// Reads f32 weights as they are.
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

impl Weights for F32Weights<'_> {
    type Elem = f32;
    #[inline(always)]
    fn values(&self) -> &[f32] {
        self.0
    }
    #[inline(always)]
    fn f32_in_place(&self) -> Option<&[f32]> {
        Some(self.0)
    }
    #[inline(always)]
    fn read_rows<S: Simd, F: ReadWith<f32>>(
        &self,
        _s: S,
        _rows: &[&[f32]],
        _ahead: Ahead,
        f: F,
    ) -> F::Output {
        f.run(F32Reader, false)
    }
    #[inline(always)]
    fn widen_row<S: Simd>(&self, _s: S, _j: usize, at: usize, dst: &mut [f32]) {
        dst.copy_from_slice(&self.0[at..at + dst.len()]);
    }
}
