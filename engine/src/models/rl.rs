//! RL-head recommenders (`spec/thesis-models.md` §3): SQN, SNQN, SA2C and SMORL on a plain
//! backbone (SASRec, GRU4Rec, NextItNet or Caser, named by the config key `backbone`).
//!
//! The backbone gives the state `h` (width `d`). Serving scores are
//! - SQN / SNQN / SA2C: the supervised head, `W_s h + b_s` (`sup_head.weight` `[n_items, d]`,
//!   `sup_head.bias` `[n_items]`), or with `sup_head = "tied"` the item embedding `E h`;
//! - SMORL: the supervised logits plus `Σ_o w_o·(W_o h + b_o)` over the Q heads `q_acc`,
//!   `q_div`, `q_nov`, with the knobs `w_acc`, `w_div`, `w_nov` (default 0 each: the supervised
//!   head alone serves, as in SQN's and SMORL's code, `spec/thesis-models.md` §3; 1 each adds
//!   the Q heads with the weights SMORL trains with).
//!
//! As every architecture, it scores with one fused catalog scan: the scoring table is the
//! heads' weights side by side, then their biases as extra columns,
//! `[W_s | W_acc | W_div | W_nov | b_s | b_acc | b_div | b_nov]` (`E` and no `b_s` when tied;
//! only `[W_s | b_s]` for the single-head methods), and the scoring vector
//! `[h, w_acc·h, w_div·h, w_nov·h, 1, w_acc, w_div, w_nov]` (matching columns). The Q head of
//! SQN/SNQN/SA2C (`q_head.*`) does not score, as in the papers: with a linear supervised head
//! it is the critic of online adaptation ([`crate::Model::session_feedback`]), whose adaptive
//! actor starts from `beta_head.weight` `[n_items, d]` / `beta_head.bias` `[n_items]` when the
//! checkpoint has them (optional tensors, read only for those three methods with a linear
//! head).
//!
//! SNQN / SA2C trained with a language environment (`spec/thesis-models.md` §7) have a Q head
//! over the LE state: the config keys `le_state` (`concat`: `s'^e ‖ h`, or `le_only`: `s'^e`)
//! and `le_state_dim` (`d_e`) give its width, `[n_items, d_e + d]` or `[n_items, d_e]`. It is
//! checked but not used: serving needs no LE (the supervised head serves), and such a model
//! has no critic for online adaptation (the engine has no LE state to give it).

use super::{ActorCritic, ArchState, Architecture, DynArch, LoadContext, Request, Scratch};
use crate::backend::{At, Backend, Scale, Src};
use crate::blocks::Embedding;
use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::objectives::{ObjectiveSpec, Objectives};
use crate::weights::{Tensor, WeightFile};
use alloc::boxed::Box;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

/// The RL methods this module serves (the config's `model`).
pub const RL_MODELS: &[&str] = &["sqn", "snqn", "sa2c", "smorl"];

/// Backbones an RL method may sit on (the config's `backbone`).
pub const RL_BACKBONES: &[&str] = &["sasrec", "gru4rec", "nextitnet", "caser"];

/// SMORL's knobs: the weight of each Q head added to the supervised logits.
pub const SMORL_OBJECTIVES: &[ObjectiveSpec] = &[
    ObjectiveSpec {
        name: "w_acc",
        default: 0.0,
        min: 0.0,
        max: 1000.0,
        doc: "weight of the accuracy Q head added to the supervised logits",
    },
    ObjectiveSpec {
        name: "w_div",
        default: 0.0,
        min: 0.0,
        max: 1000.0,
        doc: "weight of the diversity Q head added to the supervised logits",
    },
    ObjectiveSpec {
        name: "w_nov",
        default: 0.0,
        min: 0.0,
        max: 1000.0,
        doc: "weight of the novelty Q head added to the supervised logits",
    },
];

const SMORL_HEADS: &[&str] = &["q_acc", "q_div", "q_nov"];

/// A backbone with a supervised head and Q head(s). See the module docs.
#[derive(Debug)]
pub struct RlHeads<B: Backend> {
    name: &'static str,
    backbone: Box<dyn DynArch<B>>,
    tied: bool,
    smorl: bool,
    /// Whether the checkpoint has an adaptive actor (`beta_head.*`).
    beta: bool,
    /// Whether the Q head reads a language environment's state (no critic then).
    le: bool,
    d: usize,
}

