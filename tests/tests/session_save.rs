//! Sessions that move: a session saved and restored at every step, on another load of the same
//! model, continues exactly as the original (same bytes, same scores bit for bit, same top-k)
//! for every architecture over random event streams with session boundaries and knob changes;
//! restoring into another model, and corrupt or truncated state, fail cleanly.

use seqrec_engine::{Config, Error, Model, SESSION_MAGIC, Session};
use seqrec_kernels::testing::Rng;
use seqrec_tests::{every_architecture, random_model_bytes, small_config};

fn load(bytes: &[u8]) -> Model {
    Model::from_bytes(bytes, &Default::default()).unwrap()
}

fn new_session(m: &Model) -> Session<'_> {
    match m.info().n_users {
        Some(_) => m.session_for_user(3).unwrap(),
        None => m.session().unwrap(),
    }
}

/// Scores and both top-k lists, or the error message, of a session now.
fn observe(s: &mut Session<'_>, n_items: usize) -> Result<(Vec<u32>, Vec<String>), String> {
    let mut scores = vec![0f32; n_items];
    s.scores(&mut scores).map_err(|e| e.to_string())?;
    let mut lists = Vec::new();
    for excl in [false, true] {
        let top = s.topk(7, excl).map_err(|e| e.to_string())?;
        lists.push(format!("{top:?}"));
    }
    Ok((scores.iter().map(|v| v.to_bits()).collect(), lists))
}

#[test]
fn a_session_restored_at_every_step_continues_exactly() {
    let (n_items, max_len) = (40, 6);
    for (c, (name, cfg)) in every_architecture(n_items, max_len).into_iter().enumerate() {
        let bytes = random_model_bytes(&cfg, 300 + c as u64, 0.3);
        let (here, there) = (load(&bytes), load(&bytes));
        assert_eq!(here.fingerprint(), there.fingerprint(), "{name}");
        let specs = here.objective_specs();
        let mut rng = Rng::new(7 + c as u64);
        let mut original = new_session(&here);
        let mut moved = Session::restore(&there, &original.save().unwrap()).unwrap();
        for step in 0..3 * max_len + 4 {
            let roll = rng.below(10);
            let (a, b) = if roll == 0 {
                (original.end(), moved.end())
            } else if roll == 1 && !specs.is_empty() {
                let spec = &specs[rng.below(specs.len())];
                let hi = spec.max.min(spec.min + 3.0);
                let v = spec.min + (hi - spec.min) * rng.below(1000) as f32 / 1000.0;
                (
                    original.set_objective(spec.name, v),
                    moved.set_objective(spec.name, v),
                )
            } else {
                let item = 1 + rng.below(n_items - 1) as u32;
                (original.push(item), moved.push(item))
            };
            assert_eq!(
                a.map_err(|e| e.to_string()),
                b.map_err(|e| e.to_string()),
                "{name} step {step}"
            );
            let saved = moved.save().unwrap();
            assert_eq!(original.save().unwrap(), saved, "{name} step {step}: bytes");
            moved = Session::restore(&there, &saved).unwrap();
            assert_eq!(
                observe(&mut original, n_items),
                observe(&mut moved, n_items),
                "{name} step {step}"
            );
        }
    }
}

#[test]
fn a_full_window_sasrec_session_is_compact() {
    // RecBole's SASRec defaults: 2 layers of width 64, window 50.
    let cfg = Config::from_json(
        r#"{"model":"sasrec","n_items":1000,"MAX_ITEM_LIST_LENGTH":50,"hidden_size":64,
            "n_layers":2,"n_heads":2,"inner_size":256}"#,
    )
    .unwrap();
    let m = load(&random_model_bytes(&cfg, 5, 0.1));
    let mut s = m.session().unwrap();
    for i in 0..60u32 {
        s.push(1 + (i * 37) % 999).unwrap();
    }
    let bytes = s.save().unwrap();
    // Keys and values of 2 layers x 50 positions x 64 (51,200 bytes), the user vector, the
    // history as varints and a 23-byte frame.
    println!("full-window SASRec session: {} bytes", bytes.len());
    assert!(bytes.len() < 64 * 1024, "{} bytes", bytes.len());
}

#[test]
fn restoring_into_another_model_is_an_error() {
    let cfg = small_config("sasrec", 30, 5);
    let a = load(&random_model_bytes(&cfg, 1, 0.3));
    let b = load(&random_model_bytes(&cfg, 2, 0.3));
    assert_ne!(a.fingerprint(), b.fingerprint());
    let mut s = a.session().unwrap();
    s.push(3).unwrap();
    let e = Session::restore(&b, &s.save().unwrap()).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    assert!(e.to_string().contains("saved from another model"), "{e}");
    // Another architecture entirely.
    let g = load(&random_model_bytes(&small_config("gru4rec", 30, 5), 1, 0.3));
    let e = g.session_restore(&s.save().unwrap()).unwrap_err();
    assert!(e.to_string().contains("another model"), "{e}");
}

fn crc32(bytes: &[u8]) -> u32 {
    seqrec_engine::codec::crc32(0, bytes)
}

/// Replaces the checksum so that a mutation reaches the parser.
fn reseal(bytes: &mut [u8]) {
    let n = bytes.len() - 4;
    let crc = crc32(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn corrupt_and_truncated_state_is_rejected_cleanly() {
    for (name, cfg) in every_architecture(40, 6) {
        let m = load(&random_model_bytes(&cfg, 11, 0.3));
        let mut s = new_session(&m);
        for item in [3, 9, 4] {
            s.push(item).unwrap();
        }
        if name.starts_with("hdt") || name == "hier" {
            s.end().unwrap();
            s.push(5).unwrap();
        }
        let good = s.save().unwrap();
        assert!(good.starts_with(&SESSION_MAGIC));
        // Every truncation.
        for len in 0..good.len() {
            let e = m.session_restore(&good[..len]).unwrap_err();
            assert!(matches!(e, Error::SessionState(_)), "{name} len {len}: {e}");
        }
        // Every single-bit flip is caught by the checksum or the frame checks.
        for i in 0..good.len() {
            for bit in [0, 3, 7] {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    m.session_restore(&bad).is_err(),
                    "{name} byte {i} bit {bit}"
                );
            }
        }
        // Mutations behind a valid checksum: never a panic; a state that loads keeps working.
        let mut rng = Rng::new(5);
        for round in 0..300 {
            let mut bad = good.clone();
            match round % 3 {
                0 => {
                    let i = 14 + rng.below(bad.len() - 18);
                    bad[i] = rng.below(256) as u8;
                }
                1 => {
                    let i = 14 + rng.below(bad.len() - 18);
                    bad.splice(i..i, [0xff, 0xff, 0xff, 0xff, 0x0f]);
                }
                _ => {
                    let i = 14 + rng.below(bad.len() - 18);
                    bad.drain(i..(i + 1 + rng.below(8)).min(bad.len() - 4));
                }
            }
            reseal(&mut bad);
            if let Ok(state) = m.session_restore(&bad) {
                let mut s = Session::restore(&m, &bad).unwrap();
                let _ = s.topk(3, true);
                let _ = s.push(2);
                let _ = s.topk(3, false);
                drop(state);
            }
        }
        // Another format version and a foreign byte string are named as such.
        let mut v3 = good.clone();
        v3[4] = 3;
        reseal(&mut v3);
        let e = m.session_restore(&v3).unwrap_err().to_string();
        assert!(e.contains("format version 3"), "{e}");
        let e = m.session_restore(b"PK\x03\x04 not a session").unwrap_err();
        assert!(e.to_string().contains("not a saved seqrec session"), "{e}");
    }
}
