//! `seqrec le ...`: the language environment of the RL heads (`spec/thesis-models.md` §7).
//!
//! `seqrec le build` trains the built-in environment ([`crate::models::rl::env`]: a reward and
//! a state model on the text encoder with LoRA adapters) on a seeded fraction of the training
//! transitions with `L_rm + L_sm`, then fills the cache for every transition: its LE state,
//! the rewards of the logged action and of a seeded negative, and with `--model` the
//! augmented action, the recommender's top-5 candidate the reward model scores highest.
//!
//! `seqrec le samples` lists the training samples an LE cache has one row for, in the cache's
//! order, with internal ids and tokens, a seeded negative per sample and (with `--model`) the
//! recommender's top-5 for the augmentation prompt: what a program computing an environment
//! elsewhere (for example a large language model on a GPU) needs to write the cache
//! (`docs/formats.md`, "LE cache").

use super::{CliError, CliResult, out};
use crate::data::{self, DataFormat};
use crate::models::rl::env::{ASK_TEXT, EnvLoss, LanguageEnv, Prompt, USER_TEXT};
use crate::models::rl::le::LeCacheData;
use crate::models::rl::samples::{Transition, Transitions, sample_other};
use crate::nn::optim::{Adam, Optimizer};
use crate::nn::param::zero_grads;
use crate::nn::text::TextEncoder;
use crate::nn::{Module, Rng};
use clap::{Args, Subcommand};
use rayon::prelude::*;
use seqrec_engine::{Model, Query, WeightFile, Workspace};
use serde_json::json;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

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
    /// Trains the built-in language environment and writes its cache for every training
    /// transition.
    Build(BuildArgs),
}

/// The data set and split an LE cache is for.
#[derive(Args, Debug)]
struct DataArgs {
    /// Data set (as `seqrec train --data`; `le build` needs its items' texts).
    #[arg(long)]
    data: PathBuf,
    /// Input format (default: detected).
    #[arg(long, value_parser = super::eval::parse_format)]
    data_format: Option<DataFormat>,
    /// Split, as `seqrec train --split` (the RL heads train on whole sequences: e.g.
    /// `ratio:0.8,0.1,0.1`).
    #[arg(long)]
    split: Option<String>,
}

/// `seqrec le build`
#[derive(Args, Debug)]
struct BuildArgs {
    #[command(flatten)]
    set: DataArgs,
    /// The text encoder's sentence-transformers folder (e.g. all-MiniLM-L6-v2).
    #[arg(long)]
    text_encoder: PathBuf,
    /// How the encoder adapts: lora[:rank=R,alpha=A,targets=query+value] (the thesis's),
    /// N (the top N layers), all, or 0 (frozen).
    #[arg(long, default_value = "lora:rank=8,alpha=16,targets=query+value")]
    text_layers: String,
    /// Most tokens per item text (its item token is their mean word embedding).
    #[arg(long, default_value_t = 32)]
    text_tokens: usize,
    /// History items in a prompt (the LE state's window; 10 in the thesis).
    #[arg(long, default_value_t = 10)]
    max_len: usize,
    /// Fraction of the training transitions the environment trains on (0.1 in the thesis).
    #[arg(long, default_value_t = 0.1)]
    fraction: f64,
    /// Most training epochs over that fraction (the thesis trains 10).
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Stop after this many epochs without a better held-out pairwise accuracy of the
    /// reward model; the best epoch's adapters fill the cache.
    #[arg(long, default_value_t = 3)]
    patience: usize,
    /// Transitions per step.
    #[arg(long, default_value_t = 20)]
    batch_size: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 2e-4)]
    lr: f32,
    /// Train the reward model alone (the ablation without the state model's loss L_sm).
    #[arg(long)]
    no_state_loss: bool,
    /// A recommender over the same split (e.g. an RL model after its first epochs): its
    /// top-5 per transition are the augmentation's candidates (without it the cache has no
    /// augmented actions).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Also write the trained environment (adapters and score head, a delta over
    /// --text-encoder) here, so that another cache (e.g. another recommender's augmentation
    /// candidates) can be filled without training it again.
    #[arg(long)]
    save_env: Option<PathBuf>,
    /// Fill the cache with this saved environment (--save-env) instead of training one.
    #[arg(long)]
    env: Option<PathBuf>,
    /// Seed of the training subset, the negatives and the adapters.
    #[arg(long, default_value_t = 2020)]
    seed: u64,
    /// Worker threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Output cache.
    #[arg(long)]
    out: PathBuf,
}

/// `seqrec le samples`
#[derive(Args, Debug)]
struct SamplesArgs {
    #[command(flatten)]
    set: DataArgs,
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
        LeCommand::Build(a) => build(a),
    }
}

