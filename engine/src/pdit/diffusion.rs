//! The Gaussian diffusion of PDiT (`spec/pdit.md` §4): the linear β schedule and its derived
//! constants in f64, DiT/IDDPM respacing, the forward process, the model's reverse-step
//! Gaussian from its outputs `(ε, v)`, and the hybrid loss `L_simple + L_vlb` with its
//! gradients with respect to the outputs. Steps `j` are 1-based (`1 ..= T'`).

use super::config::PditConfig;
use crate::backend::DdpmStep;
use crate::error::{Error, Result};
use alloc::format;
use alloc::vec::Vec;

/// Per-step constants of a chain of `T'` steps (arrays indexed by `j − 1`).
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// β_j.
    pub betas: Vec<f64>,
    /// ᾱ_j = Π_{s ≤ j} (1 − β_s).
    pub alpha_bar: Vec<f64>,
    /// ᾱ_{j−1} (1 at j = 1).
    pub alpha_bar_prev: Vec<f64>,
    /// β̃_j = β_j·(1 − ᾱ_{j−1})/(1 − ᾱ_j).
    pub posterior_variance: Vec<f64>,
    /// log β̃_j, with log β̃_1 := log β̃_2 (DiT's clipped log-variance).
    pub posterior_log_variance_clipped: Vec<f64>,
    /// c1_j = β_j·√ᾱ_{j−1}/(1 − ᾱ_j).
    pub posterior_mean_coef1: Vec<f64>,
    /// c2_j = (1 − ᾱ_{j−1})·√α_j/(1 − ᾱ_j).
    pub posterior_mean_coef2: Vec<f64>,
    /// β_j/√(1 − ᾱ_j).
    pub eps_coef: Vec<f64>,
    /// 1/√α_j.
    pub inv_sqrt_alpha: Vec<f64>,
    /// The original-chain t (1-based) the network gets at step j.
    pub model_t: Vec<usize>,
}

impl Schedule {
    /// The chain of β's `betas` (each in `(0, 1)`, at least 2), the network fed `model_t[j−1]`
    /// at step `j`.
    pub fn new(betas: Vec<f64>, model_t: Vec<usize>) -> Result<Schedule> {
        if betas.len() < 2
            || model_t.len() != betas.len()
            || betas.iter().any(|&b| !(b > 0.0 && b < 1.0))
        {
            return Err(Error::InvalidArgument(format!(
                "a diffusion chain needs at least 2 betas in (0, 1), one network step each \
                 ({} betas, {} steps)",
                betas.len(),
                model_t.len()
            )));
        }
        let t = betas.len();
        let mut alpha_bar = Vec::with_capacity(t);
        let mut acc = 1.0f64;
        for &b in &betas {
            acc *= 1.0 - b;
            alpha_bar.push(acc);
        }
        let alpha_bar_prev: Vec<f64> = core::iter::once(1.0)
            .chain(alpha_bar[..t - 1].iter().copied())
            .collect();
        let mut s = Schedule {
            posterior_variance: Vec::with_capacity(t),
            posterior_log_variance_clipped: Vec::with_capacity(t),
            posterior_mean_coef1: Vec::with_capacity(t),
            posterior_mean_coef2: Vec::with_capacity(t),
            eps_coef: Vec::with_capacity(t),
            inv_sqrt_alpha: Vec::with_capacity(t),
            betas,
            alpha_bar,
            alpha_bar_prev,
            model_t,
        };
        for i in 0..t {
            let (b, ab, abp) = (s.betas[i], s.alpha_bar[i], s.alpha_bar_prev[i]);
            s.posterior_variance.push(b * (1.0 - abp) / (1.0 - ab));
            s.posterior_mean_coef1
                .push(b * libm::sqrt(abp) / (1.0 - ab));
            s.posterior_mean_coef2
                .push((1.0 - abp) * libm::sqrt(1.0 - b) / (1.0 - ab));
            s.eps_coef.push(b / libm::sqrt(1.0 - ab));
            s.inv_sqrt_alpha.push(1.0 / libm::sqrt(1.0 - b));
        }
        let v1 = s.posterior_variance[1];
        s.posterior_log_variance_clipped = core::iter::once(v1)
            .chain(s.posterior_variance[1..].iter().copied())
            .map(libm::log)
            .collect();
        Ok(s)
    }

