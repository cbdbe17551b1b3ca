//! Trainable versions of the engine's architectures, assembled from the blocks in
//! [`crate::nn`]. Each keeps RecBole's tensor names, so [`TrainModel::to_safetensors`]
//! writes a checkpoint the engine loads unchanged, and its forward computes what the engine
//! computes for the same weights (tested per model).
//!
//! Two training styles, chosen by the architecture:
//! - [`TrainStyle::AllPositions`] (SASRec, GRU4Rec): the output at position `t` of a
//!   left-aligned window depends only on positions `0..=t`, exactly as the engine reads a
//!   history of `t + 1` items, so one forward over a window trains every position that carries
//!   a target (next-item prediction at each step).
//! - [`TrainStyle::LastPosition`] (NextItNet, Caser): the engine reads a right-padded window
//!   of exactly `L` rows at its last row (NextItNet) or as a whole (Caser), so each training
//!   example is one such window and one output (RecBole's data augmentation).
//!
//! The families built on these backbones have a module each: the RL heads ([`rl`]), the
//! Decision Transformers ([`dt`]), the hierarchical session models ([`hdt`]) and the
//! two-tower transfer model over item texts ([`transrec`]).

pub mod caser;
pub mod dt;
pub mod gru4rec;
pub mod hdt;
pub mod nextitnet;
pub mod pdit;
pub mod rl;
pub mod sasrec;
pub mod transrec;

#[cfg(test)]
mod grad_tests;

use crate::nn::{Module, Param, Rng};
use seqrec_engine::Config;

pub use caser::{CaserConfig, CaserModel};
pub use gru4rec::{Gru4RecConfig, Gru4RecModel};
pub use nextitnet::{NextItNetConfig, NextItNetModel};
pub use sasrec::{SasRecConfig, SasRecModel};

/// How an architecture is trained (see the module docs).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TrainStyle {
    /// One window, a loss at every position that has a target.
    AllPositions,
    /// One right-padded window of exactly `max_len` rows per example, one output.
    LastPosition,
}

/// A batch of windows. Every row has `len` ids, right-padded with 0.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// Rows (windows).
    pub n: usize,
    /// Window length.
    pub len: usize,
    /// Ids, `[n, len]`, right-padded with 0.
    pub items: Vec<u32>,
    /// Real ids per row (`1..=len`).
    pub lens: Vec<usize>,
    /// User id per row (models with a user embedding).
    pub users: Vec<u32>,
    /// `(row, position)` of every output that carries a loss, in output order. For
    /// [`TrainStyle::LastPosition`] there is exactly one per row: `(r, lens[r] - 1)`.
    pub out_pos: Vec<(usize, usize)>,
    /// The target item of each output.
    pub targets: Vec<u32>,
}

/// A trainable architecture.
pub trait TrainModel: Module + Clone + Send + Sync {
    /// What [`TrainModel::forward`] keeps for the backward pass.
    type Cache: Send;

    /// Architecture name as the engine knows it (`sasrec`, ...).
    fn arch(&self) -> &'static str;
    /// How batches are built for it.
    fn style(&self) -> TrainStyle;
    /// Window length `MAX_ITEM_LIST_LENGTH`.
    fn max_len(&self) -> usize;
    /// Width of the user vector (= item embedding width).
    fn dim(&self) -> usize;
    /// User vectors `[batch.out_pos.len(), dim]` for the outputs of `batch`; dropout is active
    /// when `rng` is given.
    fn forward(&self, batch: &Batch, rng: Option<&mut Rng>) -> (Vec<f32>, Self::Cache);
    /// Adds every parameter gradient for `d_h` (`[batch.out_pos.len(), dim]`).
    fn backward(&mut self, cache: &Self::Cache, d_h: &[f32]);
    /// The item embedding `item_embedding.weight`, which also scores the catalog.
    fn item_table_mut(&mut self) -> &mut Param;
    /// The configuration the engine needs (`seqrec.config`).
    fn engine_config(&self) -> Config;

    /// Adds the gradient of the architecture's own regularisation term (RecBole's
    /// `reg_weight` losses of NextItNet and Caser) into the parameter gradients and returns
    /// its value; 0 for architectures without one. Called once per step, beside the loss.
    fn regularize(&mut self) -> f64 {
        0.0
    }

    /// A safetensors file image of the model, config in the metadata.
    fn to_safetensors(&self) -> seqrec_engine::Result<Vec<u8>> {
        let json = self.engine_config().to_json();
        crate::nn::param::to_safetensors(
            &self.params(),
            &[(seqrec_engine::CONFIG_KEY, json.as_str())],
        )
    }
}

impl Batch {
    /// Panics unless `items` is `[n, len]`, every output lies inside it, and the window fits
    /// `max_len` (or, with `exact`, has exactly `max_len` rows): batches are built by the
    /// trainer, so a mismatch is a bug. (Forwards read no targets.)
    pub(crate) fn assert_shape(&self, arch: &str, max_len: usize, exact: bool) {
        let (n, len) = (self.n, self.len);
        assert!(
            if exact {
                len == max_len
            } else {
                len <= max_len
            },
            "{arch}: window of {len} rows, the model needs {} {max_len}",
            if exact { "exactly" } else { "at most" }
        );
        assert_eq!(
            self.items.len(),
            n * len,
            "{arch}: batch has {} ids for {n} rows of {len}",
            self.items.len()
        );
        if let Some(&(r, t)) = self.out_pos.iter().find(|&&(r, t)| r >= n || t >= len) {
            panic!("{arch}: output ({r}, {t}) is outside the [{n}, {len}] batch");
        }
    }

    /// Row `r·len + t` of every output `(r, t)`: where it sits in `[n·len, _]` activations.
    pub(crate) fn out_rows(&self) -> Vec<usize> {
        self.out_pos
            .iter()
            .map(|&(r, t)| r * self.len + t)
            .collect()
    }
}

/// Rows `rows` of `x` (`[_, width]`), stacked into `[rows.len(), width]`.
pub(crate) fn gather_rows(x: &[f32], width: usize, rows: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * width);
    for &r in rows {
        out.extend_from_slice(&x[r * width..(r + 1) * width]);
    }
    out
}

/// The backward of [`gather_rows`]: a `[n, width]` gradient of zeros with row `k` of `d` added
/// into row `rows[k]` (a row gathered twice collects both).
pub(crate) fn scatter_rows(d: &[f32], width: usize, n: usize, rows: &[usize]) -> Vec<f32> {
    assert_eq!(
        d.len(),
        rows.len() * width,
        "backward: gradient has {} values, expected outputs·dim = {}·{width}",
        d.len(),
        rows.len()
    );
    let mut out = vec![0.0f32; n * width];
    for (&r, g) in rows.iter().zip(d.chunks_exact(width.max(1))) {
        for (a, b) in out[r * width..(r + 1) * width].iter_mut().zip(g) {
            *a += b;
        }
    }
    out
}

/// RecBole's `RegLoss` term for one tensor, `weight·‖W‖₂` (the Frobenius norm, not squared):
/// adds its gradient `weight·W/‖W‖` (0 at `W = 0`) and returns its value.
pub(crate) fn norm_penalty(p: &mut Param, weight: f32) -> f64 {
    let norm = p
        .value
        .iter()
        .map(|&v| v as f64 * v as f64)
        .sum::<f64>()
        .sqrt();
    if weight == 0.0 || norm == 0.0 {
        return 0.0;
    }
    let k = weight as f64 / norm;
    for (g, &v) in p.grad.iter_mut().zip(&p.value) {
        *g += (k * v as f64) as f32;
    }
    weight as f64 * norm
}
