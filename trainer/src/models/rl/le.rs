//! The language environment's cache (`spec/thesis-models.md` §7, LE / LEA): what the RL heads
//! read from a language environment, computed once per training sample.
//!
//! A cache is a safetensors file (specified in `docs/formats.md`, "LE cache") whose rows are
//! the training transitions in the order [`Transitions`] enumerates them (training sequences
//! in the split's order, positions `1..m` within each):
//!
//! | tensor | dtype | shape | |
//! |---|---|---|---|
//! | `action` | I64 or I32 | `[S]` | the logged action `a_t` (checked against the data set) |
//! | `state` | F32 | `[S, d_e]` | the LE state `s'^e_t` of the history before `a_t` |
//! | `reward` | F32 | `[S]` | `r^e(p_t, a_t)` |
//! | `negative` | I64 or I32 | `[S]` | the pre-sampled negative action `a⁻_t` |
//! | `negative_reward` | F32 | `[S]` | `r^e(p_t, a⁻_t)` |
//! | `augmented` | I64 or I32 | `[S]` | the augmented positive `a^e_t` (LEA) |
//! | `augmented_reward` | F32 | `[S]` | `r^e(p_t, a^e_t)` |
//!
//! with the metadata `seqrec.le`, a JSON object `{"version": 1, "n_items": N}` (`N` item ids,
//! padding included). Only `action` is required: each variant says which others it needs
//! ([`LeVariant::check`]). Item ids are the data set's internal ids (`seqrec le samples` lists
//! them with their tokens).

use super::samples::Transitions;
use crate::error::{Error, Result};
use safetensors::{Dtype, SafeTensors};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// Metadata key of an LE cache.
pub const LE_KEY: &str = "seqrec.le";

/// The cache format's version.
pub const LE_VERSION: u64 = 1;

/// Which part of the state the Q head reads.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LeState {
    /// The backbone's `h_t` only (no LE state).
    Backbone,
    /// `s'^e_t ‖ h_t` (LES).
    Concat,
    /// `s'^e_t` only (LES′).
    LeOnly,
}

impl LeState {
    /// The checkpoint's `le_state` value.
    pub fn name(self) -> &'static str {
        match self {
            LeState::Backbone => "backbone",
            LeState::Concat => "concat",
            LeState::LeOnly => "le_only",
        }
    }
}

/// An LE variant (§7.5): which of the LE state, the LE rewards and the augmented action the
/// RL losses use.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LeVariant {
    /// The Q head's state.
    pub state: LeState,
    /// LE rewards for the positive, negative (and augmented) actions instead of 1 / 0 (/ 1).
    pub reward: bool,
    /// The augmentation losses `w_ah·L_ah + w_aq·L_aq`.
    pub augment: bool,
}

/// The variants by name, in the thesis's order.
pub const LE_VARIANTS: &[(&str, LeVariant)] = &[
    ("ler", LeVariant::new(LeState::Backbone, true, false)),
    ("les", LeVariant::new(LeState::Concat, false, false)),
    ("les'", LeVariant::new(LeState::LeOnly, false, false)),
    ("lea", LeVariant::new(LeState::Backbone, false, true)),
    ("lear", LeVariant::new(LeState::Backbone, true, true)),
    ("leas", LeVariant::new(LeState::Concat, false, true)),
    ("leasr", LeVariant::new(LeState::Concat, true, true)),
    ("leas'r", LeVariant::new(LeState::LeOnly, true, true)),
];

const VARIANT_NAMES: &str = "ler, les, les', lea, lear, leas, leasr, leas'r";

impl LeVariant {
    const fn new(state: LeState, reward: bool, augment: bool) -> LeVariant {
        LeVariant {
            state,
            reward,
            augment,
        }
    }

