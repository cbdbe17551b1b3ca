//! The two sublayers of a RecBole/BERT post-LN transformer layer (SASRec's `trm_encoder`):
//! multi-head self-attention and the point-wise feed-forward network.
//!
//! Layout: `batch` sequences of `len` positions, row-major `[batch·len, H]`; head `h` uses the
//! columns `[h·d_h, (h+1)·d_h)`.
//!
//! [`SelfAttention`] (RecBole `MultiHeadAttention`):
//! `Q, K, V = Lin(X; query|key|value)`, per sequence and head `S = Q_h K_hᵀ / sqrt(d_h)` with
//! the hidden keys excluded (key `j` is hidden from query `i` when `j > i` under the causal
//! mask or when `key_valid[j]` is false), `P = softmax(S)`, `P' = attn_dropout(P)`,
//! `C_h = P' V_h`, then `Y = LN(hidden_dropout(Lin(C; dense)) + X)`. Hidden keys get weight
//! exactly 0, as in the engine's attention kernel; for RecBole's right-padded windows this is
//! its additive −10000 mask (`exp(−10000)` is 0 in f32). A query row with no visible key
//! gets a zero context (RecBole's additive mask would average every key there; such rows never
//! occur with right padding, because position 0 is always a real item).
//!
//! Backward, per head: `dV_h = P'ᵀ dC_h`, `dP' = dC_h V_hᵀ`, `dP = attn_dropout'(dP')`,
//! `dS = P ⊙ (dP − rowsum(dP ⊙ P))`, `dQ_h = dS K_h / sqrt(d_h)`, `dK_h = dSᵀ Q_h / sqrt(d_h)`,
//! then the three projections' backward into `dX`, plus the residual path.
//!
//! [`FeedForward`] (RecBole `FeedForward`): `Y = LN(dropout(Lin(act(Lin(X; dense_1));
//! dense_2)) + X)`.
//!
//! Products run through `gemm` on strided per-head views (no copies); the row softmax is the
//! kernels' `softmax_rows`.

use super::activation::{ActCache, Dropout, DropoutCache, act_backward, act_forward};
use super::linear::Linear;
use super::norm::{LayerNorm, LayerNormCache};
use crate::nn::Rng;
use seqrec_kernels::cpu::activation::Activation;
use seqrec_kernels::cpu::linear::{MatMut, MatRef, gemm};
use seqrec_kernels::cpu::softmax::softmax_rows;
use seqrec_kernels::cpu::vector;

/// Sizes of one attention call: `batch` groups (sequences), each with `len` query rows
/// attending to `keys` key rows (`keys = len` for self-attention; cross-attention reads
/// another sequence).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct AttnShape {
    /// Number of sequences.
    pub batch: usize,
    /// Query positions per sequence.
    pub len: usize,
    /// Key (and value) positions per sequence.
    pub keys: usize,
    /// Number of heads.
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Whether query `i` sees only keys `j ≤ i`.
    pub causal: bool,
}

impl AttnShape {
    /// Self-attention over `batch` sequences of `len` positions.
    pub fn self_attention(
        batch: usize,
        len: usize,
        heads: usize,
        head_dim: usize,
        causal: bool,
    ) -> AttnShape {
        AttnShape {
            batch,
            len,
            keys: len,
            heads,
            head_dim,
            causal,
        }
    }
    fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }
    fn rows(&self) -> usize {
        self.batch * self.len
    }
    fn key_rows(&self) -> usize {
        self.batch * self.keys
    }
    /// Length of the probabilities, `[batch, heads, len, keys]`.
    pub fn probs_len(&self) -> usize {
        self.batch * self.heads * self.len * self.keys
    }
    /// Offsets of sequence `b`, head `h` in a `[rows, H]` query matrix, in a
    /// `[key_rows, H]` key matrix, and of its `[len, keys]` block in the probabilities.
    fn offsets(&self, b: usize, h: usize) -> (usize, usize, usize) {
        let col = h * self.head_dim;
        (
            b * self.len * self.hidden() + col,
            b * self.keys * self.hidden() + col,
            (b * self.heads + h) * self.len * self.keys,
        )
    }
    /// The `[rows, head_dim]` view of one head of one sequence.
    fn head<'a>(&self, m: &'a [f32], at: usize, rows: usize) -> MatRef<'a> {
        MatRef::new(&m[at..], rows, self.head_dim, self.hidden(), 1)
    }
    /// The transposed `[head_dim, rows]` view of one head of one sequence.
    fn head_t<'a>(&self, m: &'a [f32], at: usize, rows: usize) -> MatRef<'a> {
        MatRef::new(&m[at..], self.head_dim, rows, 1, self.hidden())
    }
    fn head_mut<'a>(&self, m: &'a mut [f32], at: usize, rows: usize) -> MatMut<'a> {
        MatMut::new(&mut m[at..], rows, self.head_dim, self.hidden(), 1)
    }
}

