//! The LE cache end to end: `seqrec le samples` lists the training samples, a small Python
//! script (standard library only, `tests/le_cache.py`) writes a cache from them as a program
//! computing a language environment elsewhere would, and `seqrec train --le` trains SNQN and
//! SA2C with every variant on it; bad caches are one-line errors naming the problem.

use seqrec_engine::Model;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn seqrec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seqrec"))
        .args(args)
        .output()
        .expect("seqrec runs")
}

fn ok(args: &[&str]) -> String {
    let o = seqrec(args);
    assert!(
        o.status.success(),
        "seqrec {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The one-line error of a failing run (exit 2).
fn err(args: &[&str]) -> String {
    let o = seqrec(args);
    assert_eq!(o.status.code(), Some(2), "seqrec {args:?} should fail");
    let e = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    e
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An atomic data set in `root/name`: 40 users walking the catalog `1..=20` by `step`.
fn write_data(root: &Path, name: &str, step: u32) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = String::from("user_id:token\titem_id:token\ttimestamp:float\n");
    for u in 0..40u32 {
        for k in 0..8u32 {
            text.push_str(&format!("u{u}\ti{}\t{k}\n", 1 + (u * 3 + k * step) % 20));
        }
    }
    std::fs::write(dir.join(format!("{name}.inter")), text).unwrap();
    dir
}

const SETTINGS: &[&str] = &[
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

/// Python 3 with the standard library, or `None` (the test then skips with a notice).
fn python() -> Option<&'static str> {
    let found = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    found.then_some("python3")
}

/// `seqrec le samples` of `data` (with `model`'s top-5), then the Python cache writer.
fn cache(py: &str, data: &Path, model: Option<&Path>, out: &Path, nan: bool) {
    let tsv = out.with_extension("tsv");
    let mut a = vec!["le", "samples", "--data", s(data), "--split", "ratio"];
    a.extend(["--max-len", "5", "--out", s(&tsv)]);
    if let Some(m) = model {
        a.extend(["--model", s(m)]);
    }
    let said = ok(&a);
    // "wrote S samples over N item ids (padding included) to F"
    let n_items = said
        .split(" over ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("{said}"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/le_cache.py");
    let mut cmd = Command::new(py);
    cmd.args([s(&script), s(&tsv), n_items, s(out)]);
    if nan {
        cmd.arg("nan");
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "le_cache.py: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_cache_written_by_python_trains_every_variant() {
    let Some(py) = python() else {
        eprintln!("notice: python3 not found; skipping the LE cache test");
        return;
    };
    let root = std::env::temp_dir().join(format!("seqrec-cli-le-{}", std::process::id()));
    let data = write_data(&root, "walk", 1);

    // An early recommender gives the augmentation's candidates.
    let early = root.join("early.safetensors");
    let mut a = vec!["train", "--model", "sa2c", "--backbone", "sasrec"];
    a.extend(["--data", s(&data), "--out", s(&early)]);
    a.extend(SETTINGS);
    ok(&a);
    let le = root.join("le.safetensors");
    cache(py, &data, Some(&early), &le, false);
    let tsv = std::fs::read_to_string(le.with_extension("tsv")).unwrap();
    let header = tsv.lines().next().unwrap();
    assert!(header.ends_with("top5\ttop5_tokens"), "{header}");
    // One row per transition: 32 training sequences of 8 (ratio split by sequence) × 7.
    assert_eq!(tsv.lines().count() - 1, 32 * 7, "{header}");

    for (model, backbone) in [("sa2c", "sasrec"), ("snqn", "gru4rec")] {
        for variant in [
            "ler", "les", "les'", "lea", "lear", "leas", "leasr", "leas'r",
        ] {
            let out = root.join(format!("{model}-{variant}.safetensors"));
            let mut a = vec!["train", "--model", model, "--backbone", backbone];
            a.extend(["--data", s(&data), "--out", s(&out), "--le", s(&le)]);
            a.extend(["--le-variant", variant]);
            a.extend(SETTINGS);
            ok(&a);
            // Served without the LE: the supervised head scores.
            let m = Model::load(&out).unwrap_or_else(|e| panic!("{model}-{variant}: {e}"));
            assert_eq!(m.info().arch, model);
            let config = m.config().as_map();
            assert_eq!(config["le_variant"], variant, "{config:?}");
            let q_width = match variant {
                "les" | "leas" | "leasr" => Some(4 + 8),
                "les'" | "leas'r" => Some(4),
                _ => None,
            };
            assert_eq!(
                config.get("le_state_dim").and_then(|v| v.as_u64()),
                q_width.map(|_| 4),
                "{variant}"
            );
            let top = ok(&["score", s(&out), "--history", "1,2,3", "-k", "3"]);
            assert!(!top.trim().is_empty());
        }
    }

    // Bad caches.
    let mut a = vec!["train", "--model", "sa2c", "--backbone", "sasrec"];
    a.extend(["--data", s(&data), "--out", s(&early)]);
    a.extend(SETTINGS);
    let with = |cache: &Path, variant: &str| {
        let mut v: Vec<String> = a.iter().map(|x| x.to_string()).collect();
        v.extend([
            "--le".into(),
            s(cache).into(),
            "--le-variant".into(),
            variant.into(),
        ]);
        v
    };
    let run_err = |v: Vec<String>| err(&v.iter().map(String::as_str).collect::<Vec<_>>());

    // The cache of another data set (same users and catalog, other walks).
    let other = write_data(&root, "other", 3);
    let other_le = root.join("other-le.safetensors");
    cache(py, &other, None, &other_le, false);
    let e = run_err(with(&other_le, "leasr"));
    assert!(
        e.contains("other-le.safetensors") && e.contains("action"),
        "{e}"
    );
    // Truncated.
    let bytes = std::fs::read(&le).unwrap();
    let cut = root.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let e = run_err(with(&cut, "leasr"));
    assert!(
        e.contains("cut.safetensors") && e.contains("truncated"),
        "{e}"
    );
    // A NaN reward.
    let nan = root.join("nan.safetensors");
    cache(py, &data, None, &nan, true);
    let e = run_err(with(&nan, "ler"));
    assert!(e.contains("`reward`") && e.contains("NaN"), "{e}");
    // A variant the cache cannot feed, a method that takes no LE, a variant without a cache.
    let e = run_err(with(&le, "lex"));
    assert!(e.contains("lex"), "{e}");
    let mut v = with(&le, "leasr");
    v[2] = "sqn".into();
    let e = run_err(v);
    assert!(e.contains("snqn or sa2c"), "{e}");
    let mut v: Vec<String> = a.iter().map(|x| x.to_string()).collect();
    v.extend(["--le-variant".into(), "leasr".into()]);
    let e = run_err(v);
    assert!(e.contains("--le-variant needs --le"), "{e}");
}

/// `seqrec le build` on a catalog with item texts and a small random BERT: trains the
/// environment (LoRA adapters), fills a cache with augmented actions from an early model, and
/// that cache trains SA2C-LEASR.
#[test]
fn the_built_in_environment_writes_a_cache_that_trains() {
    use seqrec_engine::testing::write_random_bert;
    use seqrec_engine::text::BertConfig;
    const VOCAB: &[&str] = &[
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "toy", "story", "war", "space", "love",
        "night", "day", "a", "user", "item", "next", "?", ":",
    ];
    const WORDS: &[&str] = &["toy", "story", "war", "space", "love", "night", "day"];
    let root = std::env::temp_dir().join(format!("seqrec-cli-le-build-{}", std::process::id()));
    let data = write_data(&root, "walk", 1);
    let mut items = String::from("item_id:token\tmovie_title:token_seq\n");
    for i in 1..=20 {
        let (a, b) = (WORDS[i % 7], WORDS[(i * 3 + 1) % 7]);
        items.push_str(&format!("i{i}\t{a} {b}\n"));
    }
    std::fs::write(data.join("walk.item"), items).unwrap();
    let bert = root.join("bert");
    let cfg = BertConfig {
        vocab_size: VOCAB.len(),
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 24,
        max_position_embeddings: 64,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
    };
    write_random_bert(&bert, &cfg, VOCAB, 16, 3).unwrap();

    let early = root.join("early.safetensors");
    let mut a = vec!["train", "--model", "sa2c", "--backbone", "sasrec"];
    a.extend(["--data", s(&data), "--out", s(&early)]);
    a.extend(SETTINGS);
    ok(&a);
    let le = root.join("le.safetensors");
    let env = root.join("env.safetensors");
    let build = |extra: &[&str]| {
        let mut a = vec!["le", "build", "--data", s(&data), "--split", "ratio"];
        a.extend([
            "--text-encoder",
            s(&bert),
            "--max-len",
            "5",
            "--threads",
            "1",
        ]);
        a.extend(extra);
        ok(&a)
    };
    let said = build(&[
        "--fraction",
        "0.5",
        "--epochs",
        "2",
        "--model",
        s(&early),
        "--out",
        s(&le),
        "--save-env",
        s(&env),
    ]);
    assert!(
        said.contains("224 samples") && said.contains("augmented actions"),
        "{said}"
    );
    // The saved environment fills a cache again without training: the same states and
    // rewards (the negatives follow the seed), no augmented actions without a model.
    let again = root.join("le-again.safetensors");
    let said = build(&["--env", s(&env), "--out", s(&again)]);
    assert!(
        said.contains("environment") && !said.contains("augmented"),
        "{said}"
    );
    let first = seqrec_engine::WeightFile::open(&le).unwrap();
    let second = seqrec_engine::WeightFile::open(&again).unwrap();
    for (name, shape) in [
        ("state", &[224, 16][..]),
        ("reward", &[224]),
        ("negative_reward", &[224]),
    ] {
        let (x, y) = (
            first.tensor(name, shape).unwrap(),
            second.tensor(name, shape).unwrap(),
        );
        assert_eq!(x.as_slice(), y.as_slice(), "{name}");
    }
    assert!(second.names().all(|n| n != "augmented"));
    let out = root.join("sa2c-leasr.safetensors");
    let mut a = vec!["train", "--model", "sa2c", "--backbone", "sasrec"];
    a.extend(["--data", s(&data), "--out", s(&out), "--le", s(&le)]);
    a.extend(SETTINGS);
    ok(&a);
    let m = Model::load(&out).unwrap();
    assert_eq!(m.config().as_map()["le_state_dim"], 16);

    // Items without text, a model over another catalog: one line each.
    let e = err(&[
        "le",
        "build",
        "--data",
        s(&write_data(&root, "bare", 1)),
        "--split",
        "ratio",
        "--text-encoder",
        s(&bert),
        "--out",
        s(&le),
    ]);
    assert!(e.contains("text"), "{e}");
    let e = err(&[
        "le",
        "build",
        "--data",
        s(&data),
        "--split",
        "ratio",
        "--text-encoder",
        s(&bert),
        "--fraction",
        "0",
        "--out",
        s(&le),
    ]);
    assert!(e.contains("--fraction 0"), "{e}");
}
