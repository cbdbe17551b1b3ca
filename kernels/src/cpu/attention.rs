//! Multi-head scaled-dot-product attention with causal and key-padding masks: SASRec (causal
//! self-attention), decision transformers (causal, incremental against a KV cache), BERT4Rec
//! (bidirectional with a padding mask) and cross-attention.
//!
//! Layout (all `f32`, row-major, see [`AttentionShape`]): query row `i` is
//! `q[i·q_stride..][..H]`, key and value row `j` are `k[j·kv_stride..][..H]` and
//! `v[j·kv_stride..][..H]`, output row `i` is `out[i·out_stride..][..H]`, with
//! `H = n_heads·head_dim`; head `h` uses the contiguous columns `[h·head_dim, (h+1)·head_dim)`.
//! The strides let `q`, `k` and `v` be the column blocks of one fused `[L, 3H]` projection
//! (`&qkv[0..]`, `&qkv[H..]`, `&qkv[2H..]` with stride `3H`). Output columns outside `[0, H)`
//! of each row are left untouched.
//!
//! Semantics, per head and query row `i`: scores `s_j = (q_i·k_j)·scale` over the visible keys,
//! `p = softmax(s)` (max-subtracted), `out_i = Σ_j p_j v_j`. Key `j` is visible to query `i`
//! when `key_valid[j]` (if given) and, under [`AttnMask::Causal`]` { q_offset }`,
//! `j ≤ q_offset + i`. Hidden keys are excluded outright: weight exactly 0, and the value rows
//! of keys hidden by `key_valid` or beyond every query's causal horizon are never read. For
//! valid inputs this equals RecBole's additive −10000 mask. **A query row with no visible key
//! gets zeros** (PyTorch's `-inf` masking would give NaN, RecBole's additive mask a uniform
//! average over all keys).
//!
//! Paths: [`attention_ref`] plain loops in f64. The pulp body has two score kernels: for fewer
//! than 4 query rows (decoding) a dot product per key; otherwise the head's keys are packed
//! transposed into the scratch buffer in blocks of two vectors of keys, and tiles of 4 query
//! rows × 2 vectors of keys accumulate in registers (no horizontal reductions). The row
//! softmax uses the polynomial exp of [`super::math`], and `p·V` is register-tiled the same
//! way over the value rows, which are read in place.
//! Tolerance of the fast paths against the reference: `1e-5·max|V|` per output element.

use super::isa::Isa;
use super::softmax::exp_shifted_row;
use super::vector::dot_simd;
use alloc::vec;
use pulp::{Simd, WithSimd};

/// Sizes and strides of one attention call. See the module docs for the layout.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttentionShape {
    /// Number of query rows.
    pub lq: usize,
    /// Number of key/value rows.
    pub lk: usize,
    /// Number of heads.
    pub n_heads: usize,
    /// Width of one head; `H = n_heads·head_dim`.
    pub head_dim: usize,
    /// Distance between consecutive query rows in `q` (at least `H`).
    pub q_stride: usize,
    /// Distance between consecutive key rows in `k` and value rows in `v` (at least `H`).
    pub kv_stride: usize,
    /// Distance between consecutive output rows in `out` (at least `H`).
    pub out_stride: usize,
}

impl AttentionShape {
    /// A shape whose `q`, `k`, `v` and `out` rows are packed (every stride `n_heads·head_dim`).
    pub fn packed(lq: usize, lk: usize, n_heads: usize, head_dim: usize) -> Self {
        let h = n_heads * head_dim;
        AttentionShape {
            lq,
            lk,
            n_heads,
            head_dim,
            q_stride: h,
            kv_stride: h,
            out_stride: h,
        }
    }

    /// `H = n_heads·head_dim`, the width of a row's attention columns.
    pub fn hidden(&self) -> usize {
        self.n_heads * self.head_dim
    }
}

/// The structural mask of an attention call (key padding is the separate `key_valid`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum AttnMask {
    /// Every key is visible (bidirectional / cross-attention).
    None,
    /// Query `i` sits at absolute position `q_offset + i` and sees keys `j ≤ q_offset + i`.
    /// `q_offset = 0` with `lq = lk` is full causal self-attention; `q_offset = lk − lq` decodes
    /// the newest `lq` rows against a KV cache of `lk` rows.
    Causal {
        /// Absolute position of query row 0.
        q_offset: usize,
    },
}

