//! A trainable BERT text encoder (all-MiniLM-L6-v2 and other sentence-transformers BERTs):
//! the engine's inference encoder ([`seqrec_engine::text`]) with a forward that keeps what its
//! backward needs and hand-derived gradients, so that a text item tower can be fine-tuned.
//!
//! # Forward
//!
//! A batch ([`TextBatch`]) is `batch` token sequences right-padded to the longest, `len`, with
//! the attention mask `valid` (`[batch·len]`, false at padding). Then, as the engine computes
//! it (the engine packs sequences instead of padding them; every real token sees exactly the
//! same keys, so the real rows agree):
//!
//! - [`BertEmbeddings`]: `E = LN(word[id] + position[i] + token_type[0])` (token type 0
//!   everywhere, as the engine encodes single texts), then dropout;
//! - `num_hidden_layers` × [`BertLayer`]: bidirectional multi-head self-attention in which the
//!   padding keys get weight 0, residual and post-LN (`attention.output.LayerNorm`), then the
//!   exact (erf) GELU feed-forward, residual and post-LN (`output.LayerNorm`); these are the
//!   trainer's [`SelfAttention`] (non-causal, with the key mask) and [`FeedForward`] under
//!   Hugging Face's tensor names;
//! - [`pool`]: sentence pooling over each sequence's real rows (masked mean for MiniLM; CLS,
//!   max and mean·√len as the engine's [`Pooling`]), then the L2 normalisation when the
//!   folder's `modules.json` ends with `Normalize` (MiniLM's does).
//!
//! Padding rows are computed but never reach a real row (they are hidden keys, and pooling
//! skips them), so their gradient is zero throughout.
//!
//! # Fine-tuning
//!
//! [`FineTune`] chooses what trains: nothing ([`FineTune::Frozen`]), the top `n` transformer
//! layers ([`FineTune::Top`]), every layer and the embeddings ([`FineTune::All`]), or LoRA
//! adapters on the attention's projections with every base tensor frozen
//! ([`FineTune::Lora`], see [`lora`]: rank 8, alpha 16 on query and value of every layer by
//! default). LoRA is a mode of its own rather than an addition to `Top(n)`: one setting says
//! what a delta holds and what the frozen-part cache may skip. The frozen part below the
//! lowest trained (or adapted) layer runs in evaluation mode (no dropout) without keeping any
//! activation, and the backward stops at that layer: no gradient is computed below it. Above
//! it, a LoRA backward runs through the frozen layers for their input gradients only. Frozen
//! parameters hold no gradient buffer (`Param::grad` is empty) and receive no gradient, and
//! [`Module::params`] lists the trained parameters only, so optimizers, gradient norms and the
//! saved delta ([`encoder`]) see exactly those.
//!
//! # Memory
//!
//! Activations are **cached**, not recomputed: each trained layer keeps, per token row
//! (padding rows included), its input, `Q`, `K`, `V`, the attention context and the residual
//! sum before the first LN (6·H floats), the attention probabilities (`heads·len` floats), the
//! feed-forward input and pre-LN sum (2·H) and the intermediate activation before and after
//! GELU (2·I): **8·H + 2·I + heads·len floats per token per trained layer**, plus, with
//! dropout in training, one byte per attention probability and 2·H bytes of masks. For
//! MiniLM (H = 384, I = 1536, 12 heads) that is 6144 + 12·len floats, about 25 KiB per token
//! and layer at `len` = 32: a batch of 256 titles of 32 tokens with the top 2 layers trained
//! keeps about 400 MiB. Trained embeddings add H floats per token (the LN input). The frozen
//! layers below need only the transient buffers of one layer at a time. Under LoRA every layer
//! from the lowest adapted one up keeps these caches, plus `rank` floats per token per adapter
//! (16 per layer with the defaults; [`lora`] gives the compute cost).
//! [`BertEncoder::cached_floats_per_token`] gives the figure for a setting (a test checks it
//! against the caches' actual sizes).

