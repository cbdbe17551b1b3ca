//! Losses with their gradients, on score matrices `[rows, cols]` (one row per prediction:
//! a sequence, or a position of a sequence).
//!
//! Every loss is a weighted mean over rows, `L = Σ_r w_r·ℓ_r / Σ_r w_r` (all weights 1 when
//! none are given; a weight of 0 masks a row, e.g. a padding position; `L = 0` when every
//! weight is 0). Sums run in f64.
//!
//! - [`softmax_cross_entropy`]: `ℓ_r = logsumexp(s_r) − s_r[t_r]`, gradient
//!   `softmax(s_r) − onehot(t_r)`. RecBole's `CE` loss over the whole catalog (see
//!   [`full_softmax_loss`]), or the target against sampled negatives (sampled softmax, target
//!   in column 0: [`sampled_softmax`]). The probabilities come from the kernels' max-subtracted
//!   `softmax_rows`; `ℓ_r = −ln p_t`, or the f64 log-sum-exp when `p_t` underflows.
//! - [`bce_sampled`]: the SASRec paper's loss, column 0 the positive and the others sampled
//!   negatives: `ℓ_r = −ln σ(s⁺) − Σ_k ln(1 − σ(s⁻_k)) = softplus(−s⁺) + Σ_k softplus(s⁻_k)`
//!   (a sum over the negatives, one term per negative as in the paper).
//! - [`bpr`]: `ℓ_r = mean_k softplus(−(s⁺ − s⁻_k))` = `−ln σ(s⁺ − s⁻)` for one negative
//!   (RecBole's `BPRLoss`, a mean over the negatives).
//! - [`mse`]: `Σ_i w_i·(p_i − y_i)² / Σ_i w_i` over elements (return prediction).
//!
//! `softplus(x) = max(x, 0) + ln(1 + e^{−|x|})`, so no term overflows for any finite score.

use super::param::Param;
use super::score::{
    candidate_scores, candidate_scores_backward, full_scores_backward, full_scores_into,
};
use seqrec_kernels::cpu::softmax::softmax_rows;

/// A loss and its gradient with respect to the loss's input.
#[derive(Clone, Debug, PartialEq)]
pub struct LossGrad {
    /// The loss.
    pub loss: f64,
    /// `∂loss/∂input`, shaped as the input.
    pub grad: Vec<f32>,
}

/// `ln(1 + e^x)` without overflow.
#[inline]
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `1 / (1 + e^{−x})` without overflow.
#[inline]
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Per-row coefficients `w_r / Σ w` (or `1/rows`).
#[track_caller]
fn row_coefficients(what: &str, rows: usize, weights: Option<&[f32]>) -> Vec<f64> {
    match weights {
        None => vec![1.0 / rows.max(1) as f64; rows],
        Some(w) => {
            assert_eq!(w.len(), rows, "{what}: {} weights for {rows} rows", w.len());
            if let Some((i, v)) = w.iter().enumerate().find(|(_, v)| v.is_nan() || **v < 0.0) {
                panic!("{what}: weight {v} of row {i} is negative or NaN");
            }
            let total: f64 = w.iter().map(|&v| v as f64).sum();
            if total == 0.0 {
                vec![0.0; rows]
            } else {
                w.iter().map(|&v| v as f64 / total).collect()
            }
        }
    }
}

#[track_caller]
fn check_scores(what: &str, scores: &[f32], rows: usize, cols: usize) {
    assert_eq!(
        scores.len(),
        rows * cols,
        "{what}: {} scores, expected rows·cols = {rows}·{cols}",
        scores.len()
    );
}

/// Softmax cross-entropy of `logits` (`[rows, cols]`) against the column indices `targets`.
///
/// # Panics
/// If the sizes disagree, a target is not below `cols`, or a weight is negative.
pub fn softmax_cross_entropy(
    logits: &[f32],
    rows: usize,
    cols: usize,
    targets: &[u32],
    weights: Option<&[f32]>,
) -> LossGrad {
    const WHAT: &str = "softmax cross-entropy";
    check_scores(WHAT, logits, rows, cols);
    check_targets(WHAT, targets, rows, cols, "classes");
    let coef = row_coefficients(WHAT, rows, weights);
    let mut grad = logits.to_vec();
    let loss = cross_entropy_rows(logits, &mut grad, cols, targets, &coef);
    LossGrad { loss, grad }
}

