//! Random models for tests, benchmarks and examples: a real safetensors file image with the
//! tensors [`crate::models::tensor_specs`] lists for a configuration, filled with seeded
//! random weights, and the configuration in its metadata.

use crate::config::{CONFIG_KEY, Config};
use crate::error::Result;
use crate::models::tensor_specs;
use crate::weights::serialize;
use alloc::format;
use alloc::vec::Vec;
use seqrec_kernels::testing::Rng;

/// A safetensors file image with weights drawn from N(0, std²) (LayerNorm scales from
/// 1 + N(0, 0.05²)) for `cfg`, which must name `model` and `n_items`.
pub fn random_model_bytes(cfg: &Config, seed: u64, std: f32) -> Result<Vec<u8>> {
    let specs = tensor_specs(cfg)?;
    let mut rng = Rng::new(seed);
    let values: Vec<Vec<f32>> = specs
        .iter()
        .map(|s| {
            let n: usize = s.shape.iter().product();
            let is_ln_scale = s.name.ends_with(".weight")
                && (s.name.contains("LayerNorm")
                    || s.name.contains(".ln1")
                    || s.name.contains(".ln2"));
            if is_ln_scale {
                (0..n).map(|_| 1.0 + 0.05 * rng.normal()).collect()
            } else {
                rng.normal_vec(n, std)
            }
        })
        .collect();
    let tensors: Vec<(&str, &[usize], &[f32])> = specs
        .iter()
        .zip(&values)
        .map(|(s, v)| (s.name.as_str(), s.shape.as_slice(), v.as_slice()))
        .collect();
    let json = cfg.to_json();
    serialize(&tensors, &[(CONFIG_KEY, json.as_str())])
}

/// RecBole's default configuration of an architecture over `n_items` (window 50; Caser gets
/// `n_users`).
pub fn recbole_default_config(arch: &str, n_items: usize, n_users: usize) -> Result<Config> {
    let cfg = Config::from_json(&format!(
        r#"{{"model":"{arch}","n_items":{n_items},"MAX_ITEM_LIST_LENGTH":50}}"#
    ))?;
    Ok(if arch == "caser" {
        cfg.with("n_users", n_users)
    } else {
        cfg
    })
}
