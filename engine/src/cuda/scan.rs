//! Catalog scoring on the CUDA backend: the score kernels, and the scan fused with the top-k
//! selection (`kernels/cuda/score.cu`): per-block selections in shared memory, then one merge
//! block per user; a whole batch is one scan launch and one merge launch.
//!
//! int8 tables follow the CPU: each user vector is quantized on the host with the CPU's
//! functions (`quantize_query_i8`, `i8_error_bound`), the scan bounds every item's score and
//! re-scores from the f32 rows only the items whose bound reaches the selection, so the
//! selection is the f32 table's. A user vector that cannot be quantized sends the batch to the
//! f32 rows. Selections of more than [`TOPK_MAX`] items, or rows too wide for the scan's shared
//! memory, are scored on the device and selected on the host.

use super::device::{Arg, Device, grow, stage};
use super::{Cuda, CudaBuf, CudaItems, u32_of};
use crate::backend::{At, Backend, check_rows};
use crate::blocks::ItemTable;
use crate::error::{Error, Result};
use alloc::format;
use alloc::vec::Vec;
use cudarc::driver::CudaSlice;
use seqrec_kernels::cpu::score;
use seqrec_kernels::cpu::topk::TopK;

/// Largest k of the fused scan (`TOPK_MAX` in score.cu).
pub const TOPK_MAX: usize = 128;
/// Users per scan block (`SCAN_USERS`).
const SCAN_USERS: usize = 4;
/// Items per chunk of a scan block (`SCAN_CHUNK`).
const SCAN_CHUNK: usize = 256;
/// Dynamic shared memory the scan may ask for besides its static ~15 KiB.
const SCAN_SMEM: usize = 32 * 1024;

/// Per-workspace scratch of the scans: device buffers for exclusions, candidates, results and
/// quantized queries, and their host copies (all grown on demand, then reused).
#[derive(Debug, Default)]
pub struct CudaScratch {
    excl: Option<CudaSlice<u32>>,
    offs: Option<CudaSlice<u32>>,
    cand_s: Option<CudaSlice<f32>>,
    cand_i: Option<CudaSlice<u32>>,
    out_s: Option<CudaSlice<f32>>,
    out_i: Option<CudaSlice<u32>>,
    out_n: Option<CudaSlice<u32>>,
    hq: Option<CudaSlice<i8>>,
    tq: Option<CudaSlice<f32>>,
    bound: Option<CudaSlice<f32>>,
    host_off: Vec<u32>,
    host_h: Vec<f32>,
    host_q: Vec<i8>,
    host_t: Vec<f32>,
    host_b: Vec<f32>,
    host_s: Vec<f32>,
    host_i: Vec<u32>,
    host_n: Vec<u32>,
    scores: Vec<f32>,
    sel: Option<TopK>,
}

/// The kernel suffix and device address of the rows a table is scored from (an int8 table's
/// scores come from its f32 rows).
fn score_rows(dev: &Device, items: &CudaItems) -> (&'static str, u64) {
    match items {
        CudaItems::F32(s) => ("f32", dev.ptr(s, 0)),
        CudaItems::F16(s) => ("f16", dev.ptr(s, 0)),
        CudaItems::BF16(s) => ("bf16", dev.ptr(s, 0)),
        CudaItems::I8 { exact, .. } => ("f32", dev.ptr(exact, 0)),
    }
}

fn scores_kernel(dt: &str) -> &'static str {
    match dt {
        "f16" => "scores_f16",
        "bf16" => "scores_bf16",
        _ => "scores_f32",
    }
}

/// `out[r·n + i] = h[row0 + r] · item_i` for `users` rows into the device buffer `dst`.
fn scores_into(
    be: &Cuda,
    items: &ItemTable<Cuda>,
    h: u64,
    users: usize,
    dst: &CudaSlice<f32>,
) -> Result<()> {
    let dev = &be.dev;
    let (n, d) = (items.rows, items.dim);
    let (dt, tp) = score_rows(dev, &items.data);
    let args = [
        Arg::Ptr(tp),
        Arg::Ptr(h),
        Arg::Ptr(dev.ptr(dst, 0)),
        Arg::U32(u32_of("users", users)?),
        Arg::U32(u32_of("items", n)?),
        Arg::U32(u32_of("width", d)?),
    ];
    let grid = (n * 32).div_ceil(256).min(dev.sms as usize * 16) as u32;
    // SAFETY: the table holds [n, d], `h` [users, d] (checked by the callers), `dst` users·n.
    unsafe { dev.launch("score", scores_kernel(dt), (grid, 1), 256, 0, &args) }
}

