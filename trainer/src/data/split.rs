//! Train/validation/test splits and the examples they produce.
//!
//! - **Leave-one-out** (RecBole `LS: valid_and_test`, per user, time order): the last item is
//!   the test target, the second-to-last the validation target, the rest is training. A user
//!   with 2 interactions gets a test target and no validation target; a user with 1 is
//!   training only (as RecBole's leave-one-out, which leaves out at most `n − 1` items). The
//!   test history includes the validation item.
//! - **Ratio by sequence** (`8:1:1`): users are shuffled with a seeded generator and cut
//!   into 80% / 10% / 10% (cut points `⌊n·8/10⌋`, `⌊n·9/10⌋`). Training users' whole
//!   sequences are training data; every item after the first of a validation or test user's
//!   sequence is an evaluation event (the first item is context only).
//! - **Sessions**: a user's interactions are cut into sessions wherever the gap between two
//!   consecutive timestamps exceeds the threshold (60 minutes). The last session is the test
//!   session, the one before it the validation session, earlier ones training. With 2
//!   sessions there is no validation session, with 1 the user is training only. Every item
//!   after the first of an evaluation session is an event; its history is all the user's
//!   earlier items (earlier sessions included), and [`EvalSeq::session_start`] marks where the
//!   current session begins. A last session of one item gives no event.
//!
//! Training examples follow RecBole's sequential data augmentation
//! ([`Split::train_examples`]): every prefix of a training sequence, truncated to its last `L`
//! items, predicts the next item.

use super::{DataError, Interactions, Result};
use crate::nn::Rng;
use std::fmt;
use std::str::FromStr;

/// How to split interactions.
#[derive(Clone, Debug, PartialEq)]
pub enum SplitMethod {
    /// Per user: last item test, second-to-last validation, the rest training.
    LeaveOneOut,
    /// Users shuffled with `seed` and partitioned by `weights` (train, valid, test).
    Ratio {
        /// Relative sizes of the train, validation and test user groups.
        weights: [u32; 3],
        /// Shuffle seed.
        seed: u64,
    },
    /// Sessions cut at gaps longer than `gap_secs`; last session test, the one before valid.
    Session {
        /// Inactivity threshold in seconds.
        gap_secs: f64,
    },
    /// The split that came with a pre-split benchmark.
    Given,
}

/// RecBole's default seed, used when a ratio split is parsed without one.
pub const DEFAULT_SEED: u64 = 2020;

impl SplitMethod {
    /// 8:1:1 by sequence with the default seed.
    pub fn ratio_8_1_1() -> Self {
        SplitMethod::Ratio {
            weights: [8, 1, 1],
            seed: DEFAULT_SEED,
        }
    }

    /// 60-minute sessions.
    pub fn sessions_60min() -> Self {
        SplitMethod::Session { gap_secs: 3600.0 }
    }

    /// The same method with another shuffle seed (only ratio splits are random).
    pub fn with_seed(self, seed: u64) -> Self {
        match self {
            SplitMethod::Ratio { weights, .. } => SplitMethod::Ratio { weights, seed },
            m => m,
        }
    }
}

impl fmt::Display for SplitMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SplitMethod::LeaveOneOut => f.write_str("loo"),
            SplitMethod::Ratio {
                weights: [a, b, c],
                seed,
            } => write!(f, "ratio:{a}:{b}:{c}@{seed}"),
            SplitMethod::Session { gap_secs } => write!(f, "session:{}", gap_secs / 60.0),
            SplitMethod::Given => f.write_str("given"),
        }
    }
}

impl FromStr for SplitMethod {
    type Err = DataError;

    /// `loo` (or `leave-one-out`), `ratio` (8:1:1) or `ratio:A:B:C`, optionally `@SEED`,
    /// `session` (60 minutes) or `session:MINUTES`, `given`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || DataError::UnknownName {
            what: "split",
            value: s.to_string(),
            expected: "loo, ratio[:A:B:C][@SEED], session[:MINUTES], given".into(),
        };
        let norm = s.trim().to_ascii_lowercase();
        let (head, seed) = match norm.split_once('@') {
            Some((h, seed)) => (h, Some(seed.parse::<u64>().map_err(|_| bad())?)),
            None => (norm.as_str(), None),
        };
        let mut parts = head.split(':');
        let method = match parts.next().unwrap_or("") {
            "loo" | "leave-one-out" | "leave_one_out" => SplitMethod::LeaveOneOut,
            "given" => SplitMethod::Given,
            "ratio" | "rs" => {
                let w: Vec<u32> = parts
                    .by_ref()
                    .map(|p| p.parse())
                    .collect::<Result<_, _>>()
                    .map_err(|_| bad())?;
                let weights = match w.as_slice() {
                    [] => [8, 1, 1],
                    &[a, b, c] if a > 0 && b + c > 0 => [a, b, c],
                    _ => return Err(bad()),
                };
                SplitMethod::Ratio {
                    weights,
                    seed: seed.unwrap_or(DEFAULT_SEED),
                }
            }
            "session" | "sessions" => {
                let minutes = match parts.next() {
                    None => 60.0,
                    Some(m) => m
                        .parse::<f64>()
                        .ok()
                        .filter(|m| *m > 0.0 && m.is_finite())
                        .ok_or_else(bad)?,
                };
                SplitMethod::Session {
                    gap_secs: minutes * 60.0,
                }
            }
            _ => return Err(bad()),
        };
        let leftover = parts.next().is_some();
        let seed_misplaced = seed.is_some() && !matches!(method, SplitMethod::Ratio { .. });
        if leftover || seed_misplaced {
            return Err(bad());
        }
        Ok(method)
    }
}

