//! The provided methods of [`Backend`], written once from its required core.
//!
//! Each function here is what a backend gets when it does not override the method of the same
//! name, and the composed oracle that a fused override is tested against (the engine's tests
//! run every model on a backend that implements the core only and compare it with the CPU's
//! fused blocks).

use super::{At, Backend, BlockScratch, DdpmStep, KvCache, Mask, MhaShape, Scale, SelfMask, Src};
use crate::blocks::{
    Activation, AttentionBlock, CrossAttention, DitBlock, Embedding, FeedForward, FinalLayer,
    ItemTable, LayerNorm, Mlp, NextItNetBlock, SelfAttention, TemporalBlock,
};
use crate::error::{Error, Result};
use alloc::format;

/// See [`Backend::embedding`].
pub fn embedding<B: Backend>(
    be: &B,
    table: &Embedding<B>,
    ids: &[u32],
    positions: Option<(&Embedding<B>, usize)>,
    out: &mut B::Buf,
) -> Result<()> {
    be.gather(table, ids, out)?;
    if let Some((pos, pos0)) = positions {
        let d = table.dim;
        let (from, to) = (At::rows(pos0, d), At::rows(0, d));
        let one = Scale::All(1.0);
        be.axpy(Src::Param(&pos.table), from, one, out, to, ids.len(), d)?;
    }
    Ok(())
}

/// See [`Backend::embedding_seqs`].
pub fn embedding_seqs<B: Backend>(
    be: &B,
    table: &Embedding<B>,
    ids: &[u32],
    lens: &[usize],
    positions: Option<&Embedding<B>>,
    out: &mut B::Buf,
) -> Result<()> {
    be.gather(table, ids, out)?;
    if let Some(pos) = positions {
        let d = table.dim;
        let mut row = 0;
        for &len in lens {
            let (from, to) = (At::rows(0, d), At::rows(row, d));
            be.axpy(
                Src::Param(&pos.table),
                from,
                Scale::All(1.0),
                out,
                to,
                len,
                d,
            )?;
            row += len;
        }
    }
    Ok(())
}

/// See [`Backend::add_layer_norm`].
pub fn add_layer_norm<B: Backend>(
    be: &B,
    ln: &LayerNorm<B>,
    x: &B::Buf,
    residual: &B::Buf,
    rows: usize,
    out: &mut B::Buf,
) -> Result<()> {
    let d = ln.dim;
    be.copy_rows(x, 0, out, 0, rows, d)?;
    let at = At::rows(0, d);
    be.axpy(Src::Buf(residual), at, Scale::All(1.0), out, at, rows, d)?;
    be.layer_norm(ln, out, 0..rows)
}

/// `out = LN(proj + x[residual rows])`: the output projection's residual and LayerNorm, with
/// the residual rows of `x` at `residual` (`rows` rows of `H`).
fn residual_norm<B: Backend>(
    be: &B,
    ln: &LayerNorm<B>,
    proj: &B::Buf,
    x: &B::Buf,
    residual: At,
    rows: usize,
    out: &mut B::Buf,
) -> Result<()> {
    let h = ln.dim;
    be.copy_rows(proj, 0, out, 0, rows, h)?;
    be.axpy(
        Src::Buf(x),
        residual,
        Scale::All(1.0),
        out,
        At::rows(0, h),
        rows,
        h,
    )?;
    be.layer_norm(ln, out, 0..rows)
}

