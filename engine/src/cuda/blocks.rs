//! The CUDA backend's blocks: attention (the core and the fused self-attention sublayer with
//! its KV-cache append), the GRU layer, the convolutions, embeddings, the residual LayerNorm
//! and DiT's adaLN modulation and gated residual. Each checks every extent on the host before
//! its launch.

use super::device::{Arg, THREADS, stage};
use super::{Cuda, CudaBuf, norm_threads, u32_of};
use crate::backend::{
    At, Backend, BlockScratch, KvCache, Mask, MhaShape, SelfMask, check_mha, check_rows,
};
use crate::blocks::{
    Activation, AttentionBlock, CaserConvs, CausalConv, Embedding, GruLayer, LayerNorm,
};
use crate::error::{Error, Result};
use alloc::format;
use alloc::vec::Vec;

/// Largest dynamic shared memory a launch asks for (the default limit, every device).
const SMEM_MAX: usize = 48 * 1024;

impl Cuda {
    /// `out[i] = table[ids[i]] (+ pos[pos_rows[i]])`, ids and position rows checked here.
    pub(super) fn embedding_rows(
        &self,
        table: &Embedding<Cuda>,
        ids: &[u32],
        positions: Option<(&Embedding<Cuda>, &[u32])>,
        out: &mut CudaBuf,
    ) -> Result<()> {
        let d = table.dim;
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= table.rows) {
            return Err(Error::InvalidArgument(format!(
                "row {bad} of an embedding table of {} rows",
                table.rows
            )));
        }
        if let Some((pos, rows)) = positions
            && let Some(&bad) = rows.iter().find(|&&r| r as usize >= pos.rows)
        {
            return Err(Error::InvalidArgument(format!(
                "position {bad} of a position table of {} rows",
                pos.rows
            )));
        }
        let n = ids.len();
        self.ensure(out, n * d)?;
        if n == 0 {
            return Ok(());
        }
        let staged: Vec<u32> = match positions {
            Some((_, rows)) => ids.iter().chain(rows).copied().collect(),
            None => ids.to_vec(),
        };
        let idp = stage(&self.dev, &mut out.aux, &staged)?;
        let (tp, op) = (self.dev.ptr(&table.table.data, 0), self.dptr(out, 0));
        let (nn, dd) = (u32_of("ids", n)?, u32_of("width", d)?);
        let grid = self.dev.blocks_for(n * d);
        match positions {
            None => {
                let args = [
                    Arg::Ptr(op),
                    Arg::Ptr(tp),
                    Arg::Ptr(idp),
                    Arg::U32(nn),
                    Arg::U32(dd),
                ];
                // SAFETY: ids < table rows (checked), `out` holds n·d values, the staged ids n.
                unsafe {
                    self.dev
                        .launch("embedding", "gather_f32", (grid, 1), THREADS, 0, &args)
                }
            }
            Some((pos, _)) => {
                let args = [
                    Arg::Ptr(op),
                    Arg::Ptr(tp),
                    Arg::Ptr(idp),
                    Arg::Ptr(self.dev.ptr(&pos.table.data, 0)),
                    Arg::Ptr(idp + 4 * n as u64),
                    Arg::U32(nn),
                    Arg::U32(dd),
                ];
                // SAFETY: as above, and the n staged position rows < pos rows (checked).
                unsafe {
                    self.dev
                        .launch("embedding", "gather_f32_pos", (grid, 1), THREADS, 0, &args)
                }
            }
        }
    }

    /// `out = LN(x + residual)` over `rows` rows at raw addresses (checked by the caller).
    pub(super) fn add_norm(
        &self,
        ln: &LayerNorm<Cuda>,
        x: u64,
        residual: u64,
        out: u64,
        rows: usize,
    ) -> Result<()> {
        let d = ln.dim;
        let (g, b) = match &ln.affine {
            Some(a) => (
                self.dev.ptr(&a.gamma.data, 0),
                self.dev.ptr(&a.beta.data, 0),
            ),
            None => (0, 0),
        };
        let args = [
            Arg::Ptr(out),
            Arg::Ptr(x),
            Arg::Ptr(residual),
            Arg::U32(u32_of("rows", rows)?),
            Arg::U32(u32_of("width", d)?),
            Arg::Ptr(g),
            Arg::Ptr(b),
            Arg::F32(ln.eps),
        ];
        let grid = rows.min(65535) as u32;
        // SAFETY: the caller checked the three [rows, d] blocks; γ and β hold d values.
        unsafe {
            self.dev.launch(
                "norm",
                "add_layer_norm_f32",
                (grid, 1),
                norm_threads(d),
                0,
                &args,
            )
        }
    }

    /// [`Backend::mha`]: the fused attention kernel.
    pub(super) fn attention_core(
        &self,
        shape: MhaShape,
        q: (&CudaBuf, At),
        k: (&CudaBuf, At),
        v: (&CudaBuf, At),
        mask: Mask<'_>,
        out: (&mut CudaBuf, At),
        work: &mut CudaBuf,
    ) -> Result<()> {
        let h = shape.hidden();
        let (lq, lk) = (shape.lq, shape.lk);
        check_mha(
            shape,
            (q.0.len(), q.1),
            (k.0.len(), k.1),
            (v.0.len(), v.1),
            mask,
        )?;
        let (ob, oat) = out;
        self.dst_rows(ob, oat, lq, h)?;
        if lq == 0 || shape.n_heads == 0 {
            return Ok(());
        }
        self.ensure(work, lq * shape.n_heads * lk.max(1))?;
        let (kind, q_offset, valid) = match mask {
            Mask::None => (0, 0, 0),
            Mask::Causal { q_offset } => (1, u32_of("query offset", q_offset)?, 0),
            Mask::KeyPadding(valid) => {
                let flags: Vec<u32> = valid.iter().map(|&b| u32::from(b)).collect();
                (2, 0, stage(&self.dev, &mut work.aux, &flags)?)
            }
        };
        let args = [
            Arg::Ptr(self.dptr(q.0, q.1.offset)),
            Arg::U64(q.1.stride as u64),
            Arg::Ptr(self.dptr(k.0, k.1.offset)),
            Arg::U64(k.1.stride as u64),
            Arg::Ptr(self.dptr(v.0, v.1.offset)),
            Arg::U64(v.1.stride as u64),
            Arg::Ptr(self.dptr(ob, oat.offset)),
            Arg::U64(oat.stride as u64),
            Arg::Ptr(self.dptr(work, 0)),
            Arg::U32(u32_of("queries", lq)?),
            Arg::U32(u32_of("keys", lk)?),
            Arg::U32(u32_of("heads", shape.n_heads)?),
            Arg::U32(u32_of("head width", shape.head_dim)?),
            Arg::I32(kind),
            Arg::U32(q_offset),
            Arg::Ptr(valid),
            Arg::F32(1.0 / libm::sqrtf(shape.head_dim as f32)),
        ];
        if shape.n_heads > 65535 {
            return Err(Error::Unsupported(format!(
                "{} attention heads on the GPU",
                shape.n_heads
            )));
        }
        let grid = (u32_of("queries", lq)?, shape.n_heads as u32);
        // SAFETY: queries, keys, values and outputs checked above for their strides; `work`
        // holds lq·heads·lk logits; the staged flags hold lk values.
        unsafe { self.dev.launch("attention", "mha_f32", grid, 128, 0, &args) }
    }

    /// [`Backend::attention`]: Q/K/V product, the fused KV-cache append, the attention kernel,
    /// the output product and the fused residual LayerNorm.
    pub(super) fn attention_block(
        &self,
        blk: &AttentionBlock<Cuda>,
        x: &CudaBuf,
        rows: usize,
        pos0: usize,
        q_from: usize,
        mask: SelfMask,
        cache: &mut KvCache<Cuda>,
        tmp: &mut BlockScratch<Cuda>,
        out: &mut CudaBuf,
    ) -> Result<()> {
        let h = blk.hidden();
        cache.check_append(rows, pos0, q_from)?;
        check_rows("attention input", x.len(), At::rows(0, h), rows, h)?;
        let (lk, lq, w) = (pos0 + rows, rows - q_from, 3 * h);
        let BlockScratch {
            proj, ctx, work, ..
        } = tmp;
        self.linear(&blk.qkv, x, rows, Activation::Identity, proj)?;
        self.ensure(&mut cache.k, lk * h)?;
        self.ensure(&mut cache.v, lk * h)?;
        let args = [
            Arg::Ptr(self.dptr(&cache.k, 0)),
            Arg::Ptr(self.dptr(&cache.v, 0)),
            Arg::Ptr(self.dptr(proj, 0)),
            Arg::U32(u32_of("rows", rows)?),
            Arg::U32(u32_of("width", h)?),
            Arg::U32(u32_of("position", pos0)?),
        ];
        let grid = self.dev.blocks_for(rows * h);
        // SAFETY: `proj` holds [rows, 3H] (the product above), the caches lk·H values.
        unsafe {
            self.dev
                .launch("attention", "kv_append_f32", (grid, 1), THREADS, 0, &args)?
        };
        cache.len = lk;
        let mask = match mask {
            SelfMask::Causal => Mask::Causal {
                q_offset: pos0 + q_from,
            },
            SelfMask::All => Mask::None,
        };
        let shape = MhaShape {
            lq,
            lk,
            n_heads: blk.n_heads,
            head_dim: blk.head_dim,
        };
        self.attention_core(
            shape,
            (proj, At::strided(q_from * w, w)),
            (&cache.k, At::rows(0, h)),
            (&cache.v, At::rows(0, h)),
            mask,
            (ctx, At::rows(0, h)),
            work,
        )?;
        self.linear(&blk.dense, ctx, lq, Activation::Identity, proj)?;
        self.ensure(out, lq * h)?;
        let (pp, xp, op) = (
            self.dptr(proj, 0),
            self.dptr(x, q_from * h),
            self.dptr(out, 0),
        );
        self.add_norm(&blk.ln, pp, xp, op, lq)
    }

    /// [`Backend::attention_seqs`]: one Q/K/V product for the whole batch, one attention launch
    /// over every sequence (`mha_seqs_f32`), one output product and the fused residual
    /// LayerNorm (each sequence's last input row gathered first when only those are wanted).
    pub(super) fn attention_batch(
        &self,
        blk: &AttentionBlock<Cuda>,
        x: &CudaBuf,
        lens: &[usize],
        last_only: bool,
        mask: SelfMask,
        tmp: &mut BlockScratch<Cuda>,
        out: &mut CudaBuf,
    ) -> Result<()> {
        if lens.contains(&0) {
            return Err(Error::InvalidArgument(
                "attention over a batch holding an empty sequence".into(),
            ));
        }
        let h = blk.hidden();
        let total: usize = lens.iter().sum();
        check_rows("attention input", x.len(), At::rows(0, h), total, h)?;
        let BlockScratch {
            proj,
            ctx,
            work,
            rows: last,
            ..
        } = tmp;
        self.linear(&blk.qkv, x, total, Activation::Identity, proj)?;
        // Host lists: sequence starts, then every query block's row and sequence.
        let seqs = lens.len();
        let blocks = if last_only { seqs } else { total };
        let mut idx: Vec<u32> = Vec::with_capacity(seqs + 1 + 2 * blocks);
        let mut start = 0u32;
        idx.push(0);
        for &len in lens {
            start += u32_of("rows", len)?;
            idx.push(start);
        }
        for (s, &len) in lens.iter().enumerate() {
            let (r0, r1) = (idx[s], idx[s] + len as u32);
            idx.extend(if last_only { r1 - 1..r1 } else { r0..r1 });
        }
        for (s, &len) in lens.iter().enumerate() {
            let n = if last_only { 1 } else { len };
            idx.extend(core::iter::repeat_n(s as u32, n));
        }
        let max_len = lens.iter().copied().max().unwrap_or(0);
        self.ensure(work, blocks * blk.n_heads * max_len)?;
        self.ensure(ctx, blocks * h)?;
        let ip = stage(&self.dev, &mut work.aux, &idx)?;
        let qrow = ip + 4 * (seqs + 1) as u64;
        let args = [
            Arg::Ptr(self.dptr(proj, 0)),
            Arg::Ptr(self.dptr(ctx, 0)),
            Arg::Ptr(self.dptr(work, 0)),
            Arg::Ptr(ip),
            Arg::Ptr(qrow),
            Arg::Ptr(qrow + 4 * blocks as u64),
            Arg::U32(u32_of("query rows", blocks)?),
            Arg::U32(u32_of("heads", blk.n_heads)?),
            Arg::U32(u32_of("head width", blk.head_dim)?),
            Arg::U32(u32_of("sequence length", max_len)?),
            Arg::I32(i32::from(mask == SelfMask::Causal)),
            Arg::F32(1.0 / libm::sqrtf(blk.head_dim as f32)),
        ];
        if blk.n_heads > 65535 {
            return Err(Error::Unsupported(format!(
                "{} attention heads",
                blk.n_heads
            )));
        }
        let grid = (u32_of("query rows", blocks)?, blk.n_heads as u32);
        // SAFETY: `proj` holds the [total, 3H] projections; the staged lists hold seqs + 1
        // starts and `blocks` rows and sequences, every row inside its sequence; `ctx` holds
        // [blocks, H] and `work` blocks·heads·max_len logits.
        unsafe {
            self.dev
                .launch("attention", "mha_seqs_f32", grid, 128, 0, &args)?
        };
        self.linear(&blk.dense, ctx, blocks, Activation::Identity, proj)?;
        self.ensure(out, blocks * h)?;
        let (pp, op) = (self.dptr(proj, 0), self.dptr(out, 0));
        if !last_only {
            return self.add_norm(&blk.ln, pp, self.dptr(x, 0), op, total);
        }
        // The residual rows: each sequence's last row of `x`, gathered (the rows of `x` are
        // the "table" of the gather kernel).
        self.ensure(last, seqs * h)?;
        let lp = self.dptr(last, 0);
        let rows_p = qrow;
        let args = [
            Arg::Ptr(lp),
            Arg::Ptr(self.dptr(x, 0)),
            Arg::Ptr(rows_p),
            Arg::U32(u32_of("sequences", seqs)?),
            Arg::U32(u32_of("width", h)?),
        ];
        let grid = self.dev.blocks_for(seqs * h);
        // SAFETY: the staged rows are < total, the rows of `x` (checked); `last` holds
        // [seqs, H].
        unsafe {
            self.dev
                .launch("embedding", "gather_f32", (grid, 1), THREADS, 0, &args)?
        };
        self.add_norm(&blk.ln, pp, lp, op, seqs)
    }

    /// [`Backend::gru`]: the input projections of every step in one product, then the
    /// persistent recurrent kernel.
    pub(super) fn gru_layer(
        &self,
        layer: &GruLayer<Cuda>,
        x: &CudaBuf,
        steps: usize,
        h: &mut CudaBuf,
        scratch: &mut CudaBuf,
        out: &mut CudaBuf,
    ) -> Result<()> {
        let (hd, input) = (layer.hidden, layer.input);
        check_rows("GRU input", x.len(), At::rows(0, input), steps, input)?;
        self.ensure(h, hd)?;
        self.ensure(out, steps * hd)?;
        self.ensure(scratch, steps * 3 * hd)?;
        if steps == 0 {
            return Ok(());
        }
        let smem = 16 * hd;
        if smem > SMEM_MAX {
            return Err(Error::Unsupported(format!(
                "a GRU of hidden size {hd} on the GPU (at most {})",
                SMEM_MAX / 16
            )));
        }
        let w = (
            "linear_f32",
            "linear_f32_few",
            self.dev.ptr(&layer.w_ih.data, 0),
            0,
        );
        let b_ih = layer.b_ih.as_ref().map_or(0, |b| self.dev.ptr(&b.data, 0));
        let (xp, gp) = (self.dptr(x, 0), self.dptr(scratch, 0));
        self.product(
            w,
            b_ih,
            xp,
            gp,
            (steps, input, 3 * hd),
            Activation::Identity,
        )?;
        let args = [
            Arg::Ptr(gp),
            Arg::Ptr(self.dev.ptr(&layer.w_hh.data, 0)),
            Arg::Ptr(layer.b_hh.as_ref().map_or(0, |b| self.dev.ptr(&b.data, 0))),
            Arg::Ptr(self.dptr(h, 0)),
            Arg::Ptr(self.dptr(out, 0)),
            Arg::U32(u32_of("steps", steps)?),
            Arg::U32(u32_of("hidden size", hd)?),
        ];
        // SAFETY: `scratch` holds [steps, 3H] projections, `h` H values, `out` [steps, H];
        // W_hh is [3H, H] and b_hh [3H] (shape-checked at load); 4H floats of shared memory.
        unsafe {
            self.dev
                .launch("gru", "gru_layer_f32", (1, 1), 512, smem as u32, &args)
        }
    }

    /// [`Backend::causal_conv`].
    pub(super) fn conv1d(
        &self,
        cv: &CausalConv<Cuda>,
        x: &CudaBuf,
        len: usize,
        from: usize,
        out: &mut CudaBuf,
    ) -> Result<()> {
        let (ci, co, k) = (cv.c_in, cv.c_out, cv.kernel);
        check_rows("convolution input", x.len(), At::rows(0, ci), len, ci)?;
        self.ensure(out, len * co)?;
        if from >= len {
            return Ok(());
        }
        let smem = 4 * k * ci;
        if smem > SMEM_MAX {
            return Err(Error::Unsupported(format!(
                "a convolution of {k} taps over {ci} channels on the GPU"
            )));
        }
        let args = [
            Arg::Ptr(self.dptr(x, 0)),
            Arg::Ptr(self.dev.ptr(&cv.taps.data, 0)),
            Arg::Ptr(self.dev.ptr(&cv.bias.data, 0)),
            Arg::Ptr(self.dptr(out, 0)),
            Arg::U32(u32_of("first row", from)?),
            Arg::U32(u32_of("rows", len)?),
            Arg::U32(u32_of("input channels", ci)?),
            Arg::U32(u32_of("output channels", co)?),
            Arg::U32(u32_of("taps", k)?),
            Arg::U32(u32_of("dilation", cv.dilation)?),
        ];
        let grid = (len - from).min(65535) as u32;
        let threads = (co.div_ceil(32) * 32).clamp(32, 256) as u32;
        // SAFETY: `x` holds [len, c_in], `out` [len, c_out]; the filters are PyTorch's
        // [c_out, c_in, 1, k] (shape-checked at load), the bias c_out values.
        unsafe {
            self.dev.launch(
                "conv",
                "causal_conv1d_f32",
                (grid, 1),
                threads,
                smem as u32,
                &args,
            )
        }
    }

    /// [`Backend::caser_convs`]: the vertical convolution, then one launch per height.
    pub(super) fn caser(
        &self,
        blk: &CaserConvs<Cuda>,
        x: &CudaBuf,
        out: &mut CudaBuf,
    ) -> Result<()> {
        let (l, e, nv, nh) = (blk.len, blk.dim, blk.nv, blk.nh);
        check_rows("Caser image", x.len(), At::rows(0, e), l, e)?;
        self.ensure(out, blk.out_dim())?;
        let (xp, op) = (self.dptr(x, 0), self.dptr(out, 0));
        let (lu, eu) = (u32_of("window", l)?, u32_of("width", e)?);
        let args = [
            Arg::Ptr(xp),
            Arg::Ptr(self.dev.ptr(&blk.conv_v.data, 0)),
            Arg::Ptr(self.dev.ptr(&blk.bias_v.data, 0)),
            Arg::Ptr(op),
            Arg::U32(lu),
            Arg::U32(eu),
            Arg::U32(u32_of("vertical filters", nv)?),
        ];
        let grid = self.dev.blocks_for(nv * e);
        // SAFETY: `x` holds [L, E], `out` nv·E + nh·L values; the filters [nv, L], biases nv.
        unsafe {
            self.dev
                .launch("conv", "caser_vertical_f32", (grid, 1), THREADS, 0, &args)?
        };
        for (i, (w, b)) in blk.conv_h.iter().enumerate() {
            let args = [
                Arg::Ptr(xp),
                Arg::Ptr(self.dev.ptr(&w.data, 0)),
                Arg::Ptr(self.dev.ptr(&b.data, 0)),
                Arg::Ptr(op + 4 * (nv * e + i * nh) as u64),
                Arg::U32(lu),
                Arg::U32(eu),
                Arg::U32(u32_of("height", i + 1)?),
                Arg::U32(u32_of("horizontal filters", nh)?),
            ];
            let grid = nh.clamp(1, 65535) as u32;
            // SAFETY: filters of height i + 1 are [nh, (i + 1)·E] (shape-checked at load);
            // the outputs nh values at nv·E + i·nh, inside `out`.
            unsafe {
                self.dev
                    .launch("conv", "caser_horizontal_f32", (grid, 1), 128, 0, &args)?
            };
        }
        Ok(())
    }

    /// The last element a group-indexed row block reaches (`groups` rows of `dim` at `at`).
    fn group_span(what: &str, len: usize, at: At, groups: usize, dim: usize) -> Result<()> {
        check_rows(what, len, at, groups, dim)
    }

    /// [`Backend::modulate`]: the fused non-affine LayerNorm and adaLN modulation.
    pub(super) fn modulate_rows(
        &self,
        x: &mut CudaBuf,
        rows: usize,
        dim: usize,
        eps: f32,
        group: usize,
        shift: (&CudaBuf, At),
        scale: (&CudaBuf, At),
    ) -> Result<()> {
        if group == 0 && rows > 0 {
            return Err(Error::InvalidArgument(format!(
                "modulate: {rows} rows in groups of 0"
            )));
        }
        self.ensure(x, rows * dim)?;
        if rows == 0 {
            return Ok(());
        }
        let groups = rows.div_ceil(group);
        Self::group_span("modulate shift", shift.0.len(), shift.1, groups, dim)?;
        Self::group_span("modulate scale", scale.0.len(), scale.1, groups, dim)?;
        let args = [
            Arg::Ptr(self.dptr(x, 0)),
            Arg::U32(u32_of("rows", rows)?),
            Arg::U32(u32_of("width", dim)?),
            Arg::F32(eps),
            Arg::U32(u32_of("group", group)?),
            Arg::Ptr(self.dptr(shift.0, shift.1.offset)),
            Arg::U64(shift.1.stride as u64),
            Arg::Ptr(self.dptr(scale.0, scale.1.offset)),
            Arg::U64(scale.1.stride as u64),
        ];
        let grid = rows.min(65535) as u32;
        // SAFETY: `x` holds [rows, dim]; the shift and scale rows of every group lie inside
        // their buffers (checked above).
        unsafe {
            self.dev.launch(
                "norm",
                "modulate_f32",
                (grid, 1),
                norm_threads(dim),
                0,
                &args,
            )
        }
    }

    /// [`Backend::gated_add`]: `x += gate ⊙ y` in one launch.
    pub(super) fn gated_rows(
        &self,
        x: &mut CudaBuf,
        y: &CudaBuf,
        rows: usize,
        dim: usize,
        group: usize,
        gate: (&CudaBuf, At),
    ) -> Result<()> {
        if group == 0 && rows > 0 {
            return Err(Error::InvalidArgument(format!(
                "gated_add: {rows} rows in groups of 0"
            )));
        }
        check_rows("gated residual", y.len(), At::rows(0, dim), rows, dim)?;
        self.ensure(x, rows * dim)?;
        if rows == 0 {
            return Ok(());
        }
        Self::group_span("gate", gate.0.len(), gate.1, rows.div_ceil(group), dim)?;
        let args = [
            Arg::Ptr(self.dptr(x, 0)),
            Arg::Ptr(self.dptr(y, 0)),
            Arg::Ptr(self.dptr(gate.0, gate.1.offset)),
            Arg::U64(gate.1.stride as u64),
            Arg::U32(u32_of("rows", rows)?),
            Arg::U32(u32_of("width", dim)?),
            Arg::U32(u32_of("group", group)?),
        ];
        self.rows_launch("gated_add_f32", rows, dim, &args)
    }
}
