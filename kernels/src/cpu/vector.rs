//! Small vector primitives shared by the other kernels: dot product, `axpy`, in-place add and
//! scale, and the element-wise multiply-add `dst += a ⊙ b` (DiT's gated residual).
//!
//! Layout: contiguous `f32` slices; the two operands of a binary op have equal lengths.
//!
//! The in-SIMD helpers (`dot_simd`, `axpy_simd`, `add_simd`, `scale_simd`) are
//! `pub(crate)` and `#[inline(always)]` so that other kernels call them from inside their own
//! pulp bodies without losing the target features.
//!
//! Tolerance of the fast paths against the reference: `dot` sums in a different order with f32
//! accumulators (reference: f64), so it is within `1e-6·(1 + Σ|a_i·b_i|)` for the lengths used
//! here; `axpy` may fuse the multiply-add (one rounding instead of two), so it is within one
//! ulp of the unfused reference; `add` and `scale` are exact; `mul_add` fuses like `axpy`.

use super::isa::Isa;
use pulp::{Simd, WithSimd};

#[track_caller]
fn check_same_len(op: &str, a_name: &str, a: usize, b_name: &str, b: usize) {
    assert_eq!(
        a, b,
        "{op}: {b_name} has {b} values, expected {a} (the length of {a_name})"
    );
}

/// Dot product of two equal-length slices with 4 independent accumulators (callable from any
/// pulp body).
#[inline(always)]
pub(crate) fn dot_simd<S: Simd>(s: S, a: &[f32], b: &[f32]) -> f32 {
    let (a_head, a_tail) = S::as_simd_f32s(a);
    let (b_head, b_tail) = S::as_simd_f32s(b);
    let mut acc = [s.splat_f32s(0.0); 4];
    let mut chunks_a = a_head.chunks_exact(4);
    let mut chunks_b = b_head.chunks_exact(4);
    for (ca, cb) in (&mut chunks_a).zip(&mut chunks_b) {
        acc[0] = s.mul_add_f32s(ca[0], cb[0], acc[0]);
        acc[1] = s.mul_add_f32s(ca[1], cb[1], acc[1]);
        acc[2] = s.mul_add_f32s(ca[2], cb[2], acc[2]);
        acc[3] = s.mul_add_f32s(ca[3], cb[3], acc[3]);
    }
    for (&va, &vb) in chunks_a.remainder().iter().zip(chunks_b.remainder()) {
        acc[0] = s.mul_add_f32s(va, vb, acc[0]);
    }
    if !a_tail.is_empty() {
        let va = s.partial_load_f32s(a_tail);
        let vb = s.partial_load_f32s(b_tail);
        acc[1] = s.mul_add_f32s(va, vb, acc[1]);
    }
    let sum = s.add_f32s(s.add_f32s(acc[0], acc[1]), s.add_f32s(acc[2], acc[3]));
    s.reduce_sum_f32s(sum)
}

/// `y += alpha·x` on equal-length slices (callable from any pulp body).
#[inline(always)]
pub(crate) fn axpy_simd<S: Simd>(s: S, alpha: f32, x: &[f32], y: &mut [f32]) {
    let va = s.splat_f32s(alpha);
    let (x_head, x_tail) = S::as_simd_f32s(x);
    let (y_head, y_tail) = S::as_mut_simd_f32s(y);
    for (vy, &vx) in y_head.iter_mut().zip(x_head) {
        *vy = s.mul_add_f32s(va, vx, *vy);
    }
    if !y_tail.is_empty() {
        let vx = s.partial_load_f32s(x_tail);
        let vy = s.partial_load_f32s(y_tail);
        s.partial_store_f32s(y_tail, s.mul_add_f32s(va, vx, vy));
    }
}

/// `dst += src` on equal-length slices (callable from any pulp body).
#[inline(always)]
pub(crate) fn add_simd<S: Simd>(s: S, dst: &mut [f32], src: &[f32]) {
    let (d_head, d_tail) = S::as_mut_simd_f32s(dst);
    let (s_head, s_tail) = S::as_simd_f32s(src);
    for (vd, &vs) in d_head.iter_mut().zip(s_head) {
        *vd = s.add_f32s(*vd, vs);
    }
    if !d_tail.is_empty() {
        let vd = s.partial_load_f32s(d_tail);
        let vs = s.partial_load_f32s(s_tail);
        s.partial_store_f32s(d_tail, s.add_f32s(vd, vs));
    }
}

