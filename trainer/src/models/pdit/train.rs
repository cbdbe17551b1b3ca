//! PDiT's training step (thesis §9.2–9.3, `spec/pdit.md` §4 "Training loss"), run by
//! [`crate::learner::fit`].
//!
//! Every example gives one sample: `z_0` = the target item's text latent, the prompt latent `p`
//! and the latents of the history's last `L` items, all multiplied by `latent_scale`; a step
//! `t ~ U{1..T}` and noise `ε ~ N(0, I)` drawn when the mini-batch is built (from the step's own
//! stream, so the draws do not depend on the number of threads), and `z_t = q_sample(z_0, t, ε)`.
//! The loss of a sample is `L_simple + L_vlb` ([`seqrec_engine::pdit::hybrid_loss`], which also
//! gives its gradients with respect to ε_θ and v, the vb term reading ε_θ through a
//! stop-gradient); a part's loss is the mean over its samples, and the network's backward runs
//! from those gradients. AdamW (lr 1e-4, weight decay 0.01) with a linear warm-up and global
//! gradient clipping at 1.0 (thesis Table 8.3).
//!
//! Validation, every epoch or every `valid_every` steps ([`RoundBatches`]): the checkpoint is
//! loaded by the engine and the validation examples are ranked by sampling along a respaced
//! chain (`valid_steps` steps, a fixed seed so that rounds are compared on the same noise) and
//! cosine against the item latents ([`EngineRanker`]); the loop keeps the best checkpoint by the
//! validation metric (NDCG@20 by default) and stops after `patience` rounds without
//! improvement.

use super::data::{PditData, PditExample};
use super::dreamrec::{DreamBatch, DreamRecModel, DreamRecRanker};
use super::eval::{EngineRanker, RankOptions, evaluate, recent};
use super::model::{PditBatch, PditModel};
use crate::error::{Error, Result};
use crate::eval::{Report, parse_metrics};
use crate::learner::{RoundBatches, RunOptions, TrainResult, TrainStep, fit};
use crate::nn::optim::{Adam, Decay, Optimizer, Schedule as LrSchedule};
use crate::nn::{Module, Rng};
use seqrec_engine::pdit::{Pdit, Schedule, hybrid_loss, q_sample};
use std::time::Instant;

/// The settings of a PDiT (or DreamRec) training run besides the network's.
#[derive(Clone, Debug, PartialEq)]
pub struct PditTrainOptions {
    /// Samples per mini-batch (the thesis: 100).
    pub batch_size: usize,
    /// Peak learning rate (1e-4).
    pub lr: f32,
    /// AdamW's decoupled weight decay (0.01).
    pub weight_decay: f32,
    /// Steps of the linear warm-up (the thesis: 1,000).
    pub warmup: u64,
    /// Validate every this many steps (`None`: every pass over the training examples).
    pub valid_every: Option<usize>,
    /// Steps of the respaced sampling chain of validation.
    pub valid_steps: usize,
    /// Remove history items from the validation rankings.
    pub exclude_history: bool,
    /// The loop's knobs (epochs = validation rounds, seed, budget, threads, clipping,
    /// patience, the metric).
    pub run: RunOptions,
}

impl Default for PditTrainOptions {
    fn default() -> Self {
        PditTrainOptions {
            batch_size: 100,
            lr: 1e-4,
            weight_decay: 0.01,
            warmup: 1000,
            valid_every: None,
            valid_steps: 50,
            exclude_history: false,
            run: RunOptions {
                clip: Some(1.0),
                valid_metric: "ndcg@20".into(),
                ..Default::default()
            },
        }
    }
}

impl PditTrainOptions {
    /// The learning rate schedule: linear warm-up, then constant.
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule {
            base: self.lr,
            warmup: self.warmup,
            total: 0,
            decay: Decay::Constant,
            min_lr: 0.0,
        }
    }

    /// The validation metrics: HR@20, NDCG@20 and the selection metric.
    pub fn valid_metrics(&self) -> Result<Vec<crate::eval::Metric>> {
        Ok(parse_metrics(&format!(
            "hr@20,ndcg@20,{}",
            self.run.metric()
        ))?)
    }
}

