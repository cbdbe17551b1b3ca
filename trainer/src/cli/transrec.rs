//! `seqrec train --model transrec|idrec` (thesis Ch.3) and `seqrec export-items`.
//!
//! **Training.** A TransRec run is stage 1 (UEP: next-item softmax with the item towers
//! frozen) then stage 2 (end-to-end CPC), or stage 2 alone (`--stage cpc`; the default with
//! `--init`, where a target starts from a source checkpoint). IDRec (an ID item tower) trains
//! with CPC only. The thesis's rows:
//! - **TransRec**: source `--stage both`, then target `--init SOURCE` (CPC);
//! - **TransRec-**: source `--stage cpc`, then target `--init SOURCE`;
//! - **TFS**: target `--stage cpc` without `--init` (generic text encoder, random user encoder);
//! - **IDRec**: `--model idrec` on the target.
//!
//! Training data: as in the thesis, each user's most recent `context + future` training items
//! make one CPC example (the last 5 predicted from up to 25 before them), with 4 fresh
//! negatives per epoch drawn from the items the user never interacted with; stage 1 trains on
//! each user's most recent `max_len` items. `--windows all` cuts every training sequence into
//! such windows from its end instead. Each stage
//! keeps the parameters of its best validation epoch (`--valid-metric`, NDCG@10 by default)
//! and stops after `--patience` epochs without a better one. Stage 2's validation scores
//! exactly as serving does: the model is exported ([`TransRecModel::to_serving`]) and
//! evaluated through the engine, a window of the `context` most recent items ranking the full
//! catalog; stage 1's ranks the catalog with its own softmax layer, what it trains.
//!
//! **Serving.** `seqrec export-items MODEL --data D --out F` computes every item's vector from
//! the data set's texts (items that never appeared in training included: cold-start items are
//! scored through their text) and writes a file the engine serves as model `transrec` (or
//! `idrec`): `seqrec score`, `eval` and the C ABI take it unchanged.

use super::train_state::{self, Progress, Saved, state_path};
use super::{CliError, CliResult, choice, item_text, out};
use crate::data::{self, DataFormat, Dataset, EvalSeq, Split, SplitMethod, TrainPart};
use crate::eval::{
    EvalOptions, Evaluator, Protocol, Report, ScorerError, SharedScorer, parse_metrics,
};
use crate::learner::shuffle;
use crate::models::transrec::checkpoint::{TextSource, read_config};
use crate::models::transrec::{CpcExample, Items, Stage, TransRecConfig, TransRecModel};
use crate::nn::text::{FineTune, TextEncoder};
use crate::nn::{Adam, Module, Rng};
use crate::scorer::EngineScorer;
use clap::Args;
use seqrec_engine::{Model, WeightFile};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Settings of `--model transrec` and `idrec`.
#[derive(Args, Debug, Default)]
pub struct TransRecArgs {
    /// transrec: the text item tower's sentence-transformers folder (config.json,
    /// model.safetensors, tokenizer.json; e.g. all-MiniLM-L6-v2).
    #[arg(long)]
    pub text_encoder: Option<PathBuf>,
    /// transrec, idrec: start from a source checkpoint (user encoder and item tower; the
    /// source's stage-1 softmax layer is dropped).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// transrec, idrec: keep a seeded fraction (0, 1] of the training users (the thesis's
    /// small-data study); validation and test keep every user.
    #[arg(long)]
    pub train_users: Option<f64>,
    /// transrec, idrec: treat a seeded fraction (0, 1) of the catalog's items as new ones:
    /// their interactions are removed from the training sequences and no negative is drawn
    /// from them. The model lists them, and `seqrec eval --cold-start` on its served file
    /// evaluates the test events whose target is one of them (a cold-start protocol with more
    /// events than the items that happen to be absent from training).
    #[arg(long)]
    pub hold_out_items: Option<f64>,
    /// transrec: text-encoder layers trained in stage 2: 0 (frozen), N (the top N), all, or
    /// lora[:rank=R,alpha=A,targets=query+value,layers=all] (default 1).
    #[arg(long)]
    pub text_layers: Option<String>,
    /// transrec: both (stage 1 then stage 2; the default without --init) or cpc (stage 2
    /// only; the default with --init, and idrec's only stage).
    #[arg(long)]
    pub stage: Option<String>,
    /// transrec: most tokens per item text, special tokens included (default 32).
    #[arg(long)]
    pub text_tokens: Option<usize>,
    /// transrec, idrec: training windows per user: `last` (the thesis's: the most recent
    /// `context + future` items of each training sequence; stage 1 its most recent `max_len`)
    /// or `all` (every training sequence cut into such windows from its end).
    #[arg(long)]
    pub windows: Option<String>,
    /// transrec, idrec: continue a run from `OUT.state`, with the same options: it makes the
    /// draws and updates the uninterrupted run would have made. The state is written after
    /// every epoch and kept unless the run stopped on `--patience` (an interrupted run, or one
    /// that reached `--epochs` or `--time-budget`, can go on); `--epochs`, `--patience`,
    /// `--time-budget`, `--threads` and `--quiet` may change.
    #[arg(long)]
    pub resume: bool,
}

