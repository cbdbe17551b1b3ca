//! Sentence pooling over a sequence's last hidden states, as sentence-transformers' `Pooling`
//! module does it, and the `Normalize` module's L2 normalisation.
//!
//! A sequence here is exactly its own token rows (batches are packed, see [`super::bert`]), so
//! "masked" mean pooling, which averages the rows whose attention mask is 1, is the plain mean
//! of the rows given.

use crate::config::Config;
use crate::error::{Error, Result};
use alloc::format;

/// How token states become one sentence vector (sentence-transformers `pooling_mode_*`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Mean of the token states (`pooling_mode_mean_tokens`, all-MiniLM-L6-v2's mode).
    Mean,
    /// The first token's state, `[CLS]` (`pooling_mode_cls_token`).
    Cls,
    /// Element-wise maximum over the tokens (`pooling_mode_max_tokens`).
    Max,
    /// Sum of the token states divided by `sqrt(len)` (`pooling_mode_mean_sqrt_len_tokens`).
    MeanSqrtLen,
}

impl Pooling {
    /// Reads a sentence-transformers `1_Pooling/config.json`: exactly one supported mode must be
    /// on, and `word_embedding_dimension` (when present) must equal `hidden_size`.
    pub fn from_json(text: &str, hidden_size: usize) -> Result<Pooling> {
        let c = Config::from_json(text)?;
        if c.has("word_embedding_dimension") {
            let d = c.usize("word_embedding_dimension")?;
            if d != hidden_size {
                return Err(Error::Config(format!(
                    "word_embedding_dimension is {d}, but the encoder's hidden_size is {hidden_size}"
                )));
            }
        }
        let flag = |key: &str| -> Result<bool> {
            match c.as_map().get(key) {
                None | Some(serde_json::Value::Null) => Ok(false),
                Some(serde_json::Value::Bool(b)) => Ok(*b),
                Some(other) => Err(Error::Config(format!(
                    "`{key}` must be a boolean, found {other}"
                ))),
            }
        };
        for key in ["pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"] {
            if flag(key)? {
                return Err(Error::Config(format!("`{key}` pooling is not supported")));
            }
        }
        let modes = [
            ("pooling_mode_mean_tokens", Pooling::Mean),
            ("pooling_mode_cls_token", Pooling::Cls),
            ("pooling_mode_max_tokens", Pooling::Max),
            ("pooling_mode_mean_sqrt_len_tokens", Pooling::MeanSqrtLen),
        ];
        let mut found = None;
        for (key, mode) in modes {
            if flag(key)? {
                if let Some((other, _)) = found {
                    return Err(Error::Config(format!(
                        "both `{other}` and `{key}` are on: concatenated pooling modes are not \
                         supported"
                    )));
                }
                found = Some((key, mode));
            }
        }
        found
            .map(|(_, mode)| mode)
            .ok_or_else(|| Error::Config("no pooling mode is on".into()))
    }

    /// Pools `len` rows of `hidden` (`[len, dim]`, `len ≥ 1`) into `out` (`[dim]`).
    pub fn pool(self, hidden: &[f32], len: usize, dim: usize, out: &mut [f32]) {
        let rows = &hidden[..len * dim];
        let out = &mut out[..dim];
        match self {
            Pooling::Cls => out.copy_from_slice(&rows[..dim]),
            Pooling::Max => {
                out.copy_from_slice(&rows[..dim]);
                for row in rows.chunks_exact(dim).skip(1) {
                    for (o, &v) in out.iter_mut().zip(row) {
                        *o = o.max(v);
                    }
                }
            }
            Pooling::Mean | Pooling::MeanSqrtLen => {
                out.fill(0.0);
                for row in rows.chunks_exact(dim) {
                    for (o, &v) in out.iter_mut().zip(row) {
                        *o += v;
                    }
                }
                let div = if self == Pooling::Mean {
                    len as f32
                } else {
                    libm::sqrtf(len as f32)
                };
                let inv = 1.0 / div;
                for o in out.iter_mut() {
                    *o *= inv;
                }
            }
        }
    }
}

/// Divides `v` by its Euclidean norm, as `torch.nn.functional.normalize` does (the norm is
/// clamped below at 1e-12, so a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let n = libm::sqrt(v.iter().map(|&x| x as f64 * x as f64).sum::<f64>());
    let inv = 1.0 / n.max(1e-12);
    for x in v {
        *x = (*x as f64 * inv) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use alloc::vec::Vec;

    #[test]
    fn modes_match_their_definitions() {
        let (len, dim) = (3, 4);
        let h: Vec<f32> = (0..len * dim).map(|i| (i as f32 * 0.7).sin()).collect();
        let mut out = vec![0.0; dim];
        for mode in [
            Pooling::Mean,
            Pooling::Cls,
            Pooling::Max,
            Pooling::MeanSqrtLen,
        ] {
            mode.pool(&h, len, dim, &mut out);
            for d in 0..dim {
                let col: Vec<f32> = (0..len).map(|r| h[r * dim + d]).collect();
                let sum: f32 = col.iter().sum();
                let want = match mode {
                    Pooling::Mean => sum / len as f32,
                    Pooling::Cls => col[0],
                    Pooling::Max => col.iter().copied().fold(f32::MIN, f32::max),
                    Pooling::MeanSqrtLen => sum / (len as f32).sqrt(),
                };
                // f32 sums of three terms in a different order: a few ulps.
                assert!((out[d] - want).abs() < 1e-6, "{mode:?} dim {d}");
            }
        }
    }

    #[test]
    fn normalize_gives_unit_norm_and_keeps_zero() {
        let mut v = vec![3.0, -4.0, 0.0];
        l2_normalize(&mut v);
        assert_eq!(v, [0.6, -0.8, 0.0]);
        let mut z = vec![0.0; 5];
        l2_normalize(&mut z);
        assert!(z.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn reads_sentence_transformers_config() {
        let minilm = r#"{"word_embedding_dimension": 384, "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false}"#;
        assert_eq!(Pooling::from_json(minilm, 384).unwrap(), Pooling::Mean);
        let cls = r#"{"pooling_mode_cls_token": true}"#;
        assert_eq!(Pooling::from_json(cls, 8).unwrap(), Pooling::Cls);
        let e = Pooling::from_json(minilm, 256).unwrap_err().to_string();
        assert!(e.contains("384") && e.contains("256"), "{e}");
        let two = r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": true}"#;
        assert!(
            Pooling::from_json(two, 8)
                .unwrap_err()
                .to_string()
                .contains("both")
        );
        assert!(
            Pooling::from_json("{}", 8)
                .unwrap_err()
                .to_string()
                .contains("no pooling mode")
        );
        let weighted = r#"{"pooling_mode_weightedmean_tokens": true}"#;
        assert!(
            Pooling::from_json(weighted, 8)
                .unwrap_err()
                .to_string()
                .contains("weightedmean")
        );
    }
}
