//! The Decision Transformer's forward and backward passes and its loss.
//!
//! Layout: a [`DtBatch`] holds `n` windows of `len` steps, right-padded. The real steps
//! `(r, t)` (`t < lens[r]`), in row-major order, index every per-step output. MoTrans sees
//! `n` sequences of `5·len` tokens, row `r·5·len + 5·t + slot`.
//!
//! Backward, beyond the blocks' own: the heads scatter their input gradients into the rows
//! they read; a state token's gradient joins `Ŷ`'s in `dL/ds_t`, which UserTrans
//! back-propagates; a return token adds `R_t,o·mask_o·d` to `E_o`'s gradient; an action
//! token scatter-adds into the shared item table's gradient; `P_t` collects the gradients of
//! the five tokens of step `t`.

use super::returns::N_OBJ;
use super::{ACTION, DtModel, STATE, TOKENS};
use crate::models::sasrec::SasRecCache;
use crate::models::{Batch, TrainModel, gather_rows, scatter_rows};
use crate::nn::Linear;
use crate::nn::Rng;
use crate::nn::activation::DropoutCache;
use crate::nn::attention::{FeedForwardCache, SelfAttentionCache};
use crate::nn::linear::bias_grad;
use crate::nn::loss::{LossGrad, mse, softmax_cross_entropy};
use crate::nn::norm::LayerNormCache;
use crate::nn::param::Param;
use crate::nn::score::{full_scores, full_scores_backward};

/// `n` windows of `len` steps, right-padded with id 0 and return 0.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DtBatch {
    /// Windows.
    pub n: usize,
    /// Steps per window.
    pub len: usize,
    /// States `x_t`, `[n, len]`.
    pub states: Vec<u32>,
    /// Actions `a_t = x_{t+1}`, `[n, len]` (0 where unknown: padding, or the predicted step at
    /// inference).
    pub actions: Vec<u32>,
    /// Returns `[acc, nov, div]` per step, `[n, len]`.
    pub returns: Vec<[f32; N_OBJ]>,
    /// Real steps per window (`1..=len`).
    pub lens: Vec<usize>,
}

impl DtBatch {
    /// The real steps `(r, t)` in row-major order.
    pub fn steps(&self) -> Vec<(usize, usize)> {
        (0..self.n)
            .flat_map(|r| (0..self.lens[r]).map(move |t| (r, t)))
            .collect()
    }

    fn assert_shape(&self, max_len: usize) {
        let cells = self.n * self.len;
        assert!(
            self.len <= max_len,
            "decision transformer: window of {} steps, the model has {max_len}",
            self.len
        );
        assert!(
            self.states.len() == cells
                && self.actions.len() == cells
                && self.returns.len() == cells
                && self.lens.len() == self.n,
            "decision transformer: batch of {} states, {} actions, {} returns, {} lengths for [{}, {}]",
            self.states.len(),
            self.actions.len(),
            self.returns.len(),
            self.lens.len(),
            self.n,
            self.len
        );
        if let Some(l) = self.lens.iter().find(|&&l| l == 0 || l > self.len) {
            panic!(
                "decision transformer: window of {l} real steps in a batch of {}",
                self.len
            );
        }
    }
}

/// The outputs of [`DtModel::forward`], one row per real step ([`DtBatch::steps`]).
#[derive(Clone, Debug)]
pub struct DtOutputs {
    /// The real steps.
    pub steps: Vec<(usize, usize)>,
    /// `Ŷ`, `[steps, n_items]`.
    pub user_logits: Vec<f32>,
    /// `Â`, `[steps, n_items]`.
    pub action_logits: Vec<f32>,
    /// Per objective, the indices (into `steps`) of the steps with a return prediction.
    pub ret_steps: [Vec<usize>; N_OBJ],
    /// Per objective, `R̂` for those steps.
    pub ret_pred: [Vec<f32>; N_OBJ],
}

/// Gradients of a loss with respect to [`DtOutputs`] (shaped as them).
#[derive(Clone, Debug)]
pub struct DtGrads {
    /// `dL/dŶ`.
    pub user_logits: Vec<f32>,
    /// `dL/dÂ`.
    pub action_logits: Vec<f32>,
    /// `dL/dR̂` per objective.
    pub ret_pred: [Vec<f32>; N_OBJ],
}

/// What [`DtModel::backward`] needs.
#[derive(Debug)]
pub struct DtCache {
    batch: DtBatch,
    steps: Vec<(usize, usize)>,
    user: SasRecCache,
    states: Vec<f32>,
    ln: Option<LayerNormCache>,
    drop: DropoutCache,
    blocks: Vec<(SelfAttentionCache, FeedForwardCache)>,
    action_rows: Vec<usize>,
    action_in: Vec<f32>,
    ret_rows: Vec<usize>,
    ret_in: Vec<f32>,
}