/// Attention probabilities `P = softmax(Q_h K_hᵀ·scale)` over the visible keys, written to
/// `probs` (`[batch, heads, len, keys]`); hidden keys (`key_valid[b·keys + j]` false, or
/// `j > i` under the causal mask) get 0, rows with no visible key all 0.
pub fn attention_probs(
    shape: &AttnShape,
    q: &[f32],
    k: &[f32],
    key_valid: Option<&[bool]>,
    probs: &mut [f32],
) {
    let (l, lk) = (shape.len, shape.keys);
    assert_eq!(q.len(), shape.rows() * shape.hidden(), "attention: q size");
    assert_eq!(
        k.len(),
        shape.key_rows() * shape.hidden(),
        "attention: k size"
    );
    assert_eq!(probs.len(), shape.probs_len(), "attention: probs size");
    if let Some(v) = key_valid {
        assert_eq!(
            v.len(),
            shape.key_rows(),
            "attention: key_valid has {} entries, expected batch·keys = {}",
            v.len(),
            shape.key_rows()
        );
    }
    if l == 0 || lk == 0 || shape.head_dim == 0 {
        probs.fill(0.0);
        return;
    }
    let scale = 1.0 / (shape.head_dim as f32).sqrt();
    for b in 0..shape.batch {
        for h in 0..shape.heads {
            let (qat, kat, pat) = shape.offsets(b, h);
            let s = &mut probs[pat..pat + l * lk];
            gemm(
                MatMut::row_major(s, l, lk),
                shape.head(q, qat, l),
                shape.head_t(k, kat, lk),
                false,
            );
            for (i, row) in s.chunks_exact_mut(lk).enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    let hidden =
                        (shape.causal && j > i) || key_valid.is_some_and(|kv| !kv[b * lk + j]);
                    *v = if hidden {
                        f32::NEG_INFINITY
                    } else {
                        *v * scale
                    };
                }
            }
            softmax_rows(s, l, lk);
        }
    }
}

/// `C_h = P_h V_h` for every sequence and head into `ctx` (`[batch·len, H]`).
pub fn attention_context(shape: &AttnShape, probs: &[f32], v: &[f32], ctx: &mut [f32]) {
    let (l, lk) = (shape.len, shape.keys);
    if l == 0 || lk == 0 || shape.head_dim == 0 {
        ctx.fill(0.0);
        return;
    }
    for b in 0..shape.batch {
        for h in 0..shape.heads {
            let (qat, kat, pat) = shape.offsets(b, h);
            gemm(
                shape.head_mut(ctx, qat, l),
                MatRef::row_major(&probs[pat..pat + l * lk], l, lk),
                shape.head(v, kat, lk),
                false,
            );
        }
    }
}

