//! Training samples of the RL heads: the SQN code's replay-buffer expansion
//! (`spec/thesis-models.md` §1).
//!
//! Every position `j ≥ 1` (0-based) of a training sequence `x_0..x_{m−1}` gives one
//! transition: the state window is the up-to-`L` items before `j`, the action `x_j`, the next
//! state the window that ends at `j` (up to `L` items), and `done` when `j = m − 1`.
//!
//! Windows are **right-padded** (real items first, then the padding id 0), which is both the
//! spec's convention and RecBole's tensor layout: SASRec and GRU4Rec read the state at row
//! `len − 1`, NextItNet at row `L − 1` of a window of exactly `L` rows and Caser over the
//! whole `L`-row window, exactly as the engine reads a history (the backbones keep RecBole's
//! conventions, so a checkpoint serves unchanged).

use super::le::{LeCache, LeState, LeVariant};
use crate::data::{Split, TrainPart};
use crate::error::{Error, Result};
use crate::models::{Batch, TrainModel, TrainStyle};
use crate::nn::Rng;

/// One transition, borrowing its sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition<'a> {
    /// User id of the sequence.
    pub user: u32,
    /// State window `s_t` (1..=L items).
    pub state: &'a [u32],
    /// Action `a_t`.
    pub action: u32,
    /// Next-state window `s_{t+1}` (ends with the action).
    pub next: &'a [u32],
    /// Whether the action is the sequence's last item.
    pub done: bool,
}

/// Every transition of a split's training sequences (indices into the sequences).
#[derive(Clone, Debug)]
pub struct Transitions {
    seqs: Vec<(u32, Vec<u32>)>,
    index: Vec<(u32, u32)>,
    window: usize,
}

impl Transitions {
    /// The transitions of `split`'s training sequences with windows of `window` items.
    ///
    /// # Errors
    /// When the split's training part is a benchmark's given examples (RL training needs whole
    /// sequences), or no sequence has two items.
    pub fn from_split(split: &Split, window: usize) -> Result<Self> {
        let TrainPart::Sequences(train) = &split.train else {
            return Err(Error::Invalid(
                "RL training needs whole training sequences; this data set's training part \
                 is a benchmark's given examples: split it by sequence (--split ratio)"
                    .into(),
            ));
        };
        let seqs: Vec<(u32, Vec<u32>)> = train
            .iter()
            .filter(|s| s.items.len() >= 2)
            .map(|s| (s.user, s.items.clone()))
            .collect();
        Self::from_sequences(seqs, window)
    }

    /// The transitions of `(user, items)` sequences (those shorter than 2 give none).
    ///
    /// # Errors
    /// When no sequence has two items or `window` is 0.
    pub fn from_sequences(seqs: Vec<(u32, Vec<u32>)>, window: usize) -> Result<Self> {
        if window == 0 {
            return Err(Error::Invalid(
                "RL training needs a window of at least one item".into(),
            ));
        }
        let index: Vec<(u32, u32)> = seqs
            .iter()
            .enumerate()
            .flat_map(|(s, (_, items))| (1..items.len()).map(move |j| (s as u32, j as u32)))
            .collect();
        if index.is_empty() {
            return Err(Error::NoTrainingData(
                "no training transitions: every sequence is shorter than two items",
            ));
        }
        Ok(Transitions {
            seqs,
            index,
            window,
        })
    }

    /// Number of transitions.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Transition `i`.
    pub fn get(&self, i: usize) -> Transition<'_> {
        let (s, j) = self.index[i];
        let (user, items) = &self.seqs[s as usize];
        let j = j as usize;
        let l = self.window;
        Transition {
            user: *user,
            state: &items[j.saturating_sub(l)..j],
            action: items[j],
            next: &items[(j + 1).saturating_sub(l)..=j],
            done: j + 1 == items.len(),
        }
    }
}

/// A [`Batch`] of windows (each non-empty, at most the backbone's `max_len` items) with one
/// output per window at its last real position; right-padded to the longest window
/// (all-positions backbones) or to exactly `max_len` rows (last-position backbones).
pub fn window_batch<M: TrainModel>(windows: &[(&[u32], u32)], backbone: &M) -> Batch {
    let len = match backbone.style() {
        TrainStyle::AllPositions => windows.iter().map(|(w, _)| w.len()).max().unwrap_or(1),
        TrainStyle::LastPosition => backbone.max_len(),
    };
    let mut b = Batch {
        n: windows.len(),
        len,
        ..Default::default()
    };
    for (r, (w, user)) in windows.iter().enumerate() {
        assert!(
            !w.is_empty() && w.len() <= len,
            "window of {} items for a batch of {len} rows",
            w.len()
        );
        b.items.extend_from_slice(w);
        b.items.resize((r + 1) * len, 0);
        b.lens.push(w.len());
        b.users.push(*user);
        b.out_pos.push((r, w.len() - 1));
        b.targets.push(0);
    }
    b
}

