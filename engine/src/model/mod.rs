//! The model-independent scoring API: load any supported architecture, score the catalog,
//! take the top-k with exclusions, re-rank candidates, score batches in parallel, and keep
//! incremental per-user sessions.

use crate::backend::Backend;
use crate::blocks::ItemTable;
use crate::config::{CONFIG_KEY, Config};
use crate::cpu::Cpu;
use crate::error::{Error, Result};
use crate::models::{ARCHITECTURES, Arch, ArchState};
use crate::objectives::{ObjectiveSpec, Objectives};
use crate::weights::{DType, TensorLoader, WeightFile};
use crate::workspace::{Workspace, WsLists};
use alloc::format;
#[cfg(feature = "std")]
use alloc::string::ToString;
use alloc::vec::Vec;

mod batch;

pub use batch::BATCH_GROUP;

/// RecBole's default `MAX_ITEM_LIST_LENGTH`.
pub const DEFAULT_MAX_LEN: usize = 50;

/// Largest accepted `MAX_ITEM_LIST_LENGTH`. Some architectures (NextItNet, GRU4Rec) have no
/// tensor whose shape bounds the window, and scratch buffers are sized by it: a corrupt
/// configuration must be rejected at load time rather than exhaust memory on the first request.
pub const MAX_WINDOW: usize = 1 << 16;

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Storage of the scoring copy of the item table. `F16`/`BF16` halve the bytes read per
    /// request at a small accuracy cost (see the README).
    pub item_dtype: DType,
    /// A configuration to use instead of the one in the file's metadata.
    pub config: Option<Config>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            item_dtype: DType::F32,
            config: None,
        }
    }
}

/// What a loaded model is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// Architecture (`sasrec`, `gru4rec`, `nextitnet`, `caser`).
    pub arch: &'static str,
    /// Catalog size including the padding id 0 (valid item ids are `1..n_items`).
    pub n_items: usize,
    /// Number of users for models with a user embedding (user 0 is RecBole's padding user).
    pub n_users: Option<usize>,
    /// Window length `MAX_ITEM_LIST_LENGTH`: longer histories keep their most recent items.
    pub max_len: usize,
    /// Width of the user (scoring) vector and of the scoring table's rows: the item
    /// embedding width for plain backbones, wider for models that score with several heads.
    pub dim: usize,
    /// Storage dtype of the scoring item table.
    pub item_dtype: DType,
}

/// An item and its score.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Scored {
    /// Item id.
    pub item: u32,
    /// Score (`user vector · item embedding`).
    pub score: f32,
}

/// One scoring request.
#[derive(Copy, Clone, Debug, Default)]
pub struct Query<'a> {
    /// Item ids, oldest first. Only the most recent `max_len` are used.
    pub history: &'a [u32],
    /// User id, required by models with a user embedding (Caser) and rejected by the others.
    pub user: Option<u32>,
    /// Never recommend items of the history (off by default, as RecBole evaluates).
    pub exclude_history: bool,
    /// Further ids never to recommend.
    pub exclude: &'a [u32],
    /// Objective knobs (`None`: the model's defaults); made by
    /// [`Model::default_objectives`].
    pub objectives: Option<&'a Objectives>,
}

impl<'a> Query<'a> {
    /// A request for `history`.
    pub fn new(history: &'a [u32]) -> Self {
        Query {
            history,
            ..Default::default()
        }
    }
    /// Sets the user id.
    pub fn user(mut self, user: u32) -> Self {
        self.user = Some(user);
        self
    }
    /// Excludes (or not) the history's items from recommendations.
    pub fn exclude_history(mut self, yes: bool) -> Self {
        self.exclude_history = yes;
        self
    }
    /// Excludes further ids.
    pub fn exclude(mut self, ids: &'a [u32]) -> Self {
        self.exclude = ids;
        self
    }
    /// Scores under these objective knobs instead of the model's defaults.
    pub fn objectives(mut self, objectives: &'a Objectives) -> Self {
        self.objectives = Some(objectives);
        self
    }
}

/// A loaded recommender. Immutable after loading; `Send + Sync`, so one instance serves many
/// threads, each with its own [`Workspace`].
#[derive(Debug)]
pub struct Model<B: Backend = Cpu> {
    be: B,
    arch: Arch<B>,
    items: ItemTable<B>,
    config: Config,
    info: ModelInfo,
    /// The knobs at their defaults.
    objectives: Objectives,
    /// Process-unique id, so a workspace shared by several models never reuses another
    /// model's cached state.
    id: u64,
}

