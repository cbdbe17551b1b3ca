//! seqrec-engine: load sequential recommenders (SASRec, GRU4Rec, NextItNet, Caser, their RL
//! heads, the multi-objective and hierarchical Decision Transformers) from safetensors files
//! with RecBole's tensor names and score with them: full-catalog scores, top-k with exclusions,
//! candidate re-ranking, parallel batches and incremental sessions.
//!
//! Layers, from the bottom: [`weights`] and [`config`] read files; [`backend`] is the compute
//! trait and [`cpu`] its reference implementation; [`blocks`] hold the weights of the building
//! blocks; [`models`] are the architectures, one file each, registered by name and written
//! against the backend trait only; [`model`] is the public API ([`Model`], [`Query`],
//! [`Session`], [`Workspace`]) over any backend.
//!
//! The core is `no_std` + `alloc`; the `std` feature (on by default) adds memory-mapped
//! loading and multi-threaded batch scoring; the `text` feature adds [`text`], a BERT-family
//! sentence encoder (all-MiniLM-L6-v2) for content-based item representations.
//!
//! ```no_run
//! use seqrec_engine::{Model, Query};
//! let model = Model::load("model.safetensors")?;
//! let mut ws = model.new_workspace();
//! for rec in model.topk(&Query::new(&[12, 7, 99]), 10, &mut ws)? {
//!     println!("{} {:.4}", rec.item, rec.score);
//! }
//! # Ok::<(), seqrec_engine::Error>(())
//! ```
#![no_std]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod backend;
pub mod blocks;
pub mod codec;
pub mod config;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod error;
pub mod model;
pub mod models;
pub mod objectives;
pub mod pdit;
pub mod pth;
pub mod testing;
#[cfg(feature = "text")]
pub mod text;
pub mod weights;

pub use backend::Backend;
pub use config::{CONFIG_KEY, Config};
pub use cpu::Cpu;
#[cfg(feature = "cuda")]
pub use cuda::Cuda;
pub use error::{Error, Result};
pub use model::{
    BATCH_GROUP, Device, FeedbackOptions, LoadOptions, MAX_FEEDBACK_BATCH, MAX_FEEDBACK_BUFFER,
    Model, ModelInfo, Query, SESSION_FORMAT_VERSION, SESSION_MAGIC, Scored, Session, SessionState,
    Workspace, architectures, tensor_specs,
};
pub use objectives::{ObjectiveSpec, Objectives};
pub use weights::{DType, Tensor, TensorLoader, TensorSpec, WeightFile};
