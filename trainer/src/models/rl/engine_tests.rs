//! The trainer's serving scores and the engine's agree on a saved checkpoint of every method,
//! backbone and supervised head (random weights), from scratch and through sessions; SMORL's
//! knobs change the ranking.

use super::*;
use crate::models::{
    CaserConfig, CaserModel, Gru4RecConfig, Gru4RecModel, NextItNetConfig, NextItNetModel,
    SasRecConfig, SasRecModel,
};
use seqrec_engine::{Model, Query};

const N: usize = 37;
const L: usize = 6;

fn randomized<M: TrainModel>(kind: RlKind, sup: SupHead, backbone: M, rng: &mut Rng) -> RlModel<M> {
    let mut m = RlModel::new(kind, sup, N, backbone, rng);
    for p in m.params_mut() {
        p.init_normal(rng, 0.3);
    }
    m
}

/// Histories shorter than, as long as and longer than the window.
const HISTORIES: [&[u32]; 4] = [
    &[5],
    &[3, 9, 1, 36],
    &[7, 7, 20, 11, 4, 30],
    &[2, 8, 1, 3, 6, 5, 9, 12, 33],
];

/// Engine scores (`Model::score`, then a session fed event by event) against
/// `RlModel::score_history` with weights `w`, to `1e-4·max(1, max |score|)` (the states agree
/// to ≈ 1e-6 relative, the heads are dot products of width ≤ 8 with weights of ≈ 0.3).
fn assert_agree<M: TrainModel>(m: &RlModel<M>, user: Option<u32>, w: &[f32]) {
    let bytes = m.to_safetensors().unwrap();
    let engine = Model::from_bytes(&bytes, &Default::default()).unwrap();
    assert_eq!(engine.info().arch, m.kind().name());
    let mut obj = engine.default_objectives();
    if m.kind() == RlKind::Smorl {
        for (name, &v) in ["w_acc", "w_div", "w_nov"].iter().zip(w) {
            obj.set(name, v).unwrap();
        }
    }
    let mut ws = engine.new_workspace();
    let mut got = vec![0f32; N];
    let mut session = match user {
        Some(u) => engine.new_session_for_user(u).unwrap(),
        None => engine.new_session().unwrap(),
    };
    for (name, &v) in obj.iter().map(|(n, _)| n).zip(w) {
        engine
            .session_set_objective(&mut session, name, v, &mut ws)
            .unwrap();
    }
    let what = format!(
        "{} on {} ({})",
        m.kind(),
        m.backbone().arch(),
        m.sup_head().name()
    );
    let check = |got: &[f32], want: &[f32], h: &[u32], how: &str| {
        let scale = want.iter().fold(1f32, |a, v| a.max(v.abs()));
        for (i, (a, b)) in got.iter().zip(want).enumerate().skip(1) {
            assert!(
                (a - b).abs() <= 1e-4 * scale,
                "{what}, {how}, history {h:?}, item {i}: engine {a} vs trainer {b}"
            );
        }
    };
    for h in HISTORIES {
        let want = m.score_history(h, user.unwrap_or(0), w);
        let mut q = Query::new(h).objectives(&obj);
        if let Some(u) = user {
            q = q.user(u);
        }
        engine.score(&q, &mut ws, &mut got).unwrap();
        check(&got, &want, h, "from scratch");
    }
    let long = HISTORIES[3];
    for t in 0..long.len() {
        engine.session_push(&mut session, long[t], &mut ws).unwrap();
        engine.session_scores(&session, &mut got).unwrap();
        let want = m.score_history(&long[..=t], user.unwrap_or(0), w);
        check(&got, &want, &long[..=t], "session");
    }
}

