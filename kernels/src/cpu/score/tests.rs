use super::*;
use crate::testing::{AWKWARD_SIZES, Rng};
use alloc::format;
use alloc::vec;

/// Σ|a_p·b_p| of two rows.
fn magnitude(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x * y).abs()).sum()
}

type ScoresFn = fn(Isa, &[f32], &[f32], &mut [f32], usize, usize, usize);

/// `kernel` against `scores_ref` on random `m × n` products of width `d` for every `d` of
/// `ds` and `(m, n)` of `shapes`, to 1e-5·(1 + Σ|u·w|) (f32 sums in another order).
fn check_against_ref(
    what: &str,
    isa: Isa,
    kernel: ScoresFn,
    seed: u64,
    ds: impl Iterator<Item = usize>,
    shapes: &[(usize, usize)],
) {
    let mut rng = Rng::new(seed);
    for d in ds {
        for &(m, n) in shapes {
            let users = rng.normal_vec(m * d, 1.0);
            let items = rng.normal_vec(n * d, 0.5);
            let mut want = vec![0.0; m * n];
            scores_ref(&users, &items, &mut want, m, n, d);
            let mut got = vec![f32::NAN; m * n];
            kernel(isa, &users, &items, &mut got, m, n, d);
            for r in 0..m {
                for j in 0..n {
                    let mag = magnitude(&users[r * d..(r + 1) * d], &items[j * d..(j + 1) * d]);
                    let (g, w) = (got[r * n + j], want[r * n + j]);
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + mag),
                        "{what} {isa} {m}x{n}x{d}: [{r},{j}] got {g} want {w}"
                    );
                }
            }
        }
    }
}

fn check_scores(isa: Isa) {
    let ds = AWKWARD_SIZES.iter().copied().chain([0]);
    let shapes = [
        (1, 37),
        (2, 17),
        (3, 9),
        (4, 65),
        (7, 33),
        (0, 5),
        (5, 0),
        (1, 1),
    ];
    check_against_ref("scores", isa, scores_isa, 61, ds, &shapes);
}
crate::isa_tests!(scores, check_scores);

fn check_scores_batch(isa: Isa) {
    let ds = [1, 7, 8, 33, 64, 100].into_iter();
    let shapes = [
        (1, 37),
        (5, 17),
        (6, 33),
        (13, 256),
        (64, 70),
        (0, 3),
        (3, 0),
    ];
    check_against_ref("scores_batch", isa, scores_batch_isa, 67, ds, &shapes);
}
crate::isa_tests!(scores_batch, check_scores_batch);

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

/// Quantizes `x`, panicking on `None`.
fn query(x: &[f32]) -> (Vec<i8>, f32) {
    let mut xq = vec![0i8; x.len()];
    let t = quantize_query_i8(x, &mut xq).expect("quantizable query");
    (xq, t)
}

#[test]
fn queries_quantize_like_rows_or_not_at_all() {
    let mut rng = Rng::new(66);
    let x = rng.normal_vec(100, 2.0);
    let (xq, t) = query(&x);
    let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert_eq!(t, max / 127.0);
    assert!(xq.iter().any(|v| v.abs() == 127) && !xq.contains(&i8::MIN));
    for (v, q) in x.iter().zip(&xq) {
        // Half a step, plus the f32 rounding of x/t and of the product.
        assert!(
            (v - t * *q as f32).abs() <= t * (0.5 + 1e-5),
            "{v} ~ {t}·{q}"
        );
    }
    let mut buf = vec![0i8; 3];
    assert_eq!(quantize_query_i8(&[1.0, f32::NAN, 2.0], &mut buf), None);
    assert_eq!(
        quantize_query_i8(&[1.0, f32::INFINITY, 2.0], &mut buf),
        None
    );
    assert_eq!(quantize_query_i8(&[0.0, -0.0, 1e-30], &mut buf), None);
    let wide = vec![1.0f32; I8_MAX_DIM + 1];
    assert_eq!(quantize_query_i8(&wide, &mut vec![0; I8_MAX_DIM + 1]), None);
}

