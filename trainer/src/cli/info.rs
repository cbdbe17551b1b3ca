//! `seqrec info MODEL`.

use super::{CliResult, Format, out};
use clap::Args;
use seqrec_engine::{Backend, CONFIG_KEY, Device, LoadOptions, Model, WeightFile};
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Model file (safetensors, or a RecBole `.pth`).
    model: PathBuf,
    /// Where to load it: `cpu`, `cuda` (the first GPU) or `cuda:N` (the device is named in the
    /// output).
    #[arg(long, default_value = "cpu", value_parser = super::parse_device)]
    device: Device,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn run(args: InfoArgs) -> CliResult {
    let opts = LoadOptions {
        device: args.device,
        ..Default::default()
    };
    let file = super::convert::weight_file(&args.model)?;
    match args.device {
        Device::Cpu => show(Model::load_with(&args.model, &opts)?, &file, args),
        Device::Cuda(n) => show(super::load_cuda(&args.model, &opts, n)?, &file, args),
    }
}

/// Describes `model` (read from `file`), loaded on its backend.
fn show<B: Backend>(model: Model<B>, file: &WeightFile, args: InfoArgs) -> CliResult {
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
            "file": args.model.display().to_string(),
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
            out(format!("file:          {}", args.model.display()))?;
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
