//! `seqrec train --model modt4r|mrdt`: the Decision Transformers' flags and training run.
//!
//! `E_div`, the frozen item table behind the diversity returns, is the item table of
//! `--similarity-model` (a plain SASRec trained with cross-entropy on the same split, as the
//! specification recommends). Without it, that baseline is trained first on the same split and
//! window (1 block, 1 head, the DT's width, dropout 0.1, CE) with a third of the time budget,
//! and saved beside the output as `OUT.sasrec.safetensors`.

use super::CliError;
use crate::data::Split;
use crate::eval::long_tail;
use crate::models::dt::{DtConfig, DtModel, ObjectiveTables, TokenOrder, train::samples};
use crate::models::{SasRecConfig, SasRecModel};
use crate::nn::Rng;
use crate::objectives::Similarity;
use crate::train::{LossKind, RunOptions, TrainOptions, train};
use clap::Args;
use seqrec_engine::Model;
use seqrec_engine::objectives::returns::{N_OBJ, parse_objective_list};
use std::path::Path;
use std::time::Duration;

/// Flags of the Decision Transformers (ignored by the other models).
#[derive(Args, Debug, Default, Clone)]
pub struct DtArgs {
    /// MODT4R/MRDT: weight β of the return loss (default 0.6, the thesis's best on RC15).
    #[arg(long)]
    beta: Option<f32>,
    /// MODT4R/MRDT: keep every S-th training window of a sequence (1: one window per
    /// position, the replay-buffer expansion).
    #[arg(long, default_value_t = 1)]
    dt_stride: usize,
    /// MODT4R/MRDT: objectives whose return tokens carry their returns (the others get 0).
    #[arg(long, default_value = "acc,nov,div")]
    dt_objectives: String,
    /// MODT4R/MRDT: no LayerNorm over MoTrans's token embeddings.
    #[arg(long)]
    no_embed_ln: bool,
    /// Score the catalog heads against the item table instead of separate output layers, as
    /// SASRec does. MODT4R/MRDT: `--tie-heads` ties both, `--tie-heads user` (W_u = item
    /// embedding) or `--tie-heads action` (W_a) one of them; hdt, interdt, hier: the flag ties
    /// both heads (each keeps its own bias).
    #[arg(long, num_args = 0..=1, default_missing_value = "user,action", value_name = "HEADS")]
    pub(crate) tie_heads: Option<String>,
    /// MODT4R/MRDT: MoTrans's gradient does not reach UserTrans and the item table (they
    /// learn from the supervised loss only).
    #[arg(long)]
    no_user_grad: bool,
    /// MODT4R/MRDT: how a return enters its token: `scaled` (R·E_o, the thesis's, no bias) or
    /// `affine` (R·E_o + b_o, the Decision Transformer's linear return embedding, whose bias
    /// keeps the size of R visible after the embedding LayerNorm).
    #[arg(long, default_value = "scaled", value_parser = ["scaled", "affine"])]
    return_embedding: String,
}

/// The shared `seqrec train` settings a Decision Transformer reads.
#[derive(Clone, Debug)]
pub struct Common<'a> {
    /// `modt4r` or `mrdt`.
    pub arch: &'a str,
    /// Window.
    pub max_len: usize,
    /// Width.
    pub hidden: Option<usize>,
    /// MoTrans layers.
    pub n_layers: Option<usize>,
    /// Heads of both transformers.
    pub n_heads: Option<usize>,
    /// Dropout of both transformers.
    pub dropout: Option<f32>,
    /// `--similarity-model`: a plain SASRec checkpoint trained with CE on the same split,
    /// whose item table gives the diversity returns (without it, one is trained first).
    pub similarity_model: Option<&'a std::path::Path>,
    /// Where the checkpoint goes (the fallback baseline is saved beside it).
    pub out: &'a Path,
}

/// `--dt-objectives`: the engine's objective list, its error naming the flag.
fn parse_objectives(list: &str) -> Result<[bool; N_OBJ], CliError> {
    parse_objective_list(list).map_err(|e| {
        let message = match &e {
            seqrec_engine::Error::Config(m) => m.strip_prefix("dt_objectives: ").unwrap_or(m),
            _ => return CliError::input(format!("--dt-objectives: {e}")),
        };
        CliError::input(format!("--dt-objectives: {message}"))
    })
}

