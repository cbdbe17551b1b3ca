//! Evaluation of a scorer on a split's validation or test events.
//!
//! A scorer maps a history (item ids, oldest first) and the user id to one score per catalog id
//! (`n_items` values, the padding id 0 included and ignored), as the engine's `Model::score`
//! does. Closures `FnMut(&[u32], Option<u32>, &mut [f32])` are [`Scorer`]s, and
//! `Fn(..) + Sync` closures are also [`SharedScorer`]s, which [`Evaluator::evaluate_par`] calls
//! from several threads (rayon, one task per evaluation sequence). Both paths give identical
//! results. Write the argument types of a closure out (`|h: &[u32], u: Option<u32>, s: &mut
//! [f32]|`) so that it accepts histories of any lifetime.
//!
//! Protocols ([`Protocol`]):
//! - **full**: the target is ranked against the whole catalog (`1..n_items`). With
//!   `exclude_history`, the items of the history given to the scorer leave the ranking and the
//!   top-k lists, the target included when it repeats one of them (RecBole's masking: such an
//!   event is a miss).
//! - **sampled** (SASRec paper): the target is ranked against `negatives` (100) distinct items
//!   drawn uniformly from the catalog minus every item of the event's evaluation sequence
//!   (its whole context and all its targets, so never a history item). Each event draws from
//!   its own generator, seeded from the protocol seed and the event's position, so the
//!   negatives depend only on the seed and not on threads. `exclude_history` does not apply.
//!
//! The ranking order is the engine's: higher score first, the smaller id first on equal
//! scores ([`rank`]). The list metrics (`cv_div`, `cv_nov`, `r`, `up`) always use the top of
//! the full ranking. Metric definitions are in [`metrics`].

pub mod metrics;
mod popularity;
pub mod rank;

pub use metrics::{Metric, MetricContext, MetricKind, Outcome, Report, compute, parse_metrics};
pub use popularity::{Popularity, long_tail};

use crate::data::{DataError, EvalSeq, Result, Split};
use crate::nn::Rng;
use rayon::prelude::*;
use seqrec_kernels::cpu::topk::TopK;
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// A scorer's failure.
pub type ScorerError = Box<dyn std::error::Error + Send + Sync>;

/// Scores the catalog for one history, on one thread.
pub trait Scorer {
    /// Writes one score per catalog id into `scores` (length `n_items`; index 0 is ignored).
    fn score(
        &mut self,
        history: &[u32],
        user: Option<u32>,
        scores: &mut [f32],
    ) -> Result<(), ScorerError>;
}

impl<F: FnMut(&[u32], Option<u32>, &mut [f32])> Scorer for F {
    fn score(
        &mut self,
        history: &[u32],
        user: Option<u32>,
        scores: &mut [f32],
    ) -> Result<(), ScorerError> {
        self(history, user, scores);
        Ok(())
    }
}

/// Scores the catalog for one history; callable from several threads at once.
pub trait SharedScorer: Sync {
    /// As [`Scorer::score`].
    fn score_shared(
        &self,
        history: &[u32],
        user: Option<u32>,
        scores: &mut [f32],
    ) -> Result<(), ScorerError>;
}

impl<F: Fn(&[u32], Option<u32>, &mut [f32]) + Sync> SharedScorer for F {
    fn score_shared(
        &self,
        history: &[u32],
        user: Option<u32>,
        scores: &mut [f32],
    ) -> Result<(), ScorerError> {
        self(history, user, scores);
        Ok(())
    }
}

/// How the target is ranked.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Against the whole catalog.
    Full,
    /// Against `negatives` items the user never interacted with, drawn with `seed`.
    Sampled {
        /// Number of negatives (100 in the SASRec paper).
        negatives: usize,
        /// Sampling seed.
        seed: u64,
    },
}

impl Protocol {
    /// The SASRec paper's protocol: 100 negatives, seed 2020.
    pub fn sampled_100() -> Self {
        Protocol::Sampled {
            negatives: 100,
            seed: crate::data::DEFAULT_SEED,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Full => f.write_str("full"),
            Protocol::Sampled { negatives, seed } => write!(f, "sampled:{negatives}@{seed}"),
        }
    }
}

impl FromStr for Protocol {
    type Err = DataError;