/// The gradients of the attention core's inputs: for `C = attn_drop(P)·V` with
/// `P = softmax(Q Kᵀ/sqrt(d_h))` (as [`attention_probs`] and [`attention_context`] compute
/// them; `drop` the dropout applied to `P`, if any) and the context gradient `d_ctx`
/// (`[batch·len, H]`), returns `(dQ, dK, dV)`. Hidden keys have `P = 0` and get no gradient.
pub fn attention_backward(
    shape: &AttnShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    probs: &[f32],
    drop: Option<(&Dropout, &DropoutCache)>,
    d_ctx: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (l, lk, hd) = (shape.len, shape.keys, shape.hidden());
    let mut dq = vec![0.0; shape.rows() * hd];
    let mut dk = vec![0.0; shape.key_rows() * hd];
    let mut dv = vec![0.0; shape.key_rows() * hd];
    if l == 0 || lk == 0 || shape.head_dim == 0 {
        return (dq, dk, dv);
    }
    let dropped;
    let p_used = match drop {
        Some((_, cache)) if !cache.is_identity() => {
            let mut p = probs.to_vec();
            cache.apply(&mut p);
            dropped = p;
            &dropped
        }
        _ => probs,
    };
    let mut dp = vec![0.0; shape.probs_len()];
    for b in 0..shape.batch {
        for h in 0..shape.heads {
            let (qat, kat, pat) = shape.offsets(b, h);
            // dV_h = P'ᵀ dC_h; dP' = dC_h V_hᵀ.
            gemm(
                shape.head_mut(&mut dv, kat, lk),
                MatRef::new(&p_used[pat..pat + l * lk], lk, l, 1, lk),
                shape.head(d_ctx, qat, l),
                false,
            );
            gemm(
                MatMut::row_major(&mut dp[pat..pat + l * lk], l, lk),
                shape.head(d_ctx, qat, l),
                shape.head_t(v, kat, lk),
                false,
            );
        }
    }
    if let Some((d, cache)) = drop {
        d.backward(cache, &mut dp);
    }
    // Softmax backward, with the 1/sqrt(d_h) of the scores folded in.
    let scale = 1.0 / (shape.head_dim as f64).sqrt();
    for (ds, p) in dp.chunks_exact_mut(lk).zip(probs.chunks_exact(lk)) {
        let dot: f64 = ds.iter().zip(p).map(|(&a, &b)| a as f64 * b as f64).sum();
        for (g, &pv) in ds.iter_mut().zip(p) {
            *g = (pv as f64 * (*g as f64 - dot) * scale) as f32;
        }
    }
    for b in 0..shape.batch {
        for h in 0..shape.heads {
            let (qat, kat, pat) = shape.offsets(b, h);
            let ds = &dp[pat..pat + l * lk];
            // dQ_h = dS K_h; dK_h = dSᵀ Q_h.
            gemm(
                shape.head_mut(&mut dq, qat, l),
                MatRef::row_major(ds, l, lk),
                shape.head(k, kat, lk),
                false,
            );
            gemm(
                shape.head_mut(&mut dk, kat, lk),
                MatRef::new(ds, lk, l, 1, lk),
                shape.head(q, qat, l),
                false,
            );
        }
    }
    (dq, dk, dv)
}

/// Multi-head self-attention sublayer with residual and post-LN (RecBole
/// `MultiHeadAttention`). See the module docs.
#[derive(Clone, Debug)]
pub struct SelfAttention {
    /// `{prefix}.query`, `[H, H]`.
    pub query: Linear,
    /// `{prefix}.key`, `[H, H]`.
    pub key: Linear,
    /// `{prefix}.value`, `[H, H]`.
    pub value: Linear,
    /// `{prefix}.dense`, `[H, H]`.
    pub dense: Linear,
    /// `{prefix}.LayerNorm`.
    pub ln: LayerNorm,
    /// Number of heads.
    pub heads: usize,
    /// `H / heads`.
    pub head_dim: usize,
    /// Whether the mask is causal (SASRec) or bidirectional.
    pub causal: bool,
    /// Dropout on the attention probabilities (`attn_dropout_prob`).
    pub attn_dropout: Dropout,
    /// Dropout on the output projection (`hidden_dropout_prob`).
    pub hidden_dropout: Dropout,
}

