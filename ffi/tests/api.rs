//! The C ABI called from Rust returns what the Rust API returns: model info, full-catalog
//! scores, top-k (plain, per user, batched, in sessions) for every architecture, from a file
//! and from memory, from one thread and from eight. Also the version string, the thread-local
//! last error, `*_free(NULL)` and the id 0 / -INFINITY filling of short top-k lists.

mod common;

use common::*;
use seqrec::*;
use seqrec_engine::{Model, Query};
use seqrec_kernels::testing::Rng;
use std::ffi::{CStr, CString};
use std::ptr;

const ARCHS: [&str; 4] = ["sasrec", "gru4rec", "nextitnet", "caser"];

fn user_of(arch: &str) -> Option<u32> {
    (arch == "caser").then_some(4)
}

fn query(history: &[u32], user: Option<u32>, exclude: bool) -> Query<'_> {
    let q = Query::new(history).exclude_history(exclude);
    match user {
        Some(u) => q.user(u),
        None => q,
    }
}

fn random_histories(rng: &mut Rng, n: usize, n_items: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|_| {
            (0..1 + rng.below(15))
                .map(|_| 1 + rng.below(n_items - 1) as u32)
                .collect()
        })
        .collect()
}

#[test]
fn version_is_the_crate_version_with_static_lifetime() {
    let p = seqrec_version();
    // SAFETY: a static NUL-terminated string.
    let v = unsafe { CStr::from_ptr(p) }.to_str().unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
    assert_eq!(v.split('.').count(), 3, "MAJOR.MINOR.PATCH: {v}");
    assert_eq!(seqrec_version(), p, "same static string every call");
}

#[test]
fn free_null_is_a_no_op_and_keeps_the_last_error() {
    // SAFETY: NULL is documented as a no-op.
    unsafe {
        seqrec_model_load(ptr::null(), ptr::null_mut());
    }
    let before = last_error();
    assert!(before.contains("out is NULL"), "{before}");
    // SAFETY: NULL is documented as a no-op.
    unsafe {
        seqrec_model_free(ptr::null_mut());
        seqrec_session_free(ptr::null_mut());
    }
    assert_eq!(last_error(), before);
}

#[test]
fn last_error_is_per_thread_and_cleared_by_success() {
    let bytes = model_bytes("sasrec", 30, 6, 1);
    let m = ModelHandle::from_bytes(&bytes).unwrap();
    assert_eq!(m.topk(None, &[0], 3, false), Err(SEQREC_ERR_OUT_OF_RANGE));
    let mine = last_error();
    assert!(mine.starts_with("seqrec_model_topk: item id 0"), "{mine}");
    std::thread::scope(|s| {
        s.spawn(|| {
            assert_eq!(last_error(), "", "a new thread starts with no message");
            assert_eq!(
                m.topk(None, &[], 3, false),
                Err(SEQREC_ERR_INVALID_ARGUMENT)
            );
            assert!(last_error().contains("empty history"), "{}", last_error());
        })
        .join()
        .unwrap();
    });
    assert_eq!(
        last_error(),
        mine,
        "another thread's failure left ours alone"
    );
    m.topk(None, &[1, 2], 3, false).unwrap();
    assert_eq!(last_error(), "", "success clears the message");
}