fn check_scores_i8(isa: Isa) {
    let mut rng = Rng::new(64);
    let ds = AWKWARD_SIZES.iter().copied().chain([0, 1000]);
    for d in ds {
        for n in [0, 1, 3, 7, 8, 9, 15, 16, 17, 33, 66] {
            let w = rng.normal_vec(n * d, 0.5);
            let (q, scales) = quantize_rows_i8_vec(&w, n, d);
            let x = rng.normal_vec(d, 1.0);
            let (xq, t) = if d == 0 { (Vec::new(), 0.0) } else { query(&x) };
            let mut want = vec![0.0; n];
            scores_i8_ref(&q, &scales, &xq, t, &mut want, n);
            let mut got = vec![f32::NAN; n];
            scores_i8_isa(isa, &q, &scales, &xq, t, &mut got, n);
            let mut portable = vec![f32::NAN; n];
            scores_i8_isa(Isa::Scalar, &q, &scales, &xq, t, &mut portable, n);
            for j in 0..n {
                // Exact integer sums; two f32 products against the reference's f64 ones:
                // 2⁻²¹ relative.
                assert!(
                    (got[j] - want[j]).abs() <= want[j].abs() * 4.8e-7,
                    "scores_i8 {isa} n={n} d={d}: [{j}] got {} want {}",
                    got[j],
                    want[j]
                );
                // Every path computes the same bits.
                assert_eq!(
                    got[j].to_bits(),
                    portable[j].to_bits(),
                    "{isa} n={n} d={d} [{j}]"
                );
            }
        }
    }
}
crate::isa_tests!(scores_i8, check_scores_i8);

/// The bound holds between the int8 scores and the f32 scores of the original rows (and the
/// exact real scores) on tables with outliers, tiny and zero rows and queries of mixed scale;
/// and it is not loose: the row term is about half a step per unit of ‖x‖₁.
fn check_i8_bound(isa: Isa) {
    let mut rng = Rng::new(65);
    for d in [1, 5, 16, 33, 64, 65, 300] {
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
            let (xq, t) = query(&x);
            let c = i8_error_bound(&x, t);
            let l1: f32 = x.iter().map(|v| v.abs()).sum();
            let query_term = t * 127.0 * d as f32 * 0.5;
            assert!(
                c >= 0.5 * l1 + query_term && c <= 0.52 * l1 + 1.01 * query_term,
                "d={d}: C = {c}, ‖x‖₁ = {l1}, t = {t}"
            );
            let mut approx = vec![0.0; n];
            scores_i8_isa(isa, &q, &scales, &xq, t, &mut approx, n);
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
    scores_i8(&[0; 6], &[1.0], &[0; 3], 1.0, &mut [0.0; 2], 2);
}

#[test]
#[should_panic(expected = "scores_i8: xq holds -128")]
fn scores_i8_rejects_minus_128() {
    scores_i8(&[0; 3], &[1.0], &[0, -128, 0], 1.0, &mut [0.0; 1], 1);
}

/// The AVX512-VNNI body itself (whatever `SEQREC_ISA` says) gives the portable loop's bits,
/// on tiles of 16 rows and their remainders; skipped with a notice where the CPU lacks VNNI.
#[cfg(target_arch = "x86_64")]
#[test]
fn scores_i8_vnni_body() {
    if !super::vnni::available() {
        std::eprintln!("skipped: scores_i8 vnni (AVX512-VNNI not available on this CPU)");
        return;
    }
    let mut rng = Rng::new(65);
    for d in [1, 17, 63, 64, 65, 127, 128, 300, I8_MAX_DIM] {
        for n in [1, 15, 16, 17, 40] {
            let w = rng.normal_vec(n * d, 0.5);
            let (q, scales) = quantize_rows_i8_vec(&w, n, d);
            let (xq, t) = query(&rng.normal_vec(d, 1.0));
            let mut got = vec![f32::NAN; n];
            // SAFETY: `available` checked AVX-512 F/BW and VNNI.
            unsafe { super::vnni::scores_i8_vnni(&q, &scales, &xq, t, &mut got) };
            let mut portable = vec![f32::NAN; n];
            scores_i8_isa(Isa::Scalar, &q, &scales, &xq, t, &mut portable, n);
            for j in 0..n {
                assert_eq!(got[j].to_bits(), portable[j].to_bits(), "n={n} d={d} [{j}]");
            }
        }
    }
    // Extreme values: every product at its largest magnitude, at the widest rows.
    let d = I8_MAX_DIM;
    for (a, b) in [(127i8, 127i8), (-127, 127), (127, -127), (-127, -127)] {
        let q = vec![a; 3 * d];
        let xq = vec![b; d];
        let mut got = vec![0.0; 3];
        // SAFETY: as above.
        unsafe { super::vnni::scores_i8_vnni(&q, &[1.0; 3], &xq, 1.0, &mut got) };
        let want = (a as i64 * b as i64 * d as i64) as f32;
        assert_eq!(got, vec![want; 3], "{a}·{b}");
    }
}

/// The streamed scan (prefetching ahead) gives the plain scan's bits.
fn check_streamed_equals_plain(isa: Isa) {
    let mut rng = Rng::new(66);
    for (m, n, d) in [
        (1, 777, 64),
        (1, 1, 3),
        (2, 100, 65),
        (3, 513, 128),
        (5, 33, 17),
    ] {
        let users = rng.normal_vec(m * d, 1.0);
        let items = rng.normal_vec(n * d, 0.1);
        let (mut plain, mut streamed) = (vec![0.0; m * n], vec![f32::NAN; m * n]);
        scores_isa(isa, &users, &items, &mut plain, m, n, d);
        scores_streamed_isa(isa, &users, &items, &mut streamed, m, n, d);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&plain), bits(&streamed), "{isa} {m}x{n}x{d}");
    }
}
crate::isa_tests!(scores_streamed, check_streamed_equals_plain);

