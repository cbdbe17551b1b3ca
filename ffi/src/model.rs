//! Model handles: loading, what a model is, full-catalog scores and top-k.

use crate::args::{check_disjoint, handle, out_ptr, slice, slice_mut, write_out};
use crate::error::{Error, Result, boundary, boundary_void, invalid, seqrec_status};
use seqrec_engine::{Model, Query, Workspace};
use std::ffi::{CStr, CString, c_char, c_int};
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};

/// A loaded model: immutable, usable from many threads at once. Create it with
/// `seqrec_model_load` or `seqrec_model_load_from_memory`, release it with `seqrec_model_free`.
#[derive(Debug)]
#[allow(non_camel_case_types)]
pub struct seqrec_model {
    pub(crate) model: Arc<Model>,
    pub(crate) pool: Pool,
    arch: CString,
    /// NUL-terminated names of the model's objective knobs, in declaration order.
    objectives: Vec<CString>,
}

/// Workspaces not in use. A call takes one (or makes one the first time), scores with it and
/// gives it back, so after warm-up there are as many workspaces as concurrent callers and no
/// call allocates. They are freed with the model.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    free: Mutex<Vec<Workspace>>,
}

impl Pool {
    pub(crate) fn take(&self) -> Pooled<'_> {
        let ws = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default();
        Pooled {
            pool: self,
            ws: Some(ws),
        }
    }
}

/// A workspace borrowed from a [`Pool`], returned on drop.
#[derive(Debug)]
pub(crate) struct Pooled<'a> {
    pool: &'a Pool,
    ws: Option<Workspace>,
}

impl Deref for Pooled<'_> {
    type Target = Workspace;
    fn deref(&self) -> &Workspace {
        self.ws.as_ref().expect("present until drop")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Workspace {
        self.ws.as_mut().expect("present until drop")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        // A workspace abandoned by a panic may be half-updated: drop it instead of reusing it.
        if std::thread::panicking() {
            return;
        }
        if let Some(ws) = self.ws.take() {
            self.pool
                .free
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(ws);
        }
    }
}

impl seqrec_model {
    fn new(model: Model) -> Self {
        let arch = CString::new(model.info().arch).unwrap_or_default();
        let objectives = model
            .objective_specs()
            .iter()
            .map(|o| CString::new(o.name).unwrap_or_default())
            .collect();
        seqrec_model {
            model: Arc::new(model),
            pool: Pool::default(),
            arch,
            objectives,
        }
    }

    /// `k` if it is a valid top-k size for this catalog.
    pub(crate) fn check_k(&self, k: usize) -> Result<usize> {
        check_k(&self.model, k)
    }
}

/// `k` if `1 <= k <= n_items - 1`.
pub(crate) fn check_k(model: &Model, k: usize) -> Result<usize> {
    let real = model.info().n_items - 1;
    if k == 0 {
        Err(invalid("k is 0: ask for at least one item"))
    } else if k > real {
        Err(Error::OutOfRange(format!(
            "k = {k} exceeds the catalog's {real} items (ids 1..={real})"
        )))
    } else {
        Ok(k)
    }
}

/// Writes id 0 and `-INFINITY` into the slots after the `n` that top-k filled.
pub(crate) fn fill_tail(n: usize, items: &mut [u32], scores: &mut [f32]) {
    items[n..].fill(0);
    scores[n..].fill(f32::NEG_INFINITY);
}

/// Checks `out` and stores a new handle for `model` there.
///
/// # Safety
/// `out` must be valid for one pointer write.
unsafe fn store_model(model: Model, out: *mut *mut seqrec_model) {
    let ptr = Box::into_raw(Box::new(seqrec_model::new(model)));
    // SAFETY: the caller passes an out-pointer checked with `out_ptr` and valid for a write.
    unsafe { write_out(out, ptr) }
}

#[cfg(unix)]
pub(crate) fn c_path(path: &CStr) -> Result<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    Ok(std::ffi::OsStr::from_bytes(path.to_bytes()).into())
}

