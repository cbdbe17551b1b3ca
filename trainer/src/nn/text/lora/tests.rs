//! LoRA adapters: untrained adapters change nothing, gradients against finite differences
//! (through frozen layers), training moves only the adapters, merged weights, the cached
//! floats, settings, and adapter deltas over a base folder.

use super::super::fixtures::{random_bert_dir, temp_dir};
use super::super::tests::{
    assert_delta_round_trip, base_values, batch, check_encoder_grads, encoder,
    pull_two_texts_together,
};
use super::super::{BertEncoder, FineTune, Pooling, TextEncoder, encoder as enc_mod};
use super::*;
use crate::nn::gradcheck::randomize;
use crate::nn::param::to_safetensors;
use seqrec_engine::WeightFile;
use seqrec_kernels::testing::max_abs_diff;

/// `base` under `cfg` with its adapters redrawn (`B ≠ 0`, so every gradient path is live).
fn adapted(mut bert: BertEncoder, cfg: Lora, seed: u64) -> BertEncoder {
    let mut rng = Rng::new(seed);
    bert.set_fine_tune_with(FineTune::Lora(cfg), &mut rng)
        .unwrap();
    randomize(&mut bert, &mut rng, 0.3);
    bert
}

#[test]
fn untrained_adapters_leave_the_output_unchanged() {
    let b = batch();
    let mut frozen = encoder(1, 0.0);
    frozen.set_fine_tune(FineTune::Frozen).unwrap();
    let mut lora = frozen.clone();
    lora.set_fine_tune(FineTune::Lora(Lora::default())).unwrap();
    // B = 0: the adapters add exact zeros, so the states are the base model's, bit for bit.
    assert!(
        lora.params()
            .iter()
            .any(|p| p.value.iter().any(|&v| v != 0.0))
    );
    let want = frozen.infer(&b);
    assert_eq!(lora.infer(&b), want);
    assert_eq!(lora.forward(&b, None).0, want);
    assert_eq!(lora.merged().infer(&b), want);
}

#[test]
fn adapter_gradients_match_finite_differences() {
    let settings = [
        // Query and value of both layers: layer 0's adapters are reached through layer 1.
        Lora::default(),
        // Every projection of the top layer, another rank and scale.
        Lora {
            rank: 3,
            alpha: 5.0,
            targets: LoraTargets([true; 3]),
            layers: Some(1),
        },
    ];
    for cfg in settings {
        let (trained, cache, worst) = check_encoder_grads(adapted(encoder(6, 0.1), cfg, 7));
        eprintln!("{}: worst relative error {worst:e}", cfg.name());
        let targets = cfg.targets.0.iter().filter(|t| **t).count();
        let layers = cfg.layers.unwrap_or(2);
        assert_eq!(trained.params().len(), 2 * targets * layers);
        assert_eq!(cache.layers.len(), layers);
        for p in trained.params() {
            assert!(p.name.contains(".lora_"), "{}", p.name);
            assert!(
                p.grad.iter().any(|&g| g != 0.0),
                "{} has no gradient",
                p.name
            );
        }
        // The base holds no gradient buffer, before and after the backward.
        assert!(trained.bert.all_params().iter().all(|p| p.grad.is_empty()));
    }
}

#[test]
fn adam_on_the_adapters_lowers_a_loss_and_keeps_the_base() {
    let b = batch();
    let mut bert = encoder(16, 0.0);
    bert.set_fine_tune(FineTune::Lora(Lora::default())).unwrap();
    let before = base_values(&bert);
    let mut enc = TextEncoder::from_parts(bert, Pooling::Mean, true);
    let (first, last) = pull_two_texts_together(&mut enc, &b);
    assert!(1.0 - last < 0.5 * (1.0 - first), "cosine {first} -> {last}");
    assert_eq!(base_values(&enc.bert), before);
    assert!(
        enc.params()
            .iter()
            .all(|p| p.value.iter().any(|&v| v != 0.0)),
        "every A and B moved off zero"
    );
}

#[test]
fn merged_weights_give_the_adapted_forward() {
    let b = batch();
    let cfg = Lora {
        targets: LoraTargets([true; 3]),
        ..Lora::default()
    };
    let enc = TextEncoder::from_parts(adapted(encoder(3, 0.0), cfg, 4), Pooling::Mean, true);
    let merged = enc.merged();
    assert_eq!(merged.bert.fine_tune(), FineTune::Frozen);
    assert!(merged.params().is_empty() && merged.bert.layers.iter().all(|l| l.lora.is_none()));
    assert!(merged.base().is_none());
    let (y, ym) = (enc.infer(&b), merged.infer(&b));
    let diff = max_abs_diff(&y, &ym);
    eprintln!("adapter form vs merged weights: max |diff| {diff:e}");
    // Unit vectors through two layers, the projection summed in another order: f32 rounding.
    assert!(diff < 1e-5, "{diff:e}");
    // The adapters do change the function (the comparison is not vacuous).
    let plain = TextEncoder::from_parts(encoder(3, 0.0), Pooling::Mean, true);
    assert!(max_abs_diff(&plain.infer(&b), &y) > 1e-3);
}

