//! Reusable scratch memory for scoring. A [`Workspace`] grows to the largest request it has
//! seen and is then reused, so that scoring allocates nothing after warm-up. Keep one per
//! thread (a workspace is `Send` but not shared).

use crate::backend::Backend;
use crate::cpu::Cpu;
use crate::error::Result;
use crate::models::ArchState;
use alloc::vec::Vec;
use seqrec_kernels::cpu::topk::TopK;

/// Scratch buffers, a top-k selector and id lists reused across requests.
#[derive(Debug)]
pub struct Workspace<B: Backend = Cpu> {
    bufs: Vec<B::Buf>,
    pub(crate) topk: TopK,
    pub(crate) ids: Vec<u32>,
    pub(crate) exclude: Vec<u32>,
    pub(crate) state: Option<ArchState<B>>,
    /// Id of the model whose state `state` holds (a workspace may serve several models).
    pub(crate) owner: u64,
    /// Selectors of the extra shares of a split catalog scan.
    pub(crate) parts: Vec<TopK>,
    /// Batches: sequence lengths, one selector per request, exclusion offsets.
    pub(crate) lens: Vec<usize>,
    pub(crate) topks: Vec<TopK>,
    pub(crate) offsets: Vec<usize>,
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
            bufs: Vec::new(),
            topk: TopK::new(0),
            ids: Vec::new(),
            exclude: Vec::new(),
            state: None,
            owner: 0,
            parts: Vec::new(),
            lens: Vec::new(),
            topks: Vec::new(),
            offsets: Vec::new(),
        }
    }

    /// Splits the workspace into its host-side parts and `N` distinct activation buffers.
    pub(crate) fn parts<const N: usize>(
        &mut self,
        be: &B,
    ) -> Result<(WsLists<'_, B>, [&mut B::Buf; N])> {
        while self.bufs.len() < N {
            self.bufs.push(be.alloc(0)?);
        }
        let mut it = self.bufs.iter_mut();
        let bufs = core::array::from_fn(|_| it.next().expect("at least N buffers exist"));
        let lists = WsLists {
            owner: &mut self.owner,
            topk: &mut self.topk,
            ids: &mut self.ids,
            exclude: &mut self.exclude,
            state: &mut self.state,
            parts: &mut self.parts,
            lens: &mut self.lens,
            topks: &mut self.topks,
            offsets: &mut self.offsets,
        };
        Ok((lists, bufs))
    }
}

/// The host-side parts of a workspace.
#[derive(Debug)]
pub(crate) struct WsLists<'a, B: Backend> {
    pub topk: &'a mut TopK,
    pub ids: &'a mut Vec<u32>,
    pub exclude: &'a mut Vec<u32>,
    pub state: &'a mut Option<ArchState<B>>,
    pub owner: &'a mut u64,
    pub parts: &'a mut Vec<TopK>,
    pub lens: &'a mut Vec<usize>,
    pub topks: &'a mut Vec<TopK>,
    pub offsets: &'a mut Vec<usize>,
}