impl AttnMask {
    /// The keys `[0, n)` visible to query row `i` before `key_valid` is applied.
    #[inline(always)]
    fn visible_prefix(self, i: usize, lk: usize) -> usize {
        match self {
            AttnMask::None => lk,
            AttnMask::Causal { q_offset } => q_offset.saturating_add(i).saturating_add(1).min(lk),
        }
    }
}

/// Length of the `scratch` buffer [`attention`] needs:
/// `(head_dim + 4)·lk₃₂ + 4·head_dim` with `lk₃₂` = `lk` rounded up to a multiple of 32 (packed
/// keys, the scores of a tile of 4 query rows, the tile's queries).
pub fn attention_scratch_len(shape: &AttentionShape) -> usize {
    let ld = shape.lk.div_ceil(MAX_KEY_BLOCK) * MAX_KEY_BLOCK;
    (shape.head_dim + TILE_ROWS) * ld + TILE_ROWS * shape.head_dim
}

/// Minimum length of a buffer holding `rows` rows of width `width` at `stride`.
fn rows_len(rows: usize, stride: usize, width: usize) -> usize {
    if rows == 0 {
        0
    } else {
        (rows - 1) * stride + width
    }
}

#[track_caller]
fn check_attention(
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    key_valid: Option<&[bool]>,
    out: &[f32],
) {
    let h = shape
        .n_heads
        .checked_mul(shape.head_dim)
        .expect("attention: n_heads·head_dim overflows usize");
    for (name, stride) in [
        ("q_stride", shape.q_stride),
        ("kv_stride", shape.kv_stride),
        ("out_stride", shape.out_stride),
    ] {
        assert!(
            stride >= h,
            "attention: {name} is {stride}, expected at least n_heads·head_dim = {h}"
        );
    }
    for (name, len, rows, stride) in [
        ("q", q.len(), shape.lq, shape.q_stride),
        ("k", k.len(), shape.lk, shape.kv_stride),
        ("v", v.len(), shape.lk, shape.kv_stride),
        ("out", out.len(), shape.lq, shape.out_stride),
    ] {
        let need = rows_len(rows, stride, h);
        assert!(
            len >= need,
            "attention: {name} has {len} values, expected at least (rows−1)·stride + H = \
             ({rows}−1)·{stride} + {h} = {need}"
        );
    }
    if let Some(valid) = key_valid {
        assert_eq!(
            valid.len(),
            shape.lk,
            "attention: key_valid has {} entries, expected lk = {}",
            valid.len(),
            shape.lk
        );
    }
}

/// Reference attention: plain loops, f64 scores, softmax and weighted sum.
///
/// # Panics
/// As [`attention`] (without the scratch requirement).
pub fn attention_ref(
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: AttnMask,
    key_valid: Option<&[bool]>,
    scale: f32,
    out: &mut [f32],
) {
    check_attention(shape, q, k, v, key_valid, out);
    let &AttentionShape {
        lq,
        lk,
        n_heads,
        head_dim: hd,
        q_stride,
        kv_stride,
        out_stride,
    } = shape;
    let mut p = vec![0.0f64; lk];
    for h in 0..n_heads {
        let c0 = h * hd;
        for i in 0..lq {
            let n_vis = mask.visible_prefix(i, lk);
            let visible = |j: usize| j < n_vis && key_valid.is_none_or(|kv| kv[j]);
            let mut max = f64::NEG_INFINITY;
            let mut any = false;
            for j in (0..lk).filter(|&j| visible(j)) {
                let mut dot = 0.0f64;
                for d in 0..hd {
                    dot += q[i * q_stride + c0 + d] as f64 * k[j * kv_stride + c0 + d] as f64;
                }
                p[j] = dot * scale as f64;
                max = max.max(p[j]);
                any = true;
            }
            let o = &mut out[i * out_stride + c0..i * out_stride + c0 + hd];
            if !any {
                o.fill(0.0);
                continue;
            }
            let mut sum = 0.0f64;
            for j in (0..lk).filter(|&j| visible(j)) {
                p[j] = libm::exp(p[j] - max);
                sum += p[j];
            }
            for (d, od) in o.iter_mut().enumerate() {
                let mut acc = 0.0f64;
                for j in (0..lk).filter(|&j| visible(j)) {
                    acc += p[j] * v[j * kv_stride + c0 + d] as f64;
                }
                *od = (acc / sum) as f32;
            }
        }
    }
}

