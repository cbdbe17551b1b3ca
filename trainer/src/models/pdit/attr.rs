//! Attribute classifiers over item text latents, for PDiT's guided decoding (thesis §9.5–9.6,
//! the part that needs no language model): one logistic regression per attribute value (for
//! example each ml-100k genre) on the items' text latents, trained on a seeded 80% of the
//! labelled items and measured on the rest; the sampler follows one of them
//! ([`seqrec_engine::pdit::Guidance`]), and compliance is the share of decoded items that
//! really have the attribute.
//!
//! The file is safetensors: `attributes.weight` `[A, d]` (over latents at the text
//! encoder's scale, L2-normalised for MiniLM), `attributes.bias` `[A]`, and metadata
//! `seqrec.attributes` (format `1`) plus `names` (a JSON list), `field`, `source` and
//! `heldout` (per attribute: positives, held-out accuracy and AUC).

use crate::error::{Error, Result};
use crate::nn::Rng;
use seqrec_engine::pdit::Guidance;
use seqrec_engine::weights::{WeightFile, serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The metadata key naming the format.
pub const ATTR_KEY: &str = "seqrec.attributes";

/// Per-item attribute labels: `labels[i]` holds the indices (into `names`) of item `i`'s values;
/// `known[i]` says whether item `i` was labelled at all.
#[derive(Clone, Debug, PartialEq)]
pub struct ItemLabels {
    /// Attribute value names.
    pub names: Vec<String>,
    /// Per internal item id: the attribute indices it has.
    pub labels: Vec<Vec<usize>>,
    /// Per internal item id: labelled.
    pub known: Vec<bool>,
}

impl ItemLabels {
    /// Reads column `field` (space-separated values) of a RecBole `.item` file keyed by
    /// `item_id`, for the catalog whose internal id `i` is the token `tokens[i]` (row 0, the
    /// padding id, is never labelled). Errors name the file, the line and the problem.
    pub fn read_recbole(path: &Path, field: &str, tokens: &[String]) -> Result<ItemLabels> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let mut lines = text.lines();
        let header = lines
            .next()
            .ok_or_else(|| Error::Invalid(format!("{}: empty file", path.display())))?;
        let names: Vec<&str> = header
            .split('\t')
            .map(|f| f.split_once(':').map_or(f, |(n, _)| n))
            .collect();
        let col = |want: &str| {
            names.iter().position(|n| *n == want).ok_or_else(|| {
                Error::Invalid(format!(
                    "{}:1: no `{want}` column (columns: {})",
                    path.display(),
                    names.join(", ")
                ))
            })
        };
        let (id_col, f_col) = (col("item_id")?, col(field)?);
        let index: BTreeMap<&str, usize> = tokens
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        let mut values: std::collections::BTreeSet<String> = Default::default();
        let mut raw: Vec<Option<Vec<String>>> = vec![None; tokens.len()];
        for (n, line) in lines.enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let cells: Vec<&str> = line.split('\t').collect();
            let cell = |c: usize| {
                cells.get(c).copied().ok_or_else(|| {
                    Error::Invalid(format!(
                        "{}:{}: {} fields, the header has {}",
                        path.display(),
                        n + 2,
                        cells.len(),
                        names.len()
                    ))
                })
            };
            let Some(&item) = index.get(cell(id_col)?) else {
                continue; // an item outside the catalog (no interactions)
            };
            let vals: Vec<String> = cell(f_col)?
                .split_whitespace()
                .map(str::to_string)
                .collect();
            values.extend(vals.iter().cloned());
            raw[item] = Some(vals);
        }
        let names: Vec<String> = values.into_iter().collect();
        if names.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: column `{field}` has no values for the catalog's items",
                path.display()
            )));
        }
        let pos = |v: &str| names.iter().position(|n| n == v).expect("collected");
        let known = raw.iter().map(Option::is_some).collect();
        let labels = raw
            .into_iter()
            .map(|r| r.map_or_else(Vec::new, |v| v.iter().map(|x| pos(x)).collect()))
            .collect();
        Ok(ItemLabels {
            names,
            labels,
            known,
        })
    }

    /// Whether item `id` has attribute `a`.
    pub fn has(&self, id: u32, a: usize) -> bool {
        self.labels.get(id as usize).is_some_and(|l| l.contains(&a))
    }

    /// The index of attribute `name`, or an error listing the names.
    pub fn index(&self, name: &str) -> Result<usize> {
        index_of(&self.names, name)
    }
}

