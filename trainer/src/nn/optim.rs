//! Optimizers (SGD with optional momentum, Adam, AdamW), global gradient-norm clipping and
//! learning-rate schedules (linear warm-up, then constant, linear or cosine decay).
//!
//! Semantics are PyTorch's, step by step:
//! - [`Sgd`]: `g ← g + λθ` (L2 weight decay, if any); with momentum `μ`:
//!   `b ← μb + g` (`b = g` on the first step), `g ← b` (or `g + μb` for Nesterov); `θ ← θ − lr·g`.
//! - [`Adam`]: `g ← g + λθ` (coupled L2, `torch.optim.Adam`'s `weight_decay`), or for AdamW
//!   `θ ← θ·(1 − lr·λ)` first (decoupled, `torch.optim.AdamW`); then `m ← β1·m + (1−β1)g`,
//!   `v ← β2·v + (1−β2)g²`, `θ ← θ − lr·(m / (1−β1^t)) / (sqrt(v / (1−β2^t)) + eps)`.
//! - [`clip_grad_norm`]: `torch.nn.utils.clip_grad_norm_`: if the global L2 norm exceeds
//!   `max_norm`, every gradient is scaled by `max_norm / (norm + 1e-6)`.
//!
//! An optimizer keeps one state slot per parameter, matched by position in the list it is
//! given (see [`super::param::Module::params_mut`]); the list must not change between steps
//! (checked by name and size). State updates run in f32 as PyTorch's do.

use super::param::{Param, grad_norm};

/// A rule that updates parameters from their gradients.
pub trait Optimizer {
    /// Applies one update with learning rate `lr` to `params` (gradients are read, not
    /// cleared).
    ///
    /// # Panics
    /// If `params` is not the list (names and sizes, in order) of the first step.
    fn step(&mut self, params: &mut [&mut Param], lr: f32);
    /// Number of steps taken.
    fn steps(&self) -> u64;
}

/// One parameter's Adam moments as [`Adam::state`] lends them: its name, `m` and `v`.
pub type Moments<'a> = (&'a str, &'a [f32], &'a [f32]);

/// Per-parameter state buffers, bound to the parameter list on first use.
#[derive(Clone, Debug, Default)]
struct Slots {
    names: Vec<(String, usize)>,
    bufs: Vec<Vec<Vec<f32>>>,
}

impl Slots {
    /// The state buffers (`per_param` of them, zero-initialised) of every parameter.
    #[track_caller]
    fn bind(
        &mut self,
        what: &str,
        params: &[&mut Param],
        per_param: usize,
    ) -> &mut [Vec<Vec<f32>>] {
        if self.names.is_empty() && self.bufs.is_empty() {
            self.names = params.iter().map(|p| (p.name.clone(), p.len())).collect();
            self.bufs = params
                .iter()
                .map(|p| vec![vec![0.0; p.len()]; per_param])
                .collect();
        } else {
            assert_eq!(
                params.len(),
                self.names.len(),
                "{what}: {} parameters given, the optimizer was set up for {}",
                params.len(),
                self.names.len()
            );
            for (p, (name, len)) in params.iter().zip(&self.names) {
                assert!(
                    p.name == *name && p.len() == *len,
                    "{what}: parameter `{}` ({} values) where `{name}` ({len} values) was",
                    p.name,
                    p.len()
                );
            }
        }
        &mut self.bufs
    }
}

/// Stochastic gradient descent, optionally with momentum and L2 weight decay.
#[derive(Clone, Debug)]
pub struct Sgd {
    /// Momentum factor `μ` (0: plain SGD).
    pub momentum: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 penalty `λ` added to the gradient.
    pub weight_decay: f32,
    slots: Slots,
    t: u64,
}