fn backbones(rng: &mut Rng) -> (SasRecModel, Gru4RecModel, NextItNetModel, CaserModel) {
    let mut s = SasRecConfig::new(N, L);
    (s.hidden, s.inner, s.n_layers, s.n_heads) = (8, 12, 2, 2);
    let mut g = Gru4RecConfig::new(N, L);
    (g.emb, g.hidden) = (8, 6);
    let mut n = NextItNetConfig::new(N, L);
    (n.emb, n.block_num, n.dilations) = (8, 1, vec![1, 2]);
    let mut c = CaserConfig::new(N, 5, L);
    (c.emb, c.nv, c.nh) = (8, 2, 3);
    (
        SasRecModel::new(s, rng),
        Gru4RecModel::new(g, rng),
        NextItNetModel::new(n, rng),
        CaserModel::new(c, rng),
    )
}

#[test]
fn trainer_and_engine_agree_for_every_method_backbone_and_head() {
    let mut rng = Rng::new(90);
    let w = [0.5, 2.0, 1.5];
    for kind in RlKind::ALL {
        for sup in [SupHead::Linear, SupHead::Tied] {
            let (s, g, n, c) = backbones(&mut rng);
            assert_agree(&randomized(kind, sup, s, &mut rng), None, &w);
            assert_agree(&randomized(kind, sup, g, &mut rng), None, &w);
            assert_agree(&randomized(kind, sup, n, &mut rng), None, &w);
            assert_agree(&randomized(kind, sup, c, &mut rng), Some(3), &w);
        }
    }
    // SMORL at its defaults (1, 1, 1), and with every Q head off (the supervised head alone).
    let (s, ..) = backbones(&mut rng);
    let m = randomized(RlKind::Smorl, SupHead::Linear, s, &mut rng);
    assert_agree(&m, None, &[1.0; 3]);
    assert_agree(&m, None, &[0.0; 3]);
}

#[test]
fn smorl_knobs_change_the_ranking() {
    let mut rng = Rng::new(91);
    let (_, g, ..) = backbones(&mut rng);
    let m = randomized(RlKind::Smorl, SupHead::Linear, g, &mut rng);
    let engine = Model::from_bytes(&m.to_safetensors().unwrap(), &Default::default()).unwrap();
    let names: Vec<&str> = engine.objective_specs().iter().map(|s| s.name).collect();
    assert_eq!(names, ["w_acc", "w_div", "w_nov"]);
    let mut ws = engine.new_workspace();
    let h: &[u32] = &[3, 9, 1, 36];
    let top = |obj: &seqrec_engine::Objectives, ws: &mut _| -> Vec<u32> {
        engine
            .topk(&Query::new(h).objectives(obj), 10, ws)
            .unwrap()
            .iter()
            .map(|s| s.item)
            .collect()
    };
    let base = top(&engine.default_objectives(), &mut ws);
    let mut rankings = vec![base.clone()];
    // The default serves the supervised head alone: the same top 10 as every knob at 0.
    let mut zeros = engine.default_objectives();
    for name in ["w_acc", "w_div", "w_nov"] {
        zeros.set(name, 0.0).unwrap();
    }
    assert_eq!(top(&zeros, &mut ws), base);
    for (name, v) in [("w_acc", 1.0), ("w_div", 20.0), ("w_nov", 20.0)] {
        let mut obj = engine.default_objectives();
        obj.set(name, v).unwrap();
        let r = top(&obj, &mut ws);
        assert_ne!(r, base, "{name} = {v} leaves the top 10 unchanged");
        rankings.push(r);
    }
    assert_ne!(rankings[2], rankings[3]);
    // A heavy diversity weight ranks by Q_div: the top item is its argmax.
    let q = m.q_full(
        1,
        &{
            let batch = samples::window_batch(&[(h, 0)], m.backbone());
            m.backbone().forward(&batch, None).0
        },
        1,
    );
    let mut obj = engine.default_objectives();
    obj.set("w_div", 1000.0).unwrap();
    assert_eq!(top(&obj, &mut ws)[0], loss::argmax_rows(&q, 1, N)[0]);
    // Knobs outside their range are rejected, naming the knob.
    let mut obj = engine.default_objectives();
    let err = obj.set("w_div", -1.0).unwrap_err().to_string();
    assert!(err.contains("w_div"), "{err}");
}
