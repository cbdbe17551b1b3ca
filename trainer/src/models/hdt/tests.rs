//! Gradient checks of the new blocks and of the whole loss, and the engine against the
//! trainer on saved checkpoints.

use super::blocks::IntraInput;
use super::*;
use crate::nn::gradcheck::{GradCheck, assert_grad, assert_param_grads, project, randomize};
use seqrec_engine::{Model, Workspace};

const N: usize = 13;
const D: usize = 8;

fn small(variant: Variant, backbone: BackboneKind) -> HdtConfig {
    let mut c = HdtConfig::new(variant, backbone, N);
    (c.max_len, c.dim, c.gru_hidden, c.sas_inner) = (5, D, 6, 12);
    (c.intra_layers, c.intra_inner, c.dropout) = (2, 12, 0.1);
    (c.alpha_r, c.beta_a, c.lambda_g) = (0.7, 0.6, 0.4);
    c
}

fn data(rng: &mut Rng) -> (Similarity, Vec<bool>) {
    let table = rng.normal_vec(N * 3, 1.0);
    let sim = Similarity::new(&table, 3).unwrap();
    let lt = (0..N).map(|i| i > 0 && rng.below(2) == 0).collect();
    (sim, lt)
}

fn model(variant: Variant, backbone: BackboneKind, seed: u64, std: f32) -> HdtModel {
    model_with(variant, backbone, false, seed, std)
}

fn model_with(
    variant: Variant,
    backbone: BackboneKind,
    tied: bool,
    seed: u64,
    std: f32,
) -> HdtModel {
    let mut rng = Rng::new(seed);
    let (sim, lt) = data(&mut rng);
    let mut cfg = small(variant, backbone);
    cfg.tied_heads = tied;
    let mut m = HdtModel::new(cfg, Some(&sim), Some(&lt), &mut rng).unwrap();
    randomize(&mut m, &mut rng, std);
    m
}

/// At initialisation the goal InterDT hands the backbone is at the scale of the item
/// embeddings (RMS of order 0.02), not of order 1 as after a unit-gain LayerNorm, under which it
/// drowned the items and training stalled at popularity.
#[test]
fn initial_goals_are_at_the_item_scale() {
    let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    let goal_rms = |gain: f32| {
        let mut rng = Rng::new(5);
        let (sim, lt) = data(&mut rng);
        let mut cfg = small(Variant::InterDt, BackboneKind::SasRec);
        cfg.inter_gain = gain;
        let m = HdtModel::new(cfg, Some(&sim), Some(&lt), &mut rng).unwrap();
        let b = batch(&mut Rng::new(8));
        rms(&m.goals(&b, None).1)
    };
    let items = {
        let mut rng = Rng::new(5);
        let (sim, lt) = data(&mut rng);
        let cfg = small(Variant::InterDt, BackboneKind::SasRec);
        let m = HdtModel::new(cfg, Some(&sim), Some(&lt), &mut rng).unwrap();
        rms(&m.backbone.item_table().value)
    };
    let (small_gain, unit_gain) = (goal_rms(0.02), goal_rms(1.0));
    assert!(
        small_gain < 2.0 * items,
        "goal RMS {small_gain} vs item RMS {items}"
    );
    assert!(unit_gain > 0.5, "unit gain: goal RMS {unit_gain}");
    let mut bad = small(Variant::InterDt, BackboneKind::SasRec);
    bad.inter_gain = f32::NAN;
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("inter_gain")
    );
}

