//! The trainable PDiT network (`spec/pdit.md` §2–3): the engine's tensor names, so
//! [`PditModel::to_safetensors`] writes a checkpoint `seqrec_engine::pdit::Pdit` loads, and a
//! forward over a batch of samples that computes what the engine's `Pdit::forward` computes,
//! keeping what the backward needs.
//!
//! Backward, from the gradient of the outputs `[ε ‖ v]`: the final layer, the temporal blocks
//! (collecting the gradient of `Ĥ = H + hist_pos_embed`, whose rows of real history items go
//! into `hist_pos_embed`), `tem_embedder`, the DiT blocks, `x_embedder`; every adaLN layer and
//! the final layer add the gradient of `SiLU(c)`, which goes through SiLU into `c`, then into
//! `p_embedder` (variants full and gen) and `t_embedder.mlp.2` → SiLU → `t_embedder.mlp.0`
//! (the sinusoid is constant).

use super::blocks::{
    DitBlock, DitCache, FinalCache, FinalLayer, Init, TemporalBlock, TemporalCache, TemporalShape,
    linear,
};
use crate::error::{Error, Result};
use crate::nn::activation::{ActCache, act_backward, act_forward};
use crate::nn::{Activation, Linear, Module, Param, Rng};
use seqrec_engine::pdit::PditConfig;
use seqrec_engine::{Backend, CONFIG_KEY, Config, Cpu};
use seqrec_kernels::cpu::vector;

/// A batch of network inputs: `samples` latents `z_t` at steps `t`, their prompt latents and
/// histories (both at the network's scale, i.e. already multiplied by `latent_scale`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PditBatch {
    /// Samples.
    pub samples: usize,
    /// `z_t`, `[samples, d]`.
    pub z: Vec<f32>,
    /// Steps `t` in `1..=T`, one per sample.
    pub t: Vec<usize>,
    /// Prompt latents `[samples, d_p]` (read by variants full and gen).
    pub p: Vec<f32>,
    /// History latents `[samples·ctx, d]`, sample `s` in rows `s·ctx ..`, oldest first,
    /// padded with zeros after `lens[s]` rows (read by variants full and tem).
    pub hist: Vec<f32>,
    /// History rows per sample, each in `1..=ctx`.
    pub lens: Vec<usize>,
    /// Rows per sample in `hist` (the longest history).
    pub ctx: usize,
}

impl PditBatch {
    /// The histories packed without padding (`[Σ lens, d]`), as the engine takes them.
    pub fn packed_history(&self, d: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.lens.iter().sum::<usize>() * d);
        for (s, &n) in self.lens.iter().enumerate() {
            out.extend_from_slice(&self.hist[s * self.ctx * d..(s * self.ctx + n) * d]);
        }
        out
    }
}

/// The trainable PDiT.
#[derive(Clone, Debug)]
pub struct PditModel {
    cfg: PditConfig,
    config: Config,
    x_embedder: Linear,
    t_mlp0: Linear,
    t_mlp2: Linear,
    p_embedder: Option<Linear>,
    blocks: Vec<DitBlock>,
    hist_pos: Option<Param>,
    tem_embedder: Option<Linear>,
    tem_blocks: Vec<TemporalBlock>,
    final_layer: FinalLayer,
}

/// What [`PditModel::forward`] keeps.
#[derive(Debug)]
pub struct PditCache {
    samples: usize,
    temb: Vec<f32>,
    c1: ActCache,
    s1: Vec<f32>,
    p: Vec<f32>,
    c: ActCache,
    cact: Vec<f32>,
    z: Vec<f32>,
    blocks: Vec<DitCache>,
    tem_in: Vec<f32>,
    lens: Vec<usize>,
    ctx: usize,
    tem_blocks: Vec<TemporalCache>,
    final_layer: FinalCache,
}

/// The standard deviation of `hist_pos_embed` at initialisation (timm's learned position
/// embeddings; the spec leaves it open).
const POS_STD: f32 = 0.02;

