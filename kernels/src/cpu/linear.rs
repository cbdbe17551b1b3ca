//! Linear layers and matrix products.
//!
//! Layout: row-major. `linear` follows PyTorch's `nn.Linear`: `y[m, n] = x[m, k] · w[n, k]ᵀ + b[n]`
//! (weights stored `[out, in]`). `matmul` is the plain product `c[m, n] = a[m, k] · b[k, n]`.
//!
//! Paths: `*_ref` plain loops (f64 accumulation); `linear_isa` a pulp dot-product kernel (the
//! row-vector fast path for batch 1, and the only path without `std`); under `std`, products
//! with more than one row go through the `gemm` crate. Note that `gemm` computes
//! `dst := alpha·dst + beta·lhs·rhs` (alpha/beta swapped relative to BLAS); the wrapper below is
//! the only place that calls it.
//!
//! Tolerance of every fast path against the reference: `1e-5·(1 + Σ|x_i·w_i|)` per output
//! (f32 accumulation in a different order).

use super::isa::Isa;
use pulp::{Simd, WithSimd};

#[track_caller]
fn check_linear(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &[f32],
    m: usize,
    k: usize,
    n: usize,
) {
    assert_eq!(
        x.len(),
        m * k,
        "linear: x has {} values, expected m·k = {m}·{k}",
        x.len()
    );
    assert_eq!(
        w.len(),
        n * k,
        "linear: w has {} values, expected n·k = {n}·{k}",
        w.len()
    );
    assert_eq!(
        y.len(),
        m * n,
        "linear: y has {} values, expected m·n = {m}·{n}",
        y.len()
    );
    if let Some(b) = bias {
        assert_eq!(
            b.len(),
            n,
            "linear: bias has {} values, expected {n}",
            b.len()
        );
    }
}

/// Reference `y = x·wᵀ + b` with f64 accumulation.
pub fn linear_ref(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    check_linear(x, w, bias, y, m, k, n);
    for i in 0..m {
        for j in 0..n {
            let mut acc = bias.map_or(0.0, |b| b[j] as f64);
            for p in 0..k {
                acc += x[i * k + p] as f64 * w[j * k + p] as f64;
            }
            y[i * n + j] = acc as f32;
        }
    }
}

/// Dot product of two equal-length slices with 4 independent accumulators.
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

struct LinearBody<'a> {
    x: &'a [f32],
    w: &'a [f32],
    bias: Option<&'a [f32]>,
    y: &'a mut [f32],
    k: usize,
    n: usize,
}

impl WithSimd for LinearBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self {
            x,
            w,
            bias,
            y,
            k,
            n,
        } = self;
        if k == 0 {
            for (row_y, _) in y.chunks_exact_mut(n.max(1)).zip(0..) {
                for (j, v) in row_y.iter_mut().enumerate() {
                    *v = bias.map_or(0.0, |b| b[j]);
                }
            }
            return;
        }
        for (row_x, row_y) in x.chunks_exact(k).zip(y.chunks_exact_mut(n.max(1))) {
            for (j, (out, wj)) in row_y.iter_mut().zip(w.chunks_exact(k)).enumerate() {
                *out = dot_simd(s, row_x, wj) + bias.map_or(0.0, |b| b[j]);
            }
        }
    }
}

/// `y = x·wᵀ + b` with the pulp dot-product kernel for `isa` (row-vector / no_std path).
pub fn linear_isa(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    check_linear(x, w, bias, y, m, k, n);
    if m == 0 || n == 0 {
        return;
    }
    isa.run(LinearBody {
        x,
        w,
        bias,
        y,
        k,
        n,
    });
}

/// `y = x·wᵀ + b`, fast path: the pulp kernel for a single row, `gemm` for more (under `std`).
pub fn linear(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    check_linear(x, w, bias, y, m, k, n);
    #[cfg(feature = "std")]
    if m > 1 && k > 0 && n > 0 {
        if let Some(b) = bias {
            for row in y.chunks_exact_mut(n) {
                row.copy_from_slice(b);
            }
        }
        // SAFETY: x is m×k row-major (row stride k, col stride 1); wᵀ is read from w ([n,k]
        // row-major) as a k×n matrix with row stride 1 and column stride k; y is m×n row-major.
        // The lengths were checked above, so every index touched is in bounds, and y does not
        // alias x or w (it is a distinct &mut).
        unsafe {
            gemm_raw(
                y.as_mut_ptr(),
                n as isize,
                1,
                x.as_ptr(),
                k as isize,
                1,
                w.as_ptr(),
                1,
                k as isize,
                m,
                k,
                n,
                bias.is_some(),
            )
        };
        return;
    }
    linear_isa(Isa::detect(), x, w, bias, y, m, k, n);
}

