//! The trainer's error type: one enum for training runs, model construction, similarity tables
//! and names given on the command line. Data-set errors keep their own type
//! ([`DataError`], which names the file, line and column) and are
//! wrapped; engine errors (checkpoints, knobs, validation through the engine) likewise.
//!
//! Messages name what was wrong: the option and its value, the table and both catalog sizes,
//! the name and what is accepted. The command line prints them on one line (`crate::cli`
//! decides the exit code of each call site: 2 for bad input, 1 for internal failures).

use crate::data::DataError;

/// Result alias for the trainer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while building or training a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading, splitting or evaluating a data set failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The engine refused a checkpoint, a knob or an argument (every validation runs through
    /// the engine).
    #[error(transparent)]
    Engine(#[from] seqrec_engine::Error),
    /// A model file given as input (e.g. a similarity model) could not be loaded.
    #[error("{path}: {source}")]
    ModelFile {
        /// The file.
        path: String,
        /// Why the engine refused it.
        #[source]
        source: seqrec_engine::Error,
    },
    /// A name (loss, architecture, backbone, head, dtype) is not one of the accepted ones.
    #[error("{}`{value}` is not one of {expected}", name_label(.what))]
    UnknownName {
        /// What kind of name (empty where the context says it).
        what: &'static str,
        /// The text given.
        value: String,
        /// The accepted names.
        expected: &'static str,
    },
    /// A setting is outside its range.
    #[error("{option} {value} {requirement}")]
    OutOfRange {
        /// The setting.
        option: String,
        /// Its value.
        value: String,
        /// What it must satisfy (`is not in [0, 1)`, ...).
        requirement: String,
    },
    /// A table or a model does not cover the data set's catalog.
    #[error("{what} has {found} item ids, the data set {expected} (padding included)")]
    ItemCount {
        /// The table or model.
        what: &'static str,
        /// Its catalog size.
        found: usize,
        /// The data set's catalog size.
        expected: usize,
    },
    /// There is nothing to train on.
    #[error("{0}")]
    NoTrainingData(&'static str),
    /// The split has no validation data to select a checkpoint with.
    #[error("the split has no validation {what} to select a checkpoint with")]
    NoValidation {
        /// `events` or `sessions`.
        what: &'static str,
    },
    /// A gradient check failed: a backward pass disagrees with finite differences.
    #[error("{0}")]
    GradCheck(String),
    /// Any other invalid setting or input, described.
    #[error("{0}")]
    Invalid(String),
}

fn name_label(what: &str) -> String {
    if what.is_empty() {
        String::new()
    } else {
        format!("{what} ")
    }
}

impl Error {
    /// An [`Error::OutOfRange`] for `option` at `value`.
    pub(crate) fn out_of_range(
        option: impl Into<String>,
        value: impl std::fmt::Display,
        requirement: impl Into<String>,
    ) -> Self {
        Error::OutOfRange {
            option: option.into(),
            value: value.to_string(),
            requirement: requirement.into(),
        }
    }

    /// An [`Error::UnknownName`].
    pub(crate) fn unknown_name(what: &'static str, value: &str, expected: &'static str) -> Self {
        Error::UnknownName {
            what,
            value: value.to_string(),
            expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_value_and_what_is_accepted() {
        let e = Error::unknown_name("backbone", "lstm", "gru4rec, sasrec");
        assert_eq!(
            e.to_string(),
            "backbone `lstm` is not one of gru4rec, sasrec"
        );
        let e = Error::unknown_name("", "mse", "ce, bpr");
        assert_eq!(e.to_string(), "`mse` is not one of ce, bpr");
        let e = Error::out_of_range("dropout", 1.5f32, "is not in [0, 1)");
        assert_eq!(e.to_string(), "dropout 1.5 is not in [0, 1)");
        let e = Error::ItemCount {
            what: "the similarity table",
            found: 10,
            expected: 12,
        };
        assert_eq!(
            e.to_string(),
            "the similarity table has 10 item ids, the data set 12 (padding included)"
        );
        let e: Error = seqrec_engine::Error::EmptyHistory.into();
        assert_eq!(
            e.to_string(),
            seqrec_engine::Error::EmptyHistory.to_string()
        );
    }
}
