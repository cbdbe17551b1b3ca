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
//! row by row with the half-precision products.

use super::Cpu;
use super::items::CpuItems;
use crate::blocks::ItemTable;
use alloc::vec::Vec;
use seqrec_kernels::Isa;
use seqrec_kernels::cpu::score;
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
    let one = One {
        items,
        h,
        exclude,
        hq,
        t,
        bound,
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
        match &items.data {
            CpuItems::I8 { q, scales, exact } if bound.is_finite() => {
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
            // Every other storage, and an int8 table with a user vector that cannot be
            // quantized (non-finite, all zero, too wide: no usable bound), scores the block.
            data => {
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
