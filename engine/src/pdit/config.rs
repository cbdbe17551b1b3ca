//! PDiT's configuration (`spec/pdit.md` §1): every key checked, unknown keys and missing
//! required ones rejected, and the sizes derived once.

use crate::config::Config;
use crate::error::{Error, Result};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde_json::Value;

/// Which parts of the network a checkpoint has.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Variant {
    /// DiT blocks conditioned on the prompt latent, then temporal blocks over the history.
    Full,
    /// PDiT_gen: the DiT blocks only (the history is ignored).
    Gen,
    /// PDiT_tem: the temporal blocks only (the prompt latent is ignored; the condition is the
    /// timestep alone, read by the final layer).
    Tem,
}

impl Variant {
    /// `full`, `gen` or `tem`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Full => "full",
            Variant::Gen => "gen",
            Variant::Tem => "tem",
        }
    }

    /// Whether the DiT blocks (and the prompt latent) are part of it.
    pub fn has_gen(self) -> bool {
        self != Variant::Tem
    }

    /// Whether the temporal blocks (and the history) are part of it.
    pub fn has_tem(self) -> bool {
        self != Variant::Gen
    }
}

/// The keys a PDiT configuration may hold; those with a default may be absent.
const REQUIRED: &[&str] = &[
    "model",
    "variant",
    "latent_dim",
    "cond_dim",
    "hidden_size",
    "num_tokens",
    "num_heads",
    "depth_gen",
    "depth_tem",
    "mlp_ratio",
    "max_hist_len",
    "num_timesteps",
    "beta_start",
    "beta_end",
    "learn_sigma",
    "latent_scale",
];
const OPTIONAL: &[&str] = &[
    "freq_embed_size",
    "max_period",
    "beta_schedule",
    "ln_eps",
    "tem_ln_eps",
    "tem_self_attn",
];

/// A checked PDiT configuration with its derived sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct PditConfig {
    /// The network's parts.
    pub variant: Variant,
    /// d: width of z_t, the history latents, ε and v.
    pub latent_dim: usize,
    /// d_p: width of the prompt latent p.
    pub cond_dim: usize,
    /// H: token width.
    pub hidden: usize,
    /// k: tokens.
    pub tokens: usize,
    /// Attention heads.
    pub heads: usize,
    /// DiT blocks.
    pub depth_gen: usize,
    /// Temporal blocks.
    pub depth_tem: usize,
    /// M = ⌊H·mlp_ratio⌋: the MLPs' inner width.
    pub mlp_hidden: usize,
    /// L: the most history rows a request may hold.
    pub max_hist_len: usize,
    /// T: steps of the diffusion chain.
    pub timesteps: usize,
    /// The linear β schedule's ends.
    pub beta_start: f64,
    /// See `beta_start`.
    pub beta_end: f64,
    /// Whether the network outputs the variance interpolation v beside ε.
    pub learn_sigma: bool,
    /// The scale the caller multiplies latents by before the network (and divides the sample
    /// by after); the network never reads it.
    pub latent_scale: f64,
    /// F: width of the timestep sinusoid.
    pub freq: usize,
    /// The sinusoid's longest period.
    pub max_period: f64,
    /// Epsilon of the DiT blocks' and the final layer's LayerNorms.
    pub ln_eps: f32,
    /// Epsilon of the temporal blocks' LayerNorms.
    pub tem_ln_eps: f32,
    /// Whether the temporal blocks also have self-attention.
    pub tem_self_attn: bool,
}

fn err(msg: String) -> Error {
    Error::Config(msg)
}

/// A positive (`min` 1) or non-negative (`min` 0) integer key.
fn int(map: &serde_json::Map<String, Value>, key: &str, min: u64) -> Result<usize> {
    match map.get(key).and_then(Value::as_u64) {
        Some(v) if v >= min => usize::try_from(v).map_err(|_| err(format!("{key} is too large"))),
        _ => Err(err(format!(
            "{key} must be a {} integer, found {}",
            if min == 0 { "non-negative" } else { "positive" },
            map.get(key)
                .map_or_else(|| "nothing".into(), Value::to_string)
        ))),
    }
}

