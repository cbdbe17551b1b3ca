//! PDiT's trainable network: every block's backward against central differences, the whole
//! network's, the forward against the engine's `Pdit::forward` on the saved checkpoint, and
//! the checkpoint's tensor list against the engine's.

use super::blocks::{DitBlock, FinalLayer, TemporalBlock, TemporalShape};
use super::model::{PditBatch, PditModel};
use crate::nn::gradcheck::{GradCheck, assert_grad, assert_param_grads, project, randomize};
use crate::nn::{Module, Rng};
use seqrec_engine::Config;
use seqrec_engine::pdit::{Pdit, PditWorkspace, tensor_specs};
use seqrec_kernels::testing::assert_close;

// Finite differences through LayerNorms, softmax, GELU and SiLU with unit-scale inputs and
// weights of 0.3 (as the attention sublayer's tests): at eps 2^-5 the truncation term
// h⁴·f⁽⁵⁾/30 is ≈ 3e-8·f⁽⁵⁾ and f32 rounding of ~100 outputs adds ≈ 1.5·6e-8·√100/h ≈ 3e-5:
// atol 2e-4, rtol 2e-3. A missing term is off by O(1) relative.
fn check() -> GradCheck {
    GradCheck::new(0.03125, 2e-4, 2e-3)
}

const H: usize = 8;
const HEADS: usize = 2;
const M: usize = 12;

#[test]
fn dit_block_gradients() {
    let mut rng = Rng::new(1);
    let (s, k) = (2, 3);
    let mut blk = DitBlock::new("blocks.0", H, HEADS, M, 1e-6, &mut rng);
    randomize(&mut blk, &mut rng, 0.3);
    let base = blk.clone();
    let x = rng.normal_vec(s * k * H, 1.0);
    let cact = rng.normal_vec(s * H, 1.0);
    let w = rng.normal_vec(s * k * H, 1.0);
    let (_, cache) = blk.forward(x.clone(), &cact, s, k);
    let mut d_cact = vec![0.0; s * H];
    let dx = blk.backward(&cache, &cact, &w, &mut d_cact);
    let f = |x: &[f32], c: &[f32]| project(&base.forward(x.to_vec(), c, s, k).0, &w);
    assert_grad("dit dx", |xp| f(xp, &cact), &x, &dx, &check());
    assert_grad("dit d SiLU(c)", |cp| f(&x, cp), &cact, &d_cact, &check());
    let fwd = |m: &DitBlock| project(&m.forward(x.clone(), &cact, s, k).0, &w);
    assert_param_grads("dit", &base, &blk, fwd, &check());
}

#[test]
fn temporal_block_gradients_with_padded_history() {
    let d = 5;
    let sh = TemporalShape {
        samples: 2,
        tokens: 3,
        n: 4,
    };
    // The second sample's history has 2 real rows; the padding must get no gradient.
    let valid: Vec<bool> = (0..8).map(|i| i < 6).collect();
    for self_attn in [false, true] {
        let mut rng = Rng::new(2 + self_attn as u64);
        let mut blk = TemporalBlock::new("tem_blocks.0", H, d, HEADS, M, 1e-5, self_attn, &mut rng);
        randomize(&mut blk, &mut rng, 0.3);
        let base = blk.clone();
        let x = rng.normal_vec(sh.samples * sh.tokens * H, 1.0);
        let ctx = rng.normal_vec(sh.samples * sh.n * d, 1.0);
        let w = rng.normal_vec(x.len(), 1.0);
        let (_, cache) = blk.forward(x.clone(), &ctx, &valid, sh);
        let mut d_ctx = vec![0.0; ctx.len()];
        let dx = blk.backward(&cache, &w, &mut d_ctx);
        assert!(
            d_ctx[6 * d..].iter().all(|&g| g == 0.0),
            "padding has a gradient"
        );
        let f = |x: &[f32], c: &[f32]| project(&base.forward(x.to_vec(), c, &valid, sh).0, &w);
        assert_grad("tem dx", |xp| f(xp, &ctx), &x, &dx, &check());
        assert_grad("tem d ctx", |cp| f(&x, cp), &ctx, &d_ctx, &check());
        let fwd = |m: &TemporalBlock| project(&m.forward(x.clone(), &ctx, &valid, sh).0, &w);
        assert_param_grads("tem", &base, &blk, fwd, &check());
    }
}

