//! Per-step returns of the Decision Transformers (`spec/thesis-models.md` §4.2 and §4.5).
//!
//! The returns are the engine's ([`seqrec_engine::objectives::returns`], one implementation
//! for training and serving): three objectives in the order accuracy, novelty, diversity
//! ([`ACC`], [`NOV`], [`DIV`]); a training window of `T` steps with states `x_1..x_T` and
//! actions `a_t = x_{t+1}` gets `R_t,acc = T − t + 1`, `R_t,nov` = the number of long-tail
//! actions among `a_t..a_T`, and `R_t,div = 1 + Sim(x_1..x_t)` (the telescoped sum of
//! `r_t,div = Sim(x_1..x_t) − Sim(x_1..x_t, a_t)` with the end term `−1`). The serving
//! returns (Algorithm 2) are [`seqrec_engine::objectives::returns::inference_returns`].
//!
//! The trainer computes them with its frozen [`Similarity`](crate::objectives::Similarity)
//! (f64 rows, an engine [`SimilarityRows`](crate::objectives::SimilarityRows)); the tests
//! here run the specification's worked examples through that table.

pub use seqrec_engine::objectives::returns::{
    ACC, DIV, N_OBJ, NOV, OBJECTIVE_NAMES, training_returns,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objectives::Similarity;
    use seqrec_engine::objectives::returns::{ReturnKnobs, inference_returns};

    /// The specification's 2-d embeddings: e1=(1,0), e2=(0,1), e3=(1,1), e4=(−1,0), e5=(0,−1).
    fn spec_sim() -> Similarity {
        let table = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, -1.0, 0.0, 0.0, -1.0];
        Similarity::new(&table, 2).unwrap()
    }

    fn spec_tail() -> Vec<bool> {
        let mut tail = vec![false; 6];
        (tail[3], tail[4]) = (true, true);
        tail
    }

    #[test]
    fn training_returns_match_the_worked_example() {
        // §4.2: states (1,2,3,4), actions (2,3,4,5), novelty flags of the actions (0,1,1,0).
        let r = training_returns(&[1, 2, 3, 4], &[2, 3, 4, 5], &spec_tail(), &spec_sim());
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
        let (sim, tail) = (spec_sim(), spec_tail());
        let returns = |window: &[u32], k: &ReturnKnobs| {
            let mut out = Vec::new();
            inference_returns(window, &tail, &sim, k, &mut out);
            out
        };
        let k = ReturnKnobs::default();
        // p = 1: acc 2, nov 1, div 1.
        assert_eq!(returns(&[2], &k), vec![[2.0, 1.0, 1.0]]);
        // p = 4, window (1,2,3,4): known rewards 1[x2..x4 ∈ tail] = (0, 1, 1), mean 2/3 ≥ 0.5
        // → r_4 = 1; R_nov = (3, 3, 2, 1); R_div = 1 + Sim prefixes, the last copied.
        let r = returns(&[1, 2, 3, 4], &k);
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
        let k2 = ReturnKnobs {
            acc_offset: 0.0,
            novelty_eps: 0.7,
            lambda_div: 2.0,
            ..k
        };
        let r = returns(&[1, 2, 3, 4], &k2);
        let col = |r: &[[f32; N_OBJ]], o: usize| r.iter().map(|x| x[o]).collect::<Vec<_>>();
        assert_eq!(col(&r, ACC), [4.0, 3.0, 2.0, 1.0]);
        assert_eq!(col(&r, NOV), [2.0, 2.0, 1.0, 0.0]);
        assert!((r[2][DIV] - 2.0 * 1.471405).abs() < 2e-6 && r[0][DIV] == 4.0);
        // Targets shift a sequence to end at the target and keep its steps.
        let k3 = ReturnKnobs {
            targets: [7.0, f32::NAN, 0.5],
            ..k
        };
        let r = returns(&[1, 2, 3, 4], &k3);
        assert_eq!(col(&r, ACC), [10.0, 9.0, 8.0, 7.0]);
        assert_eq!(col(&r, NOV), [3.0, 3.0, 2.0, 1.0]);
        assert!((r[3][DIV] - 0.5).abs() < 1e-6 && (r[0][DIV] - (2.0 - 0.971405)).abs() < 1e-6);
    }
}
