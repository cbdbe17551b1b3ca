//! Tests of the convolution kernels against their references.

use super::*;
use crate::testing::{AWKWARD_SIZES, Rng};
use alloc::format;
use alloc::vec;

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// Per-output tolerance `1e-5·(1 + mag[i])`, where `mag` is the reference run on the absolute
/// values of every input (the sum of the absolute terms entering the output).
#[track_caller]
fn assert_mag_close(ctx: &str, got: &[f32], want: &[f32], mag: &[f32]) {
    assert_eq!(got.len(), want.len(), "{ctx}: length");
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        let tol = 1e-5 * (1.0 + m);
        assert!(
            (g - w).abs() <= tol,
            "{ctx}: index {i}: got {g}, want {w} (tolerance {tol:e})"
        );
    }
}

struct ConvCase {
    len: usize,
    in_ch: usize,
    out_ch: usize,
    k: usize,
    d: usize,
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
}

/// Every dilation in {1, 2, 4, 8, 16} with every width in {1, 2, 3, 5}, each over eight
/// (in, out, len) triples that together walk the whole awkward-size list for both channel
/// counts; lengths include ones shorter than the receptive field `d·(k−1)`.
fn conv_cases(seed: u64) -> Vec<ConvCase> {
    let mut rng = Rng::new(seed);
    let mut cases = Vec::new();
    let mut idx = 0;
    for d in [1, 2, 4, 8, 16] {
        for k in [1, 2, 3, 5] {
            for _ in 0..8 {
                let in_ch = AWKWARD_SIZES[idx % AWKWARD_SIZES.len()];
                let out_ch = AWKWARD_SIZES[(idx * 7 + 5) % AWKWARD_SIZES.len()];
                let len = [1, 2, 7, 20, 50][idx % 5];
                idx += 1;
                cases.push(ConvCase {
                    len,
                    in_ch,
                    out_ch,
                    k,
                    d,
                    x: rng.normal_vec(len * in_ch, 1.0),
                    w: rng.normal_vec(out_ch * in_ch * k, 0.5),
                    b: rng.normal_vec(out_ch, 0.5),
                });
            }
        }
    }
    cases.push(ConvCase {
        len: 0,
        in_ch: 4,
        out_ch: 4,
        k: 3,
        d: 1,
        x: vec![],
        w: rng.normal_vec(48, 0.5),
        b: rng.normal_vec(4, 0.5),
    });
    cases
}

impl ConvCase {
    fn ctx(&self, what: &str, bias: bool) -> alloc::string::String {
        format!(
            "{what} len={} in={} out={} k={} d={} bias={bias}",
            self.len, self.in_ch, self.out_ch, self.k, self.d
        )
    }

    /// (reference output, magnitude of the terms of each output)
    fn reference(&self, bias: bool) -> (Vec<f32>, Vec<f32>) {
        let b = bias.then_some(&self.b[..]);
        let (l, i, o) = (self.len, self.in_ch, self.out_ch);
        let mut want = vec![0.0; l * o];
        causal_conv1d_ref(&self.x, l, i, &self.w, b, o, self.k, self.d, &mut want);
        let mut mag = vec![0.0; l * o];
        let (ax, aw, ab) = (abs(&self.x), abs(&self.w), abs(&self.b));
        let ab = bias.then_some(&ab[..]);
        causal_conv1d_ref(&ax, l, i, &aw, ab, o, self.k, self.d, &mut mag);
        (want, mag)
    }
}

fn check_causal_conv1d(isa: Isa) {
    for c in conv_cases(31) {
        let taps = pack_conv_taps(&c.w, c.out_ch, c.in_ch, c.k);
        for bias in [false, true] {
            let (want, mag) = c.reference(bias);
            let mut got = vec![f32::NAN; c.len * c.out_ch];
            let b = bias.then_some(&c.b[..]);
            causal_conv1d_isa(
                isa, &c.x, c.len, c.in_ch, &taps, b, c.out_ch, c.k, c.d, &mut got,
            );
            // Tolerance: 1e-5·(1 + Σ|terms|) per output (module header).
            assert_mag_close(&c.ctx(&format!("conv {isa}"), bias), &got, &want, &mag);
        }
    }
}
crate::isa_tests!(causal_conv1d_pulp, check_causal_conv1d);

#[test]
fn causal_conv1d_fast_path_matches_reference() {
    for c in conv_cases(32) {
        let taps = pack_conv_taps(&c.w, c.out_ch, c.in_ch, c.k);
        for bias in [false, true] {
            let (want, mag) = c.reference(bias);
            let mut got = vec![f32::NAN; c.len * c.out_ch];
            let b = bias.then_some(&c.b[..]);
            causal_conv1d(&c.x, c.len, c.in_ch, &taps, b, c.out_ch, c.k, c.d, &mut got);
            // Tolerance: 1e-5·(1 + Σ|terms|) per output (module header).
            assert_mag_close(&c.ctx("conv fast", bias), &got, &want, &mag);
        }
    }
}

