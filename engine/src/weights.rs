//! Weights in safetensors files: memory-mapped (under `std`), borrowed from a `'static` byte
//! slice, or copied from any byte slice into an aligned buffer.
//!
//! f32 tensors whose bytes are 4-byte aligned are used in place (zero-copy); f16 and bf16
//! tensors, and unaligned f32 ones, are converted into an owned f32 buffer at load time.
//! Every tensor handed to a model is checked for its shape (against the configuration) and for
//! non-finite values; errors name the tensor and both shapes.

use crate::error::{Error, Result};
use alloc::borrow::ToOwned;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

/// Element type of a stored tensor that the engine accepts.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// int8 with one f32 scale per row: only as the storage of a scoring item table
    /// ([`crate::LoadOptions::item_dtype`]); weight files never hold it.
    I8,
    /// int16 with one f32 scale per row: only as the storage of a text encoder's layer weights
    /// (`text::TextOptions::weight_dtype`); weight files never hold it.
    I16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 => 1,
        }
    }

    /// Name as safetensors writes it (`F32`, `F16`, `BF16`, `I8`, `I16`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I8 => "I8",
            DType::I16 => "I16",
        }
    }

    /// Parses `f32` / `f16` / `bf16` / `i8` / `i16` (any case).
    pub fn parse(s: &str) -> Option<DType> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Some(DType::F32),
            "f16" | "float16" | "half" => Some(DType::F16),
            "bf16" | "bfloat16" => Some(DType::BF16),
            "i8" | "int8" => Some(DType::I8),
            "i16" | "int16" => Some(DType::I16),
            _ => None,
        }
    }
}

impl core::fmt::Display for DType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Bytes behind a weight file.
enum Backing {
    Static(&'static [u8]),
    /// Copied bytes in an 8-byte aligned allocation; `len` bytes are valid.
    Owned {
        words: Vec<u64>,
        len: usize,
    },
    #[cfg(feature = "std")]
    Mmap(memmap2::Mmap),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Static(b) => b,
            Backing::Owned { words, len } => &bytemuck::cast_slice(words)[..*len],
            #[cfg(feature = "std")]
            Backing::Mmap(m) => m,
        }
    }
}

impl core::fmt::Debug for Backing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let kind = match self {
            Backing::Static(_) => "static",
            Backing::Owned { .. } => "owned",
            #[cfg(feature = "std")]
            Backing::Mmap(_) => "mmap",
        };
        write!(f, "Backing::{kind}({} bytes)", self.bytes().len())
    }
}

/// A host f32 tensor: a zero-copy view into a weight file, or an owned buffer.
#[derive(Clone)]
pub struct Tensor {
    data: TensorData,
    shape: Vec<usize>,
}

#[derive(Clone)]
enum TensorData {
    Mapped {
        backing: Arc<Backing>,
        offset: usize,
        len: usize,
    },
    Owned(Vec<f32>),
}

impl core::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let kind = match self.data {
            TensorData::Mapped { .. } => "mapped",
            TensorData::Owned(_) => "owned",
        };
        write!(f, "Tensor({kind}, shape {:?})", self.shape)
    }
}

impl Tensor {
    /// An owned tensor; `data.len()` must equal the product of `shape`.
    pub fn from_vec(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::InvalidArgument(format!(
                "tensor of shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        Ok(Tensor {
            data: TensorData::Owned(data),
            shape,
        })
    }