pub mod encoder;
pub mod lora;
pub mod pool;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;

pub use encoder::TextEncoder;
pub use lora::{Lora, LoraTargets};
pub use pool::{NormCache, PoolCache};

use super::activation::{Dropout, DropoutCache};
use super::attention::{FeedForward, FeedForwardCache, SelfAttention, SelfAttentionCache};
use super::linear::{Embedding, Linear};
use super::norm::{LayerNorm, LayerNormCache};
use super::param::{Module, Param};
use crate::error::{Error, Result};
use crate::nn::Rng;
use lora::{LayerAdapters, LayerAdaptersCache};
use seqrec_engine::text::BertConfig;
/// The engine's pooling modes, which [`TextEncoder`] trains through.
pub use seqrec_engine::text::Pooling;
use seqrec_kernels::cpu::activation::Activation;
use seqrec_kernels::cpu::vector;

/// Which part of the encoder trains.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum FineTune {
    /// Nothing: the encoder is a fixed feature extractor.
    Frozen,
    /// The top `n` transformer layers (`n` ≤ `num_hidden_layers`; the embeddings stay fixed).
    Top(usize),
    /// Every transformer layer and the embeddings.
    All,
    /// LoRA adapters on the attention projections ([`lora`]); every base tensor is frozen.
    Lora(Lora),
}

impl FineTune {
    /// `frozen`, `top:N`, `all` or [`Lora::name`]'s form (the form saved in a delta's
    /// metadata).
    pub fn name(self) -> String {
        match self {
            FineTune::Frozen => "frozen".into(),
            FineTune::Top(n) => format!("top:{n}"),
            FineTune::All => "all".into(),
            FineTune::Lora(l) => l.name(),
        }
    }

    /// Parses [`FineTune::name`]'s form.
    pub fn parse(s: &str) -> Result<FineTune> {
        match s {
            "frozen" => Ok(FineTune::Frozen),
            "all" => Ok(FineTune::All),
            _ if s == "lora" || s.starts_with("lora:") => Lora::parse(s).map(FineTune::Lora),
            _ => s
                .strip_prefix("top:")
                .and_then(|n| n.parse().ok())
                .map(FineTune::Top)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "fine-tuning `{s}` is not one of frozen, top:N, all, lora[:...]"
                    ))
                }),
        }
    }
}

/// A batch of token sequences, right-padded to the longest (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct TextBatch {
    /// Token ids `[batch·len]` (padding rows hold id 0).
    pub ids: Vec<u32>,
    /// Position ids `[batch·len]`: `0..len` in every sequence.
    pub positions: Vec<u32>,
    /// Real lengths, each in `1..=len`.
    pub lens: Vec<usize>,
    /// Padded length (the longest sequence).
    pub len: usize,
    /// Attention mask `[batch·len]`: true at real tokens.
    pub valid: Vec<bool>,
    /// Soft tokens: rows whose word embedding is replaced by a given vector (e.g. a learned
    /// item token, as a language model's added vocabulary); see [`Self::with_soft`].
    pub soft: Option<SoftTokens>,
}

/// Input vectors that replace the word embedding at some rows of a [`TextBatch`].
#[derive(Clone, Debug, PartialEq)]
pub struct SoftTokens {
    /// Row indices into the batch (`b·len + position`), distinct, each at a real token.
    pub rows: Vec<usize>,
    /// The vectors, `[rows.len(), H]`.
    pub values: Vec<f32>,
}

