//! Top-k selection over item scores, with an exclusion set (e.g. the items already in the
//! user's history).
//!
//! Layout: scores are a contiguous `f32` slice; `scores[i]` belongs to item id `base + i`.
//! Excluded ids are global ids, sorted ascending.
//!
//! Order: a total order on (score, id): the higher score first and, on exactly equal scores
//! (`-0.0 == 0.0`), the smaller id first. NaN scores and excluded ids are never selected;
//! `-inf` is an ordinary score.
//!
//! Tolerance: none. Selection is exact; every path returns the same items and scores as the
//! sort-based reference.
//!
//! The SIMD path compares a group of vectors of scores against the current k-th best score and
//! skips the group when no lane reaches it, so once the selector is full a scan costs about one
//! pass of loads and compares; only the rare candidates go through the scalar heap.

use super::isa::Isa;
use alloc::vec::Vec;
use pulp::{Simd, WithSimd};

/// One selected item.
#[derive(Copy, Clone, Debug, PartialEq)]
struct Entry {
    score: f32,
    id: u32,
}

impl Entry {
    /// `self` comes before `other` in the selection order.
    #[inline(always)]
    fn better_than(self, other: Entry) -> bool {
        self.score > other.score || (self.score == other.score && self.id < other.id)
    }
}

/// A streaming top-k selector, reusable across requests.
///
/// Offer scores block by block with [`TopK::push_block`] (blocks may arrive in any order, and
/// selectors filled on different threads can be combined with [`TopK::merge`]), then read the
/// best items with [`TopK::finish`]. Each id must be offered at most once per request.
///
/// The selector keeps a binary heap of its current best `k` entries, worst at the root. It
/// allocates only while growing to `k` entries; reusing it with the same (or a smaller) `k`
/// allocates nothing.
#[derive(Clone, Debug)]
pub struct TopK {
    k: usize,
    heap: Vec<Entry>,
}

