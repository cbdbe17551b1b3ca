//! The training loop: seeded mini-batches split across cores, hand-derived gradients, Adam /
//! AdamW with optional clipping and warm-up, validation through the engine every epoch, early
//! stopping on a validation metric (NDCG@10 by default), a wall-clock budget, and the best
//! validation checkpoint kept as a safetensors image the engine loads unchanged.

use crate::data::{Split, TrainPart};
use crate::error::{Error, Result};
use crate::eval::{EvalOptions, Evaluator, Report, parse_metrics};
use crate::models::{Batch, TrainModel, TrainStyle};
use crate::nn::Rng;
use crate::nn::loss::{SampledLoss, full_softmax_loss, sampled_loss};
use crate::nn::optim::{Adam, Decay, Optimizer, Schedule, clip_grad_norm};
use crate::nn::param::{gather_grads, sync_replicas, zero_grads};
use crate::scorer::EngineScorer;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use seqrec_engine::Model;
use std::time::{Duration, Instant};

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
    /// Maximum epochs.
    pub epochs: usize,
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
    /// Seed of initialisation, shuffling, dropout and negatives.
    pub seed: u64,
    /// Stop when the next epoch would not fit (validation included).
    pub time_budget: Option<Duration>,
    /// Worker threads for a mini-batch (each computes the gradient of its share).
    pub threads: usize,
    /// Global gradient-norm clipping (`None`: off).
    pub clip: Option<f32>,
    /// Linear warm-up steps.
    pub warmup: u64,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Validation metric to maximise (e.g. `ndcg@10`).
    pub valid_metric: String,
    /// Progress bars on stderr.
    pub progress: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: 200,
            batch_size: 256,
            lr: 1e-3,
            weight_decay: 0.0,
            loss: LossKind::Ce,
            neg: 1,
            seed: 2020,
            time_budget: None,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            clip: Some(5.0),
            warmup: 0,
            patience: 10,
            valid_metric: "ndcg@10".into(),
            progress: true,
        }
    }
}

/// One epoch's log.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochLog {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Validation metric.
    pub valid: f64,
    /// Seconds since the start.
    pub elapsed: f64,
}

/// Why training stopped.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `epochs` ran.
    Epochs,
    /// No improvement for `patience` epochs.
    EarlyStopping,
    /// The time budget ran out.
    TimeBudget,
}

/// The result of [`train`].
#[derive(Clone, Debug)]
pub struct TrainResult {
    /// Per-epoch log.
    pub log: Vec<EpochLog>,
    /// Epoch of the best validation metric.
    pub best_epoch: usize,
    /// The best validation report.
    pub best_report: Option<Report>,
    /// The best checkpoint (safetensors image).
    pub checkpoint: Vec<u8>,
    /// Why it stopped.
    pub stop: StopReason,
    /// Training sequences (windows or examples) per second, averaged over the run.
    pub windows_per_sec: f64,
}

/// The evaluator of the validation metric `metric` (lower case) on `split`.
pub(crate) fn validation_evaluator(split: &Split, metric: &str) -> Result<Evaluator> {
    let eval_opts = EvalOptions {
        metrics: parse_metrics(metric)?,
        ..Default::default()
    };
    Ok(Evaluator::new(split, eval_opts)?)
}

/// `threads` copies of `model` for data-parallel steps, with one dropout stream each (seeded
/// from `seed`).
pub(crate) fn replicas<M: Clone>(model: &M, threads: usize, seed: u64) -> (Vec<M>, Vec<Rng>) {
    let replicas = (0..threads).map(|_| model.clone()).collect();
    let rngs = (0..threads as u64)
        .map(|t| Rng::new(seed ^ (0xA5A5 + t)))
        .collect();
    (replicas, rngs)
}

/// The best-epoch bookkeeping every training loop shares: the per-epoch log, the best
/// validation value with its report and checkpoint, and why training stopped.
pub(crate) struct EpochTracker {
    log: Vec<EpochLog>,
    best: f64,
    best_epoch: usize,
    best_report: Option<Report>,
    checkpoint: Vec<u8>,
    stop: StopReason,
}

impl EpochTracker {
    pub(crate) fn new() -> Self {
        EpochTracker {
            log: Vec::new(),
            best: f64::NEG_INFINITY,
            best_epoch: 0,
            best_report: None,
            checkpoint: Vec::new(),
            stop: StopReason::Epochs,
        }
    }