/// The loss `L = L_S + L_a + β·L_R` and its terms.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct LossParts {
    /// `L`.
    pub total: f64,
    /// `L_S`, the supervised head's cross-entropy.
    pub supervised: f64,
    /// `L_a`, the action head's cross-entropy.
    pub action: f64,
    /// `L_R`, the return MSE summed over objectives (before `β`).
    pub returns: f64,
}

/// A catalog head over `rows` rows of `x`: `x·Wᵀ + b`, or `x·Eᵀ + b` with the item table `E`
/// when tied.
fn head_forward(head: &Linear, table: &Param, tied: bool, x: &[f32], rows: usize) -> Vec<f32> {
    if !tied {
        return head.infer(x, rows);
    }
    let mut y = full_scores(x, rows, table);
    if let Some(b) = &head.bias {
        for row in y.chunks_exact_mut(b.len()) {
            axpy(row, &b.value, 1.0);
        }
    }
    y
}

/// The backward of [`head_forward`]: adds the weight (or item table) and bias gradients and
/// writes `dX` into `dx`.
fn head_backward(
    head: &mut Linear,
    table: &mut Param,
    tied: bool,
    x: &[f32],
    rows: usize,
    d: &[f32],
    dx: &mut [f32],
) {
    if !tied {
        head.backward_with_input(x, rows, d, dx, false);
        return;
    }
    dx.copy_from_slice(&full_scores_backward(x, rows, table, d));
    if let Some(b) = &mut head.bias {
        bias_grad(&mut b.grad, d, b.value.len());
    }
}

/// `y += c·x`.
fn axpy(y: &mut [f32], x: &[f32], c: f32) {
    for (a, b) in y.iter_mut().zip(x) {
        *a += c * b;
    }
}

impl DtModel {
    /// The return fed to objective `o`'s token at batch cell `cell` (0 when disabled).
    fn ret_input(&self, batch: &DtBatch, cell: usize, o: usize) -> f32 {
        if self.cfg.objectives[o] {
            batch.returns[cell][o]
        } else {
            0.0
        }
    }

    fn user_batch(batch: &DtBatch, steps: &[(usize, usize)]) -> Batch {
        Batch {
            n: batch.n,
            len: batch.len,
            items: batch.states.clone(),
            lens: batch.lens.clone(),
            users: vec![0; batch.n],
            out_pos: steps.to_vec(),
            targets: vec![0; steps.len()],
        }
    }

