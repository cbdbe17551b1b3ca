//! The user-parallel training loop of the hierarchical models (§5.5, after HRNN).
//!
//! `slots` user slots; each iteration takes every busy slot's next session (in time order),
//! with the slot's carried inter-session state (`s`, and the user GRU's state for Hier),
//! makes one update, and stores the new states (detached: they are plain values). A slot
//! whose user has no session left takes the next user with zero states; an epoch ends when
//! every user was consumed (idle slots simply sit out the last iterations). Users are
//! shuffled every epoch and then ordered by decreasing number of sessions (a stable sort),
//! so that long histories start early and the slots stay busy. With
//! [`Batching::Interleaved`] each update instead draws `slots` users at random (weighted by
//! their remaining sessions), which keeps every user's sessions in order but spreads them
//! over the epoch instead of ending it with the few users who have the most sessions.
//!
//! As the backbone loop, a mini-batch is split across worker threads (one model replica
//! each) and the parts' gradients are averaged with weights equal to their share of the
//! sessions. Validation runs through the engine after every epoch, replaying each
//! validation user's training sessions through its session API ([`SessionScorer`]); the
//! best validation checkpoint is kept, with early stopping and a wall-clock budget.

use super::data::{UserSessions, make_batch};
use super::{HdtBatch, HdtModel};
use crate::data::{Split, session_boundaries};
use crate::error::{Error, Result};
use crate::eval::{Evaluator, Report};
use crate::nn::optim::{Adam, Optimizer, clip_grad_norm};
use crate::nn::param::{gather_grads, sync_replicas, zero_grads};
use crate::nn::{Module, Rng};
use crate::session_scorer::SessionScorer;
use crate::train::{EpochLog, EpochTracker, TrainResult, replicas, validation_evaluator};
use rayon::prelude::*;
use seqrec_engine::Model;
use std::time::{Duration, Instant};

/// Knobs of a training run.
#[derive(Clone, Debug)]
pub struct HdtTrainOptions {
    /// Maximum epochs.
    pub epochs: usize,
    /// User slots B (sessions per update).
    pub slots: usize,
    /// How users' sessions are grouped into updates.
    pub batching: Batching,
    /// Learning rate (Adam).
    pub lr: f32,
    /// Decoupled weight decay (AdamW); 0 gives Adam.
    pub weight_decay: f32,
    /// Seed of the user order and dropout.
    pub seed: u64,
    /// Stop when the next epoch would not fit (validation included).
    pub time_budget: Option<Duration>,
    /// Worker threads.
    pub threads: usize,
    /// Global gradient-norm clipping.
    pub clip: Option<f32>,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Validation metric to maximise.
    pub valid_metric: String,
    /// Progress lines on stderr.
    pub progress: bool,
}

