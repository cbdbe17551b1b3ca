//! The BERT encoder: embeddings (word + absolute position + token type, then LayerNorm),
//! post-LN transformer layers (bidirectional multi-head self-attention, exact-GELU
//! feed-forward), loaded by Hugging Face tensor names from a `model.safetensors`, and run on
//! any [`Backend`] through its blocks (the same attention and feed-forward sublayers as
//! SASRec's, with every position visible).
//!
//! Sequences are *packed*: a batch is one `[T, H]` matrix holding every sequence's tokens one
//! after the other (`T` = the sum of the lengths), with no padding at all. Every linear layer is
//! then one `[T, ·]` product over all the batch's tokens, and attention runs per sequence over
//! exactly its own rows ([`Backend::attention_seqs`]), which is what an attention mask over a
//! right-padded batch computes (a token never sees another sequence's tokens or padding)
//! without the padded work.
//!
//! Tensor names are those of `transformers.BertModel` (`embeddings.word_embeddings.weight`,
//! `encoder.layer.{i}.attention.self.query.weight`, ...), optionally under a `bert.` prefix.
//! The `embeddings.position_ids` buffer and the `pooler.dense` head are skipped; any other
//! tensor the encoder does not use is an error.

use crate::backend::{At, Backend, BlockScratch, Scale, SelfMask, Src};
use crate::blocks::{Activation, AttentionBlock, Embedding, FeedForward, LayerNorm, Linear};
use crate::config::Config;
use crate::cpu::Cpu;
use crate::error::{Error, Result};
use crate::weights::{DType, TensorLoader, WeightFile};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The hyper-parameters of a BERT encoder, as Hugging Face's `config.json` names them.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    /// Rows of the word-embedding table.
    pub vocab_size: usize,
    /// Model width H.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads (`H` must be a multiple).
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Rows of the position-embedding table: the longest sequence the model can encode.
    pub max_position_embeddings: usize,
    /// Rows of the token-type table.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f32,
}

