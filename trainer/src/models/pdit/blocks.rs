//! The trainable blocks of PDiT's network (`spec/pdit.md` §3), each with a forward that keeps
//! what its backward needs and a hand-derived backward, computing what the engine's blocks
//! compute for the same weights (`engine/src/blocks/dit.rs`, `engine/src/backend/compose.rs`).
//!
//! Activations are `samples` groups of `tokens` rows of width H (`[samples·tokens, H]`); the
//! condition `SiLU(c)` is one row of H per sample, broadcast over its tokens.
//!
//! - [`Attention`] (timm `Attention`): fused `qkv` (rows `[q | k | v]`), multi-head softmax
//!   attention over the tokens of a sample with no mask, `proj`. Backward through
//!   [`crate::nn::attention::attention_backward`].
//! - [`CrossAttention`]: queries `q(x)` of the tokens, keys and values `kv(Ĥ)` of the sample's
//!   history rows (padded rows masked), `proj`; backward also gives `dĤ`.
//! - [`Mlp`] (timm `Mlp`): `fc2(GELU_tanh(fc1(x)))`.
//! - Modulation: `LN(x)·(1 + scale) + shift` is an affine LayerNorm with `γ = 1 + scale`,
//!   `β = shift` per sample (as the engine's CPU backend computes it), so its backward is
//!   [`norm::layer_norm_backward`], whose `dγ`, `dβ` are the gradients of `scale` and `shift`
//!   (summed over the sample's tokens). The gated residual `x += g ⊙ y` gives
//!   `dy = dx ⊙ g` and `dg = Σ_tokens dx ⊙ y`.
//! - [`DitBlock`]: `mods = adaLN(SiLU(c))` (six chunks), `x += g1 ⊙ attn(mod(LN(x); sh1, sc1))`,
//!   `x += g2 ⊙ mlp(mod(LN(x); sh2, sc2))`; backward gives `dx` and adds `d SiLU(c)`.
//! - [`TemporalBlock`]: pre-LN (affine) residual sublayers, no gates: optional self-attention,
//!   cross-attention to the history, MLP.
//! - [`FinalLayer`]: `(shift, scale) = adaLN(SiLU(c))`, `linear(mod(LN(x); shift, scale))`.

use crate::nn::activation::{ActCache, act_backward, act_forward};
use crate::nn::attention::{AttnShape, attention_backward, attention_context, attention_probs};
use crate::nn::norm::LayerNormCache;
use crate::nn::{Activation, LayerNorm, Linear, Module, Param, Rng};
use seqrec_kernels::cpu::{norm, vector};

/// How a linear layer starts (`spec/pdit.md` §3, "Initialisation").
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Init {
    /// DiT's `_basic_init`: Xavier-uniform weight, zero bias.
    Xavier,
    /// `N(0, std²)` weight, zero bias (DiT's timestep embedder, std 0.02).
    Normal(f32),
    /// Zero weight and bias (adaLN-Zero, DiT's final linear).
    Zero,
    /// PyTorch's `nn.Linear` default: weight and bias uniform in `±1/sqrt(fan_in)`.
    Torch,
}

/// A linear layer `prefix` (`in_dim → out_dim`, with bias) initialised by `init`.
pub fn linear(prefix: &str, in_dim: usize, out_dim: usize, init: Init, rng: &mut Rng) -> Linear {
    let mut l = Linear::new(prefix, in_dim, out_dim, true, 0.0, rng);
    match init {
        Init::Xavier => l.weight.init_xavier_uniform(rng),
        Init::Normal(std) => l.weight.init_normal(rng, std),
        Init::Zero => {}
        Init::Torch => {
            let bound = 1.0 / (in_dim.max(1) as f32).sqrt();
            l.weight.init_uniform(rng, bound);
            if let Some(b) = &mut l.bias {
                b.init_uniform(rng, bound);
            }
        }
    }
    l
}

/// Adds the parameter gradients of `lin` for `d_out` at its input `x` (`rows` rows) and
/// returns the input gradient.
fn lin_back(lin: &mut Linear, x: &[f32], rows: usize, d_out: &[f32]) -> Vec<f32> {
    let mut dx = vec![0.0; rows * lin.in_dim];
    lin.backward_with_input(x, rows, d_out, &mut dx, false);
    dx
}

/// `a += b`, element-wise.
fn add(a: &mut [f32], b: &[f32]) {
    vector::add(a, b);
}

