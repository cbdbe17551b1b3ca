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
//! - With a language environment (§7.2–7.3, the batch's [`super::samples::LeRows`]): the Q
//!   heads read `s'^e ‖ h` or `s'^e` (current and next states alike); LE rewards replace
//!   `reward` and `neg_reward`; augmentation adds `w_ah·CE(logits, a^e)` and
//!   `w_aq·td_weight·(y^e − Q(s_t, a^e))²` with `y^e = r^e(a^e) + γ·Q_tgt(s_{t+1}, a*)` (the
//!   logged next state's bootstrap, as the positive's; `r^e(a^e) = reward` without LE
//!   rewards).

use super::le::LeVariant;
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
    /// The language-environment variant trained with (SNQN, SA2C), if any.
    pub le: Option<LeVariant>,
    /// Weight `w_ah` of the supervised augmentation loss (0.1, the thesis's best).
    pub w_ah: f32,
    /// Weight `w_aq` of the Q-learning augmentation loss (0.01, the thesis's best).
    pub w_aq: f32,
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
            le: None,
            w_ah: 0.1,
            w_aq: 0.01,
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
    /// Targets of the augmented actions, `[rows]` (empty without augmentation).
    pub y_aug: Vec<f32>,
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
    let le = b.le.as_ref();
    let (le_now, le_next) = match le {
        Some(l) if !l.state.is_empty() => (Some(&l.state[..]), Some(&l.next[..])),
        _ => (None, None),
    };

    // Greedy next action of the main network, scalarised over the objectives.
    let (h_next, _) = main.backbone().forward(&b.next, None);
    let q_next = main.q_input(&h_next, le_next, rows);
    let mut scal = vec![0.0f32; rows * n];
    for (o, &wo) in w.iter().enumerate() {
        for (s, q) in scal.iter_mut().zip(main.q_full(o, &q_next, rows)) {
            *s += wo * q;
        }
    }
    let a_star = argmax_rows(&scal, rows, n);
    let (h_next_tgt, _) = target.backbone().forward(&b.next, None);
    let q_next_tgt = target.q_input(&h_next_tgt, le_next, rows);

    // Rewards per objective.
    let le_rewards = le.filter(|l| !l.reward.is_empty());
    let mut rewards = vec![match le_rewards {
        Some(l) => l.reward.clone(),
        None => vec![opts.reward; rows],
    }];
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
    let boot: Vec<Vec<f32>> = (0..w.len())
        .map(|o| {
            let q = target.q_columns(o, &q_next_tgt, rows, &a_star, 1);
            (0..rows)
                .map(|r| if b.done[r] { 0.0 } else { opts.gamma * q[r] })
                .collect()
        })
        .collect();
    let y = (0..w.len())
        .map(|o| (0..rows).map(|r| rewards[o][r] + boot[o][r]).collect())
        .collect();

    let mut t = Targets {
        y,
        ..Default::default()
    };
    if let Some(l) = le.filter(|l| !l.augmented.is_empty()) {
        t.y_aug = (0..rows)
            .map(|r| l.augmented_reward.get(r).copied().unwrap_or(opts.reward) + boot[0][r])
            .collect();
    }
    if main.kind().uses_negatives() && b.n_neg > 0 {
        let m = b.n_neg;
        let q_now = main.q_input(h, le_now, rows);
        let a_cur = argmax_rows(&main.q_full(0, &q_now, rows), rows, n);
        let (h_tgt, _) = target.backbone().forward(&b.state, None);
        let q_now_tgt = target.q_input(&h_tgt, le_now, rows);
        let boot = target.q_columns(0, &q_now_tgt, rows, &a_cur, 1);
        t.y_neg = (0..rows * m)
            .map(|i| {
                let r = le_rewards.map_or(opts.neg_reward, |l| l.negative_reward[i / m]);
                r + opts.gamma * boot[i / m]
            })
            .collect();
        if ctx.advantage {
            let q_pos = main.q_columns(0, &q_now, rows, &b.actions, 1);
            let q_neg = main.q_columns(0, &q_now, rows, &b.negatives, m);
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
    let le_now =
        b.le.as_ref()
            .filter(|l| !l.state.is_empty())
            .map(|l| &l.state[..]);
    let q_in = main.q_input(&h, le_now, rows);
    let mut dq = vec![0.0f32; q_in.len()];
    for (o, &wo) in w.iter().enumerate() {
        let q = main.q_columns(o, &q_in, rows, &b.actions, 1);
        let g = td_loss(&q, &t.y[o], rows, opts.td_weight * wo);
        loss.td += g.loss;
        add(
            &mut dq,
            main.q_columns_backward(o, &q_in, rows, &b.actions, 1, &g.grad),
        );
    }
    if !t.y_neg.is_empty() {
        let m = b.n_neg;
        let q = main.q_columns(0, &q_in, rows, &b.negatives, m);
        let g = td_loss(&q, &t.y_neg, rows, opts.td_weight);
        loss.td += g.loss;
        add(
            &mut dq,
            main.q_columns_backward(0, &q_in, rows, &b.negatives, m, &g.grad),
        );
    }
    let augmented =
        b.le.as_ref()
            .map(|l| &l.augmented[..])
            .filter(|a| !a.is_empty() && !t.y_aug.is_empty());
    if let Some(aug) = augmented {
        let q = main.q_columns(0, &q_in, rows, aug, 1);
        let g = td_loss(&q, &t.y_aug, rows, opts.td_weight * opts.w_aq);
        loss.td += g.loss;
        add(
            &mut dq,
            main.q_columns_backward(0, &q_in, rows, aug, 1, &g.grad),
        );
    }
    add(&mut dh, main.q_input_backward(&dq, rows));
    let mut ce = weighted_ce(&logits, rows, n, &b.actions, t.adv.as_deref());
    if let Some(aug) = augmented {
        let a = weighted_ce(&logits, rows, n, aug, None);
        ce.loss += f64::from(opts.w_ah) * a.loss;
        for (g, ga) in ce.grad.iter_mut().zip(&a.grad) {
            *g += opts.w_ah * ga;
        }
    }
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
