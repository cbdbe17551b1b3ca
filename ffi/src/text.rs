//! The text encoder (a BERT-family sentence encoder such as all-MiniLM-L6-v2): embeddings of
//! new items' texts for content-based models.

use crate::args::{check_disjoint, handle, out_ptr, slice, slice_mut, write_out};
use crate::error::{Result, boundary, boundary_void, invalid, seqrec_status};
use crate::model::c_path;
use seqrec_engine::text::TextEncoder;
use std::ffi::{CStr, c_char};

/// A loaded text encoder: immutable, usable from many threads at once. Create it with
/// `seqrec_text_encoder_load`, release it with `seqrec_text_encoder_free`.
#[derive(Debug)]
#[allow(non_camel_case_types)]
pub struct seqrec_text_encoder {
    encoder: TextEncoder,
}

/// Loads a sentence encoder from the folder `dir` holding the Hugging Face files
/// `config.json`, `model.safetensors` and `tokenizer.json` (plus sentence-transformers'
/// `modules.json`, `1_Pooling/config.json` and `sentence_bert_config.json` when present:
/// pooling, normalisation, `max_seq_length`). On success `*out` receives a handle to free with
/// `seqrec_text_encoder_free`. Errors: `SEQREC_ERR_INVALID_ARGUMENT` (NULL pointer),
/// `SEQREC_ERR_FORMAT` (a missing or invalid file: the message names it), `SEQREC_ERR_IO` (a
/// file that exists but cannot be read).
///
/// # Safety
/// `dir` NULL or a NUL-terminated string; `out` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_text_encoder_load(
    dir: *const c_char,
    out: *mut *mut seqrec_text_encoder,
) -> seqrec_status {
    boundary("seqrec_text_encoder_load", || {
        out_ptr(out, "out")?;
        if dir.is_null() {
            return Err(invalid("dir is NULL"));
        }
        // SAFETY: non-NULL, and the caller guarantees a NUL-terminated string.
        let dir = c_path(unsafe { CStr::from_ptr(dir) })?;
        let encoder = TextEncoder::load(&dir)?;
        let ptr = Box::into_raw(Box::new(seqrec_text_encoder { encoder }));
        // SAFETY: `out` was checked above; the caller guarantees it is writable.
        unsafe { write_out(out, ptr) };
        Ok(())
    })
}

/// Writes the embedding width (384 for all-MiniLM-L6-v2) to `*out`.
///
/// # Safety
/// `encoder` NULL or a live handle; `out` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_text_encoder_dim(
    encoder: *const seqrec_text_encoder,
    out: *mut usize,
) -> seqrec_status {
    boundary("seqrec_text_encoder_dim", || {
        // SAFETY: the caller guarantees NULL or a live handle.
        let e = unsafe { handle(encoder, "encoder") }?;
        out_ptr(out, "out")?;
        // SAFETY: checked above; the caller guarantees it is writable.
        unsafe { write_out(out, e.encoder.dim()) };
        Ok(())
    })
}

/// Embeds the `n_texts` NUL-terminated UTF-8 strings `texts` into the caller's buffer:
/// `out[i * dim .. (i + 1) * dim]` is text `i`'s embedding (mean-pooled and L2-normalised for
/// all-MiniLM-L6-v2), `out_len` is the buffer's capacity in floats and must be at least
/// `n_texts * dim`. Texts longer than the model's `max_seq_length` tokens keep their
/// beginning. The batch is split across threads. Errors: `SEQREC_ERR_INVALID_ARGUMENT` (NULL
/// pointer, `n_texts == 0`, a NULL, empty or non-UTF-8 text — the message gives its index —,
/// `out_len` too small, overlapping buffers).
///
/// # Safety
/// `encoder` NULL or a live handle; `texts` NULL or `n_texts` pointers, each NULL or a
/// NUL-terminated string; `out` NULL or `out_len` writable floats.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_text_encoder_encode(
    encoder: *const seqrec_text_encoder,
    texts: *const *const c_char,
    n_texts: usize,
    out: *mut f32,
    out_len: usize,
) -> seqrec_status {
    boundary("seqrec_text_encoder_encode", || {
        // SAFETY: the caller guarantees NULL or a live handle.
        let e = unsafe { handle(encoder, "encoder") }?;
        if n_texts == 0 {
            return Err(invalid("n_texts is 0: give at least one text"));
        }
        // SAFETY: the caller guarantees `n_texts` pointers behind a non-NULL pointer.
        let ptrs = unsafe { slice(texts, n_texts, "texts") }?;
        let strs = ptrs
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                if p.is_null() {
                    return Err(invalid(format!("texts[{i}] is NULL")));
                }
                // SAFETY: non-NULL, and the caller guarantees a NUL-terminated string.
                unsafe { CStr::from_ptr(p) }
                    .to_str()
                    .map_err(|_| invalid(format!("texts[{i}] is not valid UTF-8")))
            })
            .collect::<Result<Vec<&str>>>()?;
        let dim = e.encoder.dim();
        let need = n_texts
            .checked_mul(dim)
            .ok_or_else(|| invalid("n_texts * dim overflows size_t"))?;
        if out_len < need {
            return Err(invalid(format!(
                "out_len is {out_len}, {n_texts} texts of {dim} values need {need}"
            )));
        }
        let region = ("out", out as usize, need.saturating_mul(4));
        check_disjoint(&[region], &[crate::args::region("texts", ptrs)])?;
        // SAFETY: the caller guarantees `out_len >= need` writable floats behind a non-NULL
        // pointer, disjoint from the pointer array (checked above).
        let buf = unsafe { slice_mut(out, need, "out") }?;
        // Encode into a scratch buffer first: out-parameters are written only on success.
        let rows = e.encoder.encode_batch(&strs)?;
        buf.copy_from_slice(&rows);
        Ok(())
    })
}

/// Releases a text encoder. `seqrec_text_encoder_free(NULL)` does nothing.
///
/// # Safety
/// `encoder` NULL or a handle from `seqrec_text_encoder_load` not freed before and not in use.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn seqrec_text_encoder_free(encoder: *mut seqrec_text_encoder) {
    boundary_void("seqrec_text_encoder_free", || {
        if !encoder.is_null() {
            // SAFETY: a pointer made by `Box::into_raw` in `seqrec_text_encoder_load`, freed
            // once.
            drop(unsafe { Box::from_raw(encoder) });
        }
    })
}