impl TransRecArgs {
    /// The first TransRec setting given, if any (for models that do not take them).
    pub(crate) fn any_given(&self) -> Option<&'static str> {
        let given = [
            (self.text_encoder.is_some(), "--text-encoder"),
            (self.init.is_some(), "--init"),
            (self.train_users.is_some(), "--train-users"),
            (self.hold_out_items.is_some(), "--hold-out-items"),
            (self.text_layers.is_some(), "--text-layers"),
            (self.stage.is_some(), "--stage"),
            (self.text_tokens.is_some(), "--text-tokens"),
            (self.windows.is_some(), "--windows"),
            (self.resume, "--resume"),
        ];
        given.iter().find(|g| g.0).map(|g| g.1)
    }
}

/// The settings `seqrec train` shares with the other models.
#[derive(Debug)]
pub(crate) struct Common<'a> {
    pub model: &'a str,
    pub data: &'a Path,
    pub data_format: Option<DataFormat>,
    pub split: Option<&'a str>,
    pub out: &'a Path,
    pub epochs: usize,
    pub batch_size: Option<usize>,
    pub lr: Option<f32>,
    pub weight_decay: Option<f32>,
    pub hidden: Option<usize>,
    pub n_layers: Option<usize>,
    pub n_heads: Option<usize>,
    pub max_len: Option<usize>,
    pub dropout: Option<f32>,
    pub seed: u64,
    pub patience: usize,
    pub valid_metric: Option<&'a str>,
    pub time_budget: Option<f64>,
    pub threads: Option<usize>,
    pub quiet: bool,
}

/// Default most tokens per item text (the thesis tokenises titles to at most 32).
pub const TEXT_TOKENS: usize = 32;

/// Reads the data set and splits it (`--split`, default leave-one-out, or a benchmark's own).
pub(crate) fn load_split(
    data: &Path,
    format: Option<DataFormat>,
    split: Option<&str>,
) -> Result<(Dataset, Split), CliError> {
    let dataset = data::load(data, format).map_err(CliError::input)?;
    let method = match split {
        Some(s) => s.parse::<SplitMethod>().map_err(CliError::input)?,
        None => dataset.default_split_method(),
    };
    let split = dataset.split(&method).map_err(CliError::input)?;
    Ok((dataset, split))
}

/// Every item's text tokenised by `dir`'s tokenizer, at most `max_tokens` tokens (a longer
/// text keeps its first tokens and its final `[SEP]`); an item without text is an error that
/// names its token, id and the file.
pub(crate) fn tokenized_texts(
    dir: &Path,
    data: &Path,
    dataset: &Dataset,
    max_tokens: usize,
) -> Result<Vec<Vec<u32>>, CliError> {
    if max_tokens < 2 {
        return Err(CliError::input(format!(
            "--text-tokens {max_tokens}: an item text needs at least 2 tokens ([CLS] and [SEP])"
        )));
    }
    let (source, texts) = item_text::by_internal_id(data, dataset)?;
    // Only the tokenizer is used: the weights stay as stored (no quantization at load).
    let f32_weights = seqrec_engine::text::TextOptions {
        weight_dtype: seqrec_engine::DType::F32,
    };
    let enc = seqrec_engine::text::TextEncoder::load_with(dir, &f32_weights)?;
    let vocab = dataset.items();
    let mut out = vec![Vec::new()];
    for (id, text) in texts.iter().enumerate().skip(1) {
        let token = vocab.token(id as u32).unwrap_or("?");
        let text = text.as_deref().ok_or_else(|| {
            CliError::input(format!(
                "{source}: item `{token}` (id {id}) has no text: every item of a text tower needs one"
            ))
        })?;
        let mut ids = enc
            .tokenize(text)
            .map_err(|e| CliError::input(format!("{source}: item `{token}` (id {id}): {e}")))?;
        if ids.len() > max_tokens {
            let last = ids[ids.len() - 1];
            ids.truncate(max_tokens - 1);
            ids.push(last);
        }
        out.push(ids);
    }
    Ok(out)
}

