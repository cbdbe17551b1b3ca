//! Conversions between `f32` and the 16-bit float formats: IEEE binary16 ([`half::f16`]) and
//! bfloat16 ([`half::bf16`]).
//!
//! Layout: two equal-length contiguous slices, `src` and `dst`.
//!
//! Rounding: narrowing rounds to nearest, ties to even, exactly as the `half` crate does;
//! values too large for f16 become ±inf, values below half the smallest f16 subnormal become
//! ±0. NaNs stay NaN with the quiet bit set and the payload kept (truncated when narrowing),
//! as `half` does; ±0, ±inf and subnormals convert exactly.
//!
//! Tolerance: none. Every path is bit-exact against the reference (`half`'s scalar conversion)
//! for every input; the tests check all 65,536 16-bit patterns for widening and every f16/bf16
//! rounding boundary (plus random bit patterns) for narrowing.
//!
//! The SIMD bodies are pure integer work on u32 lanes (one 16-bit value per lane) plus, for f16
//! subnormals, one exact float addition or subtraction; they need no F16C (pulp's x86-64-v3
//! token does not enable it) and run unchanged on every instruction set. The in-SIMD helpers
//! are `pub(crate)` so that other kernels (gathers, half-precision gemv) convert lanes inside
//! their own pulp bodies.

use super::isa::Isa;
use half::{bf16, f16};
use pulp::{Simd, WithSimd};

/// Largest number of u32 lanes of any instruction set we instantiate for (AVX-512 width).
const MAX_LANES: usize = 16;

#[track_caller]
fn check_lengths(op: &str, src: usize, dst: usize) {
    assert_eq!(
        dst, src,
        "{op}: dst has {dst} values, expected {src} (the length of src)"
    );
}

// ---------------------------------------------------------------------------------------------
// In-SIMD helpers

/// Loads `src.len() <= S::U32_LANES` 16-bit values zero-extended into u32 lanes (missing lanes
/// are 0).
#[inline(always)]
pub(crate) fn load_widen_u16<S: Simd>(_s: S, src: &[u16]) -> S::u32s {
    let lanes = S::U32_LANES;
    let mut buf = [0u32; MAX_LANES];
    if src.len() == lanes {
        // Constant trip count after monomorphisation: compiles to one widening load.
        for i in 0..lanes {
            buf[i] = src[i] as u32;
        }
    } else {
        for (b, &h) in buf.iter_mut().zip(src) {
            *b = h as u32;
        }
    }
    S::as_simd_u32s(&buf[..lanes]).0[0]
}

/// Loads `src.len() <= S::U32_LANES` 16-bit values sign-extended (as `i16`) into u32 lanes
/// (missing lanes are 0).
#[inline(always)]
pub(crate) fn load_widen_i16<S: Simd>(_s: S, src: &[u16]) -> S::u32s {
    let lanes = S::U32_LANES;
    let mut buf = [0u32; MAX_LANES];
    if src.len() == lanes {
        for i in 0..lanes {
            buf[i] = src[i] as i16 as i32 as u32;
        }
    } else {
        for (b, &h) in buf.iter_mut().zip(src) {
            *b = h as i16 as i32 as u32;
        }
    }
    S::as_simd_u32s(&buf[..lanes]).0[0]
}

/// Stores the low 16 bits of the first `dst.len() <= S::U32_LANES` lanes of `v`.
#[inline(always)]
pub(crate) fn store_narrow_u16<S: Simd>(_s: S, dst: &mut [u16], v: S::u32s) {
    let lanes = S::U32_LANES;
    let mut buf = [0u32; MAX_LANES];
    S::as_mut_simd_u32s(&mut buf[..lanes]).0[0] = v;
    if dst.len() == lanes {
        for i in 0..lanes {
            dst[i] = buf[i] as u16;
        }
    } else {
        for (d, &b) in dst.iter_mut().zip(&buf) {
            *d = b as u16;
        }
    }
}

