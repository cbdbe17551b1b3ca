//! The model-independent scoring API: load any supported architecture, score the catalog,
//! take the top-k with exclusions, re-rank candidates, score batches in parallel, and keep
//! incremental per-user sessions.

use crate::backend::Backend;
use crate::blocks::ItemTable;
use crate::config::{CONFIG_KEY, Config};
use crate::cpu::Cpu;
use crate::error::{Error, Result};
use crate::models::{self, ArchState, DynArch, LoadContext, Request};
use crate::objectives::{ObjectiveSpec, Objectives};
use crate::weights::{DType, Tensor, TensorLoader, TensorSpec, WeightFile};
use alloc::boxed::Box;
use alloc::format;
#[cfg(feature = "std")]
use alloc::string::ToString;
use alloc::vec::Vec;

mod adapt;
mod batch;
mod session;
mod workspace;

pub use adapt::{FeedbackOptions, MAX_FEEDBACK_BATCH, MAX_FEEDBACK_BUFFER};
pub use batch::BATCH_GROUP;
pub use session::{SESSION_FORMAT_VERSION, SESSION_MAGIC, Session, SessionState};
pub use workspace::Workspace;

/// RecBole's default `MAX_ITEM_LIST_LENGTH`.
pub const DEFAULT_MAX_LEN: usize = 50;

/// Largest accepted `MAX_ITEM_LIST_LENGTH`. Some architectures (NextItNet, GRU4Rec) have no
/// tensor whose shape bounds the window, and scratch buffers are sized by it: a corrupt
/// configuration must be rejected at load time rather than exhaust memory on the first request.
pub const MAX_WINDOW: usize = 1 << 16;

/// Where a model computes: the CPU backend, or the CUDA backend on one GPU (feature `cuda`,
/// `Cuda`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// The CPU.
    #[default]
    Cpu,
    /// The GPU of this ordinal (0 for the first).
    Cuda(usize),
}

impl Device {
    /// Parses `cpu`, `cuda` (the first GPU) or `cuda:N`.
    pub fn parse(s: &str) -> Option<Device> {
        match s {
            "cpu" => Some(Device::Cpu),
            "cuda" | "gpu" => Some(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda),
        }
    }
}

impl core::fmt::Display for Device {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Storage of the scoring copy of the item table. `F16`/`BF16` halve the bytes read per
    /// request at a small accuracy cost (see the README).
    pub item_dtype: DType,
    /// A configuration to use instead of the one in the file's metadata.
    pub config: Option<Config>,
    /// Where the model computes. The CPU loaders ([`Model::load_with`], ...) accept only
    /// [`Device::Cpu`]; a GPU model is `Model::load_on(Cuda::new(n)?, ..)` (feature `cuda`).
    pub device: Device,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            item_dtype: DType::F32,
            config: None,
            device: Device::Cpu,
        }
    }
}

