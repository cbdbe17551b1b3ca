//! Helpers for the C ABI tests: owned handles that free themselves, the last error as a
//! string, and small random models.
#![allow(dead_code)]

use seqrec::*;
use std::ffi::CStr;
use std::ptr;

pub use seqrec::seqrec_status::*;

/// The calling thread's `seqrec_last_error()`.
pub fn last_error() -> String {
    // SAFETY: the library returns a NUL-terminated string valid until the next call on this
    // thread; it is copied at once.
    unsafe { CStr::from_ptr(seqrec_last_error()) }
        .to_str()
        .expect("UTF-8 message")
        .to_owned()
}

/// Asserts a status and that the last error contains every fragment.
#[track_caller]
pub fn expect_err(status: seqrec_status, want: seqrec_status, fragments: &[&str]) {
    let msg = last_error();
    assert_eq!(status, want, "status (message: {msg})");
    for f in fragments {
        assert!(msg.contains(f), "message {msg:?} lacks {f:?}");
    }
}

/// A model handle freed on drop.
#[derive(Debug)]
pub struct ModelHandle(pub *mut seqrec_model);

// SAFETY: a model handle may be used from many threads at once (it wraps an `Arc<Model>` and a
// mutex-protected workspace pool).
unsafe impl Send for ModelHandle {}
// SAFETY: as above.
unsafe impl Sync for ModelHandle {}

impl ModelHandle {
    pub fn from_bytes(bytes: &[u8]) -> Result<ModelHandle, (seqrec_status, String)> {
        let mut out = ptr::null_mut();
        // SAFETY: `bytes` is a live slice; `out` a local.
        let st = unsafe { seqrec_model_load_from_memory(bytes.as_ptr(), bytes.len(), &mut out) };
        if st == SEQREC_OK {
            Ok(ModelHandle(out))
        } else {
            assert!(out.is_null(), "out written on failure");
            Err((st, last_error()))
        }
    }

    pub fn ptr(&self) -> *const seqrec_model {
        self.0
    }

    pub fn num_items(&self) -> usize {
        let mut n = 0u32;
        // SAFETY: live handle, local out.
        assert_eq!(unsafe { seqrec_model_num_items(self.0, &mut n) }, SEQREC_OK);
        n as usize
    }

    /// Top-k through the C ABI (`user` picks the `_user` variant).
    pub fn topk(
        &self,
        user: Option<u32>,
        history: &[u32],
        k: usize,
        exclude: bool,
    ) -> Result<(Vec<u32>, Vec<f32>), seqrec_status> {
        let (mut items, mut scores) = (vec![u32::MAX; k], vec![f32::NAN; k]);
        // SAFETY: live handle; buffers of `len`/`k` values.
        let st = unsafe {
            match user {
                Some(u) => seqrec_model_topk_user(
                    self.0,
                    u,
                    history.as_ptr(),
                    history.len(),
                    k,
                    exclude as i32,
                    items.as_mut_ptr(),
                    scores.as_mut_ptr(),
                ),
                None => seqrec_model_topk(
                    self.0,
                    history.as_ptr(),
                    history.len(),
                    k,
                    exclude as i32,
                    items.as_mut_ptr(),
                    scores.as_mut_ptr(),
                ),
            }
        };
        if st == SEQREC_OK {
            Ok((items, scores))
        } else {
            assert!(
                items.iter().all(|&i| i == u32::MAX) && scores.iter().all(|s| s.is_nan()),
                "outputs written on failure"
            );
            Err(st)
        }
    }

    /// Full-catalog scores through the C ABI.
    pub fn score(&self, user: Option<u32>, history: &[u32]) -> Result<Vec<f32>, seqrec_status> {
        let mut scores = vec![f32::NAN; self.num_items()];
        // SAFETY: live handle; buffers of the stated lengths.
        let st = unsafe {
            match user {
                Some(u) => seqrec_model_score_user(
                    self.0,
                    u,
                    history.as_ptr(),
                    history.len(),
                    scores.as_mut_ptr(),
                    scores.len(),
                ),
                None => seqrec_model_score(
                    self.0,
                    history.as_ptr(),
                    history.len(),
                    scores.as_mut_ptr(),
                    scores.len(),
                ),
            }
        };
        if st == SEQREC_OK {
            Ok(scores)
        } else {
            assert!(
                scores.iter().all(|s| s.is_nan()),
                "scores written on failure"
            );
            Err(st)
        }
    }
}

impl Drop for ModelHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from the library and is freed once.
        unsafe { seqrec_model_free(self.0) }
    }
}

/// A session handle freed on drop.
#[derive(Debug)]
pub struct SessionHandle(pub *mut seqrec_session);

impl SessionHandle {
    pub fn new(model: &ModelHandle, user: Option<u32>) -> Result<SessionHandle, seqrec_status> {
        let mut out = ptr::null_mut();
        // SAFETY: live model handle, local out.
        let st = unsafe {
            match user {
                Some(u) => seqrec_session_new_user(model.0, u, &mut out),
                None => seqrec_session_new(model.0, &mut out),
            }
        };
        if st == SEQREC_OK {
            Ok(SessionHandle(out))
        } else {
            assert!(out.is_null(), "out written on failure");
            Err(st)
        }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from the library and is freed once.
        unsafe { seqrec_session_free(self.0) }
    }
}

/// A small random model of `arch` as a file image (Caser gets 7 users).
pub fn model_bytes(arch: &str, n_items: usize, max_len: usize, seed: u64) -> Vec<u8> {
    seqrec_tests::random_model_bytes(
        &seqrec_tests::small_config(arch, n_items, max_len),
        seed,
        0.3,
    )
}