fn next_model_id() -> u64 {
    use core::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(feature = "std")]
impl Model<Cpu> {
    /// Memory-maps and loads a safetensors model with default options.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// Memory-maps and loads a safetensors model. The configuration comes from
    /// `opts.config`, else the file's `seqrec.config` metadata, else a `config.json` beside the
    /// file.
    pub fn load_with(path: impl AsRef<std::path::Path>, opts: &LoadOptions) -> Result<Self> {
        let path = path.as_ref();
        let file = WeightFile::open(path)?;
        let mut opts = opts.clone();
        if opts.config.is_none() && file.metadata(CONFIG_KEY).is_none() {
            let sidecar = path.with_file_name("config.json");
            if sidecar.is_file() {
                let text = std::fs::read_to_string(&sidecar).map_err(|source| Error::Io {
                    path: sidecar.display().to_string(),
                    source,
                })?;
                let cfg = Config::from_json(&text)
                    .map_err(|e| e.in_origin(&sidecar.display().to_string()))?;
                opts.config = Some(cfg);
            }
        }
        Model::from_weight_file(Cpu, &file, &opts)
    }
}

impl Model<Cpu> {
    /// Loads from a file image, copying it into an aligned buffer.
    pub fn from_bytes(bytes: &[u8], opts: &LoadOptions) -> Result<Self> {
        Model::from_weight_file(Cpu, &WeightFile::from_bytes(bytes)?, opts)
    }

    /// Loads from a file image that lives for the whole program, zero-copy.
    pub fn from_static(bytes: &'static [u8], opts: &LoadOptions) -> Result<Self> {
        Model::from_weight_file(Cpu, &WeightFile::from_static(bytes)?, opts)
    }
}

impl<B: Backend> Model<B> {
    /// Builds a model on backend `be` from a parsed weight file.
    pub fn from_weight_file(be: B, file: &WeightFile, opts: &LoadOptions) -> Result<Self> {
        Self::build(be, file, opts).map_err(|e| e.in_origin(file.origin()))
    }

    fn build(be: B, file: &WeightFile, opts: &LoadOptions) -> Result<Self> {
        let config = match &opts.config {
            Some(c) => c.clone(),
            None => match file.metadata(CONFIG_KEY) {
                Some(text) => Config::from_json(text)?,
                None => {
                    return Err(Error::Config(format!(
                        "no configuration: the file has no `{CONFIG_KEY}` metadata and none was given"
                    )));
                }
            },
        };
        let name = config.model()?;
        if !ARCHITECTURES.contains(&name.as_str()) {
            return Err(Error::UnknownModel(name));
        }
        let stored_items = file
            .info("item_embedding.weight")
            .and_then(|i| i.shape.first().copied());
        let n_items = match (config.has("n_items"), stored_items) {
            (true, _) => config.usize("n_items")?,
            (false, Some(n)) => n,
            (false, None) => {
                return Err(Error::MissingTensor {
                    name: "item_embedding.weight".into(),
                });
            }
        };
        if n_items < 2 {
            return Err(Error::Config(format!(
                "n_items is {n_items}: a catalog needs the padding id 0 and at least one item"
            )));
        }
        let max_len = config.usize_or("MAX_ITEM_LIST_LENGTH", DEFAULT_MAX_LEN)?;
        if max_len == 0 || max_len > MAX_WINDOW {
            return Err(Error::Config(format!(
                "MAX_ITEM_LIST_LENGTH is {max_len}: it must be in 1..={MAX_WINDOW}"
            )));
        }
        let mut ld = TensorLoader::new(file);
        let arch = Arch::load(&be, &config, &mut ld, n_items, max_len)?;
        ld.finish(arch.name())?;
        let dim = arch.score_dim();
        let table = arch.scoring_table(file, n_items)?;
        let items = ItemTable::new(&be, &table, opts.item_dtype)?;
        let info = ModelInfo {
            arch: arch.name(),
            n_items,
            n_users: arch.n_users(),
            max_len,
            dim,
            item_dtype: opts.item_dtype,
        };
        Ok(Model {
            be,
            objectives: Objectives::new(arch.objective_specs()),
            arch,
            items,
            config,
            info,
            id: next_model_id(),
        })
    }

    /// What the model is.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The configuration it was loaded with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The architecture (blocks and weights).
    pub fn arch(&self) -> &Arch<B> {
        &self.arch
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.be
    }

