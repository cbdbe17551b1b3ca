//! GRU4Rec (RecBole `GRU4Rec`): item embeddings through a stack of bias-free GRU layers, then a
//! dense projection back to the embedding width. See `spec/recbole-models.md` §2.
//!
//! Sessions carry each layer's hidden state, so that while the history fits the window a new
//! event costs one GRU step per layer.

use crate::backend::Backend;
use crate::blocks::{Embedding, GruLayer, Linear};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::weights::TensorLoader;
use alloc::format;
use alloc::vec::Vec;
use seqrec_kernels::cpu::activation::Activation;

/// RecBole's GRU4Rec.
#[derive(Debug)]
pub struct Gru4Rec<B: Backend> {
    pub(crate) item_emb: Embedding<B>,
    layers: Vec<GruLayer<B>>,
    dense: Linear<B>,
    emb: usize,
    hidden: usize,
}

/// Incremental state: each layer's hidden state.
#[derive(Debug)]
pub struct Gru4RecState<B: Backend> {
    h: Vec<B::Buf>,
    len: usize,
}

impl<B: Backend> Gru4Rec<B> {
    /// Loads the RecBole tensors. Defaults (RecBole's `GRU4Rec.yaml`): embedding_size 64,
    /// hidden_size 128, num_layers 1. RecBole builds the GRU without biases; a checkpoint with
    /// `bias_ih_l*` tensors is rejected as unexpected.
    pub fn load(be: &B, cfg: &Config, ld: &mut TensorLoader<'_>, n_items: usize) -> Result<Self> {
        let emb = cfg.usize_or("embedding_size", 64)?;
        let hidden = cfg.usize_or("hidden_size", 128)?;
        let n_layers = cfg.usize_or("num_layers", 1)?;
        if emb == 0 || hidden == 0 || n_layers == 0 {
            return Err(Error::Config(format!(
                "embedding_size ({emb}), hidden_size ({hidden}) and num_layers ({n_layers}) must be positive"
            )));
        }
        let layers = (0..n_layers)
            .map(|k| {
                GruLayer::load(
                    be,
                    ld,
                    "gru_layers",
                    k,
                    if k == 0 { emb } else { hidden },
                    hidden,
                    false,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Gru4Rec {
            item_emb: Embedding::load(be, ld, "item_embedding.weight", n_items, emb)?,
            layers,
            dense: Linear::load(be, ld, "dense", hidden, emb, true)?,
            emb,
            hidden,
        })
    }

    /// Width of the user vector (the embedding size).
    pub fn dim(&self) -> usize {
        self.emb
    }

    /// An empty incremental state (zero hidden states).
    pub fn new_state(&self, be: &B) -> Result<Gru4RecState<B>> {
        let h = (0..self.layers.len())
            .map(|_| be.alloc(self.hidden))
            .collect::<Result<Vec<_>>>()?;
        Ok(Gru4RecState { h, len: 0 })
    }

    /// Runs `ids` through every layer starting from the hidden states in `state`, then writes
    /// the projected user vector to row 0 of `out`.
    fn run(
        &self,
        be: &B,
        ids: &[u32],
        state: &mut Gru4RecState<B>,
        bufs: [&mut B::Buf; 3],
        out: &mut B::Buf,
    ) -> Result<()> {
        let [x, y, scratch] = bufs;
        let steps = ids.len();
        be.embedding(&self.item_emb, ids, None, x)?;
        let (mut cur, mut next) = (x, y);
        for (layer, h) in self.layers.iter().zip(state.h.iter_mut()) {
            be.gru(layer, cur, steps, h, scratch, next)?;
            core::mem::swap(&mut cur, &mut next);
        }
        state.len += steps;
        let top = state.h.last().expect("at least one layer");
        be.linear(&self.dense, top, 1, Activation::Identity, out)
    }

    /// Encodes `window` from scratch (hidden states reset to zero) into row 0 of `out`.
    pub fn encode(
        &self,
        be: &B,
        window: &[u32],
        state: &mut Gru4RecState<B>,
        bufs: [&mut B::Buf; 3],
        out: &mut B::Buf,
    ) -> Result<()> {
        for h in &mut state.h {
            be.zero(h, self.hidden)?;
        }
        state.len = 0;
        self.run(be, window, state, bufs, out)
    }

    /// Appends one event (one GRU step per layer) and writes the new user vector to `out`.
    pub fn push(
        &self,
        be: &B,
        item: u32,
        state: &mut Gru4RecState<B>,
        bufs: [&mut B::Buf; 3],
        out: &mut B::Buf,
    ) -> Result<()> {
        self.run(be, &[item], state, bufs, out)
    }
}

impl<B: Backend> Gru4Rec<B> {
    /// Runs `steps` input rows already in `x` (`[steps, emb]`, used in place of item
    /// embeddings) through every layer from zero states and writes every position's projected
    /// output to `out` (`[steps, emb]`). `x` is overwritten.
    pub(crate) fn encode_inputs(
        &self,
        be: &B,
        x: &mut B::Buf,
        steps: usize,
        state: &mut Gru4RecState<B>,
        bufs: [&mut B::Buf; 2],
        out: &mut B::Buf,
    ) -> Result<()> {
        let [y, scratch] = bufs;
        for h in &mut state.h {
            be.zero(h, self.hidden)?;
        }
        let (mut cur, mut next) = (x, y);
        for (layer, h) in self.layers.iter().zip(state.h.iter_mut()) {
            be.gru(layer, cur, steps, h, scratch, next)?;
            core::mem::swap(&mut cur, &mut next);
        }
        state.len = steps;
        be.linear(&self.dense, cur, steps, Activation::Identity, out)
    }
}

impl<B: Backend> Gru4RecState<B> {
    /// Events consumed since the last reset.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no event was consumed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