impl TextBatch {
    /// Pads `seqs` (token ids with their special tokens, as the engine's tokenizer gives them),
    /// checking them against `cfg`: every sequence has `1..=max_position_embeddings` tokens and
    /// every id is below `vocab_size`; an error names the sequence and the token.
    pub fn new(seqs: &[&[u32]], cfg: &BertConfig) -> Result<TextBatch> {
        for (s, seq) in seqs.iter().enumerate() {
            if seq.is_empty() || seq.len() > cfg.max_position_embeddings {
                return Err(Error::Invalid(format!(
                    "sequence {s} has {} tokens: expected 1..={}",
                    seq.len(),
                    cfg.max_position_embeddings
                )));
            }
            if let Some((i, &bad)) = seq
                .iter()
                .enumerate()
                .find(|(_, v)| **v as usize >= cfg.vocab_size)
            {
                return Err(Error::Invalid(format!(
                    "token id {bad} at token {i} of sequence {s} is out of range: the \
                     vocabulary has {} entries",
                    cfg.vocab_size
                )));
            }
        }
        let len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut ids = vec![0; seqs.len() * len];
        let mut valid = vec![false; seqs.len() * len];
        for (b, seq) in seqs.iter().enumerate() {
            ids[b * len..b * len + seq.len()].copy_from_slice(seq);
            valid[b * len..b * len + seq.len()].fill(true);
        }
        Ok(TextBatch {
            positions: (0..seqs.len() * len).map(|i| (i % len) as u32).collect(),
            lens: seqs.iter().map(|s| s.len()).collect(),
            len,
            valid,
            ids,
            soft: None,
        })
    }

    /// The batch with soft tokens: at `(sequence, position)` of each entry of `at`, the input
    /// is the matching row of `values` (`[at.len(), H]`) instead of the token's word
    /// embedding (position and token-type embeddings are still added). The token id there
    /// is ignored (any id in the vocabulary, e.g. `[MASK]`). A position outside its sequence
    /// is an error.
    pub fn with_soft(mut self, at: &[(usize, usize)], values: Vec<f32>) -> Result<TextBatch> {
        if at.is_empty() || values.len() % at.len() != 0 {
            return Err(Error::Invalid(format!(
                "{} soft-token values for {} positions",
                values.len(),
                at.len()
            )));
        }
        let mut rows = Vec::with_capacity(at.len());
        for &(s, p) in at {
            if s >= self.batch() || p >= self.lens[s] {
                return Err(Error::Invalid(format!(
                    "soft token at position {p} of sequence {s}: outside the batch"
                )));
            }
            rows.push(s * self.len + p);
        }
        self.soft = Some(SoftTokens { rows, values });
        Ok(self)
    }
    /// Number of sequences.
    pub fn batch(&self) -> usize {
        self.lens.len()
    }

    /// Token rows, padding included (`batch·len`).
    pub fn rows(&self) -> usize {
        self.ids.len()
    }
}

/// The embedding sublayer: word + position + token type 0, LayerNorm, dropout.
#[derive(Clone, Debug)]
pub struct BertEmbeddings {
    /// `embeddings.word_embeddings.weight`, `[vocab_size, H]`.
    pub word: Embedding,
    /// `embeddings.position_embeddings.weight`, `[max_position_embeddings, H]`.
    pub position: Embedding,
    /// `embeddings.token_type_embeddings.weight`, `[type_vocab_size, H]` (row 0 is used).
    pub token_type: Embedding,
    /// `embeddings.LayerNorm`.
    pub ln: LayerNorm,
    /// Dropout after the LayerNorm (`hidden_dropout_prob`).
    pub dropout: Dropout,
}

/// What [`BertEmbeddings::backward`] needs (the ids come from the batch).
#[derive(Clone, Debug)]
pub struct EmbeddingsCache {
    ln: LayerNormCache,
    drop: DropoutCache,
}

impl BertEmbeddings {
    fn new(prefix: &str, cfg: &BertConfig, dropout: f32, rng: &mut Rng) -> BertEmbeddings {
        let h = cfg.hidden_size;
        let table = |name: &str, rows: usize, rng: &mut Rng| {
            Embedding::new(
                &format!("{prefix}embeddings.{name}.weight"),
                rows,
                h,
                0.02,
                rng,
            )
        };
        BertEmbeddings {
            word: table("word_embeddings", cfg.vocab_size, rng),
            position: table("position_embeddings", cfg.max_position_embeddings, rng),
            token_type: table("token_type_embeddings", cfg.type_vocab_size, rng),
            ln: LayerNorm::new(
                &format!("{prefix}embeddings.LayerNorm"),
                h,
                cfg.layer_norm_eps,
            ),
            dropout: Dropout::new(dropout),
        }
    }