/// The `[n_items, Σ d + biases]` table of the weight blocks `weights` (`[n_items, d]` each)
/// side by side, then the bias columns `biases` (`[n_items]` each).
fn side_by_side(
    file: &WeightFile,
    weights: &[&str],
    biases: &[&str],
    n_items: usize,
    d: usize,
) -> Result<Tensor> {
    let ws = weights
        .iter()
        .map(|n| file.tensor(n, &[n_items, d]))
        .collect::<Result<Vec<_>>>()?;
    let bs = biases
        .iter()
        .map(|n| file.tensor(n, &[n_items]))
        .collect::<Result<Vec<_>>>()?;
    let width = ws.len() * d + bs.len();
    let mut data = Vec::with_capacity(n_items * width);
    for i in 0..n_items {
        for w in &ws {
            data.extend_from_slice(&w.as_slice()[i * d..(i + 1) * d]);
        }
        data.extend(bs.iter().map(|b| b.as_slice()[i]));
    }
    Tensor::from_vec(vec![n_items, width], data)
}

impl<B: Backend> RlHeads<B> {
    /// Loads method `name` (one of [`RL_MODELS`]): the backbone's tensors under RecBole's
    /// names, then `sup_head.*` (unless tied) and the Q heads.
    fn load_from(be: &B, name: &'static str, cx: &mut LoadContext<'_, '_>) -> Result<Self> {
        let backbone_name = cx.cfg.str_or("backbone", "")?;
        if !RL_BACKBONES.contains(&backbone_name.as_str()) {
            return Err(Error::Config(format!(
                "model `{name}` needs a `backbone` key naming one of {} (found `{backbone_name}`)",
                RL_BACKBONES.join(", ")
            )));
        }
        let backbone = super::load(be, &backbone_name, cx)?;
        let d = backbone.dim();
        let tied = match cx.cfg.str_or("sup_head", "linear")?.as_str() {
            "linear" => false,
            "tied" => true,
            other => {
                return Err(Error::Config(format!(
                    "sup_head `{other}` is not one of linear, tied"
                )));
            }
        };
        let smorl = name == "smorl";
        let mut heads: Vec<&str> = Vec::new();
        if !tied {
            heads.push("sup_head");
        }
        heads.extend_from_slice(if smorl { SMORL_HEADS } else { &["q_head"] });
        let beta =
            !tied && !smorl && (cx.ld.has("beta_head.weight") || cx.ld.has("beta_head.bias"));
        if beta {
            heads.push("beta_head");
        }
        let n_items = cx.n_items;
        let le_dim = cx.cfg.usize_or("le_state_dim", 0)?;
        let q_width = match cx.cfg.str_or("le_state", "backbone")?.as_str() {
            _ if smorl => d,
            "backbone" => d,
            "concat" if le_dim > 0 => le_dim + d,
            "le_only" if le_dim > 0 => le_dim,
            other => {
                return Err(Error::Config(format!(
                    "le_state `{other}` with le_state_dim {le_dim}: expected backbone, or \
                     concat / le_only with a positive le_state_dim"
                )));
            }
        };
        for h in heads {
            let width = if h == "q_head" { q_width } else { d };
            cx.ld.get(&format!("{h}.weight"), &[n_items, width])?;
            cx.ld.get(&format!("{h}.bias"), &[n_items])?;
        }
        Ok(RlHeads {
            name,
            backbone,
            tied,
            smorl,
            beta,
            le: q_width != d || le_dim > 0,
            d,
        })
    }

    /// The backbone.
    pub fn backbone(&self) -> &dyn DynArch<B> {
        &*self.backbone
    }

    /// Whether the supervised head is the item embedding.
    pub fn is_tied(&self) -> bool {
        self.tied
    }

    /// Width of the scoring vector.
    fn width(&self) -> usize {
        let heads = if self.smorl { 4 } else { 1 };
        heads * self.d + heads - usize::from(self.tied)
    }

    /// Tensor names of the scoring table's weight blocks and bias columns, in order.
    fn columns(&self) -> (Vec<&'static str>, Vec<&'static str>) {
        let mut w = vec![if self.tied {
            "item_embedding.weight"
        } else {
            "sup_head.weight"
        }];
        let mut b = if self.tied {
            vec![]
        } else {
            vec!["sup_head.bias"]
        };
        if self.smorl {
            w.extend_from_slice(&["q_acc.weight", "q_div.weight", "q_nov.weight"]);
            b.extend_from_slice(&["q_acc.bias", "q_div.bias", "q_nov.bias"]);
        }
        (w, b)
    }

    /// The scoring table `[n_items, score_dim]` (see the module docs); the item embedding
    /// itself, zero-copy, for a tied single-head method.
    fn table(&self, file: &WeightFile, n_items: usize) -> Result<Tensor> {
        let (weights, biases) = self.columns();
        if weights.len() == 1 && biases.is_empty() {
            return file.tensor(weights[0], &[n_items, self.d]);
        }
        side_by_side(file, &weights, &biases, n_items, self.d)
    }

