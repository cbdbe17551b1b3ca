//! The block library: weights of each building block, loaded by tensor name and
//! shape-checked, resident on a [`Backend`]. The computation of each block is the backend's
//! (see [`crate::backend`]); the models in [`crate::models`] compose blocks.

mod dit;

pub use dit::{DitBlock, FinalLayer, Mlp, SelfAttention, TemporalBlock, TimestepEmbedder};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::weights::{DType, Tensor, TensorLoader};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// An element-wise activation, applied by [`Backend::activate`] and fused into
/// [`Backend::linear`] (the device-neutral description every kernel set shares).
pub use seqrec_kernels::Activation;

/// [`Activation::from_name`] of the configuration key `key`, or a configuration error naming it.
pub fn activation_from_config(key: &str, name: &str) -> Result<Activation> {
    Activation::from_name(name).ok_or_else(|| {
        Error::Config(format!(
            "{key} `{name}` is not one of gelu, relu, swish, tanh, sigmoid"
        ))
    })
}

/// An embedding table `[rows, dim]`.
#[derive(Debug)]
pub struct Embedding<B: Backend> {
    /// The table.
    pub table: B::Param,
    /// Number of rows.
    pub rows: usize,
    /// Row width.
    pub dim: usize,
}

impl<B: Backend> Embedding<B> {
    /// Loads `name` (`[rows, dim]`).
    pub fn load(
        be: &B,
        ld: &mut TensorLoader<'_>,
        name: &str,
        rows: usize,
        dim: usize,
    ) -> Result<Self> {
        let t = ld.get(name, &[rows, dim])?;
        Ok(Embedding {
            table: be.upload(&t)?,
            rows,
            dim,
        })
    }
}

/// A linear layer `y = x·Wᵀ + b`, `W: [out_dim, in_dim]` (PyTorch layout), the weight in the
/// storage dtype it was loaded with.
#[derive(Debug)]
pub struct Linear<B: Backend> {
    /// Weight `[out_dim, in_dim]`.
    pub w: B::Weight,
    /// Optional bias `[out_dim]`.
    pub b: Option<B::Param>,
    /// Input width.
    pub in_dim: usize,
    /// Output width.
    pub out_dim: usize,
}

impl<B: Backend> Linear<B> {
    /// Loads `{prefix}.weight` and, if `bias`, `{prefix}.bias` (f32 weight).
    pub fn load(
        be: &B,
        ld: &mut TensorLoader<'_>,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        Self::load_as(be, ld, prefix, in_dim, out_dim, bias, DType::F32)
    }

    /// [`Self::load`] with the weight stored as `dtype` (see [`Backend::upload_weight`]).
    pub fn load_as(
        be: &B,
        ld: &mut TensorLoader<'_>,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        dtype: DType,
    ) -> Result<Self> {
        let w = ld.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let b = if bias {
            Some(be.upload(&ld.get(&format!("{prefix}.bias"), &[out_dim])?)?)
        } else {
            None
        };
        Ok(Linear {
            w: be
                .upload_weight(&w, dtype)
                .map_err(|e| named(e, &format!("{prefix}.weight")))?,
            b,
            in_dim,
            out_dim,
        })
    }

