//! Linear layers and matrix products: our allocation-free kernels (`linear_isa`,
//! `matmul_isa`: "small"), the `gemm` crate called directly on the same operands ("gemm_crate",
//! one thread), and the dispatched fast path (`linear` / `matmul`: "chosen", which picks one
//! of the two by shape); on the catalog shapes also the scan's scoring kernels
//! (`score::scores_isa` for one user, `score::scores_batch_isa` for a batch: "scores"). Shapes: the per-request products of the sequence encoders (50 rows:
//! SASRec's 64 → 192 / 64 / 256 and 256 → 64, GRU4Rec's 64 → 384 input projection, NextItNet's
//! 64 × 64 tap product) and catalog scoring (x[m,64] · w[23716,64]ᵀ for 1, 64 and 256 rows),
//! plus the half-precision row-vector products against a 352,602-item table, and a few rows
//! through MiniLM's layer shapes with the weights coming from memory (f32 and f16 weights).
//!
//! Criterion's throughput is set to 2·m·k·n elements, so its "elem/s" figure is FLOP/s; each
//! case also prints GFLOP/s and µs of the fastest call in a short loop of its own (robust to a
//! shared machine). No bias anywhere, so that all three compute the same product.
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use half::{bf16, f16};
use seqrec_kernels::Isa;
use seqrec_kernels::cpu::{linear, score};
use seqrec_kernels::testing::Rng;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Calls `f` for about 0.3 s and prints the GFLOP/s and time of the fastest call.
fn print_gflops(name: &str, flops: f64, mut f: impl FnMut()) {
    f();
    let start = Instant::now();
    let mut best = f64::INFINITY;
    while start.elapsed() < Duration::from_millis(300) {
        let call = Instant::now();
        f();
        best = best.min(call.elapsed().as_secs_f64());
    }
    println!(
        "{name}: {:.1} GFLOP/s ({:.2} µs per call)",
        flops / best * 1e-9,
        best * 1e6
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

/// `c[m,n] = a[m,k] · b[k,n]` (all row-major) through `gemm::gemm` directly, one thread.
fn gemm_matmul(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n);
    // SAFETY: all three matrices are row-major with the lengths checked above; c is a
    // distinct &mut.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// (m, k, n) of the benchmarked `linear` products.
const LINEAR_SHAPES: &[(usize, usize, usize)] = &[
    (50, 64, 64),
    (50, 64, 192),
    (50, 64, 256),
    (50, 256, 64),
    (50, 64, 384),
    (1, 64, 23_716),
    (64, 64, 23_716),
    (256, 64, 23_716),
];

fn bench_linear(c: &mut Criterion) {
    let isa = Isa::detect();
    let mut group = c.benchmark_group(format!("linear/{}", isa.name()));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let mut rng = Rng::new(1);
    for &(m, k, n) in LINEAR_SHAPES {
        let x = rng.normal_vec(m * k, 1.0);
        let w = rng.normal_vec(n * k, 0.1);
        let mut y = vec![0.0f32; m * n];
        let flops = 2.0 * (m * k * n) as f64;
        let shape = format!("{m}x{k}x{n}");
        let path = if linear::prefers_gemm(m, k, n) {
            "gemm"
        } else {
            "small"
        };
        println!("linear/{isa}/chosen/{shape} runs {path}");
        group.throughput(Throughput::Elements(flops as u64));

        print_gflops(&format!("linear/{isa}/small/{shape}"), flops, || {
            linear::linear_isa(isa, &x, &w, None, &mut y, m, k, n)
        });
        group.bench_with_input(BenchmarkId::new("small", &shape), &m, |bch, _| {
            bch.iter(|| {
                linear::linear_isa(isa, black_box(&x), black_box(&w), None, &mut y, m, k, n)
            })
        });
        print_gflops(&format!("linear/{isa}/chosen/{shape}"), flops, || {
            linear::linear(&x, &w, None, &mut y, m, k, n)
        });
        group.bench_with_input(BenchmarkId::new("chosen", &shape), &m, |bch, _| {
            bch.iter(|| linear::linear(black_box(&x), black_box(&w), None, &mut y, m, k, n))
        });
        if n > 10_000 {
            // The catalog scan's kernels: dot tiles for one user (`scores_isa`), broadcast
            // tiles for a batch (`scores_batch_isa`), as the engine calls them.
            let scores = |x: &[f32], w: &[f32], y: &mut [f32]| {
                if m == 1 {
                    score::scores_isa(isa, x, w, y, m, n, k)
                } else {
                    score::scores_batch_isa(isa, x, w, y, m, n, k)
                }
            };
            print_gflops(&format!("linear/{isa}/scores/{shape}"), flops, || {
                scores(&x, &w, &mut y)
            });
            group.bench_with_input(BenchmarkId::new("scores", &shape), &m, |bch, _| {
                bch.iter(|| scores(black_box(&x), black_box(&w), &mut y))
            });
        }
        let mut pars = vec![("gemm_crate", gemm::Parallelism::None)];
        if m > 1 && n > 10_000 {
            pars.push(("gemm_crate_rayon", gemm::Parallelism::Rayon(0)));
        }
        for (label, par) in pars {
            print_gflops(&format!("linear/{isa}/{label}/{shape}"), flops, || {
                gemm_direct(&x, &w, &mut y, m, k, n, par)
            });
            group.bench_with_input(BenchmarkId::new(label, &shape), &m, |bch, _| {
                bch.iter(|| gemm_direct(black_box(&x), black_box(&w), &mut y, m, k, n, par))
            });
        }
    }

    // Row vector against a large half-precision item table.
    let (k, n) = (64usize, 352_602usize);
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

/// A few rows (the tokens of one short text) through MiniLM's four layer shapes (384 → 1152,
/// 384 → 384, 384 → 1536, 1536 → 384), with the weights of each call taken in turn from 96 MiB
/// of copies so that they come from memory, as in the encoder: `linear` (f32 weights) against
/// `linear_f16`. Throughput in weight bytes read, so criterion's "B/s" is the bandwidth.
fn bench_few_rows(c: &mut Criterion) {
    let isa = Isa::detect();
    let mut group = c.benchmark_group(format!("linear_few_rows/{}", isa.name()));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let mut rng = Rng::new(3);
    let shapes = [(384usize, 1152usize), (384, 384), (384, 1536), (1536, 384)];
    let layer: usize = shapes.iter().map(|(k, n)| k * n).sum();
    let copies = (96 << 20) / (4 * layer);
    let wf = rng.normal_vec(copies * layer, 0.05);
    let w16: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
    for m in [1usize, 4, 8, 20] {
        let xs: Vec<Vec<f32>> = shapes
            .iter()
            .map(|(k, _)| rng.normal_vec(m * k, 1.0))
            .collect();
        let mut y = vec![0.0f32; m * 1536];
        // One call per layer shape, on the next copy of the weights.
        let mut next = 0;
        let mut layer_f32 = |w: &[f32]| {
            let mut at = next * layer;
            next = (next + 1) % copies;
            for ((k, n), x) in shapes.iter().zip(&xs) {
                linear::linear(x, &w[at..at + k * n], None, &mut y[..m * n], m, *k, *n);
                at += k * n;
            }
        };
        group.throughput(Throughput::Bytes((4 * layer) as u64));
        group.bench_function(BenchmarkId::new("f32", m), |b| {
            b.iter(|| layer_f32(black_box(&wf)))
        });
        let mut next = 0;
        let mut layer_f16 = |w: &[f16]| {
            let mut at = next * layer;
            next = (next + 1) % copies;
            for ((k, n), x) in shapes.iter().zip(&xs) {
                linear::linear_f16(x, &w[at..at + k * n], None, &mut y[..m * n], m, *k, *n);
                at += k * n;
            }
        };
        group.throughput(Throughput::Bytes((2 * layer) as u64));
        group.bench_function(BenchmarkId::new("f16", m), |b| {
            b.iter(|| layer_f16(black_box(&w16)))
        });
    }
    group.finish();
}

/// NextItNet's per-tap product (50 rows, 64 → 64 channels) and a wide one.
fn bench_matmul(c: &mut Criterion) {
    let isa = Isa::detect();
    let mut group = c.benchmark_group(format!("matmul/{}", isa.name()));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let mut rng = Rng::new(2);
    // The last shape is a training one: the input gradient dY·W of a text tower's 384-wide
    // projection over a batch's tokens (about 16k rows), where the trainer takes `gemm`
    // (`seqrec_trainer::nn::linear::GEMM_ROWS`).
    for (m, k, n) in [
        (50usize, 64usize, 64usize),
        (50, 64, 1024),
        (16384, 384, 384),
    ] {
        let a = rng.normal_vec(m * k, 1.0);
        let b = rng.normal_vec(k * n, 0.1);
        let mut out = vec![0.0f32; m * n];
        let flops = 2.0 * (m * k * n) as f64;
        let shape = format!("{m}x{k}x{n}");
        group.throughput(Throughput::Elements(flops as u64));
        print_gflops(&format!("matmul/{isa}/small/{shape}"), flops, || {
            linear::matmul_isa(isa, &a, &b, &mut out, m, k, n, false)
        });
        group.bench_with_input(BenchmarkId::new("small", &shape), &m, |bch, _| {
            bch.iter(|| {
                linear::matmul_isa(isa, black_box(&a), black_box(&b), &mut out, m, k, n, false)
            })
        });
        print_gflops(&format!("matmul/{isa}/chosen/{shape}"), flops, || {
            linear::matmul(&a, &b, &mut out, m, k, n, false)
        });
        group.bench_with_input(BenchmarkId::new("chosen", &shape), &m, |bch, _| {
            bch.iter(|| linear::matmul(black_box(&a), black_box(&b), &mut out, m, k, n, false))
        });
        print_gflops(&format!("matmul/{isa}/gemm_crate/{shape}"), flops, || {
            gemm_matmul(&a, &b, &mut out, m, k, n)
        });
        group.bench_with_input(BenchmarkId::new("gemm_crate", &shape), &m, |bch, _| {
            bch.iter(|| gemm_matmul(black_box(&a), black_box(&b), &mut out, m, k, n))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_linear, bench_few_rows, bench_matmul);
criterion_main!(benches);
