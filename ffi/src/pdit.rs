//! PDiT handles: a personalised diffusion transformer with the catalog it ranks, generation of
//! a latent and top-k items from a prompt latent and the history's latents.
//!
//! Latents cross the ABI as the text encoder gives them (unit rows); the library multiplies the
//! prompt and the history by the model's `latent_scale` and divides the sample by it.

use crate::args::{check_disjoint, handle, out_ptr, region, slice, slice_mut, write_out};
use crate::error::{Error, Result, boundary, boundary_void, invalid, seqrec_status};
use seqrec_engine::pdit::{Catalog, NoiseSource, Pdit, PditWorkspace, Schedule};
use seqrec_engine::{Cpu, Tensor, WeightFile};
use std::ffi::{CStr, c_char};
use std::sync::{Mutex, PoisonError};

/// A loaded PDiT and its catalog: immutable, usable from many threads at once. Create it with
/// `seqrec_pdit_load`, release it with `seqrec_pdit_free`.
#[derive(Debug)]
#[allow(non_camel_case_types)]
pub struct seqrec_pdit {
    model: Pdit,
    catalog: Option<Catalog>,
    free: Mutex<Vec<Scratch>>,
}

/// What one call works in: the model's workspace, the sampling chain of the last step count,
/// scaled inputs, the sample, the sorted exclusions.
#[derive(Debug, Default)]
struct Scratch {
    ws: PditWorkspace,
    chain: Option<Schedule>,
    p: Vec<f32>,
    hist: Vec<f32>,
    z0: Vec<f32>,
    exclude: Vec<u32>,
}

impl seqrec_pdit {
    /// Runs `f` with a scratch taken from the pool (made the first time), returned after.
    fn with_scratch<T>(&self, f: impl FnOnce(&mut Scratch) -> Result<T>) -> Result<T> {
        let mut s = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default();
        let r = f(&mut s);
        if r.is_ok() {
            self.free
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(s);
        }
        r
    }

    /// Checks and scales the inputs into `s`, and makes the chain of `steps` (0: the model's
    /// T), reusing the last one when the count is the same.
    fn prepare(
        &self,
        s: &mut Scratch,
        prompt: &[f32],
        history: &[f32],
        n_history: usize,
        steps: u32,
    ) -> Result<()> {
        let c = self.model.config();
        let scale = c.latent_scale as f32;
        if c.variant.has_gen() && prompt.len() != c.cond_dim {
            return Err(invalid(format!(
                "prompt has {} values, the model's prompt latent {}",
                prompt.len(),
                c.cond_dim
            )));
        }
        if c.variant.has_tem() && history.len() != n_history * c.latent_dim {
            return Err(invalid(format!(
                "history has {} values, expected {n_history} latents of {}",
                history.len(),
                c.latent_dim
            )));
        }
        s.p.clear();
        s.p.extend(prompt.iter().map(|&v| v * scale));
        s.hist.clear();
        s.hist.extend(history.iter().map(|&v| v * scale));
        s.z0.resize(c.latent_dim, 0.0);
        let steps = if steps == 0 {
            c.timesteps
        } else {
            steps as usize
        };
        if s.chain.as_ref().is_none_or(|ch| ch.steps() != steps) {
            s.chain = Some(self.model.respaced(steps)?);
        }
        Ok(())
    }
}

/// Loads a PDiT checkpoint (memory-mapped; configuration in the file's `seqrec.config`
/// metadata, else a `config.json` beside it) and, when `catalog` is not NULL, the item-text
/// table it ranks: a safetensors file whose one 2-D tensor holds a row per item id (what
/// `seqrec embed-items` writes, or a PDiT data file's `item_latents`; row 0 is never
/// recommended).
///
/// On success `*out` receives a handle to free with `seqrec_pdit_free`. Errors:
/// `SEQREC_ERR_INVALID_ARGUMENT` (`path` or `out` NULL, a catalog of another width),
/// `SEQREC_ERR_IO`, `SEQREC_ERR_FORMAT` (not a valid PDiT or table).
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string, `catalog` NULL or one, and `out` NULL or
/// valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_pdit_load(
    path: *const c_char,
    catalog: *const c_char,
    out: *mut *mut seqrec_pdit,
) -> seqrec_status {
    boundary("seqrec_pdit_load", || {
        out_ptr(out, "out")?;
        if path.is_null() {
            return Err(invalid("path is NULL"));
        }
        // SAFETY: non-NULL, and the caller guarantees a NUL-terminated string.
        let path = crate::model::c_path(unsafe { CStr::from_ptr(path) })?;
        let model = Pdit::load(&path)?;
        let catalog = if catalog.is_null() {
            None
        } else {
            // SAFETY: non-NULL, and the caller guarantees a NUL-terminated string.
            let file = WeightFile::open(crate::model::c_path(unsafe { CStr::from_ptr(catalog) })?)?;
            let table = catalog_table(&file)?;
            let d = model.config().latent_dim;
            if table.shape()[1] != d {
                return Err(invalid(format!(
                    "{}: the item-text table has rows of {}, the model's latents are {d} wide",
                    file.origin(),
                    table.shape()[1]
                )));
            }
            Some(Catalog::new(&Cpu::new(), &table)?)
        };
        let ptr = Box::into_raw(Box::new(seqrec_pdit {
            model,
            catalog,
            free: Mutex::new(Vec::new()),
        }));
        // SAFETY: `out` was checked above; the caller guarantees it is writable.
        unsafe { write_out(out, ptr) };
        Ok(())
    })
}

