//! `seqrec train --model transrec|idrec`, `seqrec export-items` and `seqrec eval --cold-start`
//! end to end on toy RecBole catalogs with a small random BERT: source training (both
//! stages), transfer to a catalog that shares no ids, serving with an item that never
//! appeared in training, IDRec, and the one-line errors for bad input.

use seqrec_engine::testing::write_random_bert;
use seqrec_engine::text::BertConfig;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "toy", "story", "golden", "##eye", "night",
    "day", ".", "comedy", "drama", "the", "war", "space", "love",
];

const WORDS: &[&str] = &[
    "toy", "story", "golden", "night", "day", "war", "space", "love", "the",
];

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seqrec-transrec-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bert_dir(root: &Path, name: &str, seed: u64) -> PathBuf {
    let dir = root.join(name);
    let cfg = BertConfig {
        vocab_size: VOCAB.len(),
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 24,
        max_position_embeddings: 16,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
    };
    write_random_bert(&dir, &cfg, VOCAB, 16, seed).unwrap();
    dir
}

/// A RecBole catalog `name` in `root/name`: `users` users over items `first..first + n`, each
/// user's sequence a walk of 9 items; the item `first + n` appears only as the last (test)
/// item of user 1, and `first + n + 1` is listed in the `.item` file only. With `no_title`,
/// that item's title is empty.
fn catalog(
    root: &Path,
    name: &str,
    first: u32,
    n: u32,
    users: u32,
    no_title: Option<u32>,
) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut inter = String::from("user_id:token\titem_id:token\ttimestamp:float\n");
    for u in 1..=users {
        for t in 0..9u32 {
            let item = if u == 1 && t == 8 {
                first + n
            } else {
                first + (u * 3 + t * (1 + u % 3)) % n
            };
            writeln!(inter, "{u}\t{item}\t{}", 1000 * u + t).unwrap();
        }
    }
    std::fs::write(dir.join(format!("{name}.inter")), inter).unwrap();
    let mut items = String::from("item_id:token\tmovie_title:token_seq\tclass:token_seq\n");
    for i in first..=first + n + 1 {
        let k = (i - first) as usize;
        let title = if no_title == Some(i) {
            String::new()
        } else {
            format!(
                "{} {}",
                WORDS[k % WORDS.len()],
                WORDS[(k * 5 + 2) % WORDS.len()]
            )
        };
        let class = match (no_title == Some(i), k % 2) {
            (true, _) => "",
            (false, 0) => "comedy",
            (false, _) => "drama",
        };
        writeln!(items, "{i}\t{title}\t{class}").unwrap();
    }
    std::fs::write(dir.join(format!("{name}.item")), items).unwrap();
    dir
}

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
    assert_eq!(
        o.status.code(),
        Some(2),
        "seqrec {args:?} should fail with exit 2"
    );
    let e = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    e
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const SMALL: &[&str] = &[
    "--hidden-size",
    "8",
    "--n-heads",
    "2",
    "--max-len",
    "8",
    "--epochs",
    "2",
    "--batch-size",
    "4",
    "--threads",
    "1",
    "--text-tokens",
    "8",
    "--quiet",
];

/// `seqrec train --model transrec` on `data` with [`SMALL`] sizes.
fn small_transrec<'a>(data: &'a Path, bert: &'a Path, out: &'a Path) -> Vec<&'a str> {
    let mut a = vec!["train", "--model", "transrec", "--data", s(data)];
    a.extend(["--text-encoder", s(bert), "--out", s(out)]);
    a.extend(SMALL);
    a
}

