//! PDiT (thesis Ch.8): the personalised diffusion transformer's data (text latents of items,
//! histories and prompts). Serving and the network are the engine's (`seqrec_engine::pdit`).

pub mod data;

pub use data::{PditData, PditExample};
