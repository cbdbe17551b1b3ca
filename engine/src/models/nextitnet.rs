//! NextItNet (RecBole `NextItNet`): residual blocks of dilated causal convolutions over the
//! right-padded window, read at the window's last position. See `spec/recbole-models.md` §3:
//! the padding rows are the stored `item_embedding[0]` and take part in the convolutions, so the
//! window is always the full `L` rows.
//!
//! Sessions keep every block's input and intermediate activations. The rows of real events are
//! causal and stay valid while the history fits the window; a new event recomputes the rows
//! from its position to the end of the window (the padded tail, which holds the output).

use crate::backend::Backend;
use crate::blocks::{Embedding, Linear, NextItNetBlock};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::weights::TensorLoader;
use alloc::format;
use alloc::vec::Vec;
use seqrec_kernels::cpu::activation::Activation;

/// RecBole's NextItNet.
#[derive(Debug)]
pub struct NextItNet<B: Backend> {
    pub(crate) item_emb: Embedding<B>,
    blocks: Vec<NextItNetBlock<B>>,
    final_layer: Linear<B>,
    emb: usize,
    max_len: usize,
}

/// Incremental state: the input of every block (`acts[b]`, `[L, E]`; `acts[B]` is the
/// output) and the first convolution's output inside every block.
#[derive(Debug)]
pub struct NextItNetState<B: Backend> {
    acts: Vec<B::Buf>,
    mids: Vec<B::Buf>,
    len: usize,
}

impl<B: Backend> NextItNet<B> {
    /// Loads the RecBole tensors. Defaults (RecBole's `NextItNet.yaml`): embedding_size 64,
    /// kernel_size 3, block_num 5, dilations [1, 4] (the list is repeated block_num times).
    pub fn load(
        be: &B,
        cfg: &Config,
        ld: &mut TensorLoader<'_>,
        n_items: usize,
        max_len: usize,
    ) -> Result<Self> {
        let emb = cfg.usize_or("embedding_size", 64)?;
        let kernel = cfg.usize_or("kernel_size", 3)?;
        let block_num = cfg.usize_or("block_num", 5)?;
        let dilations = cfg.usize_list_or("dilations", &[1, 4])?;
        if emb == 0 || kernel == 0 || dilations.contains(&0) {
            return Err(Error::Config(format!(
                "embedding_size ({emb}), kernel_size ({kernel}) and every dilation ({dilations:?}) must be positive"
            )));
        }
        let mut blocks = Vec::new();
        for (b, &d) in dilations
            .iter()
            .cycle()
            .take(dilations.len().saturating_mul(block_num))
            .enumerate()
        {
            blocks.push(NextItNetBlock::load(
                be,
                ld,
                &format!("residual_blocks.{b}"),
                emb,
                kernel,
                d,
            )?);
        }
        Ok(NextItNet {
            item_emb: Embedding::load(be, ld, "item_embedding.weight", n_items, emb)?,
            blocks,
            final_layer: Linear::load(be, ld, "final_layer", emb, emb, true)?,
            emb,
            max_len,
        })
    }

    /// Width of the user vector.
    pub fn dim(&self) -> usize {
        self.emb
    }

    /// An empty incremental state (buffers grow on first use).
    pub fn new_state(&self, be: &B) -> Result<NextItNetState<B>> {
        let n = self.blocks.len();
        let acts = (0..=n).map(|_| be.alloc(0)).collect::<Result<Vec<_>>>()?;
        let mids = (0..n).map(|_| be.alloc(0)).collect::<Result<Vec<_>>>()?;
        Ok(NextItNetState { acts, mids, len: 0 })
    }

    /// Recomputes blocks from row `from`, then reads the output at the last row.
    fn run_from(
        &self,
        be: &B,
        from: usize,
        state: &mut NextItNetState<B>,
        bufs: [&mut B::Buf; 2],
        out: &mut B::Buf,
    ) -> Result<()> {
        let [tmp, scratch] = bufs;
        let l = self.max_len;
        for (b, blk) in self.blocks.iter().enumerate() {
            let (inputs, outputs) = state.acts.split_at_mut(b + 1);
            be.nextitnet_block(
                blk,
                &inputs[b],
                l,
                from,
                &mut state.mids[b],
                scratch,
                &mut outputs[0],
            )?;
        }
        let last = state.acts.last().expect("at least the embedding buffer");
        be.copy_rows(last, l - 1, tmp, 0, 1, self.emb)?;
        be.linear(&self.final_layer, tmp, 1, Activation::Identity, out)
    }

    /// Encodes `window` (validated, at most `L` ids) from scratch into row 0 of `out`.
    /// `ids` is scratch for the padded window.
    pub fn encode(
        &self,
        be: &B,
        window: &[u32],
        ids: &mut Vec<u32>,
        state: &mut NextItNetState<B>,
        bufs: [&mut B::Buf; 2],
        out: &mut B::Buf,
    ) -> Result<()> {
        ids.clear();
        ids.extend_from_slice(window);
        ids.resize(self.max_len, 0);
        be.embedding(&self.item_emb, ids, None, &mut state.acts[0])?;
        state.len = window.len();
        self.run_from(be, 0, state, bufs, out)
    }

    /// Appends one event at row `state.len` (which must be below `L`; the state must come from
    /// [`Self::encode`] or earlier pushes, or be fresh) and writes the user vector to `out`.
    pub fn push(
        &self,
        be: &B,
        item: u32,
        ids: &mut Vec<u32>,
        state: &mut NextItNetState<B>,
        bufs: [&mut B::Buf; 2],
        out: &mut B::Buf,
    ) -> Result<()> {
        let pos = state.len;
        debug_assert!(pos < self.max_len);
        if pos == 0 {
            return self.encode(be, &[item], ids, state, bufs, out);
        }
        let [tmp, scratch] = bufs;
        be.embedding(&self.item_emb, &[item], None, tmp)?;
        be.copy_rows(tmp, 0, &mut state.acts[0], pos, 1, self.emb)?;
        state.len = pos + 1;
        self.run_from(be, pos, state, [tmp, scratch], out)
    }
}

impl<B: Backend> NextItNetState<B> {
    /// Real events in the window.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the window holds no event.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
