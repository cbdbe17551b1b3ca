//! The double-Q training of the RL heads (`spec/thesis-models.md` §3), a [`TrainStep`] run by
//! [`crate::learner::fit`].
//!
//! Two full copies A and B of the network, each with its own Adam. Every step draws `z`
//! uniformly: `z ≤ 0.5` makes A the main network (updated this step) and B the target,
//! otherwise the reverse ([`super::step`] computes the loss). The mini-batch is split across
//! replicas of the main network as in every loop (each computes the gradient of its share,
//! weighted by rows); SA2C's advantage weighting starts after its warm-up.
//!
//! Copy A is validated each epoch (the SQN code evaluates its first network) on the split's
//! validation events with the serving scores (supervised logits, plus `Σ w_o Q_o` for SMORL),
//! and the best validation checkpoint of A is kept. Early stopping, the epoch limit and the
//! wall-clock budget work as in every loop.

use super::le::{LeCache, LeState, LeVariant};
use super::samples::{RlBatch, Transitions};
use super::step::{RlOptions, StepCtx, StepLoss, objective_weights, rl_step};
use super::{RlKind, RlModel};
use crate::data::Split;
use crate::error::{Error, Result};
use crate::eval::{Evaluator, Report, ScorerError, SharedScorer, long_tail};
use crate::learner::{ShuffledBatches, TrainStep, fit, validation_evaluator};
use crate::models::TrainModel;
use crate::nn::Rng;
use crate::nn::optim::{Adam, Optimizer};
use crate::objectives::Similarity;
use crate::scorer::EngineScorer;
use crate::train::{TrainOptions, TrainResult};
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

/// The RL heads' training step: the double-Q copies, their Adams, and the streams of the copy
/// switch and the sampled negatives.
struct RlStep<'a, M> {
    copies: &'a mut [RlModel<M>; 2],
    adams: [Adam; 2],
    /// The copy updated this step (the other is the target).
    main: usize,
    split: &'a Split,
    evaluator: Evaluator,
    validate: &'a Validate<'a, M>,
    data: Transitions,
    batches: ShuffledBatches,
    rl: &'a RlOptions,
    sim: Option<&'a Similarity>,
    tail: Vec<bool>,
    n_neg: usize,
    le: Option<(&'a LeCache, LeVariant)>,
    lr: f32,
    warmup: u64,
    step: u64,
    switch: Rng,
    neg_rng: Rng,
}

impl<M: TrainModel> RlStep<'_, M> {
    /// SA2C weights its supervised loss by the advantage from now on.
    fn advantage(&self) -> bool {
        self.copies[0].kind() == RlKind::Sa2c && self.step >= self.warmup
    }
}

impl<M: TrainModel> TrainStep for RlStep<'_, M> {
    type Model = RlModel<M>;
    type Part = RlBatch;
    type Output = StepLoss;
    type Batches = ShuffledBatches;
    const TERMS: &'static [&'static str] = &["ce", "td"];

    fn batches(&mut self) -> &mut ShuffledBatches {
        &mut self.batches
    }

    /// Draws which copy is the main network of this step.
    fn begin_step(&mut self) {
        self.main = usize::from(self.switch.next_f64() > 0.5);
    }

    fn make_part(&mut self, ids: &[usize]) -> RlBatch {
        let backbone = self.copies[0].backbone();
        let n_items = self.split.n_items;
        if let Some(le) = self.le {
            return RlBatch::build_le(&self.data, ids, backbone, n_items, le, &mut self.neg_rng);
        }
        RlBatch::build(
            &self.data,
            ids,
            backbone,
            n_items,
            self.n_neg,
            &mut self.neg_rng,
        )
    }

    fn part_size(&self, part: &RlBatch) -> usize {
        part.rows()
    }

    fn model(&self) -> &RlModel<M> {
        &self.copies[self.main]
    }

    fn part_step(&self, replica: &mut RlModel<M>, part: &RlBatch, rng: &mut Rng) -> StepLoss {
        let ctx = StepCtx {
            opts: self.rl,
            advantage: self.advantage(),
            sim: self.sim,
            long_tail: Some(&self.tail),
        };
        rl_step(replica, &self.copies[1 - self.main], part, &ctx, Some(rng))
    }

    fn loss_terms(&self, l: &StepLoss) -> Vec<f64> {
        vec![l.total, l.ce, l.td]
    }

    fn update(&mut self) -> (&mut RlModel<M>, &mut dyn Optimizer, f32) {
        let m = self.main;
        (&mut self.copies[m], &mut self.adams[m], self.lr)
    }

    fn end_step(&mut self, _: &[RlBatch], _: &[StepLoss]) {
        self.step += 1;
    }

    fn validate(&self) -> Result<(Vec<u8>, Report)> {
        (self.validate)(&self.copies[0], &self.evaluator, self.split)
    }

    fn progress_note(&self) -> String {
        let weighted = if self.advantage() {
            ", advantage-weighted"
        } else {
            ""
        };
        format!(", step {}{weighted}", self.step)
    }
}