/// One training example: the (truncated) history and the item that follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// Internal user id.
    pub user: u32,
    /// Item ids, oldest first.
    pub history: Vec<u32>,
    /// The next item.
    pub target: u32,
}

/// A user's training sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainSeq {
    /// Internal user id.
    pub user: u32,
    /// Item ids in time order.
    pub items: Vec<u32>,
    /// Start index of each session in `items` (`[0]` for splits without sessions).
    pub session_starts: Vec<usize>,
}

/// The training part of a split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrainPart {
    /// Whole sequences, expanded into examples by [`Split::train_examples`].
    Sequences(Vec<TrainSeq>),
    /// Examples given as is (pre-split benchmarks).
    Examples(Vec<Example>),
}

/// The evaluation events of one sequence (leave-one-out: one event; ratio split: a whole
/// sequence; sessions: one session). Event `j` has history `items[..first_target + j]` and
/// target `items[first_target + j]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalSeq {
    /// Internal user id.
    pub user: u32,
    /// The context followed by the targets, in time order.
    pub items: Vec<u32>,
    /// Index of the first target (≥ 1: every event has a non-empty history).
    pub first_target: usize,
    /// Index where the current sequence or session begins (0 unless sessions).
    pub session_start: usize,
}

impl EvalSeq {
    /// Number of events.
    pub fn n_events(&self) -> usize {
        self.items.len() - self.first_target
    }

    /// The targets, in order.
    pub fn targets(&self) -> &[u32] {
        &self.items[self.first_target..]
    }

    /// History and target of event `j`.
    pub fn event(&self, j: usize) -> (&[u32], u32) {
        let end = self.first_target + j;
        (&self.items[..end], self.items[end])
    }
}

/// A split: training data and the validation and test events.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// How it was made.
    pub method: SplitMethod,
    /// Number of user ids, padding included.
    pub n_users: usize,
    /// Catalog size, padding included.
    pub n_items: usize,
    /// Training data.
    pub train: TrainPart,
    /// Validation sequences (each with at least one event).
    pub valid: Vec<EvalSeq>,
    /// Test sequences (each with at least one event).
    pub test: Vec<EvalSeq>,
}

impl Split {
    /// Training examples, RecBole's sequential augmentation: for every training sequence
    /// `x_1..x_m` and every `j ≥ 2`, the history `x_{max(1, j−L)}..x_{j−1}` (its last `L =
    /// max_len` items) predicts `x_j`. Given examples are kept, their histories truncated to
    /// the last `max_len` items.
    pub fn train_examples(&self, max_len: usize) -> Vec<Example> {
        let max_len = max_len.max(1);
        match &self.train {
            TrainPart::Examples(ex) => ex
                .iter()
                .map(|e| Example {
                    user: e.user,
                    history: e.history[e.history.len().saturating_sub(max_len)..].to_vec(),
                    target: e.target,
                })
                .collect(),
            TrainPart::Sequences(seqs) => {
                let mut out = Vec::new();
                for s in seqs {
                    for j in 1..s.items.len() {
                        out.push(Example {
                            user: s.user,
                            history: s.items[j.saturating_sub(max_len)..j].to_vec(),
                            target: s.items[j],
                        });
                    }
                }
                out
            }
        }
    }

    /// Training popularity: interactions per item id in the training part (length
    /// `n_items`). For given examples, a user's training interactions are taken to be the
    /// items of their shortest history plus every target, which is exact for files made by
    /// RecBole's augmentation (every prefix present).
    pub fn item_counts(&self) -> Vec<u64> {
        let mut counts = vec![0u64; self.n_items];
        match &self.train {
            TrainPart::Sequences(seqs) => {
                for &i in seqs.iter().flat_map(|s| &s.items) {
                    counts[i as usize] += 1;
                }
            }
            TrainPart::Examples(ex) => {
                let mut shortest: Vec<Option<&Example>> = vec![None; self.n_users];
                for e in ex {
                    counts[e.target as usize] += 1;
                    let slot = &mut shortest[e.user as usize];
                    if slot.is_none_or(|s| e.history.len() < s.history.len()) {
                        *slot = Some(e);
                    }
                }
                for &i in shortest.iter().flatten().flat_map(|e| &e.history) {
                    counts[i as usize] += 1;
                }
            }
        }
        counts
    }