    /// Stacks several `[out_dim, in]` layers with biases into one `[Σ out, in]` layer (e.g. the
    /// query, key and value projections into one product), the weight stored as `dtype`.
    pub fn load_fused(
        be: &B,
        ld: &mut TensorLoader<'_>,
        prefixes: &[&str],
        in_dim: usize,
        out_dim: usize,
        dtype: DType,
    ) -> Result<Self> {
        // Every part is shape-checked before anything is allocated: the sizes come from the
        // configuration, which may be corrupt.
        let parts = prefixes
            .iter()
            .map(|p| {
                Ok((
                    ld.get(&format!("{p}.weight"), &[out_dim, in_dim])?,
                    ld.get(&format!("{p}.bias"), &[out_dim])?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let w: Vec<f32> = parts
            .iter()
            .flat_map(|(w, _)| w.as_slice())
            .copied()
            .collect();
        let b: Vec<f32> = parts
            .iter()
            .flat_map(|(_, b)| b.as_slice())
            .copied()
            .collect();
        let n = prefixes.len() * out_dim;
        let w = Tensor::from_vec(vec![n, in_dim], w)?;
        let names: Vec<String> = prefixes.iter().map(|p| format!("{p}.weight")).collect();
        let names = names.join(", ");
        Ok(Linear {
            w: be.upload_weight(&w, dtype).map_err(|e| named(e, &names))?,
            b: Some(be.upload(&Tensor::from_vec(vec![n], b)?)?),
            in_dim,
            out_dim: n,
        })
    }
}

/// Names the layer in a weight-storage error.
fn named(e: Error, layer: &str) -> Error {
    match e {
        Error::Config(m) => Error::Config(format!("{layer}: {m}")),
        Error::Unsupported(m) => Error::Unsupported(format!("{layer}: {m}")),
        e => e,
    }
}

/// The scale and shift of an affine [`LayerNorm`].
#[derive(Debug)]
pub struct Affine<B: Backend> {
    /// Scale γ.
    pub gamma: B::Param,
    /// Shift β.
    pub beta: B::Param,
}

/// LayerNorm over the last axis (biased variance, `eps` inside the square root), affine or not
/// (DiT's `elementwise_affine=False`).
#[derive(Debug)]
pub struct LayerNorm<B: Backend> {
    /// γ and β; `None` for a LayerNorm without affine parameters.
    pub affine: Option<Affine<B>>,
    /// Width.
    pub dim: usize,
    /// Epsilon.
    pub eps: f32,
}

impl<B: Backend> LayerNorm<B> {
    /// Loads `{prefix}.weight` and `{prefix}.bias`.
    pub fn load(
        be: &B,
        ld: &mut TensorLoader<'_>,
        prefix: &str,
        dim: usize,
        eps: f32,
    ) -> Result<Self> {
        Ok(LayerNorm {
            affine: Some(Affine {
                gamma: be.upload(&ld.get(&format!("{prefix}.weight"), &[dim])?)?,
                beta: be.upload(&ld.get(&format!("{prefix}.bias"), &[dim])?)?,
            }),
            dim,
            eps,
        })
    }

    /// A LayerNorm without affine parameters.
    pub fn plain(dim: usize, eps: f32) -> Self {
        LayerNorm {
            affine: None,
            dim,
            eps,
        }
    }
}

/// Multi-head self-attention sublayer (BERT / RecBole `MultiHeadAttention`): fused Q/K/V
/// projection, scaled dot-product attention, output projection, residual and LayerNorm.
#[derive(Debug)]
pub struct AttentionBlock<B: Backend> {
    /// Q, K and V projections stacked: `[3H, H]`.
    pub qkv: Linear<B>,
    /// Output projection `[H, H]`.
    pub dense: Linear<B>,
    /// Post-residual LayerNorm.
    pub ln: LayerNorm<B>,
    /// Number of heads.
    pub n_heads: usize,
    /// Width of one head (`H / n_heads`).
    pub head_dim: usize,
}

/// Checks that `hidden` splits into `n_heads` heads.
pub(crate) fn heads(hidden: usize, n_heads: usize) -> Result<usize> {
    if n_heads == 0 || hidden % n_heads != 0 {
        return Err(Error::Config(format!(
            "hidden_size {hidden} is not divisible by n_heads {n_heads}"
        )));
    }
    Ok(hidden / n_heads)
}

impl<B: Backend> AttentionBlock<B> {
    /// Loads RecBole's `{prefix}.{query,key,value,dense}` and `{prefix}.LayerNorm`.
    pub fn load(
        be: &B,
        ld: &mut TensorLoader<'_>,
        prefix: &str,
        hidden: usize,
        n_heads: usize,
        eps: f32,
    ) -> Result<Self> {
        heads(hidden, n_heads)?;
        let names = [
            format!("{prefix}.query"),
            format!("{prefix}.key"),
            format!("{prefix}.value"),
        ];
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let qkv = Linear::load_fused(be, ld, &refs, hidden, hidden, DType::F32)?;
        let dense = Linear::load(be, ld, &format!("{prefix}.dense"), hidden, hidden, true)?;
        let ln = LayerNorm::load(be, ld, &format!("{prefix}.LayerNorm"), hidden, eps)?;
        Self::new(qkv, dense, ln, n_heads)
    }

    /// A block from its parts (`qkv`: `[3H, H]`, `dense`: `[H, H]`), e.g. loaded under other
    /// tensor names.
    pub fn new(qkv: Linear<B>, dense: Linear<B>, ln: LayerNorm<B>, n_heads: usize) -> Result<Self> {
        let hidden = dense.out_dim;
        let head_dim = heads(hidden, n_heads)?;
        if qkv.out_dim != 3 * hidden || qkv.in_dim != hidden || dense.in_dim != hidden {
            return Err(Error::Config(format!(
                "attention projections [{}, {}] and [{}, {}] do not make a block of width {hidden}",
                qkv.out_dim, qkv.in_dim, dense.out_dim, dense.in_dim
            )));
        }
        Ok(AttentionBlock {
            qkv,
            dense,
            ln,
            n_heads,
            head_dim,
        })
    }

    /// Model width H.
    pub fn hidden(&self) -> usize {
        self.n_heads * self.head_dim
    }
}

/// Multi-head cross-attention (timm / DiT naming): queries from the tokens, keys and values
/// from a context, output projection; no residual and no norm (the caller adds them).
#[derive(Debug)]
pub struct CrossAttention<B: Backend> {
    /// Query projection `[H, H]`.
    pub q: Linear<B>,
    /// Key and value projections stacked, `[2H, ctx_dim]`.
    pub kv: Linear<B>,
    /// Output projection `[H, H]`.
    pub proj: Linear<B>,
    /// Number of heads.
    pub n_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl<B: Backend> CrossAttention<B> {
    /// Loads `{prefix}.q`, `{prefix}.kv` and `{prefix}.proj` (weights and biases) for tokens of
    /// width `hidden` attending to a context of width `ctx_dim`.
    pub fn load(
        be: &B,
        ld: &mut TensorLoader<'_>,
        prefix: &str,
        hidden: usize,
        ctx_dim: usize,
        n_heads: usize,
    ) -> Result<Self> {
        let head_dim = heads(hidden, n_heads)?;
        Ok(CrossAttention {
            q: Linear::load(be, ld, &format!("{prefix}.q"), hidden, hidden, true)?,
            kv: Linear::load(be, ld, &format!("{prefix}.kv"), ctx_dim, 2 * hidden, true)?,
            proj: Linear::load(be, ld, &format!("{prefix}.proj"), hidden, hidden, true)?,
            n_heads,
            head_dim,
        })
    }

    /// Token width H.
    pub fn hidden(&self) -> usize {
        self.n_heads * self.head_dim
    }
}

/// Point-wise feed-forward sublayer: `LN(dense_2(act(dense_1(x))) + x)`.
#[derive(Debug)]
pub struct FeedForward<B: Backend> {
    /// `[inner, H]`.
    pub dense_1: Linear<B>,
    /// `[H, inner]`.
    pub dense_2: Linear<B>,
    /// Activation after `dense_1`.
    pub act: Activation,
    /// Post-residual LayerNorm.
    pub ln: LayerNorm<B>,
}

impl<B: Backend> FeedForward<B> {
    /// Loads RecBole's `{prefix}.dense_1`, `{prefix}.dense_2`, `{prefix}.LayerNorm`.
    pub fn load(
        be: &B,
        ld: &mut TensorLoader<'_>,
        prefix: &str,
        hidden: usize,
        inner: usize,
        act: Activation,
        eps: f32,
    ) -> Result<Self> {
        Ok(FeedForward {
            dense_1: Linear::load(be, ld, &format!("{prefix}.dense_1"), hidden, inner, true)?,
            dense_2: Linear::load(be, ld, &format!("{prefix}.dense_2"), inner, hidden, true)?,
            act,
            ln: LayerNorm::load(be, ld, &format!("{prefix}.LayerNorm"), hidden, eps)?,
        })
    }
}

/// One layer of a PyTorch `nn.GRU` (gate blocks ordered r, z, n).
#[derive(Debug)]
pub struct GruLayer<B: Backend> {
    /// `[3·hidden, input]`.
    pub w_ih: B::Param,
    /// `[3·hidden, hidden]`.
    pub w_hh: B::Param,
    /// `[3·hidden]`, absent in RecBole's GRU4Rec (`bias=False`).
    pub b_ih: Option<B::Param>,
    /// `[3·hidden]`.
    pub b_hh: Option<B::Param>,
    /// Input width.
    pub input: usize,
    /// Hidden width.
    pub hidden: usize,
}

impl<B: Backend> GruLayer<B> {
    /// Loads `{prefix}.weight_ih_l{k}` etc. (PyTorch names); biases only if `bias`.
    pub fn load(
        be: &B,
        ld: &mut TensorLoader<'_>,
        prefix: &str,
        k: usize,
        input: usize,
        hidden: usize,
        bias: bool,
    ) -> Result<Self> {
        let gates = hidden
            .checked_mul(3)
            .ok_or_else(|| Error::Config(format!("hidden size {hidden} is too large")))?;
        let w_ih = ld.get(&format!("{prefix}.weight_ih_l{k}"), &[gates, input])?;
        let w_hh = ld.get(&format!("{prefix}.weight_hh_l{k}"), &[gates, hidden])?;
        let (b_ih, b_hh) = if bias {
            (
                Some(be.upload(&ld.get(&format!("{prefix}.bias_ih_l{k}"), &[gates])?)?),
                Some(be.upload(&ld.get(&format!("{prefix}.bias_hh_l{k}"), &[gates])?)?),
            )
        } else {
            (None, None)
        };
        Ok(GruLayer {
            w_ih: be.upload(&w_ih)?,
            w_hh: be.upload(&w_hh)?,
            b_ih,
            b_hh,
            input,
            hidden,
        })
    }
}

/// A dilated causal 1-D convolution (a PyTorch `Conv2d` with a `[1, k]` kernel over the time
/// axis, as NextItNet applies it to the left-padded sequence).
#[derive(Debug)]
pub struct CausalConv<B: Backend> {
    /// The filters `[c_out, c_in, 1, k]` in the layout the backend's convolution reads
    /// ([`Backend::upload_conv`]); tap `j` multiplies the row `(k − 1 − j)·d` steps back.
    pub taps: B::Param,
    /// Bias `[c_out]`.
    pub bias: B::Param,
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel width k.
    pub kernel: usize,
    /// Dilation d.
    pub dilation: usize,
}

impl<B: Backend> CausalConv<B> {
    /// Loads `{prefix}.weight` (`[c_out, c_in, 1, k]`) and `{prefix}.bias`.
    pub fn load(
        be: &B,
        ld: &mut TensorLoader<'_>,
        prefix: &str,
        channels: usize,
        kernel: usize,
        dilation: usize,
    ) -> Result<Self> {
        let c = channels;
        let w = ld.get(&format!("{prefix}.weight"), &[c, c, 1, kernel])?;
        let b = ld.get(&format!("{prefix}.bias"), &[c])?;
        Ok(CausalConv {
            taps: be.upload_conv(&w)?,
            bias: be.upload(&b)?,
            c_in: c,
            c_out: c,
            kernel,
            dilation,
        })
    }
}

/// NextItNet residual block (b): two dilated causal convolutions (dilation d, then 2d), each
/// followed by LayerNorm (eps 1e-8) and ReLU, plus the residual.
#[derive(Debug)]
pub struct NextItNetBlock<B: Backend> {
    /// First convolution (dilation d).
    pub conv1: CausalConv<B>,
    /// LayerNorm after the first convolution.
    pub ln1: LayerNorm<B>,
    /// Second convolution (dilation 2d).
    pub conv2: CausalConv<B>,
    /// LayerNorm after the second convolution.
    pub ln2: LayerNorm<B>,
}

impl<B: Backend> NextItNetBlock<B> {
    /// Loads `{prefix}.conv1`, `.ln1`, `.conv2`, `.ln2` (weights `[C, C, 1, k]`).
    pub fn load(
        be: &B,
        ld: &mut TensorLoader<'_>,
        prefix: &str,
        channels: usize,
        kernel: usize,
        dilation: usize,
    ) -> Result<Self> {
        let c = channels;
        let conv1 = CausalConv::load(be, ld, &format!("{prefix}.conv1"), c, kernel, dilation)?;
        let ln1 = LayerNorm::load(be, ld, &format!("{prefix}.ln1"), c, 1e-8)?;
        let conv2 = CausalConv::load(be, ld, &format!("{prefix}.conv2"), c, kernel, 2 * dilation)?;
        let ln2 = LayerNorm::load(be, ld, &format!("{prefix}.ln2"), c, 1e-8)?;
        Ok(NextItNetBlock {
            conv1,
            ln1,
            conv2,
            ln2,
        })
    }

    /// Channels (= embedding size).
    pub fn channels(&self) -> usize {
        self.conv1.c_out
    }
}

/// Caser's vertical and horizontal convolutions over the `[L, E]` item image.
#[derive(Debug)]
pub struct CaserConvs<B: Backend> {
    /// Vertical filters `[nv, L]`.
    pub conv_v: B::Param,
    /// Vertical biases `[nv]`.
    pub bias_v: B::Param,
    /// Horizontal filters of height i = 1..=L: `[nh, i·E]`.
    pub conv_h: Vec<(B::Param, B::Param)>,
    /// Window length L.
    pub len: usize,
    /// Embedding width E.
    pub dim: usize,
    /// Number of vertical filters.
    pub nv: usize,
    /// Number of horizontal filters per height.
    pub nh: usize,
}

impl<B: Backend> CaserConvs<B> {
    /// Loads `conv_v.*` and `conv_h.{i-1}.*` (PyTorch `Conv2d` layouts).
    pub fn load(
        be: &B,
        ld: &mut TensorLoader<'_>,
        len: usize,
        dim: usize,
        nv: usize,
        nh: usize,
    ) -> Result<Self> {
        let conv_v = ld.get("conv_v.weight", &[nv, 1, len, 1])?;
        let bias_v = ld.get("conv_v.bias", &[nv])?;
        let mut conv_h = Vec::with_capacity(len);
        for i in 1..=len {
            let w = ld.get(&format!("conv_h.{}.weight", i - 1), &[nh, 1, i, dim])?;
            let b = ld.get(&format!("conv_h.{}.bias", i - 1), &[nh])?;
            conv_h.push((be.upload(&w)?, be.upload(&b)?));
        }
        Ok(CaserConvs {
            conv_v: be.upload(&conv_v)?,
            bias_v: be.upload(&bias_v)?,
            conv_h,
            len,
            dim,
            nv,
            nh,
        })
    }

    /// Width of the concatenated output, `nv·E + nh·L`.
    pub fn out_dim(&self) -> usize {
        self.nv * self.dim + self.nh * self.len
    }
}

/// The catalog's item vectors used for scoring, in the storage the backend keeps them in
/// ([`Backend::upload_items`]): f32, or f16 / bf16 to halve the bytes read per request, or
/// int8 to shortlist the top-k (a quarter of the bytes) before re-scoring the shortlist from
/// the f32 rows.
#[derive(Debug)]
pub struct ItemTable<B: Backend> {
    /// Number of rows (items, padding row 0 included).
    pub rows: usize,
    /// Row width.
    pub dim: usize,
    /// Storage dtype.
    pub dtype: DType,
    /// The rows.
    pub data: B::Items,
}

impl<B: Backend> ItemTable<B> {
    /// Builds the scoring table from the f32 item table `[rows, dim]`.
    pub fn new(be: &B, table: &Tensor, dtype: DType) -> Result<Self> {
        let (rows, dim) = match table.shape() {
            [r, d] => (*r, *d),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "item table must be 2-D, found shape {other:?}"
                )));
            }
        };
        if dtype == DType::I16 {
            return Err(Error::InvalidArgument(
                "an item table is stored as f32, f16, bf16 or i8 (i16 is a storage of text \
                 encoder weights)"
                    .into(),
            ));
        }
        Ok(ItemTable {
            rows,
            dim,
            dtype,
            data: be.upload_items(table, dtype)?,
        })
    }

    /// Storage dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
}
