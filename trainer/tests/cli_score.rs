//! The `seqrec info` and `seqrec score` commands: JSON output shapes, batch order, and bad
//! input reported on one line with exit code 2.

use seqrec_engine::testing::random_model_bytes;
use seqrec_engine::{Config, Model, Query};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn seqrec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seqrec"))
        .args(args)
        .output()
        .expect("seqrec runs")
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("seqrec-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_model(dir: &Path, arch: &str) -> PathBuf {
    let mut cfg = Config::from_json(&format!(
        r#"{{"model":"{arch}","n_items":40,"MAX_ITEM_LIST_LENGTH":6}}"#
    ))
    .unwrap();
    cfg = match arch {
        "sasrec" => cfg
            .with("hidden_size", 8)
            .with("n_heads", 2)
            .with("inner_size", 16),
        "caser" => cfg
            .with("embedding_size", 8)
            .with("n_users", 5)
            .with("nv", 2)
            .with("nh", 2),
        _ => cfg.with("embedding_size", 8).with("hidden_size", 8),
    };
    let path = dir.join(format!("{arch}.safetensors"));
    std::fs::write(&path, random_model_bytes(&cfg, 5, 0.3).unwrap()).unwrap();
    path
}

fn stderr_line(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(
        e.trim_end().lines().count(),
        1,
        "one-line error expected, got {e:?}"
    );
    e
}

