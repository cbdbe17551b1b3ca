//! Top-k for a batch of histories, scored in parallel across cores.

use crate::args::{Region, handle, mul, region, slice};
use crate::error::{Error, Result, boundary, invalid, seqrec_status};
use crate::model::{fill_tail, seqrec_model, topk_outputs};
use seqrec_engine::Query;
use std::ffi::c_int;

/// Fails on the first decreasing pair of offsets.
fn check_offsets(offsets: &[usize]) -> Result<()> {
    match offsets.windows(2).position(|w| w[0] > w[1]) {
        Some(i) => Err(invalid(format!(
            "offsets must be non-decreasing: offsets[{i}] = {} > offsets[{}] = {}",
            offsets[i],
            i + 1,
            offsets[i + 1]
        ))),
        None => Ok(()),
    }
}

/// Top-k for a batch.
///
/// # Safety
/// As for [`seqrec_model_topk_batch`], plus `users` NULL or holding `batch` ids.
unsafe fn topk_batch(
    model: *const seqrec_model,
    users: Option<*const u32>,
    histories: *const u32,
    offsets: *const usize,
    batch: usize,
    k: usize,
    exclude_history: c_int,
    items_out: *mut u32,
    scores_out: *mut f32,
) -> Result<()> {
    // SAFETY: the caller guarantees NULL or a live handle.
    let m = unsafe { handle(model, "model") }?;
    if batch == 0 {
        return Ok(());
    }
    let k = m.check_k(k)?;
    let n_offsets = batch
        .checked_add(1)
        .ok_or_else(|| invalid("batch + 1 overflows size_t"))?;
    // SAFETY: the caller guarantees `batch + 1` offsets behind a non-NULL pointer.
    let offsets = unsafe { slice(offsets, n_offsets, "offsets") }?;
    check_offsets(offsets)?;
    // SAFETY: the caller guarantees `offsets[batch]` ids behind a non-NULL pointer.
    let histories = unsafe { slice(histories, offsets[batch], "histories") }?;
    let users = match users {
        // SAFETY: the caller guarantees `batch` user ids behind a non-NULL pointer.
        Some(ptr) => Some(unsafe { slice(ptr, batch, "users") }?),
        None => None,
    };
    let total = mul(batch, k, "batch * k")?;
    let mut inputs: Vec<Region<'_>> =
        vec![region("histories", histories), region("offsets", offsets)];
    if let Some(u) = users {
        inputs.push(region("users", u));
    }
    // SAFETY: the caller guarantees `batch * k` writable values behind each output pointer.
    let (items, scores) = unsafe { topk_outputs(total, items_out, scores_out, &inputs) }?;
    let queries: Vec<Query<'_>> = offsets
        .windows(2)
        .enumerate()
        .map(|(i, w)| Query {
            history: &histories[w[0]..w[1]],
            user: users.map(|u| u[i]),
            exclude_history: exclude_history != 0,
            ..Default::default()
        })
        .collect();
    // Every request is checked up front, in order, so the first bad one is reported and the
    // parallel part below can only fail on an internal error.
    for (i, q) in queries.iter().enumerate() {
        m.model
            .window(q.history)
            .and_then(|_| m.model.check_user(q.user))
            .map_err(|e| Error::InBatch {
                index: i,
                source: Box::new(e.into()),
            })?;
    }
    // Results go to scratch buffers first: the caller's outputs are written only on success.
    // The engine's batched path encodes and scans groups of requests together, in parallel.
    let mut tmp_items = vec![0u32; total];
    let mut tmp_scores = vec![0f32; total];
    let mut counts = vec![0usize; batch];
    m.model
        .topk_batch_into(&queries, k, &mut tmp_items, &mut tmp_scores, &mut counts)?;
    for ((it, sc), &n) in tmp_items
        .chunks_mut(k)
        .zip(tmp_scores.chunks_mut(k))
        .zip(&counts)
    {
        fill_tail(n, it, sc);
    }
    items.copy_from_slice(&tmp_items);
    scores.copy_from_slice(&tmp_scores);
    Ok(())
}

/// Top-k for `batch` histories at once, in parallel across cores. History `i` is
/// `histories[offsets[i] .. offsets[i+1] - 1]`: `offsets` holds `batch + 1` non-decreasing
/// entries and `histories` must hold at least `offsets[batch]` ids (the library cannot check
/// that length). Row `i` of the results is `items_out[i*k .. i*k + k - 1]` and
/// `scores_out[i*k .. i*k + k - 1]` (row-major, `batch * k` values each), as
/// `seqrec_model_topk` would write it, including the id 0 / `-INFINITY` filling. (Requests are
/// encoded in groups with larger matrix products, whose sums run in another order: scores
/// agree with `seqrec_model_topk` to f32 rounding, about 1e-6 relative, and two items whose
/// scores are that close may come in the other order.)
///
/// `batch == 0` succeeds without reading or writing anything but `model`. A failing request
/// fails the whole call, with `seqrec_last_error()` naming its index (`history 3: ...`), and no
/// output is written. Errors: as `seqrec_model_topk`, plus `SEQREC_ERR_INVALID_ARGUMENT` for
/// decreasing offsets or an empty history.
///
/// # Safety
/// `model` must be NULL or a live handle; `offsets` NULL or `batch + 1` values; `histories`
/// NULL or `offsets[batch]` ids; `items_out` and `scores_out` NULL or `batch * k` writable
/// values each.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_topk_batch(
    model: *const seqrec_model,
    histories: *const u32,
    offsets: *const usize,
    batch: usize,
    k: usize,
    exclude_history: c_int,
    items_out: *mut u32,
    scores_out: *mut f32,
) -> seqrec_status {
    boundary("seqrec_model_topk_batch", || {
        // SAFETY: forwarded caller guarantees.
        unsafe {
            topk_batch(
                model,
                None,
                histories,
                offsets,
                batch,
                k,
                exclude_history,
                items_out,
                scores_out,
            )
        }
    })
}

/// `seqrec_model_topk_batch` for models with a user embedding (Caser): `users` holds one user
/// id per history (`batch` values).
///
/// # Safety
/// As for `seqrec_model_topk_batch`, and `users` NULL or `batch` ids.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_topk_batch_user(
    model: *const seqrec_model,
    users: *const u32,
    histories: *const u32,
    offsets: *const usize,
    batch: usize,
    k: usize,
    exclude_history: c_int,
    items_out: *mut u32,
    scores_out: *mut f32,
) -> seqrec_status {
    boundary("seqrec_model_topk_batch_user", || {
        // SAFETY: forwarded caller guarantees.
        unsafe {
            topk_batch(
                model,
                Some(users),
                histories,
                offsets,
                batch,
                k,
                exclude_history,
                items_out,
                scores_out,
            )
        }
    })
}
