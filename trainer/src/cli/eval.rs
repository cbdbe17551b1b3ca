//! `seqrec eval MODEL --data PATH`: accuracy and beyond-accuracy metrics of a model (or of the
//! most-popular baseline, `MODEL` = `pop`) on a data set's test (or validation) events.
//! `seqrec eval MODEL --pdit-data FILE`: HR@20 / NDCG@20 of a generator (pdit, dreamrec) on a
//! PDiT data file's test (or validation) examples.

use super::{CliError, CliResult, Format, out};
use crate::data::session_boundaries;
use crate::data::{self, DataError, DataFormat, EvalSeq, SplitMethod};
use crate::eval::{EvalOptions, Evaluator, Popularity, Protocol, parse_metrics};
use crate::models::transrec::checkpoint::HELD_OUT_KEY;
use crate::scorer::EngineScorer;
use crate::session_scorer::SessionScorer;
use clap::Args;
use seqrec_engine::Model;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model file (safetensors), or `pop` for the most-popular baseline.
    model: String,
    /// Data set: a directory or file.
    #[arg(long, required_unless_present = "pdit_data")]
    data: Option<PathBuf>,
    /// A PDiT data file (`seqrec pdit data`): evaluates a generator (pdit, dreamrec) on its
    /// examples.
    #[arg(long, conflicts_with = "data")]
    pdit_data: Option<PathBuf>,
    /// With --pdit-data: sampling steps of a PDiT (the base chain of T steps by default, as
    /// the thesis; fewer respace it).
    #[arg(long, requires = "pdit_data")]
    steps: Option<usize>,
    /// Data format (detected from the files when absent).
    #[arg(long, value_parser = parse_format)]
    data_format: Option<DataFormat>,
    /// Split: loo, ratio[:A:B:C][@SEED], session[:MINUTES], given (the default is the data
    /// set's own split for pre-split benchmarks, leave-one-out otherwise).
    #[arg(long)]
    split: Option<String>,
    #[command(flatten)]
    filters: super::filter::FilterArgs,
    /// full, or sampled100 / sampled[:N][@SEED] (the SASRec paper's protocol).
    #[arg(long, default_value = "full")]
    protocol: String,
    /// Comma-separated metrics: hr@k, ndcg@k, mrr@k, cv_div@k, cv_nov@k, r@k, up@k, hr_ser@k,
    /// ndcg_ser@k (default hr@10,ndcg@10,mrr@10; with --pdit-data hr@20,ndcg@20, and only
    /// hr, ndcg and mrr).
    #[arg(long)]
    metrics: Option<String>,
    /// Remove history items from the ranking.
    #[arg(long)]
    exclude_history: bool,
    /// With a session split: give a plain model only the current session's prefix, not the
    /// user's earlier sessions.
    #[arg(long)]
    session_history_only: bool,
    /// Evaluate on the validation events instead of the test events.
    #[arg(long)]
    valid: bool,
    /// Only the events whose target never appears in the training data (cold-start items;
    /// a TransRec model scores them through their text), or is one of the items the model
    /// was trained without (`seqrec train --hold-out-items`, listed in its file).
    #[arg(long)]
    cold_start: bool,
    /// Seed of the sampled protocol's negatives (and of ratio splits); with --pdit-data, of the
    /// sampling noise (default 2020).
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    objectives: super::objectives::ObjectiveArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// The events of `seqs` whose target is absent from the training data or one of the sorted
/// `held_out` items, one evaluation sequence per event; an error when there is none.
fn cold_start_events(
    split: &data::Split,
    seqs: &[EvalSeq],
    held_out: &[u32],
) -> Result<Vec<EvalSeq>, CliError> {
    let mut counts = split.item_counts();
    for &i in held_out {
        if let Some(c) = counts.get_mut(i as usize) {
            *c = 0;
        }
    }
    let counts = &counts;
    let cold: Vec<EvalSeq> = seqs
        .iter()
        .flat_map(|s| {
            (0..s.n_events()).filter_map(move |j| {
                let (_, target) = s.event(j);
                (counts.get(target as usize).copied().unwrap_or(0) == 0).then(|| EvalSeq {
                    user: s.user,
                    items: s.items[..s.first_target + j + 1].to_vec(),
                    first_target: s.first_target + j,
                    session_start: s.session_start,
                })
            })
        })
        .collect();
    if cold.is_empty() {
        return Err(CliError::input(
            "--cold-start: no evaluation target is absent from the training data",
        ));
    }
    Ok(cold)
}

