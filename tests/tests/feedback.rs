//! Online adaptation at serving time (`Model::session_feedback`): a fresh session scores as
//! the model does, rewards move the rewarded item's rank the way their sign says, the same
//! seed and calls give the same scores, saved sessions continue bit for bit, and models
//! without an actor-critic head refuse feedback with a clear error.

use seqrec_engine::{
    Config, Error, FeedbackOptions, Model, Query, SESSION_FORMAT_VERSION, Session,
};
use seqrec_tests::{random_model_bytes, small_config, small_rl_config};

const N: usize = 60;

fn sa2c(backbone: &str) -> Config {
    small_rl_config("sa2c", backbone, "linear", N, 8)
}

fn load(bytes: &[u8]) -> Model {
    Model::from_bytes(bytes, &Default::default()).unwrap()
}

fn scores(s: &Session<'_>) -> Vec<f32> {
    let mut out = vec![0f32; N];
    s.scores(&mut out).unwrap();
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Rank of `item` (0 = best) among the real items, by `scores`.
fn rank(scores: &[f32], item: u32) -> usize {
    let s = scores[item as usize];
    (1..N).filter(|&i| scores[i] > s).count()
}

#[test]
fn a_session_without_feedback_scores_exactly_as_the_model() {
    let m = load(&random_model_bytes(&sa2c("gru4rec"), 1, 0.3));
    let mut s = m.session().unwrap();
    let history = [3, 9, 4];
    s.extend(&history).unwrap();
    let mut ws = m.new_workspace();
    let mut want = vec![0f32; N];
    m.score(&Query::new(&history), &mut ws, &mut want).unwrap();
    assert_eq!(bits(&scores(&s)), bits(&want));
    let top = m
        .topk(&Query::new(&history).exclude_history(true), 8, &mut ws)
        .unwrap();
    assert_eq!(s.topk(8, true).unwrap(), top);
    assert_eq!(s.state().feedback_steps(), 0);
}

#[test]
fn rewards_move_the_rewarded_item() {
    for backbone in ["gru4rec", "sasrec"] {
        let m = load(&random_model_bytes(&sa2c(backbone), 2, 0.3));
        let opts = FeedbackOptions {
            lr: 0.1,
            // A negative reward can lower π̃(a) by at most the factor 1 − α.
            alpha0: 0.9,
            // The advantage is then r − Q(s, a): the reward's sign, with |r| above the
            // random critic's values.
            gamma: 0.0,
            batch: 1,
            ..FeedbackOptions::default()
        };
        let mut tried = 0;
        for item in 1..N as u32 {
            let mut plain = m.session().unwrap();
            plain.extend(&[5, 11]).unwrap();
            let base = plain.save().unwrap();
            plain.push(item).unwrap();
            // π_β starts as π_θ, so the mixture ranks as the model until β moves; items in
            // the middle of the ranking have room to move either way.
            let before = rank(&scores(&plain), item);
            // The step on β at s reaches the scores at s' through s·s' (the actor is linear).
            let dim = m.info().dim;
            let (mut st, mut st2) = (vec![0f32; dim], vec![0f32; dim]);
            let mut ws = m.new_workspace();
            m.user_vector(&Query::new(&[5, 11]), &mut ws, &mut st)
                .unwrap();
            m.user_vector(&Query::new(&[5, 11, item]), &mut ws, &mut st2)
                .unwrap();
            let overlap: f32 = st.iter().zip(&st2).map(|(a, b)| a * b).sum();
            if !(10..N - 10).contains(&before) || overlap < 1.0 {
                continue;
            }
            tried += 1;
            let mut ranks = Vec::new();
            for reward in [5.0, -5.0] {
                let mut s = Session::restore(&m, &base).unwrap();
                s.set_feedback_options(&opts).unwrap();
                s.feedback(item, reward).unwrap();
                assert_eq!(s.history(), plain.history());
                ranks.push(rank(&scores(&s), item));
            }
            assert!(
                ranks[0] < before,
                "{backbone}: reward +5 on {item}: rank {before} -> {}",
                ranks[0]
            );
            assert!(
                ranks[1] > before,
                "{backbone}: reward -5 on {item}: rank {before} -> {}",
                ranks[1]
            );
        }
        assert!(tried >= 5, "{backbone}: {tried} items tried");
    }
}

/// A fixed sequence of feedback calls and pushes; the scores after each.
fn run(m: &Model, opts: &FeedbackOptions) -> Vec<Vec<u32>> {
    let mut s = m.session().unwrap();
    s.set_feedback_options(opts).unwrap();
    s.push(4).unwrap();
    let mut out = Vec::new();
    for t in 0..12u32 {
        let item = 1 + (t * 7) % (N as u32 - 1);
        s.feedback(item, if t % 3 == 0 { -1.0 } else { 2.0 })
            .unwrap();
        if t % 4 == 1 {
            s.push(3).unwrap();
        }
        out.push(bits(&scores(&s)));
        assert_eq!(s.state().feedback_steps(), u64::from(t) + 1);
    }
    out
}

#[test]
fn the_same_seed_and_calls_give_the_same_scores() {
    let m = load(&random_model_bytes(&sa2c("sasrec"), 3, 0.3));
    let opts = FeedbackOptions {
        buffer: 8,
        batch: 4,
        seed: 11,
        ..FeedbackOptions::default()
    };
    let a = run(&m, &opts);
    assert_eq!(
        a,
        run(&load(&random_model_bytes(&sa2c("sasrec"), 3, 0.3)), &opts)
    );
    let other = run(&m, &FeedbackOptions { seed: 12, ..opts });
    assert_ne!(a, other, "another seed draws other mini-batches");
}

#[test]
fn a_saved_adaptive_session_continues_bit_for_bit() {
    let bytes = random_model_bytes(&sa2c("gru4rec"), 4, 0.3);
    let (here, there) = (load(&bytes), load(&bytes));
    let opts = FeedbackOptions {
        buffer: 5,
        batch: 3,
        seed: 2,
        ramp: 6,
        ..FeedbackOptions::default()
    };
    let mut s = here.session().unwrap();
    s.set_feedback_options(&opts).unwrap();
    s.push(8).unwrap();
    for t in 0..9u32 {
        let saved = s.save().unwrap();
        assert_eq!(
            u16::from_le_bytes([saved[4], saved[5]]),
            SESSION_FORMAT_VERSION
        );
        let mut moved = Session::restore(&there, &saved).unwrap();
        assert_eq!(
            moved.save().unwrap(),
            saved,
            "step {t}: the bytes round-trip"
        );
        assert_eq!(moved.state().feedback_options(), &opts);
        assert_eq!(bits(&scores(&moved)), bits(&scores(&s)), "step {t}");
        let item = 2 + t * 5;
        s.feedback(item, 1.0 - t as f32 * 0.3).unwrap();
        moved.feedback(item, 1.0 - t as f32 * 0.3).unwrap();
        assert_eq!(bits(&scores(&moved)), bits(&scores(&s)), "step {t}");
        assert_eq!(moved.topk(6, true).unwrap(), s.topk(6, true).unwrap());
    }
    // The whole state travels: restoring into another model's load is refused as before.
    let other = load(&random_model_bytes(&sa2c("gru4rec"), 5, 0.3));
    assert!(Session::restore(&other, &s.save().unwrap()).is_err());
}

#[test]
fn version_1_sessions_still_restore() {
    let m = load(&random_model_bytes(&small_config("sasrec", N, 8), 6, 0.3));
    let mut s = m.session().unwrap();
    s.extend(&[1, 2, 3]).unwrap();
    let mut v1 = s.save().unwrap();
    v1[4..6].copy_from_slice(&1u16.to_le_bytes());
    let n = v1.len() - 4;
    let crc = seqrec_engine::codec::crc32(0, &v1[..n]);
    v1[n..].copy_from_slice(&crc.to_le_bytes());
    let moved = Session::restore(&m, &v1).unwrap();
    assert_eq!(bits(&scores(&moved)), bits(&scores(&s)));
}

#[test]
fn the_adaptive_actor_starts_from_beta_head_when_the_checkpoint_has_one() {
    let cfg = sa2c("gru4rec");
    let plain = random_model_bytes(&cfg, 7, 0.3);
    let with_beta = |shift: f32| {
        let m = load(&plain);
        let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
        let file = seqrec_engine::WeightFile::from_bytes(&plain).unwrap();
        for name in file.names() {
            let info = file.info(name).unwrap();
            let t = file.tensor(name, &info.shape).unwrap();
            tensors.push((name.to_string(), info.shape.clone(), t.as_slice().to_vec()));
        }
        for (src, dst) in [
            ("sup_head.weight", "beta_head.weight"),
            ("sup_head.bias", "beta_head.bias"),
        ] {
            let t = tensors.iter().find(|t| t.0 == src).unwrap();
            let v = t.2.iter().map(|x| x + shift).collect();
            tensors.push((dst.to_string(), t.1.clone(), v));
        }
        let refs: Vec<(&str, &[usize], &[f32])> = tensors
            .iter()
            .map(|t| (t.0.as_str(), t.1.as_slice(), t.2.as_slice()))
            .collect();
        let json = m.config().to_json();
        seqrec_engine::weights::serialize(&refs, &[(seqrec_engine::CONFIG_KEY, json.as_str())])
            .unwrap()
    };
    let feed = |bytes: &[u8]| {
        let m = load(bytes);
        let mut s = m.session().unwrap();
        s.extend(&[4, 6]).unwrap();
        s.feedback(9, 1.0).unwrap();
        s.feedback(12, -1.0).unwrap();
        bits(&scores(&s))
    };
    // β = θ written out equals β copied from θ; another β changes the adapted scores.
    assert_eq!(feed(&with_beta(0.0)), feed(&plain));
    assert_ne!(feed(&with_beta(0.1)), feed(&plain));
    let m = load(&with_beta(0.1));
    assert_ne!(m.fingerprint(), load(&plain).fingerprint());
}

#[test]
fn models_without_an_actor_critic_head_refuse_feedback() {
    let cases = [
        (
            "sasrec",
            small_config("sasrec", N, 8),
            "no actor-critic head",
        ),
        (
            "sa2c",
            small_rl_config("sa2c", "gru4rec", "tied", N, 8),
            "tied",
        ),
        (
            "smorl",
            small_rl_config("smorl", "gru4rec", "linear", N, 8),
            "several Q heads",
        ),
        ("hdt", small_config("hdt", N, 8), "no actor-critic head"),
    ];
    for (name, cfg, why) in cases {
        let m = load(&random_model_bytes(&cfg, 8, 0.3));
        let mut s = m.session().unwrap();
        s.push(3).unwrap();
        let before = s.save().unwrap();
        let e = s.feedback(5, 1.0).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{name}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("`{name}`")) && msg.contains(why),
            "{name}: {msg}"
        );
        assert_eq!(
            s.save().unwrap(),
            before,
            "{name}: the session is unchanged"
        );
        let e = s
            .set_feedback_options(&FeedbackOptions::default())
            .unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{name}: {e}");
        assert!(matches!(m.feedback_defaults(), Err(Error::Unsupported(_))));
    }
}