    /// The base chain: `T` betas from `beta_start` to `beta_end` (numpy's `linspace`), the
    /// network fed `t = j`.
    pub fn linear(cfg: &PditConfig) -> Schedule {
        let t = cfg.timesteps;
        let (a, b) = (cfg.beta_start, cfg.beta_end);
        let step = (b - a) / (t - 1) as f64;
        // numpy.linspace: start + i·step, the last point exactly `stop`.
        let betas = (0..t)
            .map(|i| if i + 1 == t { b } else { a + i as f64 * step })
            .collect();
        Schedule::new(betas, (1..=t).collect()).expect("a checked config gives a valid chain")
    }

    /// The base chain respaced to `count` steps (DiT's `space_timesteps` with one section):
    /// `β′_j = 1 − ᾱ[S_j]/ᾱ[S_{j−1}]`, the network fed the original `t = S_j + 1`.
    ///
    /// # Errors
    /// When `count` is outside `2..=T`.
    pub fn respaced(cfg: &PditConfig, count: usize) -> Result<Schedule> {
        let base = Schedule::linear(cfg);
        let kept = space_timesteps(base.steps(), count)?;
        let mut last = 1.0f64;
        let mut betas = Vec::with_capacity(kept.len());
        for &i in &kept {
            betas.push(1.0 - base.alpha_bar[i] / last);
            last = base.alpha_bar[i];
        }
        Schedule::new(betas, kept.iter().map(|&i| i + 1).collect())
    }

    /// T′, the steps of the chain.
    pub fn steps(&self) -> usize {
        self.betas.len()
    }

    /// The row of step `j`.
    ///
    /// # Errors
    /// When `j` is outside `1..=T′`.
    pub fn row(&self, j: usize) -> Result<usize> {
        if j == 0 || j > self.steps() {
            return Err(Error::InvalidArgument(format!(
                "step t = {j} is outside 1..={}",
                self.steps()
            )));
        }
        Ok(j - 1)
    }

    /// The constants of the reverse step at `j`.
    pub fn step(&self, j: usize, learn_sigma: bool) -> Result<StepCoefs> {
        let i = self.row(j)?;
        // Without learn_sigma: DiT's FIXED_LARGE variance, β_j (β̃_2 at j = 1).
        let fixed = if i == 0 {
            self.posterior_variance[1]
        } else {
            self.betas[i]
        };
        Ok(StepCoefs {
            ddpm: DdpmStep {
                eps_coef: self.eps_coef[i],
                inv_sqrt_alpha: self.inv_sqrt_alpha[i],
                min_log: self.posterior_log_variance_clipped[i],
                max_log: libm::log(self.betas[i]),
                learn_sigma,
                fixed_log: libm::log(fixed),
            },
            sqrt_recip_alpha_bar: libm::sqrt(1.0 / self.alpha_bar[i]),
            sqrt_recipm1_alpha_bar: libm::sqrt(1.0 / self.alpha_bar[i] - 1.0),
        })
    }
}

/// The 0-based indices of the base chain that a respaced chain of `count` steps keeps,
/// ascending: `stride = (T − 1)/(count − 1)`, then `count` times `round(cur)`, `cur += stride`,
/// with Python's round half to even on the accumulated f64.
pub fn space_timesteps(t: usize, count: usize) -> Result<Vec<usize>> {
    if count < 2 || count > t {
        return Err(Error::InvalidArgument(format!(
            "a respaced chain has 2..={t} steps, asked for {count}"
        )));
    }
    let stride = (t - 1) as f64 / (count - 1) as f64;
    let mut cur = 0.0f64;
    let mut kept = Vec::with_capacity(count);
    for _ in 0..count {
        kept.push(libm::rint(cur) as usize);
        cur += stride;
    }
    kept.sort_unstable();
    kept.dedup();
    Ok(kept)
}

/// The scalars of one reverse step: the backend's [`DdpmStep`] and the constants of
/// `pred_x0`.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct StepCoefs {
    /// The mean and variance (what [`Backend::ddpm_step`](crate::Backend::ddpm_step) reads).
    pub ddpm: DdpmStep,
    /// √(1/ᾱ_j).
    pub sqrt_recip_alpha_bar: f64,
    /// √(1/ᾱ_j − 1).
    pub sqrt_recipm1_alpha_bar: f64,
}

