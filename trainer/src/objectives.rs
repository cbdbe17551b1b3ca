//! Item similarity for the multi-objective rewards and returns (`spec/thesis-models.md` §1).
//!
//! The diversity, unexpectedness and serendipity quantities use a **fixed** item-embedding
//! table `E_div` — by default the item table of a plain cross-entropy baseline trained on the
//! same split and then frozen, so that returns never depend on the model being trained.
//! [`Similarity`] holds that table L2-normalised (`ê_i = e_i / max(|e_i|, 1e-8)`) and computes:
//!
//! - `cos(i, j) = ê_i · ê_j`;
//! - `Sim(S)`, the mean pairwise cosine of a multiset `S = (s_1..s_m)` (padding removed):
//!   `2/(m(m−1)) · Σ_{p<q} cos(s_p, s_q)` for `m ≥ 2`, and `1` for `m = 1`;
//! - `dis(S) = 1 − Sim(S)`;
//! - the prefix forms `Sim(s_1..s_t)` for every `t` in O(d) per step, from
//!   `Σ_{p<q} cos = (|u|² − m)/2` with `u = Σ_p ê_{s_p}`.
//!
//! The running sums are the engine's ([`SimAccumulator`]): [`Similarity`] implements its
//! [`SimilarityRows`] with rows kept in f64, so the trainer's rewards and returns (computed
//! with the engine's [`seqrec_engine::objectives::returns`]) are those of the f64 table, and
//! all sums run in f64.

use crate::error::{Error, Result};
use seqrec_engine::Model;
use seqrec_engine::objectives::similarity::MIN_NORM;
pub use seqrec_engine::objectives::similarity::{SimAccumulator, SimilarityRows};
use std::path::Path;

/// A frozen, row-normalised item-embedding table. See the module docs.
#[derive(Clone, Debug)]
pub struct Similarity {
    dim: usize,
    /// `[n_items, dim]`, each row `e_i / max(|e_i|, 1e-8)`.
    rows: Vec<f64>,
}

impl Similarity {
    /// Normalises `table` (`[n_items, dim]`, row-major; row 0 is the padding id).
    ///
    /// # Errors
    /// When `dim` is 0, the table is not a whole number of rows, or a value is not finite.
    pub fn new(table: &[f32], dim: usize) -> Result<Self> {
        if dim == 0 || table.len() % dim != 0 {
            return Err(Error::Invalid(format!(
                "item-embedding table of {} values is not a whole number of rows of width {dim}",
                table.len()
            )));
        }
        if let Some(i) = table.iter().position(|v| !v.is_finite()) {
            return Err(Error::Invalid(format!(
                "item-embedding table: value at item {} component {} is not finite",
                i / dim,
                i % dim
            )));
        }
        let mut rows = Vec::with_capacity(table.len());
        for row in table.chunks_exact(dim) {
            let norm = row
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>()
                .sqrt()
                .max(MIN_NORM);
            rows.extend(row.iter().map(|&v| f64::from(v) / norm));
        }
        Ok(Similarity { dim, rows })
    }

    /// The item table of a trained seqrec checkpoint (any architecture), read through the
    /// engine, so the file is checked exactly as serving would check it.
    ///
    /// # Errors
    /// When the file cannot be loaded as a model.
    pub fn from_model_file(path: &Path) -> Result<Self> {
        let model = Model::load(path).map_err(|source| Error::ModelFile {
            path: path.display().to_string(),
            source,
        })?;
        let emb = model.arch().item_embedding();
        Self::new(emb.table.as_slice(), emb.dim)
    }

