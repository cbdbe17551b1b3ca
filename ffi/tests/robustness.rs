//! Thousands of seeded mutations of valid model files (bit flips, truncations, inflated header
//! lengths, shapes that disagree with the configuration, changed dtype tags, bad data offsets,
//! bad configuration values, appended bytes), each loaded through the C ABI: every outcome is
//! `SEQREC_OK` or an error status other than `SEQREC_ERR_INTERNAL` (which would mean a caught
//! panic), never a crash or a hang; a mutant that loads is scored, ranked and used in a session.

mod common;

#[path = "common/mutate.rs"]
mod mutate;

use common::*;
use seqrec::*;
use seqrec_kernels::testing::Rng;
use std::ffi::CString;
use std::sync::mpsc;
use std::time::Duration;

/// Mutants per architecture (`SEQREC_MUTANTS` overrides, `SEQREC_MUTANT_SEED` changes the seed
/// for exploratory runs).
const MUTANTS_PER_ARCH: usize = 2000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Scores, ranks and replays a loaded mutant; every call must succeed or fail cleanly.
fn exercise(m: &ModelHandle, ctx: &str) {
    let n = m.num_items();
    assert!((2..1 << 20).contains(&n), "{ctx}: num_items {n}");
    let mut users = 0u32;
    // SAFETY: live handle, local out.
    let st = unsafe { seqrec_model_num_users(m.0, &mut users) };
    assert_eq!(st, SEQREC_OK);
    let user = users.checked_sub(1);
    let history: Vec<u32> = (0..4).map(|i| 1 + (i * 7) % (n as u32 - 1)).collect();
    let k = 5.min(n - 1);
    let (items, scores) = m
        .topk(user, &history, k, true)
        .unwrap_or_else(|st| panic!("{ctx}: topk on a loaded mutant: {st:?} {}", last_error()));
    assert!(items.iter().all(|&i| (i as usize) < n), "{ctx}: {items:?}");
    assert_eq!(scores.len(), k);
    m.score(user, &history)
        .unwrap_or_else(|st| panic!("{ctx}: score: {st:?} {}", last_error()));
    let s = SessionHandle::new(m, user)
        .unwrap_or_else(|st| panic!("{ctx}: session: {st:?} {}", last_error()));
    let (mut it, mut sc) = (vec![0u32; k], vec![0f32; k]);
    for &item in &history {
        // SAFETY: live session; `k`-long buffers.
        unsafe {
            assert_eq!(seqrec_session_push(s.0, item), SEQREC_OK, "{ctx}");
            let st = seqrec_session_topk(s.0, k, 0, it.as_mut_ptr(), sc.as_mut_ptr());
            assert_eq!(st, SEQREC_OK, "{ctx}: {}", last_error());
        }
    }
}

/// Loads a mutant from memory (and every 16th also from a file) and checks the outcome.
fn check(bytes: &[u8], via_file: Option<&std::path::Path>, ctx: &str) -> seqrec_status {
    let st = match ModelHandle::from_bytes(bytes) {
        Ok(m) => {
            exercise(&m, ctx);
            SEQREC_OK
        }
        Err((st, msg)) => {
            assert!(
                matches!(st, SEQREC_ERR_FORMAT),
                "{ctx}: loading from memory gave {st:?}: {msg}"
            );
            assert!(msg.starts_with("seqrec_model_load_from_memory: "), "{msg}");
            st
        }
    };
    if let Some(path) = via_file {
        std::fs::write(path, bytes).unwrap();
        let cpath = CString::new(path.to_str().unwrap()).unwrap();
        let mut out = std::ptr::null_mut();
        // SAFETY: NUL-terminated path, local out.
        let from_file = unsafe { seqrec_model_load(cpath.as_ptr(), &mut out) };
        let msg = last_error();
        let m = ModelHandle(out); // frees on drop (NULL on failure)
        assert_eq!(from_file, st, "{ctx}: file and memory disagree: {msg}");
        if from_file == SEQREC_OK {
            exercise(&m, ctx);
        }
    }
    st
}

fn run_all() -> String {
    let dir = std::env::temp_dir().join(format!("seqrec-ffi-mutants-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mutant.safetensors");
    let per_arch = env_or("SEQREC_MUTANTS", MUTANTS_PER_ARCH as u64) as usize;
    let mut rng = Rng::new(env_or("SEQREC_MUTANT_SEED", 0x5eed));
    // outcomes[kind] = (loaded, rejected)
    let mut outcomes = vec![(0usize, 0usize); mutate::KINDS.len()];
    for (a, arch) in ["sasrec", "gru4rec", "nextitnet", "caser"]
        .iter()
        .enumerate()
    {
        let valid = model_bytes(arch, 24, 5, 100 + a as u64);
        for i in 0..per_arch {
            let kind = i % mutate::KINDS.len();
            let bytes = mutate::mutate(&valid, kind, &mut rng);
            let ctx = format!("{arch} mutant {i} ({})", mutate::KINDS[kind]);
            let via_file = (i % 16 == 0).then_some(path.as_path());
            match check(&bytes, via_file, &ctx) {
                SEQREC_OK => outcomes[kind].0 += 1,
                _ => outcomes[kind].1 += 1,
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    let mut report = String::new();
    for (kind, (ok, err)) in mutate::KINDS.iter().zip(&outcomes) {
        report += &format!("{kind}: {ok} loaded, {err} rejected\n");
        assert!(
            *err > 0,
            "{kind}: no mutant was rejected, the mutation does nothing"
        );
    }
    let loaded: usize = outcomes.iter().map(|o| o.0).sum();
    assert!(
        loaded > 0,
        "no mutant loaded: the scoring path was never exercised"
    );
    report
}

#[test]
fn mutated_model_files_load_or_fail_cleanly() {
    // A hang fails the test after two minutes instead of stalling the suite.
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || tx.send(run_all()).unwrap());
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(report) => eprint!("{report}"),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("mutant loading hung for 120 s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The worker panicked: re-raise its message.
            if let Err(e) = worker.join() {
                std::panic::resume_unwind(e);
            }
        }
    }
}
