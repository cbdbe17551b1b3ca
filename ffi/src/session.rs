//! Session handles: incremental per-user state, one event at a time.

use crate::args::{handle, handle_mut, out_ptr, slice, slice_mut, write_out};
use crate::error::{Result, boundary, boundary_void, invalid, seqrec_status};
use crate::model::{check_k, fill_tail, seqrec_model, topk_outputs};
use seqrec_engine::{FeedbackOptions, Model, SessionState, Workspace};
use std::ffi::{CStr, c_char, c_int};
use std::sync::Arc;

/// A user's session: the events pushed so far and the model state they produced, with its own
/// workspace. Use it from one thread at a time. It keeps its model alive: the model handle may
/// be freed first.
#[derive(Debug)]
#[allow(non_camel_case_types)]
pub struct seqrec_session {
    model: Arc<Model>,
    state: SessionState,
    ws: Workspace,
}

/// A new session on `model` for `user`, stored in `*out`.
///
/// # Safety
/// `model` NULL or a live handle; `out` NULL or valid for a write.
unsafe fn new_session(
    model: *const seqrec_model,
    user: Option<u32>,
    out: *mut *mut seqrec_session,
) -> Result<()> {
    // SAFETY: the caller guarantees NULL or a live handle.
    let m = unsafe { handle(model, "model") }?;
    out_ptr(out, "out")?;
    let state = match user {
        Some(u) => m.model.new_session_for_user(u)?,
        None => m.model.new_session()?,
    };
    // SAFETY: `out` was checked above; the caller guarantees it is writable.
    unsafe { store_session(m, state, out) };
    Ok(())
}

/// Stores a new session handle for `state` of model `m` in `*out`.
///
/// # Safety
/// `out` checked with `out_ptr` and valid for a write.
unsafe fn store_session(m: &seqrec_model, state: SessionState, out: *mut *mut seqrec_session) {
    let session = Box::new(seqrec_session {
        model: Arc::clone(&m.model),
        state,
        ws: Workspace::new(),
    });
    // SAFETY: the caller guarantees `out` is checked and writable.
    unsafe { write_out(out, Box::into_raw(session)) };
}

/// Starts an empty session on `model`; free it with `seqrec_session_free`. Models with a user
/// embedding (Caser) need `seqrec_session_new_user` (`SEQREC_ERR_INVALID_ARGUMENT` here).
///
/// # Safety
/// `model` must be NULL or a live handle; `out` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_session_new(
    model: *const seqrec_model,
    out: *mut *mut seqrec_session,
) -> seqrec_status {
    // SAFETY: forwarded caller guarantees.
    boundary("seqrec_session_new", || unsafe {
        new_session(model, None, out)
    })
}

/// Starts an empty session for `user` on a model with a user embedding (Caser). Errors:
/// `SEQREC_ERR_OUT_OF_RANGE` (`user >= seqrec_model_num_users`), `SEQREC_ERR_INVALID_ARGUMENT`
/// (model without users, NULL pointer).
///
/// # Safety
/// `model` must be NULL or a live handle; `out` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_session_new_user(
    model: *const seqrec_model,
    user: u32,
    out: *mut *mut seqrec_session,
) -> seqrec_status {
    // SAFETY: forwarded caller guarantees.
    boundary("seqrec_session_new_user", || unsafe {
        new_session(model, Some(user), out)
    })
}

/// Appends one event. While the session is shorter than the model's window this costs one
/// incremental step; afterwards the window slides. Results always equal scoring the last
/// `max_len` events from scratch. Errors: `SEQREC_ERR_OUT_OF_RANGE` (item 0 or
/// `>= num_items`; the session is unchanged), `SEQREC_ERR_INVALID_ARGUMENT` (NULL session).
///
/// # Safety
/// `session` must be NULL or a live session not used by another thread during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_session_push(
    session: *mut seqrec_session,
    item: u32,
) -> seqrec_status {
    boundary("seqrec_session_push", || {
        // SAFETY: the caller guarantees NULL or a live session used by this thread only.
        let s = unsafe { handle_mut(session, "session") }?;
        s.model.session_push(&mut s.state, item, &mut s.ws)?;
        Ok(())
    })
}

