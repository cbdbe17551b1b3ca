//! f16 / bf16 <-> f32 conversion throughput on 1M values (bytes read + written per second).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use half::{bf16, f16};
use seqrec_kernels::Isa;
use seqrec_kernels::cpu::convert;
use seqrec_kernels::testing::Rng;
use std::hint::black_box;
use std::time::Duration;

const N: usize = 1 << 20;

fn bench_convert(c: &mut Criterion) {
    let mut rng = Rng::new(1);
    let x = rng.normal_vec(N, 10.0);
    let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
    let b: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    let mut y = vec![0.0f32; N];
    let mut h_out = vec![f16::ZERO; N];
    let mut b_out = vec![bf16::ZERO; N];

    let mut group = c.benchmark_group(format!("convert/{}", Isa::detect().name()));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        // 2 bytes read + 4 bytes written (or the reverse) per value.
        .throughput(Throughput::Bytes((N * 6) as u64));
    group.bench_function("f16_to_f32/1M", |bch| {
        bch.iter(|| convert::f16_to_f32(black_box(&h), black_box(&mut y)))
    });
    group.bench_function("bf16_to_f32/1M", |bch| {
        bch.iter(|| convert::bf16_to_f32(black_box(&b), black_box(&mut y)))
    });
    group.bench_function("f32_to_f16/1M", |bch| {
        bch.iter(|| convert::f32_to_f16(black_box(&x), black_box(&mut h_out)))
    });
    group.bench_function("f32_to_bf16/1M", |bch| {
        bch.iter(|| convert::f32_to_bf16(black_box(&x), black_box(&mut b_out)))
    });
    // The `half` crate's slice conversions (F16C where available), for comparison.
    group.bench_function("half_crate_f16_to_f32/1M", |bch| {
        use half::slice::HalfFloatSliceExt;
        bch.iter(|| black_box(&h[..]).convert_to_f32_slice(black_box(&mut y)))
    });
    group.bench_function("half_crate_f32_to_f16/1M", |bch| {
        use half::slice::HalfFloatSliceExt;
        bch.iter(|| black_box(&mut h_out[..]).convert_from_f32_slice(black_box(&x)))
    });
    group.finish();
}

criterion_group!(benches, bench_convert);
criterion_main!(benches);
