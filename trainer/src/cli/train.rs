//! `seqrec train --model ARCH --data PATH --out MODEL.safetensors`.

use super::{CliError, CliResult, out};
use crate::data::{self, DataFormat, Split, SplitMethod};
use crate::models::rl::RlKind;
use crate::models::{
    CaserConfig, CaserModel, Gru4RecConfig, Gru4RecModel, NextItNetConfig, NextItNetModel,
    SasRecConfig, SasRecModel, TrainModel,
};
use crate::nn::Rng;
use crate::train::{LossKind, RunOptions, TrainOptions, train};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Architecture: sasrec, gru4rec, nextitnet, caser, modt4r, mrdt; an RL method on
    /// --backbone: sqn, snqn, sa2c, smorl; a hierarchical session model hdt, interdt, hier
    /// (with --split session); or a generator on a PDiT data file (--pdit-data): pdit,
    /// dreamrec; a two-tower transfer model: transrec (text item tower, --text-encoder),
    /// idrec (ID item tower).
    #[arg(long)]
    model: String,
    /// Data set: a directory or file (pdit and dreamrec read --pdit-data instead).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Data format (detected from the files when absent).
    #[arg(long, value_parser = super::eval::parse_format)]
    data_format: Option<DataFormat>,
    /// Split: loo, ratio[:A:B:C][@SEED], session[:MINUTES], given.
    #[arg(long)]
    split: Option<String>,
    #[command(flatten)]
    filters: super::filter::FilterArgs,
    /// Where to write the best validation checkpoint.
    #[arg(long)]
    out: PathBuf,
    /// Maximum epochs.
    #[arg(long, default_value_t = 200)]
    epochs: usize,
    /// Training windows per step (default: the model's, listed after the flags).
    #[arg(long, visible_alias = "batch")]
    batch_size: Option<usize>,
    /// Learning rate (default: the model's, listed after the flags).
    #[arg(long)]
    lr: Option<f32>,
    /// AdamW weight decay (0: Adam; default: the model's, listed after the flags).
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Hidden / embedding size (default: the model's, listed after the flags).
    #[arg(long, visible_alias = "hidden")]
    hidden_size: Option<usize>,
    /// Layers (SASRec transformer layers, GRU layers, NextItNet block repeats; default: the
    /// model's, listed after the flags).
    #[arg(long)]
    n_layers: Option<usize>,
    /// Attention heads (default: the model's, listed after the flags).
    #[arg(long, visible_alias = "heads")]
    n_heads: Option<usize>,
    /// Window length (MAX_ITEM_LIST_LENGTH; for hierarchical models the session length;
    /// default: the model's, listed after the flags).
    #[arg(long)]
    max_len: Option<usize>,
    /// Dropout probability (default: the model's, listed after the flags).
    #[arg(long)]
    dropout: Option<f32>,
    /// Loss: ce, sampled-ce, bce, bpr.
    #[arg(long, default_value = "ce")]
    loss: LossKind,
    /// Negatives per target for sampled losses (per transition for snqn and sa2c).
    #[arg(long, default_value_t = 1)]
    neg: usize,
    /// Seed.
    #[arg(long, default_value_t = 2020)]
    seed: u64,
    /// Wall-clock budget in seconds (training stops before it, keeping the best checkpoint).
    #[arg(long)]
    time_budget: Option<f64>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Early-stopping patience in epochs.
    #[arg(long, default_value_t = 10)]
    patience: usize,
    /// Validation metric to maximise (default ndcg@10; ndcg@20 for pdit and dreamrec).
    #[arg(long)]
    valid_metric: Option<String>,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
    /// Settings of the RL methods.
    #[command(flatten)]
    rl: super::rl::RlArgs,
    /// Settings of the Decision Transformers.
    #[command(flatten)]
    dt: super::train_dt::DtArgs,
    /// Settings of the hierarchical session models.
    #[command(flatten)]
    hier: super::hier::HierArgs,
    /// Settings of the generators (pdit, dreamrec).
    #[command(flatten)]
    pdit: super::train_pdit::PditArgs,
    /// Settings of TransRec and IDRec.
    #[command(flatten)]
    transrec: super::transrec::TransRecArgs,
}

