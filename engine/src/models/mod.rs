//! The architectures. Each is written once against [`Backend`]; [`Arch`] and [`ArchState`]
//! gather them for the model-independent API in [`crate::model`].

pub mod caser;
pub mod dt;
pub mod gru4rec;
pub mod hdt;
pub mod nextitnet;
pub mod rl;
pub mod sasrec;

use crate::backend::Backend;
use crate::blocks::Embedding;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::objectives::{ObjectiveSpec, Objectives};
use crate::weights::{Tensor, TensorLoader, TensorSpec, WeightFile};
use alloc::boxed::Box;
use alloc::string::ToString;
use alloc::vec::Vec;

pub use caser::Caser;
pub use dt::{Dt, DtOrder, DtState};
pub use gru4rec::{Gru4Rec, Gru4RecState};
pub use hdt::{Hdt, HdtState};
pub use nextitnet::{NextItNet, NextItNetState};
pub use rl::RlHeads;
pub use sasrec::{SasRec, SasRecState};

/// Architecture names this build knows.
pub const ARCHITECTURES: &[&str] = &[
    "sasrec",
    "gru4rec",
    "nextitnet",
    "caser",
    "sqn",
    "snqn",
    "sa2c",
    "smorl",
    "modt4r",
    "mrdt",
    "hdt",
    "interdt",
    "hier",
];

/// One of the supported architectures.
#[derive(Debug)]
#[non_exhaustive]
pub enum Arch<B: Backend> {
    /// SASRec.
    SasRec(SasRec<B>),
    /// GRU4Rec.
    Gru4Rec(Gru4Rec<B>),
    /// NextItNet.
    NextItNet(NextItNet<B>),
    /// Caser.
    Caser(Caser<B>),
    /// SQN, SNQN, SA2C or SMORL heads on a backbone (which keeps its own state).
    Rl(RlHeads<B>),
    /// MODT4R or MRDT (the Decision Transformers, [`dt`]); boxed, being much larger than
    /// the backbones.
    Dt(Box<Dt<B>>),
    /// HDT and its ablations InterDT and Hier (hierarchical session models).
    Hdt(Box<Hdt<B>>),
}

/// Per-user incremental state of an architecture.
#[derive(Debug)]
pub enum ArchState<B: Backend> {
    /// SASRec key/value caches.
    SasRec(SasRecState<B>),
    /// GRU4Rec hidden states.
    Gru4Rec(Gru4RecState<B>),
    /// NextItNet per-block activations.
    NextItNet(NextItNetState<B>),
    /// Caser recomputes every request.
    Caser,
    /// Decision Transformer caches (re-encoded on every event).
    Dt(DtState<B>),
    /// Inter-session state of a hierarchical model.
    Hdt(Box<HdtState<B>>),
}

impl<B: Backend> Arch<B> {
    /// Builds the architecture named by `cfg`'s `model` field.
    pub fn load(
        be: &B,
        cfg: &Config,
        ld: &mut TensorLoader<'_>,
        n_items: usize,
        max_len: usize,
    ) -> Result<Self> {
        let name = cfg.model()?;
        Self::load_named(be, &name, cfg, ld, n_items, max_len)
    }