impl StepCoefs {
    /// The mean and log-variance at one element (see [`DdpmStep::mean_log_var`]).
    #[inline]
    pub fn mean_log_var(&self, z: f64, eps: f64, v: f64) -> (f64, f64) {
        self.ddpm.mean_log_var(z, eps, v)
    }

    /// `pred_x0 = √(1/ᾱ)·z − √(1/ᾱ − 1)·ε` (never clipped).
    #[inline]
    pub fn pred_x0(&self, z: f64, eps: f64) -> f64 {
        self.sqrt_recip_alpha_bar * z - self.sqrt_recipm1_alpha_bar * eps
    }
}

/// The model's reverse-step Gaussian at step `j` for one sample, from `z` and the network's
/// `eps` (and `v`, with `learn_sigma`): `(mean, log_variance, pred_x0)`, each `[d]`, in f64.
pub fn p_mean_variance(
    coefs: &StepCoefs,
    z: &[f32],
    eps: &[f32],
    v: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let d = z.len();
    let (mut mean, mut lv, mut x0) = (
        Vec::with_capacity(d),
        Vec::with_capacity(d),
        Vec::with_capacity(d),
    );
    for i in 0..d {
        let (zi, ei) = (f64::from(z[i]), f64::from(eps[i]));
        let (m, l) = coefs.mean_log_var(zi, ei, v.map_or(0.0, |v| f64::from(v[i])));
        mean.push(m);
        lv.push(l);
        x0.push(coefs.pred_x0(zi, ei));
    }
    (mean, lv, x0)
}

/// `z_t = √ᾱ_t·z_0 + √(1 − ᾱ_t)·ε` (f64).
pub fn q_sample(s: &Schedule, z0: &[f32], t: usize, noise: &[f32]) -> Result<Vec<f64>> {
    let i = s.row(t)?;
    let (a, b) = (libm::sqrt(s.alpha_bar[i]), libm::sqrt(1.0 - s.alpha_bar[i]));
    Ok(z0
        .iter()
        .zip(noise)
        .map(|(&z, &n)| a * f64::from(z) + b * f64::from(n))
        .collect())
}

/// The terms of the hybrid loss of one sample and its gradients with respect to the outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct LossTerms {
    /// `mean_d (ε − ε_θ)²`.
    pub mse: f64,
    /// The variational bound term in bits per dimension (0 without learn_sigma).
    pub vb: f64,
    /// `mse + vb`.
    pub loss: f64,
    /// `∂L/∂ε_θ = 2(ε_θ − ε)/d` (the MSE term only: vb reads ε_θ through a stop-gradient).
    pub grad_eps: Vec<f64>,
    /// `∂L/∂v` (empty without learn_sigma).
    pub grad_v: Vec<f64>,
}

const LN2: f64 = core::f64::consts::LN_2;

