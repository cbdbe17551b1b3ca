//! The CUDA backend against the CPU backend: every kernel through the backend's methods over
//! awkward sizes (1, 3, 17, 63, 65, 257, ...), every architecture's scores, top-k, batches and
//! sessions, the item table storages, the text encoder and PDiT.
//!
//! Needs a GPU: without one (no libcuda, no NVRTC, no device) every test prints "skipped" and
//! passes, unless `SEQREC_REQUIRE_GPU` is set (the GPU check script sets it), in which case a
//! missing GPU fails. Tolerances: gathers are exact; element-wise operations 1e-5·(1 + |x|)
//! (the activations' approximations differ); products, norms, attention, GRU and convolutions
//! 1e-4·(1 + |x|) (f32 sums in another order); model scores 1e-4 relative; top-k lists equal up
//! to items whose scores tie within that tolerance.
#![cfg(feature = "cuda")]

use seqrec_engine::backend::{
    At, Backend, BlockScratch, KvCache, Mask, MhaShape, Scale, SelfMask, Src,
};
use seqrec_engine::blocks::{
    Activation, Affine, CaserConvs, CausalConv, Embedding, GruLayer, ItemTable, LayerNorm, Linear,
};
use seqrec_engine::weights::{DType, Tensor, WeightFile};
use seqrec_engine::{Config, Cpu, Cuda, LoadOptions, Model, Query, Scored};
use seqrec_kernels::testing::Rng;
use seqrec_tests::{
    assert_close, assert_same_sessions, assert_same_topk, every_architecture, random_model_bytes,
    small_config,
};

const CPU: Cpu = Cpu::new();
const SIZES: [usize; 7] = [1, 3, 17, 63, 65, 257, 1000];

/// The GPU, or `None` (after printing why) where none can be used.
fn gpu() -> Option<Cuda> {
    if !Cuda::available() {
        assert!(
            std::env::var_os("SEQREC_REQUIRE_GPU").is_none(),
            "SEQREC_REQUIRE_GPU is set but no CUDA device can be used (driver, NVRTC or device \
             missing)"
        );
        println!("skipped: no CUDA device (libcuda, libnvrtc and a GPU are needed)");
        return None;
    }
    Some(Cuda::new(0).expect("a CUDA device is available"))
}

fn tensor(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

fn to_buf<B: Backend>(be: &B, v: &[f32]) -> B::Buf {
    let mut b = B::Buf::default();
    be.write(v, &mut b, 0).unwrap();
    b
}

fn host<B: Backend>(be: &B, b: &B::Buf, n: usize) -> Vec<f32> {
    let mut v = vec![0.0; n];
    be.read(b, 0, &mut v).unwrap();
    v
}

#[test]
fn element_wise_operations_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(1);
    for &cols in &SIZES {
        let rows = 5;
        let src = rng.normal_vec(rows * 2 * cols, 1.0);
        let dst0 = rng.normal_vec(rows * 3 * cols, 1.0);
        let factors: Vec<f32> = rng.normal_vec(rows, 1.0);
        macro_rules! on {
            ($be:expr) => {{
                let be = $be;
                let s = to_buf(be, &src);
                let mut d = to_buf(be, &dst0);
                let (from, to) = (At::strided(cols / 2, 2 * cols), At::strided(1, 3 * cols));
                be.copy(Src::Buf(&s), from, &mut d, to, rows, cols).unwrap();
                be.axpy(
                    Src::Buf(&s),
                    At::repeat(3),
                    Scale::All(0.5),
                    &mut d,
                    to,
                    rows,
                    cols,
                )
                .unwrap();
                be.axpy(
                    Src::Buf(&s),
                    from,
                    Scale::Rows(&factors),
                    &mut d,
                    At::rows(0, 3 * cols),
                    rows,
                    cols,
                )
                .unwrap();
                be.mul(
                    Src::Buf(&s),
                    from,
                    1.0,
                    &mut d,
                    At::rows(1, cols),
                    rows,
                    cols,
                )
                .unwrap();
                be.fill(
                    &mut d,
                    At::strided(2 * cols, 3 * cols),
                    rows,
                    cols / 2,
                    -2.5,
                )
                .unwrap();
                be.activate(Activation::Gelu, &mut d, 0..cols).unwrap();
                be.activate(Activation::GeluTanh, &mut d, cols..2 * cols)
                    .unwrap();
                be.activate(Activation::Silu, &mut d, 2 * cols..3 * cols)
                    .unwrap();
                be.activate(Activation::Sigmoid, &mut d, 3 * cols..4 * cols)
                    .unwrap();
                be.activate(Activation::Tanh, &mut d, 4 * cols..5 * cols)
                    .unwrap();
                be.activate(Activation::Relu, &mut d, 5 * cols..rows * 3 * cols)
                    .unwrap();
                host(be, &d, rows * 3 * cols)
            }};
        }
        let want = on!(&CPU);
        let got = on!(&g);
        // The activations are the CPU's SIMD approximations and CUDA's expf/erff/tanhf.
        assert_close(&format!("element-wise, {cols} columns"), &want, &got, 1e-5);
    }
}

