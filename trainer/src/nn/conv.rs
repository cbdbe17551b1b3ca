//! NextItNet's dilated causal convolution and its residual block (RecBole `ResidualBlock_b`).
//!
//! Layout: `batch` sequences of `len` rows, `[batch·len, channels]`, time-major.
//!
//! [`CausalConv1d`]: PyTorch weight `[out, in, 1, k]`, zero left padding of `(k−1)·d` rows per
//! sequence: `y[t, o] = b[o] + Σ_j Σ_c W[o, c, 0, j]·x[t − (k−1−j)·d, c]` (tap `k−1` is the
//! current row). Forward: the kernels' `causal_conv1d` on the tap-major repacked weight.
//! Backward, per tap `j` with shift `s = (k−1−j)·d < len`: `dW[:, :, 0, j] += dY[s..]ᵀ·X[..len−s]`
//! and `dX[..len−s] += dY[s..]·W[:, :, 0, j]`, both `gemm` on strided views of the PyTorch
//! weight (no repacking), and `db += Σ_t dY[t]`.
//!
//! [`NextItNetBlock`]: `O1 = ReLU(LN1(conv_d(X)))`, `O2 = ReLU(LN2(conv_2d(O1)))`, `Y = O2 + X`
//! (LayerNorm eps 1e-8).

use super::activation::{ActCache, act_backward, act_forward};
use super::linear::bias_grad;
use super::norm::{LayerNorm, LayerNormCache};
use super::param::{Module, Param};
use crate::nn::Rng;
use seqrec_kernels::cpu::activation::Activation;
use seqrec_kernels::cpu::conv::{causal_conv1d, pack_conv_taps};
use seqrec_kernels::cpu::linear::{MatMut, MatRef, gemm};
use seqrec_kernels::cpu::vector;

/// A dilated causal conv1d (PyTorch `Conv2d` with a `(1, k)` kernel over left-padded input).
#[derive(Clone, Debug)]
pub struct CausalConv1d {
    /// `{prefix}.weight`, `[out, in, 1, k]`.
    pub weight: Param,
    /// `{prefix}.bias`, `[out]`.
    pub bias: Param,
    /// Input channels.
    pub in_ch: usize,
    /// Output channels.
    pub out_ch: usize,
    /// Kernel width.
    pub kernel: usize,
    /// Dilation.
    pub dilation: usize,
}

/// What [`CausalConv1d::backward`] needs: the input.
#[derive(Clone, Debug)]
pub struct ConvCache {
    x: Vec<f32>,
    batch: usize,
    len: usize,
}

impl CausalConv1d {
    /// A convolution named `prefix` with PyTorch's default initialisation (weight and bias
    /// uniform in `±1/sqrt(in·k)`).
    ///
    /// # Panics
    /// If `kernel` or `dilation` is 0.
    pub fn new(
        prefix: &str,
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        dilation: usize,
        rng: &mut Rng,
    ) -> CausalConv1d {
        assert!(
            kernel > 0 && dilation > 0,
            "conv `{prefix}`: kernel {kernel} and dilation {dilation} must be positive"
        );
        let bound = 1.0 / ((in_ch * kernel).max(1) as f32).sqrt();
        let mut weight = Param::zeros(format!("{prefix}.weight"), &[out_ch, in_ch, 1, kernel]);
        let mut bias = Param::zeros(format!("{prefix}.bias"), &[out_ch]);
        weight.init_uniform(rng, bound);
        bias.init_uniform(rng, bound);
        CausalConv1d {
            weight,
            bias,
            in_ch,
            out_ch,
            kernel,
            dilation,
        }
    }

    /// The convolution of `batch` sequences of `len` rows of `x` (`[batch·len, in]`) into
    /// `[batch·len, out]`, and the cache.
    pub fn forward(&self, x: &[f32], batch: usize, len: usize) -> (Vec<f32>, ConvCache) {
        let (ci, co) = (self.in_ch, self.out_ch);
        assert_eq!(
            x.len(),
            batch * len * ci,
            "conv `{}`: x has {} values, expected batch·len·in = {batch}·{len}·{ci}",
            self.weight.name,
            x.len()
        );
        let taps = pack_conv_taps(&self.weight.value, co, ci, self.kernel);
        let mut y = vec![0.0; batch * len * co];
        for b in 0..batch {
            causal_conv1d(
                &x[b * len * ci..(b + 1) * len * ci],
                len,
                ci,
                &taps,
                Some(&self.bias.value),
                co,
                self.kernel,
                self.dilation,
                &mut y[b * len * co..(b + 1) * len * co],
            );
        }
        let cache = ConvCache {
            x: x.to_vec(),
            batch,
            len,
        };
        (y, cache)
    }