    /// `[batch·len, H]` embeddings of the batch and the cache for the backward.
    pub fn forward(&self, b: &TextBatch, rng: Option<&mut Rng>) -> (Vec<f32>, EmbeddingsCache) {
        let h = self.word.dim;
        let mut x = self.word.forward(&b.ids);
        if let Some(s) = &b.soft {
            for (k, &r) in s.rows.iter().enumerate() {
                x[r * h..(r + 1) * h].copy_from_slice(&s.values[k * h..(k + 1) * h]);
            }
        }
        vector::add(&mut x, &self.position.forward(&b.positions));
        let type0 = &self.token_type.weight.value[..h];
        for row in x.chunks_exact_mut(h) {
            vector::add(row, type0);
        }
        let (mut y, ln) = self.ln.forward(&x, b.rows());
        let drop = self.dropout.forward(&mut y, rng);
        (y, EmbeddingsCache { ln, drop })
    }

    /// Adds the tables' and the LayerNorm's gradients for `d_out` (`[batch·len, H]`).
    pub fn backward(&mut self, b: &TextBatch, cache: &EmbeddingsCache, d_out: &[f32]) {
        let h = self.word.dim;
        let mut d = d_out.to_vec();
        self.dropout.backward(&cache.drop, &mut d);
        let dx = self.ln.backward(&cache.ln, &d);
        match &b.soft {
            // A soft row's input is not a word embedding: no gradient reaches the table there.
            Some(s) => {
                let mut dw = dx.clone();
                for &r in &s.rows {
                    dw[r * h..(r + 1) * h].fill(0.0);
                }
                self.word.backward(&b.ids, &dw);
            }
            None => self.word.backward(&b.ids, &dx),
        }
        self.position.backward(&b.positions, &dx);
        let type0 = &mut self.token_type.weight.grad[..h];
        for row in dx.chunks_exact(h) {
            vector::add(type0, row);
        }
    }
}

crate::module_of_fields!(BertEmbeddings: word, position, token_type, ln);

/// One post-LN transformer layer: bidirectional self-attention, then the GELU feed-forward.
#[derive(Clone, Debug)]
pub struct BertLayer {
    /// `encoder.layer.{i}.attention` (`self.query|key|value`, `output.dense`,
    /// `output.LayerNorm`).
    pub attention: SelfAttention,
    /// `encoder.layer.{i}.intermediate.dense`, `output.dense`, `output.LayerNorm`.
    pub ffn: FeedForward,
    /// LoRA adapters on the attention's projections ([`FineTune::Lora`]). Not in the layer's
    /// [`Module`] list, which holds the base model's tensors; [`BertEncoder`] lists them.
    pub lora: Option<LayerAdapters>,
}

/// What [`BertLayer::backward`] needs.
#[derive(Clone, Debug)]
pub struct BertLayerCache {
    att: SelfAttentionCache,
    ff: FeedForwardCache,
    lora: Option<LayerAdaptersCache>,
}

impl BertLayerCache {
    /// Floats held (dropout masks not counted).
    pub fn floats(&self) -> usize {
        self.att.floats() + self.ff.floats() + self.lora.as_ref().map_or(0, |c| c.floats())
    }
}

/// Gives a linear layer the tensor names `{prefix}.weight` and `{prefix}.bias`.
fn rename_linear(l: &mut Linear, prefix: &str) {
    l.weight.name = format!("{prefix}.weight");
    if let Some(b) = &mut l.bias {
        b.name = format!("{prefix}.bias");
    }
}