/// [`crate::backend::Backend::scores`].
pub(super) fn scores(
    be: &Cuda,
    items: &ItemTable<Cuda>,
    h: &CudaBuf,
    rows: usize,
    out: &mut [f32],
) -> Result<()> {
    let (n, d) = (items.rows, items.dim);
    check_rows("user vectors", h.len(), At::rows(0, d), rows, d)?;
    if out.len() < rows * n {
        return Err(Error::InvalidArgument(format!(
            "scores of {rows} users over {n} items need {} values, got {}",
            rows * n,
            out.len()
        )));
    }
    let dev = &be.dev;
    let buf = dev.take_f32(rows * n)?;
    let res = scores_into(be, items, be.dptr(h, 0), rows, &buf)
        .and_then(|()| dev.read_at(&buf, 0, &mut out[..rows * n]));
    dev.give_f32(buf);
    res
}

/// [`crate::backend::Backend::score_items`].
pub(super) fn score_items(
    be: &Cuda,
    items: &ItemTable<Cuda>,
    h: &CudaBuf,
    ids: &[u32],
    out: &mut [f32],
) -> Result<()> {
    let (n, d, m) = (items.rows, items.dim, ids.len());
    check_rows("user vector", h.len(), At::rows(0, d), 1, d)?;
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= n) {
        return Err(Error::InvalidArgument(format!(
            "item {bad} of a catalog of {n}"
        )));
    }
    if out.len() < m {
        return Err(Error::InvalidArgument(format!(
            "{m} candidate scores into {} values",
            out.len()
        )));
    }
    if m == 0 {
        return Ok(());
    }
    let dev = &be.dev;
    let (mut idb, sb) = (dev.take_u32(m)?, dev.take_f32(m)?);
    let res = (|| {
        dev.write_at(ids, &mut idb, 0)?;
        let (dt, tp) = score_rows(dev, &items.data);
        let name = match dt {
            "f16" => "score_ids_f16",
            "bf16" => "score_ids_bf16",
            _ => "score_ids_f32",
        };
        let args = [
            Arg::Ptr(tp),
            Arg::Ptr(be.dptr(h, 0)),
            Arg::Ptr(dev.ptr(&idb, 0)),
            Arg::Ptr(dev.ptr(&sb, 0)),
            Arg::U32(u32_of("candidates", m)?),
            Arg::U32(u32_of("width", d)?),
        ];
        let grid = (m * 32).div_ceil(256).min(dev.sms as usize * 16) as u32;
        // SAFETY: the ids are < n (checked), `idb` and `sb` hold m values, `h` d values.
        unsafe { dev.launch("score", name, (grid, 1), 256, 0, &args)? };
        dev.read_at(&sb, 0, &mut out[..m])
    })();
    dev.give_u32(idb);
    dev.give_f32(sb);
    res
}

