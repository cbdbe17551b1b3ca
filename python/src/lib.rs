//! The Python package `seqrec` (module `seqrec._seqrec`): a face over the engine and the
//! trainer, as `ffi/` is for C. Scoring releases the GIL, so Python threads score in
//! parallel; results come back as NumPy arrays made from the engine's buffers without a copy,
//! and histories given as `uint32` arrays are read in place.

// PyO3's macros expand to code these lints flag.
#![allow(clippy::useless_conversion, unsafe_op_in_unsafe_fn)]

use numpy::{
    PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use seqrec_engine::text::{TextEncoder as EngineText, TextOptions};
use seqrec_engine::{
    DType, Error as EngineError, LoadOptions, Model as EngineModel, Objectives, Query,
    SessionState, Workspace,
};
use std::sync::{Arc, Mutex, PoisonError};

create_exception!(
    _seqrec,
    SeqrecError,
    PyException,
    "An error of the seqrec engine; the message names the problem."
);
create_exception!(
    _seqrec,
    InvalidInputError,
    SeqrecError,
    "Bad input: an item or user id out of range, an empty history, an unknown objective knob."
);
create_exception!(
    _seqrec,
    ModelFileError,
    SeqrecError,
    "A model file (safetensors or RecBole .pth) or a text-encoder folder that cannot be used."
);
create_exception!(
    _seqrec,
    SessionStateError,
    SeqrecError,
    "Saved session bytes that are corrupt, truncated or of another format version."
);

fn err(e: EngineError) -> PyErr {
    let msg = e.to_string();
    match e.root() {
        EngineError::SessionState(_) => SessionStateError::new_err(msg),
        EngineError::ItemOutOfRange { .. }
        | EngineError::UserOutOfRange { .. }
        | EngineError::EmptyHistory
        | EngineError::InvalidArgument(_) => InvalidInputError::new_err(msg),
        EngineError::Unsupported(_) | EngineError::Tokenizer(_) => SeqrecError::new_err(msg),
        _ => ModelFileError::new_err(msg),
    }
}

fn invalid(msg: impl Into<String>) -> PyErr {
    InvalidInputError::new_err(msg.into())
}

/// Item ids from a `uint32` NumPy array (read in place) or any sequence of integers.
enum Ids<'py> {
    Array(PyReadonlyArray1<'py, u32>),
    Owned(Vec<u32>),
}

impl Ids<'_> {
    fn as_slice(&self) -> PyResult<&[u32]> {
        match self {
            Ids::Array(a) => a
                .as_slice()
                .map_err(|_| invalid("ids array is not contiguous")),
            Ids::Owned(v) => Ok(v),
        }
    }
}

/// A contiguous `uint32` array is read in place; anything else is converted.
fn ids<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Ids<'py>> {
    if let Ok(a) = obj.extract::<PyReadonlyArray1<'py, u32>>() {
        if a.is_contiguous() {
            return Ok(Ids::Array(a));
        }
        return Ok(Ids::Owned(a.as_array().to_vec()));
    }
    let v: Vec<i64> = obj
        .extract()
        .map_err(|_| invalid(format!("{what} must be a sequence of integer ids")))?;
    v.into_iter()
        .map(|x| u32::try_from(x).map_err(|_| invalid(format!("{what}: id {x} is out of range"))))
        .collect::<PyResult<Vec<u32>>>()
        .map(Ids::Owned)
}

/// Item ids and their scores, best first.
type TopK<'py> = (Bound<'py, PyArray1<u32>>, Bound<'py, PyArray1<f32>>);
/// Item ids and scores of a batch, one row per request.
type TopKBatch<'py> = (Bound<'py, PyArray2<u32>>, Bound<'py, PyArray2<f32>>);

fn parse_dtype(s: &str) -> PyResult<DType> {
    DType::parse(s).ok_or_else(|| invalid(format!("unknown dtype `{s}` (f32, f16, bf16, i8, i16)")))
}