    /// The values, row-major.
    #[inline]
    pub fn as_slice(&self) -> &[f32] {
        match &self.data {
            TensorData::Mapped {
                backing,
                offset,
                len,
            } => bytemuck::cast_slice(&backing.bytes()[*offset..*offset + *len * 4]),
            TensorData::Owned(v) => v,
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the values are read in place from the weight file (no copy was made).
    pub fn is_zero_copy(&self) -> bool {
        matches!(self.data, TensorData::Mapped { .. })
    }
}

/// Where a tensor's bytes lie in its file.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// Stored dtype (as safetensors names it; may be one the engine rejects).
    pub dtype: String,
    /// Stored shape.
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub range: (usize, usize),
}

/// A parsed safetensors file.
#[derive(Debug)]
pub struct WeightFile {
    backing: Arc<Backing>,
    tensors: BTreeMap<String, TensorInfo>,
    metadata: BTreeMap<String, String>,
    origin: String,
}

impl WeightFile {
    /// Memory-maps a safetensors file.
    #[cfg(feature = "std")]
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<WeightFile> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| Error::Io {
            path: origin.clone(),
            source,
        })?;
        // SAFETY: the map is read-only and private to this process. Like every mmap-based
        // loader (safetensors, candle), this assumes the file is not truncated or rewritten by
        // another process while mapped; that would be a bug in the deployment, not input that
        // this loader can validate.
        let map =
            unsafe { memmap2::MmapOptions::new().map(&file) }.map_err(|source| Error::Io {
                path: origin.clone(),
                source,
            })?;
        Self::parse(Backing::Mmap(map), origin)
    }

    /// Parses a file image that lives for the whole program (e.g. `include_bytes!`), zero-copy.
    pub fn from_static(bytes: &'static [u8]) -> Result<WeightFile> {
        Self::parse(Backing::Static(bytes), "<memory>".into())
    }

    /// Parses a file image held in the first `len` bytes of `words` (8-byte aligned), taking
    /// ownership without a copy.
    pub fn from_words(
        words: Vec<u64>,
        len: usize,
        origin: impl Into<String>,
    ) -> Result<WeightFile> {
        if len > words.len() * 8 {
            return Err(Error::InvalidArgument(format!(
                "{len} bytes in a buffer of {}",
                words.len() * 8
            )));
        }
        Self::parse(Backing::Owned { words, len }, origin.into())
    }

    /// Parses a file image, copying it into an aligned buffer owned by the result.
    pub fn from_bytes(bytes: &[u8]) -> Result<WeightFile> {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Self::parse(
            Backing::Owned {
                words,
                len: bytes.len(),
            },
            "<memory>".into(),
        )
    }

    fn parse(backing: Backing, origin: String) -> Result<WeightFile> {
        let bytes = backing.bytes();
        let (header_len, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::Format(e.to_string()).in_origin(&origin))?;
        let data_start = 8 + header_len;
        let mut tensors = BTreeMap::new();
        for (name, info) in meta.tensors() {
            let (a, b) = info.data_offsets;
            tensors.insert(
                name,
                TensorInfo {
                    dtype: info.dtype.to_string(),
                    shape: info.shape.clone(),
                    range: (data_start + a, data_start + b),
                },
            );
        }
        let metadata = meta
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        Ok(WeightFile {
            backing: Arc::new(backing),
            tensors,
            metadata,
            origin,
        })
    }

    /// Where the file came from (its path, or `<memory>`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Replaces the origin used in error messages.
    pub fn set_origin(&mut self, origin: impl Into<String>) {
        self.origin = origin.into();
    }

    /// A value of the `__metadata__` table.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// The whole `__metadata__` table.
    pub fn metadata_map(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Stored dtype, shape and byte range of a tensor.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> usize {
        self.backing.bytes().len()
    }

    /// Loads a tensor as f32, checking that its shape is `expected` and that every value is
    /// finite.
    pub fn tensor(&self, name: &str, expected: &[usize]) -> Result<Tensor> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::MissingTensor { name: name.into() })?;
        if info.shape != expected {
            return Err(Error::Shape {
                name: name.into(),
                expected: expected.to_vec(),
                found: info.shape.clone(),
            });
        }
        let dtype = stored_dtype(name, info)?;
        let bytes = &self.backing.bytes()[info.range.0..info.range.1];
        let n: usize = expected.iter().product();
        if bytes.len() != n * dtype.size() {
            return Err(Error::Format(format!(
                "tensor `{name}`: {} data bytes for {n} {dtype} values",
                bytes.len()
            )));
        }
        let tensor = match dtype {
            DType::F32 => match bytemuck::try_cast_slice::<u8, f32>(bytes) {
                Ok(_) => Tensor {
                    data: TensorData::Mapped {
                        backing: self.backing.clone(),
                        offset: info.range.0,
                        len: n,
                    },
                    shape: expected.to_vec(),
                },
                Err(_) => {
                    let v = bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    Tensor {
                        data: TensorData::Owned(v),
                        shape: expected.to_vec(),
                    }
                }
            },
            DType::F16 => {
                let v = bytes
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect();
                Tensor {
                    data: TensorData::Owned(v),
                    shape: expected.to_vec(),
                }
            }
            DType::BF16 => {
                let v = bytes
                    .chunks_exact(2)
                    .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect();
                Tensor {
                    data: TensorData::Owned(v),
                    shape: expected.to_vec(),
                }
            }
            // `stored_dtype` accepts only float tensors; I8 and I16 name in-memory storage.
            DType::I8 | DType::I16 => {
                return Err(Error::Dtype {
                    name: name.into(),
                    found: dtype.name().to_owned(),
                });
            }
        };
        check_finite(name, tensor.as_slice())?;
        Ok(tensor)
    }

    /// The stored dtype of a tensor the engine can read.
    pub fn dtype(&self, name: &str) -> Result<DType> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::MissingTensor { name: name.into() })?;
        stored_dtype(name, info)
    }
}

