//! seqrec-trainer: the companion trainer of the seqrec engine and the `seqrec` command-line
//! tool.

pub mod cli;
pub mod nn;