/// Widens f16 bit patterns (one per u32 lane, upper 16 bits zero) to f32, bit-exact.
#[inline(always)]
pub(crate) fn f16_bits_to_f32s<S: Simd>(s: S, h: S::u32s) -> S::f32s {
    let sign = s.wrapping_dyn_shl_u32s(s.and_u32s(h, s.splat_u32s(0x8000)), s.splat_u32s(16));
    let em = s.and_u32s(h, s.splat_u32s(0x7FFF));
    let t = s.wrapping_dyn_shl_u32s(em, s.splat_u32s(13));
    // Normal: rebias the exponent by 127 - 15.
    let normal = s.add_u32s(t, s.splat_u32s(0x3800_0000));
    // Inf / NaN: exponent all ones (rebias twice), NaN gets the quiet bit.
    let is_nan = s.greater_than_u32s(em, s.splat_u32s(0x7C00));
    let infnan = s.or_u32s(
        s.add_u32s(t, s.splat_u32s(0x7000_0000)),
        s.select_u32s(is_nan, s.splat_u32s(0x0040_0000), s.splat_u32s(0)),
    );
    // Subnormal or zero: (2^-14 + m·2^-24) - 2^-14, exact in f32.
    let biased = s.transmute_f32s_u32s(s.add_u32s(t, s.splat_u32s(0x3880_0000)));
    let sub = s.transmute_u32s_f32s(s.sub_f32s(biased, s.splat_f32s(6.103_515_6e-5)));
    let is_sub = s.less_than_u32s(em, s.splat_u32s(0x0400));
    let is_big = s.greater_than_or_equal_u32s(em, s.splat_u32s(0x7C00));
    let r = s.select_u32s(is_sub, sub, s.select_u32s(is_big, infnan, normal));
    s.transmute_f32s_u32s(s.or_u32s(r, sign))
}

/// Widens *finite* f16 values, loaded sign-extended ([`load_widen_i16`]), in three
/// operations: the sign and the 15 exponent/mantissa bits are moved into place as an f32 whose
/// value is `h·2^-112` (an f32 subnormal for an f16 subnormal), and one exact multiplication
/// by `2^112` rescales it. Exact for every finite input provided subnormal operands are not
/// flushed to zero (the default floating-point environment); an f16 inf/NaN comes out as a
/// finite value of magnitude >= 65536, so callers must route those inputs to
/// [`f16_bits_to_f32s`].
#[inline(always)]
pub(crate) fn f16_finite_sext_to_f32s<S: Simd>(s: S, h: S::u32s) -> S::f32s {
    let bits = s.and_u32s(
        s.wrapping_dyn_shl_u32s(h, s.splat_u32s(13)),
        s.splat_u32s(0x8FFF_E000),
    );
    s.mul_f32s(
        s.transmute_f32s_u32s(bits),
        s.splat_f32s(f32::from_bits(0x7780_0000)),
    )
}

/// Narrows f32 to f16 bit patterns (one per u32 lane), round to nearest even, bit-exact.
#[inline(always)]
pub(crate) fn f32s_to_f16_bits<S: Simd>(s: S, x: S::f32s) -> S::u32s {
    let bits = s.transmute_u32s_f32s(x);
    let sign = s.and_u32s(
        s.wrapping_dyn_shr_u32s(bits, s.splat_u32s(16)),
        s.splat_u32s(0x8000),
    );
    let a = s.and_u32s(bits, s.splat_u32s(0x7FFF_FFFF));
    // Normal result: rebias (-(127 - 15) << 23, wrapping), add 0xFFF + lsb to round to nearest
    // even, shift out 13 mantissa bits; a carry into the exponent is the correct rounding, up
    // to 0x7C00 (inf) for values in [65520, 65536).
    let odd = s.and_u32s(
        s.wrapping_dyn_shr_u32s(a, s.splat_u32s(13)),
        s.splat_u32s(1),
    );
    let normal = s.wrapping_dyn_shr_u32s(
        s.add_u32s(s.add_u32s(a, s.splat_u32s(0xC800_0FFF)), odd),
        s.splat_u32s(13),
    );
    // Subnormal or zero result: adding 0.5 aligns the f16 subnormal unit (2^-24) with the last
    // mantissa bit, so the f32 addition performs the round to nearest even.
    let aligned = s.add_f32s(s.transmute_f32s_u32s(a), s.splat_f32s(0.5));
    let sub = s.sub_u32s(s.transmute_u32s_f32s(aligned), s.splat_u32s(0x3F00_0000));
    // Overflow (>= 2^16) -> inf; NaN -> quiet NaN with the top of the payload.
    let is_nan = s.greater_than_u32s(a, s.splat_u32s(0x7F80_0000));
    let nan = s.or_u32s(
        s.splat_u32s(0x7E00),
        s.and_u32s(
            s.wrapping_dyn_shr_u32s(a, s.splat_u32s(13)),
            s.splat_u32s(0x03FF),
        ),
    );
    let big = s.select_u32s(is_nan, nan, s.splat_u32s(0x7C00));
    let is_sub = s.less_than_u32s(a, s.splat_u32s(0x3880_0000));
    let is_big = s.greater_than_or_equal_u32s(a, s.splat_u32s(0x4780_0000));
    let r = s.select_u32s(is_sub, sub, s.select_u32s(is_big, big, normal));
    s.or_u32s(r, sign)
}

