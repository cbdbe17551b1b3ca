//! SASRec (RecBole `SASRec`): item + learned position embeddings, LayerNorm, then post-LN
//! transformer layers with causal self-attention; the user vector is the last real position's
//! output. See `spec/recbole-models.md` §1.
//!
//! Only the `n` real positions are encoded (the output at `n − 1` does not depend on the
//! right padding), and the last layer computes attention and the feed-forward sublayer for the
//! last position only. Sessions keep every layer's keys and values, so that while the history
//! fits the window a new event costs one position through each layer.

use super::{Architecture, LoadContext, Request, Scratch, restore_cache, save_cache};
use crate::backend::{At, Backend, BlockScratch, KvCache, Scale, SelfMask, Src};
use crate::blocks::{AttentionBlock, Embedding, FeedForward, LayerNorm, activation_from_config};
use crate::codec::{Reader, Writer};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::objectives::Objectives;
use crate::weights::TensorLoader;
use alloc::format;
use alloc::vec::Vec;

/// RecBole's SASRec.
#[derive(Debug)]
pub struct SasRec<B: Backend> {
    pub(crate) item_emb: Embedding<B>,
    pos_emb: Embedding<B>,
    ln: LayerNorm<B>,
    layers: Vec<(AttentionBlock<B>, FeedForward<B>)>,
    hidden: usize,
    max_len: usize,
    name: &'static str,
}

/// Incremental state: each layer's keys and values for the positions encoded so far.
#[derive(Debug)]
pub struct SasRecState<B: Backend> {
    caches: Vec<KvCache<B>>,
    len: usize,
}

impl<B: Backend> SasRec<B> {
    /// Loads the RecBole tensors. Defaults (RecBole's `SASRec.yaml`): hidden_size 64,
    /// n_layers 2, n_heads 2, inner_size 256, hidden_act gelu, layer_norm_eps 1e-12.
    pub fn load_from(
        be: &B,
        cfg: &Config,
        ld: &mut TensorLoader<'_>,
        n_items: usize,
        max_len: usize,
    ) -> Result<Self> {
        let hidden = cfg.usize_or("hidden_size", 64)?;
        let n_layers = cfg.usize_or("n_layers", 2)?;
        let n_heads = cfg.usize_or("n_heads", 2)?;
        let inner = cfg.usize_or("inner_size", 256)?;
        let eps = cfg.f32_or("layer_norm_eps", 1e-12)?;
        let act = activation_from_config("hidden_act", &cfg.str_or("hidden_act", "gelu")?)?;
        if hidden == 0 || inner == 0 {
            return Err(Error::Config(format!(
                "hidden_size ({hidden}) and inner_size ({inner}) must be positive"
            )));
        }
        // Not `with_capacity(n_layers)`: a corrupt config may ask for billions of layers; the
        // loop stops at the first missing tensor.
        let mut layers = Vec::new();
        for l in 0..n_layers {
            let p = format!("trm_encoder.layer.{l}");
            layers.push((
                AttentionBlock::load(
                    be,
                    ld,
                    &format!("{p}.multi_head_attention"),
                    hidden,
                    n_heads,
                    eps,
                )?,
                FeedForward::load(
                    be,
                    ld,
                    &format!("{p}.feed_forward"),
                    hidden,
                    inner,
                    act,
                    eps,
                )?,
            ));
        }
        Ok(SasRec {
            item_emb: Embedding::load(be, ld, "item_embedding.weight", n_items, hidden)?,
            pos_emb: Embedding::load(be, ld, "position_embedding.weight", max_len, hidden)?,
            ln: LayerNorm::load(be, ld, "LayerNorm", hidden, eps)?,
            layers,
            hidden,
            max_len,
            name: "sasrec",
        })
    }

    /// An empty incremental state.
    pub fn empty_state(&self, be: &B) -> Result<SasRecState<B>> {
        let caches = (0..self.layers.len())
            .map(|_| KvCache::new(be, self.max_len, self.hidden))
            .collect::<Result<Vec<_>>>()?;
        Ok(SasRecState { caches, len: 0 })
    }

    /// Encodes `window` from scratch, leaving the output of every position in `x`
    /// (`[window.len(), hidden]`) and refilling `state` (the Decision Transformers read a
    /// state per step).
    pub(crate) fn encode_all(
        &self,
        be: &B,
        window: &[u32],
        state: &mut SasRecState<B>,
        x: &mut B::Buf,
        y: &mut B::Buf,
        tmp: &mut BlockScratch<B>,
    ) -> Result<()> {
        be.embedding(&self.item_emb, window, Some((&self.pos_emb, 0)), x)?;
        self.layers_over(be, x, window.len(), state, y, tmp, true)
            .map(|_| ())
    }

    /// The embedding LayerNorm and the layers over the `n` input rows in `x`, output in `x`;
    /// the last layer computes every position when `all`, else the last one only. Returns the
    /// rows computed.
    fn layers_over(
        &self,
        be: &B,
        x: &mut B::Buf,
        n: usize,
        state: &mut SasRecState<B>,
        y: &mut B::Buf,
        tmp: &mut BlockScratch<B>,
        all: bool,
    ) -> Result<usize> {
        be.layer_norm(&self.ln, x, 0..n)?;
        let mut rows = n;
        for (l, (att, ff)) in self.layers.iter().enumerate() {
            let q_from = if !all && l + 1 == self.layers.len() {
                n - 1
            } else {
                0
            };
            let cache = &mut state.caches[l];
            be.attention(att, x, n, 0, q_from, SelfMask::Causal, cache, tmp, y)?;
            rows = n - q_from;
            be.feed_forward(ff, y, rows, tmp, x)?;
        }
        state.len = n;
        Ok(rows)
    }

