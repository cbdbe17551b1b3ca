//! The CPU's fused transformer sublayers: the attention sublayer (one fused Q/K/V product, or
//! for a last-row-only layer a K/V product and a query product of the needed rows), the
//! batched attention over stacked sequences (groups of whole sequences whose projections stay
//! in L2) and the feed-forward sublayer (passes of rows whose inner activations stay in L2).
//! Each carves its scratch out of one buffer; the results equal the trait's compositions
//! (`crate::backend::compose`) up to f32 summation order.

use super::Cpu;
use crate::backend::{Backend, KvCache, SelfMask};
use crate::blocks::{AttentionBlock, FeedForward, LayerNorm, Linear};
use crate::error::{Error, Result};
use crate::weights::Tensor;
use alloc::vec::Vec;
use seqrec_kernels::cpu::attention::{self, AttentionShape, AttnMask};
use seqrec_kernels::cpu::{norm, vector};

/// Rows of a batch of stacked sequences that go through one attention sublayer together (whole
/// sequences, at least one): their projections (`[rows, 3H]`) stay in L2.
const SEQ_GROUP_ROWS: usize = 256;

/// Rows per pass of the feed-forward sublayer: the inner activations (`[rows, inner]`) stay in
/// L2 between the two products.
const FF_ROWS: usize = 128;

fn split(buf: &mut [f32], n: usize) -> (&mut [f32], &mut [f32]) {
    buf.split_at_mut(n)
}

/// Output features `from .. to` of a linear layer (e.g. the query, or the key and value, parts
/// of the fused Q/K/V projection) over `rows` rows of `x`: `out = x·W[from..to]ᵀ + b[from..to]`.
fn linear_part(lin: &Linear<Cpu>, from: usize, to: usize, x: &[f32], rows: usize, out: &mut [f32]) {
    let b = lin.b.as_ref().map(Tensor::as_slice);
    lin.w.product(x, rows, lin.in_dim, (from, to), b, out);
}

/// `out = LN(x + residual)` over `rows` rows.
pub(super) fn add_layer_norm(
    ln: &LayerNorm<Cpu>,
    x: &[f32],
    residual: &[f32],
    rows: usize,
    out: &mut [f32],
) {
    let d = ln.dim;
    let out = &mut out[..rows * d];
    match &ln.affine {
        Some(a) => {
            let (g, b) = (a.gamma.as_slice(), a.beta.as_slice());
            norm::add_layer_norm(x, residual, rows, d, g, b, ln.eps, out);
        }
        None => {
            out.copy_from_slice(x);
            vector::add(out, residual);
            norm::layer_norm_no_affine_inplace(out, rows, d, ln.eps);
        }
    }
}

/// The output projection, residual and LayerNorm of an attention sublayer:
/// `out = LN(dense(ctx) + residual)` over `rows` rows, `proj` is scratch.
fn attention_output(
    be: &Cpu,
    blk: &AttentionBlock<Cpu>,
    ctx: &[f32],
    residual: &[f32],
    rows: usize,
    proj: &mut [f32],
    out: &mut [f32],
) {
    let h = blk.hidden();
    be.apply_linear(&blk.dense, ctx, rows, proj);
    add_layer_norm(&blk.ln, &proj[..rows * h], &residual[..rows * h], rows, out);
}

fn kernel_mask(mask: SelfMask, q_offset: usize) -> AttnMask {
    match mask {
        SelfMask::Causal => AttnMask::Causal { q_offset },
        SelfMask::All => AttnMask::None,
    }
}

