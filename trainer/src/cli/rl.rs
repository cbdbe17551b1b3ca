//! `seqrec train --model sqn|snqn|sa2c|smorl --backbone ARCH`: the RL-head methods
//! ([`crate::models::rl`]).

use super::CliError;
use super::train::{Fitted, WithBackbone, fit, summarize};
use crate::data::Split;
use crate::models::TrainModel;
use crate::models::rl::le::{LeCache, LeVariant};
use crate::models::rl::samples::Transitions;
use crate::models::rl::step::{RlOptions, Warmup};
use crate::models::rl::train::{serving_weights, train_rl, validate_engine};
use crate::models::rl::{RlKind, RlModel, SupHead};
use crate::nn::Rng;
use crate::objectives::Similarity;
use crate::train::TrainOptions;
use clap::Args;
use std::path::{Path, PathBuf};

/// Settings of the RL methods (ignored by the plain architectures).
#[derive(Args, Debug)]
pub(crate) struct RlArgs {
    /// Backbone of an RL method (sasrec, gru4rec, nextitnet, caser; default sasrec) or of a
    /// hierarchical model (gru4rec, sasrec; default gru4rec).
    #[arg(long)]
    pub(crate) backbone: Option<String>,
    /// Supervised head of an RL method: linear (W_s·h + b_s, as the SQN code) or tied (scores
    /// with the item embedding, as RecBole).
    #[arg(long, default_value = "linear")]
    sup_head: String,
    /// Discount γ of the TD targets.
    #[arg(long, default_value_t = 0.5)]
    gamma: f32,
    /// Multiplier of each squared TD error (0.5: trfl's double_qlearning loss, as the SQN code;
    /// 1: the plain (y − Q)²; 0 with sqn: the backbone and its supervised head trained by
    /// cross-entropy on the same transitions alone, the thesis's "Normal" baseline).
    #[arg(long, default_value_t = 0.5)]
    td_weight: f32,
    /// Reward of a sampled negative action (snqn, sa2c).
    #[arg(long, default_value_t = 0.0)]
    neg_reward: f32,
    /// SA2C: optimiser steps with the plain SNQN loss before the advantage weighting starts
    /// (default: min(15000, 3 epochs)).
    #[arg(long)]
    warmup_steps: Option<u64>,
    /// SMORL: objective weights `acc,div,nov` of the scalarised greedy action and of the TD
    /// terms (also the serving weights used for validation).
    #[arg(long, default_value = "1,1,1")]
    smorl_weights: String,
    /// SMORL, MODT4R, MRDT: a checkpoint whose item table gives the diversity reward's /
    /// returns' similarity (a plain model trained on the same split: of the backbone for
    /// SMORL, SASRec for the Decision Transformers). Without it, SMORL uses OUT with the
    /// extension `.sim.safetensors` when it exists, else trains a plain model of the backbone
    /// there first with the same settings and time budget; the Decision Transformers train a
    /// SASRec first.
    #[arg(long)]
    pub(crate) similarity_model: Option<PathBuf>,
    /// snqn, sa2c: a language environment's cache (`docs/formats.md`, "LE cache"): LE states,
    /// rewards and augmented actions per training transition.
    #[arg(long)]
    le: Option<PathBuf>,
    /// With --le: ler, les, les' (LE state alone), lea, lear, leas, leasr (default), leas'r.
    #[arg(long)]
    le_variant: Option<String>,
    /// With --le and an augmenting variant: weight of the supervised augmentation loss.
    #[arg(long, default_value_t = 0.1)]
    w_ah: f32,
    /// With --le and an augmenting variant: weight of the Q-learning augmentation loss.
    #[arg(long, default_value_t = 0.01)]
    w_aq: f32,
}

fn parse_weights(s: &str) -> Result<[f32; 3], CliError> {
    let v: Vec<f32> = s
        .split(',')
        .map(|p| p.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|_| CliError::input(format!("--smorl-weights `{s}`: expected three numbers")))?;
    match v.as_slice() {
        &[a, d, n] if v.iter().all(|w| w.is_finite() && *w >= 0.0) => Ok([a, d, n]),
        _ => Err(CliError::input(format!(
            "--smorl-weights `{s}`: expected three finite, non-negative numbers acc,div,nov"
        ))),
    }
}

impl RlArgs {
    fn options(&self, negatives: usize) -> Result<RlOptions, CliError> {
        if !(0.0..=1.0).contains(&self.gamma) {
            return Err(CliError::input(format!(
                "--gamma {} is not in [0, 1]",
                self.gamma
            )));
        }
        if !(self.td_weight.is_finite() && self.td_weight >= 0.0) {
            return Err(CliError::input(format!(
                "--td-weight {} must be finite and non-negative",
                self.td_weight
            )));
        }
        if !self.neg_reward.is_finite() {
            return Err(CliError::input("--neg-reward must be finite"));
        }
        let le = match (&self.le, &self.le_variant) {
            (Some(_), v) => Some(
                v.as_deref()
                    .unwrap_or("leasr")
                    .parse::<LeVariant>()
                    .map_err(CliError::input)?,
            ),
            (None, Some(_)) => {
                return Err(CliError::input(
                    "--le-variant needs --le (the language environment's cache)",
                ));
            }
            (None, None) => None,
        };
        for (flag, w) in [("--w-ah", self.w_ah), ("--w-aq", self.w_aq)] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(CliError::input(format!(
                    "{flag} {w} must be finite and non-negative"
                )));
            }
        }
        Ok(RlOptions {
            gamma: self.gamma,
            td_weight: self.td_weight,
            neg_reward: self.neg_reward,
            negatives,
            warmup: self.warmup_steps.map_or(Warmup::Auto, Warmup::Steps),
            weights: parse_weights(&self.smorl_weights)?,
            le,
            w_ah: self.w_ah,
            w_aq: self.w_aq,
            ..Default::default()
        })
    }
}

