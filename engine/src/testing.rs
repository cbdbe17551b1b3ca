//! Random models for tests, benchmarks and examples: a real safetensors file image with the
//! tensors [`crate::model::tensor_specs`] lists for a configuration, filled with seeded
//! random weights, and the configuration in its metadata.

use crate::config::{CONFIG_KEY, Config};
use crate::error::Result;
use crate::model::tensor_specs;
use crate::weights::serialize;
use alloc::format;
#[cfg(feature = "text")]
use alloc::string::ToString;
use alloc::vec::Vec;
use seqrec_kernels::testing::Rng;

/// A safetensors file image with weights drawn from N(0, std²) (LayerNorm scales from
/// 1 + N(0, 0.05²); long-tail flags, `*.long_tail`, 1 for every third item) for `cfg`, which
/// must name `model` and `n_items`.
pub fn random_model_bytes(cfg: &Config, seed: u64, std: f32) -> Result<Vec<u8>> {
    random_model_bytes_with(cfg, seed, std, |_, _| {})
}

/// [`random_model_bytes`] with `edit` applied to every tensor (its name and values) before
/// the file image is written, e.g. to duplicate item rows.
pub fn random_model_bytes_with(
    cfg: &Config,
    seed: u64,
    std: f32,
    edit: impl FnMut(&str, &mut [f32]),
) -> Result<Vec<u8>> {
    random_file(&tensor_specs(cfg)?, cfg, seed, std, edit)
}

/// A PDiT checkpoint image ([`crate::pdit`]) for `cfg` with weights drawn from N(0, std²)
/// (LayerNorm scales from 1 + N(0, 0.05²)).
pub fn random_pdit_bytes(cfg: &Config, seed: u64, std: f32) -> Result<Vec<u8>> {
    random_file(&crate::pdit::tensor_specs(cfg)?, cfg, seed, std, |_, _| {})
}

fn random_file(
    specs: &[crate::weights::TensorSpec],
    cfg: &Config,
    seed: u64,
    std: f32,
    mut edit: impl FnMut(&str, &mut [f32]),
) -> Result<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let values: Vec<Vec<f32>> = specs
        .iter()
        .map(|s| {
            let n: usize = s.shape.iter().product();
            let is_ln_scale = s.name.ends_with(".weight")
                && (s.name.contains("LayerNorm")
                    || s.name.contains(".ln1")
                    || s.name.contains(".ln2")
                    || s.name.contains(".norm"));
            if is_ln_scale {
                (0..n).map(|_| 1.0 + 0.05 * rng.normal()).collect()
            } else if s.name.ends_with(".long_tail") {
                (0..n).map(|i| f32::from(u8::from(i % 3 == 2))).collect()
            } else {
                rng.normal_vec(n, std)
            }
        })
        .collect();
    let mut values = values;
    for (s, v) in specs.iter().zip(&mut values) {
        edit(&s.name, v);
    }
    let tensors: Vec<(&str, &[usize], &[f32])> = specs
        .iter()
        .zip(&values)
        .map(|(s, v)| (s.name.as_str(), s.shape.as_slice(), v.as_slice()))
        .collect();
    let json = cfg.to_json();
    serialize(&tensors, &[(CONFIG_KEY, json.as_str())])
}

/// RecBole's default configuration of an architecture over `n_items` (window 50; Caser gets
/// `n_users`).
pub fn recbole_default_config(arch: &str, n_items: usize, n_users: usize) -> Result<Config> {
    let cfg = Config::from_json(&format!(
        r#"{{"model":"{arch}","n_items":{n_items},"MAX_ITEM_LIST_LENGTH":50}}"#
    ))?;
    Ok(if arch == "caser" {
        cfg.with("n_users", n_users)
    } else {
        cfg
    })
}

