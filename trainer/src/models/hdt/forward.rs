//! The training step of the hierarchical models (forward, losses, hand-derived backward) and
//! the inference reference the engine is tested against.

use super::blocks::{InterCache, IntraCache, IntraInput, TOKENS};
use super::heads::HeadCache;
use super::{Backbone, HdtModel, Variant};
use crate::models::gru4rec::Gru4RecCache;
use crate::models::sasrec::SasRecCache;
use crate::nn::gru::GruCache;
use crate::nn::linear::LinearCache;
use crate::nn::loss::{mse, softmax_cross_entropy};
use crate::nn::{Module, Param, Rng};
use seqrec_kernels::cpu::vector;

/// Windows of sessions (one or more per session) with the carried inter-session states: the
/// rows of one training step, or one inference request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HdtBatch {
    /// Windows (rows).
    pub n: usize,
    /// Window length (the longest window of the batch, at most `max_len`).
    pub len: usize,
    /// Item ids `[n, len]`, right-padded with 0.
    pub items: Vec<u32>,
    /// Real items per window (`1..=len`).
    pub lens: Vec<usize>,
    /// Per window: the first step with a loss (steps before it are context, trained by an
    /// earlier window of the same session).
    pub from: Vec<usize>,
    /// Per window: the weight of each of its steps' losses (1 / the number of trained steps
    /// of its session, so that a session's steps average to one session).
    pub step_weight: Vec<f32>,
    /// Per window: the weight of its goal loss (1 for one window of each session, else 0).
    pub goal_weight: Vec<f32>,
    /// The first item of each window's (whole) session: the goal loss's target.
    pub first: Vec<u32>,
    /// Inter-session return `R_c` per session.
    pub r_inter: Vec<f32>,
    /// Carried inter-session state `s_c`, `[n, d]` (zeros for a user's first session).
    pub s_prev: Vec<f32>,
    /// Carried user-GRU state `g_{c−1}`, `[n, d]` (Hier; zeros for a first session).
    pub u_prev: Vec<f32>,
    /// Intra-session unexpected return `R_{c,t}` per step, `[n, len − 1]` (0 at padding).
    pub r_intra: Vec<f32>,
    /// Novelty return-to-go `R^n_t` per step, `[n, len − 1]` (0 at padding).
    pub rn: Vec<f32>,
}

/// The loss and its terms (each a mean over sessions).
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct LossParts {
    /// `L_S + α·L_R + β·L_a + λ·L_g`.
    pub total: f64,
    /// `L_S`.
    pub seq: f64,
    /// `L_R` (HDT).
    pub ret: f64,
    /// `L_a` (HDT).
    pub act: f64,
    /// `L_g` (HDT, InterDT).
    pub goal: f64,
}

/// What a training step returns besides the gradients.
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// The loss.
    pub loss: LossParts,
    /// `s_{c+1}`: the backbone state at each session's last real position, `[n, d]`.
    pub s_next: Vec<f32>,
    /// The user-GRU output `g_c` to carry (Hier), `[n, d]`; empty otherwise.
    pub u_next: Vec<f32>,
}

/// Inference-time knobs (the engine's objectives `alpha`, `lambda_div`, `target_unexp`,
/// `novelty_eps`).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Knobs {
    /// Weight of `Ŷ` in `Â + alpha·Ŷ` (HDT).
    pub alpha: f32,
    /// Scale of the inter-session return of the current session.
    pub lambda: f32,
    /// Explicit inter-session return (instead of `dis_max − dis(past sessions)`).
    pub target_unexp: Option<f32>,
    /// The predicted action is assumed novel when the mean novelty of the session's earlier
    /// actions is at least this (0: always, as the thesis).
    pub novelty_eps: f32,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            alpha: 1.0,
            lambda: 1.0,
            target_unexp: None,
            novelty_eps: 0.0,
        }
    }
}

pub(super) enum BackboneCache {
    Gru(Gru4RecCache),
    Sas(SasRecCache),
}

/// Everything the backward needs.
pub(super) struct StepCache {
    inter: Option<InterCache>,
    user: Option<GruCache>,
    proj: LinearCache,
    backbone: BackboneCache,
    /// Rows of the states of every step with an action (`L_S`, `L_a`, `L_R`).
    step_rows: Vec<usize>,
    seq: HeadCache,
    d_seq_logits: Vec<f32>,
    goal: Option<(HeadCache, Vec<f32>)>,
    intra: Option<IntraStep>,
}