    /// The inference-time objective knobs of the architecture (empty for plain backbones).
    pub fn objective_specs(&self) -> &'static [ObjectiveSpec] {
        self.objectives.specs()
    }

    /// Every knob at its default: set values on it and pass it with
    /// [`Query::objectives`].
    pub fn default_objectives(&self) -> Objectives {
        self.objectives.clone()
    }

    fn check_objectives<'o>(&'o self, o: Option<&'o Objectives>) -> Result<&'o Objectives> {
        match o {
            None => Ok(&self.objectives),
            Some(o) if o.same_knobs(&self.objectives) => Ok(o),
            Some(_) => Err(Error::InvalidArgument(format!(
                "the objectives were made for another model: make them with this model's \
                 default_objectives() (model `{}`)",
                self.info.arch
            ))),
        }
    }

    /// A workspace for this model (grows on first use).
    pub fn new_workspace(&self) -> Workspace<B> {
        Workspace::new()
    }

    /// Checks a history's ids and returns the window the model reads (the most recent
    /// `max_len` ids).
    pub fn window<'h>(&self, history: &'h [u32]) -> Result<&'h [u32]> {
        if history.is_empty() {
            return Err(Error::EmptyHistory);
        }
        self.check_items(history)?;
        Ok(&history[history.len().saturating_sub(self.info.max_len)..])
    }

    fn check_items(&self, ids: &[u32]) -> Result<()> {
        let max = (self.info.n_items - 1) as u32;
        match ids.iter().position(|&id| id == 0 || id > max) {
            Some(position) => Err(Error::ItemOutOfRange {
                id: ids[position],
                position,
                max,
            }),
            None => Ok(()),
        }
    }

    /// Checks the user argument against the architecture; returns the user id to use.
    pub fn check_user(&self, user: Option<u32>) -> Result<u32> {
        match (self.info.n_users, user) {
            (Some(n), Some(u)) if (u as usize) < n => Ok(u),
            (Some(n), Some(u)) => Err(Error::UserOutOfRange {
                id: u,
                max: (n - 1) as u32,
            }),
            (Some(_), None) => Err(Error::InvalidArgument(format!(
                "model `{}` has a user embedding: a user id is required",
                self.info.arch
            ))),
            (None, Some(_)) => Err(Error::InvalidArgument(format!(
                "model `{}` has no user embedding: a user id is not accepted",
                self.info.arch
            ))),
            (None, None) => Ok(0),
        }
    }

    /// Encodes the request into a backend buffer (`lists` and `out` from the workspace).
    fn encode_query(&self, q: &Query<'_>, ws: &mut Workspace<B>) -> Result<()> {
        let window = self.window(q.history)?;
        let user = self.check_user(q.user)?;
        let obj = self.check_objectives(q.objectives)?;
        let (lists, [a, b, c, d, out]) = ws.parts::<5>(&self.be)?;
        let WsLists {
            ids, state, owner, ..
        } = lists;
        if *owner != self.id {
            *state = None;
            *owner = self.id;
        }
        if state.is_none() {
            *state = Some(self.arch.new_state(&self.be)?);
        }
        let state = state.as_mut().expect("state was just created");
        self.arch
            .encode(&self.be, window, user, obj, state, ids, [a, b, c, d], out)
    }

    fn user_buf<'w>(&self, ws: &'w mut Workspace<B>) -> Result<&'w mut B::Buf> {
        let (_, [.., out]) = ws.parts::<5>(&self.be)?;
        Ok(out)
    }

    /// The user vector (`[dim]`) for a request.
    pub fn user_vector(&self, q: &Query<'_>, ws: &mut Workspace<B>, out: &mut [f32]) -> Result<()> {
        self.check_len("user vector", out.len(), self.info.dim)?;
        self.encode_query(q, ws)?;
        let be = &self.be;
        be.read(self.user_buf(ws)?, 0, out)
    }

    fn check_len(&self, what: &str, found: usize, expected: usize) -> Result<()> {
        if found == expected {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "{what} buffer has {found} values, expected {expected}"
            )))
        }
    }

    /// Full-catalog scores (`[n_items]`, padding id 0 included, as RecBole computes them).
    pub fn score(&self, q: &Query<'_>, ws: &mut Workspace<B>, scores: &mut [f32]) -> Result<()> {
        self.check_len("scores", scores.len(), self.info.n_items)?;
        self.encode_query(q, ws)?;
        let out = self.user_buf(ws)?;
        self.be.scores(&self.items, out, 1, scores)
    }

    /// Scores of the caller's candidate items only (re-ranking); `out[i]` scores `candidates[i]`.
    pub fn score_candidates(
        &self,
        q: &Query<'_>,
        candidates: &[u32],
        ws: &mut Workspace<B>,
        out: &mut [f32],
    ) -> Result<()> {
        self.check_len("candidate scores", out.len(), candidates.len())?;
        self.check_items(candidates).map_err(|e| match e {
            Error::ItemOutOfRange { id, position, max } => Error::InvalidArgument(format!(
                "candidate id {id} at position {position} is out of range: valid ids are 1..={max}"
            )),
            e => e,
        })?;
        self.encode_query(q, ws)?;
        let h = self.user_buf(ws)?;
        self.be.score_items(&self.items, h, candidates, out)
    }

    /// The `k` best items, written to `items`/`scores` (each at least `k` long); returns how
    /// many were written (fewer than `k` when the catalog minus exclusions is smaller).
    pub fn topk_into(
        &self,
        q: &Query<'_>,
        k: usize,
        ws: &mut Workspace<B>,
        items: &mut [u32],
        scores: &mut [f32],
    ) -> Result<usize> {
        if items.len() < k || scores.len() < k {
            return Err(Error::InvalidArgument(format!(
                "top-{k} needs output buffers of at least {k} values, got {} and {}",
                items.len(),
                scores.len()
            )));
        }
        self.encode_query(q, ws)?;
        let hist = if q.exclude_history { q.history } else { &[] };
        self.select(k, hist, q.exclude, ws, None, items, scores)
    }

    /// Runs the fused catalog scan + top-k for the user vector in the workspace (or `h`).
    #[allow(clippy::too_many_arguments)]
    fn select(
        &self,
        k: usize,
        history: &[u32],
        extra: &[u32],
        ws: &mut Workspace<B>,
        h: Option<&B::Buf>,
        items: &mut [u32],
        scores: &mut [f32],
    ) -> Result<usize> {
        let (lists, [.., out]) = ws.parts::<5>(&self.be)?;
        let WsLists {
            topk,
            exclude,
            parts,
            ..
        } = lists;
        exclude.clear();
        exclusions(exclude, history, extra);
        topk.reset(k);
        self.be
            .topk(&self.items, h.unwrap_or(out), exclude, topk, parts)?;
        Ok(topk.finish(&mut items[..k], &mut scores[..k]))
    }

    /// The `k` best items for a request.
    pub fn topk(&self, q: &Query<'_>, k: usize, ws: &mut Workspace<B>) -> Result<Vec<Scored>> {
        let k = k.min(self.info.n_items);
        let mut items = alloc::vec![0u32; k];
        let mut scores = alloc::vec![0f32; k];
        let n = self.topk_into(q, k, ws, &mut items, &mut scores)?;
        Ok(items
            .iter()
            .zip(&scores)
            .take(n)
            .map(|(&item, &score)| Scored { item, score })
            .collect())
    }

    /// A fresh session (for models with a user embedding, use [`Self::new_session_for_user`]).
    pub fn new_session(&self) -> Result<SessionState<B>> {
        self.new_session_inner(None)
    }

    /// A fresh session for `user`.
    pub fn new_session_for_user(&self, user: u32) -> Result<SessionState<B>> {
        self.new_session_inner(Some(user))
    }

    fn new_session_inner(&self, user: Option<u32>) -> Result<SessionState<B>> {
        let user = self.check_user(user)?;
        Ok(SessionState {
            model: self.id,
            state: self.arch.new_state(&self.be)?,
            history: Vec::new(),
            user,
            objectives: self.objectives.clone(),
            h: self.be.alloc(self.info.dim)?,
            scorable: false,
        })
    }

    /// Appends one event to a session. While the history fits the window this costs one
    /// incremental step (GRU4Rec, SASRec, NextItNet); afterwards the window slides and is
    /// re-encoded, exactly as scoring the window from scratch would.
    pub fn session_push(
        &self,
        s: &mut SessionState<B>,
        item: u32,
        ws: &mut Workspace<B>,
    ) -> Result<()> {
        self.check_session(s)?;
        self.check_items(core::slice::from_ref(&item))
            .map_err(|_| Error::ItemOutOfRange {
                id: item,
                position: s.history.len(),
                max: (self.info.n_items - 1) as u32,
            })?;
        s.history.push(item);
        s.scorable = false;
        let (lists, [a, b, c, d, _]) = ws.parts::<5>(&self.be)?;
        let n = s.history.len();
        let pushed = n <= self.info.max_len
            && self.arch.push(
                &self.be,
                item,
                &s.objectives,
                &mut s.state,
                lists.ids,
                [a, b, c, d],
                &mut s.h,
            )?;
        if pushed {
            s.scorable = true;
        } else {
            self.session_reencode(s, ws)?;
        }
        Ok(())
    }

    /// Appends several events at once (for example a finished session being replayed) and
    /// encodes the window once: the same state as pushing them one by one.
    pub fn session_extend(
        &self,
        s: &mut SessionState<B>,
        items: &[u32],
        ws: &mut Workspace<B>,
    ) -> Result<()> {
        self.check_session(s)?;
        let max = (self.info.n_items - 1) as u32;
        if let Some(k) = items.iter().position(|&id| id == 0 || id > max) {
            return Err(Error::ItemOutOfRange {
                id: items[k],
                position: s.history.len() + k,
                max,
            });
        }
        if items.is_empty() {
            return Ok(());
        }
        s.history.extend_from_slice(items);
        self.session_reencode(s, ws)
    }

    /// Re-encodes a session's window from its history. On an empty history, hierarchical
    /// architectures may still write a scoring vector (the next session's first item).
    fn session_reencode(&self, s: &mut SessionState<B>, ws: &mut Workspace<B>) -> Result<()> {
        s.scorable = false;
        let n = s.history.len();
        let (lists, [a, b, c, d, _]) = ws.parts::<5>(&self.be)?;
        if n == 0 {
            s.scorable = self.arch.encode_empty(
                &self.be,
                &s.objectives,
                &mut s.state,
                [a, b, c, d],
                &mut s.h,
            )?;
            return Ok(());
        }
        let window = &s.history[n.saturating_sub(self.info.max_len)..];
        self.arch.encode(
            &self.be,
            window,
            s.user,
            &s.objectives,
            &mut s.state,
            lists.ids,
            [a, b, c, d],
            &mut s.h,
        )?;
        s.scorable = true;
        Ok(())
    }

    /// Sets one objective knob of a session (see [`Self::objective_specs`]); the next
    /// recommendations follow it. The session's state is recomputed under the new value.
    ///
    /// # Errors
    /// An unknown knob or a value out of its range; the session is unchanged.
    pub fn session_set_objective(
        &self,
        s: &mut SessionState<B>,
        name: &str,
        value: f32,
        ws: &mut Workspace<B>,
    ) -> Result<()> {
        self.check_session(s)?;
        let old = s.objectives.clone();
        s.objectives.set(name, value)?;
        if s.objectives != old {
            if let Err(e) = self.session_reencode(s, ws) {
                s.objectives = old;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Marks the end of the session's current visit (a session boundary, e.g. after 60
    /// minutes of inactivity). Hierarchical models carry what they learned about the user
    /// into the next session and start it empty; plain backbones treat a user's sessions as
    /// one sequence, so for them this changes nothing. After a boundary, `hdt` and `interdt`
    /// can already recommend (their goal head predicts the next session's first item); the
    /// other architectures answer [`Error::EmptyHistory`] until the next event.
    pub fn session_end(&self, s: &mut SessionState<B>, ws: &mut Workspace<B>) -> Result<()> {
        self.check_session(s)?;
        let (lists, [a, b, c, d, _]) = ws.parts::<5>(&self.be)?;
        if self
            .arch
            .end_session(&self.be, &mut s.state, &s.history, lists.ids, [a, b, c, d])?
        {
            s.history.clear();
            self.session_reencode(s, ws)?;
        }
        Ok(())
    }

    /// Top-k for a session's current state.
    pub fn session_topk_into(
        &self,
        s: &SessionState<B>,
        k: usize,
        exclude_history: bool,
        ws: &mut Workspace<B>,
        items: &mut [u32],
        scores: &mut [f32],
    ) -> Result<usize> {
        self.check_session(s)?;
        if !s.scorable {
            return Err(Error::EmptyHistory);
        }
        if items.len() < k || scores.len() < k {
            return Err(Error::InvalidArgument(format!(
                "top-{k} needs output buffers of at least {k} values"
            )));
        }
        let hist = if exclude_history { &s.history[..] } else { &[] };
        self.select(k, hist, &[], ws, Some(&s.h), items, scores)
    }

    /// Full-catalog scores for a session's current state.
    pub fn session_scores(&self, s: &SessionState<B>, scores: &mut [f32]) -> Result<()> {
        self.check_session(s)?;
        if !s.scorable {
            return Err(Error::EmptyHistory);
        }
        self.check_len("scores", scores.len(), self.info.n_items)?;
        self.be.scores(&self.items, &s.h, 1, scores)
    }

    fn check_session(&self, s: &SessionState<B>) -> Result<()> {
        if s.model == self.id {
            Ok(())
        } else {
            Err(Error::InvalidArgument(
                "the session was created by another model".into(),
            ))
        }
    }

    /// A session bundled with its own workspace, borrowing this model.
    pub fn session(&self) -> Result<Session<'_, B>> {
        Ok(Session {
            model: self,
            state: self.new_session()?,
            ws: Workspace::new(),
        })
    }

    /// A session for `user`, bundled with its own workspace.
    pub fn session_for_user(&self, user: u32) -> Result<Session<'_, B>> {
        Ok(Session {
            model: self,
            state: self.new_session_for_user(user)?,
            ws: Workspace::new(),
        })
    }
}

