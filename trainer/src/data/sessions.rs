//! Session-level preprocessing for hierarchical session models (`spec/thesis-models.md` §5.1),
//! the sequence-level one of the thesis's other data sets ([`filter_sequences`]), and the
//! session boundaries of a session split.
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
        let [a, b, c] = thresholds(
            s,
            "session filter",
            "MIN_ITEM_COUNT:MIN_SESSION_LEN:MIN_SESSIONS, e.g. 3:3:5",
        )?;
        Ok(SessionFilter {
            min_item_count: a,
            min_session_len: b,
            min_sessions: c,
        })
    }
}

/// `N` colon-separated counts, or an error naming the filter `what` and the `expected` form.
fn thresholds<const N: usize>(s: &str, what: &'static str, expected: &str) -> Result<[usize; N]> {
    let bad = || DataError::UnknownName {
        what,
        value: s.to_string(),
        expected: expected.into(),
    };
    let parts: Vec<usize> = s
        .split(':')
        .map(|p| p.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad())?;
    parts.try_into().map_err(|_| bad())
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
    let counts = item_counts(inter);
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
    keep_rows(
        inter,
        &kept,
        &format!(
            "session filter {}:{}:{} (gap {} min)",
            filter.min_item_count,
            filter.min_session_len,
            filter.min_sessions,
            gap_secs / 60.0
        ),
    )
}

/// Thresholds of [`filter_sequences`], the preprocessing of the thesis's sequence data sets
/// (§4.8, §7.6: items with fewer than 3 interactions and sequences shorter than 3 removed).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct SequenceFilter {
    /// Items with fewer interactions are dropped.
    pub min_item_count: usize,
    /// Sequences with fewer interactions (after the item filter) are dropped.
    pub min_seq_len: usize,
}

impl std::str::FromStr for SequenceFilter {
    type Err = DataError;

    /// `ITEMS:SEQ_LEN`, e.g. `3:3`.
    fn from_str(s: &str) -> Result<Self> {
        let [a, b] = thresholds(s, "sequence filter", "MIN_ITEM_COUNT:MIN_SEQ_LEN, e.g. 3:3")?;
        Ok(SequenceFilter {
            min_item_count: a,
            min_seq_len: b,
        })
    }
}

/// Drops the items with fewer than `min_item_count` interactions (counted over the whole
/// data), then the users whose remaining sequence is shorter than `min_seq_len`, in one pass
/// (as the thesis describes it; the survivors may again hold an item below the threshold, as
/// with the session filter). Item ids are renumbered densely over the surviving items in their
/// original order; user ids are unchanged.
///
/// # Errors
/// When nothing survives.
pub fn filter_sequences(inter: &Interactions, filter: &SequenceFilter) -> Result<Interactions> {
    let counts = item_counts(inter);
    let kept: Vec<Vec<usize>> = inter
        .sequences
        .iter()
        .map(|seq| {
            let rows: Vec<usize> = (0..seq.len())
                .filter(|&r| counts[seq[r] as usize] >= filter.min_item_count)
                .collect();
            if rows.len() >= filter.min_seq_len.max(1) {
                rows
            } else {
                Vec::new()
            }
        })
        .collect();
    keep_rows(
        inter,
        &kept,
        &format!(
            "sequence filter {}:{}",
            filter.min_item_count, filter.min_seq_len
        ),
    )
}

/// The values of `table` (per user, aligned with the sequences) at rows `kept[u]`.
fn pick_rows<T: Copy>(table: &[Vec<T>], kept: &[Vec<usize>]) -> Vec<Vec<T>> {
    kept.iter()
        .zip(table)
        .map(|(rows, values)| rows.iter().map(|&r| values[r]).collect())
        .collect()
}

/// Interactions per item id.
fn item_counts(inter: &Interactions) -> Vec<usize> {
    let mut counts = vec![0usize; inter.n_items()];
    for &i in inter.sequences.iter().flatten() {
        counts[i as usize] += 1;
    }
    counts
}

/// The interactions at rows `kept[u]` of every user `u`, with item ids renumbered densely over
/// the items that remain (in their original order) and the timestamps, ratings and item side
/// information carried along. `what` names the filter in the error when nothing remains.
fn keep_rows(inter: &Interactions, kept: &[Vec<usize>], what: &str) -> Result<Interactions> {
    let n_users = inter.n_users();
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
        return Err(DataError::Invalid(format!("{what} leaves no interactions")));
    }
    let sequences = (0..n_users)
        .map(|u| {
            kept[u]
                .iter()
                .map(|&r| remap[inter.sequences[u][r] as usize])
                .collect()
        })
        .collect();
    let timestamps = inter.timestamps.as_deref().map(|t| pick_rows(t, kept));
    let ratings = inter.ratings.as_deref().map(|r| pick_rows(r, kept));
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
        timestamps,
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

    #[test]
    fn sequence_filter_drops_rare_items_then_short_sequences_and_keeps_the_rest_aligned() {
        // a, b, c occur 3+ times, z twice, y once. u1 keeps a b c a (z dropped); u2 has
        // a b y: y goes, leaving 2 < 3 items, so u2 goes; u3 keeps b c c.
        let rows = [
            ("u1", "a", 1.0),
            ("u1", "z", 2.0),
            ("u1", "b", 3.0),
            ("u1", "c", 4.0),
            ("u1", "a", 5.0),
            ("u2", "a", 1.0),
            ("u2", "b", 2.0),
            ("u2", "y", 3.0),
            ("u3", "z", 1.0),
            ("u3", "b", 2.0),
            ("u3", "c", 3.0),
            ("u3", "c", 4.0),
        ];
        let data = inter(&rows);
        let f: SequenceFilter = "3:3".parse().unwrap();
        assert_eq!(
            f,
            SequenceFilter {
                min_item_count: 3,
                min_seq_len: 3
            }
        );
        let out = filter_sequences(&data, &f).unwrap();
        assert_eq!(out.items.tokens(), ["[PAD]", "a", "b", "c"]);
        let seq = |u: &str| -> Vec<&str> {
            let id = out.users.id(u).unwrap() as usize;
            out.sequences[id]
                .iter()
                .map(|&i| out.items.token(i).unwrap())
                .collect()
        };
        assert_eq!(seq("u1"), ["a", "b", "c", "a"]);
        assert!(seq("u2").is_empty());
        assert_eq!(seq("u3"), ["b", "c", "c"]);
        let u1 = out.users.id("u1").unwrap() as usize;
        assert_eq!(out.timestamps.as_ref().unwrap()[u1], [1.0, 3.0, 4.0, 5.0]);
        // 0:0 keeps everything; a threshold nothing meets is an error that names the filter.
        let all = filter_sequences(&data, &"0:0".parse().unwrap()).unwrap();
        assert_eq!(all.sequences, data.sequences);
        let e = filter_sequences(&data, &"9:1".parse().unwrap()).unwrap_err();
        assert!(
            e.to_string().contains("sequence filter 9:1 leaves no"),
            "{e}"
        );
        let e = "3".parse::<SequenceFilter>().unwrap_err().to_string();
        assert!(e.contains("MIN_SEQ_LEN"), "{e}");
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
