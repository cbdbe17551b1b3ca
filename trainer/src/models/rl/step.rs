//! One training step's loss and gradient for the RL heads (`spec/thesis-models.md` §3).
//!
//! With `main` the network being updated and `target` the other copy (double Q-learning), for
//! a batch of transitions `(s_t, a_t, s_{t+1}, done)`:
//!
//! - `h_t = G_main(s_t)` in training mode (dropout on); everything that only provides a
//!   constant (the greedy next action, the bootstrap values, SMORL's rewards, SA2C's advantage)
//!   is computed without gradient, the next-state and target forwards in evaluation mode
//!   (dropout off, deterministic targets).
//! - Greedy next action `a* = argmax_a Σ_o w_o·Q_main,o(s_{t+1}, a)` (one head: `w = 1`),
//!   evaluated by the target: `y_o = r_o + γ·Q_tgt,o(s_{t+1}, a*)`, bootstrap 0 when `done`.
//! - Rewards: SQN/SNQN/SA2C `r = reward` (1) per interaction. SMORL, with `â` the supervised
//!   head's top-1 at `s_t`: `r_acc = reward`, `r_div = 1 − cos(last item of s_t, â)` over the
//!   frozen similarity table, `r_nov = 1[â ∈ I_nov]`.
//! - Positive TD: `Σ_o w_o·td_weight·mean_r (y_o − Q_main,o(s_t, a_t))²`.
//! - SNQN/SA2C negatives `a⁻` (one term each): `y⁻ = r⁻ + γ·Q_tgt(s_t, a°)` with
//!   `a° = argmax_a Q_main(s_t, a)`; a negative action does not move the state, so it
//!   bootstraps on the current state and is never terminal.
//! - Supervised: cross-entropy of the supervised logits against `a_t`; SA2C after its warm-up
//!   multiplies each row by the detached advantage
//!   `A = Q(s_t, a⁺) − mean(Q(s_t, a⁺), Q(s_t, a⁻_1..m))` (`(Q⁺ − Q⁻)/2` for one negative).
//! - The backbone's own penalty (RecBole's `reg_weight` terms of NextItNet and Caser).

use super::loss::{argmax_rows, td_loss, weighted_ce};
use super::samples::RlBatch;
use super::{RlKind, RlModel};
use crate::models::TrainModel;
use crate::nn::Rng;
use crate::objectives::Similarity;

/// The SA2C warm-up with the plain SNQN loss.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Warmup {
    /// A fixed number of optimiser steps.
    Steps(u64),
    /// `min(15,000 steps, 3 epochs)`: the original code's 15,000 steps are about 3.3 epochs
    /// of RC15 at batch 256; on a small data set they would be dozens of epochs, longer than
    /// the whole run.
    Auto,
}

impl Warmup {
    /// The original code's warm-up length.
    pub const ORIGINAL_STEPS: u64 = 15_000;

    /// Steps of warm-up for `steps_per_epoch`.
    pub fn steps(self, steps_per_epoch: u64) -> u64 {
        match self {
            Warmup::Steps(n) => n,
            Warmup::Auto => Self::ORIGINAL_STEPS.min(3 * steps_per_epoch),
        }
    }
}

/// Settings of the RL losses.
#[derive(Clone, Debug, PartialEq)]
pub struct RlOptions {
    /// Discount `γ` (0.5, the SQN/SA2C default).
    pub gamma: f32,
    /// Multiplier of each squared TD error (0.5, trfl's `double_qlearning`; 1 gives the
    /// literal `(y − Q)²`).
    pub td_weight: f32,
    /// Reward of an interaction (`r_acc`), 1.
    pub reward: f32,
    /// Reward of a sampled negative action, 0.
    pub neg_reward: f32,
    /// Negatives per transition (SNQN, SA2C), 1.
    pub negatives: usize,
    /// SA2C's warm-up.
    pub warmup: Warmup,
    /// SMORL's objective weights `w = (acc, div, nov)`, `(1, 1, 1)`.
    pub weights: [f32; 3],
}

