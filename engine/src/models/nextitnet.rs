//! NextItNet (RecBole `NextItNet`): residual blocks of dilated causal convolutions over the
//! right-padded window, read at the window's last position. See `spec/recbole-models.md` §3:
//! the padding rows are the stored `item_embedding[0]` and take part in the convolutions, so the
//! window is always the full `L` rows.
//!
//! Sessions keep every block's input and intermediate activations. The rows of real events are
//! causal and stay valid while the history fits the window; a new event recomputes the rows
//! from its position to the end of the window (the padded tail, which holds the output).

use super::{Architecture, LoadContext, Request, Scratch, restore_buf, save_buf};
use crate::backend::Backend;
use crate::blocks::{Activation, Embedding, Linear, NextItNetBlock};
use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::objectives::Objectives;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

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
    fn load_from(be: &B, cx: &mut LoadContext<'_, '_>) -> Result<Self> {
        let (cfg, n_items, max_len) = (cx.cfg, cx.n_items, cx.max_len);
        let ld = &mut *cx.ld;
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

    /// Recomputes blocks from row `from`, then reads the output at the last row.
    fn run_from(
        &self,
        be: &B,
        from: usize,
        state: &mut NextItNetState<B>,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<()> {
        let l = self.max_len;
        for (b, blk) in self.blocks.iter().enumerate() {
            let (inputs, outputs) = state.acts.split_at_mut(b + 1);
            let (x, mid) = (&inputs[b], &mut state.mids[b]);
            be.nextitnet_block(blk, x, l, from, mid, &mut s.tmp, &mut outputs[0])?;
        }
        let last = state.acts.last().expect("at least the embedding buffer");
        be.copy_rows(last, l - 1, &mut s.x, 0, 1, self.emb)?;
        be.linear(&self.final_layer, &s.x, 1, Activation::Identity, out)
    }
}

impl<B: Backend> Architecture<B> for NextItNet<B> {
    type State = NextItNetState<B>;
    const NAMES: &'static [&'static str] = &["nextitnet"];

    fn load(be: &B, _name: &'static str, cx: &mut LoadContext<'_, '_>) -> Result<Self> {
        Self::load_from(be, cx)
    }

    fn name(&self) -> &'static str {
        "nextitnet"
    }

    fn dim(&self) -> usize {
        self.emb
    }

    fn item_embedding(&self) -> &Embedding<B> {
        &self.item_emb
    }

    /// An empty incremental state (buffers grow on first use).
    fn new_state(&self, _be: &B) -> Result<NextItNetState<B>> {
        let n = self.blocks.len();
        let acts = (0..=n).map(|_| B::Buf::default()).collect();
        let mids = (0..n).map(|_| B::Buf::default()).collect();
        Ok(NextItNetState { acts, mids, len: 0 })
    }

    /// Encodes the window (at most `L` ids), right-padded to `L` rows, from scratch.
    fn encode(
        &self,
        be: &B,
        req: &Request<'_>,
        state: &mut NextItNetState<B>,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<()> {
        let ids = &mut s.ids;
        ids.clear();
        ids.extend_from_slice(req.window);
        ids.resize(self.max_len, 0);
        be.embedding(&self.item_emb, ids, None, &mut state.acts[0])?;
        state.len = req.window.len();
        self.run_from(be, 0, state, s, out)
    }

    /// Appends one event at row `state.len` (below `L`) and recomputes the rows from there.
    fn push(
        &self,
        be: &B,
        item: u32,
        objectives: &Objectives,
        state: &mut NextItNetState<B>,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<bool> {
        let pos = state.len;
        debug_assert!(pos < self.max_len);
        if pos == 0 {
            let req = Request {
                window: &[item],
                user: 0,
                objectives,
            };
            return self.encode(be, &req, state, s, out).map(|_| true);
        }
        be.embedding(&self.item_emb, &[item], None, &mut s.x)?;
        be.copy_rows(&s.x, 0, &mut state.acts[0], pos, 1, self.emb)?;
        state.len = pos + 1;
        self.run_from(be, pos, state, s, out).map(|_| true)
    }

    /// The rows of the real events in every block's input and intermediate activations: the
    /// rows after them (the padded tail) are recomputed by the next event before they are
    /// read, except the input embedding's padding rows, which restoring rebuilds.
    fn save_state(&self, be: &B, state: &NextItNetState<B>, w: &mut Writer) -> Result<()> {
        if state.len == 0 {
            return Ok(());
        }
        let rows = state.len * self.emb;
        for buf in state.acts.iter().chain(&state.mids) {
            save_buf(be, buf, rows, w)?;
        }
        Ok(())
    }

    fn restore_state(
        &self,
        be: &B,
        r: &mut Reader<'_>,
        window: usize,
        state: &mut NextItNetState<B>,
    ) -> Result<()> {
        let len = window.min(self.max_len);
        if len == 0 {
            return Ok(());
        }
        let (rows, full) = (len * self.emb, self.max_len * self.emb);
        // The padded window's input: item 0's embedding in every row, then the saved rows.
        be.embedding(
            &self.item_emb,
            &vec![0; self.max_len],
            None,
            &mut state.acts[0],
        )?;
        for (i, buf) in state.acts.iter_mut().chain(&mut state.mids).enumerate() {
            if i > 0 {
                be.zero(buf, full)?;
            }
            restore_buf(be, r, "NextItNet activations", rows, buf)?;
        }
        state.len = len;
        Ok(())
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