/// Writes the number of events pushed so far to `*out`.
///
/// # Safety
/// `session` must be NULL or a live session; `out` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_session_len(
    session: *const seqrec_session,
    out: *mut usize,
) -> seqrec_status {
    boundary("seqrec_session_len", || {
        // SAFETY: the caller guarantees NULL or a live session.
        let s = unsafe { handle(session, "session") }?;
        out_ptr(out, "out")?;
        // SAFETY: checked above; the caller guarantees it is writable.
        unsafe { write_out(out, s.state.history().len()) };
        Ok(())
    })
}

/// The `k` best items for the session's events, as `seqrec_model_topk` returns them for the
/// same history (best first; padding id 0 never; history items not when `exclude_history` is
/// non-zero; id 0 / `-INFINITY` in the slots left when fewer than `k` remain). Errors:
/// `SEQREC_ERR_INVALID_ARGUMENT` (no event pushed yet, `k == 0`, NULL pointer, overlapping
/// buffers), `SEQREC_ERR_OUT_OF_RANGE` (`k > num_items - 1`).
///
/// # Safety
/// `session` must be NULL or a live session not used by another thread during the call;
/// `items_out` and `scores_out` NULL or `k` writable values each.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_session_topk(
    session: *mut seqrec_session,
    k: usize,
    exclude_history: c_int,
    items_out: *mut u32,
    scores_out: *mut f32,
) -> seqrec_status {
    boundary("seqrec_session_topk", || {
        // SAFETY: the caller guarantees NULL or a live session used by this thread only.
        let s = unsafe { handle_mut(session, "session") }?;
        let k = check_k(&s.model, k)?;
        // SAFETY: the caller guarantees `k` writable values behind each non-NULL pointer.
        let (items, scores) = unsafe { topk_outputs(k, items_out, scores_out, &[]) }?;
        let n = s.model.session_topk_into(
            &s.state,
            k,
            exclude_history != 0,
            &mut s.ws,
            items,
            scores,
        )?;
        fill_tail(n, items, scores);
        Ok(())
    })
}

/// Full-catalog scores for the session's events into `scores_out[0 .. num_items - 1]`, as
/// `seqrec_model_score` writes them (`scores_len` is the capacity, at least `num_items`).
/// Errors: `SEQREC_ERR_INVALID_ARGUMENT` (no event pushed yet, NULL pointer, `scores_len` too
/// small).
///
/// # Safety
/// `session` must be NULL or a live session not used by another thread during the call;
/// `scores_out` NULL or `scores_len` writable floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_session_score(
    session: *const seqrec_session,
    scores_out: *mut f32,
    scores_len: usize,
) -> seqrec_status {
    boundary("seqrec_session_score", || {
        // SAFETY: the caller guarantees NULL or a live session.
        let s = unsafe { handle(session, "session") }?;
        let n = s.model.info().n_items;
        if scores_len < n && !scores_out.is_null() {
            return Err(invalid(format!(
                "scores_len is {scores_len} but the catalog has {n} items (ids 0..={}, padding \
                 included)",
                n - 1
            )));
        }
        // SAFETY: the caller guarantees `scores_len >= n` writable floats behind a non-NULL
        // pointer.
        let scores = unsafe { slice_mut(scores_out, n, "scores_out") }?;
        s.model.session_scores(&s.state, scores)?;
        Ok(())
    })
}

