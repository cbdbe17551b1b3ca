//! The hierarchical models of `seqrec train` (`--model hdt|interdt|hier`), on a session split
//! that `--session-filter` ([`super::filter`]) preprocesses.

use super::{CliError, choice, out};
use crate::data::{Split, SplitMethod};
use crate::eval::long_tail;
use crate::models::hdt::{
    BackboneKind, Batching, HdtConfig, HdtModel, HdtTrainOptions, LongSessions, StepWeights,
    Variant, prepare_sessions, train_hdt,
};
use crate::nn::Rng;
use crate::objectives::Similarity;
use crate::train::RunOptions;
use clap::Args;
use std::path::PathBuf;

/// Architectures trained by [`train`].
pub const HIERARCHICAL: &[&str] = &["hdt", "interdt", "hier"];

/// Flags of the hierarchical models.
#[derive(Args, Debug)]
pub struct HierArgs {
    /// HDT loss weight α of the intra-session return loss L_R.
    #[arg(long, default_value_t = 0.5)]
    alpha_r: f32,
    /// HDT loss weight β of the action loss L_a.
    #[arg(long, default_value_t = 0.1)]
    beta_a: f32,
    /// HDT / InterDT loss weight λ of the goal loss L_g.
    #[arg(long, default_value_t = 0.2)]
    lambda_g: f32,
    /// Standard deviation of the goal block of W_g = [I | N(0, σ²)] at initialisation (0 starts
    /// it at zero).
    #[arg(long, default_value_t = 0.02)]
    goal_init: f32,
    /// γ of InterDT's output LayerNorm at initialisation (1 is PyTorch's default).
    #[arg(long, default_value_t = 0.02)]
    inter_gain: f32,
    /// Global gradient-norm clipping of each update (0: off).
    #[arg(long, default_value_t = 5.0)]
    clip: f32,
    /// User slots per update (sessions per mini-batch).
    #[arg(long, default_value_t = 32)]
    slots: usize,
    /// IntraDT layers.
    #[arg(long, default_value_t = 3)]
    intra_layers: usize,
    /// InterDT attention mask over (R_c, s_c): none or causal.
    #[arg(long, default_value = "none")]
    inter_mask: String,
    /// Sessions longer than the window: `truncate` to their last --max-len items (the
    /// thesis), or `windows` (every target once, windows of --max-len items every half
    /// window, all with the session's goal).
    #[arg(long, default_value = "truncate")]
    long_sessions: String,
    /// How users' sessions form updates: `slots` (HRNN's user-parallel slots, the thesis) or
    /// `interleaved` (each update draws --slots users weighted by their remaining sessions;
    /// every user's sessions stay in order).
    #[arg(long, default_value = "slots")]
    batching: String,
    /// How the steps of an update's sessions weigh in the losses: `session` (each session's
    /// steps average to one session's share, the thesis) or `event` (every step the same, as
    /// the plain backbone's loss weighs them).
    #[arg(long, default_value = "session")]
    step_weights: String,
}

/// What `seqrec train` passes on.
pub struct Common<'a> {
    pub model: &'a str,
    pub out: &'a PathBuf,
    pub lr: f32,
    pub weight_decay: f32,
    pub hidden_size: Option<usize>,
    pub n_heads: Option<usize>,
    pub max_len: Option<usize>,
    pub dropout: Option<f32>,
    /// The loop's knobs (epochs, seed, time budget, threads, patience, metric, progress).
    pub run: RunOptions,
    /// `--backbone` (default gru4rec).
    pub backbone: Option<&'a str>,
    /// `--similarity-model`: the item table for the returns (E_div), a plain backbone trained
    /// on the same split (required by hdt and interdt).
    pub similarity_model: Option<&'a std::path::Path>,
    /// `--tie-heads`: catalog heads (W_s, W_u, W_a) tied to the item table, each with its own
    /// bias, instead of linear layers.
    pub tie_heads: bool,
}

