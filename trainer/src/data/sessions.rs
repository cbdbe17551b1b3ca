//! Session-level preprocessing for hierarchical session models (`spec/thesis-models.md` §5.1)
//! and the session boundaries of a session split.
//!
//! [`filter_sessions`] applies the HDT preprocessing, in this order:
//! 1. drop items with fewer than `min_item_count` interactions (counted over the whole data);
//! 2. cut every user's remaining interactions into sessions at gaps longer than `gap_secs`
//!    and drop sessions with fewer than `min_session_len` interactions;
//! 3. keep users with at least `min_sessions` sessions.
//!
//! Sessions are cut *after* the item filter, so a session is a run of surviving interactions
//! without a long gap. The result keeps the surviving timestamps, and cutting it again at
//! the same gap gives exactly the kept sessions (inside a kept session no gap exceeds the
//! threshold; between two kept sessions the gap is at least the one that separated the first
//! from its successor), so the ordinary [`SplitMethod::Session`](super::SplitMethod) split
//! on the filtered data has the thesis's sessions. Item ids are renumbered densely over the
//! surviving items, keeping their original order (the catalog is the surviving items); user
//! ids are unchanged (dropped users have no interactions).
//!
//! The thesis also collapses consecutive repeats of an item on its music data set; MovieLens
//! has no repeated ratings, so that step is not implemented.

use super::{DataError, Interactions, Result, SideTable, Split, TrainPart, Vocab, session_starts};

/// Thresholds of [`filter_sessions`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SessionFilter {
    /// Items with fewer interactions are dropped (3 in the thesis).
    pub min_item_count: usize,
    /// Sessions with fewer interactions are dropped (3).
    pub min_session_len: usize,
    /// Users with fewer sessions are dropped (5).
    pub min_sessions: usize,
}

impl Default for SessionFilter {
    /// The thesis's thresholds: items ≥ 3, sessions ≥ 3, users ≥ 5 sessions.
    fn default() -> Self {
        SessionFilter {
            min_item_count: 3,
            min_session_len: 3,
            min_sessions: 5,
        }
    }
}

impl std::str::FromStr for SessionFilter {
    type Err = DataError;

    /// `ITEMS:SESSION_LEN:SESSIONS`, e.g. `3:3:5`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || DataError::UnknownName {
            what: "session filter",
            value: s.to_string(),
            expected: "MIN_ITEM_COUNT:MIN_SESSION_LEN:MIN_SESSIONS, e.g. 3:3:5".into(),
        };
        let parts: Vec<usize> = s
            .split(':')
            .map(|p| p.trim().parse::<usize>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad())?;
        match parts.as_slice() {
            &[a, b, c] => Ok(SessionFilter {
                min_item_count: a,
                min_session_len: b,
                min_sessions: c,
            }),
            _ => Err(bad()),
        }
    }
}

/// Applies `filter` to `inter` with sessions cut at `gap_secs` (see the module docs).
///
/// # Errors
/// When the data has no timestamps, or nothing survives the filter.
pub fn filter_sessions(
    inter: &Interactions,
    gap_secs: f64,
    filter: &SessionFilter,
) -> Result<Interactions> {
    let times = inter
        .timestamps
        .as_ref()
        .ok_or(DataError::NoTimestamps("session filter"))?;
    let mut counts = vec![0usize; inter.n_items()];
    for &i in inter.sequences.iter().flatten() {
        counts[i as usize] += 1;
    }
    let keep_item = |i: u32| counts[i as usize] >= filter.min_item_count;
    let n_users = inter.n_users();
    let mut kept: Vec<Vec<usize>> = vec![Vec::new(); n_users];
    for u in 1..n_users {
        let seq = &inter.sequences[u];
        let rows: Vec<usize> = (0..seq.len()).filter(|&r| keep_item(seq[r])).collect();
        let t: Vec<f64> = rows.iter().map(|&r| times[u][r]).collect();
        let starts = session_starts(&t, gap_secs);
        let mut sessions: Vec<&[usize]> = Vec::new();
        for (k, &s) in starts.iter().enumerate() {
            let e = starts.get(k + 1).copied().unwrap_or(rows.len());
            if e - s >= filter.min_session_len.max(1) {
                sessions.push(&rows[s..e]);
            }
        }
        if sessions.len() >= filter.min_sessions.max(1) {
            kept[u] = sessions.concat();
        }
    }
    // Dense item ids over the surviving items, in their original order.
    let mut used = vec![false; inter.n_items()];
    for (u, rows) in kept.iter().enumerate() {
        for &r in rows {
            used[inter.sequences[u][r] as usize] = true;
        }
    }
    let mut items = Vocab::new();
    let mut remap = vec![0u32; inter.n_items()];
    for old in 1..inter.n_items() {
        if used[old] {
            let token = inter.items.token(old as u32).expect("id in range");
            remap[old] = items.intern(token);
        }
    }
    if items.is_empty() {
        return Err(DataError::Invalid(format!(
            "session filter {}:{}:{} (gap {} min) leaves no interactions",
            filter.min_item_count,
            filter.min_session_len,
            filter.min_sessions,
            gap_secs / 60.0
        )));
    }
    let pick = |u: usize, f: &dyn Fn(usize) -> f64| kept[u].iter().map(|&r| f(r)).collect();
    let sequences = (0..n_users)
        .map(|u| {
            kept[u]
                .iter()
                .map(|&r| remap[inter.sequences[u][r] as usize])
                .collect()
        })
        .collect();
    let timestamps = (0..n_users)
        .map(|u| pick(u, &|r| times[u][r]))
        .collect::<Vec<Vec<f64>>>();
    let ratings = inter.ratings.as_ref().map(|rt| {
        (0..n_users)
            .map(|u| kept[u].iter().map(|&r| rt[u][r]).collect())
            .collect()
    });
    let item_features = inter.item_features.as_ref().map(|side| {
        let mut out = SideTable::new(side.fields().to_vec());
        for old in 1..inter.n_items() {
            if let Some(row) = used[old].then(|| side.row(old as u32)).flatten() {
                out.set(remap[old], row.to_vec());
            }
        }
        out
    });
    Ok(Interactions {
        users: inter.users.clone(),
        items,
        sequences,
        timestamps: Some(timestamps),
        ratings,
        item_features,
        user_features: inter.user_features.clone(),
    })
}

