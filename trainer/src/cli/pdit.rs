//! `seqrec pdit run MODEL --input cases.json`: replays a `pdit-cases-v1` fixture file (the
//! format `spec/pdit_ref.py make` writes) through the engine and prints the same JSON object
//! with every output replaced by the engine's values, the inputs kept: the schedule's
//! constants, the network's outputs (with the trace of its intermediate values), the reverse
//! steps, the losses and their gradients, and the base and respaced samplers.

use super::{CliError, CliResult, out};
use clap::{Args, Subcommand};
use seqrec_engine::pdit::{NoiseSource, Pdit, PditWorkspace, Schedule, Trace};
use serde_json::{Map, Value, json};
use std::path::PathBuf;

/// `seqrec pdit ...`
#[derive(Args, Debug)]
pub struct PditArgs {
    #[command(subcommand)]
    command: PditCommand,
}

#[derive(Subcommand, Debug)]
enum PditCommand {
    /// Replays a fixture file of cases through the engine (JSON on stdout).
    Run(RunArgs),
    /// Makes a PDiT data file: item text latents, and per example a history, a target and the
    /// latent of the prompt built from the history (thesis §9.1).
    Data(DataArgs),
    /// Times sampling: whole chains per step count and batch size (per chain, step, sample).
    Bench(super::pdit_bench::BenchArgs),
    /// Fits attribute classifiers (e.g. ml-100k genres) on the items' text latents, for
    /// guided decoding.
    Attributes(super::pdit_guide::AttributesArgs),
    /// Samples with attribute guidance at several scales: compliance of the decoded items,
    /// HR@20 and NDCG@20.
    Guide(super::pdit_guide::GuideArgs),
}

#[derive(Args, Debug)]
struct DataArgs {
    /// Dataset folder (its interactions, and its item texts in `--data-format`).
    #[arg(long)]
    data: PathBuf,
    /// Layout of the item texts.
    #[arg(long, value_enum, default_value = "recbole")]
    data_format: super::embed::DataFormat,
    /// The text encoder's folder (all-MiniLM-L6-v2; see scripts/fetch-minilm.sh).
    #[arg(long)]
    text_encoder: PathBuf,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// L: the most recent history items kept.
    #[arg(long, default_value_t = 20)]
    max_hist_len: usize,
    /// Training examples per training user: its last N targets (0: every target).
    #[arg(long, default_value_t = 20)]
    train_targets: usize,
    /// Validation and test examples per validation / test user: its last N targets (the
    /// thesis's protocol is 1; more give a less noisy estimate on small data sets).
    #[arg(long, default_value_t = 1)]
    eval_targets: usize,
    /// Seed of the 8:1:1 split by user.
    #[arg(long, default_value_t = crate::data::DEFAULT_SEED)]
    seed: u64,
    /// The prompt's header (default: `Watched movies:` for recbole, `Ordered products:` for
    /// amazon-scientific).
    #[arg(long)]
    header: Option<String>,
    /// How the prompt names an item before its title (default: `a movie titled` /
    /// `a product titled`).
    #[arg(long)]
    item_phrase: Option<String>,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// PDiT checkpoint (safetensors with `seqrec.config` metadata, or a config.json beside it).
    model: PathBuf,
    /// The cases (`pdit-cases-v1`).
    #[arg(long)]
    input: PathBuf,
}

/// Runs `seqrec pdit`.
pub fn run(args: PditArgs) -> CliResult {
    match args.command {
        PditCommand::Run(a) => replay(a),
        PditCommand::Data(a) => make_data(a),
        PditCommand::Bench(a) => super::pdit_bench::run(a),
        PditCommand::Attributes(a) => super::pdit_guide::attributes(a),
        PditCommand::Guide(a) => super::pdit_guide::guide(a),
    }
}

type Case = Map<String, Value>;

fn bad(what: impl std::fmt::Display) -> CliError {
    CliError::input(what)
}

/// A list of numbers.
fn floats(c: &Case, key: &str) -> Result<Vec<f32>, CliError> {
    let list = c
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| bad(format!("case field `{key}` is missing or not a list")))?;
    list.iter()
        .map(|v| {
            v.as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| bad(format!("case field `{key}` holds a non-number {v}")))
        })
        .collect()
}