/// Gives a LayerNorm the tensor names `{prefix}.weight` and `{prefix}.bias`.
fn rename_ln(ln: &mut LayerNorm, prefix: &str) {
    ln.weight.name = format!("{prefix}.weight");
    ln.bias.name = format!("{prefix}.bias");
}

impl BertLayer {
    /// Layer `prefix` (e.g. `encoder.layer.0`) with BERT's initialisation (weights from
    /// `N(0, 0.02²)`, zero biases, LN γ = 1, β = 0); `p_attn` and `p_hidden` are
    /// `attention_probs_dropout_prob` and `hidden_dropout_prob`.
    fn new(prefix: &str, cfg: &BertConfig, p_attn: f32, p_hidden: f32, rng: &mut Rng) -> Self {
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let mut attention = SelfAttention::new(
            prefix,
            h,
            cfg.num_attention_heads,
            eps,
            p_attn,
            p_hidden,
            0.02,
            rng,
        );
        attention.causal = false;
        let a = &mut attention;
        rename_linear(&mut a.query, &format!("{prefix}.attention.self.query"));
        rename_linear(&mut a.key, &format!("{prefix}.attention.self.key"));
        rename_linear(&mut a.value, &format!("{prefix}.attention.self.value"));
        rename_linear(&mut a.dense, &format!("{prefix}.attention.output.dense"));
        rename_ln(&mut a.ln, &format!("{prefix}.attention.output.LayerNorm"));
        let inner = cfg.intermediate_size;
        let mut ffn =
            FeedForward::new(prefix, h, inner, Activation::Gelu, eps, p_hidden, 0.02, rng);
        rename_linear(&mut ffn.dense_1, &format!("{prefix}.intermediate.dense"));
        rename_linear(&mut ffn.dense_2, &format!("{prefix}.output.dense"));
        rename_ln(&mut ffn.ln, &format!("{prefix}.output.LayerNorm"));
        BertLayer {
            attention,
            ffn,
            lora: None,
        }
    }

    /// The layer over the batch's rows `x` (`[batch·len, H]`); dropout is active when `rng`
    /// is given.
    pub fn forward(
        &self,
        x: &[f32],
        b: &TextBatch,
        mut rng: Option<&mut Rng>,
    ) -> (Vec<f32>, BertLayerCache) {
        let (terms, lora) = match &self.lora {
            Some(a) => {
                let (t, c) = a.forward(x, b.rows());
                (t, Some(c))
            }
            None => Default::default(),
        };
        let add = terms.each_ref().map(|t| t.as_deref());
        let (y, att) = self.attention.forward_with(
            x,
            b.batch(),
            b.len,
            Some(&b.valid),
            rng.as_deref_mut(),
            add,
        );
        let (z, ff) = self.ffn.forward(&y, b.rows(), rng);
        (z, BertLayerCache { att, ff, lora })
    }

    /// Adds every gradient of a parameter with a gradient buffer (frozen ones have none) for
    /// `d_out` and returns the input gradient.
    pub fn backward(&mut self, cache: &BertLayerCache, d_out: &[f32]) -> Vec<f32> {
        let dy = self.ffn.backward(&cache.ff, d_out);
        match (&mut self.lora, &cache.lora) {
            (Some(a), Some(c)) => {
                let (mut dx, d_qkv) = self.attention.backward_qkv(&cache.att, &dy);
                let x = cache.att.input();
                a.backward(x, x.len() / self.attention.hidden(), c, &d_qkv, &mut dx);
                dx
            }
            _ => self.attention.backward(&cache.att, &dy),
        }
    }
}

crate::module_of_fields!(BertLayer: attention, ffn);

/// The BERT encoder (embeddings and transformer layers) with its fine-tuning setting.
#[derive(Clone, Debug)]
pub struct BertEncoder {
    /// Sizes.
    pub cfg: BertConfig,
    /// The embedding sublayer.
    pub embeddings: BertEmbeddings,
    /// The transformer layers, bottom first.
    pub layers: Vec<BertLayer>,
    fine_tune: FineTune,
}

