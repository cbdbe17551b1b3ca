//! End-to-end scoring benches on RecBole-shaped models with random weights:
//! - SASRec (d=64, 2 layers, 2 heads, L=50) at catalogs of 23,716 and 352,602 items: batch-1
//!   top-10 latency and batch-256 throughput, with f32, f16 and bf16 item tables;
//! - per-event session cost (push + top-10) against a full re-encode + top-10, for each model.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use seqrec_engine::testing::{random_model_bytes, recbole_default_config};
use seqrec_engine::{DType, LoadOptions, Model, Query};
use seqrec_kernels::Isa;
use seqrec_kernels::testing::Rng;
use std::hint::black_box;
use std::time::Duration;

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

fn sasrec_scoring(c: &mut Criterion) {
    let isa = Isa::detect().name();
    for n_items in [23_716usize, 352_602] {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let m = model("sasrec", n_items, dtype);
            let hs = histories(256, 50, n_items, 3);
            let mut g = c.benchmark_group(format!(
                "sasrec_topk10/{isa}/items{n_items}/{}",
                dtype.name()
            ));
            g.sample_size(20)
                .measurement_time(Duration::from_secs(4))
                .warm_up_time(Duration::from_secs(1));
            let mut ws = m.new_workspace();
            let (mut items, mut scores) = ([0u32; 10], [0f32; 10]);
            g.throughput(Throughput::Elements(1));
            g.bench_function("batch1", |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % hs.len();
                    m.topk_into(&Query::new(&hs[i]), 10, &mut ws, &mut items, &mut scores)
                        .unwrap();
                    black_box(&items);
                })
            });
            let queries: Vec<Query<'_>> = hs.iter().map(|h| Query::new(h)).collect();
            g.throughput(Throughput::Elements(256));
            g.bench_function("batch256", |b| {
                b.iter(|| black_box(m.topk_batch(&queries, 10)))
            });
            g.finish();
        }
    }
}

fn session_vs_reencode(c: &mut Criterion) {
    let isa = Isa::detect().name();
    let n_items = 23_716;
    for arch in ["sasrec", "gru4rec", "nextitnet", "caser"] {
        let m = model(arch, n_items, DType::F32);
        let user = (arch == "caser").then_some(17);
        let hs = histories(1, 49, n_items, 5);
        let mut g = c.benchmark_group(format!("session/{isa}/{arch}"));
        g.sample_size(20)
            .measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_secs(1));
        // A history of 49 events: the 50th (the push measured) still fits the window, so
        // incremental models do one step; the re-encode scores the same 50 events from scratch.
        let mut full = hs[0].clone();
        full.push(42);
        let mut ws = m.new_workspace();
        let (mut items, mut scores) = ([0u32; 10], [0f32; 10]);
        g.bench_function(BenchmarkId::new("reencode_topk10", 50), |b| {
            b.iter(|| {
                let q = Query::new(&full);
                let q = match user {
                    Some(u) => q.user(u),
                    None => q,
                };
                m.topk_into(&q, 10, &mut ws, &mut items, &mut scores)
                    .unwrap();
                black_box(&items);
            })
        });
        let mut setup_ws = m.new_workspace();
        g.bench_function(BenchmarkId::new("push_topk10", 50), |b| {
            b.iter_batched_ref(
                || {
                    let mut s = match user {
                        Some(u) => m.new_session_for_user(u).unwrap(),
                        None => m.new_session().unwrap(),
                    };
                    for &item in &hs[0] {
                        m.session_push(&mut s, item, &mut setup_ws).unwrap();
                    }
                    s
                },
                |s| {
                    m.session_push(s, 42, &mut ws).unwrap();
                    m.session_topk_into(s, 10, false, &mut ws, &mut items, &mut scores)
                        .unwrap();
                    black_box(&items);
                },
                criterion::BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, sasrec_scoring, session_vs_reencode);
criterion_main!(benches);