/// See [`Backend::attention`].
pub fn attention<B: Backend>(
    be: &B,
    blk: &AttentionBlock<B>,
    x: &B::Buf,
    rows: usize,
    pos0: usize,
    q_from: usize,
    mask: SelfMask,
    cache: &mut KvCache<B>,
    tmp: &mut BlockScratch<B>,
    out: &mut B::Buf,
) -> Result<()> {
    let h = blk.hidden();
    cache.check_append(rows, pos0, q_from)?;
    let lk = pos0 + rows;
    let lq = rows - q_from;
    let BlockScratch {
        proj, ctx, work, ..
    } = tmp;
    be.linear(&blk.qkv, x, rows, Activation::Identity, proj)?;
    let w = 3 * h;
    let (kv, to) = (At::strided(h, w), At::rows(pos0, h));
    be.copy(Src::Buf(proj), kv, &mut cache.k, to, rows, h)?;
    let v = At::strided(2 * h, w);
    be.copy(Src::Buf(proj), v, &mut cache.v, to, rows, h)?;
    cache.len = lk;
    let mask = match mask {
        SelfMask::Causal => Mask::Causal {
            q_offset: pos0 + q_from,
        },
        SelfMask::All => Mask::None,
    };
    be.mha(
        MhaShape {
            lq,
            lk,
            n_heads: blk.n_heads,
            head_dim: blk.head_dim,
        },
        (proj, At::strided(q_from * w, w)),
        (&cache.k, At::rows(0, h)),
        (&cache.v, At::rows(0, h)),
        mask,
        (ctx, At::rows(0, h)),
        work,
    )?;
    be.linear(&blk.dense, ctx, lq, Activation::Identity, proj)?;
    residual_norm(be, &blk.ln, proj, x, At::rows(q_from, h), lq, out)
}

/// See [`Backend::attention_seqs`].
pub fn attention_seqs<B: Backend>(
    be: &B,
    blk: &AttentionBlock<B>,
    x: &B::Buf,
    lens: &[usize],
    last_only: bool,
    mask: SelfMask,
    tmp: &mut BlockScratch<B>,
    out: &mut B::Buf,
) -> Result<()> {
    if lens.contains(&0) {
        return Err(Error::InvalidArgument(
            "attention over a batch holding an empty sequence".into(),
        ));
    }
    let h = blk.hidden();
    let w = 3 * h;
    let total: usize = lens.iter().sum();
    let BlockScratch {
        proj, ctx, work, ..
    } = tmp;
    be.linear(&blk.qkv, x, total, Activation::Identity, proj)?;
    let mut r0 = 0;
    for (s, &len) in lens.iter().enumerate() {
        let (lq, q0, o) = if last_only {
            (1, r0 + len - 1, s)
        } else {
            (len, r0, r0)
        };
        let mask = match mask {
            SelfMask::Causal => Mask::Causal { q_offset: q0 - r0 },
            SelfMask::All => Mask::None,
        };
        be.mha(
            MhaShape {
                lq,
                lk: len,
                n_heads: blk.n_heads,
                head_dim: blk.head_dim,
            },
            (proj, At::strided(q0 * w, w)),
            (proj, At::strided(r0 * w + h, w)),
            (proj, At::strided(r0 * w + 2 * h, w)),
            mask,
            (ctx, At::rows(o, h)),
            work,
        )?;
        r0 += len;
    }
    let rows = if last_only { lens.len() } else { total };
    be.linear(&blk.dense, ctx, rows, Activation::Identity, proj)?;
    if !last_only {
        return residual_norm(be, &blk.ln, proj, x, At::rows(0, h), rows, out);
    }
    // The residual of each sequence's last row.
    be.copy_rows(proj, 0, out, 0, rows, h)?;
    let mut end = 0;
    for (s, &len) in lens.iter().enumerate() {
        end += len;
        let (from, to) = (At::rows(end - 1, h), At::rows(s, h));
        be.axpy(Src::Buf(x), from, Scale::All(1.0), out, to, 1, h)?;
    }
    be.layer_norm(&blk.ln, out, 0..rows)
}

/// See [`Backend::cross_attention`].
pub fn cross_attention<B: Backend>(
    be: &B,
    blk: &CrossAttention<B>,
    x: &B::Buf,
    rows: usize,
    ctx: &B::Buf,
    ctx_rows: usize,
    ctx_valid: Option<&[bool]>,
    tmp: &mut BlockScratch<B>,
    out: &mut B::Buf,
) -> Result<()> {
    if ctx_valid.is_some_and(|v| v.len() != ctx_rows) {
        return Err(Error::InvalidArgument(format!(
            "cross-attention over {ctx_rows} context rows with {} validity flags",
            ctx_valid.map_or(0, <[bool]>::len)
        )));
    }
    let h = blk.hidden();
    let BlockScratch {
        proj,
        ctx: kv,
        work,
        ..
    } = tmp;
    be.linear(&blk.q, x, rows, Activation::Identity, proj)?;
    be.linear(&blk.kv, ctx, ctx_rows, Activation::Identity, kv)?;
    let mask = match ctx_valid {
        Some(v) => Mask::KeyPadding(v),
        None => Mask::None,
    };
    be.mha(
        MhaShape {
            lq: rows,
            lk: ctx_rows,
            n_heads: blk.n_heads,
            head_dim: blk.head_dim,
        },
        (proj, At::rows(0, h)),
        (kv, At::strided(0, 2 * h)),
        (kv, At::strided(h, 2 * h)),
        mask,
        (out, At::rows(0, h)),
        work,
    )?;
    be.linear(&blk.proj, out, rows, Activation::Identity, proj)?;
    be.copy_rows(proj, 0, out, 0, rows, h)
}

