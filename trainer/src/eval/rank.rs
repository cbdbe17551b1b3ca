//! Ranking one target: against the whole catalog, or against sampled negatives (the SASRec
//! paper's protocol), and the top of the full ranking.
//!
//! Order: the engine's total order on (score, id) — a higher score first and, on equal scores,
//! the smaller id first — so a constant scorer gets no credit: the target's rank counts the
//! items with a strictly higher score plus those with an equal score and a smaller id. The
//! padding id 0 is never ranked; NaN scores never beat anything, and a target with a NaN score
//! is not ranked at all.

use crate::nn::Rng;
use seqrec_kernels::cpu::topk::TopK;

/// Whether `(s, id)` comes before `(ts, target)` in the ranking order.
#[inline(always)]
fn before(s: f32, id: u32, ts: f32, target: u32) -> bool {
    s > ts || (s == ts && id < target)
}

/// 1-based rank of `target` among the catalog ids `1..scores.len()` minus `excluded`
/// (sorted ascending). `None` when the target is excluded or its score is NaN.
pub fn rank_full(scores: &[f32], target: u32, excluded: &[u32]) -> Option<u32> {
    let t = target as usize;
    let ts = *scores.get(t)?;
    if t == 0 || ts.is_nan() || excluded.binary_search(&target).is_ok() {
        return None;
    }
    // Branch-free counts the compiler vectorises: ids below the target win ties.
    let below = scores[1..t].iter().filter(|&&s| s >= ts).count();
    let above = scores[t + 1..].iter().filter(|&&s| s > ts).count();
    let mut better = below + above;
    let mut prev = None;
    for &e in excluded {
        // Skip repeats, the padding id and ids outside the catalog.
        if prev == Some(e) || e == 0 || e as usize >= scores.len() {
            continue;
        }
        prev = Some(e);
        if before(scores[e as usize], e, ts, target) {
            better -= 1;
        }
    }
    Some(better as u32 + 1)
}

/// 1-based rank of `target` among itself and `negatives`. `None` when its score is NaN.
pub fn rank_sampled(scores: &[f32], target: u32, negatives: &[u32]) -> Option<u32> {
    let ts = *scores.get(target as usize)?;
    if ts.is_nan() {
        return None;
    }
    let better = (negatives.iter())
        .filter(|&&n| before(scores[n as usize], n, ts, target))
        .count();
    Some(better as u32 + 1)
}