    /// Encodes `n` input rows already in `x` (`[n, H]`, used in place of item embeddings;
    /// position embeddings are added here) through every layer, leaving every position's
    /// output in `x`.
    pub(crate) fn encode_inputs(
        &self,
        be: &B,
        x: &mut B::Buf,
        n: usize,
        state: &mut SasRecState<B>,
        y: &mut B::Buf,
        tmp: &mut BlockScratch<B>,
    ) -> Result<()> {
        let h = self.hidden;
        let (pos, at) = (Src::Param(&self.pos_emb.table), At::rows(0, h));
        be.axpy(pos, at, Scale::All(1.0), x, at, n, h)?;
        self.layers_over(be, x, n, state, y, tmp, true).map(|_| ())
    }
}

impl<B: Backend> Architecture<B> for SasRec<B> {
    type State = SasRecState<B>;
    /// `transrec` and `idrec` are TransRec's user encoder over an exported item table (the
    /// text tower's item vectors, or IDRec's ID table) in this same layout: a user encoder of
    /// item vectors plus learned positions, scored by `U · z` over the table.
    const NAMES: &'static [&'static str] = &["sasrec", "transrec", "idrec"];

    fn load(be: &B, name: &'static str, cx: &mut LoadContext<'_, '_>) -> Result<Self> {
        let mut m = Self::load_from(be, cx.cfg, cx.ld, cx.n_items, cx.max_len)?;
        m.name = name;
        Ok(m)
    }

    fn name(&self) -> &'static str {
        self.name
    }

    fn dim(&self) -> usize {
        self.hidden
    }

    fn item_embedding(&self) -> &Embedding<B> {
        &self.item_emb
    }

    fn new_state(&self, be: &B) -> Result<SasRecState<B>> {
        self.empty_state(be)
    }

    fn encode(
        &self,
        be: &B,
        req: &Request<'_>,
        state: &mut SasRecState<B>,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<()> {
        let Scratch { x, y, tmp, .. } = s;
        let window = req.window;
        be.embedding(&self.item_emb, window, Some((&self.pos_emb, 0)), x)?;
        let rows = self.layers_over(be, x, window.len(), state, y, tmp, false)?;
        be.copy_rows(x, rows - 1, out, 0, 1, self.hidden)
    }

    /// Encodes a batch into rows `0 .. reqs.len()` of `out`: their positions stacked into one
    /// `[Σ len, H]` activation, so that every projection and feed-forward sublayer is one large
    /// product (the last layer only for each window's last position).
    fn encode_batch(
        &self,
        be: &B,
        reqs: &[Request<'_>],
        _state: &mut SasRecState<B>,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<()> {
        let Scratch {
            x,
            y,
            tmp,
            ids,
            lens,
            ..
        } = s;
        ids.clear();
        lens.clear();
        for r in reqs {
            ids.extend_from_slice(r.window);
            lens.push(r.window.len());
        }
        let (total, b) = (ids.len(), reqs.len());
        be.embedding_seqs(&self.item_emb, ids, lens, Some(&self.pos_emb), x)?;
        be.layer_norm(&self.ln, x, 0..total)?;
        if self.layers.is_empty() {
            let mut end = 0;
            for (i, &len) in lens.iter().enumerate() {
                end += len;
                be.copy_rows(x, end - 1, out, i, 1, self.hidden)?;
            }
            return Ok(());
        }
        for (l, (att, ff)) in self.layers.iter().enumerate() {
            let last = l + 1 == self.layers.len();
            be.attention_seqs(att, x, lens, last, SelfMask::Causal, tmp, y)?;
            be.feed_forward(ff, y, if last { b } else { total }, tmp, x)?;
        }
        be.copy_rows(x, 0, out, 0, b, self.hidden)
    }

    /// Appends one event at position `state.len` (below `max_len`) and writes the new user
    /// vector to row 0 of `out`.
    fn push(
        &self,
        be: &B,
        item: u32,
        _objectives: &Objectives,
        state: &mut SasRecState<B>,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<bool> {
        let Scratch { x, y, tmp, .. } = s;
        let pos = state.len;
        debug_assert!(pos < self.max_len);
        be.embedding(&self.item_emb, &[item], Some((&self.pos_emb, pos)), x)?;
        be.layer_norm(&self.ln, x, 0..1)?;
        for (l, (att, ff)) in self.layers.iter().enumerate() {
            let cache = &mut state.caches[l];
            be.attention(att, x, 1, pos, 0, SelfMask::Causal, cache, tmp, y)?;
            be.feed_forward(ff, y, 1, tmp, x)?;
        }
        state.len = pos + 1;
        be.copy_rows(x, 0, out, 0, 1, self.hidden)?;
        Ok(true)
    }

    /// Every layer's cached keys and values for the window's positions.
    fn save_state(&self, be: &B, state: &SasRecState<B>, w: &mut Writer) -> Result<()> {
        for c in &state.caches {
            save_cache(be, c, self.hidden, w)?;
        }
        Ok(())
    }

    fn restore_state(
        &self,
        be: &B,
        r: &mut Reader<'_>,
        window: usize,
        state: &mut SasRecState<B>,
    ) -> Result<()> {
        for c in &mut state.caches {
            restore_cache(be, r, c, self.hidden, window)?;
        }
        state.len = window;
        Ok(())
    }
}

impl<B: Backend> SasRecState<B> {
    /// Positions encoded.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is encoded.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
