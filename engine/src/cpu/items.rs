//! The CPU's scoring copy of an item table and the one place that dispatches a score on its
//! storage: f32 rows, f16 or bf16 copies (half the bytes per request), or int8 rows with one
//! scale per row beside the f32 rows (the scan shortlists with the int8 rows and re-scores
//! from the f32 ones; see [`super::scan`]). On a CPU with AVX512-BF16 a bf16 copy also keeps
//! a norm bound per row, and the scan shortlists with `vdpbf16ps` and re-scores exactly.

use crate::error::Result;
use crate::weights::{DType, Tensor};
use alloc::vec::Vec;
use half::{bf16, f16};
use seqrec_kernels::Isa;
use seqrec_kernels::cpu::{linear, score};

/// f32 tables larger than this are scanned with prefetching (`score::scores_streamed_isa`): it
/// pays for a table read from memory (352,602 × 64 rows, 90 MB) and costs for one that sits in
/// the last-level cache (23,716 × 64, 6 MB).
pub const STREAM_MIN_BYTES: usize = 16 << 20;

/// Storage of a CPU item table `[rows, dim]`.
#[derive(Debug)]
pub enum CpuItems {
    /// f32 rows (the embedding table itself, shared with the input embedding).
    F32(Tensor),
    /// f16 copy, row-major.
    F16(Vec<f16>),
    /// bf16 copy, row-major.
    BF16 {
        /// The rows.
        t: Vec<bf16>,
        /// Upper bounds of the rows' norms (`score::bf16_row_norms`) where the scan filters
        /// with AVX512-BF16 dot products (`score::bf16_uses_dp` at an AVX-512 level when the
        /// table was built, every row finite, and the copy no larger than
        /// `STREAM_MIN_BYTES`, 16 MiB); `None` otherwise.
        norms: Option<Vec<f32>>,
    },
    /// int8 copy with one scale per row (`seqrec_kernels::cpu::score::quantize_rows_i8`) that
    /// bounds every f32 score, and the f32 rows that re-score the items the bounds cannot rule
    /// out: top-k selections equal the f32 table's; scores come from `exact`.
    I8 {
        /// Quantized rows.
        q: Vec<i8>,
        /// Scale of every row.
        scales: Vec<f32>,
        /// The f32 rows (the embedding table itself).
        exact: Tensor,
    },
}

impl CpuItems {
    /// The storage of `table` (`[rows, dim]`) as `dtype` (`F32`, `F16`, `BF16` or `I8`; the
    /// caller has refused the others).
    pub fn new(table: &Tensor, dtype: DType) -> Result<CpuItems> {
        let v = table.as_slice();
        Ok(match dtype {
            DType::F16 => CpuItems::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
            DType::BF16 => {
                let (rows, dim) = (table.shape()[0], table.shape()[1]);
                let t: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
                // The filter pays where the table sits in the last-level cache (23,716 × 64:
                // 1.6× the plain scan's speed); from memory both are bound by the bytes read
                // and the filter's 16 interleaved row streams lose (352,602 × 64: 0.93×).
                let filter = t.len() * 2 <= STREAM_MIN_BYTES
                    && Isa::detect().has_avx512()
                    && score::bf16_uses_dp();
                let norms = filter
                    .then(|| score::bf16_row_norms(&t, rows, dim))
                    .flatten();
                CpuItems::BF16 { t, norms }
            }
            DType::I8 => {
                let (rows, dim) = (table.shape()[0], table.shape()[1]);
                let (q, scales) = score::quantize_rows_i8_vec(v, rows, dim);
                CpuItems::I8 {
                    q,
                    scales,
                    exact: table.clone(),
                }
            }
            DType::F32 | DType::I16 => CpuItems::F32(table.clone()),
        })
    }

    /// The f32 rows, when the storage keeps them.
    pub fn exact(&self) -> Option<&[f32]> {
        match self {
            CpuItems::F32(t) | CpuItems::I8 { exact: t, .. } => Some(t.as_slice()),
            CpuItems::F16(_) | CpuItems::BF16 { .. } => None,
        }
    }

    /// `out[j] = h · item_{start + j}` for one user vector `h` (`[dim]`). f32 rows (and the f32
    /// rows behind an int8 table) are scored with `score::scores_isa`, whose per-score
    /// summation order does not depend on how many items are scored together: a block, a
    /// whole catalog and a single re-scored item get the same score.
    ///
    /// A table of more than `STREAM_MIN_BYTES` f32 rows is prefetched ahead of the scan (the
    /// same scores).
    pub fn score_block(&self, isa: Isa, h: &[f32], start: usize, out: &mut [f32]) {
        let (d, nb) = (h.len(), out.len());
        let rows = start * d..(start + nb) * d;
        match (self, self.exact()) {
            (_, Some(t)) if t.len() * 4 > STREAM_MIN_BYTES && nb > 1 => {
                score::scores_streamed_isa(isa, h, &t[rows], out, 1, nb, d)
            }
            (_, Some(t)) => score::scores_isa(isa, h, &t[rows], out, 1, nb, d),
            (CpuItems::F16(t), None) => linear::gemv_f16(&t[rows], h, out, nb, d),
            (CpuItems::BF16 { t, .. }, None) => linear::gemv_bf16(&t[rows], h, out, nb, d),
            _ => unreachable!("every storage without f32 rows is half precision"),
        }
    }

    /// `out[r·nb + j] = h[r] · item_{start + j}` for the `users` rows of `h` (`[users, dim]`):
    /// f32 rows with the broadcast tiles (equal to [`Self::score_block`] up to f32 rounding),
    /// half precision row by row.
    pub fn score_batch_block(
        &self,
        isa: Isa,
        h: &[f32],
        users: usize,
        dim: usize,
        (start, nb): (usize, usize),
        out: &mut [f32],
    ) {
        let rows = start * dim..(start + nb) * dim;
        let (h, out) = (&h[..users * dim], &mut out[..users * nb]);
        match self.exact() {
            Some(t) => score::scores_batch_isa(isa, h, &t[rows], out, users, nb, dim),
            None => {
                for (hr, or) in h.chunks_exact(dim).zip(out.chunks_exact_mut(nb)) {
                    self.score_block(isa, hr, start, or);
                }
            }
        }
    }
}