/// See [`Backend::feed_forward`].
pub fn feed_forward<B: Backend>(
    be: &B,
    blk: &FeedForward<B>,
    x: &B::Buf,
    rows: usize,
    tmp: &mut BlockScratch<B>,
    out: &mut B::Buf,
) -> Result<()> {
    be.linear(&blk.dense_1, x, rows, blk.act, &mut tmp.proj)?;
    be.linear(
        &blk.dense_2,
        &tmp.proj,
        rows,
        Activation::Identity,
        &mut tmp.ctx,
    )?;
    be.add_layer_norm(&blk.ln, &tmp.ctx, x, rows, out)
}

/// See [`Backend::nextitnet_block`].
pub fn nextitnet_block<B: Backend>(
    be: &B,
    blk: &NextItNetBlock<B>,
    x: &B::Buf,
    len: usize,
    from: usize,
    mid: &mut B::Buf,
    tmp: &mut BlockScratch<B>,
    out: &mut B::Buf,
) -> Result<()> {
    let c = blk.channels();
    be.causal_conv(&blk.conv1, x, len, from, mid)?;
    be.layer_norm(&blk.ln1, mid, from..len)?;
    be.activate(Activation::Relu, mid, from * c..len * c)?;
    let o2 = &mut tmp.proj;
    be.causal_conv(&blk.conv2, mid, len, from, o2)?;
    be.layer_norm(&blk.ln2, o2, from..len)?;
    be.activate(Activation::Relu, o2, from * c..len * c)?;
    let at = At::rows(from, c);
    be.copy(Src::Buf(x), at, out, at, len - from, c)?;
    be.axpy(Src::Buf(o2), at, Scale::All(1.0), out, at, len - from, c)
}

/// Group `g` of `rows` rows in groups of `group`: its first row and number of rows.
fn group_rows(rows: usize, group: usize, g: usize) -> (usize, usize) {
    let r0 = g * group;
    (r0, group.min(rows - r0))
}

/// The `g`-th row of a row block.
fn nth(at: At, g: usize) -> At {
    At::repeat(at.offset + g * at.stride)
}

/// Checks a grouping of rows.
fn check_group(op: &str, rows: usize, group: usize) -> Result<usize> {
    if group == 0 && rows > 0 {
        return Err(Error::InvalidArgument(format!(
            "{op}: {rows} rows in groups of 0"
        )));
    }
    Ok(rows.div_ceil(group.max(1)))
}

/// See [`Backend::modulate`].
pub fn modulate<B: Backend>(
    be: &B,
    x: &mut B::Buf,
    rows: usize,
    dim: usize,
    eps: f32,
    group: usize,
    shift: (&B::Buf, At),
    scale: (&B::Buf, At),
    work: &mut B::Buf,
) -> Result<()> {
    let _ = work;
    be.layer_norm(&LayerNorm::plain(dim, eps), x, 0..rows)?;
    for g in 0..check_group("modulate", rows, group)? {
        let (r0, n) = group_rows(rows, group, g);
        let at = At::rows(r0, dim);
        be.mul(Src::Buf(scale.0), nth(scale.1, g), 1.0, x, at, n, dim)?;
        let sh = Src::Buf(shift.0);
        be.axpy(sh, nth(shift.1, g), Scale::All(1.0), x, at, n, dim)?;
    }
    Ok(())
}

