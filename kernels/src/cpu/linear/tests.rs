//! Tests of the linear kernels against their f64 references.

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
    // Every row-tile remainder (m mod 4) with every feature-tile remainder.
    for m in 4..=9 {
        for n in [1, 2, 3, 7, 8, 9, 10] {
            v.push((m, 37, n));
        }
    }
    // Past the tiled kernel's limits: many rows, or few rows of a long input.
    v.extend([(17, 384, 13), (12, 1, 5), (20, 3300, 5)]);
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

fn check_gemv_half(isa: Isa) {
    let mut rng = Rng::new(6);
    let mut shapes: Vec<(usize, usize)> = AWKWARD_SIZES.iter().map(|&k| (5, k)).collect();
    shapes.extend([(0, 8), (3, 0), (1, 64), (300, 64), (17, 100)]);
    for (n, k) in shapes {
        let x = rng.normal_vec(k, 1.0);
        let wf = rng.normal_vec(n * k, 0.5);
        let w16: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
        let wb16: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
        let w16f: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
        let wb16f: Vec<f32> = wb16.iter().map(|v| v.to_f32()).collect();

        let mut want = vec![0.0; n];
        let mut got = vec![f32::NAN; n];
        gemv_f16_ref(&w16, &x, &mut want, n, k);
        gemv_f16_isa(isa, &w16, &x, &mut got, n, k);
        // Same tolerance as linear: 1e-5·(1 + Σ|x·w|), with w the exactly widened table.
        assert_linear_close(
            &alloc::format!("gemv_f16 {isa} {n}x{k}"),
            &got,
            &want,
            &x,
            &w16f,
            1,
            k,
            n,
        );

        gemv_bf16_ref(&wb16, &x, &mut want, n, k);
        gemv_bf16_isa(isa, &wb16, &x, &mut got, n, k);
        assert_linear_close(
            &alloc::format!("gemv_bf16 {isa} {n}x{k}"),
            &got,
            &want,
            &x,
            &wb16f,
            1,
            k,
            n,
        );
    }
}
crate::isa_tests!(gemv_half, check_gemv_half);

/// Tables with inf, NaN, subnormal and extreme finite weights: the outputs follow the
/// reference (inf and NaN propagate, subnormals are exact, 65504 is finite).
fn check_gemv_half_specials(isa: Isa) {
    let mut rng = Rng::new(8);
    for &k in AWKWARD_SIZES.iter().chain(&[100usize]) {
        let n = 6;
        let x: Vec<f32> = (0..k).map(|_| rng.uniform(0.5, 1.5)).collect();
        let mut w16: Vec<f16> = (0..n * k).map(|_| f16::from_f32(rng.normal())).collect();
        w16[k - 1] = f16::INFINITY; // row 0: +inf (in the tail or the last lane)
        w16[k] = f16::NAN; // row 1: NaN in the first lane
        for p in 0..k {
            w16[2 * k + p] = f16::from_bits(1 + (p as u16 % 0x3FF)); // row 2: subnormals
            w16[3 * k + p] = f16::from_bits(if p % 2 == 0 { 0x7BFF } else { 0xFBFF }); // ±65504
            w16[4 * k + p] = f16::from_bits(0x8000 | (p as u16 % 0x3FF)); // -0 and -subnormals
        }
        w16[5 * k + k / 2] = f16::NEG_INFINITY; // row 5: -inf mid-row
        let wb16: Vec<bf16> = w16.iter().map(|v| bf16::from_f32(v.to_f32())).collect();

        let mut want = vec![0.0; n];
        let mut got = vec![0.0; n];
        for half in ["f16", "bf16"] {
            if half == "f16" {
                gemv_f16_ref(&w16, &x, &mut want, n, k);
                gemv_f16_isa(isa, &w16, &x, &mut got, n, k);
            } else {
                gemv_bf16_ref(&wb16, &x, &mut want, n, k);
                gemv_bf16_isa(isa, &wb16, &x, &mut got, n, k);
            }
            for j in 0..n {
                let (g, r) = (got[j], want[j]);
                let ctx = alloc::format!("gemv_{half} {isa} k={k} row {j}: got {g}, want {r}");
                if r.is_nan() {
                    assert!(g.is_nan(), "{ctx}");
                } else if r.is_infinite() {
                    assert_eq!(g, r, "{ctx}");
                } else {
                    // Finite rows: the linear tolerance with Σ|w·x| ≤ 65504·Σx.
                    let mag: f32 = (0..k).map(|p| (w16[j * k + p].to_f32() * x[p]).abs()).sum();
                    assert!((g - r).abs() <= 1e-5 * (1.0 + mag), "{ctx}");
                    // Subnormal rows are tiny but exact in f64: keep them relative too.
                    assert!(
                        (g - r).abs() <= 1e-5 * r.abs().max(1e-30) || mag > 1.0,
                        "{ctx}"
                    );
                }
            }
            assert!(got[0].is_infinite() && got[1].is_nan() && got[5].is_infinite());
        }
    }
}
crate::isa_tests!(gemv_half_specials, check_gemv_half_specials);

#[test]
fn gemv_half_fast_paths_match_reference() {
    let mut rng = Rng::new(7);
    let (n, k) = (123, 64);
    let x = rng.normal_vec(k, 1.0);
    let w16: Vec<f16> = (0..n * k).map(|_| f16::from_f32(rng.normal())).collect();
    let wb16: Vec<bf16> = w16.iter().map(|v| bf16::from_f32(v.to_f32())).collect();
    let wf: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
    // f16 values are exact in bf16 only when they fit 8 mantissa bits, so compare each
    // path with its own reference, and the f16 path with the f32 linear reference too.
    let mut want = vec![0.0; n];
    let mut got = vec![0.0; n];
    linear_ref(&x, &wf, None, &mut want, 1, k, n);
    gemv_f16(&w16, &x, &mut got, n, k);
    assert_linear_close("gemv_f16 fast", &got, &want, &x, &wf, 1, k, n);
    let wbf: Vec<f32> = wb16.iter().map(|v| v.to_f32()).collect();
    gemv_bf16_ref(&wb16, &x, &mut want, n, k);
    gemv_bf16(&wb16, &x, &mut got, n, k);
    assert_linear_close("gemv_bf16 fast", &got, &want, &x, &wbf, 1, k, n);
}

#[test]
#[should_panic(expected = "gemv_f16: x has 3 values, expected k = 4")]
fn gemv_checks_x() {
    gemv_f16(&[f16::ZERO; 8], &[0.0; 3], &mut [0.0; 2], 2, 4);
}
