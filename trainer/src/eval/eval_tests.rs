use super::*;
use crate::data::{SplitMethod, TrainPart, TrainSeq};
use std::sync::Mutex;

/// A split over items 1..=n_items-1 with the given training sequences and test sequences.
fn split_of(n_items: usize, train: &[(u32, &[u32])], test: Vec<EvalSeq>) -> Split {
    let n_users = 1 + train
        .iter()
        .map(|t| t.0)
        .chain(test.iter().map(|e| e.user))
        .max()
        .unwrap_or(0) as usize;
    Split {
        method: SplitMethod::LeaveOneOut,
        n_users,
        n_items,
        train: TrainPart::Sequences(
            train
                .iter()
                .map(|&(user, items)| TrainSeq {
                    user,
                    items: items.to_vec(),
                    session_starts: vec![0],
                })
                .collect(),
        ),
        valid: Vec::new(),
        test,
    }
}

fn eval_seq(user: u32, items: &[u32], first_target: usize, session_start: usize) -> EvalSeq {
    EvalSeq {
        user,
        items: items.to_vec(),
        first_target,
        session_start,
    }
}

fn opts(metrics: &str, protocol: Protocol, exclude_history: bool) -> EvalOptions {
    EvalOptions {
        metrics: parse_metrics(metrics).unwrap(),
        protocol,
        exclude_history,
        session_history_only: false,
    }
}

/// A deterministic pseudo-random score for (history, item), without shared state.
fn hashed(h: &[u32], u: Option<u32>, s: &mut [f32]) {
    let mut seed = u.unwrap_or(0) as u64;
    for &i in h {
        seed = seed.wrapping_mul(31).wrapping_add(i as u64);
    }
    let mut rng = Rng::new(seed);
    for v in s.iter_mut() {
        *v = rng.below(50) as f32; // ties are frequent
    }
}

#[test]
fn full_ranking_by_hand() {
    // Catalog 1..=9; scores favour larger ids: item i scores i, except history items score 100.
    let scorer = |h: &[u32], _: Option<u32>, s: &mut [f32]| {
        for (i, v) in s.iter_mut().enumerate() {
            *v = if h.contains(&(i as u32)) {
                100.0
            } else {
                i as f32
            };
        }
    };
    let test = vec![eval_seq(1, &[9, 7, 6], 2, 0), eval_seq(2, &[1, 3], 1, 0)];
    let split = split_of(10, &[(1, &[9, 7]), (2, &[1])], test);
    // Event 1: history {9, 7}, target 6: ahead are 9, 7 (100) and 8 → rank 4.
    // Event 2: history {1}, target 3: ahead are 1 (100) and 9..4 → rank 8.
    let ev = Evaluator::new(&split, opts("hr@4,ndcg@4,mrr@10", Protocol::Full, false)).unwrap();
    let mut s = scorer;
    let r = ev.evaluate(&split.test, &mut s).unwrap();
    assert_eq!(r.get("hr@4"), Some(0.5));
    assert_eq!(r.get("ndcg@4"), Some(0.5 / 5f64.log2()));
    assert_eq!(r.get("mrr@10"), Some((0.25 + 0.125) / 2.0));
    // Excluding the history: ranks 2 and 7.
    let ev = Evaluator::new(&split, opts("hr@2,mrr@10", Protocol::Full, true)).unwrap();
    let r = ev.evaluate(&split.test, &mut s).unwrap();
    assert_eq!(r.get("hr@2"), Some(0.5));
    assert_eq!(r.get("mrr@10"), Some((0.5 + 1.0 / 7.0) / 2.0));
}

#[test]
fn constant_scorer_is_not_rewarded() {
    let test = vec![eval_seq(1, &[1, 5], 1, 0), eval_seq(2, &[2, 9], 1, 0)];
    let split = split_of(10, &[(1, &[1]), (2, &[2])], test);
    let ev = Evaluator::new(&split, opts("hr@4,mrr@10", Protocol::Full, false)).unwrap();
    let mut zero = |_: &[u32], _: Option<u32>, s: &mut [f32]| s.fill(0.0);
    let r = ev.evaluate(&split.test, &mut zero).unwrap();
    // Ties go to smaller ids: targets 5 and 9 rank 5th and 9th.
    assert_eq!(r.get("hr@4"), Some(0.0));
    assert_eq!(r.get("mrr@10"), Some((0.2 + 1.0 / 9.0) / 2.0));
}

#[test]
fn excluded_repeat_target_is_a_miss() {
    let test = vec![eval_seq(1, &[3, 4, 3], 2, 0)];
    let split = split_of(6, &[(1, &[3, 4])], test);
    let mut s = |_: &[u32], _: Option<u32>, s: &mut [f32]| {
        s.copy_from_slice(&[0.0, 0.0, 0.0, 9.0, 0.0, 0.0])
    };
    let o = Evaluator::new(&split, opts("hr@5", Protocol::Full, true)).unwrap();
    assert_eq!(o.outcomes(&split.test, &mut s).unwrap()[0].rank, None);
    let o = Evaluator::new(&split, opts("hr@5", Protocol::Full, false)).unwrap();
    assert_eq!(o.outcomes(&split.test, &mut s).unwrap()[0].rank, Some(1));
}

