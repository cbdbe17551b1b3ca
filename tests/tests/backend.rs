//! A second backend, written here as a backend author would start one: it implements only the
//! required core of `Backend` (each method forwarding to the CPU backend) and counts the calls.
//! Every other block (embeddings with positions, the attention and feed-forward sublayers,
//! NextItNet's residual blocks, cross-attention, adaLN modulation, batched top-k, ...) comes
//! from the trait's compositions. Every architecture and the text encoder then run on it and
//! give the CPU's results: the models go only through the trait, the core is enough, and the
//! compositions agree with the CPU's fused blocks.

use seqrec_engine::backend::{
    At, Backend, BlockScratch, KvCache, Mask, MhaShape, Scale, SelfMask, Src,
};
use seqrec_engine::blocks::{
    Activation, Affine, CaserConvs, CausalConv, CrossAttention, Embedding, GruLayer, ItemTable,
    LayerNorm, Linear,
};
use seqrec_engine::cpu::{CpuScratch, CpuWeight};
use seqrec_engine::text::{Bert, BertWorkspace};
use seqrec_engine::weights::{DType, Tensor, TensorLoader, WeightFile, serialize};
use seqrec_engine::{Config, Cpu, LoadOptions, Model, Query, Result};
use seqrec_kernels::testing::Rng;
use seqrec_tests::{
    assert_close, assert_same_sessions, assert_same_topk, every_architecture, random_model_bytes,
    small_config,
};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

/// The counting backend: CPU storage, its own activation buffer type.
#[derive(Debug, Default)]
struct Counting {
    calls: Mutex<BTreeMap<&'static str, usize>>,
}

/// An activation buffer of the counting backend (a type of its own: models cannot reach its
/// values but through the trait).
#[derive(Debug, Default)]
struct Buf(Vec<f32>);

impl Counting {
    fn count(&self, op: &'static str) {
        *self.calls.lock().unwrap().entry(op).or_default() += 1;
    }

    fn calls(&self, op: &str) -> usize {
        self.calls.lock().unwrap().get(op).copied().unwrap_or(0)
    }
}

const CPU: Cpu = Cpu::new();

