//! The user-parallel training of the hierarchical models (§5.5, after HRNN).
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
//! The schedule above is the step's [`Batches`] (`UserSlots`, which also holds the carried
//! states); the step is a [`TrainStep`] run by [`crate::learner::fit`]: as in every loop, a
//! mini-batch is split across worker threads (one model replica each); the parts' gradients
//! are weighted by their number of sessions over `slots` (idle slots are masked out of the
//! mean). Validation runs through the engine after every epoch, replaying each validation
//! user's training sessions through its session API ([`SessionScorer`]); the best validation
//! checkpoint is kept, with early stopping and a wall-clock budget.

use super::data::{StepWeights, UserSessions, make_batch};
use super::{HdtBatch, HdtModel, StepOutput};
use crate::data::{Split, session_boundaries};
use crate::error::{Error, Result};
use crate::eval::{Evaluator, Report};
use crate::learner::{Batches, RunOptions, TrainStep, fit, shuffle, validation_evaluator};
use crate::nn::Rng;
use crate::nn::optim::{Adam, Optimizer};
use crate::session_scorer::SessionScorer;
use crate::train::TrainResult;
use seqrec_engine::Model;
use std::time::Instant;

/// Knobs of a training run.
#[derive(Clone, Debug)]
pub struct HdtTrainOptions {
    /// User slots B (sessions per update).
    pub slots: usize,
    /// How users' sessions are grouped into updates.
    pub batching: Batching,
    /// How the steps of an update's sessions weigh in its losses.
    pub step_weights: StepWeights,
    /// Learning rate (Adam).
    pub lr: f32,
    /// Decoupled weight decay (AdamW); 0 gives Adam.
    pub weight_decay: f32,
    /// The loop's knobs: epochs, seed (of the user order and dropout), time budget, threads,
    /// clipping, early stopping, progress.
    pub run: RunOptions,
}

impl Default for HdtTrainOptions {
    fn default() -> Self {
        HdtTrainOptions {
            slots: 32,
            batching: Batching::Slots,
            step_weights: StepWeights::Session,
            lr: 1e-3,
            weight_decay: 0.0,
            run: RunOptions::default(),
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

/// The epochs' updates: the users whose next session each update trains (slots or interleaved
/// draws), with every user's next session and carried states.
struct UserSlots<'a> {
    data: &'a [UserSessions],
    dim: usize,
    slots: usize,
    batching: Batching,
    /// Users not yet given a slot this epoch.
    queue: std::vec::IntoIter<usize>,
    /// The user in each slot.
    in_slot: Vec<Option<usize>>,
    /// Per user: the next session and the carried states.
    users: Vec<UserState>,
}

impl Batches for UserSlots<'_> {
    /// Shuffles the users, then orders them by decreasing number of sessions (stable), and
    /// resets every user's states.
    fn begin_epoch(&mut self, rng: &mut Rng) {
        let data = self.data;
        let mut order: Vec<usize> = (0..data.len()).collect();
        shuffle(&mut order, rng);
        order.sort_by_key(|&u| std::cmp::Reverse(data[u].sessions.len()));
        self.queue = order.into_iter();
        let zeros = vec![0.0f32; self.dim];
        self.users = (0..data.len())
            .map(|_| UserState {
                next: 0,
                s: zeros.clone(),
                u: zeros.clone(),
            })
            .collect();
        self.in_slot = vec![None; self.slots];
    }

    /// The users whose next session is trained: the busy slots (refilled from the queue), or
    /// `slots` users drawn by their remaining sessions.
    fn next_batch(&mut self, rng: &mut Rng) -> Option<Vec<usize>> {
        let busy: Vec<usize> = match self.batching {
            Batching::Slots => {
                for slot in self.in_slot.iter_mut().filter(|s| s.is_none()) {
                    *slot = self.queue.next();
                }
                self.in_slot.iter().flatten().copied().collect()
            }
            Batching::Interleaved => interleave(self.data, &self.users, self.slots, rng),
        };
        (!busy.is_empty()).then_some(busy)
    }
}

impl UserSlots<'_> {
    /// User `k`'s session is done: its last window's states (row `j` of `out`) carry on, and a
    /// user whose sessions are consumed frees its slot.
    fn advance(&mut self, k: usize, out: &StepOutput, j: usize) {
        let d = self.dim;
        let st = &mut self.users[k];
        st.s.copy_from_slice(&out.s_next[j * d..(j + 1) * d]);
        if !out.u_next.is_empty() {
            st.u.copy_from_slice(&out.u_next[j * d..(j + 1) * d]);
        }
        st.next += 1;
        if st.next == self.data[k].sessions.len()
            && let Some(slot) = self.in_slot.iter_mut().find(|s| **s == Some(k))
        {
            *slot = None;
        }
    }
}