/// Row `t` computed alone from rows `0..=t` only equals row `t` of the whole sequence.
fn check_causal_conv1d_step(isa: Isa) {
    for c in conv_cases(33) {
        let taps = pack_conv_taps(&c.w, c.out_ch, c.in_ch, c.k);
        let b = Some(&c.b[..]);
        let mut full = vec![0.0; c.len * c.out_ch];
        causal_conv1d_isa(
            isa, &c.x, c.len, c.in_ch, &taps, b, c.out_ch, c.k, c.d, &mut full,
        );
        let (want, mag) = c.reference(true);
        let mut row = vec![f32::NAN; c.out_ch];
        for t in 0..c.len {
            let prefix = &c.x[..(t + 1) * c.in_ch];
            causal_conv1d_step_isa(
                isa, prefix, t, c.in_ch, &taps, b, c.out_ch, c.k, c.d, &mut row,
            );
            let ctx = c.ctx(&format!("conv step {isa} t={t}"), true);
            let range = t * c.out_ch..(t + 1) * c.out_ch;
            // Same body, same row: bit-identical to the full pulp conv.
            assert_eq!(row, full[range.clone()], "{ctx}");
            // Tolerance: 1e-5·(1 + Σ|terms|) against the reference.
            assert_mag_close(&ctx, &row, &want[range.clone()], &mag[range.clone()]);
            // Passing the whole sequence (later rows present) gives the same row.
            let mut row_full_x = vec![f32::NAN; c.out_ch];
            causal_conv1d_step_isa(
                isa,
                &c.x,
                t,
                c.in_ch,
                &taps,
                b,
                c.out_ch,
                c.k,
                c.d,
                &mut row_full_x,
            );
            assert_eq!(row, row_full_x, "{ctx} (whole x)");
        }
    }
}
crate::isa_tests!(causal_conv1d_step_pulp, check_causal_conv1d_step);

