//! Gradient checks of the Decision Transformers (the token interleaving, the heads read at
//! the preceding token, the shared item table, the full loss) and the no-leak property.

use super::forward::{DtBatch, DtGrads, loss};
use super::returns::N_OBJ;
use super::*;
use crate::nn::gradcheck::{GradCheck, assert_param_grads, project, randomize};

/// A tiny model: 9 ids, window 4, width 4, UserTrans 1 layer, MoTrans 2 layers.
fn tiny(order: TokenOrder, embed_ln: bool, objectives: [bool; N_OBJ], seed: u64) -> DtModel {
    tiny_tied(order, embed_ln, objectives, [false; 2], false, seed)
}

fn tiny_tied(
    order: TokenOrder,
    embed_ln: bool,
    objectives: [bool; N_OBJ],
    tie_heads: [bool; 2],
    return_bias: bool,
    seed: u64,
) -> DtModel {
    let mut rng = Rng::new(seed);
    let mut cfg = DtConfig::new(order, 9, 4).with_hidden(4);
    (cfg.user.inner, cfg.inner, cfg.layers) = (6, 6, 2);
    cfg.embed_ln = embed_ln;
    cfg.objectives = objectives;
    cfg.beta = 0.7;
    cfg.tie_heads = tie_heads;
    cfg.return_bias = return_bias;
    let mut m = DtModel::new(cfg, &mut rng);
    randomize(&mut m, &mut rng, 0.3);
    m
}

/// Two windows: 4 real steps and 2 real steps (padded), returns of a realistic scale.
fn tiny_batch() -> DtBatch {
    let r = |a: f32, n: f32, d: f32| [a, n, d];
    DtBatch {
        n: 2,
        len: 4,
        states: vec![3, 8, 1, 3, 5, 2, 0, 0],
        actions: vec![8, 1, 3, 6, 2, 7, 0, 0],
        returns: vec![
            r(4.0, 2.0, 2.0),
            r(3.0, 1.0, 1.2),
            r(2.0, 1.0, 0.7),
            r(1.0, 0.0, 1.4),
            r(2.0, 1.0, 2.0),
            r(1.0, 1.0, 0.4),
            [0.0; N_OBJ],
            [0.0; N_OBJ],
        ],
        lens: vec![4, 2],
    }
}

fn random_grads(m: &DtModel, b: &DtBatch, rng: &mut Rng) -> DtGrads {
    let (out, _) = m.forward(b, None);
    DtGrads {
        user_logits: rng.normal_vec(out.user_logits.len(), 1.0),
        action_logits: rng.normal_vec(out.action_logits.len(), 1.0),
        ret_pred: std::array::from_fn(|o| rng.normal_vec(out.ret_pred[o].len(), 1.0)),
    }
}

fn projected(m: &DtModel, b: &DtBatch, c: &DtGrads) -> f64 {
    let (out, _) = m.forward(b, None);
    let mut v =
        project(&out.user_logits, &c.user_logits) + project(&out.action_logits, &c.action_logits);
    for o in 0..N_OBJ {
        v += project(&out.ret_pred[o], &c.ret_pred[o]);
    }
    v
}

// Tolerances for every check below. Embeddings, LayerNorms over 4 channels, attention and
// GELU feed-forward layers stacked three deep (UserTrans, then two MoTrans layers), and in
// the loss squared return errors of targets up to 4: the function curves strongly, so the
// fourth-order stencil's truncation error is 3e-2 at eps 2^-6 and 1e-3 at 2^-7 on the loss
// (measured), and below the f32 noise at eps 2^-8. That noise, 1.5·δ/h with δ ≈ 5e-7 over
// ~130 outputs, is ≈ 3e-4 (observed worst 4.3e-4 over every parameter with rtol's share):
// atol 5e-4, rtol 2e-3. A dropped or doubled gradient path (sizes 0.1-3 here) is far outside.
fn check_cfg() -> GradCheck {
    GradCheck {
        max_coords: 16,
        ..GradCheck::new(0.00390625, 5e-4, 2e-3)
    }
}