/// The top-k of `counts.len()` users (rows `row0 ..` of `h`), user `r` excluding
/// `excludes[offsets[r] .. offsets[r + 1]]`, written to `out_*[r·k ..]` and `counts[r]`.
pub(super) fn topk(
    be: &Cuda,
    items: &ItemTable<Cuda>,
    h: &CudaBuf,
    row0: usize,
    k: usize,
    excludes: &[u32],
    offsets: &[usize],
    scratch: &mut CudaScratch,
    out_items: &mut [u32],
    out_scores: &mut [f32],
    counts: &mut [usize],
) -> Result<()> {
    let (n, d, users) = (items.rows, items.dim, counts.len());
    check_rows("user vectors", h.len(), At::rows(row0, d), users, d)?;
    if out_items.len() < users * k || out_scores.len() < users * k {
        return Err(Error::InvalidArgument(format!(
            "top-{k} of {users} users needs output buffers of {} values, got {} and {}",
            users * k,
            out_items.len(),
            out_scores.len()
        )));
    }
    if offsets.len() != users + 1 || offsets.last().is_some_and(|&e| e > excludes.len()) {
        return Err(Error::InvalidArgument(format!(
            "{users} users with {} exclusion offsets over {} ids",
            offsets.len(),
            excludes.len()
        )));
    }
    if k == 0 || users == 0 {
        counts.fill(0);
        return Ok(());
    }
    let dev = &be.dev;
    let hp = be.dptr(h, row0 * d);
    // Quantized queries for an int8 table (None: scan the f32 rows).
    let int8 = match &items.data {
        CudaItems::I8 { .. } if d <= score::I8_MAX_DIM => quantize(be, h, row0, users, d, scratch)?,
        _ => false,
    };
    let smem = SCAN_USERS * d * if int8 { 8 } else { 4 };
    let ygroups = users.div_ceil(SCAN_USERS);
    if k > TOPK_MAX || smem > SCAN_SMEM || ygroups > 65535 || n >= u32::MAX as usize {
        return host_select(
            be, items, hp, k, excludes, offsets, scratch, out_items, out_scores, counts,
        );
    }
    // Exclusions (sorted per user) and their offsets.
    scratch.host_off.clear();
    scratch.host_off.extend(offsets.iter().map(|&o| o as u32));
    let ep = stage(dev, &mut scratch.excl, excludes)?;
    let op = stage(dev, &mut scratch.offs, &scratch.host_off)?;
    // Blocks along the catalog: enough to fill the device a few times over.
    let chunks = n.div_ceil(SCAN_CHUNK);
    let parts = (dev.sms as usize * 4 / ygroups).clamp(1, chunks);
    let per_block = chunks.div_ceil(parts) * SCAN_CHUNK;
    let parts = n.div_ceil(per_block);
    grow(dev, &mut scratch.cand_s, users * parts * k)?;
    grow(dev, &mut scratch.cand_i, users * parts * k)?;
    grow(dev, &mut scratch.out_s, users * k)?;
    grow(dev, &mut scratch.out_i, users * k)?;
    grow(dev, &mut scratch.out_n, users)?;
    let cs = dev.ptr(scratch.cand_s.as_ref().expect("grown"), 0);
    let ci = dev.ptr(scratch.cand_i.as_ref().expect("grown"), 0);
    let (nu, du, ku) = (u32_of("items", n)?, u32_of("width", d)?, k as u32);
    let tail = [
        Arg::U32(users as u32),
        Arg::Ptr(ep),
        Arg::Ptr(op),
        Arg::U32(ku),
        Arg::U32(u32_of("items per block", per_block)?),
        Arg::Ptr(cs),
        Arg::Ptr(ci),
    ];
    let grid = (parts as u32, ygroups as u32);
    match (&items.data, int8) {
        (CudaItems::I8 { q, scales, exact }, true) => {
            let mut args = Vec::with_capacity(16);
            args.extend([
                Arg::Ptr(dev.ptr(q, 0)),
                Arg::Ptr(dev.ptr(scales, 0)),
                Arg::Ptr(dev.ptr(exact, 0)),
                Arg::U32(nu),
                Arg::U32(du),
                Arg::Ptr(hp),
                Arg::Ptr(dev.ptr(scratch.hq.as_ref().expect("quantized"), 0)),
                Arg::Ptr(dev.ptr(scratch.tq.as_ref().expect("quantized"), 0)),
                Arg::Ptr(dev.ptr(scratch.bound.as_ref().expect("quantized"), 0)),
            ]);
            args.extend(tail);
            // SAFETY: the int8 rows [n, d], scales [n] and f32 rows [n, d]; `h` users rows of
            // d (checked); the quantized queries [users, d] and their scalars [users];
            // exclusions and users + 1 offsets staged above; candidates users·parts·k.
            unsafe { dev.launch("score", "topk_scan_i8", grid, 256, smem as u32, &args)? };
        }
        (data, _) => {
            let (dt, tp) = score_rows(dev, data);
            let name = match dt {
                "f16" => "topk_scan_f16",
                "bf16" => "topk_scan_bf16",
                _ => "topk_scan_f32",
            };
            let mut args = Vec::with_capacity(12);
            args.extend([Arg::Ptr(tp), Arg::U32(nu), Arg::U32(du), Arg::Ptr(hp)]);
            args.extend(tail);
            // SAFETY: as above, over the rows `score_rows` names.
            unsafe { dev.launch("score", name, grid, 256, smem as u32, &args)? };
        }
    }
    let so = dev.ptr(scratch.out_s.as_ref().expect("grown"), 0);
    let io = dev.ptr(scratch.out_i.as_ref().expect("grown"), 0);
    let no = dev.ptr(scratch.out_n.as_ref().expect("grown"), 0);
    let args = [
        Arg::Ptr(cs),
        Arg::Ptr(ci),
        Arg::U32(parts as u32),
        Arg::U32(ku),
        Arg::Ptr(so),
        Arg::Ptr(io),
        Arg::Ptr(no),
    ];
    // SAFETY: users·parts·k candidates (written by the scan), users·k results and users counts.
    unsafe { dev.launch("score", "topk_merge", (users as u32, 1), 256, 0, &args)? };
    scratch.host_s.resize(users * k, 0.0);
    scratch.host_i.resize(users * k, 0);
    scratch.host_n.resize(users, 0);
    dev.read_at(
        scratch.out_n.as_ref().expect("grown"),
        0,
        &mut scratch.host_n,
    )?;
    dev.read_at(
        scratch.out_s.as_ref().expect("grown"),
        0,
        &mut scratch.host_s,
    )?;
    dev.read_at(
        scratch.out_i.as_ref().expect("grown"),
        0,
        &mut scratch.host_i,
    )?;
    for r in 0..users {
        let c = (scratch.host_n[r] as usize).min(k);
        counts[r] = c;
        let span = r * k..r * k + c;
        out_items[span.clone()].copy_from_slice(&scratch.host_i[span.clone()]);
        out_scores[span.clone()].copy_from_slice(&scratch.host_s[span]);
    }
    Ok(())
}