    /// Turns the state `h` in row 0 of `out` into the scoring vector under `obj`:
    /// `[h, w_acc·h, w_div·h, w_nov·h, 1, w_acc, w_div, w_nov]` (matching the table's columns).
    fn scoring_vector(
        &self,
        be: &B,
        obj: &Objectives,
        aux: &mut B::Buf,
        out: &mut B::Buf,
    ) -> Result<()> {
        let (d, width) = (self.d, self.width());
        if width == d {
            return Ok(());
        }
        let mut w = [0.0f32; 3];
        if self.smorl {
            for (wo, spec) in w.iter_mut().zip(SMORL_OBJECTIVES) {
                *wo = obj.value(spec.name);
            }
            be.copy_rows(out, 0, aux, 0, 1, d)?;
            for (o, &wo) in w.iter().enumerate() {
                let to = At::rows(1 + o, d);
                be.fill(out, to, 1, d, 0.0)?;
                be.axpy(Src::Buf(aux), At::rows(0, d), Scale::All(wo), out, to, 1, d)?;
            }
        }
        // The bias columns: 1 for b_s, then the weights of the Q heads' biases.
        let mut tail = [0.0f32; 4];
        let mut k = 0;
        if !self.tied {
            tail[0] = 1.0;
            k = 1;
        }
        if self.smorl {
            tail[k..k + 3].copy_from_slice(&w);
            k += 3;
        }
        be.write(&tail[..k], out, width - k)
    }
}

impl<B: Backend> Architecture<B> for RlHeads<B> {
    /// The backbone's state.
    type State = ArchState;
    const NAMES: &'static [&'static str] = RL_MODELS;

    fn load(be: &B, name: &'static str, cx: &mut LoadContext<'_, '_>) -> Result<Self> {
        Self::load_from(be, name, cx)
    }

    fn name(&self) -> &'static str {
        self.name
    }

    /// Width of the state `h`.
    fn dim(&self) -> usize {
        self.d
    }

    fn score_dim(&self) -> usize {
        self.width()
    }

    fn scoring_table(&self, file: &WeightFile, n_items: usize) -> Result<Tensor> {
        self.table(file, n_items)
    }

    /// SMORL's knobs; none for the single-head methods.
    fn objective_specs(&self) -> &'static [ObjectiveSpec] {
        if self.smorl { SMORL_OBJECTIVES } else { &[] }
    }

    /// SQN / SNQN / SA2C with a linear supervised head: the actor is `[W_s | b_s]` (the
    /// scoring table), the critic `[W_Q | b_Q]` (`q_head.*`).
    fn actor_critic(&self, file: &WeightFile, n_items: usize) -> Result<Option<ActorCritic>> {
        if self.tied || self.smorl || self.le {
            return Ok(None);
        }
        let d = self.d;
        let critic = side_by_side(file, &["q_head.weight"], &["q_head.bias"], n_items, d)?;
        let beta = if self.beta {
            let t = side_by_side(file, &["beta_head.weight"], &["beta_head.bias"], n_items, d)?;
            Some(t)
        } else {
            None
        };
        Ok(Some(ActorCritic { critic, beta }))
    }

    fn item_embedding(&self) -> &Embedding<B> {
        self.backbone.item_embedding()
    }

    fn n_users(&self) -> Option<usize> {
        self.backbone.n_users()
    }

    fn new_state(&self, be: &B) -> Result<ArchState> {
        self.backbone.new_state(be)
    }

    fn encode(
        &self,
        be: &B,
        req: &Request<'_>,
        state: &mut ArchState,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<()> {
        self.backbone.encode(be, req, state, s, out)?;
        self.scoring_vector(be, req.objectives, &mut s.aux, out)
    }

    fn push(
        &self,
        be: &B,
        item: u32,
        objectives: &Objectives,
        state: &mut ArchState,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<bool> {
        let pushed = self.backbone.push(be, item, objectives, state, s, out)?;
        if pushed {
            self.scoring_vector(be, objectives, &mut s.aux, out)?;
        }
        Ok(pushed)
    }

    /// The backbone's state.
    fn save_state(&self, be: &B, state: &ArchState, w: &mut Writer) -> Result<()> {
        self.backbone.save_state(be, state, w)
    }

    fn restore_state(
        &self,
        be: &B,
        r: &mut Reader<'_>,
        window: usize,
        state: &mut ArchState,
    ) -> Result<()> {
        self.backbone.restore_state(be, r, window, state)
    }
}