/// Each user's training sequence (a benchmark's given examples: each user's longest history
/// plus its target).
fn train_sequences(split: &Split) -> Vec<(u32, Vec<u32>)> {
    match &split.train {
        TrainPart::Sequences(seqs) => seqs
            .iter()
            .filter(|s| s.items.len() >= 2)
            .map(|s| (s.user, s.items.clone()))
            .collect(),
        TrainPart::Examples(ex) => {
            let mut by_user: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
            for e in ex {
                let slot = by_user.entry(e.user).or_default();
                if e.history.len() + 1 > slot.len() {
                    slot.clear();
                    slot.extend_from_slice(&e.history);
                    slot.push(e.target);
                }
            }
            by_user.into_iter().filter(|(_, s)| s.len() >= 2).collect()
        }
    }
}

/// A seeded `fraction` of `seqs` (at least one), in their original order.
fn keep_users(seqs: Vec<(u32, Vec<u32>)>, fraction: f64, seed: u64) -> Vec<(u32, Vec<u32>)> {
    let keep = ((seqs.len() as f64 * fraction).ceil() as usize).clamp(1, seqs.len());
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    shuffle(&mut order, &mut Rng::new(seed ^ 0x0074_7275_7365_7273));
    let mut chosen = vec![false; seqs.len()];
    for &i in &order[..keep] {
        chosen[i] = true;
    }
    seqs.into_iter()
        .zip(chosen)
        .filter_map(|(s, c)| c.then_some(s))
        .collect()
}

/// A seeded `fraction` of the items `1..n_items`, sorted (at least one, at most all but one).
fn hold_out(n_items: usize, fraction: f64, seed: u64) -> Vec<u32> {
    let n = n_items.saturating_sub(1);
    let take = ((n as f64 * fraction).ceil() as usize).clamp(1, n.saturating_sub(1).max(1));
    let mut items: Vec<u32> = (1..n_items as u32).collect();
    shuffle(&mut items, &mut Rng::new(seed ^ 0x0068_6f6c_646f_7574));
    let mut held = items[..take.min(items.len())].to_vec();
    held.sort_unstable();
    held
}

/// `seqs` without the (sorted) items `held`; sequences left with fewer than 2 items dropped.
fn without_items(seqs: Vec<(u32, Vec<u32>)>, held: &[u32]) -> Vec<(u32, Vec<u32>)> {
    seqs.into_iter()
        .filter_map(|(u, s)| {
            let s: Vec<u32> = s
                .into_iter()
                .filter(|i| held.binary_search(i).is_err())
                .collect();
            (s.len() >= 2).then_some((u, s))
        })
        .collect()
}

/// Non-overlapping windows of at most `width` items cut from the end of `seq`, each of at
/// least 2 items.
fn windows(seq: &[u32], width: usize) -> impl Iterator<Item = &[u32]> {
    let mut end = seq.len();
    std::iter::from_fn(move || {
        if end < 2 {
            return None;
        }
        let start = end.saturating_sub(width);
        let w = &seq[start..end];
        end = start;
        Some(w)
    })
    .filter(|w| w.len() >= 2)
}

/// Early stopping on a validation metric, keeping the best parameter values.
struct Best {
    value: f64,
    epoch: usize,
    params: Vec<Vec<f32>>,
}

impl Best {
    fn new() -> Best {
        Best {
            value: f64::NEG_INFINITY,
            epoch: 0,
            params: Vec::new(),
        }
    }

    /// Records epoch `epoch`'s `value`; returns whether it is the best so far.
    fn offer(&mut self, model: &TransRecModel, epoch: usize, value: f64) -> bool {
        if value > self.value {
            self.value = value;
            self.epoch = epoch;
            self.params = model.params().iter().map(|p| p.value.clone()).collect();
            true
        } else {
            false
        }
    }

    fn restore(&self, model: &mut TransRecModel) {
        if self.params.is_empty() {
            return;
        }
        for (p, v) in model.params_mut().into_iter().zip(&self.params) {
            p.value.copy_from_slice(v);
        }
    }
}

