//! The sequential simulators (§8.4) on ml-100k and amazon-scientific (the thesis's
//! "Industry"): users are split 80/20 into a training and a test environment; each fits its
//! own reward model, a SASRec trained (next-item cross-entropy, early stopping on its users'
//! held-out last items) on its users' sequences only. An episode starts from one item, drawn
//! from the environment's interactions; the reward of showing item `i` after history `x` is
//! the reward model's calibrated score `5·σ(a·z + b)`, `z = G(x)·E_i` its logit, with `a, b`
//! fitted by logistic regression (Platt scaling) to tell each user's held-out next item from
//! nine random items: five times the calibrated probability that `i` is what the user does
//! next rather than one of nine random alternatives, a rating-like 0–5 scale on which a random
//! item earns about 0.5 and a likely next item 4 or more. An item already shown in the
//! episode earns 0.

use super::env::{Catalog, Environment, Episode, QuitRule, Start, Step, Threshold};
use crate::data::{EvalSeq, Split, SplitMethod, TrainPart, TrainSeq};
use crate::error::Result;
use crate::models::rl::samples::window_batch;
use crate::models::{SasRecConfig, SasRecModel, TrainModel};
use crate::nn::{Module, Rng};
use crate::train::{TrainOptions, train};

/// A user and their items in time order.
pub type UserSeq = (u32, Vec<u32>);

/// Random items each held-out next item is calibrated against.
pub const CALIBRATION_NEGATIVES: usize = 9;

/// The reward model of one environment: a SASRec and its calibration.
#[derive(Clone, Debug)]
pub struct RewardModel {
    /// The SASRec.
    pub model: SasRecModel,
    /// Platt slope `a`.
    pub a: f32,
    /// Platt intercept `b`.
    pub b: f32,
}

impl RewardModel {
    /// The state `G(x)` of `history` (its last `max_len` items).
    fn state(&self, history: &[u32]) -> Vec<f32> {
        let m = &self.model;
        let w = &history[history.len().saturating_sub(m.max_len())..];
        m.forward(&window_batch(&[(w, 0)], m), None).0
    }

    /// The logit `z = G(x)·E_item` for a state `h`.
    fn logit(&self, h: &[f32], item: u32) -> f32 {
        let d = self.model.dim();
        let i = item as usize;
        let row = &self.model.item_table().value[i * d..(i + 1) * d];
        row.iter().zip(h).map(|(a, b)| a * b).sum()
    }

    /// The reward `5·σ(a·z + b)` of showing `item` after `history`.
    pub fn reward(&self, history: &[u32], item: u32) -> f32 {
        let z = self.logit(&self.state(history), item);
        5.0 / (1.0 + (-(self.a * z + self.b)).exp())
    }
}

/// Fits `σ(a·z + b)` to labelled logits by Newton's method on the log-loss (f64, a few
/// iterations, a tiny ridge for separable data).
pub fn platt(z: &[f32], y: &[bool]) -> (f32, f32) {
    let (mut a, mut b) = (1.0f64, 0.0f64);
    for _ in 0..50 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (1e-6 * a, 0.0, 1e-6, 0.0, 1e-6);
        for (&zi, &yi) in z.iter().zip(y) {
            let zi = zi as f64;
            let p = 1.0 / (1.0 + (-(a * zi + b)).exp());
            let g = p - f64::from(u8::from(yi));
            let w = (p * (1.0 - p)).max(1e-12);
            ga += g * zi;
            gb += g;
            haa += w * zi * zi;
            hab += w * zi;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-18 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        a -= da;
        b -= db;
        if da.abs() + db.abs() < 1e-9 {
            break;
        }
    }
    (a as f32, b as f32)
}