#[test]
fn softmax_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(2);
    for &cols in &SIZES {
        let rows = 3;
        let x = rng.normal_vec(rows * cols, 3.0);
        let mut want = x.clone();
        seqrec_kernels::cpu::softmax::softmax_rows(&mut want, rows, cols);
        let mut b = to_buf(&g, &x);
        g.softmax_rows(&mut b, rows, cols).unwrap();
        assert_close("softmax", &want, &host(&g, &b, rows * cols), 1e-5);
    }
}

fn embedding<B: Backend>(be: &B, t: &Tensor) -> Embedding<B> {
    Embedding {
        table: be.upload(t).unwrap(),
        rows: t.shape()[0],
        dim: t.shape()[1],
    }
}

#[test]
fn gathers_are_exact() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(3);
    for &dim in &SIZES {
        let table = tensor(&[40, dim], rng.normal_vec(40 * dim, 1.0));
        let pos = tensor(&[12, dim], rng.normal_vec(12 * dim, 1.0));
        let ids = [3u32, 0, 39, 7, 7, 12, 1];
        let lens = [3usize, 4];
        macro_rules! on {
            ($be:expr) => {{
                let be = $be;
                let (t, p) = (embedding(be, &table), embedding(be, &pos));
                let mut out = Default::default();
                be.gather(&t, &ids, &mut out).unwrap();
                let mut v = host(be, &out, ids.len() * dim);
                be.embedding(&t, &ids, Some((&p, 5)), &mut out).unwrap();
                v.extend(host(be, &out, ids.len() * dim));
                be.embedding_seqs(&t, &ids, &lens, Some(&p), &mut out)
                    .unwrap();
                v.extend(host(be, &out, ids.len() * dim));
                assert!(be.gather(&t, &[40], &mut out).is_err());
                v
            }};
        }
        assert_eq!(on!(&CPU), on!(&g), "gathers, width {dim}");
    }
}

fn linear<B: Backend>(be: &B, w: &Tensor, b: Option<&Tensor>, dtype: DType) -> Linear<B> {
    Linear {
        w: be.upload_weight(w, dtype).unwrap(),
        b: b.map(|b| be.upload(b).unwrap()),
        in_dim: w.shape()[1],
        out_dim: w.shape()[0],
    }
}