/// A loaded recommender. Immutable; share it between threads: each call borrows a pooled
/// workspace and releases the GIL while it scores.
#[pyclass(module = "seqrec._seqrec", frozen)]
struct Model {
    model: Arc<EngineModel>,
    pool: Arc<Mutex<Vec<Workspace>>>,
}

/// A workspace borrowed from a model's pool, given back on drop.
struct Pooled {
    pool: Arc<Mutex<Vec<Workspace>>>,
    ws: Option<Workspace>,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(ws) = self.ws.take() {
            self.pool
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(ws);
        }
    }
}

impl Model {
    fn take(&self) -> Pooled {
        let ws = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default();
        Pooled {
            pool: Arc::clone(&self.pool),
            ws: Some(ws),
        }
    }

    /// Runs `f` on the engine's model with a pooled workspace, the GIL released.
    fn run<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&EngineModel, &mut Workspace) -> seqrec_engine::Result<R> + Send,
    ) -> PyResult<R> {
        let mut pooled = self.take();
        let ws = pooled.ws.as_mut().expect("present until drop");
        let model = &*self.model;
        py.detach(|| f(model, ws)).map_err(err)
    }

    fn knobs(&self, knobs: Option<&Bound<'_, PyDict>>) -> PyResult<Option<Objectives>> {
        let Some(knobs) = knobs else {
            return Ok(None);
        };
        let mut o = self.model.default_objectives();
        for (k, v) in knobs.iter() {
            let name: String = k.extract()?;
            let value: f32 = v.extract()?;
            o.set(&name, value).map_err(err)?;
        }
        Ok(Some(o))
    }

    fn wrap(model: EngineModel) -> Model {
        Model {
            model: Arc::new(model),
            pool: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

#[pymethods]
impl Model {
    /// Loads a model file: safetensors, or a RecBole checkpoint (`.pth`, read without
    /// PyTorch). `device` is `"cpu"` (the only backend of this build); `item_dtype` is the
    /// storage of the scoring item table (`"f32"`, `"f16"`, `"bf16"`, `"i8"`).
    #[staticmethod]
    #[pyo3(signature = (path, device = "cpu", item_dtype = "f32"))]
    fn load(
        py: Python<'_>,
        path: std::path::PathBuf,
        device: &str,
        item_dtype: &str,
    ) -> PyResult<Model> {
        if device != "cpu" {
            return Err(SeqrecError::new_err(format!(
                "device `{device}` is not available: this build serves on \"cpu\" only"
            )));
        }
        let opts = LoadOptions {
            item_dtype: parse_dtype(item_dtype)?,
            ..Default::default()
        };
        let model = py
            .detach(|| EngineModel::load_with(&path, &opts))
            .map_err(err)?;
        Ok(Model::wrap(model))
    }

    /// Loads from the bytes of a safetensors file or a `.pth`.
    #[staticmethod]
    #[pyo3(signature = (data, item_dtype = "f32"))]
    fn from_bytes(data: &[u8], item_dtype: &str) -> PyResult<Model> {
        let opts = LoadOptions {
            item_dtype: parse_dtype(item_dtype)?,
            ..Default::default()
        };
        EngineModel::from_bytes(data, &opts)
            .map(Model::wrap)
            .map_err(err)
    }

    /// Architecture name (`sasrec`, `gru4rec`, ...).
    #[getter]
    fn arch(&self) -> &'static str {
        self.model.info().arch
    }

    /// Catalog size, padding id 0 included (item ids are `1 .. n_items - 1`).
    #[getter]
    fn n_items(&self) -> usize {
        self.model.info().n_items
    }

    /// Number of users for models with a user embedding (Caser), else None.
    #[getter]
    fn n_users(&self) -> Option<usize> {
        self.model.info().n_users
    }

    /// Window length (`MAX_ITEM_LIST_LENGTH`).
    #[getter]
    fn max_len(&self) -> usize {
        self.model.info().max_len
    }

    /// Width of the scoring vector.
    #[getter]
    fn dim(&self) -> usize {
        self.model.info().dim
    }

    /// Storage of the scoring item table.
    #[getter]
    fn item_dtype(&self) -> String {
        self.model.info().item_dtype.name().to_ascii_lowercase()
    }

    /// The model's fingerprint (saved sessions carry it).
    #[getter]
    fn fingerprint(&self) -> u64 {
        self.model.fingerprint()
    }

    /// The objective knobs: `{name: (default, min, max, doc)}`.
    #[getter]
    fn objectives<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for s in self.model.objective_specs() {
            d.set_item(s.name, (s.default, s.min, s.max, s.doc))?;
        }
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let i = self.model.info();
        format!(
            "Model(arch={:?}, n_items={}, max_len={}, dim={})",
            i.arch, i.n_items, i.max_len, i.dim
        )
    }

    /// The `k` best items for `history` (ids, oldest first): `(items uint32[k], scores
    /// float32[k])`, best first (fewer when exclusions leave fewer items).
    #[pyo3(signature = (history, k = 10, exclude_history = false, user = None, exclude = None, objectives = None))]
    #[allow(clippy::too_many_arguments)]
    fn topk<'py>(
        &self,
        py: Python<'py>,
        history: &Bound<'py, PyAny>,
        k: usize,
        exclude_history: bool,
        user: Option<u32>,
        exclude: Option<&Bound<'py, PyAny>>,
        objectives: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<TopK<'py>> {
        let h = ids(history, "history")?;
        let ex = exclude.map(|e| ids(e, "exclude")).transpose()?;
        let knobs = self.knobs(objectives)?;
        let (hs, exs) = (
            h.as_slice()?,
            ex.as_ref().map(|e| e.as_slice()).transpose()?,
        );
        let k = k.min(self.model.info().n_items);
        let (mut items, mut scores) = (vec![0u32; k], vec![0f32; k]);
        let q = Query {
            history: hs,
            user,
            exclude_history,
            exclude: exs.unwrap_or(&[]),
            objectives: knobs.as_ref(),
        };
        let n = self.run(py, |m, ws| m.topk_into(&q, k, ws, &mut items, &mut scores))?;
        items.truncate(n);
        scores.truncate(n);
        Ok((
            PyArray1::from_vec(py, items),
            PyArray1::from_vec(py, scores),
        ))
    }

    /// Top-k for many histories at once, in parallel: `histories` is a 2-D `uint32` array
    /// `[B, L]` (read in place; each row right-padded with 0, or cut at `lengths[i]`) or a
    /// list of sequences. Returns `(items uint32[B, k], scores float32[B, k])`; a row with
    /// fewer than `k` candidates left is filled with id 0 and `-inf`.
    #[pyo3(signature = (histories, k = 10, exclude_history = false, users = None, lengths = None))]
    fn topk_batch<'py>(
        &self,
        py: Python<'py>,
        histories: &Bound<'py, PyAny>,
        k: usize,
        exclude_history: bool,
        users: Option<Vec<u32>>,
        lengths: Option<Vec<usize>>,
    ) -> PyResult<TopKBatch<'py>> {
        let grid = histories.extract::<PyReadonlyArray2<'py, u32>>().ok();
        let owned: Vec<Vec<u32>>;
        let mut rows: Vec<&[u32]> = Vec::new();
        if let Some(g) = grid.as_ref() {
            let (b, l) = (g.shape()[0], g.shape()[1]);
            let flat = g
                .as_slice()
                .map_err(|_| invalid("histories array is not C-contiguous"))?;
            for i in 0..b {
                let row = &flat[i * l..(i + 1) * l];
                let len = match &lengths {
                    Some(ls) => *ls
                        .get(i)
                        .ok_or_else(|| invalid("lengths is shorter than the batch"))?,
                    None => row.iter().rposition(|&x| x != 0).map_or(0, |p| p + 1),
                };
                if len > l {
                    return Err(invalid(format!(
                        "lengths[{i}] = {len} exceeds the row width {l}"
                    )));
                }
                rows.push(&row[..len]);
            }
        } else {
            let list = histories.cast::<PyList>().map_err(|_| {
                invalid("histories must be a 2-D uint32 array or a list of sequences")
            })?;
            owned = list
                .iter()
                .map(|h| match ids(&h, "history")? {
                    Ids::Owned(v) => Ok(v),
                    a => Ok(a.as_slice()?.to_vec()),
                })
                .collect::<PyResult<_>>()?;
            rows = owned.iter().map(Vec::as_slice).collect();
        }
        let b = rows.len();
        if let Some(u) = &users {
            if u.len() != b {
                return Err(invalid(format!("{} users for {b} histories", u.len())));
            }
        }
        let k = k.min(self.model.info().n_items);
        let queries: Vec<Query<'_>> = rows
            .iter()
            .enumerate()
            .map(|(i, h)| Query {
                history: h,
                user: users.as_ref().map(|u| u[i]),
                exclude_history,
                ..Default::default()
            })
            .collect();
        let (mut items, mut scores, mut counts) =
            (vec![0u32; b * k], vec![0f32; b * k], vec![0usize; b]);
        let model = &*self.model;
        py.detach(|| model.topk_batch_into(&queries, k, &mut items, &mut scores, &mut counts))
            .map_err(err)?;
        for (r, &c) in counts.iter().enumerate() {
            items[r * k + c..(r + 1) * k].fill(0);
            scores[r * k + c..(r + 1) * k].fill(f32::NEG_INFINITY);
        }
        let items = PyArray1::from_vec(py, items).reshape([b, k])?;
        let scores = PyArray1::from_vec(py, scores).reshape([b, k])?;
        Ok((items, scores))
    }

    /// Scores of every item (`float32[n_items]`, index 0 the padding id, as RecBole scores).
    #[pyo3(signature = (history, user = None, objectives = None))]
    fn score<'py>(
        &self,
        py: Python<'py>,
        history: &Bound<'py, PyAny>,
        user: Option<u32>,
        objectives: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let h = ids(history, "history")?;
        let knobs = self.knobs(objectives)?;
        let hs = h.as_slice()?;
        let mut out = vec![0f32; self.model.info().n_items];
        let q = Query {
            history: hs,
            user,
            objectives: knobs.as_ref(),
            ..Default::default()
        };
        self.run(py, |m, ws| m.score(&q, ws, &mut out))?;
        Ok(PyArray1::from_vec(py, out))
    }

    /// Scores of the `candidates` only (re-ranking): `out[i]` scores `candidates[i]`.
    #[pyo3(signature = (history, candidates, user = None, objectives = None))]
    fn score_candidates<'py>(
        &self,
        py: Python<'py>,
        history: &Bound<'py, PyAny>,
        candidates: &Bound<'py, PyAny>,
        user: Option<u32>,
        objectives: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let h = ids(history, "history")?;
        let c = ids(candidates, "candidates")?;
        let knobs = self.knobs(objectives)?;
        let (hs, cs) = (h.as_slice()?, c.as_slice()?);
        let mut out = vec![0f32; cs.len()];
        let q = Query {
            history: hs,
            user,
            objectives: knobs.as_ref(),
            ..Default::default()
        };
        self.run(py, |m, ws| m.score_candidates(&q, cs, ws, &mut out))?;
        Ok(PyArray1::from_vec(py, out))
    }

    /// A new incremental session (`user` for models with a user embedding).
    #[pyo3(signature = (user = None))]
    fn session(slf: &Bound<'_, Self>, user: Option<u32>) -> PyResult<Session> {
        let m = slf.get();
        let state = match user {
            Some(u) => m.model.new_session_for_user(u),
            None => m.model.new_session(),
        }
        .map_err(err)?;
        Ok(Session::new(slf.clone().unbind(), state))
    }
}