impl TopK {
    /// An empty selector for the best `k` items.
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: Vec::new(),
        }
    }

    /// Empties the selector and sets a new `k`, keeping the allocation.
    pub fn reset(&mut self, k: usize) {
        self.k = k;
        self.heap.clear();
    }

    /// The `k` this selector keeps.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of items currently held: `min(k, items offered so far)` (NaN and excluded items
    /// are not counted).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no item is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The score an item must reach to possibly enter: the current k-th best score, `-inf`
    /// while fewer than `k` items are held, and `+inf` when `k == 0`.
    pub fn threshold(&self) -> f32 {
        if self.k == 0 {
            f32::INFINITY
        } else if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap[0].score
        }
    }

    /// Offers one candidate (already known not to be excluded). NaN is rejected.
    #[inline(always)]
    fn offer(&mut self, e: Entry) {
        if self.heap.len() < self.k {
            if e.score.is_nan() {
                return;
            }
            self.heap.push(e);
            self.sift_up(self.heap.len() - 1);
        } else if self.k > 0 && e.better_than(self.heap[0]) {
            self.heap[0] = e;
            self.sift_down(0);
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            // Root holds the worst: move up while worse than the parent.
            if self.heap[parent].better_than(self.heap[i]) {
                self.heap.swap(parent, i);
                i = parent;
            } else {
                break;
            }
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut worst = i;
            if l < n && self.heap[worst].better_than(self.heap[l]) {
                worst = l;
            }
            if r < n && self.heap[worst].better_than(self.heap[r]) {
                worst = r;
            }
            if worst == i {
                break;
            }
            self.heap.swap(i, worst);
            i = worst;
        }
    }

    /// Offers `scores[i]` for id `base + i`, skipping ids in `exclude` (global ids, sorted
    /// ascending) and NaN scores, on the best instruction set.
    ///
    /// # Panics
    /// If `exclude` is not sorted ascending, or if `base + scores.len()` exceeds `2^32`
    /// (the ids would not fit in `u32`).
    #[inline]
    pub fn push_block(&mut self, base: u32, scores: &[f32], exclude: &[u32]) {
        self.push_block_isa(Isa::detect(), base, scores, exclude);
    }

    /// [`TopK::push_block`] with the scan body instantiated for `isa`.
    ///
    /// # Panics
    /// As [`TopK::push_block`].
    pub fn push_block_isa(&mut self, isa: Isa, base: u32, scores: &[f32], exclude: &[u32]) {
        let Some(exclude) = self.block_exclusions(base, scores.len(), exclude) else {
            return;
        };
        isa.run(ScanBody {
            topk: self,
            base,
            scores,
            exclude,
        });
    }

    /// Offers the items `base + i` (skipping ids in `exclude`, sorted ascending) whose exact
    /// score may enter the selection, given an upper bound `upper[i]` of each: items whose
    /// bound is below the current k-th best score are skipped, the others are scored with
    /// `rescore(id)` and offered. With valid bounds the result is exactly that of offering
    /// every exact score, while `rescore` runs only for the few items near the top (a
    /// quantized scan shortlisting, an f32 product re-scoring).
    ///
    /// The comparison leaves room for the f32 rounding of a bound computed as `score + margin`:
    /// the threshold is lowered by `2⁻²⁰` relative and `2⁻¹⁰⁰` absolute before the bounds are
    /// compared with it. A NaN bound skips its item.
    ///
    /// # Panics
    /// As [`TopK::push_block`].
    #[inline]
    pub fn push_block_bounded(
        &mut self,
        base: u32,
        upper: &[f32],
        exclude: &[u32],
        rescore: impl FnMut(u32) -> f32,
    ) {
        self.push_block_bounded_isa(Isa::detect(), base, upper, exclude, rescore);
    }

    /// [`TopK::push_block_bounded`] with the scan body instantiated for `isa`.
    ///
    /// # Panics
    /// As [`TopK::push_block`].
    pub fn push_block_bounded_isa(
        &mut self,
        isa: Isa,
        base: u32,
        upper: &[f32],
        exclude: &[u32],
        rescore: impl FnMut(u32) -> f32,
    ) {
        let Some(exclude) = self.block_exclusions(base, upper.len(), exclude) else {
            return;
        };
        isa.run(BoundedBody {
            topk: self,
            base,
            upper,
            exclude,
            rescore,
        });
    }

    /// Checks a block of `len` items from id `base` and the exclusions offered with it, and
    /// returns the excluded ids inside the block (the only ones that matter), or `None` when
    /// there is nothing to select (`k` or `len` zero).
    ///
    /// # Panics
    /// As [`TopK::push_block`].
    fn block_exclusions<'e>(&self, base: u32, len: usize, exclude: &'e [u32]) -> Option<&'e [u32]> {
        assert!(
            base as u64 + len as u64 <= 1 << 32,
            "TopK::push_block: ids base + scores.len() = {base} + {len} exceed u32"
        );
        assert!(
            exclude.windows(2).all(|w| w[0] <= w[1]),
            "TopK::push_block: exclude ({} ids) is not sorted ascending",
            exclude.len()
        );
        if self.k == 0 || len == 0 {
            return None;
        }
        let end = base as u64 + len as u64;
        let lo = exclude.partition_point(|&id| id < base);
        let hi = exclude.partition_point(|&id| (id as u64) < end);
        Some(&exclude[lo..hi])
    }

    /// The threshold bounds are compared with: [`TopK::threshold`] lowered by `2⁻²⁰` relative
    /// and `2⁻¹⁰⁰` absolute (infinite thresholds unchanged).
    #[inline(always)]
    fn bound_threshold(&self) -> f32 {
        let t = self.threshold();
        if t.is_finite() {
            t - t.abs() * BOUND_REL - BOUND_ABS
        } else {
            t
        }
    }

    /// Adds every item held by `other` to `self` (keeping `self`'s `k`). The two selectors
    /// must have been offered disjoint ids.
    pub fn merge(&mut self, other: &TopK) {
        for &e in &other.heap {
            self.offer(e);
        }
    }

    /// Writes the best `min(k, offered)` items, best first, into `items` and `scores`, returns
    /// their number, and empties the selector (as [`TopK::reset`] with the same `k`).
    ///
    /// # Panics
    /// If `items` or `scores` is shorter than the number of items held ([`TopK::len`]).
    pub fn finish(&mut self, items: &mut [u32], scores: &mut [f32]) -> usize {
        let n = self.heap.len();
        assert!(
            items.len() >= n && scores.len() >= n,
            "TopK::finish: items has {} and scores {} slots, expected at least {n}",
            items.len(),
            scores.len()
        );
        // In place, no allocation; (score, id) is a total order on the held entries.
        self.heap.sort_unstable_by(|a, b| {
            if a.better_than(*b) {
                core::cmp::Ordering::Less
            } else if b.better_than(*a) {
                core::cmp::Ordering::Greater
            } else {
                core::cmp::Ordering::Equal
            }
        });
        for (i, e) in self.heap.iter().enumerate() {
            items[i] = e.id;
            scores[i] = e.score;
        }
        self.heap.clear();
        n
    }
}

