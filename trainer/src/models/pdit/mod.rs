//! PDiT (thesis Ch.8): the personalised diffusion transformer's data (text latents of items,
//! histories and prompts), its trainable network ([`PditModel`], built from [`blocks`], with
//! hand-derived backward passes) and its training. Serving is the engine's
//! (`seqrec_engine::pdit`), which loads the checkpoints written here.

pub mod attr;
pub mod blocks;
pub mod data;
pub mod dreamrec;
pub mod eval;
pub mod model;
pub mod train;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod train_tests;

pub use data::{PditData, PditExample};
pub use model::{PditBatch, PditCache, PditModel};