#[cfg(not(unix))]
pub(crate) fn c_path(path: &CStr) -> Result<std::path::PathBuf> {
    path.to_str()
        .map(Into::into)
        .map_err(|_| invalid("path is not valid UTF-8"))
}

/// Loads a model file: a safetensors file (memory-mapped; the configuration comes from its
/// `seqrec.config` metadata, else from a `config.json` beside it) or a RecBole checkpoint
/// (`.pth` as RecBole's trainer saves it with `torch.save`, read without PyTorch; its
/// configuration is RecBole's).
///
/// On success `*out` receives a handle to free with `seqrec_model_free`. Errors:
/// `SEQREC_ERR_INVALID_ARGUMENT` (`path` or `out` NULL), `SEQREC_ERR_IO` (cannot open or map
/// the file), `SEQREC_ERR_FORMAT` (not a valid model).
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string; `out` must be NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_load(
    path: *const c_char,
    out: *mut *mut seqrec_model,
) -> seqrec_status {
    boundary("seqrec_model_load", || {
        out_ptr(out, "out")?;
        if path.is_null() {
            return Err(invalid("path is NULL"));
        }
        // SAFETY: non-NULL, and the caller guarantees a NUL-terminated string.
        let path = c_path(unsafe { CStr::from_ptr(path) })?;
        let model = Model::load(&path)?;
        // SAFETY: `out` was checked above; the caller guarantees it is writable.
        unsafe { store_model(model, out) };
        Ok(())
    })
}

/// Loads a model from the `len` bytes of a safetensors file image (or of a RecBole `.pth`
/// checkpoint) at `data`. The bytes are copied: the caller may free them as soon as the call
/// returns.
///
/// On success `*out` receives a handle to free with `seqrec_model_free`. Errors:
/// `SEQREC_ERR_INVALID_ARGUMENT` (`data` or `out` NULL), `SEQREC_ERR_FORMAT` (not a valid
/// model, including `len == 0`).
///
/// # Safety
/// `data` must be NULL or point to `len` readable bytes; `out` must be NULL or valid for a
/// write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_load_from_memory(
    data: *const u8,
    len: usize,
    out: *mut *mut seqrec_model,
) -> seqrec_status {
    boundary("seqrec_model_load_from_memory", || {
        out_ptr(out, "out")?;
        if data.is_null() {
            return Err(invalid("data is NULL"));
        }
        // SAFETY: the caller guarantees `len` readable bytes at `data`.
        let bytes = unsafe { slice(data, len, "data") }?;
        let model = Model::from_bytes(bytes, &Default::default())?;
        // SAFETY: `out` was checked above; the caller guarantees it is writable.
        unsafe { store_model(model, out) };
        Ok(())
    })
}

/// Releases a model handle. Sessions created from it keep the model alive until they are
/// freed too. `seqrec_model_free(NULL)` does nothing; does not change `seqrec_last_error()`.
///
/// # Safety
/// `model` must be NULL or a handle from this library not freed before, and no other thread may
/// be using it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_free(model: *mut seqrec_model) {
    boundary_void("seqrec_model_free", || {
        if !model.is_null() {
            // SAFETY: the caller passes a handle made by `Box::into_raw` in `store_model`,
            // freed once.
            drop(unsafe { Box::from_raw(model) });
        }
    })
}

/// Reads one property of a model into `out`.
///
/// # Safety
/// `model` must be NULL or a live handle; `out` NULL or valid for a write.
unsafe fn property<T>(
    func: &'static str,
    model: *const seqrec_model,
    out: *mut T,
    get: impl FnOnce(&seqrec_model) -> Result<T>,
) -> seqrec_status {
    boundary(func, || {
        // SAFETY: the caller guarantees NULL or a live handle.
        let m = unsafe { handle(model, "model") }?;
        out_ptr(out, "out")?;
        let value = get(m)?;
        // SAFETY: checked above; the caller guarantees it is writable.
        unsafe { write_out(out, value) };
        Ok(())
    })
}

fn to_u32(value: usize, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::OutOfRange(format!("{what} {value} exceeds uint32_t")))
}

