//! The central finite-difference checker every backward pass is tested with.
//!
//! For a scalar function `f` of a vector `x` and a claimed gradient `g`, each checked
//! coordinate `i` is moved by `±h` and `±2h` (`h = eps`) and the fourth-order central
//! difference `fd = (8·(f(x+h) − f(x−h)) − (f(x+2h) − f(x−2h))) / (12h)` is compared with
//! `g_i`: the check passes when `|fd − g_i| ≤ atol + rtol·max(|fd|, |g_i|)` for every checked
//! coordinate. Big vectors are checked on a seeded random subset of coordinates.
//!
//! Why fourth order: the forwards under test compute in f32, so `f(x)` carries rounding noise
//! `δ` (`f` itself should accumulate in f64, e.g. a random projection `Σ_k w_k·y_k` of the
//! outputs, which makes `δ ≈ 6e-8·√outputs` for outputs of unit size). That noise enters `fd` as
//! about `1.5·δ/h`, so `h` must not be small; the truncation error is `h⁴·f⁽⁵⁾/30` instead of
//! the two-point rule's `h²·f'''/6`, so a step of a few hundredths stays accurate where the
//! two-point rule would need about 1e-3 and pay ten times the noise. Inputs must stay `2h` away
//! from kinks (ReLU, max-pool switches). The perturbed coordinates are rounded to f32; with `h`
//! a power of two the steps are exact for `|x_i| < 2^17·h`. Each test states its `eps` and
//! tolerances. `SEQREC_GRADCHECK_VERBOSE=1 cargo test -- --nocapture` prints the worst errors
//! of every check.

use super::param::Module;
use crate::error::{Error, Result};
use crate::nn::Rng;

/// Settings of one gradient check.
#[derive(Clone, Copy, Debug)]
pub struct GradCheck {
    /// Perturbation step.
    pub eps: f32,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (against the larger of the two magnitudes).
    pub rtol: f64,
    /// At most this many coordinates are checked (a seeded random subset beyond it).
    pub max_coords: usize,
    /// Seed of the subset choice.
    pub seed: u64,
}

impl GradCheck {
    /// `eps`, `atol` and `rtol` with at most 48 coordinates per vector.
    pub fn new(eps: f32, atol: f64, rtol: f64) -> GradCheck {
        GradCheck {
            eps,
            atol,
            rtol,
            max_coords: 48,
            seed: 0x5eed,
        }
    }
}

/// The worst coordinate of a passing check.
#[derive(Clone, Copy, Debug, Default)]
pub struct GradReport {
    /// Coordinates checked.
    pub checked: usize,
    /// Largest `|fd − analytic|`.
    pub max_abs_err: f64,
    /// Largest `|fd − analytic| / max(|fd|, |analytic|)` among coordinates with a gradient
    /// above `atol`.
    pub max_rel_err: f64,
    /// Coordinates skipped because their stencil left the piece of `x` (piecewise checks).
    pub skipped: usize,
}

/// The coordinates a check looks at: all of them, or `max` distinct ones drawn with `rng`.
fn coordinates(n: usize, max: usize, rng: &mut Rng) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    if n > max {
        for i in 0..max {
            let j = i + rng.below(n - i);
            idx.swap(i, j);
        }
        idx.truncate(max);
        idx.sort_unstable();
    }
    idx
}

/// A hash of whatever identifies the smooth piece a piecewise function is evaluated on (the
/// signs of every ReLU input, the argmax of every max-pool), for [`check_grad_piecewise`].
pub fn signature<T: std::hash::Hash>(parts: T) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