/// Fits the reward model of the users whose sequences are `seqs` (internal user id, items in
/// time order) over `n_items` ids: leave-one-out inside the group (last item held out for
/// early stopping and for the calibration), SASRec with RecBole's defaults over windows of
/// `max_len`.
pub fn fit_reward_model(
    seqs: &[UserSeq],
    n_users: usize,
    n_items: usize,
    max_len: usize,
    seed: u64,
    progress: bool,
) -> Result<RewardModel> {
    let mut train_seqs = Vec::new();
    let mut valid = Vec::new();
    for (u, s) in seqs.iter().filter(|(_, s)| s.len() >= 3) {
        train_seqs.push(TrainSeq {
            user: *u,
            items: s[..s.len() - 1].to_vec(),
            session_starts: vec![0],
        });
        valid.push(EvalSeq {
            user: *u,
            items: s.clone(),
            first_target: s.len() - 1,
            session_start: 0,
        });
    }
    let split = Split {
        method: SplitMethod::LeaveOneOut,
        n_users,
        n_items,
        train: TrainPart::Sequences(train_seqs),
        valid: valid.clone(),
        test: Vec::new(),
    };
    let mut rng = Rng::new(seed);
    let mut model = SasRecModel::new(SasRecConfig::new(n_items, max_len), &mut rng);
    let mut opts = TrainOptions::default();
    opts.run.seed = seed;
    opts.run.progress = progress;
    opts.run.patience = 5;
    let r = train(&mut model, &split, &opts)?;
    let file = seqrec_engine::WeightFile::from_bytes(&r.checkpoint)?;
    crate::nn::param::load_values(&mut model.params_mut(), &file)?;
    // Calibration: each held-out next item against nine random items, same history.
    let mut rm = RewardModel {
        model,
        a: 1.0,
        b: 0.0,
    };
    let (mut z, mut y) = (Vec::new(), Vec::new());
    for e in &valid {
        let (hist, target) = e.event(0);
        let h = rm.state(hist);
        let negs: Vec<(u32, bool)> = (0..CALIBRATION_NEGATIVES)
            .map(|_| (1 + rng.below(n_items - 1) as u32, false))
            .collect();
        for (item, label) in std::iter::once((target, true)).chain(negs) {
            z.push(rm.logit(&h, item));
            y.push(label);
        }
    }
    (rm.a, rm.b) = platt(&z, &y);
    Ok(rm)
}

/// The default quit rule of the sequential simulators: three consecutive rewards below 1
/// (a 20% chance of being the next item rather than a random one), or 20 steps.
pub fn seq_quit() -> Threshold {
    Threshold {
        threshold: 1.0,
        patience: 3,
        max_len: 20,
    }
}

/// One sequential-simulator environment.
#[derive(Debug)]
pub struct SeqEnv {
    name: String,
    n_items: usize,
    /// Items episodes start from: one per interaction of the environment's users
    /// (popularity-weighted).
    starts: Vec<u32>,
    reward: RewardModel,
    catalog: Catalog,
    ep: Episode,
}

impl SeqEnv {
    /// An environment over the interactions `seqs` of its users, with its reward model.
    pub fn new(
        name: &str,
        seqs: &[UserSeq],
        reward: RewardModel,
        catalog: Catalog,
        quit: Box<dyn QuitRule>,
    ) -> Self {
        let mut starts: Vec<u32> = seqs.iter().flat_map(|(_, s)| s.iter().copied()).collect();
        starts.sort_unstable();
        SeqEnv {
            name: name.into(),
            n_items: catalog.n_items(),
            starts,
            reward,
            catalog,
            ep: Episode::new(quit),
        }
    }

    /// The reward model.
    pub fn reward_model(&self) -> &RewardModel {
        &self.reward
    }
}

impl Environment for SeqEnv {
    fn name(&self) -> &str {
        &self.name
    }
    fn n_items(&self) -> usize {
        self.n_items
    }
    fn n_users(&self) -> usize {
        0
    }
    fn reset(&mut self, rng: &mut Rng) -> Start {
        let first = self.starts[rng.below(self.starts.len())];
        self.ep.reset(Some(first));
        Start::Item(first)
    }
    fn step(&mut self, item: u32) -> Step {
        let r = if self.ep.seen(item) || item == 0 || item as usize >= self.n_items {
            0.0
        } else {
            self.reward.reward(&self.ep.history, item)
        };
        self.ep.record(item, r)
    }
    fn history(&self) -> &[u32] {
        &self.ep.history
    }
    fn catalog(&self) -> &Catalog {
        &self.catalog
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platt_recovers_a_logistic_model() {
        let mut rng = Rng::new(1);
        let (mut z, mut y) = (Vec::new(), Vec::new());
        for _ in 0..20000 {
            let zi = rng.uniform(-4.0, 4.0);
            let p = 1.0 / (1.0 + (-(2.0 * zi - 1.0)).exp());
            z.push(zi);
            y.push(rng.next_f64() < p as f64);
        }
        let (a, b) = platt(&z, &y);
        assert!(
            (a - 2.0).abs() < 0.15 && (b + 1.0).abs() < 0.15,
            "a {a}, b {b}"
        );
    }
}
