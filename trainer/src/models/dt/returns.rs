//! Per-step returns of the Decision Transformers (`spec/thesis-models.md` §4.2 and §4.5).
//!
//! Three objectives, in this order everywhere (tokens, heads, tensors): accuracy, novelty,
//! diversity ([`ACC`], [`NOV`], [`DIV`]). A window of `T` steps has states `x_1..x_T` and
//! actions `a_t = x_{t+1}`; indices are local to the window.
//!
//! **Training** ([`training_returns`], §4.2): `R_t,acc = T − t + 1`; `R_t,nov` = the number of
//! long-tail actions among `a_t..a_T`; `R_t,div = 1 + Sim(x_1..x_t)` (the telescoped sum of
//! `r_t,div = Sim(x_1..x_t) − Sim(x_1..x_t, a_t)` with the end term `−1`).
//!
//! **Inference** ([`inference_returns`], Algorithm 2, §4.5) for a window `x_1..x_p` whose next
//! item is to be scored (step `p` is the one predicted):
//! - accuracy: `R_t,acc = p + 1 + acc_offset − t` (`acc_offset = 1` is the thesis's `T = p+1`;
//!   0 gives the training convention, last step 1);
//! - novelty: `r_t = 1[x_{t+1} ∈ I_nov]` for `t < p`, `r_p = 1[mean(r_1..r_{p−1}) ≥ ε]`
//!   (`r_1 = 1` when `p = 1`), `R_t,nov = Σ_{t'≥t} r_t'`;
//! - diversity: `R_t,div = 1 + Sim(x_1..x_t)` for `t < p`, `R_p,div = R_{p−1},div`
//!   (`R_1,div = 1` when `p = 1`), all multiplied by `λ`;
//! - an explicit target `g_o` for objective `o` (a knob; negative = generated) shifts the
//!   generated sequence so that it ends at the target: `R_t,o ← R_t,o + (g_o − R_p,o)`, which
//!   keeps the rewards observed between the steps (`R_t − R_{t+1}`) and sets the return the
//!   model is asked to achieve from the predicted step on.
//!
//! This module is the trainer's reference implementation (f64 similarity sums); the engine
//! computes the same inference returns on its own, and the tests compare the two.

use crate::objectives::{SimAccumulator, Similarity};

/// Index of the accuracy objective.
pub const ACC: usize = 0;
/// Index of the novelty objective.
pub const NOV: usize = 1;
/// Index of the diversity objective.
pub const DIV: usize = 2;
/// Number of objectives.
pub const N_OBJ: usize = 3;
/// Objective names, in index order.
pub const OBJECTIVES: [&str; N_OBJ] = ["acc", "nov", "div"];

/// Training returns of one window: `[T]` rows of `[acc, nov, div]` for states `states` and
/// actions `actions` (both of length `T`, no padding). See the module docs.
///
/// # Panics
/// If the lengths differ or an id is outside `long_tail` or the similarity table (windows are
/// built from validated splits).
pub fn training_returns(
    states: &[u32],
    actions: &[u32],
    long_tail: &[bool],
    sim: &Similarity,
) -> Vec<[f32; N_OBJ]> {
    assert_eq!(
        states.len(),
        actions.len(),
        "returns: {} states, {} actions",
        states.len(),
        actions.len()
    );
    let t_len = states.len();
    let sims = sim.prefix_sims(states);
    let mut out = vec![[0.0f32; N_OBJ]; t_len];
    let mut nov = 0u32;
    for t in (0..t_len).rev() {
        nov += u32::from(long_tail[actions[t] as usize]);
        out[t] = [(t_len - t) as f32, nov as f32, (1.0 + sims[t]) as f32];
    }
    out
}

/// The inference-time settings of [`inference_returns`].
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct InferenceReturns {
    /// Added to the accuracy return (`1`: the thesis's `T = p + 1`).
    pub acc_offset: f32,
    /// Novelty threshold `ε`.
    pub novelty_eps: f32,
    /// Diversity scale `λ`.
    pub lambda_div: f32,
    /// Explicit return targets at the predicted step (`None`: generated).
    pub targets: [Option<f32>; N_OBJ],
}

impl Default for InferenceReturns {
    /// The specification's defaults: offset 1, `ε = 0.5`, `λ = 1`, generated returns.
    fn default() -> Self {
        InferenceReturns {
            acc_offset: 1.0,
            novelty_eps: 0.5,
            lambda_div: 1.0,
            targets: [None; N_OBJ],
        }
    }
}

