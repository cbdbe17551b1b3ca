//! Hierarchical session models (`spec/thesis-models.md` §5): **HDT** (Hierarchical Decision
//! Transformer) and its ablations **InterDT** and **Hier**, on a GRU4Rec or SASRec backbone.
//!
//! A user's history is a list of sessions `C_1..C_h`. Per session `c`:
//!
//! - **Goal.** HDT and InterDT run *InterDT*, one self-attention sublayer (RecBole's
//!   `MultiHeadAttention`: projections, attention, residual, post-LN) over the two tokens
//!   `(R_c·E_R, s_c)`, unmasked by default: the output at the return token is the goal return
//!   `R̃_c`, at the state token the goal state `g_c`. Hier instead runs a user-level GRU,
//!   `g_c = GRU(g_{c−1}, s_c)` (with biases, `g_0 = 0`).
//! - **Inter-session state.** `s_1 = 0`; `s_{c+1}` is the backbone state at the last real
//!   position of session `c` (detached in training).
//! - **Inter-session return.** `R_c = dis_max − dis(C_1 ∪ … ∪ C_c)` in training (all pairs of
//!   all items of the sessions so far, `dis_max = 2`); when predicting inside a session, the
//!   current session is unknown and `R_c = dis_max − dis(C_1 ∪ … ∪ C_{c−1})`.
//! - **Backbone.** `x̃_t = W_g[emb(x_t) || g_c] + b_g` (`input_proj`) is fed to the backbone
//!   `G` (GRU4Rec or SASRec over input vectors), giving per-position states `s_{c,t}`;
//!   `Ŷ_t = W_s s_{c,t} + b_s` (`seq_head`). `W_g` starts as `[I | small]`, so that the
//!   backbone first reads the items as the plain model does.
//! - **IntraDT** (HDT only): a causal transformer (embedding LayerNorm, then RecBole
//!   attention + feed-forward layers) over four tokens per step,
//!   `(R̃_c, R^n_t·E_n, s_{c,t}, emb(a_t))`, each plus a per-step position embedding `P_t`.
//!   `R̂_t = W_r h + b_r` is read at the goal-return token (predicting the intra-session
//!   unexpected return), `Â_t = W_a h + b_a` at the state token.
//! - **Losses.** `L = L_S + α·L_R + β·L_a + λ·L_g` (HDT); InterDT `L_S + λ·L_g`; Hier `L_S`.
//!   `L_g = CE(W_u g_c + b_u, x_{c,1})` (`goal_head`). Step losses are averaged over a
//!   session's steps, then over the sessions of the batch.
//! - **Scoring.** HDT `Â + alpha·Ŷ`; InterDT and Hier `Ŷ`.
//!
//! The item embedding of the backbone (`item_embedding.weight`) also embeds the actions of
//! IntraDT. Tensor names and the configuration keys are in `docs/formats.md`.

mod blocks;
mod data;
mod forward;
mod heads;
mod infer;
mod train;

#[cfg(test)]
mod tests;

pub use blocks::{InterDt, IntraDt};
pub use data::{
    LongSessions, SessionReturns, SessionWindow, StepWeights, UserSessions, prepare_sessions,
};
pub use forward::{HdtBatch, Knobs, LossParts, StepOutput};
pub use heads::Head;
pub use infer::assumed_novelty;
pub use train::{Batching, HdtTrainOptions, train_hdt};

use crate::error::{Error, Result};
use crate::models::{Gru4RecConfig, Gru4RecModel, SasRecConfig, SasRecModel};
use crate::nn::{Activation, Gru, Linear, Module, Param, Rng};
use crate::objectives::Similarity;
use seqrec_engine::Config;
use std::fmt;
use std::str::FromStr;

/// Which model of the family.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Variant {
    /// InterDT + backbone + IntraDT, all four losses.
    Hdt,
    /// InterDT + backbone, `L_S + λ·L_g`, scored with `Ŷ`.
    InterDt,
    /// User-level GRU + backbone, `L_S`, scored with `Ŷ`.
    Hier,
}

