//! Training data and the training step of the Decision Transformers.
//!
//! **Samples** (`spec/thesis-models.md` §1, the replay-buffer expansion): every position
//! `j ≥ 2` of a training sequence ends one window — states are the up-to-`L` items before
//! `x_j`, actions the same items moved by one (ending with `x_j`) — and its returns are
//! computed once, inside the window ([`training_returns`]). Every real step of a window
//! carries a loss. `stride > 1` keeps every `stride`-th window end of a sequence (counting
//! back from the last), a cheaper epoch for long sequences. Pre-split benchmarks given as
//! examples give one window per example.
//!
//! **Loop**: a [`TrainStep`] run by [`crate::learner::fit`] (seeded shuffling, the mini-batch
//! split across per-thread replicas whose gradients are averaged by their share of real steps,
//! Adam, gradient clipping, validation through the engine every epoch, early stopping, a
//! wall-clock budget, the best checkpoint kept), with the loss `L_S + L_a + β·L_R`.

use super::DtModel;
use super::forward::{DtBatch, LossParts};
use super::returns::{N_OBJ, training_returns};
use crate::data::{Split, TrainPart};
use crate::error::{Error, Result};
use crate::eval::{Evaluator, Report};
use crate::learner::{ShuffledBatches, TrainStep, fit, validate_checkpoint, validation_evaluator};
use crate::nn::Rng;
use crate::nn::optim::{Adam, Optimizer};
use crate::objectives::Similarity;
use crate::train::{TrainOptions, TrainResult};
use std::time::Instant;

/// One training window.
#[derive(Clone, Debug, PartialEq)]
pub struct DtSample {
    /// States `x_1..x_T`.
    pub states: Vec<u32>,
    /// Actions `x_2..x_{T+1}`.
    pub actions: Vec<u32>,
    /// Returns per step.
    pub returns: Vec<[f32; N_OBJ]>,
}

/// The training windows of `split` (see the module docs).
pub fn samples(
    split: &Split,
    max_len: usize,
    stride: usize,
    long_tail: &[bool],
    sim: &Similarity,
) -> Vec<DtSample> {
    let (max_len, stride) = (max_len.max(1), stride.max(1));
    let make = |states: &[u32], actions: &[u32]| DtSample {
        states: states.to_vec(),
        actions: actions.to_vec(),
        returns: training_returns(states, actions, long_tail, sim),
    };
    let mut out = Vec::new();
    match &split.train {
        TrainPart::Sequences(seqs) => {
            for s in seqs {
                let m = s.items.len();
                // Window ending with action x[j] (0-based), j = m-1, m-1-stride, ... ≥ 1.
                let mut j = m.saturating_sub(1);
                while j >= 1 {
                    let start = j.saturating_sub(max_len);
                    out.push(make(&s.items[start..j], &s.items[start + 1..=j]));
                    if j <= stride {
                        break;
                    }
                    j -= stride;
                }
            }
        }
        TrainPart::Examples(ex) => {
            for e in ex {
                let h = &e.history[e.history.len().saturating_sub(max_len)..];
                let mut actions = h[1..].to_vec();
                actions.push(e.target);
                out.push(make(h, &actions));
            }
        }
    }
    out
}

/// A right-padded batch of samples.
pub fn make_batch(samples: &[&DtSample]) -> DtBatch {
    let len = samples.iter().map(|s| s.states.len()).max().unwrap_or(1);
    let mut b = DtBatch {
        n: samples.len(),
        len,
        ..Default::default()
    };
    for s in samples {
        let pad = len - s.states.len();
        b.states
            .extend(s.states.iter().copied().chain(std::iter::repeat_n(0, pad)));
        b.actions
            .extend(s.actions.iter().copied().chain(std::iter::repeat_n(0, pad)));
        b.returns.extend(
            s.returns
                .iter()
                .copied()
                .chain(std::iter::repeat_n([0.0; N_OBJ], pad)),
        );
        b.lens.push(s.states.len());
    }
    b
}

/// The training loss of the last epoch, by term.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct DtLossLog {
    /// Mean `L_S`, `L_a`, `L_R` over the epoch's real steps.
    pub parts: LossParts,
}

/// The Decision Transformers' training step: mini-batches of shuffled windows, each part's
/// loss averaged over its real steps, weighted by its share of the mini-batch's real steps.
struct DtStep<'a> {
    model: &'a mut DtModel,
    split: &'a Split,
    evaluator: Evaluator,
    data: &'a [DtSample],
    batches: ShuffledBatches,
    optimizer: Adam,
    lr: f32,
    last: DtLossLog,
}