struct SessionInner {
    state: SessionState,
    ws: Workspace,
}

/// A user's incremental session: `push` events, ask for `topk`; `to_bytes` / `from_bytes`
/// move it between processes serving the same model. Use it from one thread at a time.
#[pyclass(module = "seqrec._seqrec", frozen)]
struct Session {
    model: Py<Model>,
    inner: Mutex<SessionInner>,
}

impl Session {
    fn new(model: Py<Model>, state: SessionState) -> Session {
        Session {
            model,
            inner: Mutex::new(SessionInner {
                state,
                ws: Workspace::new(),
            }),
        }
    }

    fn with<R>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&EngineModel, &mut SessionInner) -> seqrec_engine::Result<R> + Send,
    ) -> PyResult<R>
    where
        R: Send,
    {
        let model = Arc::clone(&self.model.get().model);
        let mut inner = self
            .inner
            .try_lock()
            .map_err(|_| invalid("the session is in use by another thread"))?;
        let inner = &mut *inner;
        py.detach(|| f(&model, inner)).map_err(err)
    }
}

#[pymethods]
impl Session {
    /// Appends one event.
    fn push(&self, py: Python<'_>, item: u32) -> PyResult<()> {
        self.with(py, |m, s| m.session_push(&mut s.state, item, &mut s.ws))
    }

