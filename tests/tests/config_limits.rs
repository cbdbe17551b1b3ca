//! Configuration values far beyond any real model (a corrupt or hostile file) are load errors,
//! never an overflow panic or an allocation that aborts the process.

use seqrec_engine::{Config, Model};
use seqrec_tests::{random_model_bytes, small_config};

/// `arch`'s small random model with `key` set to `value` in its stored configuration.
fn load_with(arch: &str, key: &str, value: u64) -> String {
    let bytes = random_model_bytes(&small_config(arch, 20, 5), 1, 0.2);
    let cfg = Config::from_json(&small_config(arch, 20, 5).with(key, value).to_json()).unwrap();
    let opts = seqrec_engine::LoadOptions {
        config: Some(cfg),
        ..Default::default()
    };
    match Model::from_bytes(&bytes, &opts) {
        Ok(_) => panic!("{arch}: {key} = {value} loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn huge_windows_are_rejected_at_load_time() {
    // NextItNet and GRU4Rec have no tensor whose shape bounds the window.
    for arch in ["nextitnet", "gru4rec", "sasrec", "caser"] {
        let e = load_with(arch, "MAX_ITEM_LIST_LENGTH", 1 << 40);
        assert!(
            e.contains("MAX_ITEM_LIST_LENGTH is 1099511627776"),
            "{arch}: {e}"
        );
    }
    let e = load_with("nextitnet", "MAX_ITEM_LIST_LENGTH", (1 << 16) + 1);
    assert!(e.contains("1..=65536"), "{e}");
}

#[test]
fn huge_sizes_and_counts_are_errors() {
    for (arch, key, value, want) in [
        ("gru4rec", "hidden_size", u64::MAX / 2, "too large"),
        ("gru4rec", "num_layers", 1 << 40, "missing"),
        ("nextitnet", "block_num", u64::MAX / 2, "missing"),
        ("sasrec", "n_layers", 1 << 40, "missing"),
        ("sasrec", "hidden_size", 1 << 40, "expected shape"),
        ("caser", "nh", 1 << 40, "expected shape"),
    ] {
        let e = load_with(arch, key, value);
        assert!(e.contains(want), "{arch} {key} = {value}: {e}");
    }
}
