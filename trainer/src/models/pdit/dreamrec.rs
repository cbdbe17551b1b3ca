//! A DreamRec-style baseline (thesis §9.5; Yang et al., "Generate What You Prefer", 2023):
//! guided diffusion over learned item ID embeddings, ranked by the dot product of the generated
//! embedding with the item table.
//!
//! - **Guidance** `h`: a SASRec encoder ([`SasRecModel`], RecBole's post-LN transformer) over the
//!   history's ID embeddings, read at the last item. With probability `p_uncond` a training
//!   sample's `h` is replaced by the learned `none_embedding` (classifier-free guidance).
//! - **Denoiser** (DreamRec's `mlp2`): `x̂_0 = diffuser.2(GELU(diffuser.0([x_t ‖ h ‖ τ])))`, with
//!   `τ = step_mlp.3(GELU(step_mlp.1(sinusoid(n))))` of the 0-based step `n`; it predicts the
//!   target's ID embedding `x_0 = E[target]` directly.
//! - **Loss**: `mean (x_0 − x̂_0)²` over the batch and the H dimensions, with
//!   `x_t = √ᾱ_n·x_0 + √(1 − ᾱ_n)·ε`; the item table receives the gradient of the target
//!   (directly and through `x_t`) and of the history's embeddings.
//! - **Sampling**: `x_T ~ N(0, I)`, then for `n = T − 1 … 0`
//!   `x̂_0 = (1 + w)·f(x, h, n) − w·f(x, none, n)` and `x ← c1_n·x̂_0 + c2_n·x` plus
//!   `√β̃_n·η` for `n > 0` (DDPM's posterior); scores `x_0·Eᵀ`.
//!
//! The item table is drawn from `N(0, 1)` as in DreamRec (the diffusion's unit scale), the
//! encoder as RecBole does, the MLPs with PyTorch's defaults. The checkpoint is a safetensors
//! file with `seqrec.config` `{"model": "dreamrec", ...}`; it is served by
//! [`DreamRecRanker`], not by the engine.

use super::blocks::{Init, linear};
use super::data::{PditData, PditExample};
use super::eval::{Ranker, recent, sorted};
use crate::error::{Error, Result};
use crate::eval::rank::top_k;
use crate::models::{Batch, SasRecConfig, SasRecModel, TrainModel};
use crate::nn::activation::{ActCache, act_backward, act_forward};
use crate::nn::param::{load_values, to_safetensors};
use crate::nn::score::full_scores;
use crate::nn::{Activation, Linear, Module, Param, Rng};
use seqrec_engine::pdit::{Noise, Schedule};
use seqrec_engine::{Backend, CONFIG_KEY, Config, Cpu, WeightFile};
use seqrec_kernels::cpu::topk::TopK;

/// DreamRec's hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct DreamRecConfig {
    /// Catalog size, padding included.
    pub n_items: usize,
    /// Embedding width H (DreamRec: 64).
    pub hidden: usize,
    /// The most recent history items read.
    pub max_len: usize,
    /// Encoder layers.
    pub layers: usize,
    /// Encoder heads.
    pub heads: usize,
    /// Encoder dropout.
    pub dropout: f32,
    /// Diffusion steps T (DreamRec: 200).
    pub timesteps: usize,
    /// The linear β schedule's ends.
    pub beta_start: f64,
    /// See `beta_start`.
    pub beta_end: f64,
    /// Probability of training a sample unconditioned.
    pub p_uncond: f32,
    /// Guidance weight w of sampling.
    pub guidance: f32,
}

impl DreamRecConfig {
    /// DreamRec's defaults (H 64, one layer, one head, dropout 0.1, T 200, β 1e-4..0.02,
    /// p 0.1, w 2) over `n_items` ids and histories of `max_len`.
    pub fn new(n_items: usize, max_len: usize) -> Self {
        DreamRecConfig {
            n_items,
            hidden: 64,
            max_len,
            layers: 1,
            heads: 1,
            dropout: 0.1,
            timesteps: 200,
            beta_start: 1e-4,
            beta_end: 0.02,
            p_uncond: 0.1,
            guidance: 2.0,
        }
    }

