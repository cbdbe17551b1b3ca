//! The CPU backend: every block implemented with the seqrec-kernels CPU kernels. Weights are
//! host tensors (zero-copy views into the weight file where possible); activations are
//! `Vec<f32>` buffers owned by a workspace. The hot blocks (the attention and feed-forward
//! sublayers, embeddings with positions, LayerNorm after a residual, adaLN modulation, the
//! batched catalog scan) are fused overrides of the trait's compositions.

mod blocks;
mod items;
mod scan;
mod weights;

pub use items::CpuItems;
pub use scan::CpuScratch;
pub use weights::CpuWeight;

use crate::backend::{
    At, Backend, BlockScratch, DdpmStep, KvCache, Mask, MhaShape, Scale, SelfMask, Src, check_mha,
    check_rows,
};
use crate::blocks::{
    Activation, AttentionBlock, CaserConvs, CausalConv, Embedding, FeedForward, GruLayer,
    ItemTable, LayerNorm, Linear,
};
use crate::error::{Error, Result};
use crate::weights::{DType, Tensor};
use alloc::format;
use alloc::vec::Vec;
use core::ops::Range;
use seqrec_kernels::cpu::activation as act;
use seqrec_kernels::cpu::attention::{self, AttentionShape, AttnMask};
use seqrec_kernels::cpu::{conv, embedding, gru, norm, vector};

/// Smallest hidden width whose recurrence is shared between two workers: the step's `W_hh`
/// (`3·hidden²` values) then no longer fits a core's L1 cache, and a step reads it from L2.
#[cfg(feature = "std")]
const SHARED_GRU_MIN_HIDDEN: usize = 64;

/// Whether a GRU layer's recurrence is shared between two workers of the current rayon pool
/// ([`gru::gru_layer_shared`]): with `std`, on a worker of a pool of two or more threads, for
/// a window of several steps and a hidden width of at least [`SHARED_GRU_MIN_HIDDEN`].
fn share_recurrence(steps: usize, hidden: usize) -> bool {
    #[cfg(feature = "std")]
    {
        steps > 1
            && hidden >= SHARED_GRU_MIN_HIDDEN
            && rayon::current_num_threads() > 1
            && rayon::current_thread_index().is_some()
    }
    #[cfg(not(feature = "std"))]
    {
        let _ = (steps, hidden);
        false
    }
}

/// The CPU backend (SIMD kernels dispatched at run time; register-blocked, allocation-free
/// matrix products).
///
/// By default every product runs on the calling thread. [`Cpu::with_split_products`] splits
/// large products across the current rayon pool by output features, which shortens a single
/// request whose products stream many weights (a text encoder's title) when nothing else
/// keeps the pool busy.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Cpu {
    split: bool,
}

impl Cpu {
    /// The CPU backend, every product on the calling thread.
    pub const fn new() -> Cpu {
        Cpu { split: false }
    }

    /// The same backend, splitting large products across the current rayon pool (`on`) or not.
    pub const fn with_split_products(self, on: bool) -> Cpu {
        Cpu { split: on }
    }

    /// `out = x·Wᵀ + b` over `rows` rows (no activation).
    fn apply_linear(&self, lin: &Linear<Cpu>, x: &[f32], rows: usize, out: &mut [f32]) {
        weights::product(
            &lin.w,
            x,
            rows,
            lin.in_dim,
            lin.out_dim,
            lin.b.as_ref().map(Tensor::as_slice),
            out,
            self.split,
        );
    }
}

/// The values of a source.
fn values<'a>(src: Src<'a, Cpu>) -> &'a [f32] {
    match src {
        Src::Buf(b) => b,
        Src::Param(p) => p.as_slice(),
    }
}

/// Checks a destination block (rows must not overlap) and grows `dst` to hold it.
fn dst_rows(dst: &mut Vec<f32>, to: At, rows: usize, cols: usize) -> Result<()> {
    if rows > 1 && to.stride < cols {
        return Err(Error::InvalidArgument(format!(
            "destination rows of {cols} values overlap (stride {})",
            to.stride
        )));
    }
    let span = to.span(rows, cols);
    if dst.len() < span {
        dst.resize(span, 0.0);
    }
    Ok(())
}

