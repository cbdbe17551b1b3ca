//! The blocks of a diffusion transformer (DiT, and PDiT's temporal blocks): names and layouts
//! of facebookresearch/DiT's `state_dict` (`spec/pdit.md` §2). Their computation is the
//! backend's ([`Backend::dit_block`], [`Backend::temporal_block`], [`Backend::final_layer`]).

use super::{Activation, CrossAttention, LayerNorm, Linear, heads};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::weights::TensorLoader;
use alloc::format;

/// DiT's `TimestepEmbedder`: the sinusoid of the (0-based) step, then `Linear`, SiLU, `Linear`.
#[derive(Debug)]
pub struct TimestepEmbedder<B: Backend> {
    /// `t_embedder.mlp.0`, `[H, F]`.
    pub mlp0: Linear<B>,
    /// `t_embedder.mlp.2`, `[H, H]`.
    pub mlp2: Linear<B>,
    /// Width F of the sinusoid.
    pub freq: usize,
    /// The sinusoid's longest period.
    pub max_period: f64,
}

impl<B: Backend> TimestepEmbedder<B> {
    /// Loads `{prefix}.mlp.0` and `{prefix}.mlp.2`.
    pub fn load(
        be: &B,
        ld: &mut TensorLoader<'_>,
        prefix: &str,
        hidden: usize,
        freq: usize,
        max_period: f64,
    ) -> Result<Self> {
        Ok(TimestepEmbedder {
            mlp0: Linear::load(be, ld, &format!("{prefix}.mlp.0"), freq, hidden, true)?,
            mlp2: Linear::load(be, ld, &format!("{prefix}.mlp.2"), hidden, hidden, true)?,
            freq,
            max_period,
        })
    }
}

/// Multi-head self-attention without residual or norm (timm's `Attention`): fused Q/K/V
/// projection (`[3H, H]`, rows `[q | k | v]`) and output projection.
#[derive(Debug)]
pub struct SelfAttention<B: Backend> {
    /// `{prefix}.qkv`, `[3H, H]`.
    pub qkv: Linear<B>,
    /// `{prefix}.proj`, `[H, H]`.
    pub proj: Linear<B>,
    /// Heads.
    pub n_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl<B: Backend> SelfAttention<B> {
    /// Loads `{prefix}.qkv` and `{prefix}.proj`.
    pub fn load(
        be: &B,
        ld: &mut TensorLoader<'_>,
        prefix: &str,
        hidden: usize,
        n_heads: usize,
    ) -> Result<Self> {
        Ok(SelfAttention {
            qkv: Linear::load(be, ld, &format!("{prefix}.qkv"), hidden, 3 * hidden, true)?,
            proj: Linear::load(be, ld, &format!("{prefix}.proj"), hidden, hidden, true)?,
            n_heads,
            head_dim: heads(hidden, n_heads)?,
        })
    }

    /// Token width H.
    pub fn hidden(&self) -> usize {
        self.n_heads * self.head_dim
    }
}

/// timm's `Mlp`: `fc2(act(fc1(x)))` (DiT: GELU's tanh approximation).
#[derive(Debug)]
pub struct Mlp<B: Backend> {
    /// `{prefix}.fc1`, `[M, H]`.
    pub fc1: Linear<B>,
    /// `{prefix}.fc2`, `[H, M]`.
    pub fc2: Linear<B>,
    /// The activation between them.
    pub act: Activation,
}

impl<B: Backend> Mlp<B> {
    /// Loads `{prefix}.fc1` and `{prefix}.fc2`.
    pub fn load(
        be: &B,
        ld: &mut TensorLoader<'_>,
        prefix: &str,
        hidden: usize,
        inner: usize,
        act: Activation,
    ) -> Result<Self> {
        Ok(Mlp {
            fc1: Linear::load(be, ld, &format!("{prefix}.fc1"), hidden, inner, true)?,
            fc2: Linear::load(be, ld, &format!("{prefix}.fc2"), inner, hidden, true)?,
            act,
        })
    }
}

/// A DiT block with adaLN-Zero: from the conditioning `SiLU(c)`,
/// `(sh1, sc1, g1, sh2, sc2, g2) = adaLN(SiLU(c))`, then
/// `x += g1 ⊙ attn(LN(x)·(1 + sc1) + sh1)` and `x += g2 ⊙ mlp(LN(x)·(1 + sc2) + sh2)`, the
/// LayerNorms without affine parameters.
#[derive(Debug)]
pub struct DitBlock<B: Backend> {
    /// `adaLN_modulation.1`, `[6H, H]`.
    pub ada: Linear<B>,
    /// `attn`.
    pub attn: SelfAttention<B>,
    /// `mlp`.
    pub mlp: Mlp<B>,
    /// Epsilon of the LayerNorms.
    pub eps: f32,
}

impl<B: Backend> DitBlock<B> {
    /// Loads `{prefix}.adaLN_modulation.1`, `{prefix}.attn.*`, `{prefix}.mlp.*`.
    pub fn load(
        be: &B,
        ld: &mut TensorLoader<'_>,
        prefix: &str,
        hidden: usize,
        n_heads: usize,
        inner: usize,
        eps: f32,
    ) -> Result<Self> {
        Ok(DitBlock {
            ada: Linear::load(
                be,
                ld,
                &format!("{prefix}.adaLN_modulation.1"),
                hidden,
                6 * hidden,
                true,
            )?,
            attn: SelfAttention::load(be, ld, &format!("{prefix}.attn"), hidden, n_heads)?,
            mlp: Mlp::load(
                be,
                ld,
                &format!("{prefix}.mlp"),
                hidden,
                inner,
                Activation::GeluTanh,
            )?,
            eps,
        })
    }

