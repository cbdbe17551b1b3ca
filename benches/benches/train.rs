//! Training building blocks of `seqrec_trainer::nn`: forward + backward of one block over a
//! batch at RecBole's default sizes, the full-softmax loss over a catalog, and an Adam step.
//!
//! - SASRec layer (attention + feed-forward sublayers): batch 32, L = 50, H = 64, 2 heads,
//!   inner 256, dropout 0.5 (training mode).
//! - GRU4Rec layer: batch 32, 50 steps, input 64, hidden 128, no biases.
//! - NextItNet residual block: batch 32, L = 50, 64 channels, kernel 3, dilation 4.
//! - Caser convolutions: batch 32, L = 10, E = 64, nv 4, nh 8.
//! - Full softmax cross-entropy: 256 user vectors of 64 against 4 000 items (scores, loss,
//!   gradients to h and the table).
//! - Adam: one step over 1 M parameters.

use criterion::{Criterion, criterion_group, criterion_main};
use seqrec_kernels::Isa;
use seqrec_trainer::nn::loss::full_softmax_loss;
use seqrec_trainer::nn::{
    Activation, Adam, CaserConvs, FeedForward, Gru, NextItNetBlock, Optimizer, Param, Rng,
    SelfAttention,
};
use std::hint::black_box;
use std::time::Duration;

const B: usize = 32;
const L: usize = 50;

fn bench_train(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("train/{}", Isa::detect().name()));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let mut rng = Rng::new(1);

    let h = 64;
    let mut att = SelfAttention::new("a", h, 2, 1e-12, 0.5, 0.5, 0.02, &mut rng);
    let mut ff = FeedForward::new("f", h, 256, Activation::Gelu, 1e-12, 0.5, 0.02, &mut rng);
    let x = rng.normal_vec(B * L * h, 1.0);
    let d = rng.normal_vec(B * L * h, 1.0);
    group.bench_function(format!("sasrec_layer/B{B}_L{L}_H{h}"), |b| {
        let mut drop_rng = Rng::new(2);
        b.iter(|| {
            let (y, ca) = att.forward(black_box(&x), B, L, None, Some(&mut drop_rng));
            let (_, cf) = ff.forward(&y, B * L, Some(&mut drop_rng));
            let dy = ff.backward(&cf, &d);
            black_box(att.backward(&ca, &dy));
        })
    });

    let mut gru = Gru::new("g", 0, 64, 128, false, &mut rng);
    let x = rng.normal_vec(B * L * 64, 1.0);
    let d = rng.normal_vec(B * L * 128, 1.0);
    group.bench_function(format!("gru_layer/B{B}_L{L}_in64_h128"), |b| {
        b.iter(|| {
            let (_, cache) = gru.forward(black_box(&x), B, L, None);
            black_box(gru.backward(&cache, &d));
        })
    });

    let mut blk = NextItNetBlock::new("r", 64, 3, 4, &mut rng);
    let x = rng.normal_vec(B * L * 64, 1.0);
    let d = rng.normal_vec(B * L * 64, 1.0);
    group.bench_function(format!("nextitnet_block/B{B}_L{L}_C64_d4"), |b| {
        b.iter(|| {
            let (_, cache) = blk.forward(black_box(&x), B, L);
            black_box(blk.backward(&cache, &d));
        })
    });

    let mut convs = CaserConvs::new(10, 64, 4, 8, &mut rng);
    let x = rng.normal_vec(B * 10 * 64, 1.0);
    let d = rng.normal_vec(B * convs.out_dim(), 1.0);
    group.bench_function(format!("caser_convs/B{B}_L10_E64"), |b| {
        b.iter(|| {
            let (_, cache) = convs.forward(black_box(&x), B);
            black_box(convs.backward(&cache, &d));
        })
    });

    let (rows, n_items) = (256, 4000);
    let mut table = Param::normal("item_embedding.weight", &[n_items, h], 0.1, &mut rng);
    let hv = rng.normal_vec(rows * h, 1.0);
    let targets: Vec<u32> = (0..rows).map(|_| rng.below(n_items) as u32).collect();
    group.bench_function(
        format!("full_softmax/rows{rows}_items{n_items}_d{h}"),
        |b| {
            b.iter(|| {
                black_box(full_softmax_loss(
                    black_box(&hv),
                    rows,
                    &mut table,
                    &targets,
                    None,
                ))
            })
        },
    );

    let mut p = Param::normal("w", &[1000, 1000], 0.1, &mut rng);
    p.grad = rng.normal_vec(p.len(), 1.0);
    let mut adam = Adam::new(0.0);
    group.bench_function("adam_step/1M", |b| {
        b.iter(|| adam.step(&mut [&mut p], 1e-3))
    });
    group.finish();
}

/// A whole SASRec training step (forward, full-softmax CE over the catalog, backward) on one
/// thread: sequences (windows of L = 50 with a target at every position) per second.
fn bench_sasrec_step(c: &mut Criterion) {
    use seqrec_trainer::models::{Batch, SasRecConfig, SasRecModel, TrainModel};
    let mut group = c.benchmark_group(format!("train_step/{}", Isa::detect().name()));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .throughput(criterion::Throughput::Elements(B as u64));
    for n_items in [1_683usize, 23_716] {
        let mut rng = Rng::new(3);
        let mut model = SasRecModel::new(SasRecConfig::new(n_items, L), &mut rng);
        let items: Vec<u32> = (0..B * L)
            .map(|_| 1 + rng.below(n_items - 1) as u32)
            .collect();
        let batch = Batch {
            n: B,
            len: L,
            lens: vec![L; B],
            users: vec![0; B],
            out_pos: (0..B).flat_map(|r| (0..L).map(move |t| (r, t))).collect(),
            targets: (0..B * L)
                .map(|_| 1 + rng.below(n_items - 1) as u32)
                .collect(),
            items,
        };
        group.bench_function(format!("sasrec_d64_L{L}_B{B}/items{n_items}"), |b| {
            let mut drop_rng = Rng::new(4);
            b.iter(|| {
                let (h, cache) = model.forward(&batch, Some(&mut drop_rng));
                let rows = batch.out_pos.len();
                let (loss, dh) =
                    full_softmax_loss(&h, rows, model.item_table_mut(), &batch.targets, None);
                model.backward(&cache, &dh);
                black_box(loss)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_train, bench_sasrec_step);
criterion_main!(benches);
