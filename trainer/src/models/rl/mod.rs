//! RL-head recommenders on any backbone (`spec/thesis-models.md` §3): SQN, SNQN, SA2C (Xin et
//! al.) and SMORL (Stamenkovic et al.).
//!
//! A backbone `G` ([`TrainModel`]: SASRec, GRU4Rec, NextItNet or Caser, with RecBole's tensor
//! names and layout) gives the state `h_t` of a window; on it sit
//! - a **supervised head** `logits = W_s h_t + b_s` over the catalog (`sup_head.weight`
//!   `[n_items, d]`, `sup_head.bias` `[n_items]`, the SQN code's layer \[C\]), or with
//!   [`SupHead::Tied`] the item embedding itself, `h_t · E_iᵀ` without a bias (RecBole's
//!   scoring);
//! - **Q heads** `Q(h_t, ·) = W_q h_t + b_q`: one (`q_head.*`) for SQN/SNQN/SA2C, three
//!   (`q_acc.*`, `q_div.*`, `q_nov.*`, in that order) for SMORL.
//!
//! Serving ([`RlModel::serve_scores`]) uses the supervised logits, plus `Σ_o w_o·Q_o` for SMORL
//! (`w = 0` gives the supervised head alone). Heads are initialised as TensorFlow's
//! `fully_connected` layers of the SQN code: Glorot-uniform weights, zero biases.
//!
//! The losses and the training step (run by [`crate::learner::fit`]) are in [`loss`], [`step`]
//! and [`train`]; the replay-buffer samples in [`samples`].

pub mod env;
pub mod le;
pub mod loss;
pub mod samples;
pub mod step;
pub mod train;

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod grad_tests;

use super::TrainModel;
use crate::error::{Error, Result};
use crate::nn::score::{candidate_scores, candidate_scores_backward, full_scores};
use crate::nn::{Linear, Module, Param, Rng};
use le::LeState;
use seqrec_engine::Config;
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// Which RL method.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RlKind {
    /// Supervised head + one double-Q head, reward 1 per interaction.
    Sqn,
    /// SQN plus a TD term per sampled negative action (bootstrapping on the current state).
    Snqn,
    /// SNQN with the supervised loss weighted by the detached advantage (after a warm-up).
    Sa2c,
    /// Three Q heads (accuracy, diversity, novelty) with scalarised double Q-learning.
    Smorl,
}

impl RlKind {
    /// Every kind, in CLI order.
    pub const ALL: [RlKind; 4] = [RlKind::Sqn, RlKind::Snqn, RlKind::Sa2c, RlKind::Smorl];

    /// Lower-case name (`sqn`, `snqn`, `sa2c`, `smorl`): the checkpoint's `model` key.
    pub fn name(self) -> &'static str {
        match self {
            RlKind::Sqn => "sqn",
            RlKind::Snqn => "snqn",
            RlKind::Sa2c => "sa2c",
            RlKind::Smorl => "smorl",
        }
    }

    /// Tensor-name prefixes of the Q heads, in parameter order.
    pub fn q_heads(self) -> &'static [&'static str] {
        match self {
            RlKind::Smorl => &["q_acc", "q_div", "q_nov"],
            _ => &["q_head"],
        }
    }

    /// Whether training samples negative actions (SNQN, SA2C).
    pub fn uses_negatives(self) -> bool {
        matches!(self, RlKind::Snqn | RlKind::Sa2c)
    }
}

impl fmt::Display for RlKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RlKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.to_ascii_lowercase();
        RlKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| Error::unknown_name("", &s, "sqn, snqn, sa2c, smorl"))
    }
}

/// The supervised head.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SupHead {
    /// `Linear(d → n_items)` with bias (`sup_head.*`), as the SQN code.
    Linear,
    /// The backbone's item embedding, no bias (RecBole's scoring).
    Tied,
}