#[test]
fn linear_layers_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(4);
    let shapes = [
        (1, 1, 1),
        (3, 17, 63),
        (8, 65, 3),
        (9, 63, 65),
        (17, 257, 33),
        (65, 64, 257),
    ];
    for (rows, k, n) in shapes {
        let w = tensor(&[n, k], rng.normal_vec(n * k, 0.3));
        let b = tensor(&[n], rng.normal_vec(n, 0.3));
        let x = rng.normal_vec(rows * k, 1.0);
        for dtype in [DType::F32, DType::F16, DType::I16] {
            for (act, bias) in [(Activation::Identity, true), (Activation::Gelu, false)] {
                let bias = bias.then_some(&b);
                macro_rules! on {
                    ($be:expr) => {{
                        let be = $be;
                        let lin = linear(be, &w, bias, dtype);
                        let mut out = Default::default();
                        be.linear(&lin, &to_buf(be, &x), rows, act, &mut out)
                            .unwrap();
                        host(be, &out, rows * n)
                    }};
                }
                let what = format!("linear {rows}×{k}→{n} {dtype} {act:?}");
                assert_close(&what, &on!(&CPU), &on!(&g), 1e-4);
            }
        }
    }
}

fn layer_norm<B: Backend>(be: &B, g: &Tensor, b: &Tensor, affine: bool) -> LayerNorm<B> {
    LayerNorm {
        affine: affine.then(|| Affine {
            gamma: be.upload(g).unwrap(),
            beta: be.upload(b).unwrap(),
        }),
        dim: g.len(),
        eps: 1e-8,
    }
}

#[test]
fn norms_and_modulation_match_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(5);
    for &dim in &SIZES {
        let rows = 7;
        let x = rng.normal_vec(rows * dim, 2.0);
        let r = rng.normal_vec(rows * dim, 1.0);
        let gm = tensor(&[dim], rng.normal_vec(dim, 1.0));
        let bt = tensor(&[dim], rng.normal_vec(dim, 1.0));
        let cond = rng.normal_vec(4 * dim * 3, 0.5);
        macro_rules! on {
            ($be:expr) => {{
                let be = $be;
                let mut v = Vec::new();
                for affine in [true, false] {
                    let ln = layer_norm(be, &gm, &bt, affine);
                    let mut xb = to_buf(be, &x);
                    be.layer_norm(&ln, &mut xb, 2..rows).unwrap();
                    v.extend(host(be, &xb, rows * dim));
                    let mut out = Default::default();
                    be.add_layer_norm(&ln, &to_buf(be, &x), &to_buf(be, &r), rows, &mut out)
                        .unwrap();
                    v.extend(host(be, &out, rows * dim));
                }
                // adaLN: groups of 3 rows, shift and scale rows interleaved in `cond`.
                let (cb, mut xb, mut work) =
                    (to_buf(be, &cond), to_buf(be, &x), Default::default());
                let (shift, scale) = (At::strided(0, 2 * dim), At::strided(dim, 2 * dim));
                be.modulate(
                    &mut xb,
                    rows,
                    dim,
                    1e-6,
                    3,
                    (&cb, shift),
                    (&cb, scale),
                    &mut work,
                )
                .unwrap();
                v.extend(host(be, &xb, rows * dim));
                let mut y = to_buf(be, &r);
                be.gated_add(&mut xb, &mut y, rows, dim, 2, (&cb, At::strided(dim, dim)))
                    .unwrap();
                v.extend(host(be, &xb, rows * dim));
                v
            }};
        }
        assert_close(&format!("norms, width {dim}"), &on!(&CPU), &on!(&gpu), 1e-4);
    }
}

