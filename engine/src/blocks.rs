//! The block library: weights of each building block, loaded by RecBole tensor name and
//! shape-checked, resident on a [`Backend`]. The computation of each block is the backend's
//! (see [`crate::backend`]); the models in [`crate::models`] compose blocks.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::weights::{DType, Tensor, TensorLoader};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use half::{bf16, f16};
use seqrec_kernels::cpu::activation::Activation;
use seqrec_kernels::cpu::score::quantize_rows_i8_vec;

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

/// A linear layer `y = x·Wᵀ + b`, `W: [out_dim, in_dim]` (PyTorch layout).
#[derive(Debug)]
pub struct Linear<B: Backend> {
    /// Weight `[out_dim, in_dim]`.
    pub w: B::Param,
    /// Optional bias `[out_dim]`.
    pub b: Option<B::Param>,
    /// Input width.
    pub in_dim: usize,
    /// Output width.
    pub out_dim: usize,
}

impl<B: Backend> Linear<B> {
    /// Loads `{prefix}.weight` and, if `bias`, `{prefix}.bias`.
    pub fn load(
        be: &B,
        ld: &mut TensorLoader<'_>,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let w = ld.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let b = if bias {
            Some(be.upload(&ld.get(&format!("{prefix}.bias"), &[out_dim])?)?)
        } else {
            None
        };
        Ok(Linear {
            w: be.upload(&w)?,
            b,
            in_dim,
            out_dim,
        })
    }

    /// Stacks several `[out_i, in]` layers into one `[Σ out_i, in]` layer (e.g. the query, key
    /// and value projections into one product).
    pub fn load_fused(
        be: &B,
        ld: &mut TensorLoader<'_>,
        prefixes: &[&str],
        in_dim: usize,
        out_dim: usize,
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
        Ok(Linear {
            w: be.upload(&Tensor::from_vec(vec![n, in_dim], w)?)?,
            b: Some(be.upload(&Tensor::from_vec(vec![n], b)?)?),
            in_dim,
            out_dim: n,
        })
    }
}

/// LayerNorm over the last axis (biased variance, `eps` inside the square root).
#[derive(Debug)]
pub struct LayerNorm<B: Backend> {
    /// Scale γ.
    pub gamma: B::Param,
    /// Shift β.
    pub beta: B::Param,
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
            gamma: be.upload(&ld.get(&format!("{prefix}.weight"), &[dim])?)?,
            beta: be.upload(&ld.get(&format!("{prefix}.bias"), &[dim])?)?,
            dim,
            eps,
        })
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
        if n_heads == 0 || hidden % n_heads != 0 {
            return Err(Error::Config(format!(
                "hidden_size {hidden} is not divisible by n_heads {n_heads}"
            )));
        }
        let names = [
            format!("{prefix}.query"),
            format!("{prefix}.key"),
            format!("{prefix}.value"),
        ];
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        Ok(AttentionBlock {
            qkv: Linear::load_fused(be, ld, &refs, hidden, hidden)?,
            dense: Linear::load(be, ld, &format!("{prefix}.dense"), hidden, hidden, true)?,
            ln: LayerNorm::load(be, ld, &format!("{prefix}.LayerNorm"), hidden, eps)?,
            n_heads,
            head_dim: hidden / n_heads,
        })
    }

    /// Model width H.
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

