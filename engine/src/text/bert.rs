//! The BERT encoder: embeddings (word + absolute position + token type, then LayerNorm),
//! post-LN transformer layers (bidirectional multi-head self-attention, exact-GELU
//! feed-forward), loaded by Hugging Face tensor names from a `model.safetensors`.
//!
//! Sequences are *packed*: a batch is one `[T, H]` matrix holding every sequence's tokens one
//! after the other (`T` = the sum of the lengths), with no padding at all. Every linear layer is
//! then one `[T, ·]` product over all the batch's tokens, and attention runs per sequence over
//! exactly its own rows, which is what an attention mask over a right-padded batch computes
//! (a token never sees another sequence's tokens or padding) without the padded work.
//!
//! Tensor names are those of `transformers.BertModel` (`embeddings.word_embeddings.weight`,
//! `encoder.layer.{i}.attention.self.query.weight`, ...), optionally under a `bert.` prefix.
//! The `embeddings.position_ids` buffer and the `pooler.dense` head are skipped; any other
//! tensor the encoder does not use is an error.

use crate::blocks::{LayerNorm, Linear};
use crate::config::Config;
use crate::cpu::Cpu;
use crate::error::{Error, Result};
use crate::weights::{DType, Tensor, TensorLoader, WeightFile};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use half::f16;
use seqrec_kernels::cpu::attention::{self, AttentionShape, AttnMask};
use seqrec_kernels::cpu::{activation, convert, embedding, linear, norm, vector};

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

/// The weight matrix of a transformer-layer product, `[out, in]`.
#[derive(Debug)]
enum LayerWeight {
    /// As stored in the file.
    F32(Tensor),
    /// Rounded to f16 at load (widened exactly in the kernel).
    F16(Vec<f16>),
    /// Quantized at load to i16 with one scale per output row
    /// ([`linear::quantize_rows_i16`]).
    I16 { q: Vec<i16>, scales: Vec<f32> },
}

/// A linear layer of the transformer: weight in the chosen storage, f32 bias.
#[derive(Debug)]
struct BertLinear {
    w: LayerWeight,
    b: Tensor,
    in_dim: usize,
    out_dim: usize,
}

impl BertLinear {
    /// Keeps `lin` in f32, or rounds its weight to f16; `name` (the tensor) is named in the
    /// error when a weight is beyond the f16 range.
    fn new(lin: Linear<Cpu>, dtype: DType, name: &str) -> Result<BertLinear> {
        let b = lin
            .b
            .ok_or_else(|| Error::Config(format!("{name}: the layer has no bias")))?;
        let w = match dtype {
            DType::F32 => LayerWeight::F32(lin.w),
            DType::F16 => {
                let src = lin.w.as_slice();
                let mut h = vec![f16::ZERO; src.len()];
                convert::f32_to_f16(src, &mut h);
                if let Some((i, &v)) = src
                    .iter()
                    .enumerate()
                    .find(|(i, v)| v.is_finite() && !h[*i].is_finite())
                {
                    return Err(Error::Config(format!(
                        "{name}: weight {i} = {v} is beyond the f16 range (±65504); load the \
                         text encoder with f32 weights"
                    )));
                }
                LayerWeight::F16(h)
            }
            DType::I16 => {
                let src = lin.w.as_slice();
                let mut q = vec![0i16; src.len()];
                let mut scales = vec![0.0f32; lin.out_dim];
                linear::quantize_rows_i16(src, lin.out_dim, lin.in_dim, &mut q, &mut scales);
                LayerWeight::I16 { q, scales }
            }
            DType::BF16 | DType::I8 => {
                return Err(Error::Config(format!(
                    "{} weights are not supported by the text encoder (i16, f16 or f32)",
                    dtype.name().to_ascii_lowercase()
                )));
            }
        };
        Ok(BertLinear {
            w,
            b,
            in_dim: lin.in_dim,
            out_dim: lin.out_dim,
        })
    }
}

/// Weights of one transformer layer.
#[derive(Debug)]
struct BertLayer {
    /// `attention.self.{query,key,value}` stacked: `[3H, H]`.
    qkv: BertLinear,
    /// `attention.output.dense`: `[H, H]`.
    attn_out: BertLinear,
    /// `attention.output.LayerNorm`.
    attn_ln: LayerNorm<Cpu>,
    /// `intermediate.dense`: `[I, H]`.
    inter: BertLinear,
    /// `output.dense`: `[H, I]`.
    out: BertLinear,
    /// `output.LayerNorm`.
    out_ln: LayerNorm<Cpu>,
}