/// Widens bf16 bit patterns (one per u32 lane) to f32; NaNs get the quiet bit.
#[inline(always)]
pub(crate) fn bf16_bits_to_f32s<S: Simd>(s: S, h: S::u32s) -> S::f32s {
    let is_nan = s.greater_than_u32s(s.and_u32s(h, s.splat_u32s(0x7FFF)), s.splat_u32s(0x7F80));
    let h = s.select_u32s(is_nan, s.or_u32s(h, s.splat_u32s(0x0040)), h);
    s.transmute_f32s_u32s(s.wrapping_dyn_shl_u32s(h, s.splat_u32s(16)))
}

/// Narrows f32 to bf16 bit patterns (one per u32 lane), round to nearest even; NaNs keep the
/// top of their payload and get the quiet bit.
#[inline(always)]
pub(crate) fn f32s_to_bf16_bits<S: Simd>(s: S, x: S::f32s) -> S::u32s {
    let bits = s.transmute_u32s_f32s(x);
    let hi = s.wrapping_dyn_shr_u32s(bits, s.splat_u32s(16));
    let odd = s.and_u32s(hi, s.splat_u32s(1));
    let rounded = s.wrapping_dyn_shr_u32s(
        s.add_u32s(s.add_u32s(bits, s.splat_u32s(0x7FFF)), odd),
        s.splat_u32s(16),
    );
    let is_nan = s.greater_than_u32s(
        s.and_u32s(bits, s.splat_u32s(0x7FFF_FFFF)),
        s.splat_u32s(0x7F80_0000),
    );
    s.select_u32s(is_nan, s.or_u32s(hi, s.splat_u32s(0x0040)), rounded)
}

/// The 16-bit format of a conversion. (Passing the lane converters as closures would call
/// them through `Fn::call` shims that lose the target features.)
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    F16,
    Bf16,
}

impl Format {
    #[inline(always)]
    pub(crate) fn widen<S: Simd>(self, s: S, h: S::u32s) -> S::f32s {
        match self {
            Format::F16 => f16_bits_to_f32s(s, h),
            Format::Bf16 => bf16_bits_to_f32s(s, h),
        }
    }

    #[inline(always)]
    fn narrow<S: Simd>(self, s: S, x: S::f32s) -> S::u32s {
        match self {
            Format::F16 => f32s_to_f16_bits(s, x),
            Format::Bf16 => f32s_to_bf16_bits(s, x),
        }
    }
}

/// Widens equal-length runs of 16-bit patterns of `format` to f32 (callable from any pulp
/// body).
#[inline(always)]
pub(crate) fn widen_slice<S: Simd>(s: S, format: Format, src: &[u16], dst: &mut [f32]) {
    let lanes = S::F32_LANES;
    let (d_head, d_tail) = S::as_mut_simd_f32s(dst);
    for (d, c) in d_head.iter_mut().zip(src.chunks_exact(lanes)) {
        *d = format.widen(s, load_widen_u16(s, c));
    }
    if !d_tail.is_empty() {
        let c = &src[d_head.len() * lanes..];
        s.partial_store_f32s(d_tail, format.widen(s, load_widen_u16(s, c)));
    }
}

/// Narrows a run of f32 to 16-bit patterns of `format`, any length.
#[inline(always)]
fn narrow_slice<S: Simd>(s: S, format: Format, src: &[f32], dst: &mut [u16]) {
    let lanes = S::F32_LANES;
    let (s_head, s_tail) = S::as_simd_f32s(src);
    let split = s_head.len() * lanes;
    let (d_head, d_tail) = dst.split_at_mut(split);
    for (&v, c) in s_head.iter().zip(d_head.chunks_exact_mut(lanes)) {
        store_narrow_u16(s, c, format.narrow(s, v));
    }
    if !s_tail.is_empty() {
        store_narrow_u16(s, d_tail, format.narrow(s, s.partial_load_f32s(s_tail)));
    }
}

// ---------------------------------------------------------------------------------------------
// Bodies

struct WidenBody<'a> {
    format: Format,
    src: &'a [u16],
    dst: &'a mut [f32],
}

