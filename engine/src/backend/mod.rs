//! The compute backend, at block granularity.
//!
//! Models are written once against [`Backend`]: they hold blocks ([`crate::blocks`]) whose
//! weights live on the backend and pass activations as `B::Buf` buffers lent by a workspace.
//! Nothing in a model touches activation values on the host: every operation on them is a
//! method of this trait, so a device backend keeps them resident. The host computes only what
//! derives from the request itself (ids, positions, per-step returns, knob values) and hands
//! it over as small slices.
//!
//! Activations are row-major `[rows, width]` starting at element 0 of their buffer unless an
//! [`At`] argument places them elsewhere. Every method grows its output buffers as needed.
//!
//! # The required core
//!
//! A backend implements these, and inherits every other method as a composition of them:
//!
//! | group | methods |
//! |---|---|
//! | storage | [`name`](Backend::name), [`upload`](Backend::upload), [`upload_weight`](Backend::upload_weight), [`upload_items`](Backend::upload_items), [`ensure`](Backend::ensure), [`write`](Backend::write), [`read`](Backend::read) |
//! | element-wise | [`copy`](Backend::copy), [`fill`](Backend::fill), [`axpy`](Backend::axpy), [`mul`](Backend::mul), [`activate`](Backend::activate) |
//! | blocks | [`gather`](Backend::gather), [`linear`](Backend::linear), [`layer_norm`](Backend::layer_norm), [`mha`](Backend::mha), [`gru`](Backend::gru), [`causal_conv`](Backend::causal_conv), [`caser_convs`](Backend::caser_convs) |
//! | scoring | [`scores`](Backend::scores), [`score_items`](Backend::score_items), [`topk`](Backend::topk) |
//!
//! The provided methods ([`embedding`](Backend::embedding), [`attention`](Backend::attention),
//! [`attention_seqs`](Backend::attention_seqs), [`cross_attention`](Backend::cross_attention),
//! [`feed_forward`](Backend::feed_forward), [`add_layer_norm`](Backend::add_layer_norm),
//! [`nextitnet_block`](Backend::nextitnet_block), the DiT blocks
//! ([`dit_block`](Backend::dit_block), [`temporal_block`](Backend::temporal_block),
//! [`final_layer`](Backend::final_layer), with [`modulate`](Backend::modulate),
//! [`gated_add`](Backend::gated_add), [`self_attention`](Backend::self_attention) and
//! [`timestep_embedding`](Backend::timestep_embedding)), [`topk_rows`](Backend::topk_rows), ...)
//! are written in [`compose`] from the core; a backend overrides those it fuses, and the
//! compositions stay as the slow oracles its fused versions are tested against.
//! [`Cpu`](crate::cpu::Cpu) is the reference backend and overrides the hot blocks.

pub mod compose;

use crate::blocks::{
    Activation, AttentionBlock, CaserConvs, CausalConv, CrossAttention, DitBlock, Embedding,
    FeedForward, FinalLayer, GruLayer, ItemTable, LayerNorm, Linear, NextItNetBlock, SelfAttention,
    TemporalBlock,
};
use crate::error::Result;
use crate::weights::{DType, Tensor};
use core::ops::Range;

/// Where a block of rows lies in a buffer: row `i` of the block starts at element
/// `offset + i·stride`. A stride of 0 repeats one row (a broadcast source).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct At {
    /// Element offset of the first row.
    pub offset: usize,
    /// Elements from one row to the next.
    pub stride: usize,
}

impl At {
    /// Contiguous rows of `width` values starting at row `row`.
    pub const fn rows(row: usize, width: usize) -> At {
        At {
            offset: row * width,
            stride: width,
        }
    }

    /// Rows `stride` apart starting at element `offset` (e.g. one token slot of every step).
    pub const fn strided(offset: usize, stride: usize) -> At {
        At { offset, stride }
    }

    /// One row at element `offset`, repeated.
    pub const fn repeat(offset: usize) -> At {
        At { offset, stride: 0 }
    }

