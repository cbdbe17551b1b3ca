//! Top-10 selection over a catalog's scores with a 50-id exclusion list (the user's history),
//! for the two catalog sizes of the reference datasets (23,716 and 352,602 items).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use seqrec_kernels::Isa;
use seqrec_kernels::cpu::topk::{TopK, topk, topk_ref};
use seqrec_kernels::testing::Rng;
use std::hint::black_box;
use std::time::Duration;

const K: usize = 10;

fn bench_topk(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("topk/{}", Isa::detect().name()));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let mut rng = Rng::new(7);
    for n in [23_716usize, 352_602] {
        let scores = rng.normal_vec(n, 1.0);
        let mut exclude: Vec<u32> = (0..50).map(|_| rng.below(n) as u32).collect();
        exclude.sort_unstable();
        exclude.dedup();
        let mut items = [0u32; K];
        let mut out = [0.0f32; K];
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("top10", n), &n, |b, _| {
            b.iter(|| topk(black_box(&scores), K, &exclude, &mut items, &mut out))
        });
        // The reusable selector (no allocation per request).
        let mut sel = TopK::new(K);
        group.bench_with_input(BenchmarkId::new("top10_reused", n), &n, |b, _| {
            b.iter(|| {
                sel.push_block(0, black_box(&scores), &exclude);
                sel.finish(&mut items, &mut out)
            })
        });
        // Every ISA this CPU runs, to show what the vector skip test buys.
        for isa in Isa::available() {
            group.bench_with_input(BenchmarkId::new(format!("top10_{isa}"), n), &n, |b, _| {
                b.iter(|| {
                    sel.push_block_isa(isa, 0, black_box(&scores), &exclude);
                    sel.finish(&mut items, &mut out)
                })
            });
        }
        // A plain scan of the scores (sum), as the one-pass floor.
        group.bench_with_input(BenchmarkId::new("sum_floor", n), &n, |b, _| {
            b.iter(|| seqrec_kernels::cpu::vector::dot(black_box(&scores), black_box(&scores)))
        });
        if n < 100_000 {
            group.bench_with_input(BenchmarkId::new("sort_reference", n), &n, |b, _| {
                b.iter(|| topk_ref(black_box(&scores), K, &exclude, &mut items, &mut out))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_topk);
criterion_main!(benches);