/// Draws up to `count` distinct negatives uniformly from the ids `1..n_items` that are not
/// in `forbidden` (sorted ascending); all of them, ascending, when there are no more than
/// `count`.
pub fn sample_negatives(
    n_items: usize,
    forbidden: &[u32],
    count: usize,
    rng: &mut Rng,
) -> Vec<u32> {
    let catalog = n_items.saturating_sub(1);
    let inside = forbidden
        .iter()
        .filter(|&&f| f >= 1 && (f as usize) < n_items)
        .count();
    let available = catalog.saturating_sub(inside);
    let allowed = |id: u32| forbidden.binary_search(&id).is_err();
    if available <= 2 * count {
        // Dense case: enumerate what is left, then a partial Fisher-Yates shuffle.
        let mut pool: Vec<u32> = (1..n_items as u32).filter(|&i| allowed(i)).collect();
        if pool.len() <= count {
            return pool;
        }
        for i in 0..count {
            let j = i + rng.below(pool.len() - i);
            pool.swap(i, j);
        }
        pool.truncate(count);
        return pool;
    }
    // Sparse case: rejection sampling; at least half the draws are accepted.
    let mut out: Vec<u32> = Vec::with_capacity(count);
    while out.len() < count {
        let id = 1 + rng.below(catalog) as u32;
        if allowed(id) && !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// The best `k` catalog ids (padding and `excluded` — sorted ascending — left out), best
/// first, written into `out` through the engine's top-k selector.
pub fn top_k(scores: &[f32], k: usize, excluded: &[u32], sel: &mut TopK, out: &mut Vec<u32>) {
    out.clear();
    if k == 0 || scores.len() < 2 {
        return;
    }
    sel.reset(k);
    sel.push_block(1, &scores[1..], excluded);
    let n = sel.len();
    out.resize(n, 0);
    let mut vals = vec![0.0f32; n];
    sel.finish(out, &mut vals);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: sort (score desc, id asc) over the allowed ids and find the target.
    fn rank_by_sort(scores: &[f32], target: u32, excluded: &[u32]) -> Option<u32> {
        let mut ids: Vec<u32> = (1..scores.len() as u32)
            .filter(|i| !excluded.contains(i) && !scores[*i as usize].is_nan())
            .collect();
        ids.sort_by(|&a, &b| {
            let (sa, sb) = (scores[a as usize], scores[b as usize]);
            sb.partial_cmp(&sa).unwrap().then(a.cmp(&b))
        });
        ids.iter().position(|&i| i == target).map(|p| p as u32 + 1)
    }

    #[test]
    fn constant_scorer_ranks_by_id() {
        let scores = vec![0.0f32; 8];
        assert_eq!(rank_full(&scores, 1, &[]), Some(1));
        assert_eq!(rank_full(&scores, 5, &[]), Some(5));
        // Excluding ids 2 and 3 (and a repeat, the padding id, an id past the catalog).
        assert_eq!(rank_full(&scores, 5, &[0, 2, 3, 3, 99]), Some(3));
        assert_eq!(rank_full(&scores, 5, &[5]), None);
        assert_eq!(rank_full(&scores, 0, &[]), None);
    }

    #[test]
    fn full_rank_matches_sorting() {
        let mut rng = Rng::new(11);
        for case in 0..200 {
            let n = 2 + rng.below(40);
            // Few distinct values, so ties are common.
            let mut scores: Vec<f32> = (0..n).map(|_| rng.below(5) as f32).collect();
            if case % 7 == 0 {
                scores[rng.below(n)] = f32::NAN;
            }
            let mut excl: Vec<u32> = (0..rng.below(4)).map(|_| rng.below(n) as u32).collect();
            excl.sort_unstable();
            let target = 1 + rng.below(n - 1) as u32;
            let want = if scores[target as usize].is_nan() {
                None
            } else {
                rank_by_sort(&scores, target, &excl)
            };
            assert_eq!(
                rank_full(&scores, target, &excl),
                want,
                "case {case}: {scores:?} {excl:?} {target}"
            );
        }
    }

    #[test]
    fn sampled_rank_and_nan() {
        let scores = [9.0, 1.0, 3.0, 3.0, 0.5, f32::NAN];
        // Target 3 (score 3): beaten by 2 (tie, smaller id), not by 4, 1, or the NaN item 5.
        assert_eq!(rank_sampled(&scores, 3, &[1, 2, 4, 5]), Some(2));
        assert_eq!(rank_sampled(&scores, 5, &[1]), None);
        assert_eq!(rank_full(&scores, 3, &[]), Some(2));
    }

    #[test]
    fn negatives_avoid_forbidden_and_repeat_by_seed() {
        for (n_items, count) in [(1000, 100), (250, 100), (150, 100), (60, 100)] {
            let forbidden: Vec<u32> = (1..n_items as u32).filter(|i| i % 3 == 0).collect();
            let a = sample_negatives(n_items, &forbidden, count, &mut Rng::new(5));
            let b = sample_negatives(n_items, &forbidden, count, &mut Rng::new(5));
            assert_eq!(a, b, "same seed, same negatives");
            let c = sample_negatives(n_items, &forbidden, count, &mut Rng::new(6));
            let available = (n_items - 1) - forbidden.len();
            assert_eq!(a.len(), count.min(available));
            if available > count {
                assert_ne!(a, c, "another seed, other negatives");
            }
            let mut s = a.clone();
            s.sort_unstable();
            s.dedup();
            assert_eq!(s.len(), a.len(), "distinct");
            assert!(
                a.iter()
                    .all(|&i| i >= 1 && (i as usize) < n_items && i % 3 != 0)
            );
        }
    }

    #[test]
    fn negatives_are_uniform() {
        // 10 allowed ids, 2 drawn per trial: each id should appear in 20% of trials.
        let forbidden: Vec<u32> = (11..=40).collect();
        let mut hits = [0usize; 41];
        let mut rng = Rng::new(3);
        let trials = 20_000;
        for _ in 0..trials {
            for i in sample_negatives(41, &forbidden, 2, &mut rng) {
                hits[i as usize] += 1;
            }
        }
        for (i, &h) in hits.iter().enumerate().take(11).skip(1) {
            let p = h as f64 / trials as f64;
            // Binomial sd = sqrt(0.2·0.8/20000) ≈ 0.0028: 0.015 is over 5 sd.
            assert!((p - 0.2).abs() < 0.015, "id {i}: frequency {p}");
        }
    }

    #[test]
    fn top_k_excludes_padding_and_history() {
        let scores = [100.0, 1.0, 5.0, 5.0, 3.0, f32::NAN];
        let mut sel = TopK::new(1);
        let mut out = Vec::new();
        top_k(&scores, 3, &[], &mut sel, &mut out);
        assert_eq!(out, [2, 3, 4]);
        top_k(&scores, 10, &[2], &mut sel, &mut out);
        assert_eq!(out, [3, 4, 1]);
    }
}