/// `out[c] = Σ_r (w[r]·w_scale)·m[r·stride + c]` for `c < out.len()`; rows with `w[r] == 0`
/// are skipped (never read). Columns are processed in blocks of 4, then 1, then a partial
/// vector, each block keeping its accumulators in registers over all rows.
#[inline(always)]
fn weighted_row_sum<S: Simd>(
    s: S,
    w: &[f32],
    w_scale: f32,
    m: &[f32],
    stride: usize,
    out: &mut [f32],
) {
    let n = out.len();
    let lanes = S::F32_LANES;
    let zero = s.splat_f32s(0.0);
    let mut c = 0;
    while c + 4 * lanes <= n {
        let mut acc = [zero; 4];
        for (r, &wr) in w.iter().enumerate() {
            if wr == 0.0 {
                continue;
            }
            let wv = s.splat_f32s(wr * w_scale);
            let start = r * stride + c;
            let (x, _) = S::as_simd_f32s(&m[start..start + 4 * lanes]);
            acc[0] = s.mul_add_f32s(wv, x[0], acc[0]);
            acc[1] = s.mul_add_f32s(wv, x[1], acc[1]);
            acc[2] = s.mul_add_f32s(wv, x[2], acc[2]);
            acc[3] = s.mul_add_f32s(wv, x[3], acc[3]);
        }
        let (o, _) = S::as_mut_simd_f32s(&mut out[c..c + 4 * lanes]);
        o.copy_from_slice(&acc);
        c += 4 * lanes;
    }
    while c + lanes <= n {
        let mut acc = zero;
        for (r, &wr) in w.iter().enumerate() {
            if wr == 0.0 {
                continue;
            }
            let start = r * stride + c;
            let (x, _) = S::as_simd_f32s(&m[start..start + lanes]);
            acc = s.mul_add_f32s(s.splat_f32s(wr * w_scale), x[0], acc);
        }
        let (o, _) = S::as_mut_simd_f32s(&mut out[c..c + lanes]);
        o[0] = acc;
        c += lanes;
    }
    if c < n {
        let mut acc = zero;
        for (r, &wr) in w.iter().enumerate() {
            if wr == 0.0 {
                continue;
            }
            let start = r * stride + c;
            let x = s.partial_load_f32s(&m[start..start + (n - c)]);
            acc = s.mul_add_f32s(s.splat_f32s(wr * w_scale), x, acc);
        }
        s.partial_store_f32s(&mut out[c..], acc);
    }
}

/// Query rows per tile of the tiled kernel.
const TILE_ROWS: usize = 4;
/// Upper bound of the key-block width `2·lanes` over every instruction set (AVX-512: 32), used
/// to size the scratch buffer independently of the instruction set.
const MAX_KEY_BLOCK: usize = 32;

/// Read-only inputs of one head, shared by the kernels.
#[derive(Copy, Clone)]
struct Head<'a> {
    shape: AttentionShape,
    q: &'a [f32],
    k: &'a [f32],
    /// `v[col..]`: value row `j` of this head starts at `j·kv_stride`.
    v: &'a [f32],
    mask: AttnMask,
    key_valid: Option<&'a [bool]>,
    scale: f32,
    /// First column of the head.
    col: usize,
}

/// Hides the keys `key_valid` rejects by setting their scores to `−∞`.
#[inline(always)]
fn apply_key_valid(scores: &mut [f32], key_valid: Option<&[bool]>) {
    if let Some(valid) = key_valid {
        for (sc, &ok) in scores.iter_mut().zip(valid) {
            if !ok {
                *sc = f32::NEG_INFINITY;
            }
        }
    }
}

