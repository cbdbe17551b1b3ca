//! i16 weights with one f32 scale per row: `w[j, p] = s[j]·q[j, p]`, the same bytes as f16
//! with about four times less rounding error on rows without large outliers.
//! [`quantize_rows_i16`] builds `q` and `s` (symmetric, `s[j] = max |w[j, ·]| / 32767`).
//! Every `q` value is exact in f32 (it is widened with a magic-number add and subtract, two
//! operations); read in registers, the sums of a row are multiplied by its scale, widened into
//! f32 rows, every value is.

use super::{Ahead, ReadWith, Weights, Widen16, widen_with};
use crate::cpu::convert::load_widen_i16;
use crate::cpu::math;
use pulp::Simd;

/// i16 weights, `[n, k]` row-major, as their bit patterns, and one scale per row.
#[derive(Copy, Clone)]
pub(in crate::cpu::linear) struct I16Weights<'a> {
    q: &'a [u16],
    scales: &'a [f32],
}

impl<'a> I16Weights<'a> {
    pub(in crate::cpu::linear) fn new(q: &'a [i16], scales: &'a [f32]) -> Self {
        Self {
            q: bytemuck::cast_slice(q),
            scales,
        }
    }
}

/// `1.5·2^23`: the f32 whose mantissa holds a sign-extended 16-bit integer added to its bits.
const MAGIC: f32 = 12_582_912.0;

/// Widens 16-bit integers loaded sign-extended (`convert::load_widen_i16`) to f32, exactly:
/// `bits(1.5·2^23) + v` is the f32 `1.5·2^23 + v` for `|v| < 2^22`, and subtracting
/// `1.5·2^23` leaves `v`.
#[inline(always)]
fn i16_sext_to_f32s<S: Simd>(s: S, v: S::u32s) -> S::f32s {
    let biased = s.add_u32s(v, s.splat_u32s(MAGIC.to_bits()));
    s.sub_f32s(s.transmute_f32s_u32s(biased), s.splat_f32s(MAGIC))
}

/// i16 values, unscaled.
#[derive(Copy, Clone)]
struct I16Reader;

impl Widen16 for I16Reader {
    #[inline(always)]
    fn widen<S: Simd>(self, s: S, w: &[u16]) -> S::f32s {
        i16_sext_to_f32s(s, load_widen_i16(s, w))
    }
}

impl Weights for I16Weights<'_> {
    type Elem = u16;
    #[inline(always)]
    fn values(&self) -> &[u16] {
        self.q
    }
    #[inline(always)]
    fn scale(&self, j: usize) -> f32 {
        self.scales[j]
    }
    #[inline(always)]
    fn read_rows<S: Simd, F: ReadWith<u16>>(
        &self,
        _s: S,
        _rows: &[&[u16]],
        _ahead: Ahead,
        f: F,
    ) -> F::Output {
        f.run(I16Reader, false)
    }
    #[inline(always)]
    fn widen_row<S: Simd>(&self, s: S, j: usize, at: usize, dst: &mut [f32]) {
        let src = &self.q[at..at + dst.len()];
        widen_with(s, I16Reader, src, Some(self.scales[j]), dst);
    }
}

/// Rows whose largest magnitude is below this are stored as zeros (scale 0): their products
/// are below any f32 tolerance, and `max / 32767` would lose precision or underflow.
const TINY_ROW: f32 = 1.0e-30;