/// `x *= alpha` (callable from any pulp body).
#[inline(always)]
pub(crate) fn scale_simd<S: Simd>(s: S, x: &mut [f32], alpha: f32) {
    let va = s.splat_f32s(alpha);
    let (head, tail) = S::as_mut_simd_f32s(x);
    for v in head {
        *v = s.mul_f32s(*v, va);
    }
    if !tail.is_empty() {
        let v = s.partial_load_f32s(tail);
        s.partial_store_f32s(tail, s.mul_f32s(v, va));
    }
}

// ---------------------------------------------------------------------------------------------
// dot

/// Reference dot product with f64 accumulation.
///
/// # Panics
/// If `a` and `b` have different lengths.
pub fn dot_ref(a: &[f32], b: &[f32]) -> f32 {
    check_same_len("dot", "a", a.len(), "b", b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| x as f64 * y as f64)
        .sum::<f64>() as f32
}

struct DotBody<'a> {
    a: &'a [f32],
    b: &'a [f32],
}

impl WithSimd for DotBody<'_> {
    type Output = f32;
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> f32 {
        dot_simd(s, self.a, self.b)
    }
}

/// Dot product with the pulp body instantiated for `isa`.
///
/// # Panics
/// If `a` and `b` have different lengths.
pub fn dot_isa(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    check_same_len("dot", "a", a.len(), "b", b.len());
    isa.run(DotBody { a, b })
}

/// Dot product on the best instruction set.
///
/// # Panics
/// If `a` and `b` have different lengths.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_isa(Isa::detect(), a, b)
}

// ---------------------------------------------------------------------------------------------
// axpy

/// Reference `y += alpha·x` (one multiply and one add per element, unfused).
///
/// # Panics
/// If `x` and `y` have different lengths.
pub fn axpy_ref(alpha: f32, x: &[f32], y: &mut [f32]) {
    check_same_len("axpy", "x", x.len(), "y", y.len());
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv += alpha * xv;
    }
}

struct AxpyBody<'a> {
    alpha: f32,
    x: &'a [f32],
    y: &'a mut [f32],
}

impl WithSimd for AxpyBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        axpy_simd(s, self.alpha, self.x, self.y);
    }
}

/// `y += alpha·x` with the pulp body instantiated for `isa`.
///
/// # Panics
/// If `x` and `y` have different lengths.
pub fn axpy_isa(isa: Isa, alpha: f32, x: &[f32], y: &mut [f32]) {
    check_same_len("axpy", "x", x.len(), "y", y.len());
    isa.run(AxpyBody { alpha, x, y });
}

/// `y += alpha·x` on the best instruction set.
///
/// # Panics
/// If `x` and `y` have different lengths.
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    axpy_isa(Isa::detect(), alpha, x, y);
}

// ---------------------------------------------------------------------------------------------
// add

/// Reference `dst += src`.
///
/// # Panics
/// If `dst` and `src` have different lengths.
pub fn add_ref(dst: &mut [f32], src: &[f32]) {
    check_same_len("add", "dst", dst.len(), "src", src.len());
    for (d, &v) in dst.iter_mut().zip(src) {
        *d += v;
    }
}

struct AddBody<'a> {
    dst: &'a mut [f32],
    src: &'a [f32],
}

impl WithSimd for AddBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        add_simd(s, self.dst, self.src);
    }
}

/// `dst += src` with the pulp body instantiated for `isa`.
///
/// # Panics
/// If `dst` and `src` have different lengths.
pub fn add_isa(isa: Isa, dst: &mut [f32], src: &[f32]) {
    check_same_len("add", "dst", dst.len(), "src", src.len());
    isa.run(AddBody { dst, src });
}

/// `dst += src` on the best instruction set.
///
/// # Panics
/// If `dst` and `src` have different lengths.
#[inline]
pub fn add(dst: &mut [f32], src: &[f32]) {
    add_isa(Isa::detect(), dst, src);
}

// ---------------------------------------------------------------------------------------------
// scale

