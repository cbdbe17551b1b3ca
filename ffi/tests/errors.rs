//! Every error path of the C ABI returns its status with a message naming the function and the
//! problem, and leaves the out-parameters untouched: NULL for every pointer argument, bad
//! lengths, k out of range, bad ids, bad users, bad batch offsets, misaligned and overlapping
//! buffers, unreadable and invalid files.

mod common;

use common::*;
use seqrec::*;
use std::ffi::{CString, c_char};
use std::ptr::{null, null_mut};

fn sasrec() -> ModelHandle {
    ModelHandle::from_bytes(&model_bytes("sasrec", 30, 6, 1)).unwrap()
}

fn caser() -> ModelHandle {
    ModelHandle::from_bytes(&model_bytes("caser", 30, 6, 2)).unwrap()
}

#[test]
fn null_pointers_are_rejected_for_every_argument() {
    let m = sasrec();
    let c = caser();
    let s = SessionHandle::new(&m, None).unwrap();
    let (h, offs, users) = ([1u32, 2, 3], [0usize, 3], [1u32]);
    let (mut n32, mut nsz, mut name) = (0u32, 0usize, null::<c_char>());
    let mut items = [0u32; 4];
    let mut scores = [0f32; 30];
    let (ip, sp) = (items.as_mut_ptr(), scores.as_mut_ptr());
    let (mut mout, mut sout) = (null_mut(), null_mut());
    let path = CString::new("/nonexistent").unwrap();
    let data = [0u8; 4];
    let m = m.ptr();
    let cm = c.ptr();
    let mut checked = 0;
    // Calls `$func(args)`, expects SEQREC_ERR_INVALID_ARGUMENT and "$func: ... $arg is NULL".
    macro_rules! null_arg {
        ($func:ident, $arg:literal, $($a:expr),*) => {{
            // SAFETY: every pointer is NULL or valid for the documented length.
            let st = unsafe { $func($($a),*) };
            let want = concat!(stringify!($func), ": invalid argument: ", $arg, " is NULL");
            expect_err(st, SEQREC_ERR_INVALID_ARGUMENT, &[want]);
            checked += 1;
        }};
    }
    null_arg!(seqrec_model_load, "path", null(), &mut mout);
    null_arg!(seqrec_model_load, "out", path.as_ptr(), null_mut());
    null_arg!(seqrec_model_load_from_memory, "data", null(), 4, &mut mout);
    null_arg!(
        seqrec_model_load_from_memory,
        "out",
        data.as_ptr(),
        4,
        null_mut()
    );
    null_arg!(seqrec_model_num_items, "model", null(), &mut n32);
    null_arg!(seqrec_model_num_items, "out", m, null_mut());
    null_arg!(seqrec_model_num_users, "model", null(), &mut n32);
    null_arg!(seqrec_model_num_users, "out", m, null_mut());
    null_arg!(seqrec_model_max_len, "model", null(), &mut nsz);
    null_arg!(seqrec_model_max_len, "out", m, null_mut());
    null_arg!(seqrec_model_dim, "model", null(), &mut nsz);
    null_arg!(seqrec_model_dim, "out", m, null_mut());
    null_arg!(seqrec_model_arch, "model", null(), &mut name);
    null_arg!(seqrec_model_arch, "out", m, null_mut());
    null_arg!(seqrec_model_score, "model", null(), h.as_ptr(), 3, sp, 30);
    null_arg!(seqrec_model_score, "history", m, null(), 3, sp, 30);
    null_arg!(
        seqrec_model_score,
        "scores_out",
        m,
        h.as_ptr(),
        3,
        null_mut(),
        30
    );
    null_arg!(
        seqrec_model_score,
        "scores_out",
        m,
        h.as_ptr(),
        3,
        null_mut(),
        0
    );
    null_arg!(
        seqrec_model_score_user,
        "model",
        null(),
        1,
        h.as_ptr(),
        3,
        sp,
        30
    );
    null_arg!(seqrec_model_score_user, "history", cm, 1, null(), 3, sp, 30);
    null_arg!(
        seqrec_model_score_user,
        "scores_out",
        cm,
        1,
        h.as_ptr(),
        3,
        null_mut(),
        30
    );
    null_arg!(
        seqrec_model_topk,
        "model",
        null(),
        h.as_ptr(),
        3,
        4,
        0,
        ip,
        sp
    );
    null_arg!(seqrec_model_topk, "history", m, null(), 3, 4, 0, ip, sp);
    null_arg!(
        seqrec_model_topk,
        "items_out",
        m,
        h.as_ptr(),
        3,
        4,
        0,
        null_mut(),
        sp
    );
    null_arg!(
        seqrec_model_topk,
        "scores_out",
        m,
        h.as_ptr(),
        3,
        4,
        0,
        ip,
        null_mut()
    );
    null_arg!(
        seqrec_model_topk_user,
        "model",
        null(),
        1,
        h.as_ptr(),
        3,
        4,
        0,
        ip,
        sp
    );
    null_arg!(
        seqrec_model_topk_user,
        "history",
        cm,
        1,
        null(),
        3,
        4,
        0,
        ip,
        sp
    );
    null_arg!(
        seqrec_model_topk_user,
        "items_out",
        cm,
        1,
        h.as_ptr(),
        3,
        4,
        0,
        null_mut(),
        sp
    );
    null_arg!(
        seqrec_model_topk_user,
        "scores_out",
        cm,
        1,
        h.as_ptr(),
        3,
        4,
        0,
        ip,
        null_mut()
    );
    null_arg!(
        seqrec_model_topk_batch,
        "model",
        null(),
        h.as_ptr(),
        offs.as_ptr(),
        1,
        4,
        0,
        ip,
        sp
    );
    null_arg!(
        seqrec_model_topk_batch,
        "histories",
        m,
        null(),
        offs.as_ptr(),
        1,
        4,
        0,
        ip,
        sp
    );
    null_arg!(
        seqrec_model_topk_batch,
        "offsets",
        m,
        h.as_ptr(),
        null(),
        1,
        4,
        0,
        ip,
        sp
    );
    null_arg!(
        seqrec_model_topk_batch,
        "items_out",
        m,
        h.as_ptr(),
        offs.as_ptr(),
        1,
        4,
        0,
        null_mut(),
        sp
    );
    null_arg!(
        seqrec_model_topk_batch,
        "scores_out",
        m,
        h.as_ptr(),
        offs.as_ptr(),
        1,
        4,
        0,
        ip,
        null_mut()
    );
    null_arg!(
        seqrec_model_topk_batch_user,
        "model",
        null(),
        users.as_ptr(),
        h.as_ptr(),
        offs.as_ptr(),
        1,
        4,
        0,
        ip,
        sp
    );
    null_arg!(
        seqrec_model_topk_batch_user,
        "users",
        cm,
        null(),
        h.as_ptr(),
        offs.as_ptr(),
        1,
        4,
        0,
        ip,
        sp
    );
    null_arg!(
        seqrec_model_topk_batch_user,
        "histories",
        cm,
        users.as_ptr(),
        null(),
        offs.as_ptr(),
        1,
        4,
        0,
        ip,
        sp
    );
    null_arg!(
        seqrec_model_topk_batch_user,
        "offsets",
        cm,
        users.as_ptr(),
        h.as_ptr(),
        null(),
        1,
        4,
        0,
        ip,
        sp
    );
    null_arg!(
        seqrec_model_topk_batch_user,
        "items_out",
        cm,
        users.as_ptr(),
        h.as_ptr(),
        offs.as_ptr(),
        1,
        4,
        0,
        null_mut(),
        sp
    );
    null_arg!(
        seqrec_model_topk_batch_user,
        "scores_out",
        cm,
        users.as_ptr(),
        h.as_ptr(),
        offs.as_ptr(),
        1,
        4,
        0,
        ip,
        null_mut()
    );
    null_arg!(seqrec_session_new, "model", null(), &mut sout);
    null_arg!(seqrec_session_new, "out", m, null_mut());
    null_arg!(seqrec_session_new_user, "model", null(), 1, &mut sout);
    null_arg!(seqrec_session_new_user, "out", cm, 1, null_mut());
    null_arg!(seqrec_session_push, "session", null_mut(), 1);
    null_arg!(seqrec_session_len, "session", null(), &mut nsz);
    null_arg!(seqrec_session_len, "out", s.0, null_mut());
    null_arg!(seqrec_session_topk, "session", null_mut(), 4, 0, ip, sp);
    null_arg!(seqrec_session_topk, "items_out", s.0, 4, 0, null_mut(), sp);
    null_arg!(seqrec_session_topk, "scores_out", s.0, 4, 0, ip, null_mut());
    null_arg!(seqrec_session_score, "session", null(), sp, 30);
    null_arg!(seqrec_session_score, "scores_out", s.0, null_mut(), 30);
    assert_eq!(checked, 52);
    assert!(mout.is_null() && sout.is_null(), "no handle written");
    assert_eq!((n32, nsz, name), (0, 0, null()), "no out-parameter written");
    assert!(items.iter().all(|&i| i == 0) && scores.iter().all(|&s| s == 0.0));
}