struct IntraStep {
    cache: IntraCache,
    steps: usize,
    tok_rows: Vec<(usize, usize)>,
    ret: LinearCache,
    d_ret: Vec<f32>,
    act: HeadCache,
    d_act: Vec<f32>,
}

/// Rows `ids` of `table` (`[_, d]`).
pub(super) fn lookup(table: &Param, ids: &[u32]) -> Vec<f32> {
    let d = table.shape[1];
    let mut out = Vec::with_capacity(ids.len() * d);
    for &i in ids {
        out.extend_from_slice(&table.value[i as usize * d..(i as usize + 1) * d]);
    }
    out
}

fn lookup_backward(table: &mut Param, ids: &[u32], g: &[f32]) {
    let d = table.shape[1];
    for (&i, r) in ids.iter().zip(g.chunks_exact(d)) {
        vector::add(&mut table.grad[i as usize * d..(i as usize + 1) * d], r);
    }
}

fn gather(x: &[f32], d: usize, rows: &[usize]) -> Vec<f32> {
    rows.iter()
        .flat_map(|&r| x[r * d..(r + 1) * d].iter().copied())
        .collect()
}

fn scatter_add(dst: &mut [f32], d: usize, rows: &[usize], g: &[f32]) {
    for (&r, v) in rows.iter().zip(g.chunks_exact(d)) {
        vector::add(&mut dst[r * d..(r + 1) * d], v);
    }
}

fn scale(v: &mut [f32], k: f32) {
    for x in v {
        *x *= k;
    }
}

impl HdtModel {
    /// The goal inputs of a batch: `(R̃ [n,d] or empty, g [n,d])` and the caches.
    pub(super) fn goals(
        &self,
        b: &HdtBatch,
        rng: Option<&mut Rng>,
    ) -> (Vec<f32>, Vec<f32>, Option<InterCache>, Option<GruCache>) {
        match (&self.inter, &self.user_gru) {
            (Some(inter), _) => {
                let (rt, g, c) = inter.forward(&b.r_inter, &b.s_prev, rng);
                (rt, g, Some(c), None)
            }
            (None, Some(gru)) => {
                let (g, c) = gru.forward(&b.s_prev, b.n, 1, Some(&b.u_prev));
                (Vec::new(), g, None, Some(c))
            }
            (None, None) => unreachable!("every variant has InterDT or the user GRU"),
        }
    }

    /// Backbone states `[n·len, d]` for the ids of `b` and the goals `g`.
    pub(super) fn states(
        &self,
        b: &HdtBatch,
        g: &[f32],
        mut rng: Option<&mut Rng>,
    ) -> (Vec<f32>, Vec<f32>, LinearCache, BackboneCache) {
        let d = self.cfg.dim;
        let (n, len) = (b.n, b.len);
        let emb = lookup(self.backbone.item_table(), &b.items);
        let mut cat = vec![0.0f32; n * len * 2 * d];
        for r in 0..n * len {
            cat[r * 2 * d..r * 2 * d + d].copy_from_slice(&emb[r * d..(r + 1) * d]);
            let gb = r / len;
            cat[r * 2 * d + d..(r + 1) * 2 * d].copy_from_slice(&g[gb * d..(gb + 1) * d]);
        }
        let (x, proj) = self.input_proj.forward(&cat, n * len);
        let (states, cache) = match &self.backbone {
            Backbone::Gru4Rec(m) => {
                let (s, c) = m.forward_inputs(&x, n, len, rng.as_deref_mut());
                (s, BackboneCache::Gru(c))
            }
            Backbone::SasRec(m) => {
                let valid: Vec<bool> = b.items.iter().map(|&i| i != 0).collect();
                let (s, c) = m.forward_inputs(&x, n, len, &valid, rng);
                (s, BackboneCache::Sas(c))
            }
        };
        (states, emb, proj, cache)
    }