/// Validation (or test) metrics of `model` with item vectors `table`, through the engine.
fn evaluate(
    model: &TransRecModel,
    table: &[f32],
    evaluator: &Evaluator,
    seqs: &[EvalSeq],
) -> Result<Report, CliError> {
    let served = Model::from_bytes(
        &model.to_serving(table).map_err(CliError::input)?,
        &Default::default(),
    )?;
    evaluator
        .evaluate_par(seqs, &EngineScorer::new(&served))
        .map_err(CliError::input)
}

/// Stage 1's scorer: the next-item softmax `U·W^Uᵀ + b^U` that stage 1 trains (its user
/// vectors are not yet aligned with the item vectors, so `U · z` says nothing about it), over
/// the most recent `max_len` items of a history.
struct UepScorer<'a> {
    model: &'a TransRecModel,
    table: &'a [f32],
}

impl SharedScorer for UepScorer<'_> {
    fn score_shared(
        &self,
        history: &[u32],
        _user: Option<u32>,
        scores: &mut [f32],
    ) -> Result<(), ScorerError> {
        let uep =
            self.model.uep.as_ref().ok_or(
                "stage 1 is validated with its softmax layer, which this model has dropped",
            )?;
        let h = &history[history.len().saturating_sub(self.model.config().max_len)..];
        let u = self.model.user_vectors(self.table, &[h])?;
        scores.copy_from_slice(&uep.infer(&u, 1));
        Ok(())
    }
}

pub(crate) fn parse_fine_tune(s: Option<&str>) -> Result<FineTune, CliError> {
    match s.unwrap_or("1") {
        "0" | "frozen" => Ok(FineTune::Frozen),
        "all" => Ok(FineTune::All),
        s if s.starts_with("lora") || s.starts_with("top:") => {
            FineTune::parse(s).map_err(|e| CliError::input(format!("--text-layers: {e}")))
        }
        s => s.parse::<usize>().map(FineTune::Top).map_err(|_| {
            CliError::input(format!(
                "--text-layers `{s}` is not a number of layers, all, or lora[:...]"
            ))
        }),
    }
}

/// The options that shape a run, which a resumed run must repeat (see
/// [`TransRecArgs::resume`]).
fn fingerprint(c: &Common<'_>, a: &TransRecArgs) -> String {
    format!(
        "model {} data {} format {:?} split {:?} batch {:?} lr {:?} weight-decay {:?} hidden {:?} \
         layers {:?} heads {:?} max-len {:?} dropout {:?} seed {} valid-metric {:?} \
         text-encoder {:?} init {:?} train-users {:?} hold-out-items {:?} text-layers {:?} \
         stage {:?} text-tokens {:?} windows {:?}",
        c.model,
        c.data.display(),
        c.data_format,
        c.split,
        c.batch_size,
        c.lr,
        c.weight_decay,
        c.hidden,
        c.n_layers,
        c.n_heads,
        c.max_len,
        c.dropout,
        c.seed,
        c.valid_metric,
        a.text_encoder,
        a.init,
        a.train_users,
        a.hold_out_items,
        a.text_layers,
        a.stage,
        a.text_tokens,
        a.windows,
    )
}