impl TrainStep for DtStep<'_> {
    type Model = DtModel;
    type Part = DtBatch;
    type Output = LossParts;
    type Batches = ShuffledBatches;
    const TERMS: &'static [&'static str] = &["L_S", "L_a", "L_R"];

    fn batches(&mut self) -> &mut ShuffledBatches {
        &mut self.batches
    }

    fn make_part(&mut self, ids: &[usize]) -> DtBatch {
        make_batch(&ids.iter().map(|&i| &self.data[i]).collect::<Vec<_>>())
    }

    /// Real steps.
    fn part_size(&self, part: &DtBatch) -> usize {
        part.lens.iter().sum()
    }

    fn model(&self) -> &DtModel {
        self.model
    }

    fn part_step(&self, replica: &mut DtModel, part: &DtBatch, rng: &mut Rng) -> LossParts {
        replica.step(part, Some(rng))
    }

    fn loss_terms(&self, l: &LossParts) -> Vec<f64> {
        vec![l.total, l.supervised, l.action, l.returns]
    }

    fn update(&mut self) -> (&mut DtModel, &mut dyn Optimizer, f32) {
        (&mut *self.model, &mut self.optimizer, self.lr)
    }

    fn end_epoch(&mut self, mean: &[f64]) {
        self.last.parts = LossParts {
            total: mean[0],
            supervised: mean[1],
            action: mean[2],
            returns: mean[3],
        };
    }

    fn validate(&self) -> Result<(Vec<u8>, Report)> {
        validate_checkpoint(self.model.to_safetensors()?, &self.evaluator, self.split)
    }
}

/// Trains `model` (its serving tables attached) on `data` and validates on `split`'s
/// validation events with the engine's default knobs; returns the best checkpoint and the
/// last epoch's loss terms.
pub fn train(
    model: &mut DtModel,
    data: &[DtSample],
    split: &Split,
    opts: &TrainOptions,
) -> Result<(TrainResult, DtLossLog)> {
    let start = Instant::now();
    if data.is_empty() {
        return Err(Error::NoTrainingData(
            "no training windows: every training sequence is shorter than two items",
        ));
    }
    if split.valid.is_empty() {
        return Err(Error::NoValidation { what: "events" });
    }
    if model.tables().is_none() {
        return Err(Error::Invalid(
            "the model has no long-tail and similarity tables to serve with".into(),
        ));
    }
    let evaluator = validation_evaluator(split, &opts.run.metric())?;
    let mut step = DtStep {
        model,
        split,
        evaluator,
        data,
        batches: ShuffledBatches::new(data.len(), opts.batch_size),
        optimizer: Adam::decoupled_or_plain(opts.weight_decay),
        lr: opts.lr,
        last: DtLossLog::default(),
    };
    let result = fit(&mut step, &opts.run, start)?;
    Ok((result, step.last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{SplitMethod, TrainSeq};

    #[test]
    fn samples_expand_every_position_inside_windows() {
        let table: Vec<f32> = (0..12 * 2).map(|i| ((i * 7 % 5) as f32) - 2.0).collect();
        let sim = Similarity::new(&table, 2).unwrap();
        let tail = vec![true; 12];
        let split = Split {
            method: SplitMethod::ratio_8_1_1(),
            n_users: 3,
            n_items: 12,
            train: TrainPart::Sequences(vec![
                TrainSeq {
                    user: 1,
                    items: (1..=6).collect(),
                    session_starts: vec![0],
                },
                TrainSeq {
                    user: 2,
                    items: vec![9],
                    session_starts: vec![0],
                },
            ]),
            valid: Vec::new(),
            test: Vec::new(),
        };
        let s = samples(&split, 3, 1, &tail, &sim);
        // Ends j = 5..1 of the 6-item sequence; the 1-item sequence gives none.
        assert_eq!(s.len(), 5);
        assert_eq!(
            (s[0].states.clone(), s[0].actions.clone()),
            (vec![3, 4, 5], vec![4, 5, 6])
        );
        assert_eq!(
            (s[4].states.clone(), s[4].actions.clone()),
            (vec![1], vec![2])
        );
        // Local accuracy returns T..1, novelty counts every action (all long tail).
        assert_eq!(
            s[0].returns.iter().map(|r| r[0]).collect::<Vec<_>>(),
            [3.0, 2.0, 1.0]
        );
        assert_eq!(
            s[0].returns.iter().map(|r| r[1]).collect::<Vec<_>>(),
            [3.0, 2.0, 1.0]
        );
        assert_eq!(s[0].returns[0][2], 2.0);
        let s2 = samples(&split, 3, 2, &tail, &sim);
        assert_eq!(
            s2.iter()
                .map(|w| *w.actions.last().unwrap())
                .collect::<Vec<_>>(),
            [6, 4, 2]
        );
        let b = make_batch(&[&s[0], &s[4]]);
        assert_eq!(
            (b.len, b.states.clone(), b.lens.clone()),
            (3, vec![3, 4, 5, 1, 0, 0], vec![3, 1])
        );
        assert_eq!(b.returns[4], [0.0; N_OBJ]);
    }
}
