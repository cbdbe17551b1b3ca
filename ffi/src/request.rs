//! Per-request options (objective knobs, exclusions beyond the history, the user) for one-shot
//! top-k and scoring, and candidate re-ranking: what a ranking service asks for per request.

use crate::args::{check_disjoint, handle, region, slice, slice_mut};
use crate::error::{Result, boundary, invalid, seqrec_status};
use crate::model::{check_k, fill_tail, seqrec_model, topk_outputs};
use seqrec_engine::{Objectives, Query};
use std::ffi::{CStr, c_char, c_int};

/// One objective knob of a request: its NUL-terminated name (see `seqrec_model_objective`) and
/// its value.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Copy, Clone, Debug)]
pub struct seqrec_objective {
    /// The knob's name, e.g. `"alpha"`.
    pub name: *const c_char,
    /// Its value for this request (within the knob's range; NaN for an optional knob lets the
    /// model choose).
    pub value: f32,
}

/// Options of one request for `seqrec_model_topk_with`, `seqrec_model_score_with` and
/// `seqrec_model_score_candidates_with`. All-zero is the default (no user, history not
/// excluded, no further exclusions, the model's default knobs): start from
/// `seqrec_request_options opts = {0};` (C) or `seqrec_request_options opts{};` (C++).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Copy, Clone, Debug)]
pub struct seqrec_request_options {
    /// Non-zero when `user` is set: required by models with a user embedding (Caser),
    /// refused by the others.
    pub has_user: c_int,
    /// The user id (`0 .. num_users - 1`) when `has_user` is non-zero.
    pub user: u32,
    /// Non-zero: never recommend the history's items (top-k only).
    pub exclude_history: c_int,
    /// `exclude_len` further item ids never to recommend (top-k only; ids outside the catalog
    /// are ignored); may be NULL when `exclude_len` is 0.
    pub exclude: *const u32,
    /// Length of `exclude`.
    pub exclude_len: usize,
    /// `num_objectives` knob values for this request; the other knobs keep their defaults.
    /// An unknown name or a value outside the knob's range is `SEQREC_ERR_INVALID_ARGUMENT`.
    /// May be NULL when `num_objectives` is 0.
    pub objectives: *const seqrec_objective,
    /// Length of `objectives`.
    pub num_objectives: usize,
}

/// A request's checked inputs: the query's slices and the knobs made from the options.
struct Request<'a> {
    history: &'a [u32],
    user: Option<u32>,
    exclude_history: bool,
    exclude: &'a [u32],
    knobs: Option<Objectives>,
}

thread_local! {
    /// The knob set of this thread's last request with knobs, reused by the next one, so
    /// that such requests allocate nothing after warm-up.
    static SPARE_KNOBS: core::cell::Cell<Option<Objectives>> = const { core::cell::Cell::new(None) };
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        if let Some(knobs) = self.knobs.take() {
            SPARE_KNOBS.set(Some(knobs));
        }
    }
}

impl Request<'_> {
    fn query(&self) -> Query<'_> {
        Query {
            history: self.history,
            user: self.user,
            exclude_history: self.exclude_history,
            exclude: self.exclude,
            objectives: self.knobs.as_ref(),
        }
    }
}

