//! Metric names, per-event outcomes, and the metrics computed from them
//! (`spec/thesis-models.md` §2).
//!
//! Accuracy, with one target per event and `rank` its 1-based rank:
//! - `hr@k` = mean of `1[rank ≤ k]` (= Recall@k with one target; `recall@k` is an alias);
//! - `ndcg@k` = mean of `1[rank ≤ k] / log2(rank + 1)`;
//! - `mrr@k` = mean of `1[rank ≤ k] / rank`.
//!
//! Beyond accuracy, from each event's top-k list `top_k(e)` (always from the full-catalog
//! ranking, history items removed when the evaluation excludes them):
//! - `cv_div@k` = `|∪_e top_k(e)| / N`, N = catalog size without padding;
//! - `cv_nov@k` = `|(∪_e top_k(e)) ∩ I_nov| / |I_nov|`, `I_nov` the long tail (items outside
//!   the top `⌈0.1·N⌉` by training popularity, ties by id);
//! - `r@k` = mean over evaluation sequences (a leave-one-out user, a ratio-split sequence, a
//!   session) of `Σ_e |top_k(e)| − |∪_e top_k(e)|`;
//! - `up@k` = mean over users of the mean over their events of `|top_k(e) \ H_u|`, with `H_u`
//!   the user's past: their training items and, with sessions, every item before the current
//!   session (the validation session is part of a test session's past);
//! - `hr_ser@k`, `ndcg_ser@k` = `hr@k`, `ndcg@k` over serendipity events only (target ∉ `H_u`).
//!
//! A metric averaged over nothing (no events, no serendipity events) is NaN, which
//! `serde_json` writes as `null`.

use crate::data::{DataError, Result};
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::fmt;
use std::str::FromStr;

/// What a metric measures.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Hit rate (= recall with one target).
    Hr,
    /// Normalised discounted cumulative gain.
    Ndcg,
    /// Mean reciprocal rank.
    Mrr,
    /// Catalog coverage of the top-k lists.
    CvDiv,
    /// Long-tail coverage of the top-k lists.
    CvNov,
    /// Repetitiveness: slots repeating an item within one sequence's lists.
    Repetition,
    /// Unexpectedness: recommended items outside the user's training items.
    Unexpectedness,
    /// Hit rate over serendipity events.
    HrSer,
    /// NDCG over serendipity events.
    NdcgSer,
}

impl MetricKind {
    /// The canonical name (`hr`, `ndcg`, `mrr`, `cv_div`, `cv_nov`, `r`, `up`, `hr_ser`,
    /// `ndcg_ser`).
    pub fn name(self) -> &'static str {
        match self {
            MetricKind::Hr => "hr",
            MetricKind::Ndcg => "ndcg",
            MetricKind::Mrr => "mrr",
            MetricKind::CvDiv => "cv_div",
            MetricKind::CvNov => "cv_nov",
            MetricKind::Repetition => "r",
            MetricKind::Unexpectedness => "up",
            MetricKind::HrSer => "hr_ser",
            MetricKind::NdcgSer => "ndcg_ser",
        }
    }

    /// Whether the metric needs each event's top-k list (rather than only the target's rank).
    pub fn needs_list(self) -> bool {
        matches!(
            self,
            MetricKind::CvDiv
                | MetricKind::CvNov
                | MetricKind::Repetition
                | MetricKind::Unexpectedness
        )
    }

    fn parse(s: &str) -> Option<MetricKind> {
        Some(match s {
            "hr" | "hit" | "recall" => MetricKind::Hr,
            "ndcg" | "ng" => MetricKind::Ndcg,
            "mrr" => MetricKind::Mrr,
            "cv_div" | "cv_d" => MetricKind::CvDiv,
            "cv_nov" | "cv_n" => MetricKind::CvNov,
            "r" => MetricKind::Repetition,
            "up" => MetricKind::Unexpectedness,
            "hr_ser" => MetricKind::HrSer,
            "ndcg_ser" | "ng_ser" => MetricKind::NdcgSer,
            _ => return None,
        })
    }
}