impl BertConfig {
    /// Parses and checks a Hugging Face `config.json`: `model_type` must be `bert` (when
    /// present), `hidden_act` the exact `gelu` and `position_embedding_type` `absolute`.
    pub fn from_json(text: &str) -> Result<BertConfig> {
        let c = Config::from_json(text)?;
        let model_type = c.str_or("model_type", "bert")?;
        if model_type != "bert" {
            return Err(Error::Config(format!(
                "model_type `{model_type}` is not supported (expected `bert`)"
            )));
        }
        let act = c.str_or("hidden_act", "gelu")?;
        if act != "gelu" {
            return Err(Error::Config(format!(
                "hidden_act `{act}` is not supported (expected `gelu`, the exact erf form)"
            )));
        }
        let pos = c.str_or("position_embedding_type", "absolute")?;
        if pos != "absolute" {
            return Err(Error::Config(format!(
                "position_embedding_type `{pos}` is not supported (expected `absolute`)"
            )));
        }
        let cfg = BertConfig {
            vocab_size: c.usize("vocab_size")?,
            hidden_size: c.usize("hidden_size")?,
            num_hidden_layers: c.usize("num_hidden_layers")?,
            num_attention_heads: c.usize("num_attention_heads")?,
            intermediate_size: c.usize("intermediate_size")?,
            max_position_embeddings: c.usize("max_position_embeddings")?,
            type_vocab_size: c.usize_or("type_vocab_size", 2)?,
            layer_norm_eps: c.f32_or("layer_norm_eps", 1e-12)?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the sizes for consistency.
    pub fn validate(&self) -> Result<()> {
        let zero = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        if let Some((key, _)) = zero.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Config(format!("`{key}` must be at least 1")));
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(Error::Config(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite()) {
            return Err(Error::Config(format!(
                "layer_norm_eps must be a positive number, found {}",
                self.layer_norm_eps
            )));
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// A loaded BERT encoder on backend `B`. Immutable after load; share it across threads.
#[derive(Debug)]
pub struct Bert<B: Backend = Cpu> {
    cfg: BertConfig,
    weight_dtype: DType,
    word: Embedding<B>,
    position: Embedding<B>,
    token_type: Embedding<B>,
    emb_ln: LayerNorm<B>,
    layers: Vec<(AttentionBlock<B>, FeedForward<B>)>,
}

/// The tensor-name prefix of the encoder in `file`: `bert.` for checkpoints of task models
/// (`BertForMaskedLM`, ...), empty for a bare `BertModel`.
pub(crate) fn name_prefix(file: &WeightFile) -> &'static str {
    if file
        .info("bert.embeddings.word_embeddings.weight")
        .is_some()
    {
        "bert."
    } else {
        ""
    }
}

impl Bert<Cpu> {
    /// Loads the encoder's tensors from `file` onto the CPU, checking every shape against
    /// `cfg`, with the transformer layers' weight matrices in f32 (as stored).
    pub fn load(file: &WeightFile, cfg: BertConfig) -> Result<Bert> {
        Self::load_with(file, cfg, DType::F32)
    }

    /// [`Self::load`] with the weight matrices of the transformer layers (the products that
    /// dominate an encode) stored as `weight_dtype`: `F32` as in the file, `I16` (quantized at
    /// load with one scale per row) or `F16` (rounded at load); the last two read half the bytes
    /// per encode. Embeddings, biases and LayerNorms stay f32. `BF16` and `I8` are errors, as
    /// is an f16 weight beyond ±65504.
    pub fn load_with(file: &WeightFile, cfg: BertConfig, weight_dtype: DType) -> Result<Bert> {
        Self::load_on(&Cpu::new(), file, cfg, weight_dtype)
    }
}

impl<B: Backend> Bert<B> {
    /// [`Bert::load_with`] onto backend `be` (the weight storages it accepts are the
    /// backend's, see [`Backend::upload_weight`]).
    pub fn load_on(
        be: &B,
        file: &WeightFile,
        cfg: BertConfig,
        weight_dtype: DType,
    ) -> Result<Bert<B>> {
        Self::load_inner(be, file, cfg, weight_dtype).map_err(|e| e.in_origin(file.origin()))
    }

    fn load_inner(be: &B, file: &WeightFile, cfg: BertConfig, dtype: DType) -> Result<Bert<B>> {
        cfg.validate()?;
        let p = name_prefix(file);
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let mut loader = TensorLoader::new(file);
        let ld = &mut loader;
        let word = Embedding::load(
            be,
            ld,
            &format!("{p}embeddings.word_embeddings.weight"),
            cfg.vocab_size,
            h,
        )?;
        let position = Embedding::load(
            be,
            ld,
            &format!("{p}embeddings.position_embeddings.weight"),
            cfg.max_position_embeddings,
            h,
        )?;
        let token_type = Embedding::load(
            be,
            ld,
            &format!("{p}embeddings.token_type_embeddings.weight"),
            cfg.type_vocab_size,
            h,
        )?;
        let emb_ln = LayerNorm::load(be, ld, &format!("{p}embeddings.LayerNorm"), h, eps)?;
        let inner = cfg.intermediate_size;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = format!("{p}encoder.layer.{i}");
            let qkv_names = [
                format!("{l}.attention.self.query"),
                format!("{l}.attention.self.key"),
                format!("{l}.attention.self.value"),
            ];
            let qkv_refs: Vec<&str> = qkv_names.iter().map(String::as_str).collect();
            let dense = |ld: &mut TensorLoader<'_>, name: &str, k: usize, n: usize| {
                Linear::load_as(be, ld, name, k, n, true, dtype)
            };
            let qkv = Linear::load_fused(be, ld, &qkv_refs, h, h, dtype)?;
            let attn_out = dense(ld, &format!("{l}.attention.output.dense"), h, h)?;
            let attn_ln =
                LayerNorm::load(be, ld, &format!("{l}.attention.output.LayerNorm"), h, eps)?;
            let att = AttentionBlock::new(qkv, attn_out, attn_ln, cfg.num_attention_heads)?;
            let ff = FeedForward {
                dense_1: dense(ld, &format!("{l}.intermediate.dense"), h, inner)?,
                dense_2: dense(ld, &format!("{l}.output.dense"), inner, h)?,
                act: Activation::Gelu,
                ln: LayerNorm::load(be, ld, &format!("{l}.output.LayerNorm"), h, eps)?,
            };
            layers.push((att, ff));
        }
        for name in [
            "embeddings.position_ids",
            "pooler.dense.weight",
            "pooler.dense.bias",
        ] {
            ld.skip(&format!("{p}{name}"));
        }
        loader.finish("bert")?;
        Ok(Bert {
            cfg,
            weight_dtype: dtype,
            word,
            position,
            token_type,
            emb_ln,
            layers,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }

    /// Storage of the transformer layers' weight matrices (`F32`, `I16` or `F16`).
    pub fn weight_dtype(&self) -> DType {
        self.weight_dtype
    }

    /// Checks a packed batch: `lens` sum to `ids.len()`, every length is within
    /// `1..=max_position_embeddings`, every id is below `vocab_size` and every token type
    /// below `type_vocab_size`.
    pub fn check_batch(&self, ids: &[u32], type_ids: Option<&[u32]>, lens: &[usize]) -> Result<()> {
        let total: usize = lens.iter().sum();
        if total != ids.len() {
            return Err(Error::InvalidArgument(format!(
                "sequence lengths sum to {total}, but {} token ids were given",
                ids.len()
            )));
        }
        if let Some(t) = type_ids {
            if t.len() != ids.len() {
                return Err(Error::InvalidArgument(format!(
                    "{} token type ids for {} token ids",
                    t.len(),
                    ids.len()
                )));
            }
            if let Some((i, &bad)) = t
                .iter()
                .enumerate()
                .find(|(_, v)| **v as usize >= self.cfg.type_vocab_size)
            {
                return Err(Error::InvalidArgument(format!(
                    "token type id {bad} at token {i} is out of range: the model has {} types",
                    self.cfg.type_vocab_size
                )));
            }
        }
        if let Some((s, &l)) = lens
            .iter()
            .enumerate()
            .find(|(_, l)| **l == 0 || **l > self.cfg.max_position_embeddings)
        {
            return Err(Error::InvalidArgument(format!(
                "sequence {s} has {l} tokens: expected 1..={}",
                self.cfg.max_position_embeddings
            )));
        }
        if let Some((i, &bad)) = ids
            .iter()
            .enumerate()
            .find(|(_, v)| **v as usize >= self.cfg.vocab_size)
        {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} at token {i} is out of range: the vocabulary has {} entries",
                self.cfg.vocab_size
            )));
        }
        Ok(())
    }

