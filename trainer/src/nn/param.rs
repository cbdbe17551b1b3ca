//! Trainable parameters: a named `f32` tensor with its gradient, the [`Module`] trait through
//! which a block or model lists its parameters, initialisers, and the helpers that work on a
//! parameter list (zeroing gradients, the global gradient norm, saving as safetensors in the
//! tensor names the engine loads, loading values back).

use crate::nn::Rng;
use seqrec_engine::weights::serialize;
use seqrec_engine::{Error, Result, WeightFile};

/// A named tensor of trainable values and the gradient accumulated for them.
///
/// `name` is the full tensor name the engine expects in a checkpoint (RecBole's, e.g.
/// `trm_encoder.layer.0.feed_forward.dense_1.weight`); `shape` is its shape there; `value`
/// and `grad` are row-major and hold `shape.iter().product()` values each. Backward passes
/// **add** into `grad`; [`zero_grads`] clears it between steps.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Tensor name in checkpoints.
    pub name: String,
    /// Shape in checkpoints.
    pub shape: Vec<usize>,
    /// Current values, row-major.
    pub value: Vec<f32>,
    /// Accumulated gradient of the loss with respect to `value`.
    pub grad: Vec<f32>,
}

impl Param {
    /// A parameter filled with `fill`.
    pub fn full(name: impl Into<String>, shape: &[usize], fill: f32) -> Param {
        let n = shape.iter().product();
        Param {
            name: name.into(),
            shape: shape.to_vec(),
            value: vec![fill; n],
            grad: vec![0.0; n],
        }
    }

    /// A parameter of zeros.
    pub fn zeros(name: impl Into<String>, shape: &[usize]) -> Param {
        Param::full(name, shape, 0.0)
    }

    /// A parameter with the given values.
    ///
    /// # Panics
    /// If `value.len()` is not the product of `shape` (a construction bug, not user input).
    pub fn from_values(name: impl Into<String>, shape: &[usize], value: Vec<f32>) -> Param {
        let name = name.into();
        let n: usize = shape.iter().product();
        assert_eq!(
            value.len(),
            n,
            "param `{name}`: {} values for shape {shape:?} ({n} expected)",
            value.len()
        );
        Param {
            name,
            shape: shape.to_vec(),
            grad: vec![0.0; n],
            value,
        }
    }