fn check_impl(
    what: &str,
    mut f: impl FnMut(&[f32]) -> (f64, u64),
    x: &[f32],
    analytic: &[f32],
    cfg: &GradCheck,
) -> Result<GradReport> {
    if x.len() != analytic.len() {
        return Err(Error::GradCheck(format!(
            "{what}: gradient has {} values for an input of {}",
            analytic.len(),
            x.len()
        )));
    }
    let mut rng = Rng::new(cfg.seed ^ x.len() as u64);
    let mut report = GradReport::default();
    let piece = f(x).1;
    let mut xp = x.to_vec();
    let coords = coordinates(x.len(), cfg.max_coords, &mut rng);
    for &i in &coords {
        let h = cfg.eps;
        let mut same_piece = true;
        let mut at = |k: f32| {
            xp[i] = x[i] + k * h;
            let (v, sig) = f(&xp);
            same_piece &= sig == piece;
            v
        };
        let near = at(1.0) - at(-1.0);
        let far = at(2.0) - at(-2.0);
        xp[i] = x[i];
        if !same_piece {
            report.skipped += 1;
            continue;
        }
        let fd = (8.0 * near - far) / (12.0 * h as f64);
        let an = analytic[i] as f64;
        let err = (fd - an).abs();
        let scale = fd.abs().max(an.abs());
        let pass = err <= cfg.atol + cfg.rtol * scale; // false for NaN
        if !pass {
            return Err(Error::GradCheck(format!(
                "{what}[{i}]: finite difference {fd:.7e}, analytic {an:.7e} (|err| {err:.2e} > \
                 atol {:.1e} + rtol {:.1e}·{scale:.2e}; eps {:e})",
                cfg.atol, cfg.rtol, cfg.eps
            )));
        }
        report.checked += 1;
        report.max_abs_err = report.max_abs_err.max(err);
        if scale > cfg.atol {
            report.max_rel_err = report.max_rel_err.max(err / scale);
        }
    }
    if report.skipped * 4 > coords.len() {
        return Err(Error::GradCheck(format!(
            "{what}: {} of {} coordinates have a kink within ±2·eps = ±{:e}; use a smaller eps",
            report.skipped,
            coords.len(),
            2.0 * cfg.eps
        )));
    }
    if std::env::var_os("SEQREC_GRADCHECK_VERBOSE").is_some() {
        eprintln!("gradcheck {what}: {report:?}");
    }
    Ok(report)
}

/// Compares `analytic` with finite differences of the smooth function `f` at `x` (see the
/// module docs). Returns the worst errors, or a message naming `what`, the first failing
/// coordinate and both values.
pub fn check_grad(
    what: &str,
    mut f: impl FnMut(&[f32]) -> f64,
    x: &[f32],
    analytic: &[f32],
    cfg: &GradCheck,
) -> Result<GradReport> {
    check_impl(what, |x| (f(x), 0), x, analytic, cfg)
}

/// [`check_grad`] for a piecewise-smooth `f` (ReLU, max-pool) that returns its value and a
/// [`signature`] of its piece: a coordinate whose stencil leaves the piece of `x` is skipped
/// (the difference quotient would straddle a kink), and the check fails if more than a quarter
/// of the coordinates are skipped.
pub fn check_grad_piecewise(
    what: &str,
    f: impl FnMut(&[f32]) -> (f64, u64),
    x: &[f32],
    analytic: &[f32],
    cfg: &GradCheck,
) -> Result<GradReport> {
    check_impl(what, f, x, analytic, cfg)
}

/// [`check_grad`] that panics with the failure message.
#[track_caller]
pub fn assert_grad(
    what: &str,
    f: impl FnMut(&[f32]) -> f64,
    x: &[f32],
    analytic: &[f32],
    cfg: &GradCheck,
) -> GradReport {
    check_grad(what, f, x, analytic, cfg).unwrap_or_else(|msg| panic!("{msg}"))
}

/// [`check_grad_piecewise`] that panics with the failure message.
#[track_caller]
pub fn assert_grad_piecewise(
    what: &str,
    f: impl FnMut(&[f32]) -> (f64, u64),
    x: &[f32],
    analytic: &[f32],
    cfg: &GradCheck,
) -> GradReport {
    check_grad_piecewise(what, f, x, analytic, cfg).unwrap_or_else(|msg| panic!("{msg}"))
}