fn stored_dtype(name: &str, info: &TensorInfo) -> Result<DType> {
    match info.dtype.as_str() {
        s if s == Dtype::F32.to_string() => Ok(DType::F32),
        s if s == Dtype::F16.to_string() => Ok(DType::F16),
        s if s == Dtype::BF16.to_string() => Ok(DType::BF16),
        other => Err(Error::Dtype {
            name: name.into(),
            found: other.to_owned(),
        }),
    }
}

/// Fails with [`Error::NonFinite`] at the first NaN or infinity.
pub fn check_finite(name: &str, values: &[f32]) -> Result<()> {
    // Branch-free screen per chunk (vectorises), then locate the first bad value if any.
    let bad = values
        .chunks(4096)
        .any(|c| c.iter().fold(false, |acc, v| acc | !v.is_finite()));
    if !bad {
        return Ok(());
    }
    match values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        Some((index, &value)) => Err(Error::NonFinite {
            name: name.into(),
            index,
            value,
        }),
        None => Ok(()),
    }
}

/// Name and shape of a tensor an architecture expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// Tensor name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
}

/// Hands out tensors to a model constructor and remembers which were asked for, so that
/// tensors the architecture does not know can be reported. In recording mode
/// ([`TensorLoader::recording`]) it hands out zero tensors and only collects the names and
/// shapes: running a constructor that way lists exactly the tensors a configuration needs.
#[derive(Debug)]
pub struct TensorLoader<'a> {
    file: Option<&'a WeightFile>,
    used: BTreeSet<String>,
    specs: Vec<TensorSpec>,
    fingerprint: u64,
}

impl<'a> TensorLoader<'a> {
    /// A loader over `file`.
    pub fn new(file: &'a WeightFile) -> Self {
        TensorLoader {
            file: Some(file),
            used: BTreeSet::new(),
            specs: Vec::new(),
            fingerprint: crate::codec::FNV_START,
        }
    }

