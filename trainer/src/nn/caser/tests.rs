use super::*;
use crate::nn::activation::{act_backward, act_forward};
use crate::nn::gradcheck::{
    GradCheck, assert_grad_piecewise, assert_param_grads_piecewise, project, randomize, signature,
    weight_file,
};
use crate::nn::linear::{Embedding, Linear};
use crate::nn::param::to_safetensors;
use seqrec_engine::backend::Backend;
use seqrec_engine::{CONFIG_KEY, Config, Cpu, LoadOptions, Model, Query, TensorLoader, blocks};
use seqrec_kernels::cpu::activation::Activation;
use seqrec_kernels::cpu::conv::caser_horizontal_ref;
use seqrec_kernels::testing::max_abs_diff;

fn convs(rng: &mut Rng, l: usize, e: usize) -> CaserConvs {
    let mut c = CaserConvs::new(l, e, 2, 3, rng);
    randomize(&mut c, rng, 0.5);
    c
}

#[test]
fn caser_conv_gradients() {
    // Piecewise linear in x and in the weights: within a piece the difference quotient is
    // exact up to f32 noise (≈ 1.5·6e-8·√32/h ≈ 1e-5 at h = 2^-5): atol 1e-4, rtol 1e-4.
    // Coordinates whose stencil changes a pooled window or a ReLU sign are skipped (the
    // piecewise check fails if that is more than a quarter of them).
    let mut rng = Rng::new(70);
    let (batch, l, e) = (2, 4, 3);
    let base = convs(&mut rng, l, e);
    let x = rng.normal_vec(batch * l * e, 1.0);
    let w = rng.normal_vec(batch * base.out_dim(), 1.0);
    let mut trained = base.clone();
    let (_, cache) = trained.forward(&x, batch);
    let dx = trained.backward(&cache, &w);
    let cfg = GradCheck {
        max_coords: 64,
        ..GradCheck::new(0.03125, 1e-4, 1e-4)
    };
    let run = |m: &CaserConvs, x: &[f32]| {
        let (y, cache) = m.forward(x, batch);
        (project(&y, &w), signature(cache.argmax()))
    };
    assert_grad_piecewise("caser dx", |xp| run(&base, xp), &x, &dx, &cfg);
    assert_param_grads_piecewise("caser", &base, &trained, |m| run(m, &x), &cfg);
}

#[test]
fn pooled_gradient_goes_to_the_argmax_window_only() {
    // One filter of height 1 over three rows whose pre-activations are −1, 2 and 1: only row 1
    // gets a gradient; with every pre-activation negative, none does.
    let mut c = CaserConvs::new(3, 1, 1, 1, &mut Rng::new(1));
    for p in c.params_mut() {
        p.value.fill(0.0);
    }
    c.conv_h[0].0.value[0] = 1.0;
    let x = [-1.0f32, 2.0, 1.0];
    let (y, cache) = c.forward(&x, 1);
    assert_eq!(y[1], 2.0); // [o_v (1), o_h: height 1, 2, 3]
    let mut d = vec![0.0; c.out_dim()];
    d[1] = 1.0;
    let dx = c.backward(&cache, &d);
    assert_eq!(dx, vec![0.0, 1.0, 0.0]);
    assert_eq!(c.conv_h[0].0.grad, vec![2.0]);
    assert_eq!(c.conv_h[0].1.grad, vec![1.0]);
    let neg = [-1.0f32, -2.0, -0.5];
    let (y, cache) = c.forward(&neg, 1);
    assert_eq!(y[1], 0.0);
    assert!(c.backward(&cache, &d).iter().all(|&g| g == 0.0));
}

#[test]
fn caser_convs_equal_the_engine_and_the_kernels() {
    // 1e-5 against the engine's CPU Caser convolutions and the kernels' f64 references
    // (observed ~1e-7: both sum the same products in f32, in different orders).
    let mut rng = Rng::new(71);
    let (l, e) = (5, 4);
    let c = convs(&mut rng, l, e);
    let file = weight_file(&c);
    let mut ld = TensorLoader::new(&file);
    let blk = blocks::CaserConvs::load(&Cpu::new(), &mut ld, l, e, 2, 3).unwrap();
    ld.finish("caser").unwrap();
    let x = rng.normal_vec(l * e, 1.0);
    let (ours, _) = c.forward(&x, 1);
    let (mut scratch, mut out) = (Vec::new(), Vec::new());
    Cpu::new()
        .caser_convs(&blk, &x, &mut scratch, &mut out)
        .unwrap();
    let err = max_abs_diff(&ours, &out[..c.out_dim()]);
    assert!(err <= 1e-5, "engine: max |Δ| {err:e}");
    for (hi, (w, b)) in c.conv_h.iter().enumerate() {
        let mut want = vec![0.0; 3];
        caser_horizontal_ref(&x, l, e, hi + 1, &w.value, &b.value, 3, &mut want);
        let o = 2 * e + hi * 3;
        let err = max_abs_diff(&ours[o..o + 3], &want);
        assert!(err <= 1e-5, "height {}: max |Δ| {err:e}", hi + 1);
    }
}

/// RecBole's Caser head from the blocks: embeddings, convolutions, `fc1` + ReLU, the user
/// embedding concatenated, `fc2` + ReLU.
#[derive(Clone, Debug)]
struct CaserNet {
    items: Embedding,
    users: Embedding,
    convs: CaserConvs,
    fc1: Linear,
    fc2: Linear,
}

crate::module_of_fields!(CaserNet: items, users, convs, fc1, fc2);