/// Writes the catalog size to `*out`, padding id 0 included: valid item ids are
/// `1 .. num_items - 1`, score buffers need `num_items` floats, and `k` may be at most
/// `num_items - 1`.
///
/// # Safety
/// `model` must be NULL or a live handle; `out` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_num_items(
    model: *const seqrec_model,
    out: *mut u32,
) -> seqrec_status {
    // SAFETY: forwarded caller guarantees.
    unsafe {
        property("seqrec_model_num_items", model, out, |m| {
            to_u32(m.model.info().n_items, "n_items")
        })
    }
}

/// Writes the number of users to `*out` for models with a user embedding (Caser; valid user
/// ids are `0 .. num_users - 1`), and 0 for models without one.
///
/// # Safety
/// `model` must be NULL or a live handle; `out` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_num_users(
    model: *const seqrec_model,
    out: *mut u32,
) -> seqrec_status {
    // SAFETY: forwarded caller guarantees.
    unsafe {
        property("seqrec_model_num_users", model, out, |m| {
            to_u32(m.model.info().n_users.unwrap_or(0), "n_users")
        })
    }
}

/// Writes the window length (`MAX_ITEM_LIST_LENGTH`) to `*out`: longer histories keep their
/// most recent items.
///
/// # Safety
/// `model` must be NULL or a live handle; `out` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_max_len(
    model: *const seqrec_model,
    out: *mut usize,
) -> seqrec_status {
    // SAFETY: forwarded caller guarantees.
    unsafe {
        property("seqrec_model_max_len", model, out, |m| {
            Ok(m.model.info().max_len)
        })
    }
}

/// Writes the width of the user vector and item embeddings to `*out`.
///
/// # Safety
/// `model` must be NULL or a live handle; `out` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_dim(
    model: *const seqrec_model,
    out: *mut usize,
) -> seqrec_status {
    // SAFETY: forwarded caller guarantees.
    unsafe { property("seqrec_model_dim", model, out, |m| Ok(m.model.info().dim)) }
}

/// Writes the architecture name (`"sasrec"`, `"gru4rec"`, `"nextitnet"`, `"caser"`) to `*out`,
/// a NUL-terminated string owned by the model and valid until `seqrec_model_free`.
///
/// # Safety
/// `model` must be NULL or a live handle; `out` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_arch(
    model: *const seqrec_model,
    out: *mut *const c_char,
) -> seqrec_status {
    // SAFETY: forwarded caller guarantees.
    unsafe { property("seqrec_model_arch", model, out, |m| Ok(m.arch.as_ptr())) }
}

/// Writes the number of objective knobs of the model to `*out` (0 for plain backbones; see
/// `seqrec_model_objective` and `seqrec_session_set_objective`).
///
/// # Safety
/// `model` must be NULL or a live handle; `out` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_num_objectives(
    model: *const seqrec_model,
    out: *mut usize,
) -> seqrec_status {
    // SAFETY: forwarded caller guarantees.
    unsafe {
        property("seqrec_model_num_objectives", model, out, |m| {
            Ok(m.objectives.len())
        })
    }
}

/// Describes objective knob `index` (`0 .. num_objectives - 1`): `*name_out` receives its
/// NUL-terminated name (owned by the model, valid until `seqrec_model_free`) and
/// `*default_out` its default value (NaN for optional knobs, where the model chooses unless
/// told). Errors: `SEQREC_ERR_OUT_OF_RANGE` (index too large), `SEQREC_ERR_INVALID_ARGUMENT`
/// (NULL pointer).
///
/// # Safety
/// `model` must be NULL or a live handle; `name_out` and `default_out` NULL or valid for a
/// write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_objective(
    model: *const seqrec_model,
    index: usize,
    name_out: *mut *const c_char,
    default_out: *mut f32,
) -> seqrec_status {
    boundary("seqrec_model_objective", || {
        // SAFETY: the caller guarantees NULL or a live handle.
        let m = unsafe { handle(model, "model") }?;
        out_ptr(name_out, "name_out")?;
        out_ptr(default_out, "default_out")?;
        let n = m.objectives.len();
        if index >= n {
            return Err(Error::OutOfRange(format!(
                "objective index {index} is out of range: the model has {n} objective knobs"
            )));
        }
        let default = m.model.objective_specs()[index].default;
        // SAFETY: both checked above; the caller guarantees they are writable.
        unsafe {
            write_out(name_out, m.objectives[index].as_ptr());
            write_out(default_out, default);
        }
        Ok(())
    })
}