/// `seqrec train --model transrec|idrec`.
pub(crate) fn train(c: &Common<'_>, a: &TransRecArgs) -> CliResult {
    let text = c.model == "transrec";
    if !text {
        let text_only = [
            (a.text_encoder.is_some(), "--text-encoder"),
            (a.text_layers.is_some(), "--text-layers"),
            (a.text_tokens.is_some(), "--text-tokens"),
        ];
        if let Some((_, flag)) = text_only.iter().find(|f| f.0) {
            return Err(CliError::input(format!(
                "{flag} is a setting of the text item tower (--model transrec), not of idrec"
            )));
        }
    }
    let both = match a.stage.as_deref() {
        None => text && a.init.is_none(),
        Some("both") if text => true,
        Some("both") => {
            return Err(CliError::input(
                "--stage both: idrec trains with the CPC loss only (stage 1 needs frozen item vectors)",
            ));
        }
        Some("cpc") => false,
        Some(s) => {
            return Err(CliError::input(format!(
                "--stage `{s}` is not one of both, cpc"
            )));
        }
    };
    if let Some(f) = a.train_users
        && !(f > 0.0 && f <= 1.0)
    {
        return Err(CliError::input(format!(
            "--train-users {f} is not a fraction in (0, 1]"
        )));
    }
    if let Some(f) = a.hold_out_items
        && !(f > 0.0 && f < 1.0)
    {
        return Err(CliError::input(format!(
            "--hold-out-items {f} is not a fraction in (0, 1)"
        )));
    }
    let fine_tune = parse_fine_tune(a.text_layers.as_deref())?;
    let all_windows = match a.windows.as_deref() {
        None => false,
        Some(w) => choice("--windows", w, &[("last", false), ("all", true)])?,
    };
    let (dataset, split) = load_split(c.data, c.data_format, c.split)?;
    let texts = match (&a.text_encoder, text) {
        (Some(dir), true) => Some(tokenized_texts(
            dir,
            c.data,
            &dataset,
            a.text_tokens.unwrap_or(TEXT_TOKENS),
        )?),
        (None, true) => {
            return Err(CliError::input(
                "--model transrec needs --text-encoder DIR (the text item tower's encoder)",
            ));
        }
        _ => None,
    };

    let init = match &a.init {
        Some(src) => Some(WeightFile::open(src)?),
        None => None,
    };
    let mut cfg = match &init {
        // A transferred model has the source's sizes.
        Some(file) => {
            let (source, _) = read_config(file).map_err(CliError::input)?;
            let sizes = [
                (c.hidden, source.dim, "--hidden-size"),
                (c.n_layers, source.n_layers, "--n-layers"),
                (c.n_heads, source.n_heads, "--n-heads"),
                (c.max_len, source.max_len, "--max-len"),
            ];
            if let Some((given, has, flag)) = sizes
                .iter()
                .find(|(g, has, _)| g.is_some_and(|g| g != *has))
            {
                return Err(CliError::input(format!(
                    "{flag} {}: the --init checkpoint {} has {has} (a transferred model keeps \
                     the source's sizes)",
                    given.unwrap_or(0),
                    file.origin()
                )));
            }
            TransRecConfig {
                n_items: split.n_items,
                held_out_items: Vec::new(),
                ..source
            }
        }
        None => {
            let mut cfg = TransRecConfig::new(split.n_items);
            cfg.dim = c.hidden.unwrap_or(cfg.dim);
            cfg.inner = 4 * cfg.dim;
            cfg.n_layers = c.n_layers.unwrap_or(cfg.n_layers);
            cfg.n_heads = c.n_heads.unwrap_or(cfg.n_heads);
            cfg.max_len = c.max_len.unwrap_or(cfg.max_len);
            cfg.context = cfg.context.min(cfg.max_len);
            cfg
        }
    };
    cfg.dropout = c.dropout.unwrap_or(cfg.dropout);
    cfg.uep = both;
    if let Some(f) = a.hold_out_items {
        cfg.held_out_items = hold_out(split.n_items, f, c.seed);
    }
    let mut rng = Rng::new(c.seed);
    let items = match (&a.text_encoder, texts) {
        (Some(dir), Some(texts)) => Items::Text {
            encoder: Box::new(TextEncoder::load(dir, fine_tune).map_err(CliError::input)?),
            texts,
        },
        _ => Items::Id,
    };
    let mut model = TransRecModel::new(cfg, items, &mut rng).map_err(CliError::input)?;
    if let Some(file) = &init {
        model.init_from(file).map_err(CliError::input)?;
    }
    let split = &split;
    let mut seqs = train_sequences(split);
    if seqs.is_empty() {
        return Err(CliError::input(format!(
            "{}: no training sequence of 2 or more items",
            c.data.display()
        )));
    }
    if let Some(f) = a.train_users {
        seqs = keep_users(seqs, f, c.seed);
    }
    let held_out = model.config().held_out_items.clone();
    if !held_out.is_empty() {
        seqs = without_items(seqs, &held_out);
        if seqs.is_empty() {
            return Err(CliError::input(
                "--hold-out-items: no training sequence of 2 or more items is left",
            ));
        }
    }
    let valid_metric = c.valid_metric.unwrap_or("ndcg@10").to_ascii_lowercase();
    let mut metric_names = vec!["hr@10".to_string(), "ndcg@10".to_string()];
    if !metric_names.contains(&valid_metric) {
        metric_names.push(valid_metric.clone());
    }
    let opts = EvalOptions {
        metrics: parse_metrics(&metric_names.join(",")).map_err(CliError::input)?,
        protocol: Protocol::Full,
        exclude_history: false,
        session_history_only: false,
    };
    let evaluator = Evaluator::new(split, opts).map_err(CliError::input)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(c.threads.unwrap_or(0))
        .build()
        .map_err(|e| CliError::internal(format!("thread pool: {e}")))?;
    // One run at a time in this process: its large products may use every thread.
    seqrec_kernels::cpu::linear::set_gemm_threads(pool.current_num_threads());
    let state_file = state_path(c.out);
    let fingerprint = fingerprint(c, a);
    let resume = match a.resume {
        true => Some(Saved::open(&state_file, &fingerprint)?),
        false => None,
    };
    let run = Run {
        c,
        state_file: &state_file,
        fingerprint: &fingerprint,
        seqs: &seqs,
        held_out: &held_out,
        evaluator: &evaluator,
        valid: &split.valid,
        metric: &valid_metric,
        lr: c.lr.unwrap_or(super::defaults::LR),
        weight_decay: c.weight_decay.unwrap_or(0.0),
        batch: c
            .batch_size
            .unwrap_or(super::defaults::TRANSREC_BATCH)
            .max(1),
        all_windows,
        start: Instant::now(),
    };
    let mut stages: Vec<(String, usize, f64)> = Vec::new();
    pool.install(|| -> Result<bool, CliError> {
        let resumed = resume.as_ref().map(|s| s.progress.stage.as_str());
        if both && resumed == Some("cpc") {
            // Stage 1 had finished: its result is in the state, the weights come below.
            stages.clone_from(&resume.as_ref().expect("resumed").progress.stages);
            model.drop_uep();
        } else if both {
            let b = run.stage(&mut model, Stage::Uep, &mut rng, resume.as_ref(), &stages)?;
            stages.push(("uep".into(), b.0, b.1));
            model.drop_uep();
        }
        let b = run.stage(&mut model, Stage::Cpc, &mut rng, resume.as_ref(), &stages)?;
        stages.push(("cpc".into(), b.0, b.1));
        Ok(b.2)
    })
    .and_then(|converged| {
        model.save(c.out).map_err(CliError::input)?;
        if converged && state_file.exists() {
            std::fs::remove_file(&state_file)
                .map_err(|e| CliError::input(format!("{}: {e}", state_file.display())))?;
        } else if !converged && !c.quiet {
            eprintln!(
                "training state kept in {}: --resume continues the run",
                state_file.display()
            );
        }
        Ok(())
    })?;
    let summary: Vec<String> = stages
        .iter()
        .map(|(s, epoch, value)| {
            let n = if s == "uep" { 1 } else { 2 };
            format!("stage {n} best epoch {epoch} ({} {value:.4})", run.metric)
        })
        .collect();
    out(format!(
        "saved {} ({})",
        c.out.display(),
        summary.join(", ")
    ))
}

