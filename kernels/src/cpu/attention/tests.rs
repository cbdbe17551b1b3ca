//! Tests of the attention kernels against the f64 reference and RecBole's additive masks.

use super::*;
use crate::testing::Rng;
use alloc::format;
use alloc::vec::Vec;

const LENS: [usize; 6] = [1, 2, 3, 17, 50, 65];
const HEADS: [usize; 4] = [1, 2, 3, 4];
const HEAD_DIMS: [usize; 6] = [1, 3, 8, 17, 32, 64];
/// Output columns a kernel must not touch are pre-filled with this.
const SENTINEL: f32 = 12345.0;

/// Inputs of one call. `fused`: q, k and v are the column blocks of one `[L, 3H + pad]`
/// buffer (self-attention); otherwise q has its own padded buffer and k, v are the blocks of
/// a fused `[lk, 2H + pad]` KV projection (cross-attention / KV cache). Buffers are cut to
/// the minimum length the shape allows, so an over-read panics.
struct Case {
    shape: AttentionShape,
    qbuf: Vec<f32>,
    kvbuf: Vec<f32>,
    fused: bool,
}

impl Case {
    fn new(rng: &mut Rng, lq: usize, lk: usize, n_heads: usize, hd: usize, fused: bool) -> Case {
        let h = n_heads * hd;
        let (q_stride, kv_stride, qbuf, kvbuf);
        if fused {
            assert_eq!(lq, lk);
            kv_stride = 3 * h + rng.below(3);
            q_stride = kv_stride;
            qbuf = Vec::new();
            kvbuf = rng.normal_vec(rows_len(lk, kv_stride, 3 * h), 1.0);
        } else {
            q_stride = h + rng.below(3);
            kv_stride = 2 * h + rng.below(3);
            qbuf = rng.normal_vec(rows_len(lq, q_stride, h), 1.0);
            kvbuf = rng.normal_vec(rows_len(lk, kv_stride, 2 * h), 1.0);
        }
        let out_stride = h + rng.below(3);
        let shape = AttentionShape {
            lq,
            lk,
            n_heads,
            head_dim: hd,
            q_stride,
            kv_stride,
            out_stride,
        };
        Case {
            shape,
            qbuf,
            kvbuf,
            fused,
        }
    }
    fn q(&self) -> &[f32] {
        if self.fused { &self.kvbuf } else { &self.qbuf }
    }
    fn k(&self) -> &[f32] {
        let h = self.shape.hidden();
        if self.fused {
            &self.kvbuf[h..]
        } else {
            &self.kvbuf
        }
    }
    fn v(&self) -> &[f32] {
        let h = self.shape.hidden();
        if self.fused {
            &self.kvbuf[2 * h..]
        } else {
            &self.kvbuf[h..]
        }
    }
    /// max |V| over the attended columns.
    fn v_max(&self) -> f32 {
        let (h, v) = (self.shape.hidden(), self.v());
        (0..self.shape.lk)
            .flat_map(|j| &v[j * self.shape.kv_stride..j * self.shape.kv_stride + h])
            .fold(0.0f32, |a, &b| a.max(b.abs()))
    }
    fn out_buf(&self) -> Vec<f32> {
        let s = &self.shape;
        vec![SENTINEL; rows_len(s.lq, s.out_stride, s.hidden())]
    }
    fn reference(&self, mask: AttnMask, key_valid: Option<&[bool]>, scale: f32) -> Vec<f32> {
        let mut out = self.out_buf();
        attention_ref(
            &self.shape,
            self.q(),
            self.k(),
            self.v(),
            mask,
            key_valid,
            scale,
            &mut out,
        );
        out
    }
    fn run(
        &self,
        isa: Isa,
        mask: AttnMask,
        key_valid: Option<&[bool]>,
        scale: f32,
        tiled: bool,
    ) -> Vec<f32> {
        let mut out = self.out_buf();
        let mut scratch = vec![f32::NAN; attention_scratch_len(&self.shape)];
        attention_path(
            isa,
            &self.shape,
            self.q(),
            self.k(),
            self.v(),
            mask,
            key_valid,
            scale,
            &mut out,
            &mut scratch,
            tiled,
        );
        out
    }
}