/// A mini-batch of transitions, ready for [`super::step::rl_step`].
#[derive(Clone, Debug)]
pub struct RlBatch {
    /// State windows.
    pub state: Batch,
    /// Next-state windows.
    pub next: Batch,
    /// Actions, one per row.
    pub actions: Vec<u32>,
    /// Terminal flags.
    pub done: Vec<bool>,
    /// The last item of each state window (SMORL's diversity reward).
    pub last: Vec<u32>,
    /// Sampled negative actions, `[rows, negatives]` (empty without negatives).
    pub negatives: Vec<u32>,
    /// Negatives per row.
    pub n_neg: usize,
    /// The language environment's rows, when training with one.
    pub le: Option<LeRows>,
}

/// A batch's rows of an LE cache ([`super::le`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeRows {
    /// LE states `s'^e_t`, `[rows, d_e]` (empty when the Q heads do not read them).
    pub state: Vec<f32>,
    /// LE states of the next states `s'^e_{t+1}` (the next sample's; zeros when `done`).
    pub next: Vec<f32>,
    /// LE rewards of the positives and negatives (empty with the predefined rewards).
    pub reward: Vec<f32>,
    /// See [`Self::reward`].
    pub negative_reward: Vec<f32>,
    /// Augmented actions `a^e_t` (empty without augmentation).
    pub augmented: Vec<u32>,
    /// LE rewards of the augmented actions (empty with the predefined rewards).
    pub augmented_reward: Vec<f32>,
}

impl LeRows {
    /// The rows `ids` of `cache` for `variant` over the transitions `tr`.
    pub fn gather(cache: &LeCache, variant: LeVariant, tr: &Transitions, ids: &[usize]) -> LeRows {
        let mut rows = LeRows::default();
        if variant.state != LeState::Backbone {
            let e = cache.state_dim;
            for &i in ids {
                rows.state.extend_from_slice(cache.state(i));
                if tr.get(i).done {
                    rows.next.resize(rows.next.len() + e, 0.0);
                } else {
                    rows.next.extend_from_slice(cache.state(i + 1));
                }
            }
        }
        if variant.reward {
            rows.reward = ids.iter().map(|&i| cache.reward(i)).collect();
            rows.negative_reward = ids.iter().map(|&i| cache.negative_reward(i)).collect();
        }
        if variant.augment {
            rows.augmented = ids.iter().map(|&i| cache.augmented(i)).collect();
            if variant.reward {
                rows.augmented_reward = ids.iter().map(|&i| cache.augmented_reward(i)).collect();
            }
        }
        rows
    }
}

impl RlBatch {
    /// The batch of transitions `ids`, with `n_neg` negatives per row drawn uniformly from the
    /// real items other than the action.
    pub fn build<M: TrainModel>(
        tr: &Transitions,
        ids: &[usize],
        backbone: &M,
        n_items: usize,
        n_neg: usize,
        rng: &mut Rng,
    ) -> RlBatch {
        let ts: Vec<Transition<'_>> = ids.iter().map(|&i| tr.get(i)).collect();
        let states: Vec<(&[u32], u32)> = ts.iter().map(|t| (t.state, t.user)).collect();
        let nexts: Vec<(&[u32], u32)> = ts.iter().map(|t| (t.next, t.user)).collect();
        let mut negatives = Vec::with_capacity(ts.len() * n_neg);
        for t in &ts {
            for _ in 0..n_neg {
                negatives.push(sample_other(rng, n_items, t.action));
            }
        }
        RlBatch {
            state: window_batch(&states, backbone),
            next: window_batch(&nexts, backbone),
            actions: ts.iter().map(|t| t.action).collect(),
            done: ts.iter().map(|t| t.done).collect(),
            last: ts
                .iter()
                .map(|t| *t.state.last().expect("states are non-empty"))
                .collect(),
            negatives,
            n_neg,
            le: None,
        }
    }