/// A list of equal-length lists of numbers, flattened, and the number of rows.
fn rows(c: &Case, key: &str) -> Result<(Vec<f32>, usize), CliError> {
    let list = c
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| bad(format!("case field `{key}` is missing or not a list")))?;
    let mut flat = Vec::new();
    for row in list {
        let row = row
            .as_array()
            .ok_or_else(|| bad(format!("case field `{key}` is not a list of lists")))?;
        for v in row {
            flat.push(
                v.as_f64()
                    .ok_or_else(|| bad(format!("case field `{key}` holds a non-number {v}")))?
                    as f32,
            );
        }
    }
    Ok((flat, list.len()))
}

fn int(c: &Case, key: &str) -> Result<usize, CliError> {
    c.get(key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| bad(format!("case field `{key}` is missing or not an integer")))
}

fn list32(v: &[f32]) -> Value {
    Value::from(v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>())
}

fn list64(v: &[f64]) -> Value {
    Value::from(v.to_vec())
}

/// Rows of `width` values as a list of lists.
fn matrix(v: &[f32], width: usize) -> Value {
    Value::from(v.chunks(width.max(1)).map(list32).collect::<Vec<_>>())
}

/// The inputs of a case: `p` and the history (one sample).
struct Inputs {
    p: Vec<f32>,
    history: Vec<f32>,
    n: usize,
}

impl Inputs {
    fn of(c: &Case) -> Result<Inputs, CliError> {
        let (history, n) = rows(c, "history")?;
        Ok(Inputs {
            p: floats(c, "p")?,
            history,
            n,
        })
    }

    fn hist(&self) -> Option<(&[f32], &[usize])> {
        Some((&self.history, std::slice::from_ref(&self.n)))
    }
}

fn cases<'a>(doc: &'a mut Value, key: &str) -> Result<&'a mut Vec<Value>, CliError> {
    doc.get_mut(key)
        .and_then(Value::as_array_mut)
        .ok_or_else(|| bad(format!("`{key}` is missing or not a list of cases")))
}

fn case(v: &mut Value) -> Result<&mut Case, CliError> {
    v.as_object_mut()
        .ok_or_else(|| bad("a case is not a JSON object"))
}

