//! The test oracle of the text encoder: a BERT forward pass and sentence pooling written as
//! plain loops in f64, one sequence at a time, reading the weights by their Hugging Face names
//! straight from the safetensors file. It shares no code with [`super::bert`] (no fused
//! projections, no packing, no SIMD kernels), so agreement between the two checks the fast
//! path's layout, fusion and kernels. Slow: use it on a few short sequences.

use super::bert::{BertConfig, name_prefix};
use super::pool::Pooling;
use crate::error::{Error, Result};
use crate::weights::WeightFile;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

/// Reads a tensor as f64 values, checking its shape.
fn load(file: &WeightFile, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
    let p = name_prefix(file);
    let t = file.tensor(&format!("{p}{name}"), shape)?;
    Ok(t.as_slice().iter().map(|&v| v as f64).collect())
}

/// `y[j] = b[j] + Σ_p x[p]·w[j, p]` for a PyTorch `[out, in]` weight.
fn dense(x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let k = x.len();
    (0..b.len())
        .map(|j| b[j] + (0..k).map(|p| x[p] * w[j * k + p]).sum::<f64>())
        .collect()
}

/// LayerNorm with biased variance and `eps` inside the square root.
fn layer_norm(x: &[f64], g: &[f64], b: &[f64], eps: f64) -> Vec<f64> {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let inv = 1.0 / libm::sqrt(var + eps);
    (0..x.len())
        .map(|i| (x[i] - mean) * inv * g[i] + b[i])
        .collect()
}

/// One transformer layer's weights in f64.
#[derive(Debug)]
struct RefLayer {
    wq: Vec<f64>,
    bq: Vec<f64>,
    wk: Vec<f64>,
    bk: Vec<f64>,
    wv: Vec<f64>,
    bv: Vec<f64>,
    wo: Vec<f64>,
    bo: Vec<f64>,
    g1: Vec<f64>,
    b1: Vec<f64>,
    wi: Vec<f64>,
    bi: Vec<f64>,
    w2: Vec<f64>,
    b2: Vec<f64>,
    g2: Vec<f64>,
    bb2: Vec<f64>,
}

/// The encoder's weights widened to f64, read by name from the file.
#[derive(Debug)]
pub struct RefBert {
    cfg: BertConfig,
    word: Vec<f64>,
    pos: Vec<f64>,
    types: Vec<f64>,
    eg: Vec<f64>,
    eb: Vec<f64>,
    layers: Vec<RefLayer>,
}