/// One training run's fixed parts.
struct Run<'a> {
    c: &'a Common<'a>,
    /// Where the run's state is written after every epoch.
    state_file: &'a Path,
    /// The options a resumed run must repeat.
    fingerprint: &'a str,
    seqs: &'a [(u32, Vec<u32>)],
    /// Sorted items held out of training (never drawn as negatives).
    held_out: &'a [u32],
    evaluator: &'a Evaluator,
    valid: &'a [EvalSeq],
    metric: &'a str,
    lr: f32,
    weight_decay: f32,
    batch: usize,
    all_windows: bool,
    start: Instant,
}

impl Run<'_> {
    fn out_of_time(&self) -> bool {
        self.c
            .time_budget
            .is_some_and(|b| self.start.elapsed() >= Duration::from_secs_f64(b))
    }

    /// Trains one stage to its best validation epoch; returns (best epoch, its value, whether
    /// it stopped on the patience). With
    /// `resume` holding a state of this stage, continues from it; `done` are the earlier
    /// stages' results (kept in the state written after every epoch).
    fn stage(
        &self,
        model: &mut TransRecModel,
        stage: Stage,
        rng: &mut Rng,
        resume: Option<&Saved>,
        done: &[(String, usize, f64)],
    ) -> Result<(usize, f64, bool), CliError> {
        let cfg = model.config().clone();
        let (name, key) = match stage {
            Stage::Uep => ("stage 1 (UEP)", "uep"),
            Stage::Cpc => ("stage 2 (CPC)", "cpc"),
        };
        // The text encoder's frozen part never changes: its output is cached for the whole
        // catalog once, so that validation's item table does not recompute it for the items
        // no training batch touched (most of them when --train-users is small).
        model.cache_frozen_all().map_err(CliError::input)?;
        // Stage 1's item vectors are fixed: frozen towers, computed once.
        let fixed_table = match stage {
            Stage::Uep => Some(model.item_table().map_err(CliError::input)?),
            Stage::Cpc => None,
        };
        let width = match stage {
            Stage::Uep => cfg.max_len,
            Stage::Cpc => cfg.context + cfg.future,
        };
        let windows: Vec<(usize, &[u32])> = self
            .seqs
            .iter()
            .enumerate()
            .flat_map(|(u, (_, s))| {
                let take = if self.all_windows { usize::MAX } else { 1 };
                windows(s, width).take(take).map(move |w| (u, w))
            })
            .collect();
        // A CPC batch needs one future count: windows are batched with others of their count
        // (`min(future, len - 1)`); stage 1 batches any lengths.
        let group = |w: &[u32]| match stage {
            Stage::Uep => 0,
            Stage::Cpc => cfg.future.min(w.len() - 1),
        };
        let mut opt = Adam::new(self.weight_decay);
        let mut best = Best::new();
        let mut since_best = 0usize;
        let mut first = 1;
        if let Some(saved) = resume.filter(|s| s.progress.stage == key) {
            let p = &saved.progress;
            let best_params = saved.restore(&mut model.params_mut(), &mut opt)?;
            best = Best {
                value: p.best_value,
                epoch: p.best_epoch,
                params: best_params.unwrap_or_default(),
            };
            (since_best, first, *rng) = (p.since_best, p.epoch + 1, saved.rng()?);
            if !self.c.quiet {
                eprintln!(
                    "{name}: resuming after epoch {} (best epoch {}, {} {:.4})",
                    p.epoch, p.best_epoch, self.metric, p.best_value
                );
            }
        }
        let mut converged = false;
        for epoch in first..=self.c.epochs {
            let t0 = Instant::now();
            let mut order: Vec<usize> = (0..windows.len()).collect();
            shuffle(&mut order, rng);
            order.sort_by_key(|&i| group(windows[i].1));
            let mut batches: Vec<&[usize]> = order
                .chunk_by(|&i, &j| group(windows[i].1) == group(windows[j].1))
                .flat_map(|g| g.chunks(self.batch))
                .collect();
            shuffle(&mut batches, rng);
            let mut loss_sum = 0.0;
            let mut steps = 0usize;
            for chunk in batches {
                let loss = match &fixed_table {
                    Some(table) => {
                        let ws: Vec<&[u32]> = chunk.iter().map(|&i| windows[i].1).collect();
                        let b = model.uep_batch(&ws).map_err(CliError::input)?;
                        model
                            .uep_step(table, &b, &mut opt, self.lr, Some(5.0), rng)
                            .map_err(CliError::input)?
                    }
                    None => {
                        let examples = chunk
                            .iter()
                            .map(|&i| {
                                let (u, w) = windows[i];
                                let seen = &self.seqs[u].1;
                                if self.held_out.is_empty() {
                                    CpcExample::from_window(w, seen, &cfg, rng)
                                } else {
                                    let banned = [seen, self.held_out].concat();
                                    CpcExample::from_window(w, &banned, &cfg, rng)
                                }
                            })
                            .collect::<crate::Result<Vec<_>>>()
                            .map_err(CliError::input)?;
                        model
                            .cpc_step(&examples, &mut opt, self.lr, Some(5.0), rng)
                            .map_err(CliError::input)?
                    }
                };
                loss_sum += loss;
                steps += 1;
            }
            let train_secs = t0.elapsed().as_secs_f64();
            let trained_table;
            let table: &[f32] = match &fixed_table {
                Some(t) => t,
                None => {
                    trained_table = model.item_table().map_err(CliError::input)?;
                    &trained_table
                }
            };
            let report = match stage {
                Stage::Uep => self
                    .evaluator
                    .evaluate_par(self.valid, &UepScorer { model, table })
                    .map_err(CliError::input)?,
                Stage::Cpc => evaluate(model, table, self.evaluator, self.valid)?,
            };
            let value = report.get(self.metric).unwrap_or(f64::NAN);
            let improved = best.offer(model, epoch, value);
            since_best = if improved { 0 } else { since_best + 1 };
            if !self.c.quiet {
                eprintln!(
                    "{name} epoch {epoch}: loss {:.4}, valid {} {value:.4}{} (train {train_secs:.1} s, \
                     {:.1} sequences/s; valid {:.1} s)",
                    loss_sum / steps.max(1) as f64,
                    self.metric,
                    if improved { " *" } else { "" },
                    windows.len() as f64 / train_secs.max(1e-9),
                    t0.elapsed().as_secs_f64() - train_secs,
                );
            }
            let progress = Progress {
                stage: key.into(),
                epoch,
                since_best,
                best_epoch: best.epoch,
                best_value: best.value,
                rng: rng.state(),
                stages: done.to_vec(),
            };
            let best_params = (!best.params.is_empty()).then_some(&best.params[..]);
            train_state::save(
                self.state_file,
                &progress,
                self.fingerprint,
                &model.params(),
                best_params,
                &opt,
            )?;
            converged = since_best >= self.c.patience;
            if converged || self.out_of_time() {
                break;
            }
        }
        best.restore(model);
        Ok((best.epoch, best.value, converged))
    }
}