    /// Elements spanned by `rows` rows of `cols` values (0 for no rows).
    pub fn span(&self, rows: usize, cols: usize) -> usize {
        if rows == 0 {
            0
        } else {
            self.offset + (rows - 1) * self.stride + cols
        }
    }
}

/// Checks that `rows` rows of `cols` values at `at` lie inside `len` values: every backend's
/// bounds check of a row block it reads.
pub fn check_rows(what: &str, len: usize, at: At, rows: usize, cols: usize) -> Result<()> {
    let span = at.span(rows, cols);
    if span > len {
        return Err(crate::Error::InvalidArgument(alloc::format!(
            "{what}: {rows} rows of {cols} at offset {} stride {} need {span} values, the buffer \
             has {len}",
            at.offset,
            at.stride
        )));
    }
    Ok(())
}

/// Checks the arguments of a [`Backend::mha`] call, given the lengths of the query, key and
/// value buffers: rows of `H` values that do not overlap and lie inside their buffers, and one
/// padding flag per key.
pub fn check_mha(
    shape: MhaShape,
    q: (usize, At),
    k: (usize, At),
    v: (usize, At),
    mask: Mask<'_>,
) -> Result<()> {
    let h = shape.hidden();
    let (lq, lk) = (shape.lq, shape.lk);
    for (what, at, rows) in [("queries", q.1, lq), ("keys", k.1, lk), ("values", v.1, lk)] {
        if rows > 1 && at.stride < h {
            return Err(crate::Error::InvalidArgument(alloc::format!(
                "attention {what}: rows of {h} at stride {}",
                at.stride
            )));
        }
    }
    check_rows("attention queries", q.0, q.1, lq, h)?;
    check_rows("attention keys", k.0, k.1, lk, h)?;
    check_rows("attention values", v.0, v.1, lk, h)?;
    match mask {
        Mask::KeyPadding(valid) if valid.len() != lk => {
            Err(crate::Error::InvalidArgument(alloc::format!(
                "attention over {lk} keys with {} padding flags",
                valid.len()
            )))
        }
        _ => Ok(()),
    }
}

/// A source of rows for the element-wise methods: an activation buffer or a weight tensor.
#[derive(Debug)]
pub enum Src<'a, B: Backend> {
    /// An activation buffer.
    Buf(&'a B::Buf),
    /// A weight tensor.
    Param(&'a B::Param),
}

impl<B: Backend> Clone for Src<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for Src<'_, B> {}

/// The factors of [`Backend::axpy`]: one for every row, or one per row.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Scale<'a> {
    /// Every row by the same factor.
    All(f32),
    /// Row `i` by `factors[i]`.
    Rows(&'a [f32]),
}

impl Scale<'_> {
    /// The factor of row `i`.
    pub fn of(&self, i: usize) -> f32 {
        match self {
            Scale::All(s) => *s,
            Scale::Rows(s) => s[i],
        }
    }
}

/// Which keys a query of [`Backend::mha`] sees.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mask<'a> {
    /// Every key (bidirectional self-attention, cross-attention).
    None,
    /// Query row `i` sees keys `0 ..= q_offset + i` (its absolute position is `q_offset + i`).
    Causal {
        /// Absolute position of query row 0.
        q_offset: usize,
    },
    /// Every key `j` with `valid[j]` (`[lk]`): padded keys get no weight. A query with no
    /// visible key gets zeros.
    KeyPadding(&'a [bool]),
}

/// Which positions a self-attention block's queries see.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SelfMask {
    /// Positions up to their own (decoders: SASRec, the Decision Transformers).
    Causal,
    /// Every position of the sequence (encoders: BERT, InterDT's two tokens, DiT).
    All,
}

/// Sizes of one multi-head attention call ([`Backend::mha`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MhaShape {
    /// Query rows.
    pub lq: usize,
    /// Key and value rows.
    pub lk: usize,
    /// Heads.
    pub n_heads: usize,
    /// Width of one head; a row is `n_heads·head_dim` wide.
    pub head_dim: usize,
}