pub(crate) fn parse_format(s: &str) -> Result<DataFormat, DataError> {
    s.parse::<DataFormat>()
}

pub fn run(args: EvalArgs) -> CliResult {
    let data_path = match (&args.data, &args.pdit_data) {
        (_, Some(file)) => {
            return super::train_pdit::eval(&super::train_pdit::EvalRequest {
                model: &args.model,
                data: file,
                steps: args.steps,
                seed: args.seed.unwrap_or(2020),
                valid: args.valid,
                exclude_history: args.exclude_history,
                metrics: args.metrics.as_deref(),
                format: args.format,
            });
        }
        (Some(d), None) => d,
        (None, None) => return Err(CliError::input("give --data (or --pdit-data)")),
    };
    let dataset = data::load(data_path, args.data_format).map_err(CliError::input)?;
    let mut method = match &args.split {
        Some(s) => s.parse::<SplitMethod>().map_err(CliError::input)?,
        None => dataset.default_split_method(),
    };
    let protocol_text = if args.protocol.eq_ignore_ascii_case("sampled100") {
        "sampled:100"
    } else {
        &args.protocol
    };
    let mut protocol = protocol_text.parse::<Protocol>().map_err(CliError::input)?;
    if let Some(seed) = args.seed {
        method = method.with_seed(seed);
        if let Protocol::Sampled { negatives, .. } = protocol {
            protocol = Protocol::Sampled { negatives, seed };
        }
    }
    let dataset = args.filters.apply(dataset, &method)?;
    let split = dataset.split(&method).map_err(CliError::input)?;
    let metrics = parse_metrics(args.metrics.as_deref().unwrap_or("hr@10,ndcg@10,mrr@10"))
        .map_err(CliError::input)?;
    let opts = EvalOptions {
        metrics,
        protocol,
        exclude_history: args.exclude_history,
        session_history_only: args.session_history_only,
    };
    let evaluator = Evaluator::new(&split, opts).map_err(CliError::input)?;
    let seqs = if args.valid {
        &split.valid
    } else {
        &split.test
    };
    let model = match args.model.as_str() {
        "pop" => None,
        path => Some(Model::load(path)?),
    };
    let cold;
    let seqs = if args.cold_start {
        let mut held: Vec<u32> = match &model {
            Some(m) => m
                .config()
                .usize_list_or(HELD_OUT_KEY, &[])
                .map_err(|e| CliError::input(format!("{}: {e}", args.model)))?
                .into_iter()
                .map(|i| i as u32)
                .collect(),
            None => Vec::new(),
        };
        held.sort_unstable();
        cold = cold_start_events(&split, seqs, &held)?;
        &cold
    } else {
        seqs
    };
    let report = match model {
        None => {
            let pop = Popularity::from_split(&split);
            evaluator.evaluate_par(seqs, &pop)
        }
        Some(model) => {
        let n = model.info().n_items;
        if n != split.n_items {
            return Err(CliError::input(format!(
                "{}: the model has {n} item ids but the data set has {} (padding included): it was not trained on these ids",
                args.model, split.n_items
            )));
        }
        let objectives = args.objectives.apply(&model)?;
        if super::hier::HIERARCHICAL.contains(&model.info().arch) {
            if !matches!(split.method, SplitMethod::Session { .. }) {
                return Err(CliError::input(format!(
                    "{}: a hierarchical model ({}) is evaluated on sessions: use --split session",
                    args.model,
                    model.info().arch
                )));
            }
            let scorer = SessionScorer::new(&model, session_boundaries(&split));
            evaluator.evaluate_par(seqs, &scorer.with_objectives(objectives))
        } else {
            evaluator.evaluate_par(seqs, &EngineScorer::new(&model).with_objectives(objectives))
        }
    }
    }
    .map_err(CliError::input)?;
    match args.format {
        Format::Json => out(json!({
            "protocol": protocol.to_string(),
            "split": split.method.to_string(),
            "on": if args.valid { "valid" } else { "test" },
            "cold_start": args.cold_start,
            "users": report.n_users,
            "events": report.n_events,
            "metrics": report,
        })),
        Format::Text => {
            out(format!(
                "{} on {} ({} split, {} protocol, {}{}): {} users, {} events",
                args.model,
                data_path.display(),
                split.method,
                protocol,
                if args.valid { "valid" } else { "test" },
                if args.cold_start {
                    ", cold-start targets"
                } else {
                    ""
                },
                report.n_users,
                report.n_events
            ))?;
            for (name, value) in &report.values {
                out(format!("  {name:<12} {value:.4}"))?;
            }
            Ok(())
        }
    }
}
