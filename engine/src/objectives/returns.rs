//! Per-step returns of the multi-objective Decision Transformers (`spec/thesis-models.md`
//! §4.2 and §4.5), shared by the served architectures and the trainer.
//!
//! Three objectives, in this order everywhere (tokens, heads, tensors): accuracy, novelty,
//! diversity ([`ACC`], [`NOV`], [`DIV`]). A window of `T` steps has states `x_1..x_T` and
//! actions `a_t = x_{t+1}`; indices are local to the window.
//!
//! **Training** ([`training_returns`], §4.2): `R_t,acc = T − t + 1`; `R_t,nov` = the number of
//! long-tail actions among `a_t..a_T`; `R_t,div = 1 + Sim(x_1..x_t)`.
//!
//! **Inference** ([`inference_returns`], Algorithm 2, §4.5) for a window `x_1..x_p` whose next
//! item is to be scored (step `p` is the one predicted):
//! - accuracy: `R_t,acc = p + 1 + acc_offset − t` (`acc_offset = 1` is the thesis's `T = p+1`;
//!   0 gives the training convention, last step 1);
//! - novelty: `r_t = 1[x_{t+1} ∈ I_nov]` for `t < p`, `r_p = 1[mean(r_1..r_{p−1}) ≥ ε]`
//!   (`r_1 = 1` when `p = 1`), `R_t,nov = Σ_{t'≥t} r_t'`;
//! - diversity: `R_t,div = 1 + Sim(x_1..x_t)` for `t < p`, `R_p,div = R_{p−1},div`
//!   (`R_1,div = 1` when `p = 1`), all multiplied by `λ`;
//! - an explicit target `g_o` for objective `o` (finite; NaN = generated) shifts the generated
//!   sequence so that it ends at the target: `R_t,o ← R_t,o + (g_o − R_p,o)`, which keeps the
//!   rewards observed between the steps and sets the return asked for from the predicted step
//!   on.

use super::Objectives;
use super::similarity::{SimAccumulator, SimilarityRows};
use crate::error::{Error, Result};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

/// Index of the accuracy objective.
pub const ACC: usize = 0;
/// Index of the novelty objective.
pub const NOV: usize = 1;
/// Index of the diversity objective.
pub const DIV: usize = 2;
/// Number of objectives (accuracy, novelty, diversity).
pub const N_OBJ: usize = 3;
/// Objective names in token and tensor order.
pub const OBJECTIVE_NAMES: [&str; N_OBJ] = ["acc", "nov", "div"];

/// Parses a comma-separated list of objective names (`"acc,nov,div"`, any subset, spaces
/// allowed) into a flag per objective.
///
/// # Errors
/// A name that is not one of `acc`, `nov`, `div`.
pub fn parse_objective_list(list: &str) -> Result<[bool; N_OBJ]> {
    let mut on = [false; N_OBJ];
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match OBJECTIVE_NAMES.iter().position(|&n| n == name) {
            Some(o) => on[o] = true,
            None => {
                return Err(Error::Config(format!(
                    "dt_objectives: `{name}` is not one of acc, nov, div"
                )));
            }
        }
    }
    Ok(on)
}

/// The inference settings of [`inference_returns`].
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct ReturnKnobs {
    /// Added to the accuracy returns.
    pub acc_offset: f32,
    /// Novelty threshold ε.
    pub novelty_eps: f32,
    /// Diversity scale λ.
    pub lambda_div: f32,
    /// Explicit targets at the predicted step (NaN: generated).
    pub targets: [f32; N_OBJ],
}

impl Default for ReturnKnobs {
    /// The specification's defaults: offset 1, `ε = 0.5`, `λ = 1`, generated returns.
    fn default() -> Self {
        ReturnKnobs {
            acc_offset: 1.0,
            novelty_eps: 0.5,
            lambda_div: 1.0,
            targets: [f32::NAN; N_OBJ],
        }
    }
}