impl MhaShape {
    /// Width of a row of queries, keys, values or outputs.
    pub fn hidden(&self) -> usize {
        self.n_heads * self.head_dim
    }
}

/// The scalars of one reverse step of a Gaussian diffusion (DDPM, `spec/pdit.md` §4) at step
/// `j`: the mean `(z − eps_coef·ε)·inv_sqrt_alpha` and the log-variance, either the learned
/// range `f·max_log + (1 − f)·min_log` with `f = (v + 1)/2` (v not clamped) or `fixed_log`.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct DdpmStep {
    /// β_j/√(1 − ᾱ_j).
    pub eps_coef: f64,
    /// 1/√α_j.
    pub inv_sqrt_alpha: f64,
    /// The learned range's low end, log β̃ᶜ_j.
    pub min_log: f64,
    /// The learned range's high end, log β_j.
    pub max_log: f64,
    /// Whether v is read (else `fixed_log`).
    pub learn_sigma: bool,
    /// The fixed log-variance (DiT's FIXED_LARGE).
    pub fixed_log: f64,
}

impl DdpmStep {
    /// The mean and log-variance at one element, in f64.
    #[inline]
    pub fn mean_log_var(&self, z: f64, eps: f64, v: f64) -> (f64, f64) {
        let mean = (z - self.eps_coef * eps) * self.inv_sqrt_alpha;
        let lv = if self.learn_sigma {
            let f = (v + 1.0) / 2.0;
            f * self.max_log + (1.0 - f) * self.min_log
        } else {
            self.fixed_log
        };
        (mean, lv)
    }

    /// The next latent at one element: `mean + exp(½·log σ²)·η`, or the mean without noise.
    #[inline]
    pub fn next(&self, z: f64, eps: f64, v: f64, noise: Option<f64>) -> f64 {
        let (mean, lv) = self.mean_log_var(z, eps, v);
        match noise {
            Some(n) => mean + libm::exp(lv / 2.0) * n,
            None => mean,
        }
    }
}

/// Scratch buffers a block may use freely during one call (grown on demand; their contents do
/// not survive the call). The compositions use `proj` for projections, `ctx` for attention
/// outputs and inner activations, `work` for kernel scratch, and, around a sublayer that uses
/// those three, `cond` for a DiT block's modulation rows, `rows` for the sublayer's input and
/// `out` for its output; a fused block may use any.
#[derive(Debug)]
pub struct BlockScratch<B: Backend> {
    /// Projections (Q/K/V, feed-forward inner rows).
    pub proj: B::Buf,
    /// Attention outputs, second products.
    pub ctx: B::Buf,
    /// Kernel scratch.
    pub work: B::Buf,
    /// Conditioning rows (adaLN shifts, scales and gates).
    pub cond: B::Buf,
    /// A sublayer's input rows (normalised, modulated).
    pub rows: B::Buf,
    /// A sublayer's output rows, before the residual.
    pub out: B::Buf,
}

impl<B: Backend> Default for BlockScratch<B> {
    fn default() -> Self {
        BlockScratch {
            proj: B::Buf::default(),
            ctx: B::Buf::default(),
            work: B::Buf::default(),
            cond: B::Buf::default(),
            rows: B::Buf::default(),
            out: B::Buf::default(),
        }
    }
}

