//! Linear-layer weights on the CPU: f32 as stored, or f16 / i16 (one f32 scale per row) for the
//! layers whose weight bytes set the latency (a text encoder's transformer), and the one place
//! that dispatches a product on the storage.
//!
//! A large product may be split across the rayon pool by output features
//! ([`Cpu::with_split_products`](super::Cpu::with_split_products)): a single request's products
//! then share the streaming of the weights between threads. Each block is computed into a
//! per-thread buffer and copied into its columns of the output.

use crate::error::{Error, Result};
use crate::weights::{DType, Tensor};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use half::f16;
use seqrec_kernels::cpu::{convert, linear};

/// The weight matrix `[out, in]` of a linear layer in its storage.
#[derive(Clone, Debug)]
pub enum CpuWeight {
    /// As stored in the file.
    F32(Tensor),
    /// Rounded to f16 at load (widened exactly in the kernel).
    F16(Vec<f16>),
    /// Quantized at load to i16 with one scale per output row
    /// (`seqrec_kernels::cpu::linear::quantize_rows_i16`).
    I16 {
        /// Quantized rows.
        q: Vec<i16>,
        /// Scale of every row.
        scales: Vec<f32>,
    },
}

impl CpuWeight {
    /// Stores `w` (`[out, in]`) as `dtype`: `F32`, `F16` (an error when a weight is beyond the
    /// f16 range) or `I16`.
    pub fn new(w: &Tensor, dtype: DType) -> Result<CpuWeight> {
        let (n, k) = match w.shape() {
            [n, k] => (*n, *k),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "a linear weight is 2-D, found shape {other:?}"
                )));
            }
        };
        let src = w.as_slice();
        Ok(match dtype {
            DType::F32 => CpuWeight::F32(w.clone()),
            DType::F16 => {
                let mut h = vec![f16::ZERO; src.len()];
                convert::f32_to_f16(src, &mut h);
                if let Some((i, &v)) = src
                    .iter()
                    .enumerate()
                    .find(|(i, v)| v.is_finite() && !h[*i].is_finite())
                {
                    return Err(Error::Config(format!(
                        "weight {i} = {v} is beyond the f16 range (±65504); load the text \
                         encoder with f32 weights"
                    )));
                }
                CpuWeight::F16(h)
            }
            DType::I16 => {
                let mut q = vec![0i16; src.len()];
                let mut scales = vec![0.0f32; n];
                linear::quantize_rows_i16(src, n, k, &mut q, &mut scales);
                CpuWeight::I16 { q, scales }
            }
            DType::BF16 | DType::I8 => {
                return Err(Error::Config(format!(
                    "{} weights are not supported by the text encoder (i16, f16 or f32)",
                    dtype.name().to_ascii_lowercase()
                )));
            }
        })
    }

    /// `out = x·W[j0..j1]ᵀ + b[j0..j1]` over `rows` rows of width `k`: output features
    /// `j0 .. j1` (`out` is `[rows, j1 − j0]`).
    pub fn product(
        &self,
        x: &[f32],
        rows: usize,
        k: usize,
        (j0, j1): (usize, usize),
        bias: Option<&[f32]>,
        out: &mut [f32],
    ) {
        let nb = j1 - j0;
        let (x, out) = (&x[..rows * k], &mut out[..rows * nb]);
        let b = bias.map(|b| &b[j0..j1]);
        match self {
            CpuWeight::F32(w) => {
                linear::linear(x, &w.as_slice()[j0 * k..j1 * k], b, out, rows, k, nb)
            }
            CpuWeight::F16(w) => linear::linear_f16(x, &w[j0 * k..j1 * k], b, out, rows, k, nb),
            CpuWeight::I16 { q, scales } => {
                let (q, s) = (&q[j0 * k..j1 * k], &scales[j0..j1]);
                linear::linear_i16(x, q, s, b, out, rows, k, nb)
            }
        }
    }
}