/// Panics unless there is one target per row, each below `cols` (`unit`: what a column is).
#[track_caller]
fn check_targets(what: &str, targets: &[u32], rows: usize, cols: usize, unit: &str) {
    assert_eq!(
        targets.len(),
        rows,
        "{what}: {} targets for {rows} rows",
        targets.len()
    );
    if let Some((r, &t)) = targets
        .iter()
        .enumerate()
        .find(|&(_, &t)| t as usize >= cols)
    {
        panic!("{what}: target {t} of row {r} is not below {cols} {unit}");
    }
}

/// `Σ_r coef_r·ℓ_r` of the rows of `logits` (`[rows, cols]`, targets checked by the caller),
/// turning `grad`, which holds a copy of `logits`, into `coef_r·(softmax(s_r) − onehot(t_r))`.
fn cross_entropy_rows(
    logits: &[f32],
    grad: &mut [f32],
    cols: usize,
    targets: &[u32],
    coef: &[f64],
) -> f64 {
    let rows = targets.len();
    softmax_rows(grad, rows, cols);
    let mut loss = 0.0;
    for r in 0..rows {
        let t = targets[r] as usize;
        let row = &logits[r * cols..(r + 1) * cols];
        let p_t = grad[r * cols + t] as f64;
        let l = if p_t > 1e-30 {
            -p_t.ln()
        } else {
            // p_t underflowed in f32: the exact log-sum-exp in f64.
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
            m + s.ln() - row[t] as f64
        };
        loss += coef[r] * l;
        let g = &mut grad[r * cols..(r + 1) * cols];
        g[t] -= 1.0;
        let c = coef[r] as f32;
        for v in g.iter_mut() {
            *v *= c;
        }
    }
    loss
}

/// Sampled softmax: [`softmax_cross_entropy`] with the target in column 0 of every row
/// (`[rows, 1 + negatives]`).
pub fn sampled_softmax(
    scores: &[f32],
    rows: usize,
    cols: usize,
    weights: Option<&[f32]>,
) -> LossGrad {
    softmax_cross_entropy(scores, rows, cols, &vec![0; rows], weights)
}

/// Binary cross-entropy with sampled negatives (SASRec paper), positive in column 0.
pub fn bce_sampled(scores: &[f32], rows: usize, cols: usize, weights: Option<&[f32]>) -> LossGrad {
    const WHAT: &str = "BCE";
    check_scores(WHAT, scores, rows, cols);
    let coef = row_coefficients(WHAT, rows, weights);
    let mut grad = vec![0.0f32; rows * cols];
    let mut loss = 0.0;
    for r in 0..rows {
        for c in 0..cols {
            let s = scores[r * cols + c] as f64;
            // Column 0: −ln σ(s) = softplus(−s), derivative σ(s) − 1; negatives:
            // −ln(1 − σ(s)) = softplus(s), derivative σ(s).
            let (l, g) = if c == 0 {
                (softplus(-s), sigmoid(s) - 1.0)
            } else {
                (softplus(s), sigmoid(s))
            };
            loss += coef[r] * l;
            grad[r * cols + c] = (coef[r] * g) as f32;
        }
    }
    LossGrad { loss, grad }
}

/// Bayesian personalised ranking, positive in column 0, averaged over the negatives.
///
/// # Panics
/// If `cols < 2` (a positive and at least one negative), or sizes disagree.
pub fn bpr(scores: &[f32], rows: usize, cols: usize, weights: Option<&[f32]>) -> LossGrad {
    const WHAT: &str = "BPR";
    check_scores(WHAT, scores, rows, cols);
    assert!(
        cols >= 2,
        "{WHAT}: needs a positive and at least one negative per row, got {cols} columns"
    );
    let coef = row_coefficients(WHAT, rows, weights);
    let per_neg = 1.0 / (cols - 1) as f64;
    let mut grad = vec![0.0f32; rows * cols];
    let mut loss = 0.0;
    for r in 0..rows {
        let pos = scores[r * cols] as f64;
        let mut d_pos = 0.0;
        for c in 1..cols {
            let diff = pos - scores[r * cols + c] as f64;
            // −ln σ(diff) = softplus(−diff); derivative −σ(−diff) with respect to diff.
            loss += coef[r] * per_neg * softplus(-diff);
            let g = coef[r] * per_neg * sigmoid(-diff);
            d_pos -= g;
            grad[r * cols + c] = g as f32;
        }
        grad[r * cols] = d_pos as f32;
    }
    LossGrad { loss, grad }
}