/// The similarity table: from `--similarity-model`, or from a SASRec baseline trained here.
fn similarity(c: &Common<'_>, split: &Split, opts: &TrainOptions) -> Result<Similarity, CliError> {
    if let Some(path) = c.similarity_model {
        return Similarity::from_model_file(path).map_err(CliError::input);
    }
    let mut cfg = SasRecConfig::new(split.n_items, c.max_len);
    cfg.hidden = c.hidden.unwrap_or(64);
    cfg.inner = 4 * cfg.hidden;
    (cfg.n_layers, cfg.n_heads) = (1, 1);
    (cfg.hidden_dropout, cfg.attn_dropout) = (0.1, 0.1);
    let base_opts = TrainOptions {
        loss: LossKind::Ce,
        run: RunOptions {
            time_budget: opts.run.time_budget.map(|b| b / 3),
            ..opts.run.clone()
        },
        ..opts.clone()
    };
    if opts.run.progress {
        eprintln!("no --similarity-model: training the SASRec baseline for E_div first");
    }
    let mut model = SasRecModel::new(cfg, &mut Rng::new(opts.run.seed ^ 0xD1F));
    let r = train(&mut model, split, &base_opts).map_err(CliError::input)?;
    let path = c.out.with_extension("sasrec.safetensors");
    std::fs::write(&path, &r.checkpoint)
        .map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
    if opts.run.progress {
        eprintln!("saved the E_div baseline as {}", path.display());
    }
    let engine = Model::from_bytes(&r.checkpoint, &Default::default())?;
    let emb = engine.arch().item_embedding();
    Similarity::new(emb.table.as_slice(), emb.dim).map_err(CliError::input)
}

/// Trains a Decision Transformer; returns the checkpoint, the best epoch and a summary line.
pub fn fit(
    args: &DtArgs,
    c: &Common<'_>,
    split: &Split,
    opts: &TrainOptions,
) -> Result<(Vec<u8>, usize, String), CliError> {
    let order = TokenOrder::from_arch(c.arch).expect("called for modt4r and mrdt only");
    let mut cfg = DtConfig::new(order, split.n_items, c.max_len);
    if let Some(h) = c.hidden {
        cfg = cfg.with_hidden(h);
    }
    if let Some(n) = c.n_layers {
        cfg.layers = n;
    }
    if let Some(n) = c.n_heads {
        (cfg.heads, cfg.user.n_heads) = (n, n);
    }
    if let Some(p) = c.dropout {
        (cfg.dropout, cfg.user.hidden_dropout, cfg.user.attn_dropout) = (p, p, p);
    }
    if let Some(b) = args.beta {
        cfg.beta = b;
    }
    cfg.embed_ln = !args.no_embed_ln;
    cfg.user_grad = !args.no_user_grad;
    cfg.return_bias = args.return_embedding == "affine";
    for name in args
        .tie_heads
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match name {
            "user" => cfg.tie_heads[0] = true,
            "action" => cfg.tie_heads[1] = true,
            _ => {
                return Err(CliError::input(format!(
                    "--tie-heads: `{name}` is not one of user, action"
                )));
            }
        }
    }
    cfg.objectives = parse_objectives(&args.dt_objectives)?;
    cfg.validate()
        .map_err(|e| CliError::input(format!("--model {}: {e}", c.arch)))?;
    let start = std::time::Instant::now();
    let sim = similarity(c, split, opts)?;
    let tail = long_tail(&split.item_counts());
    let tables = ObjectiveTables::new(&tail, &sim).map_err(|e| {
        CliError::input(format!(
            "--similarity-model: {e}: it was not trained on these ids"
        ))
    })?;
    let data = samples(split, c.max_len, args.dt_stride, &tail, &sim);
    let mut model = DtModel::new(cfg, &mut Rng::new(opts.run.seed));
    model.set_tables(tables).map_err(CliError::internal)?;
    let mut dt_opts = opts.clone();
    if let Some(b) = opts.run.time_budget {
        dt_opts.run.time_budget = Some(
            b.saturating_sub(start.elapsed())
                .max(Duration::from_secs(1)),
        );
    }
    let (r, last) = crate::models::dt::train::train(&mut model, &data, split, &dt_opts)
        .map_err(CliError::input)?;
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
    let p = last.parts;
    let summary = format!(
        "{valid}; {} windows, {} epochs, stopped by {:?}, {:.0} windows/s; last epoch L_S {:.4}, L_a {:.4}, L_R {:.4}",
        data.len(),
        r.log.len(),
        r.stop,
        r.windows_per_sec,
        p.supervised,
        p.action,
        p.returns
    );
    Ok((r.checkpoint, r.best_epoch, summary))
}