/// Quantizes `w` (`[n, k]`, finite) row by row: `scales[j] = max_p |w[j·k + p]| / 32767` and
/// `q[j·k + p] = round(w[j·k + p] / scales[j])` (ties away from zero, within ±32767); a row
/// whose largest magnitude is below 1e-30 gets zeros and scale 0. The error of each weight is
/// at most half its row's scale. A plain loop: it runs once, when a model is loaded.
///
/// # Panics
/// If `w.len() != n·k`, `q.len() != n·k`, `scales.len() != n`, or a weight is not finite.
pub fn quantize_rows_i16(w: &[f32], n: usize, k: usize, q: &mut [i16], scales: &mut [f32]) {
    let op = "quantize_rows_i16";
    assert_eq!(
        w.len(),
        n * k,
        "{op}: w has {} values, expected n·k = {n}·{k}",
        w.len()
    );
    assert_eq!(
        q.len(),
        n * k,
        "{op}: q has {} values, expected n·k = {n}·{k}",
        q.len()
    );
    assert_eq!(
        scales.len(),
        n,
        "{op}: scales has {} values, expected n = {n}",
        scales.len()
    );
    if k == 0 {
        scales.fill(0.0);
        return;
    }
    for (j, ((row, qrow), scale)) in w
        .chunks_exact(k)
        .zip(q.chunks_exact_mut(k))
        .zip(scales)
        .enumerate()
    {
        if let Some(p) = row.iter().position(|v| !v.is_finite()) {
            panic!("{op}: w[{j}, {p}] = {} is not finite", row[p]);
        }
        let max = row.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
        if max < TINY_ROW {
            qrow.fill(0);
            *scale = 0.0;
            continue;
        }
        *scale = max / 32767.0;
        for (qv, &v) in qrow.iter_mut().zip(row) {
            *qv = math::round(v / *scale).clamp(-32767.0, 32767.0) as i16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Isa;
    use crate::testing::Rng;
    use alloc::vec;
    use alloc::vec::Vec;

    #[test]
    fn quantize_rows_i16_bounds_the_error_by_half_a_step() {
        let mut rng = Rng::new(43);
        let (n, k) = (9, 77);
        let mut w = rng.normal_vec(n * k, 0.05);
        w[3 * k..4 * k].fill(0.0); // an all-zero row
        w[5 * k..6 * k].fill(1e-35); // a row below the tiny threshold
        w[7 * k + 4] = -2.5; // an outlier sets its row's scale
        let (mut q, mut s) = (vec![0i16; n * k], vec![0.0f32; n]);
        quantize_rows_i16(&w, n, k, &mut q, &mut s);
        for j in 0..n {
            let row = &w[j * k..(j + 1) * k];
            let max = row.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
            if max < TINY_ROW {
                assert_eq!(s[j], 0.0, "row {j}");
                assert!(q[j * k..(j + 1) * k].iter().all(|&v| v == 0), "row {j}");
                continue;
            }
            // The step is max/32767 (f32 division: relative error 6e-8).
            assert!(
                (s[j] - max / 32767.0).abs() <= 1e-7 * s[j],
                "row {j}: scale {}",
                s[j]
            );
            // The largest magnitude maps to ±32767 exactly.
            assert!(
                q[j * k..(j + 1) * k].iter().any(|&v| v.abs() == 32767),
                "row {j}"
            );
            for (p, &v) in row.iter().enumerate() {
                let back = q[j * k + p] as f32 * s[j];
                // Half a step, plus f32 rounding of the division and the product.
                let bound = 0.5 * s[j] * (1.0 + 1e-6) + 1e-7 * v.abs();
                assert!((back - v).abs() <= bound, "w[{j}, {p}] = {v} -> {back}");
            }
        }
        assert_eq!(q[7 * k + 4], -32767);
    }

    #[test]
    fn widening_is_exact_over_the_i16_range() {
        // Every i16 value through the vector widening (scale 1), in one row.
        let src: Vec<i16> = (i16::MIN..=i16::MAX).collect();
        let mut dst = vec![0.0f32; src.len()];
        Isa::detect().run(Widen {
            src: &src,
            dst: &mut dst,
        });
        for (&h, &f) in src.iter().zip(&dst) {
            assert_eq!(f, h as f32);
        }
    }

    struct Widen<'a> {
        src: &'a [i16],
        dst: &'a mut [f32],
    }

    impl pulp::WithSimd for Widen<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, s: S) {
            I16Weights::new(self.src, &[1.0]).widen_row(s, 0, 0, self.dst);
        }
    }

    #[test]
    #[should_panic(expected = "quantize_rows_i16: w[1, 0] = NaN is not finite")]
    fn quantize_rows_i16_rejects_non_finite_weights() {
        let w = [0.5, 0.25, f32::NAN, 1.0];
        quantize_rows_i16(&w, 2, 2, &mut [0; 4], &mut [0.0; 2]);
    }
}
