//! LoRA adapters on the text encoder's attention projections ([`super::FineTune::Lora`]).
//!
//! # Form
//!
//! For each adapted layer and each target projection (query and value by default; key may be
//! added), the projection `y = W x + b` becomes `y = W x + b + s·B(A x)` with
//! `A` `[rank, in]`, `B` `[out, rank]` and the scale `s = alpha / rank` (PEFT's default
//! scaling). `W` and `b` stay frozen; only `A` and `B` train. Defaults ([`Lora::default`]):
//! rank 8, alpha 16 (`s` = 2), query and value of every layer.
//!
//! Initialisation as PEFT's: `A` from `kaiming_uniform_(a = √5)`, i.e. uniform in
//! `±1/√in`, and `B = 0`, so an untrained adapter adds exactly zero and the encoder's output is
//! the base model's, bit for bit.
//!
//! # Backward
//!
//! With `u = A x` (cached) and `g` the gradient of the projection's output (which
//! [`crate::nn::attention::SelfAttention::backward_qkv`] returns):
//! `dB += s·gᵀ u`, `du = s·g B`, `dA += duᵀ x`, `dx += du A` (beside the frozen
//! projection's own `dx += g W`). Below the top adapted layer the gradient must reach the
//! lower adapters through every layer above them, so the backward runs through all layers from
//! the lowest adapted one up, computing input gradients only: their frozen tensors hold no
//! gradient buffer and receive nothing (see [`crate::nn::linear::Linear::backward_with_input`]
//! and [`crate::nn::norm::LayerNorm::backward`]).
//!
//! # Cost
//!
//! Memory: every layer from the lowest adapted one up keeps the activations of a trained layer
//! (the parent module's `8·H + 2·I + heads·len` floats per token), and each adapter adds its
//! `u = A x`: **`rank` floats per token per adapted projection**, 16 per token and layer with
//! the defaults (0.25 % of MiniLM's 6144 + 12·len). The trained tensors are
//! `rank·(in + out)` floats per adapter: 12,288 per MiniLM layer with the defaults, 74k for its
//! six layers (a delta of about 300 KB, against 90 MB for the model). Compute: an adapter adds
//! `2·rank·H` multiply-adds per token to its projection's forward (`H²`), about 2·8/384 ≈ 4 %
//! of it for MiniLM, and twice that in the backward. The frozen layers' backward skips their
//! weight gradients, half of their linear layers' backward products: a LoRA step costs about
//! a forward and 1.5 forwards' worth of backward over the layers from the lowest adapted up,
//! against a forward and two for full fine-tuning of those layers.
//!
//! # Names and merging
//!
//! An adapter's tensors are named after the projection they adapt, as PEFT names them:
//! `encoder.layer.{i}.attention.self.query.lora_A.weight` (`[rank, H]`) and
//! `….lora_B.weight` (`[H, rank]`), under the base's prefix (`bert.` for some exports; PEFT's
//! own files add `base_model.model.` in front). A delta checkpoint
//! ([`super::encoder`]) holds exactly these and the setting [`Lora::name`].
//! [`super::BertEncoder::merged`] folds the adapters into the weights,
//! `W' = W + s·B·A`, for serving with the engine: the same function, without the adapters'
//! cost (equal up to float rounding).

use super::super::attention::SelfAttention;
use super::super::linear::Linear;
use super::super::param::{Module, Param};
use crate::error::{Error, Result};
use crate::nn::Rng;
use seqrec_kernels::cpu::linear::matmul;
use seqrec_kernels::cpu::vector;

/// The attention projections an adapter may target, in [`LoraTargets`] order.
pub const PROJECTIONS: [&str; 3] = ["query", "key", "value"];

/// Which of the attention's query, key and value projections get adapters.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LoraTargets(pub [bool; 3]);

impl LoraTargets {
    /// Query and value (the LoRA paper's and PEFT's BERT default).
    pub const QUERY_VALUE: LoraTargets = LoraTargets([true, false, true]);

    /// `query+value` etc. (the form in [`Lora::name`]).
    pub fn name(self) -> String {
        let on: Vec<&str> = PROJECTIONS
            .iter()
            .zip(self.0)
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect();
        on.join("+")
    }

    /// Parses [`Self::name`]'s form.
    pub fn parse(s: &str) -> Result<LoraTargets> {
        let mut t = [false; 3];
        for part in s.split('+') {
            let i = PROJECTIONS.iter().position(|p| *p == part).ok_or_else(|| {
                Error::Invalid(format!(
                    "LoRA target `{part}` is not one of query, key, value"
                ))
            })?;
            t[i] = true;
        }
        Ok(LoraTargets(t))
    }
}