/// Appends to `list` the ids never recommended for a request, sorted and deduplicated: the
/// padding id 0, `history` (when excluded) and `extra`.
pub(crate) fn exclusions(list: &mut Vec<u32>, history: &[u32], extra: &[u32]) {
    let start = list.len();
    list.push(0);
    list.extend_from_slice(history);
    list.extend_from_slice(extra);
    list[start..].sort_unstable();
    let mut end = start + 1;
    for i in start + 1..list.len() {
        if list[i] != list[end - 1] {
            list[end] = list[i];
            end += 1;
        }
    }
    list.truncate(end);
}

/// Incremental per-user state (see [`Model::session_push`]). Belongs to one model; use it from
/// one thread at a time.
#[derive(Debug)]
pub struct SessionState<B: Backend = Cpu> {
    model: u64,
    state: ArchState<B>,
    history: Vec<u32>,
    user: u32,
    objectives: Objectives,
    h: B::Buf,
    /// Whether `h` holds a scoring vector for the current state (after an event, or after a
    /// session boundary for architectures that predict a session's first item).
    scorable: bool,
}

impl<B: Backend> SessionState<B> {
    /// Every event pushed so far, oldest first.
    pub fn history(&self) -> &[u32] {
        &self.history
    }

    /// The session's objective knobs.
    pub fn objectives(&self) -> &Objectives {
        &self.objectives
    }
}