pub fn run(args: TrainArgs) -> CliResult {
    let model_name = args.model.to_ascii_lowercase();
    if args.epochs == 0 {
        return Err(CliError::input("--epochs must be at least 1"));
    }
    if matches!(model_name.as_str(), "pdit" | "dreamrec") {
        return train_generator(&model_name, &args);
    }
    if let Some(flag) = args.pdit.any_given() {
        return Err(CliError::input(format!(
            "{flag} is a setting of --model pdit and dreamrec, not of {model_name}"
        )));
    }
    let data_path = args
        .data
        .as_ref()
        .ok_or_else(|| CliError::input(format!("--model {model_name} needs --data")))?;
    if matches!(model_name.as_str(), "transrec" | "idrec") {
        let common = super::transrec::Common {
            model: &model_name,
            data: data_path,
            data_format: args.data_format,
            split: args.split.as_deref(),
            out: &args.out,
            epochs: args.epochs,
            batch_size: args.batch_size,
            lr: args.lr,
            weight_decay: args.weight_decay,
            hidden: args.hidden_size,
            n_layers: args.n_layers,
            n_heads: args.n_heads,
            max_len: args.max_len,
            dropout: args.dropout,
            seed: args.seed,
            patience: args.patience,
            valid_metric: args.valid_metric.as_deref(),
            time_budget: args.time_budget,
            threads: args.threads,
            quiet: args.quiet,
        };
        return super::transrec::train(&common, &args.transrec);
    }
    if let Some(flag) = args.transrec.any_given() {
        return Err(CliError::input(format!(
            "{flag} is a setting of --model transrec and idrec, not of {model_name}"
        )));
    }
    let batch_size = args
        .batch_size
        .unwrap_or_else(|| super::defaults::batch_size(&model_name));
    let (lr, weight_decay) = (
        args.lr.unwrap_or(super::defaults::LR),
        args.weight_decay.unwrap_or(0.0),
    );
    let is_dt = matches!(model_name.as_str(), "modt4r" | "mrdt");
    let max_len = args
        .max_len
        .unwrap_or_else(|| super::defaults::window(&model_name));
    if batch_size == 0 || max_len == 0 {
        return Err(CliError::input(
            "--batch-size and --max-len must be at least 1",
        ));
    }
    if let Some(p) = args.dropout
        && !(0.0..1.0).contains(&p)
    {
        return Err(CliError::input(format!("--dropout {p} is not in [0, 1)")));
    }
    let dataset = data::load(data_path, args.data_format).map_err(CliError::input)?;
    let method = match &args.split {
        Some(s) => s.parse::<SplitMethod>().map_err(CliError::input)?,
        None => dataset.default_split_method(),
    };
    let dataset = args.filters.apply(dataset, &method)?;
    let split = dataset.split(&method).map_err(CliError::input)?;
    let mut run = run_options(&args);
    run.valid_metric = args
        .valid_metric
        .as_deref()
        .unwrap_or("ndcg@10")
        .to_string();
    if super::hier::HIERARCHICAL.contains(&model_name.as_str()) {
        let common = super::hier::Common {
            model: &model_name,
            out: &args.out,
            lr,
            weight_decay,
            hidden_size: args.hidden_size,
            n_heads: args.n_heads,
            max_len: args.max_len,
            dropout: args.dropout,
            run,
            backbone: args.rl.backbone.as_deref(),
            similarity_model: args.rl.similarity_model.as_deref(),
            tie_heads: args.dt.tie_heads.is_some(),
        };
        return super::hier::train(&common, &args.hier, &split);
    }
    let opts = TrainOptions {
        batch_size,
        lr,
        weight_decay,
        loss: args.loss,
        neg: args.neg.max(1),
        run,
        ..Default::default()
    };
    let name = model_name;
    let result = match name.parse::<RlKind>() {
        Ok(kind) => {
            if args.loss != LossKind::Ce {
                return Err(CliError::input(format!(
                    "--loss {:?}: {kind} trains its supervised head with cross-entropy (plus its TD terms)",
                    args.loss
                )));
            }
            let fit = super::rl::RlFit {
                kind,
                args: &args.rl,
                split: &split,
                opts: &opts,
                seed: args.seed,
                out: &args.out,
            };
            with_backbone(
                &args
                    .rl
                    .backbone
                    .as_deref()
                    .unwrap_or("sasrec")
                    .to_ascii_lowercase(),
                &args,
                max_len,
                &split,
                fit,
            )?
        }
        Err(_) if is_dt => {
            let common = super::train_dt::Common {
                arch: &name,
                max_len,
                hidden: args.hidden_size,
                n_layers: args.n_layers,
                n_heads: args.n_heads,
                dropout: args.dropout,
                out: &args.out,
                similarity_model: args.rl.similarity_model.as_deref(),
            };
            super::train_dt::fit(&args.dt, &common, &split, &opts)?
        }
        Err(_) => with_backbone(
            &name,
            &args,
            max_len,
            &split,
            Plain {
                split: &split,
                opts: &opts,
                seed: args.seed,
            },
        )?,
    };
    std::fs::write(&args.out, &result.0)
        .map_err(|e| CliError::input(format!("{}: {e}", args.out.display())))?;
    out(format!(
        "saved {} (best epoch {}, {})",
        args.out.display(),
        result.1,
        result.2
    ))
}

