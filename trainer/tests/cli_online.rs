//! `seqrec rl` on the Coat environment (skipped with a printed notice when `../shared/data`
//! is absent): the learning curve's file and plot, a run reproduced from its seed, the agent
//! checkpoint served by the engine and adapted online by session feedback, and bad input
//! (a misbehaving judge, another environment's file) reported on one line with exit code 2.

use seqrec_engine::Model;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn coat() -> Option<PathBuf> {
    let shared = std::env::var_os("SEQREC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let dir = shared.join("data/coat");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipped: Coat not found at {} (set SEQREC_SHARED)",
            dir.display()
        );
        None
    }
}

fn out_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("seqrec-cli-online-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn rl(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = [
        "rl",
        "--env",
        "coat",
        "--steps",
        "300",
        "--every",
        "100",
        "--window",
        "5",
        "--hidden",
        "16",
        "--pretrain-epochs",
        "3",
        "--quiet",
        "--data",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(data.display().to_string());
    args.push("--out".into());
    args.push(out.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    Command::new(env!("CARGO_BIN_EXE_seqrec"))
        .args(&args)
        .output()
        .expect("seqrec runs")
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "seqrec failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn bad(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let line = err.trim_end();
    assert!(
        !line.contains('\n') || line.lines().last().unwrap().starts_with("error:"),
        "{err}"
    );
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
}

#[test]
fn a2c_on_coat_writes_its_curve_plot_and_a_servable_adaptable_agent() {
    let Some(data) = coat() else { return };
    let out = out_dir("a2c");
    ok(&rl(&data, &out, &["--agent", "a2c"]));
    let csv = std::fs::read_to_string(out.join("curve.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "step,R,Len,R_avg");
    let steps: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(steps, ["0", "100", "200", "300"]);
    let png = std::fs::read(out.join("curve.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // The same seed and environment file give the same curve.
    let again = out_dir("a2c-again");
    let env = out.join("env.safetensors");
    ok(&rl(
        &data,
        &again,
        &["--agent", "a2c", "--env-from", env.to_str().unwrap()],
    ));
    assert_eq!(
        std::fs::read_to_string(again.join("curve.csv")).unwrap(),
        csv
    );

    // The agent serves: a Coat history is the user token (301 items + user) and the items
    // shown; padding and user tokens never rank.
    let model = Model::load(out.join("agent.safetensors")).unwrap();
    let history = [301 + 7, 12, 40];
    let mut s = model.session().unwrap();
    s.extend(&history).unwrap();
    let top = s.topk(10, true).unwrap();
    assert!(top.iter().all(|x| (1..301).contains(&x.item)), "{top:?}");
    // ... and adapts online: a reward for the top item moves the scores.
    let mut before = vec![0f32; model.info().n_items];
    s.scores(&mut before).unwrap();
    s.feedback(top[0].item, 5.0).unwrap();
    let mut after = vec![0f32; model.info().n_items];
    s.scores(&mut after).unwrap();
    assert_ne!(before, after);

    // Several runs' curves in one chart; a broken curve file is named with its line.
    let chart = out.join("both.png");
    let plot = |runs: &[&Path]| {
        let mut args = vec![
            "rl-plot".to_string(),
            "--out".into(),
            chart.display().to_string(),
        ];
        args.extend(runs.iter().map(|r| r.display().to_string()));
        Command::new(env!("CARGO_BIN_EXE_seqrec"))
            .args(&args)
            .output()
            .unwrap()
    };
    ok(&plot(&[&out, &again]));
    assert_eq!(&std::fs::read(&chart).unwrap()[..4], b"\x89PNG");
    let broken = out_dir("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("curve.csv"), "step,R,Len,R_avg\n0,1,2\n").unwrap();
    bad(&plot(&[&broken]), "curve.csv:2: 3 fields, expected 4");
    let _ = std::fs::remove_dir_all(&broken);

    // `seqrec score` serves it too.
    let o = Command::new(env!("CARGO_BIN_EXE_seqrec"))
        .args([
            "score",
            out.join("agent.safetensors").to_str().unwrap(),
            "--history",
            "308,12,40",
            "-k",
            "5",
        ])
        .output()
        .unwrap();
    ok(&o);
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&again);
}

#[test]
fn ialp_ap_pretrains_from_a_judge_and_adapts() {
    let Some(data) = coat() else { return };
    let out = out_dir("ap");
    ok(&rl(&data, &out, &["--agent", "ialp-ap"]));
    assert!(out.join("pretrained.safetensors").is_file());
    assert!(Model::load(out.join("agent.safetensors")).is_ok());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_judge_that_answers_garbage_or_dies_is_an_error_naming_the_query() {
    let Some(data) = coat() else { return };
    let out = out_dir("judge");
    let o = rl(
        &data,
        &out,
        &[
            "--agent",
            "ialp",
            "--judge-cmd",
            "while read l; do echo nonsense; done",
        ],
    );
    bad(&o, "judge query 1");
    let o = rl(&data, &out, &["--agent", "ialp", "--judge-cmd", "exit 3"]);
    bad(&o, "judge query 1");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn bad_arguments_are_named() {
    let Some(data) = coat() else { return };
    let out = out_dir("bad");
    bad(&rl(&data, &out, &["--agent", "sarsa"]), "sarsa");
    bad(
        &rl(&data, &out, &["--agent", "a2c", "--explore", "boltzmann"]),
        "boltzmann",
    );
    let not_env = out.join("x.safetensors");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(&not_env, b"not a safetensors file").unwrap();
    bad(
        &rl(
            &data,
            &out,
            &["--agent", "a2c", "--env-from", not_env.to_str().unwrap()],
        ),
        "x.safetensors",
    );
    bad(
        &rl(
            &data,
            &out,
            &["--agent", "a2c", "--init", not_env.to_str().unwrap()],
        ),
        "--init",
    );
    let _ = std::fs::remove_dir_all(&out);
}