/// Applies `f(dst_row, src_row, i)` to `rows` rows of `cols` values.
fn rowwise(
    src: &[f32],
    from: At,
    dst: &mut [f32],
    to: At,
    rows: usize,
    cols: usize,
    mut f: impl FnMut(&mut [f32], &[f32], usize),
) {
    for i in 0..rows {
        let s = from.offset + i * from.stride;
        let d = to.offset + i * to.stride;
        f(&mut dst[d..d + cols], &src[s..s + cols], i);
    }
}

impl Backend for Cpu {
    type Param = Tensor;
    type Weight = CpuWeight;
    type Items = CpuItems;
    type Buf = Vec<f32>;
    type Scratch = CpuScratch;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn upload(&self, tensor: &Tensor) -> Result<Tensor> {
        Ok(tensor.clone())
    }

    fn upload_weight(&self, w: &Tensor, dtype: DType) -> Result<CpuWeight> {
        CpuWeight::new(w, dtype)
    }

    fn upload_items(&self, table: &Tensor, dtype: DType) -> Result<CpuItems> {
        CpuItems::new(table, dtype)
    }

    fn upload_conv(&self, w: &Tensor) -> Result<Tensor> {
        match w.shape() {
            &[c_out, c_in, 1, k] => {
                let taps = conv::pack_conv_taps(w.as_slice(), c_out, c_in, k);
                let len = taps.len();
                Tensor::from_vec(alloc::vec![len], taps)
            }
            other => Err(Error::InvalidArgument(format!(
                "a causal convolution's filters are [c_out, c_in, 1, k], found {other:?}"
            ))),
        }
    }

    fn ensure(&self, buf: &mut Vec<f32>, len: usize) -> Result<()> {
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        Ok(())
    }

    fn write(&self, src: &[f32], dst: &mut Vec<f32>, offset: usize) -> Result<()> {
        self.ensure(dst, offset + src.len())?;
        dst[offset..offset + src.len()].copy_from_slice(src);
        Ok(())
    }