    /// Token width H.
    pub fn hidden(&self) -> usize {
        self.attn.hidden()
    }
}

/// A temporal block (PDiT_tem, pre-LN, affine LayerNorms, no adaLN):
/// optionally `x += attn(LN1(x))`, then `x += cross(LN_c(x), Ĥ)` over the history rows and
/// `x += mlp(LN2(x))`.
#[derive(Debug)]
pub struct TemporalBlock<B: Backend> {
    /// `norm1` and `attn`, with `tem_self_attn`.
    pub self_attn: Option<(LayerNorm<B>, SelfAttention<B>)>,
    /// `norm_cross`.
    pub norm_cross: LayerNorm<B>,
    /// `cross_attn` (`q`, `kv` over the history latents, `proj`).
    pub cross: CrossAttention<B>,
    /// `norm2`.
    pub norm2: LayerNorm<B>,
    /// `mlp`.
    pub mlp: Mlp<B>,
}

impl<B: Backend> TemporalBlock<B> {
    /// Loads `{prefix}.norm_cross`, `.cross_attn.*`, `.norm2`, `.mlp.*` and, with
    /// `self_attn`, `.norm1` and `.attn.*`; the history rows are `ctx_dim` wide.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        be: &B,
        ld: &mut TensorLoader<'_>,
        prefix: &str,
        hidden: usize,
        ctx_dim: usize,
        n_heads: usize,
        inner: usize,
        eps: f32,
        self_attn: bool,
    ) -> Result<Self> {
        let self_attn = if self_attn {
            Some((
                LayerNorm::load(be, ld, &format!("{prefix}.norm1"), hidden, eps)?,
                SelfAttention::load(be, ld, &format!("{prefix}.attn"), hidden, n_heads)?,
            ))
        } else {
            None
        };
        Ok(TemporalBlock {
            self_attn,
            norm_cross: LayerNorm::load(be, ld, &format!("{prefix}.norm_cross"), hidden, eps)?,
            cross: CrossAttention::load(
                be,
                ld,
                &format!("{prefix}.cross_attn"),
                hidden,
                ctx_dim,
                n_heads,
            )?,
            norm2: LayerNorm::load(be, ld, &format!("{prefix}.norm2"), hidden, eps)?,
            mlp: Mlp::load(
                be,
                ld,
                &format!("{prefix}.mlp"),
                hidden,
                inner,
                Activation::GeluTanh,
            )?,
        })
    }
}

/// DiT's final layer: `(shift, scale) = adaLN(SiLU(c))`, then
/// `linear(LN(x)·(1 + scale) + shift)` per token, the LayerNorm without affine parameters.
#[derive(Debug)]
pub struct FinalLayer<B: Backend> {
    /// `adaLN_modulation.1`, `[2H, H]`.
    pub ada: Linear<B>,
    /// `linear`, `[P, H]`.
    pub linear: Linear<B>,
    /// Epsilon of the LayerNorm.
    pub eps: f32,
}

impl<B: Backend> FinalLayer<B> {
    /// Loads `{prefix}.adaLN_modulation.1` and `{prefix}.linear`.
    pub fn load(
        be: &B,
        ld: &mut TensorLoader<'_>,
        prefix: &str,
        hidden: usize,
        out: usize,
        eps: f32,
    ) -> Result<Self> {
        if out == 0 {
            return Err(Error::Config(format!(
                "{prefix}: a final layer needs at least one output per token"
            )));
        }
        Ok(FinalLayer {
            ada: Linear::load(
                be,
                ld,
                &format!("{prefix}.adaLN_modulation.1"),
                hidden,
                2 * hidden,
                true,
            )?,
            linear: Linear::load(be, ld, &format!("{prefix}.linear"), hidden, out, true)?,
            eps,
        })
    }
}
