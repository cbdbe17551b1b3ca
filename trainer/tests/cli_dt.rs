//! `seqrec train --model modt4r|mrdt` end to end on a small synthetic log: the E_div baseline
//! trained when no similarity model is given, the checkpoint served by the engine with its
//! knobs, `seqrec eval` taking the knobs, and bad flags reported on one line.

use seqrec_engine::{Model, Query};
use seqrec_trainer::synthetic::{SyntheticConfig, generate};
use std::path::PathBuf;
use std::process::{Command, Output};

fn seqrec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seqrec"))
        .args(args)
        .output()
        .expect("seqrec runs")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// 60 users over 41 ids, written as a SASRec `user item` file.
fn data(dir: &std::path::Path) -> PathBuf {
    let seqs = generate(&SyntheticConfig {
        n_users: 60,
        n_items: 41,
        n_groups: 5,
        min_len: 6,
        max_len: 14,
        ..Default::default()
    });
    let mut text = String::new();
    for (u, s) in seqs.iter().enumerate() {
        for i in s {
            text.push_str(&format!("{} {i}\n", u + 1));
        }
    }
    let path = dir.join("log.txt");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn train_serve_and_evaluate_the_decision_transformers() {
    let dir = std::env::temp_dir().join(format!("seqrec-cli-dt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = data(&dir);
    let log = log.to_str().unwrap();
    let small = [
        "--split",
        "ratio",
        "--hidden-size",
        "8",
        "--n-layers",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--quiet",
    ];
    let out = dir.join("m.safetensors");
    let mut args = vec!["train", "--model", "modt4r", "--data", log, "--out"];
    args.push(out.to_str().unwrap());
    args.extend(small);
    let text = ok(&seqrec(&args));
    assert!(text.contains("windows"), "{text}");
    // Without --similarity-model the SASRec baseline was trained and saved beside the output.
    let base = dir.join("m.sasrec.safetensors");
    let baseline = Model::load(&base).unwrap();
    assert_eq!(baseline.info().arch, "sasrec");
    assert_eq!(baseline.info().max_len, 10);

    let m = Model::load(&out).unwrap();
    assert_eq!(
        (m.info().arch, m.info().max_len, m.info().dim),
        ("modt4r", 10, 18)
    );
    let mut knobs = m.default_objectives();
    knobs.set("lambda_div", 3.0).unwrap();
    m.topk(
        &Query::new(&[3, 9, 27]).objectives(&knobs),
        5,
        &mut m.new_workspace(),
    )
    .unwrap();

    // MRDT with the baseline as the similarity model, and a subset of objectives.
    let out2 = dir.join("r.safetensors");
    let mut args = vec!["train", "--model", "mrdt", "--data", log, "--out"];
    args.push(out2.to_str().unwrap());
    args.extend(small);
    args.extend([
        "--similarity-model",
        base.to_str().unwrap(),
        "--beta",
        "0.3",
        "--dt-objectives",
        "acc,div",
        "--dt-stride",
        "2",
    ]);
    ok(&seqrec(&args));
    let r = Model::load(&out2).unwrap();
    assert_eq!(r.info().arch, "mrdt");
    assert_eq!(r.config().as_map()["dt_objectives"], "acc,div");

    // seqrec eval takes the knobs.
    let e = ok(&seqrec(&[
        "eval",
        out.to_str().unwrap(),
        "--data",
        log,
        "--split",
        "ratio",
        "--metrics",
        "hr@10,cv_div@10",
        "--alpha",
        "0.5",
        "--lambda-div",
        "2",
        "--novelty-eps",
        "0.3",
        "--objective",
        "target_nov=2",
    ]));
    assert!(e.contains("cv_div@10"), "{e}");

    // Bad flags: one line, exit 2.
    let mut args = vec!["train", "--model", "modt4r", "--data", log, "--out"];
    args.push(out.to_str().unwrap());
    args.extend(small);
    args.extend(["--dt-objectives", "acc,fun"]);
    let o = seqrec(&args);
    assert_eq!(o.status.code(), Some(2));
    let msg = String::from_utf8_lossy(&o.stderr);
    assert!(
        msg.contains("`fun`") && msg.trim_end().lines().count() == 1,
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
