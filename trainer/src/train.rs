//! Training of the backbones (SASRec, GRU4Rec, NextItNet, Caser): windows cut from the training
//! sequences, the next-item loss (full softmax or a sampled loss), Adam / AdamW with optional
//! clipping and warm-up, validation through the engine every epoch, early stopping on a
//! validation metric (NDCG@10 by default), a wall-clock budget, and the best validation
//! checkpoint kept as a safetensors image the engine loads unchanged. The epochs are run by
//! [`crate::learner::fit`]; this module is the backbones' [`TrainStep`].

use crate::data::{Split, TrainPart};
use crate::error::{Error, Result};
use crate::eval::{Evaluator, Report};
use crate::learner::{ShuffledBatches, TrainStep, fit, validate_checkpoint, validation_evaluator};
use crate::models::{Batch, TrainModel, TrainStyle};
use crate::nn::Rng;
use crate::nn::loss::{SampledLoss, full_softmax_loss, sampled_loss};
use crate::nn::optim::{Adam, Decay, Optimizer, Schedule};
use std::time::Instant;

pub use crate::learner::{EpochLog, RunOptions, StopReason, TrainResult};

/// Training loss.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LossKind {
    /// Softmax cross-entropy over the whole catalog (RecBole's `CE`).
    Ce,
    /// Softmax over the target and `neg` sampled negatives.
    SampledCe,
    /// Binary cross-entropy with `neg` sampled negatives per target (the SASRec paper).
    Bce,
    /// Bayesian personalised ranking against `neg` sampled negatives.
    Bpr,
}

impl std::str::FromStr for LossKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ce" => Ok(LossKind::Ce),
            "sampled-ce" | "sampled_ce" | "sampled-softmax" => Ok(LossKind::SampledCe),
            "bce" => Ok(LossKind::Bce),
            "bpr" => Ok(LossKind::Bpr),
            _ => Err(Error::unknown_name("", s, "ce, sampled-ce, bce, bpr")),
        }
    }
}

/// Knobs of a training run.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Windows (or examples) per optimiser step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Decoupled weight decay (AdamW); 0 gives Adam.
    pub weight_decay: f32,
    /// Loss.
    pub loss: LossKind,
    /// Negatives per target for the sampled losses.
    pub neg: usize,
    /// Linear warm-up steps.
    pub warmup: u64,
    /// The loop's knobs: epochs, seed (of initialisation, shuffling, dropout and negatives),
    /// time budget, threads, clipping, early stopping, progress.
    pub run: RunOptions,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            batch_size: 256,
            lr: 1e-3,
            weight_decay: 0.0,
            loss: LossKind::Ce,
            neg: 1,
            warmup: 0,
            run: RunOptions::default(),
        }
    }
}

/// A window to train on: ids (left-aligned) and, per position, the next item (0: no loss).
#[derive(Clone, Debug)]
struct Window {
    user: u32,
    items: Vec<u32>,
    targets: Vec<u32>,
}

/// Windows for an all-positions model: every training sequence cut into windows of at most
/// `max_len` inputs; a long sequence gets windows every `max_len / 2` steps and each target is
/// trained once, with at least `max_len / 2` items of context after the first window.
fn windows(split: &Split, style: TrainStyle, max_len: usize) -> Vec<Window> {
    let from_examples = |split: &Split| {
        split
            .train_examples(max_len)
            .into_iter()
            .map(|e| {
                let mut targets = vec![0; e.history.len()];
                *targets.last_mut().expect("histories are non-empty") = e.target;
                Window {
                    user: e.user,
                    items: e.history,
                    targets,
                }
            })
            .collect()
    };
    match (&split.train, style) {
        (TrainPart::Sequences(seqs), TrainStyle::AllPositions) => {
            let stride = (max_len / 2).max(1);
            let mut out = Vec::new();
            for s in seqs {
                let m = s.items.len();
                if m < 2 {
                    continue;
                }
                // Inputs x[..m-1] predict x[1..]; a window ends at input index `end` (exclusive).
                let mut covered = 0; // targets up to this input index are trained
                let mut end = (m - 1).min(max_len);
                loop {
                    let start = end.saturating_sub(max_len);
                    let items = s.items[start..end].to_vec();
                    let targets = (start..end)
                        .map(|i| if i >= covered { s.items[i + 1] } else { 0 })
                        .collect();
                    out.push(Window {
                        user: s.user,
                        items,
                        targets,
                    });
                    covered = end;
                    if end == m - 1 {
                        break;
                    }
                    end = (end + stride).min(m - 1);
                }
            }
            out
        }
        _ => from_examples(split),
    }
}