#[test]
fn attention_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(6);
    for (lq, lk, heads, hd) in [
        (1, 1, 1, 1),
        (3, 17, 2, 8),
        (17, 17, 4, 16),
        (1, 65, 2, 32),
        (63, 63, 1, 3),
    ] {
        let h = heads * hd;
        // A fused [lk, 3H] projection: queries, keys and values as its column blocks.
        let qkv = rng.normal_vec(lk.max(lq) * 3 * h, 1.0);
        let valid: Vec<bool> = (0..lk).map(|j| j % 3 != 1).collect();
        let masks = [
            Mask::None,
            Mask::Causal { q_offset: lk - lq },
            Mask::Causal { q_offset: 0 },
            Mask::KeyPadding(&valid),
        ];
        for mask in masks {
            macro_rules! on {
                ($be:expr) => {{
                    let be = $be;
                    let p = to_buf(be, &qkv);
                    let (mut out, mut work) = (Default::default(), Default::default());
                    let w = 3 * h;
                    be.mha(
                        MhaShape {
                            lq,
                            lk,
                            n_heads: heads,
                            head_dim: hd,
                        },
                        (&p, At::strided(0, w)),
                        (&p, At::strided(h, w)),
                        (&p, At::strided(2 * h, w)),
                        mask,
                        (&mut out, At::strided(h, 2 * h)),
                        &mut work,
                    )
                    .unwrap();
                    host(be, &out, lq * 2 * h)
                }};
            }
            let what = format!("attention lq {lq} lk {lk} heads {heads}×{hd} {mask:?}");
            assert_close(&what, &on!(&CPU), &on!(&g), 1e-4);
        }
    }
}

#[test]
fn the_attention_block_and_its_decode_step_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let bytes = random_model_bytes(&small_config("sasrec", 20, 9), 3, 0.3);
    let file = WeightFile::from_bytes(&bytes).unwrap();
    let prefix = "trm_encoder.layer.0.multi_head_attention";
    let x = Rng::new(7).normal_vec(9 * 16, 1.0);
    macro_rules! on {
        ($be:expr) => {{
            let be = $be;
            let mut ld = seqrec_engine::weights::TensorLoader::new(&file);
            let blk =
                seqrec_engine::blocks::AttentionBlock::load(be, &mut ld, prefix, 16, 2, 1e-12)
                    .unwrap();
            let mut tmp = BlockScratch::default();
            let mut cache = KvCache::new(be, 9, 16).unwrap();
            let mut out = Default::default();
            let mask = seqrec_engine::backend::SelfMask::Causal;
            be.attention(
                &blk,
                &to_buf(be, &x[..8 * 16]),
                8,
                0,
                0,
                mask,
                &mut cache,
                &mut tmp,
                &mut out,
            )
            .unwrap();
            let mut v = host(be, &out, 8 * 16);
            // One decode step appends position 8 to the cache.
            be.attention(
                &blk,
                &to_buf(be, &x[8 * 16..]),
                1,
                8,
                0,
                mask,
                &mut cache,
                &mut tmp,
                &mut out,
            )
            .unwrap();
            v.extend(host(be, &out, 16));
            v
        }};
    }
    assert_close("attention block", &on!(&CPU), &on!(&g), 1e-4);
}

#[test]
fn batched_attention_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let bytes = random_model_bytes(&small_config("sasrec", 20, 17), 3, 0.3);
    let file = WeightFile::from_bytes(&bytes).unwrap();
    let prefix = "trm_encoder.layer.1.multi_head_attention";
    let lens = [1usize, 3, 17, 5];
    let total: usize = lens.iter().sum();
    let x = Rng::new(13).normal_vec(total * 16, 1.0);
    for last_only in [false, true] {
        for mask in [SelfMask::Causal, SelfMask::All] {
            macro_rules! on {
                ($be:expr) => {{
                    let be = $be;
                    let mut ld = seqrec_engine::weights::TensorLoader::new(&file);
                    let blk = seqrec_engine::blocks::AttentionBlock::load(
                        be, &mut ld, prefix, 16, 2, 1e-12,
                    )
                    .unwrap();
                    let (mut tmp, mut out) = (BlockScratch::default(), Default::default());
                    be.attention_seqs(
                        &blk,
                        &to_buf(be, &x),
                        &lens,
                        last_only,
                        mask,
                        &mut tmp,
                        &mut out,
                    )
                    .unwrap();
                    let rows = if last_only { lens.len() } else { total };
                    host(be, &out, rows * 16)
                }};
            }
            let what = format!("batched attention, last only {last_only}, {mask:?}");
            assert_close(&what, &on!(&CPU), &on!(&g), 1e-4);
        }
    }
}

