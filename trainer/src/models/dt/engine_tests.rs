//! The trainer's Decision Transformers against the engine's on saved checkpoints (random
//! weights): the checkpoint's similarity table gives the returns of the trainer's, the served
//! scores equal the trainer's forward, knobs move the ranking, sessions equal stateless
//! scoring.

use super::returns::N_OBJ;
use super::*;
use crate::nn::gradcheck::randomize;
use crate::objectives::Similarity;
use seqrec_engine::objectives::returns::{ReturnKnobs, inference_returns};
use seqrec_engine::objectives::similarity::NormalizedRows;
use seqrec_engine::{Model, Objectives, Query};

const N: usize = 40;

/// A small model of each order (width 8, window 6) with random weights and serving tables:
/// a random similarity table of width 5 and every third item long tail.
fn model(order: TokenOrder, seed: u64) -> (DtModel, Similarity, Vec<bool>) {
    let mut rng = Rng::new(seed);
    let mut cfg = DtConfig::new(order, N, 6).with_hidden(8);
    // MRDT with both heads tied to the item table (the checkpoint carries copies).
    cfg.tie_heads = [order == TokenOrder::ReturnsFirst; 2];
    // MODT4R with the affine return embedding (`motrans.return_embedding.bias`).
    cfg.return_bias = order == TokenOrder::StateFirst;
    cfg.layers = 2;
    cfg.heads = 2;
    let mut m = DtModel::new(cfg, &mut rng);
    randomize(&mut m, &mut rng, 0.3);
    let sim = Similarity::new(&rng.normal_vec(N * 5, 1.0), 5).unwrap();
    let tail: Vec<bool> = (0..N).map(|i| i > 0 && i % 3 == 0).collect();
    m.set_tables(ObjectiveTables::new(&tail, &sim).unwrap())
        .unwrap();
    (m, sim, tail)
}

fn knobs_of(k: &ReturnKnobs, alpha: f32, engine: &Model) -> Objectives {
    let mut o = engine.default_objectives();
    o.set("alpha", alpha).unwrap();
    o.set("lambda_div", k.lambda_div).unwrap();
    o.set("novelty_eps", k.novelty_eps).unwrap();
    o.set("acc_offset", k.acc_offset).unwrap();
    for (name, t) in ["target_acc", "target_nov", "target_div"]
        .iter()
        .zip(k.targets)
    {
        o.set(name, t).unwrap();
    }
    o
}

fn settings() -> Vec<(ReturnKnobs, f32)> {
    let d = ReturnKnobs::default();
    vec![
        (d, 1.0),
        (
            ReturnKnobs {
                lambda_div: 3.0,
                novelty_eps: 0.2,
                ..d
            },
            0.0,
        ),
        (
            ReturnKnobs {
                acc_offset: 0.0,
                targets: [4.0, f32::NAN, 0.3],
                ..d
            },
            2.5,
        ),
    ]
}