    /// Number of rows (catalog size including the padding id 0).
    pub fn n_items(&self) -> usize {
        self.rows.len() / self.dim
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The normalised embedding of `item`.
    ///
    /// # Panics
    /// When `item` is outside the table.
    pub fn row(&self, item: u32) -> &[f64] {
        let i = item as usize;
        assert!(
            i < self.n_items(),
            "item {item} is outside the similarity table of {} rows",
            self.n_items()
        );
        &self.rows[i * self.dim..(i + 1) * self.dim]
    }

    /// `cos(a, b) = ê_a · ê_b`.
    pub fn cos(&self, a: u32, b: u32) -> f64 {
        self.row(a)
            .iter()
            .zip(self.row(b))
            .map(|(x, y)| x * y)
            .sum()
    }

    /// `Sim(S)` of `items` with padding ids (0) removed; `1` for one item. An empty set has no
    /// similarity and also gives `1` (the value of a single item), so callers never divide by
    /// zero; `dis` of it is 0.
    pub fn sim(&self, items: &[u32]) -> f64 {
        let mut acc = SimAccumulator::new(self.dim);
        acc.extend(self, items);
        acc.sim()
    }

    /// `dis(S) = 1 − Sim(S)`.
    pub fn dis(&self, items: &[u32]) -> f64 {
        1.0 - self.sim(items)
    }

    /// `Sim(s_1..s_t)` for every prefix `t = 1..=items.len()` (padding ids are skipped and
    /// repeat the previous value).
    pub fn prefix_sims(&self, items: &[u32]) -> Vec<f64> {
        let mut acc = SimAccumulator::new(self.dim);
        items
            .iter()
            .map(|&i| {
                acc.push(self, i);
                acc.sim()
            })
            .collect()
    }

    /// `dis(s_1..s_t)` for every prefix.
    pub fn prefix_dis(&self, items: &[u32]) -> Vec<f64> {
        self.prefix_sims(items)
            .into_iter()
            .map(|s| 1.0 - s)
            .collect()
    }
}

/// The f64 rows, read by the engine's [`SimAccumulator`].
impl SimilarityRows for Similarity {
    fn dim(&self) -> usize {
        self.dim
    }

    fn add_row(&self, item: u32, acc: &mut [f64]) {
        for (a, e) in acc.iter_mut().zip(self.row(item)) {
            *a += e;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the specification: e1=(1,0), e2=(0,1), e3=(1,1), e4=(−1,0).
    fn spec_table() -> Similarity {
        let table = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, -1.0, 0.0];
        Similarity::new(&table, 2).unwrap()
    }

    #[test]
    fn prefix_similarities_match_the_specification() {
        let t = spec_table();
        let sims = t.prefix_sims(&[1, 2, 3, 4]);
        // Published to 6 decimals.
        for (got, want) in sims.iter().zip([1.0, 0.0, 0.471405, -0.048816]) {
            assert!((got - want).abs() < 5e-7, "{sims:?}");
        }
        let dis = t.prefix_dis(&[1, 2, 3, 4]);
        for (got, want) in dis.iter().zip([0.0, 1.0, 0.528595, 1.048816]) {
            assert!((got - want).abs() < 5e-7, "{dis:?}");
        }
    }

    #[test]
    fn incremental_sim_equals_the_pairwise_definition() {
        let mut rng = crate::nn::Rng::new(3);
        let (n, d) = (30, 7);
        let table: Vec<f32> = (0..n * d).map(|_| rng.normal()).collect();
        let t = Similarity::new(&table, d).unwrap();
        let items: Vec<u32> = (0..12).map(|_| 1 + rng.below(n - 1) as u32).collect();
        let m = items.len();
        let mut pairs = 0.0;
        for p in 0..m {
            for q in p + 1..m {
                pairs += t.cos(items[p], items[q]);
            }
        }
        let direct = 2.0 * pairs / (m * (m - 1)) as f64;
        // Two summation orders of the same f64 terms.
        assert!((t.sim(&items) - direct).abs() < 1e-12);
        // Padding is removed, not counted.
        let mut padded = items.clone();
        padded.extend([0, 0]);
        assert!((t.sim(&padded) - direct).abs() < 1e-12);
        assert_eq!(t.sim(&[5]), 1.0);
        assert_eq!(t.dis(&[5]), 0.0);
    }

    #[test]
    fn bad_tables_are_rejected_with_the_reason() {
        let e = Similarity::new(&[1.0, 2.0, 3.0], 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("width 2"), "{e}");
        let e = Similarity::new(&[1.0, f32::NAN], 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("item 0 component 1"), "{e}");
    }
}