impl Default for RlOptions {
    fn default() -> Self {
        RlOptions {
            gamma: 0.5,
            td_weight: 0.5,
            reward: 1.0,
            neg_reward: 0.0,
            negatives: 1,
            warmup: Warmup::Auto,
            weights: [1.0; 3],
        }
    }
}

/// What one step needs besides the models and the batch.
#[derive(Clone, Copy, Debug)]
pub struct StepCtx<'a> {
    /// Loss settings.
    pub opts: &'a RlOptions,
    /// SA2C: weight the supervised loss by the advantage (after the warm-up).
    pub advantage: bool,
    /// SMORL: the frozen similarity table of the diversity reward.
    pub sim: Option<&'a Similarity>,
    /// SMORL: the long-tail mask `I_nov` by item id.
    pub long_tail: Option<&'a [bool]>,
}

/// The parts of one step's loss.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepLoss {
    /// Everything (what the gradient is of).
    pub total: f64,
    /// The (possibly advantage-weighted) supervised loss.
    pub ce: f64,
    /// The TD terms, positive and negative.
    pub td: f64,
}

/// The per-objective weights a kind uses in the scalarised argmax and the TD sum.
pub fn objective_weights<M: TrainModel>(model: &RlModel<M>, opts: &RlOptions) -> Vec<f32> {
    match model.kind() {
        RlKind::Smorl => opts.weights.to_vec(),
        _ => vec![1.0],
    }
}

/// The training-mode forward of the main network on the states: `h_t`, the backbone's cache
/// and the supervised logits.
pub struct Forward<C> {
    h: Vec<f32>,
    cache: C,
    logits: Vec<f32>,
}

/// Runs the main network on `b`'s states (`rng`: dropout; `None`: evaluation mode).
pub fn forward<M: TrainModel>(
    main: &RlModel<M>,
    b: &RlBatch,
    rng: Option<&mut Rng>,
) -> Forward<M::Cache> {
    let (h, cache) = main.backbone().forward(&b.state, rng);
    let logits = main.sup_logits(&h, b.rows());
    Forward { h, cache, logits }
}

impl<C> std::fmt::Debug for Forward<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward")
            .field("h", &self.h.len())
            .field("logits", &self.logits.len())
            .finish_non_exhaustive()
    }
}

/// The constants of a step (stop-gradient): TD targets per objective, the negatives' TD
/// targets and SA2C's advantage.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Targets {
    /// `y_o` per objective, `[rows]` each.
    pub y: Vec<Vec<f32>>,
    /// Targets of the negatives, `[rows, negatives]` (empty without).
    pub y_neg: Vec<f32>,
    /// SA2C's advantage per row, after the warm-up.
    pub adv: Option<Vec<f32>>,
}

