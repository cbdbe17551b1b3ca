//! RL-head models (SQN, SNQN, SA2C, SMORL) served by the engine: the tensors a checkpoint
//! holds, the scores against the heads computed by hand from the file's tensors, sessions
//! against recomputation under changing knobs, and clear errors for broken checkpoints.

use seqrec_engine::tensor_specs;
use seqrec_engine::{Config, Model, Query, WeightFile};
use seqrec_kernels::testing::Rng;
use seqrec_tests::{random_model_bytes, small_rl_config};

const N: usize = 40;
const L: usize = 6;
const BACKBONES: [&str; 4] = ["sasrec", "gru4rec", "nextitnet", "caser"];

fn user_of(m: &Model) -> Option<u32> {
    m.info().n_users.map(|_| 3)
}

fn query<'a>(h: &'a [u32], user: Option<u32>) -> Query<'a> {
    match user {
        Some(u) => Query::new(h).user(u),
        None => Query::new(h),
    }
}

#[test]
fn checkpoints_hold_the_backbone_then_the_heads() {
    let names = |method, head| -> Vec<(String, Vec<usize>)> {
        let specs = tensor_specs(&small_rl_config(method, "gru4rec", head, N, L)).unwrap();
        let backbone = tensor_specs(&seqrec_tests::small_config("gru4rec", N, L)).unwrap();
        assert_eq!(
            specs[..backbone.len()],
            backbone[..],
            "{method}: backbone tensors first"
        );
        specs[backbone.len()..]
            .iter()
            .map(|s| (s.name.clone(), s.shape.clone()))
            .collect()
    };
    let (n, d) = (N, 16);
    let head = |p: &str| {
        vec![
            (format!("{p}.weight"), vec![n, d]),
            (format!("{p}.bias"), vec![n]),
        ]
    };
    for method in ["sqn", "snqn", "sa2c"] {
        assert_eq!(
            names(method, "linear"),
            [head("sup_head"), head("q_head")].concat()
        );
        assert_eq!(names(method, "tied"), head("q_head"));
    }
    let q = [head("q_acc"), head("q_div"), head("q_nov")].concat();
    assert_eq!(
        names("smorl", "linear"),
        [head("sup_head"), q.clone()].concat()
    );
    assert_eq!(names("smorl", "tied"), q);
}

/// `Σ_k a[k]·b[k]` in f64.
fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

#[test]
fn scores_are_the_heads_applied_to_the_state() {
    for (k, backbone) in BACKBONES.iter().enumerate() {
        for method in ["sqn", "smorl"] {
            for head in ["linear", "tied"] {
                let bytes = random_model_bytes(
                    &small_rl_config(method, backbone, head, N, L),
                    k as u64,
                    0.3,
                );
                let file = WeightFile::from_bytes(&bytes).unwrap();
                let m = Model::from_bytes(&bytes, &Default::default()).unwrap();
                let d = m.arch().dim();
                let mut obj = m.default_objectives();
                let w = [0.5f32, 2.0, 0.25];
                if method == "smorl" {
                    for (name, v) in ["w_acc", "w_div", "w_nov"].iter().zip(w) {
                        obj.set(name, v).unwrap();
                    }
                }
                let h_hist = [4u32, 9, 33, 2];
                let q = query(&h_hist, user_of(&m)).objectives(&obj);
                let mut ws = m.new_workspace();
                let mut v = vec![0f32; m.info().dim];
                m.user_vector(&q, &mut ws, &mut v).unwrap();
                let h = &v[..d];
                let mut scores = vec![0f32; N];
                m.score(&q, &mut ws, &mut scores).unwrap();
                let t = |name: &str, shape: &[usize]| file.tensor(name, shape).unwrap();
                let sup = if head == "tied" {
                    "item_embedding"
                } else {
                    "sup_head"
                };
                let ws_ = t(&format!("{sup}.weight"), &[N, d]);
                for i in 1..N {
                    fn row(t: &seqrec_engine::Tensor, i: usize, d: usize) -> &[f32] {
                        &t.as_slice()[i * d..(i + 1) * d]
                    }
                    let mut want = dot(row(&ws_, i, d), h);
                    if head == "linear" {
                        want += t("sup_head.bias", &[N]).as_slice()[i] as f64;
                    }
                    if method == "smorl" {
                        for (o, p) in ["q_acc", "q_div", "q_nov"].iter().enumerate() {
                            let qw = t(&format!("{p}.weight"), &[N, d]);
                            let qb = t(&format!("{p}.bias"), &[N]).as_slice()[i] as f64;
                            want += w[o] as f64 * (dot(row(&qw, i, d), h) + qb);
                        }
                    }
                    let scale = 1.0f64.max(want.abs());
                    assert!(
                        (scores[i] as f64 - want).abs() <= 1e-5 * scale,
                        "{method} on {backbone} ({head}) item {i}: {} vs {want}",
                        scores[i]
                    );
                }
            }
        }
    }
}