/// What [`BertEncoder::backward`] needs: the caches of the trained part only.
#[derive(Clone, Debug)]
pub struct BertCache {
    emb: Option<EmbeddingsCache>,
    layers: Vec<BertLayerCache>,
}

impl BertCache {
    /// Floats held for the backward (dropout masks, one byte per value, not counted).
    pub fn floats(&self) -> usize {
        let emb = self.emb.as_ref().map_or(0, |c| c.ln.floats());
        emb + self
            .layers
            .iter()
            .map(BertLayerCache::floats)
            .sum::<usize>()
    }
}

impl BertEncoder {
    /// Floats [`Self::forward`] caches per token row of a batch padded to `len`, with the
    /// current fine-tuning setting: `8·H + 2·I + heads·len` per layer the backward runs
    /// through, plus `H` when the embeddings train, plus `rank` per LoRA adapter (see the
    /// module docs).
    pub fn cached_floats_per_token(&self, len: usize) -> usize {
        let c = &self.cfg;
        let layer = 8 * c.hidden_size + 2 * c.intermediate_size + c.num_attention_heads * len;
        let emb = if self.embeddings_trained() {
            c.hidden_size
        } else {
            0
        };
        let adapters = match self.fine_tune {
            FineTune::Lora(l) => {
                let per_layer = l.targets.0.iter().filter(|on| **on).count();
                (self.layers.len() - self.first_trained()) * per_layer * l.rank
            }
            _ => 0,
        };
        emb + (self.layers.len() - self.first_trained()) * layer + adapters
    }

