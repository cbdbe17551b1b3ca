//! The online loop (§8.5): an agent acts in an environment for a number of steps, learning as
//! it goes, and the learning curve records, every `every` steps, the means over the last
//! `window` finished episodes of the return `R`, the length `Len` and the per-step reward
//! `R_avg = R / Len` (the first point, step 0, from `window` episodes of the initial policy
//! with no update).

use super::agent::Agent;
use super::env::Environment;
use crate::nn::Rng;
use std::collections::VecDeque;

/// One finished episode.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Episode {
    /// Return (sum of rewards).
    pub r: f64,
    /// Steps.
    pub len: usize,
}

/// One point of a learning curve.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct CurvePoint {
    /// Environment steps taken (learning steps; step 0 is before any update).
    pub step: u64,
    /// Mean return.
    pub r: f64,
    /// Mean length.
    pub len: f64,
    /// Mean per-step reward.
    pub r_avg: f64,
}

impl CurvePoint {
    /// The means of `eps` at `step`.
    pub fn of(step: u64, eps: &VecDeque<Episode>) -> Self {
        let n = eps.len().max(1) as f64;
        CurvePoint {
            step,
            r: eps.iter().map(|e| e.r).sum::<f64>() / n,
            len: eps.iter().map(|e| e.len as f64).sum::<f64>() / n,
            r_avg: eps.iter().map(|e| e.r / e.len.max(1) as f64).sum::<f64>() / n,
        }
    }
}

/// Plays one episode; with `learn` the agent observes and updates after every step.
pub fn episode(
    agent: &mut Agent,
    env: &mut dyn Environment,
    rng: &mut Rng,
    learn: bool,
    mut on_step: impl FnMut(&Agent),
) -> Episode {
    let start = env.reset(rng);
    let mut state = agent.shape().first_state(start);
    let mut r = 0.0f64;
    let mut len = 0usize;
    loop {
        let a = agent.act(&state);
        let s = env.step(a);
        r += f64::from(s.reward);
        len += 1;
        if learn {
            agent.observe(&state, a, s.reward, s.done);
            agent.learn(s.done);
            on_step(agent);
        }
        state.push(a);
        if s.done {
            return Episode { r, len };
        }
    }
}

/// Runs `agent` for `steps` environment steps in `env` and returns its learning curve (a
/// point every `every` steps over the last `window` episodes, step 0 first). `progress` sees
/// every point as it is made.
pub fn run_online(
    agent: &mut Agent,
    env: &mut dyn Environment,
    steps: u64,
    every: u64,
    window: usize,
    seed: u64,
    mut progress: impl FnMut(&CurvePoint),
) -> Vec<CurvePoint> {
    let mut rng = Rng::new(seed ^ 0x5eed_0e57);
    let mut last: VecDeque<Episode> = VecDeque::with_capacity(window + 1);
    for _ in 0..window {
        last.push_back(episode(agent, env, &mut rng, false, |_| {}));
    }
    let first = CurvePoint::of(0, &last);
    progress(&first);
    let mut curve = vec![first];
    let every = every.max(1);
    let mut due: Vec<u64> = Vec::new();
    while agent.steps < steps {
        let ep = episode(agent, env, &mut rng, true, |a| {
            if a.steps % every == 0 {
                due.push(a.steps);
            }
        });
        last.push_back(ep);
        if last.len() > window {
            last.pop_front();
        }
        for s in due.drain(..) {
            let p = CurvePoint::of(s, &last);
            progress(&p);
            curve.push(p);
        }
    }
    curve
}

/// The curve as CSV: `step,R,Len,R_avg`, one line per point.
pub fn curve_csv(curve: &[CurvePoint]) -> String {
    let mut s = String::from("step,R,Len,R_avg\n");
    for p in curve {
        s.push_str(&format!(
            "{},{:.4},{:.4},{:.4}\n",
            p.step, p.r, p.len, p.r_avg
        ));
    }
    s
}
