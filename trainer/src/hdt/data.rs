//! Training sessions with their precomputed returns (the thesis's Algorithm 3) and the
//! batches of the user-parallel loop.

use super::forward::HdtBatch;
use crate::data::{Split, TrainPart};
use crate::objectives::{SimAccumulator, Similarity};

/// One training session with its returns.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionReturns {
    /// The session's last `max_len` items (the window the model reads).
    pub items: Vec<u32>,
    /// The first item of the whole session (the goal loss's target).
    pub first: u32,
    /// `R_c = dis_max − dis(C_1 ∪ … ∪ C_c)` over the user's whole sessions so far (0 without
    /// a similarity table).
    pub r_inter: f32,
    /// `R_{c,t} = dis(window) − dis(window[..=t])` for every step with an action
    /// (`items.len() − 1` values; 0 without a similarity table).
    pub r_intra: Vec<f32>,
    /// `R^n_t`, the number of long-tail actions from step `t` to the end of the window.
    pub rn: Vec<f32>,
}

/// A user's training sessions in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct UserSessions {
    /// Internal user id.
    pub user: u32,
    /// Sessions, oldest first.
    pub sessions: Vec<SessionReturns>,
}

/// The training sessions of `split` (a session split: each training sequence with its
/// session starts) with their returns; users without sessions are left out.
pub fn prepare_sessions(
    split: &Split,
    max_len: usize,
    sim: Option<&Similarity>,
    long_tail: &[bool],
    dis_max: f32,
) -> Result<Vec<UserSessions>, String> {
    let TrainPart::Sequences(seqs) = &split.train else {
        return Err(
            "hierarchical models need a split of whole sequences (use --split session)".into(),
        );
    };
    let mut out = Vec::new();
    for s in seqs {
        let mut acc = sim.map(|t| SimAccumulator::new(t.dim()));
        let mut sessions = Vec::new();
        for (k, &start) in s.session_starts.iter().enumerate() {
            let end = s
                .session_starts
                .get(k + 1)
                .copied()
                .unwrap_or(s.items.len());
            if end <= start {
                continue;
            }
            let full = &s.items[start..end];
            let w = &full[full.len().saturating_sub(max_len)..];
            let (r_inter, r_intra) = match (sim, acc.as_mut()) {
                (Some(t), Some(a)) => {
                    for &i in full {
                        a.push(t, i);
                    }
                    let dis = t.prefix_dis(w);
                    let total = *dis.last().expect("non-empty window");
                    (
                        (dis_max as f64 - (1.0 - a.sim())) as f32,
                        dis[..w.len() - 1]
                            .iter()
                            .map(|&x| (total - x) as f32)
                            .collect(),
                    )
                }
                _ => (0.0, vec![0.0; w.len() - 1]),
            };
            let mut rn = vec![0.0f32; w.len() - 1];
            let mut run = 0.0f32;
            for t in (0..w.len() - 1).rev() {
                if long_tail[w[t + 1] as usize] {
                    run += 1.0;
                }
                rn[t] = run;
            }
            sessions.push(SessionReturns {
                items: w.to_vec(),
                first: full[0],
                r_inter,
                r_intra,
                rn,
            });
        }
        if !sessions.is_empty() {
            out.push(UserSessions {
                user: s.user,
                sessions,
            });
        }
    }
    Ok(out)
}

