//! The one training loop every model family runs ([`fit`]), over a [`TrainStep`] that says
//! what is particular to the family (after burn-train's `Learner` / `TrainStep`).
//!
//! A family implements [`TrainStep`]: what an epoch's mini-batches are ([`Batches`]: a list
//! of example ids per mini-batch), how a part of a mini-batch is built and how its loss and
//! gradient are computed on a replica of the model, the weight of a part, which model and
//! optimizer a step updates (the RL heads switch between two copies with an Adam each), what
//! the step leaves behind (the hierarchical models carry state between a user's sessions), and
//! how the model is validated and checkpointed. The implementations: the backbones
//! ([`crate::train::train`]), the RL heads ([`crate::models::rl::train::train_rl`]), the
//! Decision Transformers ([`crate::models::dt::train::train`]), the hierarchical session
//! models ([`crate::models::hdt::train_hdt`]) and the generators of text latents and ID
//! embeddings, PDiT and the DreamRec-style baseline ([`crate::models::pdit::train`]).
//!
//! [`fit`] runs the epochs, the same for all of them:
//!
//! 1. at the start of an epoch, [`Batches::begin_epoch`] orders the examples with the loop's
//!    shuffling stream (seeded `seed ^ 0x5EED`; [`ShuffledBatches`] reshuffles a fixed set);
//! 2. for every mini-batch ([`Batches::next_batch`]): stop the epoch, and training, when the
//!    wall-clock budget would not also fit the last validation (at least 0.5 s); split the
//!    mini-batch into `threads` contiguous shares, build one part from each
//!    ([`TrainStep::make_part`]), copy the updated model's values into the replicas and compute
//!    the parts in parallel (rayon), each replica with its own stream (seeded
//!    `seed ^ (0xA5A5 + t)`); set the model's gradient to the parts' gradients weighted by
//!    their share ([`TrainStep::part_size`] over [`TrainStep::weight_denominator`]), clip its
//!    global norm, and let the optimizer step;
//! 3. at the end of an epoch, validate ([`TrainStep::validate`]), log the epoch (mean loss
//!    terms weighted by part size; a progress bar and one line on stderr), keep the best
//!    checkpoint of the validation metric, and stop after `patience` epochs without
//!    improvement.
//!
//! Nothing in the loop is about a data format: an example id means whatever the step makes
//! of it (a window, a transition, a user), so an online agent that collects its own
//! experience fits the same trait.

use crate::data::Split;
use crate::error::Result;
use crate::eval::{EvalOptions, Evaluator, Report, parse_metrics};
use crate::nn::optim::{Optimizer, clip_grad_norm};
use crate::nn::param::{gather_grads, sync_replicas, zero_grads};
use crate::nn::{Module, Rng};
use crate::scorer::EngineScorer;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use seqrec_engine::Model;
use std::time::{Duration, Instant};

/// What an epoch's mini-batches are: the ids of their examples, in the order the epoch trains
/// them.
pub trait Batches {
    /// Mini-batches per epoch, where known in advance (the progress bar).
    fn steps_per_epoch(&self) -> Option<u64> {
        None
    }

    /// Starts an epoch: orders its examples, drawing from `shuffle` (the loop's stream).
    fn begin_epoch(&mut self, shuffle: &mut Rng);

    /// The ids of the next mini-batch's examples (split across the replicas in contiguous
    /// runs); `None` ends the epoch. May draw from `shuffle`.
    fn next_batch(&mut self, shuffle: &mut Rng) -> Option<Vec<usize>>;
}

/// One model family's training step, run by [`fit`] (see the module docs).
///
/// The loop calls, per epoch: [`Batches::begin_epoch`] on [`TrainStep::batches`], then for
/// every mini-batch [`Batches::next_batch`], [`begin_step`](TrainStep::begin_step),
/// [`make_part`](TrainStep::make_part) per share, [`part_step`](TrainStep::part_step) on the
/// replicas in parallel, [`update`](TrainStep::update), [`end_step`](TrainStep::end_step);
/// after the last mini-batch [`end_epoch`](TrainStep::end_epoch) and
/// [`validate`](TrainStep::validate).
pub trait TrainStep: Sync {
    /// The network a data-parallel replica holds (a clone of the trained model).
    type Model: Module + Clone + Send + Sync;
    /// The share of a mini-batch that one replica computes.
    type Part: Send + Sync;
    /// What computing a part gives: its loss terms, and whatever [`TrainStep::end_step`] needs.
    type Output: Send;
    /// The epochs' mini-batches.
    type Batches: Batches;

