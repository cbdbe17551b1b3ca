//! `seqrec embed` and `seqrec embed-items` end to end: a small random BERT model folder
//! (always) and all-MiniLM-L6-v2 on ml-100k (when fetched and when `../shared` is present).

use seqrec_engine::testing::write_random_bert;
use seqrec_engine::text::{BertConfig, TextEncoder, TextOptions};
use seqrec_engine::{DType, WeightFile};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "toy", "story", "golden", "##eye", "(", ")", ".",
    "1995", "comedy", "drama", "the",
];

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seqrec-embed-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn model_dir(name: &str) -> PathBuf {
    let dir = temp_dir(name).join("model");
    let cfg = BertConfig {
        vocab_size: VOCAB.len(),
        hidden_size: 16,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 24,
        max_position_embeddings: 32,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
    };
    write_random_bert(&dir, &cfg, VOCAB, 32, 3).unwrap();
    dir
}

fn seqrec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seqrec"))
        .args(args)
        .output()
        .expect("seqrec runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn embed_prints_json_rows_in_input_order() {
    let dir = model_dir("json");
    let file = dir.parent().unwrap().join("titles.txt");
    std::fs::write(&file, "GoldenEye\nthe story (1995)\n").unwrap();
    let o = seqrec(&[
        "embed",
        "--model-dir",
        s(&dir),
        "--text",
        "Toy Story",
        "--file",
        s(&file),
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["dim"], 16);
    let rows = v["embeddings"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let enc = TextEncoder::load(&dir).unwrap();
    let want = enc
        .encode_batch(&["Toy Story", "GoldenEye", "the story (1995)"])
        .unwrap();
    for (i, row) in rows.iter().enumerate() {
        let row: Vec<f32> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        // JSON holds the shortest decimal that rounds back to the same f32.
        assert_eq!(row, want[i * 16..(i + 1) * 16], "row {i}");
    }
}

#[test]
fn embed_writes_a_safetensors_table() {
    let dir = model_dir("out");
    let out = dir.parent().unwrap().join("e.safetensors");
    let meta = embed_to_table(&dir, &out, &[], &TextOptions::default());
    assert!(
        meta.contains("\"dim\":16") && meta.contains("\"weight_dtype\":\"i16\""),
        "{meta}"
    );

    // --weight-dtype f32 keeps the weights as stored.
    let options = TextOptions {
        weight_dtype: DType::F32,
    };
    let meta = embed_to_table(&dir, &out, &["--weight-dtype", "f32"], &options);
    assert!(meta.contains("\"weight_dtype\":\"f32\""), "{meta}");
    let o = seqrec(&[
        "embed",
        "--model-dir",
        s(&dir),
        "--weight-dtype",
        "bf16",
        "--text",
        "a",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not one of i16, f16, f32"),
        "{}",
        stderr(&o)
    );
}

/// `seqrec embed` of "toy" and "drama" with the model folder `dir` and `extra` arguments into
/// the safetensors file `out`: its table is exactly that of the encoder of `dir` loaded with
/// `options`. Returns the text encoder's metadata of the file.
fn embed_to_table(dir: &Path, out: &Path, extra: &[&str], options: &TextOptions) -> String {
    let mut args = vec!["embed", "--model-dir", s(dir)];
    args.extend(extra);
    args.extend(["--text", "toy", "--text", "drama", "--out", s(out)]);
    let o = seqrec(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = WeightFile::open(out).unwrap();
    let t = f.tensor("item_text_embedding", &[2, 16]).unwrap();
    let want = TextEncoder::load_with(dir, options)
        .unwrap()
        .encode_batch(&["toy", "drama"])
        .unwrap();
    assert_eq!(t.as_slice(), &want[..]);
    f.metadata("seqrec.text_encoder").unwrap().to_string()
}

#[test]
fn embed_rejects_bad_input_with_exit_2() {
    let dir = model_dir("bad");
    let file = dir.parent().unwrap().join("titles.txt");
    std::fs::write(&file, "toy\n   \nstory\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--file", s(&file)], "titles.txt:2: empty text"),
        (vec!["--text", "toy", "--text", ""], "--text 2: empty text"),
        (vec![], "nothing to embed"),
        (
            vec!["--text", "a", "--format", "json", "--out", "x"],
            "cannot be used with",
        ),
    ];
    for (args, want) in cases {
        let mut full = vec!["embed", "--model-dir", s(&dir)];
        full.extend(&args);
        let o = seqrec(&full);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
    let o = seqrec(&["embed", "--model-dir", "/nonexistent/minilm", "--text", "a"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("fetch-minilm"), "{}", stderr(&o));
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let o = seqrec(&["embed", "--model-dir", s(&dir), "--text", "a"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("config.json is missing"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn embed_items_builds_an_id_aligned_table() {
    let dir = model_dir("items");
    let data = dir.parent().unwrap().join("toyset");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("toyset.item"),
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\tprice:float\n\
         1\tToy Story\t1995\tComedy\t3.5\n\
         2\tGoldenEye\t\tDrama\t1.0\n\
         4\t\t\t\t2.0\n",
    )
    .unwrap();
    let out = dir.parent().unwrap().join("items.safetensors");
    let o = seqrec(&[
        "embed-items",
        "--model-dir",
        s(&dir),
        "--data",
        s(&data),
        "--data-format",
        "recbole",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = WeightFile::open(&out).unwrap();
    let t = f.tensor("item_text_embedding", &[5, 16]).unwrap();
    let rows = t.as_slice();
    let enc = TextEncoder::load(&dir).unwrap();
    // Title first, then the other text fields in file order, empty ones skipped; float
    // fields are not text.
    let want = enc
        .encode_batch(&["Toy Story. 1995. Comedy", "GoldenEye. Drama"])
        .unwrap();
    assert_eq!(&rows[16..48], &want[..]);
    for id in [0, 3, 4] {
        assert!(
            rows[id * 16..(id + 1) * 16].iter().all(|&v| v == 0.0),
            "row {id}"
        );
    }
    assert_eq!(f.metadata("seqrec.items_without_text"), Some("[0,3,4]"));

    std::fs::write(
        data.join("toyset.item"),
        "item_id:token\tmovie_title:token_seq\n1\ttoy\n1\tstory\n",
    )
    .unwrap();
    let o = seqrec(&[
        "embed-items",
        "--model-dir",
        s(&dir),
        "--data",
        s(&data),
        "--out",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("toyset.item:3: item id 1 is listed twice"),
        "{}",
        stderr(&o)
    );
    std::fs::write(
        data.join("toyset.item"),
        "item_id:token\tmovie_title:token_seq\nx1\ttoy\n",
    )
    .unwrap();
    let o = seqrec(&[
        "embed-items",
        "--model-dir",
        s(&dir),
        "--data",
        s(&data),
        "--out",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("toyset.item:2: item id `x1`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn embed_items_reads_the_amazon_layout() {
    let dir = model_dir("amazon");
    let data = dir.parent().unwrap().join("Scientific");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("Scientific.text"),
        "item_id:token\ttext:token_seq\nB01\tToy Story. Comedy.\nB02\tGoldenEye.\n",
    )
    .unwrap();
    std::fs::write(
        data.join("Scientific.item2index"),
        "B02\t0\nB01\t1\nB03\t2\n",
    )
    .unwrap();
    let out = dir.parent().unwrap().join("sci.safetensors");
    let o = seqrec(&[
        "embed-items",
        "--model-dir",
        s(&dir),
        "--data",
        s(&data),
        "--data-format",
        "amazon-scientific",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = WeightFile::open(&out).unwrap();
    let rows = f.tensor("item_text_embedding", &[3, 16]).unwrap();
    let want = TextEncoder::load(&dir)
        .unwrap()
        .encode_batch(&["GoldenEye.", "Toy Story. Comedy."])
        .unwrap();
    assert_eq!(&rows.as_slice()[..32], &want[..]);
    assert_eq!(f.metadata("seqrec.items_without_text"), Some("[2]"));
}

#[test]
fn embed_items_on_ml100k_with_minilm() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = std::env::var_os("SEQREC_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".minilm"));
    let shared = std::env::var_os("SEQREC_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared"));
    let data = shared.join("data/ml-100k");
    if !model.join("model.safetensors").is_file() || !data.is_dir() {
        eprintln!(
            "skipped: embed-items on ml-100k: needs {} (scripts/fetch-minilm.sh) and {}",
            model.display(),
            data.display()
        );
        return;
    }
    let out = temp_dir("ml100k").join("items.safetensors");
    let o = seqrec(&[
        "embed-items",
        "--model-dir",
        s(&model),
        "--data",
        s(&data),
        "--data-format",
        "recbole",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = WeightFile::open(&out).unwrap();
    let t = f.tensor("item_text_embedding", &[1683, 384]).unwrap();
    assert_eq!(f.metadata("seqrec.items_without_text"), Some("[0]"));
    let enc = TextEncoder::load(&model).unwrap();
    let toy = enc
        .encode("Toy Story. 1995. Animation Children's Comedy")
        .unwrap();
    for (a, b) in t.as_slice()[384..768].iter().zip(&toy) {
        // Same kernels; the table's batch packs other items beside it: a few ulps.
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}