/// The catalog's table: `item_text_embedding`, `item_latents`, or a file's only 2-D tensor.
fn catalog_table(file: &WeightFile) -> Result<Tensor> {
    let names: Vec<&str> = file.names().collect();
    let name = ["item_text_embedding", "item_latents"]
        .into_iter()
        .find(|n| names.contains(n))
        .or_else(|| {
            let two_d: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| file.info(n).is_some_and(|i| i.shape.len() == 2))
                .collect();
            (two_d.len() == 1).then(|| two_d[0])
        })
        .ok_or_else(|| {
            Error::Engine(seqrec_engine::Error::Format(format!(
                "{}: no item-text table (`item_text_embedding`, `item_latents` or one 2-D tensor)",
                file.origin()
            )))
        })?;
    let shape = file.info(name).map(|i| i.shape.clone()).unwrap_or_default();
    Ok(file.tensor(name, &shape)?)
}

/// Releases a PDiT handle; `seqrec_pdit_free(NULL)` does nothing.
///
/// # Safety
/// `pdit` must be NULL or a handle from `seqrec_pdit_load` not freed before, and no other
/// thread may be using it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_pdit_free(pdit: *mut seqrec_pdit) {
    boundary_void("seqrec_pdit_free", || {
        if !pdit.is_null() {
            // SAFETY: made by `Box::into_raw` in `seqrec_pdit_load`, freed once.
            drop(unsafe { Box::from_raw(pdit) });
        }
    })
}

/// The sizes of a PDiT: the latent width d (`*latent_dim`, the length of a history row and of
/// a generated latent), the prompt latent's width (`*cond_dim`, 0 for a model that reads no
/// prompt), the most history rows read (`*max_hist_len`) and the chain's steps T
/// (`*timesteps`). Any out-pointer may be NULL.
///
/// # Safety
/// `pdit` must be NULL or a live handle; each out-pointer NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_pdit_dims(
    pdit: *const seqrec_pdit,
    latent_dim: *mut usize,
    cond_dim: *mut usize,
    max_hist_len: *mut usize,
    timesteps: *mut usize,
) -> seqrec_status {
    boundary("seqrec_pdit_dims", || {
        // SAFETY: the caller guarantees NULL or a live handle.
        let h = unsafe { handle(pdit, "pdit") }?;
        let c = h.model.config();
        let cond = if c.variant.has_gen() { c.cond_dim } else { 0 };
        for (ptr, v) in [
            (latent_dim, c.latent_dim),
            (cond_dim, cond),
            (max_hist_len, c.max_hist_len),
            (timesteps, c.timesteps),
        ] {
            if !ptr.is_null() {
                out_ptr(ptr, "out")?;
                // SAFETY: checked non-NULL and aligned; the caller guarantees it is writable.
                unsafe { write_out(ptr, v) };
            }
        }
        Ok(())
    })
}

