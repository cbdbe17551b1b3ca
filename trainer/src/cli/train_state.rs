//! The state of a training run that an interruption must not lose (`OUT.state`): written after
//! every epoch, read by `--resume`, removed when the run ends. It holds what the next epoch
//! depends on, so that a resumed run makes the same draws and the same updates as one that was
//! never stopped (on the same threads): the weights, the best epoch's weights, the optimizer's
//! moments and step count, the random stream's state, the epoch and patience counters, the
//! results of the stages already done, and a fingerprint of the options that shape the run
//! (a resumed run with other options is refused, naming the file).
//!
//! Format: a safetensors file. Metadata `seqrec.train_state` is a JSON object: `version` (1),
//! `stage`, `epoch` (the last finished), `since_best`, `best_epoch`, `best_value`, `rng` (the
//! generator's two state words as decimal strings), `adam_t`, `has_best`, `stages` (earlier
//! stages: `[name, best epoch, best value]`) and `fingerprint`. Tensors: `param/NAME`
//! (current weights, the parameter's shape), `best/NAME` (the best epoch's, when `has_best`),
//! `adam_m/NAME` and `adam_v/NAME` (the moments, flat).

use super::CliError;
use crate::nn::{Adam, Param, Rng};
use seqrec_engine::WeightFile;
use seqrec_engine::weights::serialize;
use serde_json::json;
use std::path::{Path, PathBuf};

/// The metadata key of the state.
const KEY: &str = "seqrec.train_state";

/// The counters and scalars of a run's state (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// The stage being trained.
    pub stage: String,
    /// The last finished epoch of the stage.
    pub epoch: usize,
    /// Epochs since the best one.
    pub since_best: usize,
    /// The best epoch of the stage so far (0: none).
    pub best_epoch: usize,
    /// Its validation value.
    pub best_value: f64,
    /// The run's random stream after the epoch.
    pub rng: [u64; 2],
    /// Earlier stages' results: name, best epoch, best value.
    pub stages: Vec<(String, usize, f64)>,
}

/// Where the state of the run writing `out` is kept: `out` with `.state` appended.
pub fn state_path(out: &Path) -> PathBuf {
    with_suffix(out, ".state")
}