    /// Records `reward` for the recommended `item` and adapts this session's policy online
    /// (models with an actor-critic head: `seqrec rl` agents, linear-head sqn/snqn/sa2c); the
    /// item joins the history like `push`. Other models raise `SeqrecError`.
    fn feedback(&self, py: Python<'_>, item: u32, reward: f32) -> PyResult<()> {
        self.with(py, move |m, s| {
            m.session_feedback(&mut s.state, item, reward, &mut s.ws)
        })
    }

    /// Appends several events (a finished session replayed at once).
    fn extend(&self, py: Python<'_>, items: &Bound<'_, PyAny>) -> PyResult<()> {
        let ids = ids(items, "items")?;
        let v = ids.as_slice()?.to_vec();
        self.with(py, move |m, s| {
            m.session_extend(&mut s.state, &v, &mut s.ws)
        })
    }

    /// The `k` best items now: `(items uint32, scores float32)`.
    #[pyo3(signature = (k = 10, exclude_history = false))]
    fn topk<'py>(&self, py: Python<'py>, k: usize, exclude_history: bool) -> PyResult<TopK<'py>> {
        let k = k.min(self.model.get().model.info().n_items);
        let (items, scores) = self.with(py, move |m, s| {
            let (mut items, mut scores) = (vec![0u32; k], vec![0f32; k]);
            let n = m.session_topk_into(
                &s.state,
                k,
                exclude_history,
                &mut s.ws,
                &mut items,
                &mut scores,
            )?;
            items.truncate(n);
            scores.truncate(n);
            Ok((items, scores))
        })?;
        Ok((
            PyArray1::from_vec(py, items),
            PyArray1::from_vec(py, scores),
        ))
    }

    /// Scores of every item now.
    fn scores<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let n = self.model.get().model.info().n_items;
        let out = self.with(py, move |m, s| {
            let mut out = vec![0f32; n];
            m.session_scores(&s.state, &mut out).map(|_| out)
        })?;
        Ok(PyArray1::from_vec(py, out))
    }

    /// Sets an objective knob for this session.
    fn set_objective(&self, py: Python<'_>, name: String, value: f32) -> PyResult<()> {
        self.with(py, move |m, s| {
            m.session_set_objective(&mut s.state, &name, value, &mut s.ws)
        })
    }

    /// A session boundary (the user's visit ended).
    fn end(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |m, s| m.session_end(&mut s.state, &mut s.ws))
    }

    /// The events so far (`uint32` array).
    #[getter]
    fn history<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let h = self.with(py, |_, s| Ok(s.state.history().to_vec()))?;
        Ok(PyArray1::from_vec(py, h))
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |_, s| Ok(s.state.history().len()))
    }

    /// The whole state as bytes, bound to the model's fingerprint.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let b = self.with(py, |m, s| m.session_save(&s.state))?;
        Ok(PyBytes::new(py, &b))
    }

    /// A session of `model` rebuilt from `to_bytes()` (in this process or another that loaded
    /// the same model).
    #[staticmethod]
    fn from_bytes(py: Python<'_>, model: Bound<'_, Model>, data: &[u8]) -> PyResult<Session> {
        let m = Arc::clone(&model.get().model);
        let state = py.detach(|| m.session_restore(data)).map_err(err)?;
        Ok(Session::new(model.unbind(), state))
    }
}