    /// Adds the parameter gradients for `d_out` (`[batch·len, out]`) and returns `dX`.
    pub fn backward(&mut self, cache: &ConvCache, d_out: &[f32]) -> Vec<f32> {
        let (ci, co, k, len) = (self.in_ch, self.out_ch, self.kernel, cache.len);
        assert_eq!(
            d_out.len(),
            cache.batch * len * co,
            "conv `{}` backward: d_out has {} values, expected batch·len·out = {}·{len}·{co}",
            self.weight.name,
            d_out.len(),
            cache.batch
        );
        bias_grad(&mut self.bias.grad, d_out, co);
        let mut dx = vec![0.0; cache.batch * len * ci];
        if ci == 0 || co == 0 {
            return dx;
        }
        for b in 0..cache.batch {
            let x = &cache.x[b * len * ci..(b + 1) * len * ci];
            let dy = &d_out[b * len * co..(b + 1) * len * co];
            let dxb = &mut dx[b * len * ci..(b + 1) * len * ci];
            for j in 0..k {
                let shift = (k - 1 - j).saturating_mul(self.dilation);
                if shift >= len {
                    continue;
                }
                let rows = len - shift;
                let dy_s = &dy[shift * co..];
                // Tap j of W as an [out, in] matrix: W[o, c, 0, j] at (o·in + c)·k + j.
                gemm(
                    MatMut::new(&mut self.weight.grad[j..], co, ci, ci * k, k),
                    MatRef::new(dy_s, co, rows, 1, co),
                    MatRef::row_major(&x[..rows * ci], rows, ci),
                    true,
                );
                gemm(
                    MatMut::row_major(&mut dxb[..rows * ci], rows, ci),
                    MatRef::row_major(dy_s, rows, co),
                    MatRef::new(&self.weight.value[j..], co, ci, ci * k, k),
                    true,
                );
            }
        }
        dx
    }
}

impl Module for CausalConv1d {
    fn params(&self) -> Vec<&Param> {
        vec![&self.weight, &self.bias]
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![&mut self.weight, &mut self.bias]
    }
}

/// NextItNet residual block (b): two dilated causal convolutions (dilation d, then 2d), each
/// followed by LayerNorm (eps 1e-8) and ReLU, plus the residual.
#[derive(Clone, Debug)]
pub struct NextItNetBlock {
    /// `{prefix}.conv1`, dilation d.
    pub conv1: CausalConv1d,
    /// `{prefix}.ln1`.
    pub ln1: LayerNorm,
    /// `{prefix}.conv2`, dilation 2d.
    pub conv2: CausalConv1d,
    /// `{prefix}.ln2`.
    pub ln2: LayerNorm,
}

/// What [`NextItNetBlock::backward`] needs.
#[derive(Clone, Debug)]
pub struct NextItNetBlockCache {
    rows: usize,
    conv1: ConvCache,
    ln1: LayerNormCache,
    relu1: ActCache,
    conv2: ConvCache,
    ln2: LayerNormCache,
    relu2: ActCache,
}

impl NextItNetBlockCache {
    /// The inputs of the block's two ReLUs (`[rows, channels]` each): which side of the kink
    /// each value is on identifies the smooth piece (gradient checks).
    pub fn relu_inputs(&self) -> [&[f32]; 2] {
        [self.relu1.input(), self.relu2.input()]
    }
}