#[test]
fn final_layer_gradients() {
    let mut rng = Rng::new(4);
    let (s, k, p) = (3, 2, 5);
    let mut fl = FinalLayer::new(H, p, 1e-6, &mut rng);
    randomize(&mut fl, &mut rng, 0.3);
    let base = fl.clone();
    let x = rng.normal_vec(s * k * H, 1.0);
    let cact = rng.normal_vec(s * H, 1.0);
    let w = rng.normal_vec(s * k * p, 1.0);
    let (_, cache) = fl.forward(x.clone(), &cact, s, k);
    let mut d_cact = vec![0.0; s * H];
    let dx = fl.backward(&cache, &cact, &w, &mut d_cact);
    let f = |x: &[f32], c: &[f32]| project(&base.forward(x.to_vec(), c, s, k).0, &w);
    assert_grad("final dx", |xp| f(xp, &cact), &x, &dx, &check());
    assert_grad("final d SiLU(c)", |cp| f(&x, cp), &cact, &d_cact, &check());
    let fwd = |m: &FinalLayer| project(&m.forward(x.clone(), &cact, s, k).0, &w);
    assert_param_grads("final", &base, &fl, fwd, &check());
}

/// A small PDiT configuration: `variant`, `learn_sigma`, `tem_self_attn` and the sizes given
/// (d, d_p, H, k, heads, depths, mlp_ratio, L, F).
pub(super) fn config(
    variant: &str,
    learn_sigma: bool,
    self_attn: bool,
    sizes: [usize; 9],
) -> Config {
    let [d, dp, h, k, heads, dg, dt, l, f] = sizes;
    Config::from_json(&format!(
        r#"{{"model":"pdit","variant":"{variant}","latent_dim":{d},"cond_dim":{dp},
        "hidden_size":{h},"num_tokens":{k},"num_heads":{heads},"depth_gen":{dg},
        "depth_tem":{dt},"mlp_ratio":2.5,"max_hist_len":{l},"num_timesteps":1000,
        "beta_start":0.0001,"beta_end":0.02,"learn_sigma":{learn_sigma},"latent_scale":2.0,
        "freq_embed_size":{f},"tem_self_attn":{self_attn}}}"#
    ))
    .expect("valid config")
}

/// A batch of `lens.len()` samples with histories of `lens` rows, at steps `t`.
pub(super) fn batch(m: &PditModel, t: &[usize], lens: &[usize], rng: &mut Rng) -> PditBatch {
    let c = m.config();
    let (s, d) = (t.len(), c.latent_dim);
    let ctx = lens.iter().copied().max().unwrap_or(1);
    let mut hist = vec![0.0; s * ctx * d];
    for (i, &n) in lens.iter().enumerate() {
        for v in &mut hist[i * ctx * d..(i * ctx + n) * d] {
            *v = rng.normal();
        }
    }
    PditBatch {
        samples: s,
        z: rng.normal_vec(s * d, 1.0),
        t: t.to_vec(),
        p: rng.normal_vec(s * c.cond_dim, 1.0),
        hist,
        lens: lens.to_vec(),
        ctx,
    }
}

/// The variants the tests cover: (variant, learn_sigma, tem_self_attn).
const VARIANTS: [(&str, bool, bool); 5] = [
    ("full", true, false),
    ("full", true, true),
    ("gen", true, false),
    ("tem", true, false),
    ("full", false, false),
];