/// Mean squared error over elements, optionally weighted per element.
///
/// # Panics
/// If the lengths disagree or a weight is negative.
pub fn mse(pred: &[f32], target: &[f32], weights: Option<&[f32]>) -> LossGrad {
    const WHAT: &str = "MSE";
    assert_eq!(
        pred.len(),
        target.len(),
        "{WHAT}: {} predictions, {} targets",
        pred.len(),
        target.len()
    );
    let coef = row_coefficients(WHAT, pred.len(), weights);
    let mut loss = 0.0;
    let grad = pred
        .iter()
        .zip(target)
        .zip(&coef)
        .map(|((&p, &y), &c)| {
            let e = p as f64 - y as f64;
            loss += c * e * e;
            (2.0 * c * e) as f32
        })
        .collect();
    LossGrad { loss, grad }
}

/// Rows of catalog logits that [`full_softmax_loss`] holds at once: `[256, n_items]` scores
/// and their gradient stay in the cache for a catalog of a few thousand items, where a whole
/// batch's (`[256·50, n_items]`: 86 MB for ml-100k) would stream through memory five times
/// and be mapped afresh by the allocator at every step.
pub const FULL_SOFTMAX_CHUNK: usize = 256;

/// RecBole's `CE` loss: softmax over the whole item table (`logits = h·Eᵀ`, padding row 0
/// included) against the target item ids. Adds the table's gradient and returns the loss and
/// `∂loss/∂h` (`[rows, dim]`).
///
/// The rows go through in chunks of [`FULL_SOFTMAX_CHUNK`] (scores, softmax, `dE += dSᵀ·h`,
/// `dh = dS·E` per chunk), so the logits of a batch are never all in memory; the result is the
/// whole batch's up to the summation order of `dE`.
///
/// # Panics
/// If the sizes disagree, a target is outside the table, or a weight is negative.
pub fn full_softmax_loss(
    h: &[f32],
    rows: usize,
    table: &mut Param,
    targets: &[u32],
    weights: Option<&[f32]>,
) -> (f64, Vec<f32>) {
    full_softmax_loss_chunked(h, rows, table, targets, weights, FULL_SOFTMAX_CHUNK)
}

/// [`full_softmax_loss`] with `chunk` rows at a time (`usize::MAX`: the whole batch at once).
pub fn full_softmax_loss_chunked(
    h: &[f32],
    rows: usize,
    table: &mut Param,
    targets: &[u32],
    weights: Option<&[f32]>,
    chunk: usize,
) -> (f64, Vec<f32>) {
    const WHAT: &str = "full softmax cross-entropy";
    let n = table.shape[0];
    check_targets(WHAT, targets, rows, n, "items");
    let d = table.shape[1];
    assert_eq!(
        h.len(),
        rows * d,
        "{WHAT}: h has {} values, expected rows·dim = {rows}·{d}",
        h.len()
    );
    let coef = row_coefficients(WHAT, rows, weights);
    let chunk = chunk.clamp(1, rows.max(1));
    let (mut scores, mut grad) = (Vec::new(), vec![0.0; chunk * n]);
    let mut dh = Vec::with_capacity(h.len());
    let mut loss = 0.0;
    for start in (0..rows).step_by(chunk) {
        let end = rows.min(start + chunk);
        let hc = &h[start * d..end * d];
        scores = full_scores_into(hc, end - start, table, scores);
        let g = &mut grad[..(end - start) * n];
        g.copy_from_slice(&scores);
        loss += cross_entropy_rows(&scores, g, n, &targets[start..end], &coef[start..end]);
        dh.extend(full_scores_backward(hc, end - start, table, g));
    }
    (loss, dh)
}

/// A loss over a positive and sampled negatives.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SampledLoss {
    /// [`sampled_softmax`].
    Softmax,
    /// [`bce_sampled`].
    Bce,
    /// [`bpr`].
    Bpr,
}

/// A sampled loss on the scores of `ids` (`[rows, cands]`, each row's positive first, then its
/// negatives) against the item table. Adds the table's gradient and returns the loss and
/// `∂loss/∂h`.
pub fn sampled_loss(
    kind: SampledLoss,
    h: &[f32],
    rows: usize,
    table: &mut Param,
    ids: &[u32],
    cands: usize,
    weights: Option<&[f32]>,
) -> (f64, Vec<f32>) {
    let s = candidate_scores(h, rows, table, ids, cands);
    let LossGrad { loss, grad } = match kind {
        SampledLoss::Softmax => sampled_softmax(&s, rows, cands, weights),
        SampledLoss::Bce => bce_sampled(&s, rows, cands, weights),
        SampledLoss::Bpr => bpr(&s, rows, cands, weights),
    };
    let dh = candidate_scores_backward(h, rows, table, ids, cands, &grad);
    (loss, dh)
}

#[cfg(test)]
mod tests;
