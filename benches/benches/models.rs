//! End-to-end scoring benches on RecBole-shaped models with random weights (RecBole's default
//! hyper-parameters, window 50), run on a rayon pool of all cores (2 on the reference
//! machine; `SEQREC_BENCH_THREADS=1` for one), as a server would call the engine from its
//! worker threads:
//! - SASRec (d=64, 2 layers, 2 heads) at catalogs of 23,716 and 352,602 items: batch-1 top-10
//!   latency with f32, bf16 and int8 item tables (a request splits its catalog scan across
//!   the pool), and at 23,716 items batch-256 throughput of the batched path next to the
//!   same 256 requests scored one by one in parallel (`batch256_per_request`, the path before
//!   the batched one);
//! - GRU4Rec and NextItNet batch-1 top-10 latency at 23,716 items (f32 and int8 tables);
//! - per-event session cost (push + top-10) against a full re-encode + top-10, for each model,
//!   both while the history still fits the window (an incremental step) and once the window is
//!   full (the window slides: SASRec's positions shift, so the session re-encodes).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use rayon::prelude::*;
use seqrec_engine::testing::{random_model_bytes, recbole_default_config};
use seqrec_engine::{DType, LoadOptions, Model, Query, Workspace};
use seqrec_kernels::Isa;
use seqrec_kernels::testing::Rng;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn model(arch: &str, n_items: usize, dtype: DType) -> Model {
    let cfg = recbole_default_config(arch, n_items, 1000).unwrap();
    let bytes = random_model_bytes(&cfg, 1, 0.1).unwrap();
    Model::from_bytes(
        &bytes,
        &LoadOptions {
            item_dtype: dtype,
            ..Default::default()
        },
    )
    .unwrap()
}

fn histories(n: usize, len: usize, n_items: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            (0..len)
                .map(|_| 1 + rng.below(n_items - 1) as u32)
                .collect()
        })
        .collect()
}

fn short(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
}

/// Batch-1 top-10 of `m` over full-length random histories.
fn bench_batch1(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    m: &Model,
) {
    let n_items = m.info().n_items;
    let hs = histories(64, 50, n_items, 3);
    let user = m.info().n_users.map(|_| 1);
    let mut ws = m.new_workspace();
    let (mut items, mut scores) = ([0u32; 10], [0f32; 10]);
    g.throughput(Throughput::Elements(1));
    g.bench_function("batch1", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % hs.len();
            let q = Query::new(&hs[i]);
            let q = match user {
                Some(u) => q.user(u),
                None => q,
            };
            m.topk_into(&q, 10, &mut ws, &mut items, &mut scores)
                .unwrap();
            black_box(&items);
        })
    });
}

fn sasrec_scoring(c: &mut Criterion) {
    let isa = Isa::detect().name();
    for n_items in [23_716usize, 352_602] {
        for dtype in [DType::F32, DType::BF16, DType::I8] {
            let m = model("sasrec", n_items, dtype);
            let mut g = c.benchmark_group(format!(
                "sasrec_topk10/{isa}/items{n_items}/{}",
                dtype.name()
            ));
            short(&mut g);
            bench_batch1(&mut g, &m);
            if n_items == 23_716 && dtype == DType::F32 {
                let hs = histories(256, 50, n_items, 3);
                let queries: Vec<Query<'_>> = hs.iter().map(|h| Query::new(h)).collect();
                g.throughput(Throughput::Elements(256));
                g.bench_function("batch256", |b| {
                    b.iter(|| black_box(m.topk_batch(&queries, 10)))
                });
                g.bench_function("batch256_per_request", |b| {
                    b.iter(|| {
                        let out: Vec<_> = queries
                            .par_iter()
                            .map_init(|| m.new_workspace(), |ws, q| m.topk(q, 10, ws).unwrap())
                            .collect();
                        black_box(out)
                    })
                });
            }
            g.finish();
        }
    }
}