    /// The forward pass and losses of one batch; dropout is active when `rng` is given.
    pub(super) fn forward_step(
        &self,
        b: &HdtBatch,
        mut rng: Option<&mut Rng>,
    ) -> (StepOutput, StepCache) {
        let cfg = &self.cfg;
        let d = cfg.dim;
        let (n, len) = (b.n, b.len);
        assert!(
            len >= 1 && len <= cfg.max_len && b.items.len() == n * len,
            "hdt batch: {} ids for [{n}, {len}] (max_len {})",
            b.items.len(),
            cfg.max_len
        );
        let (rt, g, inter, user) = self.goals(b, rng.as_deref_mut());
        let (states, emb, proj, backbone) = self.states(b, &g, rng.as_deref_mut());
        let s_next = gather(
            &states,
            d,
            &(0..n).map(|r| r * len + b.lens[r] - 1).collect::<Vec<_>>(),
        );
        // Steps with an action and a loss: positions from_b ≤ t < len_b − 1, each weighted so
        // that a session's steps average to one session's share.
        let steps = len - 1;
        let mut step_rows = Vec::new();
        let mut step_w = Vec::new();
        let mut step_bt = Vec::new();
        let mut targets = Vec::new();
        for r in 0..n {
            for t in b.from[r]..b.lens[r].saturating_sub(1) {
                step_rows.push(r * len + t);
                step_w.push(b.step_weight[r]);
                step_bt.push((r, t));
                targets.push(b.items[r * len + t + 1]);
            }
        }
        let mut loss = LossParts::default();
        let rows = step_rows.len();
        let n_items = cfg.n_items;
        let h = gather(&states, d, &step_rows);
        let table = self.backbone.item_table();
        let (logits, seq) = self.seq_head.forward(table, &h, rows);
        let ce = softmax_cross_entropy(&logits, rows, n_items, &targets, Some(&step_w));
        loss.seq = ce.loss;
        let d_seq_logits = ce.grad;
        let goal = self.goal_head.as_ref().map(|head| {
            let (logits, c) = head.forward(table, &g, n);
            let ce = softmax_cross_entropy(&logits, n, n_items, &b.first, Some(&b.goal_weight));
            loss.goal = ce.loss;
            (c, ce.grad)
        });
        let intra = match (&self.intra, steps) {
            (Some(intra), s) if s > 0 => {
                let mut st = vec![0.0f32; n * s * d];
                let mut act = vec![0.0f32; n * s * d];
                let mut valid = vec![false; n * s];
                for r in 0..n {
                    for t in 0..s {
                        let bt = r * s + t;
                        st[bt * d..(bt + 1) * d]
                            .copy_from_slice(&states[(r * len + t) * d..(r * len + t + 1) * d]);
                        act[bt * d..(bt + 1) * d]
                            .copy_from_slice(&emb[(r * len + t + 1) * d..(r * len + t + 2) * d]);
                        valid[bt] = t + 1 < b.lens[r];
                    }
                }
                let inp = IntraInput {
                    n,
                    steps: s,
                    goal: &rt,
                    rn: &b.rn,
                    states: &st,
                    actions: &act,
                    valid: &valid,
                };
                let (out, cache) = intra.forward(&inp, rng);
                let tok = |k: usize| -> Vec<usize> {
                    step_bt
                        .iter()
                        .map(|&(r, t)| r * TOKENS * s + TOKENS * t + k)
                        .collect()
                };
                let goal_tok = tok(0);
                let state_tok = tok(2);
                let (pred, ret) = intra.ret_head.forward(&gather(&out, d, &goal_tok), rows);
                let want: Vec<f32> = step_bt.iter().map(|&(r, t)| b.r_intra[r * s + t]).collect();
                let m = mse(&pred, &want, Some(&step_w));
                loss.ret = m.loss;
                let (a_logits, act_c) =
                    intra
                        .act_head
                        .forward(table, &gather(&out, d, &state_tok), rows);
                let ce = softmax_cross_entropy(&a_logits, rows, n_items, &targets, Some(&step_w));
                loss.act = ce.loss;
                let tok_rows = goal_tok.into_iter().zip(state_tok).collect();
                Some(IntraStep {
                    cache,
                    steps: s,
                    tok_rows,
                    ret,
                    d_ret: m.grad,
                    act: act_c,
                    d_act: ce.grad,
                })
            }
            _ => None,
        };
        loss.total = loss.seq
            + cfg.alpha_r as f64 * loss.ret
            + cfg.beta_a as f64 * loss.act
            + cfg.lambda_g as f64 * loss.goal;
        let u_next = if cfg.variant == Variant::Hier {
            g.clone()
        } else {
            Vec::new()
        };
        let cache = StepCache {
            inter,
            user,
            proj,
            backbone,
            step_rows,
            seq,
            d_seq_logits,
            goal,
            intra,
        };
        (
            StepOutput {
                loss,
                s_next,
                u_next,
            },
            cache,
        )
    }