fn make_batch(windows: &[&Window], style: TrainStyle, max_len: usize) -> Batch {
    let len = match style {
        TrainStyle::AllPositions => windows.iter().map(|w| w.items.len()).max().unwrap_or(1),
        TrainStyle::LastPosition => max_len,
    };
    let mut b = Batch {
        n: windows.len(),
        len,
        ..Default::default()
    };
    for (r, w) in windows.iter().enumerate() {
        b.items.extend_from_slice(&w.items);
        b.items.extend(std::iter::repeat_n(0, len - w.items.len()));
        b.lens.push(w.items.len());
        b.users.push(w.user);
        match style {
            TrainStyle::AllPositions => {
                for (t, &target) in w.targets.iter().enumerate() {
                    if target != 0 {
                        b.out_pos.push((r, t));
                        b.targets.push(target);
                    }
                }
            }
            TrainStyle::LastPosition => {
                b.out_pos.push((r, w.items.len() - 1));
                b.targets.push(*w.targets.last().expect("non-empty"));
            }
        }
    }
    b
}

/// The backbones' training step: mini-batches of shuffled windows, each part's next-item loss
/// averaged over its outputs, weighted by its share of the mini-batch's outputs.
struct BackboneStep<'a, M> {
    model: &'a mut M,
    split: &'a Split,
    evaluator: Evaluator,
    data: Vec<Window>,
    batches: ShuffledBatches,
    style: TrainStyle,
    loss: LossKind,
    neg: usize,
    optimizer: Adam,
    schedule: Schedule,
}

impl<M: TrainModel> TrainStep for BackboneStep<'_, M> {
    type Model = M;
    type Part = Batch;
    type Output = f64;
    type Batches = ShuffledBatches;

    fn batches(&mut self) -> &mut ShuffledBatches {
        &mut self.batches
    }

    fn make_part(&mut self, ids: &[usize]) -> Batch {
        let windows: Vec<&Window> = ids.iter().map(|&i| &self.data[i]).collect();
        make_batch(&windows, self.style, self.model.max_len())
    }

    fn part_size(&self, part: &Batch) -> usize {
        part.out_pos.len()
    }

    fn model(&self) -> &M {
        self.model
    }

    /// The next-item loss of the part's outputs (negatives drawn from the replica's stream).
    fn part_step(&self, model: &mut M, batch: &Batch, rng: &mut Rng) -> f64 {
        let rows = batch.out_pos.len();
        if rows == 0 {
            return 0.0;
        }
        let n_items = self.split.n_items;
        let (h, cache) = model.forward(batch, Some(rng));
        let (loss, dh) = match self.loss {
            LossKind::Ce => {
                full_softmax_loss(&h, rows, model.item_table_mut(), &batch.targets, None)
            }
            kind => {
                let cands = 1 + self.neg;
                let mut ids = Vec::with_capacity(rows * cands);
                for &t in &batch.targets {
                    ids.push(t);
                    for _ in 0..self.neg {
                        // Uniform over real items other than the target.
                        let mut j = 1 + rng.below(n_items - 1) as u32;
                        while j == t && n_items > 2 {
                            j = 1 + rng.below(n_items - 1) as u32;
                        }
                        ids.push(j);
                    }
                }
                let kind = match kind {
                    LossKind::SampledCe => SampledLoss::Softmax,
                    LossKind::Bce => SampledLoss::Bce,
                    _ => SampledLoss::Bpr,
                };
                sampled_loss(kind, &h, rows, model.item_table_mut(), &ids, cands, None)
            }
        };
        model.backward(&cache, &dh);
        // The architecture's own penalty (RecBole's reg_weight terms), once per part: the
        // parts' gradients are averaged with weights summing to 1, so it enters the step once.
        loss + model.regularize()
    }

    fn loss_terms(&self, loss: &f64) -> Vec<f64> {
        vec![*loss]
    }

    fn update(&mut self) -> (&mut M, &mut dyn Optimizer, f32) {
        let lr = self.schedule.lr(self.optimizer.steps());
        (&mut *self.model, &mut self.optimizer, lr)
    }

    fn validate(&self) -> Result<(Vec<u8>, Report)> {
        validate_checkpoint(self.model.to_safetensors()?, &self.evaluator, self.split)
    }
}

