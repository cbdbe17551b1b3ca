//! The thesis's data preprocessing, shared by `seqrec train` and `seqrec eval`: the session
//! filter of a session split (§5.1) and the sequence filter of a ratio or leave-one-out split
//! (§4.8, §7.6).

use super::CliError;
use crate::data::{
    Dataset, SequenceFilter, SessionFilter, SplitMethod, filter_sequences, filter_sessions,
};
use clap::Args;

/// The preprocessing flags (give `train` and `eval` the same ones: item ids are renumbered over
/// the surviving items).
#[derive(Args, Debug)]
pub struct FilterArgs {
    /// With --split session: the thesis's preprocessing, ITEMS:SESSION_LEN:SESSIONS (drop items
    /// with fewer interactions, then shorter sessions, then users with fewer sessions);
    /// default 3:3:5, `none` to keep every session.
    #[arg(long)]
    session_filter: Option<String>,
    /// With a ratio or leave-one-out split: drop items with fewer than ITEMS interactions, then
    /// sequences shorter than SEQ_LEN (`ITEMS:SEQ_LEN`; the thesis's sequence data use 3:3;
    /// default off). Item ids are renumbered over the surviving items; evaluate with the same
    /// filter.
    #[arg(long)]
    filter: Option<String>,
}

impl FilterArgs {
    /// Applies the filters to `dataset` before it is split with `method`. A session split takes
    /// `--session-filter`: absent (the default thresholds 3:3:5), `none` (off) or
    /// `ITEMS:SESSION_LEN:SESSIONS`. A ratio or leave-one-out split takes `--filter`: absent
    /// (off) or `ITEMS:SEQ_LEN`; a benchmark's sequences are filtered too when it is split by
    /// ratio. Other combinations are errors.
    pub fn apply(&self, dataset: Dataset, method: &SplitMethod) -> Result<Dataset, CliError> {
        let dataset = match (self.filter.as_deref(), method, dataset) {
            (None, _, dataset) => dataset,
            (Some(f), SplitMethod::Ratio { .. } | SplitMethod::LeaveOneOut, dataset) => {
                let f = f.parse::<SequenceFilter>().map_err(CliError::input)?;
                let inter = match &dataset {
                    Dataset::Interactions(i) => filter_sequences(i, &f),
                    Dataset::Presplit(p) => filter_sequences(&p.interactions(), &f),
                }
                .map_err(CliError::input)?;
                Dataset::Interactions(inter)
            }
            (Some(_), m, _) => {
                return Err(CliError::input(format!(
                    "--filter applies to a ratio or leave-one-out split, not to `{m}` \
                     (a session split takes --session-filter)"
                )));
            }
        };
        let session_filter = self.session_filter.as_deref();
        let off = session_filter.is_some_and(|f| f.eq_ignore_ascii_case("none"));
        match (method, dataset) {
            (SplitMethod::Session { gap_secs }, Dataset::Interactions(inter)) if !off => {
                let f = match session_filter {
                    Some(f) => f.parse::<SessionFilter>().map_err(CliError::input)?,
                    None => SessionFilter::default(),
                };
                let inter = filter_sessions(&inter, *gap_secs, &f).map_err(CliError::input)?;
                Ok(Dataset::Interactions(inter))
            }
            (_, dataset) if session_filter.is_none() || off => Ok(dataset),
            _ => Err(CliError::input(
                "--session-filter applies to a session split of interactions (--split session)",
            )),
        }
    }
}