impl SupHead {
    /// `linear` or `tied`: the checkpoint's `sup_head` key.
    pub fn name(self) -> &'static str {
        match self {
            SupHead::Linear => "linear",
            SupHead::Tied => "tied",
        }
    }
}

impl FromStr for SupHead {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "linear" => Ok(SupHead::Linear),
            "tied" => Ok(SupHead::Tied),
            _ => Err(Error::unknown_name("supervised head", s, "linear, tied")),
        }
    }
}

/// Name of the backbone's item table (the tied head scores with it).
const ITEM_TABLE: &str = "item_embedding.weight";

/// A backbone with a supervised head and Q head(s). See the module docs.
#[derive(Clone, Debug)]
pub struct RlModel<M> {
    kind: RlKind,
    backbone: M,
    sup: Option<Linear>,
    q: Vec<Linear>,
    n_items: usize,
    /// What the Q heads read: `h_t`, or with a language environment `s'^e_t ‖ h_t` or `s'^e_t`
    /// (width `le_dim`).
    le_state: LeState,
    le_dim: usize,
    /// Training settings recorded in the checkpoint's config (provenance only).
    extra: Vec<(String, serde_json::Value)>,
}

fn head(prefix: &str, d: usize, n: usize, rng: &mut Rng) -> Linear {
    let mut l = Linear {
        weight: Param::zeros(format!("{prefix}.weight"), &[n, d]),
        bias: Some(Param::zeros(format!("{prefix}.bias"), &[n])),
        in_dim: d,
        out_dim: n,
    };
    l.weight.init_xavier_uniform(rng);
    l
}

impl<M: TrainModel> RlModel<M> {
    /// Heads for `kind` over `n_items` ids (padding included) on `backbone`.
    pub fn new(kind: RlKind, sup: SupHead, n_items: usize, backbone: M, rng: &mut Rng) -> Self {
        let d = backbone.dim();
        RlModel {
            kind,
            sup: (sup == SupHead::Linear).then(|| head("sup_head", d, n_items, rng)),
            q: kind
                .q_heads()
                .iter()
                .map(|p| head(p, d, n_items, rng))
                .collect(),
            backbone,
            n_items,
            le_state: LeState::Backbone,
            le_dim: 0,
            extra: Vec::new(),
        }
    }

    /// The model with Q heads over a language environment's state of width `le_dim`
    /// (`spec/thesis-models.md` §7.2): `s'^e_t ‖ h_t` ([`LeState::Concat`]) or `s'^e_t` alone
    /// ([`LeState::LeOnly`]); the heads are drawn again at their new width. The supervised
    /// head, which serves, still reads `h_t` alone.
    pub fn with_le_state(mut self, state: LeState, le_dim: usize, rng: &mut Rng) -> Self {
        let (state, le_dim) = match (state, le_dim) {
            (LeState::Backbone, _) | (_, 0) => (LeState::Backbone, 0),
            other => other,
        };
        self.le_state = state;
        self.le_dim = le_dim;
        let width = self.q_width();
        self.q = self
            .kind
            .q_heads()
            .iter()
            .map(|p| head(p, width, self.n_items, rng))
            .collect();
        self
    }

    /// What the Q heads read.
    pub fn le_state(&self) -> LeState {
        self.le_state
    }

    /// Width of the Q heads' input.
    pub fn q_width(&self) -> usize {
        let d = self.backbone.dim();
        match self.le_state {
            LeState::Backbone => d,
            LeState::Concat => self.le_dim + d,
            LeState::LeOnly => self.le_dim,
        }
    }

