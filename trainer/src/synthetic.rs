//! A seeded synthetic interaction log for `seqrec demo` and for tests, with a documented
//! generative process that gives a sequential model something to learn beyond popularity:
//!
//! 1. **Latent groups.** Items `1..n_items` are split into `n_groups` groups of equal size
//!    (item `i` belongs to group `(i - 1) % n_groups`).
//! 2. **Popularity long tail.** Within the catalog, item `i` has weight `1 / rank^zipf` for a
//!    random rank permutation, so a few items are very popular and most are rare.
//! 3. **User tastes.** Each user prefers `favourites` groups (drawn at random); a session-free
//!    sequence of `min_len..=max_len` events is generated per user.
//! 4. **Sequential transitions.** Each item has `successors` fixed follow-up items in its own
//!    group. With probability `p_follow` the next event is one of the current item's
//!    successors (uniformly); otherwise a group is drawn (a favourite with probability
//!    `p_favourite`, else uniform) and an item from it by popularity.
//!
//! A most-popular recommender captures step 2 only; a sequence model can learn step 4 (and
//! step 3 from the history), so it should beat popularity clearly.

use crate::nn::Rng;

/// Parameters of the generative process (see the module docs).
#[derive(Clone, Debug)]
pub struct SyntheticConfig {
    /// Users (sequences).
    pub n_users: usize,
    /// Catalog size including the padding id 0.
    pub n_items: usize,
    /// Latent item groups.
    pub n_groups: usize,
    /// Favourite groups per user.
    pub favourites: usize,
    /// Follow-up items per item.
    pub successors: usize,
    /// Probability that the next event follows the current item's successor list.
    pub p_follow: f64,
    /// Probability that a non-follow event comes from a favourite group.
    pub p_favourite: f64,
    /// Zipf exponent of item popularity.
    pub zipf: f64,
    /// Shortest sequence.
    pub min_len: usize,
    /// Longest sequence.
    pub max_len: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            n_users: 1200,
            n_items: 1001,
            n_groups: 25,
            favourites: 3,
            successors: 3,
            p_follow: 0.5,
            p_favourite: 0.8,
            zipf: 1.0,
            min_len: 12,
            max_len: 40,
            seed: 2026,
        }
    }
}

/// Draws an index from unnormalised cumulative weights.
fn draw(rng: &mut Rng, cumulative: &[f64]) -> usize {
    let total = *cumulative.last().expect("non-empty");
    let x = rng.next_f64() * total;
    cumulative
        .partition_point(|&c| c <= x)
        .min(cumulative.len() - 1)
}

/// Generates one item sequence per user (ids `1..n_items`, oldest first).
pub fn generate(cfg: &SyntheticConfig) -> Vec<Vec<u32>> {
    assert!(
        cfg.n_items > cfg.n_groups && cfg.n_groups > 0,
        "need more items than groups"
    );
    assert!(
        cfg.min_len >= 1 && cfg.max_len >= cfg.min_len,
        "bad length range"
    );
    let mut rng = Rng::new(cfg.seed);
    let n = cfg.n_items - 1;
    // Popularity: Zipf over a random rank permutation.
    let mut ranks: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        ranks.swap(i, rng.below(i + 1));
    }
    let weight = |item: usize| 1.0 / ((ranks[item - 1] + 1) as f64).powf(cfg.zipf);
    let groups: Vec<Vec<u32>> = (0..cfg.n_groups)
        .map(|g| {
            (1..=n)
                .filter(|i| (i - 1) % cfg.n_groups == g)
                .map(|i| i as u32)
                .collect()
        })
        .collect();
    let group_cum: Vec<Vec<f64>> = groups
        .iter()
        .map(|items| {
            let mut acc = 0.0;
            items
                .iter()
                .map(|&i| {
                    acc += weight(i as usize);
                    acc
                })
                .collect()
        })
        .collect();
    let successors: Vec<Vec<u32>> = (0..=n)
        .map(|i| {
            if i == 0 {
                return Vec::new();
            }
            let g = &groups[(i - 1) % cfg.n_groups];
            (0..cfg.successors).map(|_| g[rng.below(g.len())]).collect()
        })
        .collect();
    (0..cfg.n_users)
        .map(|_| {
            let favs: Vec<usize> = (0..cfg.favourites)
                .map(|_| rng.below(cfg.n_groups))
                .collect();
            let len = cfg.min_len + rng.below(cfg.max_len - cfg.min_len + 1);
            let mut seq: Vec<u32> = Vec::with_capacity(len);
            while seq.len() < len {
                let follow = seq.last().filter(|_| rng.next_f64() < cfg.p_follow);
                let item = match follow {
                    Some(&last) => {
                        let s = &successors[last as usize];
                        s[rng.below(s.len())]
                    }
                    None => {
                        let g = if rng.next_f64() < cfg.p_favourite {
                            favs[rng.below(favs.len())]
                        } else {
                            rng.below(cfg.n_groups)
                        };
                        groups[g][draw(&mut rng, &group_cum[g])]
                    }
                };
                seq.push(item);
            }
            seq
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_within_range() {
        let cfg = SyntheticConfig {
            n_users: 50,
            ..Default::default()
        };
        let a = generate(&cfg);
        assert_eq!(a, generate(&cfg), "same seed, same log");
        assert_ne!(
            a,
            generate(&SyntheticConfig {
                seed: 1,
                ..cfg.clone()
            })
        );
        assert_eq!(a.len(), 50);
        for s in &a {
            assert!((cfg.min_len..=cfg.max_len).contains(&s.len()));
            assert!(s.iter().all(|&i| i >= 1 && (i as usize) < cfg.n_items));
        }
    }

    #[test]
    fn has_a_long_tail_and_sequential_structure() {
        let cfg = SyntheticConfig::default();
        let log = generate(&cfg);
        let mut counts = vec![0usize; cfg.n_items];
        let mut same_group = 0usize;
        let mut pairs = 0usize;
        for s in &log {
            for w in s.windows(2) {
                pairs += 1;
                same_group += usize::from(
                    (w[0] - 1) as usize % cfg.n_groups == (w[1] - 1) as usize % cfg.n_groups,
                );
            }
            for &i in s {
                counts[i as usize] += 1;
            }
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let total: usize = counts.iter().sum();
        let top10: usize = counts[..cfg.n_items / 10].iter().sum();
        // Popular head: the top 10% of items take a large share of the events.
        assert!(
            top10 as f64 / total as f64 > 0.35,
            "top-10% share {}",
            top10 as f64 / total as f64
        );
        // Consecutive events share a group far more often than chance (1/25).
        assert!(
            same_group as f64 / pairs as f64 > 0.4,
            "same-group share {}",
            same_group as f64 / pairs as f64
        );
    }
}
