//! The double-Q training loop of the RL heads (`spec/thesis-models.md` §3).
//!
//! Two full copies A and B of the network, each with its own Adam. Every step draws `z`
//! uniformly: `z ≤ 0.5` makes A the main network (updated this step) and B the target,
//! otherwise the reverse ([`super::step`] computes the loss). The mini-batch is split across
//! threads as in [`crate::train`] (each replica of the main network computes the gradient of
//! its share, weighted by rows); SA2C's advantage weighting starts after its warm-up.
//!
//! Copy A is validated each epoch (the SQN code evaluates its first network) on the split's
//! validation events with the serving scores (supervised logits, plus `Σ w_o Q_o` for SMORL),
//! and the best validation checkpoint of A is kept. Early stopping, the epoch limit and the
//! wall-clock budget work as in [`crate::train`].

use super::samples::{RlBatch, Transitions};
use super::step::{RlOptions, StepCtx, StepLoss, objective_weights, rl_step};
use super::{RlKind, RlModel};
use crate::data::Split;
use crate::error::{Error, Result};
use crate::eval::{Evaluator, Report, ScorerError, SharedScorer, long_tail};
use crate::models::TrainModel;
use crate::nn::optim::{Adam, Optimizer, clip_grad_norm};
use crate::nn::param::{gather_grads, sync_replicas, zero_grads};
use crate::nn::{Module, Rng};
use crate::objectives::Similarity;
use crate::scorer::EngineScorer;
use crate::train::{
    EpochLog, EpochTracker, TrainOptions, TrainResult, replicas, validation_evaluator,
};
use rayon::prelude::*;
use seqrec_engine::Model;
use std::time::Instant;

/// Scores histories with a trainer-side RL model (evaluation mode): the reference the engine's
/// architecture is tested against.
#[derive(Debug)]
pub struct RlScorer<'m, M> {
    model: &'m RlModel<M>,
    weights: Vec<f32>,
}

impl<'m, M: TrainModel> RlScorer<'m, M> {
    /// Serving scores of `model` with SMORL weights `weights` (ignored by the other kinds).
    pub fn new(model: &'m RlModel<M>, weights: &[f32]) -> Self {
        RlScorer {
            model,
            weights: weights.to_vec(),
        }
    }
}

impl<M: TrainModel> SharedScorer for RlScorer<'_, M> {
    fn score_shared(
        &self,
        history: &[u32],
        user: Option<u32>,
        scores: &mut [f32],
    ) -> Result<(), ScorerError> {
        if scores.len() != self.model.n_items() {
            return Err(format!(
                "the model has {} item ids, the evaluation {}",
                self.model.n_items(),
                scores.len()
            )
            .into());
        }
        let w = if self.model.kind() == RlKind::Smorl {
            &self.weights[..]
        } else {
            &[]
        };
        scores.copy_from_slice(&self.model.score_history(history, user.unwrap_or(0), w));
        Ok(())
    }
}

/// Validates copy A: its checkpoint and the validation report.
pub type Validate<'a, M> =
    dyn Fn(&RlModel<M>, &Evaluator, &Split) -> Result<(Vec<u8>, Report)> + Sync + 'a;

/// Validation with the trainer-side forward ([`RlScorer`]).
pub fn validate_trainer<M: TrainModel>(weights: &[f32]) -> Box<Validate<'_, M>> {
    Box::new(move |model, evaluator, split| {
        let bytes = model.to_safetensors()?;
        let report = evaluator.evaluate_par(&split.valid, &RlScorer::new(model, weights))?;
        Ok((bytes, report))
    })
}

/// Validation through the engine (the served path): the checkpoint loaded by
/// [`seqrec_engine::Model`], SMORL scored with the knobs `w_acc`, `w_div`, `w_nov` set to
/// `weights`.
pub fn validate_engine<M: TrainModel>(weights: &[f32]) -> Box<Validate<'_, M>> {
    Box::new(move |model, evaluator, split| {
        let bytes = model.to_safetensors()?;
        let engine = Model::from_bytes(&bytes, &Default::default())?;
        let mut obj = engine.default_objectives();
        if model.kind() == RlKind::Smorl {
            for (spec, &w) in engine.objective_specs().iter().zip(weights) {
                obj.set(spec.name, w)?;
            }
        }
        let scorer = EngineScorer::new(&engine).with_objectives(obj);
        let report = evaluator.evaluate_par(&split.valid, &scorer)?;
        Ok((bytes, report))
    })
}

