//! RecBole checkpoints (`.pth`, written by `torch.save`) read without PyTorch.
//!
//! A checkpoint is a zip archive ([`zip`]) of stored records: `<folder>/data.pkl`, a pickle
//! ([`pickle`]) of `{"config": recbole Config, "state_dict": OrderedDict, "optimizer": ...,
//! ...}`, and one record `<folder>/data/<key>` per tensor storage. [`convert`] reads the
//! state dict's tensors (f32, f16 or bf16; contiguous or strided views into shared storages)
//! and RecBole's configuration (`config.final_config_dict`), maps it to seqrec's configuration
//! ([`map_config`]) and writes one safetensors image in memory: the only copy of the weights
//! it makes (the file itself is memory-mapped; the optimizer's tensors are never read). The
//! image is what `seqrec convert recbole` writes to disk and what [`crate::Model::load`]
//! loads, validated as any model file.
//!
//! The file is untrusted input: every offset and length is checked, every record's CRC-32 is
//! verified before its bytes are used, and the pickle runs in a data-only interpreter that
//! calls nothing outside a short allow-list (errors name the opcode or the class).

pub mod pickle;
pub mod zip;

use crate::codec::crc32;
use crate::config::{CONFIG_KEY, Config};
use crate::error::{Error, Result};
use crate::weights::{WeightFile, f32_header};
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use half::{bf16, f16};
use pickle::{Obj, Pickle, StorageType, TensorRef, Val};
use serde_json::{Map, Value};

fn ckpt_err(msg: String) -> Error {
    Error::Checkpoint(msg)
}

/// Whether `bytes` start like a zip archive (`PK\x03\x04`), as a `.pth` does.
pub fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// The hyper-parameters seqrec reads (or records) for each RecBole backbone, copied from
/// `final_config_dict` when present.
pub const RECBOLE_KEYS: &[(&str, &[&str])] = &[
    (
        "sasrec",
        &[
            "n_layers",
            "n_heads",
            "hidden_size",
            "inner_size",
            "hidden_dropout_prob",
            "attn_dropout_prob",
            "hidden_act",
            "layer_norm_eps",
            "initializer_range",
            "loss_type",
        ],
    ),
    (
        "gru4rec",
        &[
            "embedding_size",
            "hidden_size",
            "num_layers",
            "dropout_prob",
            "loss_type",
        ],
    ),
    (
        "nextitnet",
        &[
            "embedding_size",
            "kernel_size",
            "block_num",
            "dilations",
            "reg_weight",
            "loss_type",
        ],
    ),
    (
        "caser",
        &[
            "embedding_size",
            "nh",
            "nv",
            "dropout_prob",
            "reg_weight",
            "loss_type",
        ],
    ),
];

/// A checkpoint converted to a safetensors image in memory.
#[derive(Debug)]
pub struct Converted {
    words: Vec<u64>,
    len: usize,
    /// seqrec's configuration, also stored in the image's `seqrec.config` metadata.
    pub config: Config,
    /// The state dict's tensors, in order.
    pub tensors: Vec<String>,
}

impl Converted {
    /// The safetensors file image.
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }

    /// The image as a weight file (no copy).
    pub fn into_weight_file(self, origin: &str) -> Result<WeightFile> {
        WeightFile::from_words(self.words, self.len, origin)
    }
}

/// A parsed checkpoint: its records and its pickle.
struct Archive<'a> {
    bytes: &'a [u8],
    /// Folder prefix of the records (`archive/`).
    prefix: String,
    records: BTreeMap<String, zip::Record>,
    pickle: Pickle,
}

