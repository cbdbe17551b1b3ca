//! TransRec checkpoints (safetensors) and the start of a target model from a source one.
//!
//! A checkpoint holds:
//! - metadata `seqrec.config`: the [`TransRecConfig`] as JSON with `model` = `transrec` and
//!   `tower` = `text` or `id`;
//! - the user encoder (`user.*`), the tower's own layers (`item.text.attention.*`,
//!   `item.text.proj.*`, or `item.id_embedding.weight`) and, while it exists, the stage-1
//!   softmax layer (`uep.softmax.*`);
//! - for a text tower, the encoder's **trained** tensors under `item.text.bert.{name}` and the
//!   metadata [`DELTA_KEY`] of a text-encoder delta (base folder, its fingerprint, the
//!   fine-tuning setting): loading needs the base folder, checked against the fingerprint.
//!   A frozen encoder stores no tensor at all.
//!
//! The items' texts are data, not weights: loading takes them again (serving computes the
//! item table from the data set's texts).

use super::model::Items;
use super::{TransRecConfig, TransRecModel};
use crate::error::{Error, Result};
use crate::nn::Param;
use crate::nn::param::load_values;
use crate::nn::text::TextEncoder;
use crate::nn::text::encoder::DELTA_KEY;
use seqrec_engine::weights::serialize;
use seqrec_engine::{CONFIG_KEY, Error as EngineError, WeightFile};
use std::collections::HashSet;
use std::path::Path;

/// The `model` name in a TransRec checkpoint's config.
pub const MODEL: &str = "transrec";

/// The served file's config key listing the items held out of training
/// ([`TransRecConfig::held_out_items`]).
pub const HELD_OUT_KEY: &str = "held_out_items";

/// Prefix of the text encoder's trained tensors in a checkpoint.
pub const BERT_PREFIX: &str = "item.text.bert.";

/// The text side of a model to load: the base encoder folder and the items' token ids.
#[derive(Clone, Debug)]
pub struct TextSource<'a> {
    /// The sentence-transformers folder the checkpoint's encoder delta was made over.
    pub dir: &'a Path,
    /// Token ids per item id (`texts[0]`, padding, ignored).
    pub texts: Vec<Vec<u32>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    model: String,
    tower: String,
    #[serde(flatten)]
    cfg: TransRecConfig,
}

/// The config and tower kind (`text` or `id`) of a TransRec checkpoint; an error names the
/// file and what is wrong.
pub fn read_config(file: &WeightFile) -> Result<(TransRecConfig, String)> {
    let bad = |msg: String| Error::Invalid(format!("{}: {msg}", file.origin()));
    let json = file.metadata(CONFIG_KEY).ok_or_else(|| {
        bad(format!(
            "no `{CONFIG_KEY}` metadata: not a seqrec checkpoint"
        ))
    })?;
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| bad(format!("`{CONFIG_KEY}` is not valid JSON: {e}")))?;
    let model = value.get("model").and_then(|m| m.as_str()).unwrap_or("");
    if model != MODEL {
        return Err(bad(format!("a `{model}` checkpoint, not a {MODEL} one")));
    }
    let saved: Saved = serde_json::from_value(value)
        .map_err(|e| bad(format!("`{CONFIG_KEY}` is not a {MODEL} config: {e}")))?;
    saved.cfg.validate().map_err(|e| bad(e.to_string()))?;
    if saved.tower != "text" && saved.tower != "id" {
        return Err(bad(format!(
            "item tower `{}` is not one of text, id",
            saved.tower
        )));
    }
    Ok((saved.cfg, saved.tower))
}

impl TransRecModel {
    /// The parameters stored under their own names: the tower's own layers, the user encoder,
    /// the softmax layer if present.
    fn stored_params(&self) -> Vec<&Param> {
        let mut v = self.tower.own_params();
        v.extend(crate::nn::Module::params(&self.user));
        v.extend(self.uep.iter().flat_map(crate::nn::Module::params));
        v
    }