/// Rows filled per parallel task.
const FILL_CHUNK: usize = 32;

fn build(a: BuildArgs) -> CliResult {
    if a.max_len == 0 || a.batch_size == 0 || a.epochs == 0 || a.patience == 0 {
        return Err(CliError::input(
            "--max-len, --batch-size, --epochs and --patience must be at least 1",
        ));
    }
    if !(a.fraction > 0.0 && a.fraction <= 1.0) {
        return Err(CliError::input(format!(
            "--fraction {} is not in (0, 1]",
            a.fraction
        )));
    }
    let (dataset, data, n_items, model) = load(&a.set, a.max_len, &a.model)?;
    let texts =
        super::transrec::tokenized_texts(&a.text_encoder, &a.set.data, &dataset, a.text_tokens)?;
    let prompt = prompt(&a.text_encoder)?;
    let mut rng = Rng::new(a.seed);
    let mut env = match &a.env {
        Some(path) => {
            let file = WeightFile::open(path)?;
            let env = LanguageEnv::load(&a.text_encoder, &file, &texts, prompt)
                .map_err(CliError::input)?;
            if env.window() != a.max_len {
                return Err(CliError::input(format!(
                    "{}: an environment of window {}, --max-len is {}",
                    path.display(),
                    env.window(),
                    a.max_len
                )));
            }
            env
        }
        None => {
            let fine_tune = super::transrec::parse_fine_tune(Some(&a.text_layers))?;
            let encoder = TextEncoder::load(&a.text_encoder, fine_tune).map_err(CliError::input)?;
            LanguageEnv::new(encoder, &texts, prompt, a.max_len, &mut rng)
                .map_err(CliError::input)?
        }
    };
    env.state_loss = !a.no_state_loss;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build()
        .map_err(|e| CliError::internal(format!("thread pool: {e}")))?;
    seqrec_kernels::cpu::linear::set_gemm_threads(pool.current_num_threads());

    // Training on a seeded fraction; a disjoint sample of at most 500 transitions measures
    // how often the reward model ranks the logged action above a negative.
    let mut order: Vec<usize> = (0..data.len()).collect();
    crate::learner::shuffle(&mut order, &mut Rng::new(a.seed ^ 0x4C45_5452));
    let n_train = ((data.len() as f64 * a.fraction).ceil() as usize).clamp(1, data.len());
    let (train, rest) = order.split_at(n_train);
    let held: Vec<usize> = rest.iter().copied().take(500).collect();
    let mut neg_rng = Rng::new(a.seed ^ 0x004E_4547);
    let held_neg: Vec<u32> = held
        .iter()
        .map(|&i| sample_other(&mut neg_rng, n_items, data.get(i).action))
        .collect();
    let mut opt = Adam::new(0.0);
    let mut train = train.to_vec();
    let start = Instant::now();
    let mut best: (usize, f64, Vec<Vec<f32>>) = (0, f64::NEG_INFINITY, Vec::new());
    let epochs = if a.env.is_some() { 0 } else { a.epochs };
    pool.install(|| -> Result<(), CliError> {
        for epoch in 1..=epochs {
            crate::learner::shuffle(&mut train, &mut rng);
            let mut total = EnvLoss::default();
            let t0 = Instant::now();
            for ids in train.chunks(a.batch_size) {
                let ts: Vec<_> = ids.iter().map(|&i| data.get(i)).collect();
                let hist: Vec<&[u32]> = ts.iter().map(|t| t.state).collect();
                let pos: Vec<u32> = ts.iter().map(|t| t.action).collect();
                let neg: Vec<u32> = pos
                    .iter()
                    .map(|&p| sample_other(&mut neg_rng, n_items, p))
                    .collect();
                let l = env
                    .loss_backward(&hist, &pos, &neg, Some(&mut rng))
                    .map_err(CliError::input)?;
                let mut params = env.params_mut();
                opt.step(&mut params, a.lr);
                zero_grads(&mut params);
                total.rm += l.rm * ids.len() as f64;
                total.sm += l.sm * ids.len() as f64;
                total.right += l.right;
                total.pairs += l.pairs;
            }
            let n = train.len() as f64;
            let held_acc = pairwise_accuracy(&env, &data, &held, &held_neg)?;
            // Without held-out transitions (fraction 1), the training pairs' accuracy.
            let score = held_acc.unwrap_or(total.right as f64 / total.pairs.max(1) as f64);
            let better = score > best.1;
            if better {
                best = (
                    epoch,
                    score,
                    env.params().iter().map(|p| p.value.clone()).collect(),
                );
            }
            eprintln!(
                "LE epoch {epoch}: L_rm {:.4}, L_sm {:.4}, reward model right on {:.3} of training pairs, {} of {} held-out pairs{} ({:.1} s)",
                total.rm / n,
                total.sm / n,
                total.right as f64 / total.pairs.max(1) as f64,
                held_acc.map_or("–".into(), |x| format!("{x:.3}")),
                held.len(),
                if better { " *" } else { "" },
                t0.elapsed().as_secs_f64()
            );
            if epoch - best.0 >= a.patience {
                break;
            }
        }
        Ok(())
    })?;
    for (p, v) in env.params_mut().into_iter().zip(&best.2) {
        p.value.copy_from_slice(v);
    }
    if let Some(path) = &a.save_env {
        let bytes = env.to_safetensors().map_err(CliError::input)?;
        std::fs::write(path, bytes)
            .map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
    }

    // The cache, every transition, in parallel chunks.
    let t0 = Instant::now();
    // The cache's negatives follow the seed alone (not the training's draws), so that a
    // saved environment fills the same rows.
    let mut cache_rng = Rng::new(a.seed ^ 0x4341_4348);
    let negatives: Vec<u32> = (0..data.len())
        .map(|i| sample_other(&mut cache_rng, n_items, data.get(i).action))
        .collect();
    let ids: Vec<usize> = (0..data.len()).collect();
    let rows = pool.install(|| {
        ids.par_chunks(FILL_CHUNK)
            .map(|chunk| fill(&env, &data, chunk, &negatives, model.as_ref()))
            .collect::<Result<Vec<_>, CliError>>()
    })?;
    let mut cache = LeCacheData {
        n_items,
        state_dim: env.state_dim(),
        ..Default::default()
    };
    for r in rows {
        cache.action.extend(r.action);
        cache.state.extend(r.state);
        cache.reward.extend(r.reward);
        cache.negative.extend(r.negative);
        cache.negative_reward.extend(r.negative_reward);
        cache.augmented.extend(r.augmented);
        cache.augmented_reward.extend(r.augmented_reward);
    }
    let extra = [
        ("text_encoder", json!(a.text_encoder.display().to_string())),
        ("text_layers", json!(a.text_layers)),
        ("window", json!(a.max_len)),
        ("fraction", json!(a.fraction)),
        ("epochs", json!(a.epochs)),
        ("best_epoch", json!(best.0)),
        ("state_loss", json!(!a.no_state_loss)),
        (
            "augmentation_model",
            json!(a.model.as_ref().map(|p| p.display().to_string())),
        ),
    ];
    let bytes = cache.to_bytes(&extra).map_err(CliError::input)?;
    std::fs::write(&a.out, bytes)
        .map_err(|e| CliError::input(format!("{}: {e}", a.out.display())))?;
    out(format!(
        "wrote {} ({} samples, state width {}{}; {}, filled {:.0} s)",
        a.out.display(),
        data.len(),
        env.state_dim(),
        if a.model.is_some() {
            ", augmented actions"
        } else {
            ""
        },
        match &a.env {
            Some(p) => format!("environment {}", p.display()),
            None => format!(
                "LE best epoch {} (held-out pairs right {:.3}), trained {:.0} s",
                best.0,
                best.1,
                t0.duration_since(start).as_secs_f64()
            ),
        },
        t0.elapsed().as_secs_f64()
    ))
}

