//! One GRU layer over a batch of sequences, PyTorch `nn.GRU` semantics (GRU4Rec), with
//! backpropagation through time.
//!
//! Weights as PyTorch stores them: `weight_ih_l{k}` `[3h, input]`, `weight_hh_l{k}` `[3h, h]`,
//! row blocks ordered **[r; z; n]**, optional biases `[3h]` (RecBole's GRU4Rec has none). Per
//! step, with `gi = W_ih x_t + b_ih` and `gh = W_hh h_{t−1} + b_hh`:
//! `r = σ(gi_r + gh_r)`, `z = σ(gi_z + gh_z)`, `n = tanh(gi_n + r ⊙ gh_n)` (the reset gate
//! scales the result of `W_hn h + b_hn`), `h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}`.
//!
//! Forward: the kernels' `gru_layer`, sequence by sequence (the engine's computation). The
//! cache keeps the input, the initial states and every output state; backward recomputes the
//! projections `gi` and `gh` of all steps with two products (every `h_{t−1}` is known) and the
//! gates from them, then runs the recurrence backwards for all sequences at once:
//!
//! ```text
//! dn = dh ⊙ (1 − z)           dz = dh ⊙ (h_{t−1} − n)
//! da_n = dn ⊙ (1 − n²)        dr = da_n ⊙ gh_n
//! dgi = [dr ⊙ r(1−r); dz ⊙ z(1−z); da_n]
//! dgh = [dr ⊙ r(1−r); dz ⊙ z(1−z); da_n ⊙ r]
//! dh_{t−1} = dh ⊙ z + dgh·W_hh
//! ```
//!
//! and finishes with `dW_ih += dGIᵀ X`, `dX = dGI·W_ih`, `dW_hh += dGHᵀ H_prev` over all steps.

use super::linear::{bias_grad, input_grad, weight_grad};
use super::param::{Module, Param};
use crate::nn::Rng;
use seqrec_kernels::cpu::gru::{gru_layer, gru_scratch_len};
use seqrec_kernels::cpu::linear::{MatMut, MatRef, gemm, linear};
use seqrec_kernels::cpu::math;

/// One layer of a PyTorch GRU.
#[derive(Clone, Debug)]
pub struct Gru {
    /// `{prefix}.weight_ih_l{k}`, `[3·hidden, input]`.
    pub weight_ih: Param,
    /// `{prefix}.weight_hh_l{k}`, `[3·hidden, hidden]`.
    pub weight_hh: Param,
    /// `{prefix}.bias_ih_l{k}`, `[3·hidden]`.
    pub bias_ih: Option<Param>,
    /// `{prefix}.bias_hh_l{k}`, `[3·hidden]`.
    pub bias_hh: Option<Param>,
    /// Input width.
    pub input: usize,
    /// Hidden width.
    pub hidden: usize,
}

/// What [`Gru::backward`] needs.
#[derive(Clone, Debug)]
pub struct GruCache {
    batch: usize,
    steps: usize,
    x: Vec<f32>,
    h0: Vec<f32>,
    out: Vec<f32>,
}

impl Gru {
    /// Layer `k` of the GRU named `prefix` (RecBole: `gru_layers`), weights initialised as
    /// RecBole's GRU4Rec does (`xavier_uniform_`), biases (if any) as PyTorch does
    /// (uniform in `±1/sqrt(hidden)`).
    pub fn new(
        prefix: &str,
        k: usize,
        input: usize,
        hidden: usize,
        bias: bool,
        rng: &mut Rng,
    ) -> Gru {
        let mut weight_ih = Param::zeros(format!("{prefix}.weight_ih_l{k}"), &[3 * hidden, input]);
        let mut weight_hh = Param::zeros(format!("{prefix}.weight_hh_l{k}"), &[3 * hidden, hidden]);
        weight_ih.init_xavier_uniform(rng);
        weight_hh.init_xavier_uniform(rng);
        let bound = 1.0 / (hidden.max(1) as f32).sqrt();
        let mut b = |name: &str| {
            let mut p = Param::zeros(format!("{prefix}.{name}_l{k}"), &[3 * hidden]);
            p.init_uniform(rng, bound);
            p
        };
        let (bias_ih, bias_hh) = if bias {
            (Some(b("bias_ih")), Some(b("bias_hh")))
        } else {
            (None, None)
        };
        Gru {
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
            input,
            hidden,
        }
    }