fn replay(a: RunArgs) -> CliResult {
    let model = Pdit::load(&a.model)?;
    let text = std::fs::read_to_string(&a.input)
        .map_err(|e| bad(format!("{}: {e}", a.input.display())))?;
    let mut doc: Value = serde_json::from_str(&text)
        .map_err(|e| bad(format!("{}: not valid JSON: {e}", a.input.display())))?;
    if doc.get("format").and_then(Value::as_str) != Some("pdit-cases-v1") {
        return Err(bad(format!(
            "{}: not a pdit-cases-v1 file",
            a.input.display()
        )));
    }
    let cfg = model.config().clone();
    let (d, ls) = (cfg.latent_dim, cfg.learn_sigma);
    let mut ws = PditWorkspace::default();
    let base = model.schedule().clone();

    for v in cases(&mut doc, "schedule")? {
        let c = case(v)?;
        let i = base.row(int(c, "t")?)?;
        for (key, val) in [
            ("beta", base.betas[i]),
            ("alpha_bar", base.alpha_bar[i]),
            ("alpha_bar_prev", base.alpha_bar_prev[i]),
            ("posterior_variance", base.posterior_variance[i]),
            (
                "posterior_log_variance_clipped",
                base.posterior_log_variance_clipped[i],
            ),
            ("posterior_mean_coef1", base.posterior_mean_coef1[i]),
            ("posterior_mean_coef2", base.posterior_mean_coef2[i]),
            ("eps_coef", base.eps_coef[i]),
            ("inv_sqrt_alpha", base.inv_sqrt_alpha[i]),
        ] {
            c.insert(key.into(), val.into());
        }
    }

    let v_or_null = |v: &Option<Vec<f32>>| v.as_deref().map_or(Value::Null, list32);
    for v in cases(&mut doc, "forward")? {
        let c = case(v)?;
        let (inp, z) = (Inputs::of(c)?, floats(c, "z_t")?);
        let t = int(c, "t")?;
        let mut o = vec![0.0f32; cfg.out_dim()];
        let mut tr = Trace::default();
        model.forward_traced(
            &z,
            &[t],
            Some(&inp.p),
            inp.hist(),
            &mut ws,
            &mut o,
            Some(&mut tr),
        )?;
        c.insert("eps".into(), list32(&o[..d]));
        c.insert(
            "v".into(),
            if ls {
                list32(&o[d..2 * d])
            } else {
                Value::Null
            },
        );
        let h = cfg.hidden;
        let opt = |x: &Option<Vec<f32>>| x.as_deref().map_or(Value::Null, |x| matrix(x, h));
        c.insert(
            "debug".into(),
            json!({
                "c": list32(&tr.c),
                "tokens_in": matrix(&tr.tokens_in, h),
                "after_gen": opt(&tr.after_gen),
                "after_tem": opt(&tr.after_tem),
            }),
        );
    }

    for v in cases(&mut doc, "reverse_step")? {
        let c = case(v)?;
        let (inp, z, noise) = (Inputs::of(c)?, floats(c, "z_t")?, floats(c, "noise")?);
        let j = int(c, "t")?;
        let r = model.reverse_step(&base, j, &z, Some(&inp.p), inp.hist(), &noise, &mut ws)?;
        c.insert("eps".into(), list32(&r.eps));
        c.insert("v".into(), v_or_null(&r.v));
        c.insert("pred_xstart".into(), list64(&r.pred_xstart));
        c.insert("mean".into(), list64(&r.mean));
        c.insert("log_variance".into(), list64(&r.log_variance));
        c.insert("z_prev".into(), list32(&r.z_prev));
        c.insert("noise_used".into(), (j > 1).into());
    }

    for v in cases(&mut doc, "loss")? {
        let c = case(v)?;
        let (inp, z0, noise) = (Inputs::of(c)?, floats(c, "z0")?, floats(c, "noise")?);
        let t = int(c, "t")?;
        let l = model.loss(t, &z0, &noise, Some(&inp.p), inp.hist(), &mut ws)?;
        c.insert("z_t".into(), list32(&l.z_t));
        c.insert("eps".into(), list32(&l.eps));
        c.insert("v".into(), v_or_null(&l.v));
        c.insert("mse".into(), l.terms.mse.into());
        c.insert("vb".into(), l.terms.vb.into());
        c.insert("loss".into(), l.terms.loss.into());
        c.insert("grad_eps".into(), list64(&l.terms.grad_eps));
        c.insert(
            "grad_v".into(),
            if ls {
                list64(&l.terms.grad_v)
            } else {
                Value::Null
            },
        );
    }

    for (key, respaced) in [("sample", false), ("sample_respaced", true)] {
        let Some(v) = doc.get_mut(key) else {
            continue;
        };
        let c = case(v)?;
        let chain = if respaced {
            let steps = int(c, "steps")?;
            let chain = Schedule::respaced(&cfg, steps)?;
            c.insert("timesteps".into(), Value::from(chain.model_t.clone()));
            c.insert("betas".into(), list64(&chain.betas));
            chain
        } else {
            c.insert("steps".into(), base.steps().into());
            base.clone()
        };
        let inp = Inputs::of(c)?;
        let init = floats(c, "noise_init")?;
        let (steps, _) = rows(c, "noise_steps")?;
        let keys: Vec<usize> = c
            .get("trajectory")
            .and_then(Value::as_array)
            .map(|t| {
                t.iter()
                    .filter_map(|e| e.get(if respaced { "step" } else { "t" })?.as_u64())
                    .map(|x| x as usize)
                    .collect()
            })
            .unwrap_or_default();
        let mut kept = Vec::new();
        let mut z0 = vec![0.0f32; d];
        let noise = NoiseSource::Given {
            init: &init,
            steps: &steps,
        };
        let mut keep = |j: usize, z: &[f32]| {
            if keys.contains(&j) {
                kept.push((j, z.to_vec()));
            }
            Ok(())
        };
        let hist = inp.hist();
        model.sample_keeping(
            &chain,
            1,
            Some(&inp.p),
            hist,
            noise,
            &mut ws,
            &mut z0,
            Some(&mut keep),
        )?;
        let traj: Vec<Value> = keys
            .iter()
            .map(|&k| {
                let z = kept.iter().find(|(j, _)| *j == k).map(|(_, z)| list32(z));
                let mut m = Map::new();
                m.insert((if respaced { "step" } else { "t" }).into(), k.into());
                m.insert("z".into(), z.unwrap_or(Value::Null));
                Value::Object(m)
            })
            .collect();
        c.insert("trajectory".into(), Value::from(traj));
        c.insert("z0".into(), list32(&z0));
    }
    doc["dtype"] = "float32".into();
    out(doc)
}