/// A loaded BERT encoder. Immutable after load; share it across threads.
#[derive(Debug)]
pub struct Bert {
    cfg: BertConfig,
    weight_dtype: DType,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    emb_ln: LayerNorm<Cpu>,
    layers: Vec<BertLayer>,
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

impl Bert {
    /// Loads the encoder's tensors from `file`, checking every shape against `cfg`, with the
    /// transformer layers' weight matrices in f32 (as stored).
    pub fn load(file: &WeightFile, cfg: BertConfig) -> Result<Bert> {
        Self::load_with(file, cfg, DType::F32)
    }

    /// [`Self::load`] with the weight matrices of the transformer layers (the products that
    /// dominate an encode) stored as `weight_dtype`: `F32` as in the file, `I16` (quantized at
    /// load with one scale per row) or `F16` (rounded at load); the last two read half the bytes
    /// per encode. Embeddings, biases and LayerNorms stay f32. `BF16` and `I8` are errors, as
    /// is an f16 weight beyond ±65504.
    pub fn load_with(file: &WeightFile, cfg: BertConfig, weight_dtype: DType) -> Result<Bert> {
        Self::load_inner(file, cfg, weight_dtype).map_err(|e| e.in_origin(file.origin()))
    }

    fn load_inner(file: &WeightFile, cfg: BertConfig, dtype: DType) -> Result<Bert> {
        cfg.validate()?;
        let p = name_prefix(file);
        let be = Cpu;
        let (h, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let mut ld = TensorLoader::new(file);
        let word = ld.get(
            &format!("{p}embeddings.word_embeddings.weight"),
            &[cfg.vocab_size, h],
        )?;
        let position = ld.get(
            &format!("{p}embeddings.position_embeddings.weight"),
            &[cfg.max_position_embeddings, h],
        )?;
        let token_type = ld.get(
            &format!("{p}embeddings.token_type_embeddings.weight"),
            &[cfg.type_vocab_size, h],
        )?;
        let emb_ln = LayerNorm::load(&be, &mut ld, &format!("{p}embeddings.LayerNorm"), h, eps)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = format!("{p}encoder.layer.{i}");
            let qkv_names = [
                format!("{l}.attention.self.query"),
                format!("{l}.attention.self.key"),
                format!("{l}.attention.self.value"),
            ];
            let qkv_refs: Vec<&str> = qkv_names.iter().map(String::as_str).collect();
            let inner = cfg.intermediate_size;
            let dense = |ld: &mut TensorLoader<'_>, name: &str, k: usize, n: usize| {
                let lin = Linear::load(&be, ld, name, k, n, true)?;
                BertLinear::new(lin, dtype, &format!("{name}.weight"))
            };
            let qkv = Linear::load_fused(&be, &mut ld, &qkv_refs, h, h)?;
            layers.push(BertLayer {
                qkv: BertLinear::new(qkv, dtype, &format!("{l}.attention.self.*.weight"))?,
                attn_out: dense(&mut ld, &format!("{l}.attention.output.dense"), h, h)?,
                attn_ln: LayerNorm::load(
                    &be,
                    &mut ld,
                    &format!("{l}.attention.output.LayerNorm"),
                    h,
                    eps,
                )?,
                inter: dense(&mut ld, &format!("{l}.intermediate.dense"), h, inner)?,
                out: dense(&mut ld, &format!("{l}.output.dense"), inner, h)?,
                out_ln: LayerNorm::load(&be, &mut ld, &format!("{l}.output.LayerNorm"), h, eps)?,
            });
        }
        for name in [
            "embeddings.position_ids",
            "pooler.dense.weight",
            "pooler.dense.bias",
        ] {
            ld.skip(&format!("{p}{name}"));
        }
        ld.finish("bert")?;
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

