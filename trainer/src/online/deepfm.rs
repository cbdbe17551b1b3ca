//! DeepFM (Guo et al. 2017): the user model of the Coat environment (§8.4). Every input is a
//! set of categorical fields (user id, item id, user and item attributes), each field one
//! value of a shared feature vocabulary; the prediction is
//!
//! `y = w₀ + Σ_f w[x_f] + ½ Σ_d ((Σ_f v[x_f]_d)² − Σ_f v[x_f]_d²) + MLP([v[x_1], …, v[x_F]])`
//!
//! (first order, the factorisation machine's pairwise term, and a ReLU MLP over the
//! concatenated field embeddings, which share `v` with the FM part as the paper has it).
//! Trained with squared error on ratings; gradients derived by hand and checked against
//! finite differences.

use crate::nn::activation::{ActCache, act_backward, act_forward};
use crate::nn::linear::LinearCache;
use crate::nn::optim::{Adam, Optimizer};
use crate::nn::param::zero_grads;
use crate::nn::{Activation, Linear, Module, Param, Rng};

/// A DeepFM over `n_fields` fields of a vocabulary of `n_features` values.
#[derive(Clone, Debug)]
pub struct DeepFm {
    n_fields: usize,
    k: usize,
    w0: Param,
    w: Param,
    v: Param,
    mlp: Vec<Linear>,
}

crate::module_of_fields!(DeepFm: w0, w, v, mlp);

/// What [`DeepFm::forward`] keeps for [`DeepFm::backward`].
#[derive(Debug)]
pub struct DeepFmCache {
    x: Vec<u32>,
    rows: usize,
    /// `Σ_f v[x_f]` per row, `[rows, k]`.
    sum_v: Vec<f32>,
    layers: Vec<(LinearCache, Option<ActCache>)>,
}

impl DeepFm {
    /// A model over `n_features` feature values in `n_fields` fields, factor width `k`, MLP
    /// hidden widths `hidden`; factors from `N(0, 0.01²)`, MLP layers Glorot-uniform.
    pub fn new(
        n_features: usize,
        n_fields: usize,
        k: usize,
        hidden: &[usize],
        rng: &mut Rng,
    ) -> Self {
        let mut mlp = Vec::new();
        let mut width = n_fields * k;
        for (i, &h) in hidden.iter().chain(std::iter::once(&1)).enumerate() {
            let mut l = Linear::new(&format!("mlp.{i}"), width, h, true, 0.0, rng);
            l.weight.init_xavier_uniform(rng);
            mlp.push(l);
            width = h;
        }
        DeepFm {
            n_fields,
            k,
            w0: Param::zeros("w0", &[1]),
            w: Param::zeros("w", &[n_features]),
            v: Param::normal("v", &[n_features, k], 0.01, rng),
            mlp,
        }
    }

    /// Fields per example.
    pub fn n_fields(&self) -> usize {
        self.n_fields
    }

    /// Predictions for `x` (`[rows, n_fields]` feature ids) and the backward cache.
    ///
    /// # Panics
    /// If `x` is not a whole number of rows or holds a feature id outside the vocabulary (the
    /// environment builds the ids; a bad one is a bug).
    pub fn forward(&self, x: &[u32]) -> (Vec<f32>, DeepFmCache) {
        let (f, k) = (self.n_fields, self.k);
        assert_eq!(x.len() % f, 0, "deepfm: {} ids for {f} fields", x.len());
        let rows = x.len() / f;
        let mut y = vec![self.w0.value[0]; rows];
        let mut sum_v = vec![0.0f32; rows * k];
        let mut emb = vec![0.0f32; rows * f * k];
        for r in 0..rows {
            let mut sq = 0.0f32;
            for (j, &id) in x[r * f..(r + 1) * f].iter().enumerate() {
                let id = id as usize;
                y[r] += self.w.value[id];
                let vr = &self.v.value[id * k..(id + 1) * k];
                emb[(r * f + j) * k..(r * f + j + 1) * k].copy_from_slice(vr);
                for (s, &a) in sum_v[r * k..(r + 1) * k].iter_mut().zip(vr) {
                    *s += a;
                    sq += a * a;
                }
            }
            let s2: f32 = sum_v[r * k..(r + 1) * k].iter().map(|s| s * s).sum();
            y[r] += 0.5 * (s2 - sq);
        }
        let mut layers = Vec::with_capacity(self.mlp.len());
        let mut h = emb;
        for (i, l) in self.mlp.iter().enumerate() {
            let (mut o, lc) = l.forward(&h, rows);
            let ac = (i + 1 < self.mlp.len()).then(|| act_forward(Activation::Relu, &mut o));
            layers.push((lc, ac));
            h = o;
        }
        for (yr, d) in y.iter_mut().zip(&h) {
            *yr += d;
        }
        let cache = DeepFmCache {
            x: x.to_vec(),
            rows,
            sum_v,
            layers,
        };
        (y, cache)
    }

