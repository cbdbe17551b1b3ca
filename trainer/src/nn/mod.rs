//! Differentiable building blocks, losses and optimizers for training without an autograd
//! framework: every block has a forward pass that keeps what its backward pass needs, and a
//! backward pass with hand-derived gradients, checked against finite differences.
//!
//! # Conventions
//!
//! - **Data**: activations are row-major `f32` slices `[rows, width]`; sequence blocks take
//!   `batch` sequences of `len` rows each (`rows = batch·len`, sequence-major). Shapes are
//!   passed explicitly. A shape or id that breaks a block's contract is a caller bug and
//!   panics with a message naming the block's tensor and both sizes (the data pipeline
//!   validates ids before they reach a block, as the engine does before its kernels).
//! - **Parameters**: a [`Param`] is a named tensor (`name` and `shape` as the checkpoint
//!   stores them, RecBole's names, e.g. `trm_encoder.layer.0.feed_forward.dense_1.weight`)
//!   with its `value` and `grad`. Blocks hold their `Param`s in public fields and implement
//!   [`Module`], which lists them in a fixed order; a model lists its blocks' lists.
//!   [`param::to_safetensors`] writes them as a file the engine loads unchanged;
//!   [`param::load_values`] reads a checkpoint back (fine-tuning).
//! - **Forward**: `forward(&self, input.., rng) -> (output, Cache)`. The cache struct
//!   (`LinearCache`, `SelfAttentionCache`, ...) owns copies of whatever the backward needs
//!   (inputs, probabilities, dropout masks); caches are independent of each other, so several
//!   forwards may be in flight before their backwards. `infer` (where present) is the forward
//!   without a cache. Training mode is `rng: Some(&mut Rng)`: dropout draws its masks from it
//!   (seeded, reproducible); `None` is evaluation, where dropout is the identity.
//! - **Backward**: `backward(&mut self, &cache, d_out) -> d_in`. It **adds** the parameter
//!   gradients into each `Param::grad` (so a tied table, used twice, collects both
//!   contributions, and gradients accumulate over micro-batches until
//!   [`param::zero_grads`]) and returns the gradient with respect to the input, which the
//!   caller passes to the previous block. The forward of every block computes what the engine
//!   computes for the same weights (tested against the engine's CPU backend).
//! - **Losses** ([`loss`]) take scores and return a [`loss::LossGrad`] (value and gradient);
//!   [`loss::full_softmax_loss`] and [`loss::sampled_loss`] also run the scoring product
//!   `h·Eᵀ` ([`score`]) forward and backward, adding into the item table's gradient.
//! - **Optimizers** ([`optim`]) update a parameter list in place from the gradients:
//!   `opt.step(&mut model.params_mut(), schedule.lr(step))`.
//!
//! A training step, for a model built from these blocks:
//!
//! ```text
//! let (h, cache) = model.forward(&batch, Some(&mut rng));
//! let (loss, dh) = loss::full_softmax_loss(&h, rows, &mut model.item_table, &targets, None);
//! model.backward(&cache, &dh);
//! optim::clip_grad_norm(&mut model.params_mut(), 5.0);
//! opt.step(&mut model.params_mut(), schedule.lr(step));
//! param::zero_grads(&mut model.params_mut());
//! ```
//!
//! Forwards use the seqrec-kernels fast paths (`linear`, `gemm` on strided views, `softmax`,
//! `layer_norm`, `gru_layer`, `causal_conv1d`, `caser_vertical`, activations, gathers);
//! backwards use `gemm`/`matmul` with transposed views and plain loops for element-wise work.
//! [`text`] is the trainable BERT sentence encoder (the engine's MiniLM text encoder with
//! backward passes, top-N fine-tuning and delta checkpoints over its model folder).
//! [`gradcheck`] is the finite-difference checker every block and loss is tested with; [`rng`]
//! is the seeded generator behind every random draw of a training run.

pub mod activation;
pub mod attention;
pub mod caser;
pub mod conv;
pub mod gradcheck;
pub mod gru;
pub mod linear;
pub mod loss;
pub mod norm;
pub mod optim;
pub mod param;
pub mod rng;
pub mod score;
pub mod text;

#[cfg(test)]
mod compose_tests;

pub use activation::Dropout;
pub use attention::{FeedForward, SelfAttention};
pub use caser::CaserConvs;
pub use conv::{CausalConv1d, NextItNetBlock};
pub use gru::Gru;
pub use linear::{Embedding, Linear};
pub use norm::LayerNorm;
pub use optim::{Adam, Decay, Optimizer, Schedule, Sgd};
pub use param::{Module, Param};
/// The seeded generator for initialisation, dropout masks and negative sampling.
pub use rng::Rng;
pub use seqrec_kernels::cpu::activation::Activation;
