use super::*;
use crate::data::Builder;

/// Interactions from `(user, item, time)` rows; tokens equal to the numbers, so ids follow
/// first appearance.
fn inter(rows: &[(u32, u32, f64)]) -> Interactions {
    let mut b = Builder::new(true, false);
    for &(u, i, t) in rows {
        b.push(&u.to_string(), &i.to_string(), Some(t), None);
    }
    b.finish()
}

/// One user per sequence, items numbered as given (tokens interned in order so ids match
/// when the items first appear in increasing order).
fn seqs(lists: &[&[u32]]) -> Interactions {
    let mut rows = Vec::new();
    for (u, l) in lists.iter().enumerate() {
        for (t, &i) in l.iter().enumerate() {
            rows.push((u as u32 + 1, i, t as f64));
        }
    }
    inter(&rows)
}

#[test]
fn leave_one_out_handles_short_users() {
    // Items 1..=7 first appear in increasing order, so ids equal tokens.
    let data = seqs(&[&[1, 2, 3, 4, 5], &[6, 7], &[1], &[2, 3, 6]]);
    let s = split(&data, &SplitMethod::LeaveOneOut).unwrap();
    let TrainPart::Sequences(train) = &s.train else {
        panic!()
    };
    let items: Vec<&[u32]> = train.iter().map(|t| t.items.as_slice()).collect();
    assert_eq!(items, [&[1, 2, 3][..], &[6], &[1], &[2]]);
    // Users 1 and 4 have validation events; user 2 (2 items) only a test event; user 3 none.
    assert_eq!(s.valid.len(), 2);
    assert_eq!(s.valid[0].event(0), (&[1, 2, 3][..], 4));
    assert_eq!(s.valid[1].event(0), (&[2][..], 3));
    assert_eq!(s.test.len(), 3);
    // The test history includes the validation item.
    assert_eq!(s.test[0].event(0), (&[1, 2, 3, 4][..], 5));
    assert_eq!(s.test[1].event(0), (&[6][..], 7));
    assert_eq!(s.test[2].event(0), (&[2, 3][..], 6));
    assert!(s.test.iter().all(|e| e.n_events() == 1));
    // Augmentation of the train parts: [1,2,3] gives 2 examples, the others none.
    let ex = s.train_examples(2);
    let pairs: Vec<(Vec<u32>, u32)> = ex.iter().map(|e| (e.history.clone(), e.target)).collect();
    assert_eq!(pairs, [(vec![1], 2), (vec![1, 2], 3)]);
    let ex = s.train_examples(1);
    assert_eq!(ex[1].history, [2], "truncated to the last item");
}

#[test]
fn leave_one_out_orders_by_time_first() {
    // User 1's rows out of time order in the file; the tie at t=5 keeps file order.
    let data = inter(&[(1, 10, 9.0), (1, 20, 5.0), (1, 30, 5.0), (1, 40, 1.0)]);
    let s = split(&data, &SplitMethod::LeaveOneOut).unwrap();
    let id = |t: &str| data.items.id(t).unwrap();
    assert_eq!(
        s.test[0].event(0),
        (&[id("40"), id("20"), id("30")][..], id("10"))
    );
    assert_eq!(s.valid[0].event(0).1, id("30"));
}

#[test]
fn ratio_split_partitions_users_reproducibly() {
    let lists: Vec<Vec<u32>> = (0..50).map(|u| vec![u + 1, u + 2, u + 3]).collect();
    let refs: Vec<&[u32]> = lists.iter().map(Vec::as_slice).collect();
    let data = seqs(&refs);
    let m = SplitMethod::ratio_8_1_1();
    let a = split(&data, &m).unwrap();
    let b = split(&data, &m).unwrap();
    assert_eq!(a, b, "same seed, same split");
    let TrainPart::Sequences(train) = &a.train else {
        panic!()
    };
    assert_eq!((train.len(), a.valid.len(), a.test.len()), (40, 5, 5));
    let mut all: Vec<u32> = train.iter().map(|t| t.user).collect();
    all.extend(a.valid.iter().chain(&a.test).map(|e| e.user));
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=50).collect::<Vec<_>>(),
        "a partition of the users"
    );
    // Every item after the first is an event.
    for e in a.valid.iter().chain(&a.test) {
        assert_eq!((e.first_target, e.n_events()), (1, 2));
    }
    let c = split(&data, &m.clone().with_seed(7)).unwrap();
    assert_ne!(a.test, c.test, "another seed, another partition");
    // The shuffle is not the identity.
    let ids: Vec<u32> = train.iter().map(|t| t.user).collect();
    assert_ne!(ids, (1..=40).collect::<Vec<_>>());
}

