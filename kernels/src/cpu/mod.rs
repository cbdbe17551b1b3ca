//! CPU kernels: one module per op family. See the crate docs for the `_ref` / `_isa` / fast-path
//! convention every module follows.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod convert;
pub mod embedding;
pub mod gru;
pub mod isa;
pub mod linear;
pub mod math;
pub mod matrix;
pub mod norm;
pub mod score;
pub mod softmax;
pub mod topk;
pub mod vector;