/// Sets the objective knob `name` (a NUL-terminated string such as `"alpha"`,
/// `"lambda_div"`, `"novelty_eps"`; `seqrec_model_num_objectives` / `seqrec_model_objective`
/// list a model's knobs) to `value` for this session; the next recommendations follow it.
/// Errors: `SEQREC_ERR_INVALID_ARGUMENT` (unknown knob — plain backbones have none —, a
/// value outside the knob's range or not finite, a name that is not UTF-8, NULL pointer); the
/// session is unchanged on error.
///
/// # Safety
/// `session` must be NULL or a live session not used by another thread during the call;
/// `name` NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_session_set_objective(
    session: *mut seqrec_session,
    name: *const c_char,
    value: f32,
) -> seqrec_status {
    boundary("seqrec_session_set_objective", || {
        // SAFETY: the caller guarantees NULL or a live session used by this thread only.
        let s = unsafe { handle_mut(session, "session") }?;
        if name.is_null() {
            return Err(invalid("name is NULL"));
        }
        // SAFETY: non-NULL, and the caller guarantees a NUL-terminated string.
        let name = unsafe { CStr::from_ptr(name) }
            .to_str()
            .map_err(|_| invalid("objective name is not valid UTF-8"))?;
        s.model
            .session_set_objective(&mut s.state, name, value, &mut s.ws)?;
        Ok(())
    })
}

/// Options of online adaptation (`seqrec_session_feedback`). A session starts with its model's
/// defaults (the configuration keys `online_lr`, `online_gamma`, ...); read them with
/// `seqrec_session_feedback_options`, change fields, and set them with
/// `seqrec_session_set_feedback_options`.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct seqrec_feedback_options {
    /// SGD step size on the adaptive actor (finite, > 0; default 0.05).
    pub lr: f32,
    /// Discount of the advantage (in [0, 1]; default 0.9).
    pub gamma: f32,
    /// Mixture weight of the adaptive policy at the first feedback (in [0, 1]; default 0.1).
    pub alpha0: f32,
    /// Feedback calls over which the mixture weight grows linearly to 1 (0: 1 at once; default
    /// 1000).
    pub ramp: u32,
    /// Transitions kept in the session's ring buffer (1 ..= 65536; default 64); fixed at the
    /// first feedback.
    pub buffer: u32,
    /// Transitions per SGD step, the newest included (1 ..= min(buffer, 1024); default 4);
    /// fixed at the first feedback.
    pub batch: u32,
    /// Seed of the mini-batch draws (default 0); fixed at the first feedback.
    pub seed: u64,
}

/// The conversions both ways between a struct and its mirror with the same fields.
macro_rules! mirror {
    ($a:ty, $b:ty, [$($field:ident),*]) => {
        impl From<$a> for $b {
            fn from(o: $a) -> Self {
                Self { $($field: o.$field),* }
            }
        }
        impl From<$b> for $a {
            fn from(o: $b) -> Self {
                Self { $($field: o.$field),* }
            }
        }
    };
}

mirror!(
    FeedbackOptions,
    seqrec_feedback_options,
    [lr, gamma, alpha0, ramp, buffer, batch, seed]
);