/// timm's `Attention`: fused `qkv`, unmasked multi-head attention over each sample's tokens,
/// `proj`.
#[derive(Clone, Debug)]
pub struct Attention {
    /// `{prefix}.qkv`, `[3H, H]`.
    pub qkv: Linear,
    /// `{prefix}.proj`, `[H, H]`.
    pub proj: Linear,
    /// Heads.
    pub heads: usize,
}

/// What [`Attention::backward`] needs.
#[derive(Clone, Debug)]
pub struct AttentionCache {
    shape: AttnShape,
    x: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    probs: Vec<f32>,
    ctx: Vec<f32>,
}

/// The three `[rows, H]` parts of a fused `[rows, 3H]` projection.
fn split3(qkv: &[f32], h: usize) -> [Vec<f32>; 3] {
    let rows = qkv.len() / (3 * h).max(1);
    let mut parts = [
        Vec::with_capacity(rows * h),
        Vec::with_capacity(rows * h),
        Vec::with_capacity(rows * h),
    ];
    for row in qkv.chunks_exact(3 * h) {
        for (p, part) in parts.iter_mut().enumerate() {
            part.extend_from_slice(&row[p * h..(p + 1) * h]);
        }
    }
    parts
}

/// The fused `[rows, 3H]` gradient of three `[rows, H]` ones (the backward of [`split3`]).
fn join3(parts: [&[f32]; 3], h: usize) -> Vec<f32> {
    let rows = parts[0].len() / h.max(1);
    let mut out = Vec::with_capacity(3 * rows * h);
    for r in 0..rows {
        for part in parts {
            out.extend_from_slice(&part[r * h..(r + 1) * h]);
        }
    }
    out
}

impl Attention {
    /// `{prefix}.qkv` and `{prefix}.proj` over width `hidden`, initialised by `init`.
    pub fn new(prefix: &str, hidden: usize, heads: usize, init: Init, rng: &mut Rng) -> Self {
        Attention {
            qkv: linear(&format!("{prefix}.qkv"), hidden, 3 * hidden, init, rng),
            proj: linear(&format!("{prefix}.proj"), hidden, hidden, init, rng),
            heads,
        }
    }

    /// Self-attention within each of `samples` groups of `tokens` rows of `x`.
    pub fn forward(&self, x: &[f32], samples: usize, tokens: usize) -> (Vec<f32>, AttentionCache) {
        let h = self.proj.out_dim;
        let rows = samples * tokens;
        let shape = AttnShape::self_attention(samples, tokens, self.heads, h / self.heads, false);
        let [q, k, v] = split3(&self.qkv.infer(x, rows), h);
        let mut probs = vec![0.0; shape.probs_len()];
        attention_probs(&shape, &q, &k, None, &mut probs);
        let mut ctx = vec![0.0; rows * h];
        attention_context(&shape, &probs, &v, &mut ctx);
        let y = self.proj.infer(&ctx, rows);
        let cache = AttentionCache {
            shape,
            x: x.to_vec(),
            q,
            k,
            v,
            probs,
            ctx,
        };
        (y, cache)
    }

    /// Adds the parameter gradients for `dy` and returns `dx`.
    pub fn backward(&mut self, c: &AttentionCache, dy: &[f32]) -> Vec<f32> {
        let h = self.proj.out_dim;
        let rows = c.shape.batch * c.shape.len;
        let d_ctx = lin_back(&mut self.proj, &c.ctx, rows, dy);
        let (dq, dk, dv) = attention_backward(&c.shape, &c.q, &c.k, &c.v, &c.probs, None, &d_ctx);
        let d_qkv = join3([&dq, &dk, &dv], h);
        lin_back(&mut self.qkv, &c.x, rows, &d_qkv)
    }
}

crate::module_of_fields!(Attention: qkv, proj);

/// Cross-attention from each sample's tokens to its history rows.
#[derive(Clone, Debug)]
pub struct CrossAttention {
    /// `{prefix}.q`, `[H, H]`.
    pub q: Linear,
    /// `{prefix}.kv`, `[2H, d]` (rows `[k | v]`).
    pub kv: Linear,
    /// `{prefix}.proj`, `[H, H]`.
    pub proj: Linear,
    /// Heads.
    pub heads: usize,
}

/// What [`CrossAttention::backward`] needs.
#[derive(Clone, Debug)]
pub struct CrossCache {
    shape: AttnShape,
    x: Vec<f32>,
    ctx: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    probs: Vec<f32>,
    att: Vec<f32>,
}