    /// Runs the encoder over a packed batch (see the module docs): `ids` holds every
    /// sequence's token ids one after the other, `lens` the sequence lengths, `type_ids` the
    /// token types (all 0 when `None`). Returns the last hidden states `[ids.len(), H]`, which
    /// live in `ws` until its next use. `par` splits the large products across the rayon pool
    /// (worth it when the batch is small and nothing else runs in parallel).
    pub fn forward<'w>(
        &self,
        ids: &[u32],
        type_ids: Option<&[u32]>,
        lens: &[usize],
        ws: &'w mut BertWorkspace,
        par: bool,
    ) -> Result<&'w [f32]> {
        self.check_batch(ids, type_ids, lens)?;
        let cfg = &self.cfg;
        let (t, h, inner) = (ids.len(), cfg.hidden_size, cfg.intermediate_size);
        let longest = lens.iter().copied().max().unwrap_or(0);
        let att_shape = AttentionShape {
            lq: longest,
            lk: longest,
            n_heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
            q_stride: 3 * h,
            kv_stride: 3 * h,
            out_stride: h,
        };
        ws.reserve(t, h, inner, attention::attention_scratch_len(&att_shape));
        let BertWorkspace {
            x,
            x1,
            qkv,
            ctx,
            mid,
            att,
            split,
        } = ws;
        let (x, x1, ctx) = (&mut x[..t * h], &mut x1[..t * h], &mut ctx[..t * h]);
        let (qkv, mid) = (&mut qkv[..t * 3 * h], &mut mid[..t * inner]);

        // Embeddings: word + position (0.. per sequence) + token type, then LayerNorm.
        embedding::gather(self.word.as_slice(), h, ids, x);
        let pos = self.position.as_slice();
        let mut o = 0;
        for &l in lens {
            vector::add(&mut x[o * h..(o + l) * h], &pos[..l * h]);
            o += l;
        }
        let types = self.token_type.as_slice();
        match type_ids {
            Some(tt) => {
                embedding::gather(types, h, tt, ctx);
                vector::add(x, ctx);
            }
            None => {
                for row in x.chunks_exact_mut(h) {
                    vector::add(row, &types[..h]);
                }
            }
        }
        layer_norm(&self.emb_ln, x, t);

        let scale = 1.0 / libm::sqrtf(cfg.head_dim() as f32);
        for layer in &self.layers {
            apply_linear(&layer.qkv, x, t, qkv, split, par);
            let mut o = 0;
            for &l in lens {
                let shape = AttentionShape {
                    lq: l,
                    lk: l,
                    ..att_shape
                };
                let rows = &qkv[o * 3 * h..(o + l) * 3 * h];
                attention::attention(
                    &shape,
                    rows,
                    &rows[h..],
                    &rows[2 * h..],
                    AttnMask::None,
                    None,
                    scale,
                    &mut ctx[o * h..(o + l) * h],
                    att,
                );
                o += l;
            }
            // The attention output projection goes into the (now free) QKV buffer.
            let proj = &mut qkv[..t * h];
            apply_linear(&layer.attn_out, ctx, t, proj, split, par);
            add_layer_norm(&layer.attn_ln, proj, x, t, x1);
            apply_linear(&layer.inter, x1, t, mid, split, par);
            activation::gelu(mid);
            let ffn = &mut qkv[..t * h];
            apply_linear(&layer.out, mid, t, ffn, split, par);
            add_layer_norm(&layer.out_ln, ffn, x1, t, x);
        }
        Ok(&ws.x[..t * h])
    }
}

fn layer_norm(ln: &LayerNorm<Cpu>, x: &mut [f32], rows: usize) {
    norm::layer_norm_inplace(
        x,
        rows,
        ln.dim,
        ln.gamma.as_slice(),
        ln.beta.as_slice(),
        ln.eps,
    );
}

fn add_layer_norm(ln: &LayerNorm<Cpu>, x: &[f32], residual: &[f32], rows: usize, out: &mut [f32]) {
    norm::add_layer_norm(
        x,
        residual,
        rows,
        ln.dim,
        ln.gamma.as_slice(),
        ln.beta.as_slice(),
        ln.eps,
        out,
    );
}

/// Products smaller than this many multiply-adds are not split across threads (tests split
/// every product, to exercise the split on small models).
const PAR_MIN_MACS: usize = if cfg!(test) { 1 } else { 1 << 18 };