impl Variant {
    /// The architecture name (`hdt`, `interdt`, `hier`).
    pub fn name(self) -> &'static str {
        match self {
            Variant::Hdt => "hdt",
            Variant::InterDt => "interdt",
            Variant::Hier => "hier",
        }
    }

    /// Whether the variant has InterDT (and the goal head).
    pub fn has_inter(self) -> bool {
        matches!(self, Variant::Hdt | Variant::InterDt)
    }
}

impl FromStr for Variant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "hdt" => Ok(Variant::Hdt),
            "interdt" => Ok(Variant::InterDt),
            "hier" => Ok(Variant::Hier),
            _ => Err(Error::unknown_name("", s, "hdt, interdt, hier")),
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The backbone `G`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BackboneKind {
    /// GRU4Rec (embedding → GRU → dense).
    Gru4Rec,
    /// SASRec (RecBole's post-LN transformer).
    SasRec,
}

impl BackboneKind {
    /// `gru4rec` or `sasrec`.
    pub fn name(self) -> &'static str {
        match self {
            BackboneKind::Gru4Rec => "gru4rec",
            BackboneKind::SasRec => "sasrec",
        }
    }
}

impl FromStr for BackboneKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "gru4rec" | "gru" => Ok(BackboneKind::Gru4Rec),
            "sasrec" | "sas" => Ok(BackboneKind::SasRec),
            _ => Err(Error::unknown_name(
                "backbone",
                s,
                "gru4rec, sasrec (hierarchical models)",
            )),
        }
    }
}

/// Hyper-parameters. Defaults follow §5.8 and the \[R\] choices of §5 / §10.
#[derive(Clone, Debug, PartialEq)]
pub struct HdtConfig {
    /// Which model.
    pub variant: Variant,
    /// Backbone.
    pub backbone: BackboneKind,
    /// Catalog size, padding included.
    pub n_items: usize,
    /// Session window: sessions are truncated to their last `max_len` items (20).
    pub max_len: usize,
    /// Width d of items, states, returns and actions (64).
    pub dim: usize,
    /// GRU4Rec hidden width (64).
    pub gru_hidden: usize,
    /// SASRec backbone layers (1), heads (1) and feed-forward width (4d).
    pub sas_layers: usize,
    /// SASRec backbone heads.
    pub sas_heads: usize,
    /// SASRec backbone feed-forward width.
    pub sas_inner: usize,
    /// IntraDT layers (3), heads (1) and feed-forward width (4d).
    pub intra_layers: usize,
    /// IntraDT heads.
    pub intra_heads: usize,
    /// IntraDT feed-forward width.
    pub intra_inner: usize,
    /// InterDT heads (1).
    pub inter_heads: usize,
    /// InterDT attention causal over `(R_c, s_c)` instead of unmasked (§10.13).
    pub inter_causal: bool,
    /// Dropout everywhere (0.1).
    pub dropout: f32,
    /// LayerNorm epsilon (1e-12, RecBole's).
    pub ln_eps: f32,
    /// `dis_max` of the inter-session return (2.0).
    pub dis_max: f32,
    /// Width of the similarity table stored for the inter-session return (0 for Hier).
    pub sim_dim: usize,
    /// Loss weight α of `L_R` (0.5).
    pub alpha_r: f32,
    /// Loss weight β of `L_a` (0.1).
    pub beta_a: f32,
    /// Loss weight λ of `L_g` (0.2).
    pub lambda_g: f32,
    /// The catalog heads (`W_s`, `W_u`, `W_a`) are the item table with biases of their own
    /// instead of linear layers (off: the specification's heads).
    pub tied_heads: bool,
    /// Standard deviation of the goal block of `W_g` at initialisation (0.02; 0 starts it at
    /// zero, so the goal enters the backbone only as fast as its gradient lets it).
    pub goal_init: f32,
    /// γ of InterDT's output LayerNorm at initialisation (0.02, the scale of the item
    /// embeddings; 1 is PyTorch's default, under which the goal drowns the items).
    pub inter_gain: f32,
}