#[test]
fn gru_layers_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(8);
    for (steps, input, hidden) in [
        (1, 1, 1),
        (3, 17, 3),
        (17, 8, 17),
        (50, 64, 65),
        (5, 3, 257),
    ] {
        let w_ih = tensor(
            &[3 * hidden, input],
            rng.normal_vec(3 * hidden * input, 0.3),
        );
        let w_hh = tensor(
            &[3 * hidden, hidden],
            rng.normal_vec(3 * hidden * hidden, 0.3),
        );
        let b = tensor(&[3 * hidden], rng.normal_vec(3 * hidden, 0.3));
        let x = rng.normal_vec(steps * input, 1.0);
        let h0 = rng.normal_vec(hidden, 0.5);
        for bias in [false, true] {
            macro_rules! on {
                ($be:expr) => {{
                    let be = $be;
                    let layer = GruLayer {
                        w_ih: be.upload(&w_ih).unwrap(),
                        w_hh: be.upload(&w_hh).unwrap(),
                        b_ih: bias.then(|| be.upload(&b).unwrap()),
                        b_hh: bias.then(|| be.upload(&b).unwrap()),
                        input,
                        hidden,
                    };
                    let (mut h, mut s, mut out) =
                        (to_buf(be, &h0), Default::default(), Default::default());
                    be.gru(&layer, &to_buf(be, &x), steps, &mut h, &mut s, &mut out)
                        .unwrap();
                    let mut v = host(be, &out, steps * hidden);
                    v.extend(host(be, &h, hidden));
                    v
                }};
            }
            let what = format!("GRU {steps} steps {input}→{hidden} bias {bias}");
            assert_close(&what, &on!(&CPU), &on!(&g), 1e-4);
        }
    }
}

#[test]
fn convolutions_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(9);
    for (len, c, k, d) in [
        (1, 1, 1, 1),
        (17, 3, 3, 1),
        (17, 17, 3, 2),
        (63, 65, 3, 4),
        (9, 64, 5, 8),
    ] {
        let w = tensor(&[c, c, 1, k], rng.normal_vec(c * c * k, 0.3));
        let b = tensor(&[c], rng.normal_vec(c, 0.3));
        let x = rng.normal_vec(len * c, 1.0);
        macro_rules! on {
            ($be:expr) => {{
                let be = $be;
                let cv = CausalConv {
                    taps: be.upload_conv(&w).unwrap(),
                    bias: be.upload(&b).unwrap(),
                    c_in: c,
                    c_out: c,
                    kernel: k,
                    dilation: d,
                };
                let xb = to_buf(be, &x);
                let mut out = Default::default();
                be.causal_conv(&cv, &xb, len, 0, &mut out).unwrap();
                let mut v = host(be, &out, len * c);
                // The streaming step: row len − 1 alone over the same input.
                let mut step = Default::default();
                be.zero(&mut step, len * c).unwrap();
                be.causal_conv(&cv, &xb, len, len - 1, &mut step).unwrap();
                v.extend(host(be, &step, len * c));
                v
            }};
        }
        let what = format!("causal conv len {len} channels {c} k {k} dilation {d}");
        assert_close(&what, &on!(&CPU), &on!(&g), 1e-4);
    }
    for (l, e, nv, nh) in [(1, 1, 1, 1), (5, 17, 4, 16), (9, 64, 4, 3)] {
        let conv_v = tensor(&[nv, 1, l, 1], rng.normal_vec(nv * l, 0.3));
        let bias_v = tensor(&[nv], rng.normal_vec(nv, 0.3));
        let conv_h: Vec<(Tensor, Tensor)> = (1..=l)
            .map(|i| {
                (
                    tensor(&[nh, 1, i, e], rng.normal_vec(nh * i * e, 0.3)),
                    tensor(&[nh], rng.normal_vec(nh, 0.3)),
                )
            })
            .collect();
        let x = rng.normal_vec(l * e, 1.0);
        macro_rules! on {
            ($be:expr) => {{
                let be = $be;
                let blk = CaserConvs {
                    conv_v: be.upload(&conv_v).unwrap(),
                    bias_v: be.upload(&bias_v).unwrap(),
                    conv_h: conv_h
                        .iter()
                        .map(|(w, b)| (be.upload(w).unwrap(), be.upload(b).unwrap()))
                        .collect(),
                    len: l,
                    dim: e,
                    nv,
                    nh,
                };
                let (mut s, mut out) = (Default::default(), Default::default());
                be.caser_convs(&blk, &to_buf(be, &x), &mut s, &mut out)
                    .unwrap();
                host(be, &out, blk.out_dim())
            }};
        }
        assert_close(&format!("Caser L {l} E {e}"), &on!(&CPU), &on!(&g), 1e-4);
    }
}

