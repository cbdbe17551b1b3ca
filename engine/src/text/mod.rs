//! Text item encoder (feature `text`): a BERT-family sentence encoder such as
//! sentence-transformers' `all-MiniLM-L6-v2`, run with the engine's own kernels, so that a
//! service can embed new (cold-start) items from their title or description on the device.
//!
//! A model folder holds the Hugging Face files:
//!
//! | file | use |
//! |---|---|
//! | `config.json` | [`BertConfig`] (required) |
//! | `model.safetensors` | the weights, memory-mapped (required) |
//! | `tokenizer.json` | the tokenizer, through the `tokenizers` crate (required) |
//! | `modules.json` | the sentence-transformers pipeline: `Transformer`, `Pooling`, optionally `Normalize` |
//! | `1_Pooling/config.json` | the pooling mode ([`Pooling`]) |
//! | `sentence_bert_config.json` | `max_seq_length` and `do_lower_case` |
//!
//! Without the sentence-transformers files the pipeline is all-MiniLM-L6-v2's: mean pooling,
//! L2 normalisation, sequences cut at `max_position_embeddings` tokens.
//!
//! **Truncation.** Like sentence-transformers, texts longer than `max_seq_length` tokens
//! (256 for all-MiniLM-L6-v2; `[CLS]` and `[SEP]` included) are cut: only their beginning is
//! encoded. **Empty text** (nothing but whitespace or control characters) is an error, as is a
//! tokenizer whose vocabulary size differs from the embedding table's rows.
//!
//! Batches are encoded packed (no padding; see [`bert`]) and split across the rayon pool in
//! chunks of about [`CHUNK_TOKENS`] tokens; each thread reuses a pooled workspace, so repeated
//! calls allocate only their outputs and the tokenizer's encodings.
//!
//! ```no_run
//! use seqrec_engine::text::TextEncoder;
//! let enc = TextEncoder::load(".minilm")?;
//! let rows = enc.encode_batch(&["Toy Story", "GoldenEye"])?; // [2, 384], unit norm
//! assert_eq!(rows.len(), 2 * enc.dim());
//! # Ok::<(), seqrec_engine::Error>(())
//! ```

pub mod bert;
pub mod pool;
pub mod reference;
pub mod tokenize;

pub use bert::{Bert, BertConfig, BertWorkspace};
pub use pool::{Pooling, l2_normalize};
pub use tokenize::TextTokenizer;

use crate::cpu::Cpu;
use crate::error::{Error, Result};
use crate::weights::{DType, WeightFile};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Target number of tokens per chunk of a batch: large enough that the linear layers are
/// efficient matrix products, small enough that a chunk's activations stay in cache and that
/// a batch splits into several chunks per thread.
pub const CHUNK_TOKENS: usize = 256;

/// How [`TextEncoder::load_with`] stores the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextOptions {
    /// Storage of the transformer layers' weight matrices, the bytes every encode reads:
    /// `I16` (the default) quantizes each row to 16-bit integers with one f32 scale at load,
    /// `F16` rounds the weights to f16; both halve those bytes, which shortens the encoding of
    /// a single short text (figures in `PERFORMANCE.md`). `F32` keeps them as stored.
    /// Embeddings, biases and LayerNorms stay f32 either way. On all-MiniLM-L6-v2, `I16` keeps every embedding within the 1e-4
    /// contract of the f32 model, `F16` does not (see the README for the measured errors).
    pub weight_dtype: DType,
}

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions {
            weight_dtype: DType::I16,
        }
    }
}

/// Scratch memory of one encoding thread: token ids, sequence lengths and the encoder's
/// activations.
#[derive(Debug, Default)]
pub struct TextWorkspace {
    ids: Vec<u32>,
    lens: Vec<usize>,
    bert: BertWorkspace,
}

/// A sentence encoder: tokenizer, BERT encoder, pooling and optional L2 normalisation.
/// Immutable after load and shareable across threads.
pub struct TextEncoder {
    bert: Bert,
    tokenizer: TextTokenizer,
    pooling: Pooling,
    normalize: bool,
    workspaces: Mutex<Vec<TextWorkspace>>,
}

impl core::fmt::Debug for TextEncoder {
    // The settings, not the weights or the pooled workspaces.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("config", self.bert.config())
            .field("tokenizer", &self.tokenizer)
            .field("pooling", &self.pooling)
            .field("normalize", &self.normalize)
            .field("weight_dtype", &self.bert.weight_dtype())
            .finish()
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    if path.exists() {
        read_text(path).map(Some)
    } else {
        Ok(None)
    }
}