/// One query row against all its keys: a dot product per key for the scores, then
/// [`weighted_row_sum`] over the value rows. Used for few query rows (decoding).
#[inline(always)]
fn attend_row<S: Simd>(s: S, hp: Head<'_>, i: usize, scores_buf: &mut [f32], out: &mut [f32]) {
    let sh = hp.shape;
    let hd = sh.head_dim;
    let out_h = &mut out[i * sh.out_stride + hp.col..i * sh.out_stride + hp.col + hd];
    let q_h = &hp.q[i * sh.q_stride + hp.col..i * sh.q_stride + hp.col + hd];
    let scores = &mut scores_buf[..hp.mask.visible_prefix(i, sh.lk)];
    for (j, sc) in scores.iter_mut().enumerate() {
        let k_h = &hp.k[j * sh.kv_stride + hp.col..j * sh.kv_stride + hp.col + hd];
        *sc = dot_simd(s, q_h, k_h) * hp.scale;
    }
    apply_key_valid(scores, hp.key_valid);
    let sum = exp_shifted_row(s, scores);
    if sum == 0.0 {
        out_h.fill(0.0); // no visible key
        return;
    }
    weighted_row_sum(s, scores, 1.0 / sum, hp.v, sh.kv_stride, out_h);
}

/// Packs the head's keys for the tiled kernel: blocks of `kb` keys, each stored `[d][kb]`
/// (`panel[b·hd·kb + d·kb + t] = K[b·kb + t, col + d]`), the last block zero-padded.
#[inline(always)]
fn pack_keys(hp: Head<'_>, kb: usize, panel: &mut [f32]) {
    let sh = hp.shape;
    let hd = sh.head_dim;
    for (b, block) in panel.chunks_exact_mut(hd * kb).enumerate() {
        for t in 0..kb {
            let j = b * kb + t;
            // Column t of the block: block[d·kb + t] for every d.
            if j < sh.lk {
                let k_h = &hp.k[j * sh.kv_stride + hp.col..j * sh.kv_stride + hp.col + hd];
                for (row, &kv) in block.chunks_exact_mut(kb).zip(k_h) {
                    row[t] = kv;
                }
            } else {
                for row in block.chunks_exact_mut(kb) {
                    row[t] = 0.0;
                }
            }
        }
    }
}

/// Scratch of the tiled kernel, carved out of the caller's buffer.
struct Tiles<'a> {
    /// Packed keys, `[ceil(lk/kb)][hd][kb]`.
    panel: &'a mut [f32],
    /// Scores of the tile's rows, row stride `ld`.
    scores: &'a mut [f32],
    /// The tile's query rows, scaled and transposed, `[d][row]`.
    qt: &'a mut [f32],
    /// Key-block width (two vectors).
    kb: usize,
    /// Row stride of `scores`: `lk` rounded up to `kb`.
    ld: usize,
}

