//! The inference reference: scores of the next item of a user's current session given the
//! user's finished sessions, recomputed from scratch with the trainer's blocks (evaluation
//! mode). The engine's `hdt`, `interdt` and `hier` architectures are tested against it.
//!
//! The chain over finished sessions follows training: for session `c`, `R_c = dis_max −
//! dis(C_1..C_c)` (the session is known once it is over), InterDT or the user GRU gives the
//! goal, the backbone runs over the session's last `max_len` items, and its state at the last
//! position is `s_{c+1}`. For the current session, `R_c = lambda·(target_unexp or dis_max −
//! dis(C_1..C_{c−1}))`. HDT's IntraDT sees the last `min(p, max_len − 1)` steps of a prefix of
//! `p` items (training trajectories have at most `max_len − 1` steps), with novelty
//! return-to-go built from the true long-tail flags of the session's earlier actions and an
//! assumed flag for the predicted action (1 when the mean of the earlier flags is at least
//! `novelty_eps`, or when there are none). The action token of the predicted step is the
//! padding embedding; the causal mask makes it irrelevant.

use super::blocks::{IntraInput, TOKENS};
use super::forward::{HdtBatch, Knobs, lookup};
use super::{HdtModel, Variant};
use seqrec_engine::objectives::similarity::{NormalizedRows, SimAccumulator};

/// The assumed novelty flag of the predicted action given the flags of the earlier actions.
pub fn assumed_novelty(earlier: &[f32], eps: f32) -> f32 {
    if earlier.is_empty() {
        return 1.0;
    }
    let mean = earlier.iter().map(|&f| f as f64).sum::<f64>() / earlier.len() as f64;
    if mean >= eps as f64 { 1.0 } else { 0.0 }
}

impl HdtModel {
    fn one(&self, window: &[u32], r: f32, s: &[f32], u: &[f32]) -> HdtBatch {
        HdtBatch {
            n: 1,
            len: window.len(),
            items: window.to_vec(),
            lens: vec![window.len()],
            from: vec![0],
            step_weight: vec![1.0],
            goal_weight: vec![1.0],
            first: vec![window[0]],
            r_inter: vec![r],
            s_prev: s.to_vec(),
            u_prev: u.to_vec(),
            r_intra: Vec::new(),
            rn: Vec::new(),
        }
    }

    fn window<'a>(&self, items: &'a [u32]) -> &'a [u32] {
        &items[items.len().saturating_sub(self.cfg.max_len)..]
    }

    /// Full-catalog scores (`[n_items]`) of the next item of `current` after the finished
    /// sessions `past` (see the module docs). With an empty `current`, the goal head's scores
    /// for the session's first item (HDT, InterDT); `None` for Hier.
    ///
    /// # Panics
    /// On an empty past session or an id outside the catalog (a test helper).
    pub fn session_scores(&self, past: &[&[u32]], current: &[u32], k: &Knobs) -> Option<Vec<f32>> {
        let cfg = &self.cfg;
        let d = cfg.dim;
        let mut s = vec![0.0f32; d];
        let mut u = vec![0.0f32; d];
        // The stored (normalised, f32) similarity rows, as the engine reads them.
        let rows = self
            .similarity
            .as_ref()
            .map(|t| NormalizedRows::from_normalized(t.value.clone(), cfg.sim_dim));
        let mut acc = SimAccumulator::new(cfg.sim_dim);
        for sess in past {
            assert!(!sess.is_empty(), "empty past session");
            if let Some(rows) = &rows {
                acc.extend(rows, sess);
            }
            let r = (cfg.dis_max as f64 - acc.dis()) as f32;
            let b = self.one(self.window(sess), r, &s, &u);
            let (_, g, _, _) = self.goals(&b, None);
            let (states, ..) = self.states(&b, &g, None);
            s = states[(b.len - 1) * d..].to_vec();
            if cfg.variant == Variant::Hier {
                u = g;
            }
        }
        let r = k.lambda
            * k.target_unexp
                .unwrap_or((cfg.dis_max as f64 - acc.dis()) as f32);
        if current.is_empty() {
            let head = self.goal_head.as_ref()?;
            let b = self.one(&[1], r, &s, &u);
            let (_, g, _, _) = self.goals(&b, None);
            return Some(head.infer(self.backbone.item_table(), &g, 1));
        }
        let w = self.window(current);
        let n = w.len();
        let b = self.one(w, r, &s, &u);
        let (rt, g, _, _) = self.goals(&b, None);
        let (states, emb, _, _) = self.states(&b, &g, None);
        let last = &states[(n - 1) * d..];
        let y = self.seq_head.infer(self.backbone.item_table(), last, 1);
        let Some(intra) = &self.intra else {
            return Some(y);
        };
        let lt = &self
            .long_tail
            .as_ref()
            .expect("hdt stores long-tail flags")
            .value;
        let mut flags: Vec<f32> = (1..n).map(|i| lt[w[i] as usize]).collect();
        flags.push(assumed_novelty(&flags, k.novelty_eps));
        let steps = n.min(cfg.max_len - 1);
        let first = n - steps;
        let pad = lookup(self.backbone.item_table(), &[0]);
        let (mut rn, mut st, mut act) = (Vec::new(), Vec::new(), Vec::new());
        for i in first..n {
            rn.push(flags[i..].iter().sum::<f32>());
            st.extend_from_slice(&states[i * d..(i + 1) * d]);
            act.extend_from_slice(if i + 1 < n {
                &emb[(i + 1) * d..(i + 2) * d]
            } else {
                &pad
            });
        }
        let valid = vec![true; steps];
        let inp = IntraInput {
            n: 1,
            steps,
            goal: &rt,
            rn: &rn,
            states: &st,
            actions: &act,
            valid: &valid,
        };
        let (out, _) = intra.forward(&inp, None);
        let at = (TOKENS * (steps - 1) + 2) * d;
        let a = intra
            .act_head
            .infer(self.backbone.item_table(), &out[at..at + d], 1);
        Some(a.iter().zip(&y).map(|(&a, &y)| a + k.alpha * y).collect())
    }
}
