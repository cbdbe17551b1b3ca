//! TransRec (thesis Ch.3): a two-tower model whose items are known by their text, so that a
//! model trained on one catalog transfers to another that shares no ids, and an item with no
//! interactions is scored through its text. IDRec, the same model with an ID item tower, is
//! its baseline.
//!
//! # Architecture
//!
//! - **Text item tower** ([`TextTower`]): `z = Linear(Avg(SelfAtt(BERT(tokens))))`, the BERT
//!   sentence encoder of [`crate::nn::text`] (frozen, top-N layers or all trained, as its
//!   [`crate::nn::text::FineTune`] says) giving token outputs, one bidirectional multi-head
//!   self-attention sublayer over them with the padding mask (the post-LN residual block of
//!   [`crate::nn::attention`]), masked mean pooling over the real tokens, and
//!   `Linear(text_dim → d)`. The encoder's own pooling and normalisation are not used.
//! - **ID item tower** ([`tower::IdTower`], IDRec): a table `[n_items, d]`.
//! - **User encoder**: the item vectors of a history plus learned position embeddings, then
//!   the SASRec transformer stack ([`crate::models::sasrec::TransformerStack`]: LayerNorm,
//!   dropout, `n_layers` post-LN layers of `n_heads`), causal by default (left to right, as
//!   stage 1 predicts); the user vector `U` is the hidden state at the last real position.
//!   Defaults are CPU-sized (d = 64, 2 layers, 2 heads); the thesis uses d = 256, 4 layers,
//!   4 heads ([`TransRecConfig::thesis`]).
//! - Image item towers are out of scope: seqrec's data sets carry no images.
//!
//! # Losses
//!
//! - **Stage 1, UEP** ([`TransRecModel::uep_forward`]): next-item softmax over the source
//!   catalog at every position, `softmax(S'_t W^Uᵀ + b^U)`, mean cross-entropy over the
//!   outputs. The item towers are frozen: their vectors are computed once
//!   ([`TransRecModel::item_table`]) and only the user encoder and `W^U, b^U` train
//!   ([`Stage::Uep`]). `W^U` is dropped afterwards ([`TransRecModel::drop_uep`]) and never
//!   transferred.
//! - **Stage 2, CPC** ([`TransRecModel::cpc_forward`]): a training window splits into a
//!   context (up to `context` = 25 items) and its last `future` = 5 items ([`CpcExample`]);
//!   one user vector from the context scores the future items and `negatives` = 4 items per
//!   sequence drawn uniformly from those the user never interacted with:
//!   `ℓ = −Σ_pos log σ(r) − Σ_neg log(1 − σ(r))`, averaged over the sequences of a batch (the
//!   thesis sums; the mean only rescales the learning rate). Every trained parameter gets its
//!   gradient, the item tower's through both the scored items and the context.
//!
//! # Backward and memory
//!
//! Every piece has a hand-derived backward (the blocks' own, plus the gathers, the scores and
//! the losses here), checked against central differences for the whole model under both
//! losses (`tests`). A CPC step encodes each distinct item of its batch once. With a frozen
//! or top-N encoder the frozen part's output is **cached per item**
//! ([`TextTower::cache_frozen`]): `tokens·H` floats per item (MiniLM: 1.5 KiB per token),
//! computed once for a run; only the trained layers, the tower's attention and projection run
//! each step.
//!
//! # Checkpoints
//!
//! [`checkpoint`]: a safetensors file with the config (`seqrec.config`, `model` =
//! `transrec`), the user encoder, the tower's own layers, the softmax layer while it exists,
//! and the text encoder's trained tensors under `item.text.bert.` with the delta metadata of
//! [`crate::nn::text::encoder`] (base folder and fingerprint), so the 90 MB base encoder is
//! never copied. [`TransRecModel::init_from`] starts a target model from a source checkpoint
//! (`--init`), dropping the softmax layer.

pub mod checkpoint;
pub mod model;
pub mod tower;

#[cfg(test)]
mod tests;

pub use model::{CpcCache, CpcExample, Items, TransRecModel, UepCache};
pub use tower::{ItemTower, TextTower};

use super::sasrec::SasRecConfig;
use crate::error::{Error, Result};
use crate::nn::Activation;