#[derive(Args, Debug)]
pub struct ExportItemsArgs {
    /// A TransRec or IDRec checkpoint (`seqrec train --model transrec|idrec`).
    model: PathBuf,
    /// The data set whose item texts make the item table (a text tower; its catalog may hold
    /// items that never appeared in training). An ID tower exports its own table.
    #[arg(long)]
    data: PathBuf,
    /// Data format (detected from the files when absent).
    #[arg(long, value_parser = super::eval::parse_format)]
    data_format: Option<DataFormat>,
    /// The text encoder folder the checkpoint's encoder delta was made over (default: the
    /// folder recorded in the checkpoint).
    #[arg(long)]
    text_encoder: Option<PathBuf>,
    /// Most tokens per item text (default 32, as in training).
    #[arg(long, default_value_t = TEXT_TOKENS)]
    text_tokens: usize,
    /// Where to write the servable model.
    #[arg(long)]
    out: PathBuf,
}

/// The base encoder folder recorded in a checkpoint's text-encoder delta.
fn recorded_base(file: &WeightFile) -> Option<PathBuf> {
    let meta = file.metadata(crate::nn::text::encoder::DELTA_KEY)?;
    let v: serde_json::Value = serde_json::from_str(meta).ok()?;
    v.get("base_dir")?.as_str().map(PathBuf::from)
}

