//! Layer normalisation over the last axis (PyTorch `nn.LayerNorm`: biased variance, `eps`
//! inside the square root), alone and as the post-LN residual `LN(a + b)`.
//!
//! Forward: the kernels' `layer_norm` (the residual sum is rounded to f32 first, as the engine's
//! fused `add_layer_norm` and PyTorch's unfused pair do). Backward: the kernels'
//! `layer_norm_backward`, per row with `x̂ = (x − μ)·r`, `r = 1/sqrt(σ² + eps)` recomputed from
//! the cached input: `dγ += dy ⊙ x̂`, `dβ += dy`, and with `g = dy ⊙ γ`,
//! `dx = r·(g − mean(g) − x̂·mean(g ⊙ x̂))`.

use super::param::{Module, Param};
use seqrec_kernels::cpu::{norm, vector};

/// LayerNorm with scale γ (`{prefix}.weight`) and shift β (`{prefix}.bias`).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// γ, `[dim]`.
    pub weight: Param,
    /// β, `[dim]`.
    pub bias: Param,
    /// Width.
    pub dim: usize,
    /// Epsilon (RecBole: `layer_norm_eps`, 1e-12 by default; NextItNet 1e-8).
    pub eps: f32,
}

/// What [`LayerNorm::backward`] needs: the normalised input.
#[derive(Clone, Debug)]
pub struct LayerNormCache {
    x: Vec<f32>,
    rows: usize,
}

impl LayerNormCache {
    /// Floats held (memory accounting).
    pub fn floats(&self) -> usize {
        self.x.len()
    }
}

impl LayerNorm {
    /// γ = 1, β = 0 (PyTorch's initialisation).
    pub fn new(prefix: &str, dim: usize, eps: f32) -> LayerNorm {
        LayerNorm {
            weight: Param::full(format!("{prefix}.weight"), &[dim], 1.0),
            bias: Param::zeros(format!("{prefix}.bias"), &[dim]),
            dim,
            eps,
        }
    }

    /// `LN(x)` over `rows` rows, without a cache.
    pub fn infer(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut y = vec![0.0; rows * self.dim];
        norm::layer_norm(
            x,
            rows,
            self.dim,
            &self.weight.value,
            &self.bias.value,
            self.eps,
            &mut y,
        );
        y
    }

    /// `LN(x)` (`[rows, dim]`) and the cache for [`LayerNorm::backward`].
    pub fn forward(&self, x: &[f32], rows: usize) -> (Vec<f32>, LayerNormCache) {
        (
            self.infer(x, rows),
            LayerNormCache {
                x: x.to_vec(),
                rows,
            },
        )
    }

    /// The post-LN residual `LN(a + b)`; backward returns the gradient of the sum, which is
    /// the gradient of both `a` and `b`.
    pub fn forward_add(&self, a: &[f32], b: &[f32], rows: usize) -> (Vec<f32>, LayerNormCache) {
        let mut s = a.to_vec();
        vector::add(&mut s, b);
        let y = self.infer(&s, rows);
        (y, LayerNormCache { x: s, rows })
    }

    /// Adds `dγ`, `dβ` for `d_out` (`[rows, dim]`) and returns the input gradient.
    pub fn backward(&mut self, cache: &LayerNormCache, d_out: &[f32]) -> Vec<f32> {
        let d = self.dim;
        assert_eq!(
            d_out.len(),
            cache.rows * d,
            "layer norm `{}` backward: d_out has {} values, expected rows·dim = {}·{d}",
            self.weight.name,
            d_out.len(),
            cache.rows
        );
        let mut dx = vec![0.0f32; cache.rows * d];
        // A frozen γ or β (no gradient buffer) accumulates into a scratch buffer that is
        // dropped: only the input gradient is wanted.
        let scratch = |g: &[f32]| {
            if g.is_empty() {
                vec![0.0; d]
            } else {
                Vec::new()
            }
        };
        let (mut sg, mut sb) = (scratch(&self.weight.grad), scratch(&self.bias.grad));
        let dg = if sg.is_empty() {
            &mut self.weight.grad
        } else {
            &mut sg
        };
        let db = if sb.is_empty() {
            &mut self.bias.grad
        } else {
            &mut sb
        };
        norm::layer_norm_backward(
            &cache.x,
            cache.rows,
            d,
            self.eps,
            &self.weight.value,
            d_out,
            &mut dx,
            dg,
            db,
        );
        dx
    }
}

