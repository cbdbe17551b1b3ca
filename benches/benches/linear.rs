//! Linear layers at catalog-scoring shapes: `linear` (x[m,64] · w[23716,64]ᵀ) against the
//! `gemm` crate called directly on the same operands, a few rows through a BERT-sized layer
//! (x[m,384] · w[1536,384]ᵀ), and the half-precision row-vector products against a
//! 352,602-item table.
//!
//! Criterion's throughput is set to 2·m·k·n elements, so its "elem/s" figure is FLOP/s; each
//! case also prints GFLOP/s from a short timing loop of its own.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use half::{bf16, f16};
use seqrec_kernels::Isa;
use seqrec_kernels::cpu::linear;
use seqrec_kernels::testing::Rng;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Times `f` for about 0.3 s and prints its GFLOP/s.
fn print_gflops(name: &str, flops: f64, mut f: impl FnMut()) {
    f();
    let start = Instant::now();
    let mut iters = 0u32;
    while start.elapsed() < Duration::from_millis(300) {
        f();
        iters += 1;
    }
    let secs = start.elapsed().as_secs_f64() / iters as f64;
    println!(
        "{name}: {:.1} GFLOP/s ({:.1} µs per call)",
        flops / secs * 1e-9,
        secs * 1e6
    );
}

/// `y[m,n] = x[m,k] · w[n,k]ᵀ` through `gemm::gemm` directly, with the strides `linear` uses.
fn gemm_direct(
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
    par: gemm::Parallelism,
) {
    assert!(x.len() == m * k && w.len() == n * k && y.len() == m * n);
    // SAFETY: x is m×k row-major, w read as k×n with row stride 1 and column stride k, y is
    // m×n row-major; the lengths are checked above and y is a distinct &mut.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

fn bench_linear(c: &mut Criterion) {
    let isa = Isa::detect();
    let mut group = c.benchmark_group(format!("linear/{}", isa.name()));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let mut rng = Rng::new(1);
    let (k, n) = (64usize, 23_716usize);
    let w = rng.normal_vec(n * k, 0.1);
    for m in [1usize, 64, 256] {
        let x = rng.normal_vec(m * k, 1.0);
        let mut y = vec![0.0f32; m * n];
        let flops = 2.0 * (m * k * n) as f64;
        let shape = format!("{m}x{k}x{n}");
        group.throughput(Throughput::Elements(flops as u64));

        print_gflops(&format!("linear/{isa}/ours/{shape}"), flops, || {
            linear::linear(&x, &w, None, &mut y, m, k, n)
        });
        group.bench_with_input(BenchmarkId::new("ours", &shape), &m, |b, _| {
            b.iter(|| linear::linear(black_box(&x), black_box(&w), None, &mut y, m, k, n))
        });

        for (label, par) in [
            ("gemm_crate", gemm::Parallelism::None),
            ("gemm_crate_rayon", gemm::Parallelism::Rayon(0)),
        ] {
            print_gflops(&format!("linear/{isa}/{label}/{shape}"), flops, || {
                gemm_direct(&x, &w, &mut y, m, k, n, par)
            });
            group.bench_with_input(BenchmarkId::new(label, &shape), &m, |b, _| {
                b.iter(|| gemm_direct(black_box(&x), black_box(&w), &mut y, m, k, n, par))
            });
        }
    }

    // A few rows through a BERT-sized layer (a title is 4-20 tokens in the text encoder):
    // the register-tiled kernel against the gemm crate, which packs the weights on every call.
    let (kb, nb) = (384usize, 1536usize);
    let wb = rng.normal_vec(nb * kb, 0.1);
    for m in [4usize, 16] {
        let x = rng.normal_vec(m * kb, 1.0);
        let mut y = vec![0.0f32; m * nb];
        let flops = 2.0 * (m * kb * nb) as f64;
        let shape = format!("{m}x{kb}x{nb}");
        group.throughput(Throughput::Elements(flops as u64));
        print_gflops(&format!("linear/{isa}/ours/{shape}"), flops, || {
            linear::linear(&x, &wb, None, &mut y, m, kb, nb)
        });
        group.bench_with_input(BenchmarkId::new("ours", &shape), &m, |b, _| {
            b.iter(|| linear::linear(black_box(&x), black_box(&wb), None, &mut y, m, kb, nb))
        });
        let par = gemm::Parallelism::None;
        print_gflops(&format!("linear/{isa}/gemm_crate/{shape}"), flops, || {
            gemm_direct(&x, &wb, &mut y, m, kb, nb, par)
        });
        group.bench_with_input(BenchmarkId::new("gemm_crate", &shape), &m, |b, _| {
            b.iter(|| gemm_direct(black_box(&x), black_box(&wb), &mut y, m, kb, nb, par))
        });
    }

    // Row vector against a large half-precision item table.
    let n = 352_602usize;
    let x = rng.normal_vec(k, 1.0);
    let wf = rng.normal_vec(n * k, 0.1);
    let w16: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
    let wb16: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
    let mut y = vec![0.0f32; n];
    let flops = 2.0 * (k * n) as f64;
    let shape = format!("1x{k}x{n}");
    group.throughput(Throughput::Elements(flops as u64));
    print_gflops(&format!("linear/{isa}/gemv_f16/{shape}"), flops, || {
        linear::gemv_f16(&w16, &x, &mut y, n, k)
    });
    group.bench_with_input(BenchmarkId::new("gemv_f16", &shape), &n, |b, _| {
        b.iter(|| linear::gemv_f16(black_box(&w16), black_box(&x), &mut y, n, k))
    });
    print_gflops(&format!("linear/{isa}/gemv_bf16/{shape}"), flops, || {
        linear::gemv_bf16(&wb16, &x, &mut y, n, k)
    });
    group.bench_with_input(BenchmarkId::new("gemv_bf16", &shape), &n, |b, _| {
        b.iter(|| linear::gemv_bf16(black_box(&wb16), black_box(&x), &mut y, n, k))
    });
    // The f32 table of the same shape (twice the bytes), for comparison.
    print_gflops(
        &format!("linear/{isa}/f32_row_vector/{shape}"),
        flops,
        || linear::linear(&x, &wf, None, &mut y, 1, k, n),
    );
    group.bench_with_input(BenchmarkId::new("f32_row_vector", &shape), &n, |b, _| {
        b.iter(|| linear::linear(black_box(&x), black_box(&wf), None, &mut y, 1, k, n))
    });
    group.finish();
}

criterion_group!(benches, bench_linear);
criterion_main!(benches);
