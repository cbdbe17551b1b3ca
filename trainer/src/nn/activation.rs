//! Element-wise activations (exact erf GELU, ReLU, swish, sigmoid, tanh, identity: the kernels'
//! [`Activation`]) and inverted dropout with a seeded mask.
//!
//! Forwards run the SIMD kernels of `seqrec_kernels::cpu::activation`; the caches keep the
//! pre-activation input and backward multiplies by the derivative at it:
//! GELU `Φ(x) + x·φ(x)` (`Φ` the standard normal CDF, `φ` its density), ReLU `[x > 0]`, swish
//! `σ(x)·(1 + x·(1 − σ(x)))`, sigmoid `σ(1 − σ)`, tanh `1 − tanh²`, GELU's tanh approximation
//! `½(1 + tanh u) + ½x(1 − tanh² u)·u'` with `u = √(2/π)(x + 0.044715x³)`.
//!
//! Dropout (PyTorch semantics): in training each value is kept with probability `1 − p` and
//! scaled by `1/(1 − p)`, so nothing changes at evaluation, where it is the identity. Training
//! mode is a `Some(&mut Rng)` argument; the mask is drawn from that generator, so a run with
//! the same seed draws the same masks.

use crate::nn::Rng;
use seqrec_kernels::cpu::activation::{Activation, activate, backward};

/// The derivative of `act` at `x` (the kernels' scalar reference).
pub use seqrec_kernels::cpu::activation::derivative;

/// What [`act_backward`] needs: the pre-activation values.
#[derive(Clone, Debug)]
pub struct ActCache {
    act: Activation,
    x: Vec<f32>,
}

impl ActCache {
    /// The pre-activation values the forward saw (empty for the identity).
    pub fn input(&self) -> &[f32] {
        &self.x
    }
}

/// Applies `act` to `x` in place and returns the cache (a copy of the input).
pub fn act_forward(act: Activation, x: &mut [f32]) -> ActCache {
    let cache = ActCache {
        act,
        x: if act == Activation::Identity {
            Vec::new()
        } else {
            x.to_vec()
        },
    };
    activate(act, x);
    cache
}

/// Turns the output gradient `d` into the input gradient, in place.
pub fn act_backward(cache: &ActCache, d: &mut [f32]) {
    if cache.act == Activation::Identity {
        return;
    }
    assert_eq!(
        d.len(),
        cache.x.len(),
        "{} backward: gradient has {} values, the forward had {}",
        cache.act.name(),
        d.len(),
        cache.x.len()
    );
    backward(cache.act, &cache.x, d);
}

/// Inverted dropout with drop probability `p` (PyTorch `nn.Dropout`).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Dropout {
    /// Probability of zeroing a value, in `[0, 1)`.
    pub p: f32,
}

/// The mask a dropout forward applied (empty when it was the identity).
#[derive(Clone, Debug, Default)]
pub struct DropoutCache {
    keep: Vec<bool>,
    scale: f32,
}

impl DropoutCache {
    /// Whether the forward was the identity.
    pub fn is_identity(&self) -> bool {
        self.keep.is_empty()
    }

    /// Multiplies `x` in place by the forward's mask (`1/(1 − p)` where kept, 0 where
    /// dropped): the forward applied to other values, and the backward.
    pub fn apply(&self, x: &mut [f32]) {
        if self.is_identity() {
            return;
        }
        assert_eq!(
            x.len(),
            self.keep.len(),
            "dropout mask of {} values applied to {}",
            self.keep.len(),
            x.len()
        );
        for (v, &k) in x.iter_mut().zip(&self.keep) {
            *v = if k { *v * self.scale } else { 0.0 };
        }
    }
}

impl Dropout {
    /// Dropout with probability `p`.
    ///
    /// # Panics
    /// If `p` is not in `[0, 1)` (configurations are validated before blocks are built).
    pub fn new(p: f32) -> Dropout {
        assert!(
            (0.0..1.0).contains(&p),
            "dropout probability {p} is not in [0, 1)"
        );
        Dropout { p }
    }