    /// The variant's name (`leasr`, ...).
    pub fn name(self) -> &'static str {
        LE_VARIANTS
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("le", |(n, _)| n)
    }

    /// Checks that `cache` holds what this variant reads; the error names the tensor.
    pub fn check(self, cache: &LeCache) -> Result<()> {
        let need = |what: bool, has: bool, tensor: &str| {
            if what && !has {
                Err(Error::Invalid(format!(
                    "{}: --le-variant {} needs the cache's `{tensor}` tensor, which it does not have",
                    cache.origin,
                    self.name()
                )))
            } else {
                Ok(())
            }
        };
        need(
            self.state != LeState::Backbone,
            cache.state_dim > 0,
            "state",
        )?;
        need(self.reward, !cache.reward.is_empty(), "reward")?;
        need(self.reward, !cache.negative.is_empty(), "negative")?;
        need(
            self.reward,
            !cache.negative_reward.is_empty(),
            "negative_reward",
        )?;
        need(self.augment, !cache.augmented.is_empty(), "augmented")?;
        need(
            self.augment && self.reward,
            !cache.augmented_reward.is_empty(),
            "augmented_reward",
        )
    }
}

impl fmt::Display for LeVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LeVariant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        // The thesis's prime `′` and, for shells, `p` (`lesp`, `leaspr`) spell `'`.
        let s = match s.to_ascii_lowercase().replace('′', "'").as_str() {
            "lesp" => "les'".to_string(),
            "leaspr" => "leas'r".to_string(),
            other => other.to_string(),
        };
        LE_VARIANTS
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, v)| *v)
            .ok_or_else(|| Error::unknown_name("LE variant", &s, VARIANT_NAMES))
    }
}

/// A loaded LE cache (see the module docs), checked against the training transitions.
#[derive(Clone, Debug, Default)]
pub struct LeCache {
    /// Where it came from (for errors).
    pub origin: String,
    /// Samples (training transitions).
    pub n_samples: usize,
    /// Width `d_e` of the LE state (0 without `state`).
    pub state_dim: usize,
    state: Vec<f32>,
    reward: Vec<f32>,
    negative: Vec<u32>,
    negative_reward: Vec<f32>,
    augmented: Vec<u32>,
    augmented_reward: Vec<f32>,
}