    fn stored_params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = self.tower.own_params_mut();
        v.extend(crate::nn::Module::params_mut(&mut self.user));
        v.extend(self.uep.iter_mut().flat_map(crate::nn::Module::params_mut));
        v
    }

    /// The checkpoint (see the module docs) as a safetensors file image. A text tower whose
    /// encoder was not loaded from a folder cannot be saved (its delta needs a base).
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let saved = Saved {
            model: MODEL.into(),
            tower: self.tower.kind().into(),
            cfg: self.config().clone(),
        };
        let json = serde_json::to_string(&saved)
            .map_err(|e| Error::Invalid(format!("cannot write the config: {e}")))?;
        let mut meta = vec![(CONFIG_KEY, json)];
        let mut bert: Vec<(String, &Param)> = Vec::new();
        if let Some(t) = self.tower.text() {
            meta.push((DELTA_KEY, t.encoder.delta_metadata()?));
            let trained = crate::nn::Module::params(&t.encoder);
            bert = trained
                .into_iter()
                .map(|p| (format!("{BERT_PREFIX}{}", p.name), p))
                .collect();
        }
        let own = self.stored_params();
        let tensors: Vec<(&str, &[usize], &[f32])> = own
            .iter()
            .map(|p| (p.name.as_str(), p.shape.as_slice(), p.value.as_slice()))
            .chain(
                bert.iter()
                    .map(|(n, p)| (n.as_str(), p.shape.as_slice(), p.value.as_slice())),
            )
            .collect();
        let meta: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Ok(serialize(&tensors, &meta)?)
    }

    /// Writes [`Self::to_safetensors`] to `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_safetensors()?).map_err(|source| EngineError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(())
    }

    /// Loads a checkpoint. A text tower needs `text` (the base encoder folder, checked against
    /// the delta's fingerprint, and the items' texts); an ID tower ignores it. A text model
    /// without the stage-1 softmax layer takes any catalog of texts (a new catalog, or one
    /// with items that never appeared in training: its catalog size becomes the texts'); one
    /// with it needs exactly the saved catalog. Missing, misshapen and unknown tensors are
    /// errors naming them.
    pub fn load(file: &WeightFile, text: Option<TextSource<'_>>) -> Result<TransRecModel> {
        let (mut cfg, tower) = read_config(file)?;
        let items = match (tower.as_str(), text) {
            ("text", Some(src)) => Items::Text {
                encoder: Box::new(TextEncoder::load_with_delta_prefixed(
                    src.dir,
                    file,
                    BERT_PREFIX,
                )?),
                texts: {
                    if !cfg.uep {
                        cfg.n_items = src.texts.len();
                    }
                    src.texts
                },
            },
            ("text", None) => {
                return Err(Error::Invalid(format!(
                    "{}: the checkpoint has a text item tower: loading it needs the text \
                     encoder folder and the items' texts",
                    file.origin()
                )));
            }
            _ => Items::Id,
        };
        let mut model = TransRecModel::new(cfg, items, &mut crate::nn::Rng::new(0))?;
        let mut own = model.stored_params_mut();
        load_values(&mut own, file).map_err(|e| e.in_origin(file.origin()))?;
        let known: HashSet<String> = own.iter().map(|p| p.name.clone()).collect();
        let extra: Vec<String> = file
            .names()
            .filter(|n| !known.contains(*n) && !n.starts_with(BERT_PREFIX))
            .map(String::from)
            .collect();
        if !extra.is_empty() {
            return Err(EngineError::UnexpectedTensors {
                model: MODEL.into(),
                names: extra,
            }
            .in_origin(file.origin())
            .into());
        }
        Ok(model)
    }

    /// Starts this (target) model from a source checkpoint (`--init`): the user encoder and
    /// the item tower's own layers are copied, and for a text tower every encoder tensor the
    /// source trained (its delta, which must be over the same base encoder: an error names
    /// both fingerprints); the source's stage-1 softmax layer is dropped, whatever this model
    /// has. The towers must be of the same kind and every copied tensor of the same shape (an
    /// ID tower over another catalog cannot be transferred: the error names the table).
    /// Cached frozen outputs are forgotten. Returns the names of the tensors copied.
    pub fn init_from(&mut self, source: &WeightFile) -> Result<Vec<String>> {
        let origin = source.origin().to_string();
        let (_, tower) = read_config(source)?;
        if tower != self.tower.kind() {
            return Err(Error::Invalid(format!(
                "{origin}: the source has a {tower} item tower, this model a {} one",
                self.tower.kind()
            )));
        }
        let mut copied = Vec::new();
        let mut targets = self.tower.own_params_mut();
        targets.extend(crate::nn::Module::params_mut(&mut self.user));
        for p in targets {
            let t = source
                .tensor(&p.name, &p.shape)
                .map_err(|e| e.in_origin(&origin))?;
            p.value.copy_from_slice(t.as_slice());
            copied.push(p.name.clone());
        }
        if let Some(text) = self.tower.text_mut() {
            let bert_names: Vec<&str> = source
                .names()
                .filter(|n| n.starts_with(BERT_PREFIX))
                .collect();
            if !bert_names.is_empty() {
                check_same_base(source, &text.encoder)?;
            }
            let mut all = text.encoder.bert.all_params_mut();
            for name in bert_names {
                let local = &name[BERT_PREFIX.len()..];
                let p = all.iter_mut().find(|p| p.name == local).ok_or_else(|| {
                    Error::Invalid(format!(
                        "{origin}: encoder tensor `{local}` is not one of this text encoder's"
                    ))
                })?;
                let t = source
                    .tensor(name, &p.shape)
                    .map_err(|e| e.in_origin(&origin))?;
                p.value.copy_from_slice(t.as_slice());
                copied.push(name.to_string());
            }
            text.clear_frozen();
        }
        Ok(copied)
    }
}

