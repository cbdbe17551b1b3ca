//! Batches of requests: the top-k of many histories at once.
//!
//! Requests go in groups of at most [`BATCH_GROUP`]. A group is encoded together (SASRec stacks
//! the positions of all its windows into one activation, so that each projection and
//! feed-forward sublayer is one large product, and its last layer runs for each window's last
//! position only), then the catalog is scanned once for the whole group: a block of item rows
//! stays in cache while every request of the group is scored against it, each score going
//! straight to that request's streaming selector. Under `std` the groups run in parallel on the
//! current rayon pool.
//!
//! The selections equal those of [`Model::topk_into`] request by request up to f32 rounding:
//! the encoder's products and the catalog scores are summed in another order (relative
//! differences of order 1e-6, which can swap two items whose scores are that close).

use super::{Model, Query, Scored, Workspace, exclusions};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::models::Request as ArchRequest;
use crate::objectives::Objectives;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

/// Most requests encoded and scanned together.
pub const BATCH_GROUP: usize = 64;

/// A checked request.
struct Request<'a> {
    window: &'a [u32],
    user: u32,
    /// The history when it is excluded, else empty.
    history: &'a [u32],
    extra: &'a [u32],
    /// The request's objective knobs (checked against the model); `None`: the defaults.
    objectives: Option<&'a Objectives>,
}

/// Requests per group for `n` requests on `threads` threads: at least two groups per thread
/// (so that a thread slowed down by other work is helped), at most [`BATCH_GROUP`].
#[cfg(any(feature = "std", test))]
fn group_size(n: usize, threads: usize) -> usize {
    n.div_ceil(2 * threads.max(1)).clamp(1, BATCH_GROUP)
}