/// A LoRA setting: rank, alpha, targets and the adapted layers.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Lora {
    /// Rank `r` of `B·A` (≥ 1).
    pub rank: usize,
    /// `alpha`: the update is scaled by `alpha / rank` (finite, > 0).
    pub alpha: f32,
    /// The adapted projections (at least one).
    pub targets: LoraTargets,
    /// The top `n` layers (`Some(n)`, `n` in `1..=num_hidden_layers`) or every layer (`None`).
    pub layers: Option<usize>,
}

impl Default for Lora {
    /// Rank 8, alpha 16, query and value of every layer.
    fn default() -> Lora {
        Lora {
            rank: 8,
            alpha: 16.0,
            targets: LoraTargets::QUERY_VALUE,
            layers: None,
        }
    }
}

impl Lora {
    /// The update's scale `alpha / rank`.
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }

    /// `lora:rank=8,alpha=16,targets=query+value,layers=all` (`layers=top:N` for the top `N`).
    pub fn name(&self) -> String {
        let layers = self.layers.map_or("all".into(), |n| format!("top:{n}"));
        format!(
            "lora:rank={},alpha={},targets={},layers={layers}",
            self.rank,
            self.alpha,
            self.targets.name()
        )
    }

    /// Parses `lora` (the defaults) or `lora:` followed by any of [`Self::name`]'s
    /// comma-separated `key=value` fields (the others keep their defaults).
    pub fn parse(s: &str) -> Result<Lora> {
        let mut l = Lora::default();
        let Some(fields) = s.strip_prefix("lora:") else {
            return if s == "lora" {
                Ok(l)
            } else {
                Err(Error::Invalid(format!("`{s}` is not a LoRA setting")))
            };
        };
        let bad = |f: &str| {
            Error::Invalid(format!(
                "LoRA field `{f}` in `{s}` is not one of rank=N, alpha=X, \
                 targets=query+value, layers=all|top:N"
            ))
        };
        for f in fields.split(',') {
            let (k, v) = f.split_once('=').ok_or_else(|| bad(f))?;
            match k {
                "rank" => l.rank = v.parse().map_err(|_| bad(f))?,
                "alpha" => l.alpha = v.parse().map_err(|_| bad(f))?,
                "targets" => l.targets = LoraTargets::parse(v)?,
                "layers" if v == "all" => l.layers = None,
                "layers" => {
                    let n = v.strip_prefix("top:").and_then(|n| n.parse().ok());
                    l.layers = Some(n.ok_or_else(|| bad(f))?);
                }
                _ => return Err(bad(f)),
            }
        }
        Ok(l)
    }

    /// Checks the setting for an encoder of `num_layers` layers.
    pub fn validate(&self, num_layers: usize) -> Result<()> {
        let bad = |what: String| Err(Error::Invalid(format!("LoRA {}: {what}", self.name())));
        if self.rank == 0 {
            return bad("the rank must be at least 1".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return bad(format!("alpha {} is not a positive number", self.alpha));
        }
        if self.targets.0 == [false; 3] {
            return bad("no target projection".into());
        }
        match self.layers {
            Some(n) if n == 0 || n > num_layers => bad(format!(
                "cannot adapt the top {n} layers: the text encoder has {num_layers}"
            )),
            _ => Ok(()),
        }
    }
}

/// One adapter: the term `s·B(A x)` added to a projection's output.
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    /// `{projection}.lora_A.weight`, `[rank, in]`.
    pub a: Linear,
    /// `{projection}.lora_B.weight`, `[out, rank]`.
    pub b: Linear,
    /// `alpha / rank`.
    pub scale: f32,
}

crate::module_of_fields!(LoraAdapter: a, b);

impl LoraAdapter {
    /// An adapter of `proj` (named after its weight) with PEFT's initialisation: `A` uniform
    /// in `±1/√in`, `B = 0`.
    pub fn new(proj: &Linear, cfg: &Lora, rng: &mut Rng) -> LoraAdapter {
        let base = proj
            .weight
            .name
            .strip_suffix(".weight")
            .unwrap_or(&proj.weight.name);
        let (i, o, r) = (proj.in_dim, proj.out_dim, cfg.rank);
        let mut a = Linear {
            weight: Param::zeros(format!("{base}.lora_A.weight"), &[r, i]),
            bias: None,
            in_dim: i,
            out_dim: r,
        };
        a.weight.init_uniform(rng, 1.0 / (i.max(1) as f32).sqrt());
        let b = Linear {
            weight: Param::zeros(format!("{base}.lora_B.weight"), &[o, r]),
            bias: None,
            in_dim: r,
            out_dim: o,
        };
        LoraAdapter {
            a,
            b,
            scale: cfg.scale(),
        }
    }