/// A BERT-family sentence encoder (all-MiniLM-L6-v2) for item texts.
#[pyclass(module = "seqrec._seqrec", frozen)]
struct TextEncoder {
    enc: EngineText,
}

#[pymethods]
impl TextEncoder {
    /// Loads a Hugging Face model folder (`config.json`, `model.safetensors`,
    /// `tokenizer.json`); `weight_dtype` is the layers' storage (`"i16"`, `"f16"`, `"f32"`).
    #[staticmethod]
    #[pyo3(signature = (dir, weight_dtype = "i16"))]
    fn load(py: Python<'_>, dir: std::path::PathBuf, weight_dtype: &str) -> PyResult<TextEncoder> {
        let options = TextOptions {
            weight_dtype: parse_dtype(weight_dtype)?,
        };
        py.detach(|| EngineText::load_with(&dir, &options))
            .map(|enc| TextEncoder { enc })
            .map_err(err)
    }

    /// Embedding width.
    #[getter]
    fn dim(&self) -> usize {
        self.enc.dim()
    }

    /// Embeddings of `texts` (a string or a list of strings): `float32[n, dim]`.
    fn encode<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let texts: Vec<String> = match texts.extract::<String>() {
            Ok(t) => vec![t],
            Err(_) => texts
                .extract()
                .map_err(|_| invalid("texts must be a string or a list of strings"))?,
        };
        let enc = &self.enc;
        let rows = py.detach(|| enc.encode_batch(&texts)).map_err(err)?;
        let n = texts.len();
        PyArray1::from_vec(py, rows).reshape([n, enc.dim()])
    }
}

