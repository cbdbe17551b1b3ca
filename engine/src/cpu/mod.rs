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
use seqrec_kernels::cpu::{conv, embedding, gru, linear, norm, vector};

/// The CPU backend (SIMD kernels dispatched at run time; register-blocked, allocation-free
/// matrix products).
#[derive(Copy, Clone, Debug, Default)]
pub struct Cpu;

/// Items scored per block in the fused catalog scan + top-k (the scores stay in L1).
const SCAN_BLOCK: usize = 512;

fn split(buf: &mut [f32], n: usize) -> (&mut [f32], &mut [f32]) {
    buf.split_at_mut(n)
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
        let shape = AttentionShape {
            lq,
            lk,
            n_heads: blk.n_heads,
            head_dim: blk.head_dim,
            q_stride: 3 * h,
            kv_stride: h,
            out_stride: h,
        };
        let att_len = attention::attention_scratch_len(&shape);
        self.ensure(scratch, rows * 3 * h + 2 * lq * h + att_len)?;
        self.ensure(out, lq * h)?;
        let (qkv, rest) = split(scratch, rows * 3 * h);
        let (ctx, rest) = split(rest, lq * h);
        let (proj, att_scratch) = split(rest, lq * h);
        Cpu::apply_linear(&blk.qkv, x, rows, qkv);
        for r in 0..rows {
            let row = &qkv[r * 3 * h..(r + 1) * 3 * h];
            let p = pos0 + r;
            cache.k[p * h..(p + 1) * h].copy_from_slice(&row[h..2 * h]);
            cache.v[p * h..(p + 1) * h].copy_from_slice(&row[2 * h..]);
        }
        cache.len = lk;
        attention::attention(
            &shape,
            &qkv[q_from * 3 * h..],
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
        Cpu::apply_linear(&blk.dense, ctx, lq, proj);
        norm::add_layer_norm(
            proj,
            &x[q_from * h..rows * h],
            lq,
            h,
            blk.ln.gamma.as_slice(),
            blk.ln.beta.as_slice(),
            blk.ln.eps,
            &mut out[..lq * h],
        );
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
        self.ensure(scratch, rows * (inner + h))?;
        self.ensure(out, rows * h)?;
        let (mid, tmp) = split(scratch, rows * inner);
        Cpu::apply_linear(&blk.dense_1, x, rows, mid);
        activation::activate(blk.act, mid);
        Cpu::apply_linear(&blk.dense_2, mid, rows, tmp);
        norm::add_layer_norm(
            &tmp[..rows * h],
            &x[..rows * h],
            rows,
            h,
            blk.ln.gamma.as_slice(),
            blk.ln.beta.as_slice(),
            blk.ln.eps,
            &mut out[..rows * h],
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
            ItemData::F32(t) => linear::linear(h, t.as_slice(), None, out, rows, d, n),
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
                ItemData::F32(t) => *o = vector::dot(h, &t.as_slice()[r]),
                ItemData::F16(t) => {
                    linear::gemv_f16(&t[r], h, &mut row, 1, d);
                    *o = row[0];
                }
                ItemData::BF16(t) => {
                    linear::gemv_bf16(&t[r], h, &mut row, 1, d);
                    *o = row[0];
                }
            }
        }
        Ok(())
    }

    fn topk(
        &self,
        items: &ItemTable<Cpu>,
        h: &Vec<f32>,
        exclude: &[u32],
        topk: &mut TopK,
    ) -> Result<()> {
        let (n, d) = (items.rows, items.dim);
        let h = &h[..d];
        let mut block = [0.0f32; SCAN_BLOCK];
        for start in (0..n).step_by(SCAN_BLOCK) {
            let nb = SCAN_BLOCK.min(n - start);
            let (rows, scores) = (start * d..(start + nb) * d, &mut block[..nb]);
            match &items.data {
                ItemData::F32(t) => linear::linear(h, &t.as_slice()[rows], None, scores, 1, d, nb),
                ItemData::F16(t) => linear::gemv_f16(&t[rows], h, scores, nb, d),
                ItemData::BF16(t) => linear::gemv_bf16(&t[rows], h, scores, nb, d),
            }
            topk.push_block(start as u32, scores, exclude);
        }
        Ok(())
    }
}
