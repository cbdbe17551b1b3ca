//! `seqrec demo`: the whole loop on an embedded default. Generates the seeded synthetic log of
//! [`crate::synthetic`], trains SASRec on it with hand-derived gradients within a time budget,
//! evaluates it against the most-popular baseline (leave-one-out, full ranking), saves the
//! model, reloads it through the engine, and prints the top-10 for a few users.

use super::{CliError, CliResult, out};
use crate::data::{Builder, SplitMethod, split};
use crate::eval::{EvalOptions, Evaluator, Popularity, parse_metrics};
use crate::models::sasrec::{SasRecConfig, SasRecModel};
use crate::nn::Rng;
use crate::scorer::EngineScorer;
use crate::synthetic::{SyntheticConfig, generate};
use crate::train::{RunOptions, TrainOptions, train};
use clap::Args;
use seqrec_engine::{Model, Query};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where to save the trained model.
    #[arg(long, default_value = "demo-sasrec.safetensors")]
    out: PathBuf,
    /// Training budget in seconds.
    #[arg(long, default_value_t = 45.0)]
    time_budget: f64,
    /// Seed of the synthetic log and of training.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: DemoArgs) -> CliResult {
    let start = Instant::now();
    let syn = SyntheticConfig {
        seed: args.seed,
        ..Default::default()
    };
    let log = generate(&syn);
    let mut b = Builder::new(false, false);
    for (u, seq) in log.iter().enumerate() {
        for item in seq {
            b.push(&(u + 1).to_string(), &item.to_string(), None, None);
        }
    }
    let inter = b.finish();
    out(format!(
        "synthetic log: {} users, {} items, {} interactions ({} latent groups, Zipf popularity, {:.0}% successor transitions)",
        inter.n_users() - 1,
        inter.n_items() - 1,
        inter.n_interactions(),
        syn.n_groups,
        syn.p_follow * 100.0
    ))?;
    let split = split(&inter, &SplitMethod::LeaveOneOut).map_err(CliError::internal)?;
    let mut cfg = SasRecConfig::new(split.n_items, 50);
    cfg.hidden_dropout = 0.2;
    cfg.attn_dropout = 0.2;
    let mut model = SasRecModel::new(cfg, &mut Rng::new(args.seed));
    let opts = TrainOptions {
        batch_size: 32,
        run: RunOptions {
            seed: args.seed,
            time_budget: Some(Duration::from_secs_f64(args.time_budget)),
            patience: 5,
            progress: !args.quiet,
            ..Default::default()
        },
        ..Default::default()
    };
    let r = train(&mut model, &split, &opts).map_err(CliError::internal)?;
    out(format!(
        "trained SASRec (d=64, 2 layers, 2 heads): {} epochs in {:.1}s, best epoch {}, stopped by {:?}",
        r.log.len(),
        r.log.last().map_or(0.0, |l| l.elapsed),
        r.best_epoch,
        r.stop
    ))?;
    std::fs::write(&args.out, &r.checkpoint)
        .map_err(|e| CliError::input(format!("{}: {e}", args.out.display())))?;
    let engine = Model::load(&args.out)?;
    let metrics = parse_metrics("hr@10,ndcg@10,mrr@10").map_err(CliError::internal)?;
    let evaluator = Evaluator::new(
        &split,
        EvalOptions {
            metrics,
            ..Default::default()
        },
    )
    .map_err(CliError::internal)?;
    let ours = evaluator
        .evaluate_par(&split.test, &EngineScorer::new(&engine))
        .map_err(CliError::internal)?;
    let pop = evaluator
        .evaluate_par(&split.test, &Popularity::from_split(&split))
        .map_err(CliError::internal)?;
    out("test (leave-one-out, full ranking):")?;
    out(format!(
        "  {:<10} {:>8} {:>8} {:>8}",
        "model", "HR@10", "NDCG@10", "MRR@10"
    ))?;
    for (name, rep) in [("SASRec", &ours), ("MostPop", &pop)] {
        let v = |k: &str| rep.get(k).unwrap_or(f64::NAN);
        out(format!(
            "  {name:<10} {:>8.4} {:>8.4} {:>8.4}",
            v("hr@10"),
            v("ndcg@10"),
            v("mrr@10")
        ))?;
    }
    out(format!(
        "saved {} and reloaded it through the engine; top-10 for three users:",
        args.out.display()
    ))?;
    let mut ws = engine.new_workspace();
    for seq in split.test.iter().take(3) {
        let (history, target) = seq.event(0);
        let recs = engine.topk(&Query::new(history).exclude_history(true), 10, &mut ws)?;
        let tail: Vec<String> = history[history.len().saturating_sub(5)..]
            .iter()
            .map(u32::to_string)
            .collect();
        let items: Vec<String> = recs.iter().map(|r| r.item.to_string()).collect();
        out(format!(
            "  user {:>4}: history ...{} -> [{}] (held-out next item {target}{})",
            seq.user,
            tail.join(","),
            items.join(","),
            if recs.iter().any(|r| r.item == target) {
                ", recommended"
            } else {
                ""
            }
        ))?;
    }
    out(format!("done in {:.1}s", start.elapsed().as_secs_f64()))
}
