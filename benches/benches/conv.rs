//! NextItNet's dilated causal conv (L = 50, 64 channels, k = 3, dilations 1, 2, 4, 8; the whole
//! window and one streaming row) and Caser's convolutions (L = 50 and 10, e = 64, nv = 4,
//! nh = 8, every horizontal height).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use seqrec_kernels::Isa;
use seqrec_kernels::cpu::conv::{
    caser_horizontal, caser_horizontal_scratch_len, caser_vertical, causal_conv1d,
    causal_conv1d_isa, causal_conv1d_step, pack_conv_taps,
};
use seqrec_kernels::testing::Rng;
use std::hint::black_box;
use std::time::Duration;

fn configure<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(format!("{name}/{}", Isa::detect().name()));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    group
}

fn bench_causal_conv(c: &mut Criterion) {
    let (len, ch, k) = (50, 64, 3);
    let isa = Isa::detect();
    let mut rng = Rng::new(1);
    let x = rng.normal_vec(len * ch, 1.0);
    let w = rng.normal_vec(ch * ch * k, 0.1);
    let bias = rng.normal_vec(ch, 0.1);
    let taps = pack_conv_taps(&w, ch, ch, k);
    let mut y = vec![0.0; len * ch];
    let mut group = configure(c, "causal_conv1d");
    // Throughput: multiply-adds of the full (unpadded) conv, counted as elements.
    group.throughput(Throughput::Elements((len * ch * ch * k) as u64));
    for d in [1, 2, 4, 8] {
        group.bench_function(format!("matmul/L{len}_c{ch}_k{k}_d{d}"), |b| {
            b.iter(|| causal_conv1d(black_box(&x), len, ch, &taps, Some(&bias), ch, k, d, &mut y))
        });
        group.bench_function(format!("pulp/L{len}_c{ch}_k{k}_d{d}"), |b| {
            b.iter(|| {
                causal_conv1d_isa(
                    isa,
                    black_box(&x),
                    len,
                    ch,
                    &taps,
                    Some(&bias),
                    ch,
                    k,
                    d,
                    &mut y,
                )
            })
        });
    }
    let mut row = vec![0.0; ch];
    group.throughput(Throughput::Elements((ch * ch * k) as u64));
    group.bench_function(format!("step/t{}_c{ch}_k{k}_d4", len - 1), |b| {
        b.iter(|| {
            causal_conv1d_step(
                black_box(&x),
                len - 1,
                ch,
                &taps,
                Some(&bias),
                ch,
                k,
                4,
                &mut row,
            )
        })
    });
    group.finish();
}

fn bench_caser(c: &mut Criterion) {
    let (e, nv, nh) = (64, 4, 8);
    let mut group = configure(c, "caser_conv");
    for l in [50, 10] {
        let mut rng = Rng::new(l as u64);
        let x = rng.normal_vec(l * e, 1.0);
        let wv = rng.normal_vec(nv * l, 0.1);
        let bv = rng.normal_vec(nv, 0.1);
        let wh: Vec<Vec<f32>> = (1..=l).map(|h| rng.normal_vec(nh * h * e, 0.1)).collect();
        let bh: Vec<Vec<f32>> = (1..=l).map(|_| rng.normal_vec(nh, 0.1)).collect();
        let mut out_v = vec![0.0; nv * e];
        let mut out_h = vec![0.0; nh * l];
        let mut scratch = vec![0.0; caser_horizontal_scratch_len(l, 1, nh)];
        let h_macs: usize = (1..=l).map(|h| (l - h + 1) * h * e * nh).sum();
        group.throughput(Throughput::Elements((nv * l * e) as u64));
        group.bench_function(format!("vertical/L{l}_e{e}_nv{nv}"), |b| {
            b.iter(|| caser_vertical(black_box(&x), l, e, &wv, &bv, nv, &mut out_v))
        });
        group.throughput(Throughput::Elements(h_macs as u64));
        group.bench_function(format!("horizontal_all_heights/L{l}_e{e}_nh{nh}"), |b| {
            b.iter(|| {
                for (i, o) in out_h.chunks_exact_mut(nh).enumerate() {
                    let h = i + 1;
                    caser_horizontal(black_box(&x), l, e, h, &wh[i], &bh[i], nh, o, &mut scratch);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_causal_conv, bench_caser);
criterion_main!(benches);
