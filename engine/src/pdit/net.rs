//! The PDiT network `(ε_θ, v_θ) = PDiT(z_t, t, p, H)` (`spec/pdit.md` §3), on any backend,
//! for a batch of samples at once.
//!
//! A request's conditioning that does not change along the sampling chain is computed once
//! ([`PditNet::condition`]): the prompt latent's embedding `p_embedder(p)` and, for every
//! temporal block, the keys and values of the history `Ĥ = H + hist_pos_embed`. Each step then
//! runs [`PditNet::forward`]: the tokens `x_embedder(z_t)` reshaped to `[k, H]`, the condition
//! `c = TEmb(t) (+ p_embedder(p))`, the DiT blocks, the temporal embedding and blocks, and the
//! final layer, whose `k` rows of `P` values are the output `[ε ‖ v]`.

use super::config::PditConfig;
use crate::backend::{At, Backend, BlockScratch, Scale, Src};
use crate::blocks::{
    Activation, DitBlock, Embedding, FinalLayer, Linear, TemporalBlock, TimestepEmbedder,
};
use crate::error::{Error, Result};
use crate::weights::TensorLoader;
use alloc::format;
use alloc::vec::Vec;

/// The network's weights.
#[derive(Debug)]
pub struct PditNet<B: Backend> {
    cfg: PditConfig,
    x_embedder: Linear<B>,
    t_embedder: TimestepEmbedder<B>,
    p_embedder: Option<Linear<B>>,
    blocks: Vec<DitBlock<B>>,
    hist_pos: Option<Embedding<B>>,
    tem_embedder: Option<Linear<B>>,
    tem_blocks: Vec<TemporalBlock<B>>,
    final_layer: FinalLayer<B>,
}

/// The conditioning of a batch of requests that stays the same along a sampling chain.
#[derive(Debug)]
pub struct Conditioning<B: Backend> {
    samples: usize,
    /// `p_embedder(p)` of every sample, `[samples, H]` (variants full and gen).
    p_emb: B::Buf,
    /// Rows of history per sample in `kv` (the longest history of the batch).
    ctx: usize,
    /// Per temporal block: the keys and values of every sample's history, `[samples·ctx, 2H]`.
    kv: Vec<B::Buf>,
    /// Which of the `samples·ctx` history rows are real (the others pad a shorter history).
    valid: Vec<bool>,
    /// `Ĥ`, `[samples·ctx, d]`.
    hist: B::Buf,
}

impl<B: Backend> Default for Conditioning<B> {
    fn default() -> Self {
        Conditioning {
            samples: 0,
            p_emb: B::Buf::default(),
            ctx: 0,
            kv: Vec::new(),
            valid: Vec::new(),
            hist: B::Buf::default(),
        }
    }
}

impl<B: Backend> Conditioning<B> {
    /// Samples conditioned.
    pub fn samples(&self) -> usize {
        self.samples
    }
}

/// Intermediate values of a forward pass, for checking an implementation against the
/// reference's trace (`cases.json`'s `debug`): `[samples, ·]` each.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    /// The condition c.
    pub c: Vec<f32>,
    /// The tokens after `x_embedder`.
    pub tokens_in: Vec<f32>,
    /// The tokens after the DiT blocks (variants full and gen).
    pub after_gen: Option<Vec<f32>>,
    /// The tokens after the temporal blocks (variants full and tem).
    pub after_tem: Option<Vec<f32>>,
}

/// The activations of [`PditNet::forward`], grown to the largest batch and reused.
#[derive(Debug)]
pub struct NetWorkspace<B: Backend> {
    x: B::Buf,
    y: B::Buf,
    temb: B::Buf,
    c1: B::Buf,
    c: B::Buf,
    cact: B::Buf,
    tmp: BlockScratch<B>,
}

impl<B: Backend> Default for NetWorkspace<B> {
    fn default() -> Self {
        NetWorkspace {
            x: B::Buf::default(),
            y: B::Buf::default(),
            temb: B::Buf::default(),
            c1: B::Buf::default(),
            c: B::Buf::default(),
            cact: B::Buf::default(),
            tmp: BlockScratch::default(),
        }
    }
}