/// Full-catalog scores for one request.
///
/// # Safety
/// As for [`seqrec_model_score`].
unsafe fn score(
    model: *const seqrec_model,
    user: Option<u32>,
    history: *const u32,
    len: usize,
    scores_out: *mut f32,
    scores_len: usize,
) -> Result<()> {
    // SAFETY: the caller guarantees NULL or a live handle.
    let m = unsafe { handle(model, "model") }?;
    // SAFETY: the caller guarantees `len` ids behind a non-NULL pointer.
    let history = unsafe { slice(history, len, "history") }?;
    let n = m.model.info().n_items;
    if scores_len < n {
        if scores_out.is_null() {
            return Err(invalid("scores_out is NULL"));
        }
        return Err(invalid(format!(
            "scores_len is {scores_len} but the catalog has {n} items (ids 0..={}, padding \
             included)",
            n - 1
        )));
    }
    check_disjoint(
        &[(
            "scores_out",
            scores_out as usize,
            n.saturating_mul(size_of::<f32>()),
        )],
        &[crate::args::region("history", history)],
    )?;
    // SAFETY: the caller guarantees `scores_len >= n` writable floats behind a non-NULL pointer,
    // disjoint from `history` (checked above).
    let scores = unsafe { slice_mut(scores_out, n, "scores_out") }?;
    let q = Query {
        history,
        user,
        ..Default::default()
    };
    m.model.score(&q, &mut m.pool.take(), scores)?;
    Ok(())
}

/// Writes the scores of every item for `history` (item ids, oldest first, `len >= 1`) to
/// `scores_out[0 .. num_items - 1]`; `scores_out[i]` scores item `i` (index 0 is the padding
/// id, scored as RecBole does). `scores_len` is the buffer's capacity and must be at least
/// `num_items`; only the first `num_items` values are written.
///
/// Errors: `SEQREC_ERR_INVALID_ARGUMENT` (NULL pointer, empty history, `scores_len` too small,
/// buffers overlapping, model needing a user id: use `seqrec_model_score_user`),
/// `SEQREC_ERR_OUT_OF_RANGE` (an id 0 or `>= num_items` in the history).
///
/// # Safety
/// `model` must be NULL or a live handle; `history` must be NULL or hold `len` ids;
/// `scores_out` must be NULL or hold `scores_len` writable floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_score(
    model: *const seqrec_model,
    history: *const u32,
    len: usize,
    scores_out: *mut f32,
    scores_len: usize,
) -> seqrec_status {
    boundary("seqrec_model_score", || {
        // SAFETY: forwarded caller guarantees.
        unsafe { score(model, None, history, len, scores_out, scores_len) }
    })
}

/// `seqrec_model_score` for models with a user embedding (Caser): `user` must be below
/// `seqrec_model_num_users` (`SEQREC_ERR_OUT_OF_RANGE` otherwise); a model without users
/// rejects it with `SEQREC_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// As for `seqrec_model_score`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_score_user(
    model: *const seqrec_model,
    user: u32,
    history: *const u32,
    len: usize,
    scores_out: *mut f32,
    scores_len: usize,
) -> seqrec_status {
    boundary("seqrec_model_score_user", || {
        // SAFETY: forwarded caller guarantees.
        unsafe { score(model, Some(user), history, len, scores_out, scores_len) }
    })
}

