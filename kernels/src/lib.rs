//! seqrec-kernels: the numeric kernels of the seqrec engine.
//!
//! Everything here works on plain row-major `f32` slices; shapes are passed explicitly and
//! checked with `assert!` (a violated shape contract is a caller bug, and the engine validates
//! every user-controlled input before it reaches a kernel).
//!
//! Each op family lives in one file under [`cpu`] and provides
//! - `<op>_ref`: a plain-loop scalar reference, the oracle for tests;
//! - `<op>_isa(isa, ..)`: the SIMD body written once with `pulp`, instantiated for the given [`Isa`];
//! - `<op>(..)`: the fast path, dispatched at run time to the best instruction set (and, where it
//!   pays, to the `gemm` crate under the `std` feature).
//!
//! The crate is `#![no_std]` + `alloc`. The `std` feature turns on `gemm` and `pulp`'s run-time
//! CPU detection; without it x86-64 detection goes through `cpuid` and linear algebra through
//! our own pulp kernels (the no_std `gemm` would silently run its scalar micro-kernel).
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod ops;
pub mod testing;

pub use cpu::isa::Isa;
pub use ops::Activation;