    /// Builds architecture `name` from `cfg`.
    pub fn load_named(
        be: &B,
        name: &str,
        cfg: &Config,
        ld: &mut TensorLoader<'_>,
        n_items: usize,
        max_len: usize,
    ) -> Result<Self> {
        if let Some(&rl) = rl::RL_MODELS.iter().find(|&&m| m == name) {
            return Ok(Arch::Rl(RlHeads::load(be, cfg, ld, n_items, max_len, rl)?));
        }
        Ok(match name {
            "sasrec" => Arch::SasRec(SasRec::load(be, cfg, ld, n_items, max_len)?),
            "gru4rec" => Arch::Gru4Rec(Gru4Rec::load(be, cfg, ld, n_items)?),
            "nextitnet" => Arch::NextItNet(NextItNet::load(be, cfg, ld, n_items, max_len)?),
            "caser" => Arch::Caser(Caser::load(be, cfg, ld, n_items, max_len)?),
            "modt4r" | "mrdt" => {
                let order = if name == "modt4r" {
                    DtOrder::StateFirst
                } else {
                    DtOrder::ReturnsFirst
                };
                Arch::Dt(Box::new(Dt::load(be, cfg, ld, n_items, max_len, order)?))
            }
            "hdt" | "interdt" | "hier" => {
                Arch::Hdt(Box::new(Hdt::load(be, cfg, ld, n_items, max_len)?))
            }
            _ => return Err(Error::UnknownModel(name.to_string())),
        })
    }