/// Refuses options that ask the CPU loaders for another device.
fn on_cpu(opts: &LoadOptions) -> Result<()> {
    match opts.device {
        Device::Cpu => Ok(()),
        d => Err(Error::InvalidArgument(format!(
            "the model was asked for on {d}: the CPU loaders serve the CPU only; load onto a GPU \
             with Model::load_on(Cuda::new(n)?, ..) (feature `cuda`)"
        ))),
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
    arch: Box<dyn DynArch<B>>,
    items: ItemTable<B>,
    config: Config,
    info: ModelInfo,
    /// The knobs at their defaults.
    objectives: Objectives,
    /// Process-unique id, so a workspace shared by several models never reuses another
    /// model's cached state.
    id: u64,
    /// Hash of the configuration and every tensor the architecture read (see
    /// [`Model::fingerprint`]).
    fingerprint: u64,
    /// The actor-critic head online adaptation needs, or why the model has none.
    feedback: core::result::Result<FeedbackHead<B>, &'static str>,
}

/// What [`Model::session_feedback`] reads besides the scoring table (the actor).
#[derive(Debug)]
struct FeedbackHead<B: Backend> {
    /// The critic `[W_Q | b_Q]`, scored as the actor is.
    critic: ItemTable<B>,
    /// A new adaptive actor's `[W_β | b_β]` (`beta_head.*`, else the actor's table).
    init: Tensor,
    /// The options a new session starts with (the configuration's `online_*` keys).
    defaults: FeedbackOptions,
}

fn next_model_id() -> u64 {
    use core::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Model<Cpu> {
    /// Memory-maps and loads a safetensors model with default options, on the CPU.
    #[cfg(feature = "std")]
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// Memory-maps and loads a safetensors model on the CPU (see [`Model::load_on`]).
    #[cfg(feature = "std")]
    pub fn load_with(path: impl AsRef<std::path::Path>, opts: &LoadOptions) -> Result<Self> {
        on_cpu(opts)?;
        Model::load_on(Cpu::new(), path, opts)
    }

    /// Loads from a file image on the CPU (safetensors, or a RecBole `.pth`), copying it into
    /// an aligned buffer.
    pub fn from_bytes(bytes: &[u8], opts: &LoadOptions) -> Result<Self> {
        on_cpu(opts)?;
        Model::from_bytes_on(Cpu::new(), bytes, opts)
    }

    /// Loads from a file image that lives for the whole program, zero-copy, on the CPU.
    pub fn from_static(bytes: &'static [u8], opts: &LoadOptions) -> Result<Self> {
        on_cpu(opts)?;
        Model::from_weight_file(Cpu::new(), &WeightFile::from_static(bytes)?, opts)
    }

    /// The item embedding table `[n_items, dim]` (the architecture's input table).
    pub fn item_embedding(&self) -> &Tensor {
        &self.arch.item_embedding().table
    }
}

impl<B: Backend> Model<B> {
    /// Memory-maps and loads a model file onto backend `be`: a safetensors file, or a RecBole
    /// checkpoint (`.pth`, recognised by its zip signature) converted in memory by
    /// [`crate::pth::convert`]. The configuration comes from `opts.config`, else the file's
    /// `seqrec.config` metadata (a checkpoint's RecBole configuration), else a `config.json`
    /// beside the file.
    #[cfg(feature = "std")]
    pub fn load_on(be: B, path: impl AsRef<std::path::Path>, opts: &LoadOptions) -> Result<Self> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let mut head = [0u8; 4];
        let n = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
            .map_err(|source| Error::Io {
                path: origin.clone(),
                source,
            })?;
        let mut opts = opts.clone();
        let sidecar = || -> Result<Option<Config>> {
            let sidecar = path.with_file_name("config.json");
            if !sidecar.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&sidecar).map_err(|source| Error::Io {
                path: sidecar.display().to_string(),
                source,
            })?;
            Config::from_json(&text)
                .map(Some)
                .map_err(|e| e.in_origin(&sidecar.display().to_string()))
        };
        let file = if crate::pth::is_zip(&head[..n]) {
            let fallback = match &opts.config {
                Some(c) => Some(c.clone()),
                None => sidecar()?,
            };
            crate::pth::convert_file(path, fallback.as_ref())?.into_weight_file(&origin)?
        } else {
            let file = WeightFile::open(path)?;
            if opts.config.is_none() && file.metadata(CONFIG_KEY).is_none() {
                opts.config = sidecar()?;
            }
            file
        };
        Model::from_weight_file(be, &file, &opts)
    }

    /// Loads from a file image onto backend `be`, copying it into an aligned buffer: a
    /// safetensors image, or a RecBole checkpoint (`.pth`) converted by
    /// [`crate::pth::convert`] (`opts.config` serves a bare state dict).
    pub fn from_bytes_on(be: B, bytes: &[u8], opts: &LoadOptions) -> Result<Self> {
        let file = if crate::pth::is_zip(bytes) {
            crate::pth::convert(bytes, opts.config.as_ref())
                .and_then(|c| c.into_weight_file("<memory>"))
                .map_err(|e| e.in_origin("<memory>"))?
        } else {
            WeightFile::from_bytes(bytes)?
        };
        Model::from_weight_file(be, &file, opts)
    }

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
        let known = models::names::<B>();
        if name == "pdit" {
            return Err(Error::Config(
                "`pdit` is a generator, not a ranking model: load it with `pdit::Pdit` \
                 (command line: `seqrec generate`; C ABI: `seqrec_pdit_load`)"
                    .into(),
            ));
        }
        if !known.contains(&name.as_str()) {
            return Err(Error::UnknownModel {
                name,
                known: known.join(", "),
            });
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
        let mut cx = LoadContext {
            cfg: &config,
            ld: &mut ld,
            n_items,
            max_len,
        };
        let arch = models::load(&be, &name, &mut cx)?;
        let fingerprint = crate::codec::fnv1a(ld.fingerprint(), config.to_json().as_bytes());
        ld.finish(arch.name())?;
        let dim = arch.score_dim();
        let table = arch.scoring_table(file, n_items)?;
        let items = ItemTable::new(&be, &table, opts.item_dtype)?;
        let feedback = match arch.actor_critic(file, n_items)? {
            Some(ac) => Ok(FeedbackHead {
                critic: ItemTable::new(&be, &ac.critic, DType::F32)?,
                init: ac.beta.unwrap_or(table),
                defaults: FeedbackOptions::from_config(&config)?,
            }),
            None => Err(no_actor_critic(arch.name(), &config)),
        };
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
            fingerprint,
            feedback,
        })
    }

    /// A 64-bit hash of the model: its configuration and the names, shapes and f32 values of
    /// every tensor the architecture reads (not the storage of the scoring item table, which
    /// changes no session state). The same file loaded anywhere, or a RecBole `.pth` and its
    /// conversion, have the same fingerprint; saved sessions carry it, and restoring one into
    /// a model with another fingerprint is an error.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
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
    pub fn arch(&self) -> &dyn DynArch<B> {
        &*self.arch
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

    /// The workspace's state for this model's whole-window requests (made on first use, or
    /// when the workspace last served another model).
    fn scratch_state<'w>(
        &self,
        state: &'w mut Option<ArchState>,
        owner: &mut u64,
    ) -> Result<&'w mut ArchState> {
        if *owner != self.id || state.is_none() {
            *state = Some(self.arch.new_state(&self.be)?);
            *owner = self.id;
        }
        Ok(state.as_mut().expect("state was just created"))
    }

    /// Encodes the request into the workspace's user vector.
    fn encode_query(&self, q: &Query<'_>, ws: &mut Workspace<B>) -> Result<()> {
        let req = Request {
            window: self.window(q.history)?,
            user: self.check_user(q.user)?,
            objectives: self.check_objectives(q.objectives)?,
        };
        let Workspace {
            scratch,
            users,
            state,
            owner,
            ..
        } = ws;
        let state = self.scratch_state(state, owner)?;
        self.arch.encode(&self.be, &req, state, scratch, users)
    }

    /// The user vector (`[dim]`) for a request.
    pub fn user_vector(&self, q: &Query<'_>, ws: &mut Workspace<B>, out: &mut [f32]) -> Result<()> {
        self.check_len("user vector", out.len(), self.info.dim)?;
        self.encode_query(q, ws)?;
        self.be.read(&ws.users, 0, out)
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
        self.be.scores(&self.items, &ws.users, 1, scores)
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
        self.be.score_items(&self.items, &ws.users, candidates, out)
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
        let Workspace {
            users,
            scan,
            exclude,
            ..
        } = ws;
        exclude.clear();
        exclusions(exclude, history, extra);
        let h = h.unwrap_or(users);
        self.be
            .topk(&self.items, h, 0, k, exclude, scan, items, scores)
    }

    /// The `k` best items for a request.
    pub fn topk(&self, q: &Query<'_>, k: usize, ws: &mut Workspace<B>) -> Result<Vec<Scored>> {
        let k = k.min(self.info.n_items);
        let mut items = alloc::vec![0u32; k];
        let mut scores = alloc::vec![0f32; k];
        let n = self.topk_into(q, k, ws, &mut items, &mut scores)?;
        Ok(scored(&items[..n], &scores[..n]))
    }
}

