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
