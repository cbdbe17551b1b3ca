//! `seqrec_session_feedback` and the feedback options through the C ABI: the same scores as
//! the Rust API's sessions after every call, the options read, set and refused when out of
//! range, saved adaptive sessions that continue identically, and `SEQREC_ERR_UNSUPPORTED` with
//! a message naming the model for one without an actor-critic head; nothing changes on error.

mod common;

use common::*;
use seqrec::*;
use seqrec_engine::{FeedbackOptions, Model};
use std::ptr;

const N: usize = 50;

fn sa2c_bytes() -> Vec<u8> {
    seqrec_tests::random_model_bytes(
        &seqrec_tests::small_rl_config("sa2c", "gru4rec", "linear", N, 6).with("online_lr", 0.2),
        17,
        0.3,
    )
}

fn c_scores(s: &SessionHandle) -> Vec<f32> {
    let mut out = vec![0f32; N];
    // SAFETY: live session, `N` writable floats.
    let st = unsafe { seqrec_session_score(s.0, out.as_mut_ptr(), N) };
    assert_eq!(st, SEQREC_OK, "{}", last_error());
    out
}

fn c_options(s: &SessionHandle) -> seqrec_feedback_options {
    let mut out = seqrec_feedback_options {
        lr: 0.0,
        gamma: 0.0,
        alpha0: 0.0,
        ramp: 0,
        buffer: 0,
        batch: 0,
        seed: 0,
    };
    // SAFETY: live session, local out.
    let st = unsafe { seqrec_session_feedback_options(s.0, &mut out) };
    assert_eq!(st, SEQREC_OK, "{}", last_error());
    out
}

fn save(s: &SessionHandle) -> Vec<u8> {
    let mut len = 0usize;
    // SAFETY: live session; a size query.
    let st = unsafe { seqrec_session_save(s.0, ptr::null_mut(), 0, &mut len) };
    assert_eq!(st, SEQREC_OK);
    let mut buf = vec![0u8; len];
    // SAFETY: `len` writable bytes.
    let st = unsafe { seqrec_session_save(s.0, buf.as_mut_ptr(), len, &mut len) };
    assert_eq!(st, SEQREC_OK, "{}", last_error());
    buf
}

