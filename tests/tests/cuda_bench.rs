//! The GPU benchmark against the CPU (`--ignored`; run by `scripts/gpu-check.sh`): SASRec
//! top-10 at batch 1 / 256 / 4096 over 23,716 and 352,602 items with f32, bf16 and int8 item
//! tables; GRU4Rec and NextItNet at batch 1 and 256; the catalog scan's effective bandwidth
//! next to a device-to-device copy. RecBole-default shapes, random weights, histories of 50.
//! One JSON object per line on stdout, also appended to `$SEQREC_BENCH_JSON` when set.
#![cfg(feature = "cuda")]

use seqrec_engine::backend::Backend;
use seqrec_engine::blocks::ItemTable;
use seqrec_engine::testing::{random_model_bytes, recbole_default_config};
use seqrec_engine::weights::{DType, Tensor};
use seqrec_engine::{Cuda, LoadOptions, Model, Query};
use seqrec_kernels::testing::Rng;
use std::io::Write;
use std::time::Instant;

fn emit(line: String) {
    println!("{line}");
    if let Some(path) = std::env::var_os("SEQREC_BENCH_JSON") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("bench output file");
        writeln!(f, "{line}").expect("bench output");
    }
}

fn histories(n_items: usize, count: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| (0..50).map(|_| 1 + rng.below(n_items - 1) as u32).collect())
        .collect()
}

/// Median seconds of `reps` runs of `f` (after one warm-up).
fn median(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

fn bench_model(g: &Cuda, arch: &str, n_items: usize, dtype: DType, batches: &[usize]) {
    let cfg = recbole_default_config(arch, n_items, 1000).unwrap();
    let bytes = random_model_bytes(&cfg, 1, 0.1).unwrap();
    let opts = LoadOptions {
        item_dtype: dtype,
        ..Default::default()
    };
    let cpu = Model::from_bytes(&bytes, &opts).unwrap();
    let gm = Model::from_bytes_on(g.clone(), &bytes, &opts).unwrap();
    let hs = histories(n_items, *batches.iter().max().unwrap(), 7);
    for &batch in batches {
        let qs: Vec<Query<'_>> = hs[..batch].iter().map(|h| Query::new(h)).collect();
        let (gpu_s, cpu_s) = if batch == 1 {
            let (mut wa, mut wb) = (cpu.new_workspace(), gm.new_workspace());
            let c = median(30, || {
                cpu.topk(&qs[0], 10, &mut wa).unwrap();
            });
            let gs = median(50, || {
                gm.topk(&qs[0], 10, &mut wb).unwrap();
            });
            (gs, Some(c))
        } else {
            let mut wb = gm.new_workspace();
            let reps = if batch >= 4096 { 2 } else { 5 };
            let gs = median(reps, || {
                gm.topk_batch_sequential(&qs, 10, &mut wb);
            });
            // The CPU's batch path on every core (skipped at 4096 on the largest catalog).
            let c = (batch * n_items <= 256 * 352_602).then(|| {
                median(2, || {
                    cpu.topk_batch(&qs, 10);
                })
            });
            (gs, c)
        };
        emit(format!(
            r#"{{"bench":"topk","model":"{arch}","items":{n_items},"dtype":"{dtype}","batch":{batch},"gpu_s":{gpu_s:.6e},"cpu_s":{},"gpu_per_s":{:.1}}}"#,
            cpu_s.map_or("null".into(), |c| format!("{c:.6e}")),
            batch as f64 / gpu_s
        ));
    }
}

#[test]
#[ignore = "a benchmark: scripts/gpu-check.sh runs it on a GPU"]
fn gpu_benchmark() {
    if !Cuda::available() {
        println!("skipped: no CUDA device");
        return;
    }
    let g = Cuda::new(0).unwrap();
    emit(format!(
        r#"{{"bench":"device","name":"{}","cc":{},"cpu_threads":{}}}"#,
        g.device_name(),
        g.compute_capability(),
        rayon::current_num_threads()
    ));
    // The scan alone: 352,602 × 64 f32 rows, batches of 1 and 64, against a device copy.
    let (n, d) = (352_602, 64);
    let mut rng = Rng::new(3);
    let table = Tensor::from_vec(vec![n, d], rng.normal_vec(n * d, 0.1)).unwrap();
    let copy = g.copy_bandwidth(n * d * 4, 20).unwrap();
    for dtype in [DType::F32, DType::BF16, DType::I8] {
        let items = ItemTable::new(&g, &table, dtype).unwrap();
        for users in [1usize, 64] {
            let h = rng.normal_vec(users * d, 1.0);
            let mut hb = Default::default();
            g.write(&h, &mut hb, 0).unwrap();
            let offsets: Vec<usize> = (0..=users).map(|_| 0).collect();
            let (mut it, mut sc, mut cn) =
                (vec![0; users * 10], vec![0.0; users * 10], vec![0; users]);
            let mut scratch = Default::default();
            let s = median(20, || {
                g.topk_rows(
                    &items,
                    &hb,
                    10,
                    &[],
                    &offsets,
                    &mut scratch,
                    &mut it,
                    &mut sc,
                    &mut cn,
                )
                .unwrap();
            });
            let bytes = (n * d * dtype.size()) as f64;
            emit(format!(
                r#"{{"bench":"scan","items":{n},"dim":{d},"dtype":"{dtype}","users":{users},"s":{s:.6e},"table_GBps":{:.1},"copy_GBps":{:.1}}}"#,
                bytes / s / 1e9,
                copy / 1e9
            ));
        }
    }
    for n_items in [23_716, 352_602] {
        for dtype in [DType::F32, DType::BF16, DType::I8] {
            bench_model(&g, "sasrec", n_items, dtype, &[1, 256, 4096]);
        }
    }
    for arch in ["gru4rec", "nextitnet"] {
        bench_model(&g, arch, 23_716, DType::F32, &[1, 256]);
    }
}
