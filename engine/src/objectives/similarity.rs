//! Item similarity for the multi-objective returns (`spec/thesis-models.md` §1), shared by the
//! served architectures and the trainer.
//!
//! Every quantity is computed from a table of L2-normalised item vectors `ê_i`:
//! `Sim(S)` of a multiset `S = (s_1..s_m)` is the mean pairwise cosine
//! `2/(m(m−1)) · Σ_{p<q} ê_{s_p}·ê_{s_q}` (1 for fewer than two items), and `dis(S) = 1 − Sim(S)`.
//! [`SimAccumulator`] keeps `u = Σ_p ê_{s_p}` in f64, so that a growing multiset's `Sim` costs
//! O(d) per item: `Σ_{p<q} cos = (|u|² − m)/2`.

use crate::weights::Tensor;
use alloc::vec;
use alloc::vec::Vec;

/// Norms below this are treated as this (the zero padding row stays zero).
pub const MIN_NORM: f64 = 1e-8;

/// A table of normalised item rows that a [`SimAccumulator`] reads.
pub trait SimilarityRows {
    /// Row width.
    fn dim(&self) -> usize;
    /// Adds the normalised row of `item` to `acc` (`[dim]`).
    fn add_row(&self, item: u32, acc: &mut [f64]);
}

/// Normalised rows stored as f32, `[n_items, dim]` row-major (the engine's storage).
#[derive(Clone, Debug, PartialEq)]
pub struct NormalizedRows {
    dim: usize,
    rows: Vec<f32>,
}

impl NormalizedRows {
    /// Normalises every row of `table` (`[n, dim]`): `e / max(|e|, 1e-8)`, computed in f64.
    pub fn new(table: &[f32], dim: usize) -> Self {
        let mut rows = table.to_vec();
        if dim > 0 {
            for row in rows.chunks_exact_mut(dim) {
                let norm: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
                let norm = libm::sqrt(norm).max(MIN_NORM);
                for v in row {
                    *v = (f64::from(*v) / norm) as f32;
                }
            }
        }
        NormalizedRows { dim, rows }
    }

    /// Rows already normalised (e.g. a checkpoint's stored similarity table), used as given.
    pub fn from_normalized(rows: Vec<f32>, dim: usize) -> Self {
        NormalizedRows { dim, rows }
    }

    /// The rows, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.rows
    }
}

impl SimilarityRows for NormalizedRows {
    fn dim(&self) -> usize {
        self.dim
    }

    fn add_row(&self, item: u32, acc: &mut [f64]) {
        let d = self.dim;
        let row = &self.rows[item as usize * d..(item as usize + 1) * d];
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += f64::from(v);
        }
    }
}

/// A 2-D tensor `[n_items, dim]` of rows stored normalised (a checkpoint's similarity table).
impl SimilarityRows for Tensor {
    fn dim(&self) -> usize {
        self.shape().get(1).copied().unwrap_or(0)
    }

    fn add_row(&self, item: u32, acc: &mut [f64]) {
        let d = SimilarityRows::dim(self);
        let row = &self.as_slice()[item as usize * d..(item as usize + 1) * d];
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += f64::from(v);
        }
    }
}

/// Running `Sim` of a growing multiset: push items one at a time (O(d) each). The padding id 0
/// is ignored.
#[derive(Clone, Debug, PartialEq)]
pub struct SimAccumulator {
    u: Vec<f64>,
    m: usize,
}

impl SimAccumulator {
    /// An empty set of rows of width `dim`.
    pub fn new(dim: usize) -> Self {
        SimAccumulator {
            u: vec![0.0; dim],
            m: 0,
        }
    }

    /// Adds `item` from `rows` (padding id 0 is ignored).
    pub fn push(&mut self, rows: &(impl SimilarityRows + ?Sized), item: u32) {
        if item == 0 {
            return;
        }
        rows.add_row(item, &mut self.u);
        self.m += 1;
    }

    /// Adds every item of `items`.
    pub fn extend(&mut self, rows: &(impl SimilarityRows + ?Sized), items: &[u32]) {
        for &i in items {
            self.push(rows, i);
        }
    }

    /// Width of the rows.
    pub fn dim(&self) -> usize {
        self.u.len()
    }

    /// The running sum of the rows and the number of items (what a saved session keeps).
    pub fn parts(&self) -> (&[f64], usize) {
        (&self.u, self.m)
    }

    /// The accumulator of [`Self::parts`].
    pub fn from_parts(u: Vec<f64>, m: usize) -> Self {
        SimAccumulator { u, m }
    }

    /// Number of (non-padding) items pushed.
    pub fn len(&self) -> usize {
        self.m
    }

    /// Whether no item was pushed.
    pub fn is_empty(&self) -> bool {
        self.m == 0
    }

    /// `Sim` of the items pushed so far (`1` for zero or one item).
    pub fn sim(&self) -> f64 {
        if self.m < 2 {
            return 1.0;
        }
        let m = self.m as f64;
        let norm2: f64 = self.u.iter().map(|v| v * v).sum();
        (norm2 - m) / (m * (m - 1.0))
    }

    /// `dis = 1 − Sim` of the items pushed so far (0 for fewer than two).
    pub fn dis(&self) -> f64 {
        1.0 - self.sim()
    }

    /// Empties the set.
    pub fn clear(&mut self) {
        self.u.fill(0.0);
        self.m = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_similarities_match_the_specification() {
        // e1=(1,0), e2=(0,1), e3=(1,1), e4=(−1,0), normalised.
        let rows = NormalizedRows::new(&[0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, -1.0, 0.0], 2);
        let mut acc = SimAccumulator::new(2);
        // Published to 6 decimals.
        for (i, want) in [1.0, 0.0, 0.471405, -0.048816].into_iter().enumerate() {
            acc.push(&rows, i as u32 + 1);
            assert!((acc.sim() - want).abs() < 5e-7, "{i}: {}", acc.sim());
            assert!((acc.dis() - (1.0 - want)).abs() < 5e-7);
        }
        acc.push(&rows, 0);
        assert_eq!(acc.len(), 4);
        acc.clear();
        assert!(acc.is_empty() && acc.sim() == 1.0 && acc.dis() == 0.0);
    }
}
