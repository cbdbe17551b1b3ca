//! The x86-64-v3 body of the int8 scan, on AVX2 integer multiply-adds (pulp's portable vectors
//! have no 8-bit multiply-add, so this body is written against the V3 token directly).
//!
//! Per 32 values of a row: `vpsignb` moves the query's signs onto the row's int8 values,
//! `vpmaddubsw` multiplies them by the query's magnitudes (at most 127·127·2 per pair of
//! products: no saturation) into 16-bit pairs, `vpmaddwd` by ones widens those to 32-bit sums.
//! Eight rows are reduced together (`vphaddd` tree), converted and scaled as one vector. The
//! integer sums are exact, so every row gets the bits of the portable loop.

#[cfg(target_arch = "x86")]
use core::arch::x86::{__m256, __m256i};
#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::{__m256, __m256i};
use pulp::x86::V3;

/// Rows reduced together.
const ROWS: usize = 8;

/// `out[j] = (Σ_p q[j·d + p]·xq[p]) as f32 · scales[j] · t`; shapes checked by the caller,
/// `d = xq.len()` in `1..=I8_MAX_DIM`.
pub(super) fn scores_i8_v3(simd: V3, q: &[i8], scales: &[f32], xq: &[i8], t: f32, out: &mut [f32]) {
    simd.vectorize(Body {
        simd,
        q,
        scales,
        xq,
        t,
        out,
    });
}

struct Body<'a> {
    simd: V3,
    q: &'a [i8],
    scales: &'a [f32],
    xq: &'a [i8],
    t: f32,
    out: &'a mut [f32],
}

/// 32 int8 values (fewer at the end of a row: zero-filled) as a vector.
#[inline(always)]
fn load32(values: &[i8]) -> __m256i {
    if values.len() == 32 {
        bytemuck::pod_read_unaligned(bytemuck::cast_slice::<i8, u8>(values))
    } else {
        let mut buf = [0i8; 32];
        buf[..values.len()].copy_from_slice(values);
        bytemuck::cast(buf)
    }
}

/// `R` rows (`rows`, `[R, d]`) against the query: lane `r` of the result is row `r`'s exact
/// integer sum (lanes `R..` zero). Per vector of 32 query values, its signs and magnitudes are
/// loaded once for all the rows.
#[inline(always)]
fn tile_sums<const R: usize>(simd: V3, rows: &[i8], xq: &[i8]) -> __m256i {
    let (avx, avx2) = (simd.avx, simd.avx2);
    let d = xq.len();
    let zero = avx._mm256_setzero_si256();
    let ones = avx._mm256_set1_epi16(1);
    let mut acc = [zero; ROWS];
    for v in 0..d.div_ceil(32) {
        let (from, to) = (v * 32, ((v + 1) * 32).min(d));
        // The query's signs (vpsignb's sign source: 0 zeroes the product) and magnitudes
        // (vpmaddubsw's unsigned operand); zero-filled past the end.
        let sign = load32(&xq[from..to]);
        let mag = avx2._mm256_abs_epi8(sign);
        for (r, a) in acc.iter_mut().enumerate().take(R) {
            let qv = load32(&rows[r * d + from..r * d + to]);
            let pairs = avx2._mm256_maddubs_epi16(mag, avx2._mm256_sign_epi8(qv, sign));
            *a = avx2._mm256_add_epi32(*a, avx2._mm256_madd_epi16(pairs, ones));
        }
    }
    // acc[r] holds 8 partial sums of row r: a vphaddd tree leaves lane r with row r's total
    // (the pairs of the lower halves first, then those of the upper halves).
    let h01 = avx2._mm256_hadd_epi32(acc[0], acc[1]);
    let h23 = avx2._mm256_hadd_epi32(acc[2], acc[3]);
    let h45 = avx2._mm256_hadd_epi32(acc[4], acc[5]);
    let h67 = avx2._mm256_hadd_epi32(acc[6], acc[7]);
    let h0123 = avx2._mm256_hadd_epi32(h01, h23);
    let h4567 = avx2._mm256_hadd_epi32(h45, h67);
    let lo = avx2._mm256_permute2x128_si256::<0x20>(h0123, h4567);
    let hi = avx2._mm256_permute2x128_si256::<0x31>(h0123, h4567);
    avx2._mm256_add_epi32(lo, hi)
}

/// `(sums as f32) · scales · t`, lane by lane.
#[inline(always)]
fn scale(simd: V3, sums: __m256i, scales: [f32; ROWS], t: f32) -> [f32; ROWS] {
    let avx = simd.avx;
    let f = avx._mm256_cvtepi32_ps(sums);
    let scaled: __m256 = avx._mm256_mul_ps(
        avx._mm256_mul_ps(f, bytemuck::cast(scales)),
        avx._mm256_set1_ps(t),
    );
    bytemuck::cast(scaled)
}

impl pulp::NullaryFnOnce for Body<'_> {
    type Output = ();

    #[inline(always)]
    fn call(self) {
        let Self {
            simd,
            q,
            scales,
            xq,
            t,
            out,
        } = self;
        let d = xq.len();
        let mut tiles = q.chunks_exact(ROWS * d);
        let mut sc = scales.chunks_exact(ROWS);
        let mut outs = out.chunks_exact_mut(ROWS);
        for ((rows, sc), o) in (&mut tiles).zip(&mut sc).zip(&mut outs) {
            let sums = tile_sums::<ROWS>(simd, rows, xq);
            let sc: [f32; ROWS] = sc.try_into().expect("a tile of ROWS scales");
            o.copy_from_slice(&scale(simd, sums, sc, t));
        }
        // The last rows (fewer than ROWS), one at a time through the same tile.
        let (rows, sc, o) = (tiles.remainder(), sc.remainder(), outs.into_remainder());
        for ((row, &s), o) in rows.chunks_exact(d).zip(sc).zip(o) {
            let sums = tile_sums::<1>(simd, row, xq);
            let mut s8 = [0.0f32; ROWS];
            s8[0] = s;
            *o = scale(simd, sums, s8, t)[0];
        }
    }
}
