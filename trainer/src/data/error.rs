//! The error type of the trainer's data readers, splits and evaluation. Every message names the
//! file and 1-based line where one applies, and what was expected against what was found. The
//! trainer's own error ([`crate::Error`]) wraps it unchanged ([`crate::Error::Data`]).

use std::path::Path;

/// Result alias for data loading, splitting and evaluation.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Everything that can go wrong while reading a data set, splitting it or evaluating on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// Reading a file or listing a directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A line has the wrong number of fields.
    #[error("{path}:{line}: expected {expected} fields, found {found}")]
    ColumnCount {
        /// The file.
        path: String,
        /// 1-based line number (the header is line 1 where there is one).
        line: usize,
        /// Fields the header (or format) defines.
        expected: usize,
        /// Fields on the line.
        found: usize,
    },
    /// A numeric field does not parse, or is not finite where it must be.
    #[error("{path}:{line}: column `{column}`: `{value}` is not a valid {expected}")]
    BadNumber {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// Column name.
        column: String,
        /// The offending text.
        value: String,
        /// What it should be (`finite number`, `number`).
        expected: &'static str,
    },
    /// A required field is empty.
    #[error("{path}:{line}: column `{column}` is empty")]
    EmptyField {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// Column name.
        column: String,
    },
    /// A header entry is malformed (no `:type`, unknown type, duplicate name).
    #[error("{path}:{line}: header field `{field}`: {message}")]
    BadHeader {
        /// The file.
        path: String,
        /// 1-based line number of the header.
        line: usize,
        /// The header entry.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The header lacks a column the reader needs.
    #[error("{path}: missing required column `{column}` (header has: {found})")]
    MissingColumn {
        /// The file.
        path: String,
        /// The column that was looked for.
        column: String,
        /// The header's columns, comma-separated.
        found: String,
    },
    /// A column has a type the reader cannot use for its role.
    #[error("{path}: column `{column}` has type `{found}`, expected `{expected}`")]
    ColumnType {
        /// The file.
        path: String,
        /// Column name.
        column: String,
        /// The type the role needs.
        expected: String,
        /// The type in the header.
        found: String,
    },
    /// A line is malformed in a way the variants above do not describe (e.g. an unterminated
    /// quote in a CSV file).
    #[error("{path}:{line}: {message}")]
    Malformed {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A file or data set holds no interactions.
    #[error("{path}: no interactions")]
    Empty {
        /// The file or directory.
        path: String,
    },
    /// The format of a directory could not be recognised.
    #[error("{path}: cannot detect the data format ({found}); pass --data-format {known}")]
    UndetectedFormat {
        /// The directory.
        path: String,
        /// What was found there.
        found: String,
        /// The known formats.
        known: &'static str,
    },
    /// A name (data format, split, metric, protocol) does not parse.
    #[error("unknown {what} `{value}` (expected {expected})")]
    UnknownName {
        /// What kind of name it is.
        what: &'static str,
        /// The text given.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// The split needs timestamps and the data set has none.
    #[error("{0}: the data set has no timestamps")]
    NoTimestamps(&'static str),
    /// A split or evaluation cannot be applied to this data or with these settings.
    #[error("{0}")]
    Invalid(String),
    /// A scorer failed.
    #[error("scorer failed for user {user}: {message}")]
    Scorer {
        /// Internal user id of the event.
        user: u32,
        /// The scorer's message.
        message: String,
    },
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