/// |got − want| ≤ 1e-5·max|V| per element: the output is a convex combination of V rows, and
/// its f32 errors (scores, exp, a ≤ 65-term weighted sum) stay far below 1e-5 of its
/// magnitude. Columns outside the heads hold the sentinel in both and must match exactly.
#[track_caller]
fn assert_attn_close(ctx: &str, got: &[f32], want: &[f32], v_max: f32) {
    assert_eq!(got.len(), want.len(), "{ctx}: lengths");
    let tol = 1e-5 * v_max;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{ctx}: out[{i}] got {g}, want {w} (tol {tol:e})"
        );
    }
}

fn random_valid(rng: &mut Rng, lk: usize) -> Vec<bool> {
    match rng.below(5) {
        0 => vec![false; lk],
        _ => (0..lk).map(|_| rng.below(4) != 0).collect(),
    }
}

fn check_attention(isa: Isa) {
    let mut rng = Rng::new(41);
    let mut case_no = 0;
    for lq in LENS {
        for lk in LENS {
            for hd in HEAD_DIMS {
                case_no += 1;
                let n_heads = HEADS[case_no % HEADS.len()];
                let fused = lq == lk && case_no % 2 == 0;
                let case = Case::new(&mut rng, lq, lk, n_heads, hd, fused);
                let scale = if case_no % 3 == 0 {
                    1.0
                } else {
                    1.0 / (hd as f32).sqrt()
                };
                let offset = rng.below(lk + 2);
                let valid = random_valid(&mut rng, lk);
                for mask in [
                    AttnMask::None,
                    AttnMask::Causal { q_offset: 0 },
                    AttnMask::Causal { q_offset: offset },
                ] {
                    for key_valid in [None, Some(&valid[..])] {
                        let want = case.reference(mask, key_valid, scale);
                        for tiled in [false, true] {
                            let got = case.run(isa, mask, key_valid, scale, tiled);
                            let ctx = format!(
                                "attention {isa} lq={lq} lk={lk} heads={n_heads} hd={hd} \
                                 fused={fused} {mask:?} valid={} transpose={tiled}",
                                key_valid.is_some()
                            );
                            assert_attn_close(&ctx, &got, &want, case.v_max());
                        }
                    }
                }
            }
        }
    }
}
crate::isa_tests!(attention, check_attention);

/// Decoding one row (or a chunk of rows) at a time against the KV prefix, with `q_offset`,
/// reproduces the rows of the full causal computation: bit for bit on the same score kernel,
/// within tolerance across kernels.
fn check_incremental(isa: Isa) {
    let mut rng = Rng::new(42);
    for (l, n_heads, hd) in [(50, 2, 32), (17, 3, 17), (9, 4, 8)] {
        let case = Case::new(&mut rng, l, l, n_heads, hd, true);
        let s = case.shape;
        let h = s.hidden();
        let scale = 1.0 / (hd as f32).sqrt();
        // Left padding, as decision transformers batch it: the first keys are hidden.
        let valid: Vec<bool> = (0..l).map(|j| j >= 2).collect();
        for key_valid in [None, Some(&valid[..])] {
            let causal = AttnMask::Causal { q_offset: 0 };
            for tiled in [false, true] {
                let full = case.run(isa, causal, key_valid, scale, tiled);
                // One new row at a time, the cache holding rows 0..=i (or all l rows: the
                // mask must hide the future).
                for i in 0..l {
                    for lk in [i + 1, l] {
                        let shape = AttentionShape { lq: 1, lk, ..s };
                        let mut out = vec![0.0; h];
                        let mut scratch = vec![0.0; attention_scratch_len(&shape)];
                        attention_path(
                            isa,
                            &shape,
                            &case.q()[i * s.q_stride..],
                            case.k(),
                            case.v(),
                            AttnMask::Causal { q_offset: i },
                            key_valid.map(|kv| &kv[..lk]),
                            scale,
                            &mut out,
                            &mut scratch,
                            tiled,
                        );
                        let row = &full[i * s.out_stride..i * s.out_stride + h];
                        assert_eq!(out, row, "{isa} l={l} row {i} lk={lk} t={tiled}");
                    }
                }
                // Chunks of 5 rows through the public path (which picks its own kernel).
                for start in (0..l).step_by(5) {
                    let lq = 5.min(l - start);
                    let shape = AttentionShape {
                        lq,
                        lk: start + lq,
                        ..s
                    };
                    let mut out = vec![SENTINEL; rows_len(lq, s.out_stride, h)];
                    let mut scratch = vec![0.0; attention_scratch_len(&shape)];
                    attention_isa(
                        isa,
                        &shape,
                        &case.q()[start * s.q_stride..],
                        case.k(),
                        case.v(),
                        AttnMask::Causal { q_offset: start },
                        key_valid.map(|kv| &kv[..start + lq]),
                        scale,
                        &mut out,
                        &mut scratch,
                    );
                    let want = &full[start * s.out_stride..][..out.len()];
                    let ctx = format!("{isa} l={l} chunk at {start}");
                    assert_attn_close(&ctx, &out, want, case.v_max());
                }
            }
        }
    }
}
crate::isa_tests!(attention_incremental, check_incremental);

