//! `seqrec convert recbole MODEL.pth --out model.safetensors`: a RecBole checkpoint (written
//! by `torch.save`) to a safetensors model file, without PyTorch (see `seqrec_engine::pth`).

use super::{CliError, CliResult, Format, out};
use clap::{Args, ValueEnum};
use seqrec_engine::{LoadOptions, Model, WeightFile, pth};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Where a checkpoint comes from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// A RecBole `.pth` (SASRec, GRU4Rec, NextItNet, Caser): `state_dict` and `config`.
    Recbole,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// What the input is.
    #[arg(value_enum)]
    source: Source,
    /// The checkpoint.
    input: PathBuf,
    /// The safetensors file to write (the configuration goes into its `seqrec.config`
    /// metadata).
    #[arg(long)]
    out: PathBuf,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn run(args: ConvertArgs) -> CliResult {
    let Source::Recbole = args.source;
    let start = Instant::now();
    let converted = pth::convert_file(&args.input, None)?;
    let read_s = start.elapsed().as_secs_f64();
    std::fs::write(&args.out, converted.bytes())
        .map_err(|e| CliError::input(format!("{}: {e}", args.out.display())))?;
    let total_s = start.elapsed().as_secs_f64();
    // Validate it as any model file.
    let model = Model::load_with(&args.out, &LoadOptions::default())?;
    let info = model.info();
    match args.format {
        Format::Json => out(json!({
            "input": args.input.display().to_string(),
            "out": args.out.display().to_string(),
            "architecture": info.arch,
            "n_items": info.n_items,
            "tensors": converted.tensors.len(),
            "bytes": converted.bytes().len(),
            "convert_s": read_s,
            "convert_and_write_s": total_s,
            "config": converted.config.as_map(),
        })),
        Format::Text => out(format!(
            "{}: {} model, {} items, {} tensors -> {} ({} bytes) in {:.3} s",
            args.input.display(),
            info.arch,
            info.n_items,
            converted.tensors.len(),
            args.out.display(),
            converted.bytes().len(),
            total_s
        )),
    }
}

/// The weight file behind a model path: a safetensors file, or a checkpoint converted in
/// memory.
pub fn weight_file(path: &std::path::Path) -> Result<WeightFile, CliError> {
    let mut head = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
    if pth::is_zip(&head[..n]) {
        let origin = path.display().to_string();
        Ok(pth::convert_file(path, None)?.into_weight_file(&origin)?)
    } else {
        Ok(WeightFile::open(path)?)
    }
}
