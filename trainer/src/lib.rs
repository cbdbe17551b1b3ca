//! seqrec-trainer: the companion trainer of the seqrec engine and the `seqrec` command-line
//! tool.

pub mod cli;
pub mod data;
pub mod error;
pub mod eval;
pub mod learner;
pub mod models;
pub mod nn;
pub mod objectives;
pub mod online;
pub mod scorer;
pub mod session_scorer;
pub mod synthetic;
pub mod train;

pub use error::{Error, Result};
