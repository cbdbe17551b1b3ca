//! The architectures. Each lives in one file, implements [`Architecture`] against the
//! [`Backend`] trait only, and is registered by name in [`registry`]: adding a model is one new
//! file and one line there. The public API ([`crate::model`]) holds a loaded architecture as a
//! [`DynArch`] and its per-user state as an [`ArchState`].

pub mod caser;
pub mod dt;
pub mod gru4rec;
pub mod hdt;
pub mod nextitnet;
pub mod rl;
pub mod sasrec;

use crate::backend::{Backend, BlockScratch, KvCache};
use crate::blocks::Embedding;
use crate::codec::{Reader, Writer};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::objectives::{ObjectiveSpec, Objectives};
use crate::weights::{Tensor, TensorLoader, WeightFile};
use alloc::boxed::Box;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;
use core::any::Any;

pub use caser::Caser;
pub use dt::{Dt, DtOrder, DtState};
pub use gru4rec::{Gru4Rec, Gru4RecState};
pub use hdt::{Hdt, HdtState};
pub use nextitnet::{NextItNet, NextItNetState};
pub use rl::RlHeads;
pub use sasrec::{SasRec, SasRecState};

/// Every architecture of this build, in the order `seqrec info` lists them. Adding an
/// architecture is one line here.
pub fn registry<B: Backend>() -> [Registration<B>; 7] {
    [
        Registration::of::<SasRec<B>>(),
        Registration::of::<Gru4Rec<B>>(),
        Registration::of::<NextItNet<B>>(),
        Registration::of::<Caser<B>>(),
        Registration::of::<RlHeads<B>>(),
        Registration::of::<Dt<B>>(),
        Registration::of::<Hdt<B>>(),
    ]
}

/// What a loader reads: the configuration, the tensors (through a [`TensorLoader`], which
/// checks shapes and records what was read), and the sizes every architecture shares.
#[derive(Debug)]
pub struct LoadContext<'c, 'f> {
    /// The configuration.
    pub cfg: &'c Config,
    /// The tensors.
    pub ld: &'c mut TensorLoader<'f>,
    /// Catalog size, padding id 0 included.
    pub n_items: usize,
    /// Window length `MAX_ITEM_LIST_LENGTH`.
    pub max_len: usize,
}

/// The tables of an actor-critic head beside the scoring table (the actor `[W_π | b_π]`,
/// scored with the vector `[h, 1]`), in the same layout: row `i` is `[w_i, b_i]`.
#[derive(Clone, Debug)]
pub struct ActorCritic {
    /// The critic `[W_Q | b_Q]`, `[n_items, d + 1]`: `Q(h, i) = [h, 1] · row i`.
    pub critic: Tensor,
    /// The adaptive actor's starting point `[W_β | b_β]` when the checkpoint has one
    /// (`beta_head.*`); else the adaptive actor starts as a copy of the actor.
    pub beta: Option<Tensor>,
}

/// One request as an architecture encodes it (validated by the API).
#[derive(Copy, Clone, Debug)]
pub struct Request<'a> {
    /// The most recent `max_len` item ids, oldest first, at least one.
    pub window: &'a [u32],
    /// The user id (0 for architectures without a user embedding).
    pub user: u32,
    /// The objective knobs, made for this architecture's specs.
    pub objectives: &'a Objectives,
}

/// The working memory an architecture encodes with, lent by a workspace: named activation
/// buffers and host-side lists of request data. Nothing in it survives a call.
#[derive(Debug)]
pub struct Scratch<B: Backend> {
    /// The main activation (`[rows, width]`).
    pub x: B::Buf,
    /// The second activation (a sublayer's output).
    pub y: B::Buf,
    /// An extra activation (token assembly, concatenated inputs).
    pub aux: B::Buf,
    /// One request's vector while a batch is encoded request by request.
    pub row: B::Buf,
    /// Scratch of the blocks.
    pub tmp: BlockScratch<B>,
    /// Ids and positions.
    pub ids: Vec<u32>,
    /// Sequence lengths of a batch.
    pub lens: Vec<usize>,
    /// Per-row factors computed from the request (returns, flags).
    pub vals: Vec<f32>,
}

