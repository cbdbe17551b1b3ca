//! `seqrec rl`: an agent learning online in a simulated environment (thesis Ch.7,
//! [`crate::online`]): builds (or reloads) the environment pair, pre-trains iALP from a judge
//! when the agent needs it, runs the online loop in the test environment and writes
//! `RUN_DIR/curve.csv`, `RUN_DIR/curve.png`, `RUN_DIR/agent.safetensors` (the final agent, an
//! `sa2c` checkpoint) and `RUN_DIR/env.safetensors` (the environments' reward models, for
//! `--env-from`).

use super::CliError;
use crate::data::{self, DataFormat};
use crate::models::{SasRecConfig, SasRecModel};
use crate::nn::param::{load_values, to_safetensors};
use crate::nn::{Module, Param, Rng};
use crate::online::agent::{Agent, AgentConfig, AgentKind, Explore, Net, Shape};
use crate::online::coat::{CoatData, CoatEnv, coat_quit};
use crate::online::env::{Catalog, Environment, Threshold, split_80_20};
use crate::online::judge::{CommandJudge, Judge, TextJudge};
use crate::online::plot::plot_curves;
use crate::online::run::{curve_csv, run_online};
use crate::online::seqsim::{RewardModel, SeqEnv, fit_reward_model, seq_quit};
use clap::Args;
use seqrec_engine::WeightFile;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `seqrec rl` arguments.
#[derive(Args, Debug)]
pub struct RlOnlineArgs {
    /// Environment: coat, ml-100k or amazon-scientific.
    #[arg(long)]
    env: String,
    /// The data folder of the environment (default `../shared/data/<env>`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Agent: dqn, pg, a2c, ialp, ialp-ft, ialp-ap.
    #[arg(long)]
    agent: String,
    /// Exploration: eps (ε = 0.1), sample (from the policy) or greedy.
    #[arg(long, default_value = "sample")]
    explore: String,
    /// Online environment steps.
    #[arg(long, default_value_t = 50_000)]
    steps: u64,
    /// Points of the learning curve every this many steps.
    #[arg(long, default_value_t = 1000)]
    every: u64,
    /// Episodes averaged per curve point.
    #[arg(long, default_value_t = 20)]
    window: usize,
    /// The judge of iALP's pre-training: a program reading one JSON query per line on stdin
    /// and answering `{"choice": "a".."j" | "None"}` per line on stdout.
    #[arg(long)]
    judge_cmd: Option<String>,
    /// Seconds the judge may take per answer.
    #[arg(long, default_value_t = 60.0)]
    judge_timeout: f64,
    /// Built-in judge: the similarity of item texts embedded with this text encoder (without
    /// it and without --judge-cmd: the overlap of the items' attribute words).
    #[arg(long)]
    text_encoder: Option<PathBuf>,
    /// Built-in judge: answer "None" below this cosine.
    #[arg(long, default_value_t = 0.3)]
    judge_threshold: f32,
    /// iALP pre-training episodes (Algorithm 5's epochs).
    #[arg(long, default_value_t = 100)]
    pretrain_epochs: usize,
    /// Judge queries per pre-training episode.
    #[arg(long, default_value_t = 10)]
    pretrain_steps: usize,
    /// Start iALP / A-iALP from this pre-trained agent instead of pre-training.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Reuse the environments (reward models) of an earlier run's `env.safetensors`.
    #[arg(long)]
    env_from: Option<PathBuf>,
    /// Seed of the 80/20 user split and the reward models.
    #[arg(long, default_value_t = 2020)]
    env_seed: u64,
    /// Seed of the agent (initialisation, exploration, replay).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    /// Transitions per update.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// The actor's loss: expected (−Σ_a π(a|s)·Q(s,a), Q detached), q-v (−log π(a|s)·(Q(s,a) −
    /// V(s))) or td (§8.2 as written: −log π(a|s) times the critic's TD error, which vanishes
    /// as the critic fits).
    #[arg(long, default_value = "expected")]
    actor_loss: String,
    /// Width of the SASRec state encoder.
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    /// Self-attention blocks of the state encoder (1, as the SQN family's SASRec).
    #[arg(long, default_value_t = 1)]
    layers: usize,
    /// Discount γ.
    #[arg(long, default_value_t = 0.9)]
    gamma: f32,
    /// A-iALP_ap: α at the start (it rises linearly to 1 over the first half of the run).
    #[arg(long, default_value_t = 0.1)]
    alpha0: f32,
    /// Quit rule: a reward below this disappoints (default 2.5 on Coat, 1.0 otherwise).
    #[arg(long)]
    quit_below: Option<f32>,
    /// Quit rule: consecutive disappointing steps before the user leaves (default 2 on Coat,
    /// 3 otherwise).
    #[arg(long)]
    quit_patience: Option<usize>,
    /// Quit rule: the longest episode (default 30 on Coat, 20 otherwise).
    #[arg(long)]
    max_len: Option<usize>,
    /// Run directory.
    #[arg(long)]
    out: PathBuf,
    /// No progress on stderr.
    #[arg(long)]
    quiet: bool,
}