/// See [`Backend::gated_add`].
pub fn gated_add<B: Backend>(
    be: &B,
    x: &mut B::Buf,
    y: &mut B::Buf,
    rows: usize,
    dim: usize,
    group: usize,
    gate: (&B::Buf, At),
) -> Result<()> {
    for g in 0..check_group("gated_add", rows, group)? {
        let (r0, n) = group_rows(rows, group, g);
        let at = At::rows(r0, dim);
        be.mul(Src::Buf(gate.0), nth(gate.1, g), 0.0, y, at, n, dim)?;
    }
    let at = At::rows(0, dim);
    be.axpy(Src::Buf(y), at, Scale::All(1.0), x, at, rows, dim)
}

/// See [`Backend::self_attention`].
pub fn self_attention<B: Backend>(
    be: &B,
    att: &SelfAttention<B>,
    x: &B::Buf,
    groups: usize,
    tokens: usize,
    tmp: &mut BlockScratch<B>,
    out: &mut B::Buf,
) -> Result<()> {
    let (h, rows) = (att.hidden(), groups * tokens);
    let w = 3 * h;
    let BlockScratch {
        proj, ctx, work, ..
    } = tmp;
    be.linear(&att.qkv, x, rows, Activation::Identity, proj)?;
    for g in 0..groups {
        let r0 = g * tokens;
        be.mha(
            MhaShape {
                lq: tokens,
                lk: tokens,
                n_heads: att.n_heads,
                head_dim: att.head_dim,
            },
            (proj, At::strided(r0 * w, w)),
            (proj, At::strided(r0 * w + h, w)),
            (proj, At::strided(r0 * w + 2 * h, w)),
            Mask::None,
            (ctx, At::rows(r0, h)),
            work,
        )?;
    }
    be.linear(&att.proj, ctx, rows, Activation::Identity, out)
}

/// `out = mlp(x)` over `rows` rows, the inner activations in `inner`.
fn mlp<B: Backend>(
    be: &B,
    m: &Mlp<B>,
    x: &B::Buf,
    rows: usize,
    inner: &mut B::Buf,
    out: &mut B::Buf,
) -> Result<()> {
    be.linear(&m.fc1, x, rows, m.act, inner)?;
    be.linear(&m.fc2, inner, rows, Activation::Identity, out)
}

/// See [`Backend::dit_block`].
pub fn dit_block<B: Backend>(
    be: &B,
    blk: &DitBlock<B>,
    x: &mut B::Buf,
    samples: usize,
    tokens: usize,
    cond: &B::Buf,
    tmp: &mut BlockScratch<B>,
) -> Result<()> {
    let (h, rows) = (blk.hidden(), samples * tokens);
    // The sublayers use `proj`, `ctx` and `work`; the block keeps its rows apart from them.
    let mut mods = core::mem::take(&mut tmp.cond);
    let mut h_in = core::mem::take(&mut tmp.rows);
    let mut y = core::mem::take(&mut tmp.out);
    let res = (|| {
        // (sh1, sc1, g1, sh2, sc2, g2) of every sample, [samples, 6H].
        be.linear(&blk.ada, cond, samples, Activation::Identity, &mut mods)?;
        let chunk = |i: usize| (&mods, At::strided(i * h, 6 * h));
        for (shift, scale, gate) in [(0, 1, 2), (3, 4, 5)] {
            be.copy_rows(x, 0, &mut h_in, 0, rows, h)?;
            let eps = blk.eps;
            be.modulate(
                &mut h_in,
                rows,
                h,
                eps,
                tokens,
                chunk(shift),
                chunk(scale),
                &mut y,
            )?;
            if shift == 0 {
                be.self_attention(&blk.attn, &h_in, samples, tokens, tmp, &mut y)?;
            } else {
                mlp(be, &blk.mlp, &h_in, rows, &mut tmp.proj, &mut y)?;
            }
            be.gated_add(x, &mut y, rows, h, tokens, chunk(gate))?;
        }
        Ok(())
    })();
    (tmp.cond, tmp.rows, tmp.out) = (mods, h_in, y);
    res
}