    /// A loader that serves zeros and records every request.
    pub fn recording() -> TensorLoader<'static> {
        TensorLoader {
            file: None,
            used: BTreeSet::new(),
            specs: Vec::new(),
            fingerprint: crate::codec::FNV_START,
        }
    }

    /// Loads `name` with the `expected` shape (see [`WeightFile::tensor`]).
    pub fn get(&mut self, name: &str, expected: &[usize]) -> Result<Tensor> {
        self.used.insert(name.into());
        self.specs.push(TensorSpec {
            name: name.into(),
            shape: expected.to_vec(),
        });
        let t = match self.file {
            Some(file) => file.tensor(name, expected)?,
            None => Tensor::from_vec(expected.to_vec(), vec![0.0; expected.iter().product()])?,
        };
        if self.file.is_some() {
            let mut h = crate::codec::fnv1a(self.fingerprint, name.as_bytes());
            for &d in expected {
                h = crate::codec::fnv1a(h, &(d as u64).to_le_bytes());
            }
            self.fingerprint = crate::codec::hash_bytes(h, bytemuck::cast_slice(t.as_slice()));
        }
        Ok(t)
    }

    /// A hash of every tensor handed out so far: names, shapes and f32 values, in request
    /// order (part of a model's fingerprint, see [`crate::Model::fingerprint`]).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Whether the file holds a tensor `name` (false when recording): how a constructor reads
    /// an optional tensor before asking for it with [`TensorLoader::get`].
    pub fn has(&self, name: &str) -> bool {
        self.file.is_some_and(|f| f.info(name).is_some())
    }

    /// Marks `name` as known but unused (e.g. a checkpoint's buffers or a head the model does
    /// not run), so that [`TensorLoader::finish`] does not report it. Absent names are fine.
    pub fn skip(&mut self, name: &str) {
        self.used.insert(name.into());
    }

    /// The tensors requested so far, in request order.
    pub fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }

    /// Fails with [`Error::UnexpectedTensors`] if the file holds tensors nobody asked for.
    pub fn finish(self, model: &str) -> Result<Vec<TensorSpec>> {
        if let Some(file) = self.file {
            let extra: Vec<String> = file
                .names()
                .filter(|n| !self.used.contains(*n))
                .map(String::from)
                .collect();
            if !extra.is_empty() {
                return Err(Error::UnexpectedTensors {
                    model: model.into(),
                    names: extra,
                });
            }
        }
        Ok(self.specs)
    }
}

/// The head of a safetensors image of f32 tensors: the 8-byte header length and the JSON
/// header (padded with spaces to a multiple of 8 bytes, as the reference implementation does),
/// the data offset of each tensor after it (in order, 4-byte aligned), and the data length.
pub fn f32_header(
    tensors: &[(&str, &[usize])],
    metadata: &[(&str, &str)],
) -> Result<(Vec<u8>, Vec<usize>, usize)> {
    use serde_json::{Map, Value};
    let mut header = Map::new();
    if !metadata.is_empty() {
        let meta: Map<String, Value> = metadata
            .iter()
            .map(|(k, v)| (String::from(*k), Value::String(String::from(*v))))
            .collect();
        header.insert("__metadata__".into(), Value::Object(meta));
    }
    let mut offset = 0usize;
    let mut offsets = Vec::with_capacity(tensors.len());
    for (name, shape) in tensors {
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|n| n.checked_mul(4))
            .ok_or_else(|| {
                Error::InvalidArgument(format!("tensor `{name}`: shape {shape:?} overflows"))
            })?;
        if header.contains_key(*name) {
            return Err(Error::InvalidArgument(format!(
                "tensor `{name}` is listed twice"
            )));
        }
        let mut entry = Map::new();
        entry.insert("dtype".into(), Value::String("F32".into()));
        entry.insert(
            "shape".into(),
            Value::Array(shape.iter().map(|&d| Value::from(d)).collect()),
        );
        entry.insert(
            "data_offsets".into(),
            Value::Array(vec![Value::from(offset), Value::from(offset + n)]),
        );
        header.insert(String::from(*name), Value::Object(entry));
        offsets.push(offset);
        offset += n;
    }
    let mut text = Value::Object(header).to_string().into_bytes();
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len());
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    Ok((out, offsets, offset))
}

/// Serialises f32 tensors (name, shape, values) and string metadata into a safetensors file
/// image. Tensors are written in the given order, 4-byte aligned (see [`f32_header`]).
pub fn serialize(
    tensors: &[(&str, &[usize], &[f32])],
    metadata: &[(&str, &str)],
) -> Result<Vec<u8>> {
    for (name, shape, values) in tensors {
        let n: usize = shape.iter().product();
        if n != values.len() {
            return Err(Error::InvalidArgument(format!(
                "tensor `{name}`: shape {shape:?} needs {n} values, got {}",
                values.len()
            )));
        }
    }
    let entries: Vec<(&str, &[usize])> = tensors.iter().map(|(n, s, _)| (*n, *s)).collect();
    let (mut out, _, data) = f32_header(&entries, metadata)?;
    out.reserve(data);
    for (_, _, values) in tensors {
        for v in values.iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(out)
}