fn scored(items: &[u32], scores: &[f32]) -> Vec<Scored> {
    items
        .iter()
        .zip(scores)
        .map(|(&item, &score)| Scored { item, score })
        .collect()
}

#[test]
fn catalog_scans_match_the_cpu_for_every_storage() {
    let Some(g) = gpu() else { return };
    let mut rng = Rng::new(10);
    for (n, d) in [
        (2, 1),
        (17, 3),
        (257, 17),
        (1000, 64),
        (5000, 65),
        (40_000, 64),
    ] {
        let mut t = rng.normal_vec(n * d, 0.5);
        // Two identical rows: their tie goes to the lower id.
        if n > 10 {
            let row: Vec<f32> = t[3 * d..4 * d].to_vec();
            t[9 * d..10 * d].copy_from_slice(&row);
        }
        let table = tensor(&[n, d], t);
        let users = 7;
        let h = rng.normal_vec(users * d, 1.0);
        let excludes: Vec<u32> = (0..users as u32)
            .flat_map(|u| [0, u + 1, 2 * u + 5])
            .filter(|&i| (i as usize) < n)
            .collect();
        let mut offsets = vec![0usize];
        for u in 0..users as u32 {
            let c = [0, u + 1, 2 * u + 5]
                .iter()
                .filter(|&&i| (i as usize) < n)
                .count();
            offsets.push(offsets.last().unwrap() + c);
        }
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::I8] {
            let (ti, tg) = (
                ItemTable::new(&CPU, &table, dtype).unwrap(),
                ItemTable::new(&g, &table, dtype).unwrap(),
            );
            let (hc, hg) = (to_buf(&CPU, &h), to_buf(&g, &h));
            let what = format!("{n} items of {d} as {dtype}");
            // Every score.
            let (mut a, mut b) = (vec![0.0; users * n], vec![0.0; users * n]);
            CPU.scores(&ti, &hc, users, &mut a).unwrap();
            g.scores(&tg, &hg, users, &mut b).unwrap();
            assert_close(&format!("{what}: scores"), &a, &b, 1e-4);
            let ids: Vec<u32> = (0..n as u32).rev().step_by(3).collect();
            let (mut a, mut b) = (vec![0.0; ids.len()], vec![0.0; ids.len()]);
            CPU.score_items(&ti, &hc, &ids, &mut a).unwrap();
            g.score_items(&tg, &hg, &ids, &mut b).unwrap();
            assert_close(&format!("{what}: candidates"), &a, &b, 1e-4);
            for k in [1, 10, 100, 129, 300] {
                let (mut sa, mut sb) = (Default::default(), Default::default());
                // One user at a time (row 2), then the whole batch.
                let ex = &excludes[offsets[2]..offsets[3]];
                let (mut ia, mut fa, mut ib, mut fb) =
                    (vec![0; k], vec![0.0; k], vec![0; k], vec![0.0; k]);
                let na = CPU
                    .topk(&ti, &hc, 2, k, ex, &mut sa, &mut ia, &mut fa)
                    .unwrap();
                let nb = g
                    .topk(&tg, &hg, 2, k, ex, &mut sb, &mut ib, &mut fb)
                    .unwrap();
                assert_eq!(na, nb, "{what}: top-{k} count");
                assert_same_topk(
                    &format!("{what}: top-{k}"),
                    &scored(&ia[..na], &fa[..na]),
                    &scored(&ib[..nb], &fb[..nb]),
                );
                let (mut ia, mut fa, mut ca) =
                    (vec![0; users * k], vec![0.0; users * k], vec![0; users]);
                let (mut ib, mut fb, mut cb) =
                    (vec![0; users * k], vec![0.0; users * k], vec![0; users]);
                CPU.topk_rows(
                    &ti, &hc, k, &excludes, &offsets, &mut sa, &mut ia, &mut fa, &mut ca,
                )
                .unwrap();
                g.topk_rows(
                    &tg, &hg, k, &excludes, &offsets, &mut sb, &mut ib, &mut fb, &mut cb,
                )
                .unwrap();
                assert_eq!(ca, cb, "{what}: batched top-{k} counts");
                for r in 0..users {
                    let s = r * k..r * k + ca[r];
                    assert_same_topk(
                        &format!("{what}: batched top-{k}, user {r}"),
                        &scored(&ia[s.clone()], &fa[s.clone()]),
                        &scored(&ib[s.clone()], &fb[s]),
                    );
                }
            }
        }
    }
}

