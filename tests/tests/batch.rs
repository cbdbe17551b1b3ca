//! The batched path (`topk_batch`, `topk_batch_sequential`, `topk_batch_into`) returns the
//! selections of single requests for every architecture and item-table dtype, with excluded
//! items, ties, `k` beyond the catalog and invalid requests; a scan split across threads equals
//! the one-thread scan bit for bit; the int8 table returns exactly the f32 table's selections.

use seqrec_engine::testing::random_model_bytes_with;
use seqrec_engine::{BATCH_GROUP, Config, DType, LoadOptions, Model, Query, Scored};
use seqrec_kernels::testing::Rng;
use seqrec_tests::{random_model_bytes, small_config};

const ARCHS: [&str; 4] = ["sasrec", "gru4rec", "nextitnet", "caser"];
const DTYPES: [DType; 4] = [DType::F32, DType::F16, DType::BF16, DType::I8];

fn load(bytes: &[u8], dtype: DType) -> Model {
    let opts = LoadOptions {
        item_dtype: dtype,
        ..Default::default()
    };
    Model::from_bytes(bytes, &opts).unwrap()
}

/// Histories of 1 to `max_len + 4` events (longer ones keep their most recent `max_len`).
fn histories(rng: &mut Rng, n: usize, n_items: usize, max_len: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|_| {
            (0..1 + rng.below(max_len + 4))
                .map(|_| 1 + rng.below(n_items - 1) as u32)
                .collect()
        })
        .collect()
}

/// Requests over `hs`: every third excludes its history, every fifth a few more ids, Caser
/// models get users.
fn queries<'a>(hs: &'a [Vec<u32>], extra: &'a [u32], caser: bool) -> Vec<Query<'a>> {
    hs.iter()
        .enumerate()
        .map(|(i, h)| {
            let mut q = Query::new(h).exclude_history(i % 3 == 0);
            if i % 5 == 0 {
                q = q.exclude(extra);
            }
            if caser {
                q = q.user(1 + (i % 6) as u32);
            }
            q
        })
        .collect()
}

/// `got` is the selection `want` up to the f32 summation order of the user vector: scores
/// within `tol` position by position, and an item may differ only where another item's score
/// is within `tol` of it (a near-tie swapped).
#[track_caller]
fn assert_same_selection(ctx: &str, got: &[Scored], want: &[Scored], tol: f32) {
    assert_eq!(got.len(), want.len(), "{ctx}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g.score - w.score).abs() <= tol,
            "{ctx}: position {i}: score {} vs {}",
            g.score,
            w.score
        );
        if g.item != w.item {
            let near = |list: &[Scored], item: u32, score: f32| {
                list.iter()
                    .any(|s| s.item == item && (s.score - score).abs() <= tol)
                    || (list.last().unwrap().score - score).abs() <= tol
            };
            assert!(
                near(want, g.item, g.score) && near(got, w.item, w.score),
                "{ctx}: position {i}: item {} ({}) vs {} ({})",
                g.item,
                g.score,
                w.item,
                w.score
            );
        }
    }
}

/// Tolerance of a batched score against the single-request one: the user vectors differ by
/// f32 rounding of the encoder's products summed in another order (about 1e-6 relative), the
/// catalog scores by that times |item|; 1e-4 of the largest score is far above it and far below
/// the gaps of random scores.
fn tolerance(want: &[Vec<Scored>]) -> f32 {
    let max = want
        .iter()
        .flatten()
        .fold(1f32, |m, s| m.max(s.score.abs()));
    1e-4 * max
}