    /// Adds every parameter gradient for `dy` (`[rows]`).
    pub fn backward(&mut self, cache: &DeepFmCache, dy: &[f32]) {
        let (f, k, rows) = (self.n_fields, self.k, cache.rows);
        assert_eq!(
            dy.len(),
            rows,
            "deepfm backward: {} gradients for {rows} rows",
            dy.len()
        );
        // MLP, top to bottom; its input gradient lands on the field embeddings.
        let mut d = dy.to_vec();
        for (l, (lc, ac)) in self.mlp.iter_mut().zip(&cache.layers).rev() {
            if let Some(ac) = ac {
                act_backward(ac, &mut d);
            }
            d = l.backward(lc, &d);
        }
        let d_emb = d;
        self.w0.grad[0] += dy.iter().sum::<f32>();
        for r in 0..rows {
            let g = dy[r];
            for (j, &id) in cache.x[r * f..(r + 1) * f].iter().enumerate() {
                let id = id as usize;
                self.w.grad[id] += g;
                // ∂/∂v[id]_d of ½((Σv)² − Σv²) = Σv_d − v[id]_d.
                for c in 0..k {
                    let fm = cache.sum_v[r * k + c] - self.v.value[id * k + c];
                    self.v.grad[id * k + c] += g * fm + d_emb[(r * f + j) * k + c];
                }
            }
        }
    }

    /// Predictions without a cache.
    pub fn predict(&self, x: &[u32]) -> Vec<f32> {
        self.forward(x).0
    }

    /// Fits squared error on `(x, y)` examples (`x` `[n, n_fields]`), holding out a seeded
    /// tenth for early stopping (patience 5 epochs, at most `max_epochs`), Adam at `lr`,
    /// batches of 256; keeps the best held-out parameters. Returns the held-out RMSE.
    pub fn fit(&mut self, x: &[u32], y: &[f32], max_epochs: usize, lr: f32, rng: &mut Rng) -> f64 {
        let f = self.n_fields;
        let n = y.len();
        assert_eq!(
            x.len(),
            n * f,
            "deepfm fit: {} ids for {n} examples",
            x.len()
        );
        let mut order: Vec<usize> = (0..n).collect();
        shuffle(&mut order, rng);
        let n_valid = (n / 10).max(1).min(n.saturating_sub(1));
        let (valid, train) = order.split_at(n_valid);
        let gather = |idx: &[usize]| -> (Vec<u32>, Vec<f32>) {
            let mut xs = Vec::with_capacity(idx.len() * f);
            let mut ys = Vec::with_capacity(idx.len());
            for &i in idx {
                xs.extend_from_slice(&x[i * f..(i + 1) * f]);
                ys.push(y[i]);
            }
            (xs, ys)
        };
        let (vx, vy) = gather(valid);
        let rmse = |m: &DeepFm| -> f64 {
            let p = m.predict(&vx);
            let se: f64 = p
                .iter()
                .zip(&vy)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            (se / vy.len().max(1) as f64).sqrt()
        };
        let mut opt = Adam::new(0.0);
        let mut best = (rmse(self), self.clone());
        let mut since = 0;
        let mut train = train.to_vec();
        for _ in 0..max_epochs {
            shuffle(&mut train, rng);
            for chunk in train.chunks(256) {
                let (bx, by) = gather(chunk);
                let (p, cache) = self.forward(&bx);
                let scale = 2.0 / chunk.len() as f32;
                let dy: Vec<f32> = p.iter().zip(&by).map(|(a, b)| scale * (a - b)).collect();
                zero_grads(&mut self.params_mut());
                self.backward(&cache, &dy);
                opt.step(&mut self.params_mut(), lr);
            }
            let e = rmse(self);
            if e < best.0 {
                best = (e, self.clone());
                since = 0;
            } else {
                since += 1;
                if since >= 5 {
                    break;
                }
            }
        }
        *self = best.1;
        best.0
    }
}

pub(crate) use crate::learner::shuffle;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{GradCheck, assert_param_grads_piecewise, randomize, signature};

    #[test]
    fn backward_matches_finite_differences() {
        let mut rng = Rng::new(7);
        let mut m = DeepFm::new(11, 3, 4, &[5], &mut rng);
        randomize(&mut m, &mut rng, 0.5);
        let x: Vec<u32> = vec![0, 4, 9, 1, 5, 10, 2, 4, 8, 3, 6, 9];
        let w: Vec<f32> = rng.uniform_vec(4, -1.0, 1.0);
        let base = m.clone();
        let (_, cache) = m.forward(&x);
        zero_grads(&mut m.params_mut());
        m.backward(&cache, &w);
        let f = |p: &DeepFm| {
            let (y, c) = p.forward(&x);
            let relu_on: Vec<bool> = c
                .layers
                .iter()
                .filter_map(|(_, a)| a.as_ref())
                .flat_map(|a| a.input().iter().map(|&v| v > 0.0))
                .collect();
            (crate::nn::gradcheck::project(&y, &w), signature(relu_on))
        };
        let worst =
            assert_param_grads_piecewise("deepfm", &base, &m, f, &GradCheck::new(1e-2, 1e-3, 1e-3));
        assert!(worst < 1e-2, "{worst}");
    }

    #[test]
    fn fit_learns_a_pairwise_rating_rule() {
        // Rating = 1 + 3·[user parity == item parity]: an interaction only the pairwise and MLP
        // terms can express. Fields: user (0..8), item (8..16).
        let mut rng = Rng::new(3);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for u in 0..8u32 {
            for i in 0..8u32 {
                x.extend_from_slice(&[u, 8 + i]);
                y.push(if u % 2 == i % 2 { 4.0 } else { 1.0 });
            }
        }
        let mut m = DeepFm::new(16, 2, 4, &[16], &mut rng);
        let mut all = x.clone();
        let mut ys = y.clone();
        for _ in 0..63 {
            all.extend_from_slice(&x);
            ys.extend_from_slice(&y);
        }
        let rmse = m.fit(&all, &ys, 300, 1e-2, &mut rng);
        assert!(rmse < 0.3, "held-out RMSE {rmse}");
    }
}