#[test]
fn loading_errors_are_io_or_format() {
    let mut out = null_mut();
    let missing = CString::new("/nonexistent/seqrec/model.safetensors").unwrap();
    // SAFETY: NUL-terminated path, local out.
    let st = unsafe { seqrec_model_load(missing.as_ptr(), &mut out) };
    expect_err(
        st,
        SEQREC_ERR_IO,
        &["seqrec_model_load: /nonexistent/seqrec/model.safetensors"],
    );
    let dir = CString::new(std::env::temp_dir().to_str().unwrap()).unwrap();
    // SAFETY: as above.
    let st = unsafe { seqrec_model_load(dir.as_ptr(), &mut out) };
    expect_err(st, SEQREC_ERR_IO, &["seqrec_model_load: "]);
    assert!(out.is_null());

    let garbage = b"definitely not a safetensors file";
    let (st, msg) = ModelHandle::from_bytes(garbage).unwrap_err();
    assert_eq!(st, SEQREC_ERR_FORMAT, "{msg}");
    assert!(msg.contains("invalid safetensors"), "{msg}");
    // SAFETY: a non-NULL pointer with length 0 reads nothing.
    let st = unsafe { seqrec_model_load_from_memory(garbage.as_ptr(), 0, &mut out) };
    expect_err(st, SEQREC_ERR_FORMAT, &["invalid safetensors"]);
    let good = model_bytes("sasrec", 30, 6, 1);
    let (st, msg) = ModelHandle::from_bytes(&good[..good.len() - 3]).unwrap_err();
    assert_eq!(st, SEQREC_ERR_FORMAT, "{msg}");
    // A configuration that disagrees with the tensors.
    let other = model_bytes("sasrec", 31, 6, 1);
    let n = u64::from_le_bytes(other[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&other[8..8 + n]).unwrap();
    let edited = header.replace("\\\"n_items\\\":31", "\\\"n_items\\\":41");
    assert_ne!(edited, header, "config edited");
    let mut bad = other.clone();
    bad[8..8 + n].copy_from_slice(edited.as_bytes());
    let (st, msg) = ModelHandle::from_bytes(&bad).unwrap_err();
    assert_eq!(st, SEQREC_ERR_FORMAT, "{msg}");
    assert!(
        msg.contains("item_embedding.weight") && msg.contains("[41, 16]"),
        "{msg}"
    );
    assert!(out.is_null());
}

#[test]
fn bad_histories_and_k_have_their_statuses() {
    let m = sasrec();
    let e = |r: Result<(Vec<u32>, Vec<f32>), seqrec_status>| r.unwrap_err();
    expect_err(
        e(m.topk(None, &[], 3, false)),
        SEQREC_ERR_INVALID_ARGUMENT,
        &["seqrec_model_topk: empty history"],
    );
    expect_err(
        e(m.topk(None, &[4, 0], 3, false)),
        SEQREC_ERR_OUT_OF_RANGE,
        &["item id 0 at history position 1", "valid ids are 1..=29"],
    );
    expect_err(
        e(m.topk(None, &[30], 3, false)),
        SEQREC_ERR_OUT_OF_RANGE,
        &["item id 30"],
    );
    expect_err(
        e(m.topk(None, &[u32::MAX], 3, false)),
        SEQREC_ERR_OUT_OF_RANGE,
        &["item id 4294967295"],
    );
    expect_err(
        e(m.topk(None, &[3], 0, false)),
        SEQREC_ERR_INVALID_ARGUMENT,
        &["k is 0"],
    );
    expect_err(
        e(m.topk(None, &[3], 30, false)),
        SEQREC_ERR_OUT_OF_RANGE,
        &["k = 30 exceeds the catalog's 29 items"],
    );
    assert!(
        m.topk(None, &[3], 29, false).is_ok(),
        "k = num_items - 1 is valid"
    );
    expect_err(
        m.score(None, &[]).unwrap_err(),
        SEQREC_ERR_INVALID_ARGUMENT,
        &["seqrec_model_score: empty history"],
    );
    expect_err(
        m.score(None, &[31]).unwrap_err(),
        SEQREC_ERR_OUT_OF_RANGE,
        &["item id 31"],
    );
    let h = [1u32, 2];
    let mut short = vec![7f32; 29];
    // SAFETY: buffers of the stated lengths.
    let st = unsafe { seqrec_model_score(m.0, h.as_ptr(), 2, short.as_mut_ptr(), short.len()) };
    expect_err(
        st,
        SEQREC_ERR_INVALID_ARGUMENT,
        &["scores_len is 29 but the catalog has 30 items"],
    );
    assert!(short.iter().all(|&s| s == 7.0), "untouched");
}

#[test]
fn user_ids_are_required_exactly_by_models_with_users() {
    let m = sasrec();
    let c = caser();
    let e = |r: Result<(Vec<u32>, Vec<f32>), seqrec_status>| r.unwrap_err();
    expect_err(
        e(m.topk(Some(1), &[3], 3, false)),
        SEQREC_ERR_INVALID_ARGUMENT,
        &["seqrec_model_topk_user", "no user embedding"],
    );
    expect_err(
        m.score(Some(1), &[3]).unwrap_err(),
        SEQREC_ERR_INVALID_ARGUMENT,
        &["no user embedding"],
    );
    expect_err(
        e(c.topk(None, &[3], 3, false)),
        SEQREC_ERR_INVALID_ARGUMENT,
        &["user id is required"],
    );
    expect_err(
        c.score(None, &[3]).unwrap_err(),
        SEQREC_ERR_INVALID_ARGUMENT,
        &["user id is required"],
    );
    expect_err(
        e(c.topk(Some(7), &[3], 3, false)),
        SEQREC_ERR_OUT_OF_RANGE,
        &["user id 7 is out of range: valid ids are 0..=6"],
    );
    expect_err(
        c.score(Some(u32::MAX), &[3]).unwrap_err(),
        SEQREC_ERR_OUT_OF_RANGE,
        &["user id 4294967295"],
    );
    assert!(c.topk(Some(6), &[3], 3, false).is_ok());
    expect_err(
        SessionHandle::new(&c, None).unwrap_err(),
        SEQREC_ERR_INVALID_ARGUMENT,
        &["seqrec_session_new: ", "user id is required"],
    );
    expect_err(
        SessionHandle::new(&c, Some(7)).unwrap_err(),
        SEQREC_ERR_OUT_OF_RANGE,
        &["seqrec_session_new_user: user id 7"],
    );
    expect_err(
        SessionHandle::new(&m, Some(0)).unwrap_err(),
        SEQREC_ERR_INVALID_ARGUMENT,
        &["no user embedding"],
    );
}

#[test]
fn session_errors_leave_the_session_unchanged() {
    let m = sasrec();
    let s = SessionHandle::new(&m, None).unwrap();
    let (mut items, mut scores) = ([9u32; 3], [9f32; 30]);
    // SAFETY: live session, buffers of the stated lengths.
    unsafe {
        let st = seqrec_session_topk(s.0, 3, 0, items.as_mut_ptr(), scores.as_mut_ptr());
        expect_err(
            st,
            SEQREC_ERR_INVALID_ARGUMENT,
            &["seqrec_session_topk: empty history"],
        );
        let st = seqrec_session_score(s.0, scores.as_mut_ptr(), 30);
        expect_err(
            st,
            SEQREC_ERR_INVALID_ARGUMENT,
            &["seqrec_session_score: empty history"],
        );
        expect_err(
            seqrec_session_push(s.0, 0),
            SEQREC_ERR_OUT_OF_RANGE,
            &["seqrec_session_push: item id 0 at history position 0"],
        );
        expect_err(
            seqrec_session_push(s.0, 30),
            SEQREC_ERR_OUT_OF_RANGE,
            &["item id 30"],
        );
        let mut len = 5usize;
        assert_eq!(seqrec_session_len(s.0, &mut len), SEQREC_OK);
        assert_eq!(len, 0, "failed pushes add nothing");
        assert_eq!(seqrec_session_push(s.0, 3), SEQREC_OK);
        let st = seqrec_session_topk(s.0, 0, 0, items.as_mut_ptr(), scores.as_mut_ptr());
        expect_err(st, SEQREC_ERR_INVALID_ARGUMENT, &["k is 0"]);
        let st = seqrec_session_topk(s.0, 30, 0, items.as_mut_ptr(), scores.as_mut_ptr());
        expect_err(st, SEQREC_ERR_OUT_OF_RANGE, &["k = 30 exceeds"]);
        let st = seqrec_session_score(s.0, scores.as_mut_ptr(), 29);
        expect_err(st, SEQREC_ERR_INVALID_ARGUMENT, &["scores_len is 29"]);
        assert_eq!(items, [9; 3]);
        assert!(scores.iter().all(|&x| x == 9.0));
        assert_eq!(
            seqrec_session_score(s.0, scores.as_mut_ptr(), 30),
            SEQREC_OK
        );
    }
}

/// Calls `seqrec_model_topk_batch` (or `_user` when `users` is given) with `b * k` outputs.
fn batch(
    m: &ModelHandle,
    users: Option<&[u32]>,
    flat: &[u32],
    offsets: &[usize],
    b: usize,
    k: usize,
) -> seqrec_status {
    let n = b.saturating_mul(k).min(1 << 16);
    let (mut items, mut scores) = (vec![u32::MAX; n], vec![f32::NAN; n]);
    // SAFETY: the buffers hold what the call reads for every case used below (the calls that
    // would read more fail on their checks first).
    let st = unsafe {
        match users {
            Some(u) => seqrec_model_topk_batch_user(
                m.0,
                u.as_ptr(),
                flat.as_ptr(),
                offsets.as_ptr(),
                b,
                k,
                0,
                items.as_mut_ptr(),
                scores.as_mut_ptr(),
            ),
            None => seqrec_model_topk_batch(
                m.0,
                flat.as_ptr(),
                offsets.as_ptr(),
                b,
                k,
                0,
                items.as_mut_ptr(),
                scores.as_mut_ptr(),
            ),
        }
    };
    if st != SEQREC_OK {
        assert!(
            items.iter().all(|&i| i == u32::MAX),
            "items written on failure"
        );
        assert!(
            scores.iter().all(|s| s.is_nan()),
            "scores written on failure"
        );
    }
    st
}

#[test]
fn batch_offsets_rows_and_users_are_checked() {
    let m = sasrec();
    let c = caser();
    let flat = [1u32, 2, 3, 4, 5, 0, 6];
    assert_eq!(batch(&m, None, &flat, &[0, 2, 5], 2, 3), SEQREC_OK);
    expect_err(
        batch(&m, None, &flat, &[0, 5, 3], 2, 3),
        SEQREC_ERR_INVALID_ARGUMENT,
        &[
            "seqrec_model_topk_batch: invalid argument: offsets must be non-decreasing: offsets[1] \
         = 5 > offsets[2] = 3",
        ],
    );
    expect_err(
        batch(&m, None, &flat, &[0, 2, 2], 2, 3),
        SEQREC_ERR_INVALID_ARGUMENT,
        &["history 1: empty history"],
    );
    expect_err(
        batch(&m, None, &flat, &[0, 2, 7], 2, 3),
        SEQREC_ERR_OUT_OF_RANGE,
        &["history 1: item id 0 at history position 3"],
    );
    expect_err(
        batch(&m, None, &flat, &[0, 2, 5], 2, 0),
        SEQREC_ERR_INVALID_ARGUMENT,
        &["k is 0"],
    );
    expect_err(
        batch(&m, None, &flat, &[0, 2, 5], 2, 30),
        SEQREC_ERR_OUT_OF_RANGE,
        &["k = 30 exceeds"],
    );
    expect_err(
        batch(&m, None, &flat, &[0], usize::MAX, 3),
        SEQREC_ERR_INVALID_ARGUMENT,
        &["batch + 1 overflows size_t"],
    );
    // Rejected before the offsets are touched: they could not be in memory.
    expect_err(
        batch(&m, None, &flat, &[0], usize::MAX / 2, 3),
        SEQREC_ERR_INVALID_ARGUMENT,
        &["offsets: length 9223372036854775808 does not fit in memory"],
    );
    // batch == 0 reads and writes nothing: every other pointer may be NULL.
    // SAFETY: nothing but the model handle is read.
    let st =
        unsafe { seqrec_model_topk_batch(m.0, null(), null(), 0, 3, 0, null_mut(), null_mut()) };
    assert_eq!(st, SEQREC_OK);
    expect_err(
        batch(&c, None, &flat, &[0, 2, 5], 2, 3),
        SEQREC_ERR_INVALID_ARGUMENT,
        &["history 0: ", "user id is required"],
    );
    assert_eq!(batch(&c, Some(&[0, 6]), &flat, &[0, 2, 5], 2, 3), SEQREC_OK);
    expect_err(
        batch(&c, Some(&[0, 9]), &flat, &[0, 2, 5], 2, 3),
        SEQREC_ERR_OUT_OF_RANGE,
        &["seqrec_model_topk_batch_user: history 1: user id 9"],
    );
    expect_err(
        batch(&m, Some(&[0, 1]), &flat, &[0, 2, 5], 2, 3),
        SEQREC_ERR_INVALID_ARGUMENT,
        &["no user embedding"],
    );
}

#[test]
fn misaligned_and_overlapping_buffers_are_rejected() {
    let m = sasrec();
    let mut words = [1u32; 40];
    let base = words.as_mut_ptr();
    // SAFETY: every pointer stays inside `words`; the misaligned and overlapping calls are
    // rejected before any access.
    unsafe {
        let odd = (base as *mut u8).add(1) as *mut u32;
        let (items, scores) = (base.add(10), base.add(20) as *mut f32);
        let st = seqrec_model_topk(m.0, odd, 2, 3, 0, items, scores);
        expect_err(
            st,
            SEQREC_ERR_INVALID_ARGUMENT,
            &["history is not aligned to 4 bytes"],
        );
        let st = seqrec_model_topk(m.0, base, 2, 3, 0, odd.add(10), scores);
        expect_err(
            st,
            SEQREC_ERR_INVALID_ARGUMENT,
            &["items_out is not aligned"],
        );
        let st = seqrec_model_topk(m.0, base, 2, 3, 0, items, items.add(2) as *mut f32);
        expect_err(
            st,
            SEQREC_ERR_INVALID_ARGUMENT,
            &["items_out overlaps scores_out"],
        );
        let st = seqrec_model_topk(m.0, base, 2, 3, 0, base.add(1), scores);
        expect_err(
            st,
            SEQREC_ERR_INVALID_ARGUMENT,
            &["items_out overlaps history"],
        );
        let st = seqrec_model_score(m.0, base.add(5), 2, base as *mut f32, 30);
        expect_err(
            st,
            SEQREC_ERR_INVALID_ARGUMENT,
            &["scores_out overlaps history"],
        );
        let mut mp = null_mut();
        let st = seqrec_model_load_from_memory(null(), 0, &mut mp);
        expect_err(st, SEQREC_ERR_INVALID_ARGUMENT, &["data is NULL"]);
        let st = seqrec_model_load_from_memory(b"x".as_ptr(), 1, (base as *mut u8).add(1) as _);
        expect_err(st, SEQREC_ERR_INVALID_ARGUMENT, &["out is not aligned"]);
        assert!(mp.is_null());
        assert!(words[10..].iter().all(|&w| w == 1), "nothing written");
    }
}
