//! The four RecBole backbones reproduce the reference fixtures in `shared/fixtures/recbole`:
//! raw scores (first 50, sum, sum of squares), the user vector (`final_hidden`) and the top-10.
//!
//! Tolerance (spec §0): `max |Δ| ≤ 2e-5 · max(1, max |ref|)` for scores and for final_hidden
//! separately; top-10 identical except neighbours whose reference gap is below 2·tol·scale.

use seqrec_engine::{LoadOptions, Model, Query};

fn check_model(name: &str) {
    let Some(shared) = seqrec_tests::shared_dir(&format!("fixtures for {name}")) else {
        return;
    };
    let dir = shared.join("fixtures/recbole").join(name);
    let model =
        Model::load(dir.join("model.safetensors")).unwrap_or_else(|e| panic!("{name}: {e}"));
    seqrec_tests::check_fixture_cases(&model, &dir, name);
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