/// Runs a `seqrec` command line in process and returns its stdout lines.
fn cli(py: Python<'_>, args: Vec<String>) -> PyResult<Vec<String>> {
    py.detach(|| seqrec_trainer::cli::run_captured(args))
        .map_err(|e| {
            if e.code == seqrec_trainer::cli::EXIT_BAD_INPUT {
                InvalidInputError::new_err(e.message)
            } else {
                SeqrecError::new_err(e.message)
            }
        })
}

/// `--key value` arguments from keyword arguments (`_` becomes `-`; True is a bare flag;
/// False and None are left out; lists are comma-joined).
fn flags(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<String>> {
    let mut out = Vec::new();
    let Some(kwargs) = kwargs else {
        return Ok(out);
    };
    for (k, v) in kwargs.iter() {
        let key = format!("--{}", k.extract::<String>()?.replace('_', "-"));
        if v.is_none() {
            continue;
        }
        if let Ok(b) = v.extract::<bool>() {
            if v.is_instance_of::<pyo3::types::PyBool>() {
                if b {
                    out.push(key);
                }
                continue;
            }
        }
        let value = if let Ok(list) = v.cast::<PyList>() {
            list.iter()
                .map(|x| x.str().map(|s| s.to_string()))
                .collect::<PyResult<Vec<_>>>()?
                .join(",")
        } else {
            v.str()?.to_string()
        };
        out.push(key);
        out.push(value);
    }
    Ok(out)
}

fn json_lines(py: Python<'_>, lines: &[String]) -> PyResult<Py<PyAny>> {
    let json = py.import("json")?;
    let parsed: Vec<Py<PyAny>> = lines
        .iter()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| json.call_method1("loads", (l,)).map(Bound::unbind))
        .collect::<PyResult<_>>()?;
    Ok(match parsed.len() {
        0 => py.None(),
        1 => parsed.into_iter().next().expect("one"),
        _ => PyList::new(py, parsed)?.into_any().unbind(),
    })
}

