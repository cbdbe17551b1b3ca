//! `seqrec bench --kernels [--isa LEVEL ...]`: times each kernel family on the shapes of the
//! shipped models (RecBole-shaped SASRec: d = 64, window 50, inner 256; catalogs of 23,716 and
//! 352,602 items; GRU4Rec's GRU, NextItNet's dilated convolution and Caser's convolutions at
//! RecBole's defaults; a MiniLM-sized text-encoder layer), on one thread, at every instruction-set
//! level this CPU supports (or the levels given), and reports GFLOP/s or GB/s next to the
//! single-thread peak FMA rate measured at the same level. Needs no model file and no source
//! tree.
//!
//! Each figure is the fastest of five samples, each sample repeating the kernel for at least
//! 20 ms (the fastest sample is the one least disturbed by other processes). GB/s counts the
//! bytes the kernel must read once (the table of a scan, the weights of a gemv, the input of a
//! conversion).

use super::{CliError, CliResult, Format, out};
use half::{bf16, f16};
use seqrec_kernels::cpu::attention::{
    AttentionShape, AttnMask, attention_isa, attention_scratch_len,
};
use seqrec_kernels::cpu::conv::{
    caser_horizontal_isa, caser_horizontal_scratch_len, caser_vertical_isa, causal_conv1d_isa,
    causal_conv1d_step_isa, pack_conv_taps,
};
use seqrec_kernels::cpu::gru::{gru_layer_isa, gru_scratch_len, gru_step_isa};
use seqrec_kernels::cpu::isa::{Ext, fma_peak_isa};
use seqrec_kernels::cpu::linear::{gemv_bf16_isa, gemv_f16_isa, linear_f16_isa, linear_isa};
use seqrec_kernels::cpu::norm::layer_norm_isa;
use seqrec_kernels::cpu::score::{
    bf16_split_query, bf16_uses_dp, quantize_query_i8, quantize_rows_i8_vec, scores_batch_isa,
    scores_bf16_dp_isa, scores_i8_isa, scores_isa,
};
use seqrec_kernels::cpu::topk::TopK;
use seqrec_kernels::cpu::{activation::activate_isa, convert::f16_to_f32_isa};
use seqrec_kernels::testing::Rng;
use seqrec_kernels::{Activation, Isa};
use serde_json::json;
use std::hint::black_box;
use std::time::Instant;

/// Seconds per call of `f`: the fastest of five samples of at least 20 ms each.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let mut reps = 1usize;
    loop {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        if t.elapsed().as_secs_f64() >= 0.02 {
            break;
        }
        reps *= 2;
    }
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// One measured kernel: what it computes per call (flops or bytes) and its time.
struct Row {
    family: &'static str,
    shape: String,
    seconds: f64,
    flops: f64,
    bytes: f64,
}

/// The single-thread peak FMA rate of `isa` in GFLOP/s.
fn peak(isa: Isa) -> f64 {
    let iters = 1 << 16;
    let mut flops = 0.0;
    let s = time(|| {
        let (f, sink) = fma_peak_isa(isa, iters);
        flops = f;
        black_box(sink);
    });
    flops / s / 1e9
}

