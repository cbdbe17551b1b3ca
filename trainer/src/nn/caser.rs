//! Caser's convolutions over the `[L, E]` image of each window (RecBole `Caser`): the vertical
//! convolution and the horizontal convolutions of every height `i = 1..=L` with ReLU and a
//! max-pool over time. The fully connected layers around them are [`super::linear::Linear`]
//! with [`super::activation`]'s ReLU.
//!
//! Layout: `batch` windows of exactly `L` rows, `x` `[batch·L, E]`; the output is
//! `[batch, nv·E + nh·L]`, per window `[o_v (v-major), o_h (height-major)]` as RecBole
//! concatenates them.
//!
//! - Vertical: `o_v[v, e] = b_v[v] + Σ_t W_v[v, 0, t, 0]·x[t, e]`, no activation. Forward: the
//!   kernels' `caser_vertical`. Backward: `dW_v += dO·Xᵀ`, `dX += W_vᵀ·dO`, `db_v += Σ_e dO`.
//! - Horizontal, height `i`: `o_i[f] = max_s ReLU(b_i[f] + Σ_{a<i} Σ_e W_i[f, 0, a, e]·x[s+a, e])`
//!   over the windows `s = 0..=L−i`. Forward: one `gemm` of the overlapping windows (a strided
//!   view with row stride `E`) by `W_iᵀ`, then bias, ReLU and the max, remembering the first
//!   window attaining it. Backward: the gradient reaches only that window, and only when its
//!   pre-activation is positive (ReLU passes nothing at or below 0, as PyTorch's ReLU backward):
//!   `dW_i[f] += g·x[s*..s*+i]`, `db_i[f] += g`, `dx[s*..s*+i] += g·W_i[f]`.

use super::param::{Module, Param};
use crate::nn::Rng;
use seqrec_kernels::cpu::conv::caser_vertical;
use seqrec_kernels::cpu::linear::{MatMut, MatRef, gemm};
use seqrec_kernels::cpu::vector;

/// No gradient: every window of this filter was at or below 0 before the ReLU.
const NO_WINDOW: u32 = u32::MAX;

/// Caser's vertical and horizontal convolutions.
#[derive(Clone, Debug)]
pub struct CaserConvs {
    /// `conv_v.weight`, `[nv, 1, L, 1]`.
    pub conv_v: Param,
    /// `conv_v.bias`, `[nv]`.
    pub conv_v_bias: Param,
    /// `conv_h.{i−1}.weight` `[nh, 1, i, E]` and `.bias` `[nh]` for `i = 1..=L`.
    pub conv_h: Vec<(Param, Param)>,
    /// Window length L.
    pub len: usize,
    /// Embedding width E.
    pub dim: usize,
    /// Vertical filters.
    pub nv: usize,
    /// Horizontal filters per height.
    pub nh: usize,
}

/// What [`CaserConvs::backward`] needs: the input and each pooled filter's window.
#[derive(Clone, Debug)]
pub struct CaserCache {
    batch: usize,
    x: Vec<f32>,
    /// `[batch, L, nh]`: the window each horizontal output came from, or [`NO_WINDOW`].
    argmax: Vec<u32>,
}

impl CaserCache {
    /// `[batch, L, nh]`: the window each horizontal output was pooled from, or `u32::MAX`
    /// when every window was at or below 0 before the ReLU (the output is then 0 and passes
    /// no gradient).
    pub fn argmax(&self) -> &[u32] {
        &self.argmax
    }
}

impl CaserConvs {
    /// The convolutions with PyTorch's default initialisation (uniform in `±1/sqrt(fan_in)`
    /// for weights and biases, `fan_in` = kernel height × width).
    ///
    /// # Panics
    /// If `len`, `nv` or `nh` is 0 (RecBole fails on them too).
    pub fn new(len: usize, dim: usize, nv: usize, nh: usize, rng: &mut Rng) -> CaserConvs {
        assert!(
            len > 0 && nv > 0 && nh > 0,
            "caser: L ({len}), nv ({nv}) and nh ({nh}) must be positive"
        );
        let uniform = |name: String, shape: &[usize], fan_in: usize, rng: &mut Rng| {
            let mut p = Param::zeros(name, shape);
            p.init_uniform(rng, 1.0 / (fan_in.max(1) as f32).sqrt());
            p
        };
        let conv_v = uniform("conv_v.weight".into(), &[nv, 1, len, 1], len, rng);
        let conv_v_bias = uniform("conv_v.bias".into(), &[nv], len, rng);
        let conv_h = (1..=len)
            .map(|i| {
                (
                    uniform(
                        format!("conv_h.{}.weight", i - 1),
                        &[nh, 1, i, dim],
                        i * dim,
                        rng,
                    ),
                    uniform(format!("conv_h.{}.bias", i - 1), &[nh], i * dim, rng),
                )
            })
            .collect();
        CaserConvs {
            conv_v,
            conv_v_bias,
            conv_h,
            len,
            dim,
            nv,
            nh,
        }
    }

