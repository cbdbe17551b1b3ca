//! PDiT's training and evaluation data (thesis §9.1): the latents of every item's text and,
//! per example, a history of item ids, the target item and the latent of the general prompt
//! built from the history, all from one frozen text encoder (all-MiniLM-L6-v2, 384-d, L2
//! normalised, in place of Sentence-T5).
//!
//! `seqrec pdit data` makes the file once (encoding the prompts is the slow part); training
//! and evaluation read it. It is a safetensors file, every tensor f32 (ids are exact below
//! 2^24):
//!
//! | tensor | shape | what |
//! |---|---|---|
//! | `item_latents` | `[n_items, d]` | row `i` the text latent of internal item id `i` (row 0 and items without text zero) |
//! | `{split}.history` | `[N, L]` | the history's ids, oldest first, right-padded with 0 |
//! | `{split}.target` | `[N]` | the target id |
//! | `{split}.user` | `[N]` | the internal user id |
//! | `{split}.prompt` | `[N, d]` | the latent of the prompt text |
//!
//! for `split` in `train`, `valid`, `test`; metadata `seqrec.pdit_data` (the format, `1`) and
//! what made it (dataset, split, prompt header, encoder).

use crate::error::{Error, Result};
use seqrec_engine::weights::{WeightFile, serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The metadata key naming the format.
pub const DATA_KEY: &str = "seqrec.pdit_data";

/// One example: predict the target's latent from the history and the prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct PditExample {
    /// Internal user id.
    pub user: u32,
    /// Item ids, oldest first (1 to L of them).
    pub history: Vec<u32>,
    /// The target item id.
    pub target: u32,
    /// The prompt's latent, `[d]`.
    pub prompt: Vec<f32>,
}

/// A PDiT data file (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct PditData {
    /// Latent width d.
    pub dim: usize,
    /// L: the longest history.
    pub max_hist_len: usize,
    /// `[n_items, d]`.
    pub item_latents: Vec<f32>,
    /// Training examples.
    pub train: Vec<PditExample>,
    /// Validation examples (one per validation user: the last item).
    pub valid: Vec<PditExample>,
    /// Test examples (one per test user: the last item).
    pub test: Vec<PditExample>,
    /// What made it.
    pub meta: BTreeMap<String, String>,
}

const SPLITS: [&str; 3] = ["train", "valid", "test"];

impl PditData {
    /// Catalog size, padding id 0 included.
    pub fn n_items(&self) -> usize {
        self.item_latents.len() / self.dim.max(1)
    }

    /// The latent of item `id`.
    pub fn latent(&self, id: u32) -> &[f32] {
        let d = self.dim;
        &self.item_latents[id as usize * d..(id as usize + 1) * d]
    }

    fn split(&self, name: &str) -> &[PditExample] {
        match name {
            "train" => &self.train,
            "valid" => &self.valid,
            _ => &self.test,
        }
    }

    /// Writes the file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let (d, l) = (self.dim, self.max_hist_len);
        let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = vec![(
            "item_latents".into(),
            vec![self.n_items(), d],
            self.item_latents.clone(),
        )];
        for name in SPLITS {
            let ex = self.split(name);
            let n = ex.len();
            let mut hist = vec![0.0f32; n * l];
            for (row, e) in hist.chunks_exact_mut(l.max(1)).zip(ex) {
                for (h, &id) in row.iter_mut().zip(&e.history) {
                    *h = id as f32;
                }
            }
            tensors.push((format!("{name}.history"), vec![n, l], hist));
            let col = |f: fn(&PditExample) -> u32| ex.iter().map(|e| f(e) as f32).collect();
            tensors.push((format!("{name}.target"), vec![n], col(|e| e.target)));
            tensors.push((format!("{name}.user"), vec![n], col(|e| e.user)));
            let prompts = ex.iter().flat_map(|e| e.prompt.iter().copied()).collect();
            tensors.push((format!("{name}.prompt"), vec![n, d], prompts));
        }
        let refs: Vec<(&str, &[usize], &[f32])> = tensors
            .iter()
            .map(|(n, s, v)| (n.as_str(), s.as_slice(), v.as_slice()))
            .collect();
        let mut meta: Vec<(&str, &str)> = vec![(DATA_KEY, "1")];
        meta.extend(self.meta.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let bytes = serialize(&refs, &meta)?;
        std::fs::write(path, bytes).map_err(|e| crate::data::DataError::io(path, e).into())
    }