    /// The forward pass; dropout is active when `rng` is given.
    pub fn forward(&self, batch: &DtBatch, mut rng: Option<&mut Rng>) -> (DtOutputs, DtCache) {
        batch.assert_shape(self.cfg.max_len());
        let (h, n_items) = (self.cfg.hidden(), self.cfg.n_items());
        let (n, len) = (batch.n, batch.len);
        let tlen = TOKENS * len;
        let steps = batch.steps();
        let ub = Self::user_batch(batch, &steps);
        let (states, user) = self.user.forward(&ub, rng.as_deref_mut());
        let tied = self.cfg.tie_heads;
        let table = self.user.item_table();
        let user_logits = head_forward(&self.user_head, table, tied[0], &states, steps.len());

        let slots = self.cfg.order.slots();
        let table = &table.value;
        let mut x = vec![0.0f32; n * tlen * h];
        let mut valid = vec![false; n * tlen];
        for (k, &(r, t)) in steps.iter().enumerate() {
            let cell = r * len + t;
            let p = &self.step_emb.weight.value[t * h..(t + 1) * h];
            let base = r * tlen + TOKENS * t;
            for (kind, &slot) in slots.iter().enumerate() {
                let row = &mut x[(base + slot) * h..(base + slot + 1) * h];
                valid[base + slot] = true;
                row.copy_from_slice(p);
                match kind {
                    STATE => axpy(row, &states[k * h..(k + 1) * h], 1.0),
                    ACTION => {
                        let a = batch.actions[cell] as usize;
                        axpy(row, &table[a * h..(a + 1) * h], 1.0);
                    }
                    _ => {
                        let o = kind - 1;
                        axpy(
                            row,
                            &self.ret_emb.value[o * h..(o + 1) * h],
                            self.ret_input(batch, cell, o),
                        );
                        if let Some(b) = &self.ret_bias {
                            axpy(row, &b.value[o * h..(o + 1) * h], 1.0);
                        }
                    }
                }
            }
        }
        let rows = n * tlen;
        let (mut x, ln) = match &self.embed_ln {
            Some(ln) => {
                let (y, c) = ln.forward(&x, rows);
                (y, Some(c))
            }
            None => (x, None),
        };
        let drop = self.dropout.forward(&mut x, rng.as_deref_mut());
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for (att, ff) in &self.blocks {
            let (y, ac) = att.forward(&x, n, tlen, Some(&valid), rng.as_deref_mut());
            let (z, fc) = ff.forward(&y, rows, rng.as_deref_mut());
            blocks.push((ac, fc));
            x = z;
        }

        let order = self.cfg.order;
        let action_rows: Vec<usize> = steps
            .iter()
            .map(|&(r, t)| r * tlen + order.read_at(ACTION, t).expect("never the first token"))
            .collect();
        let action_in = gather_rows(&x, h, &action_rows);
        let action_logits = head_forward(
            &self.action_head,
            self.user.item_table(),
            tied[1],
            &action_in,
            steps.len(),
        );
        let mut ret_steps: [Vec<usize>; N_OBJ] = Default::default();
        let mut ret_rows = Vec::new();
        for (o, list) in ret_steps.iter_mut().enumerate() {
            for (k, &(r, t)) in steps.iter().enumerate() {
                if let Some(i) = order.read_at(1 + o, t) {
                    list.push(k);
                    ret_rows.push(r * tlen + i);
                }
            }
        }
        let ret_in = gather_rows(&x, h, &ret_rows);
        let ret_all = self.ret_head.infer(&ret_in, ret_rows.len());
        let mut ret_pred: [Vec<f32>; N_OBJ] = Default::default();
        let mut at = 0;
        for (o, pred) in ret_pred.iter_mut().enumerate() {
            let m = ret_steps[o].len();
            *pred = (at..at + m).map(|i| ret_all[i * N_OBJ + o]).collect();
            at += m;
        }
        debug_assert_eq!(action_logits.len(), steps.len() * n_items);
        let out = DtOutputs {
            steps: steps.clone(),
            user_logits,
            action_logits,
            ret_steps,
            ret_pred,
        };
        let cache = DtCache {
            batch: batch.clone(),
            steps,
            user,
            states,
            ln,
            drop,
            blocks,
            action_rows,
            action_in,
            ret_rows,
            ret_in,
        };
        (out, cache)
    }

    /// Adds every parameter gradient for the output gradients `d`.
    pub fn backward(&mut self, cache: &DtCache, d: &DtGrads) {
        let h = self.cfg.hidden();
        let batch = &cache.batch;
        let (n, len) = (batch.n, batch.len);
        let tlen = TOKENS * len;
        let rows = n * tlen;
        let s = cache.steps.len();

        // Heads.
        let tied = self.cfg.tie_heads;
        let mut d_states = vec![0.0f32; s * h];
        let table = self.user.item_table_mut();
        head_backward(
            &mut self.user_head,
            table,
            tied[0],
            &cache.states,
            s,
            &d.user_logits,
            &mut d_states,
        );
        let mut d_in = vec![0.0f32; s * h];
        head_backward(
            &mut self.action_head,
            table,
            tied[1],
            &cache.action_in,
            s,
            &d.action_logits,
            &mut d_in,
        );
        let mut dx = scatter_rows(&d_in, h, rows, &cache.action_rows);
        let m = cache.ret_rows.len();
        let mut d_ret = vec![0.0f32; m * N_OBJ];
        let mut at = 0;
        for (o, g) in d.ret_pred.iter().enumerate() {
            for (i, &v) in g.iter().enumerate() {
                d_ret[(at + i) * N_OBJ + o] = v;
            }
            at += g.len();
        }
        let mut d_rin = vec![0.0f32; m * h];
        self.ret_head
            .backward_with_input(&cache.ret_in, m, &d_ret, &mut d_rin, false);
        for (a, b) in dx
            .iter_mut()
            .zip(scatter_rows(&d_rin, h, rows, &cache.ret_rows))
        {
            *a += b;
        }

        // MoTrans.
        for ((att, ff), (ac, fc)) in self.blocks.iter_mut().zip(&cache.blocks).rev() {
            let dy = ff.backward(fc, &dx);
            dx = att.backward(ac, &dy);
        }
        self.dropout.backward(&cache.drop, &mut dx);
        if let (Some(ln), Some(c)) = (&mut self.embed_ln, &cache.ln) {
            dx = ln.backward(c, &dx);
        }

        // Tokens.
        let user_grad = self.cfg.user_grad;
        let slots = self.cfg.order.slots();
        for (k, &(r, t)) in cache.steps.iter().enumerate() {
            let cell = r * len + t;
            let base = r * tlen + TOKENS * t;
            for (kind, &slot) in slots.iter().enumerate() {
                let g = &dx[(base + slot) * h..(base + slot + 1) * h];
                axpy(&mut self.step_emb.weight.grad[t * h..(t + 1) * h], g, 1.0);
                match kind {
                    STATE if !user_grad => {}
                    ACTION if !user_grad => {}
                    STATE => axpy(&mut d_states[k * h..(k + 1) * h], g, 1.0),
                    ACTION => {
                        let a = batch.actions[cell] as usize;
                        axpy(
                            &mut self.user.item_table_mut().grad[a * h..(a + 1) * h],
                            g,
                            1.0,
                        );
                    }
                    _ => {
                        let o = kind - 1;
                        let c = self.ret_input(batch, cell, o);
                        axpy(&mut self.ret_emb.grad[o * h..(o + 1) * h], g, c);
                        if let Some(b) = &mut self.ret_bias {
                            axpy(&mut b.grad[o * h..(o + 1) * h], g, 1.0);
                        }
                    }
                }
            }
        }

        // UserTrans.
        self.user.backward(&cache.user, &d_states);
    }

