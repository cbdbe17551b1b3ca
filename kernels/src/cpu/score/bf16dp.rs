//! The AVX512-BF16 body of the bf16 filter scan (x86-64 only; run where the CPU has AVX-512
//! F/BW and AVX512-BF16, see [`super::scores_bf16_dp_isa`]).
//!
//! `vdpbf16ps` multiplies pairs of bf16 values and adds both products to an f32 lane: 32
//! multiply-adds per instruction, against 16 for an f32 multiply-add after widening the table's
//! bf16 values. The query enters as two bf16 parts (`hi + lo`), so each 32 values of a row
//! take two instructions. The instruction treats bf16 and f32 subnormals as zero; the bound
//! of [`super::bf16_split_query`] covers that.
//!
//! Per 32 values of the query, its two vectors are loaded once for a tile of 16 rows (16
//! accumulators); the accumulators are reduced together by the lane-shuffle tree of the int8
//! scan ([`super::vnni`]), in f32, and the tile's 16 scores stored as one vector. The last
//! values of a row (fewer than 32) are read with a masked load that zero-fills the rest.

use core::arch::x86_64::{
    __m512, __m512bh, __m512i, _mm512_add_ps, _mm512_castps_si512, _mm512_castsi512_ps,
    _mm512_dpbf16_ps, _mm512_maskz_loadu_epi16, _mm512_permutexvar_ps, _mm512_setr_epi32,
    _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_shuffle_ps, _mm512_storeu_ps,
    _mm512_unpackhi_epi64, _mm512_unpacklo_epi64,
};

/// Rows of a tile (one accumulator each; the lanes of one result vector).
const ROWS: usize = 16;
/// bf16 values per vector.
const VALUES: usize = 32;

/// Whether this CPU can run [`scores_bf16_dp`].
pub(super) fn available() -> bool {
    #[cfg(feature = "std")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(all(
            target_feature = "avx512f",
            target_feature = "avx512bw",
            target_feature = "avx512bf16"
        ))
    }
}

/// `out[j] ≈ Σ_p w[j·d + p]·(hi[p] + lo[p])` (bf16 bits, `d = hi.len() = lo.len() ≥ 1`,
/// `w.len() = out.len()·d`; checked by the caller).
///
/// # Safety
/// The CPU must have AVX-512 F and BW and AVX512-BF16 ([`available`]).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) unsafe fn scores_bf16_dp(w: &[u16], hi: &[u16], lo: &[u16], out: &mut [f32]) {
    let d = hi.len();
    let n = out.len();
    let mut j = 0;
    while j < n {
        let rows = ROWS.min(n - j);
        let sums = tile_sums(&w[j * d..(j + rows) * d], rows, hi, lo);
        if rows == ROWS {
            // SAFETY: `out[j..j + 16]` lies within `out` (`rows == 16 ≤ n - j`).
            unsafe { _mm512_storeu_ps(out[j..j + ROWS].as_mut_ptr(), sums) };
        } else {
            let mut buf = [0.0f32; ROWS];
            // SAFETY: `buf` holds 16 f32, the width of the store.
            unsafe { _mm512_storeu_ps(buf.as_mut_ptr(), sums) };
            out[j..j + rows].copy_from_slice(&buf[..rows]);
        }
        j += rows;
    }
}

/// Up to 32 bf16 values of `v` from `from` (fewer at the end: zero-filled) as a vector.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn load(v: &[u16], from: usize) -> __m512bh {
    let len = VALUES.min(v.len() - from);
    let mask = if len == VALUES {
        u32::MAX
    } else {
        (1u32 << len) - 1
    };
    // SAFETY: the mask selects the values `from .. from + len`, all within `v`; masked-off
    // values are neither read nor able to fault.
    let x: __m512i = unsafe { _mm512_maskz_loadu_epi16(mask, v[from..].as_ptr().cast()) };
    // SAFETY: both types are 512 bits of plain data; every bit pattern is a valid bf16 vector.
    unsafe { core::mem::transmute::<__m512i, __m512bh>(x) }
}

/// The `rows ≤ 16` rows of `tile` (`[rows, d]`) against `hi + lo`: lane `r` holds row `r`'s
/// sum (lanes `rows..` zero).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn tile_sums(tile: &[u16], rows: usize, hi: &[u16], lo: &[u16]) -> __m512 {
    let d = hi.len();
    let mut acc = [_mm512_setzero_ps(); ROWS];
    for from in (0..d).step_by(VALUES) {
        let (h, l) = (load(hi, from), load(lo, from));
        for (r, a) in acc.iter_mut().enumerate().take(rows) {
            // Past the end of the row both the row and the query are zero-filled.
            let wv = load(&tile[r * d..(r + 1) * d], from);
            *a = _mm512_dpbf16_ps(_mm512_dpbf16_ps(*a, wv, h), wv, l);
        }
    }
    reduce16(&acc)
}

/// Lane `r` of the result is the sum of the 16 lanes of `acc[r]` (the shuffle tree of the
/// int8 scan's `reduce16`, on f32 lanes).
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce16(acc: &[__m512; ROWS]) -> __m512 {
    // 256-bit halves: t[i] = [rows 2i | 2i + 1], 8 partial sums each.
    let t: [__m512; 8] = core::array::from_fn(|i| {
        let (a, b) = (acc[2 * i], acc[2 * i + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(a, b),
            _mm512_shuffle_f32x4::<0xEE>(a, b),
        )
    });
    // 128-bit quarters: u[j] = [rows 4j, 4j + 1, 4j + 2, 4j + 3], 4 partial sums each.
    let u: [__m512; 4] = core::array::from_fn(|j| {
        let (a, b) = (t[2 * j], t[2 * j + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(a, b),
            _mm512_shuffle_f32x4::<0xDD>(a, b),
        )
    });
    // 64-bit pairs: chunk c of v[0] = [row c, row 4 + c], of v[1] = [row 8 + c, row 12 + c].
    let v: [__m512; 2] = core::array::from_fn(|h| {
        let (a, b) = (
            _mm512_castps_si512(u[2 * h]),
            _mm512_castps_si512(u[2 * h + 1]),
        );
        _mm512_add_ps(
            _mm512_castsi512_ps(_mm512_unpacklo_epi64(a, b)),
            _mm512_castsi512_ps(_mm512_unpackhi_epi64(a, b)),
        )
    });
    // 32-bit pairs: chunk c = [row c, row 4 + c, row 8 + c, row 12 + c].
    let even = _mm512_shuffle_ps::<0x88>(v[0], v[1]);
    let odd = _mm512_shuffle_ps::<0xDD>(v[0], v[1]);
    let w = _mm512_add_ps(even, odd);
    // Row r = c + 4i sits in lane 4c + i.
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_permutexvar_ps(order, w)
}