impl CrossAttention {
    /// `{prefix}.{q,kv,proj}`: tokens of width `hidden`, history rows of width `ctx_dim`.
    pub fn new(prefix: &str, hidden: usize, ctx_dim: usize, heads: usize, rng: &mut Rng) -> Self {
        let lin = |name: &str, i, o, rng: &mut Rng| {
            linear(&format!("{prefix}.{name}"), i, o, Init::Torch, rng)
        };
        CrossAttention {
            q: lin("q", hidden, hidden, rng),
            kv: lin("kv", ctx_dim, 2 * hidden, rng),
            proj: lin("proj", hidden, hidden, rng),
            heads,
        }
    }

    /// The attention of `samples` groups of `tokens` rows of `x` to their `n` rows of `ctx`
    /// (`[samples·n, d]`), `valid[s·n + j]` false where row `j` of sample `s` pads.
    pub fn forward(
        &self,
        x: &[f32],
        ctx: &[f32],
        valid: &[bool],
        samples: usize,
        tokens: usize,
        n: usize,
    ) -> (Vec<f32>, CrossCache) {
        let h = self.proj.out_dim;
        let rows = samples * tokens;
        let shape = AttnShape {
            batch: samples,
            len: tokens,
            keys: n,
            heads: self.heads,
            head_dim: h / self.heads,
            causal: false,
        };
        let q = self.q.infer(x, rows);
        let kv = self.kv.infer(ctx, samples * n);
        let (mut k, mut v) = (
            Vec::with_capacity(kv.len() / 2),
            Vec::with_capacity(kv.len() / 2),
        );
        for row in kv.chunks_exact(2 * h) {
            k.extend_from_slice(&row[..h]);
            v.extend_from_slice(&row[h..]);
        }
        let mut probs = vec![0.0; shape.probs_len()];
        attention_probs(&shape, &q, &k, Some(valid), &mut probs);
        let mut att = vec![0.0; rows * h];
        attention_context(&shape, &probs, &v, &mut att);
        let y = self.proj.infer(&att, rows);
        let cache = CrossCache {
            shape,
            x: x.to_vec(),
            ctx: ctx.to_vec(),
            q,
            k,
            v,
            probs,
            att,
        };
        (y, cache)
    }

    /// Adds the parameter gradients for `dy`; returns `(dx, d ctx)`.
    pub fn backward(&mut self, c: &CrossCache, dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let h = self.proj.out_dim;
        let rows = c.shape.batch * c.shape.len;
        let d_att = lin_back(&mut self.proj, &c.att, rows, dy);
        let (dq, dk, dv) = attention_backward(&c.shape, &c.q, &c.k, &c.v, &c.probs, None, &d_att);
        let mut d_kv = Vec::with_capacity(2 * dk.len());
        for (a, b) in dk.chunks_exact(h).zip(dv.chunks_exact(h)) {
            d_kv.extend_from_slice(a);
            d_kv.extend_from_slice(b);
        }
        let d_ctx = lin_back(&mut self.kv, &c.ctx, c.shape.batch * c.shape.keys, &d_kv);
        (lin_back(&mut self.q, &c.x, rows, &dq), d_ctx)
    }
}

crate::module_of_fields!(CrossAttention: q, kv, proj);

/// timm's `Mlp` with GELU's tanh approximation.
#[derive(Clone, Debug)]
pub struct Mlp {
    /// `{prefix}.fc1`, `[M, H]`.
    pub fc1: Linear,
    /// `{prefix}.fc2`, `[H, M]`.
    pub fc2: Linear,
}

/// What [`Mlp::backward`] needs.
#[derive(Clone, Debug)]
pub struct MlpCache {
    rows: usize,
    x: Vec<f32>,
    act: ActCache,
    a: Vec<f32>,
}

impl Mlp {
    /// `{prefix}.fc1` (`hidden → inner`) and `{prefix}.fc2` (`inner → hidden`).
    pub fn new(prefix: &str, hidden: usize, inner: usize, init: Init, rng: &mut Rng) -> Self {
        Mlp {
            fc1: linear(&format!("{prefix}.fc1"), hidden, inner, init, rng),
            fc2: linear(&format!("{prefix}.fc2"), inner, hidden, init, rng),
        }
    }