#[test]
fn every_architecture_scores_on_the_gpu_as_on_the_cpu() {
    let Some(g) = gpu() else { return };
    let histories: [&[u32]; 4] = [&[3], &[5, 9, 2], &[1, 2, 3, 4, 5, 6, 7, 8, 9], &[39, 38]];
    for (name, cfg) in every_architecture(40, 6) {
        let bytes = random_model_bytes(&cfg, 11, 0.3);
        for dtype in [DType::F32, DType::BF16, DType::I8] {
            let opts = LoadOptions {
                item_dtype: dtype,
                ..Default::default()
            };
            let cpu = Model::from_bytes(&bytes, &opts).unwrap();
            let gm = Model::from_bytes_on(g.clone(), &bytes, &opts).unwrap();
            assert_eq!(cpu.info(), gm.info(), "{name}");
            let user = cpu.info().n_users.map(|_| 3);
            let (mut wa, mut wb) = (cpu.new_workspace(), gm.new_workspace());
            let n = cpu.info().n_items;
            let queries: Vec<Query<'_>> = histories
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let q = Query::new(h).exclude_history(i % 2 == 0);
                    match user {
                        Some(u) => q.user(u),
                        None => q,
                    }
                })
                .collect();
            for q in &queries {
                let what = format!("{name} {dtype}, history {:?}", q.history);
                let (a, b) = (
                    cpu.topk(q, 10, &mut wa).unwrap(),
                    gm.topk(q, 10, &mut wb).unwrap(),
                );
                assert_same_topk(&what, &a, &b);
                let (mut sa, mut sb) = (vec![0.0; n], vec![0.0; n]);
                cpu.score(q, &mut wa, &mut sa).unwrap();
                gm.score(q, &mut wb, &mut sb).unwrap();
                assert_close(&what, &sa, &sb, 1e-4);
            }
            let a = cpu.topk_batch_sequential(&queries, 5, &mut wa);
            let b = gm.topk_batch_sequential(&queries, 5, &mut wb);
            for (x, y) in a.iter().zip(&b) {
                assert_same_topk(
                    &format!("{name} batch"),
                    x.as_ref().unwrap(),
                    y.as_ref().unwrap(),
                );
            }
            // Sessions, their state on the device: pushes, a boundary, more pushes.
            assert_same_sessions(&format!("{name} {dtype}"), &cpu, &gm, user);
        }
    }
}