#[test]
fn bad_calls_and_options_are_clear_errors_and_change_nothing() {
    let cfg = sa2c("gru4rec")
        .with("online_lr", 0.2)
        .with("online_batch", 2);
    let m = load(&random_model_bytes(&cfg, 9, 0.3));
    let defaults = *m.feedback_defaults().unwrap();
    assert_eq!((defaults.lr, defaults.batch, defaults.buffer), (0.2, 2, 64));
    let mut s = m.session().unwrap();
    assert!(matches!(s.feedback(3, 1.0), Err(Error::EmptyHistory)));
    s.push(2).unwrap();
    let before = s.save().unwrap();
    assert!(matches!(
        s.feedback(0, 1.0),
        Err(Error::ItemOutOfRange { .. })
    ));
    assert!(matches!(
        s.feedback(N as u32, 1.0),
        Err(Error::ItemOutOfRange { .. })
    ));
    let e = s.feedback(3, f32::NAN).unwrap_err().to_string();
    assert!(e.contains("not finite"), "{e}");
    for (bad, what) in [
        (
            FeedbackOptions {
                lr: -1.0,
                ..defaults
            },
            "lr",
        ),
        (
            FeedbackOptions {
                gamma: 2.0,
                ..defaults
            },
            "gamma",
        ),
        (
            FeedbackOptions {
                batch: 65,
                ..defaults
            },
            "batch",
        ),
        (
            FeedbackOptions {
                buffer: 0,
                ..defaults
            },
            "buffer",
        ),
    ] {
        let e = s.set_feedback_options(&bad).unwrap_err().to_string();
        assert!(e.contains(what), "{e}");
    }
    assert_eq!(s.save().unwrap(), before);
    s.feedback(3, 1.0).unwrap();
    // Once adapted, buffer, batch and seed are fixed; the step options may change.
    let e = s
        .set_feedback_options(&FeedbackOptions {
            seed: 1,
            ..defaults
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("fixed"), "{e}");
    s.set_feedback_options(&FeedbackOptions {
        lr: 0.01,
        ..defaults
    })
    .unwrap();
    // Invalid `online_*` keys fail at load.
    let cfg = sa2c("gru4rec").with("online_gamma", 3.0);
    let bytes = seqrec_engine::testing::random_model_bytes(&cfg, 9, 0.3).unwrap();
    let e = Model::from_bytes(&bytes, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("gamma"), "{e}");
}