/// `path` with `suffix` appended to its last component.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Writes the state (to a temporary file renamed over `path`, so that an interruption while
/// writing keeps the previous epoch's state).
pub fn save(
    path: &Path,
    progress: &Progress,
    fingerprint: &str,
    params: &[&Param],
    best: Option<&[Vec<f32>]>,
    adam: &Adam,
) -> Result<(), CliError> {
    let (adam_t, moments) = adam.state();
    let meta = json!({
        "version": 1,
        "stage": progress.stage,
        "epoch": progress.epoch,
        "since_best": progress.since_best,
        "best_epoch": progress.best_epoch,
        "best_value": progress.best_value,
        "rng": [progress.rng[0].to_string(), progress.rng[1].to_string()],
        "adam_t": adam_t,
        "has_best": best.is_some(),
        "stages": progress.stages,
        "fingerprint": fingerprint,
    })
    .to_string();
    let mut owned: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
    for (i, p) in params.iter().enumerate() {
        owned.push((format!("param/{}", p.name), p.shape.clone(), &p.value));
        if let Some(b) = best {
            owned.push((format!("best/{}", p.name), p.shape.clone(), &b[i]));
        }
    }
    for &(n, m, v) in &moments {
        owned.push((format!("adam_m/{n}"), vec![m.len()], m));
        owned.push((format!("adam_v/{n}"), vec![v.len()], v));
    }
    let tensors: Vec<(&str, &[usize], &[f32])> = owned
        .iter()
        .map(|(n, shape, v)| (n.as_str(), shape.as_slice(), *v))
        .collect();
    let bytes = serialize(&tensors, &[(KEY, &meta)]).map_err(CliError::input)?;
    let tmp = with_suffix(path, ".tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| CliError::input(format!("{}: {e}", path.display())))
}

/// A state file opened by `--resume`, its fingerprint checked.
pub struct Saved {
    /// The counters.
    pub progress: Progress,
    has_best: bool,
    adam_t: u64,
    file: WeightFile,
}

impl Saved {
    /// Opens the state at `path`; refuses a missing file, one of another version, or one
    /// written by a run whose options (`fingerprint`) differ.
    pub fn open(path: &Path, fingerprint: &str) -> Result<Saved, CliError> {
        if !path.exists() {
            return Err(CliError::input(format!(
                "--resume: {} does not exist (a run writes it after every epoch and removes it \
                 when it ends)",
                path.display()
            )));
        }
        let file = WeightFile::open(path).map_err(CliError::input)?;
        let bad = |what: &str| CliError::input(format!("{}: {what}", path.display()));
        let meta: serde_json::Value = file
            .metadata(KEY)
            .ok_or_else(|| bad(&format!("no `{KEY}` metadata: not a training state")))
            .and_then(|m| serde_json::from_str(m).map_err(|e| bad(&format!("{KEY}: {e}"))))?;
        if meta["version"] != 1 {
            return Err(bad(&format!("state version {} is not 1", meta["version"])));
        }
        let saved = meta["fingerprint"].as_str().unwrap_or("");
        if saved != fingerprint {
            return Err(bad(&format!(
                "written by a run with other options; --resume needs the same ones\n  that \
                 run: {saved}\n  this run: {fingerprint}"
            )));
        }
        let int = |k: &str| {
            meta[k]
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| bad(&format!("`{k}` is not a count")))
        };
        let word = |i: usize| {
            meta["rng"][i]
                .as_str()
                .and_then(|w| w.parse::<u64>().ok())
                .ok_or_else(|| bad("`rng` is not two decimal words"))
        };
        let stages = meta["stages"]
            .as_array()
            .ok_or_else(|| bad("`stages` is not a list"))?
            .iter()
            .map(|s| {
                Some((
                    s[0].as_str()?.to_string(),
                    s[1].as_u64()? as usize,
                    s[2].as_f64().unwrap_or(f64::NEG_INFINITY),
                ))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("`stages` entries are not [name, epoch, value]"))?;
        let progress = Progress {
            stage: meta["stage"]
                .as_str()
                .ok_or_else(|| bad("`stage` is not a name"))?
                .to_string(),
            epoch: int("epoch")?,
            since_best: int("since_best")?,
            best_epoch: int("best_epoch")?,
            best_value: meta["best_value"].as_f64().unwrap_or(f64::NEG_INFINITY),
            rng: [word(0)?, word(1)?],
            stages,
        };
        Ok(Saved {
            progress,
            has_best: meta["has_best"].as_bool().unwrap_or(false),
            adam_t: meta["adam_t"]
                .as_u64()
                .ok_or_else(|| bad("`adam_t` is not a count"))?,
            file,
        })
    }

    /// The run's random stream.
    pub fn rng(&self) -> Result<Rng, CliError> {
        Rng::from_state(self.progress.rng)
            .ok_or_else(|| CliError::input(format!("{}: `rng` is all zero", self.file.origin())))
    }

    /// Loads the weights into `params`, the moments into `adam`, and returns the best epoch's
    /// weights (in the order of `params`) if the state has them. A tensor missing or of another
    /// shape than the parameter is an error naming it.
    pub fn restore(
        &self,
        params: &mut [&mut Param],
        adam: &mut Adam,
    ) -> Result<Option<Vec<Vec<f32>>>, CliError> {
        let read = |name: String, shape: &[usize]| {
            self.file
                .tensor(&name, shape)
                .map(|t| t.as_slice().to_vec())
                .map_err(CliError::input)
        };
        let mut best = Vec::new();
        for p in params.iter_mut() {
            let v = read(format!("param/{}", p.name), &p.shape)?;
            p.value.copy_from_slice(&v);
            if self.has_best {
                best.push(read(format!("best/{}", p.name), &p.shape)?);
            }
        }
        let mut moments = Vec::new();
        for name in self.file.names() {
            if let Some(n) = name.strip_prefix("adam_m/") {
                let len = self.file.info(name).map_or(0, |i| i.shape.iter().product());
                let m = read(name.to_string(), &[len])?;
                let v = read(format!("adam_v/{n}"), &[len])?;
                moments.push((n.to_string(), m, v));
            }
        }
        // The optimizer's order is the parameter list's: sort the moments back into it.
        let order = |n: &str| params.iter().position(|p| p.name == n);
        if let Some((n, _, _)) = moments.iter().find(|(n, _, _)| order(n).is_none()) {
            return Err(CliError::input(format!(
                "{}: Adam moments of `{n}`, which is not a parameter of this model",
                self.file.origin()
            )));
        }
        moments.sort_by_key(|(n, _, _)| order(n));
        adam.restore(self.adam_t, moments)
            .map_err(CliError::input)?;
        Ok(self.has_best.then_some(best))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Optimizer;

    fn params() -> Vec<Param> {
        let mut a = Param::zeros("a.weight", &[2, 3]);
        let mut b = Param::zeros("b.bias", &[4]);
        a.value
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = i as f32);
        b.value
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = -(i as f32));
        vec![a, b]
    }

    #[test]
    fn state_round_trips_and_refuses_other_options() {
        let dir = std::env::temp_dir().join(format!("seqrec-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = state_path(&dir.join("m.safetensors"));
        assert!(path.to_string_lossy().ends_with("m.safetensors.state"));
        let mut ps = params();
        let mut adam = Adam::new(0.0);
        for p in ps.iter_mut() {
            p.grad.iter_mut().for_each(|g| *g = 0.5);
        }
        let mut refs: Vec<&mut Param> = ps.iter_mut().collect();
        adam.step(&mut refs, 0.1);
        let mut rng = Rng::new(7);
        rng.next_u64();
        let progress = Progress {
            stage: "cpc".into(),
            epoch: 3,
            since_best: 1,
            best_epoch: 2,
            best_value: 0.25,
            rng: rng.state(),
            stages: vec![("uep".into(), 5, 0.5)],
        };
        let best = vec![vec![9.0; 6], vec![8.0; 4]];
        let views: Vec<&Param> = ps.iter().collect();
        save(&path, &progress, "opts A", &views, Some(&best), &adam).unwrap();

        let err = Saved::open(&path, "opts B").err().unwrap().message;
        assert!(
            err.contains("other options") && err.contains("opts A"),
            "{err}"
        );
        let saved = Saved::open(&path, "opts A").unwrap();
        assert_eq!(saved.progress, progress);
        assert_eq!(saved.rng().unwrap().next_u64(), rng.clone().next_u64());
        let mut fresh = params();
        fresh.iter_mut().for_each(|p| p.value.fill(0.0));
        let mut refs: Vec<&mut Param> = fresh.iter_mut().collect();
        let mut adam2 = Adam::new(0.0);
        let got_best = saved.restore(&mut refs, &mut adam2).unwrap();
        assert_eq!(got_best, Some(best));
        for (f, p) in fresh.iter().zip(&ps) {
            assert_eq!(f.value, p.value, "{}", p.name);
        }
        // The restored optimizer takes the next step as the original does.
        for p in ps.iter_mut().chain(fresh.iter_mut()) {
            p.grad.iter_mut().for_each(|g| *g = -0.25);
        }
        adam.step(&mut ps.iter_mut().collect::<Vec<_>>(), 0.1);
        adam2.step(&mut fresh.iter_mut().collect::<Vec<_>>(), 0.1);
        for (f, p) in fresh.iter().zip(&ps) {
            assert_eq!(f.value, p.value, "{} after a step", p.name);
        }
        // A parameter the state lacks is named.
        let mut other = [Param::zeros("c.weight", &[1])];
        let mut refs: Vec<&mut Param> = other.iter_mut().collect();
        let err = saved
            .restore(&mut refs, &mut Adam::new(0.0))
            .err()
            .unwrap()
            .message;
        assert!(err.contains("param/c.weight"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        let err = Saved::open(&path, "opts A").err().unwrap().message;
        assert!(err.contains("does not exist"), "{err}");
    }
}
