//! Model-level gradient checks: for a tiny model of each architecture and a tiny batch, the
//! gradient that `backward` accumulates for the loss `Σ h·c` (a fixed random `c`) against
//! central finite differences of `forward`, on a seeded subset of the coordinates of every
//! parameter, in evaluation mode (no dropout). The blocks are checked on their own in
//! [`crate::nn`]; these tests check how each model wires them (gathers, scatters, residual
//! paths, the concatenation in Caser, tied tables).

use super::*;
use crate::nn::gradcheck::{
    GradCheck, assert_param_grads, assert_param_grads_piecewise, project, randomize,
};

/// Left-aligned windows of `len` ids, right-padded, with an output at every real position
/// (`all`) or only at the last one.
fn batch(seqs: &[&[u32]], users: &[u32], len: usize, all: bool) -> Batch {
    let mut b = Batch {
        n: seqs.len(),
        len,
        users: users.to_vec(),
        ..Default::default()
    };
    for (r, s) in seqs.iter().enumerate() {
        b.items.extend_from_slice(s);
        b.items.resize((r + 1) * len, 0);
        b.lens.push(s.len());
        let first = if all { 0 } else { s.len() - 1 };
        for t in first..s.len() {
            b.out_pos.push((r, t));
            b.targets.push(1);
        }
    }
    b
}

/// `trained` after one backward of `Σ h·c` from a zero gradient.
fn backward_once<M: TrainModel>(base: &M, batch: &Batch, c: &[f32]) -> M {
    let mut trained = base.clone();
    let (h, cache) = trained.forward(batch, None);
    assert_eq!(h.len(), c.len());
    trained.backward(&cache, c);
    trained
}

#[test]
fn sasrec_gradients() {
    // Embeddings, LayerNorms, attention and GELU feed-forward layers: smooth, but with a
    // large fifth derivative (at eps 2^-5 the truncation error reaches 4e-4), so eps 2^-6.
    // The f32 noise is then the larger term, ≈ 1e-4 observed (LayerNorms over 4 channels
    // divide by small spreads; the estimate 1.5·6e-8·√24/h ≈ 3e-5 assumes unit
    // sensitivities): atol 3e-4, rtol 1e-3.
    let mut rng = Rng::new(120);
    let mut cfg = SasRecConfig::new(9, 4);
    (cfg.hidden, cfg.inner, cfg.n_layers) = (4, 6, 2);
    let mut base = SasRecModel::new(cfg, &mut rng);
    randomize(&mut base, &mut rng, 0.5);
    let b = batch(&[&[3, 8, 1, 3], &[5, 2]], &[0, 0], 4, true);
    let c = rng.normal_vec(b.out_pos.len() * 4, 1.0);
    let trained = backward_once(&base, &b, &c);
    let cfg = GradCheck {
        max_coords: 24,
        ..GradCheck::new(0.015625, 3e-4, 1e-3)
    };
    assert_param_grads(
        "sasrec",
        &base,
        &trained,
        |m| project(&m.forward(&b, None).0, &c),
        &cfg,
    );
}

#[test]
fn gru4rec_gradients() {
    // Two bias-free GRU layers and the dense layer at every real position: smooth (sigmoid,
    // tanh). eps 2^-5, f32 noise of 30 outputs ≈ 2e-5: atol 1e-4, rtol 1e-3.
    let mut rng = Rng::new(121);
    let mut cfg = Gru4RecConfig::new(9, 5);
    (cfg.emb, cfg.hidden, cfg.n_layers) = (3, 4, 2);
    let mut base = Gru4RecModel::new(cfg, &mut rng);
    randomize(&mut base, &mut rng, 0.5);
    let b = batch(&[&[3, 8, 1, 3, 6], &[5, 2], &[7]], &[0; 3], 5, true);
    let c = rng.normal_vec(b.out_pos.len() * 3, 1.0);
    let trained = backward_once(&base, &b, &c);
    let cfg = GradCheck {
        max_coords: 24,
        ..GradCheck::new(0.03125, 1e-4, 1e-3)
    };
    assert_param_grads(
        "gru4rec",
        &base,
        &trained,
        |m| project(&m.forward(&b, None).0, &c),
        &cfg,
    );
}

