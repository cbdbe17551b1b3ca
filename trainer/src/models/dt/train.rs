//! Training data and the training loop of the Decision Transformers.
//!
//! **Samples** (`spec/thesis-models.md` §1, the replay-buffer expansion): every position
//! `j ≥ 2` of a training sequence ends one window — states are the up-to-`L` items before
//! `x_j`, actions the same items moved by one (ending with `x_j`) — and its returns are
//! computed once, inside the window ([`training_returns`]). Every real step of a window
//! carries a loss. `stride > 1` keeps every `stride`-th window end of a sequence (counting
//! back from the last), a cheaper epoch for long sequences. Pre-split benchmarks given as
//! examples give one window per example.
//!
//! **Loop**: as [`crate::train::train`] (seeded shuffling, the mini-batch split across
//! per-thread replicas whose gradients are averaged by their share of real steps, Adam,
//! gradient clipping, validation through the engine every epoch, early stopping, a wall-clock
//! budget, the best checkpoint kept), with the loss `L_S + L_a + β·L_R`.

use super::DtModel;
use super::forward::{DtBatch, LossParts};
use super::returns::{N_OBJ, training_returns};
use crate::data::{Split, TrainPart};
use crate::error::{Error, Result};
use crate::eval::{Evaluator, Report};
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

fn validate(model: &DtModel, evaluator: &Evaluator, split: &Split) -> Result<(Vec<u8>, Report)> {
    let bytes = model.to_safetensors()?;
    let engine = Model::from_bytes(&bytes, &Default::default())?;
    let report = evaluator.evaluate_par(&split.valid, &EngineScorer::new(&engine))?;
    Ok((bytes, report))
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
    let metric = opts.valid_metric.to_ascii_lowercase();
    let evaluator = validation_evaluator(split, &metric)?;
    let threads = opts.threads.max(1);
    let (mut replicas, mut rngs) = replicas(&*model, threads, opts.seed);
    let mut shuffle = Rng::new(opts.seed ^ 0x5EED);
    let mut optimizer: Box<dyn Optimizer> = Box::new(Adam::decoupled_or_plain(opts.weight_decay));
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut tracker = EpochTracker::new();
    let mut last = DtLossLog::default();
    let mut windows_done = 0usize;
    let mut last_valid_secs = 0.0f64;
    for epoch in 1..=opts.epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, shuffle.below(i + 1));
        }
        let mut sums = [0.0f64; 4];
        let mut steps_seen = 0usize;
        let mut out_of_time = false;
        for chunk in order.chunks(opts.batch_size.max(1)) {
            if let Some(budget) = opts.time_budget
                && start.elapsed().as_secs_f64() + last_valid_secs.max(0.5) >= budget.as_secs_f64()
            {
                out_of_time = true;
                break;
            }
            let per = chunk.len().div_ceil(threads);
            let parts: Vec<DtBatch> = chunk
                .chunks(per)
                .map(|c| make_batch(&c.iter().map(|&i| &data[i]).collect::<Vec<_>>()))
                .collect();
            let real = |b: &DtBatch| b.lens.iter().sum::<usize>();
            let total: usize = parts.iter().map(real).sum();
            let losses: Vec<LossParts> = replicas
                .par_iter_mut()
                .zip(rngs.par_iter_mut())
                .zip(parts.par_iter())
                .map(|((rep, rng), part)| {
                    zero_grads(&mut rep.params_mut());
                    rep.step(part, Some(rng))
                })
                .collect();
            {
                let mut main = model.params_mut();
                gather_grads(
                    &mut main,
                    replicas
                        .iter()
                        .zip(&parts)
                        .map(|(r, part)| (r, real(part) as f32 / total.max(1) as f32)),
                );
                if let Some(c) = opts.clip {
                    clip_grad_norm(&mut main, c);
                }
                optimizer.step(&mut main, opts.lr);
            }
            sync_replicas(&mut replicas, &*model);
            for (l, part) in losses.iter().zip(&parts) {
                let w = real(part) as f64;
                for (s, v) in sums
                    .iter_mut()
                    .zip([l.total, l.supervised, l.action, l.returns])
                {
                    *s += v * w;
                }
            }
            steps_seen += total;
            windows_done += chunk.len();
        }
        let k = steps_seen.max(1) as f64;
        last.parts = LossParts {
            total: sums[0] / k,
            supervised: sums[1] / k,
            action: sums[2] / k,
            returns: sums[3] / k,
        };
        let t_valid = Instant::now();
        let (bytes, report) = validate(model, &evaluator, split)?;
        last_valid_secs = t_valid.elapsed().as_secs_f64();
        let value = report.get(&metric).unwrap_or(f64::NAN);
        let entry = EpochLog {
            epoch,
            loss: last.parts.total,
            valid: value,
            elapsed: start.elapsed().as_secs_f64(),
        };
        if opts.progress {
            let p = &last.parts;
            eprintln!(
                "epoch {epoch}: loss {:.4} (L_S {:.4}, L_a {:.4}, L_R {:.4}), valid {metric} {value:.4} ({:.1}s)",
                p.total, p.supervised, p.action, p.returns, entry.elapsed
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
    Ok((tracker.finish(windows_done, start), last))
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