impl<'a> Archive<'a> {
    fn open(bytes: &'a [u8]) -> Result<Self> {
        if !is_zip(bytes) {
            let legacy = bytes.first() == Some(&0x80);
            return Err(ckpt_err(if legacy {
                "a pickle without a zip container: the legacy format of torch < 1.6 is not \
                 supported (re-save it with a current torch.save)"
                    .into()
            } else {
                format!(
                    "not a zip archive: starts with {:02x?}, expected `PK\\x03\\x04`",
                    &bytes[..bytes.len().min(4)]
                )
            }));
        }
        let mut records = BTreeMap::new();
        for r in zip::records(bytes)? {
            records.insert(r.name.clone(), r);
        }
        let pkl = records
            .keys()
            .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
            .cloned()
            .ok_or_else(|| ckpt_err("no `<folder>/data.pkl` record".into()))?;
        let prefix = pkl[..pkl.len() - "data.pkl".len()].to_string();
        let mut ar = Archive {
            bytes,
            prefix,
            records,
            pickle: Pickle {
                objs: Vec::new(),
                root: Val::None,
            },
        };
        if let Some(order) = ar.record("byteorder")? {
            if order != b"little" {
                return Err(ckpt_err(format!(
                    "byteorder record is `{}`: only little-endian checkpoints are read",
                    String::from_utf8_lossy(order)
                )));
            }
        }
        let data = ar
            .record("data.pkl")?
            .ok_or_else(|| ckpt_err("no data.pkl".into()))?;
        ar.pickle = pickle::parse(data)?;
        Ok(ar)
    }

    /// The checked bytes of record `<prefix><name>`, if present.
    fn record(&self, name: &str) -> Result<Option<&'a [u8]>> {
        let full = format!("{}{name}", self.prefix);
        let Some(r) = self.records.get(&full) else {
            return Ok(None);
        };
        let data = &self.bytes[r.start..r.start + r.len];
        let crc = crc32(0, data);
        if crc != r.crc {
            return Err(ckpt_err(format!(
                "record `{full}`: CRC-32 {crc:08x}, the directory says {:08x} (corrupt file)",
                r.crc
            )));
        }
        Ok(Some(data))
    }
}

/// The state dict and the RecBole configuration dict (if any) of a checkpoint's root.
fn locate(p: &Pickle) -> Result<(Val, Option<Val>)> {
    let root = p.root;
    if p.dict(root).is_none() {
        return Err(ckpt_err(
            "the pickled object is not a dict (expected RecBole's checkpoint or a state_dict)"
                .into(),
        ));
    }
    let Some(sd) = p.get(root, "state_dict") else {
        // A bare `torch.save(model.state_dict())`.
        return Ok((root, None));
    };
    if p.dict(sd).is_none() {
        return Err(ckpt_err("`state_dict` is not a dict".into()));
    }
    let config = match p.get(root, "config") {
        None | Some(Val::None) => None,
        Some(c) => Some(match p.obj(c) {
            Some(Obj::Instance {
                state: Some(state), ..
            }) => p.get(*state, "final_config_dict").unwrap_or(*state),
            Some(Obj::Dict(_)) => p.get(c, "final_config_dict").unwrap_or(c),
            _ => {
                return Err(ckpt_err(
                    "`config` is neither RecBole's Config nor a dict".into(),
                ));
            }
        }),
    };
    Ok((sd, config))
}

/// A pickled configuration value as JSON (numbers, strings, booleans, lists of them).
fn to_json(p: &Pickle, v: Val, key: &str, depth: usize) -> Result<Value> {
    Ok(match v {
        Val::None => Value::Null,
        Val::Bool(b) => Value::Bool(b),
        Val::Int(i) => Value::from(i),
        Val::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| ckpt_err(format!("config `{key}`: non-finite value {f}")))?,
        Val::Obj(_) if depth < 4 => match p.obj(v) {
            Some(Obj::Str(s)) => Value::String(s.clone()),
            Some(Obj::List(l) | Obj::Tuple(l)) => Value::Array(
                l.iter()
                    .map(|&x| to_json(p, x, key, depth + 1))
                    .collect::<Result<_>>()?,
            ),
            _ => {
                return Err(ckpt_err(format!(
                    "config `{key}`: not a number, string or list"
                )));
            }
        },
        _ => {
            return Err(ckpt_err(format!(
                "config `{key}`: not a number, string or list"
            )));
        }
    })
}

