//! Tests of the layer-norm kernels against the f64 references.

use super::*;
use crate::testing::{AWKWARD_SIZES, Rng};
use alloc::format;
use alloc::vec::Vec;

/// The eps values of the models we serve: SASRec 1e-12, NextItNet 1e-8, PyTorch's default
/// 1e-5, DiT 1e-6.
const EPS: [f32; 4] = [1e-12, 1e-8, 1e-5, 1e-6];

fn dims() -> Vec<usize> {
    let mut d = AWKWARD_SIZES.to_vec();
    d.push(384);
    d
}

/// Rows of several kinds, cycling with the row index: standard normal, a large common
/// offset (1000 ± 1, where one-pass `E[x²] − E[x]²` fails), tiny spread (std 1e-3, where eps
/// matters), constant, and a shifted/scaled normal.
fn make_rows(rng: &mut Rng, rows: usize, dim: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(rows * dim);
    for r in 0..rows {
        let c = rng.uniform(-3.0, 3.0);
        for _ in 0..dim {
            x.push(match r % 5 {
                0 => rng.normal(),
                1 => 1000.0 + rng.uniform(-1.0, 1.0),
                2 => 0.5 + 1e-3 * rng.normal(),
                3 => c,
                _ => 5.0 + 3.0 * rng.normal(),
            });
        }
    }
    x
}

fn affine(rng: &mut Rng, dim: usize) -> (Vec<f32>, Vec<f32>) {
    let gamma = (0..dim).map(|_| 1.0 + 0.3 * rng.normal()).collect();
    let beta = rng.normal_vec(dim, 0.3);
    (gamma, beta)
}

/// Per element: |got − want| ≤ 1e-6·(1 + |x̂·γ| + |β|), x̂·γ recovered as want − β. A few
/// f32 roundings of a value of that size; a wrong eps placement, an unbiased variance or a
/// mean off by one element fails it.
#[track_caller]
fn assert_ln_close(ctx: &str, got: &[f32], want: &[f32], beta: Option<&[f32]>, dim: usize) {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let b = beta.map_or(0.0, |b| b[i % dim]);
        let tol = 1e-6 * (1.0 + (w - b).abs() + b.abs());
        assert!(
            (g - w).abs() <= tol,
            "{ctx}: index {i} (row {}, col {}): got {g}, want {w}, tol {tol:e}",
            i / dim,
            i % dim
        );
    }
}

fn check_layer_norm(isa: Isa) {
    let mut rng = Rng::new(21);
    for dim in dims() {
        for rows in [0, 1, 5, 7] {
            for eps in EPS {
                let x = make_rows(&mut rng, rows, dim);
                let (gamma, beta) = affine(&mut rng, dim);
                let mut want = vec![0.0; rows * dim];
                layer_norm_ref(&x, rows, dim, &gamma, &beta, eps, &mut want);
                let mut got = vec![f32::NAN; rows * dim];
                layer_norm_isa(isa, &x, rows, dim, &gamma, &beta, eps, &mut got);
                let ctx = format!("layer_norm {isa} {rows}x{dim} eps={eps:e}");
                assert_ln_close(&ctx, &got, &want, Some(&beta), dim);
            }
        }
    }
}
crate::isa_tests!(layer_norm, check_layer_norm);

fn check_layer_norm_inplace(isa: Isa) {
    let mut rng = Rng::new(22);
    for dim in dims() {
        for eps in EPS {
            let rows = 6;
            let x = make_rows(&mut rng, rows, dim);
            let (gamma, beta) = affine(&mut rng, dim);
            let mut want = x.clone();
            layer_norm_inplace_ref(&mut want, rows, dim, &gamma, &beta, eps);
            let mut got = x.clone();
            layer_norm_inplace_isa(isa, &mut got, rows, dim, &gamma, &beta, eps);
            let ctx = format!("layer_norm_inplace {isa} {rows}x{dim} eps={eps:e}");
            assert_ln_close(&ctx, &got, &want, Some(&beta), dim);
        }
    }
}
crate::isa_tests!(layer_norm_inplace, check_layer_norm_inplace);

fn check_add_layer_norm(isa: Isa) {
    let mut rng = Rng::new(23);
    for dim in dims() {
        for eps in EPS {
            let rows = 5;
            let x = make_rows(&mut rng, rows, dim);
            // A residual of the same size as x (and, on the offset rows, one that cancels
            // most of the offset: the normalised input is the f32 sum).
            let residual: Vec<f32> = x
                .iter()
                .map(|&v| if v > 900.0 { -999.0 } else { rng.normal() })
                .collect();
            let (gamma, beta) = affine(&mut rng, dim);
            let mut want = vec![0.0; rows * dim];
            add_layer_norm_ref(&x, &residual, rows, dim, &gamma, &beta, eps, &mut want);
            let mut got = vec![f32::NAN; rows * dim];
            add_layer_norm_isa(isa, &x, &residual, rows, dim, &gamma, &beta, eps, &mut got);
            let ctx = format!("add_layer_norm {isa} {rows}x{dim} eps={eps:e}");
            assert_ln_close(&ctx, &got, &want, Some(&beta), dim);
        }
    }
}
crate::isa_tests!(add_layer_norm, check_add_layer_norm);