/// A metric at a cutoff, e.g. `ndcg@10`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Metric {
    /// What it measures.
    pub kind: MetricKind,
    /// The cutoff (≥ 1).
    pub k: usize,
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.kind.name(), self.k)
    }
}

const EXPECTED: &str = "NAME@K with NAME one of hr (recall), ndcg, mrr, cv_div, cv_nov, r, up, hr_ser, ndcg_ser and K ≥ 1";

impl FromStr for Metric {
    type Err = DataError;

    /// Parses `name@k`, case-insensitively (`-` may stand for `_`).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || DataError::UnknownName {
            what: "metric",
            value: s.to_string(),
            expected: EXPECTED.into(),
        };
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        let (name, k) = norm.split_once('@').ok_or_else(bad)?;
        let kind = MetricKind::parse(name).ok_or_else(bad)?;
        let k = k
            .parse::<usize>()
            .ok()
            .filter(|&k| k >= 1)
            .ok_or_else(bad)?;
        Ok(Metric { kind, k })
    }
}

/// Parses a comma-separated metric list such as `hr@10,ndcg@10,mrr@10`, keeping the order
/// and dropping repeats.
pub fn parse_metrics(s: &str) -> Result<Vec<Metric>> {
    let mut out: Vec<Metric> = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let m: Metric = part.parse()?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    if out.is_empty() {
        return Err(DataError::UnknownName {
            what: "metric list",
            value: s.to_string(),
            expected: EXPECTED.into(),
        });
    }
    Ok(out)
}

/// What happened at one evaluation event.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Index of the event's sequence in the evaluated slice.
    pub seq: usize,
    /// Internal user id.
    pub user: u32,
    /// The target item.
    pub target: u32,
    /// 1-based rank of the target; `None` when it could not be ranked (excluded as a history
    /// item, or a NaN score): a miss at every cutoff.
    pub rank: Option<u32>,
    /// The top of the full ranking, best first, as long as the largest cutoff of the
    /// list metrics (empty when none is asked for).
    pub top: Vec<u32>,
}

/// What the metrics need besides the outcomes.
#[derive(Clone, Debug)]
pub struct MetricContext<'a> {
    /// Catalog size, padding included.
    pub n_items: usize,
    /// `long_tail[i]`: item `i` is in the long tail `I_nov` (length `n_items`).
    pub long_tail: &'a [bool],
    /// `H_u` per user id: the sorted items of the user's past (see the module docs).
    pub user_items: &'a [Vec<u32>],
}

/// Metric values in the order they were asked for, with the counts they average over.
/// Serialises (serde) as a JSON object `{"hr@10": 0.1, ...}` in that order.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// `(name, value)` pairs in request order.
    pub values: Vec<(String, f64)>,
    /// Number of events.
    pub n_events: usize,
    /// Number of evaluation sequences with events.
    pub n_sequences: usize,
    /// Number of users with events.
    pub n_users: usize,
    /// Number of serendipity events (target outside `H_u`).
    pub n_serendipity_events: usize,
}

impl Report {
    /// The value of metric `name` (canonical form, e.g. `ndcg@10`).
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.iter().find(|(n, _)| n == name).map(|&(_, v)| v)
    }
}

impl Serialize for Report {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.values.len()))?;
        for (n, v) in &self.values {
            map.serialize_entry(n, v)?;
        }
        map.end()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (n, v)) in self.values.iter().enumerate() {
            if i > 0 {
                f.write_str("  ")?;
            }
            write!(f, "{n} {v:.4}")?;
        }
        Ok(())
    }
}

/// The first `k` items of an outcome's list.
fn head(o: &Outcome, k: usize) -> &[u32] {
    &o.top[..o.top.len().min(k)]
}

fn in_set(sorted: &[u32], id: u32) -> bool {
    sorted.binary_search(&id).is_ok()
}