    /// A randomly initialised encoder for `cfg` (tensor names prefixed by `prefix`, `""` or
    /// `"bert."`), with dropout probabilities `p_attn` (attention probabilities) and
    /// `p_hidden` (every other dropout), fully trainable.
    pub fn new(
        cfg: &BertConfig,
        prefix: &str,
        p_attn: f32,
        p_hidden: f32,
        rng: &mut Rng,
    ) -> Result<BertEncoder> {
        cfg.validate()?;
        for (what, p) in [
            ("attention_probs_dropout_prob", p_attn),
            ("hidden_dropout_prob", p_hidden),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::Invalid(format!("{what} {p} is not in [0, 1)")));
            }
        }
        let embeddings = BertEmbeddings::new(prefix, cfg, p_hidden, rng);
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = format!("{prefix}encoder.layer.{i}");
                BertLayer::new(&l, cfg, p_attn, p_hidden, rng)
            })
            .collect();
        Ok(BertEncoder {
            cfg: cfg.clone(),
            embeddings,
            layers,
            fine_tune: FineTune::All,
        })
    }

    /// The fine-tuning setting.
    pub fn fine_tune(&self) -> FineTune {
        self.fine_tune
    }

    /// Chooses what trains (see [`FineTune`]): trained parameters get a zero gradient buffer,
    /// frozen ones none. `Top(n)` with more layers than the model has, or an invalid LoRA
    /// setting ([`Lora::validate`]), is an error. Any LoRA adapters are dropped, and
    /// [`FineTune::Lora`] makes fresh ones, with `A` drawn from `Rng::new(0)` (see
    /// [`Self::set_fine_tune_with`] to choose the draw).
    pub fn set_fine_tune(&mut self, fine_tune: FineTune) -> Result<()> {
        self.set_fine_tune_with(fine_tune, &mut Rng::new(0))
    }

    /// [`Self::set_fine_tune`] drawing the fresh adapters' `A` from `rng`.
    pub fn set_fine_tune_with(&mut self, fine_tune: FineTune, rng: &mut Rng) -> Result<()> {
        let l = self.layers.len();
        match fine_tune {
            FineTune::Top(n) if n > l => {
                return Err(Error::Invalid(format!(
                    "cannot train the top {n} layers: the text encoder has {l}"
                )));
            }
            FineTune::Lora(cfg) => cfg.validate(l)?,
            _ => {}
        }
        self.fine_tune = fine_tune;
        for layer in &mut self.layers {
            layer.lora = None;
        }
        if let FineTune::Lora(cfg) = fine_tune {
            let first = self.first_trained();
            for layer in &mut self.layers[first..] {
                layer.lora = Some(LayerAdapters::new(&layer.attention, &cfg, rng));
            }
        }
        for p in self.all_params_mut() {
            p.grad = Vec::new();
        }
        for p in self.params_mut() {
            p.grad = vec![0.0; p.len()];
        }
        Ok(())
    }

    /// Index of the lowest trained layer, or, under [`FineTune::Lora`], of the lowest adapted
    /// one: the backward runs through every layer from there up (`layers.len()` when no
    /// layer trains).
    pub fn first_trained(&self) -> usize {
        let l = self.layers.len();
        match self.fine_tune {
            FineTune::Frozen => l,
            FineTune::Top(n) => l - n.min(l),
            FineTune::All => 0,
            FineTune::Lora(cfg) => l - cfg.layers.unwrap_or(l).min(l),
        }
    }

    /// The encoder with its LoRA adapters folded into the projections' weights
    /// (`W + (alpha/rank)·B·A`, see [`lora`]) and nothing trained: the same function as this
    /// one (up to float rounding) at the base model's cost, for serving. An encoder without
    /// adapters comes back frozen and otherwise unchanged.
    pub fn merged(&self) -> BertEncoder {
        let mut m = self.clone();
        for layer in &mut m.layers {
            if let Some(a) = layer.lora.take() {
                a.merge_into(&mut layer.attention);
            }
        }
        m.fine_tune = FineTune::Frozen;
        for p in m.all_params_mut() {
            p.grad = Vec::new();
        }
        m
    }

    /// Whether any of the encoder's parameters (or adapters) trains, so that a layer above it
    /// needs the gradient of its input.
    pub fn trains(&self) -> bool {
        self.first_trained() < self.layers.len() || self.embeddings_trained()
    }

    fn embeddings_trained(&self) -> bool {
        self.fine_tune == FineTune::All
    }

    /// The last hidden states `[batch·len, H]` of the batch (padding rows included), with the
    /// caches of the trained part; the frozen part runs without dropout and keeps nothing.
    /// Dropout in the trained part is active when `rng` is given.
    pub fn forward(&self, b: &TextBatch, mut rng: Option<&mut Rng>) -> (Vec<f32>, BertCache) {
        match self.frozen_states(b) {
            Some(x) => self.forward_trained(x, b, rng),
            None => {
                let (x, c) = self.embeddings.forward(b, rng.as_deref_mut());
                let (y, mut cache) = self.forward_trained(x, b, rng);
                cache.emb = Some(c);
                (y, cache)
            }
        }
    }

    /// The output of the frozen part for the batch, `[batch·len, H]`: the input of the lowest
    /// trained layer (the last hidden states when frozen), computed in evaluation mode; `None`
    /// when the embeddings train (no part is frozen). A real row does not depend on the
    /// padding rows nor on the padded length, so a caller may compute it once per text, keep
    /// the real rows, and rebuild a batch's input from them (padding rows filled with
    /// anything) for [`Self::forward_trained`].
    pub fn frozen_states(&self, b: &TextBatch) -> Option<Vec<f32>> {
        if self.embeddings_trained() {
            return None;
        }
        let mut x = self.embeddings.forward(b, None).0;
        for layer in &self.layers[..self.first_trained()] {
            x = layer.forward(&x, b, None).0;
        }
        Some(x)
    }

    /// The trained layers over `x` (`[batch·len, H]`, the input of the lowest trained layer,
    /// e.g. [`Self::frozen_states`]), with their caches (no embedding cache: a backward from it
    /// stops at the lowest trained layer). Dropout is active when `rng` is given.
    pub fn forward_trained(
        &self,
        mut x: Vec<f32>,
        b: &TextBatch,
        mut rng: Option<&mut Rng>,
    ) -> (Vec<f32>, BertCache) {
        let first = self.first_trained();
        let mut layers = Vec::with_capacity(self.layers.len() - first);
        for layer in &self.layers[first..] {
            let (y, c) = layer.forward(&x, b, rng.as_deref_mut());
            layers.push(c);
            x = y;
        }
        (x, BertCache { emb: None, layers })
    }

    /// The last hidden states in evaluation mode, without caches.
    pub fn infer(&self, b: &TextBatch) -> Vec<f32> {
        let mut x = self.embeddings.forward(b, None).0;
        for layer in &self.layers {
            x = layer.forward(&x, b, None).0;
        }
        x
    }

    /// Adds the gradients of the trained parameters for `d_out` (`[batch·len, H]`), down to
    /// the lowest trained layer (nothing at all when frozen).
    pub fn backward(&mut self, b: &TextBatch, cache: &BertCache, d_out: &[f32]) {
        let first = self.first_trained();
        if first == self.layers.len() && cache.emb.is_none() {
            return;
        }
        let mut d = d_out.to_vec();
        for (layer, c) in self.layers[first..].iter_mut().zip(&cache.layers).rev() {
            d = layer.backward(c, &d);
        }
        if let Some(c) = &cache.emb {
            self.embeddings.backward(b, c, &d);
        }
    }

    /// Every parameter of the base model, trained or not, in checkpoint order (LoRA adapters
    /// are not part of it: [`Module::params`] lists them when they train).
    pub fn all_params(&self) -> Vec<&Param> {
        let mut v = self.embeddings.params();
        v.extend(self.layers.params());
        v
    }

    /// Every parameter of the base model, trained or not, mutable (for loading weights).
    pub fn all_params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = self.embeddings.params_mut();
        v.extend(self.layers.params_mut());
        v
    }
}