fn bad(msg: impl std::fmt::Display) -> CliError {
    CliError::input(msg)
}

/// The two environments and how to save them.
struct Envs {
    train: Box<dyn Environment>,
    test: Box<dyn Environment>,
    tensors: Vec<Param>,
    meta: BTreeMap<String, String>,
}

fn quit_of(a: &RlOnlineArgs, default: Threshold) -> Threshold {
    Threshold {
        threshold: a.quit_below.unwrap_or(default.threshold),
        patience: a.quit_patience.unwrap_or(default.patience),
        max_len: a.max_len.unwrap_or(default.max_len),
    }
}

fn ids_json(ids: &[u32]) -> String {
    serde_json::to_string(ids).expect("ids serialise")
}

fn ids_of(meta: &BTreeMap<String, String>, key: &str, file: &Path) -> Result<Vec<u32>, CliError> {
    let s = meta
        .get(key)
        .ok_or_else(|| bad(format!("{}: no `{key}` in the metadata", file.display())))?;
    serde_json::from_str(s).map_err(|e| bad(format!("{}: `{key}`: {e}", file.display())))
}

/// A saved environment file: its tensors and metadata, checked to be of `env`.
fn read_env_file(
    path: &Path,
    env: &str,
    seed: u64,
) -> Result<(WeightFile, BTreeMap<String, String>), CliError> {
    let file = WeightFile::open(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let meta: BTreeMap<String, String> = file.metadata_map().clone();
    match meta.get("env") {
        Some(e) if e == env => match meta.get("env_seed") {
            Some(s) if *s == seed.to_string() => Ok((file, meta)),
            other => Err(bad(format!(
                "{}: environments split with --env-seed {}, not {seed}",
                path.display(),
                other.map_or("(none)", String::as_str)
            ))),
        },
        Some(e) => Err(bad(format!(
            "{}: an environment of `{e}`, not `{env}`",
            path.display()
        ))),
        None => Err(bad(format!(
            "{}: not an environment file (no `env` key)",
            path.display()
        ))),
    }
}

fn coat_envs(a: &RlOnlineArgs, dir: &Path) -> Result<Envs, CliError> {
    let data = CoatData::load(dir)?;
    let quit = quit_of(a, coat_quit());
    let cols = (data.n_users + 1) * (data.n_items + 1);
    let shape = [data.n_users + 1, data.n_items + 1];
    let (train_users, test_users, train_r, test_r) = match &a.env_from {
        Some(p) => {
            let (file, meta) = read_env_file(p, "coat", a.env_seed)?;
            let get = |name: &str| -> Result<Vec<f32>, CliError> {
                Ok(file
                    .tensor(name, &shape)
                    .map_err(|e| bad(format!("{}: {e}", p.display())))?
                    .as_slice()
                    .to_vec())
            };
            (
                ids_of(&meta, "train_users", p)?,
                ids_of(&meta, "test_users", p)?,
                get("train.rewards")?,
                get("test.rewards")?,
            )
        }
        None => {
            let (mut tr, mut te) =
                split_80_20((1..=data.n_users as u32).collect::<Vec<u32>>(), a.env_seed);
            tr.sort_unstable();
            te.sort_unstable();
            let (r1, e1) = data.fit_user_model(&tr, a.env_seed);
            let (r2, e2) = data.fit_user_model(&te, a.env_seed + 1);
            if !a.quiet {
                eprintln!(
                    "coat user models: held-out RMSE {e1:.3} (train environment), {e2:.3} (test)"
                );
            }
            (tr, te, r1, r2)
        }
    };
    debug_assert_eq!(train_r.len(), cols);
    let mut meta = BTreeMap::new();
    meta.insert("train_users".to_string(), ids_json(&train_users));
    meta.insert("test_users".to_string(), ids_json(&test_users));
    let tensors = vec![
        Param::from_values("train.rewards", &shape, train_r.clone()),
        Param::from_values("test.rewards", &shape, test_r.clone()),
    ];
    Ok(Envs {
        train: Box::new(CoatEnv::new(
            "coat/train",
            &data,
            train_users,
            train_r,
            Box::new(quit),
        )),
        test: Box::new(CoatEnv::new(
            "coat/test",
            &data,
            test_users,
            test_r,
            Box::new(quit),
        )),
        tensors,
        meta,
    })
}

/// Item attributes of a sequential data set: the item texts' title and the rest.
fn seq_catalog(env: &str, dir: &Path, ds: &data::Dataset) -> Result<Catalog, CliError> {
    use super::item_text;
    let (source, texts) = if env == "amazon-scientific" {
        item_text::read_amazon(dir)?
    } else {
        item_text::read_recbole(dir)?
    };
    let vocab = ds.items();
    let n = vocab.len();
    let mut attributes = vec![Vec::new(); n];
    let mut missing = 0usize;
    for (id, slot) in attributes.iter_mut().enumerate().skip(1) {
        let text = vocab
            .token(id as u32)
            .and_then(|t| t.parse::<u32>().ok())
            .and_then(|k| texts.get(&k))
            .and_then(Option::as_ref);
        *slot = match text {
            Some(t) => {
                let rest = t.text.strip_prefix(t.title.as_str()).unwrap_or(&t.text);
                vec![
                    t.title.clone(),
                    rest.trim_start_matches(['.', ' ']).to_string(),
                ]
            }
            None => {
                missing += 1;
                vec![String::new(), String::new()]
            }
        };
    }
    if missing == n - 1 {
        return Err(bad(format!(
            "{}: no item of the data set has a text",
            source.display()
        )));
    }
    let (scenario, noun, behavior, names) = if env == "amazon-scientific" {
        ("online shop", "product", "buying", ["title", "description"])
    } else {
        ("movie", "movie", "watching", ["title", "year and genres"])
    };
    Ok(Catalog {
        scenario: scenario.into(),
        item_noun: noun.into(),
        behavior: behavior.into(),
        attribute_names: names.iter().map(|s| s.to_string()).collect(),
        attributes,
    })
}

fn prefixed(prefix: &str, m: &SasRecModel) -> Vec<Param> {
    m.params()
        .into_iter()
        .map(|p| Param::from_values(format!("{prefix}.{}", p.name), &p.shape, p.value.clone()))
        .collect()
}

fn seq_envs(a: &RlOnlineArgs, dir: &Path) -> Result<Envs, CliError> {
    let fmt = if a.env == "amazon-scientific" {
        None
    } else {
        Some(DataFormat::Recbole)
    };
    let ds = data::load(dir, fmt).map_err(|e| bad(format!("{}: {e}", dir.display())))?;
    let catalog = seq_catalog(&a.env, dir, &ds)?;
    let inter = match &ds {
        data::Dataset::Interactions(i) => i.clone(),
        data::Dataset::Presplit(p) => p.interactions(),
    };
    let n_items = inter.n_items();
    let n_users = inter.n_users();
    let seqs: Vec<(u32, Vec<u32>)> = inter
        .sequences
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .map(|(u, s)| (u as u32, s.clone()))
        .collect();
    let (tr, te) = split_80_20(seqs, a.env_seed);
    let quit = quit_of(a, seq_quit());
    let window = 50;
    let (m1, m2) = match &a.env_from {
        Some(p) => {
            let (file, meta) = read_env_file(p, &a.env, a.env_seed)?;
            let load = |prefix: &str| -> Result<RewardModel, CliError> {
                let mut m = SasRecModel::new(SasRecConfig::new(n_items, window), &mut Rng::new(0));
                let mut named: Vec<Param> = prefixed(prefix, &m);
                load_values(&mut named.iter_mut().collect::<Vec<_>>(), &file)
                    .map_err(|e| bad(format!("{}: {e}", p.display())))?;
                for (dst, src) in m.params_mut().into_iter().zip(&named) {
                    dst.value.copy_from_slice(&src.value);
                }
                let num = |k: &str| -> Result<f32, CliError> {
                    meta.get(&format!("{prefix}.{k}"))
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| {
                            bad(format!(
                                "{}: no `{prefix}.{k}` in the metadata",
                                p.display()
                            ))
                        })
                };
                Ok(RewardModel {
                    model: m,
                    a: num("platt_a")?,
                    b: num("platt_b")?,
                })
            };
            (load("train")?, load("test")?)
        }
        None => {
            let progress = !a.quiet;
            if progress {
                eprintln!(
                    "fitting the reward models ({} and {} users)",
                    tr.len(),
                    te.len()
                );
            }
            let m1 = fit_reward_model(&tr, n_users, n_items, window, a.env_seed, progress)
                .map_err(bad)?;
            let m2 = fit_reward_model(&te, n_users, n_items, window, a.env_seed + 1, progress)
                .map_err(bad)?;
            (m1, m2)
        }
    };
    let mut meta = BTreeMap::new();
    let mut tensors = Vec::new();
    for (prefix, m) in [("train", &m1), ("test", &m2)] {
        meta.insert(format!("{prefix}.platt_a"), m.a.to_string());
        meta.insert(format!("{prefix}.platt_b"), m.b.to_string());
        tensors.extend(prefixed(prefix, &m.model));
    }
    let name = a.env.clone();
    Ok(Envs {
        train: Box::new(SeqEnv::new(
            &format!("{name}/train"),
            &tr,
            m1,
            catalog.clone(),
            Box::new(quit),
        )),
        test: Box::new(SeqEnv::new(
            &format!("{name}/test"),
            &te,
            m2,
            catalog,
            Box::new(quit),
        )),
        tensors,
        meta,
    })
}