/// Three sessions of 5, 3 and 1 items with random carried states and returns, the first with
/// a second window.
fn batch(rng: &mut Rng) -> HdtBatch {
    let sessions: [&[u32]; 3] = [&[3, 9, 1, 12, 3], &[5, 2, 7], &[4]];
    let len = 5;
    let mut b = HdtBatch {
        n: 3,
        len,
        ..Default::default()
    };
    for s in sessions {
        b.items.extend_from_slice(s);
        b.items.resize(b.items.len() + len - s.len(), 0);
        b.lens.push(s.len());
        b.from.push(0);
        b.step_weight.push(1.0 / (s.len() - 1).max(1) as f32);
        b.goal_weight.push(1.0);
        b.first.push(s[0] % 7 + 1);
        b.r_inter.push(rng.uniform(0.0, 2.0));
        for t in 0..len - 1 {
            let real = t + 1 < s.len();
            b.r_intra
                .push(if real { rng.uniform(-0.5, 1.0) } else { 0.0 });
            b.rn.push(if real { (s.len() - 1 - t) as f32 } else { 0.0 });
        }
    }
    b.s_prev = rng.normal_vec(3 * D, 0.5);
    b.u_prev = rng.normal_vec(3 * D, 0.5);
    // A second window of the first session (its steps from 2 on are new; no goal loss).
    b.n = 4;
    b.items.extend_from_slice(&[1, 12, 3, 6, 8]);
    b.lens.push(5);
    b.from.push(2);
    b.goal_weight.push(0.0);
    let w = 1.0 / (4 + 2) as f32;
    b.step_weight[0] = w;
    b.step_weight.push(w);
    b.first.push(b.first[0]);
    b.r_inter.push(b.r_inter[0]);
    b.r_intra.extend(rng.uniform_vec(4, -0.5, 1.0));
    b.rn.extend_from_slice(&[2.0, 2.0, 1.0, 0.0]);
    let (s0, u0) = (b.s_prev[..D].to_vec(), b.u_prev[..D].to_vec());
    b.s_prev.extend(s0);
    b.u_prev.extend(u0);
    b
}

#[test]
fn full_loss_gradients() {
    // L_S + α·L_R + β·L_a + λ·L_g of every variant on both backbones (and two with tied
    // heads), every parameter
    // against fourth-order central differences (eval mode). Smooth, with LayerNorms over 8
    // channels and GELUs: eps 2^-6 as the SASRec check; the f32 noise of the loss (a few
    // hundred f32 logits into f64 sums) is ~1e-5, amplified by the LayerNorms: atol 3e-4,
    // rtol 2e-3.
    let cfg = GradCheck {
        max_coords: 16,
        ..GradCheck::new(0.015625, 3e-4, 2e-3)
    };
    let cases = [
        (Variant::Hdt, BackboneKind::Gru4Rec, false),
        (Variant::Hdt, BackboneKind::SasRec, false),
        (Variant::InterDt, BackboneKind::Gru4Rec, false),
        (Variant::InterDt, BackboneKind::SasRec, false),
        (Variant::Hier, BackboneKind::Gru4Rec, false),
        (Variant::Hier, BackboneKind::SasRec, false),
        (Variant::Hdt, BackboneKind::SasRec, true),
        (Variant::InterDt, BackboneKind::Gru4Rec, true),
    ];
    for (k, (variant, backbone, tied)) in cases.into_iter().enumerate() {
        {
            let base = model_with(variant, backbone, tied, 10 + k as u64, 0.4);
            let b = batch(&mut Rng::new(7));
            let mut trained = base.clone();
            let out = trained.train_step(&b, None);
            assert!(out.loss.total.is_finite() && out.loss.seq > 0.0);
            assert_eq!(out.loss.ret > 0.0, variant == Variant::Hdt);
            assert_eq!(out.loss.goal > 0.0, variant != Variant::Hier);
            let what = format!("{variant}-{}-tied:{tied}", backbone.name());
            assert_param_grads(&what, &base, &trained, |m| m.loss(&b).loss.total, &cfg);
        }
    }
}

#[test]
fn carried_states_are_the_last_positions() {
    let m = model(Variant::Hier, BackboneKind::SasRec, 3, 0.3);
    let b = batch(&mut Rng::new(8));
    let out = m.loss(&b);
    let g = m.goals(&b, None).1;
    let (states, ..) = m.states(&b, &g, None);
    for (r, &l) in b.lens.iter().enumerate() {
        let want = &states[(r * b.len + l - 1) * D..(r * b.len + l) * D];
        assert_eq!(&out.s_next[r * D..(r + 1) * D], want);
    }
    // Hier carries its GRU output.
    assert_eq!(out.u_next, g);
}

