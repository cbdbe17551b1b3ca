use super::*;
use crate::testing::{AWKWARD_SIZES, Rng};
use alloc::format;
use alloc::vec;

/// Σ|a_p·b_p| of two rows.
fn magnitude(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x * y).abs()).sum()
}

fn check_scores(isa: Isa) {
    let mut rng = Rng::new(61);
    let ds = AWKWARD_SIZES.iter().copied().chain([0]);
    for d in ds {
        for &(m, n) in &[
            (1, 37),
            (2, 17),
            (3, 9),
            (4, 65),
            (7, 33),
            (0, 5),
            (5, 0),
            (1, 1),
        ] {
            let users = rng.normal_vec(m * d, 1.0);
            let items = rng.normal_vec(n * d, 0.5);
            let mut want = vec![0.0; m * n];
            scores_ref(&users, &items, &mut want, m, n, d);
            let mut got = vec![f32::NAN; m * n];
            scores_isa(isa, &users, &items, &mut got, m, n, d);
            for r in 0..m {
                for j in 0..n {
                    let mag = magnitude(&users[r * d..(r + 1) * d], &items[j * d..(j + 1) * d]);
                    let (g, w) = (got[r * n + j], want[r * n + j]);
                    // f32 sums in another order: 1e-5·(1 + Σ|u·w|).
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + mag),
                        "scores {isa} {m}x{n}x{d}: [{r},{j}] got {g} want {w}"
                    );
                }
            }
        }
    }
}
crate::isa_tests!(scores, check_scores);

/// Scoring a batch of users gives bit for bit the scores of each user alone, and of each item
/// alone: the property the batched catalog scan and the int8 re-scoring rely on.
fn check_batch_equals_single(isa: Isa) {
    let mut rng = Rng::new(62);
    for d in [1, 7, 8, 33, 64, 100] {
        let (m, n) = (11, 203);
        let users = rng.normal_vec(m * d, 1.0);
        let items = rng.normal_vec(n * d, 0.5);
        let mut batch = vec![0.0; m * n];
        scores_isa(isa, &users, &items, &mut batch, m, n, d);
        for r in 0..m {
            let mut one = vec![0.0; n];
            scores_isa(isa, &users[r * d..(r + 1) * d], &items, &mut one, 1, n, d);
            for j in 0..n {
                let mut single = [0.0];
                let item = &items[j * d..(j + 1) * d];
                scores_isa(isa, &users[r * d..(r + 1) * d], item, &mut single, 1, 1, d);
                let b = batch[r * n + j].to_bits();
                assert_eq!(b, one[j].to_bits(), "{isa} d={d}: user {r} item {j} alone");
                assert_eq!(
                    b,
                    single[0].to_bits(),
                    "{isa} d={d}: user {r}, item {j} alone"
                );
            }
        }
    }
}
crate::isa_tests!(scores_batch_equals_single, check_batch_equals_single);

#[test]
fn quantization_rounds_to_nearest_within_the_row_scale() {
    let mut rng = Rng::new(63);
    for d in [1, 3, 64, 100] {
        let n = 50;
        let mut w = rng.normal_vec(n * d, 0.3);
        w[..2 * d].fill(0.0); // an all-zero row
        w[d] = 1e-30; // a tiny row
        for v in &mut w[2 * d..3 * d] {
            *v *= 1e6; // a huge row
        }
        let (q, scales) = quantize_rows_i8_vec(&w, n, d);
        assert_eq!(scales[0], 0.0, "zero row");
        assert!(q[..d].iter().all(|&v| v == 0));
        assert!(
            q[d..2 * d].iter().all(|&v| v == 0),
            "tiny row stored as zeros"
        );
        assert_eq!(
            scales[1], 2e-30,
            "tiny row keeps twice its magnitude as scale"
        );
        for j in 2..n {
            let row = &w[j * d..(j + 1) * d];
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_eq!(scales[j], max / 127.0, "row {j} scale");
            assert!(q[j * d..(j + 1) * d].iter().any(|&v| v.abs() == 127));
            for p in 0..d {
                let err = (row[p] - scales[j] * q[j * d + p] as f32).abs();
                // Nearest int8: half a step, plus the f32 rounding of w/scale and of the
                // product (a few ulps of 127 steps).
                assert!(
                    err <= scales[j] * (0.5 + 1e-5),
                    "d={d} row {j} col {p}: {} ~ {}·{}",
                    row[p],
                    scales[j],
                    q[j * d + p]
                );
            }
        }
    }
}

