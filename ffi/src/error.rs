//! Status codes, the crate's error type, the thread-local last-error message and the panic
//! boundary that every exported function runs its body in.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Outcome of a fallible call. Every function that can fail returns one; on anything but
/// `SEQREC_OK`, `seqrec_last_error()` describes the problem and out-parameters are untouched.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum seqrec_status {
    /// Success.
    SEQREC_OK = 0,
    /// A NULL pointer, a misaligned or overlapping buffer, a length that does not fit, an empty
    /// history, `k == 0`, a user id given to a model without users or missing for one with.
    SEQREC_ERR_INVALID_ARGUMENT = 1,
    /// The model file could not be opened or read.
    SEQREC_ERR_IO = 2,
    /// The bytes are not a valid model: corrupt or truncated safetensors data or RecBole
    /// checkpoint, a missing or invalid configuration, missing/unexpected tensors, wrong shapes
    /// or dtypes, non-finite weights; or not a valid saved session (corrupt, truncated, another
    /// format version) or text-encoder folder.
    SEQREC_ERR_FORMAT = 3,
    /// An item id that is 0 or not below the catalog size, a user id not below the number of
    /// users, or `k` larger than the number of real items (`num_items - 1`).
    SEQREC_ERR_OUT_OF_RANGE = 4,
    /// A bug in seqrec (a caught panic) or an unexpected engine failure.
    SEQREC_ERR_INTERNAL = 5,
    /// The model cannot do what was asked: `seqrec_session_feedback` and the feedback options
    /// on a model without an actor-critic head (anything but `sqn`, `snqn` and `sa2c` with a
    /// linear supervised head), or a storage or size the backend does not support. The
    /// session or model is unchanged.
    SEQREC_ERR_UNSUPPORTED = 6,
}

use seqrec_status::*;

/// Everything a C ABI call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from the engine, mapped to a status by its kind.
    #[error(transparent)]
    Engine(#[from] seqrec_engine::Error),
    /// A bad argument detected at the boundary (NULL, length, alignment, overlap, k == 0).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An argument outside its valid range detected at the boundary (k too large).
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// One request of a batch failed.
    #[error("history {index}: {source}")]
    InBatch {
        /// Row of the batch.
        index: usize,
        /// What was wrong with it.
        #[source]
        source: Box<Error>,
    },
    /// A panic was caught at the boundary.
    #[error("internal error (panic): {0}")]
    Panic(String),
}

/// Result alias for the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The status this error is reported with.
    pub fn status(&self) -> seqrec_status {
        use seqrec_engine::Error as E;
        match self {
            Error::InvalidArgument(_) => SEQREC_ERR_INVALID_ARGUMENT,
            Error::OutOfRange(_) => SEQREC_ERR_OUT_OF_RANGE,
            Error::InBatch { source, .. } => source.status(),
            Error::Panic(_) => SEQREC_ERR_INTERNAL,
            Error::Engine(e) => match e.root() {
                E::Io { .. } => SEQREC_ERR_IO,
                E::Format(_)
                | E::Config(_)
                | E::UnknownModel { .. }
                | E::MissingTensor { .. }
                | E::UnexpectedTensors { .. }
                | E::Shape { .. }
                | E::Dtype { .. }
                | E::NonFinite { .. }
                | E::Tokenizer(_)
                | E::SessionState(_)
                | E::Checkpoint(_) => SEQREC_ERR_FORMAT,
                E::ItemOutOfRange { .. } | E::UserOutOfRange { .. } => SEQREC_ERR_OUT_OF_RANGE,
                E::EmptyHistory | E::InvalidArgument(_) => SEQREC_ERR_INVALID_ARGUMENT,
                E::Unsupported(_) => SEQREC_ERR_UNSUPPORTED,
                _ => SEQREC_ERR_INTERNAL,
            },
        }
    }
}

/// Shorthand for [`Error::InvalidArgument`].
pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

thread_local! {
    /// The calling thread's last error message, NUL-terminated ("" when the last call
    /// succeeded).
    static LAST_ERROR: RefCell<Vec<u8>> = RefCell::new(vec![0]);
}

/// Replaces the thread's message. Interior NULs (possible in names read from a corrupt file)
/// become `?` so the C string is not cut short.
fn store_last_error(message: &str) {
    // A thread being torn down has no message slot left: nothing to report to.
    let _ = LAST_ERROR.try_with(|cell| {
        if let Ok(mut buf) = cell.try_borrow_mut() {
            buf.clear();
            buf.extend(message.bytes().map(|b| if b == 0 { b'?' } else { b }));
            buf.push(0);
        }
    });
}

/// Empties the thread's message in place (the buffer is kept, so no allocation).
fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|cell| {
        if let Ok(mut buf) = cell.try_borrow_mut() {
            buf.clear();
            buf.push(0);
        }
    });
}