/// Reads the history and the options (NULL options: the defaults).
///
/// # Safety
/// `history` NULL or `len` ids; `opts` NULL or a valid struct whose pointers hold their lengths.
unsafe fn request<'a>(
    m: &seqrec_model,
    history: *const u32,
    len: usize,
    opts: *const seqrec_request_options,
) -> Result<Request<'a>> {
    // SAFETY: the caller guarantees `len` ids behind a non-NULL pointer.
    let history = unsafe { slice(history, len, "history") }?;
    let mut r = Request {
        history,
        user: None,
        exclude_history: false,
        exclude: &[],
        knobs: None,
    };
    if opts.is_null() {
        return Ok(r);
    }
    if !opts.is_aligned() {
        return Err(invalid("opts is not aligned"));
    }
    // SAFETY: non-NULL and aligned; the caller guarantees a valid struct.
    let o = unsafe { &*opts };
    r.user = (o.has_user != 0).then_some(o.user);
    r.exclude_history = o.exclude_history != 0;
    // SAFETY: the caller guarantees `exclude_len` ids behind a non-NULL pointer.
    r.exclude = unsafe { slice(o.exclude, o.exclude_len, "opts.exclude") }?;
    // SAFETY: the caller guarantees `num_objectives` entries behind a non-NULL pointer.
    let knobs = unsafe { slice(o.objectives, o.num_objectives, "opts.objectives") }?;
    if !knobs.is_empty() {
        let mut objectives = match SPARE_KNOBS.take() {
            Some(mut o) if core::ptr::eq(o.specs(), m.model.objective_specs()) => {
                o.reset();
                o
            }
            _ => m.model.default_objectives(),
        };
        for (i, k) in knobs.iter().enumerate() {
            if k.name.is_null() {
                return Err(invalid(format!("opts.objectives[{i}].name is NULL")));
            }
            // SAFETY: non-NULL, and the caller guarantees a NUL-terminated string.
            let name = unsafe { CStr::from_ptr(k.name) }
                .to_str()
                .map_err(|_| invalid(format!("opts.objectives[{i}].name is not valid UTF-8")))?;
            objectives.set(name, k.value)?;
        }
        r.knobs = Some(objectives);
    }
    Ok(r)
}

/// `seqrec_model_topk` with per-request options (`opts` may be NULL for the defaults): the
/// user, history exclusion, further exclusions and objective knobs of this request only.
/// Errors as `seqrec_model_topk`, plus `SEQREC_ERR_INVALID_ARGUMENT` for an unknown knob or
/// a value out of its range.
///
/// # Safety
/// `model` NULL or a live handle; `history` NULL or `len` ids; `opts` NULL or a valid struct
/// whose arrays hold their lengths; `items_out` and `scores_out` NULL or `k` writable values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_topk_with(
    model: *const seqrec_model,
    history: *const u32,
    len: usize,
    opts: *const seqrec_request_options,
    k: usize,
    items_out: *mut u32,
    scores_out: *mut f32,
) -> seqrec_status {
    boundary("seqrec_model_topk_with", || {
        // SAFETY: the caller guarantees NULL or a live handle.
        let m = unsafe { handle(model, "model") }?;
        // SAFETY: forwarded caller guarantees.
        let r = unsafe { request(m, history, len, opts) }?;
        let k = check_k(&m.model, k)?;
        let inputs = [
            region("history", r.history),
            region("opts.exclude", r.exclude),
        ];
        // SAFETY: the caller guarantees `k` writable values behind each non-NULL pointer.
        let (items, scores) = unsafe { topk_outputs(k, items_out, scores_out, &inputs) }?;
        let n = m
            .model
            .topk_into(&r.query(), k, &mut m.pool.take(), items, scores)?;
        fill_tail(n, items, scores);
        Ok(())
    })
}

/// `seqrec_model_score` with per-request options (`opts` may be NULL): the user and the
/// objective knobs apply; exclusions do not (every item is scored).
///
/// # Safety
/// As for `seqrec_model_score`, and `opts` NULL or a valid struct.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_score_with(
    model: *const seqrec_model,
    history: *const u32,
    len: usize,
    opts: *const seqrec_request_options,
    scores_out: *mut f32,
    scores_len: usize,
) -> seqrec_status {
    boundary("seqrec_model_score_with", || {
        // SAFETY: the caller guarantees NULL or a live handle.
        let m = unsafe { handle(model, "model") }?;
        // SAFETY: forwarded caller guarantees.
        let r = unsafe { request(m, history, len, opts) }?;
        let n = m.model.info().n_items;
        if scores_len < n {
            return Err(invalid(format!(
                "scores_len is {scores_len} but the catalog has {n} items (ids 0..={}, padding \
                 included)",
                n - 1
            )));
        }
        let out = ("scores_out", scores_out as usize, n.saturating_mul(4));
        check_disjoint(&[out], &[region("history", r.history)])?;
        // SAFETY: the caller guarantees `scores_len >= n` writable floats, disjoint from the
        // history (checked above).
        let scores = unsafe { slice_mut(scores_out, n, "scores_out") }?;
        m.model.score(&r.query(), &mut m.pool.take(), scores)?;
        Ok(())
    })
}