    /// Logs epoch `epoch`, validated at `value` (its report and checkpoint kept when it is the
    /// best so far); true when training stops: no improvement for `patience` epochs, or
    /// `out_of_time`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn end_epoch(
        &mut self,
        entry: EpochLog,
        epoch: usize,
        value: f64,
        report: Report,
        checkpoint: Vec<u8>,
        patience: usize,
        out_of_time: bool,
    ) -> bool {
        self.log.push(entry);
        if value > self.best {
            (self.best, self.best_epoch) = (value, epoch);
            (self.best_report, self.checkpoint) = (Some(report), checkpoint);
        } else if epoch - self.best_epoch >= patience {
            self.stop = StopReason::EarlyStopping;
            return true;
        }
        if out_of_time {
            self.stop = StopReason::TimeBudget;
            return true;
        }
        false
    }

    /// The result of a run that trained on `done` sequences since `start`.
    pub(crate) fn finish(self, done: usize, start: Instant) -> TrainResult {
        TrainResult {
            log: self.log,
            best_epoch: self.best_epoch,
            best_report: self.best_report,
            checkpoint: self.checkpoint,
            stop: self.stop,
            windows_per_sec: done as f64 / start.elapsed().as_secs_f64().max(1e-9),
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

/// Loss and gradient of one part of a mini-batch on `model` (a replica).
fn part_step<M: TrainModel>(
    model: &mut M,
    batch: &Batch,
    opts: &TrainOptions,
    n_items: usize,
    rng: &mut Rng,
) -> f64 {
    zero_grads(&mut model.params_mut());
    let rows = batch.out_pos.len();
    if rows == 0 {
        return 0.0;
    }
    let (h, cache) = model.forward(batch, Some(rng));
    let (loss, dh) = match opts.loss {
        LossKind::Ce => full_softmax_loss(&h, rows, model.item_table_mut(), &batch.targets, None),
        kind => {
            let cands = 1 + opts.neg;
            let mut ids = Vec::with_capacity(rows * cands);
            for &t in &batch.targets {
                ids.push(t);
                for _ in 0..opts.neg {
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
    // The architecture's own penalty (RecBole's reg_weight terms), once per part: the parts'
    // gradients are averaged with weights summing to 1, so it enters the step once.
    loss + model.regularize()
}

/// Validates `model` through the engine on the split's validation events.
fn validate<M: TrainModel>(
    model: &M,
    evaluator: &Evaluator,
    split: &Split,
) -> Result<(Vec<u8>, Report)> {
    let bytes = model.to_safetensors()?;
    let engine = Model::from_bytes(&bytes, &Default::default())?;
    let report = evaluator.evaluate_par(&split.valid, &EngineScorer::new(&engine))?;
    Ok((bytes, report))
}

/// Trains `model` on `split` and returns the best validation checkpoint.
pub fn train<M: TrainModel>(
    model: &mut M,
    split: &Split,
    opts: &TrainOptions,
) -> Result<TrainResult> {
    let start = Instant::now();
    let n_items = split.n_items;
    let style = model.style();
    let max_len = model.max_len();
    let data = windows(split, style, max_len);
    if data.is_empty() {
        return Err(Error::NoTrainingData(
            "no training windows: every training sequence is shorter than two items",
        ));
    }
    if split.valid.is_empty() {
        return Err(Error::NoValidation { what: "events" });
    }
    let metric = opts.valid_metric.to_ascii_lowercase();
    let evaluator = validation_evaluator(split, &metric)?;
    let threads = opts.threads.max(1);
    let (mut replicas, mut rngs) = replicas(&*model, threads, opts.seed);
    let mut shuffle = Rng::new(opts.seed ^ 0x5EED);
    let steps_per_epoch = data.len().div_ceil(opts.batch_size.max(1)) as u64;
    let schedule = Schedule {
        base: opts.lr,
        warmup: opts.warmup,
        total: steps_per_epoch * opts.epochs as u64,
        decay: Decay::Constant,
        min_lr: opts.lr,
    };
    let mut optimizer: Box<dyn Optimizer> = Box::new(Adam::decoupled_or_plain(opts.weight_decay));
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut tracker = EpochTracker::new();
    let mut windows_done = 0usize;
    let mut last_valid_secs = 0.0f64;
    for epoch in 1..=opts.epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, shuffle.below(i + 1));
        }
        let bar = if opts.progress {
            ProgressBar::new(steps_per_epoch)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("epoch {msg} [{bar:30}] {pos}/{len} {elapsed}<{eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(format!("{epoch}/{}", opts.epochs));
        let (mut loss_sum, mut loss_rows) = (0.0f64, 0usize);
        let mut out_of_time = false;
        for chunk in order.chunks(opts.batch_size.max(1)) {
            if let Some(budget) = opts.time_budget
                && start.elapsed().as_secs_f64() + last_valid_secs.max(0.5) >= budget.as_secs_f64()
            {
                out_of_time = true;
                break;
            }
            let per = chunk.len().div_ceil(threads);
            let parts: Vec<Batch> = chunk
                .chunks(per)
                .map(|c| {
                    make_batch(
                        &c.iter().map(|&i| &data[i]).collect::<Vec<_>>(),
                        style,
                        max_len,
                    )
                })
                .collect();
            let total: usize = parts.iter().map(|b| b.out_pos.len()).sum();
            let losses: Vec<f64> = replicas
                .par_iter_mut()
                .zip(rngs.par_iter_mut())
                .zip(parts.par_iter())
                .map(|((rep, rng), part)| part_step(rep, part, opts, n_items, rng))
                .collect();
            {
                // The mini-batch gradient: each part's mean-loss gradient weighted by its share
                // of the outputs.
                let mut main = model.params_mut();
                gather_grads(
                    &mut main,
                    replicas
                        .iter()
                        .zip(&parts)
                        .map(|(r, part)| (r, part.out_pos.len() as f32 / total.max(1) as f32)),
                );
                if let Some(c) = opts.clip {
                    clip_grad_norm(&mut main, c);
                }
                let lr = schedule.lr(optimizer.steps());
                optimizer.step(&mut main, lr);
            }
            sync_replicas(&mut replicas, &*model);
            for (l, part) in losses.iter().zip(&parts) {
                loss_sum += l * part.out_pos.len() as f64;
            }
            loss_rows += total;
            windows_done += chunk.len();
            bar.inc(1);
        }
        bar.finish_and_clear();
        let t_valid = Instant::now();
        let (bytes, report) = validate(model, &evaluator, split)?;
        last_valid_secs = t_valid.elapsed().as_secs_f64();
        let value = report.get(&metric).unwrap_or(f64::NAN);
        let entry = EpochLog {
            epoch,
            loss: loss_sum / loss_rows.max(1) as f64,
            valid: value,
            elapsed: start.elapsed().as_secs_f64(),
        };
        if opts.progress {
            eprintln!(
                "epoch {epoch}: loss {:.4}, valid {metric} {value:.4} ({:.1}s)",
                entry.loss, entry.elapsed
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
