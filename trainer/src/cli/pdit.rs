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