/// Trains `model` on `split` and returns the best validation checkpoint.
pub fn train<M: TrainModel>(
    model: &mut M,
    split: &Split,
    opts: &TrainOptions,
) -> Result<TrainResult> {
    let start = Instant::now();
    let style = model.style();
    let data = windows(split, style, model.max_len());
    if data.is_empty() {
        return Err(Error::NoTrainingData(
            "no training windows: every training sequence is shorter than two items",
        ));
    }
    if split.valid.is_empty() {
        return Err(Error::NoValidation { what: "events" });
    }
    let evaluator = validation_evaluator(split, &opts.run.metric())?;
    let batches = ShuffledBatches::new(data.len(), opts.batch_size);
    let schedule = Schedule {
        base: opts.lr,
        warmup: opts.warmup,
        total: batches.len() * opts.run.epochs as u64,
        decay: Decay::Constant,
        min_lr: opts.lr,
    };
    let mut step = BackboneStep {
        model,
        split,
        evaluator,
        data,
        batches,
        style,
        loss: opts.loss,
        neg: opts.neg,
        optimizer: Adam::decoupled_or_plain(opts.weight_decay),
        schedule,
    };
    fit(&mut step, &opts.run, start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{EvalSeq, SplitMethod, TrainSeq};

    fn split_of(seqs: Vec<Vec<u32>>, n_items: usize) -> Split {
        Split {
            method: SplitMethod::LeaveOneOut,
            n_users: seqs.len() + 1,
            n_items,
            train: TrainPart::Sequences(
                seqs.iter()
                    .enumerate()
                    .map(|(u, s)| TrainSeq {
                        user: u as u32 + 1,
                        items: s.clone(),
                        session_starts: vec![0],
                    })
                    .collect(),
            ),
            valid: vec![EvalSeq {
                user: 1,
                items: vec![1, 2, 3],
                first_target: 2,
                session_start: 0,
            }],
            test: Vec::new(),
        }
    }

    #[test]
    fn windows_train_every_target_once() {
        let seq: Vec<u32> = (1..=23).collect();
        let split = split_of(vec![seq.clone(), vec![5], vec![7, 8]], 30);
        let w = windows(&split, TrainStyle::AllPositions, 8);
        let mut trained: Vec<u32> = w
            .iter()
            .flat_map(|w| w.targets.iter().copied().filter(|&t| t != 0))
            .collect();
        trained.sort_unstable();
        let mut want: Vec<u32> = seq[1..].to_vec();
        want.push(8);
        want.sort_unstable();
        assert_eq!(trained, want);
        for win in &w {
            assert!(win.items.len() <= 8);
            for (t, &target) in win.targets.iter().enumerate() {
                if target != 0 {
                    // Next-item target of the window's own position.
                    let pos = seq.iter().position(|&x| x == win.items[t]);
                    if let Some(p) = pos {
                        assert_eq!(seq[p + 1], target);
                    }
                }
            }
        }
        // Targets after the first window keep at least max_len / 2 items of context.
        for win in w.iter().filter(|w| w.items.len() == 8) {
            let first = win.targets.iter().position(|&t| t != 0).unwrap();
            assert!(first == 0 || first >= 4, "{:?}", win.targets);
        }
    }

    #[test]
    fn batches_right_pad_and_list_outputs() {
        let a = Window {
            user: 1,
            items: vec![3, 4, 5],
            targets: vec![4, 5, 6],
        };
        let b = Window {
            user: 2,
            items: vec![9],
            targets: vec![0],
        };
        let batch = make_batch(&[&a, &b], TrainStyle::AllPositions, 10);
        assert_eq!(batch.len, 3);
        assert_eq!(batch.items, vec![3, 4, 5, 9, 0, 0]);
        assert_eq!(batch.out_pos, vec![(0, 0), (0, 1), (0, 2)]);
        let c = Window {
            user: 2,
            items: vec![9, 2],
            targets: vec![0, 7],
        };
        let batch = make_batch(&[&c], TrainStyle::LastPosition, 4);
        assert_eq!(batch.items, vec![9, 2, 0, 0]);
        assert_eq!(
            (batch.out_pos.clone(), batch.targets.clone()),
            (vec![(0, 1)], vec![7])
        );
    }
}