impl CaserNet {
    fn new(rng: &mut Rng, n_items: usize, n_users: usize, l: usize, e: usize) -> CaserNet {
        let convs = CaserConvs::new(l, e, 2, 3, rng);
        let mut net = CaserNet {
            items: Embedding::new("item_embedding.weight", n_items, e, 0.3, rng),
            users: Embedding::new("user_embedding.weight", n_users, e, 0.3, rng),
            fc1: Linear::new("fc1", convs.out_dim(), e, true, 0.3, rng),
            fc2: Linear::new("fc2", 2 * e, e, true, 0.3, rng),
            convs,
        };
        randomize(&mut net, rng, 0.3);
        net
    }

    /// The user vectors of `batch` right-padded windows (`[batch·L]` ids) and users, with the
    /// gradient of `Σ w·out` with respect to every parameter when `w` is given, and the
    /// signature of the piece (pooled windows, ReLU signs).
    fn run(&mut self, windows: &[u32], users: &[u32], w: Option<&[f32]>) -> (Vec<f32>, u64) {
        let (batch, e) = (users.len(), self.items.dim);
        let x = self.items.forward(windows);
        let (feats, c_cache) = self.convs.forward(&x, batch);
        let (mut z, fc1_cache) = self.fc1.forward(&feats, batch);
        let relu1 = act_forward(Activation::Relu, &mut z);
        let u = self.users.forward(users);
        let mut cat = vec![0.0; batch * 2 * e];
        for b in 0..batch {
            cat[b * 2 * e..b * 2 * e + e].copy_from_slice(&z[b * e..(b + 1) * e]);
            cat[b * 2 * e + e..(b + 1) * 2 * e].copy_from_slice(&u[b * e..(b + 1) * e]);
        }
        let (mut out, fc2_cache) = self.fc2.forward(&cat, batch);
        let relu2 = act_forward(Activation::Relu, &mut out);
        let piece = signature((
            c_cache.argmax(),
            relu1.input().iter().map(|&v| v > 0.0).collect::<Vec<_>>(),
            relu2.input().iter().map(|&v| v > 0.0).collect::<Vec<_>>(),
        ));
        if let Some(w) = w {
            let mut d = w.to_vec();
            act_backward(&relu2, &mut d);
            let d_cat = self.fc2.backward(&fc2_cache, &d);
            let (mut dz, mut du) = (vec![0.0; batch * e], vec![0.0; batch * e]);
            for b in 0..batch {
                dz[b * e..(b + 1) * e].copy_from_slice(&d_cat[b * 2 * e..b * 2 * e + e]);
                du[b * e..(b + 1) * e].copy_from_slice(&d_cat[b * 2 * e + e..(b + 1) * 2 * e]);
            }
            self.users.backward(users, &du);
            act_backward(&relu1, &mut dz);
            let d_feats = self.fc1.backward(&fc1_cache, &dz);
            let dx = self.convs.backward(&c_cache, &d_feats);
            self.items.backward(windows, &dx);
        }
        (out, piece)
    }
}

#[test]
fn caser_from_blocks_equals_the_engine_model() {
    // The whole Caser user vector composed from our blocks against the engine's model loaded
    // from the same tensors: 2e-5·max(1, |ref|), the fixtures' tolerance (observed ~1e-7).
    let mut rng = Rng::new(72);
    let (n_items, n_users, l, e) = (12, 5, 4, 6);
    let mut net = CaserNet::new(&mut rng, n_items, n_users, l, e);
    let cfg = Config::from_json(&format!(
        r#"{{"model":"caser","n_items":{n_items},"n_users":{n_users},"MAX_ITEM_LIST_LENGTH":{l},"embedding_size":{e},"nv":2,"nh":3}}"#
    ))
    .unwrap();
    let bytes = to_safetensors(&net.params(), &[(CONFIG_KEY, &cfg.to_json())]).unwrap();
    let model = Model::from_bytes(&bytes, &LoadOptions::default()).unwrap();
    let mut ws = model.new_workspace();
    for (history, user) in [(vec![3u32, 7, 1, 11], 2u32), (vec![5], 4), (vec![2, 9], 1)] {
        let mut window = history.clone();
        window.resize(l, 0);
        let (ours, _) = net.run(&window, &[user], None);
        let mut want = vec![0.0; e];
        model
            .user_vector(&Query::new(&history).user(user), &mut ws, &mut want)
            .unwrap();
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let err = max_abs_diff(&ours, &want);
        assert!(err <= 2e-5 * scale, "history {history:?}: max |Δ| {err:e}");
    }
}

#[test]
fn caser_from_blocks_gradients() {
    // End-to-end gradient of the composed head (embedding scatter, convolutions, two ReLU
    // layers, concatenation): every parameter against finite differences, skipping
    // coordinates whose stencil changes the piece. Within a piece the head is a polynomial of
    // degree ≤ 3 in any one parameter, which the 4-point rule differentiates exactly: the error
    // is f32 noise, ≈ 1.5·6e-8·√8/h ≈ 2e-5 at h = 2^-5: atol 1e-4, rtol 1e-3.
    let mut rng = Rng::new(73);
    let (n_items, n_users, l, e) = (7, 3, 3, 4);
    let base = CaserNet::new(&mut rng, n_items, n_users, l, e);
    let windows = [3u32, 5, 0, 1, 1, 6];
    let users = [2u32, 0];
    let w = rng.normal_vec(2 * e, 1.0);
    let mut trained = base.clone();
    trained.run(&windows, &users, Some(&w));
    let cfg = GradCheck::new(0.03125, 1e-4, 1e-3);
    assert_param_grads_piecewise(
        "caser net",
        &base,
        &trained,
        |m| {
            let (y, piece) = m.clone().run(&windows, &users, None);
            (project(&y, &w), piece)
        },
        &cfg,
    );
}