/// `seqrec export-items MODEL --data D --out F`.
pub fn export_items(args: ExportItemsArgs) -> CliResult {
    let file = WeightFile::open(&args.model)?;
    let (_, tower) = read_config(&file).map_err(CliError::input)?;
    let dataset = data::load(&args.data, args.data_format).map_err(CliError::input)?;
    let model = if tower == "text" {
        let dir = args
            .text_encoder
            .clone()
            .or_else(|| recorded_base(&file))
            .ok_or_else(|| {
                CliError::input(format!(
                    "{}: no text encoder folder recorded: give --text-encoder DIR",
                    args.model.display()
                ))
            })?;
        let texts = tokenized_texts(&dir, &args.data, &dataset, args.text_tokens)?;
        let source = TextSource { dir: &dir, texts };
        TransRecModel::load(&file, Some(source)).map_err(CliError::input)?
    } else {
        let m = TransRecModel::load(&file, None).map_err(CliError::input)?;
        if m.config().n_items != dataset.items().len() {
            return Err(CliError::input(format!(
                "{}: an ID item tower over {} ids cannot serve {} with {} (padding included): \
                 it knows only the ids it was trained on",
                args.model.display(),
                m.config().n_items,
                args.data.display(),
                dataset.items().len()
            )));
        }
        m
    };
    let table = model.item_table().map_err(CliError::input)?;
    let bytes = model.to_serving(&table).map_err(CliError::input)?;
    std::fs::write(&args.out, &bytes)
        .map_err(|e| CliError::input(format!("{}: {e}", args.out.display())))?;
    out(format!(
        "wrote {} ({} items of width {}, window {})",
        args.out.display(),
        model.config().n_items,
        model.config().dim,
        model.config().context.min(model.config().max_len)
    ))
}