    /// The Q heads' input for states `h` (`[rows, d]`) and LE states `le` (`[rows, le_dim]`,
    /// ignored without an LE state).
    ///
    /// # Panics
    /// If the model reads an LE state and `le` is missing or of another size.
    pub fn q_input<'a>(&self, h: &'a [f32], le: Option<&'a [f32]>, rows: usize) -> Cow<'a, [f32]> {
        if self.le_state == LeState::Backbone {
            return Cow::Borrowed(h);
        }
        let e = self.le_dim;
        let le = le.expect("a Q head over the LE state needs the LE states");
        assert_eq!(
            le.len(),
            rows * e,
            "LE states: {} values for {rows}·{e}",
            le.len()
        );
        if self.le_state == LeState::LeOnly {
            return Cow::Borrowed(le);
        }
        let d = self.backbone.dim();
        let mut x = Vec::with_capacity(rows * (e + d));
        for r in 0..rows {
            x.extend_from_slice(&le[r * e..(r + 1) * e]);
            x.extend_from_slice(&h[r * d..(r + 1) * d]);
        }
        Cow::Owned(x)
    }

    /// The part of a Q-input gradient (`[rows, q_width]`) that reaches `h` (`[rows, d]`; zero
    /// when the Q heads read the LE state alone).
    pub fn q_input_backward(&self, d_input: &[f32], rows: usize) -> Vec<f32> {
        let d = self.backbone.dim();
        match self.le_state {
            LeState::Backbone => d_input.to_vec(),
            LeState::LeOnly => vec![0.0; rows * d],
            LeState::Concat => {
                let w = self.q_width();
                (0..rows)
                    .flat_map(|r| d_input[r * w + self.le_dim..(r + 1) * w].iter().copied())
                    .collect()
            }
        }
    }

    /// The method.
    pub fn kind(&self) -> RlKind {
        self.kind
    }

    /// The supervised head's form.
    pub fn sup_head(&self) -> SupHead {
        if self.sup.is_some() {
            SupHead::Linear
        } else {
            SupHead::Tied
        }
    }

    /// Catalog size including the padding id 0.
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// Number of Q heads.
    pub fn n_q(&self) -> usize {
        self.q.len()
    }

    /// The backbone.
    pub fn backbone(&self) -> &M {
        &self.backbone
    }

    /// The backbone, mutable (its forward caches and backward).
    pub fn backbone_mut(&mut self) -> &mut M {
        &mut self.backbone
    }