fn check_layer_norm_no_affine(isa: Isa) {
    let mut rng = Rng::new(24);
    for dim in dims() {
        for eps in EPS {
            let rows = 5;
            let x = make_rows(&mut rng, rows, dim);
            let mut want = vec![0.0; rows * dim];
            layer_norm_no_affine_ref(&x, rows, dim, eps, &mut want);
            let mut got = vec![f32::NAN; rows * dim];
            layer_norm_no_affine_isa(isa, &x, rows, dim, eps, &mut got);
            let ctx = format!("layer_norm_no_affine {isa} {rows}x{dim} eps={eps:e}");
            assert_ln_close(&ctx, &got, &want, None, dim);
        }
    }
}
crate::isa_tests!(layer_norm_no_affine, check_layer_norm_no_affine);

fn check_layer_norm_no_affine_inplace(isa: Isa) {
    let mut rng = Rng::new(13);
    for rows in [1, 3] {
        for dim in dims() {
            let x = make_rows(&mut rng, rows, dim);
            let mut want = vec![0.0f32; rows * dim];
            layer_norm_no_affine_ref(&x, rows, dim, 1e-6, &mut want);
            let mut got = x.clone();
            layer_norm_no_affine_inplace_isa(isa, &mut got, rows, dim, 1e-6);
            let ctx = format!("layer_norm_no_affine_inplace {isa} {rows}x{dim}");
            assert_ln_close(&ctx, &got, &want, None, dim);
        }
    }
}
crate::isa_tests!(
    layer_norm_no_affine_inplace,
    check_layer_norm_no_affine_inplace
);

fn check_modulate(isa: Isa) {
    let mut rng = Rng::new(25);
    for dim in dims() {
        for rows in [0, 1, 4] {
            let x = rng.normal_vec(rows * dim, 2.0);
            let shift = rng.normal_vec(dim, 1.0);
            let scale = rng.normal_vec(dim, 0.5);
            let mut want = x.clone();
            modulate_ref(&mut want, rows, dim, &shift, &scale);
            let mut got = x.clone();
            modulate_isa(isa, &mut got, rows, dim, &shift, &scale);
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                let j = i % dim;
                // 1e-6·(|x·(1 + scale)| + |shift|): two f32 roundings (1 + scale, the fma).
                let tol = 1e-6 * ((x[i] * (1.0 + scale[j])).abs() + shift[j].abs());
                assert!(
                    (g - w).abs() <= tol,
                    "modulate {isa} {rows}x{dim}: index {i}: got {g}, want {w}"
                );
            }
        }
    }
}
crate::isa_tests!(modulate, check_modulate);

#[test]
fn fast_paths_match_reference() {
    let mut rng = Rng::new(26);
    let (rows, dim, eps) = (50, 64, 1e-12);
    let x = make_rows(&mut rng, rows, dim);
    let res = rng.normal_vec(rows * dim, 1.0);
    let (gamma, beta) = affine(&mut rng, dim);
    let mut want = vec![0.0; rows * dim];
    let mut got = vec![f32::NAN; rows * dim];

    layer_norm_ref(&x, rows, dim, &gamma, &beta, eps, &mut want);
    layer_norm(&x, rows, dim, &gamma, &beta, eps, &mut got);
    assert_ln_close("layer_norm", &got, &want, Some(&beta), dim);

    let mut inplace = x.clone();
    layer_norm_inplace(&mut inplace, rows, dim, &gamma, &beta, eps);
    assert_eq!(inplace, got, "in-place and out-of-place layer_norm differ");

    add_layer_norm_ref(&x, &res, rows, dim, &gamma, &beta, eps, &mut want);
    add_layer_norm(&x, &res, rows, dim, &gamma, &beta, eps, &mut got);
    assert_ln_close("add_layer_norm", &got, &want, Some(&beta), dim);

    layer_norm_no_affine_ref(&x, rows, dim, eps, &mut want);
    layer_norm_no_affine(&x, rows, dim, eps, &mut got);
    assert_ln_close("layer_norm_no_affine", &got, &want, None, dim);

    let (shift, scale) = (rng.normal_vec(dim, 1.0), rng.normal_vec(dim, 0.5));
    let mut want = x.clone();
    modulate_ref(&mut want, rows, dim, &shift, &scale);
    let mut got = x.clone();
    modulate(&mut got, rows, dim, &shift, &scale);
    // The 1000 ± 1 rows reach |x·(1 + scale)| ≈ 3000: relative 1e-6.
    crate::testing::assert_close("modulate", &got, &want, 1e-5, 1e-6);
}