    /// Forward, loss and backward for one training batch (actions of real steps must be real
    /// items): adds the gradient of `L = L_S + L_a + β·L_R` and returns its terms.
    pub fn step(&mut self, batch: &DtBatch, rng: Option<&mut Rng>) -> LossParts {
        let (out, cache) = self.forward(batch, rng);
        let (parts, grads) = loss(&out, batch, self.cfg.n_items(), self.cfg.beta);
        self.backward(&cache, &grads);
        parts
    }

    /// Serving scores `Â_p + α·Ŷ_p` of one window (`x_1..x_p`) with the given returns (one
    /// row per step), in evaluation mode: the trainer's reference for the engine.
    pub fn scores(&self, window: &[u32], returns: &[[f32; N_OBJ]], alpha: f32) -> Vec<f32> {
        let p = window.len();
        let mut actions = window[1..].to_vec();
        actions.push(0);
        let batch = DtBatch {
            n: 1,
            len: p,
            states: window.to_vec(),
            actions,
            returns: returns.to_vec(),
            lens: vec![p],
        };
        let (out, _) = self.forward(&batch, None);
        let n = self.cfg.n_items();
        let last = (p - 1) * n..p * n;
        out.action_logits[last.clone()]
            .iter()
            .zip(&out.user_logits[last])
            .map(|(a, u)| a + alpha * u)
            .collect()
    }
}

/// `L = L_S + L_a + β·L_R` on the outputs of `batch` and its gradient with respect to them.
/// The cross-entropies target each real step's action and average over the real steps; each
/// objective's MSE averages over the steps that predict it; `L_R` sums the three.
///
/// # Panics
/// If an action of a real step is not an item id below `n_items` (or is the padding id).
pub fn loss(out: &DtOutputs, batch: &DtBatch, n_items: usize, beta: f32) -> (LossParts, DtGrads) {
    let targets: Vec<u32> = out
        .steps
        .iter()
        .map(|&(r, t)| batch.actions[r * batch.len + t])
        .collect();
    if let Some((k, _)) = targets.iter().enumerate().find(|&(_, &a)| a == 0) {
        panic!(
            "decision transformer loss: real step {:?} has no action",
            out.steps[k]
        );
    }
    let s = out.steps.len();
    let LossGrad {
        loss: l_s,
        grad: g_s,
    } = softmax_cross_entropy(&out.user_logits, s, n_items, &targets, None);
    let LossGrad {
        loss: l_a,
        grad: g_a,
    } = softmax_cross_entropy(&out.action_logits, s, n_items, &targets, None);
    let mut l_r = 0.0;
    let mut g_r: [Vec<f32>; N_OBJ] = Default::default();
    for o in 0..N_OBJ {
        let want: Vec<f32> = out.ret_steps[o]
            .iter()
            .map(|&k| {
                let (r, t) = out.steps[k];
                batch.returns[r * batch.len + t][o]
            })
            .collect();
        let LossGrad { loss, grad } = mse(&out.ret_pred[o], &want, None);
        l_r += loss;
        g_r[o] = grad.into_iter().map(|g| g * beta).collect();
    }
    let parts = LossParts {
        total: l_s + l_a + f64::from(beta) * l_r,
        supervised: l_s,
        action: l_a,
        returns: l_r,
    };
    (
        parts,
        DtGrads {
            user_logits: g_s,
            action_logits: g_a,
            ret_pred: g_r,
        },
    )
}