    /// `fc2(GELU_tanh(fc1(x)))` over `rows` rows.
    pub fn forward(&self, x: &[f32], rows: usize) -> (Vec<f32>, MlpCache) {
        let mut a = self.fc1.infer(x, rows);
        let act = act_forward(Activation::GeluTanh, &mut a);
        let y = self.fc2.infer(&a, rows);
        let cache = MlpCache {
            rows,
            x: x.to_vec(),
            act,
            a,
        };
        (y, cache)
    }

    /// Adds the parameter gradients for `dy` and returns `dx`.
    pub fn backward(&mut self, c: &MlpCache, dy: &[f32]) -> Vec<f32> {
        let mut da = lin_back(&mut self.fc2, &c.a, c.rows, dy);
        act_backward(&c.act, &mut da);
        lin_back(&mut self.fc1, &c.x, c.rows, &da)
    }
}

crate::module_of_fields!(Mlp: fc1, fc2);

/// Where a modulation reads its chunks: `mods` is `[samples, stride]`, the shift at column
/// `shift·H`, the scale at `scale·H` (and the gate, where there is one, at `gate·H`).
#[derive(Copy, Clone, Debug)]
struct Chunks {
    h: usize,
    stride: usize,
}

impl Chunks {
    fn at(&self, s: usize, chunk: usize) -> core::ops::Range<usize> {
        let o = s * self.stride + chunk * self.h;
        o..o + self.h
    }
}

/// `LN(x)·(1 + scale) + shift` per sample (no affine LayerNorm parameters).
fn modulate(
    x: &[f32],
    tokens: usize,
    eps: f32,
    mods: &[f32],
    ch: Chunks,
    shift: usize,
    scale: usize,
) -> Vec<f32> {
    let h = ch.h;
    let mut out = vec![0.0; x.len()];
    let mut gamma = vec![0.0; h];
    for (s, (xs, os)) in x
        .chunks_exact(tokens * h)
        .zip(out.chunks_exact_mut(tokens * h))
        .enumerate()
    {
        for (g, &v) in gamma.iter_mut().zip(&mods[ch.at(s, scale)]) {
            *g = 1.0 + v;
        }
        norm::layer_norm(xs, tokens, h, &gamma, &mods[ch.at(s, shift)], eps, os);
    }
    out
}

/// The backward of [`modulate`]: returns `dx`, adds the shift's and scale's gradients into
/// `d_mods`.
fn modulate_backward(
    x: &[f32],
    tokens: usize,
    eps: f32,
    mods: &[f32],
    ch: Chunks,
    (shift, scale): (usize, usize),
    d_out: &[f32],
    d_mods: &mut [f32],
) -> Vec<f32> {
    let h = ch.h;
    let mut dx = vec![0.0; x.len()];
    let (mut gamma, mut d_scale, mut d_shift) = (vec![0.0; h], vec![0.0; h], vec![0.0; h]);
    for s in 0..x.len() / (tokens * h).max(1) {
        let r = s * tokens * h..(s + 1) * tokens * h;
        for (g, &v) in gamma.iter_mut().zip(&mods[ch.at(s, scale)]) {
            *g = 1.0 + v;
        }
        d_scale.fill(0.0);
        d_shift.fill(0.0);
        // A modulated LayerNorm is an affine one with γ = 1 + scale, β = shift.
        norm::layer_norm_backward(
            &x[r.clone()],
            tokens,
            h,
            eps,
            &gamma,
            &d_out[r.clone()],
            &mut dx[r],
            &mut d_scale,
            &mut d_shift,
        );
        add(&mut d_mods[ch.at(s, scale)], &d_scale);
        add(&mut d_mods[ch.at(s, shift)], &d_shift);
    }
    dx
}

/// `x += g ⊙ y` with the gate `g` per sample.
fn gated_add(x: &mut [f32], y: &[f32], tokens: usize, mods: &[f32], ch: Chunks, gate: usize) {
    let h = ch.h;
    for (r, (xr, yr)) in x.chunks_exact_mut(h).zip(y.chunks_exact(h)).enumerate() {
        vector::mul_add(xr, &mods[ch.at(r / tokens, gate)], yr);
    }
}