fn measure(isa: Isa) -> Vec<Row> {
    let mut rng = Rng::new(5);
    let mut rows = Vec::new();
    let mut push = |family: &'static str, shape: String, seconds, flops: f64, bytes: f64| {
        rows.push(Row {
            family,
            shape,
            seconds,
            flops,
            bytes,
        })
    };
    // Products of the sequence encoder (SASRec: 50 rows of 64, FFN 256) and of a text encoder
    // layer (MiniLM: 384 → 1536, f16 weights, one short text of 16 tokens).
    for (m, k, n) in [
        (1, 64, 64),
        (50, 64, 64),
        (50, 64, 256),
        (50, 256, 64),
        (256, 64, 64),
    ] {
        let (x, w, b) = (
            rng.normal_vec(m * k, 1.0),
            rng.normal_vec(n * k, 0.1),
            rng.normal_vec(n, 0.1),
        );
        let mut y = vec![0.0; m * n];
        let s = time(|| linear_isa(isa, &x, &w, Some(&b), &mut y, m, k, n));
        push(
            "linear f32",
            format!("{m}x{k}x{n}"),
            s,
            2.0 * (m * k * n) as f64,
            0.0,
        );
    }
    for (m, k, n) in [(16, 384, 1536), (16, 1536, 384)] {
        let x = rng.normal_vec(m * k, 1.0);
        let w: Vec<f16> = rng
            .normal_vec(n * k, 0.05)
            .into_iter()
            .map(f16::from_f32)
            .collect();
        let mut y = vec![0.0; m * n];
        let s = time(|| linear_f16_isa(isa, &x, &w, None, &mut y, m, k, n));
        push(
            "linear f16 weights",
            format!("{m}x{k}x{n}"),
            s,
            2.0 * (m * k * n) as f64,
            (2 * n * k) as f64,
        );
    }
    // Catalog scans, one user: score blocks of 512 items and select the top 10.
    let d = 64;
    let h = rng.normal_vec(d, 1.0);
    for n in [23_716usize, 352_602] {
        let table = rng.normal_vec(n * d, 0.1);
        let mut block = [0.0f32; 512];
        let mut sel = TopK::new(10);
        let s = time(|| {
            sel.reset(10);
            for b in (0..n).step_by(512) {
                let nb = 512.min(n - b);
                scores_isa(
                    isa,
                    &h,
                    &table[b * d..(b + nb) * d],
                    &mut block[..nb],
                    1,
                    nb,
                    d,
                );
                sel.push_block_isa(isa, b as u32, &block[..nb], &[]);
            }
        });
        push(
            "scan f32 + top-10",
            format!("{n}x{d}"),
            s,
            2.0 * (n * d) as f64,
            (4 * n * d) as f64,
        );
        let (q, scales) = quantize_rows_i8_vec(&table, n, d);
        let mut hq = vec![0i8; d];
        let t = quantize_query_i8(&h, &mut hq).expect("a finite, non-zero query");
        let mut out = vec![0.0; n];
        let s = time(|| scores_i8_isa(isa, &q, &scales, &hq, t, &mut out, n));
        push(
            "scan int8 scores",
            format!("{n}x{d}"),
            s,
            2.0 * (n * d) as f64,
            (n * d) as f64,
        );
        let wh: Vec<f16> = table.iter().map(|&v| f16::from_f32(v)).collect();
        let s = time(|| gemv_f16_isa(isa, &wh, &h, &mut out, n, d));
        push(
            "scan f16 scores",
            format!("{n}x{d}"),
            s,
            2.0 * (n * d) as f64,
            (2 * n * d) as f64,
        );
        let wb: Vec<bf16> = table.iter().map(|&v| bf16::from_f32(v)).collect();
        let s = time(|| gemv_bf16_isa(isa, &wb, &h, &mut out, n, d));
        push(
            "scan bf16 scores",
            format!("{n}x{d}"),
            s,
            2.0 * (n * d) as f64,
            (2 * n * d) as f64,
        );
        // The engine's bf16 filter (the query in two bf16 parts, `vdpbf16ps`), where it runs.
        if isa.has_avx512() && bf16_uses_dp() {
            let (mut hi, mut lo) = (vec![bf16::ZERO; d], vec![bf16::ZERO; d]);
            bf16_split_query(&h, &mut hi, &mut lo).expect("a finite query");
            let s = time(|| scores_bf16_dp_isa(isa, &wb, &hi, &lo, &mut out, n));
            push(
                "scan bf16 filter (dpbf16)",
                format!("{n}x{d}"),
                s,
                2.0 * (n * d) as f64,
                (2 * n * d) as f64,
            );
        }
    }
    // The batched scan: 256 users against a block of 256 items.
    let (users, nb) = (256, 256);
    let (u, items) = (rng.normal_vec(users * d, 1.0), rng.normal_vec(nb * d, 0.1));
    let mut out = vec![0.0; users * nb];
    let s = time(|| scores_batch_isa(isa, &u, &items, &mut out, users, nb, d));
    push(
        "scan batch tiles",
        format!("{users}x{nb}x{d}"),
        s,
        2.0 * (users * nb * d) as f64,
        0.0,
    );
    // Causal self-attention of SASRec (50 rows, 2 heads of 32).
    let shape = AttentionShape::packed(50, 50, 2, 32);
    let (q, k, v) = (
        rng.normal_vec(50 * 64, 1.0),
        rng.normal_vec(50 * 64, 1.0),
        rng.normal_vec(50 * 64, 1.0),
    );
    let mut o = vec![0.0; 50 * 64];
    let mut scratch = vec![0.0; attention_scratch_len(&shape)];
    let mask = AttnMask::Causal { q_offset: 0 };
    let s = time(|| {
        attention_isa(
            isa,
            &shape,
            &q,
            &k,
            &v,
            mask,
            None,
            0.176_776_7,
            &mut o,
            &mut scratch,
        )
    });
    // QKᵀ and PV over the causal half, 2 flops per multiply-add.
    push(
        "attention",
        "50x50, 2 heads of 32, causal".into(),
        s,
        2.0 * 2.0 * 64.0 * (50.0 * 51.0 / 2.0),
        0.0,
    );
    recurrent_and_conv(isa, &mut rng, &mut push);
    let (x, g, b) = (
        rng.normal_vec(50 * 64, 1.0),
        rng.normal_vec(64, 1.0),
        rng.normal_vec(64, 0.1),
    );
    let mut y = vec![0.0; 50 * 64];
    let s = time(|| layer_norm_isa(isa, &x, 50, 64, &g, &b, 1e-12, &mut y));
    push("layer norm", "50x64".into(), s, 0.0, (4 * 50 * 64) as f64);
    let mut a = rng.normal_vec(50 * 256, 1.0);
    let s = time(|| activate_isa(isa, Activation::Gelu, &mut a));
    push("gelu", "50x256".into(), s, 0.0, (4 * 50 * 256) as f64);
    let hsrc: Vec<f16> = rng
        .normal_vec(1 << 16, 1.0)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let mut dst = vec![0.0; 1 << 16];
    let s = time(|| f16_to_f32_isa(isa, &hsrc, &mut dst));
    push("f16 to f32", "65536".into(), s, 0.0, (2 << 16) as f64);
    rows
}