    /// [`Self::build`] with a language environment: its rows, and each row's one negative the
    /// cache's pre-sampled one when it has them (its LE reward is cached with it).
    pub fn build_le<M: TrainModel>(
        tr: &Transitions,
        ids: &[usize],
        backbone: &M,
        n_items: usize,
        le: (&LeCache, LeVariant),
        rng: &mut Rng,
    ) -> RlBatch {
        let (cache, variant) = le;
        let mut b = Self::build(tr, ids, backbone, n_items, 1, rng);
        if let Some(neg) = ids
            .iter()
            .map(|&i| cache.negative(i))
            .collect::<Option<Vec<u32>>>()
        {
            b.negatives = neg;
        }
        b.le = Some(LeRows::gather(cache, variant, tr, ids));
        b
    }

    /// Rows (transitions).
    pub fn rows(&self) -> usize {
        self.actions.len()
    }
}

/// A real item (`1..n_items`) other than `not`, uniformly (`not` itself when it is the only
/// one).
pub fn sample_other(rng: &mut Rng, n_items: usize, not: u32) -> u32 {
    if n_items <= 2 {
        return 1;
    }
    // Uniform over the n_items − 2 real items other than `not`.
    let j = 1 + rng.below(n_items - 2) as u32;
    if j >= not { j + 1 } else { j }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{NextItNetConfig, NextItNetModel, SasRecConfig, SasRecModel};

    #[test]
    fn replay_buffer_expansion() {
        let tr = Transitions::from_sequences(vec![(4, vec![1, 2, 3, 4]), (5, vec![9])], 2).unwrap();
        assert_eq!(tr.len(), 3);
        let t: Vec<_> = (0..3).map(|i| tr.get(i)).collect();
        assert_eq!(
            (t[0].state, t[0].action, t[0].next),
            (&[1][..], 2, &[1, 2][..])
        );
        assert_eq!(
            (t[1].state, t[1].action, t[1].next),
            (&[1, 2][..], 3, &[2, 3][..])
        );
        assert_eq!(
            (t[2].state, t[2].action, t[2].next),
            (&[2, 3][..], 4, &[3, 4][..])
        );
        assert_eq!(
            t.iter().map(|t| t.done).collect::<Vec<_>>(),
            [false, false, true]
        );
        assert!(t.iter().all(|t| t.user == 4));
        assert!(Transitions::from_sequences(vec![(1, vec![3])], 2).is_err());
    }

    #[test]
    fn batches_right_pad_per_backbone_style() {
        let mut rng = Rng::new(1);
        let tr = Transitions::from_sequences(vec![(1, vec![5, 6, 7]), (2, vec![8, 9])], 3).unwrap();
        let sas = SasRecModel::new(SasRecConfig::new(10, 3), &mut rng);
        let b = RlBatch::build(&tr, &[1, 2], &sas, 10, 2, &mut rng);
        assert_eq!(b.state.len, 2);
        assert_eq!(b.state.items, [5, 6, 8, 0]);
        assert_eq!(b.state.out_pos, [(0, 1), (1, 0)]);
        assert_eq!(b.next.items, [5, 6, 7, 8, 9, 0]);
        assert_eq!(b.next.out_pos, [(0, 2), (1, 1)]);
        assert_eq!(
            (b.actions, b.done, b.last),
            (vec![7, 9], vec![true, true], vec![6, 8])
        );
        assert_eq!(b.negatives.len(), 4);
        assert!(
            b.negatives[..2]
                .iter()
                .all(|&n| n != 7 && (1..10).contains(&n))
        );
        let mut cfg = NextItNetConfig::new(10, 3);
        cfg.emb = 4;
        let nin = NextItNetModel::new(cfg, &mut rng);
        let b = RlBatch::build(&tr, &[2], &nin, 10, 0, &mut rng);
        assert_eq!((b.state.len, b.state.items.clone()), (3, vec![8, 0, 0]));
        assert!(b.negatives.is_empty());
    }

    #[test]
    fn negatives_are_uniform_over_the_other_items() {
        let mut rng = Rng::new(2);
        let mut seen = [0usize; 6];
        for _ in 0..5000 {
            seen[sample_other(&mut rng, 6, 3) as usize] += 1;
        }
        assert_eq!((seen[0], seen[3]), (0, 0));
        // 1250 expected per item; ±5σ ≈ ±153.
        assert!(
            seen.iter()
                .enumerate()
                .all(|(i, &c)| i == 0 || i == 3 || c.abs_diff(1250) < 160)
        );
    }
}