/// Reference `x *= alpha`.
pub fn scale_ref(x: &mut [f32], alpha: f32) {
    for v in x {
        *v *= alpha;
    }
}

struct ScaleBody<'a> {
    x: &'a mut [f32],
    alpha: f32,
}

impl WithSimd for ScaleBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        scale_simd(s, self.x, self.alpha);
    }
}

/// `x *= alpha` with the pulp body instantiated for `isa`.
pub fn scale_isa(isa: Isa, x: &mut [f32], alpha: f32) {
    isa.run(ScaleBody { x, alpha });
}

/// `x *= alpha` on the best instruction set.
#[inline]
pub fn scale(x: &mut [f32], alpha: f32) {
    scale_isa(Isa::detect(), x, alpha);
}

// ---------------------------------------------------------------------------------------------
// mul_add

/// Reference `dst += a ⊙ b` (one multiply and one add per element, unfused).
///
/// # Panics
/// If the three slices differ in length.
pub fn mul_add_ref(dst: &mut [f32], a: &[f32], b: &[f32]) {
    check_same_len("mul_add", "dst", dst.len(), "a", a.len());
    check_same_len("mul_add", "dst", dst.len(), "b", b.len());
    for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        *d += x * y;
    }
}

struct MulAddBody<'a> {
    dst: &'a mut [f32],
    a: &'a [f32],
    b: &'a [f32],
}

impl WithSimd for MulAddBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let (d_head, d_tail) = S::as_mut_simd_f32s(self.dst);
        let (a_head, a_tail) = S::as_simd_f32s(self.a);
        let (b_head, b_tail) = S::as_simd_f32s(self.b);
        for ((vd, &va), &vb) in d_head.iter_mut().zip(a_head).zip(b_head) {
            *vd = s.mul_add_f32s(va, vb, *vd);
        }
        if !d_tail.is_empty() {
            let (va, vb) = (s.partial_load_f32s(a_tail), s.partial_load_f32s(b_tail));
            let vd = s.partial_load_f32s(d_tail);
            s.partial_store_f32s(d_tail, s.mul_add_f32s(va, vb, vd));
        }
    }
}

/// `dst += a ⊙ b` with the pulp body instantiated for `isa`.
///
/// # Panics
/// If the three slices differ in length.
pub fn mul_add_isa(isa: Isa, dst: &mut [f32], a: &[f32], b: &[f32]) {
    check_same_len("mul_add", "dst", dst.len(), "a", a.len());
    check_same_len("mul_add", "dst", dst.len(), "b", b.len());
    isa.run(MulAddBody { dst, a, b });
}