/// A batch of sessions with their carried states (`s`, `u`: `[d]` each per session).
pub(super) fn make_batch(items: &[(&SessionReturns, &[f32], &[f32])], dim: usize) -> HdtBatch {
    let n = items.len();
    let len = items.iter().map(|(s, ..)| s.items.len()).max().unwrap_or(1);
    let steps = len - 1;
    let mut b = HdtBatch {
        n,
        len,
        ..Default::default()
    };
    for (sess, s, u) in items {
        let m = sess.items.len();
        b.items.extend_from_slice(&sess.items);
        b.items.resize(b.items.len() + len - m, 0);
        b.lens.push(m);
        b.first.push(sess.first);
        b.r_inter.push(sess.r_inter);
        b.s_prev.extend_from_slice(s);
        b.u_prev.extend_from_slice(u);
        for (dst, v) in [(&mut b.r_intra, &sess.r_intra), (&mut b.rn, &sess.rn)] {
            dst.extend_from_slice(v);
            dst.resize(dst.len() + steps - v.len(), 0.0);
        }
    }
    debug_assert_eq!(b.s_prev.len(), n * dim);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{SplitMethod, TrainSeq};

    #[test]
    fn returns_follow_the_specification() {
        // Spec §1 embeddings e1=(1,0), e2=(0,1), e3=(1,1), e4=(−1,0); one session (1,2,3,4)
        // after a session (3): R_{c,t} = 1.048816, 0.048816, 0.520221 for t = 1..3.
        let table = [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, -1.0, 0.0];
        let sim = Similarity::new(&table, 2).unwrap();
        let split = Split {
            method: SplitMethod::sessions_60min(),
            n_users: 2,
            n_items: 5,
            train: TrainPart::Sequences(vec![TrainSeq {
                user: 1,
                items: vec![3, 1, 2, 3, 4],
                session_starts: vec![0, 1],
            }]),
            valid: Vec::new(),
            test: Vec::new(),
        };
        let lt = [false, false, true, true, false];
        let us = prepare_sessions(&split, 20, Some(&sim), &lt, 2.0).unwrap();
        assert_eq!(us.len(), 1);
        let [first, second] = &us[0].sessions[..] else {
            panic!("two sessions")
        };
        // One item: dis 0, R_1 = 2 − 0; no steps.
        assert_eq!((first.r_inter, first.r_intra.len()), (2.0, 0));
        for (got, want) in second.r_intra.iter().zip([1.048816, 0.048816, 0.520221]) {
            assert!((*got as f64 - want).abs() < 1e-6, "{:?}", second.r_intra);
        }
        // R_2 = 2 − dis(3, 1, 2, 3, 4).
        let d = sim.dis(&[3, 1, 2, 3, 4]);
        assert!((second.r_inter as f64 - (2.0 - d)).abs() < 1e-6);
        // Actions 2, 3, 4 with flags 1, 1, 0.
        assert_eq!(second.rn, [2.0, 1.0, 0.0]);
        assert_eq!(second.first, 1);
        // Truncation keeps the last max_len items; the goal target stays the first item.
        let us = prepare_sessions(&split, 2, Some(&sim), &lt, 2.0).unwrap();
        assert_eq!(us[0].sessions[1].items, [3, 4]);
        assert_eq!(us[0].sessions[1].first, 1);
    }

    #[test]
    fn batches_pad_sessions_and_returns() {
        let a = SessionReturns {
            items: vec![1, 2, 3],
            first: 1,
            r_inter: 0.5,
            r_intra: vec![0.2, 0.1],
            rn: vec![2.0, 1.0],
        };
        let b = SessionReturns {
            items: vec![4],
            first: 4,
            r_inter: 1.5,
            r_intra: vec![],
            rn: vec![],
        };
        let z = [0.0f32; 2];
        let o = [1.0f32; 2];
        let batch = make_batch(&[(&a, &z, &o), (&b, &o, &z)], 2);
        assert_eq!((batch.n, batch.len), (2, 3));
        assert_eq!(batch.items, [1, 2, 3, 4, 0, 0]);
        assert_eq!(batch.lens, [3, 1]);
        assert_eq!(batch.r_intra, [0.2, 0.1, 0.0, 0.0]);
        assert_eq!(batch.rn, [2.0, 1.0, 0.0, 0.0]);
        assert_eq!(batch.s_prev, [0.0, 0.0, 1.0, 1.0]);
        assert_eq!(batch.u_prev, [1.0, 1.0, 0.0, 0.0]);
    }
}
