//! The whole sentence encoder (BERT, pooling, optional L2 normalisation), loaded from the
//! sentence-transformers folder the engine reads, and its fine-tuned weights saved as a delta
//! over that folder.
//!
//! # Loading
//!
//! [`TextEncoder::load`] reads `config.json` (sizes, and `hidden_dropout_prob` /
//! `attention_probs_dropout_prob`, 0.1 when absent), `1_Pooling/config.json` (mean when
//! absent), `modules.json` (normalised when absent or ending with `Normalize`) and every tensor
//! of `model.safetensors` by its Hugging Face name (optionally under `bert.`; the
//! `position_ids` buffer and the pooler are skipped, any other unknown tensor is an error).
//! The tokenizer is the engine's ([`seqrec_engine::text::TextTokenizer`]); this module takes
//! token ids.
//!
//! # Delta checkpoints
//!
//! [`TextEncoder::save_delta`] writes a safetensors file with only the **trained** tensors
//! (see [`super::FineTune`]), under their names in the base `model.safetensors`, and the
//! metadata key [`DELTA_KEY`]: a JSON object with the base folder (`base_dir`), the base file's
//! fingerprint (`base_fingerprint`, see [`fingerprint`]) and the fine-tuning setting
//! (`fine_tune`). [`TextEncoder::load_with_delta`] loads a base folder and applies a delta,
//! refusing one whose base fingerprint differs from the folder's (the error names both files
//! and both fingerprints). Top-2 layers of MiniLM make a delta of about 14 MB instead of 90.
//!
//! Under [`FineTune::Lora`] the trained tensors are the adapters' `A` and `B`, named after the
//! projection they adapt (`encoder.layer.{i}.attention.self.query.lora_A.weight`, see
//! [`super::lora`]), and `fine_tune` holds the LoRA setting (rank, alpha, targets, layers, e.g.
//! `lora:rank=8,alpha=16,targets=query+value,layers=all`): loading builds adapters of that
//! shape over the base and fills them, so a tensor of another rank or width is refused with an
//! error naming it and both shapes. MiniLM's default adapters make a delta of about 300 KB.

use super::pool::{NormCache, PoolCache, l2_backward, l2_forward, pool_backward, pool_forward};
use super::{BertCache, BertEncoder, FineTune, TextBatch};
use crate::error::{Error, Result};
use crate::nn::Rng;
use crate::nn::param::{Module, Param, load_values, to_safetensors};
use seqrec_engine::codec::{FNV_START, hash_bytes};
use seqrec_engine::text::{BertConfig, Pooling, parse_modules};
use seqrec_engine::{Error as EngineError, WeightFile};
use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The metadata key of a delta checkpoint.
pub const DELTA_KEY: &str = "seqrec.text_delta";

/// Bytes hashed at each end of a base file by [`fingerprint`].
const FINGERPRINT_SPAN: u64 = 1 << 20;

/// The base folder an encoder was loaded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseModel {
    /// The folder.
    pub dir: PathBuf,
    /// [`fingerprint`] of its `model.safetensors`.
    pub fingerprint: String,
}

/// A trainable sentence encoder: BERT, pooling, optional L2 normalisation.
#[derive(Clone, Debug)]
pub struct TextEncoder {
    /// The BERT encoder (with its fine-tuning setting).
    pub bert: BertEncoder,
    /// How token states become one vector.
    pub pooling: Pooling,
    /// Whether sentence vectors are L2-normalised.
    pub normalize: bool,
    base: Option<BaseModel>,
}

/// What [`TextEncoder::backward`] needs.
#[derive(Clone, Debug)]
pub struct TextEncoderCache {
    pub(super) bert: BertCache,
    pool: PoolCache,
    norm: Option<NormCache>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError {
    let path = path.display().to_string();
    move |source| EngineError::Io { path, source }
}

fn read_text(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path).map_err(io_err(path))?)
}