#[test]
fn whole_network_gradients_reach_every_parameter() {
    for (i, (variant, ls, sa)) in VARIANTS.into_iter().enumerate() {
        let mut rng = Rng::new(10 + i as u64);
        let cfg = config(variant, ls, sa, [6, 5, H, 3, HEADS, 1, 1, 4, 9]);
        let mut m = PditModel::new(cfg, &mut rng).unwrap();
        randomize(&mut m, &mut rng, 0.3);
        let b = batch(&m, &[1, 400, 1000], &[2, 4, 1], &mut rng);
        let base = m.clone();
        let (out, cache) = m.forward(&b).unwrap();
        let w = rng.normal_vec(out.len(), 1.0);
        m.backward(&cache, &w);
        for p in m.params() {
            assert!(
                p.grad.iter().any(|&g| g != 0.0),
                "{variant}: {} has no gradient",
                p.name
            );
        }
        let fwd = |m: &PditModel| project(&m.forward(&b).unwrap().0, &w);
        // The whole network composes the blocks, and c reaches every block: at eps 2^-5 the
        // truncation term reached 1e-2 on p_embedder (4e-4 at 2^-7, where f32 rounding of the
        // outputs gives ≈ 1.5·6e-8·√36·4/h ≈ 3e-4): eps 2^-7, atol 6e-4, rtol 2e-3.
        let cfg = GradCheck::new(0.0078125, 6e-4, 2e-3);
        assert_param_grads(variant, &base, &m, fwd, &cfg);
    }
}

#[test]
fn forward_equals_the_engines_on_the_saved_checkpoint() {
    // Odd sizes (d = 12, d_p = 7, H = 16, k = 3, 4 heads, 2 + 2 blocks, M = 40, L = 5, F = 33).
    for (i, (variant, ls, sa)) in VARIANTS.into_iter().enumerate() {
        let mut rng = Rng::new(20 + i as u64);
        let cfg = config(variant, ls, sa, [12, 7, 16, 3, 4, 2, 2, 5, 33]);
        let mut m = PditModel::new(cfg, &mut rng).unwrap();
        randomize(&mut m, &mut rng, 0.3);
        let b = batch(&m, &[1, 500, 1000, 137], &[1, 5, 3, 2], &mut rng);
        let (out, _) = m.forward(&b).unwrap();
        let engine = Pdit::from_bytes(&m.to_safetensors().unwrap()).unwrap();
        let d = m.config().latent_dim;
        let packed = b.packed_history(d);
        let mut want = vec![0.0; out.len()];
        let (p, h) = (Some(&b.p[..]), Some((&packed[..], &b.lens[..])));
        engine
            .forward(&b.z, &b.t, p, h, &mut PditWorkspace::default(), &mut want)
            .unwrap();
        // The same f32 operations in another order (the engine's fused linear+activation and
        // its attention kernel): outputs of order 1 agree to a few ulps of their sums.
        assert_close(
            &format!("{variant} ls={ls} sa={sa}"),
            &out,
            &want,
            2e-5,
            2e-5,
        );
    }
}

#[test]
fn the_checkpoint_holds_exactly_the_engines_tensors_and_starts_at_zero() {
    for (variant, ls, sa) in VARIANTS {
        let cfg = config(variant, ls, sa, [12, 7, 16, 3, 4, 2, 2, 5, 33]);
        let m = PditModel::new(cfg.clone(), &mut Rng::new(3)).unwrap();
        let mut got: Vec<(String, Vec<usize>)> = m
            .params()
            .iter()
            .map(|p| (p.name.clone(), p.shape.clone()))
            .collect();
        let mut want: Vec<(String, Vec<usize>)> = tensor_specs(&cfg)
            .unwrap()
            .into_iter()
            .map(|s| (s.name, s.shape))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{variant}");
        // adaLN-Zero: a fresh network outputs ε = v = 0 exactly.
        let b = batch(&m, &[7, 900], &[3, 1], &mut Rng::new(4));
        assert!(m.forward(&b).unwrap().0.iter().all(|&v| v == 0.0));
    }
}