/// The general prompt of a history (thesis §9.1): the header, then the items' phrases.
fn prompt(header: &str, phrase: &str, titles: &[&str]) -> String {
    let items: Vec<String> = titles.iter().map(|t| format!("{phrase} {t}")).collect();
    format!("{header} {}", items.join(", "))
}

fn make_data(a: DataArgs) -> CliResult {
    use super::embed::{BATCH, DataFormat, encoder_meta, load_encoder};
    use super::item_text;
    use crate::data::{self, SplitMethod, TrainPart};
    use crate::models::pdit::{PditData, PditExample};

    if a.max_hist_len == 0 || a.eval_targets == 0 {
        return Err(bad("--max-hist-len and --eval-targets must be at least 1"));
    }
    let dataset =
        data::load(&a.data, None).map_err(|e| bad(format!("{}: {e}", a.data.display())))?;
    let method = SplitMethod::Ratio {
        weights: [8, 1, 1],
        seed: a.seed,
    };
    let split = dataset.split(&method).map_err(CliError::input)?;
    let (_, texts) = match a.data_format {
        DataFormat::Recbole => item_text::read_recbole(&a.data)?,
        DataFormat::AmazonScientific => item_text::read_amazon(&a.data)?,
    };
    let (header, phrase) = match a.data_format {
        DataFormat::Recbole => ("Watched movies:", "a movie titled"),
        DataFormat::AmazonScientific => ("Ordered products:", "a product titled"),
    };
    let header = a.header.as_deref().unwrap_or(header);
    let phrase = a.item_phrase.as_deref().unwrap_or(phrase);
    let enc = load_encoder(&a.text_encoder, seqrec_engine::DType::I16)?;
    let dim = enc.dim();

    // Item texts by internal id (the dataset's tokens are the texts' integer ids).
    let n_items = split.n_items;
    let vocab = dataset.items();
    let text_of = |id: u32| {
        let token = vocab.token(id)?;
        texts.get(&token.parse::<u32>().ok()?)?.as_ref()
    };
    let mut item_latents = vec![0.0f32; n_items * dim];
    let with_text: Vec<(u32, &str)> = (1..n_items as u32)
        .filter_map(|i| text_of(i).map(|t| (i, t.text.as_str())))
        .collect();
    let mut buf = vec![0.0f32; BATCH * dim];
    for chunk in with_text.chunks(BATCH) {
        let strs: Vec<&str> = chunk.iter().map(|(_, t)| *t).collect();
        let buf = &mut buf[..chunk.len() * dim];
        enc.encode_batch_into(&strs, buf)?;
        for ((id, _), row) in chunk.iter().zip(buf.chunks_exact(dim)) {
            item_latents[*id as usize * dim..(*id as usize + 1) * dim].copy_from_slice(row);
        }
    }
    eprintln!(
        "{} of {} items have text; encoding prompts",
        with_text.len(),
        n_items - 1
    );

    // Examples: the last `train_targets` targets of every training user, the last
    // `eval_targets` items of every validation and test user; the history is the L items before the target.
    let l = a.max_hist_len;
    let example = |user: u32, items: &[u32], end: usize| PditExample {
        user,
        history: items[end.saturating_sub(l)..end].to_vec(),
        target: items[end],
        prompt: Vec::new(),
    };
    let mut train = Vec::new();
    if let TrainPart::Sequences(seqs) = &split.train {
        for s in seqs {
            let m = s.items.len();
            let first = if a.train_targets == 0 {
                1
            } else {
                m.saturating_sub(a.train_targets).max(1)
            };
            train.extend((first..m).map(|end| example(s.user, &s.items, end)));
        }
    }
    let last = |seqs: &[data::EvalSeq]| -> Vec<PditExample> {
        seqs.iter()
            .flat_map(|s| {
                let m = s.items.len();
                (m.saturating_sub(a.eval_targets).max(1)..m)
                    .map(|end| example(s.user, &s.items, end))
            })
            .collect()
    };
    let (mut valid, mut test) = (last(&split.valid), last(&split.test));
    let total = train.len() + valid.len() + test.len();
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("prompts {pos}/{len} {wide_bar} {eta}")
            .map_err(|e| CliError::internal(e.to_string()))?,
    );
    for set in [&mut train, &mut valid, &mut test] {
        for chunk in set.chunks_mut(64) {
            let prompts: Vec<String> = chunk
                .iter()
                .map(|e| {
                    let titles: Vec<&str> = e
                        .history
                        .iter()
                        .filter_map(|&i| text_of(i).map(|t| t.title.as_str()))
                        .collect();
                    prompt(header, phrase, &titles)
                })
                .collect();
            let mut out = vec![0.0f32; chunk.len() * dim];
            enc.encode_batch_into(&prompts, &mut out)?;
            for (e, row) in chunk.iter_mut().zip(out.chunks_exact(dim)) {
                e.prompt = row.to_vec();
            }
            bar.inc(chunk.len() as u64);
        }
    }
    bar.finish_and_clear();
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("data".into(), a.data.display().to_string());
    meta.insert(
        "split".into(),
        format!("ratio 8:1:1 by user, seed {}", a.seed),
    );
    meta.insert("prompt".into(), prompt(header, phrase, &["<title>"]));
    meta.insert(
        "text_encoder".into(),
        encoder_meta(&enc, &a.text_encoder).to_string(),
    );
    meta.insert("train_targets".into(), a.train_targets.to_string());
    meta.insert("eval_targets".into(), a.eval_targets.to_string());
    meta.insert("prompt_header".into(), header.to_string());
    meta.insert("prompt_phrase".into(), phrase.to_string());
    // The dataset's own item tokens and titles by internal id, so that a request names items
    // as the dataset does and its prompt can be built.
    let tokens: Vec<&str> = (0..n_items as u32)
        .map(|i| {
            if i == 0 {
                ""
            } else {
                vocab.token(i).unwrap_or("")
            }
        })
        .collect();
    let titles: Vec<&str> = (0..n_items as u32)
        .map(|i| text_of(i).map_or("", |t| t.title.as_str()))
        .collect();
    meta.insert(
        "item_tokens".into(),
        serde_json::to_string(&tokens).unwrap_or_default(),
    );
    meta.insert(
        "item_titles".into(),
        serde_json::to_string(&titles).unwrap_or_default(),
    );
    let data = PditData {
        dim,
        max_hist_len: l,
        item_latents,
        train,
        valid,
        test,
        meta,
    };
    data.save(&a.out)
        .map_err(|e| CliError::internal(e.to_string()))?;
    out(format!(
        "wrote {}: {} items, {} / {} / {} train / valid / test examples, d = {dim}",
        a.out.display(),
        n_items - 1,
        data.train.len(),
        data.valid.len(),
        data.test.len()
    ))
}

