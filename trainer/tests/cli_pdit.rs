//! PDiT fixture replay: `spec/pdit_ref.py make` writes float64 reference cases for several
//! configurations (full, gen, tem, without learn_sigma, with self-attention in the temporal
//! blocks, odd sizes), `seqrec pdit run` replays them through the engine, and every output
//! holds the spec's tolerance, `max|got − ref| / max(1, max|ref|)` per array: 2e-5 for the
//! schedule, the network's outputs and trace, the reverse steps and the losses; 1e-4 for the
//! samplers' trajectories (the 1000-step chain grows to |z| ≈ 600 on a random network).
//!
//! The reference needs Python 3 with numpy and safetensors; without them the test prints a
//! `skipped:` notice.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn shared_spec() -> Option<PathBuf> {
    let dir = std::env::var_os("SEQREC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let spec = dir.join("spec/pdit_ref.py");
    if spec.is_file() {
        Some(spec)
    } else {
        eprintln!("skipped: PDiT fixtures: {} not found", spec.display());
        None
    }
}

fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import numpy, safetensors"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "skipped: PDiT fixtures: python3 with numpy and safetensors is needed \
             (pip install numpy safetensors)"
        );
    }
    ok
}

/// Every numeric leaf of a case file, by path (as `pdit_ref.compare_cases` flattens).
fn flatten(v: &Value, path: String, out: &mut Vec<(String, Vec<f64>)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten(x, p, out);
            }
        }
        Value::Array(a) if a.first().is_some_and(Value::is_object) => {
            for (i, x) in a.iter().enumerate() {
                flatten(x, format!("{path}[{i}]"), out);
            }
        }
        Value::Array(_) | Value::Number(_) => {
            let mut vals = Vec::new();
            collect(v, &mut vals);
            out.push((path, vals));
        }
        _ => {}
    }
}

fn collect(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
        Value::Number(n) => out.push(n.as_f64().unwrap()),
        _ => {}
    }
}

/// Makes the fixture of `sets` in `dir`, replays it, and checks every array.
fn check(spec: &Path, dir: &Path, seed: u32, sets: &[&str]) {
    let mut make = Command::new("python3");
    make.arg(spec)
        .arg("make")
        .arg(dir)
        .args(["--seed", &seed.to_string()]);
    for s in sets {
        make.args(["--set", s]);
    }
    let o = make.output().expect("python3 runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(env!("CARGO_BIN_EXE_seqrec"))
        .args(["pdit", "run"])
        .arg(dir.join("model.safetensors"))
        .arg("--input")
        .arg(dir.join("cases.json"))
        .output()
        .expect("seqrec runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got: Value = serde_json::from_slice(&o.stdout).unwrap();
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flatten(&want, String::new(), &mut a);
    flatten(&got, String::new(), &mut b);
    let b: std::collections::BTreeMap<String, Vec<f64>> = b.into_iter().collect();
    let mut checked = 0;
    for (path, want) in &a {
        if path == "seed" {
            continue;
        }
        let got = b
            .get(path)
            .unwrap_or_else(|| panic!("{sets:?}: `{path}` missing from the replay"));
        assert_eq!(got.len(), want.len(), "{sets:?}: `{path}` length");
        if want.is_empty() {
            continue;
        }
        let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(want)
            .fold(0.0f64, |m, (g, w)| m.max((g - w).abs()))
            / scale;
        let tol = if path.contains("trajectory") || path.starts_with("sample") {
            1e-4
        } else {
            2e-5
        };
        assert!(
            err <= tol,
            "{sets:?}: `{path}` off by {err:.2e} (tolerance {tol:e})"
        );
        checked += 1;
    }
    assert!(checked > 100, "{sets:?}: only {checked} arrays compared");
}

#[test]
fn fixture_replay_holds_the_spec_tolerances() {
    let (Some(spec), true) = (shared_spec(), python_ready()) else {
        return;
    };
    let root = std::env::temp_dir().join(format!("seqrec-pdit-{}", std::process::id()));
    let configs: [(&str, &[&str]); 6] = [
        ("full", &[]),
        ("gen", &["variant=\"gen\""]),
        ("tem", &["variant=\"tem\""]),
        ("no_learn_sigma", &["learn_sigma=false"]),
        ("tem_self_attn", &["tem_self_attn=true"]),
        (
            "odd",
            &[
                "latent_dim=10",
                "cond_dim=7",
                "hidden_size=18",
                "num_tokens=5",
                "num_heads=3",
                "mlp_ratio=2.5",
                "freq_embed_size=33",
                "depth_gen=1",
                "depth_tem=3",
            ],
        ),
    ];
    for (i, (name, sets)) in configs.iter().enumerate() {
        check(&spec, &root.join(name), 11 + i as u32, sets);
    }
    let _ = std::fs::remove_dir_all(&root);
}

const VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "watched", "movies", ":", "a", "movie", "titled", ",",
    "alpha", "beta", "gamma", "delta", "red", "blue",
];

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_seqrec"))
        .args(args)
        .output()
        .expect("seqrec runs")
}