/// The loop's knobs from the arguments (the validation metric is each family's).
fn run_options(args: &TrainArgs) -> RunOptions {
    let mut run = RunOptions {
        epochs: args.epochs,
        seed: args.seed,
        time_budget: args.time_budget.map(Duration::from_secs_f64),
        patience: args.patience,
        progress: !args.quiet,
        ..Default::default()
    };
    if let Some(t) = args.threads {
        run.threads = t.max(1);
    }
    run
}

/// `--model pdit|dreamrec`: the generators train on a PDiT data file.
fn train_generator(model: &str, args: &TrainArgs) -> CliResult {
    let ignored = [
        (args.data.is_some(), "--data"),
        (args.split.is_some(), "--split"),
        (args.max_len.is_some(), "--max-len"),
        (args.loss != LossKind::Ce, "--loss"),
    ];
    if let Some((_, flag)) = ignored.iter().find(|g| g.0) {
        return Err(CliError::input(format!(
            "{flag} does not apply to --model {model} (it reads --pdit-data; see --max-hist-len)"
        )));
    }
    if model == "pdit" && (args.n_layers.is_some() || args.dropout.is_some()) {
        return Err(CliError::input(
            "--n-layers and --dropout are dreamrec's: pdit has --depth-gen and --depth-tem and no dropout",
        ));
    }
    let common = super::train_pdit::Common {
        model,
        out: &args.out,
        hidden: args.hidden_size,
        heads: args.n_heads,
        layers: args.n_layers,
        dropout: args.dropout,
        batch: args.batch_size,
        lr: args.lr,
        weight_decay: args.weight_decay,
        run: run_options(args),
        valid_metric: args.valid_metric.as_deref(),
    };
    super::train_pdit::run(&common, &args.pdit)
}

/// Something to do with a backbone architecture, given a factory of freshly initialised
/// backbones (called once per model to build: RL methods build two copies, SMORL's similarity
/// baseline a third).
pub(crate) trait WithBackbone {
    /// What it returns.
    type Out;
    /// Runs with the factory.
    fn run<M: TrainModel>(self, make: &mut dyn FnMut(&mut Rng) -> M)
    -> Result<Self::Out, CliError>;
}

/// Plain training of the backbone with its own loss.
struct Plain<'a> {
    split: &'a Split,
    opts: &'a TrainOptions,
    seed: u64,
}