#[test]
fn transrec_trains_transfers_and_serves_a_cold_start_item() {
    let root = temp_dir("e2e");
    let bert = bert_dir(&root, "bert", 5);
    let src = catalog(&root, "src", 1, 12, 10, None);
    let tgt = catalog(&root, "tgt", 501, 10, 8, None);
    let source = root.join("source.safetensors");
    let target = root.join("target.safetensors");
    let served = root.join("served.safetensors");

    // Source: stage 1 then stage 2.
    let a = small_transrec(&src, &bert, &source);
    let said = ok(&a);
    assert!(
        said.contains("stage 1") && said.contains("stage 2"),
        "{said}"
    );

    // Target: starts from the source, CPC only, on half of its users.
    let mut a = vec![
        "train",
        "--model",
        "transrec",
        "--data",
        s(&tgt),
        "--text-encoder",
    ];
    a.extend([s(&bert), "--init", s(&source), "--out", s(&target)]);
    a.extend(["--train-users", "0.5", "--epochs", "2", "--batch-size", "4"]);
    a.extend(["--threads", "1", "--text-tokens", "8", "--quiet"]);
    let said = ok(&a);
    assert!(
        !said.contains("stage 1") && said.contains("stage 2"),
        "{said}"
    );

    // Served over the target's whole catalog: the test-only item 511 and the listed-only 512
    // have vectors from their text.
    let said = ok(&[
        "export-items",
        s(&target),
        "--data",
        s(&tgt),
        "--text-tokens",
        "8",
        "--out",
        s(&served),
    ]);
    assert!(said.contains("13 items"), "{said}");
    let info = ok(&["info", s(&served)]);
    assert!(info.contains("transrec"), "{info}");
    // The cold item (internal id 11: ids follow first appearance in the .inter file) ranks
    // with a finite score among all 12 items.
    let top = ok(&[
        "score",
        s(&served),
        "--history",
        "1,2,3",
        "-k",
        "12",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&top).unwrap();
    let ranked: Vec<u64> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap())
        .collect();
    let at = ranked
        .iter()
        .position(|&i| i == 11)
        .unwrap_or_else(|| panic!("{top}"));
    assert!(v["scores"][at].as_f64().unwrap().is_finite(), "{top}");
    // Cold-start evaluation: the one test target absent from training.
    let e = ok(&[
        "eval",
        s(&served),
        "--data",
        s(&tgt),
        "--cold-start",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&e).unwrap();
    assert_eq!(v["events"], 1, "{e}");
    assert_eq!(v["cold_start"], true, "{e}");

    // IDRec on the target: trains, serves over its own catalog, and cannot be exported over
    // another one.
    let idrec = root.join("idrec.safetensors");
    let id_served = root.join("id-served.safetensors");
    let mut a = vec![
        "train",
        "--model",
        "idrec",
        "--data",
        s(&tgt),
        "--out",
        s(&idrec),
    ];
    a.extend([
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--threads",
        "1",
        "--quiet",
    ]);
    ok(&a);
    ok(&[
        "export-items",
        s(&idrec),
        "--data",
        s(&tgt),
        "--out",
        s(&id_served),
    ]);
    assert!(ok(&["info", s(&id_served)]).contains("idrec"));
    let e = err(&[
        "export-items",
        s(&idrec),
        "--data",
        s(&src),
        "--out",
        s(&id_served),
    ]);
    assert!(e.contains("ID item tower"), "{e}");

    // Bad input, one line each, naming it.
    let other = bert_dir(&root, "other-bert", 6);
    let e = err(&[
        "export-items",
        s(&target),
        "--data",
        s(&tgt),
        "--text-encoder",
        s(&other),
        "--out",
        s(&served),
    ]);
    assert!(e.contains("not the same base model"), "{e}");
    let untitled = catalog(&root, "untitled", 1, 12, 10, Some(4));
    let a = small_transrec(&untitled, &bert, &source);
    let e = err(&a);
    assert!(e.contains("item `4`") && e.contains("has no text"), "{e}");
    let bare = root.join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::copy(src.join("src.inter"), bare.join("bare.inter")).unwrap();
    let a = small_transrec(&bare, &bert, &source);
    let e = err(&a);
    assert!(e.contains("have no text"), "{e}");
    let e = err(&[
        "train",
        "--model",
        "idrec",
        "--data",
        s(&tgt),
        "--out",
        s(&idrec),
        "--text-encoder",
        s(&bert),
    ]);
    assert!(e.contains("--text-encoder") && e.contains("idrec"), "{e}");
    let e = err(&[
        "train",
        "--model",
        "sasrec",
        "--data",
        s(&tgt),
        "--out",
        s(&idrec),
        "--init",
        s(&source),
    ]);
    assert!(e.contains("--init") && e.contains("sasrec"), "{e}");
    let e = err(&[
        "train",
        "--model",
        "transrec",
        "--data",
        s(&tgt),
        "--out",
        s(&idrec),
        "--text-encoder",
        s(&bert),
        "--init",
        s(&source),
        "--hidden-size",
        "16",
    ]);
    assert!(e.contains("--hidden-size 16") && e.contains("has 8"), "{e}");
    let _ = std::fs::remove_dir_all(root);
}

/// `--hold-out-items`: the model is trained without a seeded fraction of the items, its
/// served file lists them, and `eval --cold-start` counts exactly the test events whose target
/// is listed or absent from training.
#[test]
fn held_out_items_are_listed_and_evaluated_as_cold_start() {
    let root = temp_dir("hold-out");
    let (first, n, users) = (501, 10, 8);
    let tgt = catalog(&root, "tgt", first, n, users, None);
    let model = root.join("idrec.safetensors");
    let served = root.join("idrec-served.safetensors");
    let mut a = vec!["train", "--model", "idrec", "--data", s(&tgt)];
    a.extend(["--out", s(&model), "--hold-out-items", "0.3", "--seed", "4"]);
    a.extend([
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--threads",
        "1",
        "--quiet",
    ]);
    ok(&a);
    ok(&[
        "export-items",
        s(&model),
        "--data",
        s(&tgt),
        "--out",
        s(&served),
    ]);
    let file = seqrec_engine::WeightFile::open(&served).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(file.metadata(seqrec_engine::CONFIG_KEY).unwrap()).unwrap();
    let held: Vec<u32> = config["held_out_items"]
        .as_array()
        .unwrap_or_else(|| panic!("no held_out_items in {config}"))
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    // 30% of the 12 listed items (ids 1..=12), rounded up.
    assert_eq!(held.len(), 4, "{held:?}");

    // The catalog's walks, as [`catalog`] writes them; internal ids follow first appearance.
    let walks: Vec<Vec<u32>> = (1..=users)
        .map(|u| {
            (0..9u32)
                .map(|t| match (u, t) {
                    (1, 8) => first + n,
                    _ => first + (u * 3 + t * (1 + u % 3)) % n,
                })
                .collect()
        })
        .collect();
    let mut ids: Vec<u32> = Vec::new();
    for i in walks.iter().flatten() {
        if !ids.contains(i) {
            ids.push(*i);
        }
    }
    let internal = |token: u32| ids.iter().position(|&t| t == token).unwrap() as u32 + 1;
    // Leave-one-out: items 0..7 train, 7 validates, 8 tests.
    let trained: Vec<u32> = walks
        .iter()
        .flat_map(|w| w[..7].iter().map(|&t| internal(t)))
        .collect();
    let expected = walks
        .iter()
        .map(|w| internal(w[8]))
        .filter(|i| held.contains(i) || !trained.contains(i))
        .count();
    assert!(expected > 1, "the seed should hold out a test target");
    let e = ok(&[
        "eval",
        s(&served),
        "--data",
        s(&tgt),
        "--cold-start",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&e).unwrap();
    assert_eq!(v["events"], expected as u64, "{e}");

    let e = err(&[
        "train",
        "--model",
        "idrec",
        "--data",
        s(&tgt),
        "--out",
        s(&model),
        "--hold-out-items",
        "1",
    ]);
    assert!(e.contains("--hold-out-items 1"), "{e}");
}

/// A run stopped by `--epochs` keeps its state; `--resume` with more epochs ends where one
/// uninterrupted run ends, bit for bit; other options are refused; a run that stops on its
/// patience removes the state.
#[test]
fn resume_continues_a_run_as_if_never_stopped() {
    let root = temp_dir("resume");
    let bert = bert_dir(&root, "bert", 6);
    let data = catalog(&root, "src", 1, 12, 10, None);
    // SMALL's options but its --epochs, which each run sets.
    let args = |out: &Path| {
        let mut a = small_transrec(&data, &bert, out);
        let at = a.iter().position(|&x| x == "--epochs").unwrap();
        a.drain(at..at + 2);
        a.extend(["--stage", "cpc"]);
        a.iter().map(|x| x.to_string()).collect::<Vec<String>>()
    };
    let ok_with = |out: &Path, extra: &[&str]| {
        let mut a = args(out);
        a.extend(extra.iter().map(|x| x.to_string()));
        ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let run = |out: &Path, epochs: &str, extra: &[&str]| {
        let mut a = vec!["--patience", "50", "--epochs", epochs];
        a.extend(extra);
        ok_with(out, &a);
    };
    let whole = root.join("whole.safetensors");
    run(&whole, "4", &[]);
    let parted = root.join("parted.safetensors");
    let state = root.join("parted.safetensors.state");
    run(&parted, "2", &[]);
    assert!(state.exists(), "a run stopped by --epochs keeps its state");
    let mut other = args(&parted);
    other.extend(["--resume", "--lr", "0.01"].map(String::from));
    let e = err(&other.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        e.contains("parted.safetensors.state") && e.contains("other options"),
        "{e}"
    );
    run(&parted, "4", &["--resume"]);
    let tensors = |p: &Path| {
        let f = seqrec_engine::WeightFile::open(p).unwrap();
        let names: Vec<String> = f.names().map(str::to_string).collect();
        names
            .iter()
            .map(|n| {
                let shape = f.info(n).unwrap().shape.clone();
                let t = f.tensor(n, &shape).unwrap();
                (
                    n.clone(),
                    t.as_slice().iter().map(|v| v.to_bits()).collect(),
                )
            })
            .collect::<Vec<(String, Vec<u32>)>>()
    };
    assert_eq!(tensors(&parted), tensors(&whole));
    let converged = root.join("converged.safetensors");
    ok_with(&converged, &["--patience", "1", "--epochs", "30"]);
    assert!(!root.join("converged.safetensors.state").exists());
    let mut a = args(&converged);
    a.push("--resume".into());
    assert!(err(&a.iter().map(String::as_str).collect::<Vec<_>>()).contains("does not exist"));
}