#[test]
fn score_json_matches_the_library() {
    let dir = temp_dir("json");
    let path = write_model(&dir, "sasrec");
    let o = seqrec(&[
        "score",
        path.to_str().unwrap(),
        "--history",
        "3,9,27",
        "-k",
        "5",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = Model::load(&path).unwrap();
    let want = m
        .topk(&Query::new(&[3, 9, 27]), 5, &mut m.new_workspace())
        .unwrap();
    let items: Vec<u64> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(
        items,
        want.iter().map(|r| r.item as u64).collect::<Vec<_>>()
    );
    assert_eq!(v["scores"].as_array().unwrap().len(), 5);
    // --exclude-history keeps history items out.
    let o = seqrec(&[
        "score",
        path.to_str().unwrap(),
        "--history",
        "3,9,27",
        "-k",
        "39",
        "--exclude-history",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let items: Vec<u64> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(items.len(), 36);
    assert!(!items.iter().any(|i| [0, 3, 9, 27].contains(i)));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn batch_prints_one_object_per_line_in_order() {
    let dir = temp_dir("batch");
    let path = write_model(&dir, "gru4rec");
    let batch = dir.join("h.txt");
    std::fs::write(&batch, "1,2,3\n5\n7, 8 ,9,10\n").unwrap();
    let o = seqrec(&[
        "score",
        path.to_str().unwrap(),
        "--batch",
        batch.to_str().unwrap(),
        "-k",
        "4",
        "--format",
        "json",
    ]);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    let m = Model::load(&path).unwrap();
    for (line, h) in lines
        .iter()
        .zip([vec![1, 2, 3], vec![5], vec![7, 8, 9, 10]])
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let want = m.topk(&Query::new(&h), 4, &mut m.new_workspace()).unwrap();
        assert_eq!(v["items"][0].as_u64().unwrap(), want[0].item as u64);
    }
    std::fs::write(&batch, "1,2\n4,x\n").unwrap();
    let o = seqrec(&[
        "score",
        path.to_str().unwrap(),
        "--batch",
        batch.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("h.txt:2"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let dir = temp_dir("bad");
    let sasrec = write_model(&dir, "sasrec");
    let caser = write_model(&dir, "caser");
    let s = sasrec.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["score", s, "--history", ""], "empty history"),
        (vec!["score", s, "--history", "4,0"], "item id 0"),
        (vec!["score", s, "--history", "4,40"], "item id 40"),
        (
            vec!["score", s, "--history", "4", "--user", "1"],
            "no user embedding",
        ),
        (
            vec!["score", caser.to_str().unwrap(), "--history", "4"],
            "user id is required",
        ),
        (
            vec![
                "score",
                caser.to_str().unwrap(),
                "--history",
                "4",
                "--user",
                "9",
            ],
            "user id 9",
        ),
        (
            vec!["score", "/nonexistent/m.safetensors", "--history", "4"],
            "/nonexistent/m.safetensors",
        ),
        (
            vec!["info", "/nonexistent/m.safetensors"],
            "/nonexistent/m.safetensors",
        ),
        (
            vec!["score", s, "--history", "4", "--alpha", "2"],
            "unknown objective `alpha`: this model has no objective knobs",
        ),
        (
            vec!["score", s, "--history", "4", "--objective", "alpha"],
            "expected NAME=VALUE",
        ),
        (
            vec!["score", s, "--history", "4", "--objective", "alpha=x"],
            "`x` is not a number",
        ),
    ];
    for (args, needle) in cases {
        let o = seqrec(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let e = stderr_line(&o);
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    // A truncated file and a file naming an unknown architecture.
    let bytes = std::fs::read(&sasrec).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
    let o = seqrec(&["score", cut.to_str().unwrap(), "--history", "4"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("invalid safetensors"));
    let unknown = dir.join("unknown.safetensors");
    let cfg = Config::from_json(r#"{"model":"bert4rec","n_items":40}"#).unwrap();
    let views: Vec<(&str, &[usize], &[f32])> =
        vec![("item_embedding.weight", &[40, 2], &[0.0; 80])];
    std::fs::write(
        &unknown,
        seqrec_engine::weights::serialize(&views, &[("seqrec.config", &cfg.to_json())]).unwrap(),
    )
    .unwrap();
    let o = seqrec(&["score", unknown.to_str().unwrap(), "--history", "4"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("unknown model `bert4rec`"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn info_lists_architecture_and_tensors() {
    let dir = temp_dir("info");
    let path = write_model(&dir, "caser");
    let o = seqrec(&["info", path.to_str().unwrap(), "--format", "json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["architecture"], "caser");
    assert_eq!(v["n_items"], 40);
    assert_eq!(v["n_users"], 5);
    let names: Vec<&str> = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"conv_h.5.weight") && names.contains(&"user_embedding.weight"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bench_prints_the_documented_json() {
    let dir = temp_dir("bench");
    for arch in ["sasrec", "caser"] {
        let path = write_model(&dir, arch);
        for extra in [&["--batch", "3"][..], &["--session"][..]] {
            let mut args = vec![
                "bench",
                path.to_str().unwrap(),
                "--iters",
                "3",
                "--threads",
                "2",
                "--format",
                "json",
            ];
            args.extend_from_slice(extra);
            let o = seqrec(&args);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            for key in ["batch", "threads", "p50_ms", "p99_ms", "seq_per_s"] {
                assert!(v[key].is_number(), "{arch} {extra:?}: {key} missing in {v}");
            }
            assert_eq!(v["threads"], 2);
            assert!(v["p99_ms"].as_f64().unwrap() >= v["p50_ms"].as_f64().unwrap());
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bench_builds_a_random_model_in_memory() {
    let o = seqrec(&[
        "bench", "--random", "gru4rec", "--items", "60", "--iters", "2", "--format", "json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["model"], "gru4rec");
    assert_eq!(v["n_items"], 60);
    // Unknown architectures and a missing model are bad input.
    let o = seqrec(&["bench", "--random", "bert4rec", "--iters", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("bert4rec"));
    let o = seqrec(&["bench", "--iters", "1"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn demo_trains_evaluates_and_serves() {
    let dir = temp_dir("demo");
    let out = dir.join("demo.safetensors");
    let o = seqrec(&[
        "demo",
        "--time-budget",
        "4",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let metric = |name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} row in {text}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    // Even a few seconds of training beat the popularity baseline on the synthetic log.
    assert!(metric("SASRec") > metric("MostPop"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains("-> [")).count(),
        3,
        "{text}"
    );
    assert_eq!(Model::load(&out).unwrap().info().arch, "sasrec");
    std::fs::remove_dir_all(dir).ok();
}