/// `seqrec generate`: a PDiT's recommendations for one history.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// PDiT checkpoint.
    model: PathBuf,
    /// The PDiT data file the model was trained on (`seqrec pdit data`): the catalog's text
    /// latents, the dataset's item ids and titles, the prompt's wording.
    #[arg(long)]
    pdit_data: PathBuf,
    /// The history: the dataset's item ids, oldest first, comma-separated.
    #[arg(long)]
    history: String,
    /// The text encoder that made the data file, for the prompt's latent (variants full and
    /// gen).
    #[arg(long)]
    text_encoder: Option<PathBuf>,
    /// Sampling steps: the model's T (the thesis's 1000), or fewer on a respaced chain.
    #[arg(long)]
    steps: Option<usize>,
    /// Seed of the sampling noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Recommendations.
    #[arg(short, default_value_t = 20)]
    k: usize,
    /// Never recommend the history's items.
    #[arg(long)]
    exclude_history: bool,
    /// Attribute classifiers (`seqrec pdit attributes`) to guide the sampling with.
    #[arg(long, requires = "attribute")]
    attributes: Option<PathBuf>,
    /// The attribute value to steer towards (with --attributes).
    #[arg(long, requires = "attributes")]
    attribute: Option<String>,
    /// Guidance scale (with --attributes).
    #[arg(long, default_value_t = 4.0)]
    guide_scale: f32,
    /// Steer away from the attribute instead.
    #[arg(long)]
    away: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: super::Format,
}