#[test]
fn nextitnet_gradients() {
    // Two residual blocks (dilations 1, 2 and 2, 4 over a window of 5, kernel 2) read at the
    // last row of windows padded with item 0. Every LayerNorm gets γ in [0.1, 0.4] and
    // β = ±1.2 by channel, so with |x̂| ≤ sqrt(E − 1) = 2 every ReLU input stays at least
    // 0.2 from the kink under any ±2h move: both ReLU branches are exercised and the
    // piecewise check skips nothing. Smooth within the piece: eps 2^-5, f32 noise of 15
    // outputs ≈ 1e-5: atol 1e-4, rtol 1e-3.
    let mut rng = Rng::new(122);
    let mut cfg = NextItNetConfig::new(9, 5);
    (cfg.emb, cfg.kernel, cfg.block_num, cfg.dilations) = (5, 2, 1, vec![1, 2]);
    let mut base = NextItNetModel::new(cfg, &mut rng);
    randomize(&mut base, &mut rng, 0.4);
    for p in base.params_mut() {
        if p.name.contains(".ln") {
            let gamma = p.name.ends_with("weight");
            for (j, v) in p.value.iter_mut().enumerate() {
                *v = match (gamma, j % 2) {
                    (true, _) => rng.uniform(0.1, 0.4),
                    (false, 0) => 1.2,
                    (false, _) => -1.2,
                };
            }
        }
    }
    let b = batch(&[&[3, 8, 1, 3, 6], &[5, 2], &[7]], &[0; 3], 5, false);
    let c = rng.normal_vec(b.out_pos.len() * 5, 1.0);
    let trained = backward_once(&base, &b, &c);
    let cfg = GradCheck {
        max_coords: 24,
        ..GradCheck::new(0.03125, 1e-4, 1e-3)
    };
    assert_param_grads_piecewise(
        "nextitnet",
        &base,
        &trained,
        |m| {
            let (h, cache) = m.forward(&b, None);
            (project(&h, &c), cache.piece())
        },
        &cfg,
    );
}

#[test]
fn caser_gradients() {
    // Convolutions with a max-pool, two ReLU layers, the user embedding concatenated, on
    // windows padded with item 0. Within a piece the model is a polynomial of degree ≤ 3 in
    // any one parameter, which the 4-point rule differentiates exactly: the error is f32
    // noise, at most 1.5·6e-8·√12/h ≈ 4e-5 at h = 2^-7 (small, so that few stencils cross a
    // kink; 5e-6 observed): atol 5e-5, rtol 1e-3. Coordinates whose stencil changes a pooled window or a ReLU sign
    // are skipped (at most a quarter).
    let mut rng = Rng::new(123);
    let mut cfg = CaserConfig::new(9, 4, 3);
    (cfg.emb, cfg.nv, cfg.nh) = (4, 2, 3);
    let mut base = CaserModel::new(cfg, &mut rng);
    randomize(&mut base, &mut rng, 0.3);
    let b = batch(&[&[3, 8, 1], &[5, 2], &[7]], &[1, 3, 1], 3, false);
    let c = rng.normal_vec(b.out_pos.len() * 4, 1.0);
    let trained = backward_once(&base, &b, &c);
    let cfg = GradCheck {
        max_coords: 24,
        ..GradCheck::new(0.0078125, 5e-5, 1e-3)
    };
    assert_param_grads_piecewise(
        "caser",
        &base,
        &trained,
        |m| {
            let (h, cache) = m.forward(&b, None);
            (project(&h, &c), cache.piece())
        },
        &cfg,
    );
}

#[test]
fn regularization_gradients() {
    // RecBole's norm penalties: Σ reg·‖W‖ over the penalised tensors, whose gradient is
    // reg·W/‖W‖. f is computed in f64 from f32 values: eps 2^-6, atol 1e-6 (reg 0.5, so
    // gradients are ≤ 0.5), rtol 1e-4.
    let mut rng = Rng::new(124);
    let cfg = GradCheck {
        max_coords: 12,
        ..GradCheck::new(0.015625, 1e-6, 1e-4)
    };
    let mut ncfg = NextItNetConfig::new(7, 3);
    (ncfg.emb, ncfg.block_num, ncfg.dilations, ncfg.reg_weight) = (3, 1, vec![1], 0.5);
    let mut n = NextItNetModel::new(ncfg, &mut rng);
    randomize(&mut n, &mut rng, 0.5);
    let mut trained = n.clone();
    let value = trained.regularize();
    assert!(value > 0.0);
    assert_param_grads(
        "nextitnet reg",
        &n,
        &trained,
        |m| m.clone().regularize(),
        &cfg,
    );
    // Penalised: the item table, final_layer.weight and the block tensors named *weight
    // (convolutions and LayerNorm scales); biases are not.
    for p in trained.params() {
        let penalised = p.name == "item_embedding.weight"
            || p.name == "final_layer.weight"
            || (p.name.starts_with("residual_blocks") && p.name.ends_with("weight"));
        assert_eq!(p.grad.iter().any(|&g| g != 0.0), penalised, "{}", p.name);
    }

    let mut ccfg = CaserConfig::new(7, 3, 3);
    (ccfg.emb, ccfg.nv, ccfg.nh, ccfg.reg_weight) = (3, 1, 2, 0.5);
    let mut c = CaserModel::new(ccfg, &mut rng);
    randomize(&mut c, &mut rng, 0.5);
    let mut trained = c.clone();
    trained.regularize();
    assert_param_grads("caser reg", &c, &trained, |m| m.clone().regularize(), &cfg);
    let penalised: Vec<&str> = trained
        .params()
        .into_iter()
        .filter(|p| p.grad.iter().any(|&g| g != 0.0))
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        penalised,
        [
            "item_embedding.weight",
            "user_embedding.weight",
            "conv_v.weight",
            "fc1.weight",
            "fc2.weight"
        ]
    );
    // Architectures without a penalty add nothing.
    let mut g = Gru4RecModel::new(Gru4RecConfig::new(5, 3), &mut rng);
    assert_eq!(g.regularize(), 0.0);
}
