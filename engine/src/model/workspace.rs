//! Reusable scratch memory for scoring. A [`Workspace`] grows to the largest request it has
//! seen and is then reused, so that scoring allocates nothing after warm-up. Keep one per
//! thread (a workspace is `Send` but not shared).

use crate::backend::Backend;
use crate::cpu::Cpu;
use crate::models::{ArchState, Scratch};
use alloc::vec::Vec;

/// Scratch buffers, scan selectors and id lists reused across requests.
#[derive(Debug)]
pub struct Workspace<B: Backend = Cpu> {
    /// What architectures encode with.
    pub(crate) scratch: Scratch<B>,
    /// The user (scoring) vectors of the last request or batch.
    pub(crate) users: B::Buf,
    /// The backend's scan scratch.
    pub(crate) scan: B::Scratch,
    /// Sorted exclusion ids, and their offsets per request of a batch.
    pub(crate) exclude: Vec<u32>,
    pub(crate) offsets: Vec<usize>,
    /// Host catalog scores and an id list, for sessions that rank on the host (adaptive
    /// sessions, see [`crate::Model::session_feedback`]).
    pub(crate) host: Vec<f32>,
    pub(crate) order: Vec<u32>,
    /// A state used as scratch by whole-window requests, for the model `owner`.
    pub(crate) state: Option<ArchState>,
    /// Id of the model whose state `state` holds (a workspace may serve several models).
    pub(crate) owner: u64,
}

impl<B: Backend> Default for Workspace<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Backend> Workspace<B> {
    /// An empty workspace; it grows on first use.
    pub fn new() -> Self {
        Workspace {
            scratch: Scratch::default(),
            users: B::Buf::default(),
            scan: B::Scratch::default(),
            exclude: Vec::new(),
            offsets: Vec::new(),
            host: Vec::new(),
            order: Vec::new(),
            state: None,
            owner: 0,
        }
    }
}
