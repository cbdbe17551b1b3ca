//! Linear layers and embedding tables, and the matrix-product helpers every backward pass
//! uses.
//!
//! `Linear`: `y[m, n] = x[m, k]·Wᵀ + b`, `W` stored `[out, in]` (PyTorch). Backward:
//! `dX = dY·W`, `dW += dYᵀ·X`, `db += Σ_rows dY`. `Embedding`: `y[i] = table[ids[i]]`; backward
//! scatter-adds `dY[i]` into row `ids[i]` of the table's gradient (a repeated id collects every
//! occurrence).

use super::param::{Module, Param};
use crate::nn::Rng;
use seqrec_kernels::cpu::linear::{MatMut, MatRef, gemm, linear, linear_gemm, matmul, matmul_gemm};
use seqrec_kernels::cpu::{embedding, vector};

/// `dw[n, k] += dyᵀ·x` for `dy` `[m, n]` and `x` `[m, k]` (the weight gradient of a linear
/// layer), through `gemm` with a transposed view of `dy`.
pub fn weight_grad(dw: &mut [f32], dy: &[f32], x: &[f32], m: usize, n: usize, k: usize) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    gemm(
        MatMut::row_major(dw, n, k),
        MatRef::new(dy, n, m, 1, n),
        MatRef::row_major(x, m, k),
        true,
    );
}

/// Rows from which the input gradient of a wide layer (both widths at least [`GEMM_WIDTH`])
/// goes through `gemm` rather than the engine's `matmul`: a training batch stacks thousands of
/// rows (items × tokens of a text tower), where `gemm` ran `dY·W` 1.75× faster than the
/// engine's `matmul` (PERFORMANCE.md), whose kernels are tuned for the few rows of serving.
pub const GEMM_ROWS: usize = 256;

/// See [`GEMM_ROWS`].
pub const GEMM_WIDTH: usize = 256;

/// Whether a product of `m` rows between widths `k` and `n` goes through `gemm` (see
/// [`GEMM_ROWS`]); those products also spread over the threads that
/// `seqrec_kernels::cpu::linear::set_gemm_threads` allows.
fn takes_gemm(m: usize, k: usize, n: usize) -> bool {
    m >= GEMM_ROWS && k >= GEMM_WIDTH && n >= GEMM_WIDTH
}

/// `y[m, n] = x[m, k]·wᵀ + b` for `w` `[n, k]` (the forward of [`Linear`]): the engine's
/// `linear`, or `gemm` for the wide training products of [`GEMM_ROWS`] (as fast on one
/// thread, and it can use several).
pub fn linear_rows(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    if takes_gemm(m, k, n) {
        linear_gemm(x, w, bias, y, m, k, n);
    } else {
        linear(x, w, bias, y, m, k, n);
    }
}

/// `db[n] += Σ_rows dy[row, :]` for `dy` `[m, n]`.
pub fn bias_grad(db: &mut [f32], dy: &[f32], n: usize) {
    if n == 0 {
        return;
    }
    for row in dy.chunks_exact(n) {
        vector::add(db, row);
    }
}

/// `dx[m, k] (+)= dy[m, n]·w[n, k]` (the input gradient of a linear layer); adds to `dx` when
/// `accumulate`.
pub fn input_grad(
    dx: &mut [f32],
    dy: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) {
    if takes_gemm(m, n, k) {
        matmul_gemm(dy, w, dx, m, n, k, accumulate);
    } else {
        matmul(dy, w, dx, m, n, k, accumulate);
    }
}

/// A linear layer `y = x·Wᵀ + b` (PyTorch `nn.Linear`).
#[derive(Clone, Debug)]
pub struct Linear {
    /// `{prefix}.weight`, `[out_dim, in_dim]`.
    pub weight: Param,
    /// `{prefix}.bias`, `[out_dim]`.
    pub bias: Option<Param>,
    /// Input width.
    pub in_dim: usize,
    /// Output width.
    pub out_dim: usize,
}

/// What [`Linear::backward`] needs: the input.
#[derive(Clone, Debug)]
pub struct LinearCache {
    x: Vec<f32>,
    rows: usize,
}

impl Linear {
    /// A layer named `prefix` with weights from `N(0, std²)` and a zero bias (RecBole's
    /// `_init_weights`).
    pub fn new(
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        std: f32,
        rng: &mut Rng,
    ) -> Linear {
        Linear {
            weight: Param::normal(format!("{prefix}.weight"), &[out_dim, in_dim], std, rng),
            bias: bias.then(|| Param::zeros(format!("{prefix}.bias"), &[out_dim])),
            in_dim,
            out_dim,
        }
    }