#[test]
fn sessions_equal_recomputation_as_knobs_change() {
    for (k, backbone) in BACKBONES.iter().enumerate() {
        let bytes = random_model_bytes(
            &small_rl_config("smorl", backbone, "linear", N, L),
            20 + k as u64,
            0.3,
        );
        let m = Model::from_bytes(&bytes, &Default::default()).unwrap();
        let user = user_of(&m);
        let mut s = match user {
            Some(u) => m.new_session_for_user(u).unwrap(),
            None => m.new_session().unwrap(),
        };
        let (mut ws, mut ws2) = (m.new_workspace(), m.new_workspace());
        let mut rng = Rng::new(5);
        let mut obj = m.default_objectives();
        let (mut a, mut b) = (vec![0f32; N], vec![0f32; N]);
        for step in 0..(2 * L + 3) {
            m.session_push(&mut s, 1 + rng.below(N - 1) as u32, &mut ws)
                .unwrap();
            if step % 3 == 1 {
                let name = ["w_acc", "w_div", "w_nov"][step % 3];
                let v = rng.uniform(0.0, 3.0);
                m.session_set_objective(&mut s, name, v, &mut ws).unwrap();
                obj.set(name, v).unwrap();
            }
            m.session_scores(&s, &mut a).unwrap();
            m.score(&query(s.history(), user).objectives(&obj), &mut ws2, &mut b)
                .unwrap();
            let scale = b.iter().fold(1f32, |m, x| m.max(x.abs()));
            for i in 1..N {
                assert!(
                    (a[i] - b[i]).abs() <= 2e-5 * scale,
                    "smorl on {backbone}, step {step}, item {i}: session {} vs recomputed {}",
                    a[i],
                    b[i]
                );
            }
        }
        // Knobs are checked: an unknown name or a negative weight is refused.
        for (name, v) in [("alpha", 1.0), ("w_div", -0.5)] {
            let e = m
                .session_set_objective(&mut s, name, v, &mut ws)
                .unwrap_err()
                .to_string();
            assert!(e.contains(name), "{e}");
        }
    }
}

fn load_err(cfg: &Config, bytes_for: Option<&Config>) -> String {
    let bytes = random_model_bytes(bytes_for.unwrap_or(cfg), 1, 0.3);
    let opts = seqrec_engine::LoadOptions {
        config: Some(cfg.clone()),
        ..Default::default()
    };
    Model::from_bytes(&bytes, &opts).unwrap_err().to_string()
}

#[test]
fn broken_checkpoints_are_refused_with_a_clear_error() {
    let good = small_rl_config("sqn", "gru4rec", "linear", N, L);
    // No backbone, or an RL method as the backbone.
    let e = load_err(&good.clone().with("backbone", "smorl"), Some(&good));
    assert!(e.contains("backbone") && e.contains("smorl"), "{e}");
    let mut map = good.as_map().clone();
    map.remove("backbone");
    let e = load_err(&Config::from_map(map), Some(&good));
    assert!(e.contains("`backbone`"), "{e}");
    // An unknown supervised head.
    let e = load_err(&good.clone().with("sup_head", "dot"), Some(&good));
    assert!(e.contains("sup_head") && e.contains("dot"), "{e}");
    // A linear head read from a tied checkpoint: the missing tensor is named.
    let tied = small_rl_config("sqn", "gru4rec", "tied", N, L);
    let e = load_err(&good, Some(&tied));
    assert!(e.contains("sup_head.weight"), "{e}");
    // A tied SMORL read from a linear SQN checkpoint: its Q heads are missing.
    let e = load_err(
        &small_rl_config("smorl", "gru4rec", "tied", N, L),
        Some(&good),
    );
    assert!(e.contains("q_acc.weight"), "{e}");
    // A tied head read from a linear checkpoint leaves sup_head.* unexplained.
    let e = load_err(&tied, Some(&good));
    assert!(e.contains("sup_head"), "{e}");
}

#[test]
fn batches_follow_each_requests_knobs() {
    for (k, backbone) in BACKBONES.iter().enumerate() {
        let bytes = random_model_bytes(
            &small_rl_config("smorl", backbone, "linear", N, L),
            40 + k as u64,
            0.3,
        );
        let m = Model::from_bytes(&bytes, &Default::default()).unwrap();
        let user = user_of(&m);
        let mut rng = Rng::new(9);
        let histories: Vec<Vec<u32>> = (0..12)
            .map(|_| {
                (0..1 + rng.below(2 * L))
                    .map(|_| 1 + rng.below(N - 1) as u32)
                    .collect()
            })
            .collect();
        let knobs: Vec<_> = (0..histories.len())
            .map(|i| {
                let mut o = m.default_objectives();
                let name = o.specs()[i % o.specs().len()].name;
                o.set(name, 0.5 * i as f32).unwrap();
                o
            })
            .collect();
        let queries: Vec<Query<'_>> = histories
            .iter()
            .zip(&knobs)
            .map(|(h, o)| query(h, user).objectives(o))
            .collect();
        let mut ws = m.new_workspace();
        for (q, got) in queries.iter().zip(m.topk_batch(&queries, 5)) {
            let want = m.topk(q, 5, &mut ws).unwrap();
            let got = got.unwrap();
            let ids = |v: &[seqrec_engine::Scored]| v.iter().map(|s| s.item).collect::<Vec<_>>();
            assert_eq!(ids(&got), ids(&want), "smorl on {backbone}");
            for (g, w) in got.iter().zip(&want) {
                // Batched and single encodes differ only in f32 summation order.
                assert!((g.score - w.score).abs() <= 1e-4 * (1.0 + w.score.abs()));
            }
        }
    }
}