impl<B: Backend> Default for Scratch<B> {
    fn default() -> Self {
        Scratch {
            x: B::Buf::default(),
            y: B::Buf::default(),
            aux: B::Buf::default(),
            row: B::Buf::default(),
            tmp: BlockScratch::default(),
            ids: Vec::new(),
            lens: Vec::new(),
            vals: Vec::new(),
        }
    }
}

/// A sequential recommender written against [`Backend`]: it turns a window of item ids into
/// a scoring vector, whose product with the rows of its [`Architecture::scoring_table`] gives
/// the catalog's scores.
pub trait Architecture<B: Backend>: Sized + Send + Sync + core::fmt::Debug + 'static {
    /// Per-user incremental state (key/value caches, hidden states, ...).
    type State: Send + core::fmt::Debug + 'static;

    /// The `model` names this architecture loads (its variants).
    const NAMES: &'static [&'static str];

    /// Loads variant `name` (one of [`Self::NAMES`]).
    fn load(be: &B, name: &'static str, cx: &mut LoadContext<'_, '_>) -> Result<Self>;

    /// The variant's name.
    fn name(&self) -> &'static str;

    /// Width of the user vector (= item embedding width; the backbone's state for heads).
    fn dim(&self) -> usize;

    /// Width of the scoring vector [`Self::encode`] writes, i.e. of the rows of
    /// [`Self::scoring_table`].
    fn score_dim(&self) -> usize {
        self.dim()
    }

    /// The table the catalog is scored against, `[n_items, score_dim]`: by default the item
    /// embedding (`item_embedding.weight`, zero-copy when the file allows it).
    fn scoring_table(&self, file: &WeightFile, n_items: usize) -> Result<Tensor> {
        file.tensor("item_embedding.weight", &[n_items, self.score_dim()])
    }

    /// The inference-time knobs the architecture reads (none by default).
    fn objective_specs(&self) -> &'static [ObjectiveSpec] {
        &[]
    }

    /// The critic and the adaptive actor's starting point, for architectures whose scoring
    /// table is a linear actor `[W_π | b_π]` with a linear critic beside it (what online
    /// adaptation, [`crate::Model::session_feedback`], needs); `None` (the default) for the
    /// others.
    fn actor_critic(&self, file: &WeightFile, n_items: usize) -> Result<Option<ActorCritic>> {
        let _ = (file, n_items);
        Ok(None)
    }

    /// The item embedding (the input table).
    fn item_embedding(&self) -> &Embedding<B>;

    /// Number of users, for architectures with a user embedding.
    fn n_users(&self) -> Option<usize> {
        None
    }

    /// A fresh incremental state.
    fn new_state(&self, be: &B) -> Result<Self::State>;

    /// Encodes a request's window from scratch into the scoring vector (row 0 of `out`,
    /// [`Self::score_dim`] values), leaving `state` describing that window.
    fn encode(
        &self,
        be: &B,
        req: &Request<'_>,
        state: &mut Self::State,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<()>;

    /// Encodes a batch into rows `0 .. reqs.len()` of `out`; row `i` equals [`Self::encode`]
    /// of `reqs[i]` up to f32 summation order. By default request by request.
    fn encode_batch(
        &self,
        be: &B,
        reqs: &[Request<'_>],
        state: &mut Self::State,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<()> {
        let mut row = core::mem::take(&mut s.row);
        let res = reqs.iter().enumerate().try_for_each(|(i, req)| {
            self.encode(be, req, state, s, &mut row)?;
            be.copy_rows(&row, 0, out, i, 1, self.score_dim())
        });
        s.row = row;
        res
    }

    /// Appends one event to a state whose window is not full and writes the new scoring
    /// vector; returns `false` (doing nothing) when the architecture cannot extend its state
    /// incrementally, in which case the caller re-encodes the window.
    fn push(
        &self,
        be: &B,
        item: u32,
        objectives: &Objectives,
        state: &mut Self::State,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<bool> {
        let _ = (be, item, objectives, state, s, out);
        Ok(false)
    }

    /// A session boundary after the events `history`. Hierarchical architectures advance their
    /// inter-session state and return `true` (the caller then starts an empty session); the
    /// others treat a user's sessions as one sequence and return `false`.
    fn end_session(
        &self,
        be: &B,
        state: &mut Self::State,
        history: &[u32],
        s: &mut Scratch<B>,
    ) -> Result<bool> {
        let _ = (be, state, history, s);
        Ok(false)
    }

    /// The scoring vector of a session with no event yet after a boundary, for architectures
    /// that predict a session's first item; returns whether it wrote one.
    fn encode_empty(
        &self,
        be: &B,
        objectives: &Objectives,
        state: &mut Self::State,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<bool> {
        let _ = (be, objectives, state, s, out);
        Ok(false)
    }

    /// Writes what [`Self::restore_state`] needs to rebuild `state` exactly (bit for bit, so
    /// that a restored session continues as the original would), reading device buffers
    /// through [`Backend::read`]. By default nothing: right for architectures whose `state`
    /// is rebuilt by every [`Self::encode`] (no [`Self::push`], no [`Self::end_session`]);
    /// an architecture that implements either must override both methods.
    fn save_state(&self, be: &B, state: &Self::State, w: &mut Writer) -> Result<()> {
        let _ = (be, state, w);
        Ok(())
    }

    /// Rebuilds into `state`, a fresh [`Self::new_state`], what [`Self::save_state`] wrote,
    /// writing device buffers through [`Backend::write`]. `window` is the number of events in
    /// the session's current window (`min(events, max_len)`, 0 after a hierarchical model's
    /// session boundary): an incremental state covers exactly those. The bytes are untrusted
    /// (though checksummed): every count is checked against the model's sizes.
    fn restore_state(
        &self,
        be: &B,
        r: &mut Reader<'_>,
        window: usize,
        state: &mut Self::State,
    ) -> Result<()> {
        let _ = (be, r, window, state);
        Ok(())
    }
}

/// Writes the first `len` values of `buf` (read through the backend) as a counted f32 list.
pub(crate) fn save_buf<B: Backend>(be: &B, buf: &B::Buf, len: usize, w: &mut Writer) -> Result<()> {
    let mut host = vec![0f32; len];
    be.read(buf, 0, &mut host)?;
    w.f32s(&host);
    Ok(())
}

/// Reads a counted list of exactly `len` values into `buf` from element 0.
pub(crate) fn restore_buf<B: Backend>(
    be: &B,
    r: &mut Reader<'_>,
    what: &str,
    len: usize,
    buf: &mut B::Buf,
) -> Result<()> {
    let mut host = Vec::new();
    r.f32s(what, len, &mut host)?;
    be.write(&host, buf, 0)
}

/// Writes the filled rows of a key/value cache of rows `width` wide.
pub(crate) fn save_cache<B: Backend>(
    be: &B,
    cache: &KvCache<B>,
    width: usize,
    w: &mut Writer,
) -> Result<()> {
    save_buf(be, &cache.k, cache.len * width, w)?;
    save_buf(be, &cache.v, cache.len * width, w)
}

/// Reads what [`save_cache`] wrote for `len` positions into an empty cache.
pub(crate) fn restore_cache<B: Backend>(
    be: &B,
    r: &mut Reader<'_>,
    cache: &mut KvCache<B>,
    width: usize,
    len: usize,
) -> Result<()> {
    if len > cache.max_len {
        return Err(r.error(format_args!(
            "{len} positions for a cache of {}",
            cache.max_len
        )));
    }
    restore_buf(be, r, "cached keys", len * width, &mut cache.k)?;
    restore_buf(be, r, "cached values", len * width, &mut cache.v)?;
    cache.len = len;
    Ok(())
}

/// The state of any architecture, as the API keeps it (a session's, or a workspace's cache).
pub struct ArchState(Box<dyn Any + Send>);

impl core::fmt::Debug for ArchState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("ArchState")
    }
}

impl ArchState {
    fn of<S: Send + 'static>(state: S) -> ArchState {
        ArchState(Box::new(state))
    }

    fn get<S: 'static>(&mut self) -> Result<&mut S> {
        self.0.downcast_mut::<S>().ok_or_else(wrong_state)
    }

    fn get_ref<S: 'static>(&self) -> Result<&S> {
        self.0.downcast_ref::<S>().ok_or_else(wrong_state)
    }
}