/// See [`Backend::temporal_block`].
pub fn temporal_block<B: Backend>(
    be: &B,
    blk: &TemporalBlock<B>,
    x: &mut B::Buf,
    samples: usize,
    tokens: usize,
    kv: &B::Buf,
    ctx: usize,
    valid: Option<&[bool]>,
    tmp: &mut BlockScratch<B>,
) -> Result<()> {
    let h = blk.cross.hidden();
    let rows = samples * tokens;
    if valid.is_some_and(|v| v.len() != samples * ctx) {
        return Err(Error::InvalidArgument(format!(
            "temporal block over {samples} samples of {ctx} history rows with {} validity flags",
            valid.map_or(0, <[bool]>::len)
        )));
    }
    let one = Scale::All(1.0);
    let at = At::rows(0, h);
    let mut h_in = core::mem::take(&mut tmp.rows);
    let res = (|| {
        if let Some((ln, att)) = &blk.self_attn {
            be.copy_rows(x, 0, &mut h_in, 0, rows, h)?;
            be.layer_norm(ln, &mut h_in, 0..rows)?;
            let mut y = core::mem::take(&mut tmp.out);
            let r = be.self_attention(att, &h_in, samples, tokens, tmp, &mut y);
            let r = r.and_then(|_| be.axpy(Src::Buf(&y), at, one, x, at, rows, h));
            tmp.out = y;
            r?;
        }
        // Cross-attention: the queries of every token, then each sample over its history.
        be.copy_rows(x, 0, &mut h_in, 0, rows, h)?;
        be.layer_norm(&blk.norm_cross, &mut h_in, 0..rows)?;
        let BlockScratch {
            proj,
            ctx: att,
            work,
            ..
        } = tmp;
        be.linear(&blk.cross.q, &h_in, rows, Activation::Identity, proj)?;
        for s in 0..samples {
            let mask = match valid {
                Some(v) => Mask::KeyPadding(&v[s * ctx..(s + 1) * ctx]),
                None => Mask::None,
            };
            be.mha(
                MhaShape {
                    lq: tokens,
                    lk: ctx,
                    n_heads: blk.cross.n_heads,
                    head_dim: blk.cross.head_dim,
                },
                (proj, At::rows(s * tokens, h)),
                (kv, At::strided(s * ctx * 2 * h, 2 * h)),
                (kv, At::strided(s * ctx * 2 * h + h, 2 * h)),
                mask,
                (att, At::rows(s * tokens, h)),
                work,
            )?;
        }
        be.linear(&blk.cross.proj, att, rows, Activation::Identity, proj)?;
        be.axpy(Src::Buf(proj), at, one, x, at, rows, h)?;
        // The feed-forward sublayer.
        be.copy_rows(x, 0, &mut h_in, 0, rows, h)?;
        be.layer_norm(&blk.norm2, &mut h_in, 0..rows)?;
        mlp(be, &blk.mlp, &h_in, rows, &mut tmp.proj, &mut tmp.ctx)?;
        be.axpy(Src::Buf(&tmp.ctx), at, one, x, at, rows, h)
    })();
    tmp.rows = h_in;
    res
}

/// See [`Backend::final_layer`].
pub fn final_layer<B: Backend>(
    be: &B,
    blk: &FinalLayer<B>,
    x: &B::Buf,
    samples: usize,
    tokens: usize,
    cond: &B::Buf,
    tmp: &mut BlockScratch<B>,
    out: &mut B::Buf,
) -> Result<()> {
    let h = blk.ada.in_dim;
    let rows = samples * tokens;
    let BlockScratch {
        ctx,
        work,
        cond: mods,
        ..
    } = tmp;
    be.linear(&blk.ada, cond, samples, Activation::Identity, mods)?;
    be.copy_rows(x, 0, ctx, 0, rows, h)?;
    let (shift, scale) = (At::strided(0, 2 * h), At::strided(h, 2 * h));
    be.modulate(
        ctx,
        rows,
        h,
        blk.eps,
        tokens,
        (mods, shift),
        (mods, scale),
        work,
    )?;
    be.linear(&blk.linear, ctx, rows, Activation::Identity, out)
}