/// A compute backend. See the module docs for the required core.
pub trait Backend: Sized + Send + Sync + core::fmt::Debug + 'static {
    /// An f32 weight tensor resident where this backend computes (biases, norms, tables).
    type Param: Send + Sync + core::fmt::Debug;
    /// The weight matrix of a linear layer, `[out, in]`, in its storage dtype.
    type Weight: Send + Sync + core::fmt::Debug;
    /// The scoring copy of an item table, in its storage dtype.
    type Items: Send + Sync + core::fmt::Debug;
    /// An activation buffer (grow-only; reused across requests through a workspace).
    type Buf: Send + Default + core::fmt::Debug;
    /// Per-workspace scratch of the catalog scans (selectors, score blocks).
    type Scratch: Send + Default + core::fmt::Debug;

    // ----- storage (required)

    /// Short name (`"cpu"`, `"cuda"`).
    fn name(&self) -> &'static str;

    /// Moves (or, on the CPU, references) a host tensor for use by blocks.
    fn upload(&self, tensor: &Tensor) -> Result<Self::Param>;

    /// The `[out, in]` weight matrix of a linear layer, stored as `dtype` (`F32` as given;
    /// a backend may accept compact storages such as `F16` or `I16` with per-row scales and
    /// refuse the others with [`crate::Error::Unsupported`]).
    fn upload_weight(&self, w: &Tensor, dtype: DType) -> Result<Self::Weight>;

    /// The scoring copy of an item table `[rows, dim]` stored as `dtype` (`F32`, `F16`,
    /// `BF16`, `I8`; see [`crate::LoadOptions::item_dtype`]).
    fn upload_items(&self, table: &Tensor, dtype: DType) -> Result<Self::Items>;

    /// The filters of a causal convolution, `[c_out, c_in, 1, k]` (PyTorch's `Conv2d` layout),
    /// in the layout [`Backend::causal_conv`] reads: by default as stored.
    fn upload_conv(&self, w: &Tensor) -> Result<Self::Param> {
        self.upload(w)
    }

    /// Grows `buf` to hold at least `len` values, keeping its contents.
    fn ensure(&self, buf: &mut Self::Buf, len: usize) -> Result<()>;

    /// Copies `src` (host) into `dst` at element offset `offset` (growing `dst`).
    fn write(&self, src: &[f32], dst: &mut Self::Buf, offset: usize) -> Result<()>;

    /// Copies `dst.len()` values of `src` starting at element `offset` to the host.
    fn read(&self, src: &Self::Buf, offset: usize, dst: &mut [f32]) -> Result<()>;

    // ----- element-wise (required)

    /// `dst[to, row i] = src[from, row i]` for `rows` rows of `cols` values (a strided 2-D copy:
    /// concatenation, token interleaving, broadcast of one row with `from.stride = 0`).
    fn copy(
        &self,
        src: Src<'_, Self>,
        from: At,
        dst: &mut Self::Buf,
        to: At,
        rows: usize,
        cols: usize,
    ) -> Result<()>;

    /// Sets `rows` rows of `cols` values of `dst` at `to` to `value`.
    fn fill(&self, dst: &mut Self::Buf, to: At, rows: usize, cols: usize, value: f32)
    -> Result<()>;

    /// `dst[to, row i] += scale_i · src[from, row i]`. Destination rows must not overlap.
    fn axpy(
        &self,
        src: Src<'_, Self>,
        from: At,
        scale: Scale<'_>,
        dst: &mut Self::Buf,
        to: At,
        rows: usize,
        cols: usize,
    ) -> Result<()>;

    /// `dst[to, row i] *= offset + src[from, row i]` (`offset` 1: adaLN's `1 + scale`; 0: a
    /// gate). Destination rows must not overlap.
    fn mul(
        &self,
        src: Src<'_, Self>,
        from: At,
        offset: f32,
        dst: &mut Self::Buf,
        to: At,
        rows: usize,
        cols: usize,
    ) -> Result<()>;

    /// `x[i] = act(x[i])` for the elements `i` in `range`.
    fn activate(&self, act: Activation, x: &mut Self::Buf, range: Range<usize>) -> Result<()>;

    // ----- blocks (required)

    /// `out[i] = table[ids[i]]`, `[ids.len(), dim]`. Ids are validated by the caller.
    fn gather(&self, table: &Embedding<Self>, ids: &[u32], out: &mut Self::Buf) -> Result<()>;

    /// `out = act(x·Wᵀ + b)` over `rows` rows.
    fn linear(
        &self,
        lin: &Linear<Self>,
        x: &Self::Buf,
        rows: usize,
        act: Activation,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// In-place LayerNorm of the rows `rows` (of width `ln.dim`) of `x`; without affine
    /// parameters when `ln` has none.
    fn layer_norm(&self, ln: &LayerNorm<Self>, x: &mut Self::Buf, rows: Range<usize>)
    -> Result<()>;

    /// Multi-head scaled-dot-product attention, scale `1/sqrt(head_dim)`: per head and query
    /// row `i`, `out_i = softmax(q_i·Kᵀ)·V` over the keys `mask` shows it. `q`, `k` and `v`
    /// are row blocks of buffers (e.g. the column blocks of one fused `[L, 3H]` projection);
    /// `out` gets `shape.lq` rows of `H` values. `work` is scratch.
    fn mha(
        &self,
        shape: MhaShape,
        q: (&Self::Buf, At),
        k: (&Self::Buf, At),
        v: (&Self::Buf, At),
        mask: Mask<'_>,
        out: (&mut Self::Buf, At),
        work: &mut Self::Buf,
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

    /// A dilated causal 1-D convolution over `len` rows of `x`:
    /// `out[t] = b + Σ_j W_j·x[t − (k−1−j)·d]` (rows before 0 are zero), computing rows
    /// `from .. len` only (earlier rows of `out` are left as they are: this is how a session
    /// extends cached activations by one event).
    fn causal_conv(
        &self,
        conv: &CausalConv<Self>,
        x: &Self::Buf,
        len: usize,
        from: usize,
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

    // ----- scoring (required)

    /// Catalog scores `out[r, i] = h[r] · item_i` for `rows` user vectors.
    fn scores(
        &self,
        items: &ItemTable<Self>,
        h: &Self::Buf,
        rows: usize,
        out: &mut [f32],
    ) -> Result<()>;

    /// Scores of the listed items only (`out[i] = h · item_{ids[i]}`, row 0 of `h`), for
    /// re-ranking.
    fn score_items(
        &self,
        items: &ItemTable<Self>,
        h: &Self::Buf,
        ids: &[u32],
        out: &mut [f32],
    ) -> Result<()>;

    /// The `k` best items of the catalog for the user vector in row `row` of `h`, skipping
    /// the sorted ids in `exclude`: written best first to `out_items` / `out_scores` (at
    /// least `k` long each); returns how many (fewer than `k` when the catalog minus
    /// exclusions is smaller). Ties go to the lower id.
    fn topk(
        &self,
        items: &ItemTable<Self>,
        h: &Self::Buf,
        row: usize,
        k: usize,
        exclude: &[u32],
        scratch: &mut Self::Scratch,
        out_items: &mut [u32],
        out_scores: &mut [f32],
    ) -> Result<usize>;

    // ----- provided: compositions of the core (see `compose`)

    /// Sets the first `len` values of `buf` to zero (growing it if needed).
    fn zero(&self, buf: &mut Self::Buf, len: usize) -> Result<()> {
        self.fill(buf, At::rows(0, len), 1, len, 0.0)
    }

    /// Copies `rows` rows of `width` values from `src` (from row `src_row`) into `dst` (from
    /// row `dst_row`).
    fn copy_rows(
        &self,
        src: &Self::Buf,
        src_row: usize,
        dst: &mut Self::Buf,
        dst_row: usize,
        rows: usize,
        width: usize,
    ) -> Result<()> {
        self.copy(
            Src::Buf(src),
            At::rows(src_row, width),
            dst,
            At::rows(dst_row, width),
            rows,
            width,
        )
    }

    /// `out[i] = table[ids[i]] (+ pos[pos0 + i])`, `[ids.len(), dim]`.
    fn embedding(
        &self,
        table: &Embedding<Self>,
        ids: &[u32],
        positions: Option<(&Embedding<Self>, usize)>,
        out: &mut Self::Buf,
    ) -> Result<()> {
        compose::embedding(self, table, ids, positions, out)
    }

    /// [`Backend::embedding`] for a batch of sequences stacked row-wise: `ids` is the
    /// concatenation of sequences of `lens[s]` ids, and the positions (when given) restart at 0
    /// for every sequence.
    fn embedding_seqs(
        &self,
        table: &Embedding<Self>,
        ids: &[u32],
        lens: &[usize],
        positions: Option<&Embedding<Self>>,
        out: &mut Self::Buf,
    ) -> Result<()> {
        compose::embedding_seqs(self, table, ids, lens, positions, out)
    }

    /// `out = LN(x + residual)` over `rows` rows.
    fn add_layer_norm(
        &self,
        ln: &LayerNorm<Self>,
        x: &Self::Buf,
        residual: &Self::Buf,
        rows: usize,
        out: &mut Self::Buf,
    ) -> Result<()> {
        compose::add_layer_norm(self, ln, x, residual, rows, out)
    }

    /// The post-LN multi-head self-attention sublayer of a BERT/SASRec layer: for the `rows`
    /// new rows `x` at absolute positions `pos0 .. pos0 + rows`, appends their keys and values
    /// to `cache` (which then holds positions `0 .. pos0 + rows`), and for the rows
    /// `q_from .. rows` computes `LN(dense(attention) + x)` into `out` (`[rows − q_from, H]`),
    /// each query seeing the cached positions `mask` allows. A full encode is
    /// `pos0 = 0, q_from = 0`; SASRec's last layer needs only its last row
    /// (`q_from = rows − 1`); a session step is `rows = 1`.
    fn attention(
        &self,
        blk: &AttentionBlock<Self>,
        x: &Self::Buf,
        rows: usize,
        pos0: usize,
        q_from: usize,
        mask: SelfMask,
        cache: &mut KvCache<Self>,
        tmp: &mut BlockScratch<Self>,
        out: &mut Self::Buf,
    ) -> Result<()> {
        compose::attention(self, blk, x, rows, pos0, q_from, mask, cache, tmp, out)
    }

    /// [`Backend::attention`] over a batch of independent sequences stacked row-wise in `x`
    /// (`[Σ lens, H]`): sequence `s` holds `lens[s]` rows at positions `0 .. lens[s]`. Every row
    /// is computed (`out` is `[Σ lens, H]`), or with `last_only` only each sequence's last row
    /// (`out` is `[lens.len(), H]`). Keys and values are not kept. Each sequence's rows equal
    /// those of a separate [`Backend::attention`] call up to f32 summation order.
    fn attention_seqs(
        &self,
        blk: &AttentionBlock<Self>,
        x: &Self::Buf,
        lens: &[usize],
        last_only: bool,
        mask: SelfMask,
        tmp: &mut BlockScratch<Self>,
        out: &mut Self::Buf,
    ) -> Result<()> {
        compose::attention_seqs(self, blk, x, lens, last_only, mask, tmp, out)
    }

    /// Cross-attention from `rows` query rows `x` to `ctx_rows` context rows `ctx`:
    /// `out = proj(attention(q(x), kv(ctx)))`, `[rows, H]`, padded context rows hidden by
    /// `ctx_valid` (`[ctx_rows]`) when given.
    fn cross_attention(
        &self,
        blk: &CrossAttention<Self>,
        x: &Self::Buf,
        rows: usize,
        ctx: &Self::Buf,
        ctx_rows: usize,
        ctx_valid: Option<&[bool]>,
        tmp: &mut BlockScratch<Self>,
        out: &mut Self::Buf,
    ) -> Result<()> {
        compose::cross_attention(self, blk, x, rows, ctx, ctx_rows, ctx_valid, tmp, out)
    }

    /// Point-wise feed-forward sublayer: `out = LN(dense_2(act(dense_1(x))) + x)`.
    fn feed_forward(
        &self,
        blk: &FeedForward<Self>,
        x: &Self::Buf,
        rows: usize,
        tmp: &mut BlockScratch<Self>,
        out: &mut Self::Buf,
    ) -> Result<()> {
        compose::feed_forward(self, blk, x, rows, tmp, out)
    }

    /// A NextItNet residual block over `len` rows: `mid = ReLU(LN1(conv_d(x)))`,
    /// `out = ReLU(LN2(conv_2d(mid))) + x`, computing rows `from .. len` of `mid` and `out` only
    /// (rows before `from` of `mid` are read, as computed by an earlier call).
    fn nextitnet_block(
        &self,
        blk: &NextItNetBlock<Self>,
        x: &Self::Buf,
        len: usize,
        from: usize,
        mid: &mut Self::Buf,
        tmp: &mut BlockScratch<Self>,
        out: &mut Self::Buf,
    ) -> Result<()> {
        compose::nextitnet_block(self, blk, x, len, from, mid, tmp, out)
    }

    /// adaLN modulation (DiT): `x_r = LN(x_r)·(1 + scale_g) + shift_g` for the `rows` rows of
    /// `x` (width `dim`), the LayerNorm without affine parameters (`eps`). The rows go in
    /// groups of `group` (one sample's tokens), group `g` reading the `g`-th row of the `shift`
    /// and `scale` blocks. `work` is scratch.
    fn modulate(
        &self,
        x: &mut Self::Buf,
        rows: usize,
        dim: usize,
        eps: f32,
        group: usize,
        shift: (&Self::Buf, At),
        scale: (&Self::Buf, At),
        work: &mut Self::Buf,
    ) -> Result<()> {
        compose::modulate(self, x, rows, dim, eps, group, shift, scale, work)
    }

    /// The gated residual of DiT: `x_r += gate_g ⊙ y_r` for the `rows` rows (width `dim`) in
    /// groups of `group`, group `g` reading the `g`-th row of the `gate` block. `y` is
    /// consumed (it may be overwritten).
    fn gated_add(
        &self,
        x: &mut Self::Buf,
        y: &mut Self::Buf,
        rows: usize,
        dim: usize,
        group: usize,
        gate: (&Self::Buf, At),
    ) -> Result<()> {
        compose::gated_add(self, x, y, rows, dim, group, gate)
    }

    /// Self-attention over `groups` independent groups of `tokens` rows of `x` (every token
    /// of a group sees the group's tokens): `out = proj(attention(qkv(x)))`, `[groups·tokens,
    /// H]`.
    fn self_attention(
        &self,
        att: &SelfAttention<Self>,
        x: &Self::Buf,
        groups: usize,
        tokens: usize,
        tmp: &mut BlockScratch<Self>,
        out: &mut Self::Buf,
    ) -> Result<()> {
        compose::self_attention(self, att, x, groups, tokens, tmp, out)
    }

    /// A DiT block ([`DitBlock`]) in place over `samples` samples of `tokens` rows of `x`
    /// (`[samples·tokens, H]`), sample `s` conditioned by row `s` of `cond` (`SiLU(c)`,
    /// `[samples, H]`).
    fn dit_block(
        &self,
        blk: &DitBlock<Self>,
        x: &mut Self::Buf,
        samples: usize,
        tokens: usize,
        cond: &Self::Buf,
        tmp: &mut BlockScratch<Self>,
    ) -> Result<()> {
        compose::dit_block(self, blk, x, samples, tokens, cond, tmp)
    }

    /// A temporal block ([`TemporalBlock`]) in place over `samples` samples of `tokens` rows of
    /// `x`, sample `s` attending to its `ctx` rows of `kv` (`[samples·ctx, 2H]`, the block's
    /// key/value projection of the history, [`Backend::linear`] of `blk.cross.kv`), those with
    /// `valid[s·ctx + j]` false hidden.
    fn temporal_block(
        &self,
        blk: &TemporalBlock<Self>,
        x: &mut Self::Buf,
        samples: usize,
        tokens: usize,
        kv: &Self::Buf,
        ctx: usize,
        valid: Option<&[bool]>,
        tmp: &mut BlockScratch<Self>,
    ) -> Result<()> {
        compose::temporal_block(self, blk, x, samples, tokens, kv, ctx, valid, tmp)
    }

    /// DiT's final layer ([`FinalLayer`]) over `samples` samples of `tokens` rows of `x`,
    /// sample `s` conditioned by row `s` of `cond` (`SiLU(c)`): `out` is `[samples·tokens, P]`.
    fn final_layer(
        &self,
        blk: &FinalLayer<Self>,
        x: &Self::Buf,
        samples: usize,
        tokens: usize,
        cond: &Self::Buf,
        tmp: &mut BlockScratch<Self>,
        out: &mut Self::Buf,
    ) -> Result<()> {
        compose::final_layer(self, blk, x, samples, tokens, cond, tmp, out)
    }

    /// The sinusoid timestep embedding (DiT's `TimestepEmbedder`) written at element `offset`
    /// of `out`: for `i < h = dim/2`, `f_i = exp(−ln(max_period)·i/h)`, the values
    /// `[cos(τ·f), sin(τ·f)]` (a trailing 0 for an odd `dim`), the arguments `τ·f_i` computed in
    /// f64.
    fn timestep_embedding(
        &self,
        tau: f64,
        dim: usize,
        max_period: f64,
        out: &mut Self::Buf,
        offset: usize,
    ) -> Result<()> {
        compose::timestep_embedding(self, tau, dim, max_period, out, offset)
    }

    /// One reverse diffusion step in place on the `rows` latents `z` (`[rows, d]`) from the
    /// network outputs `out` (row `r` at `r·width`: ε in its first `d` values, v in the next `d`
    /// when `step.learn_sigma`): `z_r ← mean + σ·η_r` with `η` the rows of `noise`, or the mean
    /// alone without noise (the chain's last step). Computed in f64 per element.
    fn ddpm_step(
        &self,
        out: &Self::Buf,
        width: usize,
        z: &mut Self::Buf,
        noise: Option<&Self::Buf>,
        rows: usize,
        d: usize,
        step: &DdpmStep,
    ) -> Result<()> {
        compose::ddpm_step(self, out, width, z, noise, rows, d, step)
    }

    /// [`Backend::topk`] for the `counts.len()` user vectors in the rows of `h`, user `r`
    /// skipping the sorted ids `excludes[offsets[r] .. offsets[r + 1]]` and writing to
    /// `out_items[r·k ..][..k]`, `out_scores[r·k ..][..k]`, and how many to `counts[r]`. The
    /// scores equal [`Backend::topk`]'s up to f32 rounding.
    fn topk_rows(
        &self,
        items: &ItemTable<Self>,
        h: &Self::Buf,
        k: usize,
        excludes: &[u32],
        offsets: &[usize],
        scratch: &mut Self::Scratch,
        out_items: &mut [u32],
        out_scores: &mut [f32],
        counts: &mut [usize],
    ) -> Result<()> {
        compose::topk_rows(
            self, items, h, k, excludes, offsets, scratch, out_items, out_scores, counts,
        )
    }
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
    /// Checks an attention call that appends `rows` positions at `pos0` and queries the rows
    /// `q_from ..`: the cache must hold `pos0 + rows` positions and a query row must remain.
    pub fn check_append(&self, rows: usize, pos0: usize, q_from: usize) -> Result<()> {
        let lk = pos0 + rows;
        if lk > self.max_len || q_from >= rows {
            return Err(crate::Error::InvalidArgument(alloc::format!(
                "attention over {lk} positions with a cache of {} (q_from {q_from}, rows {rows})",
                self.max_len
            )));
        }
        Ok(())
    }

    /// An empty cache for `max_len` positions of width `width`.
    pub fn new(be: &B, max_len: usize, width: usize) -> Result<Self> {
        let (mut k, mut v) = (B::Buf::default(), B::Buf::default());
        be.zero(&mut k, max_len * width)?;
        be.zero(&mut v, max_len * width)?;
        Ok(KvCache {
            k,
            v,
            len: 0,
            max_len,
        })
    }
}