#[test]
fn batch_equals_single_requests() {
    let (n_items, max_len) = (120, 10);
    let extra = [3u32, 4, 5, 119];
    for (a, arch) in ARCHS.iter().enumerate() {
        for (cfg_name, cfg) in configs(arch, n_items, max_len) {
            let bytes = random_model_bytes(&cfg, 20 + a as u64, 0.3);
            for dtype in DTYPES {
                let m = load(&bytes, dtype);
                let mut rng = Rng::new(5 + a as u64);
                // More than a group, so that several groups run (and in parallel).
                let hs = histories(&mut rng, BATCH_GROUP + 37, n_items, max_len);
                let qs = queries(&hs, &extra, *arch == "caser");
                let mut ws = m.new_workspace();
                for k in [1, 7, n_items + 3] {
                    let ctx = format!("{cfg_name} {dtype} k={k}");
                    let single: Vec<Vec<Scored>> =
                        qs.iter().map(|q| m.topk(q, k, &mut ws).unwrap()).collect();
                    let tol = tolerance(&single);
                    let par = m.topk_batch(&qs, k);
                    let seq = m.topk_batch_sequential(&qs, k, &mut ws);
                    let kk = k.min(n_items);
                    let (mut items, mut scores) =
                        (vec![0; qs.len() * kk], vec![0.0; qs.len() * kk]);
                    let mut counts = vec![0; qs.len()];
                    m.topk_batch_into(&qs, kk, &mut items, &mut scores, &mut counts)
                        .unwrap();
                    for (i, want) in single.iter().enumerate() {
                        let ctx = format!("{ctx} request {i}");
                        assert_same_selection(&ctx, par[i].as_ref().unwrap(), want, tol);
                        assert_same_selection(&ctx, seq[i].as_ref().unwrap(), want, tol);
                        let flat: Vec<Scored> = (0..counts[i])
                            .map(|j| Scored {
                                item: items[i * kk + j],
                                score: scores[i * kk + j],
                            })
                            .collect();
                        assert_same_selection(&ctx, &flat, want, tol);
                        if qs[i].exclude_history {
                            let hist = qs[i].history;
                            assert!(want.iter().all(|s| !hist.contains(&s.item)), "{ctx}");
                        }
                        assert!(want.iter().all(|s| s.item != 0), "{ctx}: padding");
                    }
                    if k > n_items {
                        // The whole catalog minus padding and exclusions.
                        let excluded = |q: &Query<'_>| {
                            let mut ids: Vec<u32> = q.exclude.to_vec();
                            if q.exclude_history {
                                ids.extend_from_slice(q.history);
                            }
                            ids.sort_unstable();
                            ids.dedup();
                            ids.len()
                        };
                        for (q, c) in qs.iter().zip(&counts) {
                            assert_eq!(*c, n_items - 1 - excluded(q), "{ctx}");
                        }
                    }
                }
            }
        }
    }
}

/// The small configurations, and SASRec with one and three layers (the last layer computes its
/// last position only).
fn configs(arch: &str, n_items: usize, max_len: usize) -> Vec<(String, Config)> {
    let base = small_config(arch, n_items, max_len);
    let mut v = vec![(arch.to_string(), base.clone())];
    if arch == "sasrec" {
        for layers in [1usize, 3] {
            v.push((
                format!("sasrec/{layers} layers"),
                base.clone().with("n_layers", layers),
            ));
        }
    }
    v
}

#[test]
fn batch_reports_bad_requests_on_their_own() {
    let bytes = random_model_bytes(&small_config("sasrec", 50, 6), 3, 0.3);
    let m = load(&bytes, DType::F32);
    let good = [1u32, 2, 3];
    let bad_id = [4u32, 50];
    let qs = [
        Query::new(&good),
        Query::new(&bad_id),
        Query::new(&[]),
        Query::new(&good).user(1),
    ];
    let out = m.topk_batch(&qs, 5);
    assert_eq!(out.len(), 4);
    let mut ws = m.new_workspace();
    let want = m.topk(&qs[0], 5, &mut ws).unwrap();
    let tol = tolerance(std::slice::from_ref(&want));
    assert_same_selection("request 0", out[0].as_ref().unwrap(), &want, tol);
    let msg = |i: usize| out[i].as_ref().unwrap_err().to_string();
    assert!(msg(1).contains("item id 50"), "{}", msg(1));
    assert!(msg(2).contains("empty history"), "{}", msg(2));
    assert!(msg(3).contains("user id is not accepted"), "{}", msg(3));
    let seq = m.topk_batch_sequential(&qs, 5, &mut ws);
    assert!(seq[0].is_ok() && seq[1].is_err() && seq[2].is_err() && seq[3].is_err());
    // The flat variant fails on the first bad request, before scoring anything.
    let (mut items, mut scores, mut counts) = (vec![0; 20], vec![0.0; 20], vec![0; 4]);
    let err = m
        .topk_batch_into(&qs, 5, &mut items, &mut scores, &mut counts)
        .unwrap_err();
    assert!(err.to_string().contains("item id 50"), "{err}");
    let err = m
        .topk_batch_into(&qs[..1], 5, &mut items[..4], &mut scores, &mut counts)
        .unwrap_err();
    assert!(err.to_string().contains("needs 5 items"), "{err}");
    assert!(m.topk_batch(&[], 5).is_empty());
}