/// The backward of [`gated_add`] for the gradient `dx` of the sum: returns `dy = dx ⊙ g` and
/// adds `Σ_tokens dx ⊙ y` into the gate's gradient.
fn gated_add_backward(
    dx: &[f32],
    y: &[f32],
    tokens: usize,
    mods: &[f32],
    ch: Chunks,
    gate: usize,
    d_mods: &mut [f32],
) -> Vec<f32> {
    let h = ch.h;
    let mut dy = vec![0.0; dx.len()];
    for (r, ((d, yr), out)) in dx
        .chunks_exact(h)
        .zip(y.chunks_exact(h))
        .zip(dy.chunks_exact_mut(h))
        .enumerate()
    {
        let s = r / tokens;
        vector::mul_add(out, d, &mods[ch.at(s, gate)]);
        vector::mul_add(&mut d_mods[ch.at(s, gate)], d, yr);
    }
    dy
}

/// A DiT block with adaLN-Zero modulation.
#[derive(Clone, Debug)]
pub struct DitBlock {
    /// `{prefix}.adaLN_modulation.1`, `[6H, H]`.
    pub ada: Linear,
    /// `{prefix}.attn`.
    pub attn: Attention,
    /// `{prefix}.mlp`.
    pub mlp: Mlp,
    /// Epsilon of the LayerNorms.
    pub eps: f32,
}

/// What [`DitBlock::backward`] needs.
#[derive(Clone, Debug)]
pub struct DitCache {
    samples: usize,
    tokens: usize,
    mods: Vec<f32>,
    x0: Vec<f32>,
    x1: Vec<f32>,
    a: Vec<f32>,
    f: Vec<f32>,
    attn: AttentionCache,
    mlp: MlpCache,
}

impl DitBlock {
    /// `{prefix}.*` initialised as DiT does (Xavier sub-layers, zero adaLN).
    pub fn new(
        prefix: &str,
        hidden: usize,
        heads: usize,
        inner: usize,
        eps: f32,
        rng: &mut Rng,
    ) -> Self {
        DitBlock {
            ada: linear(
                &format!("{prefix}.adaLN_modulation.1"),
                hidden,
                6 * hidden,
                Init::Zero,
                rng,
            ),
            attn: Attention::new(&format!("{prefix}.attn"), hidden, heads, Init::Xavier, rng),
            mlp: Mlp::new(&format!("{prefix}.mlp"), hidden, inner, Init::Xavier, rng),
            eps,
        }
    }

    fn chunks(&self) -> Chunks {
        let h = self.ada.in_dim;
        Chunks { h, stride: 6 * h }
    }

    /// The block on `x` (`[samples·tokens, H]`) conditioned on `cact = SiLU(c)` (`[samples, H]`).
    pub fn forward(
        &self,
        x: Vec<f32>,
        cact: &[f32],
        samples: usize,
        tokens: usize,
    ) -> (Vec<f32>, DitCache) {
        let ch = self.chunks();
        let rows = samples * tokens;
        let mods = self.ada.infer(cact, samples);
        let m1 = modulate(&x, tokens, self.eps, &mods, ch, 0, 1);
        let (a, attn) = self.attn.forward(&m1, samples, tokens);
        let mut x1 = x.clone();
        gated_add(&mut x1, &a, tokens, &mods, ch, 2);
        let m2 = modulate(&x1, tokens, self.eps, &mods, ch, 3, 4);
        let (f, mlp) = self.mlp.forward(&m2, rows);
        let mut x2 = x1.clone();
        gated_add(&mut x2, &f, tokens, &mods, ch, 5);
        let cache = DitCache {
            samples,
            tokens,
            mods,
            x0: x,
            x1,
            a,
            f,
            attn,
            mlp,
        };
        (x2, cache)
    }

    /// Adds the parameter gradients for `d_out`; returns `dx` and adds `d SiLU(c)` into
    /// `d_cact`.
    pub fn backward(
        &mut self,
        c: &DitCache,
        cact: &[f32],
        d_out: &[f32],
        d_cact: &mut [f32],
    ) -> Vec<f32> {
        let ch = self.chunks();
        let (tokens, eps) = (c.tokens, self.eps);
        let mut d_mods = vec![0.0; c.mods.len()];
        // x2 = x1 + g2 ⊙ mlp(mod(LN(x1))).
        let df = gated_add_backward(d_out, &c.f, tokens, &c.mods, ch, 5, &mut d_mods);
        let dm2 = self.mlp.backward(&c.mlp, &df);
        let mut dx1 = modulate_backward(&c.x1, tokens, eps, &c.mods, ch, (3, 4), &dm2, &mut d_mods);
        add(&mut dx1, d_out);
        // x1 = x0 + g1 ⊙ attn(mod(LN(x0))).
        let da = gated_add_backward(&dx1, &c.a, tokens, &c.mods, ch, 2, &mut d_mods);
        let dm1 = self.attn.backward(&c.attn, &da);
        let mut dx0 = modulate_backward(&c.x0, tokens, eps, &c.mods, ch, (0, 1), &dm1, &mut d_mods);
        add(&mut dx0, &dx1);
        self.ada
            .backward_with_input(cact, c.samples, &d_mods, d_cact, true);
        dx0
    }
}

