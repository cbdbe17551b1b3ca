//! Seeded mutations of a valid safetensors model file: bit flips, truncations, inflated or
//! shrunk header lengths, and structured edits of the header (tensor shapes, dtype tags, data
//! offsets, configuration values) written back with a recomputed header length.

use seqrec_kernels::testing::Rng;
use serde_json::{Map, Value};

/// The kinds of mutation, one per test bucket.
pub const KINDS: [&str; 9] = [
    "bit flips",
    "header bit flips",
    "truncation",
    "header length",
    "shape",
    "dtype tag",
    "data offsets",
    "config value",
    "appended bytes",
];

fn header_len(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize
}

/// Splits a valid file into its header object and its data.
fn split(bytes: &[u8]) -> (Map<String, Value>, &[u8]) {
    let n = header_len(bytes);
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).expect("valid header");
    match header {
        Value::Object(map) => (map, &bytes[8 + n..]),
        _ => panic!("header is not an object"),
    }
}

fn join(header: &Map<String, Value>, data: &[u8]) -> Vec<u8> {
    let text = serde_json::to_vec(header).expect("serialise");
    let mut out = Vec::with_capacity(8 + text.len() + data.len());
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    out
}

fn pick<'a, T>(rng: &mut Rng, xs: &'a [T]) -> &'a T {
    &xs[rng.below(xs.len())]
}

/// A value for a number field: small, huge, negative, off by one, or not a number.
fn odd_number(rng: &mut Rng, old: Option<u64>) -> Value {
    let old = old.unwrap_or(1);
    match rng.below(9) {
        0 => Value::from(0),
        1 => Value::from(1),
        2 => Value::from(-1),
        3 => Value::from(old + 1),
        4 => Value::from(old.saturating_sub(1)),
        5 => Value::from(1u64 << (20 + rng.below(44))),
        6 => Value::from(rng.below(100)),
        7 => Value::from(2.5),
        _ => Value::from("x"),
    }
}

/// Mutation `kind` (an index into [`KINDS`]) of `valid`.
pub fn mutate(valid: &[u8], kind: usize, rng: &mut Rng) -> Vec<u8> {
    let mut b = valid.to_vec();
    let n = header_len(valid);
    match kind {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => {
            for _ in 0..1 + rng.below(3) {
                let i = 8 + rng.below(n);
                b[i] ^= 1 << rng.below(8);
            }
        }
        2 => b.truncate(rng.below(b.len())),
        3 => {
            let len = b.len() as u64;
            let v = match rng.below(6) {
                0 => n as u64 + 1 + rng.below(64) as u64,
                1 => (n as u64).saturating_sub(1 + rng.below(64) as u64),
                2 => len - 8 + rng.below(3) as u64,
                3 => u64::MAX - rng.below(16) as u64,
                4 => rng.next_u64(),
                _ => 0,
            };
            b[..8].copy_from_slice(&v.to_le_bytes());
        }
        4..=7 => {
            let (mut header, data) = split(valid);
            let names: Vec<String> = header
                .keys()
                .filter(|k| *k != "__metadata__")
                .cloned()
                .collect();
            let name = pick(rng, &names).clone();
            let entry = header[&name].as_object_mut().expect("tensor entry");
            match kind {
                4 => {
                    let shape = entry["shape"].as_array_mut().expect("shape");
                    match rng.below(4) {
                        0 => shape.reverse(),
                        1 => shape.push(Value::from(1 + rng.below(3))),
                        2 => {
                            shape.pop();
                        }
                        _ => {
                            if !shape.is_empty() {
                                let i = rng.below(shape.len());
                                shape[i] = odd_number(rng, shape[i].as_u64());
                            }
                        }
                    }
                }
                5 => {
                    let tags = [
                        "F16", "BF16", "F64", "I32", "U32", "I8", "U8", "BOOL", "I64", "F8_E4M3",
                        "f32", "XYZ",
                    ];
                    entry.insert("dtype".into(), Value::from(*pick(rng, &tags)));
                }
                6 => {
                    let offs = entry["data_offsets"].as_array_mut().expect("offsets");
                    let i = rng.below(2);
                    offs[i] = odd_number(rng, offs[i].as_u64());
                }
                _ => {
                    let meta = header
                        .get_mut("__metadata__")
                        .and_then(Value::as_object_mut)
                        .expect("metadata");
                    let text = meta["seqrec.config"].as_str().expect("config").to_owned();
                    let mut cfg: Map<String, Value> =
                        serde_json::from_str(&text).expect("config JSON");
                    let keys: Vec<String> = cfg.keys().cloned().collect();
                    let key = pick(rng, &keys).clone();
                    match rng.below(8) {
                        0 => {
                            cfg.remove(&key);
                        }
                        1 => {
                            let other = pick(
                                rng,
                                &["sasrec", "gru4rec", "nextitnet", "caser", "bert4rec"],
                            );
                            cfg.insert("model".into(), Value::from(*other));
                        }
                        2 => {
                            cfg.insert(key, Value::Array(vec![Value::from(0), Value::from(-3)]));
                        }
                        _ => {
                            let old = cfg[&key].as_u64();
                            cfg.insert(key, odd_number(rng, old));
                        }
                    }
                    meta.insert(
                        "seqrec.config".into(),
                        Value::from(serde_json::to_string(&cfg).expect("serialise")),
                    );
                }
            }
            return join(&header, data);
        }
        _ => {
            for _ in 0..1 + rng.below(16) {
                b.push(rng.next_u64() as u8);
            }
        }
    }
    b
}