    /// Runs the layer over `batch` sequences of `steps` rows of `x` (`[batch·steps, input]`)
    /// from the initial states `h0` (`[batch, hidden]`, zeros when `None`), returning every
    /// step's state (`[batch·steps, hidden]`; the last step of each sequence is its final
    /// state) and the cache.
    pub fn forward(
        &self,
        x: &[f32],
        batch: usize,
        steps: usize,
        h0: Option<&[f32]>,
    ) -> (Vec<f32>, GruCache) {
        let (inp, hd) = (self.input, self.hidden);
        assert_eq!(
            x.len(),
            batch * steps * inp,
            "gru `{}`: x has {} values, expected batch·steps·input = {batch}·{steps}·{inp}",
            self.weight_ih.name,
            x.len()
        );
        let h0 = match h0 {
            Some(h) => {
                assert_eq!(
                    h.len(),
                    batch * hd,
                    "gru `{}`: h0 has {} values, expected batch·hidden = {batch}·{hd}",
                    self.weight_ih.name,
                    h.len()
                );
                h.to_vec()
            }
            None => vec![0.0; batch * hd],
        };
        let mut out = vec![0.0; batch * steps * hd];
        let mut scratch = vec![0.0; gru_scratch_len(steps, hd)];
        let mut h = vec![0.0; hd];
        for b in 0..batch {
            h.copy_from_slice(&h0[b * hd..(b + 1) * hd]);
            gru_layer(
                &x[b * steps * inp..(b + 1) * steps * inp],
                steps,
                inp,
                hd,
                &self.weight_ih.value,
                &self.weight_hh.value,
                self.bias_ih.as_ref().map(|p| p.value.as_slice()),
                self.bias_hh.as_ref().map(|p| p.value.as_slice()),
                &mut h,
                &mut out[b * steps * hd..(b + 1) * steps * hd],
                &mut scratch,
            );
        }
        let cache = GruCache {
            batch,
            steps,
            x: x.to_vec(),
            h0,
            out: out.clone(),
        };
        (out, cache)
    }