fn float(map: &serde_json::Map<String, Value>, key: &str, default: Option<f64>) -> Result<f64> {
    match (map.get(key), default) {
        (None, Some(d)) => Ok(d),
        (Some(v), _) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| err(format!("{key} must be a finite number, found {v}"))),
        (None, None) => Err(err(format!("missing required key {key}"))),
    }
}

fn boolean(map: &serde_json::Map<String, Value>, key: &str, default: bool) -> Result<bool> {
    match map.get(key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(err(format!("{key} must be true or false, found {v}"))),
    }
}

impl PditConfig {
    /// Checks `cfg` as `spec/pdit.md` §1 and `pdit_ref.dims()` do.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first offending key: unknown or missing keys, a variant
    /// other than `full`/`gen`/`tem`, a schedule other than `linear`, non-positive sizes,
    /// `hidden_size` not divisible by `num_heads`, `(2 if learn_sigma else 1)·latent_dim` not
    /// divisible by `num_tokens`, fewer than 2 timesteps, β outside `0 < start ≤ end < 1`, or an
    /// `mlp_ratio` that leaves no inner width.
    pub fn from_config(cfg: &Config) -> Result<PditConfig> {
        let map = cfg.as_map();
        let unknown: Vec<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|k| !REQUIRED.contains(k) && !OPTIONAL.contains(k))
            .collect();
        if !unknown.is_empty() {
            return Err(err(format!("unknown keys {}", unknown.join(", "))));
        }
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|k| !map.contains_key(*k))
            .collect();
        if !missing.is_empty() {
            return Err(err(format!("missing keys {}", missing.join(", "))));
        }
        if cfg.model()? != "pdit" {
            return Err(err("model must be \"pdit\"".into()));
        }
        let variant = match map.get("variant").and_then(Value::as_str) {
            Some("full") => Variant::Full,
            Some("gen") => Variant::Gen,
            Some("tem") => Variant::Tem,
            other => {
                return Err(err(format!(
                    "variant must be one of full, gen, tem, found {}",
                    other.unwrap_or("a non-string")
                )));
            }
        };
        match map.get("beta_schedule") {
            None => {}
            Some(Value::String(s)) if s == "linear" => {}
            Some(v) => {
                return Err(err(format!(
                    "beta_schedule: only \"linear\" is defined, found {v}"
                )));
            }
        }
        let latent_dim = int(map, "latent_dim", 1)?;
        let cond_dim = int(map, "cond_dim", 1)?;
        let hidden = int(map, "hidden_size", 1)?;
        let tokens = int(map, "num_tokens", 1)?;
        let heads = int(map, "num_heads", 1)?;
        let max_hist_len = int(map, "max_hist_len", 1)?;
        let freq = match map.get("freq_embed_size") {
            None => 256,
            Some(_) => int(map, "freq_embed_size", 1)?,
        };
        let timesteps = int(map, "num_timesteps", 1)?;
        let depth_gen = int(map, "depth_gen", 0)?;
        let depth_tem = int(map, "depth_tem", 0)?;
        let learn_sigma = boolean(map, "learn_sigma", true)?;
        if !map.get("learn_sigma").is_some_and(Value::is_boolean) {
            return Err(err("learn_sigma must be true or false".into()));
        }
        if hidden % heads != 0 {
            return Err(err(format!(
                "hidden_size {hidden} must be divisible by num_heads {heads}"
            )));
        }
        let out_mult = if learn_sigma { 2 } else { 1 };
        if (out_mult * latent_dim) % tokens != 0 {
            return Err(err(format!(
                "(2 if learn_sigma else 1)·latent_dim = {} must be divisible by num_tokens {tokens}",
                out_mult * latent_dim
            )));
        }
        if timesteps < 2 {
            return Err(err(format!(
                "num_timesteps must be >= 2, found {timesteps}"
            )));
        }
        let beta_start = float(map, "beta_start", None)?;
        let beta_end = float(map, "beta_end", None)?;
        if !(0.0 < beta_start && beta_start <= beta_end && beta_end < 1.0) {
            return Err(err(format!(
                "need 0 < beta_start <= beta_end < 1, found {beta_start} and {beta_end}"
            )));
        }
        let ratio = float(map, "mlp_ratio", None)?;
        let mlp = hidden as f64 * ratio;
        if !(1.0..=1e9).contains(&mlp) {
            return Err(err(format!(
                "mlp_ratio {ratio} gives an MLP width of {mlp} for hidden_size {hidden}"
            )));
        }
        let latent_scale = float(map, "latent_scale", None)?;
        if latent_scale <= 0.0 {
            return Err(err(format!(
                "latent_scale must be positive, found {latent_scale}"
            )));
        }
        let eps = |key: &str, default: f64| -> Result<f32> {
            let v = float(map, key, Some(default))?;
            if v > 0.0 {
                Ok(v as f32)
            } else {
                Err(err(format!("{key} must be positive, found {v}")))
            }
        };
        let max_period = float(map, "max_period", Some(10000.0))?;
        if max_period <= 1.0 {
            return Err(err(format!(
                "max_period must be above 1, found {max_period}"
            )));
        }
        Ok(PditConfig {
            variant,
            latent_dim,
            cond_dim,
            hidden,
            tokens,
            heads,
            depth_gen,
            depth_tem,
            mlp_hidden: mlp as usize,
            max_hist_len,
            timesteps,
            beta_start,
            beta_end,
            learn_sigma,
            latent_scale,
            freq,
            max_period,
            ln_eps: eps("ln_eps", 1e-6)?,
            tem_ln_eps: eps("tem_ln_eps", 1e-5)?,
            tem_self_attn: boolean(map, "tem_self_attn", false)?,
        })
    }

    /// P: outputs per token, `(2 if learn_sigma else 1)·d / k`.
    pub fn per_token(&self) -> usize {
        (if self.learn_sigma { 2 } else { 1 }) * self.latent_dim / self.tokens
    }

    /// Width of the network's output, `k·P`: ε (d values), then v (d values) with
    /// `learn_sigma`.
    pub fn out_dim(&self) -> usize {
        self.per_token() * self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> serde_json::Map<String, Value> {
        let text = r#"{"model":"pdit","variant":"full","latent_dim":16,"cond_dim":12,
            "hidden_size":32,"num_tokens":4,"num_heads":4,"depth_gen":2,"depth_tem":2,
            "mlp_ratio":4.0,"max_hist_len":6,"num_timesteps":1000,"beta_start":0.0001,
            "beta_end":0.02,"learn_sigma":true,"latent_scale":4.0}"#;
        Config::from_json(text).unwrap().as_map().clone()
    }

    fn check(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Result<PditConfig> {
        let mut m = base();
        edit(&mut m);
        PditConfig::from_config(&Config::from_map(m))
    }

    #[test]
    fn the_fixture_configuration_loads() {
        let c = check(|_| {}).unwrap();
        assert_eq!((c.mlp_hidden, c.per_token(), c.out_dim()), (128, 8, 32));
        assert_eq!((c.freq, c.ln_eps, c.tem_ln_eps), (256, 1e-6, 1e-5));
        let c = check(|m| {
            m.insert("learn_sigma".into(), false.into());
        })
        .unwrap();
        assert_eq!(c.out_dim(), 16);
    }

    #[test]
    fn every_rejection_of_the_spec_names_its_key() {
        // (key, new value or null to remove it, what the message names)
        let cases: [(&str, Value, &str); 12] = [
            ("dropout", 0.1.into(), "unknown keys dropout"),
            ("latent_scale", Value::Null, "missing keys latent_scale"),
            ("variant", "both".into(), "variant"),
            ("beta_schedule", "cosine".into(), "beta_schedule"),
            ("num_heads", 5.into(), "divisible by num_heads"),
            ("num_tokens", 5.into(), "divisible by num_tokens"),
            ("num_timesteps", 1.into(), "num_timesteps"),
            ("beta_start", 0.05.into(), "beta_start"),
            ("hidden_size", 0.into(), "hidden_size must be a positive"),
            ("depth_gen", (-1).into(), "depth_gen must be a non-negative"),
            ("mlp_ratio", 0.001.into(), "mlp_ratio"),
            ("learn_sigma", 1.into(), "learn_sigma"),
        ];
        for (key, value, want) in cases {
            let e = check(|m| {
                if value.is_null() {
                    m.remove(key);
                } else {
                    m.insert(key.into(), value);
                }
            })
            .unwrap_err()
            .to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