/// One part of a mini-batch: the network's inputs and what the loss compares with.
#[derive(Clone, Debug)]
pub struct PditPart {
    /// The inputs (at the network's scale).
    pub batch: PditBatch,
    /// `z_0` per sample, `[S, d]` (scaled).
    pub z0: Vec<f32>,
    /// The drawn ε, `[S, d]`.
    pub noise: Vec<f32>,
}

/// A part's mean loss terms.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct LossOut {
    /// `mse + vb`.
    pub loss: f64,
    /// `L_simple`.
    pub mse: f64,
    /// `L_vlb` (bits per dimension).
    pub vb: f64,
}

/// Builds the part of `examples`: steps and noise from `rng`, the latents from `data`.
pub fn make_part(
    m: &PditModel,
    base: &Schedule,
    data: &PditData,
    examples: &[&PditExample],
    rng: &mut Rng,
) -> PditPart {
    let c = m.config();
    let (d, scale) = (c.latent_dim, c.latent_scale as f32);
    let s = examples.len();
    let ctx = examples
        .iter()
        .map(|e| recent(&e.history, c.max_hist_len).len())
        .max()
        .unwrap_or(1);
    let mut b = PditBatch {
        samples: s,
        ctx,
        hist: vec![0.0; s * ctx * d],
        ..Default::default()
    };
    let (mut z0, mut noise) = (Vec::with_capacity(s * d), Vec::with_capacity(s * d));
    for (i, e) in examples.iter().enumerate() {
        let t = 1 + rng.below(c.timesteps);
        let x0: Vec<f32> = data.latent(e.target).iter().map(|&v| v * scale).collect();
        let eps = rng.normal_vec(d, 1.0);
        let zt = q_sample(base, &x0, t, &eps).expect("t drawn in 1..=T");
        b.z.extend(zt.iter().map(|&v| v as f32));
        b.t.push(t);
        b.p.extend(e.prompt.iter().map(|&v| v * scale));
        let h = recent(&e.history, c.max_hist_len);
        for (j, &id) in h.iter().enumerate() {
            let r = (i * ctx + j) * d;
            for (o, &v) in b.hist[r..r + d].iter_mut().zip(data.latent(id)) {
                *o = v * scale;
            }
        }
        b.lens.push(h.len());
        z0.extend(x0);
        noise.extend(eps);
    }
    PditPart {
        batch: b,
        z0,
        noise,
    }
}

/// The mean loss of `part` on `m`, with its gradient added into `m`'s parameters.
///
/// # Panics
/// If `part` does not fit the model (parts are built by [`make_part`] from checked data).
pub fn part_loss(m: &mut PditModel, base: &Schedule, part: &PditPart) -> LossOut {
    let c = m.config().clone();
    let (d, w) = (c.latent_dim, c.out_dim());
    let b = &part.batch;
    let (out, cache) = m.forward(b).unwrap_or_else(|e| panic!("{e}"));
    let mut d_out = vec![0.0f32; out.len()];
    let mut sum = LossOut::default();
    let inv = 1.0 / b.samples.max(1) as f64;
    for s in 0..b.samples {
        let o = &out[s * w..(s + 1) * w];
        let row = s * d..(s + 1) * d;
        let v = c.learn_sigma.then(|| &o[d..2 * d]);
        let terms = hybrid_loss(
            base,
            c.learn_sigma,
            b.t[s],
            &part.z0[row.clone()],
            &part.noise[row.clone()],
            &b.z[row],
            &o[..d],
            v,
        )
        .expect("t drawn in 1..=T");
        sum.loss += terms.loss * inv;
        sum.mse += terms.mse * inv;
        sum.vb += terms.vb * inv;
        let g = &mut d_out[s * w..(s + 1) * w];
        for (gi, &x) in g.iter_mut().zip(terms.grad_eps.iter().chain(&terms.grad_v)) {
            *gi = (x * inv) as f32;
        }
    }
    m.backward(&cache, &d_out);
    sum
}