fn src(s: Src<'_, Counting>) -> Src<'_, Cpu> {
    match s {
        Src::Buf(b) => Src::Buf(&b.0),
        Src::Param(p) => Src::Param(p),
    }
}

fn embedding(e: &Embedding<Counting>) -> Embedding<Cpu> {
    Embedding {
        table: e.table.clone(),
        rows: e.rows,
        dim: e.dim,
    }
}

fn linear(l: &Linear<Counting>) -> Linear<Cpu> {
    Linear {
        w: l.w.clone(),
        b: l.b.clone(),
        in_dim: l.in_dim,
        out_dim: l.out_dim,
    }
}

fn layer_norm(ln: &LayerNorm<Counting>) -> LayerNorm<Cpu> {
    LayerNorm {
        affine: ln.affine.as_ref().map(|a| Affine {
            gamma: a.gamma.clone(),
            beta: a.beta.clone(),
        }),
        dim: ln.dim,
        eps: ln.eps,
    }
}

impl Backend for Counting {
    type Param = Tensor;
    type Weight = CpuWeight;
    type Items = ItemTable<Cpu>;
    type Buf = Buf;
    type Scratch = CpuScratch;

    fn name(&self) -> &'static str {
        "counting"
    }
    fn upload(&self, t: &Tensor) -> Result<Tensor> {
        self.count("upload");
        CPU.upload(t)
    }
    fn upload_weight(&self, w: &Tensor, dtype: DType) -> Result<CpuWeight> {
        self.count("upload_weight");
        CPU.upload_weight(w, dtype)
    }
    fn upload_items(&self, table: &Tensor, dtype: DType) -> Result<ItemTable<Cpu>> {
        self.count("upload_items");
        ItemTable::new(&CPU, table, dtype)
    }
    // The convolution below is the CPU's, which reads its own filter layout.
    fn upload_conv(&self, w: &Tensor) -> Result<Tensor> {
        CPU.upload_conv(w)
    }
    fn ensure(&self, buf: &mut Buf, len: usize) -> Result<()> {
        CPU.ensure(&mut buf.0, len)
    }
    fn write(&self, s: &[f32], dst: &mut Buf, offset: usize) -> Result<()> {
        self.count("write");
        CPU.write(s, &mut dst.0, offset)
    }
    fn read(&self, s: &Buf, offset: usize, dst: &mut [f32]) -> Result<()> {
        self.count("read");
        CPU.read(&s.0, offset, dst)
    }
    fn copy(&self, s: Src<'_, Self>, f: At, d: &mut Buf, t: At, r: usize, c: usize) -> Result<()> {
        self.count("copy");
        CPU.copy(src(s), f, &mut d.0, t, r, c)
    }
    fn fill(&self, d: &mut Buf, t: At, r: usize, c: usize, v: f32) -> Result<()> {
        self.count("fill");
        CPU.fill(&mut d.0, t, r, c, v)
    }
    fn axpy(
        &self,
        s: Src<'_, Self>,
        f: At,
        k: Scale<'_>,
        d: &mut Buf,
        t: At,
        r: usize,
        c: usize,
    ) -> Result<()> {
        self.count("axpy");
        CPU.axpy(src(s), f, k, &mut d.0, t, r, c)
    }
    fn mul(
        &self,
        s: Src<'_, Self>,
        f: At,
        o: f32,
        d: &mut Buf,
        t: At,
        r: usize,
        c: usize,
    ) -> Result<()> {
        self.count("mul");
        CPU.mul(src(s), f, o, &mut d.0, t, r, c)
    }
    fn activate(&self, a: Activation, x: &mut Buf, range: Range<usize>) -> Result<()> {
        self.count("activate");
        CPU.activate(a, &mut x.0, range)
    }
    fn gather(&self, table: &Embedding<Self>, ids: &[u32], out: &mut Buf) -> Result<()> {
        self.count("gather");
        CPU.gather(&embedding(table), ids, &mut out.0)
    }
    fn linear(
        &self,
        lin: &Linear<Self>,
        x: &Buf,
        rows: usize,
        a: Activation,
        out: &mut Buf,
    ) -> Result<()> {
        self.count("linear");
        CPU.linear(&linear(lin), &x.0, rows, a, &mut out.0)
    }
    fn layer_norm(&self, ln: &LayerNorm<Self>, x: &mut Buf, rows: Range<usize>) -> Result<()> {
        self.count("layer_norm");
        CPU.layer_norm(&layer_norm(ln), &mut x.0, rows)
    }
    fn mha(
        &self,
        shape: MhaShape,
        q: (&Buf, At),
        k: (&Buf, At),
        v: (&Buf, At),
        mask: Mask<'_>,
        out: (&mut Buf, At),
        work: &mut Buf,
    ) -> Result<()> {
        self.count("mha");
        let (q, k, v) = ((&q.0.0, q.1), (&k.0.0, k.1), (&v.0.0, v.1));
        CPU.mha(shape, q, k, v, mask, (&mut out.0.0, out.1), &mut work.0)
    }
    fn gru(
        &self,
        l: &GruLayer<Self>,
        x: &Buf,
        steps: usize,
        h: &mut Buf,
        scratch: &mut Buf,
        out: &mut Buf,
    ) -> Result<()> {
        self.count("gru");
        let l = GruLayer::<Cpu> {
            w_ih: l.w_ih.clone(),
            w_hh: l.w_hh.clone(),
            b_ih: l.b_ih.clone(),
            b_hh: l.b_hh.clone(),
            input: l.input,
            hidden: l.hidden,
        };
        CPU.gru(&l, &x.0, steps, &mut h.0, &mut scratch.0, &mut out.0)
    }
    fn causal_conv(
        &self,
        cv: &CausalConv<Self>,
        x: &Buf,
        len: usize,
        from: usize,
        out: &mut Buf,
    ) -> Result<()> {
        self.count("causal_conv");
        let cv = CausalConv::<Cpu> {
            taps: cv.taps.clone(),
            bias: cv.bias.clone(),
            c_in: cv.c_in,
            c_out: cv.c_out,
            kernel: cv.kernel,
            dilation: cv.dilation,
        };
        CPU.causal_conv(&cv, &x.0, len, from, &mut out.0)
    }
    fn caser_convs(
        &self,
        b: &CaserConvs<Self>,
        x: &Buf,
        scratch: &mut Buf,
        out: &mut Buf,
    ) -> Result<()> {
        self.count("caser_convs");
        let b = CaserConvs::<Cpu> {
            conv_v: b.conv_v.clone(),
            bias_v: b.bias_v.clone(),
            conv_h: b.conv_h.clone(),
            len: b.len,
            dim: b.dim,
            nv: b.nv,
            nh: b.nh,
        };
        CPU.caser_convs(&b, &x.0, &mut scratch.0, &mut out.0)
    }
    fn scores(&self, t: &ItemTable<Self>, h: &Buf, rows: usize, out: &mut [f32]) -> Result<()> {
        self.count("scores");
        CPU.scores(&t.data, &h.0, rows, out)
    }
    fn score_items(
        &self,
        t: &ItemTable<Self>,
        h: &Buf,
        ids: &[u32],
        out: &mut [f32],
    ) -> Result<()> {
        self.count("score_items");
        CPU.score_items(&t.data, &h.0, ids, out)
    }
    fn topk(
        &self,
        t: &ItemTable<Self>,
        h: &Buf,
        row: usize,
        k: usize,
        exclude: &[u32],
        scratch: &mut CpuScratch,
        items: &mut [u32],
        scores: &mut [f32],
    ) -> Result<usize> {
        self.count("topk");
        CPU.topk(&t.data, &h.0, row, k, exclude, scratch, items, scores)
    }
}