fn index_of(names: &[String], name: &str) -> Result<usize> {
    names.iter().position(|n| n == name).ok_or_else(|| {
        Error::Invalid(format!(
            "no attribute `{name}` (there are: {})",
            names.join(", ")
        ))
    })
}

/// How one classifier does on the held-out items.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HeldOut {
    /// Attribute value.
    pub name: String,
    /// Labelled items with it (all items).
    pub positives: usize,
    /// Share of held-out items with it.
    pub base_rate: f64,
    /// Held-out accuracy at 0.5.
    pub accuracy: f64,
    /// Held-out ROC AUC.
    pub auc: f64,
}

/// Logistic classifiers, one per attribute value, over text latents.
#[derive(Clone, Debug, PartialEq)]
pub struct Attributes {
    /// Attribute value names.
    pub names: Vec<String>,
    /// Latent width d.
    pub dim: usize,
    /// `[A, d]`, over latents at the text encoder's scale.
    pub weight: Vec<f32>,
    /// `[A]`.
    pub bias: Vec<f32>,
    /// Held-out figures per attribute.
    pub heldout: Vec<HeldOut>,
    /// Other metadata (field, source).
    pub meta: BTreeMap<String, String>,
}

/// Training settings of [`Attributes::fit`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitOptions {
    /// Full-batch gradient steps (Adam).
    pub steps: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// L2 penalty on the weights (over standardised latents).
    pub l2: f64,
    /// Seed of the 80/20 item split.
    pub seed: u64,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            steps: 300,
            lr: 0.05,
            l2: 1e-3,
            seed: crate::data::DEFAULT_SEED,
        }
    }
}

impl Attributes {
    /// Fits one classifier per attribute of `labels` on the latents `[n_items, dim]` of the
    /// labelled items in a seeded 80% of them, and measures each on the other 20%.
    pub fn fit(
        latents: &[f32],
        dim: usize,
        labels: &ItemLabels,
        opts: &FitOptions,
    ) -> Result<Attributes> {
        let n = latents.len() / dim.max(1);
        if n != labels.labels.len() || dim == 0 {
            return Err(Error::Invalid(format!(
                "{n} item latents of width {dim}, {} labelled rows",
                labels.labels.len()
            )));
        }
        let mut items: Vec<usize> = (0..n).filter(|&i| labels.known[i]).collect();
        if items.len() < 10 {
            return Err(Error::Invalid(format!(
                "{} labelled items: too few to fit and hold out",
                items.len()
            )));
        }
        let mut rng = Rng::new(opts.seed);
        for i in (1..items.len()).rev() {
            items.swap(i, rng.below(i + 1));
        }
        let cut = items.len() * 4 / 5;
        let (train, test) = items.split_at(cut);
        // Standardise the features on the training items; fold the scaling into w and b.
        let x = |i: usize, j: usize| f64::from(latents[i * dim + j]);
        let mean: Vec<f64> = (0..dim)
            .map(|j| train.iter().map(|&i| x(i, j)).sum::<f64>() / train.len() as f64)
            .collect();
        let std: Vec<f64> = (0..dim)
            .map(|j| {
                let v = train
                    .iter()
                    .map(|&i| (x(i, j) - mean[j]).powi(2))
                    .sum::<f64>()
                    / train.len() as f64;
                v.sqrt().max(1e-8)
            })
            .collect();
        let feats =
            |i: usize| -> Vec<f64> { (0..dim).map(|j| (x(i, j) - mean[j]) / std[j]).collect() };
        let xtr: Vec<Vec<f64>> = train.iter().map(|&i| feats(i)).collect();
        let xte: Vec<Vec<f64>> = test.iter().map(|&i| feats(i)).collect();
        let (mut weight, mut bias, mut heldout) = (Vec::new(), Vec::new(), Vec::new());
        for (a, name) in labels.names.iter().enumerate() {
            let ytr: Vec<f64> = train
                .iter()
                .map(|&i| f64::from(u8::from(labels.labels[i].contains(&a))))
                .collect();
            let (w, b) = logistic(&xtr, &ytr, opts);
            let scores: Vec<f64> = xte.iter().map(|f| dot(&w, f) + b).collect();
            let yte: Vec<bool> = test
                .iter()
                .map(|&i| labels.labels[i].contains(&a))
                .collect();
            let correct = scores
                .iter()
                .zip(&yte)
                .filter(|&(&s, &y)| (s > 0.0) == y)
                .count();
            heldout.push(HeldOut {
                name: name.clone(),
                positives: items
                    .iter()
                    .filter(|&&i| labels.labels[i].contains(&a))
                    .count(),
                base_rate: yte.iter().filter(|&&y| y).count() as f64 / yte.len() as f64,
                accuracy: correct as f64 / yte.len() as f64,
                auc: auc(&scores, &yte),
            });
            // Back to raw latents: w_raw = w / std, b_raw = b − Σ w·mean / std.
            let b_raw = b - (0..dim).map(|j| w[j] * mean[j] / std[j]).sum::<f64>();
            weight.extend((0..dim).map(|j| (w[j] / std[j]) as f32));
            bias.push(b_raw as f32);
        }
        Ok(Attributes {
            names: labels.names.clone(),
            dim,
            weight,
            bias,
            heldout,
            meta: BTreeMap::new(),
        })
    }