    /// Width of one window's output, `nv·E + nh·L`.
    pub fn out_dim(&self) -> usize {
        self.nv * self.dim + self.nh * self.len
    }

    /// The convolutions of `batch` windows (`x` `[batch·L, E]`) into `[batch, out_dim]`.
    pub fn forward(&self, x: &[f32], batch: usize) -> (Vec<f32>, CaserCache) {
        let (l, e, nh) = (self.len, self.dim, self.nh);
        assert_eq!(
            x.len(),
            batch * l * e,
            "caser: x has {} values, expected batch·L·E = {batch}·{l}·{e}",
            x.len()
        );
        let od = self.out_dim();
        let mut out = vec![0.0; batch * od];
        let mut argmax = vec![NO_WINDOW; batch * l * nh];
        let mut scores = vec![0.0; l * nh];
        for b in 0..batch {
            let xb = &x[b * l * e..(b + 1) * l * e];
            let (ov, oh) = out[b * od..(b + 1) * od].split_at_mut(self.nv * e);
            caser_vertical(
                xb,
                l,
                e,
                &self.conv_v.value,
                &self.conv_v_bias.value,
                self.nv,
                ov,
            );
            for (hi, (w, bias)) in self.conv_h.iter().enumerate() {
                let height = hi + 1;
                let windows = l - height + 1;
                let he = height * e;
                let s = &mut scores[..windows * nh];
                if he > 0 {
                    gemm(
                        MatMut::row_major(s, windows, nh),
                        MatRef::new(xb, windows, he, e, 1),
                        MatRef::new(&w.value, he, nh, 1, he),
                        false,
                    );
                } else {
                    s.fill(0.0);
                }
                let am = &mut argmax[(b * l + hi) * nh..(b * l + hi + 1) * nh];
                for f in 0..nh {
                    let (mut best, mut at) = (0.0f32, NO_WINDOW);
                    for w in 0..windows {
                        let v = s[w * nh + f] + bias.value[f];
                        if v > best {
                            (best, at) = (v, w as u32);
                        }
                    }
                    oh[hi * nh + f] = best;
                    am[f] = at;
                }
            }
        }
        let cache = CaserCache {
            batch,
            x: x.to_vec(),
            argmax,
        };
        (out, cache)
    }

    /// Adds every parameter gradient for `d_out` (`[batch, out_dim]`) and returns `dX`.
    pub fn backward(&mut self, cache: &CaserCache, d_out: &[f32]) -> Vec<f32> {
        let (l, e, nv, nh, od) = (self.len, self.dim, self.nv, self.nh, self.out_dim());
        assert_eq!(
            d_out.len(),
            cache.batch * od,
            "caser backward: d_out has {} values, expected batch·out_dim = {}·{od}",
            d_out.len(),
            cache.batch
        );
        let mut dx = vec![0.0; cache.batch * l * e];
        for b in 0..cache.batch {
            let xb = &cache.x[b * l * e..(b + 1) * l * e];
            let dxb = &mut dx[b * l * e..(b + 1) * l * e];
            let (dv, dh) = d_out[b * od..(b + 1) * od].split_at(nv * e);
            if e > 0 {
                // dW_v [nv, L] += dO [nv, E]·Xᵀ; dX [L, E] += W_vᵀ·dO.
                gemm(
                    MatMut::row_major(&mut self.conv_v.grad, nv, l),
                    MatRef::row_major(dv, nv, e),
                    MatRef::new(xb, e, l, 1, e),
                    true,
                );
                gemm(
                    MatMut::row_major(dxb, l, e),
                    MatRef::new(&self.conv_v.value, l, nv, 1, l),
                    MatRef::row_major(dv, nv, e),
                    true,
                );
                for (db, row) in self.conv_v_bias.grad.iter_mut().zip(dv.chunks_exact(e)) {
                    *db += row.iter().sum::<f32>();
                }
            }
            for (hi, (w, bias)) in self.conv_h.iter_mut().enumerate() {
                let he = (hi + 1) * e;
                let am = &cache.argmax[(b * l + hi) * nh..(b * l + hi + 1) * nh];
                for (f, &s) in am.iter().enumerate() {
                    let g = dh[hi * nh + f];
                    if s == NO_WINDOW || g == 0.0 {
                        continue;
                    }
                    let win = s as usize * e..s as usize * e + he;
                    let wf = f * he..(f + 1) * he;
                    vector::axpy(g, &xb[win.clone()], &mut w.grad[wf.clone()]);
                    vector::axpy(g, &w.value[wf], &mut dxb[win]);
                    bias.grad[f] += g;
                }
            }
        }
        dx
    }
}

impl Module for CaserConvs {
    fn params(&self) -> Vec<&Param> {
        let mut v = vec![&self.conv_v, &self.conv_v_bias];
        for (w, b) in &self.conv_h {
            v.push(w);
            v.push(b);
        }
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = vec![&mut self.conv_v, &mut self.conv_v_bias];
        for (w, b) in &mut self.conv_h {
            v.push(w);
            v.push(b);
        }
        v
    }
}

#[cfg(test)]
mod tests;