/// A content fingerprint of a (large) file: `{size}:{hash}` with a 64-bit hash of its first
/// and last MiB. Cheap on a 90 MB model, and it tells apart two different exports of a model
/// (their headers, first tensors or last tensors differ); it is not a cryptographic check.
pub fn fingerprint(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let size = f.metadata().map_err(io_err(path))?.len();
    let span = size.min(FINGERPRINT_SPAN);
    let mut head = vec![0u8; span as usize];
    f.read_exact(&mut head).map_err(io_err(path))?;
    let mut tail = vec![0u8; span as usize];
    f.seek(SeekFrom::Start(size - span)).map_err(io_err(path))?;
    f.read_exact(&mut tail).map_err(io_err(path))?;
    let h = hash_bytes(hash_bytes(FNV_START, &head), &tail);
    Ok(format!("{size}:{h:016x}"))
}

/// A dropout probability of `config.json` (`default` when absent).
fn dropout_of(cfg: &serde_json::Value, key: &str, default: f32) -> seqrec_engine::Result<f32> {
    match cfg.get(key) {
        None | Some(serde_json::Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .map(|p| p as f32)
            .ok_or_else(|| EngineError::Config(format!("`{key}` must be a number, found {v}"))),
    }
}

impl TextEncoder {
    /// An encoder from its parts (not tied to a base folder: it cannot save a delta).
    pub fn from_parts(bert: BertEncoder, pooling: Pooling, normalize: bool) -> TextEncoder {
        TextEncoder {
            bert,
            pooling,
            normalize,
            base: None,
        }
    }

    /// Loads a sentence-transformers BERT folder (see the module docs) with `fine_tune`.
    pub fn load(dir: impl AsRef<Path>, fine_tune: FineTune) -> Result<TextEncoder> {
        let dir = dir.as_ref();
        let cfg_path = dir.join("config.json");
        if !cfg_path.exists() {
            return Err(Error::Invalid(format!(
                "{} is missing: a text encoder folder needs config.json and model.safetensors",
                cfg_path.display()
            )));
        }
        let origin = |p: &Path| {
            let o = p.display().to_string();
            move |e: EngineError| e.in_origin(&o)
        };
        let text = read_text(&cfg_path)?;
        let cfg = BertConfig::from_json(&text).map_err(origin(&cfg_path))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Invalid(format!("{}: not valid JSON: {e}", cfg_path.display())))?;
        let p_attn =
            dropout_of(&json, "attention_probs_dropout_prob", 0.1).map_err(origin(&cfg_path))?;
        let p_hidden = dropout_of(&json, "hidden_dropout_prob", 0.1).map_err(origin(&cfg_path))?;

        let pool_path = dir.join("1_Pooling/config.json");
        let pooling = if pool_path.exists() {
            Pooling::from_json(&read_text(&pool_path)?, cfg.hidden_size)
                .map_err(origin(&pool_path))?
        } else {
            Pooling::Mean
        };
        let modules_path = dir.join("modules.json");
        let normalize = if modules_path.exists() {
            parse_modules(&read_text(&modules_path)?).map_err(origin(&modules_path))?
        } else {
            true
        };

        let weights_path = dir.join("model.safetensors");
        let file = WeightFile::open(&weights_path)?;
        let prefix = if file
            .info("bert.embeddings.word_embeddings.weight")
            .is_some()
        {
            "bert."
        } else {
            ""
        };
        // The initial values are overwritten by the file's.
        let mut bert = BertEncoder::new(&cfg, prefix, p_attn, p_hidden, &mut Rng::new(0))
            .map_err(|e| Error::Invalid(format!("{}: {e}", cfg_path.display())))?;
        load_values(&mut bert.all_params_mut(), &file).map_err(origin(&weights_path))?;
        let known: HashSet<String> = bert.all_params().iter().map(|p| p.name.clone()).collect();
        let skipped = [
            "embeddings.position_ids",
            "pooler.dense.weight",
            "pooler.dense.bias",
        ]
        .map(|n| format!("{prefix}{n}"));
        let extra: Vec<String> = file
            .names()
            .filter(|n| !known.contains(*n) && !skipped.iter().any(|s| s == n))
            .map(String::from)
            .collect();
        if !extra.is_empty() {
            return Err(EngineError::UnexpectedTensors {
                model: "bert".into(),
                names: extra,
            }
            .in_origin(file.origin())
            .into());
        }
        bert.set_fine_tune(fine_tune)?;
        Ok(TextEncoder {
            bert,
            pooling,
            normalize,
            base: Some(BaseModel {
                dir: dir.to_path_buf(),
                fingerprint: fingerprint(&weights_path)?,
            }),
        })
    }

    /// The base folder this encoder was loaded from, if any.
    pub fn base(&self) -> Option<&BaseModel> {
        self.base.as_ref()
    }

    /// Width of a sentence vector (the hidden size).
    pub fn dim(&self) -> usize {
        self.bert.cfg.hidden_size
    }

    /// Pads `seqs` into a batch for this encoder (see [`TextBatch::new`]).
    pub fn batch(&self, seqs: &[&[u32]]) -> Result<TextBatch> {
        TextBatch::new(seqs, &self.bert.cfg)
    }

    /// Sentence vectors `[batch, H]` and the cache for [`Self::backward`]; dropout in the
    /// trained part is active when `rng` is given.
    pub fn forward(&self, b: &TextBatch, rng: Option<&mut Rng>) -> (Vec<f32>, TextEncoderCache) {
        let (hidden, bert) = self.bert.forward(b, rng);
        let (mut out, pool) = pool_forward(self.pooling, &hidden, b, self.dim());
        let norm = self.normalize.then(|| l2_forward(&mut out, self.dim()));
        (out, TextEncoderCache { bert, pool, norm })
    }

    /// Adds the gradients of the trained parameters for `d_out` (`[batch, H]`).
    pub fn backward(&mut self, b: &TextBatch, cache: &TextEncoderCache, d_out: &[f32]) {
        if self.bert.params().is_empty() {
            return;
        }
        let dim = self.dim();
        let mut d = d_out.to_vec();
        if let Some(n) = &cache.norm {
            l2_backward(n, &mut d, dim);
        }
        let dh = pool_backward(self.pooling, b, &cache.pool, &d, dim);
        self.bert.backward(b, &cache.bert, &dh);
    }

    /// The encoder with its LoRA adapters folded into the weights ([`BertEncoder::merged`]),
    /// frozen and tied to no base folder (its weights are no longer the base's): for serving,
    /// e.g. written whole with [`to_safetensors`] of `bert.all_params()`.
    pub fn merged(&self) -> TextEncoder {
        TextEncoder::from_parts(self.bert.merged(), self.pooling, self.normalize)
    }

    /// Sentence vectors `[batch, H]` in evaluation mode.
    pub fn infer(&self, b: &TextBatch) -> Vec<f32> {
        let hidden = self.bert.infer(b);
        let mut out = pool_forward(self.pooling, &hidden, b, self.dim()).0;
        if self.normalize {
            l2_forward(&mut out, self.dim());
        }
        out
    }

    /// Sentence vectors `[seqs.len(), H]` of token sequences (with their special tokens).
    pub fn encode_ids(&self, seqs: &[&[u32]]) -> Result<Vec<f32>> {
        Ok(self.infer(&self.batch(seqs)?))
    }

    /// The delta checkpoint (see the module docs) as a safetensors file image. Fails for an
    /// encoder that was not loaded from a folder.
    pub fn delta_bytes(&self) -> Result<Vec<u8>> {
        let meta = self.delta_metadata()?;
        Ok(to_safetensors(&self.bert.params(), &[(DELTA_KEY, &meta)])?)
    }

    /// The [`DELTA_KEY`] metadata of a delta (base folder, its fingerprint, the fine-tuning
    /// setting), for a checkpoint that stores the trained tensors itself, e.g. under a prefix
    /// beside other tensors (see [`Self::load_with_delta_prefixed`]).
    pub fn delta_metadata(&self) -> Result<String> {
        let base = self.base.as_ref().ok_or_else(|| {
            Error::Invalid(
                "this text encoder was not loaded from a model folder: a delta needs a base".into(),
            )
        })?;
        Ok(serde_json::json!({
            "base_dir": base.dir.display().to_string(),
            "base_fingerprint": base.fingerprint,
            "fine_tune": self.bert.fine_tune().name(),
        })
        .to_string())
    }

    /// Writes [`Self::delta_bytes`] to `path`.
    pub fn save_delta(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        Ok(std::fs::write(path, self.delta_bytes()?).map_err(io_err(path))?)
    }

    /// Loads the base folder `base_dir` and applies the delta file `delta` to it; the result
    /// has the delta's fine-tuning setting.
    pub fn load_with_delta(
        base_dir: impl AsRef<Path>,
        delta: impl AsRef<Path>,
    ) -> Result<TextEncoder> {
        let file = WeightFile::open(delta.as_ref())?;
        Self::load_with_delta_file(base_dir, &file)
    }

    /// [`Self::load_with_delta`] for a delta already opened (e.g. from bytes).
    pub fn load_with_delta_file(
        base_dir: impl AsRef<Path>,
        delta: &WeightFile,
    ) -> Result<TextEncoder> {
        Self::load_with_delta_prefixed(base_dir, delta, "")
    }

    /// [`Self::load_with_delta_file`] for a file that holds the delta's tensors under
    /// `{prefix}{name}` (tensors outside the prefix are ignored) and its [`DELTA_KEY`]
    /// metadata: a model checkpoint that carries its text encoder's delta.
    pub fn load_with_delta_prefixed(
        base_dir: impl AsRef<Path>,
        delta: &WeightFile,
        prefix: &str,
    ) -> Result<TextEncoder> {
        let base_dir = base_dir.as_ref();
        let bad = |msg: String| Error::Invalid(format!("{}: {msg}", delta.origin()));
        let meta = delta.metadata(DELTA_KEY).ok_or_else(|| {
            bad(format!(
                "not a text-encoder delta (no `{DELTA_KEY}` metadata)"
            ))
        })?;
        let meta: serde_json::Value = serde_json::from_str(meta)
            .map_err(|e| bad(format!("`{DELTA_KEY}` is not valid JSON: {e}")))?;
        let field = |key: &str| {
            meta.get(key)
                .and_then(|v| v.as_str())
                .ok_or_else(|| bad(format!("`{DELTA_KEY}` has no string `{key}`")))
        };
        let (want, made_over) = (field("base_fingerprint")?, field("base_dir")?);
        let fine_tune = FineTune::parse(field("fine_tune")?).map_err(|e| bad(e.to_string()))?;
        let weights = base_dir.join("model.safetensors");
        let found = fingerprint(&weights)?;
        if found != want {
            return Err(bad(format!(
                "the delta was made over {made_over}/model.safetensors with fingerprint \
                 {want}, but {} has fingerprint {found}: not the same base model",
                weights.display()
            )));
        }
        let mut enc = TextEncoder::load(base_dir, fine_tune)?;
        enc.apply_delta_prefixed(delta, prefix)?;
        Ok(enc)
    }

    /// Overwrites the trained parameters with the tensors of `delta`, which must hold exactly
    /// those (an error names a missing, misshapen or unexpected tensor).
    pub fn apply_delta(&mut self, delta: &WeightFile) -> Result<()> {
        self.apply_delta_prefixed(delta, "")
    }

    /// [`Self::apply_delta`] for tensors stored as `{prefix}{name}`; tensors outside the
    /// prefix are ignored.
    pub fn apply_delta_prefixed(&mut self, delta: &WeightFile, prefix: &str) -> Result<()> {
        let origin = |e: EngineError| e.in_origin(delta.origin());
        let mut names = HashSet::new();
        for p in self.bert.params_mut() {
            let name = format!("{prefix}{}", p.name);
            let t = delta.tensor(&name, &p.shape).map_err(origin)?;
            p.value.copy_from_slice(t.as_slice());
            names.insert(name);
        }
        let extra: Vec<String> = delta
            .names()
            .filter(|n| n.starts_with(prefix) && !names.contains(*n))
            .map(String::from)
            .collect();
        if !extra.is_empty() {
            return Err(origin(EngineError::UnexpectedTensors {
                model: format!("text encoder delta ({})", self.bert.fine_tune().name()),
                names: extra,
            })
            .into());
        }
        Ok(())
    }
}

impl Module for TextEncoder {
    /// The trained parameters only.
    fn params(&self) -> Vec<&Param> {
        self.bert.params()
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        self.bert.params_mut()
    }
}
