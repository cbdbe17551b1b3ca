//! C ABI of the seqrec engine (`libseqrec`).

use std::ffi::c_char;

/// The library version as a NUL-terminated string with static lifetime.
#[unsafe(no_mangle)]
pub extern "C" fn seqrec_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
