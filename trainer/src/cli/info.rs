//! `seqrec info MODEL`: a model file's architecture, sizes and tensors. `seqrec info --cpu`:
//! the CPU, the instruction-set levels it supports and the level each kernel family runs at
//! (after `SEQREC_ISA`).

use super::{CliResult, Format, out};
use clap::Args;
use seqrec_engine::{Backend, CONFIG_KEY, Device, LoadOptions, Model, WeightFile};
use seqrec_kernels::Isa;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Model file (safetensors, or a RecBole `.pth`).
    #[arg(required_unless_present = "cpu")]
    model: Option<PathBuf>,
    /// Where to load it: `cpu`, `cuda` (the first GPU) or `cuda:N` (the device is named in the
    /// output).
    #[arg(long, default_value = "cpu", value_parser = super::parse_device)]
    device: Device,
    /// Show the CPU, its instruction-set levels and the level each kernel family runs at
    /// (`SEQREC_ISA=v3` forces a lower level; see `seqrec_kernels::cpu::isa`).
    #[arg(long)]
    cpu: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// The CPU's model name (Linux `/proc/cpuinfo`), if known.
fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// The CPU, its levels and extensions, and each kernel family's level, as JSON (also part of
/// `seqrec bench`'s JSON).
pub(super) fn cpu_json() -> serde_json::Value {
    use seqrec_kernels::cpu::isa::{Ext, ISA_ENV, families};
    let isa = Isa::detect();
    json!({
        "model": cpu_model(),
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "levels": Isa::available().map(Isa::name).collect::<Vec<_>>(),
        "extensions": Ext::ALL.iter().filter(|e| e.is_available()).map(|e| e.name()).collect::<Vec<_>>(),
        "forced": std::env::var(ISA_ENV).ok(),
        "isa": isa.name(),
        "enabled_extensions": Ext::ALL.iter().filter(|e| e.enabled()).map(|e| e.name()).collect::<Vec<_>>(),
        "kernels": families().iter().map(|f| (f.name.to_string(), json!(f.level))).collect::<serde_json::Map<_, _>>(),
    })
}

fn run_cpu(format: Format) -> CliResult {
    use seqrec_kernels::cpu::isa::{Ext, ISA_ENV, families};
    if let Format::Json = format {
        return out(cpu_json());
    }
    let isa = Isa::detect();
    let names = |it: &mut dyn Iterator<Item = &'static str>| {
        let v: Vec<_> = it.collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    out(format!(
        "cpu:           {}",
        cpu_model().unwrap_or_else(|| "unknown".to_string())
    ))?;
    out(format!(
        "levels:        {}",
        names(&mut Isa::available().map(Isa::name))
    ))?;
    out(format!(
        "extensions:    {}",
        names(
            &mut Ext::ALL
                .iter()
                .filter(|e| e.is_available())
                .map(|e| e.name())
        )
    ))?;
    let forced =
        std::env::var(ISA_ENV).map_or_else(|_| "not set".to_string(), |v| format!("{v:?}"));
    out(format!("{ISA_ENV}:    {forced}"))?;
    out(format!(
        "running:       {} ({}), extensions: {}",
        isa.name(),
        isa.describe(),
        names(&mut Ext::ALL.iter().filter(|e| e.enabled()).map(|e| e.name()))
    ))?;
    out("kernels:")?;
    for f in families() {
        out(format!("  {:<50} {}", f.name, f.level))?;
    }
    Ok(())
}

pub fn run(args: InfoArgs) -> CliResult {
    if args.cpu {
        run_cpu(args.format)?;
    }
    let Some(path) = args.model.clone() else {
        return Ok(());
    };
    let opts = LoadOptions {
        device: args.device,
        ..Default::default()
    };
    let file = super::convert::weight_file(&path)?;
    match args.device {
        Device::Cpu => show(Model::load_with(&path, &opts)?, &file, &path, args),
        Device::Cuda(n) => show(super::load_cuda(&path, &opts, n)?, &file, &path, args),
    }
}

/// Describes `model` (read from `file` at `path`), loaded on its backend.
fn show<B: Backend>(
    model: Model<B>,
    file: &WeightFile,
    path: &std::path::Path,
    args: InfoArgs,
) -> CliResult {
    let info = model.info();
    let tensors: Vec<_> = file
        .names()
        .map(|n| {
            let i = file.info(n).expect("listed name");
            (n.to_string(), i.dtype.clone(), i.shape.clone())
        })
        .collect();
    let params: usize = tensors
        .iter()
        .map(|(_, _, s)| s.iter().product::<usize>())
        .sum();
    match args.format {
        Format::Json => out(json!({
            "file": path.display().to_string(),
            "architecture": info.arch,
            "n_items": info.n_items,
            "n_users": info.n_users,
            "max_len": info.max_len,
            "dim": info.dim,
            "device": args.device.to_string(),
            "parameters": params,
            "objectives": model.objective_specs().iter().map(|o| json!({
                "name": o.name,
                "default": if o.default.is_nan() { None } else { Some(o.default) },
                "min": o.min, "max": o.max, "doc": o.doc,
            })).collect::<Vec<_>>(),
            "config": model.config().as_map(),
            "config_source": if file.metadata(CONFIG_KEY).is_some() { "metadata" } else { "sidecar" },
            "tensors": tensors.iter().map(|(n, d, s)| json!({"name": n, "dtype": d, "shape": s})).collect::<Vec<_>>(),
        })),
        Format::Text => {
            out(format!("file:          {}", path.display()))?;
            out(format!("architecture:  {}", info.arch))?;
            out(format!(
                "catalog:       {} items (ids 1..={}; 0 is padding)",
                info.n_items,
                info.n_items - 1
            ))?;
            if let Some(u) = info.n_users {
                out(format!("users:         {u} (ids 0..={})", u - 1))?;
            }
            out(format!("window:        {} most recent items", info.max_len))?;
            out(format!("dim:           {}", info.dim))?;
            out(format!("parameters:    {params}"))?;
            let specs = model.objective_specs();
            if specs.is_empty() {
                out("objectives:    none")?;
            }
            for o in specs {
                let default = if o.is_optional() {
                    "model chooses".to_string()
                } else {
                    o.default.to_string()
                };
                out(format!(
                    "objective:     {:<12} default {default}, range {}..={}: {}",
                    o.name, o.min, o.max, o.doc
                ))?;
            }
            out(format!("config:        {}", model.config().to_json()))?;
            out(format!("tensors:       {}", tensors.len()))?;
            for (n, d, s) in &tensors {
                out(format!("  {n:<60} {d:<5} {s:?}"))?;
            }
            Ok(())
        }
    }
}
