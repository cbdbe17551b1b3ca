//! The four RecBole backbones reproduce the reference fixtures in `shared/fixtures/recbole`:
//! raw scores (first 50, sum, sum of squares), the user vector (`final_hidden`) and the top-10.
//!
//! Tolerance (spec §0): `max |Δ| ≤ 2e-5 · max(1, max |ref|)` for scores and for final_hidden
//! separately; top-10 identical except neighbours whose reference gap is below 2·tol·scale.

use seqrec_engine::{LoadOptions, Model, Query};
use serde_json::Value;

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn check_model(name: &str) {
    let Some(shared) = seqrec_tests::shared_dir(&format!("fixtures for {name}")) else {
        return;
    };
    let dir = shared.join("fixtures/recbole").join(name);
    let model =
        Model::load(dir.join("model.safetensors")).unwrap_or_else(|e| panic!("{name}: {e}"));
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let info = model.info().clone();
    let mut ws = model.new_workspace();
    let mut scores = vec![0f32; info.n_items];
    let mut hidden = vec![0f32; info.dim];
    for case in cases.as_array().unwrap() {
        let cname = case["name"].as_str().unwrap();
        let history: Vec<u32> = case["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let mut q = Query::new(&history);
        if let Some(u) = case["user"].as_u64() {
            q = q.user(u as u32);
        }
        let ctx = format!("{name}/{cname}");
        let window = model.window(&history).unwrap();
        let eff: Vec<u32> = case["effective_seq"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(window, &eff[..], "{ctx}: window");

        model.user_vector(&q, &mut ws, &mut hidden).unwrap();
        let want_h = f64s(&case["final_hidden"]);
        let scale_h = want_h.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        for (i, (&g, &w)) in hidden.iter().zip(&want_h).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 2e-5 * scale_h,
                "{ctx}: final_hidden[{i}] {g} vs {w}"
            );
        }

        model.score(&q, &mut ws, &mut scores).unwrap();
        let first50 = f64s(&case["scores_first50"]);
        let scale = first50.iter().fold(1.0f64, |m, x| m.max(x.abs())).max(
            case["top10_scores"].as_array().unwrap()[0]
                .as_f64()
                .unwrap()
                .abs(),
        );
        let tol = 2e-5 * scale;
        for (i, &w) in first50.iter().enumerate() {
            assert!(
                (scores[i] as f64 - w).abs() <= tol,
                "{ctx}: score[{i}] {} vs {w}",
                scores[i]
            );
        }
        let sum: f64 = scores.iter().map(|&s| s as f64).sum();
        let sumsq: f64 = scores.iter().map(|&s| (s as f64) * (s as f64)).sum();
        let (want_sum, want_sumsq) = (
            case["scores_sum"].as_f64().unwrap(),
            case["scores_sumsq"].as_f64().unwrap(),
        );
        assert!(
            (sum - want_sum).abs() <= tol * info.n_items as f64,
            "{ctx}: sum {sum} vs {want_sum}"
        );
        assert!(
            (sumsq - want_sumsq).abs()
                <= 2.0 * tol * scale * info.n_items as f64 + 1e-9 * want_sumsq.abs(),
            "{ctx}: sumsq {sumsq} vs {want_sumsq}"
        );

        let top = model.topk(&q, 10, &mut ws).unwrap();
        let want_items: Vec<u32> = case["top10"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let want_scores = f64s(&case["top10_scores"]);
        for (r, rec) in top.iter().enumerate() {
            assert!(
                (rec.score as f64 - want_scores[r]).abs() <= tol,
                "{ctx}: top score {r}"
            );
            if rec.item != want_items[r] {
                // A swap is allowed only between neighbours whose reference gap is below 2·tol.
                let partner = want_items.iter().position(|&w| w == rec.item);
                let ok = partner.is_some_and(|p| {
                    p.abs_diff(r) == 1 && (want_scores[p] - want_scores[r]).abs() < 2.0 * tol
                });
                let boundary = r == 9 && case["gap_10_11"].as_f64().unwrap() < 2.0 * tol;
                assert!(
                    ok || boundary,
                    "{ctx}: top-10 position {r}: got {} want {}",
                    rec.item,
                    want_items[r]
                );
            }
        }
        assert!(
            top.iter().all(|r| r.item != 0),
            "{ctx}: padding id recommended"
        );
    }
}

#[test]
fn sasrec_matches_recbole_fixtures() {
    check_model("sasrec");
}

#[test]
fn gru4rec_matches_recbole_fixtures() {
    check_model("gru4rec");
}

#[test]
fn nextitnet_matches_recbole_fixtures() {
    check_model("nextitnet");
}

#[test]
fn caser_matches_recbole_fixtures() {
    check_model("caser");
}

/// Half-precision scoring tables keep the top-10 almost unchanged on the fixtures.
#[test]
fn half_precision_item_tables_track_f32() {
    let Some(shared) = seqrec_tests::shared_dir("half-precision item tables") else {
        return;
    };
    let path = shared.join("fixtures/recbole/sasrec/model.safetensors");
    let f32m = Model::load(&path).unwrap();
    for dtype in [seqrec_engine::DType::F16, seqrec_engine::DType::BF16] {
        let half = Model::load_with(
            &path,
            &LoadOptions {
                item_dtype: dtype,
                ..Default::default()
            },
        )
        .unwrap();
        let (mut w1, mut w2) = (f32m.new_workspace(), half.new_workspace());
        let mut same = 0;
        let mut total = 0;
        for seed in 0..200u32 {
            let hist: Vec<u32> = (0..10).map(|i| 1 + (seed * 37 + i * 101) % 999).collect();
            let a = f32m.topk(&Query::new(&hist), 10, &mut w1).unwrap();
            let b = half.topk(&Query::new(&hist), 10, &mut w2).unwrap();
            same += a
                .iter()
                .filter(|x| b.iter().any(|y| y.item == x.item))
                .count();
            total += 10;
        }
        eprintln!("{dtype} item table: top-10 overlap with f32 {same}/{total}");
        // bf16 keeps 8 mantissa bits, f16 11: expect at least 90% / 95% top-10 overlap.
        let min = if dtype == seqrec_engine::DType::F16 {
            0.95
        } else {
            0.90
        };
        assert!(
            same as f64 / total as f64 >= min,
            "{dtype}: top-10 overlap {same}/{total}"
        );
    }
}
