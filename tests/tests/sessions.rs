//! Sessions equal scoring the same window from scratch, for every architecture, over random
//! event streams longer than the window; and a loaded model scores concurrently from 8 threads
//! with the same results as one thread.

use seqrec_engine::{Model, Query};
use seqrec_kernels::testing::Rng;
use seqrec_tests::{random_model_bytes, small_config};

const ARCHS: [&str; 4] = ["sasrec", "gru4rec", "nextitnet", "caser"];

fn model(arch: &str, n_items: usize, max_len: usize, seed: u64) -> Model {
    let bytes = random_model_bytes(&small_config(arch, n_items, max_len), seed, 0.3);
    Model::from_bytes(&bytes, &Default::default()).unwrap()
}

#[test]
fn session_push_equals_recompute_for_every_model() {
    let (n_items, max_len) = (60, 8);
    for (a, arch) in ARCHS.iter().enumerate() {
        let m = model(arch, n_items, max_len, 10 + a as u64);
        let user = if *arch == "caser" { Some(3) } else { None };
        let mut rng = Rng::new(99 + a as u64);
        for stream in 0..3 {
            let mut session = match user {
                Some(u) => m.session_for_user(u).unwrap(),
                None => m.session().unwrap(),
            };
            let mut ws = m.new_workspace();
            let mut history = Vec::new();
            let (mut s_scores, mut r_scores) = (vec![0f32; n_items], vec![0f32; n_items]);
            for step in 0..(2 * max_len + 5) {
                let item = 1 + rng.below(n_items - 1) as u32;
                history.push(item);
                session.push(item).unwrap();
                let mut q = Query::new(&history);
                if let Some(u) = user {
                    q = q.user(u);
                }
                session.scores(&mut s_scores).unwrap();
                m.score(&q, &mut ws, &mut r_scores).unwrap();
                // Same window, same kernels: differences come only from a different summation
                // order in incremental steps; 2e-5 relative to the largest score.
                let scale = r_scores.iter().fold(1f32, |m, x| m.max(x.abs()));
                for (i, (s, r)) in s_scores.iter().zip(&r_scores).enumerate() {
                    assert!(
                        (s - r).abs() <= 2e-5 * scale,
                        "{arch} stream {stream} step {step} item {i}: {s} vs {r}"
                    );
                }
                for excl in [false, true] {
                    let a = session.topk(5, excl).unwrap();
                    let b = m.topk(&q.exclude_history(excl), 5, &mut ws).unwrap();
                    let ai: Vec<u32> = a.iter().map(|r| r.item).collect();
                    let bi: Vec<u32> = b.iter().map(|r| r.item).collect();
                    assert_eq!(
                        ai, bi,
                        "{arch} stream {stream} step {step} exclude_history={excl}"
                    );
                    if excl {
                        assert!(
                            ai.iter().all(|i| !history.contains(i)),
                            "{arch}: history item recommended"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn eight_threads_agree_with_one() {
    for (a, arch) in ARCHS.iter().enumerate() {
        let m = model(arch, 500, 12, 40 + a as u64);
        let user = if *arch == "caser" { Some(5) } else { None };
        let mut rng = Rng::new(7);
        let histories: Vec<Vec<u32>> = (0..64)
            .map(|_| {
                (0..1 + rng.below(20))
                    .map(|_| 1 + rng.below(499) as u32)
                    .collect()
            })
            .collect();
        fn with_user(h: &[u32], user: Option<u32>) -> Query<'_> {
            let q = Query::new(h);
            match user {
                Some(u) => q.user(u),
                None => q,
            }
        }
        let mut ws = m.new_workspace();
        let single: Vec<_> = histories
            .iter()
            .map(|h| m.topk(&with_user(h, user), 10, &mut ws).unwrap())
            .collect();
        let m = &m;
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let histories = &histories;
                    s.spawn(move || {
                        let mut ws = m.new_workspace();
                        // Each thread walks the requests in a different order.
                        (0..histories.len())
                            .map(|i| (i * 5 + t * 3) % histories.len())
                            .map(|i| {
                                (
                                    i,
                                    m.topk(&with_user(&histories[i], user), 10, &mut ws)
                                        .unwrap(),
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                for (i, got) in h.join().unwrap() {
                    assert_eq!(got, single[i], "{arch}: request {i} differs across threads");
                }
            }
        });
        // The rayon batch path gives the same answers in input order (its encoder products sum
        // in another order: scores agree to 1e-5 of the largest, items exactly here).
        let queries: Vec<Query<'_>> = histories.iter().map(|h| with_user(h, user)).collect();
        for (i, r) in m.topk_batch(&queries, 10).into_iter().enumerate() {
            let got = r.unwrap();
            let items = |v: &[seqrec_engine::Scored]| v.iter().map(|s| s.item).collect::<Vec<_>>();
            assert_eq!(items(&got), items(&single[i]), "{arch}: batch result {i}");
            let scale = single[i].iter().fold(1f32, |m, s| m.max(s.score.abs()));
            for (g, w) in got.iter().zip(&single[i]) {
                assert!(
                    (g.score - w.score).abs() <= 1e-5 * scale,
                    "{arch}: batch result {i}: {g:?} vs {w:?}"
                );
            }
        }
    }
}

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn model_is_send_and_sync() {
    assert_send_sync::<Model>();
}

#[test]
fn one_workspace_serves_several_models() {
    let a = model("sasrec", 60, 8, 1);
    let b = model("sasrec", 60, 5, 2);
    let c = model("nextitnet", 60, 8, 3);
    let mut foreign = b.new_session().unwrap();
    let e = a
        .session_push(&mut foreign, 3, &mut a.new_workspace())
        .unwrap_err();
    assert!(e.to_string().contains("another model"), "{e}");
    let mut shared = a.new_workspace();
    let h: Vec<u32> = (1..12).collect();
    for m in [&a, &b, &c, &a, &c, &b] {
        let want = m.topk(&Query::new(&h), 5, &mut m.new_workspace()).unwrap();
        assert_eq!(m.topk(&Query::new(&h), 5, &mut shared).unwrap(), want);
    }
}

#[test]
fn plain_backbones_have_no_objective_knobs_and_ignore_session_ends() {
    let (n_items, max_len) = (40, 6);
    let m = model("sasrec", n_items, max_len, 5);
    let other = model("gru4rec", n_items, max_len, 6);
    assert!(m.objective_specs().is_empty());
    let mut ws = m.new_workspace();
    let mut s = m.new_session().unwrap();
    for item in [3, 9, 12] {
        m.session_push(&mut s, item, &mut ws).unwrap();
    }
    let e = m
        .session_set_objective(&mut s, "alpha", 2.0, &mut ws)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`alpha`") && e.contains("no objective knobs"),
        "{e}"
    );
    let (mut before, mut after) = (vec![0f32; n_items], vec![0f32; n_items]);
    m.session_scores(&s, &mut before).unwrap();
    // A session boundary keeps the concatenated history of a non-hierarchical model.
    m.session_end(&mut s, &mut ws).unwrap();
    assert_eq!(s.history(), &[3, 9, 12]);
    m.session_scores(&s, &mut after).unwrap();
    assert_eq!(before, after);
    // Knobs made for one model are refused by another (here: equal, empty sets are fine).
    let o = other.default_objectives();
    let h = [1u32, 2, 3];
    assert!(m.topk(&Query::new(&h).objectives(&o), 3, &mut ws).is_ok());
}