/// Products smaller than this many multiply-adds are not split across threads (tests split
/// every product, to exercise the split on small models).
#[cfg(feature = "std")]
const PAR_MIN_MACS: usize = if cfg!(test) { 1 } else { 1 << 18 };

/// Blocks of output features per rayon thread when a product is split: a few, so that a
/// thread that is descheduled or slowed does not hold up the whole product while the others
/// take its blocks.
#[cfg(feature = "std")]
const BLOCKS_PER_THREAD: usize = 4;

/// The output features of a split product, in blocks of whole 8-column groups: `(block
/// width, blocks)`, or `None` when the product stays on the calling thread.
#[cfg(feature = "std")]
fn split_blocks(rows: usize, k: usize, n: usize) -> Option<(usize, usize)> {
    if rows * k * n < PAR_MIN_MACS {
        return None;
    }
    let threads = rayon::current_num_threads().min(n / 8).max(1);
    if threads == 1 {
        return None;
    }
    let blocks = (threads * BLOCKS_PER_THREAD).min(n / 32).max(threads);
    let block = n.div_ceil(blocks).div_ceil(8) * 8;
    Some((block, n.div_ceil(block)))
}

#[cfg(feature = "std")]
std::thread_local! {
    /// The block buffer of the calling worker thread (grows to its largest block).
    static BLOCK: core::cell::RefCell<Vec<f32>> = const { core::cell::RefCell::new(Vec::new()) };
}

/// The output matrix of a split product, written by column blocks from several threads.
#[cfg(feature = "std")]
#[derive(Copy, Clone)]
struct Columns {
    ptr: *mut f32,
    rows: usize,
    n: usize,
}

// SAFETY: `Columns` is only used by `product_split`, whose tasks write pairwise disjoint column
// ranges of a matrix that outlives the parallel loop (see there).
#[cfg(feature = "std")]
unsafe impl Send for Columns {}
// SAFETY: as above.
#[cfg(feature = "std")]
unsafe impl Sync for Columns {}

/// `out = x·Wᵀ + b` over `rows` rows (`out` is `[rows, n]`), split across the current rayon
/// pool by output features when the product is large and the pool has several threads.
pub fn product(
    w: &CpuWeight,
    x: &[f32],
    rows: usize,
    k: usize,
    n: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    split: bool,
) {
    #[cfg(feature = "std")]
    if split && let Some((block, parts)) = split_blocks(rows, k, n) {
        use rayon::prelude::*;
        let out = &mut out[..rows * n];
        let cols = Columns {
            ptr: out.as_mut_ptr(),
            rows,
            n,
        };
        (0..parts).into_par_iter().for_each(|p| {
            let (j0, j1) = (p * block, ((p + 1) * block).min(n));
            let nb = j1 - j0;
            BLOCK.with(|buf| {
                let mut buf = buf.borrow_mut();
                if buf.len() < rows * nb {
                    buf.resize(rows * nb, 0.0);
                }
                w.product(x, rows, k, (j0, j1), bias, &mut buf);
                // The whole `Columns` (which is `Sync`) is captured, not its raw pointer.
                #[allow(clippy::redundant_locals)]
                let cols = cols;
                for (r, src) in buf[..rows * nb].chunks_exact(nb).enumerate() {
                    // SAFETY: `cols.ptr` points to the `rows·n` values of `out`, which is
                    // borrowed mutably for the whole parallel loop; row `r`, columns
                    // `j0 .. j1` lie inside it (`r < rows`, `j1 ≤ n`), and the blocks `p` of
                    // the loop have pairwise disjoint column ranges, so no two tasks write the
                    // same element and nothing reads `out` meanwhile.
                    let dst = unsafe {
                        core::slice::from_raw_parts_mut(cols.ptr.add(r * cols.n + j0), nb)
                    };
                    debug_assert!(r < cols.rows);
                    dst.copy_from_slice(src);
                }
            });
        });
        return;
    }
    let _ = split;
    w.product(x, rows, k, (0, n), bias, out);
}