impl WithSimd for WidenBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        widen_slice(s, self.format, self.src, self.dst);
    }
}

struct NarrowBody<'a> {
    format: Format,
    src: &'a [f32],
    dst: &'a mut [u16],
}

impl WithSimd for NarrowBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        narrow_slice(s, self.format, self.src, self.dst);
    }
}

// ---------------------------------------------------------------------------------------------
// f16 -> f32

/// Reference f16 -> f32 (the `half` crate, element by element).
///
/// # Panics
/// If `dst.len() != src.len()`.
pub fn f16_to_f32_ref(src: &[f16], dst: &mut [f32]) {
    check_lengths("f16_to_f32", src.len(), dst.len());
    for (d, &h) in dst.iter_mut().zip(src) {
        *d = h.to_f32();
    }
}

/// f16 -> f32 with the pulp body instantiated for `isa` (bit-exact).
///
/// # Panics
/// If `dst.len() != src.len()`.
pub fn f16_to_f32_isa(isa: Isa, src: &[f16], dst: &mut [f32]) {
    check_lengths("f16_to_f32", src.len(), dst.len());
    let src = bytemuck::cast_slice(src);
    isa.run(WidenBody {
        format: Format::F16,
        src,
        dst,
    });
}

/// f16 -> f32 on the best instruction set (bit-exact).
///
/// # Panics
/// If `dst.len() != src.len()`.
#[inline]
pub fn f16_to_f32(src: &[f16], dst: &mut [f32]) {
    f16_to_f32_isa(Isa::detect(), src, dst);
}

// ---------------------------------------------------------------------------------------------
// f32 -> f16

/// Reference f32 -> f16, round to nearest even (the `half` crate, element by element).
///
/// # Panics
/// If `dst.len() != src.len()`.
pub fn f32_to_f16_ref(src: &[f32], dst: &mut [f16]) {
    check_lengths("f32_to_f16", src.len(), dst.len());
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(x);
    }
}

/// f32 -> f16 with the pulp body instantiated for `isa` (bit-exact).
///
/// # Panics
/// If `dst.len() != src.len()`.
pub fn f32_to_f16_isa(isa: Isa, src: &[f32], dst: &mut [f16]) {
    check_lengths("f32_to_f16", src.len(), dst.len());
    let dst = bytemuck::cast_slice_mut(dst);
    isa.run(NarrowBody {
        format: Format::F16,
        src,
        dst,
    });
}

/// f32 -> f16 on the best instruction set (bit-exact).
///
/// # Panics
/// If `dst.len() != src.len()`.
#[inline]
pub fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    f32_to_f16_isa(Isa::detect(), src, dst);
}

// ---------------------------------------------------------------------------------------------
// bf16 -> f32

/// Reference bf16 -> f32 (the `half` crate, element by element).
///
/// # Panics
/// If `dst.len() != src.len()`.
pub fn bf16_to_f32_ref(src: &[bf16], dst: &mut [f32]) {
    check_lengths("bf16_to_f32", src.len(), dst.len());
    for (d, &h) in dst.iter_mut().zip(src) {
        *d = h.to_f32();
    }
}

/// bf16 -> f32 with the pulp body instantiated for `isa` (bit-exact).
///
/// # Panics
/// If `dst.len() != src.len()`.
pub fn bf16_to_f32_isa(isa: Isa, src: &[bf16], dst: &mut [f32]) {
    check_lengths("bf16_to_f32", src.len(), dst.len());
    let src = bytemuck::cast_slice(src);
    isa.run(WidenBody {
        format: Format::Bf16,
        src,
        dst,
    });
}

/// bf16 -> f32 on the best instruction set (bit-exact).
///
/// # Panics
/// If `dst.len() != src.len()`.
#[inline]
pub fn bf16_to_f32(src: &[bf16], dst: &mut [f32]) {
    bf16_to_f32_isa(Isa::detect(), src, dst);
}

// ---------------------------------------------------------------------------------------------
// f32 -> bf16

/// Reference f32 -> bf16, round to nearest even (the `half` crate, element by element).
///
/// # Panics
/// If `dst.len() != src.len()`.
pub fn f32_to_bf16_ref(src: &[f32], dst: &mut [bf16]) {
    check_lengths("f32_to_bf16", src.len(), dst.len());
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = bf16::from_f32(x);
    }
}

