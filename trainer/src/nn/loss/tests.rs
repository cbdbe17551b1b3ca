use super::*;
use crate::nn::Rng;
use crate::nn::gradcheck::{GradCheck, assert_grad};

type LossFn<'a> = &'a dyn Fn(&[f32]) -> LossGrad;

const ROWS: usize = 4;
const COLS: usize = 6;

/// f64 log-sum-exp cross-entropy, the reference.
fn ce_ref(logits: &[f32], cols: usize, targets: &[u32], coef: &[f64]) -> f64 {
    logits
        .chunks_exact(cols)
        .zip(targets)
        .zip(coef)
        .map(|((row, &t), &c)| {
            let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
            let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
            c * (m + s.ln() - row[t as usize] as f64)
        })
        .sum()
}

#[test]
fn loss_gradients() {
    // Smooth losses of scores in [−3, 3]; the cross-entropy reads f32 probabilities (relative
    // error ~1e-7), so f carries noise ≈ 1e-7 and the 4-point quotient ≈ 1.5e-7/h ≈ 5e-6 at
    // h = 2^-5: atol 2e-5, rtol 1e-4 (the f64 losses are far below it).
    let mut rng = Rng::new(90);
    let s = rng.uniform_vec(ROWS * COLS, -3.0, 3.0);
    let targets = [2u32, 0, 5, 3];
    let cfg = GradCheck::new(0.03125, 2e-5, 1e-4);
    for weights in [None, Some(&[1.0f32, 0.0, 3.0, 0.5][..])] {
        let cases: [(&str, LossFn<'_>); 4] = [
            ("cross-entropy", &|x| {
                softmax_cross_entropy(x, ROWS, COLS, &targets, weights)
            }),
            ("sampled softmax", &|x| {
                sampled_softmax(x, ROWS, COLS, weights)
            }),
            ("bce", &|x| bce_sampled(x, ROWS, COLS, weights)),
            ("bpr", &|x| bpr(x, ROWS, COLS, weights)),
        ];
        for (what, f) in cases {
            let g = f(&s).grad;
            assert_grad(what, |x| f(x).loss, &s, &g, &cfg);
        }
        let y = rng.normal_vec(ROWS * COLS, 1.0);
        let w6: Vec<f32> = (0..ROWS * COLS).map(|i| (i % 3) as f32).collect();
        let w = weights.map(|_| w6.as_slice());
        let g = mse(&s, &y, w).grad;
        assert_grad("mse", |x| mse(x, &y, w).loss, &s, &g, &cfg);
    }
}

#[test]
fn losses_match_their_definitions() {
    // f64 reference formulas on moderate scores: 1e-6 relative (the cross-entropy reads the
    // f32 softmax), 1e-12 for the f64 losses.
    let mut rng = Rng::new(91);
    let s = rng.uniform_vec(ROWS * COLS, -4.0, 4.0);
    let targets = [1u32, 4, 0, 5];
    let ce = softmax_cross_entropy(&s, ROWS, COLS, &targets, None).loss;
    let want = ce_ref(&s, COLS, &targets, &[0.25; ROWS]);
    assert!((ce - want).abs() <= 1e-6 * want, "ce {ce} vs {want}");

    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let (mut bce_want, mut bpr_want) = (0.0, 0.0);
    for row in s.chunks_exact(COLS) {
        let pos = row[0] as f64;
        bce_want -= sig(pos).ln();
        for &n in &row[1..] {
            bce_want -= (1.0 - sig(n as f64)).ln();
            bpr_want -= sig(pos - n as f64).ln() / (COLS - 1) as f64;
        }
    }
    let bce = bce_sampled(&s, ROWS, COLS, None).loss;
    let bpr_loss = bpr(&s, ROWS, COLS, None).loss;
    assert!((bce - bce_want / ROWS as f64).abs() < 1e-12, "bce {bce}");
    assert!(
        (bpr_loss - bpr_want / ROWS as f64).abs() < 1e-12,
        "bpr {bpr_loss}"
    );

    // Weighted mean: rows weighted 1, 0, 3, 0 give (ℓ0 + 3ℓ2)/4; all-zero weights give 0.
    let w = [1.0f32, 0.0, 3.0, 0.0];
    let weighted = softmax_cross_entropy(&s, ROWS, COLS, &targets, Some(&w)).loss;
    let want = ce_ref(&s, COLS, &targets, &[0.25, 0.0, 0.75, 0.0]);
    assert!((weighted - want).abs() <= 1e-6 * want);
    let zero = bce_sampled(&s, ROWS, COLS, Some(&[0.0; ROWS]));
    assert_eq!(zero.loss, 0.0);
    assert!(zero.grad.iter().all(|&g| g == 0.0));
    let y = [1.0f32, 2.0, 3.0];
    assert!((mse(&[2.0, 2.0, 5.0], &y, None).loss - 5.0 / 3.0).abs() < 1e-15);
}

#[test]
fn losses_are_stable_for_extreme_scores() {
    // Scores thousands apart: no overflow, no NaN; the values are the exact limits.
    let logits = [1000.0f32, -1000.0, 0.0, 5.0, 5.0, -3000.0];
    let r = softmax_cross_entropy(&logits, 2, 3, &[1, 2], None);
    // Row 0: target 2000 below the max; row 1: target 3005 below the top two (ln 2 above).
    let want = (2000.0 + 3005.0 + std::f64::consts::LN_2) / 2.0;
    assert!((r.loss - want).abs() < 1e-9 * want, "loss {}", r.loss);
    assert_eq!(r.grad, vec![0.5, -0.5, 0.0, 0.25, 0.25, -0.5]);

    let r = bce_sampled(&[-100.0, 100.0, -100.0], 1, 3, None);
    assert!(
        (r.loss - (200.0 + softplus(-100.0))).abs() < 1e-9,
        "bce {}",
        r.loss
    );
    assert_eq!(r.grad[0], -1.0);
    assert_eq!(r.grad[1], 1.0);
    assert!(r.grad[2] > 0.0 && r.grad[2] < 1e-40);

    let r = bpr(&[-60.0, 40.0], 1, 2, None);
    assert!(
        (r.loss - 100.0).abs() < 1e-9 && r.grad == [-1.0, 1.0],
        "{r:?}"
    );
    assert!(softplus(800.0).is_finite() && softplus(-800.0) == 0.0);
}

#[test]
fn full_and_sampled_losses_backpropagate_to_h_and_the_table() {
    // loss(h, E) through the scores: smooth; eps 2^-5, noise as `loss_gradients`:
    // atol 2e-5, rtol 1e-4.
    let mut rng = Rng::new(92);
    let (rows, d, n, cands) = (3, 4, 9, 4);
    let table = Param::normal("item_embedding.weight", &[n, d], 0.7, &mut rng);
    let h = rng.normal_vec(rows * d, 0.7);
    let targets = [3u32, 0, 8];
    let weights = [1.0f32, 2.0, 0.5];
    let cfg = GradCheck::new(0.03125, 2e-5, 1e-4);

    let full = |h: &[f32], t: &Param| {
        let mut t = t.clone();
        full_softmax_loss(h, rows, &mut t, &targets, Some(&weights)).0
    };
    let mut trained = table.clone();
    let (loss, dh) = full_softmax_loss(&h, rows, &mut trained, &targets, Some(&weights));
    let logits: Vec<f32> = (0..rows * n)
        .map(|k| {
            let (r, i) = (k / n, k % n);
            (0..d)
                .map(|j| h[r * d + j] as f64 * table.value[i * d + j] as f64)
                .sum::<f64>() as f32
        })
        .collect();
    let want = ce_ref(&logits, n, &targets, &[1.0 / 3.5, 2.0 / 3.5, 0.5 / 3.5]);
    assert!(
        (loss - want).abs() <= 1e-6 * want,
        "full softmax {loss} vs {want}"
    );
    assert_grad("full softmax dh", |hp| full(hp, &table), &h, &dh, &cfg);
    let mut probe = table.clone();
    assert_grad(
        "full softmax dE",
        |ep| {
            probe.value.copy_from_slice(ep);
            full(&h, &probe)
        },
        &table.value,
        &trained.grad,
        &cfg,
    );

    // Positives first, repeated negatives (row 2 draws item 1 twice).
    let ids = [3u32, 5, 1, 7, 0, 2, 6, 4, 8, 1, 1, 2];
    for kind in [SampledLoss::Softmax, SampledLoss::Bce, SampledLoss::Bpr] {
        let f = |h: &[f32], t: &Param| {
            let mut t = t.clone();
            sampled_loss(kind, h, rows, &mut t, &ids, cands, None).0
        };
        let mut trained = table.clone();
        let (_, dh) = sampled_loss(kind, &h, rows, &mut trained, &ids, cands, None);
        let what = format!("{kind:?}");
        assert_grad(&what, |hp| f(hp, &table), &h, &dh, &cfg);
        let mut probe = table.clone();
        assert_grad(
            &what,
            |ep| {
                probe.value.copy_from_slice(ep);
                f(&h, &probe)
            },
            &table.value,
            &trained.grad,
            &cfg,
        );
    }
}

#[test]
#[should_panic(expected = "target 6 of row 1 is not below 6 classes")]
fn cross_entropy_rejects_bad_targets() {
    softmax_cross_entropy(&[0.0; 12], 2, 6, &[0, 6], None);
}

#[test]
fn full_softmax_in_chunks_equals_the_whole_batch() {
    // The chunks change the order in which `dE` sums the rows' terms, and the product kernel's
    // row tiling (a score may round differently in a 1-row than in an 11-row product): a few
    // f32 roundings of terms |·| ≤ ~1, atol 1e-6 on gradients, rtol 1e-6 on the loss.
    let mut rng = Rng::new(93);
    let (rows, d, n) = (11, 6, 37);
    let table = Param::normal("item_embedding.weight", &[n, d], 0.7, &mut rng);
    let h = rng.normal_vec(rows * d, 0.7);
    let targets: Vec<u32> = (0..rows).map(|_| rng.below(n) as u32).collect();
    let weights: Vec<f32> = (0..rows).map(|r| (r % 3) as f32).collect();
    for w in [None, Some(weights.as_slice())] {
        let mut whole = table.clone();
        let (l0, dh0) = full_softmax_loss_chunked(&h, rows, &mut whole, &targets, w, usize::MAX);
        for chunk in [1, 4, 11, 64] {
            let mut t = table.clone();
            let (l, dh) = full_softmax_loss_chunked(&h, rows, &mut t, &targets, w, chunk);
            assert!(
                (l - l0).abs() <= 1e-6 * l0.abs(),
                "chunk {chunk}: {l} vs {l0}"
            );
            for (i, (a, b)) in dh.iter().zip(&dh0).enumerate() {
                assert!((a - b).abs() <= 1e-6, "chunk {chunk}: dh[{i}] {a} vs {b}");
            }
            for (i, (a, b)) in t.grad.iter().zip(&whole.grad).enumerate() {
                assert!((a - b).abs() <= 1e-6, "chunk {chunk}: dE[{i}] {a} vs {b}");
            }
        }
    }
    // No rows: no loss, no gradient.
    let mut t = table.clone();
    let (l, dh) = full_softmax_loss_chunked(&[], 0, &mut t, &[], None, 4);
    assert_eq!((l, dh.len()), (0.0, 0));
    assert!(t.grad.iter().all(|&g| g == 0.0));
}
