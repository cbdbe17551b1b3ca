//! Test fixtures shared by the text encoder's tests and the models built on it: a tiny
//! vocabulary and BERT configuration, and random BERT folders on disk.

use seqrec_engine::testing::write_random_bert;
use seqrec_engine::text::BertConfig;
use std::path::PathBuf;

/// A tiny WordPiece vocabulary.
pub(crate) const VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "toy", "story", "the", "golden", "##eye", "day",
    "night",
];

/// A BERT of width 8: 2 layers, 2 heads, feed-forward 12, 8 positions, over [`VOCAB`].
pub(crate) fn small_config() -> BertConfig {
    BertConfig {
        vocab_size: VOCAB.len(),
        hidden_size: 8,
        num_hidden_layers: 2,
        num_attention_heads: 2,
        intermediate_size: 12,
        max_position_embeddings: 8,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
    }
}

/// A fresh folder under the temp dir, unique per process and `name`.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("seqrec-textenc-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A random sentence-transformers BERT folder of [`small_config`] drawn with `seed`.
pub(crate) fn random_bert_dir(name: &str, seed: u64) -> PathBuf {
    let dir = temp_dir(name);
    write_random_bert(&dir, &small_config(), VOCAB, 8, seed).unwrap();
    dir
}