/// What a training stage trains (see the module docs).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Stage 1: next-item softmax, item towers frozen.
    Uep,
    /// Stage 2: contrastive (CPC) loss, everything trained.
    Cpc,
}

/// Hyper-parameters (saved in a checkpoint's `seqrec.config`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TransRecConfig {
    /// Catalog size, padding id 0 included.
    pub n_items: usize,
    /// Model width d.
    pub dim: usize,
    /// User-encoder layers.
    pub n_layers: usize,
    /// User-encoder heads.
    pub n_heads: usize,
    /// Feed-forward width of the user encoder.
    pub inner: usize,
    /// Most history positions (stage 1 windows; the position table's rows).
    pub max_len: usize,
    /// Dropout in the user encoder and the tower's attention layer.
    pub dropout: f32,
    /// LayerNorm epsilon of the user encoder.
    pub ln_eps: f32,
    /// Whether the user encoder is causal (left to right).
    pub causal: bool,
    /// Most context items of a CPC example (`n ≤ 25`).
    pub context: usize,
    /// Future items of a CPC example (`l = 5`).
    pub future: usize,
    /// Negatives per CPC example.
    pub negatives: usize,
    /// Heads of the text tower's self-attention layer.
    pub text_heads: usize,
    /// Whether the model has the stage-1 softmax layer.
    pub uep: bool,
    /// Items held out of training as new ones (`--hold-out-items`): no training window held
    /// them and no negative was drawn from them. The served file lists them, so that
    /// `seqrec eval --cold-start` counts their test events as cold-start ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_out_items: Vec<u32>,
}

impl TransRecConfig {
    /// The CPU-sized defaults over `n_items` ids: d = 64, 2 layers, 2 heads, inner 4·d,
    /// windows of 32, dropout 0.1, causal, context 25, future 5, 4 negatives, 4 text heads,
    /// with the stage-1 softmax layer.
    pub fn new(n_items: usize) -> TransRecConfig {
        TransRecConfig {
            n_items,
            dim: 64,
            n_layers: 2,
            n_heads: 2,
            inner: 256,
            max_len: 32,
            dropout: 0.1,
            ln_eps: 1e-12,
            causal: true,
            context: 25,
            future: 5,
            negatives: 4,
            text_heads: 4,
            uep: true,
            held_out_items: Vec::new(),
        }
    }

    /// The thesis's sizes: d = 256, 4 layers, 4 heads.
    pub fn thesis(n_items: usize) -> TransRecConfig {
        TransRecConfig {
            dim: 256,
            n_layers: 4,
            n_heads: 4,
            inner: 1024,
            ..TransRecConfig::new(n_items)
        }
    }

    /// Checks the sizes: an error names the setting and its value.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("n_items - 1", self.n_items.saturating_sub(1)),
            ("dim", self.dim),
            ("n_heads", self.n_heads),
            ("inner", self.inner),
            ("max_len", self.max_len),
            ("context", self.context),
            ("future", self.future),
            ("text_heads", self.text_heads),
        ];
        for (what, v) in positive {
            if v == 0 {
                return Err(Error::out_of_range(what, v, "must be positive"));
            }
        }
        if self.dim % self.n_heads != 0 {
            return Err(Error::out_of_range(
                "n_heads",
                self.n_heads,
                format!("does not divide dim {}", self.dim),
            ));
        }
        if self.context > self.max_len {
            return Err(Error::out_of_range(
                "context",
                self.context,
                format!("exceeds max_len {}", self.max_len),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::out_of_range(
                "dropout",
                self.dropout,
                "is not in [0, 1)",
            ));
        }
        Ok(())
    }

    /// The user encoder's sizes in the SASRec stack's terms.
    pub(crate) fn user_config(&self) -> SasRecConfig {
        SasRecConfig {
            n_items: 0,
            max_len: self.max_len,
            hidden: self.dim,
            n_layers: self.n_layers,
            n_heads: self.n_heads,
            inner: self.inner,
            hidden_dropout: self.dropout,
            attn_dropout: self.dropout,
            act: Activation::Gelu,
            ln_eps: self.ln_eps,
        }
    }
}