/// The prompts' fixed words in the tokenizer of the encoder folder `dir`.
fn prompt(dir: &Path) -> Result<Prompt, CliError> {
    let f32_weights = seqrec_engine::text::TextOptions {
        weight_dtype: seqrec_engine::DType::F32,
    };
    let enc = seqrec_engine::text::TextEncoder::load_with(dir, &f32_weights)?;
    let words = |text: &str| -> Result<(u32, Vec<u32>, u32), CliError> {
        let ids = enc.tokenize(text)?;
        match ids.as_slice() {
            [cls, middle @ .., sep] if !middle.is_empty() => Ok((*cls, middle.to_vec(), *sep)),
            _ => Err(CliError::input(format!(
                "{}: its tokenizer gives no words for `{text}`",
                dir.display()
            ))),
        }
    };
    let (cls, user, sep) = words(USER_TEXT)?;
    let (_, ask, _) = words(ASK_TEXT)?;
    Ok(Prompt {
        cls,
        sep,
        slot: sep,
        user,
        ask,
    })
}

/// The data set, its training transitions with windows of `max_len`, its item ids (padding
/// included) and the model over them, if given.
fn load(
    set: &DataArgs,
    max_len: usize,
    model: &Option<PathBuf>,
) -> Result<(data::Dataset, Transitions, usize, Option<Model>), CliError> {
    let (dataset, split) =
        super::transrec::load_split(&set.data, set.data_format, set.split.as_deref())?;
    let data = Transitions::from_split(&split, max_len).map_err(CliError::input)?;
    let n_items = split.n_items;
    let model = match model {
        Some(p) => Some(checked_model(p, n_items)?),
        None => None,
    };
    Ok((dataset, data, n_items, model))
}

