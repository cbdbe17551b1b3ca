//! Gradient checks of the RL heads: the head blocks on their own (supervised head linear and
//! tied, Q-head columns), and each method's whole loss end to end with its constants (TD
//! targets, SA2C's advantage) frozen at the base point, against central finite differences
//! of every parameter (a seeded subset of coordinates) in evaluation mode.

use super::samples::{RlBatch, Transitions};
use super::step::{RlOptions, StepCtx, apply, forward, targets};
use super::*;
use crate::models::{Gru4RecConfig, Gru4RecModel, SasRecConfig, SasRecModel};
use crate::nn::gradcheck::{GradCheck, assert_grad, assert_param_grads, project, randomize};
use crate::objectives::Similarity;

const N: usize = 11;

fn gru(rng: &mut Rng) -> Gru4RecModel {
    let mut cfg = Gru4RecConfig::new(N, 4);
    (cfg.emb, cfg.hidden) = (3, 4);
    Gru4RecModel::new(cfg, rng)
}

fn model<M: TrainModel>(kind: RlKind, sup: SupHead, backbone: M, rng: &mut Rng) -> RlModel<M> {
    let mut m = RlModel::new(kind, sup, N, backbone, rng);
    randomize(&mut m, rng, 0.5);
    m
}

#[test]
fn head_blocks() {
    // Linear maps of h: f is bilinear in (parameters, h), so the 4-point rule is exact up to
    // f32 rounding of ≈ 30 outputs of unit size (≈ 1e-6 at eps 2^-5): atol 2e-5, rtol 1e-4.
    let cfg = GradCheck::new(0.03125, 2e-5, 1e-4);
    let mut rng = Rng::new(80);
    for sup in [SupHead::Linear, SupHead::Tied] {
        let base = model(RlKind::Smorl, sup, gru(&mut rng), &mut rng);
        let rows = 3;
        let h = rng.normal_vec(rows * 3, 1.0);
        let c = rng.normal_vec(rows * N, 1.0);
        let mut trained = base.clone();
        let dh = trained.sup_backward(&h, rows, &c);
        let what = format!("sup head {}", sup.name());
        assert_param_grads(
            &what,
            &base,
            &trained,
            |m| project(&m.sup_logits(&h, rows), &c),
            &cfg,
        );
        assert_grad(
            &what,
            |x| project(&base.sup_logits(x, rows), &c),
            &h,
            &dh,
            &cfg,
        );
    }
    let base = model(RlKind::Smorl, SupHead::Linear, gru(&mut rng), &mut rng);
    let (rows, k) = (3, 2);
    let h = rng.normal_vec(rows * 3, 1.0);
    let ids = [4u32, 4, 1, 10, 7, 4];
    let c = rng.normal_vec(rows * k, 1.0);
    for o in 0..3 {
        let mut trained = base.clone();
        let dh = trained.q_columns_backward(o, &h, rows, &ids, k, &c);
        let f =
            |m: &RlModel<Gru4RecModel>, x: &[f32]| project(&m.q_columns(o, x, rows, &ids, k), &c);
        assert_param_grads("q columns", &base, &trained, |m| f(m, &h), &cfg);
        assert_grad("q columns dh", |x| f(&base, x), &h, &dh, &cfg);
        // The columns are those of the full Q matrix.
        let full = base.q_full(o, &h, rows);
        let cols = base.q_columns(o, &h, rows, &ids, k);
        for (i, &id) in ids.iter().enumerate() {
            assert!((cols[i] - full[(i / k) * N + id as usize]).abs() < 1e-6);
        }
    }
}

fn batch<M: TrainModel>(m: &RlModel<M>, n_neg: usize, rng: &mut Rng) -> RlBatch {
    let tr = Transitions::from_sequences(
        vec![
            (1, vec![3, 8, 1, 3, 6, 2]),
            (2, vec![5, 2, 9]),
            (3, vec![7, 10]),
        ],
        m.backbone().max_len(),
    )
    .unwrap();
    let ids: Vec<usize> = (0..tr.len()).collect();
    RlBatch::build(&tr, &ids, m.backbone(), N, n_neg, rng)
}

/// Checks `kind`'s whole loss with its constants frozen (see the module docs).
fn check_method<M: TrainModel>(kind: RlKind, base: RlModel<M>, cfg: &GradCheck, rng: &mut Rng) {
    let opts = RlOptions {
        negatives: 2,
        weights: [1.0, 0.7, 1.3],
        ..Default::default()
    };
    let target = model(kind, base.sup_head(), base.backbone().clone(), rng);
    let b = batch(&base, if kind.uses_negatives() { 2 } else { 0 }, rng);
    let sim_table = rng.normal_vec(N * 3, 1.0);
    let sim = Similarity::new(&sim_table, 3).unwrap();
    let tail: Vec<bool> = (0..N).map(|i| i % 3 != 0).collect();
    let ctx = StepCtx {
        opts: &opts,
        advantage: kind == RlKind::Sa2c,
        sim: Some(&sim),
        long_tail: Some(&tail),
    };
    let t = targets(&base, &target, &b, &ctx, &forward(&base, &b, None));
    assert_eq!(t.y.len(), base.n_q());
    assert_eq!(t.adv.is_some(), kind == RlKind::Sa2c);
    assert_eq!(
        t.y_neg.len(),
        if kind.uses_negatives() {
            2 * b.rows()
        } else {
            0
        }
    );
    let mut trained = base.clone();
    let f = forward(&trained, &b, None);
    let loss = apply(&mut trained, &b, &t, f, &opts);
    assert!(loss.ce != 0.0 && loss.td > 0.0, "{loss:?}");
    assert_param_grads(
        kind.name(),
        &base,
        &trained,
        |m| {
            let mut m = m.clone();
            let f = forward(&m, &b, None);
            apply(&mut m, &b, &t, f, &opts).total
        },
        cfg,
    );
}