#[test]
fn path_and_memory_loading_agree_and_report_info() {
    for (a, arch) in ARCHS.iter().enumerate() {
        let bytes = model_bytes(arch, 40, 7, 20 + a as u64);
        let dir =
            std::env::temp_dir().join(format!("seqrec-ffi-api-{}-{arch}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.safetensors");
        std::fs::write(&path, &bytes).unwrap();
        let cpath = CString::new(path.to_str().unwrap()).unwrap();
        let mut raw = ptr::null_mut();
        // SAFETY: a NUL-terminated path and a local out.
        let st = unsafe { seqrec_model_load(cpath.as_ptr(), &mut raw) };
        assert_eq!(st, SEQREC_OK);
        let from_file = ModelHandle(raw);
        let from_mem = ModelHandle::from_bytes(&bytes).unwrap();
        let rust = Model::from_bytes(&bytes, &Default::default()).unwrap();
        let info = rust.info();
        let (mut n_items, mut n_users, mut max_len, mut dim) = (0u32, 9u32, 0usize, 0usize);
        let mut name: *const std::ffi::c_char = ptr::null();
        // SAFETY: live handle and local outs.
        unsafe {
            assert_eq!(seqrec_model_num_items(from_file.0, &mut n_items), SEQREC_OK);
            assert_eq!(seqrec_model_num_users(from_file.0, &mut n_users), SEQREC_OK);
            assert_eq!(seqrec_model_max_len(from_file.0, &mut max_len), SEQREC_OK);
            assert_eq!(seqrec_model_dim(from_file.0, &mut dim), SEQREC_OK);
            assert_eq!(seqrec_model_arch(from_file.0, &mut name), SEQREC_OK);
            assert_eq!(CStr::from_ptr(name).to_str().unwrap(), *arch);
        }
        assert_eq!(n_items as usize, info.n_items);
        assert_eq!(n_users as usize, info.n_users.unwrap_or(0));
        assert_eq!((max_len, dim), (info.max_len, info.dim));
        let user = user_of(arch);
        let h = [3, 9, 1, 30];
        assert_eq!(
            from_file.topk(user, &h, 5, true),
            from_mem.topk(user, &h, 5, true)
        );
        assert_eq!(from_file.score(user, &h), from_mem.score(user, &h));
        drop((from_file, from_mem));
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn scores_topk_and_batches_equal_the_rust_api() {
    for (a, arch) in ARCHS.iter().enumerate() {
        let n_items = 50;
        let bytes = model_bytes(arch, n_items, 8, 30 + a as u64);
        let m = ModelHandle::from_bytes(&bytes).unwrap();
        let rust = Model::from_bytes(&bytes, &Default::default()).unwrap();
        let mut ws = rust.new_workspace();
        let user = user_of(arch);
        let mut rng = Rng::new(5 + a as u64);
        let histories = random_histories(&mut rng, 12, n_items);
        let mut want_scores = vec![0f32; n_items];
        for h in &histories {
            rust.score(&query(h, user, false), &mut ws, &mut want_scores)
                .unwrap();
            assert_eq!(m.score(user, h).unwrap(), want_scores, "{arch} scores");
            for exclude in [false, true] {
                let want = rust.topk(&query(h, user, exclude), 7, &mut ws).unwrap();
                let (items, scores) = m.topk(user, h, 7, exclude).unwrap();
                let got: Vec<(u32, f32)> = items.into_iter().zip(scores).collect();
                let want: Vec<(u32, f32)> = want.iter().map(|r| (r.item, r.score)).collect();
                assert_eq!(got, want, "{arch} topk exclude={exclude}");
            }
        }
        // Batch: flattened histories with offsets, rows equal single requests.
        let mut flat = Vec::new();
        let mut offsets = vec![0usize];
        for h in &histories {
            flat.extend_from_slice(h);
            offsets.push(flat.len());
        }
        let (b, k) = (histories.len(), 6);
        let users = vec![user.unwrap_or(0); b];
        let (mut items, mut scores) = (vec![0u32; b * k], vec![0f32; b * k]);
        // SAFETY: buffers of the documented lengths.
        let st = unsafe {
            if user.is_some() {
                seqrec_model_topk_batch_user(
                    m.0,
                    users.as_ptr(),
                    flat.as_ptr(),
                    offsets.as_ptr(),
                    b,
                    k,
                    1,
                    items.as_mut_ptr(),
                    scores.as_mut_ptr(),
                )
            } else {
                seqrec_model_topk_batch(
                    m.0,
                    flat.as_ptr(),
                    offsets.as_ptr(),
                    b,
                    k,
                    1,
                    items.as_mut_ptr(),
                    scores.as_mut_ptr(),
                )
            }
        };
        assert_eq!(st, SEQREC_OK, "{}", last_error());
        for (i, h) in histories.iter().enumerate() {
            let (want_i, want_s) = m.topk(user, h, k, true).unwrap();
            assert_eq!(
                &items[i * k..(i + 1) * k],
                &want_i[..],
                "{arch} batch row {i}"
            );
            // The batched encoder sums its products in another order: 1e-5 of the largest.
            let scale = want_s.iter().fold(1f32, |m, s| m.max(s.abs()));
            for (g, w) in scores[i * k..(i + 1) * k].iter().zip(&want_s) {
                assert!(
                    (g - w).abs() <= 1e-5 * scale || g == w,
                    "{arch} batch row {i}: {g} vs {w}"
                );
            }
        }
    }
}

#[test]
fn sessions_equal_the_rust_sessions_and_outlive_their_model_handle() {
    for (a, arch) in ARCHS.iter().enumerate() {
        let n_items = 40;
        let bytes = model_bytes(arch, n_items, 5, 50 + a as u64);
        let m = ModelHandle::from_bytes(&bytes).unwrap();
        let rust = Model::from_bytes(&bytes, &Default::default()).unwrap();
        let user = user_of(arch);
        let s = SessionHandle::new(&m, user).unwrap();
        let mut want = match user {
            Some(u) => rust.session_for_user(u).unwrap(),
            None => rust.session().unwrap(),
        };
        drop(m); // the session keeps the model alive
        let mut rng = Rng::new(77);
        let k = 5;
        for step in 0..12 {
            let item = 1 + rng.below(n_items - 1) as u32;
            // SAFETY: live session.
            assert_eq!(unsafe { seqrec_session_push(s.0, item) }, SEQREC_OK);
            want.push(item).unwrap();
            let mut len = 0usize;
            // SAFETY: live session, local out.
            assert_eq!(unsafe { seqrec_session_len(s.0, &mut len) }, SEQREC_OK);
            assert_eq!(len, step + 1);
            for exclude in [0, 1] {
                let (mut items, mut scores) = (vec![0u32; k], vec![0f32; k]);
                // SAFETY: live session, `k`-long buffers.
                let st = unsafe {
                    seqrec_session_topk(s.0, k, exclude, items.as_mut_ptr(), scores.as_mut_ptr())
                };
                assert_eq!(st, SEQREC_OK, "{}", last_error());
                let w = want.topk(k, exclude == 1).unwrap();
                assert_eq!(
                    items,
                    w.iter().map(|r| r.item).collect::<Vec<_>>(),
                    "{arch}"
                );
                assert_eq!(
                    scores,
                    w.iter().map(|r| r.score).collect::<Vec<_>>(),
                    "{arch}"
                );
            }
            let mut all = vec![0f32; n_items + 3];
            // SAFETY: live session, buffer of the stated length.
            let st = unsafe { seqrec_session_score(s.0, all.as_mut_ptr(), all.len()) };
            assert_eq!(st, SEQREC_OK);
            let mut w = vec![0f32; n_items];
            want.scores(&mut w).unwrap();
            assert_eq!(&all[..n_items], &w[..], "{arch} session scores");
            assert_eq!(&all[n_items..], &[0.0; 3], "beyond num_items untouched");
        }
    }
}

#[test]
fn short_topk_lists_are_filled_with_id_0_and_minus_infinity() {
    let bytes = model_bytes("gru4rec", 6, 4, 3);
    let m = ModelHandle::from_bytes(&bytes).unwrap();
    // 5 real items, 3 distinct in the history: 2 remain for k = 5.
    let (items, scores) = m.topk(None, &[2, 4, 2, 5], 5, true).unwrap();
    assert!(items[..2].iter().all(|&i| [1, 3].contains(&i)), "{items:?}");
    assert!(scores[..2].iter().all(|s| s.is_finite()));
    assert_eq!(&items[2..], &[0, 0, 0]);
    assert!(scores[2..].iter().all(|&s| s == f32::NEG_INFINITY));
    // Without exclusions all 5 real items fit.
    let (items, _) = m.topk(None, &[2, 4], 5, false).unwrap();
    let mut sorted = items.clone();
    sorted.sort();
    assert_eq!(sorted, vec![1, 2, 3, 4, 5]);
}

#[test]
fn eight_threads_share_one_model_handle() {
    for (a, arch) in ARCHS.iter().enumerate() {
        let n_items = 300;
        let bytes = model_bytes(arch, n_items, 10, 60 + a as u64);
        let m = ModelHandle::from_bytes(&bytes).unwrap();
        let user = user_of(arch);
        let mut rng = Rng::new(9);
        let histories = random_histories(&mut rng, 40, n_items);
        let single: Vec<_> = histories
            .iter()
            .map(|h| m.topk(user, h, 10, false).unwrap())
            .collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let (m, histories, single) = (&m, &histories, &single);
                    s.spawn(move || {
                        for round in 0..3 {
                            for j in 0..histories.len() {
                                let i = (j * 7 + t * 3 + round) % histories.len();
                                let got = m.topk(user, &histories[i], 10, false).unwrap();
                                assert_eq!(got, single[i], "{arch} thread {t} request {i}");
                            }
                        }
                        // A session per thread on the shared model.
                        let sess = SessionHandle::new(m, user).unwrap();
                        for &item in &histories[t] {
                            // SAFETY: this thread's own session.
                            assert_eq!(unsafe { seqrec_session_push(sess.0, item) }, SEQREC_OK);
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
        });
    }
}

#[test]
fn plain_backbones_list_no_objectives_and_refuse_knobs() {
    let bytes = model_bytes("sasrec", 30, 5, 3);
    let m = ModelHandle::from_bytes(&bytes).unwrap();
    let mut n = usize::MAX;
    // SAFETY: live model, local out.
    let st = unsafe { seqrec_model_num_objectives(m.0, &mut n) };
    assert_eq!(st, SEQREC_OK);
    assert_eq!(n, 0);
    let (mut name, mut default) = (ptr::null(), 0f32);
    // SAFETY: live model, local outs.
    let st = unsafe { seqrec_model_objective(m.0, 0, &mut name, &mut default) };
    assert_eq!(st, SEQREC_ERR_OUT_OF_RANGE);
    assert!(
        last_error().contains("0 objective knobs"),
        "{}",
        last_error()
    );
    let s = SessionHandle::new(&m, None).unwrap();
    // SAFETY: live session.
    assert_eq!(unsafe { seqrec_session_push(s.0, 7) }, SEQREC_OK);
    let alpha = CString::new("alpha").unwrap();
    // SAFETY: live session, NUL-terminated name.
    let st = unsafe { seqrec_session_set_objective(s.0, alpha.as_ptr(), 2.0) };
    assert_eq!(st, SEQREC_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("`alpha`"), "{}", last_error());
    // SAFETY: live session; NULL name is reported, not dereferenced.
    let st = unsafe { seqrec_session_set_objective(s.0, ptr::null(), 2.0) };
    assert_eq!(st, SEQREC_ERR_INVALID_ARGUMENT);
    // SAFETY: live session.
    assert_eq!(unsafe { seqrec_session_end(s.0) }, SEQREC_OK);
    // SAFETY: NULL is reported, not dereferenced.
    let st = unsafe { seqrec_session_end(ptr::null_mut()) };
    assert_eq!(st, SEQREC_ERR_INVALID_ARGUMENT);
    let mut len = 0usize;
    // SAFETY: live session, local out.
    assert_eq!(unsafe { seqrec_session_len(s.0, &mut len) }, SEQREC_OK);
    assert_eq!(
        len, 1,
        "a plain model keeps its history across a session end"
    );
}