/// Random bf16 rows (`[n, d]`), with a zero row, a row of subnormals and a row whose values
/// span 2⁻¹⁴⁰ to 2⁵⁰ among ordinary ones.
fn bf16_table(rng: &mut Rng, n: usize, d: usize) -> Vec<half::bf16> {
    use half::bf16;
    let mut w: Vec<bf16> = rng
        .normal_vec(n * d, 0.5)
        .iter()
        .map(|&v| bf16::from_f32(v))
        .collect();
    if n >= 3 && d > 0 {
        w[..d].fill(bf16::ZERO);
        for (p, v) in w[d..2 * d].iter_mut().enumerate() {
            *v = bf16::from_f32(f32::MIN_POSITIVE * (p as f32 + 1.0) / 512.0);
        }
        for (p, v) in w[2 * d..3 * d].iter_mut().enumerate() {
            let e = (p % 8) as i32 * 27 - 140;
            *v = bf16::from_f32(if p % 2 == 0 { 1.0 } else { -1.0 } * libm::exp2f(e as f32));
        }
    }
    w
}

/// Queries: Gaussian, one of large dynamic range with cancelling values, one holding
/// subnormals, all zero.
fn bf16_queries(rng: &mut Rng, d: usize) -> Vec<Vec<f32>> {
    let mut wide = rng.normal_vec(d, 1.0);
    for (p, v) in wide.iter_mut().enumerate() {
        *v *= libm::exp2f(((p * 7) % 40) as f32 - 20.0);
    }
    let tiny: Vec<f32> = (0..d)
        .map(|p| f32::MIN_POSITIVE * (p as f32 - 3.5))
        .collect();
    vec![rng.normal_vec(d, 1.0), wide, tiny, vec![0.0; d]]
}

/// The filter scan against its f64 reference, at every level.
fn check_scores_bf16_dp(isa: Isa) {
    let mut rng = Rng::new(71);
    for &d in AWKWARD_SIZES.iter().chain(&[0, 96, 300]) {
        for n in [1, 15, 16, 17, 40] {
            let w = bf16_table(&mut rng, n, d);
            let x = rng.normal_vec(d, 1.0);
            let (mut hi, mut lo) = (vec![half::bf16::ZERO; d], vec![half::bf16::ZERO; d]);
            bf16_split_query(&x, &mut hi, &mut lo).expect("a finite query splits");
            let (mut want, mut got) = (vec![0.0; n], vec![f32::NAN; n]);
            scores_bf16_dp_ref(&w, &hi, &lo, &mut want, n);
            scores_bf16_dp_isa(isa, &w, &hi, &lo, &mut got, n);
            let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
            for j in 0..n {
                let mag = magnitude(&x, &wf[j * d..(j + 1) * d]);
                assert!(
                    (got[j] - want[j]).abs() <= 1e-5 * (1.0 + mag),
                    "bf16 filter {isa} {n}x{d}: row {j} got {} want {}",
                    got[j],
                    want[j]
                );
            }
        }
    }
}
crate::isa_tests!(scores_bf16_dp, check_scores_bf16_dp);