/// Fails unless the source's encoder delta was made over the base `encoder` was loaded from.
fn check_same_base(source: &WeightFile, encoder: &TextEncoder) -> Result<()> {
    let origin = source.origin();
    let want = source
        .metadata(DELTA_KEY)
        .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
        .and_then(|m| m.get("base_fingerprint")?.as_str().map(String::from))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{origin}: has encoder tensors but no valid `{DELTA_KEY}` metadata"
            ))
        })?;
    match encoder.base() {
        Some(b) if b.fingerprint == want => Ok(()),
        Some(b) => Err(Error::Invalid(format!(
            "{origin}: its text encoder was fine-tuned over a base with fingerprint {want}, \
             but this model's encoder ({}) has fingerprint {}: not the same base model",
            b.dir.display(),
            b.fingerprint
        ))),
        None => Err(Error::Invalid(format!(
            "{origin}: this model's text encoder was not loaded from a folder, so the source's \
             encoder delta cannot be checked against it"
        ))),
    }
}

/// The `model` name of a served TransRec file: `transrec` for a text tower, `idrec` for an ID
/// tower.
pub fn served_name(tower: &str) -> &'static str {
    if tower == "id" { "idrec" } else { MODEL }
}

impl TransRecModel {
    /// A file the engine serves (`seqrec score`, `eval`, the C ABI): the user encoder in the
    /// engine's SASRec layout (the `user.` prefix dropped), `item_embedding.weight` = `table`
    /// (`[rows, d]`, row 0 padding; e.g. [`Self::item_table`] over any catalog of texts), and
    /// a window of `cfg.context` items (the position rows CPC trains; longer histories keep
    /// their most recent items), with `model` = [`served_name`]. A bidirectional user encoder
    /// cannot be served causally and is an error.
    pub fn to_serving(&self, table: &[f32]) -> Result<Vec<u8>> {
        let c = self.config();
        if !c.causal {
            return Err(Error::Invalid(
                "a bidirectional user encoder cannot be served: the engine encodes left to right"
                    .into(),
            ));
        }
        let d = c.dim;
        if table.is_empty() || table.len() % d != 0 {
            return Err(Error::Invalid(format!(
                "item table of {} values is not [rows, {d}]",
                table.len()
            )));
        }
        let rows = table.len() / d;
        let window = c.context.min(c.max_len);
        let mut config = seqrec_engine::Config::from_map(Default::default())
            .with("model", served_name(self.tower.kind()))
            .with("n_items", rows)
            .with("MAX_ITEM_LIST_LENGTH", window)
            .with("hidden_size", d)
            .with("n_layers", c.n_layers)
            .with("n_heads", c.n_heads)
            .with("inner_size", c.inner)
            .with("hidden_dropout_prob", c.dropout as f64)
            .with("attn_dropout_prob", c.dropout as f64)
            .with("hidden_act", "gelu")
            .with("layer_norm_eps", c.ln_eps as f64);
        if !c.held_out_items.is_empty() {
            config = config.with(HELD_OUT_KEY, c.held_out_items.clone());
        }
        let config = config.to_json();
        let user = crate::nn::Module::params(&self.user);
        let names: Vec<String> = user
            .iter()
            .map(|p| p.name.strip_prefix("user.").unwrap_or(&p.name).to_string())
            .collect();
        let shapes: Vec<Vec<usize>> = user
            .iter()
            .zip(&names)
            .map(|(p, n)| match n.as_str() {
                "position_embedding.weight" => vec![window, d],
                _ => p.shape.clone(),
            })
            .collect();
        let mut tensors: Vec<(&str, &[usize], &[f32])> = vec![];
        let table_shape = [rows, d];
        tensors.push(("item_embedding.weight", &table_shape, table));
        for ((p, n), s) in user.iter().zip(&names).zip(&shapes) {
            let len: usize = s.iter().product();
            tensors.push((n.as_str(), s.as_slice(), &p.value[..len]));
        }
        Ok(serialize(&tensors, &[(CONFIG_KEY, config.as_str())])?)
    }
}