/// Candidate scoring shared by the three entry points.
///
/// # Safety
/// As for `seqrec_model_score_candidates_with`.
unsafe fn candidates(
    model: *const seqrec_model,
    history: *const u32,
    len: usize,
    opts: *const seqrec_request_options,
    user: Option<u32>,
    candidates: *const u32,
    n: usize,
    scores_out: *mut f32,
) -> Result<()> {
    // SAFETY: the caller guarantees NULL or a live handle.
    let m = unsafe { handle(model, "model") }?;
    // SAFETY: forwarded caller guarantees.
    let mut r = unsafe { request(m, history, len, opts) }?;
    if user.is_some() {
        r.user = user;
    }
    if n == 0 {
        return Err(invalid("n_candidates is 0: give at least one candidate"));
    }
    // SAFETY: the caller guarantees `n` ids behind a non-NULL pointer.
    let ids = unsafe { slice(candidates, n, "candidates") }?;
    let out = ("scores_out", scores_out as usize, n.saturating_mul(4));
    let inputs = [region("history", r.history), region("candidates", ids)];
    check_disjoint(&[out], &inputs)?;
    // SAFETY: the caller guarantees `n` writable floats, disjoint from the inputs (checked).
    let scores = unsafe { slice_mut(scores_out, n, "scores_out") }?;
    m.model
        .score_candidates(&r.query(), ids, &mut m.pool.take(), scores)?;
    Ok(())
}

/// Re-ranking: the scores of the `n_candidates` items `candidates` (e.g. what retrieval
/// produced) for `history`, `scores_out[i]` scoring `candidates[i]`, as
/// `seqrec_model_score` would score them. Errors: `SEQREC_ERR_INVALID_ARGUMENT` (NULL pointer,
/// empty history or candidate list, a candidate id 0 or `>= num_items`, overlapping buffers,
/// a model needing a user id: use `seqrec_model_score_candidates_user`),
/// `SEQREC_ERR_OUT_OF_RANGE` (a history id 0 or `>= num_items`).
///
/// # Safety
/// `model` NULL or a live handle; `history` NULL or `len` ids; `candidates` NULL or
/// `n_candidates` ids; `scores_out` NULL or `n_candidates` writable floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_score_candidates(
    model: *const seqrec_model,
    history: *const u32,
    len: usize,
    candidates: *const u32,
    n_candidates: usize,
    scores_out: *mut f32,
) -> seqrec_status {
    boundary("seqrec_model_score_candidates", || {
        // SAFETY: forwarded caller guarantees.
        unsafe {
            self::candidates(
                model,
                history,
                len,
                std::ptr::null(),
                None,
                candidates,
                n_candidates,
                scores_out,
            )
        }
    })
}

/// `seqrec_model_score_candidates` for models with a user embedding (Caser).
///
/// # Safety
/// As for `seqrec_model_score_candidates`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_score_candidates_user(
    model: *const seqrec_model,
    user: u32,
    history: *const u32,
    len: usize,
    candidates: *const u32,
    n_candidates: usize,
    scores_out: *mut f32,
) -> seqrec_status {
    boundary("seqrec_model_score_candidates_user", || {
        // SAFETY: forwarded caller guarantees.
        unsafe {
            self::candidates(
                model,
                history,
                len,
                std::ptr::null(),
                Some(user),
                candidates,
                n_candidates,
                scores_out,
            )
        }
    })
}

/// `seqrec_model_score_candidates` with per-request options (`opts` may be NULL): the user
/// and the objective knobs apply; exclusions do not (every candidate is scored).
///
/// # Safety
/// As for `seqrec_model_score_candidates`, and `opts` NULL or a valid struct.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_score_candidates_with(
    model: *const seqrec_model,
    history: *const u32,
    len: usize,
    opts: *const seqrec_request_options,
    candidates: *const u32,
    n_candidates: usize,
    scores_out: *mut f32,
) -> seqrec_status {
    boundary("seqrec_model_score_candidates_with", || {
        // SAFETY: forwarded caller guarantees.
        unsafe {
            self::candidates(
                model,
                history,
                len,
                opts,
                None,
                candidates,
                n_candidates,
                scores_out,
            )
        }
    })
}