/// Scalar handling of a run of candidates (a group of vectors that had a lane reaching the
/// threshold, or the tail): full comparison, exclusion check, heap update.
#[inline(always)]
fn scan_scalar(topk: &mut TopK, base: u32, offset: usize, scores: &[f32], exclude: &[u32]) {
    // -inf until full; NaN fails the comparison.
    let mut thr = topk.threshold();
    for (i, &score) in scores.iter().enumerate() {
        if score >= thr {
            let id = base + (offset + i) as u32;
            if exclude.binary_search(&id).is_err() {
                topk.offer(Entry { score, id });
                thr = topk.threshold();
            }
        }
    }
}

/// Relative slack of [`TopK::bound_threshold`] (`2⁻²⁰`).
const BOUND_REL: f32 = 1.0 / (1u32 << 20) as f32;
/// Absolute slack of [`TopK::bound_threshold`] (`2⁻¹⁰⁰`).
const BOUND_ABS: f32 = 7.888_609e-31;

/// Scalar handling of a run of bounds that had a lane reaching the lowered threshold.
#[inline(always)]
fn bounded_scalar(
    topk: &mut TopK,
    base: u32,
    offset: usize,
    upper: &[f32],
    exclude: &[u32],
    rescore: &mut impl FnMut(u32) -> f32,
) {
    let mut thr = topk.bound_threshold();
    for (i, &bound) in upper.iter().enumerate() {
        if bound >= thr {
            let id = base + (offset + i) as u32;
            if exclude.binary_search(&id).is_err() {
                topk.offer(Entry {
                    score: rescore(id),
                    id,
                });
                thr = topk.bound_threshold();
            }
        }
    }
}

struct BoundedBody<'a, F> {
    topk: &'a mut TopK,
    base: u32,
    upper: &'a [f32],
    exclude: &'a [u32],
    rescore: F,
}

impl<F: FnMut(u32) -> f32> WithSimd for BoundedBody<'_, F> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self {
            topk,
            base,
            upper,
            exclude,
            mut rescore,
        } = self;
        skip_scan(
            s,
            upper,
            topk,
            TopK::bound_threshold,
            |topk, offset, run| bounded_scalar(topk, base, offset, run, exclude, &mut rescore),
        );
    }
}

struct ScanBody<'a> {
    topk: &'a mut TopK,
    base: u32,
    scores: &'a [f32],
    exclude: &'a [u32],
}

/// Vectors compared per skip test.
const GROUP: usize = 4;

impl WithSimd for ScanBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self {
            topk,
            base,
            scores,
            exclude,
        } = self;
        skip_scan(s, scores, topk, TopK::threshold, |topk, offset, run| {
            scan_scalar(topk, base, offset, run, exclude)
        });
    }
}