crate::module_of_fields!(DitBlock: attn, mlp, ada);

/// A temporal block: optional self-attention, cross-attention to the history, MLP; each a
/// pre-LN residual with an affine LayerNorm and no gate.
#[derive(Clone, Debug)]
pub struct TemporalBlock {
    /// `{prefix}.norm1` and `{prefix}.attn` (with `tem_self_attn`).
    pub self_attn: Option<(LayerNorm, Attention)>,
    /// `{prefix}.norm_cross`.
    pub norm_cross: LayerNorm,
    /// `{prefix}.cross_attn`.
    pub cross: CrossAttention,
    /// `{prefix}.norm2`.
    pub norm2: LayerNorm,
    /// `{prefix}.mlp`.
    pub mlp: Mlp,
}

/// What [`TemporalBlock::backward`] needs.
#[derive(Clone, Debug)]
pub struct TemporalCache {
    self_attn: Option<(LayerNormCache, AttentionCache)>,
    norm_cross: LayerNormCache,
    cross: CrossCache,
    norm2: LayerNormCache,
    mlp: MlpCache,
}

/// Sizes of a temporal block's call: `samples` groups of `tokens` rows, each attending to `n`
/// history rows.
#[derive(Copy, Clone, Debug)]
pub struct TemporalShape {
    /// Samples.
    pub samples: usize,
    /// Tokens per sample.
    pub tokens: usize,
    /// History rows per sample (the longest history of the batch; shorter ones are padded).
    pub n: usize,
}

impl TemporalBlock {
    /// `{prefix}.*` over tokens of width `hidden` and history rows of width `ctx_dim`, with
    /// PyTorch's default initialisation (`spec/pdit.md` §3).
    pub fn new(
        prefix: &str,
        hidden: usize,
        ctx_dim: usize,
        heads: usize,
        inner: usize,
        eps: f32,
        self_attn: bool,
        rng: &mut Rng,
    ) -> Self {
        let ln = |name: &str| LayerNorm::new(&format!("{prefix}.{name}"), hidden, eps);
        TemporalBlock {
            self_attn: self_attn.then(|| {
                (
                    ln("norm1"),
                    Attention::new(&format!("{prefix}.attn"), hidden, heads, Init::Torch, rng),
                )
            }),
            norm_cross: ln("norm_cross"),
            cross: CrossAttention::new(
                &format!("{prefix}.cross_attn"),
                hidden,
                ctx_dim,
                heads,
                rng,
            ),
            norm2: ln("norm2"),
            mlp: Mlp::new(&format!("{prefix}.mlp"), hidden, inner, Init::Torch, rng),
        }
    }

    /// The block on `x` (`[samples·tokens, H]`) over the history rows `ctx`
    /// (`[samples·n, d]`, `valid` marking the real ones).
    pub fn forward(
        &self,
        mut x: Vec<f32>,
        ctx: &[f32],
        valid: &[bool],
        sh: TemporalShape,
    ) -> (Vec<f32>, TemporalCache) {
        let rows = sh.samples * sh.tokens;
        let self_attn = self.self_attn.as_ref().map(|(ln, att)| {
            let (h, lc) = ln.forward(&x, rows);
            let (y, ac) = att.forward(&h, sh.samples, sh.tokens);
            add(&mut x, &y);
            (lc, ac)
        });
        let (h, norm_cross) = self.norm_cross.forward(&x, rows);
        let (y, cross) = self
            .cross
            .forward(&h, ctx, valid, sh.samples, sh.tokens, sh.n);
        add(&mut x, &y);
        let (h, norm2) = self.norm2.forward(&x, rows);
        let (y, mlp) = self.mlp.forward(&h, rows);
        add(&mut x, &y);
        let cache = TemporalCache {
            self_attn,
            norm_cross,
            cross,
            norm2,
            mlp,
        };
        (x, cache)
    }