    /// Adds every parameter gradient for `d_out` (the gradient of every step's state,
    /// `[batch·steps, hidden]`) and returns `(dX, dh0)`.
    pub fn backward(&mut self, cache: &GruCache, d_out: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (batch, steps, inp, hd) = (cache.batch, cache.steps, self.input, self.hidden);
        let rows = batch * steps;
        let g3 = 3 * hd;
        assert_eq!(
            d_out.len(),
            rows * hd,
            "gru `{}` backward: d_out has {} values, expected batch·steps·hidden = {rows}·{hd}",
            self.weight_ih.name,
            d_out.len()
        );
        // Every step's previous state, then both projections of all steps at once.
        let mut h_prev = vec![0.0; rows * hd];
        for b in 0..batch {
            for t in 0..steps {
                let src = if t == 0 {
                    &cache.h0[b * hd..(b + 1) * hd]
                } else {
                    let r = b * steps + t - 1;
                    &cache.out[r * hd..(r + 1) * hd]
                };
                let r = b * steps + t;
                h_prev[r * hd..(r + 1) * hd].copy_from_slice(src);
            }
        }
        let mut gi = vec![0.0; rows * g3];
        let mut gh = vec![0.0; rows * g3];
        let b_ih = self.bias_ih.as_ref().map(|p| p.value.as_slice());
        let b_hh = self.bias_hh.as_ref().map(|p| p.value.as_slice());
        linear(
            &cache.x,
            &self.weight_ih.value,
            b_ih,
            &mut gi,
            rows,
            inp,
            g3,
        );
        linear(&h_prev, &self.weight_hh.value, b_hh, &mut gh, rows, hd, g3);

        // gi and gh are overwritten in place by their gradients dgi and dgh, step by step.
        let mut dh = vec![0.0f32; batch * hd];
        let mut carry = vec![0.0f32; batch * hd];
        for t in (0..steps).rev() {
            for b in 0..batch {
                let r = b * steps + t;
                let dhb = &mut dh[b * hd..(b + 1) * hd];
                for (d, g) in dhb.iter_mut().zip(&d_out[r * hd..(r + 1) * hd]) {
                    *d += g;
                }
                let (gir, ghr) = (&mut gi[r * g3..(r + 1) * g3], &mut gh[r * g3..(r + 1) * g3]);
                let hp = &h_prev[r * hd..(r + 1) * hd];
                for j in 0..hd {
                    let rg = math::sigmoid(gir[j] + ghr[j]);
                    let zg = math::sigmoid(gir[hd + j] + ghr[hd + j]);
                    let ghn = ghr[2 * hd + j];
                    let ng = math::tanh(gir[2 * hd + j] + rg * ghn);
                    let d = dhb[j];
                    let da_n = d * (1.0 - zg) * (1.0 - ng * ng);
                    let da_r = da_n * ghn * rg * (1.0 - rg);
                    let da_z = d * (hp[j] - ng) * zg * (1.0 - zg);
                    gir[j] = da_r;
                    gir[hd + j] = da_z;
                    gir[2 * hd + j] = da_n;
                    ghr[j] = da_r;
                    ghr[hd + j] = da_z;
                    ghr[2 * hd + j] = da_n * rg;
                    // The direct path of h_{t−1}; the W_hh path is added below.
                    dhb[j] = d * zg;
                }
            }
            if hd > 0 && batch > 0 {
                // dh_{t−1} += dgh_t·W_hh for all sequences: rows b·steps + t of dgh.
                gemm(
                    MatMut::row_major(&mut carry, batch, hd),
                    MatRef::new(&gh[t * g3..], batch, g3, steps * g3, 1),
                    MatRef::row_major(&self.weight_hh.value, g3, hd),
                    false,
                );
                for (d, c) in dh.iter_mut().zip(&carry) {
                    *d += c;
                }
            }
        }
        let (dgi, dgh) = (gi, gh);
        weight_grad(&mut self.weight_ih.grad, &dgi, &cache.x, rows, g3, inp);
        weight_grad(&mut self.weight_hh.grad, &dgh, &h_prev, rows, g3, hd);
        if let Some(p) = &mut self.bias_ih {
            bias_grad(&mut p.grad, &dgi, g3);
        }
        if let Some(p) = &mut self.bias_hh {
            bias_grad(&mut p.grad, &dgh, g3);
        }
        let mut dx = vec![0.0; rows * inp];
        input_grad(&mut dx, &dgi, &self.weight_ih.value, rows, g3, inp, false);
        (dx, dh)
    }
}