/// GRU4Rec's recurrent layer (RecBole: 50 steps, 64 → 128) and one session step, NextItNet's
/// dilated causal convolution (64 channels, kernel 3, dilation 4) over a window and for one
/// new row, and Caser's convolutions (vertical: 4 filters over 50 rows; horizontal: 8
/// filters of height 10 over 50 × 64).
fn recurrent_and_conv(
    isa: Isa,
    rng: &mut Rng,
    push: &mut impl FnMut(&'static str, String, f64, f64, f64),
) {
    let (steps, input, hidden) = (50, 64, 128);
    let x = rng.normal_vec(steps * input, 1.0);
    let w_ih = rng.normal_vec(3 * hidden * input, 0.1);
    let w_hh = rng.normal_vec(3 * hidden * hidden, 0.1);
    let (mut h, mut out) = (vec![0.0; hidden], vec![0.0; steps * hidden]);
    let mut scratch = vec![0.0; gru_scratch_len(steps, hidden)];
    let s = time(|| {
        h.fill(0.0);
        gru_layer_isa(
            isa,
            &x,
            steps,
            input,
            hidden,
            &w_ih,
            &w_hh,
            None,
            None,
            &mut h,
            &mut out,
            &mut scratch,
        )
    });
    let per_step = 2.0 * (3 * hidden * (input + hidden)) as f64;
    push(
        "gru layer",
        format!("{steps} steps, {input} -> {hidden}"),
        s,
        steps as f64 * per_step,
        0.0,
    );
    let gi = rng.normal_vec(3 * hidden, 1.0);
    h = rng.uniform_vec(hidden, -0.5, 0.5);
    let s = time(|| gru_step_isa(isa, &gi, &w_hh, None, hidden, &mut h, &mut scratch));
    push(
        "gru step (session)",
        format!("hidden {hidden}"),
        s,
        2.0 * (3 * hidden * hidden) as f64,
        (4 * 3 * hidden * hidden) as f64,
    );
    let (len, ch, k, dil) = (50, 64, 3, 4);
    let xc = rng.normal_vec(len * ch, 1.0);
    let taps = pack_conv_taps(&rng.normal_vec(ch * ch * k, 0.1), ch, ch, k);
    let bias = rng.normal_vec(ch, 0.1);
    let mut y = vec![0.0; len * ch];
    let s = time(|| causal_conv1d_isa(isa, &xc, len, ch, &taps, Some(&bias), ch, k, dil, &mut y));
    let conv_flops = 2.0 * (len * k * ch * ch) as f64;
    push(
        "dilated conv",
        format!("{len}x{ch} -> {ch}, k {k}, d {dil}"),
        s,
        conv_flops,
        0.0,
    );
    let s = time(|| {
        causal_conv1d_step_isa(
            isa,
            &xc,
            len - 1,
            ch,
            &taps,
            Some(&bias),
            ch,
            k,
            dil,
            &mut y[..ch],
        )
    });
    push(
        "dilated conv step (session)",
        format!("1 row, {ch} -> {ch}, k {k}"),
        s,
        conv_flops / len as f64,
        (4 * k * ch * ch) as f64,
    );
    let (l, e, nv) = (50, 64, 4);
    let xi = rng.normal_vec(l * e, 1.0);
    let (wv, bv) = (rng.normal_vec(nv * l, 0.1), rng.normal_vec(nv, 0.1));
    let mut ov = vec![0.0; nv * e];
    let s = time(|| caser_vertical_isa(isa, &xi, l, e, &wv, &bv, nv, &mut ov));
    push(
        "caser vertical",
        format!("{nv} filters over {l}x{e}"),
        s,
        2.0 * (nv * l * e) as f64,
        0.0,
    );
    let (height, nf) = (10, 8);
    let (wh, bh) = (
        rng.normal_vec(nf * height * e, 0.1),
        rng.normal_vec(nf, 0.1),
    );
    let mut oh = vec![0.0; nf];
    let mut sh = vec![0.0; caser_horizontal_scratch_len(l, height, nf)];
    let s = time(|| caser_horizontal_isa(isa, &xi, l, e, height, &wh, &bh, nf, &mut oh, &mut sh));
    push(
        "caser horizontal",
        format!("{nf} filters of height {height} over {l}x{e}"),
        s,
        2.0 * ((l - height + 1) * nf * height * e) as f64,
        0.0,
    );
}

/// Runs the kernel benchmark at `levels` (every level of this CPU when empty).
pub fn run(levels: &[String], format: Format) -> CliResult {
    let isas: Vec<Isa> = if levels.is_empty() {
        Isa::available().filter(|i| *i != Isa::Scalar).collect()
    } else {
        levels
            .iter()
            .map(|l| {
                Isa::ALL
                    .iter()
                    .copied()
                    .find(|i| i.name().eq_ignore_ascii_case(l))
                    .filter(|i| i.is_available())
                    .ok_or_else(|| CliError::input(format!("--isa {l}: not a level this CPU runs")))
            })
            .collect::<Result<_, _>>()?
    };
    let exts: Vec<_> = Ext::ALL
        .iter()
        .filter(|e| e.enabled())
        .map(|e| e.name())
        .collect();
    let mut report = Vec::new();
    for &isa in &isas {
        let peak = peak(isa);
        let rows = measure(isa);
        if let Format::Text = format {
            out(format!(
                "{} ({}; extensions {}), one thread, peak FMA {peak:.1} GFLOP/s:",
                isa.name(),
                isa.describe(),
                if isa.has_avx512() && !exts.is_empty() {
                    exts.join(", ")
                } else {
                    "none".to_string()
                }
            ))?;
            for r in &rows {
                let gflops = r.flops / r.seconds / 1e9;
                let rate = if r.flops > 0.0 {
                    format!(
                        "{gflops:8.2} GFLOP/s ({:4.0}% of peak)",
                        100.0 * gflops / peak
                    )
                } else {
                    String::new()
                };
                let gbs = if r.bytes > 0.0 {
                    format!("{:8.2} GB/s", r.bytes / r.seconds / 1e9)
                } else {
                    String::new()
                };
                out(format!(
                    "  {:<27} {:<40} {:>10.2} µs {rate} {gbs}",
                    r.family,
                    r.shape,
                    r.seconds * 1e6
                ))?;
            }
        }
        report.push(json!({
            "isa": isa.name(),
            "peak_gflops": peak,
            "kernels": rows.iter().map(|r| json!({
                "family": r.family, "shape": r.shape, "us": r.seconds * 1e6,
                "gflops": (r.flops > 0.0).then(|| r.flops / r.seconds / 1e9),
                "gbs": (r.bytes > 0.0).then(|| r.bytes / r.seconds / 1e9),
            })).collect::<Vec<_>>(),
        }));
    }
    if let Format::Json = format {
        out(json!({ "cpu": super::info::cpu_json(), "threads": 1, "levels": report }))?;
    }
    Ok(())
}