fn mean(sum: f64, n: usize) -> f64 {
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// Gain of a rank at cutoff `k` for HR, NDCG, MRR.
fn gain(kind: MetricKind, rank: Option<u32>, k: usize) -> f64 {
    match rank {
        Some(r) if (r as usize) <= k => match kind {
            MetricKind::Hr | MetricKind::HrSer => 1.0,
            MetricKind::Ndcg | MetricKind::NdcgSer => 1.0 / ((r as f64) + 1.0).log2(),
            MetricKind::Mrr => 1.0 / r as f64,
            _ => unreachable!("not a rank metric"),
        },
        _ => 0.0,
    }
}

/// Computes `metrics` from `outcomes` (which must be grouped: all events of a sequence
/// together, as the evaluator produces them).
pub fn compute(metrics: &[Metric], outcomes: &[Outcome], ctx: &MetricContext<'_>) -> Report {
    let h = |u: u32| {
        ctx.user_items
            .get(u as usize)
            .map_or(&[][..], Vec::as_slice)
    };
    let serendipitous: Vec<bool> = outcomes
        .iter()
        .map(|o| !in_set(h(o.user), o.target))
        .collect();
    let n_ser = serendipitous.iter().filter(|&&s| s).count();
    let mut seq_ids: Vec<usize> = outcomes.iter().map(|o| o.seq).collect();
    seq_ids.dedup();
    let mut users: Vec<u32> = outcomes.iter().map(|o| o.user).collect();
    users.sort_unstable();
    users.dedup();
    let catalog = ctx.n_items.saturating_sub(1);
    let values = metrics
        .iter()
        .map(|m| {
            let k = m.k;
            let v = match m.kind {
                MetricKind::Hr | MetricKind::Ndcg | MetricKind::Mrr => {
                    let sum: f64 = outcomes.iter().map(|o| gain(m.kind, o.rank, k)).sum();
                    mean(sum, outcomes.len())
                }
                MetricKind::HrSer | MetricKind::NdcgSer => {
                    let sum: f64 = (outcomes.iter().zip(&serendipitous))
                        .filter(|(_, s)| **s)
                        .map(|(o, _)| gain(m.kind, o.rank, k))
                        .sum();
                    mean(sum, n_ser)
                }
                MetricKind::CvDiv | MetricKind::CvNov => {
                    let mut seen = vec![false; ctx.n_items];
                    for &i in outcomes.iter().flat_map(|o| head(o, k)) {
                        seen[i as usize] = true;
                    }
                    if m.kind == MetricKind::CvDiv {
                        let covered = seen.iter().skip(1).filter(|&&s| s).count();
                        mean(covered as f64, catalog)
                    } else {
                        let tail = ctx.long_tail.iter().filter(|&&t| t).count();
                        let covered = (seen.iter().zip(ctx.long_tail))
                            .filter(|(s, t)| **s && **t)
                            .count();
                        mean(covered as f64, tail)
                    }
                }
                MetricKind::Repetition => {
                    let mut sum = 0.0;
                    let mut sets = 0;
                    for group in outcomes.chunk_by(|a, b| a.seq == b.seq) {
                        let mut items: Vec<u32> =
                            group.iter().flat_map(|o| head(o, k)).copied().collect();
                        let slots = items.len();
                        items.sort_unstable();
                        items.dedup();
                        sum += (slots - items.len()) as f64;
                        sets += 1;
                    }
                    mean(sum, sets)
                }
                MetricKind::Unexpectedness => {
                    // Per user: (sum of unseen counts, events).
                    let mut per_user: Vec<(f64, usize)> = vec![(0.0, 0); users.len()];
                    for o in outcomes {
                        let unseen = head(o, k)
                            .iter()
                            .filter(|&&i| !in_set(h(o.user), i))
                            .count();
                        let slot = &mut per_user[users.binary_search(&o.user).expect("listed")];
                        slot.0 += unseen as f64;
                        slot.1 += 1;
                    }
                    let sum: f64 = per_user.iter().map(|&(s, n)| s / n as f64).sum();
                    mean(sum, users.len())
                }
            };
            (m.to_string(), v)
        })
        .collect();
    Report {
        values,
        n_events: outcomes.len(),
        n_sequences: seq_ids.len(),
        n_users: users.len(),
        n_serendipity_events: n_ser,
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