/// The vector skip test of both scans: `values` in groups of [`GROUP`] vectors; a group with a
/// lane at or above `threshold(topk)` (ties may win on id; NaN compares false) goes to
/// `run(topk, offset, group)`, after which the threshold is read again; the tail goes to `run`
/// as well.
#[inline(always)]
fn skip_scan<S: Simd>(
    s: S,
    values: &[f32],
    topk: &mut TopK,
    threshold: impl Fn(&TopK) -> f32,
    mut run: impl FnMut(&mut TopK, usize, &[f32]),
) {
    let lanes = S::F32_LANES;
    let (head, _) = S::as_simd_f32s(values);
    let groups = head.chunks_exact(GROUP);
    let grouped = groups.len() * GROUP * lanes;
    let mut thr = s.splat_f32s(threshold(topk));
    for (g, group) in groups.enumerate() {
        let m01 = s.or_m32s(
            s.greater_than_or_equal_f32s(group[0], thr),
            s.greater_than_or_equal_f32s(group[1], thr),
        );
        let m23 = s.or_m32s(
            s.greater_than_or_equal_f32s(group[2], thr),
            s.greater_than_or_equal_f32s(group[3], thr),
        );
        if any_lane(s, s.or_m32s(m01, m23)) {
            let offset = g * GROUP * lanes;
            run(topk, offset, &values[offset..offset + GROUP * lanes]);
            thr = s.splat_f32s(threshold(topk));
        }
    }
    run(topk, grouped, &values[grouped..]);
}

/// Whether any lane of the mask is set. (`F32_LANES`, not `M32_LANES`: pulp's scalar mask is
/// a `bool`, for which `M32_LANES` computes to 0.)
#[inline(always)]
fn any_lane<S: Simd>(s: S, m: S::m32s) -> bool {
    s.first_true_m32s(m) < S::F32_LANES
}

// ---------------------------------------------------------------------------------------------
// Convenience and reference

#[track_caller]
fn check_outputs(op: &str, k: usize, n: usize, items: usize, scores: usize) {
    let want = k.min(n);
    assert!(
        items >= want && scores >= want,
        "{op}: items has {items} and out_scores {scores} slots, expected at least min(k, len) = {want}"
    );
}

/// Reference top-k: sorts every eligible (score, id) pair by the total order and keeps the
/// first `k`. Writes them best first and returns their number.
///
/// # Panics
/// If `exclude` is not sorted ascending, or if `items` or `out_scores` is shorter than
/// `min(k, scores.len())`.
pub fn topk_ref(
    scores: &[f32],
    k: usize,
    exclude: &[u32],
    items: &mut [u32],
    out_scores: &mut [f32],
) -> usize {
    check_outputs("topk", k, scores.len(), items.len(), out_scores.len());
    assert!(
        exclude.windows(2).all(|w| w[0] <= w[1]),
        "topk: exclude is not sorted ascending"
    );
    let mut all: Vec<Entry> = scores
        .iter()
        .enumerate()
        .map(|(i, &score)| Entry {
            score,
            id: i as u32,
        })
        .filter(|e| !e.score.is_nan() && exclude.binary_search(&e.id).is_err())
        .collect();
    all.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .expect("NaN filtered out")
            .then(a.id.cmp(&b.id))
    });
    let n = k.min(all.len());
    for (i, e) in all[..n].iter().enumerate() {
        items[i] = e.id;
        out_scores[i] = e.score;
    }
    n
}

/// Top-k of `scores` (ids `0..scores.len()`) with the scan body instantiated for `isa`.
///
/// # Panics
/// As [`topk`].
pub fn topk_isa(
    isa: Isa,
    scores: &[f32],
    k: usize,
    exclude: &[u32],
    items: &mut [u32],
    out_scores: &mut [f32],
) -> usize {
    check_outputs("topk", k, scores.len(), items.len(), out_scores.len());
    let mut sel = TopK::new(k);
    sel.push_block_isa(isa, 0, scores, exclude);
    sel.finish(items, out_scores)
}