fn wrong_state() -> Error {
    Error::InvalidArgument("session state belongs to a different architecture".into())
}

/// [`Architecture`] with its state type erased, so that the API holds any architecture as a
/// `Box<dyn DynArch<B>>`. Implemented for every architecture.
#[allow(missing_docs)]
pub trait DynArch<B: Backend>: Send + Sync + core::fmt::Debug {
    fn name(&self) -> &'static str;
    fn dim(&self) -> usize;
    fn score_dim(&self) -> usize;
    fn scoring_table(&self, file: &WeightFile, n_items: usize) -> Result<Tensor>;
    fn objective_specs(&self) -> &'static [ObjectiveSpec];
    fn actor_critic(&self, file: &WeightFile, n_items: usize) -> Result<Option<ActorCritic>>;
    fn item_embedding(&self) -> &Embedding<B>;
    fn n_users(&self) -> Option<usize>;
    fn new_state(&self, be: &B) -> Result<ArchState>;
    fn encode(
        &self,
        be: &B,
        req: &Request<'_>,
        state: &mut ArchState,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<()>;
    fn encode_batch(
        &self,
        be: &B,
        reqs: &[Request<'_>],
        state: &mut ArchState,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<()>;
    fn push(
        &self,
        be: &B,
        item: u32,
        objectives: &Objectives,
        state: &mut ArchState,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<bool>;
    fn end_session(
        &self,
        be: &B,
        state: &mut ArchState,
        history: &[u32],
        s: &mut Scratch<B>,
    ) -> Result<bool>;
    fn encode_empty(
        &self,
        be: &B,
        objectives: &Objectives,
        state: &mut ArchState,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<bool>;
    fn save_state(&self, be: &B, state: &ArchState, w: &mut Writer) -> Result<()>;
    fn restore_state(
        &self,
        be: &B,
        r: &mut Reader<'_>,
        window: usize,
        state: &mut ArchState,
    ) -> Result<()>;
}

impl<B: Backend, A: Architecture<B>> DynArch<B> for A {
    fn name(&self) -> &'static str {
        Architecture::name(self)
    }
    fn dim(&self) -> usize {
        Architecture::dim(self)
    }
    fn score_dim(&self) -> usize {
        Architecture::score_dim(self)
    }
    fn scoring_table(&self, file: &WeightFile, n_items: usize) -> Result<Tensor> {
        Architecture::scoring_table(self, file, n_items)
    }
    fn objective_specs(&self) -> &'static [ObjectiveSpec] {
        Architecture::objective_specs(self)
    }
    fn actor_critic(&self, file: &WeightFile, n_items: usize) -> Result<Option<ActorCritic>> {
        Architecture::actor_critic(self, file, n_items)
    }
    fn item_embedding(&self) -> &Embedding<B> {
        Architecture::item_embedding(self)
    }
    fn n_users(&self) -> Option<usize> {
        Architecture::n_users(self)
    }
    fn new_state(&self, be: &B) -> Result<ArchState> {
        Ok(ArchState::of(Architecture::new_state(self, be)?))
    }
    fn encode(
        &self,
        be: &B,
        req: &Request<'_>,
        state: &mut ArchState,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<()> {
        Architecture::encode(self, be, req, state.get()?, s, out)
    }
    fn encode_batch(
        &self,
        be: &B,
        reqs: &[Request<'_>],
        state: &mut ArchState,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<()> {
        Architecture::encode_batch(self, be, reqs, state.get()?, s, out)
    }
    fn push(
        &self,
        be: &B,
        item: u32,
        objectives: &Objectives,
        state: &mut ArchState,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<bool> {
        Architecture::push(self, be, item, objectives, state.get()?, s, out)
    }
    fn end_session(
        &self,
        be: &B,
        state: &mut ArchState,
        history: &[u32],
        s: &mut Scratch<B>,
    ) -> Result<bool> {
        Architecture::end_session(self, be, state.get()?, history, s)
    }
    fn encode_empty(
        &self,
        be: &B,
        objectives: &Objectives,
        state: &mut ArchState,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<bool> {
        Architecture::encode_empty(self, be, objectives, state.get()?, s, out)
    }
    fn save_state(&self, be: &B, state: &ArchState, w: &mut Writer) -> Result<()> {
        Architecture::save_state(self, be, state.get_ref()?, w)
    }
    fn restore_state(
        &self,
        be: &B,
        r: &mut Reader<'_>,
        window: usize,
        state: &mut ArchState,
    ) -> Result<()> {
        Architecture::restore_state(self, be, r, window, state.get()?)
    }
}

/// An architecture's entry in the [`registry`]: the names it loads and its loader.
pub struct Registration<B: Backend> {
    /// The `model` names it answers to.
    pub names: &'static [&'static str],
    load: LoadFn<B>,
}

impl<B: Backend> core::fmt::Debug for Registration<B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Registration")
            .field("names", &self.names)
            .finish()
    }
}

type LoadFn<B> = fn(&B, &'static str, &mut LoadContext<'_, '_>) -> Result<Box<dyn DynArch<B>>>;

fn load_boxed<B: Backend, A: Architecture<B>>(
    be: &B,
    name: &'static str,
    cx: &mut LoadContext<'_, '_>,
) -> Result<Box<dyn DynArch<B>>> {
    Ok(Box::new(A::load(be, name, cx)?))
}

impl<B: Backend> Registration<B> {
    /// The entry of architecture `A`.
    pub fn of<A: Architecture<B>>() -> Self {
        Registration {
            names: A::NAMES,
            load: load_boxed::<B, A>,
        }
    }
}

/// Every registered `model` name, in registry order.
pub fn names<B: Backend>() -> Vec<&'static str> {
    registry::<B>()
        .iter()
        .flat_map(|r| r.names.iter().copied())
        .collect()
}

/// Loads the architecture registered as `name` (lower case).
///
/// # Errors
/// [`Error::UnknownModel`] listing every registered name, or the loader's error.
pub fn load<B: Backend>(
    be: &B,
    name: &str,
    cx: &mut LoadContext<'_, '_>,
) -> Result<Box<dyn DynArch<B>>> {
    for r in registry::<B>() {
        if let Some(&n) = r.names.iter().find(|&&n| n == name) {
            return (r.load)(be, n, cx);
        }
    }
    Err(Error::UnknownModel {
        name: name.to_string(),
        known: names::<B>().join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::{Activation, Embedding, Linear};
    use crate::cpu::Cpu;
    use crate::weights::serialize;
    use alloc::vec;

    /// The README's example of a new architecture, verbatim but for the test module's paths.
    #[derive(Debug)]
    struct MyRec<B: Backend> {
        item_emb: Embedding<B>,
        proj: Linear<B>,
        dim: usize,
    }

    impl<B: Backend> Architecture<B> for MyRec<B> {
        type State = ();
        const NAMES: &'static [&'static str] = &["myrec"];

        fn load(be: &B, _name: &'static str, cx: &mut LoadContext<'_, '_>) -> Result<Self> {
            let dim = cx.cfg.usize_or("hidden_size", 64)?;
            Ok(MyRec {
                item_emb: Embedding::load(be, cx.ld, "item_embedding.weight", cx.n_items, dim)?,
                proj: Linear::load(be, cx.ld, "proj", dim, dim, true)?,
                dim,
            })
        }
        fn name(&self) -> &'static str {
            "myrec"
        }
        fn dim(&self) -> usize {
            self.dim
        }
        fn item_embedding(&self) -> &Embedding<B> {
            &self.item_emb
        }
        fn new_state(&self, _be: &B) -> Result<()> {
            Ok(())
        }
        fn encode(
            &self,
            be: &B,
            req: &Request<'_>,
            _: &mut (),
            s: &mut Scratch<B>,
            out: &mut B::Buf,
        ) -> Result<()> {
            let last = &req.window[req.window.len() - 1..];
            be.gather(&self.item_emb, last, &mut s.x)?;
            be.linear(&self.proj, &s.x, 1, Activation::Tanh, out)
        }
    }

    #[test]
    fn a_registered_architecture_loads_and_encodes() {
        let (n, d) = (5, 2);
        let emb: Vec<f32> = (0..n * d).map(|i| i as f32 * 0.1).collect();
        let (w, b) = ([1.0f32, 0.0, 0.5, -1.0], [0.0f32, 0.25]);
        let bytes = serialize(
            &[
                ("item_embedding.weight", &[n, d], &emb),
                ("proj.weight", &[d, d], &w),
                ("proj.bias", &[d], &b),
            ],
            &[],
        )
        .unwrap();
        let file = WeightFile::from_bytes(&bytes).unwrap();
        let cfg = Config::from_json(r#"{"model":"myrec","hidden_size":2}"#).unwrap();
        let mut ld = TensorLoader::new(&file);
        let mut cx = LoadContext {
            cfg: &cfg,
            ld: &mut ld,
            n_items: n,
            max_len: 4,
        };
        let entry = Registration::<Cpu>::of::<MyRec<Cpu>>();
        assert_eq!(entry.names, ["myrec"]);
        let be = Cpu::new();
        let arch = (entry.load)(&be, "myrec", &mut cx).unwrap();
        ld.finish(arch.name()).unwrap();
        let objectives = Objectives::new(arch.objective_specs());
        let req = Request {
            window: &[1, 3],
            user: 0,
            objectives: &objectives,
        };
        let mut state = arch.new_state(&be).unwrap();
        let (mut s, mut out) = (Scratch::default(), vec![]);
        arch.encode(&be, &req, &mut state, &mut s, &mut out)
            .unwrap();
        // Item 3 is (0.6, 0.7): tanh(W·e + b) = tanh(0.6, 0.3 − 0.7 + 0.25).
        let want = [libm::tanhf(0.6), libm::tanhf(0.3 - 0.7 + 0.25)];
        for (g, w) in out.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{out:?}");
        }
        // Another architecture's state is refused, not misread.
        let mut other = ArchState::of(1u8);
        let e = arch
            .encode(&be, &req, &mut other, &mut s, &mut out)
            .unwrap_err();
        assert!(alloc::format!("{e}").contains("different architecture"));
    }

    #[test]
    fn unknown_names_list_every_registered_one() {
        let cfg = Config::from_json(r#"{"model":"bert4rec"}"#).unwrap();
        let mut ld = TensorLoader::recording();
        let mut cx = LoadContext {
            cfg: &cfg,
            ld: &mut ld,
            n_items: 3,
            max_len: 2,
        };
        let e = load(&Cpu::new(), "bert4rec", &mut cx).unwrap_err();
        let msg = alloc::format!("{e}");
        for name in names::<Cpu>() {
            assert!(msg.contains(name), "{msg}");
        }
        assert_eq!(names::<Cpu>().len(), 15);
    }
}