/// Reference `c = a·b (+ c if accumulate)` with f64 accumulation.
pub fn matmul_ref(
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    assert_eq!(
        a.len(),
        m * k,
        "matmul: a has {} values, expected {m}·{k}",
        a.len()
    );
    assert_eq!(
        b.len(),
        k * n,
        "matmul: b has {} values, expected {k}·{n}",
        b.len()
    );
    assert_eq!(
        c.len(),
        m * n,
        "matmul: c has {} values, expected {m}·{n}",
        c.len()
    );
    for i in 0..m {
        for j in 0..n {
            let mut acc = if accumulate { c[i * n + j] as f64 } else { 0.0 };
            for p in 0..k {
                acc += a[i * k + p] as f64 * b[p * n + j] as f64;
            }
            c[i * n + j] = acc as f32;
        }
    }
}

/// `c = a·b (+ c if accumulate)`, row-major, through `gemm` under `std` and a pulp
/// axpy kernel otherwise.
pub fn matmul(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize, accumulate: bool) {
    assert_eq!(
        a.len(),
        m * k,
        "matmul: a has {} values, expected {m}·{k}",
        a.len()
    );
    assert_eq!(
        b.len(),
        k * n,
        "matmul: b has {} values, expected {k}·{n}",
        b.len()
    );
    assert_eq!(
        c.len(),
        m * n,
        "matmul: c has {} values, expected {m}·{n}",
        c.len()
    );
    if !accumulate {
        c.fill(0.0);
    }
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    #[cfg(feature = "std")]
    {
        // SAFETY: all three matrices are row-major with the lengths checked above; c is a
        // distinct &mut and cannot alias a or b.
        unsafe {
            gemm_raw(
                c.as_mut_ptr(),
                n as isize,
                1,
                a.as_ptr(),
                k as isize,
                1,
                b.as_ptr(),
                n as isize,
                1,
                m,
                k,
                n,
                true,
            )
        };
    }
    #[cfg(not(feature = "std"))]
    Isa::detect().run(MatmulAxpyBody { a, b, c, k, n });
}

#[cfg(not(feature = "std"))]
struct MatmulAxpyBody<'a> {
    a: &'a [f32],
    b: &'a [f32],
    c: &'a mut [f32],
    k: usize,
    n: usize,
}

#[cfg(not(feature = "std"))]
impl WithSimd for MatmulAxpyBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self { a, b, c, k, n } = self;
        for (row_a, row_c) in a.chunks_exact(k).zip(c.chunks_exact_mut(n)) {
            for (p, &av) in row_a.iter().enumerate() {
                let brow = &b[p * n..(p + 1) * n];
                let va = s.splat_f32s(av);
                let (c_head, c_tail) = S::as_mut_simd_f32s(row_c);
                let (b_head, b_tail) = S::as_simd_f32s(brow);
                for (cv, &bv) in c_head.iter_mut().zip(b_head) {
                    *cv = s.mul_add_f32s(va, bv, *cv);
                }
                for (cv, &bv) in c_tail.iter_mut().zip(b_tail) {
                    *cv += av * bv;
                }
            }
        }
    }
}