fn other_models_batch1(c: &mut Criterion) {
    let isa = Isa::detect().name();
    for arch in ["gru4rec", "nextitnet"] {
        for dtype in [DType::F32, DType::I8] {
            let m = model(arch, 23_716, dtype);
            let mut g =
                c.benchmark_group(format!("{arch}_topk10/{isa}/items23716/{}", dtype.name()));
            short(&mut g);
            bench_batch1(&mut g, &m);
            g.finish();
        }
    }
}

fn session_vs_reencode(c: &mut Criterion) {
    let isa = Isa::detect().name();
    let n_items = 23_716;
    let cases = [
        ("sasrec", DType::F32),
        ("sasrec", DType::I8),
        ("gru4rec", DType::F32),
        ("nextitnet", DType::F32),
        ("caser", DType::F32),
    ];
    for (arch, dtype) in cases {
        let m = model(arch, n_items, dtype);
        let user = (arch == "caser").then_some(17);
        let hs = histories(1, 50, n_items, 5);
        let mut g = c.benchmark_group(format!("session/{isa}/{arch}/{}", dtype.name()));
        short(&mut g);
        // A full re-encode + top-10 of a 50-event window.
        let mut ws = m.new_workspace();
        let (mut items, mut scores) = ([0u32; 10], [0f32; 10]);
        g.bench_function(BenchmarkId::new("reencode_topk10", 50), |b| {
            b.iter(|| {
                let q = Query::new(&hs[0]);
                let q = match user {
                    Some(u) => q.user(u),
                    None => q,
                };
                m.topk_into(&q, 10, &mut ws, &mut items, &mut scores)
                    .unwrap();
                black_box(&items);
            })
        });
        // Push one event (then top-10) on a session of 49 events (the 50th still fits the
        // window: an incremental step), timed alone after an untimed rebuild of the session
        // and an untimed request that brings the item table back into cache;
        // and on a session whose window is full (every push slides the window), in a steady
        // loop.
        let mut setup_ws = m.new_workspace();
        let new_session = |ws: &mut Workspace, events: &[u32]| {
            let mut s = match user {
                Some(u) => m.new_session_for_user(u).unwrap(),
                None => m.new_session().unwrap(),
            };
            for &item in events {
                m.session_push(&mut s, item, ws).unwrap();
            }
            s
        };
        g.bench_function(BenchmarkId::new("push_topk10", 50), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut s = new_session(&mut setup_ws, &hs[0][..49]);
                    // The re-encode below finds the item table in cache: so does the push.
                    let q = Query::new(&hs[0]);
                    let q = match user {
                        Some(u) => q.user(u),
                        None => q,
                    };
                    m.topk_into(&q, 10, &mut ws, &mut items, &mut scores)
                        .unwrap();
                    let t = Instant::now();
                    m.session_push(&mut s, 42, &mut ws).unwrap();
                    m.session_topk_into(&s, 10, false, &mut ws, &mut items, &mut scores)
                        .unwrap();
                    total += t.elapsed();
                    black_box(&items);
                }
                total
            })
        });
        // The incremental step alone (49 -> 50 events), without the top-10.
        g.bench_function(BenchmarkId::new("push", 50), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut s = new_session(&mut setup_ws, &hs[0][..49]);
                    let t = Instant::now();
                    m.session_push(&mut s, 42, &mut ws).unwrap();
                    total += t.elapsed();
                    black_box(&s);
                }
                total
            })
        });
        let mut full = new_session(&mut setup_ws, &hs[0]);
        g.bench_function(BenchmarkId::new("push_topk10_full_window", 50), |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % hs[0].len();
                m.session_push(&mut full, hs[0][i], &mut ws).unwrap();
                m.session_topk_into(&full, 10, false, &mut ws, &mut items, &mut scores)
                    .unwrap();
                black_box(&items);
            })
        });
        g.finish();
    }
}

criterion_group!(
    benches,
    sasrec_scoring,
    other_models_batch1,
    session_vs_reencode
);

fn main() {
    // Every bench runs on a worker of a pool of all cores (or `SEQREC_BENCH_THREADS`), so that
    // a single request may split its catalog scan and a batch spreads over the cores.
    let threads = std::env::var("SEQREC_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    println!("models: rayon pool of {threads} threads");
    pool.install(benches);
    Criterion::default().configure_from_args().final_summary();
}