/// Top-k of `scores` (ids `0..scores.len()`), skipping the ids in `exclude` (sorted
/// ascending) and NaN scores. Writes the best `min(k, eligible)` items and their scores, best
/// first, and returns their number. Allocates the selector; use [`TopK`] to reuse one.
///
/// # Panics
/// If `exclude` is not sorted ascending, if `scores.len()` exceeds `2^32`, or if `items` or
/// `out_scores` is shorter than `min(k, scores.len())`.
#[inline]
pub fn topk(
    scores: &[f32],
    k: usize,
    exclude: &[u32],
    items: &mut [u32],
    out_scores: &mut [f32],
) -> usize {
    topk_isa(Isa::detect(), scores, k, exclude, items, out_scores)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{AWKWARD_SIZES, Rng};
    use alloc::vec;

    /// Runs the reference and returns (items, scores).
    fn reference(scores: &[f32], k: usize, exclude: &[u32]) -> (Vec<u32>, Vec<f32>) {
        let mut items = vec![u32::MAX; k.min(scores.len())];
        let mut out = vec![f32::NAN; k.min(scores.len())];
        let n = topk_ref(scores, k, exclude, &mut items, &mut out);
        items.truncate(n);
        out.truncate(n);
        (items, out)
    }

    /// Runs `topk_isa` and returns (items, scores).
    fn selected(isa: Isa, scores: &[f32], k: usize, exclude: &[u32]) -> (Vec<u32>, Vec<f32>) {
        let mut items = vec![u32::MAX; k.min(scores.len())];
        let mut out = vec![f32::NAN; k.min(scores.len())];
        let n = topk_isa(isa, scores, k, exclude, &mut items, &mut out);
        items.truncate(n);
        out.truncate(n);
        (items, out)
    }

    #[track_caller]
    fn assert_same(ctx: &str, got: &(Vec<u32>, Vec<f32>), want: &(Vec<u32>, Vec<f32>)) {
        // Exact: same items in the same order, bit-identical scores.
        assert_eq!(got.0, want.0, "{ctx}: items");
        let gb: Vec<u32> = got.1.iter().map(|v| v.to_bits()).collect();
        let wb: Vec<u32> = want.1.iter().map(|v| v.to_bits()).collect();
        assert_eq!(gb, wb, "{ctx}: scores");
    }

    /// Scores with many exact ties, a few NaNs and infinities, on a coarse grid.
    fn tricky_scores(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| match rng.below(20) {
                0 => f32::NAN,
                1 => f32::NEG_INFINITY,
                2 => f32::INFINITY,
                3 => -0.0,
                4 => 0.0,
                _ => (rng.below(9) as f32 - 4.0) * 0.5,
            })
            .collect()
    }

    fn random_exclude(rng: &mut Rng, n: usize, count: usize) -> Vec<u32> {
        let mut ex: Vec<u32> = (0..count).map(|_| rng.below(n.max(1)) as u32).collect();
        ex.sort_unstable();
        ex.dedup();
        ex
    }

    fn check_topk(isa: Isa) {
        let mut rng = Rng::new(51);
        let sizes = AWKWARD_SIZES.iter().copied().chain([0, 1000, 4099]);
        for n in sizes {
            for kind in 0..3 {
                let scores = match kind {
                    0 => rng.normal_vec(n, 1.0),
                    1 => tricky_scores(&mut rng, n),
                    // Increasing scores: the threshold rises on every item (worst case).
                    _ => (0..n).map(|i| i as f32).collect(),
                };
                for k in [0, 1, 3, 10, n.saturating_sub(1), n, n + 5] {
                    for ex_count in [0, 5, n / 2] {
                        let exclude = random_exclude(&mut rng, n, ex_count);
                        let want = reference(&scores, k, &exclude);
                        let got = selected(isa, &scores, k, &exclude);
                        assert_same(
                            &alloc::format!("topk {isa} n={n} kind={kind} k={k} ex={ex_count}"),
                            &got,
                            &want,
                        );
                    }
                }
            }
        }
    }
    crate::isa_tests!(topk, check_topk);

    /// Blocks offered in shuffled order to several selectors, merged, against the reference.
    fn check_blocks_and_merge(isa: Isa) {
        let mut rng = Rng::new(52);
        for (n, block) in [(1000, 64), (777, 33), (4099, 257), (50, 7), (300, 1)] {
            for kind in 0..2 {
                let scores = if kind == 0 {
                    rng.normal_vec(n, 1.0)
                } else {
                    tricky_scores(&mut rng, n)
                };
                let exclude = random_exclude(&mut rng, n, 40);
                for k in [1, 10, 100, n] {
                    let want = reference(&scores, k, &exclude);
                    let mut starts: Vec<usize> = (0..n).step_by(block).collect();
                    // Fisher-Yates shuffle of the block order.
                    for i in (1..starts.len()).rev() {
                        starts.swap(i, rng.below(i + 1));
                    }
                    let mut parts = [TopK::new(k), TopK::new(k), TopK::new(k)];
                    for (b, &start) in starts.iter().enumerate() {
                        let end = (start + block).min(n);
                        parts[b % 3].push_block_isa(
                            isa,
                            start as u32,
                            &scores[start..end],
                            &exclude,
                        );
                    }
                    let [mut a, b, c] = parts;
                    a.merge(&b);
                    a.merge(&c);
                    assert_eq!(a.len(), want.0.len());
                    let mut items = vec![0; k];
                    let mut out = vec![0.0; k];
                    let m = a.finish(&mut items, &mut out);
                    items.truncate(m);
                    out.truncate(m);
                    assert_same(
                        &alloc::format!("blocks {isa} n={n} block={block} kind={kind} k={k}"),
                        &(items, out),
                        &want,
                    );
                    assert!(a.is_empty(), "finish empties the selector");
                }
            }
        }
    }
    crate::isa_tests!(topk_blocks, check_blocks_and_merge);

    /// Bounded offers: bounds at or above the exact scores (loose, tight, some equal to the
    /// score, ties on the grid) give exactly the reference top-k; `rescore` never sees an
    /// excluded id and, with tight bounds, runs far less often than once per item.
    fn check_bounded(isa: Isa) {
        let mut rng = Rng::new(54);
        for n in [0, 1, 7, 33, 300, 4099] {
            for kind in 0..3 {
                let scores: Vec<f32> = match kind {
                    0 => rng.normal_vec(n, 1.0),
                    1 => (0..n).map(|_| (rng.below(9) as f32 - 4.0) * 0.5).collect(),
                    _ => (0..n).map(|i| i as f32).collect(),
                };
                for slack in [0.0f32, 0.01, 0.5] {
                    let upper: Vec<f32> = scores
                        .iter()
                        .map(|&v| v + slack * rng.uniform(0.0, 1.0))
                        .collect();
                    for k in [1, 10, n + 3] {
                        let exclude = random_exclude(&mut rng, n, n / 10);
                        let want = reference(&scores, k, &exclude);
                        let mut sel = TopK::new(k);
                        let mut calls = 0usize;
                        for start in (0..n).step_by(64) {
                            let end = (start + 64).min(n);
                            sel.push_block_bounded_isa(
                                isa,
                                start as u32,
                                &upper[start..end],
                                &exclude,
                                |id| {
                                    calls += 1;
                                    assert!(exclude.binary_search(&id).is_err(), "excluded {id}");
                                    scores[id as usize]
                                },
                            );
                        }
                        let mut items = vec![0; k];
                        let mut out = vec![0.0; k];
                        let m = sel.finish(&mut items, &mut out);
                        items.truncate(m);
                        out.truncate(m);
                        let ctx = alloc::format!("bounded {isa} n={n} kind={kind} slack={slack}");
                        assert_same(&alloc::format!("{ctx} k={k}"), &(items, out), &want);
                        if kind == 0 && slack == 0.0 && k == 10 && n >= 300 {
                            assert!(calls < n / 4, "{ctx}: {calls} re-scorings of {n}");
                        }
                    }
                }
            }
        }
    }
    crate::isa_tests!(topk_bounded, check_bounded);

    #[test]
    fn ties_nan_inf_and_order() {
        let s = [
            1.0,
            f32::NAN,
            2.0,
            1.0,
            f32::NEG_INFINITY,
            2.0,
            -0.0,
            0.0,
            f32::NAN,
        ];
        let mut items = [0u32; 9];
        let mut out = [0.0f32; 9];
        let n = topk(&s, 9, &[], &mut items, &mut out);
        assert_eq!(n, 7, "two NaNs are never selected");
        assert_eq!(&items[..n], &[2, 5, 0, 3, 6, 7, 4]);
        assert_eq!(out[..n], [2.0, 2.0, 1.0, 1.0, -0.0, 0.0, f32::NEG_INFINITY]);
        // k = 3 cuts inside a tie: the smaller id wins.
        let n = topk(&s, 3, &[], &mut items, &mut out);
        assert_eq!(&items[..n], &[2, 5, 0]);
        // Exclusions.
        let n = topk(&s, 3, &[0, 5], &mut items, &mut out);
        assert_eq!(&items[..n], &[2, 3, 6]);
        // Everything excluded.
        let all: Vec<u32> = (0..9).collect();
        assert_eq!(topk(&s, 3, &all, &mut items, &mut out), 0);
        // All NaN.
        assert_eq!(topk(&[f32::NAN; 40], 3, &[], &mut items, &mut out), 0);
        // k = 0 and empty input.
        assert_eq!(topk(&s, 0, &[], &mut [], &mut []), 0);
        assert_eq!(topk(&[], 5, &[], &mut [], &mut []), 0);
    }

    #[test]
    fn threshold_and_reuse() {
        let mut sel = TopK::new(3);
        assert_eq!(sel.threshold(), f32::NEG_INFINITY);
        sel.push_block(10, &[5.0, 1.0], &[]);
        assert_eq!(sel.threshold(), f32::NEG_INFINITY, "fewer than k held");
        sel.push_block(0, &[3.0, 4.0, 0.5], &[1]);
        // Held: 5.0 (id 10), 3.0 (id 0), 1.0 (id 11); id 1 excluded.
        assert_eq!(sel.len(), 3);
        assert_eq!(sel.threshold(), 1.0);
        let mut items = [0u32; 3];
        let mut out = [0.0f32; 3];
        assert_eq!(sel.finish(&mut items, &mut out), 3);
        assert_eq!(items, [10, 0, 11]);
        assert_eq!(out, [5.0, 3.0, 1.0]);
        assert_eq!(TopK::new(0).threshold(), f32::INFINITY);

        // Reuse with the same k does not reallocate.
        let cap = sel.heap.capacity();
        let ptr = sel.heap.as_ptr();
        let mut rng = Rng::new(53);
        for _ in 0..5 {
            sel.reset(3);
            sel.push_block(0, &rng.normal_vec(500, 1.0), &[]);
            sel.finish(&mut items, &mut out);
        }
        assert_eq!((sel.heap.capacity(), sel.heap.as_ptr()), (cap, ptr));
    }

    #[test]
    #[should_panic(expected = "TopK::push_block: exclude (3 ids) is not sorted ascending")]
    fn rejects_unsorted_exclude() {
        TopK::new(2).push_block(0, &[1.0, 2.0], &[3, 1, 2]);
    }

    #[test]
    #[should_panic(expected = "topk: items has 2 and out_scores 5 slots, expected at least")]
    fn rejects_short_outputs() {
        topk(&[1.0, 2.0, 3.0], 3, &[], &mut [0; 2], &mut [0.0; 5]);
    }

    #[test]
    #[should_panic(expected = "exceed u32")]
    fn rejects_id_overflow() {
        TopK::new(2).push_block(u32::MAX, &[1.0, 2.0], &[]);
    }
}