impl RefBert {
    /// Reads every tensor of the encoder described by `cfg` from `file`.
    pub fn load(file: &WeightFile, cfg: &BertConfig) -> Result<RefBert> {
        let (h, inner) = (cfg.hidden_size, cfg.intermediate_size);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let g = |name: &str, shape: &[usize]| {
                load(file, &format!("encoder.layer.{l}.{name}"), shape)
            };
            layers.push(RefLayer {
                wq: g("attention.self.query.weight", &[h, h])?,
                bq: g("attention.self.query.bias", &[h])?,
                wk: g("attention.self.key.weight", &[h, h])?,
                bk: g("attention.self.key.bias", &[h])?,
                wv: g("attention.self.value.weight", &[h, h])?,
                bv: g("attention.self.value.bias", &[h])?,
                wo: g("attention.output.dense.weight", &[h, h])?,
                bo: g("attention.output.dense.bias", &[h])?,
                g1: g("attention.output.LayerNorm.weight", &[h])?,
                b1: g("attention.output.LayerNorm.bias", &[h])?,
                wi: g("intermediate.dense.weight", &[inner, h])?,
                bi: g("intermediate.dense.bias", &[inner])?,
                w2: g("output.dense.weight", &[h, inner])?,
                b2: g("output.dense.bias", &[h])?,
                g2: g("output.LayerNorm.weight", &[h])?,
                bb2: g("output.LayerNorm.bias", &[h])?,
            });
        }
        Ok(RefBert {
            cfg: cfg.clone(),
            word: load(
                file,
                "embeddings.word_embeddings.weight",
                &[cfg.vocab_size, h],
            )?,
            pos: load(
                file,
                "embeddings.position_embeddings.weight",
                &[cfg.max_position_embeddings, h],
            )?,
            types: load(
                file,
                "embeddings.token_type_embeddings.weight",
                &[cfg.type_vocab_size, h],
            )?,
            eg: load(file, "embeddings.LayerNorm.weight", &[h])?,
            eb: load(file, "embeddings.LayerNorm.bias", &[h])?,
            layers,
        })
    }

    /// The last hidden states `[ids.len()][H]` of one sequence (token types 0).
    pub fn hidden_states(&self, ids: &[u32]) -> Result<Vec<Vec<f64>>> {
        let cfg = &self.cfg;
        let (h, nh, hd) = (cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim());
        let eps = cfg.layer_norm_eps as f64;
        let n = ids.len();
        if n == 0 || n > cfg.max_position_embeddings {
            return Err(Error::InvalidArgument(format!(
                "{n} tokens: expected 1..={}",
                cfg.max_position_embeddings
            )));
        }
        let mut x: Vec<Vec<f64>> = Vec::with_capacity(n);
        for (i, &id) in ids.iter().enumerate() {
            let id = id as usize;
            if id >= cfg.vocab_size {
                return Err(Error::InvalidArgument(format!(
                    "token id {id} is out of range"
                )));
            }
            let e: Vec<f64> = (0..h)
                .map(|d| self.word[id * h + d] + self.pos[i * h + d] + self.types[d])
                .collect();
            x.push(layer_norm(&e, &self.eg, &self.eb, eps));
        }
        for w in &self.layers {
            let q: Vec<Vec<f64>> = x.iter().map(|r| dense(r, &w.wq, &w.bq)).collect();
            let k: Vec<Vec<f64>> = x.iter().map(|r| dense(r, &w.wk, &w.bk)).collect();
            let v: Vec<Vec<f64>> = x.iter().map(|r| dense(r, &w.wv, &w.bv)).collect();
            let scale = 1.0 / libm::sqrt(hd as f64);
            let mut next = Vec::with_capacity(n);
            for i in 0..n {
                let mut ctx = vec![0.0f64; h];
                for head in 0..nh {
                    let cols = head * hd..(head + 1) * hd;
                    let scores: Vec<f64> = (0..n)
                        .map(|j| cols.clone().map(|c| q[i][c] * k[j][c]).sum::<f64>() * scale)
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| libm::exp(s - max)).collect();
                    let z: f64 = e.iter().sum();
                    for c in cols {
                        ctx[c] = (0..n).map(|j| e[j] / z * v[j][c]).sum();
                    }
                }
                let a = dense(&ctx, &w.wo, &w.bo);
                let r1: Vec<f64> = (0..h).map(|d| a[d] + x[i][d]).collect();
                let x1 = layer_norm(&r1, &w.g1, &w.b1, eps);
                let mid: Vec<f64> = dense(&x1, &w.wi, &w.bi)
                    .into_iter()
                    .map(|u| 0.5 * u * (1.0 + libm::erf(u / core::f64::consts::SQRT_2)))
                    .collect();
                let f = dense(&mid, &w.w2, &w.b2);
                let r2: Vec<f64> = (0..h).map(|d| f[d] + x1[d]).collect();
                next.push(layer_norm(&r2, &w.g2, &w.bb2, eps));
            }
            x = next;
        }
        Ok(x)
    }

    /// The sentence embedding of one sequence: [`Self::hidden_states`], pooled, then
    /// L2-normalised when `normalize`.
    pub fn encode(&self, ids: &[u32], pooling: Pooling, normalize: bool) -> Result<Vec<f64>> {
        let x = self.hidden_states(ids)?;
        let (n, h) = (x.len(), self.cfg.hidden_size);
        let mut out: Vec<f64> = (0..h)
            .map(|d| {
                let col = x.iter().map(|r| r[d]);
                match pooling {
                    Pooling::Cls => x[0][d],
                    Pooling::Max => col.fold(f64::NEG_INFINITY, f64::max),
                    Pooling::Mean => col.sum::<f64>() / n as f64,
                    Pooling::MeanSqrtLen => col.sum::<f64>() / libm::sqrt(n as f64),
                }
            })
            .collect();
        if normalize {
            let norm = libm::sqrt(out.iter().map(|v| v * v).sum::<f64>()).max(1e-12);
            for v in &mut out {
                *v /= norm;
            }
        }
        Ok(out)
    }
}