#[test]
fn every_architecture_runs_on_the_required_core_alone() {
    let histories: [&[u32]; 4] = [&[3], &[5, 9, 2], &[1, 2, 3, 4, 5, 6, 7, 8, 9], &[39, 38]];
    for (name, cfg) in every_architecture(40, 6) {
        let bytes = random_model_bytes(&cfg, 11, 0.3);
        let opts = LoadOptions::default();
        let cpu = Model::from_bytes(&bytes, &opts).unwrap();
        let counting = Model::from_bytes_on(Counting::default(), &bytes, &opts).unwrap();
        assert_eq!(cpu.info(), counting.info(), "{name}");
        let user = cpu.info().n_users.map(|_| 3);
        let (mut ws_a, mut ws_b) = (cpu.new_workspace(), counting.new_workspace());
        let mut knobs = counting.default_objectives();
        if let Some(spec) = knobs.specs().iter().find(|s| !s.is_optional()) {
            knobs
                .set(spec.name, (spec.default + 0.5).min(spec.max))
                .unwrap();
        }
        let knobs_cpu = {
            let mut k = cpu.default_objectives();
            for (name, v) in knobs.iter() {
                k.set(name, v).unwrap();
            }
            k
        };
        let n = cpu.info().n_items;
        for (i, h) in histories.iter().enumerate() {
            let mut q_a = Query::new(h)
                .exclude_history(i % 2 == 0)
                .objectives(&knobs_cpu);
            let mut q_b = Query::new(h).exclude_history(i % 2 == 0).objectives(&knobs);
            if let Some(u) = user {
                (q_a, q_b) = (q_a.user(u), q_b.user(u));
            }
            let what = format!("{name}, history {h:?}");
            let a = cpu.topk(&q_a, 10, &mut ws_a).unwrap();
            let b = counting.topk(&q_b, 10, &mut ws_b).unwrap();
            assert_same_topk(&what, &a, &b);
            let (mut sa, mut sb) = (vec![0.0; n], vec![0.0; n]);
            cpu.score(&q_a, &mut ws_a, &mut sa).unwrap();
            counting.score(&q_b, &mut ws_b, &mut sb).unwrap();
            assert_close(&what, &sa, &sb, 1e-4);
        }
        // Batches (the batched scan's composition: one top-k per row).
        let qs_a: Vec<Query<'_>> = histories
            .iter()
            .map(|h| match user {
                Some(u) => Query::new(h).user(u),
                None => Query::new(h),
            })
            .collect();
        let a = cpu.topk_batch_sequential(&qs_a, 5, &mut ws_a);
        let b = counting.topk_batch_sequential(&qs_a, 5, &mut ws_b);
        for (x, y) in a.iter().zip(&b) {
            assert_same_topk(
                &format!("{name} batch"),
                x.as_ref().unwrap(),
                y.as_ref().unwrap(),
            );
        }
        // Sessions: pushes, a boundary, more pushes.
        assert_same_sessions(&name, &cpu, &counting, user);
        // It ran on the core: products, gathers and the catalog scan went through the trait.
        let c = counting.backend();
        for op in ["linear", "gather", "topk", "scores"] {
            assert!(c.calls(op) > 0, "{name}: no `{op}` call");
        }
    }
}