impl HdtConfig {
    /// Defaults for `variant` on `backbone` over `n_items` ids (loss weights of the thesis's
    /// Album setting).
    pub fn new(variant: Variant, backbone: BackboneKind, n_items: usize) -> Self {
        HdtConfig {
            variant,
            backbone,
            n_items,
            max_len: 20,
            dim: 64,
            gru_hidden: 64,
            sas_layers: 1,
            sas_heads: 1,
            sas_inner: 256,
            intra_layers: 3,
            intra_heads: 1,
            intra_inner: 256,
            inter_heads: 1,
            inter_causal: false,
            dropout: 0.1,
            ln_eps: 1e-12,
            dis_max: 2.0,
            sim_dim: 0,
            alpha_r: 0.5,
            beta_a: 0.1,
            lambda_g: 0.2,
            tied_heads: false,
            goal_init: 0.02,
            inter_gain: 0.02,
        }
    }

    /// Checks sizes before blocks are built.
    pub fn validate(&self) -> Result<()> {
        let d = self.dim;
        for (what, v) in [
            ("goal_init", self.goal_init),
            ("inter_gain", self.inter_gain),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::out_of_range(what, v, "must be a finite value ≥ 0"));
            }
        }
        if d == 0 || self.max_len < 2 || self.n_items < 2 {
            return Err(Error::Invalid(format!(
                "dim {d}, max_len {} and n_items {} must be at least 1, 2 and 2",
                self.max_len, self.n_items
            )));
        }
        for (what, heads) in [
            ("intra", self.intra_heads),
            ("inter", self.inter_heads),
            ("sasrec", self.sas_heads),
        ] {
            if heads == 0 || d % heads != 0 {
                return Err(Error::out_of_range(
                    format!("{what} heads"),
                    heads,
                    format!("do not divide dim {d}"),
                ));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::out_of_range(
                "dropout",
                self.dropout,
                "is not in [0, 1)",
            ));
        }
        if self.variant.has_inter() && self.sim_dim == 0 {
            return Err(Error::Invalid(format!(
                "{} needs a similarity table (the item table of a plain backbone trained on the \
                 same sessions)",
                self.variant
            )));
        }
        Ok(())
    }
}

/// The backbone over input vectors.
#[derive(Clone, Debug)]
pub enum Backbone {
    /// GRU4Rec.
    Gru4Rec(Gru4RecModel),
    /// SASRec.
    SasRec(SasRecModel),
}

impl Backbone {
    fn params(&self) -> Vec<&Param> {
        match self {
            Backbone::Gru4Rec(m) => m.params(),
            Backbone::SasRec(m) => m.params(),
        }
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            Backbone::Gru4Rec(m) => m.params_mut(),
            Backbone::SasRec(m) => m.params_mut(),
        }
    }

    /// The item table `item_embedding.weight`.
    pub fn item_table(&self) -> &Param {
        self.params()
            .into_iter()
            .find(|p| p.name == "item_embedding.weight")
            .expect("backbones have an item table")
    }

    fn item_table_mut(&mut self) -> &mut Param {
        self.params_mut()
            .into_iter()
            .find(|p| p.name == "item_embedding.weight")
            .expect("backbones have an item table")
    }
}