/// The sentence-transformers pipeline of `modules.json`: whether it ends with `Normalize`
/// (an error names a module other than Transformer, Pooling and Normalize). Public for the
/// trainer's trainable copy of the encoder, which reads the same folder.
pub fn parse_modules(text: &str) -> Result<bool> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::Config(format!("not valid JSON: {e}")))?;
    let list = v
        .as_array()
        .ok_or_else(|| Error::Config("expected a list of modules".into()))?;
    let mut normalize = false;
    for m in list {
        let ty = m.get("type").and_then(|t| t.as_str()).unwrap_or("");
        match ty.rsplit('.').next().unwrap_or("") {
            "Transformer" | "Pooling" => {}
            "Normalize" => normalize = true,
            _ => {
                return Err(Error::Config(format!(
                    "module `{ty}` is not supported (known: Transformer, Pooling, Normalize)"
                )));
            }
        }
    }
    Ok(normalize)
}

/// `max_seq_length` and `do_lower_case` of `sentence_bert_config.json`.
fn parse_sbert_config(text: &str) -> Result<(Option<usize>, bool)> {
    let c = crate::config::Config::from_json(text)?;
    let max = if c.has("max_seq_length") {
        Some(c.usize("max_seq_length")?)
    } else {
        None
    };
    let lower = match c.as_map().get("do_lower_case") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(other) => {
            return Err(Error::Config(format!(
                "`do_lower_case` must be a boolean, found {other}"
            )));
        }
    };
    Ok((max, lower))
}

impl TextEncoder {
    /// Loads a model folder (see the module docs) with the default [`TextOptions`] (i16
    /// transformer weights). Errors name the file at fault.
    pub fn load(dir: impl AsRef<Path>) -> Result<TextEncoder> {
        Self::load_with(dir, &TextOptions::default())
    }

    /// Loads a model folder with `options`. Errors name the file at fault.
    pub fn load_with(dir: impl AsRef<Path>, options: &TextOptions) -> Result<TextEncoder> {
        let dir = dir.as_ref();
        let file = |name: &str| -> PathBuf { dir.join(name) };
        let in_file = |p: &Path| {
            let origin = p.display().to_string();
            move |e: Error| e.in_origin(&origin)
        };

        let cfg_path = file("config.json");
        if !cfg_path.exists() {
            return Err(Error::Config(format!(
                "{} is missing: a text encoder folder needs the model's Hugging Face \
                 config.json, model.safetensors and tokenizer.json",
                cfg_path.display()
            )));
        }
        let cfg = BertConfig::from_json(&read_text(&cfg_path)?).map_err(in_file(&cfg_path))?;

        let pool_path = file("1_Pooling/config.json");
        let pooling = match read_optional(&pool_path)? {
            Some(t) => Pooling::from_json(&t, cfg.hidden_size).map_err(in_file(&pool_path))?,
            None => Pooling::Mean,
        };
        let modules_path = file("modules.json");
        let normalize = match read_optional(&modules_path)? {
            Some(t) => parse_modules(&t).map_err(in_file(&modules_path))?,
            None => true,
        };
        let sbert_path = file("sentence_bert_config.json");
        let (max_seq, lowercase) = match read_optional(&sbert_path)? {
            Some(t) => parse_sbert_config(&t).map_err(in_file(&sbert_path))?,
            None => (None, false),
        };
        let max_seq = max_seq.unwrap_or(cfg.max_position_embeddings);
        if max_seq > cfg.max_position_embeddings {
            return Err(Error::Config(format!(
                "max_seq_length {max_seq} exceeds the model's max_position_embeddings {}",
                cfg.max_position_embeddings
            ))
            .in_origin(&sbert_path.display().to_string()));
        }

        let tok_path = file("tokenizer.json");
        let mut tokenizer = TextTokenizer::from_file(&tok_path, max_seq)?;
        tokenizer.set_lowercase(lowercase);
        if tokenizer.vocab_size() != cfg.vocab_size {
            return Err(Error::Config(format!(
                "the tokenizer's vocabulary has {} entries, but the word-embedding table \
                 (config.json vocab_size) has {} rows",
                tokenizer.vocab_size(),
                cfg.vocab_size
            ))
            .in_origin(&tok_path.display().to_string()));
        }

        let weights = WeightFile::open(file("model.safetensors"))?;
        let bert = Bert::load_with(&weights, cfg, options.weight_dtype)?;
        Ok(TextEncoder {
            bert,
            tokenizer,
            pooling,
            normalize,
            workspaces: Mutex::new(Vec::new()),
        })
    }

    /// Width of an embedding (the encoder's hidden size).
    pub fn dim(&self) -> usize {
        self.bert.config().hidden_size
    }

    /// Longest token sequence encoded; longer texts are cut to their beginning.
    pub fn max_seq_length(&self) -> usize {
        self.tokenizer.max_len()
    }

    /// The encoder's configuration.
    pub fn config(&self) -> &BertConfig {
        self.bert.config()
    }