impl Sgd {
    /// SGD with momentum `momentum` (0 for none) and no weight decay.
    pub fn new(momentum: f32) -> Sgd {
        Sgd {
            momentum,
            nesterov: false,
            weight_decay: 0.0,
            slots: Slots::default(),
            t: 0,
        }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &mut [&mut Param], lr: f32) {
        let (mu, wd, first) = (self.momentum, self.weight_decay, self.t == 0);
        let n_state = usize::from(mu != 0.0);
        let slots = self.slots.bind("sgd", params, n_state);
        for (p, state) in params.iter_mut().zip(slots.iter_mut()) {
            let Some(buf) = state.first_mut() else {
                for (theta, &g) in p.value.iter_mut().zip(&p.grad) {
                    *theta -= lr * (g + wd * *theta);
                }
                continue;
            };
            // On the first step the buffer is the gradient itself (PyTorch).
            let keep = if first { 0.0 } else { mu };
            for ((theta, &g), b) in p.value.iter_mut().zip(&p.grad).zip(buf) {
                let g = g + wd * *theta;
                *b = keep * *b + g;
                let step = if self.nesterov { g + mu * *b } else { *b };
                *theta -= lr * step;
            }
        }
        self.t += 1;
    }

    fn steps(&self) -> u64 {
        self.t
    }
}

/// Adam, with coupled L2 weight decay (Adam) or decoupled weight decay (AdamW).
#[derive(Clone, Debug)]
pub struct Adam {
    /// `β1`.
    pub beta1: f32,
    /// `β2`.
    pub beta2: f32,
    /// `eps`, added to `sqrt(v̂)`.
    pub eps: f32,
    /// Weight decay `λ`.
    pub weight_decay: f32,
    /// AdamW: decay the weights directly (`θ ← θ·(1 − lr·λ)`) instead of adding `λθ` to the
    /// gradient.
    pub decoupled: bool,
    slots: Slots,
    t: u64,
}

impl Adam {
    /// Adam with PyTorch's defaults (`β = (0.9, 0.999)`, `eps = 1e-8`) and L2 weight decay
    /// `weight_decay` (RecBole's `weight_decay`, 0 by default).
    pub fn new(weight_decay: f32) -> Adam {
        Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            decoupled: false,
            slots: Slots::default(),
            t: 0,
        }
    }

    /// The step count and every parameter's moments `(name, m, v)`, in the order of the
    /// parameter list (none before the first step): what a resumed run needs besides the
    /// weights ([`Adam::restore`]).
    pub fn state(&self) -> (u64, Vec<Moments<'_>>) {
        let entries = self
            .slots
            .names
            .iter()
            .zip(&self.slots.bufs)
            .map(|((name, _), bufs)| (name.as_str(), bufs[0].as_slice(), bufs[1].as_slice()))
            .collect();
        (self.t, entries)
    }

    /// Continues from a [`Adam::state`]: the step count `t` and the moments `(name, m, v)` of
    /// each parameter, in order. The parameter list of the next step must match them (names
    /// and lengths, checked there as for any step).
    ///
    /// # Errors
    /// An entry whose `m` and `v` differ in length.
    pub fn restore(
        &mut self,
        t: u64,
        entries: Vec<(String, Vec<f32>, Vec<f32>)>,
    ) -> crate::Result<()> {
        if let Some((name, m, v)) = entries.iter().find(|(_, m, v)| m.len() != v.len()) {
            return Err(crate::Error::Invalid(format!(
                "Adam state of `{name}`: first moment has {} values, second {}",
                m.len(),
                v.len()
            )));
        }
        self.slots.names = entries
            .iter()
            .map(|(n, m, _)| (n.clone(), m.len()))
            .collect();
        self.slots.bufs = entries.into_iter().map(|(_, m, v)| vec![m, v]).collect();
        self.t = t;
        Ok(())
    }

    /// AdamW with PyTorch's defaults and decoupled weight decay `weight_decay` (PyTorch's
    /// default is 0.01).
    pub fn adamw(weight_decay: f32) -> Adam {
        Adam {
            decoupled: true,
            ..Adam::new(weight_decay)
        }
    }

    /// The trainers' optimizer: AdamW with decoupled decay `weight_decay` when it is positive,
    /// plain Adam otherwise.
    pub fn decoupled_or_plain(weight_decay: f32) -> Adam {
        if weight_decay > 0.0 {
            Adam::adamw(weight_decay)
        } else {
            Adam::new(0.0)
        }
    }
}