/// Hugging Face tensor names and shapes of a `BertModel` with `cfg` (pooler included).
#[cfg(feature = "text")]
pub fn bert_tensor_specs(cfg: &crate::text::BertConfig) -> Vec<crate::weights::TensorSpec> {
    use crate::weights::TensorSpec;
    use alloc::vec;
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let mut specs = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![cfg.vocab_size, h],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![cfg.max_position_embeddings, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![cfg.type_vocab_size, h],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        for (name, shape) in [
            ("attention.self.query.weight", vec![h, h]),
            ("attention.self.query.bias", vec![h]),
            ("attention.self.key.weight", vec![h, h]),
            ("attention.self.key.bias", vec![h]),
            ("attention.self.value.weight", vec![h, h]),
            ("attention.self.value.bias", vec![h]),
            ("attention.output.dense.weight", vec![h, h]),
            ("attention.output.dense.bias", vec![h]),
            ("attention.output.LayerNorm.weight", vec![h]),
            ("attention.output.LayerNorm.bias", vec![h]),
            ("intermediate.dense.weight", vec![i, h]),
            ("intermediate.dense.bias", vec![i]),
            ("output.dense.weight", vec![h, i]),
            ("output.dense.bias", vec![h]),
            ("output.LayerNorm.weight", vec![h]),
            ("output.LayerNorm.bias", vec![h]),
        ] {
            specs.push((format!("{p}.{name}"), shape));
        }
    }
    specs.push(("pooler.dense.weight".into(), vec![h, h]));
    specs.push(("pooler.dense.bias".into(), vec![h]));
    specs
        .into_iter()
        .map(|(name, shape)| TensorSpec { name, shape })
        .collect()
}

/// A Hugging Face `tokenizer.json` for a BERT WordPiece vocabulary (`vocab[i]` has id `i`; it
/// must hold `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]`), with all-MiniLM-L6-v2's pipeline: BERT
/// normaliser (lower-casing and accent stripping), BERT pre-tokeniser, `[CLS] … [SEP]` template.
#[cfg(feature = "text")]
pub fn bert_tokenizer_json(vocab: &[&str]) -> alloc::string::String {
    use serde_json::{Map, Value, json};
    let id = |t: &str| {
        vocab
            .iter()
            .position(|v| *v == t)
            .expect("special token in vocab")
    };
    let map: Map<alloc::string::String, Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| ((*t).into(), Value::from(i)))
        .collect();
    let added: Vec<Value> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .map(|t| {
            json!({"id": id(t), "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true,
                       "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [id("[CLS]")], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [id("[SEP]")], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": map}
    })
    .to_string()
}

/// Writes a sentence-transformers model folder with a random BERT for `cfg` (weights from
/// N(0, 0.2²), LayerNorm scales 1 + N(0, 0.05²)): `model.safetensors`, `config.json`,
/// `tokenizer.json` for `vocab` (see [`bert_tokenizer_json`]), `modules.json` (Transformer,
/// Pooling, Normalize), `1_Pooling/config.json` (mean) and `sentence_bert_config.json` with
/// `max_seq_length`.
#[cfg(feature = "text")]
pub fn write_random_bert(
    dir: &std::path::Path,
    cfg: &crate::text::BertConfig,
    vocab: &[&str],
    max_seq_length: usize,
    seed: u64,
) -> Result<()> {
    use crate::error::Error;
    let io = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |source| Error::Io { path, source }
    };
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, bytes).map_err(io(&path))
    };
    let specs = bert_tensor_specs(cfg);
    let mut rng = Rng::new(seed);
    let values: Vec<Vec<f32>> = specs
        .iter()
        .map(|s| {
            let n: usize = s.shape.iter().product();
            if s.name.contains("LayerNorm.weight") {
                (0..n).map(|_| 1.0 + 0.05 * rng.normal()).collect()
            } else {
                rng.normal_vec(n, 0.2)
            }
        })
        .collect();
    let tensors: Vec<(&str, &[usize], &[f32])> = specs
        .iter()
        .zip(&values)
        .map(|(s, v)| (s.name.as_str(), s.shape.as_slice(), v.as_slice()))
        .collect();
    write(
        "model.safetensors",
        &serialize(&tensors, &[("format", "pt")])?,
    )?;
    let config = serde_json::json!({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size, "layer_norm_eps": cfg.layer_norm_eps,
        "position_embedding_type": "absolute", "pad_token_id": 0
    });
    write("config.json", config.to_string().as_bytes())?;
    write("tokenizer.json", bert_tokenizer_json(vocab).as_bytes())?;
    let modules = r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
{"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
{"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#;
    write("modules.json", modules.as_bytes())?;
    let pooling = format!(
        r#"{{"word_embedding_dimension": {}, "pooling_mode_cls_token": false,
"pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false,
"pooling_mode_mean_sqrt_len_tokens": false}}"#,
        cfg.hidden_size
    );
    write("1_Pooling/config.json", pooling.as_bytes())?;
    let sbert = format!(r#"{{"max_seq_length": {max_seq_length}, "do_lower_case": false}}"#);
    write("sentence_bert_config.json", sbert.as_bytes())
}