    /// Adds the gradient of the step's total loss into every parameter.
    pub(super) fn backward_step(&mut self, b: &HdtBatch, mut c: StepCache) {
        let cfg = self.cfg.clone();
        let d = cfg.dim;
        let (n, len) = (b.n, b.len);
        let mut d_states = vec![0.0f32; n * len * d];
        let mut d_emb = vec![0.0f32; n * len * d];
        let mut d_g = vec![0.0f32; n * d];
        let mut d_rt = vec![0.0f32; n * d];
        let d_h = self
            .seq_head
            .backward(self.backbone.item_table_mut(), &c.seq, &c.d_seq_logits);
        scatter_add(&mut d_states, d, &c.step_rows, &d_h);
        if let (Some(head), Some((gc, mut dl))) = (self.goal_head.as_mut(), c.goal.take()) {
            scale(&mut dl, cfg.lambda_g);
            d_g = head.backward(self.backbone.item_table_mut(), &gc, &dl);
        }
        if let (Some(intra), Some(mut is)) = (self.intra.as_mut(), c.intra.take()) {
            let s = is.steps;
            scale(&mut is.d_ret, cfg.alpha_r);
            scale(&mut is.d_act, cfg.beta_a);
            let dh_ret = intra.ret_head.backward(&is.ret, &is.d_ret);
            let dh_act =
                intra
                    .act_head
                    .backward(self.backbone.item_table_mut(), &is.act, &is.d_act);
            let mut d_out = vec![0.0f32; n * TOKENS * s * d];
            let (gt, st): (Vec<usize>, Vec<usize>) = is.tok_rows.iter().copied().unzip();
            scatter_add(&mut d_out, d, &gt, &dh_ret);
            scatter_add(&mut d_out, d, &st, &dh_act);
            let grads = intra.backward(&is.cache, &d_out);
            d_rt = grads.goal;
            for r in 0..n {
                for t in 0..s {
                    let bt = r * s + t;
                    vector::add(
                        &mut d_states[(r * len + t) * d..(r * len + t + 1) * d],
                        &grads.states[bt * d..(bt + 1) * d],
                    );
                    vector::add(
                        &mut d_emb[(r * len + t + 1) * d..(r * len + t + 2) * d],
                        &grads.actions[bt * d..(bt + 1) * d],
                    );
                }
            }
        }
        let d_x = match (&mut self.backbone, &c.backbone) {
            (Backbone::Gru4Rec(m), BackboneCache::Gru(bc)) => m.backward_inputs(bc, &d_states),
            (Backbone::SasRec(m), BackboneCache::Sas(bc)) => m.backward_inputs(bc, &d_states),
            _ => unreachable!("the cache comes from this backbone"),
        };
        let d_cat = self.input_proj.backward(&c.proj, &d_x);
        for r in 0..n * len {
            vector::add(
                &mut d_emb[r * d..(r + 1) * d],
                &d_cat[r * 2 * d..r * 2 * d + d],
            );
            let gb = r / len;
            vector::add(
                &mut d_g[gb * d..(gb + 1) * d],
                &d_cat[r * 2 * d + d..(r + 1) * 2 * d],
            );
        }
        lookup_backward(self.backbone.item_table_mut(), &b.items, &d_emb);
        match (self.inter.as_mut(), self.user_gru.as_mut()) {
            (Some(inter), _) => inter.backward(c.inter.as_ref().expect("inter cache"), &d_rt, &d_g),
            (None, Some(gru)) => {
                gru.backward(c.user.as_ref().expect("user cache"), &d_g);
            }
            (None, None) => {}
        }
    }

    /// One training step: the loss of `b` and, added into the parameter gradients, its
    /// gradient. Dropout is active when `rng` is given.
    pub fn train_step(&mut self, b: &HdtBatch, rng: Option<&mut Rng>) -> StepOutput {
        let (out, cache) = self.forward_step(b, rng);
        self.backward_step(b, cache);
        out
    }

    /// The loss of `b` without dropout and without gradients.
    pub fn loss(&self, b: &HdtBatch) -> StepOutput {
        self.forward_step(b, None).0
    }

    /// The number of trainable values.
    pub fn n_params(&self) -> usize {
        self.params().iter().map(|p| p.len()).sum()
    }
}
