//! GRU4Rec's recurrent layer: a whole window (L = 50, input 64, hidden 64 and RecBole's default
//! hidden 128) and one session step at hidden 128.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use seqrec_kernels::Isa;
use seqrec_kernels::cpu::gru::{gru_layer, gru_layer_isa, gru_scratch_len, gru_step};
use seqrec_kernels::testing::Rng;
use std::hint::black_box;
use std::time::Duration;

const L: usize = 50;
const INPUT: usize = 64;

fn bench_gru(c: &mut Criterion) {
    let isa = Isa::detect();
    let mut group = c.benchmark_group(format!("gru/{}", isa.name()));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let mut rng = Rng::new(1);
    for hidden in [64, 128] {
        let x = rng.normal_vec(L * INPUT, 1.0);
        let w_ih = rng.normal_vec(3 * hidden * INPUT, 0.1);
        let w_hh = rng.normal_vec(3 * hidden * hidden, 0.1);
        let mut h = vec![0.0; hidden];
        let mut out = vec![0.0; L * hidden];
        let mut scratch = vec![0.0; gru_scratch_len(L, hidden)];
        // Throughput: the multiply-adds of both projections, counted as elements.
        group.throughput(Throughput::Elements(
            (L * 3 * hidden * (INPUT + hidden)) as u64,
        ));
        group.bench_function(format!("layer/L{L}_in{INPUT}_h{hidden}"), |b| {
            b.iter(|| {
                h.fill(0.0);
                gru_layer(
                    black_box(&x),
                    L,
                    INPUT,
                    hidden,
                    &w_ih,
                    &w_hh,
                    None,
                    None,
                    &mut h,
                    &mut out,
                    &mut scratch,
                );
            })
        });
        group.bench_function(format!("layer_pulp_proj/L{L}_in{INPUT}_h{hidden}"), |b| {
            b.iter(|| {
                h.fill(0.0);
                gru_layer_isa(
                    isa,
                    black_box(&x),
                    L,
                    INPUT,
                    hidden,
                    &w_ih,
                    &w_hh,
                    None,
                    None,
                    &mut h,
                    &mut out,
                    &mut scratch,
                );
            })
        });
    }
    let hidden = 128;
    let gi = rng.normal_vec(3 * hidden, 1.0);
    let w_hh = rng.normal_vec(3 * hidden * hidden, 0.1);
    let mut h = rng.uniform_vec(hidden, -0.5, 0.5);
    let mut scratch = vec![0.0; 3 * hidden];
    group.throughput(Throughput::Elements((3 * hidden * hidden) as u64));
    group.bench_function(format!("step/h{hidden}"), |b| {
        b.iter(|| gru_step(black_box(&gi), &w_hh, None, hidden, &mut h, &mut scratch))
    });
    group.finish();
}

criterion_group!(benches, bench_gru);
criterion_main!(benches);