/// A session with its own workspace: `push` events, then ask for `topk`.
#[derive(Debug)]
pub struct Session<'m, B: Backend = Cpu> {
    model: &'m Model<B>,
    state: SessionState<B>,
    ws: Workspace<B>,
}

impl<B: Backend> Session<'_, B> {
    /// Appends an event.
    pub fn push(&mut self, item: u32) -> Result<()> {
        self.model.session_push(&mut self.state, item, &mut self.ws)
    }

    /// The `k` best items now.
    pub fn topk(&mut self, k: usize, exclude_history: bool) -> Result<Vec<Scored>> {
        let k = k.min(self.model.info.n_items);
        let mut items = alloc::vec![0u32; k];
        let mut scores = alloc::vec![0f32; k];
        let n = self.model.session_topk_into(
            &self.state,
            k,
            exclude_history,
            &mut self.ws,
            &mut items,
            &mut scores,
        )?;
        Ok(items
            .iter()
            .zip(&scores)
            .take(n)
            .map(|(&item, &score)| Scored { item, score })
            .collect())
    }

    /// Full-catalog scores now.
    pub fn scores(&self, out: &mut [f32]) -> Result<()> {
        self.model.session_scores(&self.state, out)
    }

    /// Appends several events at once (see [`Model::session_extend`]).
    pub fn extend(&mut self, items: &[u32]) -> Result<()> {
        self.model
            .session_extend(&mut self.state, items, &mut self.ws)
    }

    /// Sets an objective knob (see [`Model::session_set_objective`]).
    pub fn set_objective(&mut self, name: &str, value: f32) -> Result<()> {
        self.model
            .session_set_objective(&mut self.state, name, value, &mut self.ws)
    }

    /// Ends the current visit (see [`Model::session_end`]).
    pub fn end(&mut self) -> Result<()> {
        self.model.session_end(&mut self.state, &mut self.ws)
    }

    /// Events so far.
    pub fn history(&self) -> &[u32] {
        self.state.history()
    }
}