    /// The distinct items of each user's training part, sorted (indexed by user id, length
    /// `n_users`): the "earlier sessions" `H_u` of the unexpectedness and serendipity metrics.
    pub fn train_items_by_user(&self) -> Vec<Vec<u32>> {
        let mut sets: Vec<Vec<u32>> = vec![Vec::new(); self.n_users];
        match &self.train {
            TrainPart::Sequences(seqs) => {
                for s in seqs {
                    sets[s.user as usize].extend_from_slice(&s.items);
                }
            }
            TrainPart::Examples(ex) => {
                for e in ex {
                    let set = &mut sets[e.user as usize];
                    set.extend_from_slice(&e.history);
                    set.push(e.target);
                }
            }
        }
        for s in &mut sets {
            s.sort_unstable();
            s.dedup();
        }
        sets
    }

    /// Number of evaluation events in `seqs`.
    pub fn n_events(seqs: &[EvalSeq]) -> usize {
        seqs.iter().map(EvalSeq::n_events).sum()
    }
}

/// Splits `inter` with `method` (see the module documentation).
pub fn split(inter: &Interactions, method: &SplitMethod) -> Result<Split> {
    let mut out = Split {
        method: method.clone(),
        n_users: inter.n_users(),
        n_items: inter.n_items(),
        train: TrainPart::Sequences(Vec::new()),
        valid: Vec::new(),
        test: Vec::new(),
    };
    let mut train = Vec::new();
    let users = (1..inter.n_users() as u32).filter(|&u| !inter.sequences[u as usize].is_empty());
    match method {
        SplitMethod::Given => {
            return Err(DataError::Invalid(
                "split `given`: only a pre-split benchmark has a given split".into(),
            ));
        }
        SplitMethod::LeaveOneOut => {
            for u in users {
                let seq = &inter.sequences[u as usize];
                let n = seq.len();
                let held = (n - 1).min(2);
                train.push(sequence(u, &seq[..n - held]));
                if held == 2 {
                    out.valid.push(eval_seq(u, &seq[..n - 1], n - 2, 0));
                }
                if held >= 1 {
                    out.test.push(eval_seq(u, seq, n - 1, 0));
                }
            }
        }
        SplitMethod::Ratio { weights, seed } => {
            let mut order: Vec<u32> = users.collect();
            let mut rng = Rng::new(*seed);
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i + 1));
            }
            let total: u64 = weights.iter().map(|&w| w as u64).sum();
            let n = order.len() as u64;
            let cut1 = (n * weights[0] as u64 / total) as usize;
            let cut2 = (n * (weights[0] + weights[1]) as u64 / total) as usize;
            for (rank, &u) in order.iter().enumerate() {
                let seq = &inter.sequences[u as usize];
                if rank < cut1 {
                    train.push(sequence(u, seq));
                } else if seq.len() >= 2 {
                    let part = if rank < cut2 {
                        &mut out.valid
                    } else {
                        &mut out.test
                    };
                    part.push(eval_seq(u, seq, 1, 0));
                }
            }
        }
        SplitMethod::Session { gap_secs } => {
            let times = inter
                .timestamps
                .as_ref()
                .ok_or(DataError::NoTimestamps("session split"))?;
            for u in users {
                let seq = &inter.sequences[u as usize];
                let starts = session_starts(&times[u as usize], *gap_secs);
                let k = starts.len();
                let held = (k - 1).min(2);
                let train_end = if held == 0 {
                    seq.len()
                } else {
                    starts[k - held]
                };
                let mut t = sequence(u, &seq[..train_end]);
                t.session_starts = starts[..k - held].to_vec();
                train.push(t);
                if held == 2 {
                    let (s, e) = (starts[k - 2], starts[k - 1]);
                    if e - s >= 2 {
                        out.valid.push(eval_seq(u, &seq[..e], s + 1, s));
                    }
                }
                if held >= 1 {
                    let s = starts[k - 1];
                    if seq.len() - s >= 2 {
                        out.test.push(eval_seq(u, seq, s + 1, s));
                    }
                }
            }
        }
    }
    out.train = TrainPart::Sequences(train);
    Ok(out)
}

fn sequence(user: u32, items: &[u32]) -> TrainSeq {
    TrainSeq {
        user,
        items: items.to_vec(),
        session_starts: vec![0],
    }
}

fn eval_seq(user: u32, items: &[u32], first_target: usize, session_start: usize) -> EvalSeq {
    EvalSeq {
        user,
        items: items.to_vec(),
        first_target,
        session_start,
    }
}

/// Start indices of the sessions of one time-ordered sequence: a new session begins where
/// the gap to the previous timestamp exceeds `gap_secs`.
pub fn session_starts(times: &[f64], gap_secs: f64) -> Vec<usize> {
    let mut starts = vec![0];
    for j in 1..times.len() {
        if times[j] - times[j - 1] > gap_secs {
            starts.push(j);
        }
    }
    starts
}

#[cfg(test)]
#[path = "split_tests.rs"]
mod tests;