/// Item `2j + 1` duplicates item `2j`: every score ties with its twin, and both paths (and the
/// int8 table) keep the smaller id first.
#[test]
fn ties_resolve_to_the_smaller_id_in_both_paths() {
    let (n_items, max_len) = (101, 8);
    for arch in ARCHS {
        let cfg = small_config(arch, n_items, max_len);
        let bytes = random_model_bytes_with(&cfg, 9, 0.3, |name, v| {
            if name == "item_embedding.weight" {
                let d = v.len() / n_items;
                for j in (2..n_items - 1).step_by(2) {
                    let (a, b) = v.split_at_mut((j + 1) * d);
                    b[..d].copy_from_slice(&a[j * d..]);
                }
            }
        })
        .unwrap();
        for dtype in DTYPES {
            let m = load(&bytes, dtype);
            let mut rng = Rng::new(11);
            let hs = histories(&mut rng, 40, n_items, max_len);
            let qs = queries(&hs, &[], arch == "caser");
            let mut ws = m.new_workspace();
            let batch = m.topk_batch(&qs, 6);
            for (q, got) in qs.iter().zip(&batch) {
                let got = got.as_ref().unwrap();
                let want = m.topk(q, 6, &mut ws).unwrap();
                assert_same_selection(
                    &format!("{arch} {dtype}"),
                    got,
                    &want,
                    tolerance(std::slice::from_ref(&want)),
                );
                for list in [got, &want] {
                    for pair in list.windows(2) {
                        if pair[0].score == pair[1].score {
                            assert!(pair[0].item < pair[1].item, "{arch} {dtype}: {pair:?}");
                        }
                    }
                    // An even item (>= 2) selected without its odd twin only at the end.
                    for (i, s) in list.iter().enumerate() {
                        let twin = s.item + 1;
                        if s.item >= 2
                            && s.item % 2 == 0
                            && (twin as usize) < n_items
                            && i + 1 < list.len()
                        {
                            let excluded = q.exclude_history && q.history.contains(&twin);
                            assert!(
                                excluded || list[i + 1].item == twin,
                                "{arch} {dtype}: {list:?}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The int8 table shortlists with a guaranteed bound and re-scores in f32: its selections are
/// the f32 table's, items and scores bit for bit, for single requests (sessions and batches
/// equal them up to f32 rounding).
#[test]
fn int8_table_returns_the_f32_selection() {
    let (n_items, max_len) = (3000, 12);
    for (a, arch) in ARCHS.iter().enumerate() {
        let bytes = random_model_bytes(&small_config(arch, n_items, max_len), 30 + a as u64, 0.3);
        let (f32m, i8m) = (load(&bytes, DType::F32), load(&bytes, DType::I8));
        assert_eq!(i8m.info().item_dtype, DType::I8);
        let mut rng = Rng::new(31);
        let hs = histories(&mut rng, 200, n_items, max_len);
        let extra: Vec<u32> = (1..40).collect();
        let qs = queries(&hs, &extra, *arch == "caser");
        let (mut ws_a, mut ws_b) = (f32m.new_workspace(), i8m.new_workspace());
        let (mut same, mut total) = (0usize, 0usize);
        for k in [1, 10, 100] {
            for q in &qs {
                let want = f32m.topk(q, k, &mut ws_a).unwrap();
                let got = i8m.topk(q, k, &mut ws_b).unwrap();
                total += want.len();
                same += got
                    .iter()
                    .zip(&want)
                    .filter(|(g, w)| g.item == w.item)
                    .count();
                let bits = |v: &[Scored]| -> Vec<(u32, u32)> {
                    v.iter().map(|s| (s.item, s.score.to_bits())).collect()
                };
                assert_eq!(bits(&got), bits(&want), "{arch} k={k}");
            }
            let batch = i8m.topk_batch(&qs, k);
            for (q, got) in qs.iter().zip(&batch) {
                let want = f32m.topk(q, k, &mut ws_a).unwrap();
                assert_same_selection(
                    arch,
                    got.as_ref().unwrap(),
                    &want,
                    tolerance(std::slice::from_ref(&want)),
                );
            }
        }
        // At least 99% of the top-k items identical (the guarantee makes it 100%).
        assert!(same * 100 >= total * 99, "{arch}: {same} of {total}");
        let mut s = match *arch {
            "caser" => i8m.session_for_user(2).unwrap(),
            _ => i8m.session().unwrap(),
        };
        let mut history = Vec::new();
        for &item in &hs[0] {
            s.push(item).unwrap();
            history.push(item);
        }
        let q = if *arch == "caser" {
            Query::new(&history).user(2)
        } else {
            Query::new(&history)
        };
        let want = f32m.topk(&q, 10, &mut ws_a).unwrap();
        let got = s.topk(10, false).unwrap();
        assert_same_selection(
            &format!("{arch} session"),
            &got,
            &want,
            tolerance(std::slice::from_ref(&want)),
        );
    }
}

/// A rayon pool of `threads` threads.
fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// Each query's top-`k` on a worker of `pool`, scores as bits.
fn topk_bits(
    pool: &rayon::ThreadPool,
    m: &Model,
    qs: &[Query<'_>],
    k: usize,
) -> Vec<Vec<(u32, u32)>> {
    pool.install(|| {
        let mut ws = m.new_workspace();
        qs.iter()
            .map(|q| {
                let top = m.topk(q, k, &mut ws).unwrap();
                top.iter().map(|s| (s.item, s.score.to_bits())).collect()
            })
            .collect()
    })
}

/// Inside a rayon pool of several threads a large catalog is scanned in shares on several
/// threads; the selections equal the one-thread scan's bit for bit.
#[test]
fn split_scan_equals_one_thread() {
    let (n_items, max_len) = (70_001, 6);
    let bytes = random_model_bytes(&small_config("gru4rec", n_items, max_len), 41, 0.3);
    let (one, four) = (pool(1), pool(4));
    for dtype in DTYPES {
        let m = load(&bytes, dtype);
        let mut rng = Rng::new(42);
        let hs = histories(&mut rng, 12, n_items, max_len);
        let extra: Vec<u32> = (0..500).map(|i| 1 + 97 * i).collect();
        let qs = queries(&hs, &extra, false);
        assert_eq!(
            topk_bits(&four, &m, &qs, 25),
            topk_bits(&one, &m, &qs, 25),
            "{dtype}"
        );
    }
}

/// Inside a rayon pool of several threads a GRU layer of 64 hidden units or more shares each
/// step between two workers (`gru_layer_shared`); the scores equal the one-thread layer's bit
/// for bit, here with a hidden width (80) that splits into unequal shares and two layers.
#[test]
fn shared_recurrence_equals_one_thread() {
    let (n_items, max_len) = (300, 20);
    let config = small_config("gru4rec", n_items, max_len)
        .with("hidden_size", 80)
        .with("num_layers", 2);
    let bytes = random_model_bytes(&config, 43, 0.3);
    let m = load(&bytes, DType::F32);
    let mut rng = Rng::new(44);
    let hs = histories(&mut rng, 16, n_items, max_len);
    let qs = queries(&hs, &[], false);
    assert_eq!(
        topk_bits(&pool(2), &m, &qs, 20),
        topk_bits(&pool(1), &m, &qs, 20)
    );
}

/// i16 is a storage of text-encoder weights: a scoring item table refuses it with an error.
#[test]
fn item_table_refuses_i16() {
    let bytes = random_model_bytes(&small_config(ARCHS[0], 50, 8), 40, 0.3);
    let opts = LoadOptions {
        item_dtype: DType::I16,
        ..Default::default()
    };
    let e = Model::from_bytes(&bytes, &opts).unwrap_err().to_string();
    assert!(
        e.contains("i16") && e.contains("f32, f16, bf16 or i8"),
        "{e}"
    );
}
