//! The architectures. Each is written once against [`Backend`]; [`Arch`] and [`ArchState`]
//! gather them for the model-independent API in [`crate::model`].

pub mod caser;
pub mod gru4rec;
pub mod nextitnet;
pub mod sasrec;

use crate::backend::Backend;
use crate::blocks::Embedding;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::weights::{TensorLoader, TensorSpec};
use alloc::string::ToString;
use alloc::vec::Vec;

pub use caser::Caser;
pub use gru4rec::{Gru4Rec, Gru4RecState};
pub use nextitnet::{NextItNet, NextItNetState};
pub use sasrec::{SasRec, SasRecState};

/// Architecture names this build knows.
pub const ARCHITECTURES: &[&str] = &["sasrec", "gru4rec", "nextitnet", "caser"];

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
        Ok(match name.as_str() {
            "sasrec" => Arch::SasRec(SasRec::load(be, cfg, ld, n_items, max_len)?),
            "gru4rec" => Arch::Gru4Rec(Gru4Rec::load(be, cfg, ld, n_items)?),
            "nextitnet" => Arch::NextItNet(NextItNet::load(be, cfg, ld, n_items, max_len)?),
            "caser" => Arch::Caser(Caser::load(be, cfg, ld, n_items, max_len)?),
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
        }
    }

    /// Width of the user vector (= item embedding width).
    pub fn dim(&self) -> usize {
        match self {
            Arch::SasRec(m) => m.dim(),
            Arch::Gru4Rec(m) => m.dim(),
            Arch::NextItNet(m) => m.dim(),
            Arch::Caser(m) => m.dim(),
        }
    }

    /// The item embedding (also the scoring table).
    pub fn item_embedding(&self) -> &Embedding<B> {
        match self {
            Arch::SasRec(m) => &m.item_emb,
            Arch::Gru4Rec(m) => &m.item_emb,
            Arch::NextItNet(m) => &m.item_emb,
            Arch::Caser(m) => &m.item_emb,
        }
    }

    /// Number of users for models with a user embedding.
    pub fn n_users(&self) -> Option<usize> {
        match self {
            Arch::Caser(m) => Some(m.n_users()),
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
        })
    }

    /// Encodes a validated window (at most `max_len` ids) from scratch into row 0 of `out`,
    /// leaving `state` describing that window.
    pub fn encode(
        &self,
        be: &B,
        window: &[u32],
        user: u32,
        state: &mut ArchState<B>,
        ids: &mut Vec<u32>,
        bufs: [&mut B::Buf; 4],
        out: &mut B::Buf,
    ) -> Result<()> {
        let [a, b, c, d] = bufs;
        match (self, state) {
            (Arch::SasRec(m), ArchState::SasRec(s)) => m.encode(be, window, s, [a, b, c], out),
            (Arch::Gru4Rec(m), ArchState::Gru4Rec(s)) => m.encode(be, window, s, [a, b, c], out),
            (Arch::NextItNet(m), ArchState::NextItNet(s)) => {
                m.encode(be, window, ids, s, [a, b], out)
            }
            (Arch::Caser(m), ArchState::Caser) => {
                m.encode(be, window, user, ids, [a, b, c, d], out)
            }
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
        for (i, (window, &user)) in windows.iter().zip(users).enumerate() {
            self.encode(
                be,
                window,
                user,
                state,
                ids,
                [&mut *a, &mut *b, &mut *c, &mut *d],
                e,
            )?;
            be.copy_rows(e, 0, out, i, 1, self.dim())?;
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
        state: &mut ArchState<B>,
        ids: &mut Vec<u32>,
        bufs: [&mut B::Buf; 4],
        out: &mut B::Buf,
    ) -> Result<bool> {
        let [a, b, c, _] = bufs;
        match (self, state) {
            (Arch::SasRec(m), ArchState::SasRec(s)) => {
                m.push(be, item, s, [a, b, c], out).map(|_| true)
            }
            (Arch::Gru4Rec(m), ArchState::Gru4Rec(s)) => {
                m.push(be, item, s, [a, b, c], out).map(|_| true)
            }
            (Arch::NextItNet(m), ArchState::NextItNet(s)) => {
                m.push(be, item, ids, s, [a, b], out).map(|_| true)
            }
            (Arch::Caser(_), ArchState::Caser) => Ok(false),
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