#[test]
fn output_gradients_of_both_orders() {
    // The wiring: Σ c·outputs over Ŷ, Â and every R̂, for each token order, with and without
    // the embedding LayerNorm, with the novelty objective's tokens switched off, with both
    // heads tied to the item table, and with the affine return embedding (its bias on a
    // disabled objective's tokens too).
    let b = tiny_batch();
    for (i, (order, ln, objectives, tied, bias)) in [
        (
            TokenOrder::StateFirst,
            true,
            [true; N_OBJ],
            [false; 2],
            false,
        ),
        (
            TokenOrder::ReturnsFirst,
            true,
            [true; N_OBJ],
            [false; 2],
            false,
        ),
        (
            TokenOrder::StateFirst,
            false,
            [true, false, true],
            [false; 2],
            false,
        ),
        (
            TokenOrder::ReturnsFirst,
            true,
            [true; N_OBJ],
            [true; 2],
            false,
        ),
        (
            TokenOrder::StateFirst,
            true,
            [true; N_OBJ],
            [true, false],
            false,
        ),
        (
            TokenOrder::StateFirst,
            true,
            [true, false, true],
            [false; 2],
            true,
        ),
        (
            TokenOrder::ReturnsFirst,
            true,
            [true; N_OBJ],
            [true; 2],
            true,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        // (Seeds 145 and 180 put an f32 finite difference of UserTrans's query bias 1.5% off
        // its analytic value, at the check's tolerance, with or without the return bias.)
        let base = tiny_tied(order, ln, objectives, tied, bias, 170 + i as u64);
        assert_eq!(base.ret_bias.is_some(), bias);
        let mut rng = Rng::new(7 + i as u64);
        let c = random_grads(&base, &b, &mut rng);
        let mut trained = base.clone();
        let (_, cache) = trained.forward(&b, None);
        trained.backward(&cache, &c);
        assert_param_grads(
            &format!("{} outputs", order.arch()),
            &base,
            &trained,
            |m| projected(m, &b, &c),
            &check_cfg(),
        );
    }
}

#[test]
fn full_loss_gradient() {
    // L = L_S + L_a + β·L_R against the model's own gradient from `step`.
    let b = tiny_batch();
    for (i, order) in [TokenOrder::StateFirst, TokenOrder::ReturnsFirst]
        .into_iter()
        .enumerate()
    {
        let base = tiny(order, true, [true; N_OBJ], 150 + i as u64);
        let mut trained = base.clone();
        let parts = trained.step(&b, None);
        assert!(
            (parts.total - (parts.supervised + parts.action + f64::from(0.7f32) * parts.returns))
                .abs()
                < 1e-9
        );
        assert_param_grads(
            &format!("{} loss", order.arch()),
            &base,
            &trained,
            |m| {
                let (out, _) = m.forward(&b, None);
                loss(&out, &b, 9, 0.7).0.total
            },
            &check_cfg(),
        );
    }
}

#[test]
fn without_user_grad_usertrans_learns_from_the_supervised_head_only() {
    // With `user_grad` off, UserTrans's parameters and the item table get exactly the
    // gradient of the Ŷ outputs alone (the same f32 operations in the same order), and
    // MoTrans's parameters still get theirs.
    let b = tiny_batch();
    let mut base = tiny(TokenOrder::StateFirst, true, [true; N_OBJ], 21);
    base.cfg.user_grad = false;
    let mut rng = Rng::new(4);
    let c = random_grads(&base, &b, &mut rng);
    let only_user = DtGrads {
        user_logits: c.user_logits.clone(),
        action_logits: vec![0.0; c.action_logits.len()],
        ret_pred: std::array::from_fn(|o| vec![0.0; c.ret_pred[o].len()]),
    };
    let run = |d: &DtGrads| {
        let mut m = base.clone();
        let (_, cache) = m.forward(&b, None);
        m.backward(&cache, d);
        m
    };
    let (all, user) = (run(&c), run(&only_user));
    let n_user = base.user.params().len();
    for (p, q) in all.params().iter().zip(user.params()).take(n_user) {
        assert_eq!(p.grad, q.grad, "{}", p.name);
    }
    let moved = all.params()[n_user..]
        .iter()
        .zip(&user.params()[n_user..])
        .any(|(p, q)| p.grad != q.grad);
    assert!(moved, "MoTrans got no gradient");
}

#[test]
fn loss_terms_count_the_right_steps() {
    // 6 real steps: every cross-entropy row, and every return except MRDT's first R_acc.
    let b = tiny_batch();
    let m = tiny(TokenOrder::ReturnsFirst, true, [true; N_OBJ], 3);
    let (out, _) = m.forward(&b, None);
    assert_eq!(out.steps.len(), 6);
    assert_eq!(out.ret_steps.map(|s| s.len()), [4, 6, 6]);
    let m = tiny(TokenOrder::StateFirst, true, [true; N_OBJ], 3);
    let (out, _) = m.forward(&b, None);
    assert_eq!(out.ret_steps.map(|s| s.len()), [6, 6, 6]);
}

#[test]
fn no_head_sees_its_own_target() {
    // Changing a step's action changes no action prediction up to that step; changing a
    // step's return of objective o changes no R̂_o up to that step (nor any earlier output).
    for order in [TokenOrder::StateFirst, TokenOrder::ReturnsFirst] {
        let m = tiny(order, true, [true; N_OBJ], 11);
        let b = tiny_batch();
        let (base, _) = m.forward(&b, None);
        let n = 9;
        for t in 0..4 {
            let mut b2 = b.clone();
            b2.actions[t] = if b.actions[t] == 5 { 4 } else { 5 };
            let (out, _) = m.forward(&b2, None);
            for k in 0..=t {
                assert_eq!(
                    out.action_logits[k * n..(k + 1) * n],
                    base.action_logits[k * n..(k + 1) * n],
                    "{}: action of step {t} leaks into Â_{k}",
                    order.arch()
                );
            }
            for o in 0..N_OBJ {
                let mut b3 = b.clone();
                b3.returns[t][o] += 1.5;
                let (out, _) = m.forward(&b3, None);
                for (i, &k) in base.ret_steps[o].iter().enumerate() {
                    if out.steps[k].0 == 0 && out.steps[k].1 <= t {
                        assert_eq!(
                            out.ret_pred[o][i],
                            base.ret_pred[o][i],
                            "{}: R_{t},{o} leaks into its prediction at step {k}",
                            order.arch()
                        );
                    }
                }
            }
        }
        // The second window is independent of the first.
        let mut b4 = b.clone();
        b4.states[0] = 7;
        let (out, _) = m.forward(&b4, None);
        assert_eq!(out.action_logits[4 * n..], base.action_logits[4 * n..]);
    }
}
