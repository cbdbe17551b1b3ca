//! The CPU catalog scans: scoring fused with the top-k selection, so that no `[users, items]`
//! score matrix ever reaches memory.
//!
//! - One user vector ([`topk_one`]): blocks of [`SCAN_BLOCK`] items are scored and offered to
//!   the selector while their scores are in L1. Under `std`, when the request runs on a worker
//!   of a rayon pool of several threads (inside `ThreadPool::install`, say), a table large
//!   enough is split into shares scanned by the threads of that pool (each share with its own
//!   selector, merged at the end); the caller scans shares itself, so a busy pool costs no
//!   more than a scan on one thread.
//! - A batch of user vectors ([`topk_rows`]): a block of [`BATCH_BLOCK`] item rows is packed
//!   once and stays in L1/L2 while every user of the batch is scored against it (broadcast
//!   tiles of 6 users × 16 items), then each user's row of scores goes to that user's selector.
//!
//! Single-user scans score f32 tables (and the f32 rows behind an int8 table) with
//! `seqrec_kernels::cpu::score::scores`, whose per-score summation order does not depend on the
//! number of items scored together: a share of a split scan and a re-scored item get the
//! scores a whole scan gives them. The batched scan sums in its tiles' order, equal to those
//! scores up to f32 rounding. int8 tables are scanned for upper bounds
//! (`score + scale·C`, see `seqrec_kernels::cpu::score::i8_error_bound`) and only the items
//! whose bound reaches the selection's threshold are re-scored from the f32 rows, so the
//! selection equals the f32 table's (the user vector is quantized to int8 too, so the scan runs
//! on exact integer multiply-adds); a batch scans the f32 rows. f16 and bf16 tables are scored
//! row by row with the half-precision products; on a CPU with AVX512-BF16 a single-user scan
//! of a bf16 table filters the same way, with `vdpbf16ps` over the user vector split into two
//! bf16 parts and a bound per row (`score + ‖row‖·C`, see
//! `seqrec_kernels::cpu::score::bf16_split_query`), re-scoring with the exact product: the
//! selection and scores are the exact bf16 scan's.

use super::Cpu;
use super::items::CpuItems;
use crate::blocks::ItemTable;
use alloc::vec::Vec;
use half::bf16;
use seqrec_kernels::Isa;
use seqrec_kernels::cpu::linear;
use seqrec_kernels::cpu::score::{self, Bf16Bound};
use seqrec_kernels::cpu::topk::TopK;

/// The CPU's per-workspace scan scratch: the selector of a single-user scan and those of the
/// extra shares of a split one, one selector per request of a batch, and a block of scores.
#[derive(Debug)]
pub struct CpuScratch {
    pub(super) topk: TopK,
    pub(super) parts: Vec<TopK>,
    pub(super) topks: Vec<TopK>,
    pub(super) block: Vec<f32>,
}

impl Default for CpuScratch {
    fn default() -> Self {
        CpuScratch {
            topk: TopK::new(0),
            parts: Vec::new(),
            topks: Vec::new(),
            block: Vec::new(),
        }
    }
}

/// Items scored per block by the single-user scan (the block's scores stay in L1).
pub(super) const SCAN_BLOCK: usize = 512;

/// Items per block of the batched scan: the block's rows and the batch's scores against them
/// stay in L2 while every user of the batch is scored.
pub(super) const BATCH_BLOCK: usize = 256;

/// Smallest share of a split single-user scan, in table values: a share's scan must cost well
/// above handing it to another thread.
#[cfg(feature = "std")]
const SHARE_MIN_VALUES: usize = 1 << 17;

/// Shares per thread of the pool: more shares than threads let a thread that wakes late still
/// take part.
#[cfg(feature = "std")]
const SHARES_PER_THREAD: usize = 2;

/// How many shares a single-user scan of `items` is split into: one without `std`, outside a
/// rayon pool or on a single-thread one (a thread of the caller's own never hands work to a
/// pool: no hand-over latency, no allocation), or for small tables.
fn shares(items: &ItemTable<Cpu>) -> usize {
    #[cfg(feature = "std")]
    {
        let threads = rayon::current_num_threads();
        if threads > 1 && rayon::current_thread_index().is_some() {
            let by_size = items.rows.saturating_mul(items.dim) / SHARE_MIN_VALUES;
            return by_size.min(threads * SHARES_PER_THREAD).max(1);
        }
    }
    let _ = items;
    1
}

/// Items `start .. end` of share `i` of `total`: whole scan blocks, as even as they come.
#[cfg(feature = "std")]
fn share_range(n: usize, total: usize, i: usize) -> (usize, usize) {
    let blocks = n.div_ceil(SCAN_BLOCK);
    let edge = |i: usize| (blocks * i / total * SCAN_BLOCK).min(n);
    (edge(i), edge(i + 1))
}