impl<B: Backend> PditNet<B> {
    /// Loads every tensor the configuration implies (`spec/pdit.md` §2).
    pub fn load(be: &B, ld: &mut TensorLoader<'_>, cfg: PditConfig) -> Result<Self> {
        let (d, h, k, m) = (cfg.latent_dim, cfg.hidden, cfg.tokens, cfg.mlp_hidden);
        let x_embedder = Linear::load(be, ld, "x_embedder", d, k * h, true)?;
        let t_embedder = TimestepEmbedder::load(be, ld, "t_embedder", h, cfg.freq, cfg.max_period)?;
        let v = cfg.variant;
        let (p_embedder, blocks) = if v.has_gen() {
            let p = Linear::load(be, ld, "p_embedder", cfg.cond_dim, h, true)?;
            let blocks = (0..cfg.depth_gen)
                .map(|i| {
                    let prefix = format!("blocks.{i}");
                    DitBlock::load(be, ld, &prefix, h, cfg.heads, m, cfg.ln_eps)
                })
                .collect::<Result<Vec<_>>>()?;
            (Some(p), blocks)
        } else {
            (None, Vec::new())
        };
        let (hist_pos, tem_embedder, tem_blocks) = if v.has_tem() {
            let pos = ld.get("hist_pos_embed", &[cfg.max_hist_len, d])?;
            let pos = Embedding {
                table: be.upload(&pos)?,
                rows: cfg.max_hist_len,
                dim: d,
            };
            let emb = Linear::load(be, ld, "tem_embedder", h, h, true)?;
            let blocks = (0..cfg.depth_tem)
                .map(|i| {
                    let prefix = format!("tem_blocks.{i}");
                    let (eps, sa) = (cfg.tem_ln_eps, cfg.tem_self_attn);
                    TemporalBlock::load(be, ld, &prefix, h, d, cfg.heads, m, eps, sa)
                })
                .collect::<Result<Vec<_>>>()?;
            (Some(pos), Some(emb), blocks)
        } else {
            (None, None, Vec::new())
        };
        let final_layer = FinalLayer::load(be, ld, "final_layer", h, cfg.per_token(), cfg.ln_eps)?;
        Ok(PditNet {
            cfg,
            x_embedder,
            t_embedder,
            p_embedder,
            blocks,
            hist_pos,
            tem_embedder,
            tem_blocks,
            final_layer,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PditConfig {
        &self.cfg
    }

    /// Conditions `samples` requests: `p` holds their prompt latents (`[samples, cond_dim]`,
    /// read by variants full and gen), `history` their history latents packed oldest first
    /// (`[Σ lens, d]`, sample `s` holding `lens[s]` rows, read by variants full and tem).
    ///
    /// # Errors
    /// A missing input the variant reads, or a history length outside `1..=max_hist_len`.
    pub fn condition(
        &self,
        be: &B,
        samples: usize,
        p: Option<&B::Buf>,
        history: Option<(&B::Buf, &[usize])>,
        cond: &mut Conditioning<B>,
    ) -> Result<()> {
        let c = &self.cfg;
        cond.samples = samples;
        if let Some(pe) = &self.p_embedder {
            let p = p.ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "variant {} needs the prompt latent p",
                    c.variant.name()
                ))
            })?;
            be.linear(pe, p, samples, Activation::Identity, &mut cond.p_emb)?;
        }
        let Some(pos) = &self.hist_pos else {
            return Ok(());
        };
        let (hist, lens) = history.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "variant {} needs the history latents",
                c.variant.name()
            ))
        })?;
        if lens.len() != samples {
            return Err(Error::InvalidArgument(format!(
                "{} history lengths for {samples} samples",
                lens.len()
            )));
        }
        if let Some((s, &n)) = lens
            .iter()
            .enumerate()
            .find(|&(_, &n)| n == 0 || n > c.max_hist_len)
        {
            return Err(Error::InvalidArgument(format!(
                "history of sample {s} has {n} items: expected 1..={} (max_hist_len); keep the \
                 most recent ones",
                c.max_hist_len
            )));
        }
        let (d, ctx) = (c.latent_dim, lens.iter().copied().max().unwrap_or(0));
        cond.ctx = ctx;
        cond.valid.clear();
        be.zero(&mut cond.hist, samples * ctx * d)?;
        let mut row = 0;
        for (s, &n) in lens.iter().enumerate() {
            cond.valid.extend((0..ctx).map(|j| j < n));
            let to = At::rows(s * ctx, d);
            be.copy(Src::Buf(hist), At::rows(row, d), &mut cond.hist, to, n, d)?;
            let one = Scale::All(1.0);
            be.axpy(
                Src::Param(&pos.table),
                At::rows(0, d),
                one,
                &mut cond.hist,
                to,
                n,
                d,
            )?;
            row += n;
        }
        cond.kv.resize_with(self.tem_blocks.len(), B::Buf::default);
        for (blk, kv) in self.tem_blocks.iter().zip(&mut cond.kv) {
            be.linear(
                &blk.cross.kv,
                &cond.hist,
                samples * ctx,
                Activation::Identity,
                kv,
            )?;
        }
        Ok(())
    }

    /// The network's outputs for the `cond.samples()` latents `z` (`[samples, d]`) at network
    /// steps `t` (one per sample, in `1..=T`): `out` is `[samples, k·P]`, each row `ε` then `v`.
    ///
    /// # Errors
    /// A step outside `1..=T`.
    pub fn forward(
        &self,
        be: &B,
        z: &B::Buf,
        t: &[usize],
        cond: &Conditioning<B>,
        ws: &mut NetWorkspace<B>,
        out: &mut B::Buf,
        mut trace: Option<&mut Trace>,
    ) -> Result<()> {
        let c = &self.cfg;
        let (samples, h, k) = (cond.samples, c.hidden, c.tokens);
        if t.len() != samples {
            return Err(Error::InvalidArgument(format!(
                "{} steps for {samples} samples",
                t.len()
            )));
        }
        if let Some(&bad) = t.iter().find(|&&t| t == 0 || t > c.timesteps) {
            return Err(Error::InvalidArgument(format!(
                "t = {bad} is outside 1..={}",
                c.timesteps
            )));
        }
        let NetWorkspace {
            x,
            y,
            temb,
            c1,
            c: cv,
            cact,
            tmp,
        } = ws;
        // Tokens: x_embedder(z_t), [samples, k·H] = [samples·k, H].
        be.linear(&self.x_embedder, z, samples, Activation::Identity, x)?;
        // c = TEmb(t) (+ p_embedder(p)); the blocks read SiLU(c).
        let te = &self.t_embedder;
        for (s, &ts) in t.iter().enumerate() {
            be.timestep_embedding((ts - 1) as f64, te.freq, te.max_period, temb, s * te.freq)?;
        }
        be.linear(&te.mlp0, temb, samples, Activation::Silu, c1)?;
        be.linear(&te.mlp2, c1, samples, Activation::Identity, cv)?;
        let at = At::rows(0, h);
        if self.p_embedder.is_some() {
            be.axpy(
                Src::Buf(&cond.p_emb),
                at,
                Scale::All(1.0),
                cv,
                at,
                samples,
                h,
            )?;
        }
        be.copy_rows(cv, 0, cact, 0, samples, h)?;
        be.activate(Activation::Silu, cact, 0..samples * h)?;
        let tokens = samples * k * h;
        let read = |buf: &B::Buf, len: usize| -> Result<Vec<f32>> {
            let mut v = alloc::vec![0.0; len];
            be.read(buf, 0, &mut v)?;
            Ok(v)
        };
        if let Some(tr) = trace.as_deref_mut() {
            tr.c = read(cv, samples * h)?;
            tr.tokens_in = read(x, tokens)?;
        }
        for blk in &self.blocks {
            be.dit_block(blk, x, samples, k, cact, tmp)?;
        }
        if let Some(tr) = trace.as_deref_mut() {
            tr.after_gen = self
                .p_embedder
                .is_some()
                .then(|| read(x, tokens))
                .transpose()?;
        }
        if let Some(emb) = &self.tem_embedder {
            be.linear(emb, x, samples * k, Activation::Identity, y)?;
            core::mem::swap(x, y);
            let valid = Some(&cond.valid[..]);
            for (blk, kv) in self.tem_blocks.iter().zip(&cond.kv) {
                be.temporal_block(blk, x, samples, k, kv, cond.ctx, valid, tmp)?;
            }
            if let Some(tr) = trace {
                tr.after_tem = Some(read(x, tokens)?);
            }
        }
        be.final_layer(&self.final_layer, x, samples, k, cact, tmp, out)
    }
}
