//! Multi-head attention at the shapes the engine serves: SASRec causal self-attention
//! (L = 50, H = 64, 2 heads), single-token decoding against a 50-row KV cache, and a BERT-like
//! bidirectional layer (L = 32, H = 384, 12 heads, padding mask). q, k and v are the column
//! blocks of one fused `[L, 3H]` projection, as the engine passes them.
//!
//! Throughput is counted in flops: 4·H per visible (query, key) pair (the q·k and p·v
//! multiply-adds).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use seqrec_kernels::Isa;
use seqrec_kernels::cpu::attention::{AttentionShape, AttnMask, attention, attention_scratch_len};
use seqrec_kernels::testing::Rng;
use std::hint::black_box;
use std::time::Duration;

struct Bench {
    name: &'static str,
    l: usize,
    lq: usize,
    n_heads: usize,
    head_dim: usize,
    mask: AttnMask,
    padded: usize,
}

fn visible_pairs(b: &Bench) -> u64 {
    (0..b.lq)
        .map(|i| match b.mask {
            AttnMask::None => (b.l - b.padded) as u64,
            AttnMask::Causal { q_offset } => (q_offset + i + 1).min(b.l) as u64,
        })
        .sum()
}

fn bench_attention(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("attention/{}", Isa::detect().name()));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let benches = [
        Bench {
            name: "sasrec_causal_L50_H64_h2",
            l: 50,
            lq: 50,
            n_heads: 2,
            head_dim: 32,
            mask: AttnMask::Causal { q_offset: 0 },
            padded: 0,
        },
        Bench {
            name: "decode_lq1_lk50_H64_h2",
            l: 50,
            lq: 1,
            n_heads: 2,
            head_dim: 32,
            mask: AttnMask::Causal { q_offset: 49 },
            padded: 0,
        },
        Bench {
            name: "bert_L32_H384_h12_padmask",
            l: 32,
            lq: 32,
            n_heads: 12,
            head_dim: 32,
            mask: AttnMask::None,
            padded: 4,
        },
    ];
    let mut rng = Rng::new(1);
    for b in &benches {
        let h = b.n_heads * b.head_dim;
        let stride = 3 * h;
        let qkv = rng.normal_vec(b.l * stride, 1.0);
        let valid: Vec<bool> = (0..b.l).map(|j| j < b.l - b.padded).collect();
        let key_valid = (b.padded > 0).then_some(&valid[..]);
        let shape = AttentionShape {
            lq: b.lq,
            lk: b.l,
            n_heads: b.n_heads,
            head_dim: b.head_dim,
            q_stride: stride,
            kv_stride: stride,
            out_stride: h,
        };
        // The query rows are the last lq rows of the projection.
        let q = &qkv[(b.l - b.lq) * stride..];
        let (k, v) = (&qkv[h..], &qkv[2 * h..]);
        let mut out = vec![0.0f32; b.lq * h];
        let mut scratch = vec![0.0f32; attention_scratch_len(&shape)];
        let scale = 1.0 / (b.head_dim as f32).sqrt();
        group.throughput(Throughput::Elements(4 * h as u64 * visible_pairs(b)));
        group.bench_function(b.name, |bencher| {
            bencher.iter(|| {
                attention(
                    black_box(&shape),
                    black_box(q),
                    black_box(k),
                    black_box(v),
                    b.mask,
                    key_valid,
                    scale,
                    &mut out,
                    &mut scratch,
                );
                black_box(&out);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_attention);
criterion_main!(benches);