impl WithBackbone for Plain<'_> {
    type Out = Fitted;
    fn run<M: TrainModel>(self, make: &mut dyn FnMut(&mut Rng) -> M) -> Result<Fitted, CliError> {
        fit(make(&mut Rng::new(self.seed)), self.split, self.opts)
    }
}

/// Builds the configuration of backbone `name` from the arguments and runs `v` with it.
fn with_backbone<V: WithBackbone>(
    name: &str,
    args: &TrainArgs,
    max_len: usize,
    split: &Split,
    v: V,
) -> Result<V::Out, CliError> {
    match name {
        "sasrec" => {
            let mut cfg = SasRecConfig::new(split.n_items, max_len);
            if let Some(h) = args.hidden_size {
                cfg.hidden = h;
                cfg.inner = 4 * h;
            }
            if let Some(n) = args.n_layers {
                cfg.n_layers = n;
            }
            if let Some(n) = args.n_heads {
                cfg.n_heads = n;
            }
            if let Some(p) = args.dropout {
                cfg.hidden_dropout = p;
                cfg.attn_dropout = p;
            }
            if cfg.n_heads == 0 || cfg.hidden % cfg.n_heads != 0 {
                return Err(CliError::input(format!(
                    "--hidden-size {} is not divisible by --n-heads {}",
                    cfg.hidden, cfg.n_heads
                )));
            }
            v.run(&mut |rng| SasRecModel::new(cfg.clone(), rng))
        }
        "gru4rec" => {
            let mut cfg = Gru4RecConfig::new(split.n_items, max_len);
            if let Some(h) = args.hidden_size {
                cfg.emb = h;
                cfg.hidden = 2 * h;
            }
            if let Some(n) = args.n_layers {
                cfg.n_layers = n.max(1);
            }
            if let Some(p) = args.dropout {
                cfg.dropout = p;
            }
            v.run(&mut |rng| Gru4RecModel::new(cfg.clone(), rng))
        }
        "nextitnet" => {
            let mut cfg = NextItNetConfig::new(split.n_items, max_len);
            if let Some(h) = args.hidden_size {
                cfg.emb = h;
            }
            if let Some(n) = args.n_layers {
                cfg.block_num = n.max(1);
            }
            v.run(&mut |rng| NextItNetModel::new(cfg.clone(), rng))
        }
        "caser" => {
            let mut cfg = CaserConfig::new(split.n_items, split.n_users, max_len);
            if let Some(h) = args.hidden_size {
                cfg.emb = h;
            }
            if let Some(p) = args.dropout {
                cfg.dropout = p;
            }
            v.run(&mut |rng| CaserModel::new(cfg.clone(), rng))
        }
        other => Err(CliError::input(format!(
            "unknown model `{other}` (trainable: sasrec, gru4rec, nextitnet, caser, modt4r, \
             mrdt, and with --backbone: sqn, snqn, sa2c, smorl)"
        ))),
    }
}

/// A trained checkpoint, its best epoch and a summary line.
pub(crate) type Fitted = (Vec<u8>, usize, String);

/// Trains and returns the checkpoint, the best epoch and a summary line.
pub(crate) fn fit<M: TrainModel>(
    mut model: M,
    split: &Split,
    opts: &TrainOptions,
) -> Result<Fitted, CliError> {
    let r = train(&mut model, split, opts).map_err(CliError::input)?;
    Ok(summarize(&r))
}

/// The checkpoint, best epoch and summary line of a run.
pub(crate) fn summarize(r: &crate::train::TrainResult) -> Fitted {
    let valid = r
        .best_report
        .as_ref()
        .map(|rep| {
            rep.values
                .iter()
                .map(|(k, v)| format!("valid {k} {v:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let summary = format!(
        "{valid}; {} epochs, stopped by {:?}, {:.0} windows/s",
        r.log.len(),
        r.stop,
        r.windows_per_sec
    );
    (r.checkpoint.clone(), r.best_epoch, summary)
}
