//! Helpers for seqrec's cross-crate integration tests: locating the shared fixtures and data,
//! and building small random models of every architecture as real safetensors files.

use seqrec_engine::{Config, Model, Query};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The shared folder with specs, fixtures and data (`$SEQREC_SHARED`, else `../shared` beside
/// the workspace). `None`, with a printed notice naming `what`, when it is absent, so a test
/// can skip.
pub fn shared_dir(what: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("SEQREC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    if dir.join("fixtures").is_dir() || dir.join("data").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipped: {what}: shared folder not found at {} (set SEQREC_SHARED)",
            dir.display()
        );
        None
    }
}

/// A temporary folder (`seqrec-TAG-PID` in the system's temporary directory), removed with
/// everything in it on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates the folder.
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("seqrec-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary folder");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// RecBole-like configurations of each architecture, small enough for fast tests.
pub fn small_config(arch: &str, n_items: usize, max_len: usize) -> Config {
    let base = Config::from_json(&format!(
        r#"{{"model":"{arch}","n_items":{n_items},"MAX_ITEM_LIST_LENGTH":{max_len}}}"#
    ))
    .expect("valid JSON");
    match arch {
        "sasrec" => base
            .with("hidden_size", 16)
            .with("n_layers", 2)
            .with("n_heads", 2)
            .with("inner_size", 32),
        "gru4rec" => base
            .with("embedding_size", 16)
            .with("hidden_size", 24)
            .with("num_layers", 2),
        "nextitnet" => base
            .with("embedding_size", 16)
            .with("kernel_size", 3)
            .with("block_num", 2)
            .with("dilations", vec![1, 2]),
        "caser" => base
            .with("embedding_size", 16)
            .with("nv", 2)
            .with("nh", 3)
            .with("n_users", 7),
        // A served TransRec / IDRec model: the SASRec layout over an exported item table.
        "transrec" | "idrec" => small_config("sasrec", n_items, max_len).with("model", arch),
        "modt4r" | "mrdt" => small_config("sasrec", n_items, max_len)
            .with("model", arch)
            .with("dt_n_layers", 2)
            .with("dt_n_heads", 2)
            .with("dt_inner_size", 24)
            .with("dt_similarity_dim", 6),
        "hdt" | "interdt" | "hier" => small_config("gru4rec", n_items, max_len)
            .with("model", arch)
            .with("backbone", "gru4rec")
            .with("similarity_dim", 6)
            .with("intra_layers", 2)
            .with("intra_heads", 2)
            .with("intra_inner", 24),
        other => panic!("no small config for {other}"),
    }
}

/// [`small_config`] of `backbone` under the RL heads `method` (sqn, snqn, sa2c, smorl) with
/// the supervised head `sup_head` (linear or tied).
pub fn small_rl_config(
    method: &str,
    backbone: &str,
    sup_head: &str,
    n_items: usize,
    max_len: usize,
) -> Config {
    small_config(backbone, n_items, max_len)
        .with("model", method)
        .with("backbone", backbone)
        .with("sup_head", sup_head)
}

/// Every architecture and variant of this build ([`small_config`] and [`small_rl_config`]:
/// the plain backbones, the Decision Transformers, the hierarchical models on both backbones,
/// an RL method on each backbone), with `n` items and window `l`, named.
pub fn every_architecture(n: usize, l: usize) -> Vec<(String, Config)> {
    let mut out: Vec<(String, Config)> = [
        "sasrec",
        "gru4rec",
        "nextitnet",
        "caser",
        "modt4r",
        "mrdt",
        "hdt",
        "interdt",
        "hier",
    ]
    .iter()
    .map(|a| (a.to_string(), small_config(a, n, l)))
    .collect();
    for (method, backbone, head) in [
        ("sqn", "gru4rec", "linear"),
        ("snqn", "nextitnet", "tied"),
        ("sa2c", "caser", "linear"),
        ("smorl", "sasrec", "linear"),
    ] {
        let cfg = small_rl_config(method, backbone, head, n, l);
        out.push((format!("{method} on {backbone}"), cfg));
    }
    out.push((
        "hdt on sasrec".into(),
        small_config("hdt", n, l)
            .with("backbone", "sasrec")
            .with("hidden_size", 16)
            .with("n_layers", 1)
            .with("n_heads", 2)
            .with("inner_size", 24)
            .with("heads", "tied"),
    ));
    out
}
/// A safetensors file image with random weights (N(0, std²)) for `cfg`, config in metadata.
pub fn random_model_bytes(cfg: &Config, seed: u64, std: f32) -> Vec<u8> {
    seqrec_engine::testing::random_model_bytes(cfg, seed, std).expect("valid config")
}

