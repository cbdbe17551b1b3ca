//! `seqrec bench MODEL`: times top-k scoring of seeded random full-length histories after a
//! warm-up, and prints latency percentiles and throughput. `seqrec bench --random ARCH
//! [--items N]` times a RecBole-shaped model with seeded random weights built in memory
//! (RecBole's default hyper-parameters, window 50), so that no model file is needed.
//! `seqrec bench --kernels` times the kernel families instead (`bench_kernels`).

use super::{CliError, CliResult, Format, out};
use crate::nn::Rng;
use clap::Args;
use seqrec_engine::testing::{random_model_bytes, recbole_default_config};
use seqrec_engine::{DType, LoadOptions, Model, Query};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model file (safetensors).
    #[arg(required_unless_present_any = ["random", "kernels"])]
    model: Option<PathBuf>,
    /// Instead of a model: time each kernel family on the shipped models' shapes, on one
    /// thread, at every instruction-set level of this CPU (or those of `--isa`), with the
    /// measured peak FMA rate.
    #[arg(long, conflicts_with_all = ["model", "random"])]
    kernels: bool,
    /// Levels for `--kernels` (scalar, v3, v4, neon); repeat or separate with commas.
    #[arg(
        long,
        value_name = "LEVEL",
        value_delimiter = ',',
        requires = "kernels"
    )]
    isa: Vec<String>,
    /// Instead of a file: a RecBole-shaped ARCH (sasrec, gru4rec, nextitnet, caser) with
    /// RecBole's default hyper-parameters, window 50 and seeded random weights (N(0, 0.1²)).
    #[arg(long, value_name = "ARCH", conflicts_with = "model")]
    random: Option<String>,
    /// Catalog size of the `--random` model (padding id 0 included).
    #[arg(long, default_value_t = 23_716, requires = "random")]
    items: usize,
    /// Histories per timed call (1 = latency of a single request).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Worker threads for batches (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Timed iterations (after as many warm-up iterations, at most 20).
    #[arg(long, default_value_t = 200)]
    iters: usize,
    /// Recommendations per request.
    #[arg(short = 'k', long = "k", default_value_t = 10)]
    k: usize,
    /// Storage of the scoring item table.
    #[arg(long, default_value = "f32", value_parser = super::score::parse_dtype)]
    item_dtype: DType,
    /// Time one push + top-k on a session whose history already fills the window.
    #[arg(long)]
    session: bool,
    /// With `--session`: time one `session_feedback` (reward 1 and 0 in turn) + top-k instead
    /// of a push (models with an actor-critic head: `seqrec rl` agents, linear-head
    /// sqn/snqn/sa2c).
    #[arg(long, requires = "session")]
    feedback: bool,
    /// Seed of the random histories.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Caser's user count for `--random` models.
const RANDOM_USERS: usize = 1000;