impl PditModel {
    /// A freshly initialised network for the PDiT configuration `config` (checked as the engine
    /// checks it), initialised as `spec/pdit.md` §3 says: Xavier-uniform DiT linears
    /// (`x_embedder`, attention, MLPs) with zero biases, `t_embedder.mlp.{0,2}` from
    /// `N(0, 0.02²)`, every `adaLN_modulation.1` and `final_layer.linear` zero (so the network
    /// starts at ε = v = 0), PyTorch's defaults for the temporal blocks and the embedders
    /// `p_embedder`, `tem_embedder`; `hist_pos_embed` from `N(0, 0.02²)`.
    pub fn new(config: Config, rng: &mut Rng) -> Result<PditModel> {
        let cfg = PditConfig::from_config(&config)?;
        let (d, h, k, m) = (cfg.latent_dim, cfg.hidden, cfg.tokens, cfg.mlp_hidden);
        let v = cfg.variant;
        let x_embedder = linear("x_embedder", d, k * h, Init::Xavier, rng);
        let t_mlp0 = linear("t_embedder.mlp.0", cfg.freq, h, Init::Normal(0.02), rng);
        let t_mlp2 = linear("t_embedder.mlp.2", h, h, Init::Normal(0.02), rng);
        let p_embedder = v
            .has_gen()
            .then(|| linear("p_embedder", cfg.cond_dim, h, Init::Torch, rng));
        let blocks = if v.has_gen() {
            (0..cfg.depth_gen)
                .map(|i| DitBlock::new(&format!("blocks.{i}"), h, cfg.heads, m, cfg.ln_eps, rng))
                .collect()
        } else {
            Vec::new()
        };
        let (hist_pos, tem_embedder, tem_blocks) = if v.has_tem() {
            let pos = Param::normal("hist_pos_embed", &[cfg.max_hist_len, d], POS_STD, rng);
            let emb = linear("tem_embedder", h, h, Init::Torch, rng);
            let blocks = (0..cfg.depth_tem)
                .map(|i| {
                    let prefix = format!("tem_blocks.{i}");
                    TemporalBlock::new(
                        &prefix,
                        h,
                        d,
                        cfg.heads,
                        m,
                        cfg.tem_ln_eps,
                        cfg.tem_self_attn,
                        rng,
                    )
                })
                .collect();
            (Some(pos), Some(emb), blocks)
        } else {
            (None, None, Vec::new())
        };
        let final_layer = FinalLayer::new(h, cfg.per_token(), cfg.ln_eps, rng);
        Ok(PditModel {
            cfg,
            config,
            x_embedder,
            t_mlp0,
            t_mlp2,
            p_embedder,
            blocks,
            hist_pos,
            tem_embedder,
            tem_blocks,
            final_layer,
        })
    }

    /// The checked configuration.
    pub fn config(&self) -> &PditConfig {
        &self.cfg
    }

    /// The configuration as stored in checkpoints.
    pub fn raw_config(&self) -> &Config {
        &self.config
    }

    /// A checkpoint the engine loads (`seqrec.config` in the metadata).
    pub fn to_safetensors(&self) -> seqrec_engine::Result<Vec<u8>> {
        let json = self.config.to_json();
        crate::nn::param::to_safetensors(&self.params(), &[(CONFIG_KEY, json.as_str())])
    }

    /// Checks a batch against the configuration (a caller bug if it fails: batches are built
    /// by the trainer from checked data).
    fn check(&self, b: &PditBatch) -> Result<()> {
        let c = &self.cfg;
        let s = b.samples;
        let bad = |m: String| Err(Error::Invalid(format!("pdit batch: {m}")));
        if b.z.len() != s * c.latent_dim || b.t.len() != s {
            return bad(format!(
                "{} latents and {} steps for {s} samples",
                b.z.len(),
                b.t.len()
            ));
        }
        if let Some(&t) = b.t.iter().find(|&&t| t == 0 || t > c.timesteps) {
            return bad(format!("t = {t} is outside 1..={}", c.timesteps));
        }
        if c.variant.has_gen() && b.p.len() != s * c.cond_dim {
            return bad(format!(
                "{} prompt values for {s} samples of {}",
                b.p.len(),
                c.cond_dim
            ));
        }
        if c.variant.has_tem() {
            if b.lens.len() != s || b.hist.len() != s * b.ctx * c.latent_dim {
                return bad(format!(
                    "{} history values for {s} samples of {} rows",
                    b.hist.len(),
                    b.ctx
                ));
            }
            if let Some(&n) = b
                .lens
                .iter()
                .find(|&&n| n == 0 || n > b.ctx || n > c.max_hist_len)
            {
                return bad(format!(
                    "a history of {n} rows (1..={} allowed)",
                    c.max_hist_len
                ));
            }
        }
        Ok(())
    }