#[test]
fn sampled_negatives_avoid_the_users_items_and_repeat_by_seed() {
    // Items of the sequence (context and every target) score +inf, everything else -1 except
    // the target, 0: the target ranks first exactly when no negative is one of the user's items.
    let mut test = Vec::new();
    let mut rng = Rng::new(9);
    for u in 1..40u32 {
        let items: Vec<u32> = (0..30).map(|_| 1 + rng.below(150) as u32).collect();
        test.push(eval_seq(u, &items, 10, 0));
    }
    let split = split_of(151, &[(1, &[1])], test);
    let seqs = split.test.clone();
    let current = Mutex::new(0usize);
    let scorer = |h: &[u32], u: Option<u32>, s: &mut [f32]| {
        let seq = &seqs[u.unwrap() as usize - 1];
        let target = seq.items[h.len()];
        for (i, v) in s.iter_mut().enumerate() {
            *v = if seq.items.contains(&(i as u32)) {
                f32::INFINITY
            } else {
                -1.0
            };
        }
        s[target as usize] = 0.0;
        *current.lock().unwrap() += 1;
    };
    let protocol = Protocol::Sampled {
        negatives: 100,
        seed: 1,
    };
    let ev = Evaluator::new(&split, opts("hr@1", protocol, false)).unwrap();
    let r = ev.evaluate_par(&split.test, &scorer).unwrap();
    assert_eq!(r.get("hr@1"), Some(1.0));
    assert_eq!(*current.lock().unwrap(), 39 * 20);
    // Random scores: the same seed reproduces the report, serially or in parallel; another
    // seed changes it.
    let ev = Evaluator::new(&split, opts("hr@10,ndcg@10", protocol, false)).unwrap();
    let a = ev.outcomes(&split.test, &mut hashed).unwrap();
    let b = ev.outcomes_par(&split.test, &hashed).unwrap();
    assert_eq!(a, b);
    let other = Protocol::Sampled {
        negatives: 100,
        seed: 2,
    };
    let ev2 = Evaluator::new(&split, opts("hr@10,ndcg@10", other, false)).unwrap();
    assert_ne!(a, ev2.outcomes(&split.test, &mut hashed).unwrap());
    // Ranks lie within 1..=101.
    assert!(a.iter().all(|o| (1..=101).contains(&o.rank.unwrap())));
}

#[test]
fn parallel_equals_serial_with_every_metric() {
    let mut rng = Rng::new(4);
    let mut test = Vec::new();
    let mut train: Vec<(u32, Vec<u32>)> = Vec::new();
    for u in 1..60u32 {
        let items: Vec<u32> = (0..12).map(|_| 1 + rng.below(80) as u32).collect();
        train.push((u, items[..5].to_vec()));
        test.push(eval_seq(u, &items, 5, 3));
    }
    let train_ref: Vec<(u32, &[u32])> = train.iter().map(|(u, i)| (*u, i.as_slice())).collect();
    let split = split_of(81, &train_ref, test);
    let all = "hr@10,ndcg@10,mrr@10,cv_div@10,cv_nov@10,r@10,up@10,hr_ser@10,ndcg_ser@10";
    for exclude in [false, true] {
        let mut o = opts(all, Protocol::Full, exclude);
        o.session_history_only = exclude;
        let ev = Evaluator::new(&split, o).unwrap();
        let a = ev.evaluate(&split.test, &mut hashed).unwrap();
        let b = ev.evaluate_par(&split.test, &hashed).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.n_events, 59 * 7);
        assert!(a.values.iter().all(|(_, v)| v.is_finite()), "{a}");
    }
}

#[test]
fn session_history_only_passes_the_session_prefix() {
    let test = vec![eval_seq(1, &[1, 2, 3, 4, 5], 3, 2)];
    let split = split_of(6, &[(1, &[1, 2])], test);
    for (only, want) in [
        (false, vec![vec![1, 2, 3], vec![1, 2, 3, 4]]),
        (true, vec![vec![3], vec![3, 4]]),
    ] {
        let mut seen = Vec::new();
        let mut rec = |h: &[u32], _: Option<u32>, s: &mut [f32]| {
            seen.push(h.to_vec());
            s.fill(0.0);
        };
        let mut o = opts("hr@1", Protocol::Full, false);
        o.session_history_only = only;
        Evaluator::new(&split, o)
            .unwrap()
            .evaluate(&split.test, &mut rec)
            .unwrap();
        assert_eq!(seen, want);
    }
}

