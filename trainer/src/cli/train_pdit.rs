//! `seqrec train --model pdit|dreamrec --pdit-data FILE --out M` and
//! `seqrec eval M --pdit-data FILE`: the generators of thesis Ch.8 on a PDiT data file (made by
//! `seqrec pdit data`).
//!
//! Default size (`--hidden 128 --tokens 8 --heads 4 --depth-gen 1 --depth-tem 1`, MLP ratio 4,
//! L = the data's history length): the thesis's PDiT has H = d = 768 (Sentence-T5) and about
//! 26M parameters; with MiniLM's d = 384 and H = 128 the network has about 1.5M, so that an
//! epoch of ml-100k (≈15k examples at batch 100) takes about a minute on two cores. The
//! thesis's settings are `--hidden 384 --heads 6` here (H = d).

use super::defaults::{GEN_BATCH, GEN_LR, GEN_WEIGHT_DECAY, PDIT_HEADS, PDIT_HIDDEN};
use super::{CliError, CliResult, Format, out};
use crate::eval::parse_metrics;
use crate::learner::{RunOptions, TrainResult};
use crate::models::pdit::dreamrec::{DreamRecConfig, DreamRecModel, DreamRecRanker};
use crate::models::pdit::eval::{
    EngineRanker, IdModelRanker, PopularityRanker, RankOptions, Ranker, evaluate,
};
use crate::models::pdit::train::{PditTrainOptions, n_params, train, train_dreamrec};
use crate::models::pdit::{PditData, PditModel};
use crate::nn::Rng;
use clap::Args;
use seqrec_engine::pdit::Pdit;
use seqrec_engine::{CONFIG_KEY, Config, WeightFile};
use serde_json::json;
use std::path::{Path, PathBuf};

/// The generators' settings of `seqrec train`.
#[derive(Args, Debug, Default)]
pub struct PditArgs {
    /// PDiT data file (`seqrec pdit data`), for --model pdit and dreamrec.
    #[arg(long)]
    pdit_data: Option<PathBuf>,
    /// PDiT variant: full (gen + tem), gen (DiT blocks on the prompt), tem (temporal blocks on
    /// the history).
    #[arg(long)]
    variant: Option<String>,
    /// PDiT: latent tokens k (2·d must be divisible by it; default 8).
    #[arg(long)]
    tokens: Option<usize>,
    /// PDiT: DiT blocks (default 1).
    #[arg(long)]
    depth_gen: Option<usize>,
    /// PDiT: temporal blocks (default 1).
    #[arg(long)]
    depth_tem: Option<usize>,
    /// PDiT: MLP width over the hidden size (default 4).
    #[arg(long)]
    mlp_ratio: Option<f64>,
    /// The most recent history items read (default: the data's).
    #[arg(long)]
    max_hist_len: Option<usize>,
    /// Diffusion steps T (default 1000 for pdit, 200 for dreamrec).
    #[arg(long)]
    timesteps: Option<usize>,
    /// PDiT: predict ε only (fixed variance) instead of ε and the variance interpolation v.
    #[arg(long)]
    no_learn_sigma: bool,
    /// PDiT: self-attention in the temporal blocks.
    #[arg(long)]
    tem_self_attn: bool,
    /// Steps of the respaced sampling chain of validation (default 50; dreamrec samples its
    /// whole chain).
    #[arg(long)]
    steps_valid: Option<usize>,
    /// Validate every N optimizer steps (default: every pass over the training examples).
    #[arg(long)]
    valid_every: Option<usize>,
    /// Linear warm-up steps (default 1000).
    #[arg(long)]
    warmup: Option<u64>,
    /// Remove history items from the validation rankings.
    #[arg(long)]
    exclude_history: bool,
    /// DreamRec: guidance weight w of sampling (default 2).
    #[arg(long)]
    guidance_w: Option<f32>,
    /// DreamRec: probability of an unconditioned training sample (default 0.1).
    #[arg(long)]
    p_uncond: Option<f32>,
}

