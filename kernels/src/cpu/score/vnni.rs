//! The AVX512-VNNI body of the int8 scan (x86-64 only; run where the CPU has AVX-512 F/BW and
//! VNNI, see [`super::scores_i8_isa`]).
//!
//! `vpdpbusd` multiplies unsigned bytes by signed bytes, four pairs per 32-bit lane, and adds
//! them to the lane without saturation. The table's `q` (in `-127..=127`) is made unsigned by
//! flipping its sign bit (`q ^ 0x80 = q + 128`, in `1..=255`) and multiplied by the query `xq`
//! (signed): per row, `Σ (q + 128)·xq = Σ q·xq + 128·Σ xq`, and the query's term is subtracted
//! once. Every partial sum is an exact integer below `2³¹` (`|Σ| ≤ 255·127·I8_MAX_DIM`), so each
//! row gets the same integer sum, and then the same two f32 products, as the portable loop.
//!
//! Per 64 values of the query, its vector is loaded once for a tile of 16 rows (16
//! accumulators of the 32 registers). The 16 accumulators are reduced together by a tree of
//! lane shuffles and adds (256-bit halves, 128-bit quarters, 64-bit and 32-bit pairs) that
//! leaves row `c + 4i` in lane `4c + i`; one permutation puts the rows in order, and the tile's
//! 16 scores are converted, scaled and stored as one vector. The last values of a row (fewer
//! than 64) are read with a masked load that zero-fills the rest.

use core::arch::x86_64::{
    __m512i, _mm512_add_epi32, _mm512_castps_si512, _mm512_castsi512_ps, _mm512_cvtepi32_ps,
    _mm512_dpbusd_epi32, _mm512_loadu_ps, _mm512_maskz_loadu_epi8, _mm512_mul_ps,
    _mm512_permutexvar_epi32, _mm512_set1_epi8, _mm512_set1_epi32, _mm512_set1_ps,
    _mm512_setr_epi32, _mm512_setzero_si512, _mm512_shuffle_i64x2, _mm512_shuffle_ps,
    _mm512_storeu_ps, _mm512_sub_epi32, _mm512_unpackhi_epi64, _mm512_unpacklo_epi64,
    _mm512_xor_si512,
};

/// Rows of a tile (one accumulator each; the lanes of one result vector).
const ROWS: usize = 16;
/// Values per vector.
const BYTES: usize = 64;

/// Whether this CPU can run [`scores_i8_vnni`].
pub(super) fn available() -> bool {
    #[cfg(feature = "std")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(feature = "std"))]
    {
        cfg!(all(
            target_feature = "avx512f",
            target_feature = "avx512bw",
            target_feature = "avx512vnni"
        ))
    }
}

/// `out[j] = (Σ_p q[j·d + p]·xq[p]) as f32 · scales[j] · t`; shapes checked by the caller,
/// `d = xq.len()` in `1..=I8_MAX_DIM`, `n ≥ 1`. Runs the portable loop's bits.
///
/// # Safety
/// The CPU must have AVX-512 F and BW and AVX512-VNNI ([`available`]).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn scores_i8_vnni(q: &[i8], scales: &[f32], xq: &[i8], t: f32, out: &mut [f32]) {
    let d = xq.len();
    let n = out.len();
    // 128·Σ xq, the term the sign flip of q adds to every row's sum.
    let offset = 128 * xq.iter().map(|&v| v as i32).sum::<i32>();
    let offset = _mm512_set1_epi32(offset);
    let t = _mm512_set1_ps(t);
    let mut j = 0;
    while j < n {
        let rows = ROWS.min(n - j);
        let sums = _mm512_sub_epi32(tile_sums(&q[j * d..(j + rows) * d], rows, xq), offset);
        let f = _mm512_cvtepi32_ps(sums);
        let mut sc = [0.0f32; ROWS];
        sc[..rows].copy_from_slice(&scales[j..j + rows]);
        // SAFETY: `sc` holds 16 f32, the width of the load.
        let sc = unsafe { _mm512_loadu_ps(sc.as_ptr()) };
        let scaled = _mm512_mul_ps(_mm512_mul_ps(f, sc), t);
        if rows == ROWS {
            // SAFETY: `out[j..j + 16]` lies within `out` (`rows == 16 ≤ n - j`).
            unsafe { _mm512_storeu_ps(out[j..j + ROWS].as_mut_ptr(), scaled) };
        } else {
            let mut buf = [0.0f32; ROWS];
            // SAFETY: `buf` holds 16 f32, the width of the store.
            unsafe { _mm512_storeu_ps(buf.as_mut_ptr(), scaled) };
            out[j..j + rows].copy_from_slice(&buf[..rows]);
        }
        j += rows;
    }
}