    /// The encoder.
    pub fn bert(&self) -> &Bert {
        &self.bert
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The pooling mode.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// Whether embeddings are L2-normalised.
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// Storage of the transformer layers' weight matrices (see [`TextOptions`]).
    pub fn weight_dtype(&self) -> DType {
        self.bert.weight_dtype()
    }

    /// The token ids of `text`, `[CLS]` and `[SEP]` included, cut at
    /// [`Self::max_seq_length`].
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text)
    }

    /// The embedding of one text (`[dim]`).
    pub fn encode(&self, text: &str) -> Result<Vec<f32>> {
        self.encode_batch(&[text])
    }

    /// The embeddings of `texts`, row-major `[texts.len(), dim]`, in input order.
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<f32>> {
        let mut out = vec![0.0; texts.len() * self.dim()];
        self.encode_batch_into(texts, &mut out)?;
        Ok(out)
    }

    /// [`Self::encode_batch`] into `out` (`[texts.len(), dim]`). Texts are tokenized and encoded
    /// in chunks across the rayon pool (run it inside `ThreadPool::install` to choose the
    /// threads). An error names the first bad text by its index.
    pub fn encode_batch_into<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        out: &mut [f32],
    ) -> Result<()> {
        let dim = self.dim();
        if out.len() != texts.len() * dim {
            return Err(Error::InvalidArgument(format!(
                "output has {} values, expected {} texts × {dim}",
                out.len(),
                texts.len()
            )));
        }
        let ids: Vec<Vec<u32>> = texts
            .par_iter()
            .enumerate()
            .map(|(i, t)| {
                self.tokenizer
                    .encode(t.as_ref())
                    .map_err(|e| match e.root() {
                        Error::InvalidArgument(m) => {
                            Error::InvalidArgument(format!("text {i}: {m}"))
                        }
                        other => Error::InvalidArgument(format!("text {i}: {other}")),
                    })
            })
            .collect::<Result<_>>()?;
        let seqs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        self.encode_ids_into(&seqs, out)
    }

    /// Embeddings of pre-tokenized sequences (each with its special tokens, at most
    /// [`Self::max_seq_length`] ids), into `out` (`[seqs.len(), dim]`), across the rayon pool.
    pub fn encode_ids_into(&self, seqs: &[&[u32]], out: &mut [f32]) -> Result<()> {
        let dim = self.dim();
        if out.len() != seqs.len() * dim {
            return Err(Error::InvalidArgument(format!(
                "output has {} values, expected {} sequences × {dim}",
                out.len(),
                seqs.len()
            )));
        }
        if let Some((i, s)) = seqs
            .iter()
            .enumerate()
            .find(|(_, s)| s.is_empty() || s.len() > self.max_seq_length())
        {
            return Err(Error::InvalidArgument(format!(
                "sequence {i} has {} tokens: expected 1..={}",
                s.len(),
                self.max_seq_length()
            )));
        }
        // Chunks of consecutive sequences of about `budget` tokens, at least one per thread.
        let threads = rayon::current_num_threads().max(1);
        let total: usize = seqs.iter().map(|s| s.len()).sum();
        let budget = CHUNK_TOKENS.min(total.div_ceil(threads)).max(1);
        let mut chunks: Vec<(&[&[u32]], &mut [f32])> = Vec::new();
        let (mut rest_seqs, mut rest_out) = (seqs, out);
        while !rest_seqs.is_empty() {
            let mut n = 0;
            let mut tokens = 0;
            while n < rest_seqs.len() && (n == 0 || tokens + rest_seqs[n].len() <= budget) {
                tokens += rest_seqs[n].len();
                n += 1;
            }
            let (s, s_rest) = rest_seqs.split_at(n);
            let (o, o_rest) = core::mem::take(&mut rest_out).split_at_mut(n * dim);
            chunks.push((s, o));
            rest_seqs = s_rest;
            rest_out = o_rest;
        }
        // A single chunk runs alone: let its products use every thread instead.
        let par = chunks.len() == 1 && threads > 1;
        chunks.into_par_iter().try_for_each(|(s, o)| {
            let mut ws = self.take_workspace();
            let r = self.encode_chunk(s, o, &mut ws, par);
            self.return_workspace(ws);
            r
        })
    }

    /// Encodes one chunk of sequences on the calling thread with the workspace `ws`.
    pub fn encode_chunk(
        &self,
        seqs: &[&[u32]],
        out: &mut [f32],
        ws: &mut TextWorkspace,
        par: bool,
    ) -> Result<()> {
        let dim = self.dim();
        ws.ids.clear();
        ws.lens.clear();
        for s in seqs {
            ws.ids.extend_from_slice(s);
            ws.lens.push(s.len());
        }
        let be = Cpu::new().with_split_products(par);
        let hidden = self
            .bert
            .forward(&be, &ws.ids, None, &ws.lens, &mut ws.bert)?;
        let mut o = 0;
        for (&l, row) in ws.lens.iter().zip(out.chunks_exact_mut(dim)) {
            self.pooling.pool(&hidden[o * dim..], l, dim, row);
            if self.normalize {
                l2_normalize(row);
            }
            o += l;
        }
        Ok(())
    }

    fn take_workspace(&self) -> TextWorkspace {
        self.workspaces
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default()
    }

    fn return_workspace(&self, ws: TextWorkspace) {
        if let Ok(mut v) = self.workspaces.lock() {
            v.push(ws);
        }
    }
}

#[cfg(test)]
mod tests;
