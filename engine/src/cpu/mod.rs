//! The CPU backend: every block implemented with the seqrec-kernels CPU kernels. Weights are
//! host tensors (zero-copy views into the weight file where possible); activations are
//! `Vec<f32>` buffers owned by a workspace.

use crate::backend::{Backend, KvCache};
use crate::blocks::{
    AttentionBlock, CaserConvs, Embedding, FeedForward, GruLayer, ItemData, ItemTable, LayerNorm,
    Linear, NextItNetBlock,
};
use crate::error::{Error, Result};
use crate::weights::Tensor;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use seqrec_kernels::cpu::activation::{self, Activation};
use seqrec_kernels::cpu::attention::{self, AttentionShape, AttnMask};
use seqrec_kernels::cpu::topk::TopK;
use seqrec_kernels::cpu::{conv, embedding, gru, linear, norm, score, vector};

mod scan;

/// The CPU backend (SIMD kernels dispatched at run time; register-blocked, allocation-free
/// matrix products).
#[derive(Copy, Clone, Debug, Default)]
pub struct Cpu;

/// Rows of a batch of stacked sequences that go through one attention sublayer together (whole
/// sequences, at least one): their projections (`[rows, 3H]`) stay in L2.
const SEQ_GROUP_ROWS: usize = 256;

/// Rows per pass of the feed-forward sublayer: the inner activations (`[rows, inner]`) stay in
/// L2 between the two products.
const FF_ROWS: usize = 128;

fn split(buf: &mut [f32], n: usize) -> (&mut [f32], &mut [f32]) {
    buf.split_at_mut(n)
}

/// Output rows `from .. to` of a linear layer (e.g. the query, or the key and value, parts of
/// the fused Q/K/V projection) over `rows` rows of `x`: `out = x·W[from..to]ᵀ + b[from..to]`.
fn linear_part(lin: &Linear<Cpu>, from: usize, to: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    let k = lin.in_dim;
    linear::linear(
        &x[..rows * k],
        &lin.w.as_slice()[from * k..to * k],
        lin.b.as_ref().map(|b| &b.as_slice()[from..to]),
        &mut out[..rows * (to - from)],
        rows,
        k,
        to - from,
    );
}

/// The output projection, residual and LayerNorm of an attention sublayer:
/// `out = LN(dense(ctx) + residual)` over `rows` rows, `proj` is scratch.
fn attention_output(
    blk: &AttentionBlock<Cpu>,
    ctx: &[f32],
    residual: &[f32],
    rows: usize,
    proj: &mut [f32],
    out: &mut [f32],
) {
    let h = blk.hidden();
    Cpu::apply_linear(&blk.dense, ctx, rows, proj);
    norm::add_layer_norm(
        &proj[..rows * h],
        &residual[..rows * h],
        rows,
        h,
        blk.ln.gamma.as_slice(),
        blk.ln.beta.as_slice(),
        blk.ln.eps,
        &mut out[..rows * h],
    );
}

impl Cpu {
    fn apply_linear(lin: &Linear<Cpu>, x: &[f32], rows: usize, out: &mut [f32]) {
        linear::linear(
            &x[..rows * lin.in_dim],
            lin.w.as_slice(),
            lin.b.as_ref().map(Tensor::as_slice),
            &mut out[..rows * lin.out_dim],
            rows,
            lin.in_dim,
            lin.out_dim,
        );
    }

    fn conv_rows(
        x: &[f32],
        from: usize,
        len: usize,
        c: usize,
        taps: &[f32],
        bias: &[f32],
        k: usize,
        d: usize,
        y: &mut [f32],
    ) {
        if from == 0 {
            conv::causal_conv1d(
                &x[..len * c],
                len,
                c,
                taps,
                Some(bias),
                c,
                k,
                d,
                &mut y[..len * c],
            );
        } else {
            for t in from..len {
                conv::causal_conv1d_step(
                    &x[..(t + 1) * c],
                    t,
                    c,
                    taps,
                    Some(bias),
                    c,
                    k,
                    d,
                    &mut y[t * c..(t + 1) * c],
                );
            }
        }
    }
}