#[test]
fn feedback_through_the_c_abi_equals_the_rust_sessions() {
    let bytes = sa2c_bytes();
    let model = ModelHandle::from_bytes(&bytes).unwrap();
    let rust = Model::from_bytes(&bytes, &Default::default()).unwrap();
    let s = SessionHandle::new(&model, None).unwrap();
    let mut r = rust.session().unwrap();

    // The model's defaults (`online_lr` from the configuration), then the session's own.
    let defaults = c_options(&s);
    assert_eq!(defaults, (*rust.feedback_defaults().unwrap()).into());
    assert_eq!((defaults.lr, defaults.batch, defaults.buffer), (0.2, 4, 64));
    let opts = seqrec_feedback_options {
        buffer: 6,
        batch: 3,
        seed: 4,
        ramp: 5,
        ..defaults
    };
    // SAFETY: live session, a local struct.
    let st = unsafe { seqrec_session_set_feedback_options(s.0, &opts) };
    assert_eq!(st, SEQREC_OK, "{}", last_error());
    assert_eq!(c_options(&s), opts);
    r.set_feedback_options(&FeedbackOptions::from(opts))
        .unwrap();

    // SAFETY: live session.
    expect_err(
        unsafe { seqrec_session_feedback(s.0, 3, 1.0) },
        SEQREC_ERR_INVALID_ARGUMENT,
        &["seqrec_session_feedback", "empty history"],
    );
    for id in [4, 9] {
        // SAFETY: live session.
        assert_eq!(unsafe { seqrec_session_push(s.0, id) }, SEQREC_OK);
        r.push(id).unwrap();
    }
    let mut moved: Option<SessionHandle> = None;
    for t in 0..10u32 {
        let (item, reward) = (1 + (t * 13) % (N as u32 - 1), 1.5 - (t % 4) as f32);
        // SAFETY: live session.
        let st = unsafe { seqrec_session_feedback(s.0, item, reward) };
        assert_eq!(st, SEQREC_OK, "{}", last_error());
        r.feedback(item, reward).unwrap();
        let mut want = vec![0f32; N];
        r.scores(&mut want).unwrap();
        assert_eq!(c_scores(&s), want, "step {t}");
        if let Some(m) = &moved {
            // SAFETY: live session.
            let st = unsafe { seqrec_session_feedback(m.0, item, reward) };
            assert_eq!(st, SEQREC_OK);
            assert_eq!(c_scores(m), want, "restored session, step {t}");
        }
        if t == 4 {
            let state = save(&s);
            let mut out = ptr::null_mut();
            // SAFETY: live model, `state.len()` readable bytes, local out.
            let st =
                unsafe { seqrec_session_restore(model.0, state.as_ptr(), state.len(), &mut out) };
            assert_eq!(st, SEQREC_OK, "{}", last_error());
            moved = Some(SessionHandle(out));
        }
    }

    // Refusals leave the session as it was.
    let before = save(&s);
    // SAFETY: live session for each call; NULL where the test says so.
    unsafe {
        expect_err(
            seqrec_session_feedback(s.0, 0, 1.0),
            SEQREC_ERR_OUT_OF_RANGE,
            &["item id 0"],
        );
        expect_err(
            seqrec_session_feedback(s.0, N as u32, 1.0),
            SEQREC_ERR_OUT_OF_RANGE,
            &["item id 50"],
        );
        expect_err(
            seqrec_session_feedback(s.0, 2, f32::INFINITY),
            SEQREC_ERR_INVALID_ARGUMENT,
            &["not finite"],
        );
        expect_err(
            seqrec_session_feedback(ptr::null_mut(), 2, 1.0),
            SEQREC_ERR_INVALID_ARGUMENT,
            &["session is NULL"],
        );
        let bad = seqrec_feedback_options { gamma: 1.5, ..opts };
        expect_err(
            seqrec_session_set_feedback_options(s.0, &bad),
            SEQREC_ERR_INVALID_ARGUMENT,
            &["gamma is 1.5"],
        );
        let reseeded = seqrec_feedback_options { seed: 5, ..opts };
        expect_err(
            seqrec_session_set_feedback_options(s.0, &reseeded),
            SEQREC_ERR_INVALID_ARGUMENT,
            &["fixed once"],
        );
        expect_err(
            seqrec_session_set_feedback_options(s.0, ptr::null()),
            SEQREC_ERR_INVALID_ARGUMENT,
            &["options is NULL"],
        );
        expect_err(
            seqrec_session_feedback_options(s.0, ptr::null_mut()),
            SEQREC_ERR_INVALID_ARGUMENT,
            &["out is NULL"],
        );
    }
    assert_eq!(save(&s), before);
}

#[test]
fn models_without_an_actor_critic_head_answer_unsupported() {
    for (arch, bytes) in [
        ("sasrec", model_bytes("sasrec", N, 6, 3)),
        (
            "smorl",
            seqrec_tests::random_model_bytes(
                &seqrec_tests::small_rl_config("smorl", "sasrec", "linear", N, 6),
                3,
                0.3,
            ),
        ),
    ] {
        let model = ModelHandle::from_bytes(&bytes).unwrap();
        let s = SessionHandle::new(&model, None).unwrap();
        // SAFETY: live session.
        assert_eq!(unsafe { seqrec_session_push(s.0, 3) }, SEQREC_OK);
        let before = save(&s);
        let name = format!("`{arch}`");
        let opts = FeedbackOptions::default().into();
        let mut out = opts;
        // SAFETY: live session, local structs.
        unsafe {
            expect_err(
                seqrec_session_feedback(s.0, 4, 1.0),
                SEQREC_ERR_UNSUPPORTED,
                &["seqrec_session_feedback", &name, "actor-critic head"],
            );
            expect_err(
                seqrec_session_set_feedback_options(s.0, &opts),
                SEQREC_ERR_UNSUPPORTED,
                &[&name],
            );
            expect_err(
                seqrec_session_feedback_options(s.0, &mut out),
                SEQREC_ERR_UNSUPPORTED,
                &[&name],
            );
        }
        assert_eq!(save(&s), before, "{arch}: the session is unchanged");
    }
}