/// `R` query rows `i0..i0+R` of one head: scores by a register-tiled `R × 2·lanes` kernel over
/// the packed keys, a row softmax, and the `p·V` product by an `R × 2·lanes` tile over the value
/// rows (keys hidden by `key_valid` are skipped).
#[inline(always)]
fn attend_tile<S: Simd, const R: usize>(
    s: S,
    hp: Head<'_>,
    i0: usize,
    t: &mut Tiles<'_>,
    out: &mut [f32],
) {
    let sh = hp.shape;
    let hd = sh.head_dim;
    let (kb, ld) = (t.kb, t.ld);
    let n_vis: [usize; R] = core::array::from_fn(|r| hp.mask.visible_prefix(i0 + r, sh.lk));
    let n_max = n_vis.iter().copied().max().unwrap_or(0);

    // qt[d·R + r] = q[i0 + r, col + d]·scale
    let qt = &mut t.qt[..hd * R];
    for r in 0..R {
        let row = (i0 + r) * sh.q_stride + hp.col;
        for (dst, &qv) in qt.chunks_exact_mut(R).zip(&hp.q[row..row + hd]) {
            dst[r] = qv * hp.scale;
        }
    }

    // Scores: for each block of kb keys, acc[r] += q[r, d]·K[block, d] over d.
    let zero = s.splat_f32s(0.0);
    for b in 0..n_max.div_ceil(kb) {
        let (kv, _) = S::as_simd_f32s(&t.panel[b * hd * kb..(b + 1) * hd * kb]);
        let mut acc = [[zero; 2]; R];
        for (k2, qd) in kv.chunks_exact(2).zip(qt.chunks_exact(R)) {
            for r in 0..R {
                let qv = s.splat_f32s(qd[r]);
                acc[r][0] = s.mul_add_f32s(qv, k2[0], acc[r][0]);
                acc[r][1] = s.mul_add_f32s(qv, k2[1], acc[r][1]);
            }
        }
        for r in 0..R {
            let start = r * ld + b * kb;
            let (dst, _) = S::as_mut_simd_f32s(&mut t.scores[start..start + kb]);
            dst[0] = acc[r][0];
            dst[1] = acc[r][1];
        }
    }

    // Softmax numerators e^{s − max} of each row over its visible keys, zero from n_vis[r] up
    // to n_max; inv[r] = 1/Σ (0 for a row without visible keys, whose output is then zero).
    let mut inv = [0.0f32; R];
    for r in 0..R {
        let row = &mut t.scores[r * ld..r * ld + n_max];
        let (visible, beyond) = row.split_at_mut(n_vis[r]);
        apply_key_valid(visible, hp.key_valid);
        let sum = exp_shifted_row(s, visible);
        inv[r] = if sum > 0.0 { 1.0 / sum } else { 0.0 };
        beyond.fill(0.0);
    }
    let scores: &[f32] = t.scores;
    let rows: [&[f32]; R] = core::array::from_fn(|r| &scores[r * ld..r * ld + n_max]);

    // out[r, c] = inv[r]·Σ_j e[r, j]·V[j, c], in column blocks of two vectors, then one vector
    // and a partial one. Keys hidden by key_valid are skipped (their value rows never read).
    let lanes = S::F32_LANES;
    let mut c = 0;
    while c < hd {
        let width = (hd - c).min(2 * lanes);
        let mut acc = [[zero; 2]; R];
        for j in 0..n_max {
            if hp.key_valid.is_some_and(|valid| !valid[j]) {
                continue;
            }
            let start = j * sh.kv_stride + c;
            let vrow = &hp.v[start..start + width];
            let (x0, x1) = if width == 2 * lanes {
                let (x, _) = S::as_simd_f32s(vrow);
                (x[0], x[1])
            } else if width > lanes {
                let (x, tail) = S::as_simd_f32s(vrow);
                (x[0], s.partial_load_f32s(tail))
            } else {
                (s.partial_load_f32s(vrow), zero)
            };
            for r in 0..R {
                let wv = s.splat_f32s(rows[r][j]);
                acc[r][0] = s.mul_add_f32s(wv, x0, acc[r][0]);
                acc[r][1] = s.mul_add_f32s(wv, x1, acc[r][1]);
            }
        }
        for r in 0..R {
            let iv = s.splat_f32s(inv[r]);
            let (y0, y1) = (s.mul_f32s(acc[r][0], iv), s.mul_f32s(acc[r][1], iv));
            let start = (i0 + r) * sh.out_stride + hp.col + c;
            let dst = &mut out[start..start + width];
            if width == 2 * lanes {
                let (d, _) = S::as_mut_simd_f32s(dst);
                d[0] = y0;
                d[1] = y1;
            } else if width > lanes {
                let (d, tail) = S::as_mut_simd_f32s(dst);
                d[0] = y0;
                s.partial_store_f32s(tail, y1);
            } else {
                s.partial_store_f32s(dst, y0);
            }
        }
        c += width;
    }
}

struct AttentionBody<'a> {
    shape: AttentionShape,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    mask: AttnMask,
    key_valid: Option<&'a [bool]>,
    scale: f32,
    out: &'a mut [f32],
    scratch: &'a mut [f32],
    tiled: bool,
}