/// Checks the two top-k output buffers (`k` values each, disjoint from each other and from
/// `inputs`) and makes slices of them.
///
/// # Safety
/// Non-NULL pointers must hold `k` writable values each, not accessed elsewhere for `'a`.
pub(crate) unsafe fn topk_outputs<'a>(
    k: usize,
    items_out: *mut u32,
    scores_out: *mut f32,
    inputs: &[crate::args::Region<'_>],
) -> Result<(&'a mut [u32], &'a mut [f32])> {
    let bytes = k.saturating_mul(4);
    check_disjoint(
        &[
            ("items_out", items_out as usize, bytes),
            ("scores_out", scores_out as usize, bytes),
        ],
        inputs,
    )?;
    // SAFETY: the caller guarantees `k` writable values behind a non-NULL pointer; the helper
    // checks NULL, alignment and size, and the buffers are disjoint (checked above).
    let items = unsafe { slice_mut(items_out, k, "items_out") }?;
    // SAFETY: as for `items_out`.
    let scores = unsafe { slice_mut(scores_out, k, "scores_out") }?;
    Ok((items, scores))
}

/// Top-k for one request.
///
/// # Safety
/// As for [`seqrec_model_topk`].
unsafe fn topk(
    model: *const seqrec_model,
    user: Option<u32>,
    history: *const u32,
    len: usize,
    k: usize,
    exclude_history: c_int,
    items_out: *mut u32,
    scores_out: *mut f32,
) -> Result<()> {
    // SAFETY: the caller guarantees NULL or a live handle.
    let m = unsafe { handle(model, "model") }?;
    // SAFETY: the caller guarantees `len` ids behind a non-NULL pointer.
    let history = unsafe { slice(history, len, "history") }?;
    let k = m.check_k(k)?;
    // SAFETY: the caller guarantees `k` writable values behind each non-NULL output pointer.
    let (items, scores) = unsafe {
        topk_outputs(
            k,
            items_out,
            scores_out,
            &[crate::args::region("history", history)],
        )
    }?;
    let q = Query {
        history,
        user,
        exclude_history: exclude_history != 0,
        ..Default::default()
    };
    let n = m
        .model
        .topk_into(&q, k, &mut m.pool.take(), items, scores)?;
    fill_tail(n, items, scores);
    Ok(())
}

/// The `k` best items for `history` (item ids, oldest first, `len >= 1`), best first, into
/// `items_out[0 .. k-1]` and their scores into `scores_out[0 .. k-1]`. Ties are broken by
/// the smaller id. The padding id 0 is never recommended; with `exclude_history` non-zero
/// neither are the history's items. When fewer than `k` items remain after those exclusions,
/// the remaining slots get id 0 and score `-INFINITY`.
///
/// Errors: `SEQREC_ERR_INVALID_ARGUMENT` (NULL pointer, empty history, `k == 0`, buffers
/// overlapping, model needing a user id: use `seqrec_model_topk_user`),
/// `SEQREC_ERR_OUT_OF_RANGE` (`k > num_items - 1`, an id 0 or `>= num_items` in the history).
///
/// # Safety
/// `model` must be NULL or a live handle; `history` must be NULL or hold `len` ids;
/// `items_out` and `scores_out` must be NULL or hold `k` writable values each.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_topk(
    model: *const seqrec_model,
    history: *const u32,
    len: usize,
    k: usize,
    exclude_history: c_int,
    items_out: *mut u32,
    scores_out: *mut f32,
) -> seqrec_status {
    boundary("seqrec_model_topk", || {
        // SAFETY: forwarded caller guarantees.
        unsafe {
            topk(
                model,
                None,
                history,
                len,
                k,
                exclude_history,
                items_out,
                scores_out,
            )
        }
    })
}

/// `seqrec_model_topk` for models with a user embedding (Caser): `user` must be below
/// `seqrec_model_num_users` (`SEQREC_ERR_OUT_OF_RANGE` otherwise); a model without users
/// rejects it with `SEQREC_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// As for `seqrec_model_topk`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_model_topk_user(
    model: *const seqrec_model,
    user: u32,
    history: *const u32,
    len: usize,
    k: usize,
    exclude_history: c_int,
    items_out: *mut u32,
    scores_out: *mut f32,
) -> seqrec_status {
    boundary("seqrec_model_topk_user", || {
        // SAFETY: forwarded caller guarantees.
        unsafe {
            topk(
                model,
                Some(user),
                history,
                len,
                k,
                exclude_history,
                items_out,
                scores_out,
            )
        }
    })
}