/// `out = x·Wᵀ + b` over `rows` rows, for columns `j0 .. j1` of `lin` into `out` (`rows`
/// rows of `j1 - j0` values).
fn linear_cols(
    lin: &BertLinear,
    x: &[f32],
    rows: usize,
    (j0, j1): (usize, usize),
    out: &mut [f32],
) {
    let (k, nb) = (lin.in_dim, j1 - j0);
    let (x, out) = (&x[..rows * k], &mut out[..rows * nb]);
    let b = Some(&lin.b.as_slice()[j0..j1]);
    match &lin.w {
        LayerWeight::F32(w) => {
            linear::linear(x, &w.as_slice()[j0 * k..j1 * k], b, out, rows, k, nb)
        }
        LayerWeight::F16(w) => linear::linear_f16(x, &w[j0 * k..j1 * k], b, out, rows, k, nb),
        LayerWeight::I16 { q, scales } => {
            let (q, s) = (&q[j0 * k..j1 * k], &scales[j0..j1]);
            linear::linear_i16(x, q, s, b, out, rows, k, nb)
        }
    }
}

/// Blocks of output features per rayon thread when a product is split: a few, so that a
/// thread that is descheduled (a machine shared with other work) or slowed does not hold up
/// the whole product, while the others take its blocks.
const BLOCKS_PER_THREAD: usize = 4;

/// `out = x·Wᵀ + b` over `rows` rows. With `par`, the output features are split into
/// [`BLOCKS_PER_THREAD`] blocks per rayon thread (of at least 32 features), each computed into
/// its own buffer of `split` and copied into place.
fn apply_linear(
    lin: &BertLinear,
    x: &[f32],
    rows: usize,
    out: &mut [f32],
    split: &mut Vec<Vec<f32>>,
    par: bool,
) {
    let (k, n) = (lin.in_dim, lin.out_dim);
    let threads = if par && rows * k * n >= PAR_MIN_MACS {
        rayon::current_num_threads().min(n / 8).max(1)
    } else {
        1
    };
    if threads == 1 {
        linear_cols(lin, x, rows, (0, n), out);
        return;
    }
    // Blocks of output features, rounded to 8 columns.
    let blocks = (threads * BLOCKS_PER_THREAD).min(n / 32).max(threads);
    let block = n.div_ceil(blocks).div_ceil(8) * 8;
    let parts = n.div_ceil(block);
    if split.len() < parts {
        split.resize_with(parts, Vec::new);
    }
    use rayon::prelude::*;
    split[..parts]
        .par_iter_mut()
        .enumerate()
        .for_each(|(p, buf)| {
            let (j0, j1) = (p * block, ((p + 1) * block).min(n));
            if buf.len() < rows * (j1 - j0) {
                buf.resize(rows * (j1 - j0), 0.0);
            }
            linear_cols(lin, x, rows, (j0, j1), buf);
        });
    for (p, buf) in split[..parts].iter().enumerate() {
        let (j0, j1) = (p * block, ((p + 1) * block).min(n));
        let nb = j1 - j0;
        for (r, src) in buf[..rows * nb].chunks_exact(nb).enumerate() {
            out[r * n + j0..r * n + j1].copy_from_slice(src);
        }
    }
}

/// Activation buffers of [`Bert::forward`], grown to the largest batch seen and then reused.
#[derive(Debug, Default)]
pub struct BertWorkspace {
    x: Vec<f32>,
    x1: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    mid: Vec<f32>,
    att: Vec<f32>,
    split: Vec<Vec<f32>>,
}

impl BertWorkspace {
    fn reserve(&mut self, t: usize, h: usize, inner: usize, att: usize) {
        fn grow(v: &mut Vec<f32>, n: usize) {
            if v.len() < n {
                v.resize(n, 0.0);
            }
        }
        grow(&mut self.x, t * h);
        grow(&mut self.x1, t * h);
        grow(&mut self.ctx, t * h);
        grow(&mut self.qkv, t * 3 * h);
        grow(&mut self.mid, t * inner);
        grow(&mut self.att, att);
    }

    /// Bytes held by the activation buffers.
    pub fn capacity_bytes(&self) -> usize {
        let split: usize = self.split.iter().map(Vec::capacity).sum();
        4 * (self.x.capacity()
            + self.x1.capacity()
            + self.qkv.capacity()
            + self.ctx.capacity()
            + self.mid.capacity()
            + self.att.capacity()
            + split)
    }
}