/// f32 -> bf16 with the pulp body instantiated for `isa` (bit-exact).
///
/// # Panics
/// If `dst.len() != src.len()`.
pub fn f32_to_bf16_isa(isa: Isa, src: &[f32], dst: &mut [bf16]) {
    check_lengths("f32_to_bf16", src.len(), dst.len());
    let dst = bytemuck::cast_slice_mut(dst);
    isa.run(NarrowBody {
        format: Format::Bf16,
        src,
        dst,
    });
}

/// f32 -> bf16 on the best instruction set (bit-exact).
///
/// # Panics
/// If `dst.len() != src.len()`.
#[inline]
pub fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) {
    f32_to_bf16_isa(Isa::detect(), src, dst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;
    use alloc::vec;
    use alloc::vec::Vec;

    /// Every 16-bit pattern, in an order that puts each class (zeros, subnormals, normals,
    /// infinities, NaNs of both signs) at every lane position and in the scalar tail.
    fn all_patterns() -> Vec<u16> {
        (0..=u16::MAX).chain(0..37).collect()
    }

    #[track_caller]
    fn assert_bits_eq_f32(ctx: &str, src: &[u16], got: &[f32], want: &[f32]) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{ctx}: input {:#06x} (index {i}): got {:#010x}, want {:#010x}",
                src[i],
                g.to_bits(),
                w.to_bits()
            );
        }
    }

    /// f32 inputs for narrowing: every f16 and bf16 value exactly, the midpoints to the next
    /// pattern (the rounding ties) and one ulp either side, the overflow thresholds, the f32
    /// specials, and random bit patterns.
    fn narrowing_inputs() -> Vec<f32> {
        let mut v = Vec::new();
        let mut push_around = |x: f32| {
            let b = x.to_bits();
            v.extend([
                x,
                f32::from_bits(b.wrapping_sub(1)),
                f32::from_bits(b.wrapping_add(1)),
            ]);
        };
        for h in 0..=u16::MAX {
            let lo = f16::from_bits(h).to_f64();
            let hi = f16::from_bits(h.wrapping_add(1)).to_f64();
            push_around(lo as f32);
            if lo.is_finite() && hi.is_finite() && (h & 0x7FFF) != 0x7BFF {
                push_around(((lo + hi) / 2.0) as f32);
            }
            let b = (h as u32) << 16;
            push_around(f32::from_bits(b));
            push_around(f32::from_bits(b | 0x8000));
        }
        for x in [
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            f32::from_bits(0x8000_0001),
            f32::from_bits(0x7F80_0001),
            f32::from_bits(0xFFBF_FFFF),
            65504.0,
            65519.996,
            65520.0,
            65536.0,
            -65520.0,
            5.960_464_5e-8, // smallest f16 subnormal
            2.980_232_2e-8, // half of it: a tie that rounds to 0
            8.940_697e-8,   // 1.5 units: a tie that rounds to 2 units
            6.097_555e-5,   // largest f16 subnormal
            6.100_535_4e-5, // tie between the largest subnormal and the smallest normal
            6.103_515_6e-5, // smallest f16 normal
            1.0e-30,
            -1.0e-40,
        ] {
            push_around(x);
        }
        let mut rng = Rng::new(31);
        v.extend((0..100_000).map(|_| f32::from_bits(rng.next_u64() as u32)));
        v
    }

    fn check_f16_to_f32(isa: Isa) {
        let bits = all_patterns();
        let src: Vec<f16> = bits.iter().map(|&b| f16::from_bits(b)).collect();
        let mut want = vec![0.0; src.len()];
        f16_to_f32_ref(&src, &mut want);
        // Every offset of the slice start so each pattern meets each lane and the tail.
        for skip in [0, 1, 3, 7] {
            let mut got = vec![f32::NAN; src.len() - skip];
            f16_to_f32_isa(isa, &src[skip..], &mut got);
            // Exact: bit-for-bit equal, including NaN payloads and the sign of zero.
            assert_bits_eq_f32(
                &alloc::format!("f16_to_f32 {isa} skip={skip}"),
                &bits[skip..],
                &got,
                &want[skip..],
            );
        }
    }
    crate::isa_tests!(f16_to_f32, check_f16_to_f32);

    fn check_bf16_to_f32(isa: Isa) {
        let bits = all_patterns();
        let src: Vec<bf16> = bits.iter().map(|&b| bf16::from_bits(b)).collect();
        let mut want = vec![0.0; src.len()];
        bf16_to_f32_ref(&src, &mut want);
        for skip in [0, 1, 3, 7] {
            let mut got = vec![f32::NAN; src.len() - skip];
            bf16_to_f32_isa(isa, &src[skip..], &mut got);
            // Exact: bit-for-bit equal.
            assert_bits_eq_f32(
                &alloc::format!("bf16_to_f32 {isa} skip={skip}"),
                &bits[skip..],
                &got,
                &want[skip..],
            );
        }
    }
    crate::isa_tests!(bf16_to_f32, check_bf16_to_f32);

    #[track_caller]
    fn assert_bits_eq_u16(ctx: &str, src: &[f32], got: &[u16], want: &[u16]) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(
                g,
                w,
                "{ctx}: input {:e} ({:#010x}, index {i}): got {g:#06x}, want {w:#06x}",
                src[i],
                src[i].to_bits()
            );
        }
    }

    fn check_f32_to_f16(isa: Isa) {
        let src = narrowing_inputs();
        let mut want = vec![f16::ZERO; src.len()];
        f32_to_f16_ref(&src, &mut want);
        let want: Vec<u16> = want.iter().map(|h| h.to_bits()).collect();
        for skip in [0, 5] {
            let mut got = vec![f16::from_bits(0x1234); src.len() - skip];
            f32_to_f16_isa(isa, &src[skip..], &mut got);
            let got: Vec<u16> = got.iter().map(|h| h.to_bits()).collect();
            // Exact: bit-for-bit equal.
            assert_bits_eq_u16(
                &alloc::format!("f32_to_f16 {isa} skip={skip}"),
                &src[skip..],
                &got,
                &want[skip..],
            );
        }
    }
    crate::isa_tests!(f32_to_f16, check_f32_to_f16);

    fn check_f32_to_bf16(isa: Isa) {
        let src = narrowing_inputs();
        let mut want = vec![bf16::ZERO; src.len()];
        f32_to_bf16_ref(&src, &mut want);
        let want: Vec<u16> = want.iter().map(|h| h.to_bits()).collect();
        for skip in [0, 5] {
            let mut got = vec![bf16::from_bits(0x1234); src.len() - skip];
            f32_to_bf16_isa(isa, &src[skip..], &mut got);
            let got: Vec<u16> = got.iter().map(|h| h.to_bits()).collect();
            // Exact: bit-for-bit equal.
            assert_bits_eq_u16(
                &alloc::format!("f32_to_bf16 {isa} skip={skip}"),
                &src[skip..],
                &got,
                &want[skip..],
            );
        }
    }
    crate::isa_tests!(f32_to_bf16, check_f32_to_bf16);

    #[test]
    fn fast_paths_round_trip_and_match_reference() {
        let mut rng = Rng::new(32);
        for n in crate::testing::AWKWARD_SIZES
            .iter()
            .copied()
            .chain([0, 1000])
        {
            let x = rng.normal_vec(n, 100.0);
            let mut h = vec![f16::ZERO; n];
            f32_to_f16(&x, &mut h);
            let mut h_ref = vec![f16::ZERO; n];
            f32_to_f16_ref(&x, &mut h_ref);
            assert_eq!(h, h_ref, "f32_to_f16 n={n}");
            let mut back = vec![0.0; n];
            f16_to_f32(&h, &mut back);
            let want: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
            assert_eq!(back, want, "f16_to_f32 n={n}");

            let mut b = vec![bf16::ZERO; n];
            f32_to_bf16(&x, &mut b);
            let mut b_ref = vec![bf16::ZERO; n];
            f32_to_bf16_ref(&x, &mut b_ref);
            assert_eq!(b, b_ref, "f32_to_bf16 n={n}");
            let mut back = vec![0.0; n];
            bf16_to_f32(&b, &mut back);
            let want: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
            assert_eq!(back, want, "bf16_to_f32 n={n}");
        }
        // Spot values: ties to even and overflow.
        let x = [
            1.0 + 2f32.powi(-11),
            1.0 + 3.0 * 2f32.powi(-11),
            65520.0,
            -1e9,
        ];
        let mut h = [f16::ZERO; 4];
        f32_to_f16(&x, &mut h);
        assert_eq!(
            h.map(|v| v.to_bits()),
            [0x3C00, 0x3C02, 0x7C00, 0xFC00],
            "ties to even / overflow to inf"
        );
    }

    #[test]
    #[should_panic(expected = "f16_to_f32: dst has 2 values, expected 3")]
    fn rejects_mismatched_lengths() {
        f16_to_f32(&[f16::ONE; 3], &mut [0.0; 2]);
    }
}