/// Trains the copies `[A, B]` on `split` and returns copy A's best validation checkpoint.
/// `sim` is SMORL's frozen similarity table (required for SMORL); `le` the language
/// environment's cache of `rl.le`'s variant (SNQN, SA2C; opened over the same split's
/// transitions, with copies made by [`RlModel::with_le_state`] for the variants that read its
/// state).
pub fn train_rl<M: TrainModel>(
    copies: &mut [RlModel<M>; 2],
    split: &Split,
    opts: &TrainOptions,
    rl: &RlOptions,
    sim: Option<&Similarity>,
    le: Option<&LeCache>,
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
    let le = match (le, rl.le) {
        (None, None) => None,
        (Some(cache), Some(variant)) => {
            check_le(copies, cache, variant, &data)?;
            Some((cache, variant))
        }
        (None, Some(v)) => {
            return Err(Error::Invalid(format!(
                "the LE variant {v} needs an LE cache"
            )));
        }
        (Some(c), None) => {
            return Err(Error::Invalid(format!(
                "{}: an LE cache needs an LE variant",
                c.origin
            )));
        }
    };
    if split.valid.is_empty() {
        return Err(Error::NoValidation { what: "events" });
    }
    let evaluator = validation_evaluator(split, &opts.run.metric())?;
    let batches = ShuffledBatches::new(data.len(), opts.batch_size);
    let mut step = RlStep {
        adams: [0; 2].map(|_| Adam::decoupled_or_plain(opts.weight_decay)),
        main: 0,
        split,
        evaluator,
        validate,
        tail: long_tail(&split.item_counts()),
        n_neg: if kind.uses_negatives() {
            rl.negatives
        } else {
            0
        },
        le,
        lr: opts.lr,
        warmup: rl.warmup.steps(batches.len()),
        step: 0,
        switch: Rng::new(opts.run.seed ^ 0xD0B1),
        neg_rng: Rng::new(opts.run.seed ^ 0x4E47),
        copies,
        data,
        batches,
        rl,
        sim,
    };
    fit(&mut step, &opts.run, start)
}

/// Checks that an LE cache and variant fit the copies and the transitions.
fn check_le<M: TrainModel>(
    copies: &[RlModel<M>; 2],
    cache: &LeCache,
    variant: LeVariant,
    data: &Transitions,
) -> Result<()> {
    let kind = copies[0].kind();
    if !kind.uses_negatives() {
        return Err(Error::Invalid(format!(
            "a language environment trains snqn or sa2c, not {kind}"
        )));
    }
    if cache.n_samples != data.len() {
        return Err(Error::Invalid(format!(
            "{}: {} samples, the training split has {} transitions",
            cache.origin,
            cache.n_samples,
            data.len()
        )));
    }
    variant.check(cache)?;
    let want = match variant.state {
        LeState::Backbone => copies[0].backbone().dim(),
        LeState::Concat => cache.state_dim + copies[0].backbone().dim(),
        LeState::LeOnly => cache.state_dim,
    };
    if let Some(c) = copies
        .iter()
        .find(|c| c.le_state() != variant.state || c.q_width() != want)
    {
        return Err(Error::Invalid(format!(
            "{variant}: the Q heads read a {} state of width {}, the variant a {} one of {want} \
             (build the copies with RlModel::with_le_state)",
            c.le_state().name(),
            c.q_width(),
            variant.state.name()
        )));
    }
    Ok(())
}

/// The weights the serving scores of `model` use by default, which validation uses too:
/// SMORL's knobs `w_acc`, `w_div`, `w_nov` are 0 (its supervised head serves, §3), whatever
/// `rl.weights` it trained with; the single-head methods have no knobs.
pub fn serving_weights<M: TrainModel>(model: &RlModel<M>, rl: &RlOptions) -> Vec<f32> {
    match model.kind() {
        RlKind::Smorl => vec![0.0; rl.weights.len()],
        _ => objective_weights(model, rl),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{EvalSeq, SplitMethod, TrainPart, TrainSeq};
    use crate::models::rl::SupHead;
    use crate::models::{Gru4RecConfig, Gru4RecModel};
    use crate::nn::Module;

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
            batch_size: 32,
            lr: 1e-2,
            run: crate::train::RunOptions {
                epochs: 30,
                threads: 2,
                patience: 30,
                valid_metric: "hr@1".into(),
                progress: false,
                ..Default::default()
            },
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
                None,
                validate.as_ref(),
            )
            .unwrap();
            let hr = r.best_report.unwrap().get("hr@1").unwrap();
            assert!(hr > 0.9, "{kind}: valid HR@1 {hr}");
            let engine = Model::from_bytes(&r.checkpoint, &Default::default()).unwrap();
            assert_eq!(engine.info().arch, kind.name());
            // SMORL serves its supervised head alone unless its knobs say otherwise.
            assert!(
                engine
                    .objective_specs()
                    .iter()
                    .all(|spec| spec.default == 0.0)
            );
            // The trainer-side forward validates to the same report (SMORL also with its Q
            // heads added at the training weights).
            let ev = validation_evaluator(&split, "hr@1,ndcg@10").unwrap();
            let trained_w = objective_weights(&copies[0], &rl);
            for w in [&w, &trained_w] {
                let (_, a) = validate_engine::<Gru4RecModel>(w)(&copies[0], &ev, &split).unwrap();
                let (_, b) = validate_trainer::<Gru4RecModel>(w)(&copies[0], &ev, &split).unwrap();
                for (k, v) in &a.values {
                    assert!(
                        (v - b.get(k).unwrap()).abs() < 1e-9,
                        "{kind} {k} at weights {w:?}: engine {v} vs trainer {:?}",
                        b.get(k)
                    );
                }
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