impl Module for LayerNorm {
    fn params(&self) -> Vec<&Param> {
        vec![&self.weight, &self.bias]
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![&mut self.weight, &mut self.bias]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Rng;
    use crate::nn::gradcheck::{GradCheck, assert_grad, project};
    use seqrec_kernels::cpu::norm::add_layer_norm;

    fn random_ln(rng: &mut Rng, dim: usize, eps: f32) -> LayerNorm {
        let mut ln = LayerNorm::new("ln", dim, eps);
        for (g, b) in ln.weight.value.iter_mut().zip(&mut ln.bias.value) {
            *g = 1.0 + 0.3 * rng.normal();
            *b = 0.3 * rng.normal();
        }
        ln
    }

    #[test]
    fn layer_norm_gradients() {
        // eps 2^-5 on inputs of unit scale (rows of 8, so r ≈ 1): outputs O(1), f32 rounding
        // ≈ 1.5·6e-8·√48/h ≈ 2e-5; the truncation term h⁴·f⁽⁵⁾/30 ≈ 3e-8·f⁽⁵⁾:
        // atol 6e-5, rtol 1e-3.
        let mut rng = Rng::new(30);
        for eps in [1e-12f32, 1e-8] {
            let (rows, d) = (6, 8);
            let mut ln = random_ln(&mut rng, d, eps);
            let x = rng.normal_vec(rows * d, 1.0);
            let w = rng.normal_vec(rows * d, 1.0);
            let (_, cache) = ln.forward(&x, rows);
            let dx = ln.backward(&cache, &w);
            let base = ln.clone();
            let cfg = GradCheck::new(0.03125, 6e-5, 1e-3);
            assert_grad(
                "ln dx",
                |xp| project(&base.infer(xp, rows), &w),
                &x,
                &dx,
                &cfg,
            );
            let mut probe = base.clone();
            assert_grad(
                "ln dγ",
                |p| {
                    probe.weight.value.copy_from_slice(p);
                    project(&probe.infer(&x, rows), &w)
                },
                &base.weight.value,
                &ln.weight.grad,
                &cfg,
            );
            let mut probe = base.clone();
            assert_grad(
                "ln dβ",
                |p| {
                    probe.bias.value.copy_from_slice(p);
                    project(&probe.infer(&x, rows), &w)
                },
                &base.bias.value,
                &ln.bias.grad,
                &cfg,
            );
        }
    }

    #[test]
    fn residual_form_matches_the_fused_kernel_and_splits_the_gradient() {
        let mut rng = Rng::new(31);
        let (rows, d) = (5, 8);
        let mut ln = random_ln(&mut rng, d, 1e-12);
        let a = rng.normal_vec(rows * d, 1.0);
        let b = rng.normal_vec(rows * d, 1.0);
        let (y, cache) = ln.forward_add(&a, &b, rows);
        let mut want = vec![0.0; rows * d];
        add_layer_norm(
            &a,
            &b,
            rows,
            d,
            &ln.weight.value,
            &ln.bias.value,
            ln.eps,
            &mut want,
        );
        // The engine's fused kernel rounds the same f32 sum: identical.
        assert_eq!(y, want);
        let w = rng.normal_vec(rows * d, 1.0);
        let ds = ln.backward(&cache, &w);
        let base = ln.clone();
        // As layer_norm_gradients: eps 2^-5, atol 6e-5, rtol 1e-3.
        let cfg = GradCheck::new(0.03125, 6e-5, 1e-3);
        assert_grad(
            "LN(a+b) da",
            |ap| project(&base.forward_add(ap, &b, rows).0, &w),
            &a,
            &ds,
            &cfg,
        );
        assert_grad(
            "LN(a+b) db",
            |bp| project(&base.forward_add(&a, bp, rows).0, &w),
            &b,
            &ds,
            &cfg,
        );
    }
}