#[test]
fn matches_pytorch_closed_form() {
    // torch.nn.functional.layer_norm([1, 2, 3, 4], (4,), eps=1e-5): μ = 2.5, biased σ² = 1.25.
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let mut out = [0.0f32; 4];
    layer_norm_no_affine(&x, 1, 4, 1e-5, &mut out);
    for (&o, &v) in out.iter().zip(&x) {
        let want = (v as f64 - 2.5) / libm::sqrt(1.25 + 1e-5);
        assert!((o as f64 - want).abs() < 1e-6, "got {o}, want {want}");
    }
    // eps sits inside the square root: a row ±1e-3 has σ² = 1e-6, so with eps = 1e-5 the
    // output is 1e-3/sqrt(1.1e-5) = 0.3015, not ±1.
    let x = [-1e-3f32, 1e-3];
    layer_norm_no_affine(&x, 1, 2, 1e-5, &mut out[..2]);
    let want = 1e-3 / libm::sqrt(1e-6 + 1e-5);
    assert!((out[1] as f64 - want).abs() < 1e-6, "got {}", out[1]);
    assert!((out[0] as f64 + want).abs() < 1e-6, "got {}", out[0]);
}

#[test]
fn large_offset_rows_defeat_one_pass_but_not_layer_norm() {
    let mut rng = Rng::new(27);
    let dim = 64;
    let x: Vec<f32> = (0..dim).map(|_| 1000.0 + rng.uniform(-1.0, 1.0)).collect();
    let mut want = vec![0.0; dim];
    layer_norm_no_affine_ref(&x, 1, dim, 1e-12, &mut want);
    // The one-pass formula in f32 is useless here (this is what the tolerance guards).
    let (s1, s2) = x
        .iter()
        .fold((0.0f32, 0.0f32), |(a, b), &v| (a + v, b + v * v));
    let n = dim as f32;
    let one_pass_var = s2 / n - (s1 / n) * (s1 / n);
    let true_var: f64 = {
        let m = x.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
        x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / dim as f64
    };
    assert!(
        (one_pass_var as f64 - true_var).abs() > 0.1 * true_var,
        "one-pass variance {one_pass_var} unexpectedly close to {true_var}"
    );
    for isa in Isa::available() {
        let mut got = vec![0.0; dim];
        layer_norm_no_affine_isa(isa, &x, 1, dim, 1e-12, &mut got);
        assert_ln_close(&format!("offset row {isa}"), &got, &want, None, dim);
    }
}

#[test]
fn constant_rows_give_exactly_beta() {
    let mut rng = Rng::new(28);
    for isa in Isa::available() {
        for dim in dims() {
            for c in [0.0f32, 0.1, -3.7, 1000.3, 1e-20] {
                let x = vec![c; 3 * dim];
                let (gamma, beta) = affine(&mut rng, dim);
                let mut got = vec![f32::NAN; 3 * dim];
                layer_norm_isa(isa, &x, 3, dim, &gamma, &beta, 1e-12, &mut got);
                for (i, &g) in got.iter().enumerate() {
                    assert_eq!(g, beta[i % dim], "{isa} dim={dim} c={c} index {i}");
                }
            }
        }
    }
}

#[test]
fn empty_shapes_are_no_ops() {
    for isa in Isa::available() {
        let mut out: [f32; 0] = [];
        layer_norm_isa(isa, &[], 0, 8, &[1.0; 8], &[0.0; 8], 1e-5, &mut out);
        layer_norm_isa(isa, &[], 3, 0, &[], &[], 1e-5, &mut out);
        modulate_isa(isa, &mut out, 3, 0, &[], &[]);
    }
}

#[test]
#[should_panic(expected = "layer_norm: gamma has 3 values, expected dim = 4")]
fn wrong_gamma_length_panics() {
    let mut out = [0.0; 8];
    layer_norm(&[0.0; 8], 2, 4, &[1.0; 3], &[0.0; 4], 1e-5, &mut out);
}

#[test]
#[should_panic(expected = "add_layer_norm: residual has 7 values, expected rows·dim = 2·4")]
fn wrong_residual_length_panics() {
    let mut out = [0.0; 8];
    add_layer_norm(
        &[0.0; 8], &[0.0; 7], 2, 4, &[1.0; 4], &[0.0; 4], 1e-5, &mut out,
    );
}