/// The one call site of `gemm::gemm`: `dst = (accumulate ? dst : 0) + lhs·rhs`.
///
/// # Safety
/// `dst` must be valid for writes and `lhs`/`rhs` for reads at every index
/// `i·rs + j·cs` of their m×n, m×k and k×n shapes; `dst` must not overlap `lhs` or `rhs`, and
/// distinct (i, j) of `dst` must map to distinct addresses.
#[cfg(feature = "std")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_raw(
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    lhs: *const f32,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const f32,
    rhs_rs: isize,
    rhs_cs: isize,
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    // SAFETY: forwarded from the caller's contract. gemm's argument order is
    // (m, n, k, dst, dst_cs, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs,
    //  alpha, beta, conj_dst, conj_lhs, conj_rhs, parallelism) with dst := alpha·dst + beta·lhs·rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            accumulate,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{AWKWARD_SIZES, Rng};
    use alloc::vec;
    use alloc::vec::Vec;

    /// Per-output tolerance: 1e-5·(1 + Σ|x_i·w_i|), i.e. f32 rounding of a length-k sum.
    fn assert_linear_close(
        ctx: &str,
        got: &[f32],
        want: &[f32],
        x: &[f32],
        w: &[f32],
        m: usize,
        k: usize,
        n: usize,
    ) {
        for i in 0..m {
            for j in 0..n {
                let mag: f32 = (0..k).map(|p| (x[i * k + p] * w[j * k + p]).abs()).sum();
                let (g, r) = (got[i * n + j], want[i * n + j]);
                assert!(
                    (g - r).abs() <= 1e-5 * (1.0 + mag),
                    "{ctx}: y[{i},{j}] got {g} want {r}"
                );
            }
        }
    }

    fn shapes() -> Vec<(usize, usize, usize)> {
        let mut v = Vec::new();
        for &k in AWKWARD_SIZES {
            v.push((1, k, 3));
            v.push((3, k, 17));
        }
        for &n in AWKWARD_SIZES {
            v.push((2, 64, n));
        }
        v.extend([(0, 4, 4), (4, 0, 4), (65, 33, 63), (1, 64, 1000)]);
        v
    }

    fn check_linear_isa(isa: Isa) {
        let mut rng = Rng::new(3);
        for (m, k, n) in shapes() {
            let x = rng.normal_vec(m * k, 1.0);
            let w = rng.normal_vec(n * k, 0.5);
            let b = rng.normal_vec(n, 0.5);
            for bias in [None, Some(&b[..])] {
                let mut want = vec![0.0; m * n];
                linear_ref(&x, &w, bias, &mut want, m, k, n);
                let mut got = vec![f32::NAN; m * n];
                linear_isa(isa, &x, &w, bias, &mut got, m, k, n);
                assert_linear_close(
                    &alloc::format!("linear {isa} {m}x{k}x{n}"),
                    &got,
                    &want,
                    &x,
                    &w,
                    m,
                    k,
                    n,
                );
            }
        }
    }
    crate::isa_tests!(linear_pulp, check_linear_isa);

    #[test]
    fn linear_fast_path_matches_reference() {
        let mut rng = Rng::new(4);
        for (m, k, n) in shapes() {
            let x = rng.normal_vec(m * k, 1.0);
            let w = rng.normal_vec(n * k, 0.5);
            let b = rng.normal_vec(n, 0.5);
            for bias in [None, Some(&b[..])] {
                let mut want = vec![0.0; m * n];
                linear_ref(&x, &w, bias, &mut want, m, k, n);
                let mut got = vec![f32::NAN; m * n];
                linear(&x, &w, bias, &mut got, m, k, n);
                assert_linear_close(
                    &alloc::format!("linear gemm {m}x{k}x{n}"),
                    &got,
                    &want,
                    &x,
                    &w,
                    m,
                    k,
                    n,
                );
            }
        }
    }

    #[test]
    fn matmul_fast_path_matches_reference() {
        let mut rng = Rng::new(5);
        for (m, k, n) in shapes() {
            let a = rng.normal_vec(m * k, 1.0);
            let b = rng.normal_vec(k * n, 0.5);
            let c0 = rng.normal_vec(m * n, 1.0);
            for accumulate in [false, true] {
                let mut want = c0.clone();
                matmul_ref(&a, &b, &mut want, m, k, n, accumulate);
                let mut got = c0.clone();
                matmul(&a, &b, &mut got, m, k, n, accumulate);
                // 1e-5 absolute + 1e-5 relative, scaled by sqrt(k) for the longer sums.
                let tol = 1e-5 * (1.0 + k as f32).sqrt() * 4.0;
                crate::testing::assert_close(
                    &alloc::format!("matmul {m}x{k}x{n} acc={accumulate}"),
                    &got,
                    &want,
                    tol,
                    1e-5,
                );
            }
        }
    }
}