    /// Names of the loss terms after the total, in the order of [`TrainStep::loss_terms`]
    /// (shown in the progress line; empty: the total only).
    const TERMS: &'static [&'static str] = &[];

    /// The epochs' mini-batches.
    fn batches(&mut self) -> &mut Self::Batches;

    /// Called once per mini-batch, before its parts are built (e.g. choose the model this step
    /// updates).
    fn begin_step(&mut self) {}

    /// The part made of the examples `ids` (called in order, once per share).
    fn make_part(&mut self, ids: &[usize]) -> Self::Part;

    /// The size of a part: its weight in the mini-batch's gradient and in the epoch's mean loss
    /// (e.g. the number of outputs that carry a loss).
    fn part_size(&self, part: &Self::Part) -> usize;

    /// What the parts' sizes are divided by to weight their gradients: their `total` (a mean
    /// over the mini-batch) unless the loss is normalised otherwise.
    fn weight_denominator(&self, total: usize) -> usize {
        total
    }

    /// The model this step updates (its values are copied into the replicas first).
    fn model(&self) -> &Self::Model;

    /// The loss of `part` with its gradient added into `replica` (whose gradients the loop has
    /// zeroed); `rng` is the replica's own stream (dropout, sampled negatives).
    fn part_step(
        &self,
        replica: &mut Self::Model,
        part: &Self::Part,
        rng: &mut Rng,
    ) -> Self::Output;

    /// The loss terms of an output: the total first, then one per [`TrainStep::TERMS`] entry.
    fn loss_terms(&self, out: &Self::Output) -> Vec<f64>;

    /// The model this step updates (the loop gathers the gradient into it and clips it), the
    /// optimizer that steps it, and the learning rate of the step.
    fn update(&mut self) -> (&mut Self::Model, &mut dyn Optimizer, f32);

    /// Called after the optimizer step with the parts and their outputs (e.g. carry state
    /// forward, count steps).
    fn end_step(&mut self, parts: &[Self::Part], outputs: &[Self::Output]) {
        let _ = (parts, outputs);
    }

    /// Called at the end of an epoch with its mean loss terms (total first).
    fn end_epoch(&mut self, mean_terms: &[f64]) {
        let _ = mean_terms;
    }

    /// The checkpoint (a safetensors image the engine loads) and the validation report.
    fn validate(&self) -> Result<(Vec<u8>, Report)>;

    /// Text added after the elapsed time in the progress line (e.g. the step count).
    fn progress_note(&self) -> String {
        String::new()
    }
}

/// The knobs of [`fit`], the same for every family (whose options hold them as `run`).
#[derive(Clone, Debug, PartialEq)]
pub struct RunOptions {
    /// Maximum epochs.
    pub epochs: usize,
    /// Seed of the shuffling stream and of the replicas' streams.
    pub seed: u64,
    /// Stop when the next mini-batch and a validation would not fit.
    pub time_budget: Option<Duration>,
    /// Replicas computing a mini-batch's parts in parallel.
    pub threads: usize,
    /// Global gradient-norm clipping (`None`: off).
    pub clip: Option<f32>,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Validation metric to maximise (e.g. `ndcg@10`; case-insensitive).
    pub valid_metric: String,
    /// Progress bar and one line per epoch on stderr.
    pub progress: bool,
}

impl RunOptions {
    /// The validation metric in canonical (lower-case) form.
    pub fn metric(&self) -> String {
        self.valid_metric.to_ascii_lowercase()
    }
}