impl NextItNetBlock {
    /// Block `prefix` (RecBole: `residual_blocks.{b}`) over `channels` channels with kernel
    /// width `kernel` and dilation `dilation`.
    pub fn new(
        prefix: &str,
        channels: usize,
        kernel: usize,
        dilation: usize,
        rng: &mut Rng,
    ) -> NextItNetBlock {
        let c = channels;
        NextItNetBlock {
            conv1: CausalConv1d::new(&format!("{prefix}.conv1"), c, c, kernel, dilation, rng),
            ln1: LayerNorm::new(&format!("{prefix}.ln1"), c, 1e-8),
            conv2: CausalConv1d::new(&format!("{prefix}.conv2"), c, c, kernel, 2 * dilation, rng),
            ln2: LayerNorm::new(&format!("{prefix}.ln2"), c, 1e-8),
        }
    }

    /// The block over `batch` sequences of `len` rows of `x` (`[batch·len, channels]`).
    pub fn forward(&self, x: &[f32], batch: usize, len: usize) -> (Vec<f32>, NextItNetBlockCache) {
        let rows = batch * len;
        let (h, conv1) = self.conv1.forward(x, batch, len);
        let (mut o1, ln1) = self.ln1.forward(&h, rows);
        let relu1 = act_forward(Activation::Relu, &mut o1);
        let (h, conv2) = self.conv2.forward(&o1, batch, len);
        let (mut o2, ln2) = self.ln2.forward(&h, rows);
        let relu2 = act_forward(Activation::Relu, &mut o2);
        vector::add(&mut o2, x);
        let cache = NextItNetBlockCache {
            rows,
            conv1,
            ln1,
            relu1,
            conv2,
            ln2,
            relu2,
        };
        (o2, cache)
    }

    /// Adds every parameter gradient for `d_out` and returns `dX`.
    pub fn backward(&mut self, cache: &NextItNetBlockCache, d_out: &[f32]) -> Vec<f32> {
        assert_eq!(
            d_out.len(),
            cache.rows * self.ln1.dim,
            "nextitnet block `{}` backward: d_out has {} values, expected rows·channels",
            self.conv1.weight.name,
            d_out.len()
        );
        let mut d = d_out.to_vec();
        act_backward(&cache.relu2, &mut d);
        let d = self.ln2.backward(&cache.ln2, &d);
        let mut d = self.conv2.backward(&cache.conv2, &d);
        act_backward(&cache.relu1, &mut d);
        let d = self.ln1.backward(&cache.ln1, &d);
        let mut dx = self.conv1.backward(&cache.conv1, &d);
        vector::add(&mut dx, d_out);
        dx
    }
}