/// Quantizes the user vectors for the int8 scan into the scratch's device buffers, as the CPU
/// does; `false` when one of them cannot be quantized (the batch then scans the f32 rows).
fn quantize(
    be: &Cuda,
    h: &CudaBuf,
    row0: usize,
    users: usize,
    d: usize,
    s: &mut CudaScratch,
) -> Result<bool> {
    s.host_h.resize(users * d, 0.0);
    be.read(h, row0 * d, &mut s.host_h)?;
    s.host_q.resize(users * d, 0);
    s.host_t.clear();
    s.host_b.clear();
    for (x, xq) in s.host_h.chunks_exact(d).zip(s.host_q.chunks_exact_mut(d)) {
        match score::quantize_query_i8(x, xq) {
            Some(t) => {
                s.host_t.push(t);
                s.host_b.push(score::i8_error_bound(x, t));
            }
            None => return Ok(false),
        }
    }
    let dev = &be.dev;
    stage(dev, &mut s.hq, &s.host_q)?;
    stage(dev, &mut s.tq, &s.host_t)?;
    stage(dev, &mut s.bound, &s.host_b)?;
    Ok(true)
}

/// The top-k through the host: scores on the device, the CPU's selector on the host (large k,
/// very wide rows).
fn host_select(
    be: &Cuda,
    items: &ItemTable<Cuda>,
    hp: u64,
    k: usize,
    excludes: &[u32],
    offsets: &[usize],
    scratch: &mut CudaScratch,
    out_items: &mut [u32],
    out_scores: &mut [f32],
    counts: &mut [usize],
) -> Result<()> {
    let (n, d) = (items.rows, items.dim);
    let dev = &be.dev;
    let buf = dev.take_f32(n)?;
    let sel = scratch.sel.get_or_insert_with(|| TopK::new(k));
    let res = (|| {
        for (r, count) in counts.iter_mut().enumerate() {
            scores_into(be, items, hp + 4 * (r * d) as u64, 1, &buf)?;
            scratch.scores.resize(n, 0.0);
            dev.read_at(&buf, 0, &mut scratch.scores)?;
            sel.reset(k);
            sel.push_block(0, &scratch.scores, &excludes[offsets[r]..offsets[r + 1]]);
            *count = sel.finish(
                &mut out_items[r * k..(r + 1) * k],
                &mut out_scores[r * k..(r + 1) * k],
            );
        }
        Ok(())
    })();
    dev.give_f32(buf);
    res
}