    /// The index of attribute `name`, or an error listing the names.
    pub fn index(&self, name: &str) -> Result<usize> {
        index_of(&self.names, name)
    }

    /// The guidance of attribute `a` (towards or away from it) at `scale`.
    pub fn guidance(&self, a: usize, toward: bool, scale: f32) -> Guidance<'_> {
        Guidance {
            weight: &self.weight[a * self.dim..(a + 1) * self.dim],
            bias: self.bias[a],
            toward,
            scale,
        }
    }

    /// The file's bytes (see the module docs).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let a = self.names.len();
        let names =
            serde_json::to_string(&self.names).map_err(|e| Error::Invalid(e.to_string()))?;
        let heldout =
            serde_json::to_string(&self.heldout).map_err(|e| Error::Invalid(e.to_string()))?;
        let mut meta: Vec<(&str, &str)> =
            vec![(ATTR_KEY, "1"), ("names", &names), ("heldout", &heldout)];
        meta.extend(self.meta.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        Ok(serialize(
            &[
                ("attributes.weight", &[a, self.dim], &self.weight),
                ("attributes.bias", &[a], &self.bias),
            ],
            &meta,
        )?)
    }

    /// Reads a file written by [`Self::to_bytes`]; errors name the file and what is wrong.
    pub fn load(path: &Path) -> Result<Attributes> {
        let p = path.display().to_string();
        let bad = |m: String| Error::Invalid(format!("{p}: {m}"));
        let f = WeightFile::open(path).map_err(|e| bad(e.to_string()))?;
        if f.metadata(ATTR_KEY) != Some("1") {
            return Err(bad(format!(
                "not an attribute file (no `{ATTR_KEY}` = 1 metadata; make one with `seqrec pdit attributes`)"
            )));
        }
        let names: Vec<String> = serde_json::from_str(f.metadata("names").unwrap_or(""))
            .map_err(|e| bad(format!("metadata `names`: {e}")))?;
        let heldout: Vec<HeldOut> = serde_json::from_str(f.metadata("heldout").unwrap_or("[]"))
            .map_err(|e| bad(format!("metadata `heldout`: {e}")))?;
        let dim = f
            .info("attributes.weight")
            .and_then(|i| (i.shape.len() == 2).then(|| i.shape[1]))
            .ok_or_else(|| bad("no `attributes.weight` of shape [A, d]".into()))?;
        let a = names.len();
        let weight = f
            .tensor("attributes.weight", &[a, dim])
            .map_err(|e| bad(format!("{e} ({a} names)")))?
            .as_slice()
            .to_vec();
        let bias = f
            .tensor("attributes.bias", &[a])
            .map_err(|e| bad(format!("{e} ({a} names)")))?
            .as_slice()
            .to_vec();
        let meta = f
            .metadata_map()
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), ATTR_KEY | "names" | "heldout"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Attributes {
            names,
            dim,
            weight,
            bias,
            heldout,
            meta,
        })
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Full-batch L2-regularised logistic regression by Adam: `(w, b)`.
fn logistic(x: &[Vec<f64>], y: &[f64], opts: &FitOptions) -> (Vec<f64>, f64) {
    let d = x[0].len();
    let n = x.len() as f64;
    // θ = (w, b): the bias is the last entry and carries no penalty.
    let mut theta = vec![0.0; d + 1];
    let (mut m, mut v, mut g) = (vec![0.0; d + 1], vec![0.0; d + 1], vec![0.0; d + 1]);
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
    for step in 1..=opts.steps {
        g.iter_mut().for_each(|x| *x = 0.0);
        for (xi, &yi) in x.iter().zip(y) {
            let r = (sigmoid(dot(&theta[..d], xi) + theta[d]) - yi) / n;
            for (gj, xj) in g.iter_mut().zip(xi) {
                *gj += r * xj;
            }
            g[d] += r;
        }
        for j in 0..d {
            g[j] += opts.l2 * theta[j];
        }
        let (c1, c2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
        for j in 0..=d {
            m[j] = b1 * m[j] + (1.0 - b1) * g[j];
            v[j] = b2 * v[j] + (1.0 - b2) * g[j] * g[j];
            theta[j] -= opts.lr * (m[j] / c1) / ((v[j] / c2).sqrt() + eps);
        }
    }
    let b = theta.pop().unwrap_or(0.0);
    (theta, b)
}

/// ROC AUC of `scores` against `labels` (ties count one half); 0.5 when a class is empty.
pub fn auc(scores: &[f64], labels: &[bool]) -> f64 {
    let pos: Vec<f64> = scores
        .iter()
        .zip(labels)
        .filter(|p| *p.1)
        .map(|p| *p.0)
        .collect();
    let neg: Vec<f64> = scores
        .iter()
        .zip(labels)
        .filter(|p| !*p.1)
        .map(|p| *p.0)
        .collect();
    if pos.is_empty() || neg.is_empty() {
        return 0.5;
    }
    let mut wins = 0.0;
    for &p in &pos {
        for &q in &neg {
            wins += if p > q {
                1.0
            } else if p == q {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (pos.len() * neg.len()) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize, d: usize, seed: u64) -> (Vec<f32>, ItemLabels) {
        // Attribute 0 ("x") when the first coordinate is positive; attribute 1 ("noise") at
        // random.
        let mut rng = Rng::new(seed);
        let mut lat = vec![0.0f32; n * d];
        let mut lab = vec![Vec::new(); n];
        for i in 1..n {
            for j in 0..d {
                lat[i * d + j] = rng.normal() * 0.1;
            }
            if lat[i * d] > 0.0 {
                lab[i].push(0);
            }
            if rng.next_f64() < 0.3 {
                lab[i].push(1);
            }
        }
        let mut known = vec![true; n];
        known[0] = false;
        (
            lat,
            ItemLabels {
                names: vec!["x".into(), "noise".into()],
                labels: lab,
                known,
            },
        )
    }

    #[test]
    fn a_learnable_attribute_is_learned_and_noise_is_not() {
        let (lat, lab) = labels(400, 6, 3);
        let a = Attributes::fit(&lat, 6, &lab, &FitOptions::default()).unwrap();
        assert!(a.heldout[0].auc > 0.97, "{:?}", a.heldout);
        assert!((a.heldout[1].auc - 0.5).abs() < 0.15, "{:?}", a.heldout);
        // The raw-latent weights give the standardised model's decisions.
        let g = a.guidance(0, true, 1.0);
        let hits = (1..400)
            .filter(|&i| (g.probability(&lat[i * 6..i * 6 + 6]) > 0.5) == lab.has(i as u32, 0))
            .count();
        assert!(hits > 380, "{hits}");
        let back = {
            let dir = std::env::temp_dir().join(format!("seqrec-attr-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let f = dir.join("a.safetensors");
            std::fs::write(&f, a.to_bytes().unwrap()).unwrap();
            let back = Attributes::load(&f).unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
            back
        };
        assert_eq!(back, a);
        assert!(a.index("y").unwrap_err().to_string().contains("x, noise"));
    }

    #[test]
    fn auc_counts_pairs() {
        assert_eq!(auc(&[0.9, 0.1, 0.5], &[true, false, false]), 1.0);
        assert_eq!(auc(&[0.1, 0.9], &[true, false]), 0.0);
        assert_eq!(auc(&[0.5, 0.5], &[true, false]), 0.5);
    }

    #[test]
    fn recbole_labels_name_bad_rows() {
        let dir = std::env::temp_dir().join(format!("seqrec-attr-rb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("x.item");
        let tokens: Vec<String> = ["", "10", "20"].iter().map(|s| s.to_string()).collect();
        std::fs::write(
            &f,
            "item_id:token\tclass:token_seq\n10\tA B\n20\tB\n30\tC\n",
        )
        .unwrap();
        let l = ItemLabels::read_recbole(&f, "class", &tokens).unwrap();
        assert_eq!(l.names, ["A", "B"]);
        assert!(l.has(1, 0) && l.has(1, 1) && !l.has(2, 0) && l.has(2, 1));
        assert_eq!(l.known, [false, true, true]);
        let e = ItemLabels::read_recbole(&f, "genre", &tokens)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.item:1") && e.contains("no `genre` column"),
            "{e}"
        );
        std::fs::write(&f, "item_id:token\tclass:token_seq\n10\n").unwrap();
        let e = ItemLabels::read_recbole(&f, "class", &tokens)
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.item:2") && e.contains("1 fields"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