/// The guarantee: the filter score plus the bound is at least every exact bf16 score the
/// engine computes (`gemv_bf16` at every level), and at most the bound below it, for tables
/// and queries with zeros, subnormals, wide ranges and cancellation; and the bound is tight
/// enough to matter (for an ordinary query below `(2⁻¹⁶ + 2.5·(2d + 32)·2⁻²⁴)·‖x‖·‖w‖`, the
/// residual of the split and the worst-case rounding, where dropping the query's low part
/// would err by about 2⁻⁹ of it).
#[test]
fn bf16_filter_bound_holds_for_every_exact_path() {
    let mut rng = Rng::new(72);
    let isas: Vec<Isa> = Isa::available().collect();
    for &d in &[1usize, 7, 31, 32, 33, 64, 65, 257] {
        let n = 37;
        let w = bf16_table(&mut rng, n, d);
        let norms = bf16_row_norms(&w, n, d).expect("finite rows");
        for (qi, x) in bf16_queries(&mut rng, d).iter().enumerate() {
            let (mut hi, mut lo) = (vec![half::bf16::ZERO; d], vec![half::bf16::ZERO; d]);
            let bound = bf16_split_query(x, &mut hi, &mut lo).expect("a finite query splits");
            if qi == 0 {
                let xn = libm::sqrtf(x.iter().map(|v| v * v).sum::<f32>());
                let rel = libm::exp2f(-16.0) + 2.5 * (2 * d + 32) as f32 * libm::exp2f(-24.0);
                assert!(bound.per_norm < rel * xn, "d={d}: {bound:?} for ‖x‖ = {xn}");
            }
            for &isa in &isas {
                let mut approx = vec![0.0; n];
                scores_bf16_dp_isa(isa, &w, &hi, &lo, &mut approx, n);
                for &exact_isa in &isas {
                    let mut exact = vec![0.0; n];
                    crate::cpu::linear::gemv_bf16_isa(exact_isa, &w, x, &mut exact, n, d);
                    for j in 0..n {
                        let up = bound.upper(approx[j], norms[j]);
                        let slack = norms[j] * bound.per_norm + bound.abs;
                        assert!(
                            up >= exact[j] && approx[j] - slack <= exact[j],
                            "d={d} query {qi} filter {isa} exact {exact_isa} row {j}: \
                             filter {} ± {slack} against exact {}",
                            approx[j],
                            exact[j]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn bf16_filter_refuses_what_it_cannot_bound() {
    use half::bf16;
    let (mut hi, mut lo) = ([bf16::ZERO; 3], [bf16::ZERO; 3]);
    for bad in [f32::NAN, f32::INFINITY, f32::MAX] {
        // f32::MAX rounds to a bf16 infinity.
        assert_eq!(
            bf16_split_query(&[1.0, bad, 2.0], &mut hi, &mut lo),
            None,
            "{bad}"
        );
    }
    let wide = vec![1.0; BF16_DP_MAX_DIM + 1];
    let (mut hw, mut lw) = (vec![bf16::ZERO; wide.len()], vec![bf16::ZERO; wide.len()]);
    assert_eq!(bf16_split_query(&wide, &mut hw, &mut lw), None);
    let mut w = vec![bf16::ONE; 6];
    assert!(bf16_row_norms(&w, 2, 3).is_some());
    w[4] = bf16::INFINITY;
    assert_eq!(bf16_row_norms(&w, 2, 3), None);
    // Exactly representable parts: hi holds x, lo and the residual are zero, and the bound
    // keeps only the rounding terms.
    let x = [1.5f32, -0.25, 3.0];
    let b = bf16_split_query(&x, &mut hi, &mut lo).unwrap();
    assert_eq!(hi.map(bf16::to_f32), x);
    assert_eq!(lo, [bf16::ZERO; 3]);
    // ‖x‖ = 3.4: the rounding terms alone, γ·2‖x‖·9/8 with γ ≈ 38·2⁻²⁴.
    assert!(b.per_norm > 0.0 && b.per_norm < 2e-5, "{b:?}");
}