/// Start index of every session of every user in a session split (indexed by user id; each
/// list sorted, starting with 0 for users with data), in the coordinates of the users' whole
/// sequences (those of [`crate::data::EvalSeq::items`]): the training sessions, then the
/// validation and test sessions. Empty for other splits' users without sessions.
pub fn session_boundaries(split: &Split) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); split.n_users];
    if let TrainPart::Sequences(seqs) = &split.train {
        for s in seqs {
            let b = &mut out[s.user as usize];
            b.extend_from_slice(&s.session_starts);
            // The first held-out session starts where the training part ends.
            b.push(s.items.len());
        }
    }
    for e in split.valid.iter().chain(&split.test) {
        out[e.user as usize].push(e.session_start);
    }
    for b in &mut out {
        b.sort_unstable();
        b.dedup();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Builder, SplitMethod, split};

    const H: f64 = 3600.0;

    fn inter(rows: &[(&str, &str, f64)]) -> Interactions {
        let mut b = Builder::new(true, false);
        for &(u, i, t) in rows {
            b.push(u, i, Some(t), None);
        }
        b.finish()
    }

    #[test]
    fn drops_rare_items_short_sessions_and_users_with_few_sessions() {
        // Items a, b, c are frequent (≥ 3), z is rare. User 1 has sessions at hours 0, 2, 4,
        // 6 (the one at 6 is too short), user 2 only two sessions.
        let mut rows = Vec::new();
        for (s, len) in [(0.0, 3), (2.0, 3), (4.0, 4), (6.0, 2)] {
            for k in 0..len {
                let item = ["a", "b", "c"][k % 3];
                rows.push(("u1", item, s * H + k as f64 * 60.0));
            }
        }
        // A rare item inside the third session and a lone rare item in its own "session".
        rows.push(("u1", "z", 4.0 * H + 30.0));
        for s in [0.0, 2.0] {
            for item in ["a", "b", "c"] {
                rows.push(("u2", item, s * H));
            }
        }
        let data = inter(&rows);
        let f = SessionFilter {
            min_item_count: 3,
            min_session_len: 3,
            min_sessions: 3,
        };
        let out = filter_sessions(&data, H, &f).unwrap();
        let u1 = out.users.id("u1").unwrap() as usize;
        let u2 = out.users.id("u2").unwrap() as usize;
        // z is gone, the session at hour 6 is gone, user 2 is gone.
        assert_eq!(out.n_items(), 4, "a, b, c and the padding id");
        assert_eq!(out.sequences[u1].len(), 10);
        assert!(out.sequences[u2].is_empty());
        assert_eq!(out.items.tokens(), ["[PAD]", "a", "b", "c"]);
        // Re-cutting the filtered data at the same gap gives the kept sessions.
        let t = &out.timestamps.as_ref().unwrap()[u1];
        assert_eq!(session_starts(t, H), [0, 3, 6]);
        let e = filter_sessions(
            &data,
            H,
            &SessionFilter {
                min_sessions: 9,
                ..f
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("leaves no interactions"), "{e}");
        let e = "3:3".parse::<SessionFilter>().unwrap_err().to_string();
        assert!(e.contains("MIN_ITEM_COUNT"), "{e}");
        assert_eq!("3:3:5".parse::<SessionFilter>().unwrap(), f_default());
    }

    fn f_default() -> SessionFilter {
        SessionFilter::default()
    }

    #[test]
    fn boundaries_cover_training_validation_and_test_sessions() {
        // Four sessions of 2, 3, 2, 3 items: two training sessions, validation, test.
        let mut rows = Vec::new();
        let mut k = 0;
        for (s, len) in [(0.0, 2), (2.0, 3), (4.0, 2), (6.0, 3)] {
            for j in 0..len {
                rows.push(("u", ["a", "b", "c", "d"][k % 4], s * H + j as f64));
                k += 1;
            }
        }
        let data = inter(&rows);
        let sp = split(&data, &SplitMethod::sessions_60min()).unwrap();
        let b = session_boundaries(&sp);
        assert_eq!(b[1], [0, 2, 5, 7]);
        assert_eq!(sp.valid[0].session_start, 5);
        assert_eq!(sp.test[0].session_start, 7);
    }
}
