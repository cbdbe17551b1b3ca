//! Attribute guidance of the reverse chain (the part of thesis §9.5's guided decoding that
//! needs no language model): a logistic classifier `p(a | x) = σ(w·x + b)` over text latents
//! at the text encoder's scale steers every step towards (or away from) items that have the
//! attribute `a`, by classifier guidance on the predicted clean latent.
//!
//! At step `j` the network's ε gives `x̂_0 = √(1/ᾱ)·z − √(1/ᾱ − 1)·ε`; with the classifier read
//! at `x = x̂_0 / latent_scale` and ε held fixed, `∇_z log p(a | x) = g·w / (latent_scale·√ᾱ)`
//! where `g = 1 − σ(w·x + b)` towards the attribute and `g = −σ(w·x + b)` away from it. The
//! guided noise prediction is Dhariwal and Nichol's
//!
//! ```text
//! ε̂ = ε − s·√(1 − ᾱ)·∇_z log p(a | x) = ε − s·√(1/ᾱ − 1)·g·w / latent_scale
//! ```
//!
//! and the reverse step runs unchanged on `ε̂` (its learned variance `v` is untouched). Scale
//! `s = 0` is the unguided chain.

use crate::error::{Error, Result};
use alloc::format;

/// A logistic attribute classifier and how strongly to follow it.
#[derive(Clone, Copy, Debug)]
pub struct Guidance<'a> {
    /// `w`, `[d]`: the classifier's weights over latents at the text encoder's scale.
    pub weight: &'a [f32],
    /// `b`.
    pub bias: f32,
    /// Steer towards items with the attribute (`true`) or away from them.
    pub toward: bool,
    /// The guidance scale `s` (finite, at least 0).
    pub scale: f32,
}

impl Guidance<'_> {
    /// Checks the classifier's width against the latents' and the scale.
    pub fn check(&self, d: usize) -> Result<()> {
        if self.weight.len() != d {
            return Err(Error::InvalidArgument(format!(
                "the guidance classifier has {} weights, the model's latents are {d} wide",
                self.weight.len()
            )));
        }
        if !self.scale.is_finite() || self.scale < 0.0 || !self.bias.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "guidance scale {} and bias {}: the scale must be finite and at least 0, the bias finite",
                self.scale, self.bias
            )));
        }
        if let Some(i) = self.weight.iter().position(|w| !w.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "guidance weight {i} is {}",
                self.weight[i]
            )));
        }
        Ok(())
    }

    /// The classifier's probability of the attribute at a latent of the text encoder's scale.
    pub fn probability(&self, x: &[f32]) -> f64 {
        sigmoid(self.logit(x.iter().map(|&v| f64::from(v))))
    }

    fn logit(&self, x: impl Iterator<Item = f64>) -> f64 {
        self.weight
            .iter()
            .zip(x)
            .map(|(&w, v)| f64::from(w) * v)
            .sum::<f64>()
            + f64::from(self.bias)
    }

    /// Replaces `eps` (`[d]`, the network's ε at `z`) by the guided `ε̂` of the step whose
    /// `√(1/ᾱ)` and `√(1/ᾱ − 1)` are given; `latent_scale` is the network's.
    pub fn apply(
        &self,
        z: &[f32],
        eps: &mut [f32],
        sqrt_recip_alpha_bar: f64,
        sqrt_recipm1_alpha_bar: f64,
        latent_scale: f64,
    ) {
        if self.scale == 0.0 {
            return;
        }
        let inv = 1.0 / latent_scale;
        let x0 = z.iter().zip(eps.iter()).map(|(&z, &e)| {
            (sqrt_recip_alpha_bar * f64::from(z) - sqrt_recipm1_alpha_bar * f64::from(e)) * inv
        });
        let p = sigmoid(self.logit(x0));
        let g = if self.toward { 1.0 - p } else { -p };
        let step = f64::from(self.scale) * sqrt_recipm1_alpha_bar * g * inv;
        for (e, &w) in eps.iter_mut().zip(self.weight) {
            *e = (f64::from(*e) - step * f64::from(w)) as f32;
        }
    }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + libm::exp(-x))
    } else {
        let e = libm::exp(x);
        e / (1.0 + e)
    }
}
