//! Sentence pooling over each sequence's real token rows and the L2 normalisation, forward
//! (the engine's own [`Pooling::pool`] and [`l2_normalize`], so the values are the engine's)
//! and backward.
//!
//! Backward, per sequence `b` of `n = lens[b]` real rows and output gradient `g`:
//! mean `dh_r = g / n` for every real row `r`; mean·√len `dh_r = g / √n`; CLS `dh_0 = g`;
//! max `dh_{r*(d), d} = g_d` at the row `r*(d)` holding the maximum of dimension `d` (the
//! first one on ties, as the forward's running maximum keeps it). Padding rows get zero.
//!
//! L2: `y = x / max(‖x‖, 1e-12)`; with `s = 1 / max(‖x‖, 1e-12)`,
//! `dx = s·(dy − y·(y·dy))` where `‖x‖ > 1e-12` and `dx = s·dy` where the clamp holds.

use super::TextBatch;
use seqrec_engine::text::{Pooling, l2_normalize};

/// What [`pool_backward`] needs beyond the batch: the argmax rows of max pooling.
#[derive(Clone, Debug, Default)]
pub struct PoolCache {
    argmax: Vec<u32>,
}

/// Pools the hidden states `hidden` (`[batch·len, dim]`) of `b` into `[batch, dim]`.
pub fn pool_forward(
    mode: Pooling,
    hidden: &[f32],
    b: &TextBatch,
    dim: usize,
) -> (Vec<f32>, PoolCache) {
    let mut out = vec![0.0; b.batch() * dim];
    let mut argmax = Vec::new();
    for (s, (&n, row)) in b.lens.iter().zip(out.chunks_exact_mut(dim)).enumerate() {
        let seq = &hidden[s * b.len * dim..(s * b.len + n) * dim];
        mode.pool(seq, n, dim, row);
        if mode == Pooling::Max {
            for d in 0..dim {
                let mut best = 0;
                for r in 1..n {
                    if seq[r * dim + d] > seq[best * dim + d] {
                        best = r;
                    }
                }
                argmax.push(best as u32);
            }
        }
    }
    (out, PoolCache { argmax })
}

/// The gradient `[batch·len, dim]` of the hidden states for the pooled gradient `d_out`
/// (`[batch, dim]`).
pub fn pool_backward(
    mode: Pooling,
    b: &TextBatch,
    cache: &PoolCache,
    d_out: &[f32],
    dim: usize,
) -> Vec<f32> {
    assert_eq!(
        d_out.len(),
        b.batch() * dim,
        "pooling backward: d_out has {} values, expected batch·dim = {}·{dim}",
        d_out.len(),
        b.batch()
    );
    let mut dh = vec![0.0; b.rows() * dim];
    for (s, (&n, g)) in b.lens.iter().zip(d_out.chunks_exact(dim)).enumerate() {
        let seq = &mut dh[s * b.len * dim..(s * b.len + n) * dim];
        match mode {
            Pooling::Cls => seq[..dim].copy_from_slice(g),
            Pooling::Max => {
                for (d, &gd) in g.iter().enumerate() {
                    seq[cache.argmax[s * dim + d] as usize * dim + d] = gd;
                }
            }
            Pooling::Mean | Pooling::MeanSqrtLen => {
                let div = if mode == Pooling::Mean {
                    n as f32
                } else {
                    (n as f32).sqrt()
                };
                for row in seq.chunks_exact_mut(dim) {
                    for (r, &gd) in row.iter_mut().zip(g) {
                        *r = gd / div;
                    }
                }
            }
        }
    }
    dh
}

/// What [`l2_backward`] needs: the normalised rows and each row's `1 / max(‖x‖, 1e-12)`.
#[derive(Clone, Debug, Default)]
pub struct NormCache {
    y: Vec<f32>,
    inv: Vec<f64>,
    clamped: Vec<bool>,
}

/// Normalises each row of `x` (`[rows, dim]`) in place, as the engine does.
pub fn l2_forward(x: &mut [f32], dim: usize) -> NormCache {
    let mut inv = Vec::new();
    let mut clamped = Vec::new();
    for row in x.chunks_exact_mut(dim) {
        let n = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
        inv.push(1.0 / n.max(1e-12));
        clamped.push(n <= 1e-12);
        l2_normalize(row);
    }
    NormCache {
        y: x.to_vec(),
        inv,
        clamped,
    }
}

/// Turns the gradient of the normalised rows into that of their input, in place.
pub fn l2_backward(cache: &NormCache, d: &mut [f32], dim: usize) {
    assert_eq!(
        d.len(),
        cache.y.len(),
        "l2 normalisation backward: gradient has {} values, the forward had {}",
        d.len(),
        cache.y.len()
    );
    for (((g, y), &inv), &clamped) in d
        .chunks_exact_mut(dim)
        .zip(cache.y.chunks_exact(dim))
        .zip(&cache.inv)
        .zip(&cache.clamped)
    {
        let dot: f64 = if clamped {
            0.0
        } else {
            g.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        for (gv, &yv) in g.iter_mut().zip(y) {
            *gv = (inv * (*gv as f64 - yv as f64 * dot)) as f32;
        }
    }
}
