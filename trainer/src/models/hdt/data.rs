//! Training sessions with their precomputed returns (the thesis's Algorithm 3) and the
//! batches of the user-parallel loop.

use super::forward::HdtBatch;
use crate::data::{Split, TrainPart};
use crate::error::{Error, Result};
use crate::objectives::{SimAccumulator, Similarity};

/// One window of a training session: the items the model reads and the returns of its
/// steps, computed inside the window.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionWindow {
    /// At most `max_len` consecutive items of the session.
    pub items: Vec<u32>,
    /// The first step with a loss (earlier steps were trained by the previous window).
    pub from: usize,
    /// `R_{c,t} = dis(window) − dis(window[..=t])` for every step with an action
    /// (`items.len() − 1` values; 0 without a similarity table).
    pub r_intra: Vec<f32>,
    /// `R^n_t`, the number of long-tail actions from step `t` to the end of the window.
    pub rn: Vec<f32>,
}

/// One training session with its returns.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionReturns {
    /// The windows the session is trained with, in order; the last one ends with the
    /// session (its last state is carried to the next session). With truncation (the
    /// thesis) this is the session's last `max_len` items only.
    pub windows: Vec<SessionWindow>,
    /// The first item of the whole session (the goal loss's target).
    pub first: u32,
    /// `R_c = dis_max − dis(C_1 ∪ … ∪ C_c)` over the user's whole sessions so far (0 without
    /// a similarity table).
    pub r_inter: f32,
    /// Steps with a loss over all windows.
    pub steps: usize,
}

/// A user's training sessions in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct UserSessions {
    /// Internal user id.
    pub user: u32,
    /// Sessions, oldest first.
    pub sessions: Vec<SessionReturns>,
}

/// How sessions longer than the window are trained.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LongSessions {
    /// Keep the last `max_len` items (the thesis).
    Truncate,
    /// Every target once: windows of `max_len` items every `max_len / 2` items, the last
    /// ending with the session; all share the session's goal (as a long session is read at
    /// inference).
    Windows,
}

/// `(start, from)` of the windows of a session of `n` items.
fn window_spans(n: usize, max_len: usize, long: LongSessions) -> Vec<(usize, usize)> {
    if n <= max_len || long == LongSessions::Truncate {
        return vec![(n.saturating_sub(max_len), 0)];
    }
    let stride = (max_len / 2).max(1);
    let mut out = vec![(0, 0)];
    let mut end = max_len;
    while end < n {
        let covered = end - 1; // the last target index trained so far
        end = (end + stride).min(n);
        let start = end - max_len;
        out.push((start, covered - start));
    }
    out
}