#[test]
fn attention_models_use_the_composed_sublayers() {
    for arch in ["sasrec", "modt4r", "hdt"] {
        let bytes = random_model_bytes(&small_config(arch, 30, 5), 5, 0.3);
        let m = Model::from_bytes_on(Counting::default(), &bytes, &Default::default()).unwrap();
        let mut ws = m.new_workspace();
        m.topk(&Query::new(&[1, 2, 3]), 3, &mut ws).unwrap();
        let c = m.backend();
        // The composed attention block: Q/K/V product, K/V copies into the cache, the
        // attention core, the residual and the norm.
        assert!(c.calls("mha") > 0 && c.calls("copy") > 0, "{arch}");
        assert!(c.calls("axpy") > 0 && c.calls("layer_norm") > 0, "{arch}");
    }
}

/// A random BERT (4 layers would be slow to check; 2 of width 16) on the counting backend
/// equals the CPU one.
#[test]
fn the_text_encoder_runs_on_the_required_core_alone() {
    let (cfg, file) = seqrec_tests::small_bert(9);
    let ids = [2u32, 7, 9, 3, 2, 11, 4, 3, 8];
    let lens = [4usize, 5];
    let types = [0u32, 0, 1, 1, 0, 1, 0, 0, 1];
    for (dtype, type_ids) in [(DType::F32, None), (DType::I16, Some(&types[..]))] {
        let cpu = Bert::load_with(&file, cfg.clone(), dtype).unwrap();
        let c = Counting::default();
        let counting = Bert::load_on(&c, &file, cfg.clone(), dtype).unwrap();
        let mut ws = BertWorkspace::default();
        let want = cpu
            .forward(&CPU, &ids, type_ids, &lens, &mut ws)
            .unwrap()
            .clone();
        let mut ws = BertWorkspace::<Counting>::default();
        let got = &counting
            .forward(&c, &ids, type_ids, &lens, &mut ws)
            .unwrap()
            .0;
        assert_close(
            &format!("BERT {dtype}"),
            &want[..ids.len() * 16],
            &got[..ids.len() * 16],
            1e-4,
        );
        assert!(
            c.calls("mha") >= 2 * lens.len(),
            "one attention per sequence and layer"
        );
    }
}