/// `model`'s top-5 for the history of transition `t` (with its user, for a model that has
/// user embeddings).
fn top5(model: &Model, t: &Transition<'_>, ws: &mut Workspace) -> Result<Vec<u32>, CliError> {
    let mut q = Query::new(t.state);
    if model.info().n_users.is_some() {
        q = q.user(t.user);
    }
    Ok(model.topk(&q, 5, ws)?.iter().map(|s| s.item).collect())
}

/// A model over `n_items` ids.
fn checked_model(p: &Path, n_items: usize) -> Result<Model, CliError> {
    let m = Model::load(p)?;
    if m.info().n_items != n_items {
        return Err(CliError::input(format!(
            "{}: the model has {} item ids, the data set {n_items} (padding included)",
            p.display(),
            m.info().n_items
        )));
    }
    Ok(m)
}

/// How often the reward model scores the logged action above `negatives` on transitions
/// `ids` (`None` when there are none).
fn pairwise_accuracy(
    env: &LanguageEnv,
    data: &Transitions,
    ids: &[usize],
    negatives: &[u32],
) -> Result<Option<f64>, CliError> {
    if ids.is_empty() {
        return Ok(None);
    }
    let mut right = 0usize;
    for (chunk, neg) in ids.chunks(FILL_CHUNK).zip(negatives.chunks(FILL_CHUNK)) {
        let hist: Vec<&[u32]> = chunk.iter().map(|&i| data.get(i).state).collect();
        let pos: Vec<u32> = chunk.iter().map(|&i| data.get(i).action).collect();
        let rp = env.rewards(&hist, &pos).map_err(CliError::input)?;
        let rn = env.rewards(&hist, neg).map_err(CliError::input)?;
        right += rp.iter().zip(&rn).filter(|(p, n)| p > n).count();
    }
    Ok(Some(right as f64 / ids.len() as f64))
}

/// The cache rows of transitions `chunk`.
fn fill(
    env: &LanguageEnv,
    data: &Transitions,
    chunk: &[usize],
    negatives: &[u32],
    model: Option<&Model>,
) -> Result<LeCacheData, CliError> {
    let ts: Vec<_> = chunk.iter().map(|&i| data.get(i)).collect();
    let hist: Vec<&[u32]> = ts.iter().map(|t| t.state).collect();
    let action: Vec<u32> = ts.iter().map(|t| t.action).collect();
    let negative: Vec<u32> = chunk.iter().map(|&i| negatives[i]).collect();
    let mut rows = LeCacheData {
        state: env.states(&hist).map_err(CliError::input)?,
        reward: env.rewards(&hist, &action).map_err(CliError::input)?,
        negative_reward: env.rewards(&hist, &negative).map_err(CliError::input)?,
        action,
        negative,
        ..Default::default()
    };
    if let Some(m) = model {
        let mut ws = m.new_workspace();
        let mut cands: Vec<Vec<u32>> = Vec::with_capacity(ts.len());
        for t in &ts {
            cands.push(top5(m, t, &mut ws)?);
        }
        // Every candidate of every row in one batch, then the best per row.
        let flat_hist: Vec<&[u32]> = cands
            .iter()
            .zip(&hist)
            .flat_map(|(c, h)| std::iter::repeat_n(*h, c.len()))
            .collect();
        let flat: Vec<u32> = cands.iter().flatten().copied().collect();
        let r = env.rewards(&flat_hist, &flat).map_err(CliError::input)?;
        let mut at = 0;
        for c in &cands {
            let (best, value) = c.iter().zip(&r[at..at + c.len()]).fold(
                (c[0], f32::NEG_INFINITY),
                |acc, (&i, &v)| {
                    if v > acc.1 { (i, v) } else { acc }
                },
            );
            rows.augmented.push(best);
            rows.augmented_reward.push(value);
            at += c.len();
        }
    }
    Ok(rows)
}

fn samples(a: SamplesArgs) -> CliResult {
    if a.max_len == 0 {
        return Err(CliError::input("--max-len must be at least 1"));
    }
    let (dataset, data, n_items, model) = load(&a.set, a.max_len, &a.model)?;
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
            let ids = top5(m, &t, ws)?;
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
