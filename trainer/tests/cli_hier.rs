//! The hierarchical session models through the command line: `seqrec train --model hdt`
//! on a small session log, `seqrec eval --split session` (session replay), and
//! `seqrec score --sessions` against the library.

use seqrec_engine::{Model, testing::random_model_bytes};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn seqrec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seqrec"))
        .args(args)
        .output()
        .expect("seqrec runs")
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("seqrec-hier-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// A MovieLens-style `ratings.csv`: 8 users, 5 sessions of 3 or 4 items two hours apart,
/// items drawn from 1..=12 with a per-user pattern.
fn write_log(dir: &Path) {
    let mut csv = String::from("userId,movieId,rating,timestamp\n");
    for u in 1..=8u64 {
        let mut t = 1_000_000 + u * 100_000;
        for s in 0..5u64 {
            for k in 0..3 + (s + u) % 2 {
                let item = 1 + (u * 5 + s * 3 + k * 7) % 12;
                csv.push_str(&format!("{u},{item},4.0,{t}\n"));
                t += 60;
            }
            t += 7200;
        }
    }
    std::fs::write(dir.join("ratings.csv"), csv).unwrap();
}

#[test]
fn train_eval_and_score_an_hdt() {
    let dir = temp_dir("train");
    write_log(&dir);
    let data = dir.to_str().unwrap();
    let p = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let common = [
        "--data",
        data,
        "--split",
        "session",
        "--session-filter",
        "1:3:3",
        "--epochs",
        "2",
        "--quiet",
        "--threads",
        "1",
    ];
    let mut args = vec![
        "train",
        "--model",
        "gru4rec",
        "--max-len",
        "6",
        "--hidden-size",
        "8",
    ];
    args.extend(common);
    let normal = p("normal.safetensors");
    args.extend(["--out", &normal]);
    ok(&seqrec(&args));
    let hdt = p("hdt.safetensors");
    let mut args = vec![
        "train",
        "--model",
        "hdt",
        "--backbone",
        "sasrec",
        "--similarity-model",
        &normal,
        "--hidden-size",
        "8",
        "--max-len",
        "5",
        "--intra-layers",
        "1",
        "--slots",
        "3",
        "--alpha-r",
        "0.3",
        "--out",
        &hdt,
    ];
    args.extend(common);
    let line = ok(&seqrec(&args));
    assert!(
        line.contains("saved") && line.contains("sessions/s"),
        "{line}"
    );
    let m = Model::load(&hdt).unwrap();
    assert_eq!(m.info().arch, "hdt");
    assert_eq!(m.config().f32_or("alpha_r", 0.0).unwrap(), 0.3);
    // Evaluation replays the sessions; the knobs change the result.
    let eval = |extra: &[&str]| {
        let mut a = vec![
            "eval",
            &hdt,
            "--data",
            data,
            "--split",
            "session",
            "--session-filter",
            "1:3:3",
            "--metrics",
            "hr@5,cv_div@5,up@5",
            "--format",
            "json",
        ];
        a.extend(extra);
        let v: serde_json::Value = serde_json::from_str(&ok(&seqrec(&a))).unwrap();
        assert_eq!(v["users"], 8);
        v["metrics"].clone()
    };
    let base = eval(&[]);
    assert!(base["hr@5"].as_f64().is_some(), "{base}");
    assert_ne!(eval(&["--alpha", "0"]), base);
    // A hierarchical model needs a session split.
    let o = seqrec(&["eval", &hdt, "--data", data, "--split", "loo"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--split session"));
    // Without the similarity model hdt refuses to train.
    let o = seqrec(&[
        "train", "--model", "hdt", "--data", data, "--split", "session", "--out", &hdt,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--similarity-model"));
    // Steps weighted per event train; an unknown weighting is named.
    let hier = p("hier.safetensors");
    let mut args = vec![
        "train",
        "--model",
        "hier",
        "--hidden-size",
        "8",
        "--max-len",
        "5",
        "--step-weights",
        "event",
        "--out",
        &hier,
    ];
    args.extend(common);
    ok(&seqrec(&args));
    args[8] = "events";
    let o = seqrec(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--step-weights `events`"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn score_sessions_matches_the_library() {
    let dir = temp_dir("score");
    for arch in ["hdt", "hier"] {
        let mut cfg = seqrec_engine::Config::from_json(&format!(
            r#"{{"model":"{arch}","backbone":"gru4rec","n_items":30,"MAX_ITEM_LIST_LENGTH":5,
                "embedding_size":8,"hidden_size":8,"intra_layers":1,"intra_inner":16}}"#
        ))
        .unwrap();
        cfg = cfg.with("similarity_dim", 4);
        let path = dir.join(format!("{arch}.safetensors"));
        std::fs::write(&path, random_model_bytes(&cfg, 9, 0.3).unwrap()).unwrap();
        let path = path.to_str().unwrap();
        let out = ok(&seqrec(&[
            "score",
            path,
            "--sessions",
            "3,4|5,6,7|8,9",
            "-k",
            "4",
            "--format",
            "json",
        ]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let m = Model::load(path).unwrap();
        let mut s = m.session().unwrap();
        s.extend(&[3, 4]).unwrap();
        s.end().unwrap();
        s.extend(&[5, 6, 7]).unwrap();
        s.end().unwrap();
        s.extend(&[8, 9]).unwrap();
        let want: Vec<u32> = s.topk(4, false).unwrap().iter().map(|r| r.item).collect();
        assert_eq!(v["items"], serde_json::json!(want), "{arch}");
        // After a trailing boundary hdt predicts the first item; hier needs an event.
        let o = seqrec(&["score", path, "--sessions", "3,4|", "--format", "json"]);
        assert_eq!(o.status.success(), arch == "hdt", "{arch}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
