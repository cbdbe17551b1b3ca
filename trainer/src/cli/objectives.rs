//! The objective-knob flags shared by `seqrec score` and `seqrec eval`.

use super::CliError;
use clap::Args;
use seqrec_engine::{Backend, Model, Objectives};

/// Inference-time knobs of multi-objective models (see `seqrec info MODEL` for a model's
/// knobs; plain backbones have none and reject them).
#[derive(Args, Debug, Default, Clone)]
pub struct ObjectiveArgs {
    /// Weight of the sequential (supervised) logits in the score (`alpha`).
    #[arg(long)]
    alpha: Option<f32>,
    /// Scale of the diversity return (`lambda_div`).
    #[arg(long)]
    lambda_div: Option<f32>,
    /// Novelty threshold ε of the generated novelty return (`novelty_eps`).
    #[arg(long)]
    novelty_eps: Option<f32>,
    /// Any knob by name, `NAME=VALUE` (repeatable).
    #[arg(long = "objective", value_name = "NAME=VALUE")]
    objective: Vec<String>,
}

impl ObjectiveArgs {
    /// The model's default knobs with the flags applied; an error names the flag and the
    /// model's knobs.
    pub fn apply<B: Backend>(&self, model: &Model<B>) -> Result<Objectives, CliError> {
        let mut o = model.default_objectives();
        let named = [
            ("alpha", "--alpha", self.alpha),
            ("lambda_div", "--lambda-div", self.lambda_div),
            ("novelty_eps", "--novelty-eps", self.novelty_eps),
        ];
        for (name, flag, value) in named {
            if let Some(v) = value {
                o.set(name, v)
                    .map_err(|e| CliError::input(format!("{flag}: {e}")))?;
            }
        }
        for pair in &self.objective {
            let (name, value) = pair.split_once('=').ok_or_else(|| {
                CliError::input(format!("--objective `{pair}`: expected NAME=VALUE"))
            })?;
            let v: f32 = value.trim().parse().map_err(|_| {
                CliError::input(format!(
                    "--objective `{pair}`: `{}` is not a number",
                    value.trim()
                ))
            })?;
            o.set(name.trim(), v)
                .map_err(|e| CliError::input(format!("--objective: {e}")))?;
        }
        Ok(o)
    }
}