/// A RecBole-format toy dataset (`toy.inter`, `toy.item`), a random text encoder of width 8,
/// `seqrec pdit data` on them, a random PDiT of the data's width, then `seqrec generate`.
#[test]
fn data_files_and_generation_end_to_end() {
    use seqrec_engine::Config;
    use seqrec_engine::testing::{random_pdit_bytes, write_random_bert};
    use seqrec_engine::text::BertConfig;
    let root = std::env::temp_dir().join(format!("seqrec-pdit-e2e-{}", std::process::id()));
    let data = root.join("toy");
    std::fs::create_dir_all(&data).unwrap();
    let mut inter = String::from("user_id:token\titem_id:token\ttimestamp:float\n");
    for u in 1..=40u32 {
        for j in 0..(6 + u % 5) {
            let item = 1 + (u * 3 + j * 7) % 15;
            inter.push_str(&format!("{u}\t{item}\t{}\n", 1000 * u + j));
        }
    }
    std::fs::write(data.join("toy.inter"), inter).unwrap();
    let words = ["alpha", "beta", "gamma", "delta", "red", "blue"];
    let mut item = String::from("item_id:token\tmovie_title:token_seq\tclass:token_seq\n");
    for i in 1..=15u32 {
        let title = format!("{} {}", words[i as usize % 6], words[(i as usize / 6) % 6]);
        let class = if i % 2 == 0 { "red" } else { "blue green" };
        item.push_str(&format!("{i}\t{title}\t{class}\n"));
    }
    std::fs::write(data.join("toy.item"), item).unwrap();
    let bert = root.join("bert");
    let cfg = BertConfig {
        vocab_size: VOCAB.len(),
        hidden_size: 8,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 12,
        max_position_embeddings: 64,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
    };
    write_random_bert(&bert, &cfg, VOCAB, 64, 2).unwrap();
    let file = root.join("toy-pdit.safetensors");
    let (d, b, f) = (
        data.to_str().unwrap(),
        bert.to_str().unwrap(),
        file.to_str().unwrap(),
    );
    let o = run(&[
        "pdit",
        "data",
        "--data",
        d,
        "--text-encoder",
        b,
        "--out",
        f,
        "--max-hist-len",
        "4",
        "--train-targets",
        "3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let made = String::from_utf8_lossy(&o.stdout);
    assert!(
        made.contains("15 items") && made.contains("d = 8"),
        "{made}"
    );
    let pd = seqrec_trainer::models::pdit::PditData::load(&file).unwrap();
    assert_eq!((pd.dim, pd.max_hist_len, pd.n_items()), (8, 4, 16));
    // 32 training users, 3 targets each; one example per validation and test user.
    assert_eq!(pd.train.len(), 32 * 3);
    assert_eq!(pd.valid.len() + pd.test.len(), 8);
    assert!(pd.train.iter().all(|e| (1..=4).contains(&e.history.len())));
    // --eval-targets 2: the last two items of each validation and test user, in order.
    let two = root.join("toy-pdit-2.safetensors");
    let o = run(&[
        "pdit",
        "data",
        "--data",
        d,
        "--text-encoder",
        b,
        "--out",
        two.to_str().unwrap(),
        "--max-hist-len",
        "4",
        "--train-targets",
        "3",
        "--eval-targets",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pd2 = seqrec_trainer::models::pdit::PditData::load(&two).unwrap();
    assert_eq!(
        (pd2.train, pd2.valid.len() + pd2.test.len()),
        (pd.train.clone(), 16)
    );
    for (pair, last) in pd2.test.chunks(2).zip(&pd.test) {
        assert_eq!(
            (pair[1].target, &pair[1].history),
            (last.target, &last.history)
        );
        assert_eq!(pair[0].target, *last.history.last().unwrap());
    }
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm(&pd.train[0].prompt) - 1.0).abs() < 1e-4);

    let model_cfg = Config::from_json(
        r#"{"model":"pdit","variant":"full","latent_dim":8,"cond_dim":8,"hidden_size":12,
            "num_tokens":4,"num_heads":3,"depth_gen":1,"depth_tem":1,"mlp_ratio":2.0,
            "max_hist_len":4,"num_timesteps":30,"beta_start":0.0001,"beta_end":0.02,
            "learn_sigma":true,"latent_scale":2.83}"#,
    )
    .unwrap();
    let model = root.join("m.safetensors");
    std::fs::write(&model, random_pdit_bytes(&model_cfg, 4, 0.3).unwrap()).unwrap();
    let m = model.to_str().unwrap();
    let generate = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            m,
            "--pdit-data",
            f,
            "--text-encoder",
            b,
            "-k",
            "5",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let o = generate(&["--history", "3,5,7", "--steps", "10", "--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert!(
        v["scores"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s.as_f64().unwrap().abs() <= 1.0 + 1e-5)
    );
    assert_eq!(
        (v["steps"].as_u64(), v["latent"].as_array().unwrap().len()),
        (Some(10), 8)
    );
    // The same seed gives the same list; the full 30-step chain another.
    let again = generate(&["--history", "3,5,7", "--steps", "10", "--format", "json"]);
    assert_eq!(o.stdout, again.stdout);
    let excl = generate(&[
        "--history",
        "3,5,7",
        "--exclude-history",
        "--format",
        "json",
    ]);
    let v: Value = serde_json::from_slice(&excl.stdout).unwrap();
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| !["3", "5", "7"].contains(&t.as_str().unwrap()))
    );
    // Bad input: an unknown item, a model of another width.
    let e = generate(&["--history", "3,99"]);
    assert_eq!(e.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&e.stderr).contains("item `99`"));
    let no_enc = run(&["generate", m, "--pdit-data", f, "--history", "3"]);
    assert!(String::from_utf8_lossy(&no_enc.stderr).contains("--text-encoder"));

    // Attribute classifiers on the items' latents (the class column), then guided sampling.
    let attrs = root.join("attr.safetensors");
    let at = attrs.to_str().unwrap();
    let item_file = data.join("toy.item");
    let o = run(&[
        "pdit",
        "attributes",
        "--pdit-data",
        f,
        "--items",
        item_file.to_str().unwrap(),
        "--out",
        at,
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v["heldout"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["blue", "green", "red"]);
    let guide = |extra: &[&str]| {
        let mut args = vec!["pdit", "guide", m, "--pdit-data", f, "--attributes", at];
        args.extend_from_slice(extra);
        run(&args)
    };
    for attribute in ["red", "history"] {
        let o = guide(&[
            "--attribute",
            attribute,
            "--scales",
            "0,200",
            "--steps",
            "10",
            "--format",
            "json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        let rows = v["scales"].as_array().unwrap();
        let c = |r: usize| rows[r]["compliance"].as_f64().unwrap();
        assert!(c(1) >= c(0) && (0.0..=1.0).contains(&c(1)), "{v}");
        assert!(rows[0]["hr@20"].as_f64().is_some(), "{v}");
    }
    let e = guide(&["--attribute", "purple"]);
    let msg = String::from_utf8_lossy(&e.stderr);
    assert!(
        msg.contains("purple") && msg.contains("blue, green, red"),
        "{msg}"
    );
    let e = guide(&["--attribute", "red", "--scales", "1,-2"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("`-2`"));
    let e = run(&[
        "pdit",
        "guide",
        m,
        "--pdit-data",
        f,
        "--attributes",
        f,
        "--attribute",
        "red",
    ]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("not an attribute file"));
    // Generation follows the classifier: far along it, the nearest items are red.
    let o = generate(&[
        "--history",
        "3,5,7",
        "--attributes",
        at,
        "--attribute",
        "red",
        "--guide-scale",
        "500",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let first: u32 = v["items"][0].as_str().unwrap().parse().unwrap();
    assert_eq!(first % 2, 0, "{v}");
    let _ = std::fs::remove_dir_all(&root);
}

/// `seqrec pdit bench` times every (steps, batch) cell of a small random model and reports
/// consistent figures; bad settings are refused with the reason.
#[test]
fn bench_reports_every_cell() {
    let o = run(&[
        "pdit",
        "bench",
        "--dim",
        "24",
        "--steps",
        "2,5",
        "--batch",
        "1,3",
        "--repeats",
        "2",
        "--threads",
        "1",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cells: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(u64, u64)> = cells
        .iter()
        .map(|c| (c["batch"].as_u64().unwrap(), c["steps"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, [(1, 2), (1, 5), (3, 2), (3, 5)]);
    for c in &cells {
        let (chain, step) = (
            c["chain_ms"].as_f64().unwrap(),
            c["step_ms"].as_f64().unwrap(),
        );
        let (steps, batch) = (c["steps"].as_f64().unwrap(), c["batch"].as_f64().unwrap());
        assert!(
            chain > 0.0 && (step * steps - chain).abs() < 1e-9 * chain.max(1.0),
            "{c}"
        );
        assert!((c["sample_ms"].as_f64().unwrap() * batch - chain).abs() < 1e-9 * chain.max(1.0));
        assert_eq!(c["history"], 20);
    }
    for (args, why) in [
        (&["--steps", "1"][..], "2..=1000"),
        (&["--history", "21"][..], "--history 21"),
        (&["--batch", "0"][..], "at least 1"),
    ] {
        let mut all = vec!["pdit", "bench", "--dim", "24", "--threads", "1"];
        all.extend_from_slice(args);
        let o = run(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(why), "{args:?}: {err}");
    }
}