/// `dst += a ⊙ b` on the best instruction set.
///
/// # Panics
/// If the three slices differ in length.
#[inline]
pub fn mul_add(dst: &mut [f32], a: &[f32], b: &[f32]) {
    mul_add_isa(Isa::detect(), dst, a, b);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{AWKWARD_SIZES, Rng};
    use alloc::vec::Vec;

    fn sizes() -> impl Iterator<Item = usize> {
        AWKWARD_SIZES.iter().copied().chain([0, 1000, 4099])
    }

    fn check_dot(isa: Isa) {
        let mut rng = Rng::new(21);
        for n in sizes() {
            let a = rng.normal_vec(n, 1.0);
            let b = rng.normal_vec(n, 1.0);
            let want = dot_ref(&a, &b);
            let got = dot_isa(isa, &a, &b);
            let mag: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum();
            // Tolerance: 1e-6·(1 + Σ|a_i·b_i|); f32 partial sums in another order, and for
            // n ≤ 4099 the accumulated rounding stays well below this (a dropped term of
            // magnitude ~1 fails it).
            assert!(
                (got - want).abs() <= 1e-6 * (1.0 + mag),
                "dot {isa} n={n}: got {got}, want {want}"
            );
        }
    }
    crate::isa_tests!(dot, check_dot);

    fn check_axpy(isa: Isa) {
        let mut rng = Rng::new(22);
        for n in sizes() {
            let x = rng.normal_vec(n, 1.0);
            let y0 = rng.normal_vec(n, 1.0);
            let alpha = rng.uniform(-2.0, 2.0);
            let mut want = y0.clone();
            axpy_ref(alpha, &x, &mut want);
            let mut got = y0.clone();
            axpy_isa(isa, alpha, &x, &mut got);
            for i in 0..n {
                // Tolerance: one rounding of the product (fused vs unfused multiply-add):
                // 2^-24·|alpha·x| plus one ulp of the result.
                let tol = (alpha * x[i]).abs() * f32::EPSILON + want[i].abs() * f32::EPSILON;
                assert!(
                    (got[i] - want[i]).abs() <= tol,
                    "axpy {isa} n={n} i={i}: got {}, want {}",
                    got[i],
                    want[i]
                );
            }
        }
    }
    crate::isa_tests!(axpy, check_axpy);

    fn check_mul_add(isa: Isa) {
        let mut rng = Rng::new(23);
        for n in sizes() {
            let a = rng.normal_vec(n, 1.0);
            let b = rng.normal_vec(n, 1.0);
            let d0 = rng.normal_vec(n, 1.0);
            let mut want = d0.clone();
            mul_add_ref(&mut want, &a, &b);
            let mut got = d0.clone();
            mul_add_isa(isa, &mut got, &a, &b);
            for i in 0..n {
                // Tolerance: as axpy, one rounding of the product plus one ulp of the result.
                let tol = (a[i] * b[i]).abs() * f32::EPSILON + want[i].abs() * f32::EPSILON;
                assert!(
                    (got[i] - want[i]).abs() <= tol,
                    "mul_add {isa} n={n} i={i}: got {}, want {}",
                    got[i],
                    want[i]
                );
            }
        }
    }
    crate::isa_tests!(mul_add, check_mul_add);

    fn check_add(isa: Isa) {
        let mut rng = Rng::new(23);
        for n in sizes() {
            let src = rng.normal_vec(n, 1.0);
            let d0 = rng.normal_vec(n, 1.0);
            let mut want = d0.clone();
            add_ref(&mut want, &src);
            let mut got = d0.clone();
            add_isa(isa, &mut got, &src);
            // Exact: one IEEE addition per element on both paths.
            assert_eq!(got, want, "add {isa} n={n}");
        }
    }
    crate::isa_tests!(add, check_add);

    fn check_scale(isa: Isa) {
        let mut rng = Rng::new(24);
        for n in sizes() {
            let x0 = rng.normal_vec(n, 1.0);
            let alpha = rng.uniform(-3.0, 3.0);
            let mut want = x0.clone();
            scale_ref(&mut want, alpha);
            let mut got = x0.clone();
            scale_isa(isa, &mut got, alpha);
            // Exact: one IEEE multiplication per element on both paths.
            assert_eq!(got, want, "scale {isa} n={n}");
        }
    }
    crate::isa_tests!(scale, check_scale);

    #[test]
    fn fast_paths_match_reference() {
        let mut rng = Rng::new(25);
        let a = rng.normal_vec(333, 1.0);
        let b = rng.normal_vec(333, 1.0);
        let mag: f32 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum();
        // Same tolerance as check_dot.
        assert!((dot(&a, &b) - dot_ref(&a, &b)).abs() <= 1e-6 * (1.0 + mag));
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);

        let mut y: Vec<f32> = b.clone();
        axpy(0.5, &a, &mut y);
        for i in 0..333 {
            // One ulp of the result plus one rounding of the product (see check_axpy).
            let want = b[i] + 0.5 * a[i];
            let tol = (0.5 * a[i]).abs() * f32::EPSILON + want.abs() * f32::EPSILON;
            assert!((y[i] - want).abs() <= tol, "axpy i={i}");
        }

        let mut d = a.clone();
        add(&mut d, &b);
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_eq!(d, want, "add");

        let mut x = a.clone();
        scale(&mut x, -1.5);
        let want: Vec<f32> = a.iter().map(|v| v * -1.5).collect();
        assert_eq!(x, want, "scale");
    }

    #[test]
    #[should_panic(expected = "dot: b has 3 values, expected 2")]
    fn dot_rejects_mismatched_lengths() {
        dot(&[1.0, 2.0], &[1.0, 2.0, 3.0]);
    }

    #[test]
    #[should_panic(expected = "axpy: y has 1 values, expected 2")]
    fn axpy_rejects_mismatched_lengths() {
        axpy(1.0, &[1.0, 2.0], &mut [0.0]);
    }
}