/// What a single-user scan reads besides the table.
#[derive(Copy, Clone)]
struct One<'a> {
    items: &'a ItemTable<Cpu>,
    h: &'a [f32],
    exclude: &'a [u32],
    /// For an int8 table: the quantized user vector, its scale and the bound `C`
    /// (`bound` infinite when `h` cannot be quantized: the f32 rows are scanned instead).
    hq: &'a [i8],
    t: f32,
    bound: f32,
    /// For a bf16 table with row norms: the user vector's two bf16 parts and the filter's
    /// bound (`None` when `h` cannot be split: the rows are scored exactly instead).
    halves: Option<(&'a [bf16], &'a [bf16], Bf16Bound)>,
}

/// Top-k of the whole catalog for the user vector `h` (`[dim]`) into `topk` (reset by the
/// caller), excluding the sorted ids `exclude`; `parts` holds the selectors of extra shares.
pub(super) fn topk_one(
    items: &ItemTable<Cpu>,
    h: &[f32],
    exclude: &[u32],
    topk: &mut TopK,
    parts: &mut Vec<TopK>,
) {
    let mut hq = [0i8; score::I8_MAX_DIM];
    let (hq, t, bound) = match &items.data {
        CpuItems::I8 { .. } if h.len() <= score::I8_MAX_DIM => {
            let hq = &mut hq[..h.len()];
            match score::quantize_query_i8(h, hq) {
                Some(t) => (&hq[..], t, score::i8_error_bound(h, t)),
                None => (&[][..], 0.0, f32::INFINITY),
            }
        }
        _ => (&[][..], 0.0, f32::INFINITY),
    };
    // The split user vector's stack buffers, filled only for a filtered bf16 table: other
    // requests do not clear 4 KiB they never read.
    let mut halves_buf: [[bf16; score::BF16_DP_MAX_DIM]; 2];
    let halves = match &items.data {
        CpuItems::BF16 { norms: Some(_), .. } if h.len() <= score::BF16_DP_MAX_DIM => {
            halves_buf = [[bf16::ZERO; score::BF16_DP_MAX_DIM]; 2];
            let [hi, lo] = &mut halves_buf;
            let (hi, lo) = (&mut hi[..h.len()], &mut lo[..h.len()]);
            score::bf16_split_query(h, hi, lo).map(|b| (&hi[..], &lo[..], b))
        }
        _ => None,
    };
    let one = One {
        items,
        h,
        exclude,
        hq,
        t,
        bound,
        halves,
    };
    let total = shares(items);
    if total <= 1 {
        scan_range(one, 0, items.rows, topk);
        return;
    }
    #[cfg(feature = "std")]
    {
        let k = topk.k();
        while parts.len() < total - 1 {
            parts.push(TopK::new(k));
        }
        let rest = &mut parts[..total - 1];
        for p in rest.iter_mut() {
            p.reset(k);
        }
        split(one, total, 0, total, topk, rest);
        for p in rest.iter() {
            topk.merge(p);
        }
    }
    #[cfg(not(feature = "std"))]
    let _ = parts;
}

/// Scans shares `first .. first + count` of `total`, share `first` into `sel` and share
/// `first + 1 + i` into `rest[i]`, halving the range with `rayon::join`.
#[cfg(feature = "std")]
fn split(
    one: One<'_>,
    total: usize,
    first: usize,
    count: usize,
    sel: &mut TopK,
    rest: &mut [TopK],
) {
    if count == 1 {
        let (start, end) = share_range(one.items.rows, total, first);
        scan_range(one, start, end, sel);
        return;
    }
    let left = count / 2;
    let (lrest, rrest) = rest.split_at_mut(left - 1);
    let (rsel, rrest) = rrest
        .split_first_mut()
        .expect("count − 1 selectors for count ≥ 2 shares");
    rayon::join(
        || split(one, total, first, left, sel, lrest),
        || split(one, total, first + left, count - left, rsel, rrest),
    );
}