#[test]
fn causal_conv1d_step_fast_path_matches_the_full_conv() {
    let mut rng = Rng::new(34);
    let (len, ch, k) = (50, 64, 3);
    let x = rng.normal_vec(len * ch, 1.0);
    let w = rng.normal_vec(ch * ch * k, 0.2);
    let b = rng.normal_vec(ch, 0.5);
    let taps = pack_conv_taps(&w, ch, ch, k);
    for d in [1, 2, 4, 8, 16, 32] {
        let mut full = vec![0.0; len * ch];
        causal_conv1d(&x, len, ch, &taps, Some(&b), ch, k, d, &mut full);
        let mut row = vec![0.0; ch];
        for t in 0..len {
            causal_conv1d_step(
                &x[..(t + 1) * ch],
                t,
                ch,
                &taps,
                Some(&b),
                ch,
                k,
                d,
                &mut row,
            );
            // The per-tap matmul and the pulp body round differently: 1e-5 absolute + 1e-5 relative
            // (|terms| here sum to at most ~40).
            crate::testing::assert_close(
                &format!("step vs full d={d} t={t}"),
                &row,
                &full[t * ch..(t + 1) * ch],
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn tap_order_follows_pytorch() {
    // k = 2, d = 3, one channel: y[t] = w[0]·x[t−3] + w[1]·x[t] (tap k−1 is the present).
    let x = [1.0, 2.0, 3.0, 4.0, 5.0];
    let w = [10.0, 1.0];
    let taps = pack_conv_taps(&w, 1, 1, 2);
    let mut y = [0.0; 5];
    causal_conv1d(&x, 5, 1, &taps, None, 1, 2, 3, &mut y);
    assert_eq!(y, [1.0, 2.0, 3.0, 14.0, 25.0]);
}

#[test]
fn pack_conv_taps_is_tap_major() {
    let (o, i, k) = (3, 2, 4);
    let w: Vec<f32> = (0..o * i * k).map(|v| v as f32).collect();
    let taps = pack_conv_taps(&w, o, i, k);
    for oo in 0..o {
        for c in 0..i {
            for j in 0..k {
                assert_eq!(taps[(j * i + c) * o + oo], w[(oo * i + c) * k + j]);
            }
        }
    }
}

// ----------------------------------------------------------------------------------------------
// Caser

/// Every L of the brief, every embedding width of the awkward list, filter counts that exercise
/// the 8-, 4- and 1-row blocks of the dot product.
fn caser_shapes() -> Vec<(usize, usize, usize)> {
    let mut v = Vec::new();
    let mut idx = 0;
    for l in [1, 2, 5, 10, 50] {
        for &e in AWKWARD_SIZES {
            let nf = [1, 3, 4, 8, 13, 17][idx % 6];
            idx += 1;
            v.push((l, e, nf));
        }
    }
    v
}

fn check_caser_vertical(isa: Isa) {
    let mut rng = Rng::new(41);
    for (l, e, nv) in caser_shapes() {
        let x = rng.normal_vec(l * e, 1.0);
        let w = rng.normal_vec(nv * l, 0.5);
        let b = rng.normal_vec(nv, 0.5);
        let mut want = vec![0.0; nv * e];
        caser_vertical_ref(&x, l, e, &w, &b, nv, &mut want);
        let mut mag = vec![0.0; nv * e];
        caser_vertical_ref(&abs(&x), l, e, &abs(&w), &abs(&b), nv, &mut mag);
        let mut got = vec![f32::NAN; nv * e];
        caser_vertical_isa(isa, &x, l, e, &w, &b, nv, &mut got);
        // Tolerance: 1e-5·(1 + Σ|terms|) per output (module header).
        let ctx = format!("caser_vertical {isa} l={l} e={e} nv={nv}");
        assert_mag_close(&ctx, &got, &want, &mag);
        let mut fast = vec![f32::NAN; nv * e];
        caser_vertical(&x, l, e, &w, &b, nv, &mut fast);
        assert_mag_close(&format!("{ctx} fast"), &fast, &want, &mag);
    }
}
crate::isa_tests!(caser_vertical_pulp, check_caser_vertical);

type HorizontalFn<'a> = &'a dyn Fn(&[f32], usize, usize, usize, &[f32], &[f32], usize, &mut [f32]);

fn check_horizontal_against_ref(name: &str, seed: u64, run: HorizontalFn<'_>) {
    let mut rng = Rng::new(seed);
    for (l, e, nf) in caser_shapes() {
        let x = rng.normal_vec(l * e, 1.0);
        for height in 1..=l {
            let w = rng.normal_vec(nf * height * e, 0.5);
            // Unit-scale biases: with small images (e = 1, l = 1) some filters are negative in
            // every window, so the ReLU floor is exercised as well as the max.
            let b = rng.normal_vec(nf, 1.0);
            let mut want = vec![0.0; nf];
            caser_horizontal_ref(&x, l, e, height, &w, &b, nf, &mut want);
            let mut mag = vec![0.0; nf];
            caser_horizontal_ref(&abs(&x), l, e, height, &abs(&w), &abs(&b), nf, &mut mag);
            let mut got = vec![f32::NAN; nf];
            run(&x, l, e, height, &w, &b, nf, &mut got);
            // Tolerance: 1e-5·(1 + Σ|terms|) per output, with Σ|terms| the largest over the
            // windows (ReLU and max do not add error).
            let ctx = format!("{name} l={l} e={e} height={height} nf={nf}");
            assert_mag_close(&ctx, &got, &want, &mag);
        }
    }
}

fn check_caser_horizontal(isa: Isa) {
    let name = format!("caser_horizontal {isa}");
    check_horizontal_against_ref(&name, 42, &|x, l, e, height, w, b, nf, out| {
        let mut scratch = vec![f32::NAN; caser_horizontal_scratch_len(l, height, nf)];
        caser_horizontal_isa(isa, x, l, e, height, w, b, nf, out, &mut scratch);
    });
}
crate::isa_tests!(caser_horizontal_pulp, check_caser_horizontal);

#[test]
fn caser_horizontal_fast_path_matches_reference() {
    check_horizontal_against_ref(
        "caser_horizontal fast",
        43,
        &|x, l, e, height, w, b, nf, out| {
            let mut scratch = vec![f32::NAN; caser_horizontal_scratch_len(l, height, nf) + 3];
            caser_horizontal(x, l, e, height, w, b, nf, out, &mut scratch);
        },
    );
}

#[test]
fn caser_horizontal_applies_relu_before_the_max() {
    // One filter of height 1 over 3 rows of width 1, w = −1. With b = 0 the windows score
    // −1, −5, −3: all clipped to 0 (a max without the ReLU would give −1).
    let x = [1.0, 5.0, 3.0];
    let w = [-1.0];
    let mut out = [f32::NAN];
    let mut scratch = [0.0; 3];
    caser_horizontal(&x, 3, 1, 1, &w, &[0.0], 1, &mut out, &mut scratch);
    assert_eq!(out, [0.0]);
    caser_horizontal(&x, 3, 1, 1, &w, &[4.0], 1, &mut out, &mut scratch);
    assert_eq!(out, [3.0]); // windows: 3, −1, 1
}