/// `seqrec train` in process: `train(model="sasrec", data="...", out="m.safetensors",
/// **options)` with the command line's options as keyword arguments (`max_len=10`,
/// `time_budget=60`, ...). Returns the command's summary lines.
#[pyfunction]
#[pyo3(signature = (**kwargs))]
fn train(py: Python<'_>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Vec<String>> {
    let mut args = vec!["seqrec".to_string(), "train".to_string()];
    args.extend(flags(kwargs)?);
    cli(py, args)
}

/// `seqrec eval MODEL --format json` in process: `evaluate("m.safetensors", data="...",
/// metrics="hr@10,ndcg@10", ...)` returns the metrics as a dict.
#[pyfunction]
#[pyo3(signature = (model, **kwargs))]
fn evaluate(
    py: Python<'_>,
    model: String,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let mut args = vec!["seqrec".to_string(), "eval".to_string(), model];
    args.extend(flags(kwargs)?);
    args.extend(["--format".to_string(), "json".to_string()]);
    let lines = cli(py, args)?;
    json_lines(py, &lines)
}

/// `seqrec convert recbole CHECKPOINT --out FILE`: a RecBole `.pth` to a safetensors file;
/// returns the summary as a dict.
#[pyfunction]
fn convert_recbole(py: Python<'_>, checkpoint: String, out: String) -> PyResult<Py<PyAny>> {
    let args = [
        "seqrec",
        "convert",
        "recbole",
        &checkpoint,
        "--out",
        &out,
        "--format",
        "json",
    ];
    let lines = cli(py, args.iter().map(|s| s.to_string()).collect())?;
    json_lines(py, &lines)
}

/// Times the Rust API on the same inputs as a Python loop would, for the package's
/// overhead measurements (`python/bench.py`): `iters` batched top-k calls over the rows of
/// `histories` (batch = all rows; `batch1=True` times one `topk_into` per row instead).
/// Returns the seconds per call.
#[pyfunction]
#[pyo3(signature = (model, histories, k = 10, iters = 10, batch1 = false))]
fn _time_rust(
    py: Python<'_>,
    model: &Model,
    histories: PyReadonlyArray2<'_, u32>,
    k: usize,
    iters: usize,
    batch1: bool,
) -> PyResult<f64> {
    let (b, l) = (histories.shape()[0], histories.shape()[1]);
    let flat = histories
        .as_slice()
        .map_err(|_| invalid("histories array is not C-contiguous"))?;
    let m = &*model.model;
    let queries: Vec<Query<'_>> = (0..b)
        .map(|i| Query::new(&flat[i * l..(i + 1) * l]))
        .collect();
    let res = py.detach(|| -> seqrec_engine::Result<f64> {
        let (mut items, mut scores, mut counts) =
            (vec![0u32; b * k], vec![0f32; b * k], vec![0usize; b]);
        let mut ws = Workspace::new();
        let start = std::time::Instant::now();
        for _ in 0..iters {
            if batch1 {
                for q in &queries {
                    m.topk_into(q, k, &mut ws, &mut items[..k], &mut scores[..k])?;
                }
            } else {
                m.topk_batch_into(&queries, k, &mut items, &mut scores, &mut counts)?;
            }
        }
        let calls = if batch1 { iters * b } else { iters };
        Ok(start.elapsed().as_secs_f64() / calls as f64)
    });
    res.map_err(err)
}

/// The native module of the `seqrec` package.
#[pymodule]
fn _seqrec(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Model>()?;
    m.add_class::<Session>()?;
    m.add_class::<TextEncoder>()?;
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add_function(wrap_pyfunction!(convert_recbole, m)?)?;
    m.add_function(wrap_pyfunction!(_time_rust, m)?)?;
    m.add("SeqrecError", py.get_type::<SeqrecError>())?;
    m.add("InvalidInputError", py.get_type::<InvalidInputError>())?;
    m.add("ModelFileError", py.get_type::<ModelFileError>())?;
    m.add("SessionStateError", py.get_type::<SessionStateError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