impl Optimizer for Adam {
    fn step(&mut self, params: &mut [&mut Param], lr: f32) {
        self.t += 1;
        let (b1, b2, eps, wd) = (self.beta1, self.beta2, self.eps, self.weight_decay);
        let bc1 = 1.0 - (b1 as f64).powi(self.t.min(i32::MAX as u64) as i32);
        let bc2 = 1.0 - (b2 as f64).powi(self.t.min(i32::MAX as u64) as i32);
        let step = (lr as f64 / bc1) as f32;
        let sqrt_bc2 = bc2.sqrt() as f32;
        let slots = self
            .slots
            .bind(if self.decoupled { "adamw" } else { "adam" }, params, 2);
        for (p, state) in params.iter_mut().zip(slots.iter_mut()) {
            let [m, v] = state.as_mut_slice() else {
                unreachable!("adam binds two state buffers per parameter")
            };
            // Decoupled decay scales θ first; coupled decay adds λθ to the gradient.
            let (shrink, l2) = if self.decoupled {
                (1.0 - lr * wd, 0.0)
            } else {
                (1.0, wd)
            };
            // Zipped iterators (no indexing) so that the loop vectorises.
            for (((theta, &g), m), v) in p.value.iter_mut().zip(&p.grad).zip(m).zip(v) {
                *theta *= shrink;
                let g = g + l2 * *theta;
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *theta -= step * *m / (v.sqrt() / sqrt_bc2 + eps);
            }
        }
    }

    fn steps(&self) -> u64 {
        self.t
    }
}

/// Scales all gradients so that their global L2 norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(params: &mut [&mut Param], max_norm: f32) -> f64 {
    let norm = {
        let view: Vec<&Param> = params.iter().map(|p| &**p).collect();
        grad_norm(&view)
    };
    if norm > max_norm as f64 {
        let scale = (max_norm as f64 / (norm + 1e-6)) as f32;
        for p in params.iter_mut() {
            for g in &mut p.grad {
                *g *= scale;
            }
        }
    }
    norm
}

/// What follows the warm-up.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Decay {
    /// Stay at the base rate.
    Constant,
    /// Linear from the base rate to `min_lr` at `total` steps.
    Linear,
    /// Half a cosine from the base rate to `min_lr` at `total` steps.
    Cosine,
}

/// Learning rate as a function of the step (0-based): linear warm-up over `warmup` steps
/// (`base·(step+1)/warmup`), then `decay` until `total` steps (and `min_lr` after them).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Schedule {
    /// Peak learning rate.
    pub base: f32,
    /// Warm-up steps (0: none).
    pub warmup: u64,
    /// Total steps, the end of the decay.
    pub total: u64,
    /// Shape after the warm-up.
    pub decay: Decay,
    /// Floor of the decay.
    pub min_lr: f32,
}

impl Schedule {
    /// A constant rate.
    pub fn constant(lr: f32) -> Schedule {
        Schedule {
            base: lr,
            warmup: 0,
            total: 0,
            decay: Decay::Constant,
            min_lr: 0.0,
        }
    }

    /// The rate at `step`.
    pub fn lr(&self, step: u64) -> f32 {
        if step < self.warmup {
            return (self.base as f64 * (step + 1) as f64 / self.warmup as f64) as f32;
        }
        let span = self.total.saturating_sub(self.warmup);
        if self.decay == Decay::Constant {
            return self.base;
        }
        if span == 0 || step >= self.total {
            return self.min_lr;
        }
        let progress = (step - self.warmup) as f64 / span as f64;
        let factor = match self.decay {
            Decay::Linear => 1.0 - progress,
            Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            Decay::Constant => 1.0,
        };
        (self.min_lr as f64 + (self.base - self.min_lr) as f64 * factor) as f32
    }
}

#[cfg(test)]
mod tests;