/// Records the reward of `item`, recommended in the session's current state, and adapts the
/// session's policy online (A-iALP_ap). Models that carry an actor-critic head: the RL models
/// `sqn`, `snqn`, `sa2c` with a linear supervised head (`sup_head.weight [N,d]`,
/// `sup_head.bias [N]`: the actor π_θ = softmax(W_π h + b_π)) and `q_head.*` (the critic
/// Q(h,·) = W_Q h + b_Q); the online trainer writes its agents in exactly this format (model
/// `sa2c`, linear head).
///
/// One call, with the session's current state vector s (the scoring state after the last
/// event), action a = `item`, reward r = `reward`: the item is then appended like
/// `seqrec_session_push` (s' = the new state); advantage A = r + γ·max_a' Q(s',a') − Q(s,a)
/// with the model's critic (frozen at serving); π̃ = (1−α)·π_θ + α·π_β; one SGD step on β's
/// actor (weights and bias) for the loss −log π̃(a|s)·A over a mini-batch: the newest
/// transition plus up to `batch−1` transitions drawn from a ring buffer of the session's last
/// `buffer` transitions with a seeded generator (deterministic for the seed). α grows
/// linearly from `alpha0` to 1 over `ramp` feedback calls, then stays 1. β's actor starts as
/// `beta_head.weight/bias` when the checkpoint has them, else as a copy of the actor (so a
/// fresh session serves exactly π_θ's ranking until feedback arrives). The encoder and the θ
/// heads are never changed at serving (the trainer's `seqrec rl` adapts the encoder).
///
/// After the first feedback, `seqrec_session_topk` and `seqrec_session_score` rank by
/// log π̃(i|s) (exclusions as before); sessions that never got feedback score exactly as
/// before. The first call allocates the session's adaptive state (`num_items·(d+1)` floats
/// and the ring buffer); later calls allocate nothing and cost O(batch·num_items·d);
/// `seqrec_session_save` keeps the adaptive state. Errors: `SEQREC_ERR_UNSUPPORTED` (a model
/// without an actor-critic head; the message names the model and why),
/// `SEQREC_ERR_INVALID_ARGUMENT` (no event pushed yet, a non-finite reward, NULL session),
/// `SEQREC_ERR_OUT_OF_RANGE` (item 0 or `>= num_items`). The session is unchanged on error.
///
/// # Safety
/// `session` must be NULL or a live session not used by another thread during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_session_feedback(
    session: *mut seqrec_session,
    item: u32,
    reward: f32,
) -> seqrec_status {
    boundary("seqrec_session_feedback", || {
        // SAFETY: the caller guarantees NULL or a live session used by this thread only.
        let s = unsafe { handle_mut(session, "session") }?;
        s.model
            .session_feedback(&mut s.state, item, reward, &mut s.ws)?;
        Ok(())
    })
}

/// Sets the session's online-adaptation options (see `seqrec_feedback_options`); they apply
/// from the next `seqrec_session_feedback` on. Errors: `SEQREC_ERR_UNSUPPORTED` (a model
/// without an actor-critic head), `SEQREC_ERR_INVALID_ARGUMENT` (an option out of its range,
/// a `buffer`, `batch` or `seed` other than the session's once it has received feedback, NULL
/// pointer). The session is unchanged on error.
///
/// # Safety
/// `session` must be NULL or a live session not used by another thread during the call;
/// `options` NULL or valid for a read.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_session_set_feedback_options(
    session: *mut seqrec_session,
    options: *const seqrec_feedback_options,
) -> seqrec_status {
    boundary("seqrec_session_set_feedback_options", || {
        // SAFETY: the caller guarantees NULL or a live session used by this thread only.
        let s = unsafe { handle_mut(session, "session") }?;
        // SAFETY: the caller guarantees NULL or a readable struct.
        let opts = unsafe { handle(options, "options") }?;
        s.model
            .session_set_feedback_options(&mut s.state, &(*opts).into())?;
        Ok(())
    })
}

/// Writes the session's online-adaptation options to `*out` (its model's defaults until
/// changed). Errors: `SEQREC_ERR_UNSUPPORTED` (a model without an actor-critic head),
/// `SEQREC_ERR_INVALID_ARGUMENT` (NULL pointer).
///
/// # Safety
/// `session` must be NULL or a live session; `out` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_session_feedback_options(
    session: *const seqrec_session,
    out: *mut seqrec_feedback_options,
) -> seqrec_status {
    boundary("seqrec_session_feedback_options", || {
        // SAFETY: the caller guarantees NULL or a live session.
        let s = unsafe { handle(session, "session") }?;
        out_ptr(out, "out")?;
        s.model.feedback_defaults()?;
        let opts = (*s.state.feedback_options()).into();
        // SAFETY: checked above; the caller guarantees it is writable.
        unsafe { write_out(out, opts) };
        Ok(())
    })
}

/// Marks a session boundary (the user's visit ended, e.g. after 60 minutes of inactivity).
/// Hierarchical models carry the finished session into the user's inter-session state and
/// start the next session empty; plain backbones treat all sessions as one sequence, so the
/// call changes nothing for them. Errors: `SEQREC_ERR_INVALID_ARGUMENT` (NULL session).
///
/// # Safety
/// `session` must be NULL or a live session not used by another thread during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_session_end(session: *mut seqrec_session) -> seqrec_status {
    boundary("seqrec_session_end", || {
        // SAFETY: the caller guarantees NULL or a live session used by this thread only.
        let s = unsafe { handle_mut(session, "session") }?;
        s.model.session_end(&mut s.state, &mut s.ws)?;
        Ok(())
    })
}

