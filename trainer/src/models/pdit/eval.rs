//! Ranking evaluation of PDiT-style generators (thesis §9.4, Table 8.8): each example's
//! history (and prompt) is turned into a top-k list of catalog items by a [`Ranker`], and the
//! target's rank in it gives HR@k, NDCG@k and MRR@k (one target per example, the full
//! catalog; padding id 0 is never recommended, history items only with `exclude_history`).
//!
//! The rankers: [`EngineRanker`], the served PDiT (`seqrec_engine::pdit::Pdit::recommend`:
//! sampling along a chain, then cosine against the item-text catalog), and the DreamRec-style
//! baseline's own (`super::dreamrec`), and two references on the same examples: an ID model
//! served by the engine ([`IdModelRanker`], e.g. SASRec trained on the same split) and the
//! most popular training targets ([`PopularityRanker`]). Examples are ranked in chunks of [`CHUNK`] in parallel,
//! chunk `c` drawing its noise from the stream `seed + c`, so a report depends on the seed
//! and not on the number of threads.

use super::data::{PditData, PditExample};
use crate::error::{Error, Result};
use crate::eval::{Metric, MetricContext, MetricKind, Outcome, Report, compute};
use rayon::prelude::*;
use seqrec_engine::pdit::{Catalog, Guidance, NoiseSource, Pdit, PditWorkspace, Schedule};
use seqrec_engine::{Cpu, Tensor};

/// Examples ranked per call of [`Ranker::top_k`].
pub const CHUNK: usize = 64;

/// Turns examples into top-k lists.
pub trait Ranker: Sync {
    /// The `k` best items of each example, best first, drawing any noise from `seed`.
    fn top_k(&self, examples: &[&PditExample], k: usize, seed: u64) -> Result<Vec<Vec<u32>>>;
}

/// What an evaluation computes and how.
#[derive(Clone, Debug, PartialEq)]
pub struct RankOptions {
    /// Rank metrics (hr, ndcg, mrr).
    pub metrics: Vec<Metric>,
    /// Seed of the noise.
    pub seed: u64,
}

/// The report of `ranker` on `examples` over a catalog of `n_items` ids.
pub fn evaluate<R: Ranker + ?Sized>(
    ranker: &R,
    examples: &[PditExample],
    n_items: usize,
    opts: &RankOptions,
) -> Result<Report> {
    if let Some(m) = opts
        .metrics
        .iter()
        .find(|m| !matches!(m.kind, MetricKind::Hr | MetricKind::Ndcg | MetricKind::Mrr))
    {
        return Err(Error::Invalid(format!(
            "metric {m}: generators are evaluated with hr, ndcg and mrr"
        )));
    }
    let k = opts.metrics.iter().map(|m| m.k).max().unwrap_or(1);
    let lists = top_lists(ranker, examples, k, opts.seed)?;
    Ok(report(&opts.metrics, examples, &lists, n_items))
}

/// The top-`k` list of every example by `ranker`, chunk `c` drawing its noise from
/// `seed + c`.
pub fn top_lists<R: Ranker + ?Sized>(
    ranker: &R,
    examples: &[PditExample],
    k: usize,
    seed: u64,
) -> Result<Vec<Vec<u32>>> {
    let chunks: Vec<&[PditExample]> = examples.chunks(CHUNK).collect();
    let lists: Vec<Vec<Vec<u32>>> = chunks
        .par_iter()
        .enumerate()
        .map(|(c, ex)| {
            let refs: Vec<&PditExample> = ex.iter().collect();
            ranker.top_k(&refs, k, seed.wrapping_add(c as u64))
        })
        .collect::<Result<_>>()?;
    Ok(lists.into_iter().flatten().collect())
}

