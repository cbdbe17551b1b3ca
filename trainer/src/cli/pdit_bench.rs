//! `seqrec pdit bench [MODEL]`: times PDiT sampling, whole DDPM chains of each `--steps` count
//! at each `--batch` size, and prints the time per chain, per step and per sample. Without a
//! MODEL, a thesis-shaped PDiT (§9.3: k = 8 tokens of width d, 12 heads, MLP ratio 4, one DiT
//! and one temporal block, T = 1000) with seeded random weights is built in memory, of
//! latent width `--dim` (768: Sentence-T5; 384: MiniLM).

use super::{CliError, CliResult, Format, out};
use crate::nn::Rng;
use clap::Args;
use seqrec_engine::pdit::{NoiseSource, Pdit, PditWorkspace};
use seqrec_engine::{Config, Cpu, WeightFile};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub(super) struct BenchArgs {
    /// PDiT checkpoint; without it, a thesis-shaped model with random weights.
    model: Option<PathBuf>,
    /// Variant of the random model (full, gen, tem).
    #[arg(long, default_value = "full", conflicts_with = "model")]
    variant: String,
    /// Latent width d of the random model (its tokens are d wide too).
    #[arg(long, default_value_t = 768, conflicts_with = "model")]
    dim: usize,
    /// Chain lengths to time (1000: the full chain; fewer: respaced).
    #[arg(long, value_delimiter = ',', default_value = "50,1000")]
    steps: Vec<usize>,
    /// Samples per call.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    batch: Vec<usize>,
    /// History rows per sample (default: the model's max_hist_len).
    #[arg(long)]
    history: Option<usize>,
    /// Worker threads (large products split across them; default all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Timed chains per cell at most, after one warm-up chain of 2 steps.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Stop repeating a cell once its chains took this long (at least one chain is timed).
    #[arg(long, default_value_t = 20.0)]
    budget_s: f64,
    /// Output format (json: one object per cell).
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// The thesis's shape (§9.3) at latent width `d`.
fn thesis_config(variant: &str, d: usize) -> Result<Config, CliError> {
    let text = format!(
        r#"{{"model":"pdit","variant":"{variant}","latent_dim":{d},"cond_dim":{d},
            "hidden_size":{d},"num_tokens":8,"num_heads":12,"depth_gen":1,"depth_tem":1,
            "mlp_ratio":4.0,"max_hist_len":20,"num_timesteps":1000,"beta_start":0.0001,
            "beta_end":0.02,"learn_sigma":true,"latent_scale":{}}}"#,
        (d as f64).sqrt()
    );
    Ok(Config::from_json(&text)?)
}

pub(super) fn run(a: BenchArgs) -> CliResult {
    if a.steps.is_empty() || a.batch.contains(&0) || a.repeats == 0 {
        return Err(CliError::input(
            "--steps needs a count, --batch sizes and --repeats at least 1",
        ));
    }
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| CliError::internal(format!("thread pool: {e}")))?;
    let cpu = Cpu::new().with_split_products(threads > 1);
    let (model, source) = match &a.model {
        Some(path) => (Pdit::load_on(cpu, path)?, path.display().to_string()),
        None => {
            let cfg = thesis_config(&a.variant, a.dim)?;
            let bytes = seqrec_engine::testing::random_pdit_bytes(&cfg, 1, 0.05)?;
            let file = WeightFile::from_bytes(&bytes)?;
            let m = Pdit::from_weight_file(cpu, &file, None)?;
            (
                m,
                format!("random thesis-shaped {} (d = {})", a.variant, a.dim),
            )
        }
    };
    let c = model.config().clone();
    let n_hist = a.history.unwrap_or(c.max_hist_len);
    if n_hist == 0 || n_hist > c.max_hist_len {
        return Err(CliError::input(format!(
            "--history {n_hist}: the model reads 1..={} rows",
            c.max_hist_len
        )));
    }
    let chains = a
        .steps
        .iter()
        .map(|&s| model.respaced(s))
        .collect::<Result<Vec<_>, _>>()?;
    let isa = seqrec_kernels::Isa::detect();
    let mut rng = Rng::new(7);
    pool.install(|| -> CliResult {
        let mut ws = PditWorkspace::default();
        for &b in &a.batch {
            let p = rng.normal_vec(b * c.cond_dim, 1.0);
            let hist = rng.normal_vec(b * n_hist * c.latent_dim, 1.0);
            let lens = vec![n_hist; b];
            let p = c.variant.has_gen().then_some(&p[..]);
            let h = c.variant.has_tem().then_some((&hist[..], &lens[..]));
            let mut z0 = vec![0f32; b * c.latent_dim];
            let warm = model.respaced(2)?;
            model.sample(&warm, b, p, h, NoiseSource::seed(0), &mut ws, &mut z0)?;
            for (chain, &steps) in chains.iter().zip(&a.steps) {
                let mut times = Vec::new();
                let started = Instant::now();
                while times.len() < a.repeats
                    && (times.is_empty() || started.elapsed().as_secs_f64() < a.budget_s)
                {
                    let t = Instant::now();
                    let seed = times.len() as u64;
                    model.sample(chain, b, p, h, NoiseSource::seed(seed), &mut ws, &mut z0)?;
                    times.push(t.elapsed().as_secs_f64());
                }
                times.sort_by(f64::total_cmp);
                let chain_s = times[times.len() / 2];
                let step_ms = chain_s * 1e3 / steps as f64;
                let sample_ms = chain_s * 1e3 / b as f64;
                match a.format {
                    Format::Json => out(json!({
                        "model": source, "steps": steps, "batch": b, "threads": threads,
                        "history": n_hist, "chains_timed": times.len(), "chain_ms": chain_s * 1e3,
                        "step_ms": step_ms, "sample_ms": sample_ms,
                        "sample_step_us": step_ms * 1e3 / b as f64, "isa": isa.name(),
                    }))?,
                    Format::Text => out(format!(
                        "{source}: {steps} steps, batch {b}, {threads} threads, {} chains: \
                         {:.1} ms per chain, {step_ms:.3} ms per step, {sample_ms:.1} ms per \
                         sample, {:.1} µs per sample-step [{}]",
                        times.len(),
                        chain_s * 1e3,
                        step_ms * 1e3 / b as f64,
                        isa.describe()
                    ))?,
                }
            }
        }
        Ok(())
    })
}
