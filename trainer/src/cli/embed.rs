//! `seqrec embed --model-dir DIR --text T... | --file F` and
//! `seqrec embed-items --model-dir DIR --data DIR --out FILE`: sentence embeddings of texts and
//! the id-aligned item-text table of a dataset, with the engine's text encoder
//! (all-MiniLM-L6-v2 from `scripts/fetch-minilm.sh`).

use super::item_text::{self, ItemTexts};
use super::{CliError, CliResult, Format, out};
use clap::{Args, ValueEnum};
use seqrec_engine::DType;
use seqrec_engine::text::{TextEncoder, TextOptions};
use seqrec_engine::weights::serialize;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Name of the tensor written by `--out` and by `embed-items`.
pub const TENSOR_NAME: &str = "item_text_embedding";
/// Texts encoded per call in `embed-items` (one progress step).
pub(crate) const BATCH: usize = 256;

/// `--weight-dtype`: storage of the transformer layers' weight matrices.
fn parse_weight_dtype(s: &str) -> crate::Result<DType> {
    match DType::parse(s) {
        Some(d @ (DType::I16 | DType::F16 | DType::F32)) => Ok(d),
        _ => Err(crate::Error::unknown_name("", s, "i16, f16, f32")),
    }
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Model folder (config.json, model.safetensors, tokenizer.json; see scripts/fetch-minilm.sh).
    #[arg(long)]
    model_dir: PathBuf,
    /// Storage of the transformer weights: i16 (quantized at load with one scale per row;
    /// 1.4 to 1.7 times as fast for one title, embeddings within 1e-4 per component of f32's),
    /// f16 (rounded at load; as fast, up to 1.5e-4 from f32's) or f32 (as stored).
    #[arg(long, default_value = "i16", value_parser = parse_weight_dtype)]
    weight_dtype: DType,
    /// A text to embed (repeatable; embedded before the lines of --file).
    #[arg(long = "text")]
    texts: Vec<String>,
    /// File with one text per line.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Output format on stdout (text: one line of values per text).
    #[arg(long, value_enum, default_value_t, conflicts_with = "out")]
    format: Format,
    /// Write the `[n, dim]` f32 tensor `item_text_embedding` to this safetensors file instead.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Layout of the dataset folder given to `embed-items`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum DataFormat {
    /// RecBole atomic files: `<name>.item` with an `item_id:token` field.
    Recbole,
    /// UniSRec's Amazon layout: `<name>.text` keyed by ASIN and `<name>.item2index`.
    AmazonScientific,
}

#[derive(Args, Debug)]
pub struct EmbedItemsArgs {
    /// Model folder (config.json, model.safetensors, tokenizer.json; see scripts/fetch-minilm.sh).
    #[arg(long)]
    model_dir: PathBuf,
    /// Storage of the transformer weights: i16 (quantized at load with one scale per row;
    /// embeddings within 1e-4 per component of f32's), f16 (up to 1.5e-4 from f32's) or f32.
    #[arg(long, default_value = "i16", value_parser = parse_weight_dtype)]
    weight_dtype: DType,
    /// Dataset folder.
    #[arg(long)]
    data: PathBuf,
    /// Layout of the dataset folder.
    #[arg(long, value_enum, default_value = "recbole")]
    data_format: DataFormat,
    /// Output safetensors file (`item_text_embedding`, `[max id + 1, dim]`).
    #[arg(long)]
    out: PathBuf,
}

pub(crate) fn load_encoder(dir: &Path, weight_dtype: DType) -> Result<TextEncoder, CliError> {
    if !dir.is_dir() {
        return Err(CliError::input(format!(
            "--model-dir {}: not a folder (run scripts/fetch-minilm.sh to fetch all-MiniLM-L6-v2)",
            dir.display()
        )));
    }
    Ok(TextEncoder::load_with(dir, &TextOptions { weight_dtype })?)
}