/// Computes the step's constants from the main network's forward `f` (see the module docs).
///
/// # Panics
/// If SMORL is given no similarity table or long-tail mask (a setup bug).
pub fn targets<M: TrainModel>(
    main: &RlModel<M>,
    target: &RlModel<M>,
    b: &RlBatch,
    ctx: &StepCtx<'_>,
    f: &Forward<M::Cache>,
) -> Targets {
    let rows = b.rows();
    let n = main.n_items();
    let opts = ctx.opts;
    let w = objective_weights(main, opts);
    let h = &f.h;

    // Greedy next action of the main network, scalarised over the objectives.
    let (h_next, _) = main.backbone().forward(&b.next, None);
    let mut scal = vec![0.0f32; rows * n];
    for (o, &wo) in w.iter().enumerate() {
        for (s, q) in scal.iter_mut().zip(main.q_full(o, &h_next, rows)) {
            *s += wo * q;
        }
    }
    let a_star = argmax_rows(&scal, rows, n);
    let (h_next_tgt, _) = target.backbone().forward(&b.next, None);

    // Rewards per objective.
    let mut rewards = vec![vec![opts.reward; rows]];
    if main.kind() == RlKind::Smorl {
        let sim = ctx.sim.expect("SMORL needs a similarity table");
        let tail = ctx.long_tail.expect("SMORL needs the long-tail set");
        let top1 = argmax_rows(&f.logits, rows, n);
        rewards.push(
            (0..rows)
                .map(|r| (1.0 - sim.cos(b.last[r], top1[r])) as f32)
                .collect(),
        );
        rewards.push(
            top1.iter()
                .map(|&a| f32::from(u8::from(tail[a as usize])))
                .collect(),
        );
    }
    let y = (0..w.len())
        .map(|o| {
            let boot = target.q_columns(o, &h_next_tgt, rows, &a_star, 1);
            (0..rows)
                .map(|r| rewards[o][r] + if b.done[r] { 0.0 } else { opts.gamma * boot[r] })
                .collect()
        })
        .collect();

    let mut t = Targets {
        y,
        ..Default::default()
    };
    if main.kind().uses_negatives() && b.n_neg > 0 {
        let m = b.n_neg;
        let a_cur = argmax_rows(&main.q_full(0, h, rows), rows, n);
        let (h_tgt, _) = target.backbone().forward(&b.state, None);
        let boot = target.q_columns(0, &h_tgt, rows, &a_cur, 1);
        t.y_neg = (0..rows * m)
            .map(|i| opts.neg_reward + opts.gamma * boot[i / m])
            .collect();
        if ctx.advantage {
            let q_pos = main.q_columns(0, h, rows, &b.actions, 1);
            let q_neg = main.q_columns(0, h, rows, &b.negatives, m);
            t.adv = Some(
                (0..rows)
                    .map(|r| {
                        let sum = q_neg[r * m..(r + 1) * m].iter().sum::<f32>() + q_pos[r];
                        q_pos[r] - sum / (m + 1) as f32
                    })
                    .collect(),
            );
        }
    }
    t
}

/// The loss for constants `t` on the forward `f`; adds its gradient into `main`'s parameters.
pub fn apply<M: TrainModel>(
    main: &mut RlModel<M>,
    b: &RlBatch,
    t: &Targets,
    f: Forward<M::Cache>,
    opts: &RlOptions,
) -> StepLoss {
    let rows = b.rows();
    let n = main.n_items();
    let w = objective_weights(main, opts);
    let Forward { h, cache, logits } = f;
    let mut loss = StepLoss::default();
    let mut dh = vec![0.0f32; h.len()];
    let add = |dh: &mut [f32], g: Vec<f32>| {
        for (a, b) in dh.iter_mut().zip(g) {
            *a += b;
        }
    };
    for (o, &wo) in w.iter().enumerate() {
        let q = main.q_columns(o, &h, rows, &b.actions, 1);
        let g = td_loss(&q, &t.y[o], rows, opts.td_weight * wo);
        loss.td += g.loss;
        add(
            &mut dh,
            main.q_columns_backward(o, &h, rows, &b.actions, 1, &g.grad),
        );
    }
    if !t.y_neg.is_empty() {
        let m = b.n_neg;
        let q = main.q_columns(0, &h, rows, &b.negatives, m);
        let g = td_loss(&q, &t.y_neg, rows, opts.td_weight);
        loss.td += g.loss;
        add(
            &mut dh,
            main.q_columns_backward(0, &h, rows, &b.negatives, m, &g.grad),
        );
    }
    let ce = weighted_ce(&logits, rows, n, &b.actions, t.adv.as_deref());
    loss.ce = ce.loss;
    add(&mut dh, main.sup_backward(&h, rows, &ce.grad));
    main.backbone_mut().backward(&cache, &dh);
    loss.total = loss.ce + loss.td + main.backbone_mut().regularize();
    loss
}

/// One step on `b`: adds the gradient of its loss into `main`'s parameters and returns the
/// loss (see the module docs). `rng` drives dropout.
pub fn rl_step<M: TrainModel>(
    main: &mut RlModel<M>,
    target: &RlModel<M>,
    b: &RlBatch,
    ctx: &StepCtx<'_>,
    rng: Option<&mut Rng>,
) -> StepLoss {
    if b.rows() == 0 {
        return StepLoss::default();
    }
    let f = forward(main, b, rng);
    let t = targets(main, target, b, ctx, &f);
    apply(main, b, &t, f, ctx.opts)
}