    fn read(&self, src: &Vec<f32>, offset: usize, dst: &mut [f32]) -> Result<()> {
        let part = src.get(offset..offset + dst.len()).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "read of {} values at {offset} from a buffer of {}",
                dst.len(),
                src.len()
            ))
        })?;
        dst.copy_from_slice(part);
        Ok(())
    }

    fn copy(
        &self,
        src: Src<'_, Cpu>,
        from: At,
        dst: &mut Vec<f32>,
        to: At,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let src = values(src);
        check_rows("copy source", src.len(), from, rows, cols)?;
        dst_rows(dst, to, rows, cols)?;
        rowwise(src, from, dst, to, rows, cols, |d, s, _| {
            d.copy_from_slice(s)
        });
        Ok(())
    }

    fn fill(&self, dst: &mut Vec<f32>, to: At, rows: usize, cols: usize, value: f32) -> Result<()> {
        dst_rows(dst, to, rows, cols)?;
        for i in 0..rows {
            let d = to.offset + i * to.stride;
            dst[d..d + cols].fill(value);
        }
        Ok(())
    }

    fn axpy(
        &self,
        src: Src<'_, Cpu>,
        from: At,
        scale: Scale<'_>,
        dst: &mut Vec<f32>,
        to: At,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let src = values(src);
        check_rows("axpy source", src.len(), from, rows, cols)?;
        if let Scale::Rows(f) = scale
            && f.len() < rows
        {
            return Err(Error::InvalidArgument(format!(
                "axpy of {rows} rows with {} row factors",
                f.len()
            )));
        }
        dst_rows(dst, to, rows, cols)?;
        rowwise(src, from, dst, to, rows, cols, |d, s, i| match scale {
            Scale::All(1.0) => vector::add(d, s),
            scale => vector::axpy(scale.of(i), s, d),
        });
        Ok(())
    }

    fn mul(
        &self,
        src: Src<'_, Cpu>,
        from: At,
        offset: f32,
        dst: &mut Vec<f32>,
        to: At,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let src = values(src);
        check_rows("mul source", src.len(), from, rows, cols)?;
        dst_rows(dst, to, rows, cols)?;
        rowwise(src, from, dst, to, rows, cols, |d, s, _| {
            for (y, &x) in d.iter_mut().zip(s) {
                *y *= offset + x;
            }
        });
        Ok(())
    }

    fn activate(&self, a: Activation, x: &mut Vec<f32>, range: Range<usize>) -> Result<()> {
        self.ensure(x, range.end)?;
        act::activate(a, &mut x[range]);
        Ok(())
    }

    fn gather(&self, table: &Embedding<Cpu>, ids: &[u32], out: &mut Vec<f32>) -> Result<()> {
        let d = table.dim;
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= table.rows) {
            return Err(Error::InvalidArgument(format!(
                "row {bad} of an embedding table of {} rows",
                table.rows
            )));
        }
        self.ensure(out, ids.len() * d)?;
        embedding::gather(table.table.as_slice(), d, ids, &mut out[..ids.len() * d]);
        Ok(())
    }

    fn linear(
        &self,
        lin: &Linear<Cpu>,
        x: &Vec<f32>,
        rows: usize,
        a: Activation,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self.ensure(out, rows * lin.out_dim)?;
        self.apply_linear(lin, x, rows, out);
        if a != Activation::Identity {
            act::activate(a, &mut out[..rows * lin.out_dim]);
        }
        Ok(())
    }

    fn layer_norm(&self, ln: &LayerNorm<Cpu>, x: &mut Vec<f32>, rows: Range<usize>) -> Result<()> {
        let d = ln.dim;
        self.ensure(x, rows.end * d)?;
        let (n, x) = (rows.len(), &mut x[rows.start * d..rows.end * d]);
        match &ln.affine {
            Some(a) => {
                let (g, b) = (a.gamma.as_slice(), a.beta.as_slice());
                norm::layer_norm_inplace(x, n, d, g, b, ln.eps);
            }
            None => norm::layer_norm_no_affine_inplace(x, n, d, ln.eps),
        }
        Ok(())
    }

    fn mha(
        &self,
        shape: MhaShape,
        q: (&Vec<f32>, At),
        k: (&Vec<f32>, At),
        v: (&Vec<f32>, At),
        mask: Mask<'_>,
        out: (&mut Vec<f32>, At),
        work: &mut Vec<f32>,
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
        let (kmask, valid) = match mask {
            Mask::None => (AttnMask::None, None),
            Mask::Causal { q_offset } => (AttnMask::Causal { q_offset }, None),
            Mask::KeyPadding(valid) => (AttnMask::None, Some(valid)),
        };
        let (ob, oat) = out;
        dst_rows(ob, oat, lq, h)?;
        let kshape = AttentionShape {
            lq,
            lk,
            n_heads: shape.n_heads,
            head_dim: shape.head_dim,
            q_stride: q.1.stride.max(h),
            kv_stride: k.1.stride.max(h),
            out_stride: oat.stride.max(h),
        };
        if v.1.stride.max(h) != kshape.kv_stride {
            return Err(Error::InvalidArgument(format!(
                "attention keys (stride {}) and values (stride {}) differ in layout",
                k.1.stride, v.1.stride
            )));
        }
        let scratch = attention::attention_scratch_len(&kshape);
        self.ensure(work, scratch)?;
        let rows_len = |at: At, rows: usize| {
            if rows == 0 {
                0
            } else {
                (rows - 1) * at.stride + h
            }
        };
        attention::attention(
            &kshape,
            &q.0[q.1.offset..q.1.offset + rows_len(q.1, lq)],
            &k.0[k.1.offset..k.1.offset + rows_len(k.1, lk)],
            &v.0[v.1.offset..v.1.offset + rows_len(v.1, lk)],
            kmask,
            valid,
            1.0 / libm::sqrtf(shape.head_dim as f32),
            &mut ob[oat.offset..oat.offset + rows_len(oat, lq)],
            &mut work[..scratch],
        );
        Ok(())
    }

    fn gru(
        &self,
        layer: &GruLayer<Cpu>,
        x: &Vec<f32>,
        steps: usize,
        h: &mut Vec<f32>,
        scratch: &mut Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let hd = layer.hidden;
        let shared = share_recurrence(steps, hd);
        let len = if shared {
            gru::gru_shared_scratch_len(steps, hd)
        } else {
            gru::gru_scratch_len(steps, hd)
        };
        self.ensure(scratch, len)?;
        self.ensure(out, steps * hd)?;
        self.ensure(h, hd)?;
        let x = &x[..steps * layer.input];
        let (w_ih, w_hh) = (layer.w_ih.as_slice(), layer.w_hh.as_slice());
        let b_ih = layer.b_ih.as_ref().map(Tensor::as_slice);
        let b_hh = layer.b_hh.as_ref().map(Tensor::as_slice);
        let (h, out, scratch) = (&mut h[..hd], &mut out[..steps * hd], &mut scratch[..len]);
        #[cfg(feature = "std")]
        if shared {
            gru::gru_layer_shared(
                x,
                steps,
                layer.input,
                hd,
                w_ih,
                w_hh,
                b_ih,
                b_hh,
                h,
                out,
                scratch,
                |a, b| {
                    rayon::join(a, b);
                },
            );
            return Ok(());
        }
        gru::gru_layer(
            x,
            steps,
            layer.input,
            hd,
            w_ih,
            w_hh,
            b_ih,
            b_hh,
            h,
            out,
            scratch,
        );
        Ok(())
    }

    fn causal_conv(
        &self,
        cv: &CausalConv<Cpu>,
        x: &Vec<f32>,
        len: usize,
        from: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let (ci, co, k, d) = (cv.c_in, cv.c_out, cv.kernel, cv.dilation);
        let (taps, bias) = (cv.taps.as_slice(), Some(cv.bias.as_slice()));
        self.ensure(out, len * co)?;
        if from == 0 {
            conv::causal_conv1d(
                &x[..len * ci],
                len,
                ci,
                taps,
                bias,
                co,
                k,
                d,
                &mut out[..len * co],
            );
        } else {
            for t in from..len {
                let row = &mut out[t * co..(t + 1) * co];
                conv::causal_conv1d_step(&x[..(t + 1) * ci], t, ci, taps, bias, co, k, d, row);
            }
        }
        Ok(())
    }

    fn caser_convs(
        &self,
        blk: &CaserConvs<Cpu>,
        x: &Vec<f32>,
        scratch: &mut Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let (l, e) = (blk.len, blk.dim);
        self.ensure(out, blk.out_dim())?;
        self.ensure(scratch, conv::caser_horizontal_scratch_len(l, 1, blk.nh))?;
        let x = &x[..l * e];
        let (ov, oh) = out[..blk.out_dim()].split_at_mut(blk.nv * e);
        let (wv, bv) = (blk.conv_v.as_slice(), blk.bias_v.as_slice());
        conv::caser_vertical(x, l, e, wv, bv, blk.nv, ov);
        for (i, (w, b)) in blk.conv_h.iter().enumerate() {
            let oh = &mut oh[i * blk.nh..(i + 1) * blk.nh];
            let (w, b) = (w.as_slice(), b.as_slice());
            conv::caser_horizontal(x, l, e, i + 1, w, b, blk.nh, oh, scratch);
        }
        Ok(())
    }

    fn scores(
        &self,
        items: &ItemTable<Cpu>,
        h: &Vec<f32>,
        rows: usize,
        out: &mut [f32],
    ) -> Result<()> {
        let (n, d) = (items.rows, items.dim);
        check_rows("user vectors", h.len(), At::rows(0, d), rows, d)?;
        let isa = seqrec_kernels::Isa::f32_level();
        for (hr, or) in h.chunks_exact(d).zip(out[..rows * n].chunks_exact_mut(n)) {
            items.data.score_block(isa, hr, 0, or);
        }
        Ok(())
    }

    fn score_items(
        &self,
        items: &ItemTable<Cpu>,
        h: &Vec<f32>,
        ids: &[u32],
        out: &mut [f32],
    ) -> Result<()> {
        let d = items.dim;
        check_rows("user vector", h.len(), At::rows(0, d), 1, d)?;
        let isa = seqrec_kernels::Isa::f32_level();
        for (&id, o) in ids.iter().zip(out.iter_mut()) {
            items
                .data
                .score_block(isa, &h[..d], id as usize, core::slice::from_mut(o));
        }
        Ok(())
    }

    fn topk(
        &self,
        items: &ItemTable<Cpu>,
        h: &Vec<f32>,
        row: usize,
        k: usize,
        exclude: &[u32],
        scratch: &mut CpuScratch,
        out_items: &mut [u32],
        out_scores: &mut [f32],
    ) -> Result<usize> {
        let d = items.dim;
        check_rows("user vectors", h.len(), At::rows(row, d), 1, d)?;
        if out_items.len() < k || out_scores.len() < k {
            return Err(Error::InvalidArgument(format!(
                "top-{k} needs output buffers of at least {k} values, got {} and {}",
                out_items.len(),
                out_scores.len()
            )));
        }
        let CpuScratch { topk, parts, .. } = scratch;
        topk.reset(k);
        scan::topk_one(items, &h[row * d..(row + 1) * d], exclude, topk, parts);
        Ok(topk.finish(&mut out_items[..k], &mut out_scores[..k]))
    }

    fn topk_rows(
        &self,
        items: &ItemTable<Cpu>,
        h: &Vec<f32>,
        k: usize,
        excludes: &[u32],
        offsets: &[usize],
        scratch: &mut CpuScratch,
        out_items: &mut [u32],
        out_scores: &mut [f32],
        counts: &mut [usize],
    ) -> Result<()> {
        crate::backend::compose::check_rows_args(k, offsets, out_items, out_scores, counts)?;
        let users = counts.len();
        check_rows(
            "user vectors",
            h.len(),
            At::rows(0, items.dim),
            users,
            items.dim,
        )?;
        let CpuScratch { topks, block, .. } = scratch;
        while topks.len() < users {
            topks.push(seqrec_kernels::cpu::topk::TopK::new(k));
        }
        let topks = &mut topks[..users];
        for t in topks.iter_mut() {
            t.reset(k);
        }
        scan::topk_rows(items, h, excludes, offsets, topks, block);
        for (r, t) in topks.iter_mut().enumerate() {
            counts[r] = t.finish(
                &mut out_items[r * k..(r + 1) * k],
                &mut out_scores[r * k..(r + 1) * k],
            );
        }
        Ok(())
    }

    fn embedding(
        &self,
        table: &Embedding<Cpu>,
        ids: &[u32],
        positions: Option<(&Embedding<Cpu>, usize)>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self.gather(table, ids, out)?;
        if let Some((pos, pos0)) = positions {
            let d = table.dim;
            let p = &pos.table.as_slice()[pos0 * d..(pos0 + ids.len()) * d];
            vector::add(&mut out[..ids.len() * d], p);
        }
        Ok(())
    }

    fn embedding_seqs(
        &self,
        table: &Embedding<Cpu>,
        ids: &[u32],
        lens: &[usize],
        positions: Option<&Embedding<Cpu>>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self.gather(table, ids, out)?;
        if let Some(pos) = positions {
            let d = table.dim;
            let mut rows = out[..ids.len() * d].chunks_mut(d);
            for &len in lens {
                let pos = &pos.table.as_slice()[..len * d];
                for (row, p) in rows.by_ref().take(len).zip(pos.chunks_exact(d)) {
                    vector::add(row, p);
                }
            }
        }
        Ok(())
    }

    fn add_layer_norm(
        &self,
        ln: &LayerNorm<Cpu>,
        x: &Vec<f32>,
        residual: &Vec<f32>,
        rows: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self.ensure(out, rows * ln.dim)?;
        blocks::add_layer_norm(
            ln,
            &x[..rows * ln.dim],
            &residual[..rows * ln.dim],
            rows,
            out,
        );
        Ok(())
    }

    fn attention(
        &self,
        blk: &AttentionBlock<Cpu>,
        x: &Vec<f32>,
        rows: usize,
        pos0: usize,
        q_from: usize,
        mask: SelfMask,
        cache: &mut KvCache<Cpu>,
        tmp: &mut BlockScratch<Cpu>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        blocks::attention(
            self,
            blk,
            x,
            rows,
            pos0,
            q_from,
            mask,
            cache,
            &mut tmp.proj,
            out,
        )
    }

    fn attention_seqs(
        &self,
        blk: &AttentionBlock<Cpu>,
        x: &Vec<f32>,
        lens: &[usize],
        last_only: bool,
        mask: SelfMask,
        tmp: &mut BlockScratch<Cpu>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        blocks::attention_seqs(self, blk, x, lens, last_only, mask, &mut tmp.proj, out)
    }

    fn feed_forward(
        &self,
        blk: &FeedForward<Cpu>,
        x: &Vec<f32>,
        rows: usize,
        tmp: &mut BlockScratch<Cpu>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        blocks::feed_forward(self, blk, x, rows, &mut tmp.proj, out)
    }

    fn modulate(
        &self,
        x: &mut Vec<f32>,
        rows: usize,
        dim: usize,
        eps: f32,
        group: usize,
        shift: (&Vec<f32>, At),
        scale: (&Vec<f32>, At),
        work: &mut Vec<f32>,
    ) -> Result<()> {
        // LN(x)·(1 + scale) + shift is the affine LayerNorm with γ = 1 + scale and β = shift:
        // one pass per group of rows.
        if group == 0 && rows > 0 {
            return Err(Error::InvalidArgument(format!(
                "modulate: {rows} rows in groups of 0"
            )));
        }
        self.ensure(x, rows * dim)?;
        self.ensure(work, dim)?;
        for g in 0..rows.div_ceil(group.max(1)) {
            let (r0, n) = (g * group, group.min(rows - g * group));
            let (sh, sc) = (
                shift.1.offset + g * shift.1.stride,
                scale.1.offset + g * scale.1.stride,
            );
            check_rows("modulate shift", shift.0.len(), At::repeat(sh), 1, dim)?;
            check_rows("modulate scale", scale.0.len(), At::repeat(sc), 1, dim)?;
            let gamma = &mut work[..dim];
            for (gm, &v) in gamma.iter_mut().zip(&scale.0[sc..sc + dim]) {
                *gm = 1.0 + v;
            }
            let xs = &mut x[r0 * dim..(r0 + n) * dim];
            norm::layer_norm_inplace(xs, n, dim, gamma, &shift.0[sh..sh + dim], eps);
        }
        Ok(())
    }

    fn gated_add(
        &self,
        x: &mut Vec<f32>,
        y: &mut Vec<f32>,
        rows: usize,
        dim: usize,
        group: usize,
        gate: (&Vec<f32>, At),
    ) -> Result<()> {
        if group == 0 && rows > 0 {
            return Err(Error::InvalidArgument(format!(
                "gated_add: {rows} rows in groups of 0"
            )));
        }
        check_rows("gated residual", y.len(), At::rows(0, dim), rows, dim)?;
        self.ensure(x, rows * dim)?;
        for r in 0..rows {
            let g = gate.1.offset + (r / group) * gate.1.stride;
            check_rows("gate", gate.0.len(), At::repeat(g), 1, dim)?;
            let row = r * dim..(r + 1) * dim;
            vector::mul_add(&mut x[row.clone()], &gate.0[g..g + dim], &y[row]);
        }
        Ok(())
    }

    fn ddpm_step(
        &self,
        out: &Vec<f32>,
        width: usize,
        z: &mut Vec<f32>,
        noise: Option<&Vec<f32>>,
        rows: usize,
        d: usize,
        step: &DdpmStep,
    ) -> Result<()> {
        let need = if step.learn_sigma { 2 * d } else { d };
        if width < need {
            return Err(Error::InvalidArgument(format!(
                "reverse step over outputs of width {width}, need {need}"
            )));
        }
        check_rows(
            "network outputs",
            out.len(),
            At::rows(0, width),
            rows,
            width,
        )?;
        check_rows("latents", z.len(), At::rows(0, d), rows, d)?;
        if let Some(n) = noise {
            check_rows("noise", n.len(), At::rows(0, d), rows, d)?;
        }
        for r in 0..rows {
            let o = &out[r * width..(r + 1) * width];
            for i in 0..d {
                let v = if step.learn_sigma {
                    f64::from(o[d + i])
                } else {
                    0.0
                };
                let eta = noise.map(|n| f64::from(n[r * d + i]));
                let zi = &mut z[r * d + i];
                *zi = step.next(f64::from(*zi), f64::from(o[i]), v, eta) as f32;
            }
        }
        Ok(())
    }
}