impl Backend for Cpu {
    type Param = Tensor;
    type Buf = Vec<f32>;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn upload(&self, tensor: &Tensor) -> Result<Tensor> {
        Ok(tensor.clone())
    }

    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn ensure(&self, buf: &mut Vec<f32>, len: usize) -> Result<()> {
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        Ok(())
    }

    fn zero(&self, buf: &mut Vec<f32>, len: usize) -> Result<()> {
        self.ensure(buf, len)?;
        buf[..len].fill(0.0);
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

    fn copy_rows(
        &self,
        src: &Vec<f32>,
        src_row: usize,
        dst: &mut Vec<f32>,
        dst_row: usize,
        rows: usize,
        width: usize,
    ) -> Result<()> {
        self.ensure(dst, (dst_row + rows) * width)?;
        dst[dst_row * width..(dst_row + rows) * width]
            .copy_from_slice(&src[src_row * width..(src_row + rows) * width]);
        Ok(())
    }

    fn embedding(
        &self,
        table: &Embedding<Cpu>,
        ids: &[u32],
        positions: Option<(&Embedding<Cpu>, usize)>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let d = table.dim;
        self.ensure(out, ids.len() * d)?;
        let out = &mut out[..ids.len() * d];
        embedding::gather(table.table.as_slice(), d, ids, out);
        if let Some((pos, pos0)) = positions {
            vector::add(out, &pos.table.as_slice()[pos0 * d..(pos0 + ids.len()) * d]);
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
        let d = table.dim;
        self.ensure(out, ids.len() * d)?;
        let out = &mut out[..ids.len() * d];
        embedding::gather(table.table.as_slice(), d, ids, out);
        if let Some(pos) = positions {
            let mut rows = out.chunks_mut(d);
            for &len in lens {
                let pos = &pos.table.as_slice()[..len * d];
                for (row, p) in rows.by_ref().take(len).zip(pos.chunks_exact(d)) {
                    vector::add(row, p);
                }
            }
        }
        Ok(())
    }

    fn linear(
        &self,
        lin: &Linear<Cpu>,
        x: &Vec<f32>,
        rows: usize,
        act: Activation,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self.ensure(out, rows * lin.out_dim)?;
        Cpu::apply_linear(lin, x, rows, out);
        activation::activate(act, &mut out[..rows * lin.out_dim]);
        Ok(())
    }

    fn layer_norm(&self, ln: &LayerNorm<Cpu>, x: &mut Vec<f32>, rows: usize) -> Result<()> {
        norm::layer_norm_inplace(
            &mut x[..rows * ln.dim],
            rows,
            ln.dim,
            ln.gamma.as_slice(),
            ln.beta.as_slice(),
            ln.eps,
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
        cache: &mut KvCache<Cpu>,
        scratch: &mut Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let h = blk.hidden();
        let lk = pos0 + rows;
        let lq = rows - q_from;
        if lk > cache.max_len || q_from >= rows {
            return Err(Error::InvalidArgument(format!(
                "attention over {lk} positions with a cache of {} (q_from {q_from}, rows {rows})",
                cache.max_len
            )));
        }
        // Only the queries of rows `q_from..` are needed: with `q_from > 0` (SASRec's last
        // layer) the keys and values of every row and the queries of those rows are two
        // products, else one fused Q/K/V product.
        let (q_width, q_stride) = if q_from == 0 {
            (3 * h, 3 * h)
        } else {
            (2 * h, h)
        };
        let shape = AttentionShape {
            lq,
            lk,
            n_heads: blk.n_heads,
            head_dim: blk.head_dim,
            q_stride,
            kv_stride: h,
            out_stride: h,
        };
        let att_len = attention::attention_scratch_len(&shape);
        let q_len = if q_from == 0 { 0 } else { lq * h };
        self.ensure(scratch, rows * q_width + q_len + 2 * lq * h + att_len)?;
        self.ensure(out, lq * h)?;
        let (proj_in, rest) = split(scratch, rows * q_width);
        let (q_only, rest) = split(rest, q_len);
        let (ctx, rest) = split(rest, lq * h);
        let (proj, att_scratch) = split(rest, lq * h);
        // Key and value columns of `proj_in` (width `q_width`): after the queries, or alone.
        let kv0 = if q_from == 0 {
            Cpu::apply_linear(&blk.qkv, x, rows, proj_in);
            h
        } else {
            linear_part(&blk.qkv, h, 3 * h, x, rows, proj_in);
            linear_part(&blk.qkv, 0, h, &x[q_from * h..], lq, q_only);
            0
        };
        for r in 0..rows {
            let row = &proj_in[r * q_width + kv0..(r + 1) * q_width];
            let p = pos0 + r;
            cache.k[p * h..(p + 1) * h].copy_from_slice(&row[..h]);
            cache.v[p * h..(p + 1) * h].copy_from_slice(&row[h..]);
        }
        cache.len = lk;
        let q: &[f32] = if q_from == 0 { proj_in } else { q_only };
        attention::attention(
            &shape,
            q,
            &cache.k[..lk * h],
            &cache.v[..lk * h],
            AttnMask::Causal {
                q_offset: pos0 + q_from,
            },
            None,
            1.0 / libm::sqrtf(blk.head_dim as f32),
            ctx,
            &mut att_scratch[..att_len],
        );
        attention_output(blk, ctx, &x[q_from * h..rows * h], lq, proj, out);
        Ok(())
    }

    fn attention_seqs(
        &self,
        blk: &AttentionBlock<Cpu>,
        x: &Vec<f32>,
        lens: &[usize],
        last_only: bool,
        scratch: &mut Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let h = blk.hidden();
        let total: usize = lens.iter().sum();
        let longest = lens.iter().copied().max().unwrap_or(0);
        if lens.contains(&0) {
            return Err(Error::InvalidArgument(
                "attention over a batch holding an empty sequence".into(),
            ));
        }
        self.ensure(out, if last_only { lens.len() } else { total } * h)?;
        // A group of whole sequences: at most SEQ_GROUP_ROWS rows, or one longer sequence.
        let cap = SEQ_GROUP_ROWS.max(longest);
        let att_len = attention::attention_scratch_len(&AttentionShape::packed(
            longest,
            longest,
            blk.n_heads,
            blk.head_dim,
        ));
        // Projections [cap, 3H] (or K/V [cap, 2H] + queries and residuals of last rows), the
        // attention output and its projection [cap, H] each, the attention scratch.
        self.ensure(scratch, cap * 3 * h + 2 * cap * h + cap * h + att_len)?;
        let (proj_in, rest) = split(scratch, cap * 3 * h);
        let (ctx, rest) = split(rest, cap * h);
        let (proj, rest) = split(rest, cap * h);
        let (last_x, att_scratch) = split(rest, cap * h);
        let scale = 1.0 / libm::sqrtf(blk.head_dim as f32);
        let (mut seq, mut row0) = (0, 0);
        while seq < lens.len() {
            // Sequences seq..end, rows row0..row0 + rows.
            let (mut end, mut rows) = (seq, 0);
            while end < lens.len() && (end == seq || rows + lens[end] <= cap) {
                rows += lens[end];
                end += 1;
            }
            let group = &lens[seq..end];
            let xg = &x[row0 * h..(row0 + rows) * h];
            if last_only {
                let (kv, q) = proj_in.split_at_mut(rows * 2 * h);
                linear_part(&blk.qkv, h, 3 * h, xg, rows, kv);
                let mut r = 0;
                for (i, &len) in group.iter().enumerate() {
                    r += len;
                    last_x[i * h..(i + 1) * h].copy_from_slice(&xg[(r - 1) * h..r * h]);
                }
                let gb = group.len();
                linear_part(&blk.qkv, 0, h, last_x, gb, q);
                let mut r = 0;
                for (i, &len) in group.iter().enumerate() {
                    let shape = AttentionShape {
                        lq: 1,
                        lk: len,
                        n_heads: blk.n_heads,
                        head_dim: blk.head_dim,
                        q_stride: h,
                        kv_stride: 2 * h,
                        out_stride: h,
                    };
                    attention::attention(
                        &shape,
                        &q[i * h..(i + 1) * h],
                        &kv[r * 2 * h..(r + len) * 2 * h],
                        &kv[r * 2 * h + h..(r + len) * 2 * h],
                        AttnMask::Causal { q_offset: len - 1 },
                        None,
                        scale,
                        &mut ctx[i * h..(i + 1) * h],
                        &mut att_scratch[..attention::attention_scratch_len(&shape)],
                    );
                    r += len;
                }
                attention_output(blk, ctx, last_x, gb, proj, &mut out[seq * h..end * h]);
            } else {
                Cpu::apply_linear(&blk.qkv, xg, rows, proj_in);
                let mut r = 0;
                for &len in group {
                    let shape = AttentionShape {
                        lq: len,
                        lk: len,
                        n_heads: blk.n_heads,
                        head_dim: blk.head_dim,
                        q_stride: 3 * h,
                        kv_stride: 3 * h,
                        out_stride: h,
                    };
                    let qkv = &proj_in[r * 3 * h..(r + len) * 3 * h];
                    attention::attention(
                        &shape,
                        qkv,
                        &qkv[h..],
                        &qkv[2 * h..],
                        AttnMask::Causal { q_offset: 0 },
                        None,
                        scale,
                        &mut ctx[r * h..(r + len) * h],
                        &mut att_scratch[..attention::attention_scratch_len(&shape)],
                    );
                    r += len;
                }
                let dst = &mut out[row0 * h..(row0 + rows) * h];
                attention_output(blk, ctx, xg, rows, proj, dst);
            }
            seq = end;
            row0 += rows;
        }
        Ok(())
    }

    fn feed_forward(
        &self,
        blk: &FeedForward<Cpu>,
        x: &Vec<f32>,
        rows: usize,
        scratch: &mut Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let h = blk.dense_1.in_dim;
        let inner = blk.dense_1.out_dim;
        let pass = rows.min(FF_ROWS);
        self.ensure(scratch, pass * (inner + h))?;
        self.ensure(out, rows * h)?;
        let (mid, tmp) = split(scratch, pass * inner);
        for r0 in (0..rows).step_by(FF_ROWS) {
            let n = pass.min(rows - r0);
            let xs = &x[r0 * h..(r0 + n) * h];
            Cpu::apply_linear(&blk.dense_1, xs, n, mid);
            activation::activate(blk.act, &mut mid[..n * inner]);
            Cpu::apply_linear(&blk.dense_2, mid, n, tmp);
            norm::add_layer_norm(
                &tmp[..n * h],
                xs,
                n,
                h,
                blk.ln.gamma.as_slice(),
                blk.ln.beta.as_slice(),
                blk.ln.eps,
                &mut out[r0 * h..(r0 + n) * h],
            );
        }
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
        self.ensure(scratch, gru::gru_scratch_len(steps, hd))?;
        self.ensure(out, steps * hd)?;
        gru::gru_layer(
            &x[..steps * layer.input],
            steps,
            layer.input,
            hd,
            layer.w_ih.as_slice(),
            layer.w_hh.as_slice(),
            layer.b_ih.as_ref().map(Tensor::as_slice),
            layer.b_hh.as_ref().map(Tensor::as_slice),
            &mut h[..hd],
            &mut out[..steps * hd],
            &mut scratch[..gru::gru_scratch_len(steps, hd)],
        );
        Ok(())
    }

    fn nextitnet_block(
        &self,
        blk: &NextItNetBlock<Cpu>,
        x: &Vec<f32>,
        len: usize,
        from: usize,
        mid: &mut Vec<f32>,
        scratch: &mut Vec<f32>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let c = blk.channels;
        let (k, d) = (blk.kernel, blk.dilation);
        self.ensure(mid, len * c)?;
        self.ensure(scratch, len * c)?;
        self.ensure(out, len * c)?;
        let rows = len - from;
        Cpu::conv_rows(
            x,
            from,
            len,
            c,
            blk.conv1.as_slice(),
            blk.bias1.as_slice(),
            k,
            d,
            mid,
        );
        let m = &mut mid[from * c..len * c];
        norm::layer_norm_inplace(
            m,
            rows,
            c,
            blk.ln1.gamma.as_slice(),
            blk.ln1.beta.as_slice(),
            blk.ln1.eps,
        );
        activation::relu(m);
        Cpu::conv_rows(
            mid,
            from,
            len,
            c,
            blk.conv2.as_slice(),
            blk.bias2.as_slice(),
            k,
            2 * d,
            scratch,
        );
        let o2 = &mut scratch[from * c..len * c];
        norm::layer_norm_inplace(
            o2,
            rows,
            c,
            blk.ln2.gamma.as_slice(),
            blk.ln2.beta.as_slice(),
            blk.ln2.eps,
        );
        activation::relu(o2);
        let dst = &mut out[from * c..len * c];
        dst.copy_from_slice(&x[from * c..len * c]);
        vector::add(dst, o2);
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
        conv::caser_vertical(
            x,
            l,
            e,
            blk.conv_v.as_slice(),
            blk.bias_v.as_slice(),
            blk.nv,
            ov,
        );
        for (i, (w, b)) in blk.conv_h.iter().enumerate() {
            let height = i + 1;
            conv::caser_horizontal(
                x,
                l,
                e,
                height,
                w.as_slice(),
                b.as_slice(),
                blk.nh,
                &mut oh[i * blk.nh..(i + 1) * blk.nh],
                scratch,
            );
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
        let (h, out) = (&h[..rows * d], &mut out[..rows * n]);
        match &items.data {
            // The scores the top-k scan computes, bit for bit.
            ItemData::F32(t) | ItemData::I8 { exact: t, .. } => {
                score::scores(h, t.as_slice(), out, rows, n, d)
            }
            ItemData::F16(t) => {
                for (hr, or) in h.chunks_exact(d).zip(out.chunks_exact_mut(n)) {
                    linear::gemv_f16(t, hr, or, n, d);
                }
            }
            ItemData::BF16(t) => {
                for (hr, or) in h.chunks_exact(d).zip(out.chunks_exact_mut(n)) {
                    linear::gemv_bf16(t, hr, or, n, d);
                }
            }
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
        let h = &h[..d];
        let mut row = [0.0f32; 1];
        for (&id, o) in ids.iter().zip(out.iter_mut()) {
            let r = id as usize * d..(id as usize + 1) * d;
            match &items.data {
                ItemData::F32(t) | ItemData::I8 { exact: t, .. } => {
                    score::scores(h, &t.as_slice()[r], &mut row, 1, 1, d);
                }
                ItemData::F16(t) => linear::gemv_f16(&t[r], h, &mut row, 1, d),
                ItemData::BF16(t) => linear::gemv_bf16(&t[r], h, &mut row, 1, d),
            }
            *o = row[0];
        }
        Ok(())
    }

    fn topk(
        &self,
        items: &ItemTable<Cpu>,
        h: &Vec<f32>,
        exclude: &[u32],
        topk: &mut TopK,
        parts: &mut Vec<TopK>,
    ) -> Result<()> {
        scan::topk_one(items, &h[..items.dim], exclude, topk, parts);
        Ok(())
    }

    fn topk_rows(
        &self,
        items: &ItemTable<Cpu>,
        h: &Vec<f32>,
        excludes: &[u32],
        offsets: &[usize],
        topks: &mut [TopK],
        scratch: &mut Vec<f32>,
    ) -> Result<()> {
        if offsets.len() != topks.len() + 1 {
            return Err(Error::InvalidArgument(format!(
                "{} exclusion offsets for {} selectors",
                offsets.len(),
                topks.len()
            )));
        }
        scan::topk_rows(items, h, excludes, offsets, topks, scratch);
        Ok(())
    }
}