/// The training sessions of `split` (a session split: each training sequence with its
/// session starts) with their returns; users without sessions are left out.
pub fn prepare_sessions(
    split: &Split,
    max_len: usize,
    sim: Option<&Similarity>,
    long_tail: &[bool],
    dis_max: f32,
    long: LongSessions,
) -> Result<Vec<UserSessions>> {
    let TrainPart::Sequences(seqs) = &split.train else {
        return Err(Error::Invalid(
            "hierarchical models need a split of whole sequences (use --split session)".into(),
        ));
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
            let r_inter = match (sim, acc.as_mut()) {
                (Some(t), Some(a)) => {
                    a.extend(t, full);
                    (dis_max as f64 - a.dis()) as f32
                }
                _ => 0.0,
            };
            let mut windows = Vec::new();
            let mut steps = 0;
            for (ws, from) in window_spans(full.len(), max_len, long) {
                let w = &full[ws..(ws + max_len).min(full.len())];
                let r_intra = match sim {
                    Some(t) => {
                        let dis = t.prefix_dis(w);
                        let total = *dis.last().expect("non-empty window");
                        dis[..w.len() - 1]
                            .iter()
                            .map(|&x| (total - x) as f32)
                            .collect()
                    }
                    None => vec![0.0; w.len() - 1],
                };
                let mut rn = vec![0.0f32; w.len() - 1];
                let mut run = 0.0f32;
                for t in (0..w.len() - 1).rev() {
                    if long_tail[w[t + 1] as usize] {
                        run += 1.0;
                    }
                    rn[t] = run;
                }
                steps += (w.len() - 1).saturating_sub(from);
                windows.push(SessionWindow {
                    items: w.to_vec(),
                    from,
                    r_intra,
                    rn,
                });
            }
            sessions.push(SessionReturns {
                windows,
                first: full[0],
                r_inter,
                steps,
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

/// How the steps of the sessions in an update weigh in the losses.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum StepWeights {
    /// Each session's steps average to one session's share (the thesis: the per-session mean
    /// of Eq. 5.16, averaged over the slots).
    #[default]
    Session,
    /// Every step (event) weighs the same, as a plain backbone's loss over windows weighs
    /// them: a session of 200 items counts 100 times a session of 3.
    Event,
}

/// A window of a session with its index in the session and the session's carried states.
type Row<'a> = (
    &'a SessionReturns,
    &'a SessionWindow,
    usize,
    &'a [f32],
    &'a [f32],
);

/// The rows of a batch: every window of each session, with its carried states (`s`, `u`:
/// `[d]` each per session). Returns the batch and, per session, the row of its last window.
pub(super) fn make_batch(
    items: &[(&SessionReturns, &[f32], &[f32])],
    dim: usize,
    weights: StepWeights,
) -> (HdtBatch, Vec<usize>) {
    let rows: Vec<Row<'_>> = items
        .iter()
        .flat_map(|&(sess, s, u)| {
            sess.windows
                .iter()
                .enumerate()
                .map(move |(k, w)| (sess, w, k, s, u))
        })
        .collect();
    let len = rows.iter().map(|r| r.1.items.len()).max().unwrap_or(1);
    let steps = len - 1;
    let mut b = HdtBatch {
        n: rows.len(),
        len,
        ..Default::default()
    };
    let mut last = Vec::with_capacity(items.len());
    for (r, (sess, w, k, s, u)) in rows.into_iter().enumerate() {
        let m = w.items.len();
        b.items.extend_from_slice(&w.items);
        b.items.resize(b.items.len() + len - m, 0);
        b.lens.push(m);
        b.from.push(w.from);
        b.step_weight.push(match weights {
            StepWeights::Session => 1.0 / sess.steps.max(1) as f32,
            StepWeights::Event => 1.0,
        });
        b.goal_weight.push(if k == 0 { 1.0 } else { 0.0 });
        b.first.push(sess.first);
        b.r_inter.push(sess.r_inter);
        b.s_prev.extend_from_slice(s);
        b.u_prev.extend_from_slice(u);
        for (dst, v) in [(&mut b.r_intra, &w.r_intra), (&mut b.rn, &w.rn)] {
            dst.extend_from_slice(v);
            dst.resize(dst.len() + steps - v.len(), 0.0);
        }
        if k + 1 == sess.windows.len() {
            last.push(r);
        }
    }
    debug_assert_eq!(b.s_prev.len(), b.n * dim);
    (b, last)
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
        let prep = |max_len, long| prepare_sessions(&split, max_len, Some(&sim), &lt, 2.0, long);
        let us = prep(20, LongSessions::Truncate).unwrap();
        assert_eq!(us.len(), 1);
        let [first, second] = &us[0].sessions[..] else {
            panic!("two sessions")
        };
        // One item: dis 0, R_1 = 2 − 0; no steps.
        assert_eq!((first.r_inter, first.steps), (2.0, 0));
        let w = &second.windows[0];
        for (got, want) in w.r_intra.iter().zip([1.048816, 0.048816, 0.520221]) {
            assert!((*got as f64 - want).abs() < 1e-6, "{:?}", w.r_intra);
        }
        // R_2 = 2 − dis(3, 1, 2, 3, 4).
        let d = sim.dis(&[3, 1, 2, 3, 4]);
        assert!((second.r_inter as f64 - (2.0 - d)).abs() < 1e-6);
        // Actions 2, 3, 4 with flags 1, 1, 0.
        assert_eq!(w.rn, [2.0, 1.0, 0.0]);
        assert_eq!((second.first, second.steps), (1, 3));
        // Truncation keeps the last max_len items; the goal target stays the first item.
        let us = prep(2, LongSessions::Truncate).unwrap();
        let s = &us[0].sessions[1];
        assert_eq!((s.windows.len(), &s.windows[0].items[..]), (1, &[3, 4][..]));
        assert_eq!((s.first, s.steps), (1, 1));
        // Windows train every target once, the last window ending with the session.
        let us = prep(2, LongSessions::Windows).unwrap();
        let s = &us[0].sessions[1];
        let spans: Vec<(&[u32], usize)> =
            s.windows.iter().map(|w| (&w.items[..], w.from)).collect();
        assert_eq!(
            spans,
            [(&[1, 2][..], 0), (&[2, 3][..], 0), (&[3, 4][..], 0)]
        );
        assert_eq!(s.steps, 3);
    }

    #[test]
    fn windows_cover_each_target_once() {
        for (n, l) in [(23, 8), (9, 8), (8, 8), (40, 20), (21, 20), (7, 3)] {
            let spans = window_spans(n, l, LongSessions::Windows);
            let mut trained = Vec::new();
            for &(start, from) in &spans {
                let len = l.min(n - start);
                trained.extend((from..len - 1).map(|t| start + t + 1));
            }
            assert_eq!(trained, (1..n).collect::<Vec<_>>(), "n {n}, window {l}");
            let &(start, _) = spans.last().unwrap();
            assert_eq!(start + l.min(n), n, "the last window ends with the session");
        }
    }

    #[test]
    fn batches_pad_windows_and_returns() {
        let win = |items: Vec<u32>, from, r_intra: Vec<f32>, rn: Vec<f32>| SessionWindow {
            items,
            from,
            r_intra,
            rn,
        };
        let a = SessionReturns {
            windows: vec![
                win(vec![1, 2, 3], 0, vec![0.2, 0.1], vec![2.0, 1.0]),
                win(vec![2, 3, 5], 1, vec![0.3, 0.4], vec![1.0, 0.0]),
            ],
            first: 1,
            r_inter: 0.5,
            steps: 3,
        };
        let b = SessionReturns {
            windows: vec![win(vec![4], 0, vec![], vec![])],
            first: 4,
            r_inter: 1.5,
            steps: 0,
        };
        let z = [0.0f32; 2];
        let o = [1.0f32; 2];
        let (batch, last) = make_batch(&[(&a, &z, &o), (&b, &o, &z)], 2, StepWeights::Session);
        assert_eq!((batch.n, batch.len), (3, 3));
        assert_eq!(batch.items, [1, 2, 3, 2, 3, 5, 4, 0, 0]);
        assert_eq!(batch.lens, [3, 3, 1]);
        assert_eq!(batch.from, [0, 1, 0]);
        assert_eq!(batch.goal_weight, [1.0, 0.0, 1.0]);
        assert_eq!(batch.step_weight, [1.0 / 3.0, 1.0 / 3.0, 1.0]);
        assert_eq!(batch.r_intra, [0.2, 0.1, 0.3, 0.4, 0.0, 0.0]);
        assert_eq!(batch.rn, [2.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
        assert_eq!(batch.s_prev, [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]);
        assert_eq!(batch.u_prev, [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(last, [1, 2]);
        // Per event: every step weighs 1, whatever its session's length.
        let (batch, _) = make_batch(&[(&a, &z, &o), (&b, &o, &z)], 2, StepWeights::Event);
        assert_eq!(batch.step_weight, [1.0, 1.0, 1.0]);
    }
}