/// Generates the latent of the next item's text: `prompt` (`prompt_len` values, the prompt
/// latent; ignored by models without one, then it may be NULL) and `history` (`n_history`
/// latents of d values, oldest first, at most `max_hist_len`; ignored by models without
/// temporal blocks), sampled along `steps` steps (0: the model's T, the thesis's full chain;
/// fewer: a respaced chain) from the noise of `seed`. Writes d values to `out_latent`
/// (`out_len` must be d). The same inputs and seed give the same latent.
///
/// Errors: `SEQREC_ERR_INVALID_ARGUMENT` (a NULL or mis-sized buffer, an empty or too long
/// history, a step count outside 2..=T).
///
/// # Safety
/// Each buffer must be NULL or hold its stated length; `out_latent` must not overlap the
/// inputs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_pdit_generate(
    pdit: *const seqrec_pdit,
    prompt: *const f32,
    prompt_len: usize,
    history: *const f32,
    n_history: usize,
    steps: u32,
    seed: u64,
    out_latent: *mut f32,
    out_len: usize,
) -> seqrec_status {
    boundary("seqrec_pdit_generate", || {
        // SAFETY: the caller guarantees NULL or a live handle.
        let h = unsafe { handle(pdit, "pdit") }?;
        let c = h.model.config();
        // SAFETY: the caller guarantees the stated lengths.
        let prompt = unsafe { slice(prompt, prompt_len, "prompt") }?;
        let hist_len = crate::args::mul(n_history, c.latent_dim, "history")?;
        // SAFETY: as above.
        let history = unsafe { slice(history, hist_len, "history") }?;
        // SAFETY: as above; the caller guarantees no other access.
        let out = unsafe { slice_mut(out_latent, out_len, "out_latent") }?;
        check_disjoint(
            &[region("out_latent", out)],
            &[region("prompt", prompt), region("history", history)],
        )?;
        if out.len() != c.latent_dim {
            return Err(invalid(format!(
                "out_latent has {} values, the model's latents {}",
                out.len(),
                c.latent_dim
            )));
        }
        h.with_scratch(|s| {
            h.prepare(s, prompt, history, n_history, steps)?;
            let Scratch {
                ws,
                chain,
                p,
                hist,
                z0,
                ..
            } = s;
            let chain = chain.as_ref().expect("prepared");
            let lens = [n_history];
            let history = c.variant.has_tem().then_some((&hist[..], &lens[..]));
            let p = c.variant.has_gen().then_some(&p[..]);
            h.model
                .sample(chain, 1, p, history, NoiseSource::seed(seed), ws, z0)?;
            let scale = c.latent_scale as f32;
            for (o, &z) in out.iter_mut().zip(z0.iter()) {
                *o = z / scale;
            }
            Ok(())
        })
    })
}

/// [`seqrec_pdit_generate`], then the `k` catalog items whose text latents are closest to the
/// generated latent by cosine, best first, into `out_items` / `out_scores` (cosines), each at
/// least `k` long, and how many were written to `*out_n` (fewer than `k` when the catalog
/// minus exclusions is smaller; the rest filled with id 0 and `-INFINITY`). `exclude` holds
/// `n_exclude` item ids never to recommend (padding id 0 never is). Needs a catalog given to
/// `seqrec_pdit_load`.
///
/// # Safety
/// Each buffer must be NULL or hold its stated length; outputs must not overlap the inputs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_pdit_topk(
    pdit: *const seqrec_pdit,
    prompt: *const f32,
    prompt_len: usize,
    history: *const f32,
    n_history: usize,
    steps: u32,
    seed: u64,
    exclude: *const u32,
    n_exclude: usize,
    k: usize,
    out_items: *mut u32,
    out_scores: *mut f32,
    out_n: *mut usize,
) -> seqrec_status {
    boundary("seqrec_pdit_topk", || {
        // SAFETY: the caller guarantees NULL or a live handle.
        let h = unsafe { handle(pdit, "pdit") }?;
        out_ptr(out_n, "out_n")?;
        let c = h.model.config();
        let catalog = h
            .catalog
            .as_ref()
            .ok_or_else(|| invalid("the handle has no catalog: give one to seqrec_pdit_load"))?;
        if k == 0 || k >= catalog.n_items() {
            return Err(Error::OutOfRange(format!(
                "k = {k}: the catalog has items 1..={}",
                catalog.n_items() - 1
            )));
        }
        // SAFETY: the caller guarantees the stated lengths.
        let prompt = unsafe { slice(prompt, prompt_len, "prompt") }?;
        let hist_len = crate::args::mul(n_history, c.latent_dim, "history")?;
        // SAFETY: as above.
        let history = unsafe { slice(history, hist_len, "history") }?;
        // SAFETY: as above.
        let exclude = unsafe { slice(exclude, n_exclude, "exclude") }?;
        // SAFETY: as above; the caller guarantees no other access.
        let items = unsafe { slice_mut(out_items, k, "out_items") }?;
        // SAFETY: as above.
        let scores = unsafe { slice_mut(out_scores, k, "out_scores") }?;
        check_disjoint(
            &[region("out_items", items), region("out_scores", scores)],
            &[
                region("prompt", prompt),
                region("history", history),
                region("exclude", exclude),
            ],
        )?;
        let n = h.with_scratch(|s| {
            h.prepare(s, prompt, history, n_history, steps)?;
            let Scratch {
                ws,
                chain,
                p,
                hist,
                z0,
                exclude: ex,
            } = s;
            ex.clear();
            ex.push(0);
            ex.extend_from_slice(exclude);
            ex.sort_unstable();
            ex.dedup();
            let chain = chain.as_ref().expect("prepared");
            let history = c.variant.has_tem().then_some((&hist[..], n_history));
            let p = c.variant.has_gen().then_some(&p[..]);
            let noise = NoiseSource::seed(seed);
            Ok(h.model.recommend_into(
                chain, catalog, p, history, noise, k, ex, ws, z0, items, scores,
            )?)
        })?;
        crate::model::fill_tail(n, items, scores);
        // SAFETY: checked above; the caller guarantees it is writable.
        unsafe { write_out(out_n, n) };
        Ok(())
    })
}