impl PditArgs {
    /// The first generator setting given, if any (for models that do not take them).
    pub(crate) fn any_given(&self) -> Option<&'static str> {
        let given = [
            (self.pdit_data.is_some(), "--pdit-data"),
            (self.variant.is_some(), "--variant"),
            (self.tokens.is_some(), "--tokens"),
            (self.depth_gen.is_some(), "--depth-gen"),
            (self.depth_tem.is_some(), "--depth-tem"),
            (self.mlp_ratio.is_some(), "--mlp-ratio"),
            (self.max_hist_len.is_some(), "--max-hist-len"),
            (self.timesteps.is_some(), "--timesteps"),
            (self.no_learn_sigma, "--no-learn-sigma"),
            (self.tem_self_attn, "--tem-self-attn"),
            (self.steps_valid.is_some(), "--steps-valid"),
            (self.valid_every.is_some(), "--valid-every"),
            (self.warmup.is_some(), "--warmup"),
            (self.exclude_history, "--exclude-history"),
            (self.guidance_w.is_some(), "--guidance-w"),
            (self.p_uncond.is_some(), "--p-uncond"),
        ];
        given.iter().find(|g| g.0).map(|g| g.1)
    }
}

/// The settings `seqrec train` shares with the other models.
#[derive(Debug)]
pub(crate) struct Common<'a> {
    /// `pdit` or `dreamrec`.
    pub model: &'a str,
    /// Where the best checkpoint goes.
    pub out: &'a Path,
    /// Width H.
    pub hidden: Option<usize>,
    /// Heads.
    pub heads: Option<usize>,
    /// DreamRec's encoder layers.
    pub layers: Option<usize>,
    /// DreamRec's encoder dropout.
    pub dropout: Option<f32>,
    /// Samples per step.
    pub batch: Option<usize>,
    /// Peak learning rate.
    pub lr: Option<f32>,
    /// AdamW weight decay.
    pub weight_decay: Option<f32>,
    /// The loop's knobs (`valid_metric` and `clip` are set here).
    pub run: RunOptions,
    /// The validation metric asked for.
    pub valid_metric: Option<&'a str>,
}

fn load_data(path: Option<&PathBuf>, model: &str) -> Result<PditData, CliError> {
    let path = path.ok_or_else(|| {
        CliError::input(format!(
            "--model {model} trains on a PDiT data file: give --pdit-data FILE (made by `seqrec pdit data`)"
        ))
    })?;
    PditData::load(path).map_err(CliError::input)
}

/// The PDiT configuration of the arguments over `data`.
fn pdit_config(c: &Common<'_>, a: &PditArgs, data: &PditData) -> Result<Config, CliError> {
    let variant = a.variant.as_deref().unwrap_or("full").to_ascii_lowercase();
    if !matches!(variant.as_str(), "full" | "gen" | "tem") {
        return Err(CliError::input(format!(
            "--variant {variant}: expected full, gen or tem"
        )));
    }
    let d = data.dim;
    let cfg = Config::from_map(Default::default())
        .with("model", "pdit")
        .with("variant", variant.as_str())
        .with("latent_dim", d)
        .with("cond_dim", d)
        .with("hidden_size", c.hidden.unwrap_or(PDIT_HIDDEN))
        .with("num_tokens", a.tokens.unwrap_or(8))
        .with("num_heads", c.heads.unwrap_or(PDIT_HEADS))
        .with("depth_gen", a.depth_gen.unwrap_or(1))
        .with("depth_tem", a.depth_tem.unwrap_or(1))
        .with("mlp_ratio", a.mlp_ratio.unwrap_or(4.0))
        .with("max_hist_len", a.max_hist_len.unwrap_or(data.max_hist_len))
        .with("num_timesteps", a.timesteps.unwrap_or(1000))
        .with("beta_start", 1e-4)
        .with("beta_end", 0.02)
        .with("learn_sigma", !a.no_learn_sigma)
        .with("tem_self_attn", a.tem_self_attn)
        .with("latent_scale", (d as f64).sqrt());
    seqrec_engine::pdit::PditConfig::from_config(&cfg)
        .map_err(|e| CliError::input(format!("PDiT configuration: {e}")))?;
    Ok(cfg)
}