/// RecBole's formulation: `softmax(q·k·scale + (allowed ? 0 : −10000))` over all keys, f64.
fn additive_mask_ref(case: &Case, allowed: impl Fn(usize, usize) -> bool, scale: f32) -> Vec<f32> {
    let s = case.shape;
    let (q, k, v) = (case.q(), case.k(), case.v());
    let mut out = case.out_buf();
    for h in 0..s.n_heads {
        let c0 = h * s.head_dim;
        for i in 0..s.lq {
            let scores: Vec<f64> = (0..s.lk)
                .map(|j| {
                    let dot: f64 = (0..s.head_dim)
                        .map(|d| {
                            q[i * s.q_stride + c0 + d] as f64 * k[j * s.kv_stride + c0 + d] as f64
                        })
                        .sum();
                    dot * scale as f64 + if allowed(i, j) { 0.0 } else { -10_000.0 }
                })
                .collect();
            let max = scores.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            let e: Vec<f64> = scores.iter().map(|&x| libm::exp(x - max)).collect();
            let sum: f64 = e.iter().sum();
            for d in 0..s.head_dim {
                let acc: f64 = (0..s.lk)
                    .map(|j| e[j] * v[j * s.kv_stride + c0 + d] as f64)
                    .sum();
                out[i * s.out_stride + c0 + d] = (acc / sum) as f32;
            }
        }
    }
    out
}

#[test]
fn hard_masks_equal_recbole_additive_masks() {
    let mut rng = Rng::new(43);
    for trial in 0..20 {
        // SASRec: L = 50, H = 64, 2 heads, right-padded sequences, causal.
        let case = Case::new(&mut rng, 50, 50, 2, 32, true);
        let len = 1 + rng.below(50);
        let valid: Vec<bool> = (0..50).map(|j| j < len).collect();
        let scale = 1.0 / 32f32.sqrt();
        let want = additive_mask_ref(&case, |i, j| j <= i && valid[j], scale);
        let got = case.run(
            Isa::detect(),
            AttnMask::Causal { q_offset: 0 },
            Some(&valid),
            scale,
            true,
        );
        let ctx = format!("SASRec trial {trial} len={len}");
        assert_attn_close(&ctx, &got, &want, case.v_max());
        // BERT4Rec-style bidirectional attention with a padding mask.
        let want = additive_mask_ref(&case, |_, j| valid[j], scale);
        let mut out = case.out_buf();
        let mut scratch = vec![0.0; attention_scratch_len(&case.shape)];
        attention(
            &case.shape,
            case.q(),
            case.k(),
            case.v(),
            AttnMask::None,
            Some(&valid),
            scale,
            &mut out,
            &mut scratch,
        );
        assert_attn_close(&format!("bidirectional {ctx}"), &out, &want, case.v_max());
    }
}