/// PDiT's [`TrainStep`].
struct PditStep<'a> {
    model: &'a mut PditModel,
    base: Schedule,
    data: &'a PditData,
    opts: &'a PditTrainOptions,
    batches: RoundBatches,
    optimizer: Adam,
    rng: Rng,
}

impl TrainStep for PditStep<'_> {
    type Model = PditModel;
    type Part = PditPart;
    type Output = LossOut;
    type Batches = RoundBatches;
    const TERMS: &'static [&'static str] = &["mse", "vb"];

    fn batches(&mut self) -> &mut RoundBatches {
        &mut self.batches
    }

    fn make_part(&mut self, ids: &[usize]) -> PditPart {
        let ex: Vec<&PditExample> = ids.iter().map(|&i| &self.data.train[i]).collect();
        make_part(self.model, &self.base, self.data, &ex, &mut self.rng)
    }

    fn part_size(&self, part: &PditPart) -> usize {
        part.batch.samples
    }

    fn model(&self) -> &PditModel {
        self.model
    }

    fn part_step(&self, replica: &mut PditModel, part: &PditPart, _: &mut Rng) -> LossOut {
        part_loss(replica, &self.base, part)
    }

    fn loss_terms(&self, l: &LossOut) -> Vec<f64> {
        vec![l.loss, l.mse, l.vb]
    }

    fn update(&mut self) -> (&mut PditModel, &mut dyn Optimizer, f32) {
        let lr = self.opts.schedule().lr(self.optimizer.steps());
        (&mut *self.model, &mut self.optimizer, lr)
    }

    fn validate(&self) -> Result<(Vec<u8>, Report)> {
        let bytes = self.model.to_safetensors()?;
        let engine = Pdit::from_bytes(&bytes)?;
        let ranker = EngineRanker::new(
            &engine,
            self.data,
            self.opts.valid_steps,
            self.opts.exclude_history,
        )?;
        let opts = RankOptions {
            metrics: self.opts.valid_metrics()?,
            seed: self.opts.run.seed,
        };
        let report = evaluate(&ranker, &self.data.valid, self.data.n_items(), &opts)?;
        Ok((bytes, report))
    }

    fn progress_note(&self) -> String {
        format!(", step {}", self.optimizer.steps())
    }
}

/// Checks that `data` can train and validate a model whose latents are `dim` wide.
pub fn check_data(data: &PditData, dim: usize) -> Result<()> {
    if data.dim != dim {
        return Err(Error::Invalid(format!(
            "the data's latents are {} wide, the model's {dim}",
            data.dim
        )));
    }
    if data.train.is_empty() {
        return Err(Error::NoTrainingData(
            "the PDiT data file has no training examples",
        ));
    }
    if data.valid.is_empty() {
        return Err(Error::NoValidation { what: "examples" });
    }
    Ok(())
}

/// Trains `model` on `data` (see the module docs) and returns the run, whose checkpoint is the
/// best validation round's.
pub fn train(
    model: &mut PditModel,
    data: &PditData,
    opts: &PditTrainOptions,
) -> Result<TrainResult> {
    let start = Instant::now();
    let c = model.config();
    check_data(data, c.latent_dim)?;
    if c.variant.has_gen() && c.cond_dim != data.dim {
        return Err(Error::Invalid(format!(
            "the model's prompt latent is {} wide, the data's {}",
            c.cond_dim, data.dim
        )));
    }
    opts.valid_metrics()?;
    let base = Schedule::linear(c);
    let mut step = PditStep {
        base,
        data,
        opts,
        batches: RoundBatches::new(data.train.len(), opts.batch_size, opts.valid_every),
        optimizer: Adam::adamw(opts.weight_decay),
        rng: Rng::new(opts.run.seed ^ 0xD1FF),
        model,
    };
    fit(&mut step, &opts.run, start)
}