impl Module for BertEncoder {
    /// The trained parameters only (see [`FineTune`]): under [`FineTune::Lora`], the
    /// adapters' `A` and `B`, layer by layer, query before value.
    fn params(&self) -> Vec<&Param> {
        let first = self.first_trained();
        if let FineTune::Lora(_) = self.fine_tune {
            return self.layers[first..]
                .iter()
                .flat_map(|l| l.lora.iter().flat_map(Module::params))
                .collect();
        }
        let mut v = if self.embeddings_trained() {
            self.embeddings.params()
        } else {
            Vec::new()
        };
        v.extend(self.layers[first..].iter().flat_map(Module::params));
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        let first = self.first_trained();
        if let FineTune::Lora(_) = self.fine_tune {
            return self.layers[first..]
                .iter_mut()
                .flat_map(|l| l.lora.iter_mut().flat_map(Module::params_mut))
                .collect();
        }
        let mut v = if self.fine_tune == FineTune::All {
            self.embeddings.params_mut()
        } else {
            Vec::new()
        };
        v.extend(self.layers[first..].iter_mut().flat_map(Module::params_mut));
        v
    }
}

/// The all-MiniLM-L6-v2 folder for tests (`$SEQREC_MINILM_DIR`, else `.minilm/` in the
/// workspace root, where `scripts/fetch-minilm.sh` puts it); `None`, with a printed
/// `skipped: {what}` notice, when it is absent.
#[cfg(test)]
pub(crate) fn minilm_dir(what: &str) -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    let dir = std::env::var_os("SEQREC_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.minilm"));
    if ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .all(|f| dir.join(f).is_file())
    {
        return Some(dir);
    }
    eprintln!(
        "skipped: {what}: all-MiniLM-L6-v2 not found at {} (run scripts/fetch-minilm.sh or set \
         SEQREC_MINILM_DIR)",
        dir.display()
    );
    None
}