#[test]
fn backbone_input_gradients() {
    // The gradient of Σ c·states with respect to the input rows of each backbone (the path
    // `x̃ → G` that replaces the item embedding): eps 2^-6, atol 3e-4, rtol 1e-3.
    let cfg = GradCheck::new(0.015625, 3e-4, 1e-3);
    let mut rng = Rng::new(31);
    for backbone in [BackboneKind::Gru4Rec, BackboneKind::SasRec] {
        let mut m = model(Variant::Hier, backbone, 32, 0.4);
        let (n, len) = (2, 4);
        let x = rng.normal_vec(n * len * D, 0.7);
        let valid = [true, true, true, true, true, true, false, false];
        let c = rng.normal_vec(n * len * D, 1.0);
        let f = |m: &HdtModel, x: &[f32]| -> f64 {
            let s = match &m.backbone {
                Backbone::Gru4Rec(g) => g.forward_inputs(x, n, len, None).0,
                Backbone::SasRec(s) => s.forward_inputs(x, n, len, &valid, None).0,
            };
            // Padded positions of the SASRec window are never read.
            project(&s, &c[..]) * 1.0
        };
        let dx = match &mut m.backbone {
            Backbone::Gru4Rec(g) => {
                let (_, cache) = g.forward_inputs(&x, n, len, None);
                g.backward_inputs(&cache, &c)
            }
            Backbone::SasRec(s) => {
                let (_, cache) = s.forward_inputs(&x, n, len, &valid, None);
                s.backward_inputs(&cache, &c)
            }
        };
        let probe = m.clone();
        assert_grad(backbone.name(), |x| f(&probe, x), &x, &dx, &cfg);
    }
}

#[test]
fn inter_dt_gradients() {
    // InterDT alone, unmasked and causal: parameters (E_R and the attention sublayer) for
    // Σ c1·R̃ + Σ c2·g. eps 2^-6, atol 3e-4, rtol 1e-3.
    let cfg = GradCheck {
        max_coords: 24,
        ..GradCheck::new(0.015625, 3e-4, 1e-3)
    };
    for causal in [false, true] {
        let mut rng = Rng::new(41);
        let mut c = small(Variant::InterDt, BackboneKind::Gru4Rec);
        c.inter_causal = causal;
        let mut base = InterDt::new(&c, &mut rng);
        randomize(&mut base, &mut rng, 0.5);
        let r = [0.3f32, 1.7, 1.1];
        let s = rng.normal_vec(3 * D, 0.8);
        let (c1, c2) = (rng.normal_vec(3 * D, 1.0), rng.normal_vec(3 * D, 1.0));
        let mut trained = base.clone();
        let (_, _, cache) = trained.forward(&r, &s, None);
        trained.backward(&cache, &c1, &c2);
        let f = |m: &InterDt| {
            let (rt, g, _) = m.forward(&r, &s, None);
            project(&rt, &c1) + project(&g, &c2)
        };
        assert_param_grads("inter", &base, &trained, f, &cfg);
        // With a causal mask R̃ ignores the state.
        let (rt0, ..) = base.forward(&r, &s, None);
        let (rt1, ..) = base.forward(&r, &[0.0; 3 * D], None);
        assert_eq!(rt0 == rt1, causal);
    }
}

#[test]
fn intra_dt_gradients() {
    // IntraDT alone (2 sessions of 3 steps, the second with 2 real steps): parameters and
    // the three inputs for Σ c·outputs over the 10 tokens training reads (80 outputs through
    // 2 layers of 4 LayerNorms over 8 channels). eps 2^-6; the f32 noise reaches ~2e-4 on
    // coordinates whose true gradient is 0 (the key biases): atol 4e-4, rtol 1e-3.
    let cfg = GradCheck {
        max_coords: 24,
        ..GradCheck::new(0.015625, 4e-4, 1e-3)
    };
    let mut rng = Rng::new(51);
    let mut base = IntraDt::new(&small(Variant::Hdt, BackboneKind::Gru4Rec), &mut rng);
    randomize(&mut base, &mut rng, 0.5);
    let (n, steps) = (2, 3);
    let goal = rng.normal_vec(n * D, 0.8);
    let rn = [2.0f32, 1.0, 0.0, 1.0, 1.0, 0.0];
    let states = rng.normal_vec(n * steps * D, 0.8);
    let actions = rng.normal_vec(n * steps * D, 0.8);
    let valid = [true, true, true, true, true, false];
    // Training reads the goal-return and state tokens of real steps only.
    let mut c = rng.normal_vec(n * 4 * steps * D, 1.0);
    for k in 0..n * 4 * steps {
        let (step, kind) = (k / 4, k % 4);
        if !valid[step] || kind % 2 == 1 {
            c[k * D..(k + 1) * D].fill(0.0);
        }
    }
    let run = |m: &IntraDt, goal: &[f32], states: &[f32], actions: &[f32]| {
        let inp = IntraInput {
            n,
            steps,
            goal,
            rn: &rn,
            states,
            actions,
            valid: &valid,
        };
        project(&m.forward(&inp, None).0, &c)
    };
    let mut trained = base.clone();
    let inp = IntraInput {
        n,
        steps,
        goal: &goal,
        rn: &rn,
        states: &states,
        actions: &actions,
        valid: &valid,
    };
    let (_, cache) = trained.forward(&inp, None);
    let g = trained.backward(&cache, &c);
    assert_param_grads(
        "intra",
        &base,
        &trained,
        |m| run(m, &goal, &states, &actions),
        &cfg,
    );
    assert_grad(
        "intra goal",
        |x| run(&base, x, &states, &actions),
        &goal,
        &g.goal,
        &cfg,
    );
    assert_grad(
        "intra states",
        |x| run(&base, &goal, x, &actions),
        &states,
        &g.states,
        &cfg,
    );
    assert_grad(
        "intra actions",
        |x| run(&base, &goal, &states, x),
        &actions,
        &g.actions,
        &cfg,
    );
}