    /// Adds the parameter gradients for `d_out`; returns `dx` and adds the history rows'
    /// gradient into `d_ctx`.
    pub fn backward(&mut self, c: &TemporalCache, d_out: &[f32], d_ctx: &mut [f32]) -> Vec<f32> {
        let mut dx = d_out.to_vec();
        let dh = self.mlp.backward(&c.mlp, d_out);
        add(&mut dx, &self.norm2.backward(&c.norm2, &dh));
        let (dh, dc) = self.cross.backward(&c.cross, &dx);
        add(d_ctx, &dc);
        add(&mut dx, &self.norm_cross.backward(&c.norm_cross, &dh));
        if let (Some((ln, att)), Some((lc, ac))) = (&mut self.self_attn, &c.self_attn) {
            let dh = att.backward(ac, &dx);
            add(&mut dx, &ln.backward(lc, &dh));
        }
        dx
    }
}

impl Module for TemporalBlock {
    fn params(&self) -> Vec<&Param> {
        let mut v = Vec::new();
        if let Some((ln, att)) = &self.self_attn {
            v.extend(ln.params());
            v.extend(att.params());
        }
        v.extend(self.norm_cross.params());
        v.extend(self.cross.params());
        v.extend(self.norm2.params());
        v.extend(self.mlp.params());
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = Vec::new();
        if let Some((ln, att)) = &mut self.self_attn {
            v.extend(ln.params_mut());
            v.extend(att.params_mut());
        }
        v.extend(self.norm_cross.params_mut());
        v.extend(self.cross.params_mut());
        v.extend(self.norm2.params_mut());
        v.extend(self.mlp.params_mut());
        v
    }
}

/// DiT's final layer.
#[derive(Clone, Debug)]
pub struct FinalLayer {
    /// `final_layer.adaLN_modulation.1`, `[2H, H]`.
    pub ada: Linear,
    /// `final_layer.linear`, `[P, H]`.
    pub linear: Linear,
    /// Epsilon of the LayerNorm.
    pub eps: f32,
}

/// What [`FinalLayer::backward`] needs.
#[derive(Clone, Debug)]
pub struct FinalCache {
    samples: usize,
    tokens: usize,
    mods: Vec<f32>,
    x: Vec<f32>,
    m: Vec<f32>,
}

impl FinalLayer {
    /// `final_layer.*`, both linears zero (DiT).
    pub fn new(hidden: usize, per_token: usize, eps: f32, rng: &mut Rng) -> Self {
        FinalLayer {
            ada: linear(
                "final_layer.adaLN_modulation.1",
                hidden,
                2 * hidden,
                Init::Zero,
                rng,
            ),
            linear: linear("final_layer.linear", hidden, per_token, Init::Zero, rng),
            eps,
        }
    }

    fn chunks(&self) -> Chunks {
        let h = self.ada.in_dim;
        Chunks { h, stride: 2 * h }
    }

    /// `[samples·tokens, P]` from `x` and `cact = SiLU(c)`.
    pub fn forward(
        &self,
        x: Vec<f32>,
        cact: &[f32],
        samples: usize,
        tokens: usize,
    ) -> (Vec<f32>, FinalCache) {
        let mods = self.ada.infer(cact, samples);
        let m = modulate(&x, tokens, self.eps, &mods, self.chunks(), 0, 1);
        let out = self.linear.infer(&m, samples * tokens);
        let cache = FinalCache {
            samples,
            tokens,
            mods,
            x,
            m,
        };
        (out, cache)
    }

    /// Adds the parameter gradients for `d_out`; returns `dx` and adds `d SiLU(c)` into
    /// `d_cact`.
    pub fn backward(
        &mut self,
        c: &FinalCache,
        cact: &[f32],
        d_out: &[f32],
        d_cact: &mut [f32],
    ) -> Vec<f32> {
        let dm = lin_back(&mut self.linear, &c.m, c.samples * c.tokens, d_out);
        let mut d_mods = vec![0.0; c.mods.len()];
        let dx = modulate_backward(
            &c.x,
            c.tokens,
            self.eps,
            &c.mods,
            self.chunks(),
            (0, 1),
            &dm,
            &mut d_mods,
        );
        self.ada
            .backward_with_input(cact, c.samples, &d_mods, d_cact, true);
        dx
    }
}

crate::module_of_fields!(FinalLayer: ada, linear);
