//! The RL heads' losses (`spec/thesis-models.md` §3), with gradients.
//!
//! - [`td_loss`]: `coef·Σ_i (y_i − q_i)² / rows` for constant targets `y` (the TD targets are
//!   stop-gradient). With `coef = 0.5` and one value per row this is trfl's
//!   `double_qlearning` loss averaged over the batch, which the SQN/SNQN/SA2C code uses; several
//!   values per row (one per negative) are summed per row, as the SNQN code adds one
//!   `double_qlearning` term per negative.
//! - [`weighted_ce`]: softmax cross-entropy of logits against actions, averaged over rows,
//!   optionally with per-row multipliers `A_r` (SA2C's detached advantage):
//!   `(1/rows) Σ_r A_r·ℓ_r`. Unlike [`crate::nn::loss::softmax_cross_entropy`]'s weights, the
//!   multipliers are not normalised and may be negative.
//! - [`argmax_rows`]: the greedy action per row over the real items (never the padding id 0;
//!   the smaller id on ties, as the ranking).

use crate::nn::loss::{LossGrad, softmax_cross_entropy};

/// `coef·Σ_i (y_i − q_i)² / rows` and its gradient with respect to `q` (see the module docs).
///
/// # Panics
/// If `q` and `y` differ in length.
pub fn td_loss(q: &[f32], y: &[f32], rows: usize, coef: f32) -> LossGrad {
    assert_eq!(
        q.len(),
        y.len(),
        "TD loss: {} Q values, {} targets",
        q.len(),
        y.len()
    );
    let c = coef as f64 / rows.max(1) as f64;
    let mut loss = 0.0;
    let grad = q
        .iter()
        .zip(y)
        .map(|(&q, &y)| {
            let e = q as f64 - y as f64;
            loss += c * e * e;
            (2.0 * c * e) as f32
        })
        .collect();
    LossGrad { loss, grad }
}

/// Cross-entropy of `logits` (`[rows, cols]`) against `targets`, averaged over rows, each row
/// multiplied by `adv[r]` when given (see the module docs).
///
/// # Panics
/// If the sizes disagree or a target is not below `cols`.
pub fn weighted_ce(
    logits: &[f32],
    rows: usize,
    cols: usize,
    targets: &[u32],
    adv: Option<&[f32]>,
) -> LossGrad {
    let Some(adv) = adv else {
        return softmax_cross_entropy(logits, rows, cols, targets, None);
    };
    assert_eq!(
        adv.len(),
        rows,
        "weighted CE: {} multipliers for {rows} rows",
        adv.len()
    );
    assert_eq!(
        logits.len(),
        rows * cols,
        "weighted CE: {} logits for {rows}·{cols}",
        logits.len()
    );
    let mut loss = 0.0;
    let mut grad = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        // One row at a time: ℓ_r and softmax − onehot, then scaled by A_r / rows.
        let row = softmax_cross_entropy(
            &logits[r * cols..(r + 1) * cols],
            1,
            cols,
            &targets[r..=r],
            None,
        );
        let a = adv[r] as f64 / rows as f64;
        loss += a * row.loss;
        grad.extend(row.grad.iter().map(|&g| (g as f64 * a) as f32));
    }
    LossGrad { loss, grad }
}

/// The index of the largest value of each row of `x` (`[rows, cols]`) among columns
/// `1..cols`; the smaller index on ties.
pub fn argmax_rows(x: &[f32], rows: usize, cols: usize) -> Vec<u32> {
    assert!(cols >= 2, "argmax over real items needs at least 2 columns");
    (0..rows)
        .map(|r| {
            let row = &x[r * cols..(r + 1) * cols];
            let mut best = 1;
            for c in 2..cols {
                if row[c] > row[best] {
                    best = c;
                }
            }
            best as u32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Rng;
    use crate::nn::gradcheck::{GradCheck, assert_grad};

    #[test]
    fn td_loss_gradient() {
        // f64 loss of f32 inputs, a quadratic: the 4-point rule is exact up to rounding.
        // eps 2^-5, atol 1e-6, rtol 1e-5.
        let mut rng = Rng::new(40);
        let q = rng.normal_vec(12, 1.0);
        let y = rng.normal_vec(12, 1.0);
        let g = td_loss(&q, &y, 4, 0.5);
        let direct: f64 = q
            .iter()
            .zip(&y)
            .map(|(&a, &b)| 0.5 * (a as f64 - b as f64).powi(2) / 4.0)
            .sum();
        assert!((g.loss - direct).abs() < 1e-12);
        let cfg = GradCheck::new(0.03125, 1e-6, 1e-5);
        assert_grad("td", |x| td_loss(x, &y, 4, 0.5).loss, &q, &g.grad, &cfg);
    }

    #[test]
    fn weighted_ce_gradient_and_values() {
        // Smooth in the logits; the loss is computed in f64 from f32 softmax probabilities
        // (relative noise ≈ 1e-7 per term): eps 2^-6, atol 2e-5, rtol 1e-4.
        let mut rng = Rng::new(41);
        let (rows, cols) = (3, 7);
        let x = rng.normal_vec(rows * cols, 1.5);
        let t = [2u32, 6, 1];
        let adv = [0.7f32, -0.4, 1.3];
        let g = weighted_ce(&x, rows, cols, &t, Some(&adv));
        let cfg = GradCheck::new(0.015625, 2e-5, 1e-4);
        assert_grad(
            "weighted ce",
            |x| weighted_ce(x, rows, cols, &t, Some(&adv)).loss,
            &x,
            &g.grad,
            &cfg,
        );
        // Multipliers of 1 give the plain mean cross-entropy.
        let plain = weighted_ce(&x, rows, cols, &t, None);
        let ones = weighted_ce(&x, rows, cols, &t, Some(&[1.0; 3]));
        assert!((plain.loss - ones.loss).abs() < 1e-6);
        for (a, b) in plain.grad.iter().zip(&ones.grad) {
            assert!((a - b).abs() < 1e-7);
        }
        // The weighted loss is Σ A_r ℓ_r / rows.
        let per: Vec<f64> = (0..rows)
            .map(|r| weighted_ce(&x[r * cols..(r + 1) * cols], 1, cols, &t[r..=r], None).loss)
            .collect();
        let want: f64 = per
            .iter()
            .zip(&adv)
            .map(|(l, &a)| l * a as f64)
            .sum::<f64>()
            / 3.0;
        assert!((g.loss - want).abs() < 1e-6);
    }

    #[test]
    fn argmax_skips_padding_and_breaks_ties_by_id() {
        let x = [9.0, 1.0, 3.0, 3.0, 5.0, 0.0, 0.0, 0.0];
        assert_eq!(argmax_rows(&x, 2, 4), [2, 1]);
    }
}