/// Trains the copies `[A, B]` on `split` and returns copy A's best validation checkpoint.
/// `sim` is SMORL's frozen similarity table (required for SMORL).
pub fn train_rl<M: TrainModel>(
    copies: &mut [RlModel<M>; 2],
    split: &Split,
    opts: &TrainOptions,
    rl: &RlOptions,
    sim: Option<&Similarity>,
    validate: &Validate<'_, M>,
) -> Result<TrainResult> {
    let start = Instant::now();
    let kind = copies[0].kind();
    if kind == RlKind::Smorl && sim.is_none() {
        return Err(Error::Invalid(
            "SMORL needs a similarity table for its diversity reward".into(),
        ));
    }
    if let Some(s) = sim
        && s.n_items() != split.n_items
    {
        return Err(Error::ItemCount {
            what: "the similarity table",
            found: s.n_items(),
            expected: split.n_items,
        });
    }
    let n_items = split.n_items;
    if let Some(c) = copies.iter().find(|c| c.n_items() != n_items) {
        return Err(Error::ItemCount {
            what: "the model",
            found: c.n_items(),
            expected: n_items,
        });
    }
    let data = Transitions::from_split(split, copies[0].backbone().max_len())?;
    if split.valid.is_empty() {
        return Err(Error::NoValidation { what: "events" });
    }
    let metric = opts.valid_metric.to_ascii_lowercase();
    let evaluator = validation_evaluator(split, &metric)?;
    let tail = long_tail(&split.item_counts());
    let n_neg = if kind.uses_negatives() {
        rl.negatives
    } else {
        0
    };
    let batch_size = opts.batch_size.max(1);
    let steps_per_epoch = data.len().div_ceil(batch_size) as u64;
    let warmup = rl.warmup.steps(steps_per_epoch);
    let threads = opts.threads.max(1);
    let (mut replicas, mut rngs) = replicas(&copies[0], threads, opts.seed);
    let mut shuffle = Rng::new(opts.seed ^ 0x5EED);
    let mut switch = Rng::new(opts.seed ^ 0xD0B1);
    let mut neg_rng = Rng::new(opts.seed ^ 0x4E47);
    let mut adams = [0; 2].map(|_| Adam::decoupled_or_plain(opts.weight_decay));
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut tracker = EpochTracker::new();
    let (mut windows_done, mut step) = (0usize, 0u64);
    let mut last_valid_secs = 0.0f64;
    for epoch in 1..=opts.epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, shuffle.below(i + 1));
        }
        let (mut loss_sum, mut rows_sum) = (StepLoss::default(), 0usize);
        let mut out_of_time = false;
        for chunk in order.chunks(batch_size) {
            if let Some(budget) = opts.time_budget
                && start.elapsed().as_secs_f64() + last_valid_secs.max(0.5) >= budget.as_secs_f64()
            {
                out_of_time = true;
                break;
            }
            let main = usize::from(switch.next_f64() > 0.5);
            let per = chunk.len().div_ceil(threads);
            let parts: Vec<RlBatch> = chunk
                .chunks(per)
                .map(|c| {
                    RlBatch::build(&data, c, copies[0].backbone(), n_items, n_neg, &mut neg_rng)
                })
                .collect();
            let ctx = StepCtx {
                opts: rl,
                advantage: kind == RlKind::Sa2c && step >= warmup,
                sim,
                long_tail: Some(&tail),
            };
            let total: usize = parts.iter().map(RlBatch::rows).sum();
            let (lo, hi) = copies.split_at_mut(1);
            let (m, t) = if main == 0 {
                (&mut lo[0], &hi[0])
            } else {
                (&mut hi[0], &lo[0])
            };
            let losses: Vec<StepLoss> = if threads == 1 {
                zero_grads(&mut m.params_mut());
                vec![rl_step(m, t, &parts[0], &ctx, Some(&mut rngs[0]))]
            } else {
                sync_replicas(&mut replicas, &*m);
                let losses = replicas
                    .par_iter_mut()
                    .zip(rngs.par_iter_mut())
                    .zip(parts.par_iter())
                    .map(|((rep, rng), part)| {
                        zero_grads(&mut rep.params_mut());
                        rl_step(rep, t, part, &ctx, Some(rng))
                    })
                    .collect();
                gather_grads(
                    &mut m.params_mut(),
                    replicas
                        .iter()
                        .zip(&parts)
                        .map(|(r, part)| (r, part.rows() as f32 / total.max(1) as f32)),
                );
                losses
            };
            let mut params = m.params_mut();
            if let Some(c) = opts.clip {
                clip_grad_norm(&mut params, c);
            }
            adams[main].step(&mut params, opts.lr);
            for (l, part) in losses.iter().zip(&parts) {
                let k = part.rows() as f64;
                loss_sum.total += l.total * k;
                loss_sum.ce += l.ce * k;
                loss_sum.td += l.td * k;
            }
            rows_sum += total;
            windows_done += chunk.len();
            step += 1;
        }
        let t_valid = Instant::now();
        let (bytes, report) = validate(&copies[0], &evaluator, split)?;
        last_valid_secs = t_valid.elapsed().as_secs_f64();
        let value = report.get(&metric).unwrap_or(f64::NAN);
        let k = rows_sum.max(1) as f64;
        let entry = EpochLog {
            epoch,
            loss: loss_sum.total / k,
            valid: value,
            elapsed: start.elapsed().as_secs_f64(),
        };
        if opts.progress {
            eprintln!(
                "epoch {epoch}: loss {:.4} (ce {:.4}, td {:.4}), valid {metric} {value:.4} ({:.1}s, step {step}{})",
                entry.loss,
                loss_sum.ce / k,
                loss_sum.td / k,
                entry.elapsed,
                if kind == RlKind::Sa2c && step >= warmup {
                    ", advantage-weighted"
                } else {
                    ""
                }
            );
        }
        if tracker.end_epoch(
            entry,
            epoch,
            value,
            report,
            bytes,
            opts.patience,
            out_of_time,
        ) {
            break;
        }
    }
    Ok(tracker.finish(windows_done, start))
}