/// The rank metrics of the top lists `lists` of `examples` (one target each).
pub fn report(
    metrics: &[Metric],
    examples: &[PditExample],
    lists: &[Vec<u32>],
    n_items: usize,
) -> Report {
    let outcomes: Vec<Outcome> = examples
        .iter()
        .zip(lists)
        .enumerate()
        .map(|(i, (e, top))| Outcome {
            seq: i,
            user: e.user,
            target: e.target,
            rank: top
                .iter()
                .position(|&it| it == e.target)
                .map(|p| p as u32 + 1),
            top: Vec::new(),
        })
        .collect();
    let ctx = MetricContext {
        n_items,
        long_tail: &[],
        user_items: &[],
    };
    compute(metrics, &outcomes, &ctx)
}

/// The history of an example as the model reads it: its most recent `max_len` items.
pub fn recent(history: &[u32], max_len: usize) -> &[u32] {
    &history[history.len().saturating_sub(max_len)..]
}

/// The served PDiT as a [`Ranker`]: samples `z_0` along `chain` from the example's prompt and
/// history latents (multiplied by `latent_scale`), and ranks the catalog by cosine to it.
#[derive(Debug)]
pub struct EngineRanker<'a> {
    model: &'a Pdit,
    catalog: Catalog<Cpu>,
    chain: Schedule,
    data: &'a PditData,
    exclude_history: bool,
    guide: Option<GuideSpec>,
}

/// Attribute guidance for [`EngineRanker`] (owned; see [`seqrec_engine::pdit::Guidance`]).
#[derive(Clone, Debug, PartialEq)]
pub struct GuideSpec {
    /// The classifier's weights over latents at the text encoder's scale.
    pub weight: Vec<f32>,
    /// Its bias.
    pub bias: f32,
    /// Towards (true) or away from the attribute.
    pub toward: bool,
    /// Guidance scale.
    pub scale: f32,
}

impl GuideSpec {
    fn view(&self) -> Guidance<'_> {
        Guidance {
            weight: &self.weight,
            bias: self.bias,
            toward: self.toward,
            scale: self.scale,
        }
    }
}

impl<'a> EngineRanker<'a> {
    /// Ranks with `model` sampling along its chain respaced to `steps` steps (its `T` for the
    /// base chain), over the item latents of `data`.
    pub fn new(
        model: &'a Pdit,
        data: &'a PditData,
        steps: usize,
        exclude_history: bool,
    ) -> Result<Self> {
        let c = model.config();
        if c.latent_dim != data.dim || (c.variant.has_gen() && c.cond_dim != data.dim) {
            return Err(Error::Invalid(format!(
                "the model's latents are {} wide (prompt {}), the data's {}",
                c.latent_dim, c.cond_dim, data.dim
            )));
        }
        let table = Tensor::from_vec(vec![data.n_items(), data.dim], data.item_latents.clone())?;
        Ok(EngineRanker {
            catalog: Catalog::new(model.backend(), &table)?,
            chain: model.respaced(steps)?,
            model,
            data,
            exclude_history,
            guide: None,
        })
    }

    /// The same ranker sampling with attribute guidance (checked against the model's width).
    pub fn guided(mut self, guide: GuideSpec) -> Result<Self> {
        guide.view().check(self.model.config().latent_dim)?;
        self.guide = Some(guide);
        Ok(self)
    }
}

/// The network's inputs for `examples`: prompts `[S, d]`, histories packed (`[Σ lens, d]`)
/// and their lengths, all multiplied by `scale`; histories cut to their last `max_len` items.
pub fn inputs(
    data: &PditData,
    examples: &[&PditExample],
    scale: f32,
    max_len: usize,
) -> (Vec<f32>, Vec<f32>, Vec<usize>) {
    let (mut p, mut hist, mut lens) = (Vec::new(), Vec::new(), Vec::new());
    for e in examples {
        p.extend(e.prompt.iter().map(|&v| v * scale));
        let h = recent(&e.history, max_len);
        for &id in h {
            hist.extend(data.latent(id).iter().map(|&v| v * scale));
        }
        lens.push(h.len());
    }
    (p, hist, lens)
}