impl<B: Backend> Model<B> {
    fn request<'q>(&self, q: &Query<'q>) -> Result<Request<'q>> {
        Ok(Request {
            window: self.window(q.history)?,
            user: self.check_user(q.user)?,
            history: if q.exclude_history { q.history } else { &[] },
            extra: q.exclude,
            objectives: {
                self.check_objectives(q.objectives)?;
                q.objectives
            },
        })
    }

    /// The top-k of a group of checked requests with workspace `ws`: request `i` writes
    /// `items[i·k ..][..k]`, `scores[i·k ..][..k]` and the number written to `counts[i]`.
    fn topk_group(
        &self,
        reqs: &[Request<'_>],
        k: usize,
        ws: &mut Workspace<B>,
        items: &mut [u32],
        scores: &mut [f32],
        counts: &mut [usize],
    ) -> Result<()> {
        let n = reqs.len();
        if n == 0 {
            return Ok(());
        }
        let Workspace {
            scratch,
            users,
            scan,
            exclude,
            offsets,
            state,
            owner,
            ..
        } = ws;
        let state = self.scratch_state(state, owner)?;
        let arch_reqs: Vec<ArchRequest<'_>> = reqs
            .iter()
            .map(|r| ArchRequest {
                window: r.window,
                user: r.user,
                objectives: r.objectives.unwrap_or(&self.objectives),
            })
            .collect();
        let (be, arch) = (&self.be, &self.arch);
        arch.encode_batch(be, &arch_reqs, state, scratch, users)?;
        exclude.clear();
        offsets.clear();
        offsets.push(0);
        for r in reqs {
            exclusions(exclude, r.history, r.extra);
            offsets.push(exclude.len());
        }
        be.topk_rows(
            &self.items,
            users,
            k,
            exclude,
            offsets,
            scan,
            &mut items[..n * k],
            &mut scores[..n * k],
            &mut counts[..n],
        )
    }

    /// Checked requests in groups on the calling thread with `ws` (see [`Self::topk_group`]).
    fn topk_groups(
        &self,
        reqs: &[Request<'_>],
        k: usize,
        ws: &mut Workspace<B>,
        items: &mut [u32],
        scores: &mut [f32],
        counts: &mut [usize],
    ) -> Vec<Result<()>> {
        reqs.chunks(BATCH_GROUP)
            .zip(items.chunks_mut(BATCH_GROUP * k))
            .zip(scores.chunks_mut(BATCH_GROUP * k))
            .zip(counts.chunks_mut(BATCH_GROUP))
            .map(|(((r, it), sc), ct)| self.topk_group(r, k, ws, it, sc, ct))
            .collect()
    }

    /// Checked requests in groups in parallel on the current rayon pool (one workspace per
    /// worker); the result of every group, in order.
    #[cfg(feature = "std")]
    fn topk_groups_par(
        &self,
        reqs: &[Request<'_>],
        k: usize,
        items: &mut [u32],
        scores: &mut [f32],
        counts: &mut [usize],
    ) -> (usize, Vec<Result<()>>) {
        use rayon::prelude::*;
        let group = group_size(reqs.len(), rayon::current_num_threads());
        let results = reqs
            .par_chunks(group)
            .zip(items.par_chunks_mut(group * k))
            .zip(scores.par_chunks_mut(group * k))
            .zip(counts.par_chunks_mut(group))
            .map_init(Workspace::new, |ws, (((r, it), sc), ct)| {
                self.topk_group(r, k, ws, it, sc, ct)
            })
            .collect();
        (group, results)
    }

    /// Runs the valid requests of `queries` through `run` (which fills flat outputs for them
    /// and reports the result of every group of `group` requests) and assembles the per-request
    /// results in input order.
    fn collect_batch<'q>(
        &self,
        queries: &[Query<'q>],
        k: usize,
        run: impl FnOnce(
            &[Request<'q>],
            &mut [u32],
            &mut [f32],
            &mut [usize],
        ) -> (usize, Vec<Result<()>>),
    ) -> Vec<Result<Vec<Scored>>> {
        let k = k.min(self.info.n_items);
        let mut out: Vec<Option<Result<Vec<Scored>>>> = Vec::with_capacity(queries.len());
        let mut reqs = Vec::new();
        for q in queries {
            match self.request(q) {
                Ok(r) => {
                    reqs.push(r);
                    out.push(None);
                }
                Err(e) => out.push(Some(Err(e))),
            }
        }
        let mut items = vec![0u32; reqs.len() * k];
        let mut scores = vec![0f32; reqs.len() * k];
        let mut counts = vec![0usize; reqs.len()];
        let (group, groups) = if k == 0 {
            (1, Vec::new())
        } else {
            run(&reqs, &mut items, &mut scores, &mut counts)
        };
        for (i, slot) in out.iter_mut().filter(|s| s.is_none()).enumerate() {
            let failed = groups.get(i / group).and_then(|g| g.as_ref().err());
            *slot = Some(match failed {
                // Error is not Clone: every request of a failed group gets its message.
                Some(e) => Err(Error::InvalidArgument(format!("batch: {e}"))),
                None => Ok((0..counts[i])
                    .map(|j| Scored {
                        item: items[i * k + j],
                        score: scores[i * k + j],
                    })
                    .collect()),
            });
        }
        out.into_iter()
            .map(|s| s.expect("every request has a result"))
            .collect()
    }

    /// Top-k for many requests on the calling thread, reusing one workspace, with the batched
    /// path (see the module docs). The result is in input order; each request fails or
    /// succeeds on its own.
    pub fn topk_batch_sequential(
        &self,
        queries: &[Query<'_>],
        k: usize,
        ws: &mut Workspace<B>,
    ) -> Vec<Result<Vec<Scored>>> {
        let k_eff = k.min(self.info.n_items);
        self.collect_batch(queries, k, |reqs, items, scores, counts| {
            let groups = self.topk_groups(reqs, k_eff, ws, items, scores, counts);
            (BATCH_GROUP, groups)
        })
    }

    /// Top-k for many requests with the batched path, groups in parallel on the current rayon
    /// pool (see the module docs). The result is in input order; each request fails or
    /// succeeds on its own.
    #[cfg(feature = "std")]
    pub fn topk_batch(&self, queries: &[Query<'_>], k: usize) -> Vec<Result<Vec<Scored>>> {
        let k_eff = k.min(self.info.n_items);
        self.collect_batch(queries, k, |reqs, items, scores, counts| {
            self.topk_groups_par(reqs, k_eff, items, scores, counts)
        })
    }

    /// [`Self::topk_batch`] into flat outputs: request `i` writes `items[i·k ..][..k]` and
    /// `scores[i·k ..][..k]` as [`Self::topk_into`] would, and the number written (fewer than `k`
    /// when the catalog minus exclusions is smaller) to `counts[i]`. Every request is checked
    /// first, in order, and the first invalid one's error is returned before anything is
    /// scored.
    #[cfg(feature = "std")]
    pub fn topk_batch_into(
        &self,
        queries: &[Query<'_>],
        k: usize,
        items: &mut [u32],
        scores: &mut [f32],
        counts: &mut [usize],
    ) -> Result<()> {
        let n = queries.len();
        let total = n.checked_mul(k).ok_or_else(|| {
            Error::InvalidArgument(format!("{n} requests of top-{k} overflow the output size"))
        })?;
        if items.len() < total || scores.len() < total || counts.len() < n {
            return Err(Error::InvalidArgument(format!(
                "a batch of {n} top-{k} requests needs {total} items and scores and {n} counts, \
                 got {}, {} and {}",
                items.len(),
                scores.len(),
                counts.len()
            )));
        }
        let reqs = queries
            .iter()
            .map(|q| self.request(q))
            .collect::<Result<Vec<_>>>()?;
        if k == 0 {
            counts[..n].fill(0);
            return Ok(());
        }
        let (items, scores) = (&mut items[..total], &mut scores[..total]);
        let (_, groups) = self.topk_groups_par(&reqs, k, items, scores, &mut counts[..n]);
        groups.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::group_size;

    #[test]
    fn groups_are_balanced_and_bounded() {
        assert_eq!(group_size(256, 2), 64);
        assert_eq!(group_size(100, 2), 25);
        assert_eq!(group_size(3, 2), 1);
        assert_eq!(group_size(10_000, 8), super::BATCH_GROUP);
        assert_eq!(group_size(1, 0), 1);
    }
}