/// Trains an RL method on the backbone the factory builds.
pub(crate) struct RlFit<'a> {
    pub(crate) kind: RlKind,
    pub(crate) args: &'a RlArgs,
    pub(crate) split: &'a Split,
    pub(crate) opts: &'a TrainOptions,
    pub(crate) seed: u64,
    pub(crate) out: &'a Path,
}

impl RlFit<'_> {
    /// SMORL's similarity table (see [`RlArgs::similarity_model`]).
    fn similarity<M: TrainModel>(
        &self,
        make: &mut dyn FnMut(&mut Rng) -> M,
    ) -> Result<(Similarity, PathBuf), CliError> {
        let path = match &self.args.similarity_model {
            Some(p) => p.clone(),
            None => {
                let p = self.out.with_extension("sim.safetensors");
                if p.is_file() {
                    eprintln!("similarity: using {}", p.display());
                } else {
                    eprintln!(
                        "similarity: training a plain {} on the same split into {}",
                        self.args.backbone.as_deref().unwrap_or("sasrec"),
                        p.display()
                    );
                    let (bytes, _, summary) = fit(
                        make(&mut Rng::new(self.seed ^ 0x5113)),
                        self.split,
                        self.opts,
                    )?;
                    std::fs::write(&p, bytes)
                        .map_err(|e| CliError::input(format!("{}: {e}", p.display())))?;
                    eprintln!("similarity: {summary}");
                }
                p
            }
        };
        let sim = Similarity::from_model_file(&path).map_err(CliError::input)?;
        Ok((sim, path))
    }
}

impl WithBackbone for RlFit<'_> {
    type Out = Fitted;

    fn run<M: TrainModel>(self, make: &mut dyn FnMut(&mut Rng) -> M) -> Result<Fitted, CliError> {
        let kind = self.kind;
        let sup: SupHead = self.args.sup_head.parse().map_err(CliError::input)?;
        let rl = self.args.options(self.opts.neg.max(1))?;
        let le = match (&self.args.le, rl.le) {
            (Some(path), Some(_)) => {
                if !kind.uses_negatives() {
                    return Err(CliError::input(format!(
                        "--le: a language environment trains snqn or sa2c, not {kind}"
                    )));
                }
                let window = make(&mut Rng::new(0)).max_len();
                let data = Transitions::from_split(self.split, window).map_err(CliError::input)?;
                Some(LeCache::open(path, &data, self.split.n_items).map_err(CliError::input)?)
            }
            _ => None,
        };
        if let (Some(cache), Some(v)) = (&le, rl.le) {
            v.check(cache).map_err(CliError::input)?;
        }
        let sim = match kind {
            RlKind::Smorl => Some(self.similarity(make)?),
            _ => None,
        };
        let n = self.split.n_items;
        let mut rng = Rng::new(self.seed);
        let mut copy = || {
            let m = RlModel::new(kind, sup, n, make(&mut rng), &mut rng);
            match (&le, rl.le) {
                (Some(cache), Some(v)) => m.with_le_state(v.state, cache.state_dim, &mut rng),
                _ => m,
            }
        };
        let mut copies = [copy(), copy()];
        let m = &mut copies[0];
        if let (Some(cache), Some(v)) = (&le, rl.le) {
            m.record("le", cache.origin.clone());
            m.record("le_variant", v.name());
            if v.augment {
                m.record("w_ah", f64::from(rl.w_ah));
                m.record("w_aq", f64::from(rl.w_aq));
            }
        }
        m.record("gamma", f64::from(rl.gamma));
        m.record("td_weight", f64::from(rl.td_weight));
        match kind {
            RlKind::Snqn | RlKind::Sa2c => {
                m.record("negatives", rl.negatives);
                m.record("neg_reward", f64::from(rl.neg_reward));
                if kind == RlKind::Sa2c {
                    m.record(
                        "warmup_steps",
                        self.args
                            .warmup_steps
                            .map_or_else(|| "auto".into(), serde_json::Value::from),
                    );
                }
            }
            RlKind::Smorl => {
                m.record("smorl_weights", rl.weights.map(f64::from).to_vec());
                if let Some((_, p)) = &sim {
                    m.record("similarity_model", p.display().to_string());
                }
            }
            RlKind::Sqn => {}
        }
        let weights = serving_weights(&copies[0], &rl);
        let validate = validate_engine::<M>(&weights);
        let r = train_rl(
            &mut copies,
            self.split,
            self.opts,
            &rl,
            sim.as_ref().map(|(s, _)| s),
            le.as_ref(),
            validate.as_ref(),
        )
        .map_err(CliError::input)?;
        Ok(summarize(&r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        rl: RlArgs,
    }

    fn options(args: &[&str]) -> Result<RlOptions, CliError> {
        let flags = Flags::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .expect("flags parse");
        flags.rl.options(1)
    }

    #[test]
    fn td_weight_zero_is_the_normal_baseline_and_negative_is_an_error() {
        let weight = |args: &[&str]| options(args).expect("valid flags").td_weight;
        assert_eq!(weight(&["--td-weight", "0"]), 0.0);
        assert_eq!(weight(&[]), 0.5);
        let e = options(&["--td-weight=-1"]).expect_err("an error").message;
        assert!(e.contains("--td-weight -1"), "{e}");
        let e = options(&["--td-weight=NaN"]).expect_err("an error").message;
        assert!(e.contains("finite and non-negative"), "{e}");
    }
}