/// `seqrec train --model pdit|dreamrec`.
pub(crate) fn run(c: &Common<'_>, a: &PditArgs) -> CliResult {
    let data = load_data(a.pdit_data.as_ref(), c.model)?;
    let mut run = c.run.clone();
    run.clip = Some(1.0);
    run.valid_metric = c.valid_metric.unwrap_or("ndcg@20").to_string();
    let opts = PditTrainOptions {
        batch_size: c.batch.unwrap_or(GEN_BATCH),
        lr: c.lr.unwrap_or(GEN_LR),
        weight_decay: c.weight_decay.unwrap_or(GEN_WEIGHT_DECAY),
        warmup: a.warmup.unwrap_or(1000),
        valid_every: a.valid_every,
        valid_steps: a.steps_valid.unwrap_or(50),
        exclude_history: a.exclude_history,
        run,
    };
    if opts.batch_size == 0 || opts.valid_every == Some(0) || opts.valid_steps < 2 {
        return Err(CliError::input(
            "--batch-size and --valid-every must be at least 1, --steps-valid at least 2",
        ));
    }
    opts.valid_metrics().map_err(CliError::input)?;
    let mut rng = Rng::new(opts.run.seed);
    let (result, params) = if c.model == "dreamrec" {
        if a.variant.is_some() || a.tokens.is_some() || a.no_learn_sigma || a.tem_self_attn {
            return Err(CliError::input(
                "--variant, --tokens, --no-learn-sigma and --tem-self-attn are PDiT's: dreamrec has none",
            ));
        }
        let mut cfg =
            DreamRecConfig::new(data.n_items(), a.max_hist_len.unwrap_or(data.max_hist_len));
        cfg.hidden = c.hidden.unwrap_or(cfg.hidden);
        cfg.heads = c.heads.unwrap_or(cfg.heads);
        cfg.layers = c.layers.unwrap_or(cfg.layers);
        cfg.dropout = c.dropout.unwrap_or(cfg.dropout);
        cfg.timesteps = a.timesteps.unwrap_or(cfg.timesteps);
        cfg.guidance = a.guidance_w.unwrap_or(cfg.guidance);
        cfg.p_uncond = a.p_uncond.unwrap_or(cfg.p_uncond);
        let mut m = DreamRecModel::new(cfg, &mut rng).map_err(CliError::input)?;
        let n = n_params(&m);
        (
            train_dreamrec(&mut m, &data, &opts).map_err(CliError::input)?,
            n,
        )
    } else {
        if a.guidance_w.is_some() || a.p_uncond.is_some() {
            return Err(CliError::input(
                "--guidance-w and --p-uncond are dreamrec's",
            ));
        }
        let mut m = PditModel::new(pdit_config(c, a, &data)?, &mut rng).map_err(CliError::input)?;
        let n = n_params(&m);
        (train(&mut m, &data, &opts).map_err(CliError::input)?, n)
    };
    save(c, &result, params)
}

fn save(c: &Common<'_>, r: &TrainResult, params: usize) -> CliResult {
    std::fs::write(c.out, &r.checkpoint)
        .map_err(|e| CliError::input(format!("{}: {e}", c.out.display())))?;
    let valid = r
        .best_report
        .as_ref()
        .map(|rep| rep.to_string())
        .unwrap_or_default();
    out(format!(
        "saved {} ({} parameters; best round {}: valid {valid}; {} rounds, stopped by {:?}, {:.0} examples/s)",
        c.out.display(),
        params,
        r.best_epoch,
        r.log.len(),
        r.stop,
        r.windows_per_sec
    ))
}

/// What `seqrec eval MODEL --pdit-data FILE` needs.
#[derive(Debug)]
pub(crate) struct EvalRequest<'a> {
    /// The model file.
    pub model: &'a str,
    /// The data file.
    pub data: &'a Path,
    /// Sampling steps (PDiT: respaced chain; default its T).
    pub steps: Option<usize>,
    /// Seed of the noise.
    pub seed: u64,
    /// Validation examples instead of test ones.
    pub valid: bool,
    /// Remove history items from the rankings.
    pub exclude_history: bool,
    /// Metrics (default hr@20, ndcg@20).
    pub metrics: Option<&'a str>,
    /// Output format.
    pub format: Format,
}