/// What [`SelfAttention::backward`] needs.
#[derive(Clone, Debug)]
pub struct SelfAttentionCache {
    shape: AttnShape,
    x: Vec<f32>,
    /// With one query row per sequence ([`SelfAttention::forward_queries`]): those rows of
    /// `x` and their indices.
    queries: Option<(Vec<f32>, Vec<usize>)>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// `P` before attention dropout (`P' = mask ⊙ P` is recomputed in the backward).
    probs: Vec<f32>,
    attn_drop: DropoutCache,
    ctx: Vec<f32>,
    hidden_drop: DropoutCache,
    ln: LayerNormCache,
}

impl SelfAttentionCache {
    /// The sublayer's input `x` (`[batch·len, H]`).
    pub fn input(&self) -> &[f32] {
        &self.x
    }

    /// Floats held (memory accounting; dropout masks, one byte per value, not counted).
    pub fn floats(&self) -> usize {
        self.x.len()
            + self.queries.as_ref().map_or(0, |(xq, _)| xq.len())
            + self.q.len()
            + self.k.len()
            + self.v.len()
            + self.probs.len()
            + self.ctx.len()
            + self.ln.floats()
    }
}

impl SelfAttention {
    /// A causal sublayer named `prefix` (e.g. `trm_encoder.layer.0.multi_head_attention`)
    /// with RecBole's initialisation: linear weights `N(0, std²)`, zero biases, LN γ = 1, β = 0.
    ///
    /// # Panics
    /// If `heads` is 0 or does not divide `hidden` (configurations are validated before
    /// blocks are built).
    pub fn new(
        prefix: &str,
        hidden: usize,
        heads: usize,
        ln_eps: f32,
        attn_dropout: f32,
        hidden_dropout: f32,
        std: f32,
        rng: &mut Rng,
    ) -> SelfAttention {
        assert!(
            heads > 0 && hidden % heads == 0,
            "hidden size {hidden} is not divisible by {heads} heads"
        );
        let lin = |name: &str, rng: &mut Rng| {
            Linear::new(&format!("{prefix}.{name}"), hidden, hidden, true, std, rng)
        };
        SelfAttention {
            query: lin("query", rng),
            key: lin("key", rng),
            value: lin("value", rng),
            dense: lin("dense", rng),
            ln: LayerNorm::new(&format!("{prefix}.LayerNorm"), hidden, ln_eps),
            heads,
            head_dim: hidden / heads,
            causal: true,
            attn_dropout: Dropout::new(attn_dropout),
            hidden_dropout: Dropout::new(hidden_dropout),
        }
    }

    /// Model width H.
    pub fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    /// The sublayer over `batch` sequences of `len` rows of `x` (`[batch·len, H]`), with the
    /// optional key-padding mask `key_valid` (`[batch·len]`, false at padding positions).
    /// Dropout is active when `rng` is given.
    pub fn forward(
        &self,
        x: &[f32],
        batch: usize,
        len: usize,
        key_valid: Option<&[bool]>,
        rng: Option<&mut Rng>,
    ) -> (Vec<f32>, SelfAttentionCache) {
        self.forward_with(x, batch, len, key_valid, rng, [None; 3])
    }

    /// [`Self::forward`] with terms `add` (`[batch·len, H]` each, or `None`) added to the
    /// query, key and value projections before the attention (e.g. the outputs of low-rank
    /// adapters); [`Self::backward_qkv`] returns the gradients of those sums.
    pub fn forward_with(
        &self,
        x: &[f32],
        batch: usize,
        len: usize,
        key_valid: Option<&[bool]>,
        rng: Option<&mut Rng>,
        add: [Option<&[f32]>; 3],
    ) -> (Vec<f32>, SelfAttentionCache) {
        self.forward_rows(x, batch, len, key_valid, rng, add, None)
    }

