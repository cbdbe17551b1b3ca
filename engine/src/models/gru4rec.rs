//! GRU4Rec (RecBole `GRU4Rec`): item embeddings through a stack of bias-free GRU layers, then a
//! dense projection back to the embedding width. See `spec/recbole-models.md` §2.
//!
//! Sessions carry each layer's hidden state, so that while the history fits the window a new
//! event costs one GRU step per layer.

use super::{Architecture, LoadContext, Request, Scratch, restore_buf, save_buf};
use crate::backend::{Backend, BlockScratch};
use crate::blocks::{Activation, Embedding, GruLayer, Linear};
use crate::codec::{Reader, Writer};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::objectives::Objectives;
use crate::weights::TensorLoader;
use alloc::format;
use alloc::vec::Vec;

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
    pub fn load_from(
        be: &B,
        cfg: &Config,
        ld: &mut TensorLoader<'_>,
        n_items: usize,
    ) -> Result<Self> {
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

    /// An empty incremental state (zero hidden states).
    pub fn empty_state(&self, be: &B) -> Result<Gru4RecState<B>> {
        let h = (0..self.layers.len())
            .map(|_| {
                let mut h = B::Buf::default();
                be.zero(&mut h, self.hidden).map(|_| h)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Gru4RecState { h, len: 0 })
    }

    /// Runs `steps` input rows of `x` through every layer from the hidden states in `state`
    /// (`x` is overwritten); the top layer's outputs are left in `x` or `y` (returned `true`
    /// for `y`).
    fn layers_over(
        &self,
        be: &B,
        x: &mut B::Buf,
        steps: usize,
        state: &mut Gru4RecState<B>,
        y: &mut B::Buf,
        scratch: &mut B::Buf,
    ) -> Result<bool> {
        let (mut cur, mut next) = (x, y);
        let mut in_y = false;
        for (layer, h) in self.layers.iter().zip(state.h.iter_mut()) {
            be.gru(layer, cur, steps, h, scratch, next)?;
            core::mem::swap(&mut cur, &mut next);
            in_y = !in_y;
        }
        state.len += steps;
        Ok(in_y)
    }

    /// Runs `ids` through every layer from the hidden states in `state`, then writes the
    /// projected user vector to row 0 of `out`.
    fn run(
        &self,
        be: &B,
        ids: &[u32],
        state: &mut Gru4RecState<B>,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<()> {
        let Scratch { x, y, tmp, .. } = s;
        be.embedding(&self.item_emb, ids, None, x)?;
        self.layers_over(be, x, ids.len(), state, y, &mut tmp.work)?;
        let top = state.h.last().expect("at least one layer");
        be.linear(&self.dense, top, 1, Activation::Identity, out)
    }

    fn reset(&self, be: &B, state: &mut Gru4RecState<B>) -> Result<()> {
        for h in &mut state.h {
            be.zero(h, self.hidden)?;
        }
        state.len = 0;
        Ok(())
    }

    /// Runs `steps` input rows already in `x` (`[steps, emb]`, used in place of item
    /// embeddings) through every layer from zero states and writes every position's projected
    /// output to `out` (`[steps, emb]`). `x` is overwritten.
    pub(crate) fn encode_inputs(
        &self,
        be: &B,
        x: &mut B::Buf,
        steps: usize,
        state: &mut Gru4RecState<B>,
        y: &mut B::Buf,
        tmp: &mut BlockScratch<B>,
        out: &mut B::Buf,
    ) -> Result<()> {
        self.reset(be, state)?;
        let top = if self.layers_over(be, x, steps, state, y, &mut tmp.work)? {
            &*y
        } else {
            &*x
        };
        be.linear(&self.dense, top, steps, Activation::Identity, out)
    }
}

impl<B: Backend> Architecture<B> for Gru4Rec<B> {
    type State = Gru4RecState<B>;
    const NAMES: &'static [&'static str] = &["gru4rec"];

    fn load(be: &B, _name: &'static str, cx: &mut LoadContext<'_, '_>) -> Result<Self> {
        Self::load_from(be, cx.cfg, cx.ld, cx.n_items)
    }

    fn name(&self) -> &'static str {
        "gru4rec"
    }

    /// The embedding size.
    fn dim(&self) -> usize {
        self.emb
    }

    fn item_embedding(&self) -> &Embedding<B> {
        &self.item_emb
    }

    fn new_state(&self, be: &B) -> Result<Gru4RecState<B>> {
        self.empty_state(be)
    }

    /// Encodes the window from scratch (hidden states reset to zero).
    fn encode(
        &self,
        be: &B,
        req: &Request<'_>,
        state: &mut Gru4RecState<B>,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<()> {
        self.reset(be, state)?;
        self.run(be, req.window, state, s, out)
    }

    /// One GRU step per layer.
    fn push(
        &self,
        be: &B,
        item: u32,
        _objectives: &Objectives,
        state: &mut Gru4RecState<B>,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<bool> {
        self.run(be, &[item], state, s, out).map(|_| true)
    }

    /// Every layer's hidden state.
    fn save_state(&self, be: &B, state: &Gru4RecState<B>, w: &mut Writer) -> Result<()> {
        for h in &state.h {
            save_buf(be, h, self.hidden, w)?;
        }
        Ok(())
    }

    fn restore_state(
        &self,
        be: &B,
        r: &mut Reader<'_>,
        window: usize,
        state: &mut Gru4RecState<B>,
    ) -> Result<()> {
        for h in &mut state.h {
            restore_buf(be, r, "GRU hidden state", self.hidden, h)?;
        }
        state.len = window;
        Ok(())
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
