//! The compute backend, at block granularity.
//!
//! Models are written once against [`Backend`]: they hold blocks ([`crate::blocks`]) whose
//! weights are `B::Param` and they pass activations as `B::Buf` buffers taken from a
//! [`crate::Workspace`]. A backend implements each block as a whole (a linear layer with its
//! activation, a residual + LayerNorm attention sublayer, a GRU layer over a sequence, a
//! NextItNet residual block), so a device backend can fuse inside a block and keep activations
//! resident without the models changing. Activations are row-major `[rows, width]` starting at
//! element 0 of their buffer unless an argument says otherwise.
//!
//! [`Cpu`](crate::cpu::Cpu) is the reference implementation; a build without a device
//! backend still compiles every model against this trait.

use crate::blocks::{
    AttentionBlock, CaserConvs, Embedding, FeedForward, GruLayer, ItemTable, LayerNorm, Linear,
    NextItNetBlock,
};
use crate::error::Result;
use crate::weights::Tensor;
use alloc::vec::Vec;
use seqrec_kernels::cpu::activation::Activation;
use seqrec_kernels::cpu::topk::TopK;

/// A compute backend. See the module docs.
pub trait Backend: Sized + Send + Sync + core::fmt::Debug + 'static {
    /// A weight tensor resident where this backend computes.
    type Param: Send + Sync + core::fmt::Debug;
    /// An activation buffer (grow-only; reused across requests through a workspace).
    type Buf: Send + core::fmt::Debug;

    /// Short name (`"cpu"`, `"cuda"`).
    fn name(&self) -> &'static str;

    /// Moves (or, on the CPU, references) a host tensor for use by blocks.
    fn upload(&self, tensor: &Tensor) -> Result<Self::Param>;
    /// A new zero-filled buffer of `len` values.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;
    /// Grows `buf` to hold at least `len` values (contents may be lost).
    fn ensure(&self, buf: &mut Self::Buf, len: usize) -> Result<()>;
    /// Sets the first `len` values of `buf` to zero (growing it if needed).
    fn zero(&self, buf: &mut Self::Buf, len: usize) -> Result<()>;
    /// Copies `src` (host) into `dst` at element offset `offset`.
    fn write(&self, src: &[f32], dst: &mut Self::Buf, offset: usize) -> Result<()>;
    /// Copies `dst.len()` values of `src` starting at element `offset` to the host.
    fn read(&self, src: &Self::Buf, offset: usize, dst: &mut [f32]) -> Result<()>;
    /// Copies `rows` rows of `width` values from `src` (starting at row `src_row`) into `dst`
    /// (starting at row `dst_row`).
    fn copy_rows(
        &self,
        src: &Self::Buf,
        src_row: usize,
        dst: &mut Self::Buf,
        dst_row: usize,
        rows: usize,
        width: usize,
    ) -> Result<()>;

    /// `out[i] = table[ids[i]] (+ pos[pos0 + i])`, `[ids.len(), dim]`. Ids are validated by the
    /// caller.
    fn embedding(
        &self,
        table: &Embedding<Self>,
        ids: &[u32],
        positions: Option<(&Embedding<Self>, usize)>,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// [`Backend::embedding`] for a batch of sequences stacked row-wise: `ids` is the
    /// concatenation of sequences of `lens[s]` ids, and the positions (when given) restart at 0
    /// for every sequence. `out` is `[ids.len(), dim]`.
    fn embedding_seqs(
        &self,
        table: &Embedding<Self>,
        ids: &[u32],
        lens: &[usize],
        positions: Option<&Embedding<Self>>,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// `out = act(x·Wᵀ + b)` over `rows` rows.
    fn linear(
        &self,
        lin: &Linear<Self>,
        x: &Self::Buf,
        rows: usize,
        act: Activation,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// In-place LayerNorm over `rows` rows.
    fn layer_norm(&self, ln: &LayerNorm<Self>, x: &mut Self::Buf, rows: usize) -> Result<()>;

    /// The post-LN multi-head causal self-attention sublayer of a BERT/SASRec layer:
    /// for the `rows` new rows `x` at absolute positions `pos0 .. pos0 + rows`, appends their keys
    /// and values to `cache` (so the cache holds positions `0 .. pos0 + rows` afterwards), and
    /// for the rows `q_from .. rows` computes `LN(dense(attention) + x)` into `out`
    /// (`[rows - q_from, H]`). A full encode is `pos0 = 0, q_from = 0`; SASRec's last layer
    /// needs only its last row (`q_from = rows - 1`); a session step is `rows = 1`.
    fn attention(
        &self,
        blk: &AttentionBlock<Self>,
        x: &Self::Buf,
        rows: usize,
        pos0: usize,
        q_from: usize,
        cache: &mut KvCache<Self>,
        scratch: &mut Self::Buf,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// [`Backend::attention`] over a batch of independent sequences stacked row-wise in `x`
    /// (`[Σ lens, H]`): sequence `s` holds `lens[s]` rows at positions `0 .. lens[s]`, starting at
    /// row `Σ_{t<s} lens[t]`. Every row is computed (`out` is `[Σ lens, H]`), or with
    /// `last_only` only each sequence's last row (`out` is `[lens.len(), H]`, row `s` for
    /// sequence `s`), as SASRec's last layer needs. Keys and values are not kept. Each
    /// sequence's rows equal those of a separate [`Backend::attention`] call up to f32
    /// summation order.
    fn attention_seqs(
        &self,
        blk: &AttentionBlock<Self>,
        x: &Self::Buf,
        lens: &[usize],
        last_only: bool,
        scratch: &mut Self::Buf,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// Point-wise feed-forward sublayer: `out = LN(dense_2(act(dense_1(x))) + x)`.
    fn feed_forward(
        &self,
        blk: &FeedForward<Self>,
        x: &Self::Buf,
        rows: usize,
        scratch: &mut Self::Buf,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// One GRU layer over `steps` rows of `x`, from and into the hidden state `h`
    /// (`[hidden]`), writing every step's hidden state to `out` (`[steps, hidden]`).
    fn gru(
        &self,
        layer: &GruLayer<Self>,
        x: &Self::Buf,
        steps: usize,
        h: &mut Self::Buf,
        scratch: &mut Self::Buf,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// A NextItNet residual block over `len` rows: `mid = ReLU(LN1(conv_d(x)))`,
    /// `out = ReLU(LN2(conv_2d(mid))) + x`, computing rows `from .. len` of `mid` and `out` only
    /// (rows before `from` of `mid` are read, as computed by an earlier call; this is how a
    /// session extends its cached activations by one event).
    fn nextitnet_block(
        &self,
        blk: &NextItNetBlock<Self>,
        x: &Self::Buf,
        len: usize,
        from: usize,
        mid: &mut Self::Buf,
        scratch: &mut Self::Buf,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// Caser's convolutions over the `[L, E]` image `x`: vertical (no activation) then
    /// horizontal (ReLU + max-pool over time) for every height, concatenated into `out`
    /// (`[nv·E + nh·L]`).
    fn caser_convs(
        &self,
        blk: &CaserConvs<Self>,
        x: &Self::Buf,
        scratch: &mut Self::Buf,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// Catalog scores `out[r, i] = h[r] · item_i` for `rows` user vectors.
    fn scores(
        &self,
        items: &ItemTable<Self>,
        h: &Self::Buf,
        rows: usize,
        out: &mut [f32],
    ) -> Result<()>;

    /// Scores of the listed items only (`out[i] = h · item_{ids[i]}`), for re-ranking.
    fn score_items(
        &self,
        items: &ItemTable<Self>,
        h: &Self::Buf,
        ids: &[u32],
        out: &mut [f32],
    ) -> Result<()>;

    /// Top-k over the catalog for one user vector (row 0 of `h`), skipping the sorted ids in
    /// `exclude`, into `topk` (which the caller resets and reads). A backend may split the scan
    /// (across threads): `parts` holds the extra selectors it needs, grown on first use.
    fn topk(
        &self,
        items: &ItemTable<Self>,
        h: &Self::Buf,
        exclude: &[u32],
        topk: &mut TopK,
        parts: &mut Vec<TopK>,
    ) -> Result<()>;

    /// Top-k over the catalog for the `topks.len()` user vectors in the rows of `h`, user `r`
    /// skipping the sorted ids `excludes[offsets[r] .. offsets[r + 1]]`, into `topks[r]` (reset
    /// and read by the caller). The scores equal those [`Backend::topk`] computes for the same
    /// user vector up to f32 rounding. `scratch` holds a block of scores.
    fn topk_rows(
        &self,
        items: &ItemTable<Self>,
        h: &Self::Buf,
        excludes: &[u32],
        offsets: &[usize],
        topks: &mut [TopK],
        scratch: &mut Self::Buf,
    ) -> Result<()>;
}

/// Keys and values of one attention layer for positions `0 .. len`, capacity `max_len` rows.
#[derive(Debug)]
pub struct KvCache<B: Backend> {
    /// Keys, `[max_len, H]`.
    pub k: B::Buf,
    /// Values, `[max_len, H]`.
    pub v: B::Buf,
    /// Rows filled.
    pub len: usize,
    /// Capacity in rows.
    pub max_len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `max_len` positions of width `width`.
    pub fn new(be: &B, max_len: usize, width: usize) -> Result<Self> {
        Ok(KvCache {
            k: be.alloc(max_len * width)?,
            v: be.alloc(max_len * width)?,
            len: 0,
            max_len,
        })
    }
}
