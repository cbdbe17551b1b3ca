//! `seqrec le ...`: the language environment of the RL heads (`spec/thesis-models.md` §7).
//!
//! `seqrec le samples` lists the training samples an LE cache has one row for, in the cache's
//! order, with internal ids and tokens, a seeded negative per sample and (with `--model`) the
//! recommender's top-5 for the augmentation prompt: what a program computing an environment
//! elsewhere (for example a large language model on a GPU) needs to write the cache
//! (`docs/formats.md`, "LE cache").

use super::{CliError, CliResult, out};
use crate::data::{self, DataFormat, SplitMethod};
use crate::models::rl::samples::{Transitions, sample_other};
use crate::nn::Rng;
use clap::{Args, Subcommand};
use seqrec_engine::{Model, Query};
use std::fmt::Write as _;
use std::path::PathBuf;

/// `seqrec le ...`
#[derive(Args, Debug)]
pub struct LeArgs {
    #[command(subcommand)]
    command: LeCommand,
}

#[derive(Subcommand, Debug)]
enum LeCommand {
    /// The training samples of an LE cache, one TSV row each, in the cache's order.
    Samples(SamplesArgs),
}

/// `seqrec le samples`
#[derive(Args, Debug)]
struct SamplesArgs {
    /// Data set (as `seqrec train --data`).
    #[arg(long)]
    data: PathBuf,
    /// Input format (default: detected).
    #[arg(long, value_parser = super::eval::parse_format)]
    data_format: Option<DataFormat>,
    /// Split, as `seqrec train --split` (the RL heads train on whole sequences: e.g.
    /// `ratio:0.8,0.1,0.1`).
    #[arg(long)]
    split: Option<String>,
    /// Most recent history items listed per sample (the LE state's window; 10 in the thesis).
    #[arg(long, default_value_t = 10)]
    max_len: usize,
    /// Seed of the listed negatives.
    #[arg(long, default_value_t = 2020)]
    seed: u64,
    /// A model over the same split: its top-5 for each sample's history is listed (the
    /// augmentation prompt's candidates).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output TSV file.
    #[arg(long)]
    out: PathBuf,
}

/// Runs `seqrec le ...`.
pub fn run(args: LeArgs) -> CliResult {
    match args.command {
        LeCommand::Samples(a) => samples(a),
    }
}

fn samples(a: SamplesArgs) -> CliResult {
    if a.max_len == 0 {
        return Err(CliError::input("--max-len must be at least 1"));
    }
    let dataset = data::load(&a.data, a.data_format).map_err(CliError::input)?;
    let method = match &a.split {
        Some(s) => s.parse::<SplitMethod>().map_err(CliError::input)?,
        None => dataset.default_split_method(),
    };
    let split = dataset.split(&method).map_err(CliError::input)?;
    let data = Transitions::from_split(&split, a.max_len).map_err(CliError::input)?;
    let n_items = split.n_items;
    let model = match &a.model {
        Some(p) => {
            let m = Model::load(p)?;
            if m.info().n_items != n_items {
                return Err(CliError::input(format!(
                    "{}: the model has {} item ids, the data set {n_items} (padding included)",
                    p.display(),
                    m.info().n_items
                )));
            }
            Some(m)
        }
        None => None,
    };
    let items = dataset.items();
    let users = dataset.users();
    let item = |i: u32| items.token(i).unwrap_or("?");
    let list = |ids: &[u32]| ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
    let tokens = |ids: &[u32]| ids.iter().map(|&i| item(i)).collect::<Vec<_>>().join(" ");
    let mut text = String::from(
        "sample\tuser\thistory\taction\tnegative\tuser_token\thistory_tokens\taction_token\tnegative_token",
    );
    if model.is_some() {
        text.push_str("\ttop5\ttop5_tokens");
    }
    text.push('\n');
    let mut rng = Rng::new(a.seed ^ 0x4C45);
    let mut ws = model.as_ref().map(Model::new_workspace);
    for i in 0..data.len() {
        let t = data.get(i);
        let neg = sample_other(&mut rng, n_items, t.action);
        let user = users.token(t.user).unwrap_or("?");
        write!(
            text,
            "{i}\t{}\t{}\t{}\t{neg}\t{user}\t{}\t{}\t{}",
            t.user,
            list(t.state),
            t.action,
            tokens(t.state),
            item(t.action),
            item(neg)
        )
        .expect("writing to a String");
        if let (Some(m), Some(ws)) = (&model, &mut ws) {
            let mut q = Query::new(t.state);
            if m.info().n_users.is_some() {
                q = q.user(t.user);
            }
            let ids: Vec<u32> = m.topk(&q, 5, ws)?.iter().map(|s| s.item).collect();
            write!(text, "\t{}\t{}", list(&ids), tokens(&ids)).expect("writing to a String");
        }
        text.push('\n');
    }
    std::fs::write(&a.out, text)
        .map_err(|e| CliError::input(format!("{}: {e}", a.out.display())))?;
    out(format!(
        "wrote {} samples over {n_items} item ids (padding included) to {}",
        data.len(),
        a.out.display()
    ))
}