/// Cross-attention, adaLN modulation and the timestep embedding (the DiT blocks' operations)
/// against plain f64 loops, on both backends.
#[test]
fn dit_operations_match_plain_loops() {
    let (h, heads, ctx_dim, rows, ctx_rows) = (8, 2, 5, 3, 4);
    let mut rng = Rng::new(17);
    let names = [("x.q", h, h), ("x.kv", 2 * h, ctx_dim), ("x.proj", h, h)];
    let values: Vec<(String, Vec<usize>, Vec<f32>)> = names
        .iter()
        .flat_map(|&(n, o, i)| {
            let w = rng.normal_vec(o * i, 0.5);
            let b = rng.normal_vec(o, 0.5);
            [
                (format!("{n}.weight"), vec![o, i], w),
                (format!("{n}.bias"), vec![o], b),
            ]
        })
        .collect();
    let tensors: Vec<(&str, &[usize], &[f32])> = values
        .iter()
        .map(|(n, s, v)| (n.as_str(), s.as_slice(), v.as_slice()))
        .collect();
    let file = WeightFile::from_bytes(&serialize(&tensors, &[]).unwrap()).unwrap();
    let x = rng.normal_vec(rows * h, 1.0);
    let ctx = rng.normal_vec(ctx_rows * ctx_dim, 1.0);
    let valid = [true, false, true, true];
    let w = |name: &str| &values.iter().find(|(n, ..)| n == name).unwrap().2;
    // Reference: per row and head, softmax over the valid context rows.
    let dense = |x: &[f32], wn: &str, bn: &str, o: usize, i: usize| -> Vec<f64> {
        (0..x.len() / i)
            .flat_map(|r| {
                (0..o).map(move |j| {
                    w(bn)[j] as f64
                        + (0..i)
                            .map(|p| x[r * i + p] as f64 * w(wn)[j * i + p] as f64)
                            .sum::<f64>()
                })
            })
            .collect()
    };
    let q = dense(&x, "x.q.weight", "x.q.bias", h, h);
    let kv = dense(&ctx, "x.kv.weight", "x.kv.bias", 2 * h, ctx_dim);
    let hd = h / heads;
    let mut att = vec![0.0f64; rows * h];
    for r in 0..rows {
        for hh in 0..heads {
            let cols = hh * hd..(hh + 1) * hd;
            let logits: Vec<f64> = (0..ctx_rows)
                .map(|c| {
                    cols.clone()
                        .map(|j| q[r * h + j] * kv[c * 2 * h + j])
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let max = (0..ctx_rows)
                .filter(|&c| valid[c])
                .map(|c| logits[c])
                .fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = (0..ctx_rows)
                .filter(|&c| valid[c])
                .map(|c| (logits[c] - max).exp())
                .sum();
            for j in cols {
                att[r * h + j] = (0..ctx_rows)
                    .filter(|&c| valid[c])
                    .map(|c| (logits[c] - max).exp() / z * kv[c * 2 * h + h + j])
                    .sum();
            }
        }
    }
    let att32: Vec<f32> = att.iter().map(|&v| v as f32).collect();
    let want: Vec<f32> = dense(&att32, "x.proj.weight", "x.proj.bias", h, h)
        .iter()
        .map(|&v| v as f32)
        .collect();
    let check = |got: &[f32], what: &str| assert_close(what, &want, &got[..rows * h], 1e-4);
    // CPU (the composition) and the counting backend (the same composition on its core).
    let mut ld = TensorLoader::new(&file);
    let blk = CrossAttention::load(&CPU, &mut ld, "x", h, ctx_dim, heads).unwrap();
    let (mut tmp, mut out) = (BlockScratch::<Cpu>::default(), Vec::new());
    CPU.cross_attention(
        &blk,
        &x,
        rows,
        &ctx,
        ctx_rows,
        Some(&valid),
        &mut tmp,
        &mut out,
    )
    .unwrap();
    check(&out, "cross-attention on the CPU");
    let c = Counting::default();
    let mut ld = TensorLoader::new(&file);
    let blk = CrossAttention::load(&c, &mut ld, "x", h, ctx_dim, heads).unwrap();
    let mut tmp = BlockScratch::<Counting>::default();
    let mut out = Buf::default();
    let (xb, cb) = (Buf(x.clone()), Buf(ctx.clone()));
    c.cross_attention(
        &blk,
        &xb,
        rows,
        &cb,
        ctx_rows,
        Some(&valid),
        &mut tmp,
        &mut out,
    )
    .unwrap();
    check(&out.0, "cross-attention on the counting backend");

    // adaLN modulation: LN without affine parameters, then x·(1 + scale) + shift, one shift
    // and scale row shared by every token or one per token.
    let (dim, eps) = (7, 1e-6);
    let xs = rng.normal_vec(rows * dim, 2.0);
    let cond = rng.normal_vec(2 * rows * dim, 0.5);
    for per_token in [false, true] {
        let stride = if per_token { 2 * dim } else { 0 };
        let group = if per_token { 1 } else { rows };
        let (shift, scale) = (At::strided(0, stride), At::strided(dim, stride));
        let mut want = vec![0.0f32; rows * dim];
        for r in 0..rows {
            let row = &xs[r * dim..(r + 1) * dim];
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
            for j in 0..dim {
                let xn = (row[j] as f64 - mean) / (var + eps as f64).sqrt();
                let sh = cond[shift.offset + r * stride + j] as f64;
                let sc = cond[scale.offset + r * stride + j] as f64;
                want[r * dim + j] = (xn * (1.0 + sc) + sh) as f32;
            }
        }
        let mut got = xs.clone();
        let mut work = Vec::new();
        CPU.modulate(
            &mut got,
            rows,
            dim,
            eps,
            group,
            (&cond, shift),
            (&cond, scale),
            &mut work,
        )
        .unwrap();
        assert_close(
            &format!("modulate on the CPU ({per_token})"),
            &want,
            &got,
            1e-5,
        );
        let (mut got, cb) = (Buf(xs.clone()), Buf(cond.clone()));
        c.modulate(
            &mut got,
            rows,
            dim,
            eps,
            group,
            (&cb, shift),
            (&cb, scale),
            &mut Buf::default(),
        )
        .unwrap();
        assert_close(
            &format!("modulate composed ({per_token})"),
            &want,
            &got.0,
            1e-5,
        );
    }

    // The timestep embedding: [cos(τ·f), sin(τ·f)], f_i = 10000^(−i/h), a trailing 0 when odd.
    for dim in [8, 9] {
        let tau = 999.0;
        let mut out = Vec::new();
        CPU.timestep_embedding(tau, dim, 10000.0, &mut out, 0)
            .unwrap();
        let half = dim / 2;
        for i in 0..half {
            let f = (-(10000f64.ln()) * i as f64 / half as f64).exp();
            assert!((out[i] as f64 - (tau * f).cos()).abs() < 1e-6);
            assert!((out[half + i] as f64 - (tau * f).sin()).abs() < 1e-6);
        }
        if dim % 2 == 1 {
            assert_eq!(out[dim - 1], 0.0);
        }
    }
}

#[test]
fn a_session_cache_holds_what_the_composed_attention_writes() {
    // The composed attention block appends keys and values to the cache it is given: a
    // session's step over the cache equals the full encode's last row.
    let bytes = random_model_bytes(&small_config("sasrec", 20, 8), 3, 0.3);
    let file = WeightFile::from_bytes(&bytes).unwrap();
    let c = Counting::default();
    let mut ld = TensorLoader::new(&file);
    let prefix = "trm_encoder.layer.0.multi_head_attention";
    let blk =
        seqrec_engine::blocks::AttentionBlock::load(&c, &mut ld, prefix, 16, 2, 1e-12).unwrap();
    let x = Rng::new(4).normal_vec(5 * 16, 1.0);
    let mut tmp = BlockScratch::default();
    let mut cache = KvCache::new(&c, 8, 16).unwrap();
    let mut full = Buf::default();
    let xb = Buf(x.clone());
    c.attention(
        &blk,
        &xb,
        5,
        0,
        0,
        SelfMask::Causal,
        &mut cache,
        &mut tmp,
        &mut full,
    )
    .unwrap();
    let mut cache2 = KvCache::new(&c, 8, 16).unwrap();
    let mut step = Buf::default();
    let head = Buf(x[..4 * 16].to_vec());
    c.attention(
        &blk,
        &head,
        4,
        0,
        3,
        SelfMask::Causal,
        &mut cache2,
        &mut tmp,
        &mut step,
    )
    .unwrap();
    let last = Buf(x[4 * 16..].to_vec());
    c.attention(
        &blk,
        &last,
        1,
        4,
        0,
        SelfMask::Causal,
        &mut cache2,
        &mut tmp,
        &mut step,
    )
    .unwrap();
    assert_eq!(cache2.len, 5);
    assert_close("session step", &full.0[4 * 16..5 * 16], &step.0[..16], 1e-5);
}

/// A small PDiT of `variant` (and `tem_self_attn`).
fn pdit_config(variant: &str, self_attn: bool) -> Config {
    Config::from_json(&format!(
        r#"{{"model":"pdit","variant":"{variant}","latent_dim":8,"cond_dim":6,"hidden_size":12,
            "num_tokens":4,"num_heads":3,"depth_gen":2,"depth_tem":2,"mlp_ratio":2.0,
            "max_hist_len":5,"num_timesteps":50,"beta_start":0.0001,"beta_end":0.02,
            "learn_sigma":true,"latent_scale":2.0,"freq_embed_size":10,
            "tem_self_attn":{self_attn}}}"#
    ))
    .unwrap()
}

