//! C ABI of the seqrec engine (`libseqrec`); the header is `include/seqrec.h`, generated from
//! this crate by cbindgen (`ffi/cbindgen.toml`).
//!
//! Conventions:
//! - Handles are opaque: `seqrec_model` and `seqrec_pdit` (immutable, shareable across
//!   threads) and `seqrec_session` (one thread at a time). Each `_new`/`_load` has a `_free`, which accepts
//!   NULL.
//! - Fallible functions return a `seqrec_status`; out-parameters are written only on success;
//!   `seqrec_last_error()` describes the last failure on the calling thread.
//! - Every pointer is checked for NULL (and alignment), every buffer comes with its length,
//!   and output buffers may not overlap the inputs.
//! - No panic crosses the boundary: each exported body runs under `catch_unwind`
//!   (`error::boundary`), a panic becomes `SEQREC_ERR_INTERNAL`.

mod args;
pub mod error;
mod model;
mod model_batch;
mod pdit;
mod request;
mod session;
mod text;

pub use error::seqrec_status;
pub use model::*;
pub use model_batch::{seqrec_model_topk_batch, seqrec_model_topk_batch_user};
pub use pdit::*;
pub use request::*;
pub use session::*;
pub use text::*;

use std::ffi::c_char;

/// The library version (`"MAJOR.MINOR.PATCH"`), a NUL-terminated string with static lifetime.
#[unsafe(no_mangle)]
pub extern "C" fn seqrec_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last failed call on the calling thread, naming the function and the
/// problem (e.g. `seqrec_model_topk: item id 0 at history position 1 is out of range: valid
/// ids are 1..=29`); `""` after a successful call. Never NULL. The string belongs to the
/// library and stays valid until the next seqrec call on the same thread; other threads have
/// their own message.
#[unsafe(no_mangle)]
pub extern "C" fn seqrec_last_error() -> *const c_char {
    std::panic::catch_unwind(error::last_error_ptr).unwrap_or(c"".as_ptr())
}