/// The number of trainable values of `m`.
pub fn n_params<M: Module>(m: &M) -> usize {
    crate::nn::param::count(&m.params())
}

/// The DreamRec-style baseline's [`TrainStep`]: the same loop, mini-batches and optimizer as
/// PDiT's; a sample's step `n ~ U{0..T−1}`, its noise and whether it drops the guidance are
/// drawn when the mini-batch is built.
struct DreamStep<'a> {
    model: &'a mut DreamRecModel,
    schedule: Schedule,
    data: &'a PditData,
    opts: &'a PditTrainOptions,
    batches: RoundBatches,
    optimizer: Adam,
    rng: Rng,
}

impl TrainStep for DreamStep<'_> {
    type Model = DreamRecModel;
    type Part = DreamBatch;
    type Output = f64;
    type Batches = RoundBatches;

    fn batches(&mut self) -> &mut RoundBatches {
        &mut self.batches
    }

    fn make_part(&mut self, ids: &[usize]) -> DreamBatch {
        let ex: Vec<&PditExample> = ids.iter().map(|&i| &self.data.train[i]).collect();
        let c = self.model.config();
        let rng = &mut self.rng;
        DreamBatch {
            seqs: self.model.windows(&ex),
            steps: ex.iter().map(|_| rng.below(c.timesteps)).collect(),
            noise: rng.normal_vec(ex.len() * c.hidden, 1.0),
            uncond: ex
                .iter()
                .map(|_| rng.next_f64() < c.p_uncond as f64)
                .collect(),
        }
    }

    fn part_size(&self, part: &DreamBatch) -> usize {
        part.seqs.n
    }

    fn model(&self) -> &DreamRecModel {
        self.model
    }

    fn part_step(&self, replica: &mut DreamRecModel, part: &DreamBatch, rng: &mut Rng) -> f64 {
        replica.train_step(part, &self.schedule, Some(rng))
    }

    fn loss_terms(&self, l: &f64) -> Vec<f64> {
        vec![*l]
    }

    fn update(&mut self) -> (&mut DreamRecModel, &mut dyn Optimizer, f32) {
        let lr = self.opts.schedule().lr(self.optimizer.steps());
        (&mut *self.model, &mut self.optimizer, lr)
    }

    fn validate(&self) -> Result<(Vec<u8>, Report)> {
        let bytes = self.model.to_safetensors()?;
        let served = DreamRecModel::from_safetensors(&bytes)?;
        let ranker = DreamRecRanker::new(&served, self.data, self.opts.exclude_history)?;
        let opts = RankOptions {
            metrics: self.opts.valid_metrics()?,
            seed: self.opts.run.seed,
        };
        let report = evaluate(&ranker, &self.data.valid, self.data.n_items(), &opts)?;
        Ok((bytes, report))
    }

    fn progress_note(&self) -> String {
        format!(", step {}", self.optimizer.steps())
    }
}

/// Trains the DreamRec-style baseline on `data`'s item ids (the latents are not read) with the
/// loop and options of [`train`].
pub fn train_dreamrec(
    model: &mut DreamRecModel,
    data: &PditData,
    opts: &PditTrainOptions,
) -> Result<TrainResult> {
    let start = Instant::now();
    check_data(data, data.dim)?;
    if data.n_items() != model.config().n_items {
        return Err(Error::ItemCount {
            what: "the DreamRec model",
            found: model.config().n_items,
            expected: data.n_items(),
        });
    }
    opts.valid_metrics()?;
    let mut step = DreamStep {
        schedule: model.config().schedule()?,
        data,
        opts,
        batches: RoundBatches::new(data.train.len(), opts.batch_size, opts.valid_every),
        optimizer: Adam::adamw(opts.weight_decay),
        rng: Rng::new(opts.run.seed ^ 0xD2EA),
        model,
    };
    fit(&mut step, &opts.run, start)
}