    /// The sublayer's output at one query row per sequence only (`[batch, H]`): row
    /// `query_rows[b]` of `x`, a row of sequence `b`, attends to the visible keys of its
    /// sequence; keys, values and the masks are those of [`Self::forward`], whose rows
    /// `query_rows` it equals. Under the causal mask every key after a query row must be hidden
    /// by `key_valid` (the query is its sequence's last real position), so that the key mask
    /// alone says what the query sees. A model that reads one position per sequence (the RL
    /// heads read the state after the last item) skips the query, output projection and
    /// feed-forward of every other row in its last layer.
    ///
    /// # Panics
    /// If `query_rows` does not hold one row per sequence, a row lies outside its sequence, or
    /// (causal) a key after a query row is visible.
    pub fn forward_queries(
        &self,
        x: &[f32],
        batch: usize,
        len: usize,
        key_valid: &[bool],
        rng: Option<&mut Rng>,
        query_rows: &[usize],
    ) -> (Vec<f32>, SelfAttentionCache) {
        assert_eq!(
            query_rows.len(),
            batch,
            "attention `{}`: {} query rows for {batch} sequences",
            self.dense.weight.name,
            query_rows.len()
        );
        for (b, &r) in query_rows.iter().enumerate() {
            assert!(
                (b * len..(b + 1) * len).contains(&r),
                "attention `{}`: query row {r} is not in sequence {b}",
                self.dense.weight.name
            );
            assert!(
                !self.causal || key_valid[r + 1..(b + 1) * len].iter().all(|&v| !v),
                "attention `{}`: a key after query row {r} is visible",
                self.dense.weight.name
            );
        }
        self.forward_rows(
            x,
            batch,
            len,
            Some(key_valid),
            rng,
            [None; 3],
            Some(query_rows),
        )
    }

    /// [`Self::forward_with`], or [`Self::forward_queries`] when `query_rows` is given (then
    /// `add` is all `None`).
    fn forward_rows(
        &self,
        x: &[f32],
        batch: usize,
        len: usize,
        key_valid: Option<&[bool]>,
        mut rng: Option<&mut Rng>,
        add: [Option<&[f32]>; 3],
        query_rows: Option<&[usize]>,
    ) -> (Vec<f32>, SelfAttentionCache) {
        let hd = self.hidden();
        let rows = batch * len;
        assert_eq!(
            x.len(),
            rows * hd,
            "attention `{}`: x has {} values, expected batch·len·H = {batch}·{len}·{hd}",
            self.dense.weight.name,
            x.len()
        );
        let xq = query_rows.map(|r| crate::models::gather_rows(x, hd, r));
        let (xq_ref, nq) = match &xq {
            Some(v) => (&v[..], batch),
            None => (x, rows),
        };
        let shape = AttnShape {
            len: if query_rows.is_some() { 1 } else { len },
            causal: self.causal && query_rows.is_none(),
            ..AttnShape::self_attention(batch, len, self.heads, self.head_dim, self.causal)
        };
        let q = self.query.infer(xq_ref, nq);
        let [k, v] = [&self.key, &self.value].map(|l| l.infer(x, rows));
        let [q, k, v] = [(q, add[0]), (k, add[1]), (v, add[2])].map(|(mut p, a)| {
            if let Some(a) = a {
                vector::add(&mut p, a);
            }
            p
        });
        let mut probs = vec![0.0; shape.probs_len()];
        attention_probs(&shape, &q, &k, key_valid, &mut probs);
        let mut ctx = vec![0.0; nq * hd];
        let attn_drop = if rng.is_some() && self.attn_dropout.p > 0.0 {
            let mut dropped = probs.clone();
            let mask = self.attn_dropout.forward(&mut dropped, rng.as_deref_mut());
            attention_context(&shape, &dropped, &v, &mut ctx);
            mask
        } else {
            attention_context(&shape, &probs, &v, &mut ctx);
            DropoutCache::default()
        };
        let mut proj = self.dense.infer(&ctx, nq);
        let hidden_drop = self.hidden_dropout.forward(&mut proj, rng);
        let (y, ln) = self.ln.forward_add(&proj, xq_ref, nq);
        let cache = SelfAttentionCache {
            shape,
            x: x.to_vec(),
            queries: xq.zip(query_rows.map(<[usize]>::to_vec)),
            q,
            k,
            v,
            probs,
            attn_drop,
            ctx,
            hidden_drop,
            ln,
        };
        (y, cache)
    }