    /// `full`, or `sampled` / `sampled:N`, optionally `@SEED` (100 negatives, seed 2020 by
    /// default).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || DataError::UnknownName {
            what: "evaluation protocol",
            value: s.to_string(),
            expected: "full, sampled[:N][@SEED]".into(),
        };
        let norm = s.trim().to_ascii_lowercase();
        if norm == "full" {
            return Ok(Protocol::Full);
        }
        let (head, seed) = match norm.split_once('@') {
            Some((h, seed)) => (h, seed.parse::<u64>().map_err(|_| bad())?),
            None => (norm.as_str(), crate::data::DEFAULT_SEED),
        };
        let negatives = match head.split_once(':') {
            None if head == "sampled" => 100,
            Some(("sampled", n)) => n
                .parse::<usize>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        Ok(Protocol::Sampled { negatives, seed })
    }
}

/// What to compute and how.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalOptions {
    /// Metrics, in report order.
    pub metrics: Vec<Metric>,
    /// Full ranking or sampled negatives.
    pub protocol: Protocol,
    /// Remove the history's items from the full ranking and the top-k lists.
    pub exclude_history: bool,
    /// Give the scorer only the current session's prefix (from [`EvalSeq::session_start`])
    /// instead of the user's whole history.
    pub session_history_only: bool,
}

impl Default for EvalOptions {
    /// `hr@10, ndcg@10, mrr@10`, full ranking, history not excluded (RecBole's sequential
    /// default), whole histories.
    fn default() -> Self {
        EvalOptions {
            metrics: parse_metrics("hr@10,ndcg@10,mrr@10").expect("valid names"),
            protocol: Protocol::Full,
            exclude_history: false,
            session_history_only: false,
        }
    }
}

/// A scorer seen through one call signature, for the shared per-sequence loop.
type ScoreFn<'a> = dyn FnMut(&[u32], Option<u32>, &mut [f32]) -> Result<(), ScorerError> + 'a;

/// Per-thread buffers.
struct Scratch {
    scores: Vec<f32>,
    excluded: Vec<u32>,
    forbidden: Vec<u32>,
    selector: TopK,
}

/// Evaluates scorers on the events of one split.
#[derive(Clone, Debug)]
pub struct Evaluator {
    opts: EvalOptions,
    n_items: usize,
    list_len: usize,
    long_tail: Vec<bool>,
    user_items: Vec<Vec<u32>>,
}

impl Evaluator {
    /// An evaluator for the events of `split`, with the long tail and the users' training
    /// items taken from its training part.
    pub fn new(split: &Split, opts: EvalOptions) -> Result<Self> {
        if split.n_items < 2 {
            return Err(DataError::Invalid(format!(
                "evaluation needs at least one item, the catalog has {} ids",
                split.n_items
            )));
        }
        let list_len = (opts.metrics.iter())
            .filter(|m| m.kind.needs_list())
            .map(|m| m.k)
            .max()
            .unwrap_or(0);
        Ok(Evaluator {
            opts,
            n_items: split.n_items,
            list_len,
            long_tail: long_tail(&split.item_counts()),
            user_items: split.train_items_by_user(),
        })
    }

    /// The options.
    pub fn options(&self) -> &EvalOptions {
        &self.opts
    }

    /// The long-tail mask (`I_nov`), indexed by item id.
    pub fn long_tail(&self) -> &[bool] {
        &self.long_tail
    }

    fn scratch(&self) -> Scratch {
        Scratch {
            scores: vec![0.0; self.n_items],
            excluded: Vec::new(),
            forbidden: Vec::new(),
            selector: TopK::new(self.list_len),
        }
    }