/// Serialises the session's whole state (events, user, knobs, caches, hidden and inter-session
/// state) into `buf`, a versioned byte string bound to the model by its fingerprint, which
/// `seqrec_session_restore` turns back into a session on any process that loaded the same
/// model file: the restored session continues exactly as this one would. With `buf == NULL`
/// and `buf_len == 0`, only writes the size needed to `*len_out`; otherwise `buf_len` must be at
/// least that size, and `*len_out` receives the bytes written (a full-window SASRec session of
/// width 64 takes about 51 KB). Errors: `SEQREC_ERR_INVALID_ARGUMENT` (NULL pointer, `buf_len`
/// too small; the message gives the size needed).
///
/// # Safety
/// `session` NULL or a live session not used by another thread during the call; `buf` NULL or
/// `buf_len` writable bytes; `len_out` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_session_save(
    session: *const seqrec_session,
    buf: *mut u8,
    buf_len: usize,
    len_out: *mut usize,
) -> seqrec_status {
    boundary("seqrec_session_save", || {
        // SAFETY: the caller guarantees NULL or a live session.
        let s = unsafe { handle(session, "session") }?;
        out_ptr(len_out, "len_out")?;
        let bytes = s.model.session_save(&s.state)?;
        if buf.is_null() {
            if buf_len != 0 {
                return Err(invalid("buf is NULL (pass buf_len 0 to ask for the size)"));
            }
        } else if buf_len < bytes.len() {
            return Err(invalid(format!(
                "buf_len is {buf_len}, the session state needs {} bytes",
                bytes.len()
            )));
        } else {
            // SAFETY: the caller guarantees `buf_len >= bytes.len()` writable bytes behind a
            // non-NULL pointer.
            let out = unsafe { slice_mut(buf, bytes.len(), "buf") }?;
            out.copy_from_slice(&bytes);
        }
        // SAFETY: checked above; the caller guarantees it is writable.
        unsafe { write_out(len_out, bytes.len()) };
        Ok(())
    })
}

/// A session of `model` rebuilt from the `len` bytes that `seqrec_session_save` wrote (in this
/// process or another that loaded the same model), stored in `*out`; free it with
/// `seqrec_session_free`. Errors: `SEQREC_ERR_FORMAT` (not a saved session, another format
/// version, truncated or corrupt bytes), `SEQREC_ERR_INVALID_ARGUMENT` (NULL pointer, a state
/// saved from another model).
///
/// # Safety
/// `model` NULL or a live handle; `data` NULL or `len` readable bytes; `out` NULL or valid for
/// a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_session_restore(
    model: *const seqrec_model,
    data: *const u8,
    len: usize,
    out: *mut *mut seqrec_session,
) -> seqrec_status {
    boundary("seqrec_session_restore", || {
        // SAFETY: the caller guarantees NULL or a live handle.
        let m = unsafe { handle(model, "model") }?;
        out_ptr(out, "out")?;
        if data.is_null() {
            return Err(invalid("data is NULL"));
        }
        // SAFETY: the caller guarantees `len` readable bytes at `data`.
        let bytes = unsafe { slice(data, len, "data") }?;
        let state = m.model.session_restore(bytes)?;
        // SAFETY: `out` was checked above; the caller guarantees it is writable.
        unsafe { store_session(m, state, out) };
        Ok(())
    })
}

/// Releases a session. `seqrec_session_free(NULL)` does nothing; does not change
/// `seqrec_last_error()`.
///
/// # Safety
/// `session` must be NULL or a session from this library not freed before and not in use.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_session_free(session: *mut seqrec_session) {
    boundary_void("seqrec_session_free", || {
        if !session.is_null() {
            // SAFETY: the caller passes a pointer made by `Box::into_raw` in `new_session`,
            // freed once.
            drop(unsafe { Box::from_raw(session) });
        }
    })
}