impl ReturnKnobs {
    /// From a knob set holding `acc_offset`, `novelty_eps`, `lambda_div` and `target_acc`,
    /// `target_nov`, `target_div` (the Decision Transformers' knobs).
    pub fn from_objectives(obj: &Objectives) -> Self {
        ReturnKnobs {
            acc_offset: obj.value("acc_offset"),
            novelty_eps: obj.value("novelty_eps"),
            lambda_div: obj.value("lambda_div"),
            targets: [
                obj.value("target_acc"),
                obj.value("target_nov"),
                obj.value("target_div"),
            ],
        }
    }
}

/// Training returns of one window: `[T]` rows of `[acc, nov, div]` for states `states` and
/// actions `actions` (both of length `T`, no padding). See the module docs.
///
/// # Panics
/// If the lengths differ or an id is outside `long_tail` or the similarity rows (windows are
/// built from validated splits).
pub fn training_returns(
    states: &[u32],
    actions: &[u32],
    long_tail: &[bool],
    sim: &(impl SimilarityRows + ?Sized),
) -> Vec<[f32; N_OBJ]> {
    assert_eq!(
        states.len(),
        actions.len(),
        "returns: {} states, {} actions",
        states.len(),
        actions.len()
    );
    let t_len = states.len();
    let mut acc = SimAccumulator::new(sim.dim());
    let sims: Vec<f64> = states
        .iter()
        .map(|&x| {
            acc.push(sim, x);
            acc.sim()
        })
        .collect();
    let mut out = vec![[0.0f32; N_OBJ]; t_len];
    let mut nov = 0u32;
    for t in (0..t_len).rev() {
        nov += u32::from(long_tail[actions[t] as usize]);
        out[t] = [(t_len - t) as f32, nov as f32, (1.0 + sims[t]) as f32];
    }
    out
}

/// Reusable memory of [`inference_returns_with`], so that serving allocates nothing per
/// request.
#[derive(Clone, Debug, Default)]
pub struct ReturnsScratch {
    acc: Option<SimAccumulator>,
    divs: Vec<f64>,
    rows: Vec<[f64; N_OBJ]>,
}

/// Algorithm 2: `[p]` rows of `[acc, nov, div]` returns for the window `x_1..x_p` (validated
/// ids) into `out`, from the long-tail flags (indexed by id) and the normalised similarity
/// rows. See the module docs.
pub fn inference_returns(
    window: &[u32],
    long_tail: &[bool],
    sim: &(impl SimilarityRows + ?Sized),
    k: &ReturnKnobs,
    out: &mut Vec<[f32; N_OBJ]>,
) {
    inference_returns_with(
        window,
        long_tail,
        sim,
        k,
        &mut ReturnsScratch::default(),
        out,
    );
}

/// [`inference_returns`] with reusable scratch memory.
pub fn inference_returns_with(
    window: &[u32],
    long_tail: &[bool],
    sim: &(impl SimilarityRows + ?Sized),
    k: &ReturnKnobs,
    scratch: &mut ReturnsScratch,
    out: &mut Vec<[f32; N_OBJ]>,
) {
    let p = window.len();
    out.clear();
    out.resize(p, [0.0; N_OBJ]);
    if p == 0 {
        return;
    }
    let tail = |i: u32| if long_tail[i as usize] { 1.0f64 } else { 0.0 };
    let known: f64 = window[1..].iter().map(|&x| tail(x)).sum();
    let last_nov = if p == 1 || known / (p - 1) as f64 >= f64::from(k.novelty_eps) {
        1.0
    } else {
        0.0
    };
    let ReturnsScratch { acc, divs, rows } = scratch;
    let acc = match acc {
        Some(a) if a.dim() == sim.dim() => {
            a.clear();
            a
        }
        slot => slot.insert(SimAccumulator::new(sim.dim())),
    };
    divs.clear();
    for &x in window {
        acc.push(sim, x);
        divs.push(1.0 + acc.sim());
    }
    let lambda = f64::from(k.lambda_div);
    rows.clear();
    rows.resize(p, [0.0f64; N_OBJ]);
    let mut nov = last_nov;
    for t in (0..p).rev() {
        if t + 1 < p {
            nov += tail(window[t + 1]);
        }
        let div = match (p, t + 1 == p) {
            (1, _) => 1.0,
            (_, true) => divs[p - 2],
            _ => divs[t],
        };
        rows[t] = [(p - t) as f64 + f64::from(k.acc_offset), nov, lambda * div];
    }
    for (o, &g) in k.targets.iter().enumerate() {
        if g.is_finite() {
            let shift = f64::from(g) - rows[p - 1][o];
            for r in rows.iter_mut() {
                r[o] += shift;
            }
        }
    }
    for (dst, src) in out.iter_mut().zip(rows.iter()) {
        *dst = src.map(|v| v as f32);
    }
}