impl Module for Gru {
    fn params(&self) -> Vec<&Param> {
        let mut v = vec![&self.weight_ih, &self.weight_hh];
        v.extend(self.bias_ih.as_ref());
        v.extend(self.bias_hh.as_ref());
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = vec![&mut self.weight_ih, &mut self.weight_hh];
        v.extend(self.bias_ih.as_mut());
        v.extend(self.bias_hh.as_mut());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{
        GradCheck, assert_grad, assert_param_grads, project, randomize, weight_file,
    };
    use seqrec_engine::backend::Backend;
    use seqrec_engine::{Cpu, TensorLoader, blocks};
    use seqrec_kernels::testing::max_abs_diff;

    fn gru(rng: &mut Rng, bias: bool) -> Gru {
        let mut g = Gru::new("gru_layers", 0, 6, 4, bias, rng);
        randomize(&mut g, rng, 0.5);
        g
    }

    #[test]
    fn gru_gradients_through_time() {
        // Five steps of sigmoid/tanh recurrences with weights of 0.5: smooth, outputs in
        // (−1, 1). eps 2^-5: truncation h⁴·f⁽⁵⁾/30 ≈ 1e-7·f⁽⁵⁾, f32 noise of 40 outputs
        // ≈ 1.5·6e-8·√40/h ≈ 2e-5: atol 1e-4, rtol 1e-3.
        let mut rng = Rng::new(50);
        let (batch, steps) = (2, 5);
        for bias in [false, true] {
            let base = gru(&mut rng, bias);
            let x = rng.normal_vec(batch * steps * 6, 1.0);
            let h0 = rng.normal_vec(batch * 4, 0.5);
            let w = rng.normal_vec(batch * steps * 4, 1.0);
            let mut trained = base.clone();
            let (_, cache) = trained.forward(&x, batch, steps, Some(&h0));
            let (dx, dh0) = trained.backward(&cache, &w);
            let cfg = GradCheck::new(0.03125, 1e-4, 1e-3);
            let run = |m: &Gru, x: &[f32], h0: &[f32]| m.forward(x, batch, steps, Some(h0)).0;
            assert_grad(
                "gru dx",
                |xp| project(&run(&base, xp, &h0), &w),
                &x,
                &dx,
                &cfg,
            );
            assert_grad(
                "gru dh0",
                |hp| project(&run(&base, &x, hp), &w),
                &h0,
                &dh0,
                &cfg,
            );
            assert_param_grads(
                "gru",
                &base,
                &trained,
                |m| project(&run(m, &x, &h0), &w),
                &cfg,
            );
        }
    }

    #[test]
    fn gru_gradient_of_the_last_state_only() {
        // GRU4Rec's loss reads one state per sequence (position n−1): d_out is zero elsewhere
        // and the whole gradient flows back through time. Same eps and tolerances.
        let mut rng = Rng::new(51);
        let (batch, steps) = (3, 6);
        let base = gru(&mut rng, false);
        let x = rng.normal_vec(batch * steps * 6, 1.0);
        let mut w = vec![0.0f32; batch * steps * 4];
        for (b, last) in [5usize, 2, 0].into_iter().enumerate() {
            let r = b * steps + last;
            w[r * 4..(r + 1) * 4].copy_from_slice(&rng.normal_vec(4, 1.0));
        }
        let mut trained = base.clone();
        let (_, cache) = trained.forward(&x, batch, steps, None);
        let (dx, _) = trained.backward(&cache, &w);
        let cfg = GradCheck::new(0.03125, 1e-4, 1e-3);
        let run = |m: &Gru, x: &[f32]| m.forward(x, batch, steps, None).0;
        assert_grad(
            "gru dx (last)",
            |xp| project(&run(&base, xp), &w),
            &x,
            &dx,
            &cfg,
        );
        // Steps after a sequence's read position get no gradient.
        assert!(dx[(steps + 3) * 6..2 * steps * 6].iter().all(|&g| g == 0.0));
        assert_param_grads(
            "gru (last)",
            &base,
            &trained,
            |m| project(&run(m, &x), &w),
            &cfg,
        );
    }

    #[test]
    fn gru_equals_the_engine_layer() {
        // 1e-5 against the engine's CPU GRU layer on the same tensors (the same kernel: the
        // difference is 0 unless the engine changes how it calls it).
        let mut rng = Rng::new(52);
        for bias in [false, true] {
            let g = gru(&mut rng, bias);
            let file = weight_file(&g);
            let mut ld = TensorLoader::new(&file);
            let layer = blocks::GruLayer::load(&Cpu::new(), &mut ld, "gru_layers", 0, 6, 4, bias);
            let layer = layer.unwrap();
            ld.finish("gru").unwrap();
            let steps = 7;
            let x = rng.normal_vec(steps * 6, 1.0);
            let (ours, _) = g.forward(&x, 1, steps, None);
            let (mut h, mut scratch, mut out) = (vec![0.0; 4], Vec::new(), Vec::new());
            Cpu::new()
                .gru(&layer, &x, steps, &mut h, &mut scratch, &mut out)
                .unwrap();
            let err = max_abs_diff(&ours, &out[..steps * 4]);
            assert!(err <= 1e-5, "bias {bias}: max |Δ| {err:e}");
        }
    }
}
