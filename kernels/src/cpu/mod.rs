//! CPU kernels: one module per op family. See the crate docs for the `_ref` / `_isa` / fast-path
//! convention every module follows.

pub mod activation;
pub mod conv;
pub mod gru;
pub mod convert;
pub mod embedding;
pub mod isa;
pub mod linear;
pub mod math;
pub mod matrix;
pub mod topk;
pub mod vector;