#[cfg(test)]
mod tests {
    use super::super::similarity::NormalizedRows;
    use super::*;

    /// The specification's 2-d embeddings e1=(1,0), e2=(0,1), e3=(1,1)/√2, e4=(−1,0),
    /// normalised, with items 3 and 4 in the long tail.
    fn spec() -> (NormalizedRows, Vec<bool>) {
        let r = core::f32::consts::FRAC_1_SQRT_2;
        let sim = vec![0.0, 0.0, 1.0, 0.0, 0.0, 1.0, r, r, -1.0, 0.0, 0.0, -1.0];
        (
            NormalizedRows::new(&sim, 2),
            vec![false, false, false, true, true, false],
        )
    }

    #[test]
    fn algorithm_2_on_the_specification_example() {
        let (sim, tail) = spec();
        let knobs = ReturnKnobs::default();
        let mut out = Vec::new();
        inference_returns(&[2], &tail, &sim, &knobs, &mut out);
        assert_eq!(out, [[2.0, 1.0, 1.0]]);
        // Known novelty rewards (0, 1, 1): mean 2/3 ≥ 0.5, so the predicted step's is 1;
        // R_div = 1 + Sim of the prefixes (1, 0, 0.471405), the last copied.
        inference_returns(&[1, 2, 3, 4], &tail, &sim, &knobs, &mut out);
        let want = [
            [5.0, 3.0, 2.0],
            [4.0, 3.0, 1.0],
            [3.0, 2.0, 1.471405],
            [2.0, 1.0, 1.471405],
        ];
        for (got, want) in out.iter().zip(want) {
            for o in 0..N_OBJ {
                // Published to 6 decimals; f32 rows.
                assert!((got[o] - want[o]).abs() < 1e-6, "{out:?}");
            }
        }
        // ε above the mean, λ = 2, and explicit accuracy and diversity targets.
        let k = ReturnKnobs {
            novelty_eps: 0.7,
            lambda_div: 2.0,
            targets: [7.0, f32::NAN, 0.5],
            ..knobs
        };
        inference_returns(&[1, 2, 3, 4], &tail, &sim, &k, &mut out);
        let col = |o: usize| out.iter().map(|r| r[o]).collect::<Vec<_>>();
        assert_eq!(col(0), [10.0, 9.0, 8.0, 7.0]);
        assert_eq!(col(1), [2.0, 2.0, 1.0, 0.0]);
        assert!((out[3][2] - 0.5).abs() < 1e-6 && (out[0][2] - (4.0 - 2.44281)).abs() < 1e-5);
    }

    #[test]
    fn training_returns_count_from_the_window_end() {
        let (sim, tail) = spec();
        // States 1, 2, 3 and actions 2, 3, 4 (3 and 4 in the long tail).
        let r = training_returns(&[1, 2, 3], &[2, 3, 4], &tail, &sim);
        assert_eq!(
            r.iter().map(|r| r[ACC]).collect::<Vec<_>>(),
            [3.0, 2.0, 1.0]
        );
        assert_eq!(
            r.iter().map(|r| r[NOV]).collect::<Vec<_>>(),
            [2.0, 2.0, 1.0]
        );
        assert_eq!(r[0][DIV], 2.0);
        assert!((r[2][DIV] - 1.471405).abs() < 1e-6);
    }

    #[test]
    fn objective_lists_are_checked() {
        assert_eq!(
            parse_objective_list("acc, div").unwrap(),
            [true, false, true]
        );
        assert_eq!(parse_objective_list("").unwrap(), [false; N_OBJ]);
        let e = parse_objective_list("acc,fun").unwrap_err();
        assert!(alloc::format!("{e}").contains("`fun`"));
    }
}