/// Trains a hierarchical model on a session split and writes the best checkpoint.
pub fn train(c: &Common<'_>, h: &HierArgs, split: &Split) -> Result<(), CliError> {
    if !matches!(split.method, SplitMethod::Session { .. }) {
        return Err(CliError::input(format!(
            "{} trains on sessions: use --split session",
            c.model
        )));
    }
    let variant: Variant = c.model.parse().map_err(CliError::input)?;
    let backbone: BackboneKind = c
        .backbone
        .unwrap_or("gru4rec")
        .parse()
        .map_err(CliError::input)?;
    let mut cfg = HdtConfig::new(variant, backbone, split.n_items);
    if let Some(d) = c.hidden_size {
        (cfg.dim, cfg.gru_hidden, cfg.sas_inner, cfg.intra_inner) = (d, d, 4 * d, 4 * d);
    }
    if let Some(n) = c.n_heads {
        (cfg.sas_heads, cfg.intra_heads, cfg.inter_heads) = (n, n, n);
    }
    if let Some(l) = c.max_len {
        cfg.max_len = l;
    }
    if let Some(p) = c.dropout {
        cfg.dropout = p;
    }
    cfg.intra_layers = h.intra_layers;
    cfg.inter_causal = choice(
        "--inter-mask",
        &h.inter_mask,
        &[("none", false), ("causal", true)],
    )?;
    (cfg.alpha_r, cfg.beta_a, cfg.lambda_g) = (h.alpha_r, h.beta_a, h.lambda_g);
    cfg.tied_heads = c.tie_heads;
    (cfg.goal_init, cfg.inter_gain) = (h.goal_init, h.inter_gain);
    let sim = match (c.similarity_model, variant.has_inter()) {
        (Some(p), _) => Some(Similarity::from_model_file(p).map_err(CliError::input)?),
        (None, true) => {
            return Err(CliError::input(format!(
                "{variant} needs --similarity-model FILE: a plain backbone trained on the same \
                 split (its item table gives the returns' similarities)"
            )));
        }
        (None, false) => None,
    };
    let long = choice(
        "--long-sessions",
        &h.long_sessions,
        &[
            ("truncate", LongSessions::Truncate),
            ("windows", LongSessions::Windows),
        ],
    )?;
    let batching = choice(
        "--batching",
        &h.batching,
        &[
            ("slots", Batching::Slots),
            ("interleaved", Batching::Interleaved),
        ],
    )?;
    let step_weights = choice(
        "--step-weights",
        &h.step_weights,
        &[
            ("session", StepWeights::Session),
            ("event", StepWeights::Event),
        ],
    )?;
    let lt = long_tail(&split.item_counts());
    let mut rng = Rng::new(c.run.seed);
    let mut model =
        HdtModel::new(cfg, sim.as_ref(), Some(&lt), &mut rng).map_err(CliError::input)?;
    let data = prepare_sessions(
        split,
        model.config().max_len,
        sim.as_ref(),
        &lt,
        model.config().dis_max,
        long,
    )
    .map_err(CliError::input)?;
    let opts = HdtTrainOptions {
        slots: h.slots.max(1),
        batching,
        step_weights,
        lr: c.lr,
        weight_decay: c.weight_decay,
        run: RunOptions {
            clip: (h.clip > 0.0).then_some(h.clip),
            ..c.run.clone()
        },
    };
    let r = train_hdt(&mut model, split, &data, &opts).map_err(CliError::input)?;
    std::fs::write(c.out, &r.checkpoint)
        .map_err(|e| CliError::input(format!("{}: {e}", c.out.display())))?;
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
    out(format!(
        "saved {} (best epoch {}, {valid}; {} epochs, stopped by {:?}, {:.0} sessions/s)",
        c.out.display(),
        r.best_epoch,
        r.log.len(),
        r.stop,
        r.windows_per_sec
    ))
}