#[test]
fn session_split_cuts_at_gaps() {
    let h = 3600.0;
    // User 1: sessions [1,2] | [3] | [4,5,6] (gaps > 1 h), the last a test session.
    // User 2: sessions [7,8] | [9,10]: no validation session.
    // User 3: one session: training only. User 4: last session of one item: no test event.
    // A gap of exactly 1 h does not cut.
    let rows = [
        (1, 1, 0.0),
        (1, 2, h),
        (1, 3, 2.0 * h + 1.0),
        (1, 4, 10.0 * h),
        (1, 5, 10.5 * h),
        (1, 6, 11.0 * h),
        (2, 7, 0.0),
        (2, 8, 60.0),
        (2, 9, 5.0 * h),
        (2, 10, 5.0 * h),
        (3, 11, 0.0),
        (3, 12, 100.0),
        (4, 13, 0.0),
        (4, 14, 1.0),
        (4, 15, 9.0 * h),
    ];
    let data = inter(&rows);
    let s = split(&data, &SplitMethod::sessions_60min()).unwrap();
    let TrainPart::Sequences(train) = &s.train else {
        panic!()
    };
    assert_eq!(train[0].items, [1, 2]);
    assert_eq!(train[1].items, [7, 8]);
    assert_eq!(train[2].items, [11, 12]);
    assert_eq!(train[3].items, [13, 14]);
    // User 1's validation session [3] has one item: no event.
    assert!(s.valid.is_empty());
    assert_eq!(s.test.len(), 2);
    let t = &s.test[0];
    assert_eq!(
        (t.user, t.session_start, t.first_target, t.n_events()),
        (1, 3, 4, 2)
    );
    assert_eq!(t.event(0), (&[1, 2, 3, 4][..], 5));
    assert_eq!(t.event(1), (&[1, 2, 3, 4, 5][..], 6));
    let t = &s.test[1];
    assert_eq!(
        (t.user, t.session_start, t.event(0)),
        (2, 2, (&[7, 8, 9][..], 10))
    );
    assert_eq!(session_starts(&[0.0, h, 2.0 * h + 1.0], h), [0, 2]);
    // Without timestamps the split is refused.
    let mut no_time = data.clone();
    no_time.timestamps = None;
    let e = split(&no_time, &SplitMethod::sessions_60min())
        .unwrap_err()
        .to_string();
    assert!(e.contains("timestamps"), "{e}");
}

#[test]
fn session_split_with_validation_session() {
    let h = 3600.0;
    let rows = [
        (1, 1, 0.0),
        (1, 2, 2.0 * h),
        (1, 3, 2.0 * h),
        (1, 4, 4.0 * h),
        (1, 5, 4.0 * h),
    ];
    let s = split(&inter(&rows), &SplitMethod::sessions_60min()).unwrap();
    let TrainPart::Sequences(train) = &s.train else {
        panic!()
    };
    assert_eq!(
        (
            train[0].items.as_slice(),
            train[0].session_starts.as_slice()
        ),
        (&[1][..], &[0][..])
    );
    assert_eq!(s.valid[0].event(0), (&[1, 2][..], 3));
    assert_eq!(s.valid[0].session_start, 1);
    // The test history includes the validation session.
    assert_eq!(s.test[0].event(0), (&[1, 2, 3, 4][..], 5));
    assert_eq!(s.test[0].session_start, 3);
}

#[test]
fn popularity_and_user_sets() {
    let data = seqs(&[&[1, 2, 1, 3, 4], &[2, 5, 6]]);
    let s = split(&data, &SplitMethod::LeaveOneOut).unwrap();
    // Train parts: [1,2,1] and [2].
    assert_eq!(s.item_counts(), [0, 2, 2, 0, 0, 0, 0]);
    assert_eq!(s.train_items_by_user(), [vec![], vec![1, 2], vec![2]]);
    // Given examples: shortest history plus all targets.
    let given = Split {
        train: TrainPart::Examples(vec![
            Example {
                user: 1,
                history: vec![1, 2, 3],
                target: 4,
            },
            Example {
                user: 1,
                history: vec![1, 2],
                target: 3,
            },
            Example {
                user: 1,
                history: vec![1],
                target: 2,
            },
        ]),
        ..s
    };
    assert_eq!(given.item_counts(), [0, 1, 1, 1, 1, 0, 0]);
    assert_eq!(given.train_items_by_user()[1], [1, 2, 3, 4]);
    let ex = given.train_examples(2);
    assert_eq!(ex[0].history, [2, 3]);
}

#[test]
fn split_names_parse() {
    assert_eq!(
        "loo".parse::<SplitMethod>().unwrap(),
        SplitMethod::LeaveOneOut
    );
    assert_eq!(
        "ratio".parse::<SplitMethod>().unwrap(),
        SplitMethod::ratio_8_1_1()
    );
    assert_eq!(
        "ratio:7:2:1@5".parse::<SplitMethod>().unwrap(),
        SplitMethod::Ratio {
            weights: [7, 2, 1],
            seed: 5
        }
    );
    assert_eq!(
        "session".parse::<SplitMethod>().unwrap(),
        SplitMethod::sessions_60min()
    );
    assert_eq!(
        "session:30".parse::<SplitMethod>().unwrap(),
        SplitMethod::Session { gap_secs: 1800.0 }
    );
    for bad in ["", "ratio:1:2", "session:0", "loo@3", "loo:1", "kfold"] {
        let e = bad.parse::<SplitMethod>().unwrap_err().to_string();
        assert!(e.contains("split"), "{bad}: {e}");
    }
    for m in [
        SplitMethod::LeaveOneOut,
        SplitMethod::ratio_8_1_1(),
        SplitMethod::sessions_60min(),
    ] {
        assert_eq!(m.to_string().parse::<SplitMethod>().unwrap(), m);
    }
}