    /// Applies dropout to `x` in place: the identity when `rng` is `None` (evaluation) or
    /// `p == 0`; otherwise zeroes each value with probability `p` and scales the rest by
    /// `1/(1 − p)`.
    pub fn forward(&self, x: &mut [f32], rng: Option<&mut Rng>) -> DropoutCache {
        let Some(rng) = rng else {
            return DropoutCache::default();
        };
        if self.p == 0.0 {
            return DropoutCache::default();
        }
        let p = self.p as f64;
        let cache = DropoutCache {
            keep: x.iter().map(|_| rng.next_f64() >= p).collect(),
            scale: 1.0 / (1.0 - self.p),
        };
        cache.apply(x);
        cache
    }

    /// Applies the forward's mask to the gradient `d` in place.
    pub fn backward(&self, cache: &DropoutCache, d: &mut [f32]) {
        cache.apply(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{GradCheck, assert_grad, project};

    const ALL: [Activation; 7] = [
        Activation::Gelu,
        Activation::Relu,
        Activation::Silu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Identity,
        Activation::GeluTanh,
    ];

    #[test]
    fn activation_gradients() {
        // eps 2^-6 on inputs kept at least 0.05 away from ReLU's kink (the stencil reaches
        // ±2h = ±0.031); outputs are O(1), so f32 rounding contributes ≈ 1.5·6e-8·√64/h
        // ≈ 5e-5 at worst, the truncation term h⁴·f⁽⁵⁾/30 < 1e-8: atol 1e-4, rtol 1e-3.
        let mut rng = Rng::new(20);
        let x: Vec<f32> = rng
            .uniform_vec(64, -3.0, 3.0)
            .into_iter()
            .map(|v| if v.abs() < 0.05 { v + 0.1 } else { v })
            .collect();
        let w = rng.normal_vec(64, 1.0);
        for act in ALL {
            let mut y = x.clone();
            let cache = act_forward(act, &mut y);
            let mut d = w.clone();
            act_backward(&cache, &mut d);
            let f = |xp: &[f32]| {
                let mut y = xp.to_vec();
                activate(act, &mut y);
                project(&y, &w)
            };
            let cfg = GradCheck {
                max_coords: 64,
                ..GradCheck::new(0.015625, 1e-4, 1e-3)
            };
            assert_grad(act.name(), f, &x, &d, &cfg);
        }
    }

    #[test]
    fn gelu_is_the_erf_form() {
        // The tanh approximation differs by up to ~5e-4 near |x| ≈ 2; the erf form matches
        // the scalar formula to the SIMD tolerance 1e-6.
        let mut x = vec![-2.0f32, -0.5, 0.0, 0.7, 2.0];
        let want: Vec<f32> = x
            .iter()
            .map(|&v| seqrec_kernels::cpu::math::gelu(v))
            .collect();
        act_forward(Activation::Gelu, &mut x);
        seqrec_kernels::testing::assert_close("gelu", &x, &want, 1e-6, 1e-6);
    }

    #[test]
    fn dropout_is_inverted_seeded_and_identity_at_eval() {
        let drop = Dropout::new(0.25);
        let x = vec![1.0f32; 10_000];
        let mut eval = x.clone();
        drop.forward(&mut eval, None);
        assert_eq!(eval, x);

        let (mut a, mut b) = (x.clone(), x.clone());
        let ca = drop.forward(&mut a, Some(&mut Rng::new(7)));
        drop.forward(&mut b, Some(&mut Rng::new(7)));
        assert_eq!(a, b, "same seed, same mask");
        assert!(a.iter().all(|&v| v == 0.0 || v == 1.0 / 0.75));
        // The kept fraction of 10 000 Bernoulli(0.75) draws is within 0.02 of 0.75 (5 sd).
        let kept = a.iter().filter(|&&v| v != 0.0).count() as f64 / 1e4;
        assert!((kept - 0.75).abs() < 0.02, "kept {kept}");

        // The backward applies the same mask: d(Σ w·y)/dx = w·mask.
        let w: Vec<f32> = (0..10_000).map(|i| (i % 7) as f32).collect();
        let mut d = w.clone();
        drop.backward(&ca, &mut d);
        for i in 0..10_000 {
            assert_eq!(d[i], w[i] * a[i]);
        }
    }
}