    /// `(s·B(A x), A x)` for `rows` rows of `x`: the term and the cache of the backward.
    pub fn forward(&self, x: &[f32], rows: usize) -> (Vec<f32>, Vec<f32>) {
        let u = self.a.infer(x, rows);
        let mut y = self.b.infer(&u, rows);
        vector::scale(&mut y, self.scale);
        (y, u)
    }

    /// Adds `dA`, `dB` for the term's gradient `g` and adds `du·A` into `dx` (see the module
    /// docs); `x` and `u` are the forward's input and cache.
    pub fn backward(&mut self, x: &[f32], u: &[f32], rows: usize, g: &[f32], dx: &mut [f32]) {
        let mut sg = g.to_vec();
        vector::scale(&mut sg, self.scale);
        let mut du = vec![0.0; rows * self.a.out_dim];
        self.b.backward_with_input(u, rows, &sg, &mut du, false);
        self.a.backward_with_input(x, rows, &du, dx, true);
    }

    /// Adds `s·B·A` to `proj`'s weight.
    pub fn merge_into(&self, proj: &mut Linear) {
        let (o, r, i) = (self.b.out_dim, self.a.out_dim, self.a.in_dim);
        let mut ba = vec![0.0; o * i];
        matmul(
            &self.b.weight.value,
            &self.a.weight.value,
            &mut ba,
            o,
            r,
            i,
            false,
        );
        vector::axpy(self.scale, &ba, &mut proj.weight.value);
    }
}

/// The adapters of one layer, by projection ([`PROJECTIONS`] order).
#[derive(Clone, Debug)]
pub struct LayerAdapters(pub [Option<LoraAdapter>; 3]);

/// What [`LayerAdapters::backward`] needs: each adapter's `A x` (`[rows, rank]`).
#[derive(Clone, Debug)]
pub struct LayerAdaptersCache {
    u: [Vec<f32>; 3],
}

impl LayerAdaptersCache {
    /// Floats held.
    pub fn floats(&self) -> usize {
        self.u.iter().map(Vec::len).sum()
    }
}

fn projections(att: &SelfAttention) -> [&Linear; 3] {
    [&att.query, &att.key, &att.value]
}

impl LayerAdapters {
    /// Fresh adapters for `cfg`'s targets of `att`.
    pub fn new(att: &SelfAttention, cfg: &Lora, rng: &mut Rng) -> LayerAdapters {
        let mut out = [None, None, None];
        for ((slot, proj), on) in out.iter_mut().zip(projections(att)).zip(cfg.targets.0) {
            if on {
                *slot = Some(LoraAdapter::new(proj, cfg, rng));
            }
        }
        LayerAdapters(out)
    }

    /// The terms added to the query, key and value projections of the attention over `x`
    /// (`[rows, H]`), and the cache.
    pub fn forward(&self, x: &[f32], rows: usize) -> ([Option<Vec<f32>>; 3], LayerAdaptersCache) {
        let mut u: [Vec<f32>; 3] = Default::default();
        let terms = [0, 1, 2].map(|p| {
            self.0[p].as_ref().map(|a| {
                let (y, up) = a.forward(x, rows);
                u[p] = up;
                y
            })
        });
        (terms, LayerAdaptersCache { u })
    }

    /// Adds the adapters' gradients for the projections' output gradients `d_qkv` and their
    /// input gradient into `dx`; `x` is the attention's input.
    pub fn backward(
        &mut self,
        x: &[f32],
        rows: usize,
        cache: &LayerAdaptersCache,
        d_qkv: &[Vec<f32>; 3],
        dx: &mut [f32],
    ) {
        for ((a, u), g) in self.0.iter_mut().zip(&cache.u).zip(d_qkv) {
            if let Some(a) = a {
                a.backward(x, u, rows, g, dx);
            }
        }
    }

    /// Folds every adapter into its projection of `att` (see the module docs).
    pub fn merge_into(&self, att: &mut SelfAttention) {
        let projs = [&mut att.query, &mut att.key, &mut att.value];
        for (a, proj) in self.0.iter().zip(projs) {
            if let Some(a) = a {
                a.merge_into(proj);
            }
        }
    }
}

impl Module for LayerAdapters {
    fn params(&self) -> Vec<&Param> {
        self.0.iter().flatten().flat_map(Module::params).collect()
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        self.0
            .iter_mut()
            .flatten()
            .flat_map(Module::params_mut)
            .collect()
    }
}

#[cfg(test)]
mod tests;