#[test]
fn the_text_encoder_runs_on_the_gpu() {
    use seqrec_engine::text::{Bert, BertWorkspace};
    let Some(g) = gpu() else { return };
    let (cfg, file) = seqrec_tests::small_bert(12);
    let ids = [2u32, 7, 9, 3, 2, 11, 4, 3, 8];
    let lens = [4usize, 5];
    for dtype in [DType::F32, DType::F16, DType::I16] {
        let cpu = Bert::load_on(&CPU, &file, cfg.clone(), dtype).unwrap();
        let gb = Bert::load_on(&g, &file, cfg.clone(), dtype).unwrap();
        let mut wa = BertWorkspace::default();
        let want =
            cpu.forward(&CPU, &ids, None, &lens, &mut wa).unwrap()[..ids.len() * 16].to_vec();
        let mut wb = BertWorkspace::default();
        let out = gb.forward(&g, &ids, None, &lens, &mut wb).unwrap();
        assert_close(
            &format!("BERT {dtype}"),
            &want,
            &host(&g, out, ids.len() * 16),
            1e-4,
        );
    }
}

#[test]
fn pdit_runs_on_the_gpu() {
    use seqrec_engine::pdit::{NoiseSource, Pdit, PditWorkspace};
    let Some(g) = gpu() else { return };
    let cfg = Config::from_json(
        r#"{"model":"pdit","variant":"full","latent_dim":8,"cond_dim":6,"hidden_size":12,
            "num_tokens":4,"num_heads":3,"depth_gen":2,"depth_tem":2,"mlp_ratio":2.0,
            "max_hist_len":5,"num_timesteps":50,"beta_start":0.0001,"beta_end":0.02,
            "learn_sigma":true,"latent_scale":2.0,"freq_embed_size":10,"tem_self_attn":true}"#,
    )
    .unwrap();
    let bytes = seqrec_engine::testing::random_pdit_bytes(&cfg, 3, 0.4).unwrap();
    let file = WeightFile::from_bytes(&bytes).unwrap();
    let cpu = Pdit::from_weight_file(CPU, &file, None).unwrap();
    let gp = Pdit::from_weight_file(g.clone(), &file, None).unwrap();
    let mut rng = Rng::new(5);
    let (z, p, hist) = (
        rng.normal_vec(16, 1.0),
        rng.normal_vec(12, 1.0),
        rng.normal_vec(64, 1.0),
    );
    let lens = [3usize, 5];
    let h = Some((&hist[..], &lens[..]));
    let (mut a, mut b) = (vec![0.0; 32], vec![0.0; 32]);
    let (mut wa, mut wb) = (PditWorkspace::default(), PditWorkspace::default());
    cpu.forward(&z, &[7, 31], Some(&p), h, &mut wa, &mut a)
        .unwrap();
    gp.forward(&z, &[7, 31], Some(&p), h, &mut wb, &mut b)
        .unwrap();
    assert_close("PDiT forward", &a, &b, 1e-4);
    let chain = cpu.respaced(10).unwrap();
    let (mut za, mut zb) = (vec![0.0; 16], vec![0.0; 16]);
    cpu.sample(
        &chain,
        2,
        Some(&p),
        h,
        NoiseSource::seed(9),
        &mut wa,
        &mut za,
    )
    .unwrap();
    gp.sample(
        &chain,
        2,
        Some(&p),
        h,
        NoiseSource::seed(9),
        &mut wb,
        &mut zb,
    )
    .unwrap();
    assert_close("PDiT sample", &za, &zb, 1e-3);
}

#[test]
fn asking_for_a_missing_device_is_an_error_not_a_panic() {
    // Ordinal 4096 exists nowhere; without CUDA the same call reports the missing library.
    let err = Cuda::new(4096).unwrap_err();
    assert!(matches!(err, seqrec_engine::Error::Device(_)), "{err}");
    println!("{err}");
}
