//! `seqrec train --model sqn|snqn|sa2c|smorl`: checkpoints the engine serves, SMORL's
//! similarity baseline trained when none is given, its knobs on `seqrec score`, and bad
//! settings reported on one line with exit code 2.

use seqrec_engine::Model;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn seqrec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seqrec"))
        .args(args)
        .output()
        .expect("seqrec runs")
}

/// A tiny atomic data set: 40 users walking the catalog `1..=20` upwards, 8 events each.
fn write_data(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("seqrec-cli-rl-{tag}-{}", std::process::id()))
        .join("walk");
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = String::from("user_id:token\titem_id:token\ttimestamp:float\n");
    for u in 0..40u32 {
        for k in 0..8u32 {
            text.push_str(&format!("u{u}\ti{}\t{k}\n", 1 + (u * 3 + k) % 20));
        }
    }
    std::fs::write(dir.join("walk.inter"), text).unwrap();
    dir
}

fn train(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--split",
        "ratio",
        "--max-len",
        "5",
        "--hidden-size",
        "8",
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--threads",
        "1",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    seqrec(&args)
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "seqrec failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn rl_methods_train_checkpoints_the_engine_serves() {
    let data = write_data("train");
    for (method, backbone) in [("sqn", "gru4rec"), ("sa2c", "nextitnet"), ("snqn", "caser")] {
        let out = data.join(format!("{method}.safetensors"));
        ok(&train(
            &data,
            &out,
            &[
                "--model",
                method,
                "--backbone",
                backbone,
                "--sup-head",
                "tied",
            ],
        ));
        let m = Model::load(&out).unwrap();
        assert_eq!(m.info().arch, method);
        assert_eq!(m.config().str_or("backbone", "").unwrap(), backbone);
        assert_eq!(m.config().str_or("sup_head", "").unwrap(), "tied");
    }
    // SMORL without --similarity-model trains its similarity baseline beside the output.
    let out = data.join("smorl.safetensors");
    ok(&train(
        &data,
        &out,
        &["--model", "smorl", "--backbone", "sasrec", "--n-heads", "1"],
    ));
    let sim = data.join("smorl.sim.safetensors");
    assert_eq!(Model::load(&sim).unwrap().info().arch, "sasrec");
    let m = Model::load(&out).unwrap();
    let cfg = m.config();
    assert_eq!(
        cfg.str_or("similarity_model", "").unwrap(),
        sim.display().to_string()
    );
    assert_eq!(m.objective_specs().len(), 3);
    // The knobs reach the ranking through `seqrec score`.
    let top = |extra: &[&str]| -> String {
        let mut args = vec![
            "score",
            out.to_str().unwrap(),
            "--history",
            "3,4,5",
            "-k",
            "5",
        ];
        args.extend_from_slice(extra);
        let o = seqrec(&args);
        ok(&o);
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let base = top(&[]);
    assert_ne!(
        base,
        top(&["--objective", "w_div=50", "--objective", "w_acc=0"])
    );
    // Eval takes them too.
    let o = seqrec(&[
        "eval",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--split",
        "ratio",
        "--metrics",
        "hr@10,cv_div@10,cv_nov@10,r@5",
        "--objective",
        "w_nov=3",
        "--format",
        "json",
    ]);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("cv_nov@10"));
}

#[test]
fn bad_rl_settings_are_one_line_and_exit_2() {
    let data = write_data("bad");
    let out = data.join("x.safetensors");
    for (extra, needle) in [
        (&["--model", "sqn", "--backbone", "bert"][..], "bert"),
        (&["--model", "sqn", "--loss", "bce"][..], "cross-entropy"),
        (&["--model", "sqn", "--gamma", "1.5"][..], "--gamma"),
        (&["--model", "sqn", "--sup-head", "dot"][..], "dot"),
        (
            &["--model", "smorl", "--smorl-weights", "1,1"][..],
            "--smorl-weights",
        ),
        (
            &[
                "--model",
                "smorl",
                "--similarity-model",
                "/nonexistent.safetensors",
            ][..],
            "nonexistent",
        ),
    ] {
        let o = train(&data, &out, extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}");
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(e.trim_end().lines().count(), 1, "{extra:?}: {e}");
        assert!(e.contains(needle), "{extra:?}: {e}");
    }
}