    /// `y = x·Wᵀ + b` for `rows` rows of `x` (`[rows, in_dim]`), without a cache.
    pub fn infer(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut y = vec![0.0; rows * self.out_dim];
        linear_rows(
            x,
            &self.weight.value,
            self.bias.as_ref().map(|b| b.value.as_slice()),
            &mut y,
            rows,
            self.in_dim,
            self.out_dim,
        );
        y
    }

    /// `y = x·Wᵀ + b` (`[rows, out_dim]`) and the cache for [`Linear::backward`].
    pub fn forward(&self, x: &[f32], rows: usize) -> (Vec<f32>, LinearCache) {
        let y = self.infer(x, rows);
        (
            y,
            LinearCache {
                x: x.to_vec(),
                rows,
            },
        )
    }

    /// Adds the parameter gradients for `d_out` (`[rows, out_dim]`) and returns `dX`.
    pub fn backward(&mut self, cache: &LinearCache, d_out: &[f32]) -> Vec<f32> {
        let mut dx = vec![0.0; cache.rows * self.in_dim];
        self.backward_into(cache, d_out, &mut dx, false);
        dx
    }

    /// As [`Linear::backward`], writing (or, with `accumulate`, adding) `dX` into `dx`.
    pub fn backward_into(
        &mut self,
        cache: &LinearCache,
        d_out: &[f32],
        dx: &mut [f32],
        accumulate: bool,
    ) {
        self.backward_with_input(&cache.x, cache.rows, d_out, dx, accumulate);
    }

    /// The backward for a caller that kept the input `x` (`[rows, in_dim]`) itself (blocks
    /// whose projections share one input): adds the parameter gradients for `d_out` and
    /// writes (or, with `accumulate`, adds) `dX` into `dx`.
    pub fn backward_with_input(
        &mut self,
        x: &[f32],
        rows: usize,
        d_out: &[f32],
        dx: &mut [f32],
        accumulate: bool,
    ) {
        // A frozen parameter (no gradient buffer) gets no gradient; `dX` is still computed.
        self.backward_params(x, rows, d_out);
        let (m, k, n) = (rows, self.in_dim, self.out_dim);
        input_grad(dx, d_out, &self.weight.value, m, n, k, accumulate);
    }

    /// The parameter gradients alone (no `dX`): for a layer whose input needs no gradient,
    /// such as the first trained layer over frozen features; a third of the backward's
    /// multiply-adds.
    pub fn backward_params(&mut self, x: &[f32], rows: usize, d_out: &[f32]) {
        let (m, k, n) = (rows, self.in_dim, self.out_dim);
        assert_eq!(
            d_out.len(),
            m * n,
            "linear `{}` backward: d_out has {} values, expected rows·out = {m}·{n}",
            self.weight.name,
            d_out.len()
        );
        if !self.weight.grad.is_empty() {
            weight_grad(&mut self.weight.grad, d_out, x, m, n, k);
        }
        if let Some(b) = self.bias.as_mut().filter(|b| !b.grad.is_empty()) {
            bias_grad(&mut b.grad, d_out, n);
        }
    }
}

impl Module for Linear {
    fn params(&self) -> Vec<&Param> {
        let mut v = vec![&self.weight];
        v.extend(self.bias.as_ref());
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = vec![&mut self.weight];
        v.extend(self.bias.as_mut());
        v
    }
}

/// An embedding table `[rows, dim]` (PyTorch `nn.Embedding`).
#[derive(Clone, Debug)]
pub struct Embedding {
    /// The table, e.g. `item_embedding.weight`.
    pub weight: Param,
    /// Number of rows.
    pub rows: usize,
    /// Row width.
    pub dim: usize,
}

impl Embedding {
    /// A table named `name` with values from `N(0, std²)`.
    pub fn new(name: &str, rows: usize, dim: usize, std: f32, rng: &mut Rng) -> Embedding {
        Embedding {
            weight: Param::normal(name, &[rows, dim], std, rng),
            rows,
            dim,
        }
    }

    /// `out[i] = table[ids[i]]`, `[ids.len(), dim]`. The ids carry the cache: backward takes
    /// the same slice.
    ///
    /// # Panics
    /// If an id is not below `rows` (ids are validated by the data pipeline).
    pub fn forward(&self, ids: &[u32]) -> Vec<f32> {
        if let Some((i, &id)) = ids
            .iter()
            .enumerate()
            .find(|&(_, &id)| id as usize >= self.rows)
        {
            panic!(
                "embedding `{}`: id {id} at index {i} is not below {} rows",
                self.weight.name, self.rows
            );
        }
        let mut out = vec![0.0; ids.len() * self.dim];
        embedding::gather(&self.weight.value, self.dim, ids, &mut out);
        out
    }

