//! `seqrec convert recbole`: a RecBole `.pth` (written by `tests/pth/torch_save.py`, the layout
//! of torch.save without PyTorch) converts to a safetensors file that scores as the fixture,
//! and `seqrec score` / `seqrec info` take the `.pth` directly. A bad checkpoint is one line
//! on stderr with exit code 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn seqrec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seqrec"))
        .args(args)
        .output()
        .expect("seqrec runs")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_recbole_checkpoint_converts_and_serves() {
    let what = "seqrec convert recbole";
    let Some(shared) = std::env::var_os("SEQREC_SHARED")
        .map(PathBuf::from)
        .or_else(|| Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")))
        .filter(|d| d.join("fixtures/recbole").is_dir())
    else {
        eprintln!("skipped: {what}: shared fixtures not found (set SEQREC_SHARED)");
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/pth/torch_save.py");
    let dir = std::env::temp_dir().join(format!("seqrec-cli-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = shared.join("fixtures/recbole/sasrec/model.safetensors");
    let pth = dir.join("sasrec.pth");
    let made = Command::new("python3")
        .arg(&script)
        .arg(&fixture)
        .arg(&pth)
        .output();
    if !made.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: {what}: python3 with numpy could not run tests/pth/torch_save.py");
        return;
    }
    let out = dir.join("sasrec.safetensors");
    let (p, o, f) = (
        pth.to_str().unwrap(),
        out.to_str().unwrap(),
        fixture.to_str().unwrap(),
    );
    let summary = stdout(&seqrec(&[
        "convert", "recbole", p, "--out", o, "--format", "json",
    ]));
    let v: serde_json::Value = serde_json::from_str(summary.trim()).unwrap();
    assert_eq!(v["architecture"], "sasrec");
    assert_eq!(v["n_items"], 1000);
    let args = ["--history", "5,17,400,3", "-k", "10", "--format", "json"];
    let want = stdout(&seqrec(&[&["score", f][..], &args].concat()));
    for model in [p, o] {
        let got = stdout(&seqrec(&[&["score", model][..], &args].concat()));
        assert_eq!(got, want, "{model}");
    }
    let info = stdout(&seqrec(&["info", p, "--format", "json"]));
    assert!(info.contains("\"architecture\":\"sasrec\""), "{info}");
    // A truncated checkpoint: one line, exit code 2.
    let bytes = std::fs::read(&pth).unwrap();
    let bad = dir.join("bad.pth");
    std::fs::write(&bad, &bytes[..bytes.len() - 100]).unwrap();
    let r = seqrec(&["convert", "recbole", bad.to_str().unwrap(), "--out", o]);
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("PyTorch checkpoint"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