    /// Records a training setting in the checkpoint's config.
    pub fn record(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        let value = value.into();
        match self.extra.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.extra.push((key.to_string(), value)),
        }
    }

    fn item_table(&self) -> &Param {
        self.backbone
            .params()
            .into_iter()
            .find(|p| p.name == ITEM_TABLE)
            .expect("every backbone has `item_embedding.weight`")
    }

    /// Supervised logits `[rows, n_items]` for states `h` (`[rows, d]`).
    pub fn sup_logits(&self, h: &[f32], rows: usize) -> Vec<f32> {
        match &self.sup {
            Some(l) => l.infer(h, rows),
            None => full_scores(h, rows, self.item_table()),
        }
    }

    /// Adds the supervised head's parameter gradients for `d_logits` and returns `dh`.
    pub fn sup_backward(&mut self, h: &[f32], rows: usize, d_logits: &[f32]) -> Vec<f32> {
        match &mut self.sup {
            Some(l) => {
                let mut dh = vec![0.0; rows * l.in_dim];
                l.backward_with_input(h, rows, d_logits, &mut dh, false);
                dh
            }
            None => crate::nn::score::full_scores_backward(
                h,
                rows,
                self.backbone.item_table_mut(),
                d_logits,
            ),
        }
    }

    /// All Q values `[rows, n_items]` of head `o` for Q inputs `h` (`[rows, q_width]`: the
    /// states, or [`Self::q_input`] with a language environment).
    pub fn q_full(&self, o: usize, h: &[f32], rows: usize) -> Vec<f32> {
        self.q[o].infer(h, rows)
    }

    /// `Q_o(h_r, ids[r·k + c])`, `[rows, k]`, for Q inputs `h` as [`Self::q_full`].
    pub fn q_columns(&self, o: usize, h: &[f32], rows: usize, ids: &[u32], k: usize) -> Vec<f32> {
        let l = &self.q[o];
        let mut q = candidate_scores(h, rows, &l.weight, ids, k);
        let b = &l.bias.as_ref().expect("Q heads have a bias").value;
        for (v, &id) in q.iter_mut().zip(ids) {
            *v += b[id as usize];
        }
        q
    }

    /// Backward of [`Self::q_columns`]: adds the head's gradients for `d` (`[rows, k]`) and
    /// returns the gradient of the Q inputs (see [`Self::q_input_backward`]).
    pub fn q_columns_backward(
        &mut self,
        o: usize,
        h: &[f32],
        rows: usize,
        ids: &[u32],
        k: usize,
        d: &[f32],
    ) -> Vec<f32> {
        let l = &mut self.q[o];
        let dh = candidate_scores_backward(h, rows, &mut l.weight, ids, k, d);
        let b = l.bias.as_mut().expect("Q heads have a bias");
        for (&g, &id) in d.iter().zip(ids) {
            b.grad[id as usize] += g;
        }
        dh
    }

    /// Serving scores `[rows, n_items]`: supervised logits plus `Σ_o w[o]·Q_o` (SMORL; `w` has
    /// one weight per Q head and is ignored by the other kinds, which serve the supervised
    /// head alone).
    pub fn serve_scores(&self, h: &[f32], rows: usize, w: &[f32]) -> Vec<f32> {
        let mut s = self.sup_logits(h, rows);
        if self.kind == RlKind::Smorl {
            assert_eq!(w.len(), self.q.len(), "smorl: one weight per Q head");
            for (o, &wo) in w.iter().enumerate() {
                if wo != 0.0 {
                    let q = self.q_full(o, h, rows);
                    for (a, b) in s.iter_mut().zip(&q) {
                        *a += wo * b;
                    }
                }
            }
        }
        s
    }

    /// Serving scores of one history (its most recent `max_len` items) in evaluation mode.
    pub fn score_history(&self, history: &[u32], user: u32, w: &[f32]) -> Vec<f32> {
        let window = &history[history.len().saturating_sub(self.backbone.max_len())..];
        let batch = samples::window_batch(&[(window, user)], &self.backbone);
        let (h, _) = self.backbone.forward(&batch, None);
        self.serve_scores(&h, 1, w)
    }

    /// The checkpoint configuration: the backbone's keys, `model` = the method, `backbone` =
    /// the backbone's architecture, `sup_head`, and the recorded training settings.
    pub fn engine_config(&self) -> Config {
        let mut c = self
            .backbone
            .engine_config()
            .with("model", self.kind.name())
            .with("backbone", self.backbone.arch())
            .with("sup_head", self.sup_head().name());
        if self.le_state != LeState::Backbone {
            c = c
                .with("le_state", self.le_state.name())
                .with("le_state_dim", self.le_dim);
        }
        for (k, v) in &self.extra {
            c = c.with(k, v.clone());
        }
        c
    }

    /// A safetensors image: backbone tensors, then the heads, config in the metadata.
    pub fn to_safetensors(&self) -> seqrec_engine::Result<Vec<u8>> {
        let json = self.engine_config().to_json();
        crate::nn::param::to_safetensors(
            &self.params(),
            &[(seqrec_engine::CONFIG_KEY, json.as_str())],
        )
    }
}

impl<M: TrainModel> Module for RlModel<M> {
    fn params(&self) -> Vec<&Param> {
        let mut v = self.backbone.params();
        if let Some(l) = &self.sup {
            v.extend(l.params());
        }
        for l in &self.q {
            v.extend(l.params());
        }
        v
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = self.backbone.params_mut();
        if let Some(l) = &mut self.sup {
            v.extend(l.params_mut());
        }
        for l in &mut self.q {
            v.extend(l.params_mut());
        }
        v
    }
}