#[test]
fn cached_floats_count_the_adapters() {
    let b = batch();
    let layer = 8 * 8 + 2 * 12 + 2 * b.len;
    for (cfg, per_token) in [
        (Lora::default(), 2 * layer + 2 * 2 * 8),
        (
            Lora {
                rank: 2,
                layers: Some(1),
                ..Lora::default()
            },
            layer + 2 * 2,
        ),
    ] {
        let bert = adapted(encoder(15, 0.1), cfg, 1);
        assert_eq!(bert.cached_floats_per_token(b.len), per_token);
        let (_, cache) = bert.forward(&b, Some(&mut Rng::new(1)));
        assert_eq!(cache.floats(), per_token * b.rows(), "{}", cfg.name());
    }
}

#[test]
fn settings_parse_and_bad_ones_are_errors() {
    let cfg = Lora {
        rank: 4,
        alpha: 8.5,
        targets: LoraTargets([false, true, true]),
        layers: Some(1),
    };
    assert_eq!(
        cfg.name(),
        "lora:rank=4,alpha=8.5,targets=key+value,layers=top:1"
    );
    assert_eq!(FineTune::parse(&cfg.name()).unwrap(), FineTune::Lora(cfg));
    assert_eq!(
        FineTune::parse("lora").unwrap(),
        FineTune::Lora(Lora::default())
    );
    assert_eq!(Lora::parse("lora:rank=2").unwrap().alpha, 16.0);
    for (bad, says) in [
        ("lora:rank=x", "rank=x"),
        ("lora:targets=query+out", "`out`"),
        ("lora:depth=2", "depth=2"),
        ("loraa", "loraa"),
    ] {
        let err = FineTune::parse(bad).unwrap_err().to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
    let mut bert = encoder(2, 0.0);
    for (cfg, says) in [
        (
            Lora {
                rank: 0,
                ..Lora::default()
            },
            "rank must be at least 1",
        ),
        (
            Lora {
                alpha: f32::NAN,
                ..Lora::default()
            },
            "alpha NaN",
        ),
        (
            Lora {
                targets: LoraTargets([false; 3]),
                ..Lora::default()
            },
            "no target",
        ),
        (
            Lora {
                layers: Some(3),
                ..Lora::default()
            },
            "top 3 layers: the text encoder has 2",
        ),
    ] {
        let err = bert
            .set_fine_tune(FineTune::Lora(cfg))
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{err}");
    }
}

#[test]
fn adapter_delta_round_trip_and_mismatches() {
    let dir = random_bert_dir("lora-base", 21);
    let ft = FineTune::Lora(Lora::default());
    let mut enc = TextEncoder::load(&dir, ft).unwrap();
    let base = base_values(&enc.bert);
    randomize(&mut enc, &mut Rng::new(22), 0.3);
    let out = temp_dir("lora-out").join("adapters.safetensors");
    enc.save_delta(&out).unwrap();
    let file = WeightFile::open(&out).unwrap();
    let mut names: Vec<&str> = file.names().collect();
    names.sort_unstable();
    assert_eq!(names.len(), 8, "{names:?}");
    assert!(names.contains(&"encoder.layer.0.attention.self.query.lora_A.weight"));
    assert!(names.contains(&"encoder.layer.1.attention.self.value.lora_B.weight"));
    let meta = file.metadata(enc_mod::DELTA_KEY).unwrap();
    assert!(
        meta.contains("lora:rank=8,alpha=16,targets=query+value,layers=all"),
        "{meta}"
    );

    let other = random_bert_dir("lora-other", 23);
    assert_delta_round_trip(&enc, &dir, &out, &other);
    assert_eq!(base_values(&enc.bert), base);

    // Tensors of rank 4 under a rank-8 setting: the error names the tensor and both shapes.
    let rank4 = FineTune::Lora(Lora {
        rank: 4,
        ..Lora::default()
    });
    let small = TextEncoder::load(&dir, rank4).unwrap();
    let bytes = to_safetensors(
        &small.params(),
        &[(enc_mod::DELTA_KEY, &enc.delta_metadata().unwrap())],
    )
    .unwrap();
    let err = TextEncoder::load_with_delta_file(&dir, &WeightFile::from_bytes(&bytes).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("encoder.layer.0.attention.self.query.lora_A.weight")
            && err.contains("[8, 8]")
            && err.contains("[4, 8]"),
        "{err}"
    );
    // Adapters on other projections than the setting's: unexpected tensors, named.
    let qkv = Lora {
        targets: LoraTargets([true; 3]),
        ..Lora::default()
    };
    let wide = TextEncoder::load(&dir, FineTune::Lora(qkv)).unwrap();
    let file = WeightFile::from_bytes(&wide.delta_bytes().unwrap()).unwrap();
    let err = enc.apply_delta(&file).unwrap_err().to_string();
    assert!(
        err.contains("unexpected") && err.contains("key.lora_A.weight"),
        "{err}"
    );
    for d in [dir, other, out.parent().unwrap().to_path_buf()] {
        let _ = std::fs::remove_dir_all(d);
    }
}