impl LeCache {
    /// Reads the cache at `path` for the transitions `data` over `n_items` ids.
    ///
    /// # Errors
    /// One line naming the file and the problem: unreadable or truncated file, no `seqrec.le`
    /// metadata, another catalog size, another number of samples, an action that is not the
    /// data set's, a tensor of the wrong dtype or shape, a non-finite value, an id outside
    /// `1..n_items`.
    pub fn open(path: &Path, data: &Transitions, n_items: usize) -> Result<LeCache> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Invalid(format!("{origin}: cannot read the LE cache: {e}")))?;
        Self::from_bytes(&bytes, &origin, data, n_items)
    }

    /// [`Self::open`] on a file image; `origin` names it in errors.
    pub fn from_bytes(
        bytes: &[u8],
        origin: &str,
        data: &Transitions,
        n_items: usize,
    ) -> Result<LeCache> {
        let bad = |msg: String| Error::Invalid(format!("{origin}: {msg}"));
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a readable safetensors file (truncated?): {e}")))?;
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
        let json = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(LE_KEY))
            .ok_or_else(|| bad(format!("no `{LE_KEY}` metadata: not an LE cache")))?;
        let v: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| bad(format!("`{LE_KEY}` is not valid JSON: {e}")))?;
        let version = v.get("version").and_then(|x| x.as_u64());
        if version != Some(LE_VERSION) {
            return Err(bad(format!(
                "`{LE_KEY}` version {} is not {LE_VERSION}",
                v.get("version").map_or("(none)".into(), |x| x.to_string())
            )));
        }
        let found = v.get("n_items").and_then(|x| x.as_u64()).ok_or_else(|| {
            bad(format!(
                "`{LE_KEY}` has no `n_items` (item ids, padding included)"
            ))
        })? as usize;
        if found != n_items {
            return Err(bad(format!(
                "an LE cache over {found} item ids, the data set has {n_items} (padding included)"
            )));
        }
        let s = data.len();
        let reader = Reader { st: &st, origin, s };
        let action = reader
            .ids("action", n_items)?
            .ok_or_else(|| bad("no `action` tensor".into()))?;
        if action.len() != s {
            return Err(bad(format!(
                "{} samples, the data set's training split has {s} transitions (a cache of \
                 another data set or split?)",
                action.len()
            )));
        }
        for (i, &a) in action.iter().enumerate() {
            let t = data.get(i);
            if a != t.action {
                return Err(bad(format!(
                    "sample {i} (user {}, after {} items) has action {a}, the data set {} \
                     (a cache of another data set or split?)",
                    t.user,
                    t.state.len(),
                    t.action
                )));
            }
        }
        let (state, state_dim) = match reader.floats("state")? {
            None => (Vec::new(), 0),
            Some((values, shape)) => {
                if shape.len() != 2 || shape[0] != s || shape[1] == 0 {
                    return Err(bad(format!(
                        "tensor `state` has shape {shape:?}, expected [{s}, d_e]"
                    )));
                }
                (values, shape[1])
            }
        };
        let vector = |name: &str| -> Result<Vec<f32>> {
            match reader.floats(name)? {
                None => Ok(Vec::new()),
                Some((v, shape)) if shape == [s] => Ok(v),
                Some((_, shape)) => Err(bad(format!(
                    "tensor `{name}` has shape {shape:?}, expected [{s}]"
                ))),
            }
        };
        let cache = LeCache {
            origin: origin.to_string(),
            n_samples: s,
            state_dim,
            state,
            reward: vector("reward")?,
            negative: reader.ids("negative", n_items)?.unwrap_or_default(),
            negative_reward: vector("negative_reward")?,
            augmented: reader.ids("augmented", n_items)?.unwrap_or_default(),
            augmented_reward: vector("augmented_reward")?,
        };
        for (a, b) in [
            ("negative", "negative_reward"),
            ("augmented", "augmented_reward"),
        ] {
            if st.tensor(b).is_ok() && st.tensor(a).is_err() {
                return Err(bad(format!("tensor `{b}` without `{a}`")));
            }
        }
        Ok(cache)
    }

    /// The LE state of sample `i`.
    pub fn state(&self, i: usize) -> &[f32] {
        &self.state[i * self.state_dim..(i + 1) * self.state_dim]
    }

    /// `r^e(p_t, a_t)` of sample `i`.
    pub fn reward(&self, i: usize) -> f32 {
        self.reward[i]
    }

    /// The pre-sampled negative of sample `i`, if the cache has them.
    pub fn negative(&self, i: usize) -> Option<u32> {
        self.negative.get(i).copied()
    }

    /// `r^e(p_t, a⁻_t)` of sample `i`.
    pub fn negative_reward(&self, i: usize) -> f32 {
        self.negative_reward[i]
    }

    /// The augmented action `a^e_t` of sample `i`.
    pub fn augmented(&self, i: usize) -> u32 {
        self.augmented[i]
    }

    /// `r^e(p_t, a^e_t)` of sample `i`.
    pub fn augmented_reward(&self, i: usize) -> f32 {
        self.augmented_reward[i]
    }
}

/// A cache to write (see the module docs): the vectors by sample.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeCacheData {
    /// Item ids, padding included.
    pub n_items: usize,
    /// `a_t`.
    pub action: Vec<u32>,
    /// Width of `state` (0: none).
    pub state_dim: usize,
    /// `s'^e_t`, `[S, state_dim]`.
    pub state: Vec<f32>,
    /// `r^e(p_t, a_t)` (empty: none).
    pub reward: Vec<f32>,
    /// `a⁻_t` (empty: none).
    pub negative: Vec<u32>,
    /// `r^e(p_t, a⁻_t)` (empty: none).
    pub negative_reward: Vec<f32>,
    /// `a^e_t` (empty: none).
    pub augmented: Vec<u32>,
    /// `r^e(p_t, a^e_t)` (empty: none).
    pub augmented_reward: Vec<f32>,
}