/// Why a model without an actor-critic head cannot take feedback.
fn no_actor_critic(arch: &str, cfg: &Config) -> &'static str {
    match arch {
        "sqn" | "snqn" | "sa2c"
            if cfg.str_or("sup_head", "linear").ok().as_deref() == Some("tied") =>
        {
            "its supervised head is tied to the item embedding (`sup_head = \"tied\"`), so it has no \
             linear actor of its own"
        }
        "smorl" => "it scores with several Q heads and has no single actor-critic head",
        _ => "it has no actor-critic head",
    }
}

/// `(item, score)` pairs of a top-k's outputs.
pub(crate) fn scored(items: &[u32], scores: &[f32]) -> Vec<Scored> {
    items
        .iter()
        .zip(scores)
        .map(|(&item, &score)| Scored { item, score })
        .collect()
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

/// Every architecture name this build knows, in registry order.
pub fn architectures() -> Vec<&'static str> {
    models::names::<Cpu>()
}

/// The tensors (names and shapes, in loading order) that a model with configuration `cfg`
/// needs: the list a checkpoint writer must produce and the loader will check.
pub fn tensor_specs(cfg: &Config) -> Result<Vec<TensorSpec>> {
    let n_items = cfg.usize("n_items")?;
    let max_len = cfg.usize_or("MAX_ITEM_LIST_LENGTH", DEFAULT_MAX_LEN)?;
    let mut ld = TensorLoader::recording();
    let name = cfg.model()?;
    let mut cx = LoadContext {
        cfg,
        ld: &mut ld,
        n_items,
        max_len,
    };
    let arch = models::load(&Cpu::new(), &name, &mut cx)?;
    ld.finish(arch.name())
}
