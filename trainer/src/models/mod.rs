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

pub mod sasrec;

use crate::nn::{Module, Param, Rng};
use seqrec_engine::Config;

pub use sasrec::SasRecModel;

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

    /// A safetensors file image of the model, config in the metadata.
    fn to_safetensors(&self) -> seqrec_engine::Result<Vec<u8>> {
        let json = self.engine_config().to_json();
        crate::nn::param::to_safetensors(
            &self.params(),
            &[(seqrec_engine::CONFIG_KEY, json.as_str())],
        )
    }
}