    /// Adds every parameter gradient for `d_out` (`[batch·len, H]`, or `[batch, H]` after
    /// [`Self::forward_queries`]) and returns `dX` (`[batch·len, H]`).
    pub fn backward(&mut self, cache: &SelfAttentionCache, d_out: &[f32]) -> Vec<f32> {
        self.backward_qkv(cache, d_out).0
    }

    /// [`Self::backward`] that also returns the gradients of the query, key and value
    /// projections' outputs (`[batch·len, H]` each; the query's `[batch, H]` after
    /// [`Self::forward_queries`]), which are those of the terms added by [`Self::forward_with`].
    /// The input `x` the projections saw is [`SelfAttentionCache::input`].
    pub fn backward_qkv(
        &mut self,
        cache: &SelfAttentionCache,
        d_out: &[f32],
    ) -> (Vec<f32>, [Vec<f32>; 3]) {
        let (dx, d_qkv) = self.backward_inner(cache, d_out, true);
        (dx.expect("the input gradient was asked for"), d_qkv)
    }

    /// The parameter gradients for `d_out` alone, without `dX`: for a sublayer over an input
    /// that needs no gradient (a frozen encoder's outputs), it skips the query, key and value
    /// projections' input products, a quarter of the backward's multiply-adds.
    pub fn backward_params(&mut self, cache: &SelfAttentionCache, d_out: &[f32]) {
        self.backward_inner(cache, d_out, false);
    }

    fn backward_inner(
        &mut self,
        cache: &SelfAttentionCache,
        d_out: &[f32],
        input_grad: bool,
    ) -> (Option<Vec<f32>>, [Vec<f32>; 3]) {
        let shape = &cache.shape;
        let (nq, hd) = (shape.rows(), self.hidden());
        // Residual + LN: the sum's gradient reaches the query rows directly and the dense output.
        let mut dxq = self.ln.backward(&cache.ln, d_out);
        let mut d_proj = dxq.clone();
        self.hidden_dropout
            .backward(&cache.hidden_drop, &mut d_proj);
        let mut d_ctx = vec![0.0; nq * hd];
        self.dense
            .backward_with_input(&cache.ctx, nq, &d_proj, &mut d_ctx, false);

        let (dq, dk, dv) = attention_backward(
            shape,
            &cache.q,
            &cache.k,
            &cache.v,
            &cache.probs,
            Some((&self.attn_dropout, &cache.attn_drop)),
            &d_ctx,
        );
        let x = &cache.x;
        let rows = shape.key_rows();
        let xq = cache.queries.as_ref().map_or(&cache.x, |(xq, _)| xq);
        if !input_grad {
            self.query.backward_params(xq, nq, &dq);
            self.key.backward_params(x, rows, &dk);
            self.value.backward_params(x, rows, &dv);
            return (None, [dq, dk, dv]);
        }
        let dx = match &cache.queries {
            None => {
                self.query.backward_with_input(x, rows, &dq, &mut dxq, true);
                self.key.backward_with_input(x, rows, &dk, &mut dxq, true);
                self.value.backward_with_input(x, rows, &dv, &mut dxq, true);
                dxq
            }
            Some((xq, query_rows)) => {
                self.query.backward_with_input(xq, nq, &dq, &mut dxq, true);
                let mut dx = vec![0.0; rows * hd];
                self.key.backward_with_input(x, rows, &dk, &mut dx, false);
                self.value.backward_with_input(x, rows, &dv, &mut dx, true);
                for (&r, d) in query_rows.iter().zip(dxq.chunks_exact(hd)) {
                    vector::add(&mut dx[r * hd..(r + 1) * hd], d);
                }
                dx
            }
        };
        (Some(dx), [dq, dk, dv])
    }
}