/// A user's finished sessions and current session, for the engine tests.
const PAST: [&[u32]; 3] = [&[3, 9, 1], &[12, 4, 4, 8, 2, 6, 11], &[7]];
const CURRENT: &[u32] = &[5, 10, 2, 2, 9, 1, 3];

fn engine_session(m: &Model, ws: &mut Workspace) -> seqrec_engine::SessionState {
    let mut s = m.new_session().unwrap();
    for (k, sess) in PAST.iter().enumerate() {
        if k % 2 == 0 {
            m.session_extend(&mut s, sess, ws).unwrap();
        } else {
            for &i in *sess {
                m.session_push(&mut s, i, ws).unwrap();
            }
        }
        m.session_end(&mut s, ws).unwrap();
    }
    s
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    // Different summation orders (the engine's fused attention and scan kernels against
    // the trainer's gemm blocks) through up to 5 LayerNorm'd layers: 1e-4 of the scale.
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * scale,
            "{what}: item {i}: engine {a} vs trainer {b}"
        );
    }
}

#[test]
fn engine_matches_the_trainer_through_sessions() {
    // Every variant and backbone, random weights: the engine's session scores after the
    // finished sessions (replayed with push and with extend) equal the trainer's recomputation
    // at every prefix of the current session (longer than the window at the end), and after a
    // boundary (goal head) for hdt and interdt; linear and tied heads.
    for (k, variant) in [Variant::Hdt, Variant::InterDt, Variant::Hier]
        .into_iter()
        .enumerate()
    {
        for (backbone, tied) in [
            (BackboneKind::Gru4Rec, false),
            (BackboneKind::SasRec, false),
            (BackboneKind::Gru4Rec, true),
            (BackboneKind::SasRec, true),
        ] {
            let m = model_with(variant, backbone, tied, 60 + k as u64, 0.3);
            let engine =
                Model::from_bytes(&m.to_safetensors().unwrap(), &Default::default()).unwrap();
            assert_eq!(engine.info().arch, variant.name());
            let mut ws = engine.new_workspace();
            let mut s = engine_session(&engine, &mut ws);
            let mut scores = vec![0f32; N];
            let knobs = Knobs::default();
            let what = format!("{variant}-{}-tied:{tied}", backbone.name());
            match m.session_scores(&PAST, &[], &knobs) {
                Some(want) => {
                    engine.session_scores(&s, &mut scores).unwrap();
                    assert_close(&format!("{what} empty"), &scores, &want);
                }
                None => assert!(engine.session_scores(&s, &mut scores).is_err()),
            }
            for p in 1..=CURRENT.len() {
                engine
                    .session_push(&mut s, CURRENT[p - 1], &mut ws)
                    .unwrap();
                engine.session_scores(&s, &mut scores).unwrap();
                let want = m.session_scores(&PAST, &CURRENT[..p], &knobs).unwrap();
                assert_close(&format!("{what} prefix {p}"), &scores, &want);
            }
        }
    }
}

