//! The engine's error type: every message names what was wrong (file, tensor, id) and, for
//! mismatches, both the expected and the found value.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

/// Result alias for the engine.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Everything that can go wrong when loading a model or scoring with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a file failed.
    #[cfg(feature = "std")]
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Context for an error raised while loading from a named source (a file path, or
    /// `<memory>` for a byte slice).
    #[error("{origin}: {source}")]
    Load {
        /// Where the model came from.
        origin: String,
        /// The underlying error.
        #[source]
        source: Box<Error>,
    },
    /// The bytes are not a valid safetensors file (truncated, corrupt header, bad offsets).
    #[error("invalid safetensors data: {0}")]
    Format(String),
    /// The model configuration is missing, not valid JSON, or inconsistent.
    #[error("config: {0}")]
    Config(String),
    /// The config names an architecture this build does not know.
    #[error("unknown model `{name}` (known: {known})")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The registered names, comma-separated.
        known: String,
    },
    /// A tensor the architecture needs is absent.
    #[error("tensor `{name}` is missing")]
    MissingTensor {
        /// Tensor name.
        name: String,
    },
    /// The file holds tensors the architecture does not use.
    #[error("unexpected tensor{} {}: not part of a `{model}` model", if names.len() == 1 { "" } else { "s" }, quote_list(names))]
    UnexpectedTensors {
        /// Architecture name.
        model: String,
        /// The extra tensors.
        names: Vec<String>,
    },
    /// A tensor's shape disagrees with the configuration.
    #[error("tensor `{name}`: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// Tensor name.
        name: String,
        /// Shape implied by the configuration.
        expected: Vec<usize>,
        /// Shape stored in the file.
        found: Vec<usize>,
    },
    /// A tensor has a dtype the engine cannot use.
    #[error("tensor `{name}`: dtype {found} is not supported (expected F32, F16 or BF16)")]
    Dtype {
        /// Tensor name.
        name: String,
        /// Dtype stored in the file.
        found: String,
    },
    /// A weight is NaN or infinite.
    #[error("tensor `{name}`: non-finite value {value} at flat index {index}")]
    NonFinite {
        /// Tensor name.
        name: String,
        /// Flat index of the first bad value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// An item id outside `1..n_items` (0 is padding).
    #[error("item id {id} at history position {position} is out of range: valid ids are 1..={max}")]
    ItemOutOfRange {
        /// The bad id.
        id: u32,
        /// Its index in the history.
        position: usize,
        /// Largest valid id (`n_items - 1`).
        max: u32,
    },
    /// A user id outside `0..n_users`.
    #[error("user id {id} is out of range: valid ids are 0..={max}")]
    UserOutOfRange {
        /// The bad id.
        id: u32,
        /// Largest valid id.
        max: u32,
    },
    /// A history with no events.
    #[error("empty history: at least one item id is needed")]
    EmptyHistory,
    /// A tokenizer file could not be loaded or used (Hugging Face `tokenizer.json`).
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Saved session state that cannot be restored: truncated, corrupt, of another format
    /// version, or not matching the model's shapes.
    #[error("session state: {0}")]
    SessionState(String),
    /// A PyTorch checkpoint (`.pth`) that is truncated, corrupt, or outside the supported
    /// subset of the zip and pickle formats (the message names the opcode, class or record).
    #[error("PyTorch checkpoint: {0}")]
    Checkpoint(String),
    /// Any other bad argument, described.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The requested operation is not available in this build or on this device.
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// A GPU is missing or failed: no CUDA driver or NVRTC library, no such device, a driver or
    /// kernel error.
    #[error("device: {0}")]
    Device(String),
}

fn quote_list(names: &[String]) -> String {
    let mut s = String::new();
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        if i == 8 {
            s.push_str(&alloc::format!("... ({} more)", names.len() - 8));
            break;
        }
        s.push('`');
        s.push_str(n);
        s.push('`');
    }
    s
}

impl Error {
    /// Wraps the error with the name of the source it was loading from.
    pub fn in_origin(self, origin: &str) -> Error {
        match self {
            e @ Error::Load { .. } => e,
            #[cfg(feature = "std")]
            e @ Error::Io { .. } => e,
            e => Error::Load {
                origin: origin.into(),
                source: Box::new(e),
            },
        }
    }

    /// The innermost error, without `Load` context.
    pub fn root(&self) -> &Error {
        match self {
            Error::Load { source, .. } => source.root(),
            e => e,
        }
    }

    /// Whether the error comes from the caller's input (history ids, arguments) rather than
    /// from the model file.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self.root(),
            Error::ItemOutOfRange { .. }
                | Error::UserOutOfRange { .. }
                | Error::EmptyHistory
                | Error::InvalidArgument(_)
        )
    }
}