    /// Scatter-adds `d_out[i]` into the gradient row `ids[i]`.
    pub fn backward(&mut self, ids: &[u32], d_out: &[f32]) {
        let d = self.dim;
        assert_eq!(
            d_out.len(),
            ids.len() * d,
            "embedding `{}` backward: d_out has {} values, expected ids·dim = {}·{d}",
            self.weight.name,
            d_out.len(),
            ids.len()
        );
        for (&id, g) in ids.iter().zip(d_out.chunks_exact(d)) {
            let r = id as usize * d;
            vector::add(&mut self.weight.grad[r..r + d], g);
        }
    }
}

impl Module for Embedding {
    fn params(&self) -> Vec<&Param> {
        vec![&self.weight]
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![&mut self.weight]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{GradCheck, assert_grad, project};
    use seqrec_kernels::cpu::linear::linear_ref;
    use seqrec_kernels::testing::assert_close;

    #[test]
    fn linear_gradients() {
        // Linear in every input, so the 4-point difference is exact up to f32 rounding of the
        // outputs, ≈ 1.5·6e-8·|y|·√30/h ≈ 1e-5 for |y| ≈ 2 at h = 2^-4: atol 3e-5, rtol 1e-4.
        let mut rng = Rng::new(10);
        let (rows, k, n) = (5, 7, 6);
        for bias in [true, false] {
            let mut lin = Linear::new("l", k, n, bias, 0.5, &mut rng);
            if let Some(b) = &mut lin.bias {
                b.init_normal(&mut rng, 0.5);
            }
            let x = rng.normal_vec(rows * k, 1.0);
            let w = rng.normal_vec(rows * n, 1.0);
            let (_, cache) = lin.forward(&x, rows);
            let dx = lin.backward(&cache, &w);
            let cfg = GradCheck::new(0.0625, 3e-5, 1e-4);
            let base = lin.clone();
            assert_grad(
                "linear dx",
                |xp| project(&base.infer(xp, rows), &w),
                &x,
                &dx,
                &cfg,
            );
            let mut probe = base.clone();
            assert_grad(
                "linear dW",
                |wp| {
                    probe.weight.value.copy_from_slice(wp);
                    project(&probe.infer(&x, rows), &w)
                },
                &base.weight.value,
                &lin.weight.grad,
                &cfg,
            );
            if let Some(b) = &lin.bias {
                let mut probe = base.clone();
                assert_grad(
                    "linear db",
                    |bp| {
                        probe.bias.as_mut().unwrap().value.copy_from_slice(bp);
                        project(&probe.infer(&x, rows), &w)
                    },
                    &b.value,
                    &b.grad,
                    &cfg,
                );
            }
        }
    }

    #[test]
    fn linear_forward_matches_the_reference_and_backward_accumulates() {
        // The fast path against the f64 reference: 1e-5·(1 + Σ|x·w|) per output, Σ|x·w| ≤ ~10.
        let mut rng = Rng::new(11);
        let (rows, k, n) = (4, 9, 5);
        let lin = Linear::new("l", k, n, true, 0.5, &mut rng);
        let x = rng.normal_vec(rows * k, 1.0);
        let mut want = vec![0.0; rows * n];
        let b = lin.bias.as_ref().unwrap();
        linear_ref(&x, &lin.weight.value, Some(&b.value), &mut want, rows, k, n);
        assert_close("linear", &lin.infer(&x, rows), &want, 1e-4, 0.0);
        // Two backward calls add up: the gradient doubles.
        let mut lin2 = lin.clone();
        let (_, cache) = lin2.forward(&x, rows);
        let d = rng.normal_vec(rows * n, 1.0);
        lin2.backward(&cache, &d);
        let once = lin2.weight.grad.clone();
        lin2.backward(&cache, &d);
        let twice: Vec<f32> = once.iter().map(|g| 2.0 * g).collect();
        assert_close("accumulated dW", &lin2.weight.grad, &twice, 1e-6, 1e-6);
    }

    #[test]
    fn embedding_scatter_adds_repeated_ids() {
        let mut rng = Rng::new(12);
        let mut emb = Embedding::new("e", 6, 3, 1.0, &mut rng);
        let ids = [2u32, 0, 2, 5];
        let y = emb.forward(&ids);
        assert_eq!(&y[..3], &emb.weight.value[6..9]);
        let d = rng.normal_vec(12, 1.0);
        emb.backward(&ids, &d);
        // Exact: each gradient row is a sum of at most two f32 values.
        let row2: Vec<f32> = (0..3).map(|c| d[c] + d[6 + c]).collect();
        assert_eq!(&emb.weight.grad[6..9], row2.as_slice());
        assert_eq!(&emb.weight.grad[3..6], &[0.0; 3]);
        assert_eq!(&emb.weight.grad[15..18], &d[9..12]);
    }

    #[test]
    #[should_panic(expected = "id 6 at index 1")]
    fn embedding_rejects_out_of_range_ids() {
        let emb = Embedding::new("e", 6, 3, 1.0, &mut Rng::new(1));
        emb.forward(&[1, 6]);
    }
}
