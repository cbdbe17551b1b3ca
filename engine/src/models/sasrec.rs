//! SASRec (RecBole `SASRec`): item + learned position embeddings, LayerNorm, then post-LN
//! transformer layers with causal self-attention; the user vector is the last real position's
//! output. See `spec/recbole-models.md` §1.
//!
//! Only the `n` real positions are encoded (the output at `n − 1` does not depend on the
//! right padding), and the last layer computes attention and the feed-forward sublayer for the
//! last position only. Sessions keep every layer's keys and values, so that while the history
//! fits the window a new event costs one position through each layer.

use crate::backend::{Backend, KvCache};
use crate::blocks::{AttentionBlock, Embedding, FeedForward, LayerNorm};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::weights::TensorLoader;
use alloc::format;
use alloc::vec::Vec;
use seqrec_kernels::cpu::activation::Activation;

/// RecBole's SASRec.
#[derive(Debug)]
pub struct SasRec<B: Backend> {
    pub(crate) item_emb: Embedding<B>,
    pos_emb: Embedding<B>,
    ln: LayerNorm<B>,
    layers: Vec<(AttentionBlock<B>, FeedForward<B>)>,
    hidden: usize,
    max_len: usize,
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
    pub fn load(
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
        let act_name = cfg.str_or("hidden_act", "gelu")?;
        let act = Activation::from_name(&act_name).ok_or_else(|| {
            Error::Config(format!(
                "hidden_act `{act_name}` is not one of gelu, relu, swish, tanh, sigmoid"
            ))
        })?;
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
        })
    }

    /// Width of the user vector.
    pub fn dim(&self) -> usize {
        self.hidden
    }

    /// An empty incremental state.
    pub fn new_state(&self, be: &B) -> Result<SasRecState<B>> {
        let caches = (0..self.layers.len())
            .map(|_| KvCache::new(be, self.max_len, self.hidden))
            .collect::<Result<Vec<_>>>()?;
        Ok(SasRecState { caches, len: 0 })
    }

    /// Encodes `window` (validated, at most `max_len` ids) from scratch into row 0 of `out`,
    /// refilling `state`.
    pub fn encode(
        &self,
        be: &B,
        window: &[u32],
        state: &mut SasRecState<B>,
        bufs: [&mut B::Buf; 3],
        out: &mut B::Buf,
    ) -> Result<()> {
        let [x, y, scratch] = bufs;
        let rows = self.run(be, window, state, [&mut *x, y, scratch], false)?;
        be.copy_rows(x, rows - 1, out, 0, 1, self.hidden)
    }

    /// Encodes `window` from scratch, leaving the output of every position in the first
    /// buffer (`[window.len(), hidden]`), refilling `state` (the Decision Transformers read
    /// a state per step).
    pub(crate) fn encode_all(
        &self,
        be: &B,
        window: &[u32],
        state: &mut SasRecState<B>,
        bufs: [&mut B::Buf; 3],
    ) -> Result<()> {
        self.run(be, window, state, bufs, true).map(|_| ())
    }

    /// The layers over `window` into the first buffer; the last layer computes every
    /// position when `all`, else the last one only. Returns the rows computed.
    fn run(
        &self,
        be: &B,
        window: &[u32],
        state: &mut SasRecState<B>,
        bufs: [&mut B::Buf; 3],
        all: bool,
    ) -> Result<usize> {
        let [x, y, scratch] = bufs;
        let n = window.len();
        be.embedding(&self.item_emb, window, Some((&self.pos_emb, 0)), x)?;
        be.layer_norm(&self.ln, x, n)?;
        let mut rows = n;
        for (l, (att, ff)) in self.layers.iter().enumerate() {
            let q_from = if !all && l + 1 == self.layers.len() {
                n - 1
            } else {
                0
            };
            be.attention(att, x, n, 0, q_from, &mut state.caches[l], scratch, y)?;
            rows = n - q_from;
            be.feed_forward(ff, y, rows, scratch, x)?;
        }
        state.len = n;
        Ok(rows)
    }

    /// Encodes a batch of validated windows into rows `0 .. windows.len()` of `out`: their
    /// positions stacked into one `[Σ len, H]` activation, so that every projection and
    /// feed-forward sublayer is one large product (the last layer only for each window's last
    /// position). `ids` and `lens` are scratch.
    pub fn encode_batch(
        &self,
        be: &B,
        windows: &[&[u32]],
        ids: &mut Vec<u32>,
        lens: &mut Vec<usize>,
        bufs: [&mut B::Buf; 3],
        out: &mut B::Buf,
    ) -> Result<()> {
        let [x, y, scratch] = bufs;
        ids.clear();
        lens.clear();
        for w in windows {
            ids.extend_from_slice(w);
            lens.push(w.len());
        }
        let (total, b) = (ids.len(), windows.len());
        be.embedding_seqs(&self.item_emb, ids, lens, Some(&self.pos_emb), x)?;
        be.layer_norm(&self.ln, x, total)?;
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
            be.attention_seqs(att, x, lens, last, scratch, y)?;
            be.feed_forward(ff, y, if last { b } else { total }, scratch, x)?;
        }
        be.copy_rows(x, 0, out, 0, b, self.hidden)
    }

    /// Appends one event at position `state.len` (which must be below `max_len`) and writes
    /// the new user vector to row 0 of `out`.
    pub fn push(
        &self,
        be: &B,
        item: u32,
        state: &mut SasRecState<B>,
        bufs: [&mut B::Buf; 3],
        out: &mut B::Buf,
    ) -> Result<()> {
        let [x, y, scratch] = bufs;
        let pos = state.len;
        debug_assert!(pos < self.max_len);
        be.embedding(&self.item_emb, &[item], Some((&self.pos_emb, pos)), x)?;
        be.layer_norm(&self.ln, x, 1)?;
        for (l, (att, ff)) in self.layers.iter().enumerate() {
            be.attention(att, x, 1, pos, 0, &mut state.caches[l], scratch, y)?;
            be.feed_forward(ff, y, 1, scratch, x)?;
        }
        state.len = pos + 1;
        be.copy_rows(x, 0, out, 0, 1, self.hidden)
    }
}

impl<B: Backend> SasRec<B> {
    /// Encodes `n` input rows already in `x` (`[n, H]`, used in place of item embeddings;
    /// position embeddings are added here) through every layer, leaving every position's
    /// output in `x`. `ids` and `host` are scratch.
    pub(crate) fn encode_inputs(
        &self,
        be: &B,
        x: &mut B::Buf,
        n: usize,
        state: &mut SasRecState<B>,
        bufs: [&mut B::Buf; 2],
        ids: &mut Vec<u32>,
        host: [&mut Vec<f32>; 2],
    ) -> Result<()> {
        let [y, scratch] = bufs;
        let [hx, hp] = host;
        let h = self.hidden;
        ids.clear();
        ids.extend(0..n as u32);
        be.embedding(&self.pos_emb, ids, None, y)?;
        hx.resize(n * h, 0.0);
        hp.resize(n * h, 0.0);
        be.read(x, 0, hx)?;
        be.read(y, 0, hp)?;
        for (a, b) in hx.iter_mut().zip(hp.iter()) {
            *a += b;
        }
        be.write(hx, x, 0)?;
        be.layer_norm(&self.ln, x, n)?;
        for (l, (att, ff)) in self.layers.iter().enumerate() {
            be.attention(att, x, n, 0, 0, &mut state.caches[l], scratch, y)?;
            be.feed_forward(ff, y, n, scratch, x)?;
        }
        state.len = n;
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