impl Ranker for EngineRanker<'_> {
    fn top_k(&self, examples: &[&PditExample], k: usize, seed: u64) -> Result<Vec<Vec<u32>>> {
        let c = self.model.config();
        let s = examples.len();
        let (p, hist, lens) = inputs(self.data, examples, c.latent_scale as f32, c.max_hist_len);
        let excluded: Vec<Vec<u32>> = if self.exclude_history {
            examples.iter().map(|e| sorted(&e.history)).collect()
        } else {
            Vec::new()
        };
        let exclude: Vec<&[u32]> = excluded.iter().map(Vec::as_slice).collect();
        let mut z0 = vec![0.0; s * c.latent_dim];
        let guide = self.guide.as_ref().map(GuideSpec::view);
        let lists = self.model.recommend_guided(
            &self.chain,
            &self.catalog,
            s,
            c.variant.has_gen().then_some(&p[..]),
            c.variant.has_tem().then_some((&hist[..], &lens[..])),
            NoiseSource::seed(seed),
            guide.as_ref(),
            k,
            &exclude,
            &mut PditWorkspace::default(),
            &mut z0,
        )?;
        Ok(lists
            .into_iter()
            .map(|l| l.into_iter().map(|x| x.item).collect())
            .collect())
    }
}

/// An ID-based model of the engine (SASRec, GRU4Rec, ...) ranking each example's history;
/// its item ids must be the data file's (trained on the same data set).
pub struct IdModelRanker<'a> {
    model: &'a seqrec_engine::Model,
    exclude_history: bool,
}

impl core::fmt::Debug for IdModelRanker<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IdModelRanker")
            .field("n_items", &self.model.info().n_items)
            .field("exclude_history", &self.exclude_history)
            .finish()
    }
}

impl<'a> IdModelRanker<'a> {
    /// Checks that the model's catalog is the data file's.
    pub fn new(
        model: &'a seqrec_engine::Model,
        data: &PditData,
        exclude_history: bool,
    ) -> Result<Self> {
        let n = model.info().n_items;
        if n != data.n_items() {
            return Err(Error::Invalid(format!(
                "the model scores {n} item ids (padding included), the data file has {}: \
                 train it on the data set the file was made from",
                data.n_items()
            )));
        }
        Ok(Self {
            model,
            exclude_history,
        })
    }
}

impl Ranker for IdModelRanker<'_> {
    fn top_k(&self, examples: &[&PditExample], k: usize, _seed: u64) -> Result<Vec<Vec<u32>>> {
        let mut ws = self.model.new_workspace();
        let n_users = self.model.info().n_users;
        examples
            .iter()
            .map(|e| {
                let mut q =
                    seqrec_engine::Query::new(&e.history).exclude_history(self.exclude_history);
                if n_users.is_some() {
                    q = q.user(e.user);
                }
                let top = self.model.topk(&q, k, &mut ws)?;
                Ok(top.into_iter().map(|x| x.item).collect())
            })
            .collect()
    }
}

/// The most frequent targets of the training examples, the same list for every example (less
/// its history with `exclude_history`).
#[derive(Debug)]
pub struct PopularityRanker {
    order: Vec<u32>,
    exclude_history: bool,
}

impl PopularityRanker {
    /// Counts the training targets of `data`.
    pub fn new(data: &PditData, exclude_history: bool) -> Self {
        let mut counts = vec![0u64; data.n_items()];
        for e in &data.train {
            counts[e.target as usize] += 1;
        }
        let mut order: Vec<u32> = (1..data.n_items() as u32).collect();
        order.sort_by(|&a, &b| counts[b as usize].cmp(&counts[a as usize]).then(a.cmp(&b)));
        Self {
            order,
            exclude_history,
        }
    }
}

impl Ranker for PopularityRanker {
    fn top_k(&self, examples: &[&PditExample], k: usize, _seed: u64) -> Result<Vec<Vec<u32>>> {
        Ok(examples
            .iter()
            .map(|e| {
                let seen = if self.exclude_history {
                    sorted(&e.history)
                } else {
                    Vec::new()
                };
                self.order
                    .iter()
                    .copied()
                    .filter(|i| seen.binary_search(i).is_err())
                    .take(k)
                    .collect()
            })
            .collect())
    }
}

/// `ids` sorted, without repeats.
pub fn sorted(ids: &[u32]) -> Vec<u32> {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}