/// See [`Backend::timestep_embedding`].
pub fn timestep_embedding<B: Backend>(
    be: &B,
    tau: f64,
    dim: usize,
    max_period: f64,
    out: &mut B::Buf,
    offset: usize,
) -> Result<()> {
    // The sinusoid of a scalar input (like an id, it comes from the request), written in
    // chunks so that nothing is allocated.
    const CHUNK: usize = 64;
    let half = dim / 2;
    let freq = |i: usize| libm::exp(-libm::log(max_period) * i as f64 / half as f64);
    let value = |j: usize| -> f32 {
        if j < half {
            libm::cos(tau * freq(j)) as f32
        } else if j < 2 * half {
            libm::sin(tau * freq(j - half)) as f32
        } else {
            0.0
        }
    };
    let mut chunk = [0.0f32; CHUNK];
    for j0 in (0..dim).step_by(CHUNK) {
        let n = CHUNK.min(dim - j0);
        for (k, v) in chunk[..n].iter_mut().enumerate() {
            *v = value(j0 + k);
        }
        be.write(&chunk[..n], out, offset + j0)?;
    }
    Ok(())
}

/// See [`Backend::ddpm_step`]. Elements go through the host in chunks (nothing is allocated).
pub fn ddpm_step<B: Backend>(
    be: &B,
    out: &B::Buf,
    width: usize,
    z: &mut B::Buf,
    noise: Option<&B::Buf>,
    rows: usize,
    d: usize,
    step: &DdpmStep,
) -> Result<()> {
    const CHUNK: usize = 64;
    let need = if step.learn_sigma { 2 * d } else { d };
    if width < need {
        return Err(Error::InvalidArgument(format!(
            "reverse step over outputs of width {width}, need {need}"
        )));
    }
    let (mut eps, mut v, mut zc, mut nc) =
        ([0f32; CHUNK], [0f32; CHUNK], [0f32; CHUNK], [0f32; CHUNK]);
    for r in 0..rows {
        for c0 in (0..d).step_by(CHUNK) {
            let n = CHUNK.min(d - c0);
            be.read(out, r * width + c0, &mut eps[..n])?;
            if step.learn_sigma {
                be.read(out, r * width + d + c0, &mut v[..n])?;
            }
            be.read(z, r * d + c0, &mut zc[..n])?;
            if let Some(noise) = noise {
                be.read(noise, r * d + c0, &mut nc[..n])?;
            }
            for i in 0..n {
                let eta = noise.map(|_| f64::from(nc[i]));
                let (zi, ei, vi) = (f64::from(zc[i]), f64::from(eps[i]), f64::from(v[i]));
                zc[i] = step.next(zi, ei, vi, eta) as f32;
            }
            be.write(&zc[..n], z, r * d + c0)?;
        }
    }
    Ok(())
}

/// See [`Backend::topk_rows`].
pub fn topk_rows<B: Backend>(
    be: &B,
    items: &ItemTable<B>,
    h: &B::Buf,
    k: usize,
    excludes: &[u32],
    offsets: &[usize],
    scratch: &mut B::Scratch,
    out_items: &mut [u32],
    out_scores: &mut [f32],
    counts: &mut [usize],
) -> Result<()> {
    check_rows_args(k, offsets, out_items, out_scores, counts)?;
    for (r, count) in counts.iter_mut().enumerate() {
        let exclude = &excludes[offsets[r]..offsets[r + 1]];
        let (it, sc) = (
            &mut out_items[r * k..(r + 1) * k],
            &mut out_scores[r * k..(r + 1) * k],
        );
        *count = be.topk(items, h, r, k, exclude, scratch, it, sc)?;
    }
    Ok(())
}

/// Checks the output sizes of a batched top-k over `counts.len()` rows.
pub fn check_rows_args(
    k: usize,
    offsets: &[usize],
    out_items: &[u32],
    out_scores: &[f32],
    counts: &[usize],
) -> Result<()> {
    let n = counts.len();
    if offsets.len() != n + 1 || out_items.len() < n * k || out_scores.len() < n * k {
        return Err(Error::InvalidArgument(format!(
            "a batched top-{k} of {n} rows needs {} exclusion offsets and {} items and scores, \
             got {}, {} and {}",
            n + 1,
            n * k,
            offsets.len(),
            out_items.len(),
            out_scores.len()
        )));
    }
    Ok(())
}