/// `seqrec eval MODEL --pdit-data FILE`: HR/NDCG of a PDiT or DreamRec checkpoint.
pub(crate) fn eval(r: &EvalRequest<'_>) -> CliResult {
    let data = PditData::load(r.data).map_err(CliError::input)?;
    let metrics = parse_metrics(r.metrics.unwrap_or("hr@20,ndcg@20")).map_err(CliError::input)?;
    let opts = RankOptions {
        metrics,
        seed: r.seed,
    };
    let examples = if r.valid { &data.valid } else { &data.test };
    if r.model == "pop" {
        let ranker = PopularityRanker::new(&data, r.exclude_history);
        return report(
            r,
            "pop",
            examples.len(),
            0,
            &rank(&ranker, examples, &data, &opts)?,
        );
    }
    let bytes = std::fs::read(r.model).map_err(|e| CliError::input(format!("{}: {e}", r.model)))?;
    // Generators by their configuration; anything else (an ID model, a RecBole .pth) is
    // served by the engine's Model.
    let arch = WeightFile::from_bytes(&bytes)
        .ok()
        .and_then(|f| f.metadata(CONFIG_KEY).map(str::to_owned))
        .as_deref()
        .and_then(|t| Config::from_json(t).ok())
        .and_then(|c| c.model().ok())
        .unwrap_or_default();
    let origin = |e: crate::Error| CliError::input(format!("{}: {e}", r.model));
    let (report_values, steps) = match arch.as_str() {
        "dreamrec" => {
            if r.steps.is_some() {
                return Err(CliError::input(
                    "--steps: a dreamrec model samples its whole chain",
                ));
            }
            let m = DreamRecModel::from_safetensors(&bytes).map_err(origin)?;
            let ranker = DreamRecRanker::new(&m, &data, r.exclude_history).map_err(origin)?;
            (rank(&ranker, examples, &data, &opts)?, m.config().timesteps)
        }
        "pdit" => {
            let m = Pdit::from_bytes(&bytes).map_err(|e| e.in_origin(r.model))?;
            let steps = r.steps.unwrap_or(m.config().timesteps);
            let ranker = EngineRanker::new(&m, &data, steps, r.exclude_history).map_err(origin)?;
            (rank(&ranker, examples, &data, &opts)?, steps)
        }
        _ => {
            let m = seqrec_engine::Model::from_bytes(&bytes, &Default::default())
                .map_err(|e| e.in_origin(r.model))?;
            if r.steps.is_some() {
                return Err(CliError::input(format!(
                    "--steps: {} is not a generator, it does not sample",
                    r.model
                )));
            }
            let ranker = IdModelRanker::new(&m, &data, r.exclude_history).map_err(origin)?;
            (rank(&ranker, examples, &data, &opts)?, 0)
        }
    };
    report(r, &arch, examples.len(), steps, &report_values)
}

/// Prints an evaluation on a PDiT data file.
fn report(
    r: &EvalRequest<'_>,
    arch: &str,
    n_examples: usize,
    steps: usize,
    report: &crate::eval::Report,
) -> CliResult {
    let on = if r.valid { "valid" } else { "test" };
    match r.format {
        Format::Json => out(json!({
            "model": arch,
            "on": on,
            "examples": n_examples,
            "steps": steps,
            "seed": r.seed,
            "metrics": report,
        })),
        Format::Text => {
            out(format!(
                "{} ({arch}) on {} ({on}, {} examples, {steps} sampling steps, seed {}):",
                r.model,
                r.data.display(),
                n_examples,
                r.seed
            ))?;
            for (name, value) in &report.values {
                out(format!("  {name:<12} {value:.4}"))?;
            }
            Ok(())
        }
    }
}

fn rank<R: Ranker>(
    ranker: &R,
    examples: &[crate::models::pdit::PditExample],
    data: &PditData,
    opts: &RankOptions,
) -> Result<crate::eval::Report, CliError> {
    if examples.is_empty() {
        return Err(CliError::input("the data file has no examples to evaluate"));
    }
    evaluate(ranker, examples, data.n_items(), opts).map_err(CliError::input)
}