/// seqrec's configuration for a RecBole `final_config_dict`: `model` (RecBole's class name,
/// lower-cased), `MAX_ITEM_LIST_LENGTH`, the backbone's hyper-parameters
/// ([`RECBOLE_KEYS`]), and `n_items` / `n_users` from the tables' shapes.
pub fn map_config(
    p: &Pickle,
    final_config: Val,
    shapes: &BTreeMap<String, Vec<usize>>,
) -> Result<Config> {
    let model = p
        .get(final_config, "model")
        .and_then(|v| p.str(v))
        .ok_or_else(|| ckpt_err("RecBole config has no `model` string".into()))?
        .to_ascii_lowercase();
    let Some(&(_, keys)) = RECBOLE_KEYS.iter().find(|(m, _)| *m == model) else {
        return Err(ckpt_err(format!(
            "RecBole model `{model}` has no seqrec counterpart (supported: {})",
            RECBOLE_KEYS
                .iter()
                .map(|(m, _)| *m)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let mut map = Map::new();
    map.insert("model".into(), Value::String(model.clone()));
    for &key in keys.iter().chain(&["MAX_ITEM_LIST_LENGTH"]) {
        if let Some(v) = p.get(final_config, key) {
            map.insert(key.into(), to_json(p, v, key, 0)?);
        }
    }
    let rows = |name: &str| shapes.get(name).and_then(|s| s.first().copied());
    let n_items = rows("item_embedding.weight")
        .ok_or_else(|| ckpt_err("state_dict has no `item_embedding.weight`".into()))?;
    map.insert("n_items".into(), Value::from(n_items));
    if model == "caser" {
        let n_users = rows("user_embedding.weight")
            .ok_or_else(|| ckpt_err("a Caser state_dict without `user_embedding.weight`".into()))?;
        map.insert("n_users".into(), Value::from(n_users));
    }
    Ok(Config::from_map(map))
}

/// Checks a tensor view against its storage; returns its element count.
fn check_view(name: &str, t: &TensorRef) -> Result<usize> {
    let bad = |what: &str| {
        ckpt_err(format!(
            "tensor `{name}` (size {:?}, stride {:?}, offset {}) {what} its storage of {} elements",
            t.shape, t.stride, t.offset, t.storage_numel
        ))
    };
    let n = t
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad("overflows"))?;
    if n == 0 {
        return Ok(0);
    }
    let last = t
        .shape
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |a, (&d, &s)| {
            a.checked_add((d - 1).checked_mul(s)?)
        })
        .ok_or_else(|| bad("overflows"))?;
    if last >= t.storage_numel {
        return Err(bad("reaches past"));
    }
    Ok(n)
}

/// Writes the view `t` of `storage` as f32 little-endian values into `out`.
fn write_tensor(t: &TensorRef, n: usize, storage: &[u8], out: &mut [u8]) {
    if n == 0 {
        return;
    }
    let es = t.dtype.size();
    let convert = |src: &[u8], dst: &mut [u8]| {
        let v = match t.dtype {
            StorageType::F32 => f32::from_le_bytes([src[0], src[1], src[2], src[3]]),
            StorageType::F16 => f16::from_le_bytes([src[0], src[1]]).to_f32(),
            StorageType::BF16 => bf16::from_le_bytes([src[0], src[1]]).to_f32(),
            StorageType::Other(_) => 0.0,
        };
        dst.copy_from_slice(&v.to_le_bytes());
    };
    // Row-major strides, ignoring dimensions of size 1: a contiguous run.
    let mut expect = 1usize;
    let contiguous = t.shape.iter().zip(&t.stride).rev().all(|(&d, &s)| {
        let ok = d == 1 || s == expect;
        expect *= d;
        ok
    });
    if contiguous {
        let src = &storage[t.offset * es..(t.offset + n) * es];
        if t.dtype == StorageType::F32 {
            out.copy_from_slice(src);
        } else {
            for (s, d) in src.chunks_exact(es).zip(out.chunks_exact_mut(4)) {
                convert(s, d);
            }
        }
        return;
    }
    let dims = t.shape.len();
    let mut idx = vec![0usize; dims];
    let mut at = t.offset;
    for d in out.chunks_exact_mut(4) {
        convert(&storage[at * es..(at + 1) * es], d);
        // Next multi-index, last dimension fastest.
        for k in (0..dims).rev() {
            idx[k] += 1;
            at += t.stride[k];
            if idx[k] < t.shape[k] {
                break;
            }
            at -= t.stride[k] * t.shape[k];
            idx[k] = 0;
        }
    }
}

/// Converts a checkpoint image to a safetensors image. The configuration is the checkpoint's
/// RecBole configuration mapped by [`map_config`]; `config` is used for a bare state dict
/// (`torch.save(model.state_dict())`), which holds none.
pub fn convert(bytes: &[u8], config: Option<&Config>) -> Result<Converted> {
    let ar = Archive::open(bytes)?;
    let p = &ar.pickle;
    let (sd, rb_config) = locate(p)?;
    let entries = p.dict(sd).expect("checked by locate");
    let mut tensors: Vec<(String, &TensorRef)> = Vec::with_capacity(entries.len());
    let mut shapes = BTreeMap::new();
    for &(k, v) in entries {
        let name = p
            .str(k)
            .ok_or_else(|| ckpt_err("a state_dict key is not a string".into()))?;
        let Some(Obj::Tensor(t)) = p.obj(v) else {
            return Err(ckpt_err(format!(
                "state_dict entry `{name}` is not a tensor"
            )));
        };
        if let StorageType::Other(dt) = t.dtype {
            return Err(ckpt_err(format!(
                "tensor `{name}` has dtype {dt}: only float32, float16 and bfloat16 weights are read"
            )));
        }
        shapes.insert(name.to_string(), t.shape.clone());
        tensors.push((name.to_string(), t));
    }
    let config = match (rb_config, config) {
        (Some(rb), _) => map_config(p, rb, &shapes)?,
        (None, Some(c)) => c.clone(),
        (None, None) => {
            return Err(ckpt_err(
                "the checkpoint holds a bare state_dict without RecBole's config: give a \
                 configuration (a `config.json` beside it)"
                    .into(),
            ));
        }
    };
    let json = config.to_json();
    let list: Vec<(&str, &[usize])> = tensors
        .iter()
        .map(|(n, t)| (n.as_str(), t.shape.as_slice()))
        .collect();
    let (head, offsets, data_len) = f32_header(&list, &[(CONFIG_KEY, &json)])?;
    let len = head.len() + data_len;
    let mut words = vec![0u64; len.div_ceil(8)];
    let image: &mut [u8] = &mut bytemuck::cast_slice_mut(&mut words)[..len];
    image[..head.len()].copy_from_slice(&head);
    let mut checked: BTreeMap<&str, &[u8]> = BTreeMap::new();
    for ((name, t), &off) in tensors.iter().zip(&offsets) {
        let n = check_view(name, t)?;
        let storage = match checked.get(t.key.as_str()) {
            Some(s) => *s,
            None => {
                let rec = format!("data/{}", t.key);
                let s = ar.record(&rec)?.ok_or_else(|| {
                    ckpt_err(format!(
                        "tensor `{name}`: storage record `{rec}` is missing"
                    ))
                })?;
                checked.insert(&t.key, s);
                s
            }
        };
        let need = t.storage_numel.checked_mul(t.dtype.size());
        if need.is_none_or(|b| b > storage.len()) {
            return Err(ckpt_err(format!(
                "tensor `{name}`: storage `{}` holds {} bytes, fewer than {} {} elements",
                t.key,
                storage.len(),
                t.storage_numel,
                t.dtype.name()
            )));
        }
        let start = head.len() + off;
        write_tensor(t, n, storage, &mut image[start..start + 4 * n]);
    }
    Ok(Converted {
        words,
        len,
        config,
        tensors: tensors.into_iter().map(|(n, _)| n).collect(),
    })
}

/// Memory-maps and converts a checkpoint file (see [`convert`]).
#[cfg(feature = "std")]
pub fn convert_file(path: &std::path::Path, config: Option<&Config>) -> Result<Converted> {
    let origin = path.display().to_string();
    let io = |source| Error::Io {
        path: origin.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: read-only private map; as for safetensors files, the file must not be truncated
    // or rewritten by another process while it is read (a deployment bug, not bad input).
    let map = unsafe { memmap2::MmapOptions::new().map(&file) }.map_err(io)?;
    convert(&map, config).map_err(|e| e.in_origin(&origin))
}