impl WithSimd for AttentionBody<'_> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let Self {
            shape,
            q,
            k,
            v,
            mask,
            key_valid,
            scale,
            out,
            scratch,
            tiled,
        } = self;
        let (lq, lk, hd) = (shape.lq, shape.lk, shape.head_dim);
        let kb = 2 * S::F32_LANES;
        let ld = lk.div_ceil(kb) * kb;
        let (panel, rest) = scratch.split_at_mut(if tiled { ld * hd } else { 0 });
        let (scores, qt) = rest.split_at_mut(if tiled { TILE_ROWS * ld } else { lk });
        let mut tiles = Tiles {
            panel,
            scores,
            qt,
            kb,
            ld,
        };
        for h in 0..shape.n_heads {
            let col = h * hd;
            let hp = Head {
                shape,
                q,
                k,
                // Empty when lk = 0 (then no value row is read).
                v: v.get(col..).unwrap_or(&[]),
                mask,
                key_valid,
                scale,
                col,
            };
            if !tiled {
                for i in 0..lq {
                    attend_row(s, hp, i, tiles.scores, out);
                }
                continue;
            }
            pack_keys(hp, kb, tiles.panel);
            let mut i0 = 0;
            while i0 < lq {
                match lq - i0 {
                    1 => attend_tile::<S, 1>(s, hp, i0, &mut tiles, out),
                    2 => attend_tile::<S, 2>(s, hp, i0, &mut tiles, out),
                    3 => attend_tile::<S, 3>(s, hp, i0, &mut tiles, out),
                    _ => attend_tile::<S, TILE_ROWS>(s, hp, i0, &mut tiles, out),
                }
                i0 += TILE_ROWS;
            }
        }
    }
}

/// Below this many query rows the scores are computed by one dot product per key; from it on,
/// by the tiled kernel (whose key packing costs about one query row's work).
const TILED_MIN_ROWS: usize = 4;

/// The pulp body with an explicit choice of score kernel (tests exercise both).
pub fn attention_path(
    isa: Isa,
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: AttnMask,
    key_valid: Option<&[bool]>,
    scale: f32,
    out: &mut [f32],
    scratch: &mut [f32],
    tiled: bool,
) {
    check_attention(shape, q, k, v, key_valid, out);
    let need = attention_scratch_len(shape);
    assert!(
        scratch.len() >= need,
        "attention: scratch has {} values, expected at least attention_scratch_len = {need}",
        scratch.len()
    );
    if shape.lq == 0 || shape.hidden() == 0 {
        return;
    }
    isa.run(AttentionBody {
        shape: *shape,
        q,
        k,
        v,
        mask,
        key_valid,
        scale,
        out,
        scratch,
        tiled,
    });
}

/// [`attention`] with the pulp body instantiated for `isa`.
///
/// # Panics
/// As [`attention`].
pub fn attention_isa(
    isa: Isa,
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: AttnMask,
    key_valid: Option<&[bool]>,
    scale: f32,
    out: &mut [f32],
    scratch: &mut [f32],
) {
    let tiled = shape.lq >= TILED_MIN_ROWS;
    attention_path(
        isa, shape, q, k, v, mask, key_valid, scale, out, scratch, tiled,
    );
}

/// Multi-head scaled-dot-product attention (see the module docs for layout and semantics):
/// per head, `out_i = softmax_j((q_i·k_j)·scale over visible j) · V`, zeros for a query row
/// with no visible key. `scratch` needs [`attention_scratch_len`] values (contents ignored).
///
/// # Panics
/// If a stride is below `H = n_heads·head_dim`; if `q`, `k`, `v` or `out` is shorter than
/// `(rows − 1)·stride + H` for its row count (`lq` or `lk`) and stride; if `key_valid` does not
/// hold `lk` entries; if `scratch` is shorter than [`attention_scratch_len`].
#[inline]
pub fn attention(
    shape: &AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: AttnMask,
    key_valid: Option<&[bool]>,
    scale: f32,
    out: &mut [f32],
    scratch: &mut [f32],
) {
    attention_isa(
        Isa::f32_level(),
        shape,
        q,
        k,
        v,
        mask,
        key_valid,
        scale,
        out,
        scratch,
    );
}

#[cfg(test)]
mod tests;