crate::module_of_fields!(NextItNetBlock: conv1, ln1, conv2, ln2);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{
        GradCheck, assert_grad, assert_grad_piecewise, assert_param_grads,
        assert_param_grads_piecewise, project, randomize, signature, weight_file,
    };
    use seqrec_engine::backend::{Backend, BlockScratch};
    use seqrec_engine::{Cpu, TensorLoader, blocks};
    use seqrec_kernels::cpu::conv::causal_conv1d_ref;
    use seqrec_kernels::testing::{assert_close, max_abs_diff};

    #[test]
    fn conv_gradients_all_dilations() {
        // Linear in x, W and b: the difference quotient is exact up to f32 noise
        // (≈ 1.5·6e-8·√60/h): eps 2^-4, atol 2e-5, rtol 1e-4. Dilations that reach past the
        // start of the sequence (shift ≥ len) exercise the zero padding.
        let mut rng = Rng::new(60);
        let (batch, len, ci, co) = (2, 5, 3, 6);
        for (k, d) in [(3, 1), (3, 2), (2, 4), (1, 1)] {
            let mut base = CausalConv1d::new("c", ci, co, k, d, &mut rng);
            randomize(&mut base, &mut rng, 0.5);
            let x = rng.normal_vec(batch * len * ci, 1.0);
            let w = rng.normal_vec(batch * len * co, 1.0);
            let mut trained = base.clone();
            let (y, cache) = trained.forward(&x, batch, len);
            let dx = trained.backward(&cache, &w);
            // The forward against the kernels' reference (unpacked weight): 1e-5·(1 + Σ|terms|).
            let mut want = vec![0.0; y.len()];
            for b in 0..batch {
                causal_conv1d_ref(
                    &x[b * len * ci..(b + 1) * len * ci],
                    len,
                    ci,
                    &base.weight.value,
                    Some(&base.bias.value),
                    co,
                    k,
                    d,
                    &mut want[b * len * co..(b + 1) * len * co],
                );
            }
            assert_close("conv forward", &y, &want, 1e-4, 0.0);
            let cfg = GradCheck::new(0.0625, 2e-5, 1e-4);
            let run = |m: &CausalConv1d, x: &[f32]| m.forward(x, batch, len).0;
            let what = format!("conv k={k} d={d}");
            assert_grad(&what, |xp| project(&run(&base, xp), &w), &x, &dx, &cfg);
            assert_param_grads(&what, &base, &trained, |m| project(&run(m, &x), &w), &cfg);
        }
    }

    fn block(rng: &mut Rng, c: usize, dilation: usize) -> NextItNetBlock {
        let mut b = NextItNetBlock::new("residual_blocks.0", c, 3, dilation, rng);
        randomize(&mut b, rng, 0.4);
        b
    }

    #[test]
    fn residual_block_gradients() {
        // Convolutions, LN (eps 1e-8) and ReLU. The LN parameters keep every ReLU input at
        // least 0.4 from the kink (β = ±1.2 by channel, |γ| ≤ 0.4 and |x̂| ≤ 2 over 5
        // channels), so both ReLU branches are exercised and no ±2h move flips one (the
        // piecewise check would skip such a coordinate; here it skips none). Smooth within the
        // piece: eps 2^-5, truncation h⁴·f⁽⁵⁾/30 ≈ 3e-8·f⁽⁵⁾, f32 noise ≈ 1.5·6e-8·√60/h ≈ 2e-5:
        // atol 1e-4, rtol 1e-3.
        let mut rng = Rng::new(61);
        let (batch, len, c) = (2, 6, 5);
        let mut base = block(&mut rng, c, 2);
        for ln in [&mut base.ln1, &mut base.ln2] {
            for (j, (g, b)) in ln
                .weight
                .value
                .iter_mut()
                .zip(&mut ln.bias.value)
                .enumerate()
            {
                *g = rng.uniform(0.1, 0.4);
                *b = if j % 2 == 0 { 1.2 } else { -1.2 };
            }
        }
        let x = rng.normal_vec(batch * len * c, 1.0);
        let w = rng.normal_vec(batch * len * c, 1.0);
        let mut trained = base.clone();
        let (_, cache) = trained.forward(&x, batch, len);
        let dx = trained.backward(&cache, &w);
        let cfg = GradCheck::new(0.03125, 1e-4, 1e-3);
        let run = |m: &NextItNetBlock, x: &[f32]| {
            let (y, cache) = m.forward(x, batch, len);
            let signs = |a: &ActCache| a.input().iter().map(|&v| v > 0.0).collect::<Vec<_>>();
            (
                project(&y, &w),
                signature((signs(&cache.relu1), signs(&cache.relu2))),
            )
        };
        assert_grad_piecewise("nextitnet dx", |xp| run(&base, xp), &x, &dx, &cfg);
        assert_param_grads_piecewise("nextitnet", &base, &trained, |m| run(m, &x), &cfg);
    }

    #[test]
    fn residual_block_equals_the_engine_block() {
        // 1e-5 against the engine's CPU NextItNet block on the same tensors (same kernels;
        // our LN/ReLU are not fused in place, which changes nothing numerically).
        let mut rng = Rng::new(62);
        let (len, c) = (7, 6);
        let be = Cpu::new();
        for dilation in [1, 4] {
            let b = block(&mut rng, c, dilation);
            let file = weight_file(&b);
            let mut ld = TensorLoader::new(&file);
            let blk =
                blocks::NextItNetBlock::load(&be, &mut ld, "residual_blocks.0", c, 3, dilation)
                    .unwrap();
            ld.finish("nextitnet").unwrap();
            let x = rng.normal_vec(len * c, 1.0);
            let (ours, _) = b.forward(&x, 1, len);
            let (mut mid, mut tmp, mut out) = (Vec::new(), BlockScratch::default(), Vec::new());
            be.nextitnet_block(&blk, &x, len, 0, &mut mid, &mut tmp, &mut out)
                .unwrap();
            let err = max_abs_diff(&ours, &out[..len * c]);
            assert!(err <= 1e-5, "dilation {dilation}: max |Δ| {err:e}");
        }
    }
}