impl Default for RunOptions {
    /// 200 epochs, seed 2020, no time budget, a replica per core, clipping at 5, patience 10,
    /// NDCG@10, progress on stderr.
    fn default() -> Self {
        RunOptions {
            epochs: 200,
            seed: 2020,
            time_budget: None,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            clip: Some(5.0),
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
    /// Seconds of this epoch's training steps (validation excluded).
    pub train_secs: f64,
    /// Training examples (windows, transitions, sessions) of this epoch's steps.
    pub examples: usize,
    /// Seconds of this epoch's validation.
    pub valid_secs: f64,
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

/// The result of a training run.
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
    /// Training examples (windows, transitions, sessions) per second, averaged over the run.
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

/// `checkpoint` (a model's safetensors image) with its validation report through the engine,
/// the served path, with the default knobs, on `split`'s validation events.
pub(crate) fn validate_checkpoint(
    checkpoint: Vec<u8>,
    evaluator: &Evaluator,
    split: &Split,
) -> Result<(Vec<u8>, Report)> {
    let engine = Model::from_bytes(&checkpoint, &Default::default())?;
    let report = evaluator.evaluate_par(&split.valid, &EngineScorer::new(&engine))?;
    Ok((checkpoint, report))
}

/// `threads` copies of `model` for data-parallel steps, with one stream each (seeded from
/// `seed`).
pub(crate) fn replicas<M: Clone>(model: &M, threads: usize, seed: u64) -> (Vec<M>, Vec<Rng>) {
    let replicas = (0..threads).map(|_| model.clone()).collect();
    let rngs = (0..threads as u64)
        .map(|t| Rng::new(seed ^ (0xA5A5 + t)))
        .collect();
    (replicas, rngs)
}

/// Fisher–Yates shuffle of `v` with `rng`.
pub(crate) fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
}

/// Mini-batches of `batch` example ids out of `0..n`, in an order shuffled again every epoch
/// (each epoch shuffles the previous epoch's order).
#[derive(Clone, Debug)]
pub struct ShuffledBatches {
    order: Vec<usize>,
    batch: usize,
    next: usize,
}

impl ShuffledBatches {
    /// The examples `0..n` in mini-batches of `batch` (at least 1).
    pub fn new(n: usize, batch: usize) -> Self {
        ShuffledBatches {
            order: (0..n).collect(),
            batch: batch.max(1),
            next: n,
        }
    }

    /// Mini-batches per epoch.
    pub fn len(&self) -> u64 {
        self.order.len().div_ceil(self.batch) as u64
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

impl Batches for ShuffledBatches {
    fn steps_per_epoch(&self) -> Option<u64> {
        Some(self.len())
    }

    /// Shuffles the previous epoch's order.
    fn begin_epoch(&mut self, rng: &mut Rng) {
        shuffle(&mut self.order, rng);
        self.next = 0;
    }

    fn next_batch(&mut self, _: &mut Rng) -> Option<Vec<usize>> {
        let start = self.next;
        if start >= self.order.len() {
            return None;
        }
        self.next = (start + self.batch).min(self.order.len());
        Some(self.order[start..self.next].to_vec())
    }
}

/// [`ShuffledBatches`] cut into rounds of `steps` mini-batches instead of passes over the
/// data, so that the loop validates every `steps` steps: a round goes on where the previous one
/// stopped, and a new shuffled pass starts when the data runs out. Without `steps` a round is
/// one pass (an epoch).
#[derive(Clone, Debug)]
pub struct RoundBatches {
    inner: ShuffledBatches,
    steps: Option<usize>,
    done: usize,
}

impl RoundBatches {
    /// The examples `0..n` in mini-batches of `batch`, `steps` of them per round.
    pub fn new(n: usize, batch: usize, steps: Option<usize>) -> Self {
        RoundBatches {
            inner: ShuffledBatches::new(n, batch),
            steps: steps.map(|s| s.max(1)),
            done: 0,
        }
    }
}

impl Batches for RoundBatches {
    fn steps_per_epoch(&self) -> Option<u64> {
        Some(self.steps.map_or(self.inner.len(), |s| s as u64))
    }

    fn begin_epoch(&mut self, rng: &mut Rng) {
        self.done = 0;
        if self.steps.is_none() {
            self.inner.begin_epoch(rng);
        }
    }

    fn next_batch(&mut self, rng: &mut Rng) -> Option<Vec<usize>> {
        let Some(steps) = self.steps else {
            return self.inner.next_batch(rng);
        };
        if self.done == steps || self.inner.is_empty() {
            return None;
        }
        self.done += 1;
        self.inner.next_batch(rng).or_else(|| {
            self.inner.begin_epoch(rng);
            self.inner.next_batch(rng)
        })
    }
}

/// The best-epoch bookkeeping: the per-epoch log, the best validation value with its report
/// and checkpoint, and why training stopped.
struct EpochTracker {
    log: Vec<EpochLog>,
    best: f64,
    best_epoch: usize,
    best_report: Option<Report>,
    checkpoint: Vec<u8>,
    stop: StopReason,
}

impl EpochTracker {
    fn new() -> Self {
        EpochTracker {
            log: Vec::new(),
            best: f64::NEG_INFINITY,
            best_epoch: 0,
            best_report: None,
            checkpoint: Vec::new(),
            stop: StopReason::Epochs,
        }
    }

    /// Logs `entry`, validated at `entry.valid` (its report and checkpoint kept when it is the
    /// best so far); true when training stops: no improvement for `patience` epochs, or
    /// `out_of_time`.
    fn end_epoch(
        &mut self,
        entry: EpochLog,
        report: Report,
        checkpoint: Vec<u8>,
        patience: usize,
        out_of_time: bool,
    ) -> bool {
        let (epoch, value) = (entry.epoch, entry.valid);
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

    /// The result of a run that trained on `done` examples since `start`.
    fn finish(self, done: usize, start: Instant) -> TrainResult {
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

fn progress_bar(steps: Option<u64>, show: bool, epoch: usize, epochs: usize) -> ProgressBar {
    let bar = match steps {
        Some(n) if show => ProgressBar::new(n),
        _ => ProgressBar::hidden(),
    };
    bar.set_style(
        ProgressStyle::with_template("epoch {msg} [{bar:30}] {pos}/{len} {elapsed}<{eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("{epoch}/{epochs}"));
    bar
}

/// The progress line of an epoch: the mean loss, its named terms, the validation value, the
/// time since the start, and the epoch's training throughput and validation time.
fn progress_line<S: TrainStep>(step: &S, entry: &EpochLog, terms: &[f64], metric: &str) -> String {
    let named: Vec<String> = S::TERMS
        .iter()
        .zip(&terms[1..])
        .map(|(name, v)| format!("{name} {v:.4}"))
        .collect();
    let named = if named.is_empty() {
        String::new()
    } else {
        format!(" ({})", named.join(", "))
    };
    format!(
        "epoch {}: loss {:.4}{named}, valid {metric} {:.4} ({:.1}s{}; train {:.1} s, {:.0} examples/s; valid {:.1} s)",
        entry.epoch,
        entry.loss,
        entry.valid,
        entry.elapsed,
        step.progress_note(),
        entry.train_secs,
        entry.examples as f64 / entry.train_secs.max(1e-9),
        entry.valid_secs
    )
}

/// One mini-batch (step 2 of the module docs): its parts built, computed on the replicas in
/// parallel, their gradients gathered into the updated model, clipped, and the optimizer step.
/// Adds the parts' loss terms, weighted by their sizes, into `sums`; returns the sizes' total.
fn train_batch<S: TrainStep>(
    step: &mut S,
    batch: &[usize],
    replicas: &mut [S::Model],
    rngs: &mut [Rng],
    clip: Option<f32>,
    sums: &mut [f64],
) -> usize {
    step.begin_step();
    let per = batch.len().div_ceil(replicas.len());
    let parts: Vec<S::Part> = batch.chunks(per).map(|ids| step.make_part(ids)).collect();
    sync_replicas(replicas, step.model());
    let shared = &*step;
    let outputs: Vec<S::Output> = replicas
        .par_iter_mut()
        .zip(rngs.par_iter_mut())
        .zip(parts.par_iter())
        .map(|((rep, rng), part)| {
            zero_grads(&mut rep.params_mut());
            shared.part_step(rep, part, rng)
        })
        .collect();
    let sizes: Vec<usize> = parts.iter().map(|p| step.part_size(p)).collect();
    let total: usize = sizes.iter().sum();
    let denominator = step.weight_denominator(total).max(1) as f32;
    {
        let (model, optimizer, lr) = step.update();
        let mut params = model.params_mut();
        gather_grads(
            &mut params,
            replicas
                .iter()
                .zip(&sizes)
                .map(|(r, &k)| (r, k as f32 / denominator)),
        );
        if let Some(c) = clip {
            clip_grad_norm(&mut params, c);
        }
        optimizer.step(&mut params, lr);
    }
    for (out, &k) in outputs.iter().zip(&sizes) {
        for (s, v) in sums.iter_mut().zip(step.loss_terms(out)) {
            *s += v * k as f64;
        }
    }
    step.end_step(&parts, &outputs);
    total
}

/// Trains with `step` (see the module docs) and returns the best validation checkpoint.
/// `start` is when the run began: what was prepared before counts against the time budget.
pub fn fit<S: TrainStep>(step: &mut S, opts: &RunOptions, start: Instant) -> Result<TrainResult> {
    let metric = opts.metric();
    let (mut replicas, mut rngs) = replicas(step.model(), opts.threads.max(1), opts.seed);
    let mut shuffle = Rng::new(opts.seed ^ 0x5EED);
    let mut tracker = EpochTracker::new();
    let mut done = 0usize;
    let mut last_valid_secs = 0.0f64;
    for epoch in 1..=opts.epochs {
        step.batches().begin_epoch(&mut shuffle);
        let steps = step.batches().steps_per_epoch();
        let bar = progress_bar(steps, opts.progress, epoch, opts.epochs);
        let (mut sums, mut n) = (vec![0.0f64; 1 + S::TERMS.len()], 0usize);
        let mut out_of_time = false;
        let (t_train, done_before) = (Instant::now(), done);
        while let Some(batch) = step.batches().next_batch(&mut shuffle) {
            if let Some(budget) = opts.time_budget
                && start.elapsed().as_secs_f64() + last_valid_secs.max(0.5) >= budget.as_secs_f64()
            {
                out_of_time = true;
                break;
            }
            n += train_batch(step, &batch, &mut replicas, &mut rngs, opts.clip, &mut sums);
            done += batch.len();
            bar.inc(1);
        }
        bar.finish_and_clear();
        let train_secs = t_train.elapsed().as_secs_f64();
        let means: Vec<f64> = sums.iter().map(|s| s / n.max(1) as f64).collect();
        step.end_epoch(&means);
        let t_valid = Instant::now();
        let (bytes, report) = step.validate()?;
        last_valid_secs = t_valid.elapsed().as_secs_f64();
        let entry = EpochLog {
            epoch,
            loss: means[0],
            valid: report.get(&metric).unwrap_or(f64::NAN),
            elapsed: start.elapsed().as_secs_f64(),
            train_secs,
            examples: done - done_before,
            valid_secs: last_valid_secs,
        };
        if opts.progress {
            eprintln!("{}", progress_line(step, &entry, &means, &metric));
        }
        if tracker.end_epoch(entry, report, bytes, opts.patience, out_of_time) {
            break;
        }
    }
    Ok(tracker.finish(done, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffled_batches_cover_every_example_once_per_epoch() {
        let mut b = ShuffledBatches::new(10, 4);
        assert_eq!(b.steps_per_epoch(), Some(3));
        let mut rng = Rng::new(1);
        assert_eq!(b.next_batch(&mut rng), None, "no epoch started");
        for _ in 0..2 {
            b.begin_epoch(&mut rng);
            let batches: Vec<Vec<usize>> = std::iter::from_fn(|| b.next_batch(&mut rng)).collect();
            assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [4, 4, 2]);
            let mut all: Vec<usize> = batches.concat();
            all.sort_unstable();
            assert_eq!(all, (0..10).collect::<Vec<_>>());
        }
    }

    #[test]
    fn rounds_of_steps_run_on_across_passes() {
        let mut rng = Rng::new(2);
        let mut b = RoundBatches::new(5, 2, Some(4));
        assert_eq!(b.steps_per_epoch(), Some(4));
        let mut seen = Vec::new();
        for _ in 0..3 {
            b.begin_epoch(&mut rng);
            let round: Vec<Vec<usize>> = std::iter::from_fn(|| b.next_batch(&mut rng)).collect();
            assert_eq!(round.len(), 4);
            seen.extend(round);
        }
        // 12 batches over passes of 3 (sizes 2, 2, 1): every pass covers the 5 examples.
        for pass in seen.chunks(3) {
            let mut all: Vec<usize> = pass.concat();
            all.sort_unstable();
            assert_eq!(all, (0..5).collect::<Vec<_>>());
        }
        let mut e = RoundBatches::new(5, 2, None);
        e.begin_epoch(&mut rng);
        assert_eq!(std::iter::from_fn(|| e.next_batch(&mut rng)).count(), 3);
    }

    #[test]
    fn early_stopping_and_the_time_budget_end_a_run() {
        let report = || Report {
            values: Vec::new(),
            n_events: 0,
            n_sequences: 0,
            n_users: 0,
            n_serendipity_events: 0,
        };
        let log = |epoch, valid| EpochLog {
            epoch,
            loss: 0.0,
            valid,
            elapsed: 0.0,
            train_secs: 0.0,
            examples: 0,
            valid_secs: 0.0,
        };
        let mut t = EpochTracker::new();
        assert!(!t.end_epoch(log(1, 0.5), report(), vec![1], 2, false));
        assert!(!t.end_epoch(log(2, 0.4), report(), vec![2], 2, false));
        assert!(t.end_epoch(log(3, 0.4), report(), vec![3], 2, false));
        let r = t.finish(10, Instant::now());
        assert_eq!(
            (r.best_epoch, r.checkpoint, r.stop),
            (1, vec![1], StopReason::EarlyStopping)
        );
        let mut t = EpochTracker::new();
        assert!(t.end_epoch(log(1, 0.5), report(), vec![1], 2, true));
        assert_eq!(t.finish(0, Instant::now()).stop, StopReason::TimeBudget);
    }
}