/// What the encoder does, for the output's metadata.
pub(crate) fn encoder_meta(enc: &TextEncoder, dir: &Path) -> serde_json::Value {
    json!({
        "model_dir": dir.display().to_string(),
        "dim": enc.dim(),
        "max_seq_length": enc.max_seq_length(),
        "pooling": format!("{:?}", enc.pooling()).to_lowercase(),
        "normalized": enc.normalizes(),
        "weight_dtype": enc.weight_dtype().name().to_lowercase(),
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> CliResult {
    std::fs::write(path, bytes).map_err(|e| CliError::input(format!("{}: {e}", path.display())))
}

/// Tokenizes every text, naming the bad one by its source label.
fn tokenize(enc: &TextEncoder, texts: &[(String, String)]) -> Result<Vec<Vec<u32>>, CliError> {
    texts
        .iter()
        .map(|(label, t)| {
            enc.tokenize(t).map_err(|e| match e.root() {
                seqrec_engine::Error::InvalidArgument(m) => {
                    CliError::input(format!("{label}: {m}"))
                }
                other => CliError::input(format!("{label}: {other}")),
            })
        })
        .collect()
}

pub fn run(args: EmbedArgs) -> CliResult {
    let mut texts: Vec<(String, String)> = args
        .texts
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("--text {}", i + 1), t.clone()))
        .collect();
    if let Some(path) = &args.file {
        let content = std::fs::read_to_string(path)
            .map_err(|e| CliError::input(format!("{}: {e}", path.display())))?;
        for (i, line) in content.lines().enumerate() {
            texts.push((format!("{}:{}", path.display(), i + 1), line.to_string()));
        }
    }
    if texts.is_empty() {
        return Err(CliError::input(
            "nothing to embed: give --text (repeatable) or --file",
        ));
    }
    let enc = load_encoder(&args.model_dir, args.weight_dtype)?;
    let ids = tokenize(&enc, &texts)?;
    let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let dim = enc.dim();
    let mut rows = vec![0.0f32; seqs.len() * dim];
    enc.encode_ids_into(&seqs, &mut rows)?;

    if let Some(path) = &args.out {
        let meta = encoder_meta(&enc, &args.model_dir).to_string();
        let bytes = serialize(
            &[(TENSOR_NAME, &[seqs.len(), dim], &rows)],
            &[("seqrec.text_encoder", &meta)],
        )?;
        write_file(path, &bytes)?;
        return out(format!(
            "wrote {TENSOR_NAME} [{}, {dim}] to {}",
            seqs.len(),
            path.display()
        ));
    }
    match args.format {
        Format::Json => {
            // Serialised as f32 (shortest round-trip form), not widened to f64 by a `Value`.
            let embeddings: Vec<&[f32]> = rows.chunks_exact(dim).collect();
            let rows = serde_json::to_string(&embeddings)
                .map_err(|e| CliError::internal(format!("JSON output: {e}")))?;
            out(format!("{{\"dim\":{dim},\"embeddings\":{rows}}}"))
        }
        Format::Text => {
            for row in rows.chunks_exact(dim) {
                let line: Vec<String> = row.iter().map(|v| v.to_string()).collect();
                out(line.join(" "))?;
            }
            Ok(())
        }
    }
}

pub fn run_items(args: EmbedItemsArgs) -> CliResult {
    let (source, texts): (PathBuf, ItemTexts) = match args.data_format {
        DataFormat::Recbole => item_text::read_recbole(&args.data)?,
        DataFormat::AmazonScientific => item_text::read_amazon(&args.data)?,
    };
    let Some(&max_id) = texts.keys().next_back() else {
        return Err(CliError::input(format!("{}: no items", source.display())));
    };
    // RecBole reserves id 0 for padding; UniSRec's indices are 0-based real items.
    let padding = (args.data_format == DataFormat::Recbole).then_some(0u32);
    let enc = load_encoder(&args.model_dir, args.weight_dtype)?;
    let dim = enc.dim();
    let rows = max_id as usize + 1;

    // Items with text, tokenized; a text with no token besides the special ones counts as none.
    let mut with_text: Vec<(u32, Vec<u32>)> = Vec::new();
    for (&id, text) in &texts {
        if Some(id) == padding {
            continue;
        }
        if let Some(ids) = text.as_ref().and_then(|t| enc.tokenize(&t.text).ok()) {
            with_text.push((id, ids));
        }
    }
    let bar = indicatif::ProgressBar::new(with_text.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("embedding {pos}/{len} items {wide_bar} {eta}")
            .map_err(|e| CliError::internal(e.to_string()))?,
    );
    let mut table = vec![0.0f32; rows * dim];
    let mut buf = vec![0.0f32; BATCH * dim];
    for chunk in with_text.chunks(BATCH) {
        let seqs: Vec<&[u32]> = chunk.iter().map(|(_, s)| s.as_slice()).collect();
        let buf = &mut buf[..chunk.len() * dim];
        enc.encode_ids_into(&seqs, buf)?;
        for ((id, _), row) in chunk.iter().zip(buf.chunks_exact(dim)) {
            let at = *id as usize * dim;
            table[at..at + dim].copy_from_slice(row);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();

    let mut encoded = vec![false; rows];
    for (id, _) in &with_text {
        encoded[*id as usize] = true;
    }
    let without: Vec<usize> = (0..rows).filter(|&i| !encoded[i]).collect();
    let mut meta = encoder_meta(&enc, &args.model_dir);
    meta["data"] = json!(source.display().to_string());
    meta["data_format"] = json!(match args.data_format {
        DataFormat::Recbole => "recbole",
        DataFormat::AmazonScientific => "amazon-scientific",
    });
    meta["rows"] = json!(rows);
    meta["row_id"] = json!(match args.data_format {
        DataFormat::Recbole => "row i is the item whose item_id token is the integer i",
        DataFormat::AmazonScientific => "row i is the item whose item2index index is i",
    });
    meta["padding_id"] = json!(padding);
    let without_json = json!(without).to_string();
    let bytes = serialize(
        &[(TENSOR_NAME, &[rows, dim], &table)],
        &[
            ("seqrec.item_text", &meta.to_string()),
            ("seqrec.items_without_text", &without_json),
        ],
    )?;
    write_file(&args.out, &bytes)?;
    out(format!(
        "wrote {TENSOR_NAME} [{rows}, {dim}] to {}: {} items embedded, {} zero rows (ids without text{})",
        args.out.display(),
        with_text.len(),
        without.len(),
        if padding.is_some() { ", padding 0" } else { "" }
    ))
}