/// The DiT blocks' compositions (DiT block, temporal block, final layer, the reverse step) on
/// the core alone give the CPU's (fused modulation and gated residual) outputs and samples.
#[test]
fn pdit_runs_on_the_required_core_alone() {
    use seqrec_engine::pdit::{NoiseSource, Pdit, PditWorkspace};
    for (variant, self_attn) in [("full", false), ("gen", false), ("tem", true)] {
        let cfg = pdit_config(variant, self_attn);
        let bytes = seqrec_engine::testing::random_pdit_bytes(&cfg, 3, 0.4).unwrap();
        let file = WeightFile::from_bytes(&bytes).unwrap();
        let cpu = Pdit::from_weight_file(CPU, &file, None).unwrap();
        let counting = Pdit::from_weight_file(Counting::default(), &file, None).unwrap();
        let mut rng = Rng::new(5);
        // Two samples, histories of 3 and 5 items.
        let (z, p, hist) = (
            rng.normal_vec(2 * 8, 1.0),
            rng.normal_vec(2 * 6, 1.0),
            rng.normal_vec(8 * 8, 1.0),
        );
        let lens = [3usize, 5];
        let (mut a, mut b) = (vec![0.0; 2 * 16], vec![0.0; 2 * 16]);
        let (mut wa, mut wb) = (PditWorkspace::default(), PditWorkspace::default());
        let h = Some((&hist[..], &lens[..]));
        cpu.forward(&z, &[7, 31], Some(&p), h, &mut wa, &mut a)
            .unwrap();
        counting
            .forward(&z, &[7, 31], Some(&p), h, &mut wb, &mut b)
            .unwrap();
        assert_close(&format!("PDiT {variant} forward"), &a, &b, 1e-5);
        // A sample is a batch's row: the second sample alone equals its row of the batch.
        let mut one = vec![0.0; 16];
        let h1 = Some((&hist[3 * 8..], &lens[1..]));
        cpu.forward(&z[8..], &[31], Some(&p[6..]), h1, &mut wa, &mut one)
            .unwrap();
        assert_close(&format!("PDiT {variant} batch row"), &a[16..], &one, 1e-5);
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
        counting
            .sample(
                &chain,
                2,
                Some(&p),
                h,
                NoiseSource::seed(9),
                &mut wb,
                &mut zb,
            )
            .unwrap();
        assert_close(&format!("PDiT {variant} sample"), &za, &zb, 1e-4);
        let c = counting.backend();
        assert!(c.calls("mul") > 0 && c.calls("mha") > 0, "{variant}");
    }
}