/// Pointer to the thread's message (static "" when the thread-local is gone).
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR
        .try_with(|cell| match cell.try_borrow() {
            Ok(buf) => buf.as_ptr().cast::<c_char>(),
            Err(_) => c"".as_ptr(),
        })
        .unwrap_or(c"".as_ptr())
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Records `err` as the thread's last error, prefixed with the function name. Formatting runs
/// inside its own panic guard so that a faulty `Display` cannot unwind into C.
fn record(func: &str, err: &Error) {
    let message = catch_unwind(AssertUnwindSafe(|| format!("{func}: {err}")))
        .unwrap_or_else(|_| format!("{func}: error (its message could not be formatted)"));
    store_last_error(&message);
}

/// Runs the body of the exported function `func`: a panic becomes `SEQREC_ERR_INTERNAL`, an
/// error its status, each with a message in `seqrec_last_error()`; success clears the message.
pub(crate) fn boundary(func: &'static str, body: impl FnOnce() -> Result<()>) -> seqrec_status {
    let err = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            clear_last_error();
            return SEQREC_OK;
        }
        Ok(Err(e)) => e,
        Err(payload) => Error::Panic(panic_message(&*payload)),
    };
    record(func, &err);
    err.status()
}

/// The boundary for functions without a status (`*_free`): a panic is recorded as the last
/// error and otherwise swallowed; success leaves the last error as it was.
pub(crate) fn boundary_void(func: &'static str, body: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(body)) {
        record(func, &Error::Panic(panic_message(&*payload)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        // SAFETY: `last_error_ptr` returns a NUL-terminated buffer owned by this thread that
        // stays valid until the next seqrec call on it; it is copied at once.
        unsafe { CStr::from_ptr(last_error_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn panics_become_internal_errors_with_their_message() {
        let status = boundary("seqrec_test", || panic!("boom {}", 42));
        assert_eq!(status, SEQREC_ERR_INTERNAL);
        assert_eq!(last(), "seqrec_test: internal error (panic): boom 42");
        let status = boundary("seqrec_test", || std::panic::panic_any(7u8));
        assert_eq!(status, SEQREC_ERR_INTERNAL);
        assert!(last().contains("non-string panic payload"), "{}", last());
        boundary_void("seqrec_test_free", || panic!("in free"));
        assert_eq!(last(), "seqrec_test_free: internal error (panic): in free");
    }

    #[test]
    fn success_clears_and_void_success_keeps_the_message() {
        assert_eq!(
            boundary("f", || Err(invalid("x is NULL"))),
            SEQREC_ERR_INVALID_ARGUMENT
        );
        assert_eq!(last(), "f: invalid argument: x is NULL");
        boundary_void("g", || ());
        assert_eq!(last(), "f: invalid argument: x is NULL");
        assert_eq!(boundary("f", || Ok(())), SEQREC_OK);
        assert_eq!(last(), "");
    }

    #[test]
    fn interior_nul_bytes_do_not_cut_the_message() {
        boundary("f", || Err(invalid("a\0b")));
        assert_eq!(last(), "f: invalid argument: a?b");
    }

    #[test]
    fn engine_errors_map_to_statuses() {
        use seqrec_engine::Error as E;
        let io = E::Io {
            path: "m".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let cases: Vec<(E, seqrec_status)> = vec![
            (io, SEQREC_ERR_IO),
            (E::Format("x".into()), SEQREC_ERR_FORMAT),
            (
                E::Config("x".into()).in_origin("<memory>"),
                SEQREC_ERR_FORMAT,
            ),
            (
                E::UnknownModel {
                    name: "x".into(),
                    known: "sasrec".into(),
                },
                SEQREC_ERR_FORMAT,
            ),
            (E::MissingTensor { name: "t".into() }, SEQREC_ERR_FORMAT),
            (
                E::Shape {
                    name: "t".into(),
                    expected: vec![1],
                    found: vec![2],
                },
                SEQREC_ERR_FORMAT,
            ),
            (
                E::Dtype {
                    name: "t".into(),
                    found: "I8".into(),
                },
                SEQREC_ERR_FORMAT,
            ),
            (
                E::ItemOutOfRange {
                    id: 0,
                    position: 0,
                    max: 3,
                },
                SEQREC_ERR_OUT_OF_RANGE,
            ),
            (E::UserOutOfRange { id: 9, max: 3 }, SEQREC_ERR_OUT_OF_RANGE),
            (E::EmptyHistory, SEQREC_ERR_INVALID_ARGUMENT),
            (E::InvalidArgument("x".into()), SEQREC_ERR_INVALID_ARGUMENT),
            (E::Unsupported("x".into()), SEQREC_ERR_UNSUPPORTED),
        ];
        for (e, want) in cases {
            let text = e.to_string();
            assert_eq!(Error::from(e).status(), want, "{text}");
        }
        let nested = Error::InBatch {
            index: 3,
            source: Box::new(Error::OutOfRange("k".into())),
        };
        assert_eq!(nested.status(), SEQREC_ERR_OUT_OF_RANGE);
        assert_eq!(nested.to_string(), "history 3: out of range: k");
    }
}