#[test]
fn engine_scores_equal_the_trainer_forward() {
    // Windows of 1 to 6 items (p = 1 takes the special returns), under three knob settings,
    // for both orders. Scores: 1e-5 of the largest |score| (f32 products of width 8 through
    // five post-LN sublayers in two implementations; observed ≤ 5e-7 relative). Returns:
    // Algorithm 2 over the trainer's f64 similarity table and over the f32 rows the checkpoint
    // stores, rounded to f32: 1e-6 absolute.
    let mut rng = Rng::new(5);
    for (i, order) in [TokenOrder::StateFirst, TokenOrder::ReturnsFirst]
        .into_iter()
        .enumerate()
    {
        let (m, sim, tail) = model(order, 30 + i as u64);
        let bytes = m.to_safetensors().unwrap();
        let engine = Model::from_bytes(&bytes, &Default::default()).unwrap();
        assert_eq!(engine.info().arch, order.arch());
        assert_eq!(engine.info().dim, 2 * 8 + 2);
        let mut ws = engine.new_workspace();
        let mut got = vec![0.0f32; N];
        let table =
            NormalizedRows::from_normalized(m.tables().unwrap().similarity.value.clone(), 5);
        for p in 1..=6 {
            let window: Vec<u32> = (0..p).map(|_| 1 + rng.below(N - 1) as u32).collect();
            for (k, alpha) in settings() {
                let (mut want_r, mut eng_r) = (Vec::new(), Vec::new());
                inference_returns(&window, &tail, &sim, &k, &mut want_r);
                inference_returns(&window, &tail, &table, &k, &mut eng_r);
                for (a, b) in want_r.iter().zip(&eng_r) {
                    for o in 0..N_OBJ {
                        assert!(
                            (a[o] - b[o]).abs() <= 1e-6,
                            "returns {want_r:?} vs {eng_r:?}"
                        );
                    }
                }
                let want = m.scores(&window, &want_r, alpha);
                let obj = knobs_of(&k, alpha, &engine);
                engine
                    .score(&Query::new(&window).objectives(&obj), &mut ws, &mut got)
                    .unwrap();
                let scale = want.iter().fold(1f32, |s, v| s.max(v.abs()));
                for (j, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5 * scale,
                        "{} p={p} item {j}: engine {a} vs trainer {b}",
                        order.arch()
                    );
                }
            }
        }
    }
}

#[test]
fn knobs_change_the_ranking_and_sessions_equal_stateless_scoring() {
    let (m, _, _) = model(TokenOrder::StateFirst, 40);
    let engine = Model::from_bytes(&m.to_safetensors().unwrap(), &Default::default()).unwrap();
    let mut ws = engine.new_workspace();
    let history: Vec<u32> = vec![3, 17, 9, 25, 30, 12, 8, 21];
    let top = |obj: &Objectives, ws: &mut seqrec_engine::Workspace| {
        engine
            .topk(&Query::new(&history).objectives(obj), 10, ws)
            .unwrap()
            .iter()
            .map(|s| s.item)
            .collect::<Vec<_>>()
    };
    let base = top(&engine.default_objectives(), &mut ws);
    for (name, value) in [
        ("alpha", 0.0),
        ("lambda_div", 8.0),
        ("novelty_eps", 1.0),
        ("target_acc", -3.0),
    ] {
        let mut o = engine.default_objectives();
        o.set(name, value).unwrap();
        assert_ne!(
            top(&o, &mut ws),
            base,
            "{name} = {value} left the top 10 unchanged"
        );
    }
    // A session (windows sliding past max_len = 6) gives the stateless scores of its history
    // at every step, also after a knob changes mid-session.
    let mut s = engine.session().unwrap();
    let mut from_session = vec![0.0f32; N];
    let mut stateless = vec![0.0f32; N];
    let mut obj = engine.default_objectives();
    for (i, &item) in history.iter().enumerate() {
        s.push(item).unwrap();
        if i == 4 {
            s.set_objective("lambda_div", 2.0).unwrap();
            obj.set("lambda_div", 2.0).unwrap();
        }
        s.scores(&mut from_session).unwrap();
        engine
            .score(
                &Query::new(&history[..=i]).objectives(&obj),
                &mut ws,
                &mut stateless,
            )
            .unwrap();
        assert_eq!(from_session, stateless, "after {} events", i + 1);
    }
    let e = s.set_objective("gamma", 1.0).unwrap_err().to_string();
    assert!(e.contains("alpha") && e.contains("target_div"), "{e}");
}

#[test]
fn checkpoints_need_their_tables_and_consistent_flags() {
    let (mut m, _, _) = model(TokenOrder::ReturnsFirst, 41);
    let tables = m.tables.take().unwrap();
    let e = m.to_safetensors().unwrap_err().to_string();
    assert!(e.contains("long-tail and similarity"), "{e}");
    let mut bad = tables.clone();
    bad.long_tail.value[7] = 0.5;
    m.tables = Some(bad);
    let e = Model::from_bytes(&m.to_safetensors().unwrap(), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("objectives.long_tail") && e.contains("item 7"),
        "{e}"
    );
}