/// A RecBole-shaped `arch` over `n_items` items with RecBole's defaults and seeded random
/// weights, as the criterion benches build them.
fn random_model(arch: &str, n_items: usize, opts: &LoadOptions) -> Result<Model, CliError> {
    let cfg = recbole_default_config(arch, n_items, RANDOM_USERS)?;
    let bytes = random_model_bytes(&cfg, 1, 0.1)?;
    Ok(Model::from_bytes(&bytes, opts)?)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn run(args: BenchArgs) -> CliResult {
    if args.kernels {
        return super::bench_kernels::run(&args.isa, args.format);
    }
    if args.batch == 0 || args.iters == 0 || args.k == 0 {
        return Err(CliError::input(
            "--batch, --iters and -k must be at least 1",
        ));
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        return Err(CliError::input("--threads must be at least 1"));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| CliError::internal(format!("thread pool: {e}")))?;
    let opts = LoadOptions {
        item_dtype: args.item_dtype,
        ..Default::default()
    };
    let model = match (&args.model, &args.random) {
        (Some(path), _) => Model::load_with(path, &opts)?,
        (None, Some(arch)) => random_model(arch, args.items, &opts)?,
        (None, None) => return Err(CliError::input("give a MODEL file or --random ARCH")),
    };
    let info = model.info().clone();
    // Models with a user embedding score as user 1 (the first real user; 0 is padding).
    let user = info.n_users.map(|n| u32::from(n > 1));
    let mut rng = Rng::new(args.seed);
    let mut random_history = || -> Vec<u32> {
        (0..info.max_len)
            .map(|_| 1 + rng.below(info.n_items - 1) as u32)
            .collect()
    };
    let warmup = args.iters.min(20);
    // The timing loop runs on a worker of the pool, so that `--threads` also bounds the
    // threads a single request may use and no call pays a hand-over to the pool.
    let mut times = pool.install(|| -> Result<Vec<f64>, CliError> {
        let mut times = Vec::with_capacity(args.iters);
        if args.session {
            let mut ws = model.new_workspace();
            let (mut items, mut scores) = (vec![0u32; args.k], vec![0f32; args.k]);
            let mut s = match user {
                Some(u) => model.new_session_for_user(u)?,
                None => model.new_session()?,
            };
            for item in random_history() {
                model.session_push(&mut s, item, &mut ws)?;
            }
            let events = random_history();
            for i in 0..warmup + args.iters {
                let t = Instant::now();
                let item = events[i % events.len()];
                if args.feedback {
                    let reward = if i % 2 == 0 { 1.0 } else { 0.0 };
                    model.session_feedback(&mut s, item, reward, &mut ws)?;
                } else {
                    model.session_push(&mut s, item, &mut ws)?;
                }
                model.session_topk_into(&s, args.k, false, &mut ws, &mut items, &mut scores)?;
                if i >= warmup {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
        } else {
            let histories: Vec<Vec<u32>> = (0..args.batch * 4).map(|_| random_history()).collect();
            let queries: Vec<Query<'_>> = histories
                .iter()
                .map(|h| match user {
                    Some(u) => Query::new(h).user(u),
                    None => Query::new(h),
                })
                .collect();
            let mut ws = model.new_workspace();
            let (mut items, mut scores) = (vec![0u32; args.k], vec![0f32; args.k]);
            for i in 0..warmup + args.iters {
                let start = (i % 4) * args.batch;
                let batch = &queries[start..start + args.batch];
                let t = Instant::now();
                if args.batch == 1 {
                    model.topk_into(&batch[0], args.k, &mut ws, &mut items, &mut scores)?;
                } else {
                    for r in model.topk_batch(batch, args.k) {
                        r?;
                    }
                }
                if i >= warmup {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
        }
        Ok(times)
    })?;
    times.sort_by(f64::total_cmp);
    let p50 = percentile(&times, 0.5) * 1e3;
    let p99 = percentile(&times, 0.99) * 1e3;
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let per_call = if args.session { 1 } else { args.batch };
    let seq_per_s = per_call as f64 / mean;
    match args.format {
        Format::Json => out(json!({
            "batch": per_call, "threads": threads, "p50_ms": p50, "p99_ms": p99, "seq_per_s": seq_per_s,
            "model": info.arch, "n_items": info.n_items, "item_dtype": info.item_dtype.name(),
            "session": args.session, "feedback": args.feedback, "iters": args.iters, "k": args.k,
            "isa": seqrec_kernels::Isa::detect().name(),
            "cpu": super::info::cpu_json(),
        })),
        Format::Text => out(format!(
            "{} ({} items, {} table){}: batch {per_call}, {threads} threads, {} iters: p50 {p50:.3} ms, p99 {p99:.3} ms, {seq_per_s:.0} seq/s [{}]",
            info.arch,
            info.n_items,
            info.item_dtype.name(),
            if args.feedback {
                ", session feedback + top-k"
            } else if args.session {
                ", session push + top-k"
            } else {
                ""
            },
            args.iters,
            seqrec_kernels::Isa::detect().describe(),
        )),
    }
}