/// Algorithm 2: the returns `[p]` rows of `[acc, nov, div]` for the window `window`
/// (`x_1..x_p`, `p ≥ 1`, no padding). See the module docs.
///
/// # Panics
/// If `window` is empty or holds an id outside `long_tail` or the similarity table.
pub fn inference_returns(
    window: &[u32],
    long_tail: &[bool],
    sim: &Similarity,
    knobs: &InferenceReturns,
) -> Vec<[f32; N_OBJ]> {
    let p = window.len();
    assert!(p >= 1, "inference returns need at least one item");
    let mut r = vec![[0.0f64; N_OBJ]; p];
    // Novelty rewards of the known steps, then of the predicted one.
    let mut rewards: Vec<f64> = (0..p - 1)
        .map(|t| f64::from(u8::from(long_tail[window[t + 1] as usize])))
        .collect();
    let last = if p == 1 {
        1.0
    } else {
        let mean = rewards.iter().sum::<f64>() / (p - 1) as f64;
        f64::from(u8::from(mean >= f64::from(knobs.novelty_eps)))
    };
    rewards.push(last);
    let mut nov = 0.0;
    let mut acc = SimAccumulator::new(sim.dim());
    let mut divs = Vec::with_capacity(p);
    for &x in window {
        acc.push(sim, x);
        divs.push(1.0 + acc.sim());
    }
    for t in (0..p).rev() {
        nov += rewards[t];
        let div = if p == 1 {
            1.0
        } else if t == p - 1 {
            divs[p - 2]
        } else {
            divs[t]
        };
        r[t] = [
            (p - t) as f64 + f64::from(knobs.acc_offset),
            nov,
            div * f64::from(knobs.lambda_div),
        ];
    }
    for (o, target) in knobs.targets.iter().enumerate() {
        if let Some(g) = target {
            let shift = f64::from(*g) - r[p - 1][o];
            for row in &mut r {
                row[o] += shift;
            }
        }
    }
    r.iter().map(|row| row.map(|v| v as f32)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The specification's 2-d embeddings: e1=(1,0), e2=(0,1), e3=(1,1), e4=(−1,0), e5=(0,−1).
    fn spec_sim() -> Similarity {
        let table = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, -1.0, 0.0, 0.0, -1.0];
        Similarity::new(&table, 2).unwrap()
    }

    #[test]
    fn training_returns_match_the_worked_example() {
        // §4.2: states (1,2,3,4), actions (2,3,4,5), novelty flags of the actions (0,1,1,0).
        let mut tail = vec![false; 6];
        (tail[3], tail[4]) = (true, true);
        let r = training_returns(&[1, 2, 3, 4], &[2, 3, 4, 5], &tail, &spec_sim());
        let want = [
            [4.0, 2.0, 2.0],
            [3.0, 2.0, 1.0],
            [2.0, 1.0, 1.471405],
            [1.0, 0.0, 0.951184],
        ];
        for (got, want) in r.iter().zip(want) {
            for o in 0..N_OBJ {
                // Published to 6 decimals.
                assert!((got[o] - want[o]).abs() < 1e-6, "{r:?}");
            }
        }
    }

    #[test]
    fn inference_returns_follow_algorithm_2() {
        let sim = spec_sim();
        let mut tail = vec![false; 6];
        (tail[3], tail[4]) = (true, true);
        let k = InferenceReturns::default();
        // p = 1: acc 2, nov 1, div 1.
        assert_eq!(
            inference_returns(&[2], &tail, &sim, &k),
            vec![[2.0, 1.0, 1.0]]
        );
        // p = 4, window (1,2,3,4): known rewards 1[x2..x4 ∈ tail] = (0, 1, 1), mean 2/3 ≥ 0.5
        // → r_4 = 1; R_nov = (3, 3, 2, 1); R_div = 1 + Sim prefixes, the last copied.
        let r = inference_returns(&[1, 2, 3, 4], &tail, &sim, &k);
        let want = [
            [5.0, 3.0, 2.0],
            [4.0, 3.0, 1.0],
            [3.0, 2.0, 1.471405],
            [2.0, 1.0, 1.471405],
        ];
        for (got, want) in r.iter().zip(want) {
            for o in 0..N_OBJ {
                assert!((got[o] - want[o]).abs() < 1e-6, "{r:?}");
            }
        }
        // ε above the mean: r_4 = 0; offset 0: the training convention; λ scales every R_div.
        let k2 = InferenceReturns {
            acc_offset: 0.0,
            novelty_eps: 0.7,
            lambda_div: 2.0,
            targets: [None; N_OBJ],
        };
        let r = inference_returns(&[1, 2, 3, 4], &tail, &sim, &k2);
        assert_eq!(
            r.iter().map(|x| x[ACC]).collect::<Vec<_>>(),
            [4.0, 3.0, 2.0, 1.0]
        );
        assert_eq!(
            r.iter().map(|x| x[NOV]).collect::<Vec<_>>(),
            [2.0, 2.0, 1.0, 0.0]
        );
        assert!((r[2][DIV] - 2.0 * 1.471405).abs() < 2e-6 && r[0][DIV] == 4.0);
        // Targets shift a sequence to end at the target and keep its steps.
        let k3 = InferenceReturns {
            targets: [Some(7.0), None, Some(0.5)],
            ..k
        };
        let r = inference_returns(&[1, 2, 3, 4], &tail, &sim, &k3);
        assert_eq!(
            r.iter().map(|x| x[ACC]).collect::<Vec<_>>(),
            [10.0, 9.0, 8.0, 7.0]
        );
        assert_eq!(
            r.iter().map(|x| x[NOV]).collect::<Vec<_>>(),
            [3.0, 3.0, 2.0, 1.0]
        );
        assert!((r[3][DIV] - 0.5).abs() < 1e-6 && (r[0][DIV] - (2.0 - 0.971405)).abs() < 1e-6);
    }
}