    /// Reads a file written by [`Self::save`], checking shapes and ids.
    pub fn load(path: &Path) -> Result<PditData> {
        let file = WeightFile::open(path)?;
        let origin = path.display().to_string();
        let bad = |msg: String| Error::Invalid(format!("{origin}: {msg}"));
        if file.metadata(DATA_KEY) != Some("1") {
            return Err(bad(format!(
                "not a PDiT data file (no `{DATA_KEY}` metadata; make one with `seqrec pdit data`)"
            )));
        }
        let shape = |name: &str| -> Result<Vec<usize>> {
            file.info(name)
                .map(|i| i.shape.clone())
                .ok_or_else(|| bad(format!("tensor `{name}` is missing")))
        };
        let items = shape("item_latents")?;
        let [n_items, dim] = items[..] else {
            return Err(bad(format!(
                "item_latents has shape {items:?}, expected [n, d]"
            )));
        };
        let item_latents = file.tensor("item_latents", &items)?.as_slice().to_vec();
        let mut data = PditData {
            dim,
            max_hist_len: 0,
            item_latents,
            train: Vec::new(),
            valid: Vec::new(),
            test: Vec::new(),
            meta: file.metadata_map().clone(),
        };
        for name in SPLITS {
            let hs = shape(&format!("{name}.history"))?;
            let [n, l] = hs[..] else {
                return Err(bad(format!(
                    "{name}.history has shape {hs:?}, expected [N, L]"
                )));
            };
            data.max_hist_len = data.max_hist_len.max(l);
            let hist = file.tensor(&format!("{name}.history"), &[n, l])?;
            let target = file.tensor(&format!("{name}.target"), &[n])?;
            let user = file.tensor(&format!("{name}.user"), &[n])?;
            let prompt = file.tensor(&format!("{name}.prompt"), &[n, dim])?;
            let id = |v: f32, what: &str, row: usize| -> Result<u32> {
                if v >= 0.0 && v.fract() == 0.0 && (v as usize) < n_items.max(1) {
                    Ok(v as u32)
                } else {
                    Err(bad(format!(
                        "{name}.{what} row {row}: {v} is not an item id below {n_items}"
                    )))
                }
            };
            let mut out = Vec::with_capacity(n);
            for r in 0..n {
                let mut history = Vec::new();
                for &v in &hist.as_slice()[r * l..(r + 1) * l] {
                    match id(v, "history", r)? {
                        0 => break,
                        i => history.push(i),
                    }
                }
                if history.is_empty() {
                    return Err(bad(format!("{name}.history row {r} is empty")));
                }
                out.push(PditExample {
                    user: user.as_slice()[r].max(0.0) as u32,
                    history,
                    target: id(target.as_slice()[r], "target", r)?,
                    prompt: prompt.as_slice()[r * dim..(r + 1) * dim].to_vec(),
                });
            }
            match name {
                "train" => data.train = out,
                "valid" => data.valid = out,
                _ => data.test = out,
            }
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_file_round_trips_and_bad_ids_are_refused() {
        let ex = |h: Vec<u32>, t: u32| PditExample {
            user: 3,
            history: h,
            target: t,
            prompt: vec![0.5, -0.5],
        };
        let data = PditData {
            dim: 2,
            max_hist_len: 3,
            item_latents: vec![0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.6, 0.8],
            train: vec![ex(vec![1, 2], 3), ex(vec![2, 3, 1], 2)],
            valid: vec![ex(vec![3], 1)],
            test: Vec::new(),
            meta: BTreeMap::new(),
        };
        let dir = std::env::temp_dir().join(format!("seqrec-pdit-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.safetensors");
        data.save(&path).unwrap();
        let back = PditData::load(&path).unwrap();
        assert_eq!(back.train, data.train);
        assert_eq!(back.valid, data.valid);
        assert_eq!((back.n_items(), back.latent(3)), (4, &[0.6f32, 0.8][..]));
        // An id beyond the catalog is an error naming the row.
        let mut broken = data.clone();
        broken.train[1].target = 9;
        broken.save(&path).unwrap();
        let e = PditData::load(&path).unwrap_err().to_string();
        assert!(e.contains("train.target row 1") && e.contains('9'), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