/// Scans items `start .. end` for one user into `topk`.
fn scan_range(one: One<'_>, start: usize, end: usize, topk: &mut TopK) {
    let One {
        items,
        h,
        exclude,
        hq,
        t,
        bound,
        halves,
    } = one;
    // The int8 products and the selection at the detected level; every f32 score (the f32
    // rows, and the re-scored ones behind an int8 table) at the f32 level, as a whole scan.
    let (isa, f32_isa) = (Isa::detect(), Isa::f32_level());
    let d = items.dim;
    let h = &h[..d];
    let mut block = [0.0f32; SCAN_BLOCK];
    let mut b = start;
    while b < end {
        let nb = SCAN_BLOCK.min(end - b);
        let out = &mut block[..nb];
        let base = b as u32;
        match (&items.data, halves) {
            (CpuItems::I8 { q, scales, exact }, _) if bound.is_finite() => {
                let scales = &scales[b..b + nb];
                score::scores_i8_isa(isa, &q[b * d..(b + nb) * d], scales, hq, t, out, nb);
                for (u, &s) in out.iter_mut().zip(scales) {
                    *u += s * bound;
                }
                let exact = exact.as_slice();
                topk.push_block_bounded_isa(isa, base, out, exclude, |id| {
                    let row = id as usize * d;
                    let mut one = [0.0f32];
                    score::scores_isa(f32_isa, h, &exact[row..row + d], &mut one, 1, 1, d);
                    one[0]
                });
            }
            (
                CpuItems::BF16 {
                    t: rows,
                    norms: Some(norms),
                },
                Some((hi, lo, bf)),
            ) => {
                let w = &rows[b * d..(b + nb) * d];
                score::scores_bf16_dp_isa(isa, w, hi, lo, out, nb);
                for (u, &norm) in out.iter_mut().zip(&norms[b..b + nb]) {
                    *u = bf.upper(*u, norm);
                }
                // The re-score is the exact scan's own product (`score_block`'s).
                topk.push_block_bounded_isa(isa, base, out, exclude, |id| {
                    let row = id as usize * d;
                    let mut one = [0.0f32];
                    linear::gemv_bf16(&rows[row..row + d], h, &mut one, 1, d);
                    one[0]
                });
            }
            // Every other storage, and an int8 table with a user vector that cannot be
            // quantized (non-finite, all zero, too wide: no usable bound), scores the block.
            (data, _) => {
                data.score_block(f32_isa, h, b, out);
                topk.push_block(base, out, exclude);
            }
        }
        b += nb;
    }
}

/// Top-k of the whole catalog for the `topks.len()` user vectors in the rows of `h`, user `r`
/// excluding `excludes[offsets[r] .. offsets[r + 1]]`; `scratch` grows to a block of scores.
pub(super) fn topk_rows(
    items: &ItemTable<Cpu>,
    h: &[f32],
    excludes: &[u32],
    offsets: &[usize],
    topks: &mut [TopK],
    scratch: &mut Vec<f32>,
) {
    let (n, d, users) = (items.rows, items.dim, topks.len());
    if scratch.len() < users * BATCH_BLOCK {
        scratch.resize(users * BATCH_BLOCK, 0.0);
    }
    let isa = Isa::f32_level();
    for b in (0..n).step_by(BATCH_BLOCK) {
        let nb = BATCH_BLOCK.min(n - b);
        let buf = &mut scratch[..users * nb];
        items.data.score_batch_block(isa, h, users, d, (b, nb), buf);
        for (r, (sel, scores)) in topks.iter_mut().zip(buf.chunks_exact(nb)).enumerate() {
            sel.push_block(b as u32, scores, &excludes[offsets[r]..offsets[r + 1]]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::DType;
    use alloc::vec;
    use seqrec_kernels::testing::Rng;

    /// The bf16 table's filtered scan (with row norms: `vdpbf16ps` where the CPU has
    /// AVX512-BF16, the portable filter elsewhere) returns the exact scan's selection, items
    /// and scores bit for bit, for ordinary, near-tied and extreme user vectors.
    #[test]
    fn bf16_filter_returns_the_exact_selection() {
        let mut rng = Rng::new(81);
        for (rows, dim) in [(3001, 64), (700, 33), (40, 1)] {
            let mut values = rng.normal_vec(rows * dim, 0.3);
            // Near ties: rows that differ from row 1 in their last bits only.
            for r in 2..12.min(rows) {
                let (a, b) = values.split_at_mut(r * dim);
                b[..dim].copy_from_slice(&a[dim..2 * dim]);
                b[0] *= 1.0 + (r as f32) * 1e-3;
            }
            let t: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
            let norms = score::bf16_row_norms(&t, rows, dim);
            assert!(norms.is_some());
            let table = |norms: Option<Vec<f32>>| ItemTable::<Cpu> {
                rows,
                dim,
                dtype: DType::BF16,
                data: CpuItems::BF16 {
                    t: t.clone(),
                    norms,
                },
            };
            let (filtered, exact) = (table(norms), table(None));
            let mut users: Vec<Vec<f32>> = (0..20).map(|_| rng.normal_vec(dim, 1.0)).collect();
            users.push(values[dim..2 * dim].to_vec());
            users.push(vec![0.0; dim]);
            users.push((0..dim).map(|p| 1e30 * (p as f32 - 0.5)).collect());
            for h in &users {
                for k in [1, 10, 100] {
                    let run = |items: &ItemTable<Cpu>| {
                        let mut sel = TopK::new(k);
                        topk_one(items, h, &[3, 5], &mut sel, &mut Vec::new());
                        let (mut ids, mut scores) = (vec![0u32; k], vec![0.0f32; k]);
                        let got = sel.finish(&mut ids, &mut scores);
                        ids.truncate(got);
                        let bits: Vec<u32> = scores[..got].iter().map(|s| s.to_bits()).collect();
                        (ids, bits)
                    };
                    assert_eq!(run(&filtered), run(&exact), "{rows}x{dim} k={k}");
                }
            }
        }
    }
}
