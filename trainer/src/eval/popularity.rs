//! Training popularity: the most-popular baseline scorer and the long-tail item set.

use super::{Scorer, ScorerError, SharedScorer};
use crate::data::Split;

/// The long-tail set `I_nov` (`spec/thesis-models.md` §1): sort the catalog `1..n_items` by
/// training count, descending, ties by id ascending; the first `⌈0.1·N⌉` items are popular,
/// the rest (items never seen in training included) are long tail. Returns a mask of length
/// `counts.len()`; the padding id 0 is never long tail.
pub fn long_tail(counts: &[u64]) -> Vec<bool> {
    let n = counts.len().saturating_sub(1);
    let mut ids: Vec<u32> = (1..counts.len() as u32).collect();
    ids.sort_by(|&a, &b| counts[b as usize].cmp(&counts[a as usize]).then(a.cmp(&b)));
    let popular = n.div_ceil(10);
    let mut mask = vec![false; counts.len()];
    for &i in &ids[popular..] {
        mask[i as usize] = true;
    }
    mask
}

/// Scores every item by its number of training interactions (the padding id gets `-inf`).
/// With the ranking's tie rule, equally popular items are ordered by id.
#[derive(Clone, Debug)]
pub struct Popularity {
    scores: Vec<f32>,
}

impl Popularity {
    /// The baseline for `split`'s training part ([`Split::item_counts`]).
    pub fn from_split(split: &Split) -> Self {
        Popularity::from_counts(&split.item_counts())
    }

    /// The baseline for given counts per item id.
    pub fn from_counts(counts: &[u64]) -> Self {
        let mut scores: Vec<f32> = counts.iter().map(|&c| c as f32).collect();
        if let Some(pad) = scores.first_mut() {
            *pad = f32::NEG_INFINITY;
        }
        Popularity { scores }
    }

    /// The scores, indexed by item id.
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    fn fill(&self, out: &mut [f32]) -> Result<(), ScorerError> {
        if out.len() != self.scores.len() {
            return Err(format!(
                "popularity baseline has {} item ids, the evaluation {}",
                self.scores.len(),
                out.len()
            )
            .into());
        }
        out.copy_from_slice(&self.scores);
        Ok(())
    }
}

impl Scorer for Popularity {
    fn score(&mut self, _: &[u32], _: Option<u32>, out: &mut [f32]) -> Result<(), ScorerError> {
        self.fill(out)
    }
}

impl SharedScorer for Popularity {
    fn score_shared(&self, _: &[u32], _: Option<u32>, out: &mut [f32]) -> Result<(), ScorerError> {
        self.fill(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_tail_is_the_bottom_ninety_percent_with_id_ties() {
        // N = 11 items → ⌈1.1⌉ = 2 popular: item 5 (count 9), then item 2 beats item 7 on
        // the tie at count 4 by its smaller id.
        let mut counts = vec![0u64; 12];
        counts[5] = 9;
        counts[2] = 4;
        counts[7] = 4;
        counts[1] = 1;
        let mask = long_tail(&counts);
        let tail: Vec<usize> = (0..12).filter(|&i| mask[i]).collect();
        assert_eq!(tail, [1, 3, 4, 6, 7, 8, 9, 10, 11]);
        // N = 10 → 1 popular item; unseen items are long tail.
        let mask = long_tail(&[0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(mask.iter().filter(|&&t| t).count(), 9);
        assert!(!mask[3] && !mask[0]);
    }

    #[test]
    fn popularity_scores() {
        let mut p = Popularity::from_counts(&[7, 2, 0, 5]);
        let mut out = vec![0.0; 4];
        p.score(&[1], None, &mut out).unwrap();
        assert_eq!(out, [f32::NEG_INFINITY, 2.0, 0.0, 5.0]);
        let e = p.score(&[1], None, &mut [0.0; 3]).unwrap_err().to_string();
        assert!(e.contains("4 item ids") && e.contains("3"), "{e}");
    }
}