impl LeCacheData {
    /// The safetensors file image, with `extra` keys added to the `seqrec.le` metadata
    /// (provenance).
    pub fn to_bytes(&self, extra: &[(&str, serde_json::Value)]) -> Result<Vec<u8>> {
        let mut meta = serde_json::json!({"version": LE_VERSION, "n_items": self.n_items});
        for (k, v) in extra {
            meta[*k] = v.clone();
        }
        let ids =
            |v: &[u32]| -> Vec<u8> { v.iter().flat_map(|&x| i64::from(x).to_le_bytes()).collect() };
        let floats = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let s = self.action.len();
        let mut parts: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> =
            vec![("action", Dtype::I64, vec![s], ids(&self.action))];
        if self.state_dim > 0 {
            parts.push((
                "state",
                Dtype::F32,
                vec![s, self.state_dim],
                floats(&self.state),
            ));
        }
        for (name, v) in [
            ("reward", &self.reward),
            ("negative_reward", &self.negative_reward),
        ] {
            if !v.is_empty() {
                parts.push((name, Dtype::F32, vec![s], floats(v)));
            }
        }
        for (name, v) in [("negative", &self.negative), ("augmented", &self.augmented)] {
            if !v.is_empty() {
                parts.push((name, Dtype::I64, vec![s], ids(v)));
            }
        }
        if !self.augmented_reward.is_empty() {
            parts.push((
                "augmented_reward",
                Dtype::F32,
                vec![s],
                floats(&self.augmented_reward),
            ));
        }
        let views = parts
            .iter()
            .map(|(n, d, shape, b)| {
                safetensors::tensor::TensorView::new(*d, shape.clone(), b)
                    .map(|v| (*n, v))
                    .map_err(|e| Error::Invalid(format!("LE cache tensor `{n}`: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta = std::collections::HashMap::from([(LE_KEY.to_string(), meta.to_string())]);
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::Invalid(format!("cannot write the LE cache: {e}")))
    }
}

/// Typed reads of a cache's tensors.
struct Reader<'a, 'b> {
    st: &'a SafeTensors<'b>,
    origin: &'a str,
    s: usize,
}

impl Reader<'_, '_> {
    fn bad(&self, msg: String) -> Error {
        Error::Invalid(format!("{}: {msg}", self.origin))
    }

    /// An F32 tensor's values and shape, `None` when absent; non-finite values are an error.
    fn floats(&self, name: &str) -> Result<Option<(Vec<f32>, Vec<usize>)>> {
        let Ok(t) = self.st.tensor(name) else {
            return Ok(None);
        };
        if t.dtype() != Dtype::F32 {
            return Err(self.bad(format!("tensor `{name}` is {:?}, expected F32", t.dtype())));
        }
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(at) = v.iter().position(|x| !x.is_finite()) {
            let per = (v.len() / self.s.max(1)).max(1);
            return Err(self.bad(format!(
                "tensor `{name}` has a non-finite value ({}) at sample {}",
                v[at],
                at / per
            )));
        }
        Ok(Some((v, t.shape().to_vec())))
    }

    /// An I64 / I32 vector of item ids in `1..n_items`, `None` when absent.
    fn ids(&self, name: &str, n_items: usize) -> Result<Option<Vec<u32>>> {
        let Ok(t) = self.st.tensor(name) else {
            return Ok(None);
        };
        if t.shape().len() != 1 {
            return Err(self.bad(format!(
                "tensor `{name}` has shape {:?}, expected [samples]",
                t.shape()
            )));
        }
        let raw: Vec<i64> = match t.dtype() {
            Dtype::I64 => t
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            Dtype::I32 => t
                .data()
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes(c.try_into().expect("4 bytes"))))
                .collect(),
            other => {
                return Err(self.bad(format!(
                    "tensor `{name}` is {other:?}, expected I64 or I32 item ids"
                )));
            }
        };
        raw.iter()
            .enumerate()
            .map(|(i, &x)| {
                if x >= 1 && (x as u64) < n_items as u64 {
                    Ok(x as u32)
                } else {
                    Err(self.bad(format!(
                        "`{name}` of sample {i} is {x}, not an item id in 1..{n_items}"
                    )))
                }
            })
            .collect::<Result<Vec<u32>>>()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;
    use std::collections::HashMap;

    const N: usize = 12;

    /// A tensor to write: dtype, shape, little-endian bytes.
    type Raw = (Dtype, Vec<usize>, Vec<u8>);

    fn data() -> Transitions {
        Transitions::from_sequences(vec![(1, vec![3, 8, 1, 3]), (2, vec![5, 2, 9])], 3).unwrap()
    }

    fn ids(v: &[i64]) -> Raw {
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        (Dtype::I64, vec![v.len()], bytes)
    }

    fn floats(v: &[f32], shape: &[usize]) -> Raw {
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        (Dtype::F32, shape.to_vec(), bytes)
    }

    /// A cache file image of `tensors` with `meta` as its `seqrec.le` metadata.
    fn file(tensors: &[(&str, Raw)], meta: Option<&str>) -> Vec<u8> {
        let views: Vec<(&str, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, (d, s, b))| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        let meta: Option<HashMap<String, String>> =
            meta.map(|m| HashMap::from([(LE_KEY.to_string(), m.to_string())]));
        safetensors::serialize(views, meta).unwrap()
    }

    const META: &str = r#"{"version": 1, "n_items": 12}"#;

    /// Every tensor, for the 5 transitions of [`data`]: actions 8, 1, 3, 2, 9.
    fn full() -> Vec<(&'static str, Raw)> {
        let state: Vec<f32> = (0..10).map(|x| x as f32 * 0.5).collect();
        vec![
            ("action", ids(&[8, 1, 3, 2, 9])),
            ("state", floats(&state, &[5, 2])),
            ("reward", floats(&[0.9, 0.1, 0.5, 0.7, 0.3], &[5])),
            ("negative", ids(&[4, 4, 6, 7, 11])),
            (
                "negative_reward",
                floats(&[-0.2, 0.0, 0.1, -1.0, 0.2], &[5]),
            ),
            ("augmented", ids(&[8, 2, 3, 2, 10])),
            ("augmented_reward", floats(&[0.9, 0.4, 0.5, 0.7, 0.6], &[5])),
        ]
    }

    fn open(bytes: &[u8]) -> Result<LeCache> {
        LeCache::from_bytes(bytes, "le.safetensors", &data(), N)
    }

    fn error(bytes: &[u8]) -> String {
        let e = open(bytes).unwrap_err().to_string();
        assert!(e.starts_with("le.safetensors: "), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        e
    }

    #[test]
    fn reads_every_tensor_by_sample() {
        let c = open(&file(&full(), Some(META))).unwrap();
        assert_eq!((c.n_samples, c.state_dim), (5, 2));
        assert_eq!(c.state(3), [3.0, 3.5]);
        assert_eq!((c.reward(0), c.negative(4)), (0.9, Some(11)));
        assert_eq!((c.negative_reward(3), c.augmented(1)), (-1.0, 2));
        assert_eq!(c.augmented_reward(4), 0.6);
        for (name, v) in LE_VARIANTS {
            v.check(&c).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(name.parse::<LeVariant>().unwrap(), *v);
        }
        assert_eq!("LEAS′R".parse::<LeVariant>().unwrap().name(), "leas'r");
        assert_eq!("leaspr".parse::<LeVariant>().unwrap().name(), "leas'r");
        assert_eq!("lesp".parse::<LeVariant>().unwrap().name(), "les'");
        assert!("lex".parse::<LeVariant>().is_err());
        // The action alone is a cache: the variants say what they lack.
        let c = open(&file(&full()[..1], Some(META))).unwrap();
        assert_eq!(c.negative(0), None);
        let e = "leasr".parse::<LeVariant>().unwrap().check(&c).unwrap_err();
        assert!(e.to_string().contains("`state`"), "{e}");
        let e = "lear".parse::<LeVariant>().unwrap().check(&c).unwrap_err();
        assert!(e.to_string().contains("`reward`"), "{e}");
        let e = "lea".parse::<LeVariant>().unwrap().check(&c).unwrap_err();
        assert!(e.to_string().contains("`augmented`"), "{e}");
    }

    #[test]
    fn batch_rows_take_the_next_sample_as_next_state() {
        use super::super::samples::LeRows;
        let c = open(&file(&full(), Some(META))).unwrap();
        let tr = data();
        // Samples 2 (user 1's last: done) and 3 (user 2's first).
        let v: LeVariant = "leasr".parse().unwrap();
        let r = LeRows::gather(&c, v, &tr, &[2, 3]);
        assert_eq!(r.state, [2.0, 2.5, 3.0, 3.5]);
        assert_eq!(r.next, [0.0, 0.0, 4.0, 4.5]);
        assert_eq!(
            (r.reward, r.negative_reward),
            (vec![0.5, 0.7], vec![0.1, -1.0])
        );
        assert_eq!(
            (r.augmented, r.augmented_reward),
            (vec![3, 2], vec![0.5, 0.7])
        );
        // A variant reads only its parts.
        let r = LeRows::gather(&c, "lea".parse().unwrap(), &tr, &[2, 3]);
        assert!(r.state.is_empty() && r.reward.is_empty() && r.augmented_reward.is_empty());
        assert_eq!(r.augmented, [3, 2]);
    }

    #[test]
    fn bad_caches_are_one_line_errors_naming_the_problem() {
        let good = file(&full(), Some(META));
        let e = error(&good[..good.len() - 7]);
        assert!(e.contains("truncated"), "{e}");
        let e = error(&file(&full(), None));
        assert!(e.contains("not an LE cache"), "{e}");
        let e = error(&file(&full(), Some(r#"{"version": 1, "n_items": 40}"#)));
        assert!(e.contains("40 item ids") && e.contains("12"), "{e}");
        let e = error(&file(&full(), Some(r#"{"version": 2, "n_items": 12}"#)));
        assert!(e.contains("version 2"), "{e}");

        let mut t = full();
        t[0].1 = ids(&[8, 1, 3, 2]);
        let e = error(&file(&t[..1], Some(META)));
        assert!(
            e.contains("4 samples") && e.contains("5 transitions"),
            "{e}"
        );
        t[0].1 = ids(&[8, 1, 3, 5, 9]);
        let e = error(&file(&t[..1], Some(META)));
        assert!(
            e.contains("sample 3 (user 2") && e.contains("action 5"),
            "{e}"
        );

        let mut t = full();
        t[2].1 = floats(&[0.9, 0.1, f32::NAN, 0.7, 0.3], &[5]);
        let e = error(&file(&t, Some(META)));
        assert!(
            e.contains("`reward`") && e.contains("NaN") && e.contains("sample 2"),
            "{e}"
        );
        let mut t = full();
        t[1].1 = floats(&[0.0; 10], &[10]);
        let e = error(&file(&t, Some(META)));
        assert!(e.contains("`state` has shape [10]"), "{e}");
        let mut t = full();
        t[1].1 = (Dtype::I64, vec![5, 2], vec![0; 80]);
        let e = error(&file(&t, Some(META)));
        assert!(e.contains("`state` is I64, expected F32"), "{e}");
        let mut t = full();
        t[3].1 = ids(&[4, 4, 12, 7, 11]);
        let e = error(&file(&t, Some(META)));
        assert!(e.contains("`negative` of sample 2 is 12"), "{e}");
        let t = full();
        let e = error(&file(&[t[0].clone(), t[4].clone()], Some(META)));
        assert!(e.contains("`negative_reward` without `negative`"), "{e}");
    }
}