#[test]
fn the_past_of_a_test_session_includes_the_validation_session() {
    // User 1: training session [1, 2], validation session [3, 4], test session [5, 6, 7]
    // (targets 6, 7). The scorer ranks items 3, 4 (the validation session) and then 6 on top.
    let test = vec![eval_seq(1, &[1, 2, 3, 4, 5, 6, 7], 5, 4)];
    let split = split_of(9, &[(1, &[1, 2])], test);
    let mut rec = |_: &[u32], _: Option<u32>, s: &mut [f32]| {
        s.fill(0.0);
        s[3] = 3.0;
        s[4] = 2.0;
        s[6] = 1.0;
    };
    let r = Evaluator::new(&split, opts("up@2,up@3,hr_ser@3", Protocol::Full, false))
        .unwrap()
        .evaluate(&split.test, &mut rec)
        .unwrap();
    // Both top-2 items lie in the past (the validation session): nothing unexpected. Had the
    // past been the training items alone, up@2 would be 2.
    assert_eq!(r.get("up@2"), Some(0.0));
    assert_eq!(r.get("up@3"), Some(1.0));
    // Targets 6 and 7 are both outside the past: two serendipity events, one hit at 3.
    assert_eq!(r.n_serendipity_events, 2);
    assert_eq!(r.get("hr_ser@3"), Some(0.5));
    // A validation session (session_start = 2) sees only the training session as its past.
    let valid = vec![eval_seq(1, &[1, 2, 3, 4], 3, 2)];
    let r = Evaluator::new(&split, opts("up@2", Protocol::Full, false))
        .unwrap()
        .evaluate(&valid, &mut rec)
        .unwrap();
    assert_eq!(r.get("up@2"), Some(2.0));
}

struct Failing;

impl Scorer for Failing {
    fn score(&mut self, _: &[u32], _: Option<u32>, _: &mut [f32]) -> Result<(), ScorerError> {
        Err("model not loaded".into())
    }
}

#[test]
fn errors_name_the_problem() {
    let split = split_of(4, &[(1, &[1])], vec![eval_seq(1, &[1, 2], 1, 0)]);
    let ev = Evaluator::new(&split, EvalOptions::default()).unwrap();
    let e = ev
        .evaluate(&split.test, &mut Failing)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("user 1") && e.contains("model not loaded"),
        "{e}"
    );
    let bad = vec![eval_seq(1, &[1, 7], 1, 0)];
    let e = ev.evaluate(&bad, &mut Failing).unwrap_err().to_string();
    assert!(e.contains("item id 7"), "{e}");
}

#[test]
fn popularity_through_the_evaluator() {
    // Training counts: item 2 ×3, item 3 ×2, item 1 ×1 → popularity order 2, 3, 1, 4, 5.
    let test = vec![
        eval_seq(1, &[1, 3], 1, 0),
        eval_seq(2, &[2, 4], 1, 0),
        eval_seq(3, &[2, 2], 1, 0),
    ];
    let split = split_of(6, &[(1, &[2, 3, 1]), (2, &[2, 2, 3])], test);
    let mut pop = Popularity::from_split(&split);
    let ev = Evaluator::new(&split, opts("hr@2,mrr@5,cv_div@1", Protocol::Full, false)).unwrap();
    let r = ev.evaluate(&split.test, &mut pop).unwrap();
    // Targets 3, 4, 2 rank 2, 4, 1.
    assert_eq!(r.get("hr@2"), Some(2.0 / 3.0));
    assert_eq!(r.get("mrr@5"), Some((0.5 + 0.25 + 1.0) / 3.0));
    assert_eq!(r.get("cv_div@1"), Some(0.2));
    assert_eq!(ev.evaluate_par(&split.test, &pop).unwrap(), r);
    // With the history excluded: user 1 still hits (rank 2), user 2's target 4 moves to
    // rank 3, and user 3's repeat of item 2 is a miss.
    let ev = Evaluator::new(&split, opts("hr@2", Protocol::Full, true)).unwrap();
    assert_eq!(
        ev.evaluate(&split.test, &mut pop).unwrap().get("hr@2"),
        Some(1.0 / 3.0)
    );
}

#[test]
fn protocol_names_parse() {
    assert_eq!("full".parse::<Protocol>().unwrap(), Protocol::Full);
    assert_eq!(
        "sampled".parse::<Protocol>().unwrap(),
        Protocol::sampled_100()
    );
    assert_eq!(
        "sampled:50@3".parse::<Protocol>().unwrap(),
        Protocol::Sampled {
            negatives: 50,
            seed: 3
        }
    );
    for p in [Protocol::Full, Protocol::sampled_100()] {
        assert_eq!(p.to_string().parse::<Protocol>().unwrap(), p);
    }
    for bad in ["", "sampled:0", "full@2x", "pop"] {
        assert!(bad.parse::<Protocol>().is_err(), "{bad}");
    }
}
