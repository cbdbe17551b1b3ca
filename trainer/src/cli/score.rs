//! `seqrec score MODEL --history 12,7,99 | --batch FILE`.

use super::{CliError, CliResult, Format, out};
use clap::Args;
use seqrec_engine::{Backend, DType, Device, LoadOptions, Model, Objectives, Query, Scored};
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// Model file (safetensors).
    model: PathBuf,
    /// Comma-separated item ids, oldest first.
    #[arg(long, conflicts_with_all = ["batch", "sessions"], required_unless_present_any = ["batch", "sessions"])]
    history: Option<String>,
    /// A user's sessions through a session, oldest first, separated by `|`
    /// (`12,7|99,4|31`): every group but the last is a finished session followed by a session
    /// boundary, the last is the current session. Hierarchical models (hdt, interdt, hier)
    /// carry the finished sessions into their state; after a trailing `|` hdt and interdt
    /// predict the next session's first item.
    #[arg(long, conflicts_with = "batch")]
    sessions: Option<String>,
    /// File with one comma-separated history per line.
    #[arg(long)]
    batch: Option<PathBuf>,
    /// User id (required by models with a user embedding, such as Caser).
    #[arg(long)]
    user: Option<u32>,
    /// Number of recommendations.
    #[arg(short = 'k', long = "k", default_value_t = 10)]
    k: usize,
    /// Never recommend items of the history.
    #[arg(long)]
    exclude_history: bool,
    /// Storage of the scoring item table.
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    item_dtype: DType,
    /// Where to score: `cpu`, `cuda` (the first GPU) or `cuda:N`.
    #[arg(long, default_value = "cpu", value_parser = super::parse_device)]
    device: Device,
    #[command(flatten)]
    objectives: super::objectives::ObjectiveArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub(crate) fn parse_dtype(s: &str) -> crate::Result<DType> {
    DType::parse(s).ok_or_else(|| crate::Error::unknown_name("", s, "f32, f16, bf16, i8"))
}

/// Parses `12,7,99` (spaces allowed around ids).
pub fn parse_history(s: &str) -> crate::Result<Vec<u32>> {
    let s = s.trim();
    if s.is_empty() {
        return Err(crate::Error::Invalid("empty history".into()));
    }
    s.split(',')
        .enumerate()
        .map(|(i, t)| {
            let t = t.trim();
            t.parse::<u32>().map_err(|_| {
                crate::Error::Invalid(format!("`{t}` (entry {}) is not an item id", i + 1))
            })
        })
        .collect()
}

fn render(recs: &[Scored], format: Format) -> String {
    match format {
        Format::Json => json!({
            "items": recs.iter().map(|r| r.item).collect::<Vec<_>>(),
            "scores": recs.iter().map(|r| r.score).collect::<Vec<_>>(),
        })
        .to_string(),
        Format::Text => recs
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{:>3}  {:>8}  {:.6}", i + 1, r.item, r.score))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

pub fn run(args: ScoreArgs) -> CliResult {
    if args.k == 0 {
        return Err(CliError::input("-k must be at least 1"));
    }
    let opts = LoadOptions {
        item_dtype: args.item_dtype,
        device: args.device,
        ..Default::default()
    };
    match args.device {
        Device::Cpu => run_on(Model::load_with(&args.model, &opts)?, args),
        Device::Cuda(n) => run_on(super::load_cuda(&args.model, &opts, n)?, args),
    }
}

/// Scores with `model`, on whichever backend it was loaded.
fn run_on<B: Backend>(model: Model<B>, args: ScoreArgs) -> CliResult {
    let objectives = args.objectives.apply(&model)?;
    let (user, exclude_history) = (args.user, args.exclude_history);
    fn query<'a>(
        h: &'a [u32],
        user: Option<u32>,
        exclude_history: bool,
        objectives: &'a Objectives,
    ) -> Query<'a> {
        let q = Query::new(h)
            .exclude_history(exclude_history)
            .objectives(objectives);
        match user {
            Some(u) => q.user(u),
            None => q,
        }
    }
    if let Some(spec) = &args.sessions {
        let mut s = match user {
            Some(u) => model.session_for_user(u)?,
            None => model.session()?,
        };
        for (name, value) in objectives.iter() {
            s.set_objective(name, value)?;
        }
        let groups: Vec<&str> = spec.split('|').collect();
        for (k, g) in groups.iter().enumerate() {
            if !g.trim().is_empty() {
                let items = parse_history(g)
                    .map_err(|e| CliError::input(format!("--sessions, session {}: {e}", k + 1)))?;
                s.extend(&items)?;
            }
            if k + 1 < groups.len() {
                s.end()?;
            }
        }
        let recs = s.topk(args.k, exclude_history)?;
        return out(render(&recs, args.format));
    }
    if let Some(h) = &args.history {
        let history = parse_history(h).map_err(|e| CliError::input(format!("--history: {e}")))?;
        let mut ws = model.new_workspace();
        let recs = model.topk(
            &query(&history, user, exclude_history, &objectives),
            args.k,
            &mut ws,
        )?;
        return out(render(&recs, args.format));
    }
    let path = args
        .batch
        .as_ref()
        .expect("clap requires --history, --sessions or --batch");
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
    let mut histories = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let h = parse_history(line)
            .map_err(|e| CliError::input(format!("{}:{}: {e}", path.display(), i + 1)))?;
        histories.push(h);
    }
    let queries: Vec<Query<'_>> = histories
        .iter()
        .map(|h| query(h, user, exclude_history, &objectives))
        .collect();
    let results = model.topk_batch(&queries, args.k);
    let mut lines = Vec::with_capacity(results.len());
    for (i, r) in results.into_iter().enumerate() {
        let recs = r.map_err(|e| CliError::input(format!("{}:{}: {e}", path.display(), i + 1)))?;
        lines.push(render(&recs, args.format));
    }
    for (i, l) in lines.iter().enumerate() {
        if args.format == Format::Text {
            out(format!("# line {}", i + 1))?;
        }
        out(l)?;
    }
    Ok(())
}