impl Default for HdtTrainOptions {
    fn default() -> Self {
        HdtTrainOptions {
            epochs: 200,
            slots: 32,
            batching: Batching::Slots,
            lr: 1e-3,
            weight_decay: 0.0,
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

/// How the sessions of different users are grouped into updates.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Batching {
    /// HRNN's user-parallel slots: a slot keeps its user until the user's sessions are
    /// consumed (the thesis).
    Slots,
    /// Each update takes the next session of `slots` distinct users drawn with probability
    /// proportional to their remaining sessions: a user's sessions stay in time order with the
    /// carried state, but every user's sessions are spread over the whole epoch.
    Interleaved,
}

struct UserState {
    next: usize,
    s: Vec<f32>,
    u: Vec<f32>,
}

/// Up to `b` distinct users with sessions left, drawn with probability proportional to their
/// remaining sessions (without replacement).
fn interleave(data: &[UserSessions], users: &[UserState], b: usize, rng: &mut Rng) -> Vec<usize> {
    let mut left: Vec<(usize, usize)> = users
        .iter()
        .enumerate()
        .map(|(k, st)| (k, data[k].sessions.len() - st.next))
        .filter(|&(_, r)| r > 0)
        .collect();
    let mut out = Vec::with_capacity(b);
    while out.len() < b && !left.is_empty() {
        let total: usize = left.iter().map(|&(_, r)| r).sum();
        let mut x = rng.below(total);
        let i = left
            .iter()
            .position(|&(_, r)| {
                if x < r {
                    true
                } else {
                    x -= r;
                    false
                }
            })
            .expect("x < total");
        out.push(left.swap_remove(i).0);
    }
    out.sort_unstable();
    out
}

/// Validates `model` through the engine on the split's validation events.
fn validate(
    model: &HdtModel,
    evaluator: &Evaluator,
    split: &Split,
    boundaries: &[Vec<usize>],
) -> Result<(Vec<u8>, Report)> {
    let bytes = model.to_safetensors()?;
    let engine = Model::from_bytes(&bytes, &Default::default())?;
    let scorer = SessionScorer::new(&engine, boundaries.to_vec());
    let report = evaluator.evaluate_par(&split.valid, &scorer)?;
    Ok((bytes, report))
}

/// Trains `model` on the sessions `data` (from [`super::prepare_sessions`] on `split`) and
/// returns the best validation checkpoint.
pub fn train_hdt(
    model: &mut HdtModel,
    split: &Split,
    data: &[UserSessions],
    opts: &HdtTrainOptions,
) -> Result<TrainResult> {
    let start = Instant::now();
    if data.is_empty() {
        return Err(Error::NoTrainingData("no training sessions"));
    }
    if split.valid.is_empty() {
        return Err(Error::NoValidation { what: "sessions" });
    }
    let metric = opts.valid_metric.to_ascii_lowercase();
    let evaluator = validation_evaluator(split, &metric)?;
    let boundaries = session_boundaries(split);
    let d = model.config().dim;
    let threads = opts.threads.max(1);
    let (mut replicas, mut rngs) = replicas(&*model, threads, opts.seed);
    let mut shuffle = Rng::new(opts.seed ^ 0x5EED);
    let mut optimizer = Adam::decoupled_or_plain(opts.weight_decay);
    let mut tracker = EpochTracker::new();
    let mut sessions_done = 0usize;
    let mut last_valid_secs = 0.0f64;
    let zeros = vec![0.0f32; d];
    for epoch in 1..=opts.epochs {
        let mut order: Vec<usize> = (0..data.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, shuffle.below(i + 1));
        }
        order.sort_by_key(|&u| std::cmp::Reverse(data[u].sessions.len()));
        let mut queue = order.into_iter();
        // Per user: the next session and the carried states.
        let mut users: Vec<UserState> = (0..data.len())
            .map(|_| UserState {
                next: 0,
                s: zeros.clone(),
                u: zeros.clone(),
            })
            .collect();
        let mut slots: Vec<Option<usize>> = vec![None; opts.slots.max(1)];
        let (mut loss_sum, mut loss_n) = (0.0f64, 0usize);
        let mut parts_sum = [0.0f64; 4];
        let mut out_of_time = false;
        loop {
            let busy: Vec<usize> = match opts.batching {
                Batching::Slots => {
                    for slot in slots.iter_mut().filter(|s| s.is_none()) {
                        *slot = queue.next();
                    }
                    slots.iter().flatten().copied().collect()
                }
                Batching::Interleaved => interleave(data, &users, opts.slots.max(1), &mut shuffle),
            };
            if busy.is_empty() {
                break;
            }
            if let Some(budget) = opts.time_budget
                && start.elapsed().as_secs_f64() + last_valid_secs.max(0.5) >= budget.as_secs_f64()
            {
                out_of_time = true;
                break;
            }
            let per = busy.len().div_ceil(threads);
            let parts: Vec<(Vec<usize>, HdtBatch, Vec<usize>)> = busy
                .chunks(per)
                .map(|ks| {
                    let items: Vec<_> = ks
                        .iter()
                        .map(|&k| {
                            let st = &users[k];
                            (&data[k].sessions[st.next], &st.s[..], &st.u[..])
                        })
                        .collect();
                    let (b, last) = make_batch(&items, d);
                    (ks.to_vec(), b, last)
                })
                .collect();
            let outs: Vec<_> = replicas
                .par_iter_mut()
                .zip(rngs.par_iter_mut())
                .zip(parts.par_iter())
                .map(|((rep, rng), (_, b, _))| {
                    zero_grads(&mut rep.params_mut());
                    rep.train_step(b, Some(rng))
                })
                .collect();
            {
                let mut main = model.params_mut();
                // Idle slots are masked out: the loss is the sum over busy slots / B.
                gather_grads(
                    &mut main,
                    replicas
                        .iter()
                        .zip(&parts)
                        .map(|(r, (ks, ..))| (r, ks.len() as f32 / opts.slots.max(1) as f32)),
                );
                if let Some(c) = opts.clip {
                    clip_grad_norm(&mut main, c);
                }
                optimizer.step(&mut main, opts.lr);
            }
            sync_replicas(&mut replicas, &*model);
            for ((ks, _, last), out) in parts.iter().zip(&outs) {
                loss_sum += out.loss.total * ks.len() as f64;
                let l = &out.loss;
                for (a, v) in parts_sum.iter_mut().zip([l.seq, l.ret, l.act, l.goal]) {
                    *a += v * ks.len() as f64;
                }
                loss_n += ks.len();
                for (&k, &j) in ks.iter().zip(last) {
                    // The session's last window carries its states on.
                    let st = &mut users[k];
                    st.s.copy_from_slice(&out.s_next[j * d..(j + 1) * d]);
                    if !out.u_next.is_empty() {
                        st.u.copy_from_slice(&out.u_next[j * d..(j + 1) * d]);
                    }
                    st.next += 1;
                    if st.next == data[k].sessions.len()
                        && let Some(slot) = slots.iter_mut().find(|s| **s == Some(k))
                    {
                        *slot = None;
                    }
                }
            }
            sessions_done += busy.len();
        }
        let t_valid = Instant::now();
        let (bytes, report) = validate(model, &evaluator, split, &boundaries)?;
        last_valid_secs = t_valid.elapsed().as_secs_f64();
        let value = report.get(&metric).unwrap_or(f64::NAN);
        let entry = EpochLog {
            epoch,
            loss: loss_sum / loss_n.max(1) as f64,
            valid: value,
            elapsed: start.elapsed().as_secs_f64(),
        };
        if opts.progress {
            let [ls, lr, la, lg] = parts_sum.map(|v| v / loss_n.max(1) as f64);
            eprintln!(
                "epoch {epoch}: loss {:.4} (L_S {ls:.4}, L_R {lr:.4}, L_a {la:.4}, L_g {lg:.4}), \
                 valid {metric} {value:.4} ({:.1}s)",
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
    Ok(tracker.finish(sessions_done, start))
}