/// A hierarchical session model. See the module docs.
#[derive(Clone, Debug)]
pub struct HdtModel {
    cfg: HdtConfig,
    /// The backbone `G` (with the item table).
    pub backbone: Backbone,
    /// `W_g`, `b_g`: `input_proj`, `[d, 2d]`.
    pub input_proj: Linear,
    /// `W_s`, `b_s`: `seq_head`, `[N, d]`.
    pub seq_head: Head,
    /// `W_u`, `b_u`: `goal_head`, `[N, d]` (HDT, InterDT).
    pub goal_head: Option<Head>,
    /// InterDT (HDT, InterDT).
    pub inter: Option<InterDt>,
    /// The user-level GRU `user_gru` (Hier).
    pub user_gru: Option<Gru>,
    /// IntraDT (HDT).
    pub intra: Option<IntraDt>,
    /// Normalised similarity table stored for inference (`hdt.similarity`, `[N, sim_dim]`;
    /// data, not a parameter).
    pub similarity: Option<Param>,
    /// Long-tail flags (`hdt.long_tail`, `[N]`, 1 for long-tail items; HDT).
    pub long_tail: Option<Param>,
}

impl HdtModel {
    /// A freshly initialised model; `similarity` (HDT, InterDT) and `long_tail` (HDT) are the
    /// data the model stores for inference.
    pub fn new(
        mut cfg: HdtConfig,
        similarity: Option<&Similarity>,
        long_tail: Option<&[bool]>,
        rng: &mut Rng,
    ) -> Result<Self> {
        cfg.sim_dim = similarity.map_or(0, Similarity::dim);
        cfg.validate()?;
        let (d, n) = (cfg.dim, cfg.n_items);
        if let Some(s) = similarity
            && s.n_items() != n
        {
            return Err(Error::ItemCount {
                what: "the similarity table",
                found: s.n_items(),
                expected: n,
            });
        }
        if let Some(lt) = long_tail
            && lt.len() != n
        {
            return Err(Error::ItemCount {
                what: "the long-tail flag list",
                found: lt.len(),
                expected: n,
            });
        }
        let backbone = match cfg.backbone {
            BackboneKind::Gru4Rec => {
                let mut c = Gru4RecConfig::new(n, cfg.max_len);
                (c.emb, c.hidden, c.n_layers, c.dropout) = (d, cfg.gru_hidden, 1, cfg.dropout);
                Backbone::Gru4Rec(Gru4RecModel::new(c, rng))
            }
            BackboneKind::SasRec => {
                let mut c = SasRecConfig::new(n, cfg.max_len);
                (c.hidden, c.n_layers, c.n_heads, c.inner) =
                    (d, cfg.sas_layers, cfg.sas_heads, cfg.sas_inner);
                (c.hidden_dropout, c.attn_dropout, c.ln_eps) =
                    (cfg.dropout, cfg.dropout, cfg.ln_eps);
                Backbone::SasRec(SasRecModel::new(c, rng))
            }
        };
        // x̃ = W_g[e || g] + b_g starts as the item embedding itself plus a small share of the
        // goal (W_g = [I | N(0, 0.02²)], b_g = 0): the backbone starts as the plain model
        // reading the session, and learns how much of the goal to mix in. (A generic
        // initialisation lets the goal, whose entries are of order 1 after InterDT's
        // LayerNorm or the user GRU, drown the item embeddings, of order 0.02.)
        let mut input_proj = Linear::new("input_proj", 2 * d, d, true, 0.02, rng);
        for r in 0..d {
            let row = &mut input_proj.weight.value[r * 2 * d..(r + 1) * 2 * d];
            row[..d].fill(0.0);
            row[r] = 1.0;
            for w in &mut row[d..] {
                *w *= cfg.goal_init / 0.02;
            }
        }
        let tied = cfg.tied_heads;
        let head = |name: &str, rng: &mut Rng| Head::new(name, d, n, tied, rng);
        let seq_head = head("seq_head", rng);
        let has_inter = cfg.variant.has_inter();
        let goal_head = has_inter.then(|| head("goal_head", rng));
        let inter = has_inter.then(|| InterDt::new(&cfg, rng));
        let user_gru =
            (cfg.variant == Variant::Hier).then(|| Gru::new("user_gru", 0, d, d, true, rng));
        let intra = (cfg.variant == Variant::Hdt).then(|| IntraDt::new(&cfg, rng));
        let similarity = match (has_inter, similarity) {
            (true, Some(s)) => {
                let rows: Vec<f32> = (0..n as u32)
                    .flat_map(|i| s.row(i).iter().map(|&v| v as f32))
                    .collect();
                Some(Param::from_values("hdt.similarity", &[n, s.dim()], rows))
            }
            _ => None,
        };
        let long_tail = match cfg.variant {
            Variant::Hdt => {
                let lt = long_tail.ok_or_else(|| {
                    Error::Invalid("hdt needs the long-tail flags of the training data".into())
                })?;
                let v = lt.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
                Some(Param::from_values("hdt.long_tail", &[n], v))
            }
            _ => None,
        };
        Ok(HdtModel {
            cfg,
            backbone,
            input_proj,
            seq_head,
            goal_head,
            inter,
            user_gru,
            intra,
            similarity,
            long_tail,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &HdtConfig {
        &self.cfg
    }

    /// The configuration the engine reads (`seqrec.config`); see `docs/formats.md`.
    pub fn engine_config(&self) -> Config {
        let c = &self.cfg;
        let mut cfg = Config::from_map(Default::default())
            .with("model", c.variant.name())
            .with("backbone", c.backbone.name())
            .with("n_items", c.n_items)
            .with("MAX_ITEM_LIST_LENGTH", c.max_len)
            .with("dropout_prob", c.dropout as f64)
            .with("layer_norm_eps", c.ln_eps as f64)
            .with("alpha_r", c.alpha_r as f64)
            .with("beta_a", c.beta_a as f64)
            .with("lambda_g", c.lambda_g as f64)
            .with("heads", if c.tied_heads { "tied" } else { "linear" });
        cfg = match c.backbone {
            BackboneKind::Gru4Rec => cfg
                .with("embedding_size", c.dim)
                .with("hidden_size", c.gru_hidden)
                .with("num_layers", 1),
            BackboneKind::SasRec => cfg
                .with("hidden_size", c.dim)
                .with("n_layers", c.sas_layers)
                .with("n_heads", c.sas_heads)
                .with("inner_size", c.sas_inner)
                .with("hidden_act", Activation::Gelu.name()),
        };
        if c.variant.has_inter() {
            cfg = cfg
                .with("inter_heads", c.inter_heads)
                .with("inter_mask", if c.inter_causal { "causal" } else { "none" })
                .with("dis_max", c.dis_max as f64)
                .with("similarity_dim", c.sim_dim);
        }
        if c.variant == Variant::Hdt {
            cfg = cfg
                .with("intra_layers", c.intra_layers)
                .with("intra_heads", c.intra_heads)
                .with("intra_inner", c.intra_inner);
        }
        cfg
    }

    /// A safetensors file image of the model, config in the metadata.
    pub fn to_safetensors(&self) -> seqrec_engine::Result<Vec<u8>> {
        let json = self.engine_config().to_json();
        let mut tensors = self.params();
        tensors.extend(self.similarity.iter());
        tensors.extend(self.long_tail.iter());
        crate::nn::param::to_safetensors(&tensors, &[(seqrec_engine::CONFIG_KEY, json.as_str())])
    }
}

/// The trainable parameters; the stored data tables (`hdt.similarity`, `hdt.long_tail`) are
/// not parameters and are written by [`HdtModel::to_safetensors`] only.
impl Module for HdtModel {
    fn params(&self) -> Vec<&Param> {
        let mut v = self.backbone.params();
        v.extend(self.input_proj.params());
        v.extend(self.seq_head.params());
        v.extend(self.goal_head.params());
        v.extend(self.inter.params());
        v.extend(self.user_gru.params());
        v.extend(self.intra.params());
        v
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = self.backbone.params_mut();
        v.extend(self.input_proj.params_mut());
        v.extend(self.seq_head.params_mut());
        v.extend(self.goal_head.params_mut());
        v.extend(self.inter.params_mut());
        v.extend(self.user_gru.params_mut());
        v.extend(self.intra.params_mut());
        v
    }
}