/// A part: the users (indices into the data), their sessions' batch, and per user the row of
/// the session's last window (whose states carry on).
type Part = (Vec<usize>, HdtBatch, Vec<usize>);

/// The hierarchical models' training step.
struct HdtStep<'a> {
    model: &'a mut HdtModel,
    split: &'a Split,
    evaluator: Evaluator,
    boundaries: Vec<Vec<usize>>,
    batches: UserSlots<'a>,
    optimizer: Adam,
    lr: f32,
    step_weights: StepWeights,
}

impl<'a> TrainStep for HdtStep<'a> {
    type Model = HdtModel;
    type Part = Part;
    type Output = StepOutput;
    type Batches = UserSlots<'a>;
    const TERMS: &'static [&'static str] = &["L_S", "L_R", "L_a", "L_g"];

    fn batches(&mut self) -> &mut UserSlots<'a> {
        &mut self.batches
    }

    fn make_part(&mut self, ks: &[usize]) -> Part {
        let slots = &self.batches;
        let items: Vec<_> = ks
            .iter()
            .map(|&k| {
                let st = &slots.users[k];
                (&slots.data[k].sessions[st.next], &st.s[..], &st.u[..])
            })
            .collect();
        let (b, last) = make_batch(&items, slots.dim, self.step_weights);
        (ks.to_vec(), b, last)
    }

    fn part_size(&self, (ks, ..): &Part) -> usize {
        ks.len()
    }

    /// Idle slots are masked out: the loss is the sum over busy slots / B.
    fn weight_denominator(&self, _: usize) -> usize {
        self.batches.slots
    }

    fn model(&self) -> &HdtModel {
        self.model
    }

    fn part_step(&self, replica: &mut HdtModel, (_, b, _): &Part, rng: &mut Rng) -> StepOutput {
        replica.train_step(b, Some(rng))
    }

    fn loss_terms(&self, out: &StepOutput) -> Vec<f64> {
        let l = &out.loss;
        vec![l.total, l.seq, l.ret, l.act, l.goal]
    }

    fn update(&mut self) -> (&mut HdtModel, &mut dyn Optimizer, f32) {
        (&mut *self.model, &mut self.optimizer, self.lr)
    }

    fn end_step(&mut self, parts: &[Part], outputs: &[StepOutput]) {
        for ((ks, _, last), out) in parts.iter().zip(outputs) {
            for (&k, &j) in ks.iter().zip(last) {
                self.batches.advance(k, out, j);
            }
        }
    }

    /// Through the engine's session API, replaying each validation user's training sessions.
    fn validate(&self) -> Result<(Vec<u8>, Report)> {
        let bytes = self.model.to_safetensors()?;
        let engine = Model::from_bytes(&bytes, &Default::default())?;
        let scorer = SessionScorer::new(&engine, self.boundaries.clone());
        let report = self.evaluator.evaluate_par(&self.split.valid, &scorer)?;
        Ok((bytes, report))
    }
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
    let evaluator = validation_evaluator(split, &opts.run.metric())?;
    let dim = model.config().dim;
    let mut step = HdtStep {
        model,
        split,
        evaluator,
        boundaries: session_boundaries(split),
        batches: UserSlots {
            data,
            dim,
            slots: opts.slots.max(1),
            batching: opts.batching,
            queue: Vec::new().into_iter(),
            in_slot: Vec::new(),
            users: Vec::new(),
        },
        optimizer: Adam::decoupled_or_plain(opts.weight_decay),
        lr: opts.lr,
        step_weights: opts.step_weights,
    };
    fit(&mut step, &opts.run, start)
}