crate::module_of_fields!(SelfAttention: query, key, value, dense, ln);

/// Point-wise feed-forward sublayer with residual and post-LN (RecBole `FeedForward`).
#[derive(Clone, Debug)]
pub struct FeedForward {
    /// `{prefix}.dense_1`, `[inner, H]`.
    pub dense_1: Linear,
    /// `{prefix}.dense_2`, `[H, inner]`.
    pub dense_2: Linear,
    /// Activation after `dense_1` (`hidden_act`).
    pub act: Activation,
    /// `{prefix}.LayerNorm`.
    pub ln: LayerNorm,
    /// Dropout on `dense_2`'s output (`hidden_dropout_prob`).
    pub dropout: Dropout,
}

/// What [`FeedForward::backward`] needs.
#[derive(Clone, Debug)]
pub struct FeedForwardCache {
    rows: usize,
    x: Vec<f32>,
    act: ActCache,
    a: Vec<f32>,
    drop: DropoutCache,
    ln: LayerNormCache,
}

impl FeedForwardCache {
    /// Floats held (memory accounting; the dropout mask, one byte per value, not counted).
    pub fn floats(&self) -> usize {
        self.x.len() + self.act.input().len() + self.a.len() + self.ln.floats()
    }
}

impl FeedForward {
    /// A sublayer named `prefix` (e.g. `trm_encoder.layer.0.feed_forward`) with RecBole's
    /// initialisation.
    pub fn new(
        prefix: &str,
        hidden: usize,
        inner: usize,
        act: Activation,
        ln_eps: f32,
        dropout: f32,
        std: f32,
        rng: &mut Rng,
    ) -> FeedForward {
        FeedForward {
            dense_1: Linear::new(&format!("{prefix}.dense_1"), hidden, inner, true, std, rng),
            dense_2: Linear::new(&format!("{prefix}.dense_2"), inner, hidden, true, std, rng),
            act,
            ln: LayerNorm::new(&format!("{prefix}.LayerNorm"), hidden, ln_eps),
            dropout: Dropout::new(dropout),
        }
    }

    /// The sublayer over `rows` rows of `x` (`[rows, H]`); dropout is active when `rng` is
    /// given.
    pub fn forward(
        &self,
        x: &[f32],
        rows: usize,
        rng: Option<&mut Rng>,
    ) -> (Vec<f32>, FeedForwardCache) {
        let mut a = self.dense_1.infer(x, rows);
        let act = act_forward(self.act, &mut a);
        let mut h = self.dense_2.infer(&a, rows);
        let drop = self.dropout.forward(&mut h, rng);
        let (y, ln) = self.ln.forward_add(&h, x, rows);
        let cache = FeedForwardCache {
            rows,
            x: x.to_vec(),
            act,
            a,
            drop,
            ln,
        };
        (y, cache)
    }

    /// Adds every parameter gradient for `d_out` (`[rows, H]`) and returns `dX`.
    pub fn backward(&mut self, cache: &FeedForwardCache, d_out: &[f32]) -> Vec<f32> {
        let rows = cache.rows;
        let mut dx = self.ln.backward(&cache.ln, d_out);
        let mut dh = dx.clone();
        self.dropout.backward(&cache.drop, &mut dh);
        let mut da = vec![0.0; rows * self.dense_1.out_dim];
        self.dense_2
            .backward_with_input(&cache.a, rows, &dh, &mut da, false);
        act_backward(&cache.act, &mut da);
        self.dense_1
            .backward_with_input(&cache.x, rows, &da, &mut dx, true);
        dx
    }
}

crate::module_of_fields!(FeedForward: dense_1, dense_2, ln);

#[cfg(test)]
mod tests;