#[test]
fn rows_without_visible_keys_are_zero_and_hidden_values_unread() {
    let mut rng = Rng::new(44);
    let mut case = Case::new(&mut rng, 6, 6, 2, 8, false);
    let s = case.shape;
    // Poison the value rows of the hidden keys: they must not leak into the output.
    let valid = [false, true, false, true, true, false];
    for (j, &ok) in valid.iter().enumerate() {
        if !ok {
            let start = j * s.kv_stride + s.hidden();
            case.kvbuf[start..start + s.hidden()].fill(f32::NAN);
        }
    }
    for isa in Isa::available() {
        for tiled in [false, true] {
            let out = case.run(
                isa,
                AttnMask::Causal { q_offset: 0 },
                Some(&valid),
                0.3,
                tiled,
            );
            // Query 0 sees only key 0, which is hidden: zeros.
            assert!(
                out[..s.hidden()].iter().all(|&x| x == 0.0),
                "{isa}: {:?}",
                &out[..16]
            );
            assert!(out.iter().all(|x| x.is_finite()), "{isa}: NaN leaked");
            let all_hidden = [false; 6];
            let out = case.run(isa, AttnMask::None, Some(&all_hidden), 0.3, tiled);
            for i in 0..s.lq {
                let row = &out[i * s.out_stride..i * s.out_stride + s.hidden()];
                assert!(row.iter().all(|&x| x == 0.0), "{isa} row {i}");
            }
        }
    }
    // lk = 0: nothing to attend to.
    let shape = AttentionShape::packed(3, 0, 2, 4);
    let mut out = vec![1.0; 3 * 8];
    let mut scratch = vec![0.0; attention_scratch_len(&shape)];
    attention(
        &shape,
        &[0.5; 24],
        &[],
        &[],
        AttnMask::None,
        None,
        1.0,
        &mut out,
        &mut scratch,
    );
    assert!(out.iter().all(|&x| x == 0.0));
}

#[test]
fn single_key_copies_its_value() {
    // One visible key: the output is exactly its value row, whatever the scores.
    let shape = AttentionShape::packed(2, 1, 2, 3);
    let q = [1.0, -2.0, 3.0, 0.5, 0.5, 0.5, -1.0, 4.0, 2.0, 9.0, 9.0, 9.0];
    let k = [0.3, 0.2, 0.1, -7.0, 1.0, 2.0];
    let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let mut out = [0.0; 12];
    let mut scratch = vec![0.0; attention_scratch_len(&shape)];
    attention(
        &shape,
        &q,
        &k,
        &v,
        AttnMask::None,
        None,
        0.7,
        &mut out,
        &mut scratch,
    );
    assert_eq!(
        out,
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    );
}

#[test]
fn fast_path_matches_reference() {
    let mut rng = Rng::new(45);
    for (lq, lk, n_heads, hd) in [
        (50, 50, 2, 32),
        (1, 50, 2, 32),
        (32, 32, 12, 32),
        (3, 65, 4, 17),
    ] {
        let case = Case::new(&mut rng, lq, lk, n_heads, hd, lq == lk);
        let valid = random_valid(&mut rng, lk);
        let scale = 1.0 / (hd as f32).sqrt();
        for mask in [AttnMask::None, AttnMask::Causal { q_offset: lk - lq }] {
            let want = case.reference(mask, Some(&valid), scale);
            let mut out = case.out_buf();
            let mut scratch = vec![0.0; attention_scratch_len(&case.shape)];
            attention(
                &case.shape,
                case.q(),
                case.k(),
                case.v(),
                mask,
                Some(&valid),
                scale,
                &mut out,
                &mut scratch,
            );
            let ctx = format!("attention lq={lq} lk={lk} {mask:?}");
            assert_attn_close(&ctx, &out, &want, case.v_max());
        }
    }
}

#[test]
#[should_panic(expected = "attention: v has 95 values, expected at least")]
fn short_value_buffer_panics() {
    let shape = AttentionShape::packed(4, 4, 3, 8);
    let (mut out, mut scratch) = (vec![0.0; 96], vec![0.0; 36]);
    let x = vec![0.0; 96];
    attention(
        &shape,
        &x,
        &x,
        &x[1..],
        AttnMask::None,
        None,
        1.0,
        &mut out,
        &mut scratch,
    );
}

#[test]
#[should_panic(expected = "attention: scratch has 35 values, expected at least")]
fn short_scratch_panics() {
    let shape = AttentionShape::packed(4, 4, 3, 8);
    let (mut out, mut scratch) = (vec![0.0; 96], vec![0.0; 35]);
    let x = vec![0.0; 96];
    attention(
        &shape,
        &x,
        &x,
        &x,
        AttnMask::None,
        None,
        1.0,
        &mut out,
        &mut scratch,
    );
}