    /// The outputs `[samples, k·P]` (each row ε, then v with learn_sigma) and the cache for
    /// [`Self::backward`].
    pub fn forward(&self, b: &PditBatch) -> Result<(Vec<f32>, PditCache)> {
        self.check(b)?;
        let c = &self.cfg;
        let (s, k, d) = (b.samples, c.tokens, c.latent_dim);
        // The condition: TEmb(t) (+ p_embedder(p)), read by every block as SiLU(c).
        let mut temb = vec![0.0f32; s * c.freq];
        let cpu = Cpu::new();
        for (i, &t) in b.t.iter().enumerate() {
            cpu.timestep_embedding((t - 1) as f64, c.freq, c.max_period, &mut temb, i * c.freq)?;
        }
        let mut s1 = self.t_mlp0.infer(&temb, s);
        let c1 = act_forward(Activation::Silu, &mut s1);
        let mut cv = self.t_mlp2.infer(&s1, s);
        if let Some(pe) = &self.p_embedder {
            vector::add(&mut cv, &pe.infer(&b.p, s));
        }
        let mut cact = cv;
        let cc = act_forward(Activation::Silu, &mut cact);
        // Tokens and the DiT blocks.
        let mut x = self.x_embedder.infer(&b.z, s);
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for blk in &self.blocks {
            let (y, cache) = blk.forward(x, &cact, s, k);
            blocks.push(cache);
            x = y;
        }
        // The temporal blocks over Ĥ = H + hist_pos_embed.
        let (mut tem_in, mut valid, mut tem_blocks) = (Vec::new(), Vec::new(), Vec::new());
        if let (Some(pos), Some(emb)) = (&self.hist_pos, &self.tem_embedder) {
            let mut hist = b.hist.clone();
            for (i, &n) in b.lens.iter().enumerate() {
                for j in 0..b.ctx {
                    valid.push(j < n);
                    if j < n {
                        let r = (i * b.ctx + j) * d;
                        vector::add(&mut hist[r..r + d], &pos.value[j * d..(j + 1) * d]);
                    }
                }
            }
            tem_in = x;
            x = emb.infer(&tem_in, s * k);
            let sh = TemporalShape {
                samples: s,
                tokens: k,
                n: b.ctx,
            };
            for blk in &self.tem_blocks {
                let (y, cache) = blk.forward(x, &hist, &valid, sh);
                tem_blocks.push(cache);
                x = y;
            }
        }
        let (out, final_layer) = self.final_layer.forward(x, &cact, s, k);
        let p = if self.p_embedder.is_some() {
            b.p.clone()
        } else {
            Vec::new()
        };
        let cache = PditCache {
            samples: s,
            temb,
            c1,
            s1,
            p,
            c: cc,
            cact,
            z: b.z.clone(),
            blocks,
            tem_in,
            lens: b.lens.clone(),
            ctx: b.ctx,
            tem_blocks,
            final_layer,
        };
        Ok((out, cache))
    }

    /// Adds every parameter's gradient for the outputs' gradient `d_out` (`[samples, k·P]`).
    pub fn backward(&mut self, c: &PditCache, d_out: &[f32]) {
        let cfg = &self.cfg;
        let (s, h, k, d) = (c.samples, cfg.hidden, cfg.tokens, cfg.latent_dim);
        let mut d_cact = vec![0.0f32; s * h];
        let mut dx = self
            .final_layer
            .backward(&c.final_layer, &c.cact, d_out, &mut d_cact);
        if let (Some(pos), Some(emb)) = (&mut self.hist_pos, &mut self.tem_embedder) {
            let mut d_hist = vec![0.0f32; s * c.ctx * d];
            for (blk, cache) in self.tem_blocks.iter_mut().zip(&c.tem_blocks).rev() {
                dx = blk.backward(cache, &dx, &mut d_hist);
            }
            let mut d_in = vec![0.0; s * k * h];
            emb.backward_with_input(&c.tem_in, s * k, &dx, &mut d_in, false);
            dx = d_in;
            for (i, &n) in c.lens.iter().enumerate() {
                for j in 0..n {
                    let r = (i * c.ctx + j) * d;
                    vector::add(&mut pos.grad[j * d..(j + 1) * d], &d_hist[r..r + d]);
                }
            }
        }
        for (blk, cache) in self.blocks.iter_mut().zip(&c.blocks).rev() {
            dx = blk.backward(cache, &c.cact, &dx, &mut d_cact);
        }
        let mut dz = vec![0.0; s * d];
        self.x_embedder
            .backward_with_input(&c.z, s, &dx, &mut dz, false);
        // SiLU(c) → c → p_embedder and the timestep MLP.
        act_backward(&c.c, &mut d_cact);
        let dc = d_cact;
        if let Some(pe) = &mut self.p_embedder {
            let mut dp = vec![0.0; s * cfg.cond_dim];
            pe.backward_with_input(&c.p, s, &dc, &mut dp, false);
        }
        let mut ds1 = vec![0.0; s * h];
        self.t_mlp2
            .backward_with_input(&c.s1, s, &dc, &mut ds1, false);
        act_backward(&c.c1, &mut ds1);
        let mut dt = vec![0.0; c.temb.len()];
        self.t_mlp0
            .backward_with_input(&c.temb, s, &ds1, &mut dt, false);
    }
}

crate::module_of_fields!(PditModel: x_embedder, t_mlp0, t_mlp2, p_embedder, blocks, hist_pos, tem_embedder, tem_blocks, final_layer);