/// NextItNet residual block (b): two dilated causal convolutions (dilation d, then 2d), each
/// followed by LayerNorm (eps 1e-8) and ReLU, plus the residual.
#[derive(Debug)]
pub struct NextItNetBlock<B: Backend> {
    /// First convolution, packed tap-major (see `seqrec_kernels::cpu::conv::pack_conv_taps`).
    pub conv1: B::Param,
    /// First convolution's bias.
    pub bias1: B::Param,
    /// LayerNorm after the first convolution.
    pub ln1: LayerNorm<B>,
    /// Second convolution, packed.
    pub conv2: B::Param,
    /// Second convolution's bias.
    pub bias2: B::Param,
    /// LayerNorm after the second convolution.
    pub ln2: LayerNorm<B>,
    /// Channels (= embedding size).
    pub channels: usize,
    /// Kernel width.
    pub kernel: usize,
    /// Dilation of the first convolution (the second uses twice this).
    pub dilation: usize,
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
        let mut conv = |name: &str| -> Result<(B::Param, B::Param)> {
            let w = ld.get(&format!("{prefix}.{name}.weight"), &[c, c, 1, kernel])?;
            let b = ld.get(&format!("{prefix}.{name}.bias"), &[c])?;
            let packed = seqrec_kernels::cpu::conv::pack_conv_taps(w.as_slice(), c, c, kernel);
            let len = packed.len();
            Ok((
                be.upload(&Tensor::from_vec(vec![len], packed)?)?,
                be.upload(&b)?,
            ))
        };
        let (conv1, bias1) = conv("conv1")?;
        let (conv2, bias2) = conv("conv2")?;
        Ok(NextItNetBlock {
            conv1,
            bias1,
            ln1: LayerNorm::load(be, ld, &format!("{prefix}.ln1"), c, 1e-8)?,
            conv2,
            bias2,
            ln2: LayerNorm::load(be, ld, &format!("{prefix}.ln2"), c, 1e-8)?,
            channels: c,
            kernel,
            dilation,
        })
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

/// The catalog's item vectors used for scoring, optionally stored in half precision to halve
/// the bytes read per request, or as int8 to shortlist the top-k (a quarter of the bytes)
/// before re-scoring the shortlist from the f32 rows.
#[derive(Debug)]
pub struct ItemTable<B: Backend> {
    /// Number of rows (items, padding row 0 included).
    pub rows: usize,
    /// Row width.
    pub dim: usize,
    /// The rows.
    pub data: ItemData<B>,
}

/// Storage of an [`ItemTable`].
#[derive(Debug)]
pub enum ItemData<B: Backend> {
    /// f32 rows (the embedding table itself, shared with the input embedding).
    F32(B::Param),
    /// f16 copy, row-major `[rows, dim]`.
    F16(Vec<f16>),
    /// bf16 copy, row-major `[rows, dim]`.
    BF16(Vec<bf16>),
    /// int8 copy with one scale per row (`seqrec_kernels::cpu::score::quantize_rows_i8`) that
    /// bounds every f32 score, and the f32 rows that re-score the items the bounds cannot rule
    /// out: top-k selections equal the f32 table's; full-catalog scores come from `exact`.
    I8 {
        /// Quantized rows `[rows, dim]`.
        q: Vec<i8>,
        /// Scale of every row `[rows]`.
        scales: Vec<f32>,
        /// The f32 rows (the embedding table itself).
        exact: B::Param,
    },
}

impl<B: Backend> ItemTable<B> {
    /// Builds the scoring table from the f32 item embedding `[rows, dim]`.
    pub fn new(be: &B, table: &Tensor, dtype: DType) -> Result<Self> {
        let (rows, dim) = match table.shape() {
            [r, d] => (*r, *d),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "item table must be 2-D, found shape {other:?}"
                )));
            }
        };
        let data = match dtype {
            DType::F32 => ItemData::F32(be.upload(table)?),
            DType::F16 => {
                ItemData::F16(table.as_slice().iter().map(|&v| f16::from_f32(v)).collect())
            }
            DType::BF16 => ItemData::BF16(
                table
                    .as_slice()
                    .iter()
                    .map(|&v| bf16::from_f32(v))
                    .collect(),
            ),
            DType::I16 => {
                return Err(Error::InvalidArgument(
                    "an item table is stored as f32, f16, bf16 or i8 (i16 is a storage of text \
                     encoder weights)"
                        .into(),
                ));
            }
            DType::I8 => {
                let (q, scales) = quantize_rows_i8_vec(table.as_slice(), rows, dim);
                ItemData::I8 {
                    q,
                    scales,
                    exact: be.upload(table)?,
                }
            }
        };
        Ok(ItemTable { rows, dim, data })
    }

    /// Storage dtype.
    pub fn dtype(&self) -> DType {
        match self.data {
            ItemData::F32(_) => DType::F32,
            ItemData::F16(_) => DType::F16,
            ItemData::BF16(_) => DType::BF16,
            ItemData::I8 { .. } => DType::I8,
        }
    }
}