/// Checks the accumulated gradient of every parameter of `trained` (a module after its
/// backward pass) against finite differences of `f`, evaluated on a copy of `base` (the
/// same module before the backward) whose one parameter is perturbed at a time. Returns the
/// worst relative error over all parameters.
#[track_caller]
pub fn assert_param_grads<M: Module + Clone>(
    what: &str,
    base: &M,
    trained: &M,
    mut f: impl FnMut(&M) -> f64,
    cfg: &GradCheck,
) -> f64 {
    assert_param_grads_piecewise(what, base, trained, |m| (f(m), 0), cfg)
}

/// [`assert_param_grads`] for a piecewise-smooth `f` (see [`check_grad_piecewise`]).
#[track_caller]
pub fn assert_param_grads_piecewise<M: Module + Clone>(
    what: &str,
    base: &M,
    trained: &M,
    mut f: impl FnMut(&M) -> (f64, u64),
    cfg: &GradCheck,
) -> f64 {
    let mut probe = base.clone();
    let n = base.params().len();
    assert_eq!(n, trained.params().len(), "{what}: parameter lists differ");
    let mut worst = 0.0f64;
    for i in 0..n {
        let (name, x) = {
            let p = base.params()[i];
            (p.name.clone(), p.value.clone())
        };
        let g = trained.params()[i].grad.clone();
        let r = check_impl(
            &format!("{what}: {name}"),
            |xp| {
                probe.params_mut()[i].value.copy_from_slice(xp);
                f(&probe)
            },
            &x,
            &g,
            cfg,
        )
        .unwrap_or_else(|msg| panic!("{msg}"));
        probe.params_mut()[i].value.copy_from_slice(&x);
        worst = worst.max(r.max_rel_err);
    }
    worst
}

/// `Σ_k w_k·y_k` in f64: the scalar a block test differentiates (its gradient with respect to
/// `y` is `w`).
pub fn project(y: &[f32], w: &[f32]) -> f64 {
    assert_eq!(
        y.len(),
        w.len(),
        "project: {} outputs, {} weights",
        y.len(),
        w.len()
    );
    y.iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Redraws every parameter of `m` for a test: values from `N(0, std²)`, except parameters
/// still at their LayerNorm-scale initialisation (all ones), which get `1 + N(0, std²)`, so
/// that biases and shifts are non-zero and every gradient path is exercised.
pub fn randomize<M: Module>(m: &mut M, rng: &mut Rng, std: f32) {
    for p in m.params_mut() {
        let ones = !p.value.is_empty() && p.value.iter().all(|&v| v == 1.0);
        for v in &mut p.value {
            *v = if ones { 1.0 } else { 0.0 } + std * rng.normal();
        }
    }
}

/// The parameters of `m` as an engine weight file (for forward-equivalence tests).
#[cfg(test)]
pub(crate) fn weight_file<M: Module>(m: &M) -> seqrec_engine::WeightFile {
    let bytes = super::param::to_safetensors(&m.params(), &[]).expect("serialize");
    seqrec_engine::WeightFile::from_bytes(&bytes).expect("reload")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_right_gradient_and_rejects_a_wrong_one() {
        // f(x) = Σ sin(x_i)·x_{i+1}, gradient derived by hand; eps 1e-2 (f64 function, so the
        // error is the truncation term ≈ eps²/6 ≈ 2e-5), atol 1e-4.
        let f = |x: &[f32]| -> f64 {
            (0..x.len() - 1)
                .map(|i| (x[i] as f64).sin() * x[i + 1] as f64)
                .sum()
        };
        let mut rng = Rng::new(3);
        let x = rng.uniform_vec(100, -1.0, 1.0);
        let mut g = vec![0.0f32; 100];
        for i in 0..99 {
            g[i] += ((x[i] as f64).cos() * x[i + 1] as f64) as f32;
            g[i + 1] += (x[i] as f64).sin() as f32;
        }
        let cfg = GradCheck::new(1e-2, 1e-4, 1e-4);
        let r = assert_grad("f", f, &x, &g, &cfg);
        assert_eq!(r.checked, 48);
        g[50] += 0.01;
        let all = GradCheck {
            max_coords: 100,
            ..cfg
        };
        let err = check_grad("f", f, &x, &g, &all).unwrap_err().to_string();
        assert!(err.starts_with("f[50]"), "{err}");
    }
}