    /// Runs the encoder on `be` over a packed batch (see the module docs): `ids` holds every
    /// sequence's token ids one after the other, `lens` the sequence lengths, `type_ids` the
    /// token types (all 0 when `None`). Returns the last hidden states `[ids.len(), H]`, which
    /// live in `ws` until its next use.
    pub fn forward<'w>(
        &self,
        be: &B,
        ids: &[u32],
        type_ids: Option<&[u32]>,
        lens: &[usize],
        ws: &'w mut BertWorkspace<B>,
    ) -> Result<&'w B::Buf> {
        self.check_batch(ids, type_ids, lens)?;
        let (t, h) = (ids.len(), self.cfg.hidden_size);
        let BertWorkspace { x, y, tmp } = ws;
        // Embeddings: word + position (0.. per sequence) + token type, then LayerNorm.
        be.embedding_seqs(&self.word, ids, lens, Some(&self.position), x)?;
        let (one, rows) = (Scale::All(1.0), At::rows(0, h));
        match type_ids {
            Some(tt) => {
                be.gather(&self.token_type, tt, y)?;
                be.axpy(Src::Buf(y), rows, one, x, rows, t, h)?;
            }
            None => {
                let types = Src::Param(&self.token_type.table);
                be.axpy(types, At::repeat(0), one, x, rows, t, h)?;
            }
        }
        be.layer_norm(&self.emb_ln, x, 0..t)?;
        for (att, ff) in &self.layers {
            be.attention_seqs(att, x, lens, false, SelfMask::All, tmp, y)?;
            be.feed_forward(ff, y, t, tmp, x)?;
        }
        Ok(&ws.x)
    }
}

/// Activation buffers of [`Bert::forward`], grown to the largest batch seen and then reused.
#[derive(Debug)]
pub struct BertWorkspace<B: Backend = Cpu> {
    x: B::Buf,
    y: B::Buf,
    tmp: BlockScratch<B>,
}

impl<B: Backend> Default for BertWorkspace<B> {
    fn default() -> Self {
        BertWorkspace {
            x: B::Buf::default(),
            y: B::Buf::default(),
            tmp: BlockScratch::default(),
        }
    }
}

impl BertWorkspace<Cpu> {
    /// Bytes held by the activation buffers.
    pub fn capacity_bytes(&self) -> usize {
        let t = &self.tmp;
        4 * (self.x.capacity()
            + self.y.capacity()
            + t.proj.capacity()
            + t.ctx.capacity()
            + t.work.capacity())
    }
}
