//! Every `linear` path against its reference: f32, f16 and i16 weights, on both sides of the
//! few-row limit (few rows, small tiles) and, for f32, of the `gemm` threshold; `matmul`'s fast
//! path. (The cube of small shapes is in `small`, the storage-only checks in the storage
//! modules, the half-precision gemv in `gemv`.)

use super::*;
use crate::testing::{AWKWARD_SIZES, Rng};
use alloc::vec;
use alloc::vec::Vec;

/// Asserts `|got - want| ≤ 1e-5·(1 + mag(i, j))` for every output `y[i, j]` (rows of `n`),
/// where `mag(i, j)` is `Σ|x_i·w_i|` of the output: f32 rounding of a length-k sum.
fn assert_within(
    ctx: &str,
    got: &[f32],
    want: &[f32],
    n: usize,
    mag: impl Fn(usize, usize) -> f32,
) {
    assert_eq!(got.len(), want.len(), "{ctx}");
    for (at, (&g, &r)) in got.iter().zip(want).enumerate() {
        let (i, j) = (at / n, at % n);
        assert!(
            (g - r).abs() <= 1e-5 * (1.0 + mag(i, j)),
            "{ctx}: y[{i},{j}] got {g} want {r}"
        );
    }
}

/// Per-output tolerance: 1e-5·(1 + Σ|x_i·w_i|), i.e. f32 rounding of a length-k sum (`w` f32,
/// or the exactly widened weights).
pub(super) fn assert_linear_close(
    ctx: &str,
    got: &[f32],
    want: &[f32],
    x: &[f32],
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
) {
    assert_eq!(got.len(), m * n, "{ctx}");
    assert_within(ctx, got, want, n, |i, j| {
        (0..k).map(|p| (x[i * k + p] * w[j * k + p]).abs()).sum()
    });
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

/// Test shapes `(m, k, n)` of the 16-bit weight products: every m from one row to past the
/// few-row limit, awkward depths (one crossing the few-row chunk of 512 and the broadcast panel
/// depth) for each `(m, n)` of `at_depths`, widths around the tiles, and empty products.
fn w16_shapes(at_depths: &[(usize, usize)]) -> Vec<(usize, usize, usize)> {
    let mut v = Vec::new();
    for m in 1..=few::FEW_MAX_ROWS + 2 {
        v.push((m, 33, 7));
    }
    for &k in AWKWARD_SIZES.iter().chain(&[384, 600, 1100]) {
        for &(m, n) in at_depths {
            v.push((m, k, n));
        }
    }
    for &n in AWKWARD_SIZES {
        v.push((3, 40, n));
        v.push((20, 40, n));
    }
    v.extend([(0, 4, 4), (4, 0, 4), (4, 4, 0), (65, 33, 63)]);
    v
}

// ---------------------------------------------------------------------------------------------
// f32 weights

/// A path of `linear` with f32 weights against `linear_ref` over [`shapes`], with and without a
/// bias.
fn check_f32_path(
    seed: u64,
    path: &str,
    run: impl Fn(&[f32], &[f32], Option<&[f32]>, &mut [f32], usize, usize, usize),
) {
    let mut rng = Rng::new(seed);
    for (m, k, n) in shapes() {
        let x = rng.normal_vec(m * k, 1.0);
        let w = rng.normal_vec(n * k, 0.5);
        let b = rng.normal_vec(n, 0.5);
        for bias in [None, Some(&b[..])] {
            let mut want = vec![0.0; m * n];
            linear_ref(&x, &w, bias, &mut want, m, k, n);
            let mut got = vec![f32::NAN; m * n];
            run(&x, &w, bias, &mut got, m, k, n);
            let ctx = alloc::format!("{path} {m}x{k}x{n}");
            assert_linear_close(&ctx, &got, &want, &x, &w, m, k, n);
        }
    }
}

fn check_linear_isa(isa: Isa) {
    check_f32_path(3, &alloc::format!("linear {isa}"), |x, w, b, y, m, k, n| {
        linear_isa(isa, x, w, b, y, m, k, n)
    });
}
crate::isa_tests!(linear_pulp, check_linear_isa);

#[test]
fn linear_fast_path_matches_reference() {
    check_f32_path(4, "linear gemm", linear);
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

// ---------------------------------------------------------------------------------------------
// f16 weights

/// Weights as f16 and their exact f32 values.
fn f16_weights(rng: &mut Rng, len: usize) -> (Vec<f16>, Vec<f32>) {
    let w: Vec<f16> = (0..len)
        .map(|_| f16::from_f32(rng.normal() * 0.5))
        .collect();
    let wf = w.iter().map(|v| v.to_f32()).collect();
    (w, wf)
}

fn check_linear_f16(isa: Isa) {
    let mut rng = Rng::new(31);
    for (m, k, n) in w16_shapes(&[(1, 5), (4, 13), (11, 17)]) {
        let x = rng.normal_vec(m * k, 1.0);
        let (w, wf) = f16_weights(&mut rng, n * k);
        let b = rng.normal_vec(n, 0.5);
        for bias in [None, Some(&b[..])] {
            let mut want = vec![0.0; m * n];
            linear_f16_ref(&x, &w, bias, &mut want, m, k, n);
            let mut got = vec![f32::NAN; m * n];
            linear_f16_isa(isa, &x, &w, bias, &mut got, m, k, n);
            let ctx = alloc::format!("linear_f16 {isa} {m}x{k}x{n} bias={}", bias.is_some());
            // f32 sums of the exactly widened weights in another order.
            assert_linear_close(&ctx, &got, &want, &x, &wf, m, k, n);
        }
    }
}
crate::isa_tests!(linear_f16_paths, check_linear_f16);

/// Inf, NaN and subnormal weights on both paths (few rows, broadcast tiles): outputs follow the
/// reference (inf and NaN propagate to their outputs only, subnormals are widened exactly).
fn check_linear_f16_specials(isa: Isa) {
    let mut rng = Rng::new(32);
    for m in [2, 13, 40] {
        let (k, n) = (70, 6);
        let x: Vec<f32> = (0..m * k).map(|_| rng.uniform(0.5, 1.5)).collect();
        let (mut w, _) = f16_weights(&mut rng, n * k);
        w[k - 1] = f16::INFINITY; // row 0: +inf in the tail
        w[k] = f16::NAN; // row 1: NaN in the first lane
        for p in 0..k {
            w[2 * k + p] = f16::from_bits(1 + (p as u16 % 0x3FF)); // row 2: subnormals
            w[3 * k + p] = f16::from_bits(if p % 2 == 0 { 0x7BFF } else { 0xFBFF }); // ±65504
        }
        w[5 * k + 3] = f16::NEG_INFINITY; // row 5: -inf
        let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        let mut want = vec![0.0; m * n];
        linear_f16_ref(&x, &w, None, &mut want, m, k, n);
        let mut got = vec![0.0; m * n];
        linear_f16_isa(isa, &x, &w, None, &mut got, m, k, n);
        for i in 0..m {
            for j in 0..n {
                let (g, r) = (got[i * n + j], want[i * n + j]);
                let ctx = alloc::format!("linear_f16 {isa} m={m} y[{i},{j}]: {g} vs {r}");
                match j {
                    0 | 5 => assert!(g.is_infinite() && g == r, "{ctx}"),
                    1 => assert!(g.is_nan(), "{ctx}"),
                    _ => {
                        let mag: f32 = (0..k).map(|p| (x[i * k + p] * wf[j * k + p]).abs()).sum();
                        // The f32 tolerance, and relative for the tiny subnormal row.
                        assert!((g - r).abs() <= 1e-5 * (1.0 + mag), "{ctx}");
                        assert!((g - r).abs() <= 1e-5 * r.abs() || j != 2, "{ctx}");
                    }
                }
            }
        }
    }
}
crate::isa_tests!(linear_f16_specials, check_linear_f16_specials);

#[test]
fn linear_f16_fast_path_matches_the_f32_product_of_the_widened_weights() {
    let mut rng = Rng::new(33);
    for (m, k, n) in [(1, 384, 100), (4, 1536, 30), (8, 384, 57), (40, 384, 70)] {
        let x = rng.normal_vec(m * k, 1.0);
        let (w, wf) = f16_weights(&mut rng, n * k);
        let b = rng.normal_vec(n, 0.5);
        let mut want = vec![0.0; m * n];
        linear_ref(&x, &wf, Some(&b), &mut want, m, k, n);
        let mut got = vec![0.0; m * n];
        linear_f16(&x, &w, Some(&b), &mut got, m, k, n);
        let ctx = alloc::format!("linear_f16 {m}x{k}x{n}");
        assert_linear_close(&ctx, &got, &want, &x, &wf, m, k, n);
    }
}

#[test]
#[should_panic(expected = "linear_f16: w has 6 values, expected n·k = 2·4")]
fn linear_f16_checks_w() {
    linear_f16(&[0.0; 4], &[f16::ZERO; 6], None, &mut [0.0; 2], 1, 4, 2);
}

// ---------------------------------------------------------------------------------------------
// i16 weights with row scales

/// Random integer weights over the whole i16 range (both extremes included) and scales.
fn i16_weights(rng: &mut Rng, n: usize, k: usize) -> (Vec<i16>, Vec<f32>) {
    let mut q: Vec<i16> = (0..n * k)
        .map(|_| rng.uniform(-32767.5, 32767.5) as i16)
        .collect();
    if n * k >= 2 {
        (q[0], q[n * k - 1]) = (-32768, 32767);
    }
    let scales = (0..n).map(|_| rng.uniform(1e-6, 1e-4)).collect();
    (q, scales)
}

/// `1e-5·(1 + Σ|x·q·s|)` per output: f32 sums of exact products in another order.
fn assert_i16_close(
    ctx: &str,
    got: &[f32],
    want: &[f32],
    x: &[f32],
    (q, s): (&[i16], &[f32]),
    k: usize,
    n: usize,
) {
    assert_within(ctx, got, want, n, |i, j| {
        (0..k)
            .map(|p| (x[i * k + p] * q[j * k + p] as f32 * s[j]).abs())
            .sum()
    });
}

fn check_linear_i16(isa: Isa) {
    let mut rng = Rng::new(41);
    for (m, k, n) in w16_shapes(&[(1, 5), (4, 13), (11, 17), (40, 9)]) {
        let x = rng.normal_vec(m * k, 1.0);
        let (q, s) = i16_weights(&mut rng, n, k);
        let b = rng.normal_vec(n, 0.5);
        for bias in [None, Some(&b[..])] {
            let mut want = vec![0.0; m * n];
            linear_i16_ref(&x, &q, &s, bias, &mut want, m, k, n);
            let mut got = vec![f32::NAN; m * n];
            linear_i16_isa(isa, &x, &q, &s, bias, &mut got, m, k, n);
            let ctx = alloc::format!("linear_i16 {isa} {m}x{k}x{n} bias={}", bias.is_some());
            assert_i16_close(&ctx, &got, &want, &x, (&q, &s), k, n);
        }
    }
}
crate::isa_tests!(linear_i16_paths, check_linear_i16);

#[test]
fn linear_i16_fast_path_matches_the_reference() {
    let mut rng = Rng::new(42);
    for (m, k, n) in [(1, 384, 100), (4, 1536, 30), (8, 384, 57), (40, 384, 70)] {
        let x = rng.normal_vec(m * k, 1.0);
        let (q, s) = i16_weights(&mut rng, n, k);
        let b = rng.normal_vec(n, 0.5);
        let mut want = vec![0.0; m * n];
        linear_i16_ref(&x, &q, &s, Some(&b), &mut want, m, k, n);
        let mut got = vec![0.0; m * n];
        linear_i16(&x, &q, &s, Some(&b), &mut got, m, k, n);
        let ctx = alloc::format!("linear_i16 {m}x{k}x{n}");
        assert_i16_close(&ctx, &got, &want, &x, (&q, &s), k, n);
    }
}

#[test]
#[should_panic(expected = "linear_i16: scales has 3 values, expected n = 2")]
fn linear_i16_checks_scales() {
    linear_i16(&[0.0; 4], &[0; 8], &[1.0; 3], None, &mut [0.0; 2], 1, 4, 2);
}