#[test]
fn methods_end_to_end_on_gru4rec() {
    // GRU and heads are smooth; the loss is summed in f64 from f32 logits and Q values of
    // ≈ 10 rows: eps 2^-5, atol 1e-4, rtol 1e-3 (as the GRU4Rec model check).
    let cfg = GradCheck {
        max_coords: 16,
        ..GradCheck::new(0.03125, 1e-4, 1e-3)
    };
    let mut rng = Rng::new(81);
    for kind in RlKind::ALL {
        let m = model(kind, SupHead::Linear, gru(&mut rng), &mut rng);
        check_method(kind, m, &cfg, &mut rng);
    }
}

#[test]
fn sa2c_and_smorl_with_a_tied_head_on_sasrec() {
    // SASRec's LayerNorms over 4 channels and GELU, under a loss with squared TD errors,
    // have a large fifth derivative: at eps 2^-6 the truncation error reached 1.2e-2 on a
    // gradient of 1.8 (position_embedding), so eps 2^-8 (truncation 256 times smaller). The
    // f32 noise then dominates, ≈ 1e-4 observed (3.7e-4 at worst, on that gradient of 1.8):
    // atol 3e-4, rtol 1e-3, as the SASRec model check.
    let cfg = GradCheck {
        max_coords: 12,
        ..GradCheck::new(0.00390625, 3e-4, 1e-3)
    };
    let mut rng = Rng::new(82);
    let mut sc = SasRecConfig::new(N, 4);
    (sc.hidden, sc.inner, sc.n_layers, sc.n_heads) = (4, 6, 1, 1);
    for kind in [RlKind::Sa2c, RlKind::Smorl] {
        let m = model(
            kind,
            SupHead::Tied,
            SasRecModel::new(sc.clone(), &mut rng),
            &mut rng,
        );
        check_method(kind, m, &cfg, &mut rng);
    }
}

/// SNQN and SA2C with a language environment: Q heads over `s'^e ‖ h` and over `s'^e`
/// alone, LE rewards, and the augmentation losses, against finite differences.
#[test]
fn language_environment_variants_on_gru4rec() {
    use super::le::LeVariant;
    use super::samples::LeRows;
    // As `methods_end_to_end_on_gru4rec` (same blocks, two more linear terms).
    let cfg = GradCheck {
        max_coords: 16,
        ..GradCheck::new(0.03125, 1e-4, 1e-3)
    };
    let mut rng = Rng::new(83);
    let e = 5;
    for kind in [RlKind::Snqn, RlKind::Sa2c] {
        for name in ["leasr", "leas'r", "lear", "les"] {
            let variant: LeVariant = name.parse().unwrap();
            let opts = RlOptions {
                le: Some(variant),
                w_ah: 0.3,
                w_aq: 0.7,
                ..Default::default()
            };
            let make =
                |rng: &mut Rng| {
                    let mut m = RlModel::new(kind, SupHead::Linear, N, gru(rng), rng)
                        .with_le_state(variant.state, e, rng);
                    randomize(&mut m, rng, 0.5);
                    m
                };
            let base = make(&mut rng);
            let target = make(&mut rng);
            let mut b = batch(&base, 1, &mut rng);
            let rows = b.rows();
            let reads_state = variant.state != super::le::LeState::Backbone;
            b.le = Some(LeRows {
                state: if reads_state {
                    rng.normal_vec(rows * e, 1.0)
                } else {
                    vec![]
                },
                next: if reads_state {
                    rng.normal_vec(rows * e, 1.0)
                } else {
                    vec![]
                },
                reward: if variant.reward {
                    rng.normal_vec(rows, 1.0)
                } else {
                    vec![]
                },
                negative_reward: if variant.reward {
                    rng.normal_vec(rows, 1.0)
                } else {
                    vec![]
                },
                augmented: if variant.augment {
                    (0..rows).map(|r| 1 + (r as u32 * 7) % 10).collect()
                } else {
                    vec![]
                },
                augmented_reward: if variant.augment && variant.reward {
                    rng.normal_vec(rows, 1.0)
                } else {
                    vec![]
                },
            });
            let ctx = StepCtx {
                opts: &opts,
                advantage: kind == RlKind::Sa2c,
                sim: None,
                long_tail: None,
            };
            let t = targets(&base, &target, &b, &ctx, &forward(&base, &b, None));
            assert_eq!(t.y_aug.len(), if variant.augment { rows } else { 0 });
            // A terminal transition's target is its reward alone: the LE's, or 1.
            let l = b.le.as_ref().unwrap();
            for r in (0..rows).filter(|&r| b.done[r]) {
                let want = if variant.reward { l.reward[r] } else { 1.0 };
                assert_eq!(t.y[0][r], want, "{name}: terminal row {r}");
            }
            let mut trained = base.clone();
            let f = forward(&trained, &b, None);
            let loss = apply(&mut trained, &b, &t, f, &opts);
            assert!(loss.td > 0.0, "{loss:?}");
            let what = format!("{kind}-{name}");
            assert_param_grads(
                &what,
                &base,
                &trained,
                |m| {
                    let mut m = m.clone();
                    let f = forward(&m, &b, None);
                    apply(&mut m, &b, &t, f, &opts).total
                },
                &cfg,
            );
        }
    }
}