fn check_scores_i8(isa: Isa) {
    let mut rng = Rng::new(64);
    let ds = AWKWARD_SIZES.iter().copied().chain([0]);
    for d in ds {
        for n in [0, 1, 3, 4, 5, 9, 66] {
            let w = rng.normal_vec(n * d, 0.5);
            let (q, scales) = quantize_rows_i8_vec(&w, n, d);
            let x = rng.normal_vec(d, 1.0);
            let mut want = vec![0.0; n];
            scores_i8_ref(&q, &scales, &x, &mut want, n);
            let mut got = vec![f32::NAN; n];
            scores_i8_isa(isa, &q, &scales, &x, &mut got, n);
            for j in 0..n {
                let deq: Vec<f32> = q[j * d..(j + 1) * d]
                    .iter()
                    .map(|&v| v as f32 * scales[j])
                    .collect();
                // 1e-5·(1 + Σ|x·w|) with w the dequantized row.
                let mag = magnitude(&deq, &x);
                assert!(
                    (got[j] - want[j]).abs() <= 1e-5 * (1.0 + mag),
                    "scores_i8 {isa} n={n} d={d}: [{j}] got {} want {}",
                    got[j],
                    want[j]
                );
            }
        }
    }
}
crate::isa_tests!(scores_i8, check_scores_i8);

/// The bound holds between the int8 scores and the f32 scores of the original rows (and the
/// exact real scores) on tables with outliers, tiny and zero rows and queries of mixed scale;
/// and it is not loose: close to half a step per unit of ‖x‖₁.
fn check_i8_bound(isa: Isa) {
    let mut rng = Rng::new(65);
    for d in [1, 5, 16, 64, 65, 300] {
        let n = 400;
        let mut w = rng.normal_vec(n * d, 0.2);
        for j in 0..n {
            match j % 7 {
                0 => w[j * d + rng.below(d)] *= 40.0, // one outlier per row
                1 => w[j * d..(j + 1) * d].fill(0.0),
                2 => w[j * d..(j + 1) * d].iter_mut().for_each(|v| *v *= 1e-20),
                3 => w[j * d..(j + 1) * d]
                    .iter_mut()
                    .for_each(|v| *v = v.signum()),
                _ => {}
            }
        }
        let (q, scales) = quantize_rows_i8_vec(&w, n, d);
        for trial in 0..4 {
            let mut x = rng.normal_vec(d, 1.0);
            if trial == 1 {
                x.iter_mut().for_each(|v| *v *= 1e4);
            }
            if trial == 2 {
                x[0] *= 1e3; // one dominant coordinate
            }
            let c = i8_error_bound(&x);
            let l1: f32 = x.iter().map(|v| v.abs()).sum();
            assert!(
                c >= 0.5 * l1 && c <= 0.52 * l1,
                "d={d}: C = {c}, ‖x‖₁ = {l1}"
            );
            let mut approx = vec![0.0; n];
            scores_i8_isa(isa, &q, &scales, &x, &mut approx, n);
            let mut exact = vec![0.0; n];
            scores_isa(isa, &x, &w, &mut exact, 1, n, d);
            for j in 0..n {
                let row = &w[j * d..(j + 1) * d];
                let real: f64 = row.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
                let bound = scales[j] * c;
                let ctx = format!("{isa} d={d} trial {trial} row {j}: bound {bound}");
                assert!(
                    (exact[j] - approx[j]).abs() <= bound,
                    "{ctx}: f32 {} vs int8 {}",
                    exact[j],
                    approx[j]
                );
                assert!(
                    (real - approx[j] as f64).abs() <= bound as f64,
                    "{ctx}: real {real} vs int8 {}",
                    approx[j]
                );
            }
        }
    }
    let inf = i8_error_bound(&[1.0, f32::INFINITY]);
    assert!(
        !inf.is_finite(),
        "a non-finite query gives an unusable bound"
    );
}
crate::isa_tests!(i8_bound, check_i8_bound);

#[test]
#[should_panic(expected = "scores: items has 5 values, expected n·d = 2·3")]
fn scores_checks_items() {
    scores(&[0.0; 3], &[0.0; 5], &mut [0.0; 2], 1, 2, 3);
}

#[test]
#[should_panic(expected = "scores_i8: scales has 1 values, expected n = 2")]
fn scores_i8_checks_scales() {
    scores_i8(&[0; 6], &[1.0], &[0.0; 3], &mut [0.0; 2], 2);
}