/// The built-in judge without a text encoder: items as normalised bags of their attribute
/// words (hashed into 512 dimensions), so the judge prefers candidates that share attributes
/// with the history.
fn attribute_judge(catalog: &Catalog, threshold: f32) -> Result<TextJudge, CliError> {
    const DIM: usize = 512;
    let n = catalog.n_items();
    let mut v = vec![0.0f32; n * DIM];
    for id in 1..n {
        for w in catalog
            .describe(id as u32)
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 1)
        {
            let h = w
                .to_lowercase()
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                });
            v[id * DIM + (h % DIM as u64) as usize] += 1.0;
        }
    }
    TextJudge::new(v, DIM, threshold).map_err(bad)
}

fn load_agent_net(path: &Path, shape: &Shape, cfg: &AgentConfig) -> Result<Net, CliError> {
    let file = WeightFile::open(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let mut net = crate::online::agent::new_net(shape, cfg, &mut Rng::new(0));
    load_values(&mut net.params_mut(), &file).map_err(|e| {
        bad(format!(
            "{}: not an agent of this environment ({} ids, window {}): {e}",
            path.display(),
            shape.vocab(),
            shape.max_len
        ))
    })?;
    Ok(net)
}

fn save_agent(path: &Path, agent: &Agent, a: &RlOnlineArgs) -> Result<(), CliError> {
    let mut net = agent.acting_net().clone();
    net.record("agent", agent.kind().name());
    net.record("env", a.env.as_str());
    net.record("online_steps", agent.steps);
    let shape = agent.shape();
    net.record("action_items", shape.n_items as u64);
    net.record("user_tokens", shape.n_users as u64);
    // Padding and user tokens are never actions: keep them out of served rankings.
    for p in net.params_mut() {
        if p.name == "sup_head.bias" {
            for (i, b) in p.value.iter_mut().enumerate() {
                if i == 0 || i >= shape.n_items {
                    *b = -1e4;
                }
            }
        }
    }
    let bytes = net.to_safetensors().map_err(bad)?;
    std::fs::write(path, bytes).map_err(|e| bad(format!("{}: {e}", path.display())))
}

/// iALP's pre-training (Algorithm 5) in the training environment with the judge the
/// arguments name; saves `RUN_DIR/pretrained.safetensors` and returns the network.
fn pretrain(
    a: &RlOnlineArgs,
    envs: &mut Envs,
    shape: Shape,
    cfg: AgentConfig,
) -> Result<Net, CliError> {
    let catalog = envs.train.catalog().clone();
    let mut judge: Box<dyn Judge> = match (&a.judge_cmd, &a.text_encoder) {
        (Some(cmd), _) => Box::new(
            CommandJudge::spawn(cmd, Duration::from_secs_f64(a.judge_timeout)).map_err(bad)?,
        ),
        (None, Some(dir)) => {
            Box::new(TextJudge::from_text_encoder(dir, &catalog, a.judge_threshold).map_err(bad)?)
        }
        (None, None) => Box::new(attribute_judge(&catalog, a.judge_threshold)?),
    };
    let mut agent = Agent::new(AgentKind::A2c, cfg, shape, None, a.seed);
    let (quiet, epochs) = (a.quiet, a.pretrain_epochs);
    let share = agent
        .pretrain(
            envs.train.as_mut(),
            judge.as_mut(),
            epochs,
            a.pretrain_steps,
            10,
            |e| {
                if !quiet && (e % 10 == 0 || e == epochs) {
                    eprintln!("pre-training from the judge: episode {e}/{epochs}");
                }
            },
        )
        .map_err(bad)?;
    if !quiet {
        eprintln!(
            "the judge picked a candidate in {:.1}% of queries",
            100.0 * share
        );
    }
    let mut net = agent.into_theta();
    net.record("agent", "ialp");
    let p = a.out.join("pretrained.safetensors");
    std::fs::write(&p, net.to_safetensors().map_err(bad)?)
        .map_err(|e| bad(format!("{}: {e}", p.display())))?;
    Ok(net)
}

/// Runs `seqrec rl`.
pub fn run(a: RlOnlineArgs) -> Result<(), CliError> {
    let kind: AgentKind = a.agent.parse().map_err(bad)?;
    let explore: Explore = a.explore.parse().map_err(bad)?;
    if !matches!(a.env.as_str(), "coat" | "ml-100k" | "amazon-scientific") {
        return Err(bad(format!(
            "--env `{}`: expected coat, ml-100k or amazon-scientific",
            a.env
        )));
    }
    if a.init.is_some() && !kind.pretrained() {
        return Err(bad(format!(
            "--init is for ialp, ialp-ft and ialp-ap, not {kind}"
        )));
    }
    let dir = a
        .data
        .clone()
        .unwrap_or_else(|| Path::new("../shared/data").join(&a.env));
    std::fs::create_dir_all(&a.out).map_err(|e| bad(format!("{}: {e}", a.out.display())))?;
    let t0 = Instant::now();
    let mut envs = if a.env == "coat" {
        coat_envs(&a, &dir)?
    } else {
        seq_envs(&a, &dir)?
    };
    let env_path = a.out.join("env.safetensors");
    let mut meta: Vec<(&str, &str)> = envs
        .meta
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    meta.push(("env", a.env.as_str()));
    let seed = a.env_seed.to_string();
    meta.push(("env_seed", seed.as_str()));
    let bytes = to_safetensors(&envs.tensors.iter().collect::<Vec<_>>(), &meta).map_err(bad)?;
    std::fs::write(&env_path, bytes).map_err(|e| bad(format!("{}: {e}", env_path.display())))?;
    let max_steps = a.max_len.unwrap_or(if a.env == "coat" { 30 } else { 20 });
    let shape = Shape::of(envs.test.as_ref(), max_steps);
    let cfg = AgentConfig {
        gamma: a.gamma,
        lr: a.lr,
        batch: a.batch.max(1),
        hidden: a.hidden,
        layers: a.layers.max(1),
        alpha0: a.alpha0,
        alpha_ramp: (a.steps / 2).max(1),
        explore,
        advantage: a.actor_loss.parse().map_err(bad)?,
        ..AgentConfig::default()
    };
    let init = match &a.init {
        Some(p) => Some(load_agent_net(p, &shape, &cfg)?),
        None => None,
    };
    let init = match (init, kind.pretrained()) {
        (None, true) => Some(pretrain(&a, &mut envs, shape, cfg.clone())?),
        (init, _) => init,
    };
    let mut agent = Agent::new(kind, cfg, shape, init, a.seed);
    let quiet = a.quiet;
    let t_online = Instant::now();
    let curve = run_online(
        &mut agent,
        envs.test.as_mut(),
        a.steps,
        a.every,
        a.window,
        a.seed,
        |p| {
            if !quiet {
                eprintln!(
                    "step {:>6}  R {:>7.3}  Len {:>6.2}  R_avg {:.3}",
                    p.step, p.r, p.len, p.r_avg
                );
            }
        },
    );
    let online_secs = t_online.elapsed().as_secs_f64();
    let csv = a.out.join("curve.csv");
    std::fs::write(&csv, curve_csv(&curve)).map_err(|e| bad(format!("{}: {e}", csv.display())))?;
    let series = vec![(
        format!("{} ({})", kind, a.explore),
        curve.iter().map(|p| (p.step as f64, p.r)).collect(),
    )];
    let png = a.out.join("curve.png");
    plot_curves(
        &png,
        &format!("{} on {}", kind, a.env),
        "environment steps",
        "return R (last 20 episodes)",
        &series,
    )
    .map_err(bad)?;
    save_agent(&a.out.join("agent.safetensors"), &agent, &a)?;
    let last = curve.last().copied();
    super::out(format!(
        "{} {} {}: final R {:.3} Len {:.2} R_avg {:.3}; {} steps in {:.1} s ({:.0} steps/s online), {:.1} s in all; wrote {}",
        a.env,
        kind,
        a.explore,
        last.map_or(0.0, |p| p.r),
        last.map_or(0.0, |p| p.len),
        last.map_or(0.0, |p| p.r_avg),
        agent.steps,
        online_secs,
        agent.steps as f64 / online_secs.max(1e-9),
        t0.elapsed().as_secs_f64(),
        a.out.display()
    ))?;
    Ok(())
}

/// `seqrec rl-plot` arguments.
#[derive(Args, Debug)]
pub struct RlPlotArgs {
    /// Run directories of `seqrec rl` (each with a `curve.csv`); each is one line, named after
    /// its directory.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// The column to plot: R, Len or R_avg.
    #[arg(long, default_value = "R")]
    column: String,
    /// Chart title.
    #[arg(long, default_value = "")]
    title: String,
    /// The PNG to write.
    #[arg(long)]
    out: PathBuf,
}

/// Reads a `curve.csv` (`step,R,Len,R_avg`) into `(step, value of column c)` points.
fn read_curve(path: &Path, c: usize) -> Result<Vec<(f64, f64)>, CliError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let mut lines = text.lines();
    if lines.next() != Some("step,R,Len,R_avg") {
        return Err(bad(format!(
            "{}:1: expected the header `step,R,Len,R_avg`",
            path.display()
        )));
    }
    lines
        .enumerate()
        .map(|(i, l)| {
            let v: Vec<f64> = l
                .split(',')
                .map(str::parse::<f64>)
                .collect::<Result<_, _>>()
                .map_err(|e| bad(format!("{}:{}: {e}", path.display(), i + 2)))?;
            if v.len() != 4 {
                return Err(bad(format!(
                    "{}:{}: {} fields, expected 4",
                    path.display(),
                    i + 2,
                    v.len()
                )));
            }
            Ok((v[0], v[c]))
        })
        .collect()
}

/// Runs `seqrec rl-plot`: the learning curves of several runs in one PNG.
pub fn plot(a: RlPlotArgs) -> Result<(), CliError> {
    let c = match a.column.as_str() {
        "R" => 1,
        "Len" => 2,
        "R_avg" => 3,
        other => return Err(bad(format!("--column `{other}`: expected R, Len or R_avg"))),
    };
    let mut series = Vec::new();
    for run in &a.runs {
        let name = run.file_name().map_or_else(
            || run.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        series.push((name, read_curve(&run.join("curve.csv"), c)?));
    }
    let y = format!("{} (last 20 episodes)", a.column);
    plot_curves(&a.out, &a.title, "environment steps", &y, &series).map_err(bad)?;
    super::out(format!("wrote {}", a.out.display()))
}
