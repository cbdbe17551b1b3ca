//! PDiT (thesis Ch.8): the personalised diffusion transformer's data (text latents of items,
//! histories and prompts), its trainable network ([`PditModel`], built from [`blocks`], with
//! hand-derived backward passes) and its training. Serving is the engine's
//! (`seqrec_engine::pdit`), which loads the checkpoints written here.

pub mod blocks;
pub mod data;
pub mod model;

#[cfg(test)]
mod tests;

pub use data::{PditData, PditExample};
pub use model::{PditBatch, PditCache, PditModel};