fn scores_of(m: &Model, s: &seqrec_engine::SessionState) -> Vec<f32> {
    let mut out = vec![0f32; m.info().n_items];
    m.session_scores(s, &mut out).unwrap();
    out
}

#[test]
fn sessions_equal_recomputation_and_the_past_matters() {
    // A session advanced event by event equals one replayed with whole sessions (same
    // operations, so bit for bit); a different past changes the scores.
    for variant in [Variant::Hdt, Variant::InterDt, Variant::Hier] {
        let m = model(variant, BackboneKind::SasRec, 70, 0.3);
        let e = Model::from_bytes(&m.to_safetensors().unwrap(), &Default::default()).unwrap();
        let mut ws = e.new_workspace();
        let mut a = engine_session(&e, &mut ws);
        let mut b = e.new_session().unwrap();
        for sess in PAST {
            e.session_extend(&mut b, sess, &mut ws).unwrap();
            e.session_end(&mut b, &mut ws).unwrap();
        }
        for &i in CURRENT {
            e.session_push(&mut a, i, &mut ws).unwrap();
        }
        e.session_extend(&mut b, CURRENT, &mut ws).unwrap();
        assert_eq!(a.history(), CURRENT);
        assert_eq!(scores_of(&e, &a), scores_of(&e, &b), "{variant}");
        let mut c = e.new_session().unwrap();
        e.session_extend(&mut c, &[1, 2, 3], &mut ws).unwrap();
        e.session_end(&mut c, &mut ws).unwrap();
        e.session_extend(&mut c, CURRENT, &mut ws).unwrap();
        assert_ne!(scores_of(&e, &a), scores_of(&e, &c), "{variant}");
    }
}

#[test]
fn knobs_change_the_ranking_and_match_the_trainer() {
    let m = model(Variant::Hdt, BackboneKind::Gru4Rec, 80, 0.4);
    let e = Model::from_bytes(&m.to_safetensors().unwrap(), &Default::default()).unwrap();
    let names: Vec<&str> = e.objective_specs().iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["alpha", "lambda_div", "target_unexp", "novelty_eps"]
    );
    let mut ws = e.new_workspace();
    let mut s = engine_session(&e, &mut ws);
    for &i in &CURRENT[..4] {
        e.session_push(&mut s, i, &mut ws).unwrap();
    }
    let base = scores_of(&e, &s);
    let top = |m: &Model, s: &seqrec_engine::SessionState, ws: &mut Workspace| {
        let (mut items, mut sc) = (vec![0u32; 5], vec![0f32; 5]);
        m.session_topk_into(s, 5, false, ws, &mut items, &mut sc)
            .unwrap();
        items
    };
    let top_base = top(&e, &s, &mut ws);
    // Each knob moves the scores; alpha reorders the top 5.
    for (name, value) in [
        ("alpha", 8.0),
        ("lambda_div", 0.0),
        ("target_unexp", 3.5),
        ("novelty_eps", 2.0),
    ] {
        e.session_set_objective(&mut s, name, value, &mut ws)
            .unwrap();
        assert_ne!(scores_of(&e, &s), base, "{name}");
        if name == "alpha" {
            assert_ne!(top(&e, &s, &mut ws), top_base);
        }
        let default = e
            .objective_specs()
            .iter()
            .find(|o| o.name == name)
            .unwrap()
            .default;
        e.session_set_objective(&mut s, name, default, &mut ws)
            .unwrap();
        assert_eq!(scores_of(&e, &s), base, "{name} back to its default");
    }
    // All knobs at once, against the trainer's reference.
    let knobs = Knobs {
        alpha: 3.0,
        lambda: 0.5,
        target_unexp: Some(1.2),
        novelty_eps: 0.6,
    };
    for (name, v) in [
        ("alpha", 3.0),
        ("lambda_div", 0.5),
        ("target_unexp", 1.2),
        ("novelty_eps", 0.6),
    ] {
        e.session_set_objective(&mut s, name, v, &mut ws).unwrap();
    }
    let want = m.session_scores(&PAST, &CURRENT[..4], &knobs).unwrap();
    assert_close("knobs", &scores_of(&e, &s), &want);
    // Out-of-range values are refused and leave the session unchanged.
    assert!(
        e.session_set_objective(&mut s, "alpha", -1.0, &mut ws)
            .is_err()
    );
    assert_close("unchanged", &scores_of(&e, &s), &want);
}