/// Up to 64 bytes of `v` from `from` (fewer at the end: zero-filled) as a vector.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn load(v: &[i8], from: usize) -> __m512i {
    let len = BYTES.min(v.len() - from);
    let mask = if len == BYTES {
        u64::MAX
    } else {
        (1u64 << len) - 1
    };
    // SAFETY: the mask selects the bytes `from .. from + len`, all within `v`; masked-off
    // bytes are neither read nor able to fault.
    unsafe { _mm512_maskz_loadu_epi8(mask, v[from..].as_ptr()) }
}

/// The `rows ≤ 16` rows of `tile` (`[rows, d]`) against `xq`: lane `r` holds
/// `Σ_p (q[r, p] + 128)·xq[p]` (lanes `rows..` zero).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn tile_sums(tile: &[i8], rows: usize, xq: &[i8]) -> __m512i {
    let d = xq.len();
    let flip = _mm512_set1_epi8(i8::MIN);
    let mut acc = [_mm512_setzero_si512(); ROWS];
    for from in (0..d).step_by(BYTES) {
        let x = load(xq, from);
        for (r, a) in acc.iter_mut().enumerate().take(rows) {
            // Past the end of the row both the row (flipped to 128) and the query (0) are
            // zero-filled: their products are 0.
            let qv = _mm512_xor_si512(load(&tile[r * d..(r + 1) * d], from), flip);
            *a = _mm512_dpbusd_epi32(*a, qv, x);
        }
    }
    reduce16(&acc)
}

/// Lane `r` of the result is the sum of the 16 lanes of `acc[r]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce16(acc: &[__m512i; ROWS]) -> __m512i {
    // 256-bit halves: t[i] = [rows 2i | 2i + 1], 8 partial sums each (128-bit chunks
    // 2i:lo, 2i:hi, (2i+1):lo, (2i+1):hi).
    let t: [__m512i; 8] = core::array::from_fn(|i| {
        let (a, b) = (acc[2 * i], acc[2 * i + 1]);
        _mm512_add_epi32(
            _mm512_shuffle_i64x2::<0x44>(a, b),
            _mm512_shuffle_i64x2::<0xEE>(a, b),
        )
    });
    // 128-bit quarters: u[j] = [rows 4j, 4j + 1, 4j + 2, 4j + 3], 4 partial sums each.
    let u: [__m512i; 4] = core::array::from_fn(|j| {
        let (a, b) = (t[2 * j], t[2 * j + 1]);
        _mm512_add_epi32(
            _mm512_shuffle_i64x2::<0x88>(a, b),
            _mm512_shuffle_i64x2::<0xDD>(a, b),
        )
    });
    // 64-bit pairs: chunk c of v[0] = [row c, row 4 + c], of v[1] = [row 8 + c, row 12 + c],
    // 2 partial sums each.
    let v: [__m512i; 2] = core::array::from_fn(|h| {
        let (a, b) = (u[2 * h], u[2 * h + 1]);
        _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
    });
    // 32-bit pairs: chunk c = [row c, row 4 + c, row 8 + c, row 12 + c].
    let (a, b) = (_mm512_castsi512_ps(v[0]), _mm512_castsi512_ps(v[1]));
    let even = _mm512_castps_si512(_mm512_shuffle_ps::<0x88>(a, b));
    let odd = _mm512_castps_si512(_mm512_shuffle_ps::<0xDD>(a, b));
    let w = _mm512_add_epi32(even, odd);
    // Row r = c + 4i sits in lane 4c + i.
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_permutexvar_epi32(order, w)
}