    /// Lower-case architecture name.
    pub fn name(&self) -> &'static str {
        match self {
            Arch::SasRec(_) => "sasrec",
            Arch::Gru4Rec(_) => "gru4rec",
            Arch::NextItNet(_) => "nextitnet",
            Arch::Caser(_) => "caser",
            Arch::Rl(m) => m.name(),
            Arch::Dt(m) => m.name(),
            Arch::Hdt(m) => m.name(),
        }
    }

    /// Width of the user vector (= item embedding width; the backbone's state for RL heads).
    pub fn dim(&self) -> usize {
        match self {
            Arch::SasRec(m) => m.dim(),
            Arch::Gru4Rec(m) => m.dim(),
            Arch::NextItNet(m) => m.dim(),
            Arch::Caser(m) => m.dim(),
            Arch::Rl(m) => m.dim(),
            Arch::Dt(m) => m.user.dim(),
            Arch::Hdt(m) => m.dim(),
        }
    }

    /// Width of the scoring vector that [`Self::encode`] writes, i.e. of the rows of
    /// [`Self::scoring_table`]. Plain backbones score with the item embedding, so this is
    /// [`Self::dim`].
    pub fn score_dim(&self) -> usize {
        match self {
            Arch::Rl(m) => m.score_dim(),
            Arch::Dt(m) => m.score_dim(),
            Arch::Hdt(m) => m.score_dim(),
            _ => self.dim(),
        }
    }

    /// The table the catalog is scored against, `[n_items, score_dim]`: a user's scores are
    /// the scoring vector times this table. Plain backbones use their item embedding
    /// (`item_embedding.weight`, zero-copy when the file allows it).
    pub fn scoring_table(&self, file: &WeightFile, n_items: usize) -> Result<Tensor> {
        match self {
            Arch::Rl(m) => m.scoring_table(file, n_items),
            Arch::Dt(m) => Ok(m.scoring_table()),
            Arch::Hdt(m) => m.scoring_table(file, n_items),
            _ => file.tensor("item_embedding.weight", &[n_items, self.score_dim()]),
        }
    }

    /// The inference-time knobs the architecture reads (none for plain backbones).
    pub fn objective_specs(&self) -> &'static [ObjectiveSpec] {
        match self {
            Arch::Rl(m) => m.objective_specs(),
            Arch::Dt(_) => dt::DT_OBJECTIVES,
            Arch::Hdt(m) => m.objective_specs(),
            _ => &[],
        }
    }

    /// A session boundary. Hierarchical architectures advance their inter-session state and
    /// return `true` (the caller then starts an empty current session); plain backbones treat
    /// a user's sessions as one concatenated sequence (the usual non-hierarchical baseline),
    /// so the boundary changes nothing and they return `false`. `history` is the finished
    /// session's events.
    pub fn end_session(
        &self,
        be: &B,
        state: &mut ArchState<B>,
        history: &[u32],
        ids: &mut Vec<u32>,
        bufs: [&mut B::Buf; 4],
    ) -> Result<bool> {
        match (self, state) {
            (Arch::Hdt(m), ArchState::Hdt(s)) => m.end_session(be, s, history, ids, bufs),
            (Arch::Hdt(_), _) => Err(Error::InvalidArgument(
                "session state belongs to a different architecture".into(),
            )),
            _ => Ok(false),
        }
    }

    /// The scoring vector of a session with no event yet after a boundary, when the
    /// architecture predicts a session's first item (`hdt`, `interdt`); returns whether it
    /// wrote one.
    pub fn encode_empty(
        &self,
        be: &B,
        obj: &Objectives,
        state: &mut ArchState<B>,
        bufs: [&mut B::Buf; 4],
        out: &mut B::Buf,
    ) -> Result<bool> {
        match (self, state) {
            (Arch::Hdt(m), ArchState::Hdt(s)) => m.encode_empty(be, obj, s, bufs, out),
            _ => Ok(false),
        }
    }

    /// The item embedding (the input table; also the scoring table of plain backbones).
    pub fn item_embedding(&self) -> &Embedding<B> {
        match self {
            Arch::SasRec(m) => &m.item_emb,
            Arch::Gru4Rec(m) => &m.item_emb,
            Arch::NextItNet(m) => &m.item_emb,
            Arch::Caser(m) => &m.item_emb,
            Arch::Rl(m) => m.backbone.item_embedding(),
            Arch::Dt(m) => &m.user.item_emb,
            Arch::Hdt(m) => m.item_embedding(),
        }
    }

    /// Number of users for models with a user embedding.
    pub fn n_users(&self) -> Option<usize> {
        match self {
            Arch::Caser(m) => Some(m.n_users()),
            Arch::Rl(m) => m.backbone.n_users(),
            _ => None,
        }
    }

    /// A fresh incremental state.
    pub fn new_state(&self, be: &B) -> Result<ArchState<B>> {
        Ok(match self {
            Arch::SasRec(m) => ArchState::SasRec(m.new_state(be)?),
            Arch::Gru4Rec(m) => ArchState::Gru4Rec(m.new_state(be)?),
            Arch::NextItNet(m) => ArchState::NextItNet(m.new_state(be)?),
            Arch::Caser(_) => ArchState::Caser,
            Arch::Rl(m) => m.backbone.new_state(be)?,
            Arch::Dt(m) => ArchState::Dt(m.new_state(be)?),
            Arch::Hdt(m) => ArchState::Hdt(Box::new(m.new_state(be)?)),
        })
    }

    /// Encodes a validated window (at most `max_len` ids) from scratch into the scoring vector
    /// (row 0 of `out`, [`Self::score_dim`] values) under the knobs `obj`, leaving `state`
    /// describing that window.
    pub fn encode(
        &self,
        be: &B,
        window: &[u32],
        user: u32,
        obj: &Objectives,
        state: &mut ArchState<B>,
        ids: &mut Vec<u32>,
        bufs: [&mut B::Buf; 4],
        out: &mut B::Buf,
    ) -> Result<()> {
        if let Arch::Rl(m) = self {
            let [a, b, c, d] = bufs;
            m.backbone
                .encode(be, window, user, obj, state, ids, [&mut *a, b, c, d], out)?;
            return m.scoring_vector(be, obj, a, out);
        }
        let [a, b, c, d] = bufs;
        match (self, state) {
            (Arch::Hdt(m), ArchState::Hdt(s)) => {
                m.encode(be, window, obj, s, ids, [a, b, c, d], out)
            }
            (Arch::SasRec(m), ArchState::SasRec(s)) => m.encode(be, window, s, [a, b, c], out),
            (Arch::Gru4Rec(m), ArchState::Gru4Rec(s)) => m.encode(be, window, s, [a, b, c], out),
            (Arch::NextItNet(m), ArchState::NextItNet(s)) => {
                m.encode(be, window, ids, s, [a, b], out)
            }
            (Arch::Caser(m), ArchState::Caser) => {
                m.encode(be, window, user, ids, [a, b, c, d], out)
            }
            (Arch::Dt(m), ArchState::Dt(s)) => m.encode(be, window, obj, s, [a, b, c, d], out),
            _ => Err(Error::InvalidArgument(
                "session state belongs to a different architecture".into(),
            )),
        }
    }

    /// Encodes a batch of validated windows (each at most `max_len` ids) for `users` into
    /// rows `0 .. windows.len()` of `out`; row `i` equals [`Self::encode`] of `windows[i]` up to
    /// f32 summation order. SASRec encodes the batch as one stack of positions; the other
    /// architectures encode window by window with `state` as scratch.
    pub fn encode_batch(
        &self,
        be: &B,
        windows: &[&[u32]],
        users: &[u32],
        objs: &[&Objectives],
        state: &mut ArchState<B>,
        ids: &mut Vec<u32>,
        lens: &mut Vec<usize>,
        bufs: [&mut B::Buf; 5],
        out: &mut B::Buf,
    ) -> Result<()> {
        let [a, b, c, d, e] = bufs;
        if let Arch::SasRec(m) = self {
            return m.encode_batch(be, windows, ids, lens, [a, b, c], out);
        }
        for (i, ((window, &user), obj)) in windows.iter().zip(users).zip(objs).enumerate() {
            self.encode(
                be,
                window,
                user,
                obj,
                state,
                ids,
                [&mut *a, &mut *b, &mut *c, &mut *d],
                e,
            )?;
            be.copy_rows(e, 0, out, i, 1, self.score_dim())?;
        }
        Ok(())
    }

    /// Appends one event to a state whose window is not full; returns `false` (doing nothing)
    /// when the architecture cannot extend its state incrementally, in which case the caller
    /// re-encodes the window.
    pub fn push(
        &self,
        be: &B,
        item: u32,
        obj: &Objectives,
        state: &mut ArchState<B>,
        ids: &mut Vec<u32>,
        bufs: [&mut B::Buf; 4],
        out: &mut B::Buf,
    ) -> Result<bool> {
        if let Arch::Rl(m) = self {
            let [a, b, c, d] = bufs;
            let pushed = m
                .backbone
                .push(be, item, obj, state, ids, [&mut *a, b, c, d], out)?;
            if pushed {
                m.scoring_vector(be, obj, a, out)?;
            }
            return Ok(pushed);
        }
        let [a, b, c, _] = bufs;
        match (self, state) {
            // Hierarchical models recompute the session (IntraDT's returns change with it).
            (Arch::Hdt(_), ArchState::Hdt(_)) => Ok(false),
            (Arch::SasRec(m), ArchState::SasRec(s)) => {
                m.push(be, item, s, [a, b, c], out).map(|_| true)
            }
            (Arch::Gru4Rec(m), ArchState::Gru4Rec(s)) => {
                m.push(be, item, s, [a, b, c], out).map(|_| true)
            }
            (Arch::NextItNet(m), ArchState::NextItNet(s)) => {
                m.push(be, item, ids, s, [a, b], out).map(|_| true)
            }
            (Arch::Caser(_), ArchState::Caser) | (Arch::Dt(_), ArchState::Dt(_)) => Ok(false),
            _ => Err(Error::InvalidArgument(
                "session state belongs to a different architecture".into(),
            )),
        }
    }
}

/// The tensors (names and shapes, in loading order) that a model with configuration `cfg`
/// needs: the list a checkpoint writer must produce and the loader will check.
pub fn tensor_specs(cfg: &Config) -> Result<Vec<TensorSpec>> {
    let n_items = cfg.usize("n_items")?;
    let max_len = cfg.usize_or("MAX_ITEM_LIST_LENGTH", crate::model::DEFAULT_MAX_LEN)?;
    let mut ld = TensorLoader::recording();
    let arch = Arch::load(&crate::cpu::Cpu, cfg, &mut ld, n_items, max_len)?;
    ld.finish(arch.name())
}