    /// Values drawn from `N(0, std²)` (RecBole's `normal_(0, initializer_range)`).
    pub fn normal(name: impl Into<String>, shape: &[usize], std: f32, rng: &mut Rng) -> Param {
        let mut p = Param::zeros(name, shape);
        p.init_normal(rng, std);
        p
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// Whether the parameter holds no values.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }

    /// Sets the gradient to zero.
    pub fn zero_grad(&mut self) {
        self.grad.fill(0.0);
    }

    /// Redraws the values from `N(0, std²)`.
    pub fn init_normal(&mut self, rng: &mut Rng, std: f32) {
        for v in &mut self.value {
            *v = rng.normal() * std;
        }
    }

    /// Redraws the values uniformly from `[-bound, bound)`.
    pub fn init_uniform(&mut self, rng: &mut Rng, bound: f32) {
        for v in &mut self.value {
            *v = rng.uniform(-bound, bound);
        }
    }

    /// `(fan_in, fan_out)` as PyTorch computes them: for a shape `[out, in, k...]`, `in·Πk` and
    /// `out·Πk`; a 1-D shape `[n]` counts as `(n, n)`.
    pub fn fans(&self) -> (usize, usize) {
        match self.shape.as_slice() {
            [] => (1, 1),
            [n] => (*n, *n),
            [out, inp, rest @ ..] => {
                let rf: usize = rest.iter().product();
                (inp * rf, out * rf)
            }
        }
    }

    /// PyTorch's `xavier_uniform_`: uniform in `±sqrt(6 / (fan_in + fan_out))`.
    pub fn init_xavier_uniform(&mut self, rng: &mut Rng) {
        let (fi, fo) = self.fans();
        let bound = (6.0 / (fi + fo).max(1) as f64).sqrt() as f32;
        self.init_uniform(rng, bound);
    }

    /// PyTorch's `xavier_normal_`: `N(0, 2 / (fan_in + fan_out))`.
    pub fn init_xavier_normal(&mut self, rng: &mut Rng) {
        let (fi, fo) = self.fans();
        let std = (2.0 / (fi + fo).max(1) as f64).sqrt() as f32;
        self.init_normal(rng, std);
    }
}

/// Anything holding parameters: blocks, and the models assembled from them. The order of the
/// list is fixed for a given object (optimizer state is matched to it by position) and is the
/// order tensors are written to a checkpoint.
pub trait Module {
    /// The parameters, read-only.
    fn params(&self) -> Vec<&Param>;
    /// The parameters, mutable (for optimizers and gradient zeroing).
    fn params_mut(&mut self) -> Vec<&mut Param>;
}

/// Implements [`Module`] for a struct whose parameters are those of the named fields (each a
/// [`Module`]), in that order: `module_of_fields!(Mlp: fc1, fc2);`.
#[macro_export]
macro_rules! module_of_fields {
    ($ty:ty: $first:ident $(, $rest:ident)* $(,)?) => {
        impl $crate::nn::Module for $ty {
            fn params(&self) -> Vec<&$crate::nn::Param> {
                let mut v = $crate::nn::Module::params(&self.$first);
                $(v.extend($crate::nn::Module::params(&self.$rest));)*
                v
            }
            fn params_mut(&mut self) -> Vec<&mut $crate::nn::Param> {
                let mut v = $crate::nn::Module::params_mut(&mut self.$first);
                $(v.extend($crate::nn::Module::params_mut(&mut self.$rest));)*
                v
            }
        }
    };
}

impl Module for Param {
    fn params(&self) -> Vec<&Param> {
        vec![self]
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![self]
    }
}

impl<M: Module> Module for Option<M> {
    fn params(&self) -> Vec<&Param> {
        self.as_ref().map_or_else(Vec::new, Module::params)
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        self.as_mut().map_or_else(Vec::new, Module::params_mut)
    }
}

impl<M: Module> Module for Vec<M> {
    fn params(&self) -> Vec<&Param> {
        self.iter().flat_map(Module::params).collect()
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        self.iter_mut().flat_map(Module::params_mut).collect()
    }
}

/// Sets every gradient to zero.
pub fn zero_grads(params: &mut [&mut Param]) {
    for p in params {
        p.zero_grad();
    }
}

/// Sets the gradients of `dst` to the weighted sum `Σ_r w_r·∇_r` of the gradients of data-
/// parallel replicas (each with the parameter layout of `dst`), e.g. each replica's mean-loss
/// gradient weighted by its share of the mini-batch.
pub fn gather_grads<'r, M: Module + 'r>(
    dst: &mut [&mut Param],
    replicas: impl IntoIterator<Item = (&'r M, f32)>,
) {
    zero_grads(dst);
    for (r, w) in replicas {
        for (p, q) in dst.iter_mut().zip(r.params()) {
            for (g, &s) in p.grad.iter_mut().zip(&q.grad) {
                *g += s * w;
            }
        }
    }
}

/// Copies the parameter values of `src` into every replica (same layout).
pub fn sync_replicas<M: Module>(replicas: &mut [M], src: &impl Module) {
    let values = src.params();
    for r in replicas {
        for (q, p) in r.params_mut().into_iter().zip(&values) {
            q.value.copy_from_slice(&p.value);
        }
    }
}

/// The global L2 norm of all gradients, accumulated in f64.
pub fn grad_norm(params: &[&Param]) -> f64 {
    params
        .iter()
        .flat_map(|p| p.grad.iter())
        .map(|&g| g as f64 * g as f64)
        .sum::<f64>()
        .sqrt()
}

/// Total number of trainable values.
pub fn count(params: &[&Param]) -> usize {
    params.iter().map(|p| p.len()).sum()
}

/// A safetensors file image holding every parameter's values under its name and shape, with
/// `metadata` (e.g. `("seqrec.config", json)`). Fails on a duplicated name.
pub fn to_safetensors(params: &[&Param], metadata: &[(&str, &str)]) -> Result<Vec<u8>> {
    let tensors: Vec<(&str, &[usize], &[f32])> = params
        .iter()
        .map(|p| (p.name.as_str(), p.shape.as_slice(), p.value.as_slice()))
        .collect();
    serialize(&tensors, metadata)
}

/// Copies each parameter's values from the tensor of the same name in `file` (f32, f16 or
/// bf16), checking its shape and that every value is finite. Tensors of the file that no
/// parameter names are ignored. Gradients are left untouched.
pub fn load_values(params: &mut [&mut Param], file: &WeightFile) -> Result<()> {
    for p in params.iter_mut() {
        let t = file.tensor(&p.name, &p.shape)?;
        p.value.copy_from_slice(t.as_slice());
    }
    Ok(())
}

/// Fails if two parameters share a name (they would collide in a checkpoint).
pub fn check_unique_names(params: &[&Param]) -> Result<()> {
    let mut names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    match names.windows(2).find(|w| w[0] == w[1]) {
        Some(w) => Err(Error::InvalidArgument(format!(
            "parameter name `{}` is used twice",
            w[0]
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_and_shape_errors() {
        let mut rng = Rng::new(1);
        let a = Param::normal("a.weight", &[3, 2], 1.0, &mut rng);
        let b = Param::normal("b.bias", &[4], 1.0, &mut rng);
        let bytes = to_safetensors(&[&a, &b], &[("k", "v")]).unwrap();
        let file = WeightFile::from_bytes(&bytes).unwrap();
        assert_eq!(file.metadata("k"), Some("v"));
        let mut a2 = Param::zeros("a.weight", &[3, 2]);
        let mut b2 = Param::zeros("b.bias", &[4]);
        load_values(&mut [&mut a2, &mut b2], &file).unwrap();
        assert_eq!((a2.value.clone(), b2.value.clone()), (a.value, b.value));

        let mut wrong = Param::zeros("a.weight", &[2, 3]);
        let err = load_values(&mut [&mut wrong], &file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a.weight") && err.contains("[2, 3]"), "{err}");
        let mut missing = Param::zeros("c", &[1]);
        let err = load_values(&mut [&mut missing], &file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`c`"), "{err}");
        let err = check_unique_names(&[&a2, &a2]).unwrap_err().to_string();
        assert!(err.contains("a.weight"), "{err}");
    }

    #[test]
    fn initialisers_follow_pytorch_fans() {
        let mut rng = Rng::new(2);
        let mut w = Param::zeros("w", &[300, 100]);
        assert_eq!(w.fans(), (100, 300));
        w.init_xavier_uniform(&mut rng);
        let bound = (6.0f32 / 400.0).sqrt();
        assert!(w.value.iter().all(|v| v.abs() <= bound));
        // Variance of U(-b, b) is b²/3 = 2/(fan_in+fan_out): 30 000 draws give it to ~2%.
        let var = w.value.iter().map(|v| (v * v) as f64).sum::<f64>() / w.len() as f64;
        assert!((var / (2.0 / 400.0) - 1.0).abs() < 0.05, "variance {var}");
        let c = Param::zeros("c", &[8, 4, 1, 3]);
        assert_eq!(c.fans(), (12, 24));
    }

    #[test]
    fn grad_norm_in_f64() {
        let mut p = Param::zeros("p", &[2]);
        p.grad = vec![3.0, 4.0];
        let mut q = Param::zeros("q", &[1]);
        q.grad = vec![12.0];
        assert_eq!(grad_norm(&[&p, &q]), 13.0);
        zero_grads(&mut [&mut p, &mut q]);
        assert_eq!(grad_norm(&[&p, &q]), 0.0);
    }
}