    /// Checks the sizes.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(format!("dreamrec: {m}")));
        if self.n_items < 2 || self.hidden == 0 || self.max_len == 0 || self.layers == 0 {
            return bad("needs items, a width, a history length and a layer".into());
        }
        if self.heads == 0 || self.hidden % self.heads != 0 {
            return bad(format!(
                "hidden {} is not divisible by {} heads",
                self.hidden, self.heads
            ));
        }
        if self.timesteps < 2
            || !(0.0 < self.beta_start && self.beta_start <= self.beta_end && self.beta_end < 1.0)
        {
            return bad(format!(
                "{} steps, β from {} to {}: need at least 2 steps and 0 < start <= end < 1",
                self.timesteps, self.beta_start, self.beta_end
            ));
        }
        if !(0.0..1.0).contains(&self.p_uncond) || !(0.0..1.0).contains(&self.dropout) {
            return bad(format!(
                "p_uncond {} and dropout {} must be in [0, 1)",
                self.p_uncond, self.dropout
            ));
        }
        Ok(())
    }

    /// The configuration stored in checkpoints.
    pub fn to_config(&self) -> Config {
        Config::from_map(Default::default())
            .with("model", "dreamrec")
            .with("n_items", self.n_items)
            .with("hidden_size", self.hidden)
            .with("max_hist_len", self.max_len)
            .with("n_layers", self.layers)
            .with("n_heads", self.heads)
            .with("dropout", self.dropout as f64)
            .with("num_timesteps", self.timesteps)
            .with("beta_start", self.beta_start)
            .with("beta_end", self.beta_end)
            .with("p_uncond", self.p_uncond as f64)
            .with("guidance", self.guidance as f64)
    }

    /// Reads [`Self::to_config`]'s keys back.
    pub fn from_config(c: &Config) -> Result<Self> {
        let m = c.as_map();
        let get = |k: &str| {
            m.get(k).and_then(|v| v.as_f64()).ok_or_else(|| {
                Error::Invalid(format!("dreamrec config: `{k}` is missing or not a number"))
            })
        };
        let cfg = DreamRecConfig {
            n_items: get("n_items")? as usize,
            hidden: get("hidden_size")? as usize,
            max_len: get("max_hist_len")? as usize,
            layers: get("n_layers")? as usize,
            heads: get("n_heads")? as usize,
            dropout: get("dropout")? as f32,
            timesteps: get("num_timesteps")? as usize,
            beta_start: get("beta_start")?,
            beta_end: get("beta_end")?,
            p_uncond: get("p_uncond")? as f32,
            guidance: get("guidance")? as f32,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The diffusion chain (index `n` of the arrays is DreamRec's 0-based step).
    pub fn schedule(&self) -> Result<Schedule> {
        let t = self.timesteps;
        let betas = (0..t)
            .map(|i| {
                self.beta_start + (self.beta_end - self.beta_start) * i as f64 / (t - 1) as f64
            })
            .collect();
        Ok(Schedule::new(betas, (1..=t).collect())?)
    }
}

/// The DreamRec-style model.
#[derive(Clone, Debug)]
pub struct DreamRecModel {
    cfg: DreamRecConfig,
    encoder: SasRecModel,
    none: Param,
    step0: Linear,
    step2: Linear,
    diff0: Linear,
    diff2: Linear,
}

/// A training batch: histories, targets, steps, noise and which samples drop the guidance.
#[derive(Clone, Debug)]
pub struct DreamBatch {
    /// The histories (right-padded windows; one output per row at its last item).
    pub seqs: Batch,
    /// 0-based steps `n`.
    pub steps: Vec<usize>,
    /// ε, `[S, H]`.
    pub noise: Vec<f32>,
    /// Samples trained without guidance.
    pub uncond: Vec<bool>,
}

/// The denoiser's activations of one call.
#[derive(Debug)]
struct DenoiseCache {
    temb: Vec<f32>,
    t1: ActCache,
    t1a: Vec<f32>,
    u: Vec<f32>,
    a: ActCache,
    aa: Vec<f32>,
}

impl DreamRecModel {
    /// A freshly initialised model.
    pub fn new(cfg: DreamRecConfig, rng: &mut Rng) -> Result<Self> {
        cfg.validate()?;
        let h = cfg.hidden;
        let mut sc = SasRecConfig::new(cfg.n_items, cfg.max_len);
        (sc.hidden, sc.inner, sc.n_layers, sc.n_heads) = (h, h, cfg.layers, cfg.heads);
        (sc.hidden_dropout, sc.attn_dropout) = (cfg.dropout, cfg.dropout);
        let mut encoder = SasRecModel::new(sc, rng);
        encoder.item_table_mut().init_normal(rng, 1.0);
        for v in &mut encoder.item_table_mut().value[..h] {
            *v = 0.0;
        }
        Ok(DreamRecModel {
            none: Param::normal("none_embedding", &[h], 1.0, rng),
            step0: linear("step_mlp.1", h, 2 * h, Init::Torch, rng),
            step2: linear("step_mlp.3", 2 * h, h, Init::Torch, rng),
            diff0: linear("diffuser.0", 3 * h, 2 * h, Init::Torch, rng),
            diff2: linear("diffuser.2", 2 * h, h, Init::Torch, rng),
            encoder,
            cfg,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &DreamRecConfig {
        &self.cfg
    }

    /// The item table `[n_items, H]`.
    pub fn items(&self) -> &Param {
        self.encoder.item_table()
    }

    /// A checkpoint (safetensors image, configuration in the metadata).
    pub fn to_safetensors(&self) -> seqrec_engine::Result<Vec<u8>> {
        let json = self.cfg.to_config().to_json();
        to_safetensors(&self.params(), &[(CONFIG_KEY, json.as_str())])
    }

    /// Loads a checkpoint written by [`Self::to_safetensors`].
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self> {
        let file = WeightFile::from_bytes(bytes)?;
        let text = file
            .metadata(CONFIG_KEY)
            .ok_or_else(|| Error::Invalid(format!("no `{CONFIG_KEY}` metadata")))?;
        let cfg = DreamRecConfig::from_config(&Config::from_json(text)?)?;
        let mut m = DreamRecModel::new(cfg, &mut Rng::new(0))?;
        load_values(&mut m.params_mut(), &file)?;
        Ok(m)
    }

    /// The right-padded windows of `examples`' last `max_len` history items, one output each.
    pub fn windows(&self, examples: &[&PditExample]) -> Batch {
        let hists: Vec<&[u32]> = examples
            .iter()
            .map(|e| recent(&e.history, self.cfg.max_len))
            .collect();
        let len = hists.iter().map(|h| h.len()).max().unwrap_or(1).max(1);
        let mut b = Batch {
            n: hists.len(),
            len,
            ..Default::default()
        };
        for (r, h) in hists.iter().enumerate() {
            b.items.extend(
                h.iter()
                    .copied()
                    .chain(std::iter::repeat_n(0, len - h.len())),
            );
            b.lens.push(h.len());
            b.users.push(0);
            b.out_pos.push((r, h.len().saturating_sub(1)));
            b.targets.push(examples[r].target);
        }
        b
    }

    /// `x̂_0 = f(x_t, h, n)` for `S` rows, and the activations for the backward.
    fn denoise(&self, x: &[f32], g: &[f32], steps: &[usize]) -> (Vec<f32>, DenoiseCache) {
        let (s, h) = (steps.len(), self.cfg.hidden);
        let mut temb = vec![0.0f32; s * h];
        let cpu = Cpu::new();
        for (i, &n) in steps.iter().enumerate() {
            cpu.timestep_embedding(n as f64, h, 10000.0, &mut temb, i * h)
                .expect("the buffer holds every row");
        }
        let mut t1a = self.step0.infer(&temb, s);
        let t1 = act_forward(Activation::Gelu, &mut t1a);
        let tau = self.step2.infer(&t1a, s);
        let mut u = Vec::with_capacity(3 * s * h);
        for i in 0..s {
            let r = i * h..(i + 1) * h;
            u.extend_from_slice(&x[r.clone()]);
            u.extend_from_slice(&g[r.clone()]);
            u.extend_from_slice(&tau[r]);
        }
        let mut aa = self.diff0.infer(&u, s);
        let a = act_forward(Activation::Gelu, &mut aa);
        let out = self.diff2.infer(&aa, s);
        (
            out,
            DenoiseCache {
                temb,
                t1,
                t1a,
                u,
                a,
                aa,
            },
        )
    }

    /// The backward of [`Self::denoise`]: adds the parameter gradients, returns `(dx, dh)`.
    fn denoise_backward(&mut self, c: &DenoiseCache, d_out: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let h = self.cfg.hidden;
        let s = d_out.len() / h;
        let mut da = vec![0.0; s * 2 * h];
        self.diff2
            .backward_with_input(&c.aa, s, d_out, &mut da, false);
        act_backward(&c.a, &mut da);
        let mut du = vec![0.0; s * 3 * h];
        self.diff0.backward_with_input(&c.u, s, &da, &mut du, false);
        let (mut dx, mut dg, mut dtau) = (
            Vec::with_capacity(s * h),
            Vec::with_capacity(s * h),
            Vec::with_capacity(s * h),
        );
        for row in du.chunks_exact(3 * h) {
            dx.extend_from_slice(&row[..h]);
            dg.extend_from_slice(&row[h..2 * h]);
            dtau.extend_from_slice(&row[2 * h..]);
        }
        let mut dt1 = vec![0.0; s * 2 * h];
        self.step2
            .backward_with_input(&c.t1a, s, &dtau, &mut dt1, false);
        act_backward(&c.t1, &mut dt1);
        let mut dtemb = vec![0.0; s * h];
        self.step0
            .backward_with_input(&c.temb, s, &dt1, &mut dtemb, false);
        (dx, dg)
    }

    /// The mean loss of `b` with its gradient added into the parameters; the encoder's dropout
    /// draws from `rng`.
    pub fn train_step(
        &mut self,
        b: &DreamBatch,
        schedule: &Schedule,
        rng: Option<&mut Rng>,
    ) -> f64 {
        let (s, h) = (b.seqs.n, self.cfg.hidden);
        let (mut g, enc) = self.encoder.forward(&b.seqs, rng);
        for (row, &u) in g.chunks_exact_mut(h).zip(&b.uncond) {
            if u {
                row.copy_from_slice(&self.none.value);
            }
        }
        let table = &self.encoder.item_table().value;
        let mut x0 = Vec::with_capacity(s * h);
        let mut xt = Vec::with_capacity(s * h);
        for (i, &target) in b.seqs.targets.iter().enumerate() {
            let e = &table[target as usize * h..(target as usize + 1) * h];
            let ab = schedule.alpha_bar[b.steps[i]];
            let (ca, cb) = (ab.sqrt() as f32, (1.0 - ab).sqrt() as f32);
            x0.extend_from_slice(e);
            xt.extend(
                e.iter()
                    .zip(&b.noise[i * h..(i + 1) * h])
                    .map(|(&e, &n)| ca * e + cb * n),
            );
        }
        let (pred, cache) = self.denoise(&xt, &g, &b.steps);
        let k = 2.0 / (s * h).max(1) as f64;
        let mut loss = 0.0f64;
        let d_pred: Vec<f32> = pred
            .iter()
            .zip(&x0)
            .map(|(&p, &x)| {
                let r = p as f64 - x as f64;
                loss += r * r;
                (k * r) as f32
            })
            .collect();
        let (dxt, mut dg) = self.denoise_backward(&cache, &d_pred);
        // x_0 = E[target] is the loss's target and, through x_t, the denoiser's input.
        let grad = &mut self.encoder.item_table_mut().grad;
        for (i, &target) in b.seqs.targets.iter().enumerate() {
            let ca = schedule.alpha_bar[b.steps[i]].sqrt() as f32;
            let r = i * h..(i + 1) * h;
            let row = &mut grad[target as usize * h..(target as usize + 1) * h];
            for ((gr, &dp), &dx) in row.iter_mut().zip(&d_pred[r.clone()]).zip(&dxt[r]) {
                *gr += ca * dx - dp;
            }
        }
        for (row, &u) in dg.chunks_exact_mut(h).zip(&b.uncond) {
            if u {
                self.none
                    .grad
                    .iter_mut()
                    .zip(row.iter())
                    .for_each(|(a, &b)| *a += b);
                row.fill(0.0);
            }
        }
        self.encoder.backward(&enc, &dg);
        loss / (s * h).max(1) as f64
    }

    /// Generated embeddings `[S, H]` for `examples` (guidance weight `w` of the config), noise
    /// from `noise`.
    pub fn generate(
        &self,
        examples: &[&PditExample],
        schedule: &Schedule,
        noise: &mut Noise,
    ) -> Vec<f32> {
        let (s, h) = (examples.len(), self.cfg.hidden);
        let (g, _) = self.encoder.forward(&self.windows(examples), None);
        let none: Vec<f32> = self.none.value.repeat(s);
        let w = self.cfg.guidance;
        let mut x = vec![0.0f32; s * h];
        noise.fill(&mut x);
        let mut eta = vec![0.0f32; s * h];
        for n in (0..self.cfg.timesteps).rev() {
            let steps = vec![n; s];
            let (xc, _) = self.denoise(&x, &g, &steps);
            let (xu, _) = self.denoise(&x, &none, &steps);
            let (c1, c2) = (
                schedule.posterior_mean_coef1[n],
                schedule.posterior_mean_coef2[n],
            );
            let sd = schedule.posterior_variance[n].sqrt();
            if n > 0 {
                noise.fill(&mut eta);
            }
            for i in 0..x.len() {
                let x0 = (1.0 + w as f64) * xc[i] as f64 - w as f64 * xu[i] as f64;
                let mean = c1 * x0 + c2 * x[i] as f64;
                x[i] = if n > 0 {
                    (mean + sd * eta[i] as f64) as f32
                } else {
                    mean as f32
                };
            }
        }
        x
    }
}

impl Module for DreamRecModel {
    fn params(&self) -> Vec<&Param> {
        let mut v = self.encoder.params();
        v.push(&self.none);
        for l in [&self.step0, &self.step2, &self.diff0, &self.diff2] {
            v.extend(l.params());
        }
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = self.encoder.params_mut();
        v.push(&mut self.none);
        for l in [
            &mut self.step0,
            &mut self.step2,
            &mut self.diff0,
            &mut self.diff2,
        ] {
            v.extend(l.params_mut());
        }
        v
    }
}

/// DreamRec as a [`Ranker`]: generated embeddings scored against the item table by dot
/// product.
#[derive(Debug)]
pub struct DreamRecRanker<'a> {
    model: &'a DreamRecModel,
    schedule: Schedule,
    exclude_history: bool,
}

impl<'a> DreamRecRanker<'a> {
    /// Ranks with `model` over the catalog of `data` (which must have the model's ids).
    pub fn new(model: &'a DreamRecModel, data: &PditData, exclude_history: bool) -> Result<Self> {
        if data.n_items() != model.cfg.n_items {
            return Err(Error::ItemCount {
                what: "the DreamRec model",
                found: model.cfg.n_items,
                expected: data.n_items(),
            });
        }
        Ok(DreamRecRanker {
            schedule: model.cfg.schedule()?,
            model,
            exclude_history,
        })
    }
}

impl Ranker for DreamRecRanker<'_> {
    fn top_k(&self, examples: &[&PditExample], k: usize, seed: u64) -> Result<Vec<Vec<u32>>> {
        let x = self
            .model
            .generate(examples, &self.schedule, &mut Noise::new(seed));
        let scores = full_scores(&x, examples.len(), self.model.items());
        let n = self.model.cfg.n_items;
        let mut sel = TopK::new(k);
        let mut out = Vec::with_capacity(examples.len());
        for (e, row) in examples.iter().zip(scores.chunks_exact(n)) {
            let ex = if self.exclude_history {
                sorted(&e.history)
            } else {
                Vec::new()
            };
            let mut top = Vec::new();
            top_k(row, k, &ex, &mut sel, &mut top);
            out.push(top);
        }
        Ok(out)
    }
}