    /// The outcomes of the events of sequence `index`, scoring with `score`.
    fn seq_outcomes(
        &self,
        index: usize,
        seq: &EvalSeq,
        sc: &mut Scratch,
        score: &mut ScoreFn<'_>,
    ) -> Result<Vec<Outcome>> {
        if seq.first_target == 0 || seq.first_target > seq.items.len() {
            return Err(DataError::Invalid(format!(
                "evaluation sequence {index} (user {}): first target {} outside 1..={}",
                seq.user,
                seq.first_target,
                seq.items.len()
            )));
        }
        if let Some(&bad) = seq
            .items
            .iter()
            .find(|&&i| i == 0 || i as usize >= self.n_items)
        {
            return Err(DataError::Invalid(format!(
                "evaluation sequence {index} (user {}): item id {bad} is outside 1..{}",
                seq.user, self.n_items
            )));
        }
        if let Protocol::Sampled { .. } = self.opts.protocol {
            sc.forbidden.clear();
            sc.forbidden.extend_from_slice(&seq.items);
            sc.forbidden.sort_unstable();
            sc.forbidden.dedup();
        }
        let mut out = Vec::with_capacity(seq.n_events());
        for j in 0..seq.n_events() {
            let (full, target) = seq.event(j);
            let history = match self.opts.session_history_only {
                true => &full[seq.session_start.min(full.len() - 1)..],
                false => full,
            };
            sc.scores.fill(f32::NAN);
            score(history, Some(seq.user), &mut sc.scores).map_err(|e| DataError::Scorer {
                user: seq.user,
                message: e.to_string(),
            })?;
            sc.excluded.clear();
            if self.opts.exclude_history {
                sc.excluded.extend_from_slice(history);
                sc.excluded.sort_unstable();
                sc.excluded.dedup();
            }
            let rank = match self.opts.protocol {
                Protocol::Full => rank::rank_full(&sc.scores, target, &sc.excluded),
                Protocol::Sampled { negatives, seed } => {
                    let mix = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                        ^ (j as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
                    let mut rng = Rng::new(seed ^ mix);
                    let neg =
                        rank::sample_negatives(self.n_items, &sc.forbidden, negatives, &mut rng);
                    rank::rank_sampled(&sc.scores, target, &neg)
                }
            };
            let mut top = Vec::new();
            rank::top_k(
                &sc.scores,
                self.list_len,
                &sc.excluded,
                &mut sc.selector,
                &mut top,
            );
            out.push(Outcome {
                seq: index,
                user: seq.user,
                target,
                rank,
                top,
            });
        }
        Ok(out)
    }

    /// The outcome of every event of `seqs`, in order, scoring on this thread.
    pub fn outcomes<S: Scorer + ?Sized>(
        &self,
        seqs: &[EvalSeq],
        scorer: &mut S,
    ) -> Result<Vec<Outcome>> {
        let mut sc = self.scratch();
        let mut score = |h: &[u32], u: Option<u32>, s: &mut [f32]| scorer.score(h, u, s);
        let mut out = Vec::with_capacity(Split::n_events(seqs));
        for (i, seq) in seqs.iter().enumerate() {
            out.extend(self.seq_outcomes(i, seq, &mut sc, &mut score)?);
        }
        Ok(out)
    }

    /// [`Evaluator::outcomes`] with the sequences spread over rayon's threads.
    pub fn outcomes_par<S: SharedScorer + ?Sized>(
        &self,
        seqs: &[EvalSeq],
        scorer: &S,
    ) -> Result<Vec<Outcome>> {
        let per_seq: Vec<Vec<Outcome>> = seqs
            .par_iter()
            .enumerate()
            .map_init(
                || self.scratch(),
                |sc, (i, seq)| {
                    let mut score =
                        |h: &[u32], u: Option<u32>, s: &mut [f32]| scorer.score_shared(h, u, s);
                    self.seq_outcomes(i, seq, sc, &mut score)
                },
            )
            .collect::<Result<_>>()?;
        Ok(per_seq.into_iter().flatten().collect())
    }

    /// The metrics of the `outcomes` of `seqs` (as [`Evaluator::outcomes`] returns them).
    ///
    /// `H_u`, the items of a user's past (for `up@k` and the serendipity metrics), is the
    /// user's training items together with the items of their evaluated sequence before its
    /// current session: with a session split, the test session's past includes the validation
    /// session (the thesis's "all earlier sessions"), which is no training item.
    pub fn report(&self, seqs: &[EvalSeq], outcomes: &[Outcome]) -> Report {
        let mut user_items = Cow::Borrowed(self.user_items.as_slice());
        for s in seqs.iter().filter(|s| s.session_start > 0) {
            let set = &mut user_items.to_mut()[s.user as usize];
            set.extend_from_slice(&s.items[..s.session_start]);
            set.sort_unstable();
            set.dedup();
        }
        let ctx = MetricContext {
            n_items: self.n_items,
            long_tail: &self.long_tail,
            user_items: &user_items,
        };
        compute(&self.opts.metrics, outcomes, &ctx)
    }

    /// Evaluates `scorer` on `seqs` (a split's `valid` or `test`) on this thread.
    pub fn evaluate<S: Scorer + ?Sized>(&self, seqs: &[EvalSeq], scorer: &mut S) -> Result<Report> {
        Ok(self.report(seqs, &self.outcomes(seqs, scorer)?))
    }

    /// Evaluates a thread-safe `scorer` on `seqs` in parallel; same result as
    /// [`Evaluator::evaluate`].
    pub fn evaluate_par<S: SharedScorer + ?Sized>(
        &self,
        seqs: &[EvalSeq],
        scorer: &S,
    ) -> Result<Report> {
        Ok(self.report(seqs, &self.outcomes_par(seqs, scorer)?))
    }
}

#[cfg(test)]
#[path = "eval_tests.rs"]
mod tests;