/// The all-MiniLM-L6-v2 model folder (`$SEQREC_MINILM_DIR`, else `.minilm/` in the workspace
/// root, where `scripts/fetch-minilm.sh` puts it). `None`, with a printed notice naming
/// `what`, when it is absent, so a test can skip.
pub fn minilm_dir(what: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("SEQREC_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.minilm"));
    let complete = ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .all(|f| dir.join(f).is_file());
    if complete {
        Some(dir)
    } else {
        eprintln!(
            "skipped: {what}: all-MiniLM-L6-v2 not found at {} (run scripts/fetch-minilm.sh or \
             set SEQREC_MINILM_DIR)",
            dir.display()
        );
        None
    }
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// Checks `model` against the RecBole reference cases in `dir/cases.json` (spec §0): raw
/// scores (first 50, sum, sum of squares), the user vector (`final_hidden`) and the top-10, to
/// `max |Δ| ≤ 2e-5 · max(1, max |ref|)`; top-10 identical except neighbours whose reference
/// gap is below 2·tol·scale.
pub fn check_fixture_cases(model: &Model, dir: &Path, name: &str) {
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

/// `want` and `got` agree element by element to `tol·(1 + |want|)` (NaN matching NaN).
pub fn assert_close(what: &str, want: &[f32], got: &[f32], tol: f32) {
    assert_eq!(want.len(), got.len(), "{what}: lengths");
    for (i, (a, b)) in want.iter().zip(got).enumerate() {
        let ok = (a - b).abs() <= tol * (1.0 + a.abs()) || (a.is_nan() && b.is_nan());
        assert!(ok, "{what}: element {i}: {a} vs {b}");
    }
}

/// Top-k lists agree: the same scores to 1e-4 (relative) rank by rank, and the same items
/// except where two scores are that close (f32 summation order may swap them).
pub fn assert_same_topk(what: &str, a: &[seqrec_engine::Scored], b: &[seqrec_engine::Scored]) {
    let tol = 1e-4;
    assert_eq!(a.len(), b.len(), "{what}: {a:?} vs {b:?}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let scale = 1.0 + x.score.abs();
        assert!(
            (x.score - y.score).abs() <= tol * scale,
            "{what}: rank {i}: {x:?} vs {y:?}"
        );
        if x.item != y.item {
            let near = a
                .iter()
                .any(|z| z.item == y.item && (z.score - y.score).abs() <= tol * scale);
            assert!(near, "{what}: rank {i}: {x:?} vs {y:?}");
        }
    }
}

/// Sessions of two loadings of one model (on two backends) agree step by step: pushes, a
/// session boundary, more pushes (the user's sessions when `user` is given).
pub fn assert_same_sessions<A: seqrec_engine::Backend, B: seqrec_engine::Backend>(
    name: &str,
    a: &seqrec_engine::Model<A>,
    b: &seqrec_engine::Model<B>,
    user: Option<u32>,
) {
    let (mut s_a, mut s_b) = match user {
        Some(u) => (
            a.session_for_user(u).unwrap(),
            b.session_for_user(u).unwrap(),
        ),
        None => (a.session().unwrap(), b.session().unwrap()),
    };
    for (step, item) in [4u32, 8, 15, 16, 23, 2, 7, 9].into_iter().enumerate() {
        if step == 5 {
            s_a.end().unwrap();
            s_b.end().unwrap();
        }
        s_a.push(item).unwrap();
        s_b.push(item).unwrap();
        let what = format!("{name}, session step {step}");
        assert_same_topk(
            &what,
            &s_a.topk(5, false).unwrap(),
            &s_b.topk(5, false).unwrap(),
        );
    }
}

/// A small random BERT (2 layers of width 16, 4 heads, a vocabulary of 30; weights from
/// N(0, 0.3²) drawn with `seed`): its configuration and weight file.
pub fn small_bert(seed: u64) -> (seqrec_engine::text::BertConfig, seqrec_engine::WeightFile) {
    let cfg = seqrec_engine::text::BertConfig {
        vocab_size: 30,
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 24,
        max_position_embeddings: 12,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
    };
    let specs = seqrec_engine::testing::bert_tensor_specs(&cfg);
    let mut rng = seqrec_kernels::testing::Rng::new(seed);
    let values: Vec<Vec<f32>> = specs
        .iter()
        .map(|s| rng.normal_vec(s.shape.iter().product(), 0.3))
        .collect();
    let tensors: Vec<(&str, &[usize], &[f32])> = specs
        .iter()
        .zip(&values)
        .map(|(s, v)| (s.name.as_str(), s.shape.as_slice(), v.as_slice()))
        .collect();
    let bytes = seqrec_engine::weights::serialize(&tensors, &[]).expect("serializable");
    (
        cfg,
        seqrec_engine::WeightFile::from_bytes(&bytes).expect("valid file"),
    )
}