/// Runs `seqrec generate`.
pub fn generate(a: GenerateArgs) -> CliResult {
    use crate::models::pdit::PditData;
    use seqrec_engine::pdit::Catalog;
    use seqrec_engine::{Cpu, Tensor};

    let model = Pdit::load(&a.model)?;
    let cfg = model.config().clone();
    let data = PditData::load(&a.pdit_data).map_err(CliError::input)?;
    let list = |key: &str| -> Result<Vec<String>, CliError> {
        let text = data.meta.get(key).ok_or_else(|| {
            bad(format!(
                "{}: no `{key}` metadata (remake it with this version of `seqrec pdit data`)",
                a.pdit_data.display()
            ))
        })?;
        serde_json::from_str(text)
            .map_err(|e| bad(format!("{}: `{key}`: {e}", a.pdit_data.display())))
    };
    let tokens = list("item_tokens")?;
    let ids: Vec<u32> = a
        .history
        .split(',')
        .map(|t| {
            let t = t.trim();
            tokens
                .iter()
                .position(|x| !t.is_empty() && x == t)
                .map(|i| i as u32)
                .ok_or_else(|| {
                    bad(format!(
                        "item `{t}` of --history is not in the data file's catalog"
                    ))
                })
        })
        .collect::<Result<_, _>>()?;
    let l = cfg.max_hist_len;
    let window = &ids[ids.len().saturating_sub(l)..];
    let (d, scale) = (cfg.latent_dim, cfg.latent_scale as f32);
    if data.dim != d {
        return Err(bad(format!(
            "the data file's latents have {} values, the model's {d}",
            data.dim
        )));
    }
    let history: Vec<f32> = window
        .iter()
        .flat_map(|&i| data.latent(i).iter().map(|&v| v * scale))
        .collect();
    let p = if cfg.variant.has_gen() {
        let dir = a.text_encoder.as_ref().ok_or_else(|| {
            bad(format!(
                "variant {} reads the prompt's latent: give --text-encoder",
                cfg.variant.name()
            ))
        })?;
        let titles = list("item_titles")?;
        let names: Vec<&str> = window
            .iter()
            .map(|&i| titles[i as usize].as_str())
            .filter(|t| !t.is_empty())
            .collect();
        let meta = |k: &str| data.meta.get(k).cloned().unwrap_or_default();
        let text = prompt(&meta("prompt_header"), &meta("prompt_phrase"), &names);
        let enc = super::embed::load_encoder(dir, seqrec_engine::DType::I16)?;
        if enc.dim() != cfg.cond_dim {
            return Err(bad(format!(
                "the text encoder gives {} values, the model's prompt latent has {}",
                enc.dim(),
                cfg.cond_dim
            )));
        }
        Some(
            enc.encode(&text)?
                .into_iter()
                .map(|v| v * scale)
                .collect::<Vec<f32>>(),
        )
    } else {
        None
    };
    let chain = model.respaced(a.steps.unwrap_or(cfg.timesteps))?;
    let table = Tensor::from_vec(vec![data.n_items(), d], data.item_latents.clone())?;
    let catalog = Catalog::new(&Cpu::new(), &table)?;
    let mut ws = PditWorkspace::default();
    let mut z0 = vec![0.0f32; d];
    let exclude: Vec<u32> = if a.exclude_history {
        ids.clone()
    } else {
        Vec::new()
    };
    let attrs = match &a.attributes {
        Some(f) => Some(crate::models::pdit::attr::Attributes::load(f).map_err(CliError::input)?),
        None => None,
    };
    let guide = match (&attrs, &a.attribute) {
        (Some(at), Some(name)) => {
            let i = at.index(name).map_err(CliError::input)?;
            Some(at.guidance(i, !a.away, a.guide_scale))
        }
        _ => None,
    };
    let lists = model.recommend_guided(
        &chain,
        &catalog,
        1,
        p.as_deref(),
        Some((&history, &[window.len()])),
        NoiseSource::seed(a.seed),
        guide.as_ref(),
        a.k,
        &[&exclude],
        &mut ws,
        &mut z0,
    )?;
    let recs = &lists[0];
    match a.format {
        super::Format::Json => out(json!({
            "items": recs.iter().map(|r| tokens[r.item as usize].as_str()).collect::<Vec<_>>(),
            "scores": recs.iter().map(|r| r.score).collect::<Vec<_>>(),
            "latent": z0.iter().map(|&v| v / scale).collect::<Vec<_>>(),
            "steps": chain.steps(),
        })),
        super::Format::Text => {
            let titles = list("item_titles").unwrap_or_default();
            for r in recs {
                let title = titles.get(r.item as usize).map_or("", String::as_str);
                out(format!(
                    "{}\t{:.4}\t{title}",
                    tokens[r.item as usize], r.score
                ))?;
            }
            Ok(())
        }
    }
}
