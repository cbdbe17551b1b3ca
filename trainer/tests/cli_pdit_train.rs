//! `seqrec train --model pdit|dreamrec` and `seqrec eval --pdit-data` end to end on a small
//! synthetic PDiT data file: the checkpoints load (PDiT in the engine), the evaluation prints
//! HR@20 / NDCG@20, and bad flags get a one-line error with exit code 2.

use seqrec_engine::pdit::Pdit;
use seqrec_trainer::models::pdit::{PditData, PditExample};
use seqrec_trainer::nn::Rng;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seqrec"))
        .args(args)
        .output()
        .expect("seqrec runs")
}

/// The stdout of a successful run.
fn success(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit {:?}: {err}", o.status.code());
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The one-line error of a run refused as bad input.
fn refused(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr).trim_end().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

/// 30 items with random unit latents (d = 8), 40 training and 6 validation and test examples.
fn data_file(path: &Path) {
    let (n, d) = (30, 8);
    let mut rng = Rng::new(1);
    let mut item_latents = vec![0.0f32; n * d];
    for row in item_latents.chunks_exact_mut(d).skip(1) {
        let v = rng.normal_vec(d, 1.0);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().zip(v).for_each(|(o, x)| *o = x / norm);
    }
    let mut examples = |count: usize| -> Vec<PditExample> {
        (0..count)
            .map(|u| PditExample {
                user: u as u32,
                history: (0..1 + rng.below(5))
                    .map(|_| 1 + rng.below(n - 1) as u32)
                    .collect(),
                target: 1 + rng.below(n - 1) as u32,
                prompt: rng.normal_vec(d, 0.3),
            })
            .collect()
    };
    let data = PditData {
        dim: d,
        max_hist_len: 5,
        train: examples(40),
        valid: examples(6),
        test: examples(6),
        item_latents,
        meta: BTreeMap::new(),
    };
    data.save(path).unwrap();
}

#[test]
fn train_and_evaluate_pdit_and_dreamrec() {
    let dir = std::env::temp_dir().join(format!("seqrec-cli-pdit-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data.safetensors");
    data_file(&data);
    let data = data.to_str().unwrap();
    let (pdit, dream) = (dir.join("p.safetensors"), dir.join("d.safetensors"));
    let (pdit, dream) = (pdit.to_str().unwrap(), dream.to_str().unwrap());
    let small = [
        "--pdit-data",
        data,
        "--batch",
        "16",
        "--hidden",
        "16",
        "--heads",
        "2",
        "--epochs",
        "2",
        "--valid-every",
        "2",
        "--timesteps",
        "20",
        "--quiet",
    ];
    let mut args = vec!["train", "--model", "pdit", "--out", pdit, "--tokens", "4"];
    args.extend(small);
    args.extend(["--variant", "tem", "--steps-valid", "5", "--tem-self-attn"]);
    let line = success(&run(&args));
    assert!(line.contains("saved") && line.contains("hr@20"), "{line}");
    let model = Pdit::load(pdit).unwrap();
    assert_eq!(model.config().variant.name(), "tem");
    assert_eq!((model.config().hidden, model.config().timesteps), (16, 20));

    let mut args = vec![
        "train",
        "--model",
        "dreamrec",
        "--out",
        dream,
        "--guidance-w",
        "1",
    ];
    args.extend(small);
    success(&run(&args));

    for (model, steps) in [(pdit, Some("5")), (pdit, None), (dream, None)] {
        let mut args = vec!["eval", model, "--pdit-data", data, "--format", "json"];
        if let Some(s) = steps {
            args.extend(["--steps", s]);
        }
        let v: Value = serde_json::from_str(&success(&run(&args))).unwrap();
        assert_eq!(
            (v["on"].as_str(), v["examples"].as_u64()),
            (Some("test"), Some(6))
        );
        for m in ["hr@20", "ndcg@20"] {
            let x = v["metrics"][m].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&x), "{m} {x}");
        }
    }
    // The references on the same examples: popularity of the training targets, and an ID model
    // served by the engine (its catalog must be the file's).
    let file = PditData::load(Path::new(data)).unwrap();
    let v: Value = serde_json::from_str(&success(&run(&[
        "eval",
        "pop",
        "--pdit-data",
        data,
        "--format",
        "json",
        "--metrics",
        "hr@5",
    ])))
    .unwrap();
    let mut counts = vec![0usize; file.n_items()];
    file.train
        .iter()
        .for_each(|e| counts[e.target as usize] += 1);
    let mut order: Vec<usize> = (1..file.n_items()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(counts[i]), i));
    let hits = file
        .test
        .iter()
        .filter(|e| order[..5].contains(&(e.target as usize)))
        .count();
    assert_eq!(
        v["metrics"]["hr@5"].as_f64(),
        Some(hits as f64 / 6.0),
        "{v}"
    );
    let id_model = |n_items: usize| {
        let cfg = seqrec_engine::testing::recbole_default_config("sasrec", n_items, 0).unwrap();
        seqrec_engine::testing::random_model_bytes(&cfg, 3, 0.2).unwrap()
    };
    let sasrec = dir.join("sasrec.safetensors");
    std::fs::write(&sasrec, id_model(30)).unwrap();
    let v: Value = serde_json::from_str(&success(&run(&[
        "eval",
        sasrec.to_str().unwrap(),
        "--pdit-data",
        data,
        "--format",
        "json",
    ])))
    .unwrap();
    let want = {
        let m = seqrec_engine::Model::load(&sasrec).unwrap();
        let mut ws = m.new_workspace();
        let hits = file.test.iter().filter(|e| {
            let top = m
                .topk(&seqrec_engine::Query::new(&e.history), 20, &mut ws)
                .unwrap();
            top.iter().any(|r| r.item == e.target)
        });
        hits.count() as f64 / 6.0
    };
    assert_eq!(
        (v["model"].as_str(), v["metrics"]["hr@20"].as_f64()),
        (Some("sasrec"), Some(want))
    );
    let wrong = dir.join("sasrec-31.safetensors");
    std::fs::write(&wrong, id_model(31)).unwrap();
    let err = refused(&run(&[
        "eval",
        wrong.to_str().unwrap(),
        "--pdit-data",
        data,
    ]));
    assert!(
        err.contains("31 item ids") && err.contains("has 30"),
        "{err}"
    );

    let text = success(&run(&[
        "eval",
        pdit,
        "--pdit-data",
        data,
        "--steps",
        "4",
        "--valid",
    ]));
    assert!(
        text.contains("valid, 6 examples, 4 sampling steps") && text.contains("ndcg@20"),
        "{text}"
    );

    // Bad flags: one line naming the problem, exit code 2.
    let out = ["--out", pdit];
    let cases: [(Vec<&str>, &str); 10] = [
        (vec!["--model", "pdit"], "--pdit-data"),
        (
            vec!["--model", "pdit", "--pdit-data", data, "--variant", "both"],
            "--variant both",
        ),
        (
            vec!["--model", "pdit", "--pdit-data", data, "--tokens", "5"],
            "num_tokens",
        ),
        (
            vec![
                "--model",
                "pdit",
                "--pdit-data",
                data,
                "--hidden",
                "10",
                "--heads",
                "3",
            ],
            "num_heads",
        ),
        (
            vec!["--model", "pdit", "--pdit-data", data, "--data", data],
            "--data does not apply",
        ),
        (
            vec!["--model", "pdit", "--pdit-data", data, "--guidance-w", "2"],
            "dreamrec's",
        ),
        (
            vec![
                "--model",
                "dreamrec",
                "--pdit-data",
                data,
                "--variant",
                "gen",
            ],
            "PDiT's",
        ),
        (
            vec!["--model", "sasrec", "--data", data, "--variant", "gen"],
            "--variant is a setting",
        ),
        (
            vec!["--model", "pdit", "--pdit-data", data, "--steps-valid", "1"],
            "--steps-valid",
        ),
        (
            vec!["--model", "pdit", "--pdit-data", "/nonexistent.safetensors"],
            "nonexistent",
        ),
    ];
    for (flags, want) in cases {
        let mut args = vec!["train"];
        args.extend(out);
        args.extend(&flags);
        let err = refused(&run(&args));
        assert!(err.contains(want), "{flags:?}: {err}");
    }
    let evals: [(Vec<&str>, &str); 3] = [
        (
            vec![pdit, "--pdit-data", data, "--steps", "1"],
            "2..=20 steps",
        ),
        (
            vec![dream, "--pdit-data", data, "--steps", "5"],
            "whole chain",
        ),
        (
            vec![pdit, "--pdit-data", data, "--metrics", "cv_div@10"],
            "hr, ndcg and mrr",
        ),
    ];
    for (flags, want) in evals {
        let mut args = vec!["eval"];
        args.extend(&flags);
        let err = refused(&run(&args));
        assert!(err.contains(want), "{flags:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
