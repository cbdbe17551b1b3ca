//! Layer norm, fused add + layer norm and row softmax at the engine's shapes: one SASRec
//! sequence (50 × 64), a batch of 256 of them (12800 × 64), a BERT-like layer (32 × 384);
//! softmax over a 50 × 50 score matrix and over one row of 23716 item logits.
//!
//! Throughput is counted in matrix elements.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use seqrec_kernels::Isa;
use seqrec_kernels::cpu::norm::{add_layer_norm, layer_norm};
use seqrec_kernels::cpu::softmax::softmax_rows;
use seqrec_kernels::testing::Rng;
use std::hint::black_box;
use std::time::Duration;

const SHAPES: [(&str, usize, usize); 3] = [
    ("50x64", 50, 64),
    ("12800x64", 256 * 50, 64),
    ("32x384", 32, 384),
];

fn configure(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
}

fn bench_layer_norm(c: &mut Criterion) {
    let isa = Isa::detect().name();
    let mut rng = Rng::new(2);
    let mut group = c.benchmark_group(format!("layer_norm/{isa}"));
    configure(&mut group);
    for (name, rows, dim) in SHAPES {
        let x = rng.normal_vec(rows * dim, 1.0);
        let residual = rng.normal_vec(rows * dim, 1.0);
        let gamma = rng.normal_vec(dim, 1.0);
        let beta = rng.normal_vec(dim, 1.0);
        let mut out = vec![0.0f32; rows * dim];
        group.throughput(Throughput::Elements((rows * dim) as u64));
        group.bench_function(format!("layer_norm/{name}"), |b| {
            b.iter(|| {
                layer_norm(black_box(&x), rows, dim, &gamma, &beta, 1e-12, &mut out);
                black_box(&out);
            })
        });
        group.bench_function(format!("add_layer_norm/{name}"), |b| {
            b.iter(|| {
                add_layer_norm(
                    black_box(&x),
                    black_box(&residual),
                    rows,
                    dim,
                    &gamma,
                    &beta,
                    1e-12,
                    &mut out,
                );
                black_box(&out);
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group(format!("softmax/{isa}"));
    configure(&mut group);
    for (name, rows, cols) in [("50x50", 50, 50), ("1x23716", 1, 23_716)] {
        // Softmax in place, repeatedly: the cost does not depend on the values.
        let mut x = rng.normal_vec(rows * cols, 3.0);
        group.throughput(Throughput::Elements((rows * cols) as u64));
        group.bench_function(format!("softmax_rows/{name}"), |b| {
            b.iter(|| {
                softmax_rows(black_box(&mut x), rows, cols);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_layer_norm);
criterion_main!(benches);