/// See [`Backend::attention`].
pub(super) fn attention(
    be: &Cpu,
    blk: &AttentionBlock<Cpu>,
    x: &[f32],
    rows: usize,
    pos0: usize,
    q_from: usize,
    mask: SelfMask,
    cache: &mut KvCache<Cpu>,
    scratch: &mut Vec<f32>,
    out: &mut Vec<f32>,
) -> Result<()> {
    let h = blk.hidden();
    cache.check_append(rows, pos0, q_from)?;
    let lk = pos0 + rows;
    let lq = rows - q_from;
    // Only the queries of rows `q_from..` are needed: with `q_from > 0` (SASRec's last layer)
    // the keys and values of every row and the queries of those rows are two products, else
    // one fused Q/K/V product.
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
    be.ensure(scratch, rows * q_width + q_len + 2 * lq * h + att_len)?;
    be.ensure(out, lq * h)?;
    be.ensure(&mut cache.k, lk * h)?;
    be.ensure(&mut cache.v, lk * h)?;
    let (proj_in, rest) = split(scratch, rows * q_width);
    let (q_only, rest) = split(rest, q_len);
    let (ctx, rest) = split(rest, lq * h);
    let (proj, att_scratch) = split(rest, lq * h);
    // Key and value columns of `proj_in` (width `q_width`): after the queries, or alone.
    let kv0 = if q_from == 0 {
        be.apply_linear(&blk.qkv, x, rows, proj_in);
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
        kernel_mask(mask, pos0 + q_from),
        None,
        1.0 / libm::sqrtf(blk.head_dim as f32),
        ctx,
        &mut att_scratch[..att_len],
    );
    attention_output(be, blk, ctx, &x[q_from * h..rows * h], lq, proj, out);
    Ok(())
}

/// See [`Backend::attention_seqs`].
pub(super) fn attention_seqs(
    be: &Cpu,
    blk: &AttentionBlock<Cpu>,
    x: &[f32],
    lens: &[usize],
    last_only: bool,
    mask: SelfMask,
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
    be.ensure(out, if last_only { lens.len() } else { total } * h)?;
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
    be.ensure(scratch, cap * 3 * h + 2 * cap * h + cap * h + att_len)?;
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
                    kernel_mask(mask, len - 1),
                    None,
                    scale,
                    &mut ctx[i * h..(i + 1) * h],
                    &mut att_scratch[..attention::attention_scratch_len(&shape)],
                );
                r += len;
            }
            let dst = &mut out[seq * h..end * h];
            attention_output(be, blk, ctx, last_x, gb, proj, dst);
        } else {
            be.apply_linear(&blk.qkv, xg, rows, proj_in);
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
                    kernel_mask(mask, 0),
                    None,
                    scale,
                    &mut ctx[r * h..(r + len) * h],
                    &mut att_scratch[..attention::attention_scratch_len(&shape)],
                );
                r += len;
            }
            let dst = &mut out[row0 * h..(row0 + rows) * h];
            attention_output(be, blk, ctx, xg, rows, proj, dst);
        }
        seq = end;
        row0 += rows;
    }
    Ok(())
}

/// See [`Backend::feed_forward`].
pub(super) fn feed_forward(
    be: &Cpu,
    blk: &FeedForward<Cpu>,
    x: &[f32],
    rows: usize,
    scratch: &mut Vec<f32>,
    out: &mut Vec<f32>,
) -> Result<()> {
    let h = blk.dense_1.in_dim;
    let inner = blk.dense_1.out_dim;
    let pass = rows.min(FF_ROWS);
    be.ensure(scratch, pass * (inner + h))?;
    be.ensure(out, rows * h)?;
    let (mid, tmp) = split(scratch, pass * inner);
    for r0 in (0..rows).step_by(FF_ROWS) {
        let n = pass.min(rows - r0);
        let xs = &x[r0 * h..(r0 + n) * h];
        be.apply_linear(&blk.dense_1, xs, n, mid);
        seqrec_kernels::cpu::activation::activate(blk.act, &mut mid[..n * inner]);
        be.apply_linear(&blk.dense_2, mid, n, tmp);
        add_layer_norm(
            &blk.ln,
            &tmp[..n * h],
            xs,
            n,
            &mut out[r0 * h..(r0 + n) * h],
        );
    }
    Ok(())
}