/// The hybrid loss `L_simple + L_vlb` of one sample (`spec/pdit.md` §4, "Training loss"),
/// from the target `z0`, the drawn `noise`, `z_t = q_sample(z0, t, noise)` and the network's
/// outputs at `(z_t, t)`.
pub fn hybrid_loss(
    s: &Schedule,
    learn_sigma: bool,
    t: usize,
    z0: &[f32],
    noise: &[f32],
    z_t: &[f32],
    eps: &[f32],
    v: Option<&[f32]>,
) -> Result<LossTerms> {
    let d = z0.len();
    let i = s.row(t)?;
    let mse = eps
        .iter()
        .zip(noise)
        .map(|(&e, &n)| {
            let r = f64::from(n) - f64::from(e);
            r * r
        })
        .sum::<f64>()
        / d as f64;
    let grad_eps: Vec<f64> = eps
        .iter()
        .zip(noise)
        .map(|(&e, &n)| 2.0 * (f64::from(e) - f64::from(n)) / d as f64)
        .collect();
    let v = match (learn_sigma, v) {
        (false, _) => {
            return Ok(LossTerms {
                mse,
                vb: 0.0,
                loss: mse,
                grad_eps,
                grad_v: Vec::new(),
            });
        }
        (true, Some(v)) => v,
        (true, None) => {
            return Err(Error::InvalidArgument(
                "a learn_sigma model's loss needs its v output".into(),
            ));
        }
    };
    let c = s.step(t, true)?;
    let (c1, c2, tlv) = (
        s.posterior_mean_coef1[i],
        s.posterior_mean_coef2[i],
        s.posterior_log_variance_clipped[i],
    );
    let (mut vb, mut grad_v) = (0.0f64, Vec::with_capacity(d));
    for k in 0..d {
        let (zt, e, x0) = (f64::from(z_t[k]), f64::from(eps[k]), f64::from(z0[k]));
        let (mean, lv) = c.mean_log_var(zt, e, f64::from(v[k]));
        let (elem, d_lv) = if t == 1 {
            let r = (x0 - mean) * (x0 - mean) * libm::exp(-lv);
            (
                0.5 * (libm::log(2.0 * core::f64::consts::PI) + lv + r),
                0.5 * (1.0 - r),
            )
        } else {
            let tmean = c1 * x0 + c2 * zt;
            let r = (tmean - mean) * (tmean - mean) * libm::exp(-lv);
            (
                0.5 * (-1.0 + lv - tlv + libm::exp(tlv - lv) + r),
                0.5 * (1.0 - libm::exp(tlv - lv) - r),
            )
        };
        vb += elem;
        grad_v.push(d_lv / (d as f64 * LN2) * (c.ddpm.max_log - c.ddpm.min_log) / 2.0);
    }
    let vb = vb / d as f64 / LN2;
    Ok(LossTerms {
        mse,
        vb,
        loss: mse + vb,
        grad_eps,
        grad_v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respacing_matches_dits_rounding() {
        // 50 of 1000: stride 999/49, Python round (half to even) on the running sum.
        let kept = space_timesteps(1000, 50).unwrap();
        assert_eq!(kept.len(), 50);
        assert_eq!(&kept[..4], &[0, 20, 41, 61]);
        assert_eq!(*kept.last().unwrap(), 999);
        assert_eq!(space_timesteps(4, 4).unwrap(), [0, 1, 2, 3]);
        // Ties to even: stride 1.5 gives 0, 1.5 → 2, 3.
        assert_eq!(space_timesteps(4, 3).unwrap(), [0, 2, 3]);
        assert!(space_timesteps(10, 1).is_err() && space_timesteps(10, 11).is_err());
    }

    #[test]
    fn a_respaced_chain_of_every_step_is_the_base_chain() {
        let betas: Vec<f64> = (0..10).map(|i| 1e-3 + 1e-3 * i as f64).collect();
        let base = Schedule::new(betas.clone(), (1..=10).collect()).unwrap();
        let mut last = 1.0;
        let mut re = Vec::new();
        for &ab in &base.alpha_bar {
            re.push(1.0 - ab / last);
            last = ab;
        }
        for (a, b) in re.iter().zip(&betas) {
            assert!((a - b).abs() < 1e-15);
        }
        // At j = 1 the posterior is z_0 itself; the clipped log-variance repeats step 2's.
        assert_eq!(base.posterior_variance[0], 0.0);
        // c1 = β/(1 − ᾱ) with 1 − ᾱ = 1 − (1 − β): one rounding away from 1.
        assert!((base.posterior_mean_coef1[0] - 1.0).abs() < 1e-12);
        assert_eq!(base.posterior_mean_coef2[0], 0.0);
        assert_eq!(
            base.posterior_log_variance_clipped[0],
            base.posterior_log_variance_clipped[1]
        );
        assert!(base.row(0).is_err() && base.row(11).is_err());
    }

    #[test]
    fn the_learned_range_spans_beta_tilde_to_beta() {
        let betas: Vec<f64> = (0..6).map(|i| 0.01 + 0.01 * i as f64).collect();
        let s = Schedule::new(betas, (1..=6).collect()).unwrap();
        for j in 2..=6 {
            let c = s.step(j, true).unwrap();
            let (_, hi) = c.mean_log_var(0.0, 0.0, 1.0);
            let (_, lo) = c.mean_log_var(0.0, 0.0, -1.0);
            assert!((hi - s.betas[j - 1].ln()).abs() < 1e-15);
            assert!((lo - s.posterior_variance[j - 1].ln()).abs() < 1e-13);
        }
    }
}