/// The weights the serving scores of `model` use by default (SMORL: `rl.weights`).
pub fn serving_weights<M: TrainModel>(model: &RlModel<M>, rl: &RlOptions) -> Vec<f32> {
    objective_weights(model, rl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{EvalSeq, SplitMethod, TrainPart, TrainSeq};
    use crate::models::rl::SupHead;
    use crate::models::{Gru4RecConfig, Gru4RecModel};

    /// Sequences that walk the catalog `1..n` upwards (wrapping), so that the next item is the
    /// last one plus 1: each method learns it, on both copies.
    #[test]
    fn every_method_learns_a_deterministic_walk() {
        let n = 16;
        let walk = |start: u32, len: usize| -> Vec<u32> {
            (0..len as u32)
                .map(|k| 1 + (start + k) % (n as u32 - 1))
                .collect()
        };
        let train = (0..40)
            .map(|u| TrainSeq {
                user: u + 1,
                items: walk(u * 7, 8),
                session_starts: vec![0],
            })
            .collect();
        let valid = (0..6)
            .map(|u| EvalSeq {
                user: 41 + u,
                items: walk(u * 5 + 2, 6),
                first_target: 1,
                session_start: 0,
            })
            .collect();
        let split = Split {
            method: SplitMethod::ratio_8_1_1(),
            n_users: 48,
            n_items: n,
            train: TrainPart::Sequences(train),
            valid,
            test: Vec::new(),
        };
        let opts = TrainOptions {
            epochs: 30,
            batch_size: 32,
            lr: 1e-2,
            threads: 2,
            patience: 30,
            valid_metric: "hr@1".into(),
            progress: false,
            ..Default::default()
        };
        let table: Vec<f32> = Rng::new(3).normal_vec(n * 4, 1.0);
        let sim = Similarity::new(&table, 4).unwrap();
        for kind in RlKind::ALL {
            let mut rng = Rng::new(5);
            let mut cfg = Gru4RecConfig::new(n, 4);
            (cfg.emb, cfg.hidden, cfg.dropout) = (8, 8, 0.0);
            let mut make = || {
                RlModel::new(
                    kind,
                    SupHead::Linear,
                    n,
                    Gru4RecModel::new(cfg.clone(), &mut rng),
                    &mut Rng::new(9),
                )
            };
            let mut copies = [make(), make()];
            let init = copies.clone();
            let rl = RlOptions {
                warmup: super::super::step::Warmup::Steps(20),
                ..Default::default()
            };
            let w = serving_weights(&copies[0], &rl);
            let validate = validate_engine::<Gru4RecModel>(&w);
            let r = train_rl(
                &mut copies,
                &split,
                &opts,
                &rl,
                Some(&sim),
                validate.as_ref(),
            )
            .unwrap();
            let hr = r.best_report.unwrap().get("hr@1").unwrap();
            // SMORL serves the supervised logits plus its three Q heads, which are trained
            // only at the taken actions: elsewhere they keep their random initialisation,
            // enough to displace the walk's next item from the top at times (chance: 1/15).
            let bar = if kind == RlKind::Smorl { 0.5 } else { 0.9 };
            assert!(hr > bar, "{kind}: valid HR@1 {hr}");
            let engine = Model::from_bytes(&r.checkpoint, &Default::default()).unwrap();
            assert_eq!(engine.info().arch, kind.name());
            if kind == RlKind::Smorl {
                // Its supervised head alone has learnt the walk.
                let mut obj = engine.default_objectives();
                for name in ["w_acc", "w_div", "w_nov"] {
                    obj.set(name, 0.0).unwrap();
                }
                let ev = validation_evaluator(&split, "hr@1").unwrap();
                let rep = ev
                    .evaluate_par(
                        &split.valid,
                        &EngineScorer::new(&engine).with_objectives(obj),
                    )
                    .unwrap();
                let hr = rep.get("hr@1").unwrap();
                assert!(hr > 0.9, "smorl's supervised head: valid HR@1 {hr}");
            }
            // The trainer-side forward validates to the same report.
            let ev = validation_evaluator(&split, "hr@1,ndcg@10").unwrap();
            let (_, a) = validate_engine::<Gru4RecModel>(&w)(&copies[0], &ev, &split).unwrap();
            let (_, b) = validate_trainer::<Gru4RecModel>(&w)(&copies[0], &ev, &split).unwrap();
            for (k, v) in &a.values {
                assert!(
                    (v - b.get(k).unwrap()).abs() < 1e-9,
                    "{kind} {k}: engine {v} vs trainer {:?}",
                    b.get(k)
                );
            }
            for (c, i) in copies.iter().zip(&init) {
                assert_ne!(
                    c.params()[0].value,
                    i.params()[0].value,
                    "{kind}: a copy was never updated"
                );
            }
        }
    }
}
