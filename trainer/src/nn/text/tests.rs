//! Gradient checks of every piece of the trainable text encoder, its fine-tuning settings, its
//! forward against the engine's encoder (a small random BERT folder, and all-MiniLM-L6-v2
//! where present), and delta checkpoints.

use super::fixtures::{random_bert_dir, small_config, temp_dir};
use super::pool::{l2_backward, l2_forward, pool_backward, pool_forward};
use super::*;
use crate::nn::gradcheck::{GradCheck, assert_grad, assert_param_grads, project, randomize};
use seqrec_engine::text::{TextEncoder as EngineEncoder, TextOptions};
use seqrec_engine::{DType, WeightFile};
use seqrec_kernels::testing::max_abs_diff;

/// Three sequences of 5, 3 and 1 tokens: padding in two of them, one of a single token.
fn seqs() -> Vec<Vec<u32>> {
    vec![vec![2, 5, 6, 7, 3], vec![2, 8, 3], vec![2]]
}

pub(super) fn batch() -> TextBatch {
    let s = seqs();
    let refs: Vec<&[u32]> = s.iter().map(Vec::as_slice).collect();
    TextBatch::new(&refs, &small_config()).unwrap()
}

/// A random encoder with dropout `p` everywhere and non-trivial LayerNorms and biases.
pub(super) fn encoder(seed: u64, p: f32) -> BertEncoder {
    let mut rng = Rng::new(seed);
    let mut e = BertEncoder::new(&small_config(), "", p, p, &mut rng).unwrap();
    randomize(&mut e, &mut rng, 0.3);
    e
}

// Finite differences through LN, softmax, GELU and the projections with unit-scale values, as
// the attention tests (`nn/attention/tests.rs`) argue: eps 2^-5, atol 2e-4, rtol 2e-3 (a
// dropped term or a wrong scale is off by O(1) relative).
pub(super) fn check() -> GradCheck {
    GradCheck::new(0.03125, 2e-4, 2e-3)
}

#[test]
fn embeddings_gradients_with_dropout() {
    let b = batch();
    let base = encoder(1, 0.2).embeddings;
    let mut rng = Rng::new(2);
    let w = rng.normal_vec(b.rows() * 8, 1.0);
    // One fixed dropout mask: the same seed in every forward.
    let run = |m: &BertEmbeddings| project(&m.forward(&b, Some(&mut Rng::new(7))).0, &w);
    let mut trained = base.clone();
    let (_, cache) = trained.forward(&b, Some(&mut Rng::new(7)));
    trained.backward(&b, &cache, &w);
    assert_param_grads("embeddings", &base, &trained, run, &check());
}

#[test]
fn soft_tokens_replace_the_word_embedding_and_take_no_table_gradient() {
    let mut rng = Rng::new(8);
    let soft = rng.normal_vec(2 * 8, 1.0);
    let b = batch().with_soft(&[(0, 2), (1, 1)], soft.clone()).unwrap();
    let base = encoder(1, 0.0).embeddings;
    // The input at a soft row is its vector (plus position and type): the same output as a
    // word table whose row of that token is the vector.
    let mut table = base.clone();
    let (t0, t1) = (b.ids[2] as usize, b.ids[b.len + 1] as usize);
    table.word.weight.value[t0 * 8..(t0 + 1) * 8].copy_from_slice(&soft[..8]);
    let plain = TextBatch {
        soft: None,
        ..b.clone()
    };
    let (y, _) = base.forward(&b, None);
    let (want, _) = table.forward(&plain, None);
    assert_eq!(y[2 * 8..3 * 8], want[2 * 8..3 * 8]);
    assert_ne!(t0, t1, "the second soft token is another word");
    // Gradients: every parameter by finite differences; the soft rows' tokens' table rows get
    // none (their word embedding is not an input).
    let w = rng.normal_vec(b.rows() * 8, 1.0);
    let run = |m: &BertEmbeddings| project(&m.forward(&b, None).0, &w);
    let mut trained = base.clone();
    let (_, cache) = trained.forward(&b, None);
    trained.backward(&b, &cache, &w);
    assert_param_grads(
        "embeddings with soft tokens",
        &base,
        &trained,
        run,
        &check(),
    );
    // Tokens 6 and 8 appear only at the soft rows.
    let g = &trained.word.weight.grad;
    for t in [t0, t1] {
        assert!(g[t * 8..(t + 1) * 8].iter().all(|&x| x == 0.0), "token {t}");
    }
    assert!(batch().with_soft(&[(2, 1)], vec![0.0; 8]).is_err());
}

#[test]
fn layer_gradients_with_the_padding_mask() {
    let b = batch();
    let base = encoder(3, 0.0).layers.remove(0);
    let mut rng = Rng::new(4);
    let x = rng.normal_vec(b.rows() * 8, 1.0);
    let w = rng.normal_vec(b.rows() * 8, 1.0);
    let run = |m: &BertLayer, x: &[f32]| m.forward(x, &b, None).0;
    let mut trained = base.clone();
    let (_, cache) = trained.forward(&x, &b, None);
    let dx = trained.backward(&cache, &w);
    assert_grad(
        "bert layer dx",
        |xp| project(&run(&base, xp), &w),
        &x,
        &dx,
        &check(),
    );
    assert_param_grads(
        "bert layer",
        &base,
        &trained,
        |m| project(&run(m, &x), &w),
        &check(),
    );
    // The real rows do not depend on the padding rows' inputs.
    let mut moved = x.clone();
    for (r, &v) in b.valid.iter().enumerate() {
        if !v {
            moved[r * 8..(r + 1) * 8].fill(5.0);
        }
    }
    let (y0, y1) = (run(&base, &x), run(&base, &moved));
    for (r, &v) in b.valid.iter().enumerate() {
        if v {
            assert_eq!(y0[r * 8..(r + 1) * 8], y1[r * 8..(r + 1) * 8], "row {r}");
        }
    }
}

#[test]
fn pooling_and_normalisation_gradients() {
    let b = batch();
    let dim = 8;
    let mut rng = Rng::new(5);
    let h = rng.normal_vec(b.rows() * dim, 1.0);
    let w = rng.normal_vec(b.batch() * dim, 1.0);
    // Pooling is linear (max is piecewise linear, with gaps between values far above 2·eps):
    // the differences are exact up to f32 rounding.
    let cfg = GradCheck {
        max_coords: usize::MAX,
        ..GradCheck::new(1.0 / 1024.0, 1e-4, 1e-3)
    };
    for mode in [
        Pooling::Mean,
        Pooling::Cls,
        Pooling::Max,
        Pooling::MeanSqrtLen,
    ] {
        let (_, cache) = pool_forward(mode, &h, &b, dim);
        let dh = pool_backward(mode, &b, &cache, &w, dim);
        let f = |hp: &[f32]| project(&pool_forward(mode, hp, &b, dim).0, &w);
        assert_grad(&format!("{mode:?} pooling"), f, &h, &dh, &cfg);
    }
    // L2 normalisation of rows of unit-scale values (f64 gradient, f32 outputs).
    let x = rng.normal_vec(3 * dim, 1.0);
    let mut y = x.clone();
    let cache = l2_forward(&mut y, dim);
    let mut dx = w[..3 * dim].to_vec();
    l2_backward(&cache, &mut dx, dim);
    let f = |xp: &[f32]| {
        let mut v = xp.to_vec();
        l2_forward(&mut v, dim);
        project(&v, &w[..3 * dim])
    };
    assert_grad("l2 normalisation", f, &x, &dx, &check());
}

/// Checks every trained parameter of `base` under `fine_tune` through the whole sentence
/// encoder (mean pooling, normalisation, dropout with a fixed mask).
fn check_encoder(fine_tune: FineTune) -> TextEncoder {
    let mut bert = encoder(6, 0.1);
    bert.set_fine_tune(fine_tune).unwrap();
    check_encoder_grads(bert).0
}

/// Checks every trained parameter of `bert` through the whole sentence encoder (mean pooling,
/// normalisation, dropout with a fixed mask) on [`batch`]; returns the encoder after its
/// backward, the forward's cache and the worst relative error.
pub(super) fn check_encoder_grads(bert: BertEncoder) -> (TextEncoder, BertCache, f64) {
    let b = batch();
    let what = bert.fine_tune().name();
    let base = TextEncoder::from_parts(bert, Pooling::Mean, true);
    let w = Rng::new(8).normal_vec(b.batch() * 8, 1.0);
    let run = |m: &TextEncoder| project(&m.forward(&b, Some(&mut Rng::new(9))).0, &w);
    let mut trained = base.clone();
    let (_, cache) = trained.forward(&b, Some(&mut Rng::new(9)));
    trained.backward(&b, &cache, &w);
    let worst = assert_param_grads(&what, &base, &trained, run, &check());
    (trained, cache.bert, worst)
}

#[test]
fn whole_encoder_gradients_all_layers() {
    let t = check_encoder(FineTune::All);
    // 4 embedding tensors (LN as two) + 16 per layer.
    assert_eq!(t.params().len(), 5 + 2 * 16);
}

#[test]
fn top_layers_train_alone_and_frozen_trains_nothing() {
    let t = check_encoder(FineTune::Top(1));
    let names: Vec<&str> = t.params().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.len(), 16);
    assert!(
        names.iter().all(|n| n.starts_with("encoder.layer.1.")),
        "{names:?}"
    );
    // Frozen parameters hold no gradient buffer at all.
    for p in t.bert.all_params() {
        assert_eq!(p.grad.is_empty(), !p.name.starts_with("encoder.layer.1."));
    }
    // Only the trained layer's activations are kept.
    let b = batch();
    let (_, cache) = t.bert.forward(&b, None);
    assert!(cache.emb.is_none());
    assert_eq!(cache.layers.len(), 1);

    let mut frozen = t.clone();
    frozen.bert.set_fine_tune(FineTune::Frozen).unwrap();
    assert!(frozen.params().is_empty());
    let (y, cache) = frozen.forward(&b, Some(&mut Rng::new(1)));
    assert!(cache.bert.layers.is_empty() && cache.bert.emb.is_none());
    frozen.backward(&b, &cache, &y);
    // The forward in training mode equals inference once nothing trains (no dropout).
    assert_eq!(y, frozen.infer(&b));

    let err = frozen
        .bert
        .set_fine_tune(FineTune::Top(3))
        .unwrap_err()
        .to_string();
    assert!(err.contains("top 3") && err.contains("has 2"), "{err}");
}

#[test]
fn cached_activations_match_the_documented_cost() {
    let b = batch();
    let mut bert = encoder(15, 0.1);
    for (fine_tune, per_token) in [
        (FineTune::All, 8 + 2 * (8 * 8 + 2 * 12 + 2 * 5)),
        (FineTune::Top(1), 8 * 8 + 2 * 12 + 2 * 5),
        (FineTune::Frozen, 0),
    ] {
        bert.set_fine_tune(fine_tune).unwrap();
        assert_eq!(bert.cached_floats_per_token(b.len), per_token);
        let (_, cache) = bert.forward(&b, Some(&mut Rng::new(1)));
        assert_eq!(cache.floats(), per_token * b.rows(), "{fine_tune:?}");
    }
}

/// The base model's values, every tensor.
pub(super) fn base_values(bert: &BertEncoder) -> Vec<Vec<f32>> {
    bert.all_params().iter().map(|p| p.value.clone()).collect()
}

/// Runs 20 Adam steps (learning rate 0.01) on `enc`'s trained parameters that pull the vectors
/// of the batch's first two texts together (loss −cos, unit vectors); returns the cosine
/// before and after.
pub(super) fn pull_two_texts_together(enc: &mut TextEncoder, b: &TextBatch) -> (f32, f32) {
    use crate::nn::{Adam, Optimizer, param::zero_grads};
    let mut opt = Adam::new(0.0);
    let cosine = |y: &[f32]| -> f32 { y[..8].iter().zip(&y[8..16]).map(|(a, c)| a * c).sum() };
    let first = cosine(&enc.infer(b));
    for _ in 0..20 {
        let (y, cache) = enc.forward(b, None);
        // loss = −cos(y0, y1): its gradient is −y1 for y0 and −y0 for y1.
        let mut d = vec![0.0; y.len()];
        for j in 0..8 {
            d[j] = -y[8 + j];
            d[8 + j] = -y[j];
        }
        enc.backward(b, &cache, &d);
        opt.step(&mut enc.params_mut(), 0.01);
        zero_grads(&mut enc.params_mut());
    }
    (first, cosine(&enc.infer(b)))
}

#[test]
fn fine_tuning_the_top_layer_moves_only_it() {
    // Adam on the top layer pulls the vectors of two texts together: the loss falls and every
    // frozen tensor keeps its values.
    let b = batch();
    let mut bert = encoder(16, 0.0);
    bert.set_fine_tune(FineTune::Top(1)).unwrap();
    let mut enc = TextEncoder::from_parts(bert, Pooling::Mean, true);
    let before = base_values(&enc.bert);
    let (first, last) = pull_two_texts_together(&mut enc, &b);
    assert!(1.0 - last < 0.1 * (1.0 - first), "cosine {first} -> {last}");
    for (p, v) in enc.bert.all_params().iter().zip(&before) {
        let moved = p.value != *v;
        assert_eq!(moved, p.name.starts_with("encoder.layer.1."), "{}", p.name);
    }
}

#[test]
fn bad_sequences_are_errors() {
    let cfg = small_config();
    let err = TextBatch::new(&[&[2, 3], &[2, 99]], &cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains("99") && err.contains("sequence 1"), "{err}");
    let err = TextBatch::new(&[&[]], &cfg).unwrap_err().to_string();
    assert!(err.contains("sequence 0 has 0 tokens"), "{err}");
    let long = vec![2u32; 9];
    assert!(TextBatch::new(&[&long], &cfg).is_err());
    assert_eq!(FineTune::parse("top:3").unwrap(), FineTune::Top(3));
    assert!(FineTune::parse("some").is_err());
}

/// The largest difference between the trainer's and the engine's sentence vectors for
/// `seqs`, with the engine's transformer weights stored as `weight_dtype`.
fn mismatch_vs_engine(dir: &std::path::Path, seqs: &[&[u32]], weight_dtype: DType) -> f32 {
    let engine = EngineEncoder::load_with(dir, &TextOptions { weight_dtype }).unwrap();
    let mut want = vec![0.0; seqs.len() * engine.dim()];
    engine.encode_ids_into(seqs, &mut want).unwrap();
    let ours = TextEncoder::load(dir, FineTune::Frozen).unwrap();
    assert_eq!(ours.pooling, engine.pooling());
    assert_eq!(ours.normalize, engine.normalizes());
    max_abs_diff(&ours.encode_ids(seqs).unwrap(), &want)
}

#[test]
fn forward_equals_the_engine_on_a_random_bert() {
    let dir = random_bert_dir("engine", 11);
    let s = seqs();
    let refs: Vec<&[u32]> = s.iter().map(Vec::as_slice).collect();
    // Same f32 operations in another order (packed vs padded, fused QKV, other SIMD
    // reductions): unit vectors agree to a few ulps through two layers (observed 6e-8 on
    // AVX2); 1e-6 leaves room for another instruction set's summation order.
    let diff = mismatch_vs_engine(&dir, &refs, DType::F32);
    eprintln!("trainer vs engine on a random BERT: max |diff| {diff:e}");
    assert!(diff < 1e-6, "trainer vs engine: {diff:e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn forward_equals_the_engine_on_minilm() {
    let Some(dir) = minilm_dir("trainer text encoder vs engine") else {
        return;
    };
    let tok = EngineEncoder::load(&dir).unwrap();
    let a = tok
        .tokenize("Toy Story (1995) Animation|Children's|Comedy")
        .unwrap();
    let b = tok.tokenize("GoldenEye").unwrap();
    let diff = mismatch_vs_engine(&dir, &[&a, &b], DType::F32);
    eprintln!("trainer vs engine (f32 weights) on all-MiniLM-L6-v2: max |diff| {diff:e}");
    // Unit vectors of 384 dims after six layers in f32, summed in other orders: observed 8e-8
    // on AVX2; 1e-6 leaves room for another instruction set's summation order.
    assert!(diff < 1e-6, "trainer vs engine: {diff:e}");
    // The engine's default storage quantizes the layers' weights to 16-bit integers, which
    // it keeps within 1e-4 of the f32 model (observed 1.6e-5 here).
    let i16_diff = mismatch_vs_engine(&dir, &[&a, &b], DType::I16);
    eprintln!("trainer vs engine (i16 weights, its default): max |diff| {i16_diff:e}");
    assert!(i16_diff < 1e-4, "trainer vs engine (i16): {i16_diff:e}");
}

/// Loads the delta `delta`, saved from `enc` over the base folder `dir`: the same setting,
/// base values, trained values and vectors as `enc`. Over the folder `other` it is refused,
/// the error naming both fingerprints, the delta file and `other`.
pub(super) fn assert_delta_round_trip(
    enc: &TextEncoder,
    dir: &std::path::Path,
    delta: &std::path::Path,
    other: &std::path::Path,
) {
    let back = TextEncoder::load_with_delta(dir, delta).unwrap();
    assert_eq!(back.bert.fine_tune(), enc.bert.fine_tune());
    let values =
        |ps: Vec<&Param>| -> Vec<Vec<f32>> { ps.iter().map(|p| p.value.clone()).collect() };
    assert_eq!(
        values(back.bert.all_params()),
        values(enc.bert.all_params())
    );
    assert_eq!(values(back.params()), values(enc.params()));
    let b = batch();
    assert_eq!(back.infer(&b), enc.infer(&b));

    let err = TextEncoder::load_with_delta(other, delta)
        .unwrap_err()
        .to_string();
    let (want, found) = (
        encoder::fingerprint(&dir.join("model.safetensors")).unwrap(),
        encoder::fingerprint(&other.join("model.safetensors")).unwrap(),
    );
    let file = delta.file_name().unwrap().to_string_lossy();
    assert!(
        err.contains(&want)
            && err.contains(&found)
            && err.contains(&*file)
            && err.contains(&other.display().to_string()),
        "{err}"
    );
}

#[test]
fn delta_round_trip_and_base_mismatch() {
    let dir = random_bert_dir("delta-base", 12);
    let mut enc = TextEncoder::load(&dir, FineTune::Top(1)).unwrap();
    // A stand-in for training: move every trained value.
    let mut rng = Rng::new(13);
    for p in enc.params_mut() {
        for v in &mut p.value {
            *v += 0.1 * rng.normal();
        }
    }
    let out = temp_dir("delta-out").join("delta.safetensors");
    enc.save_delta(&out).unwrap();
    let file = WeightFile::open(&out).unwrap();
    let names: Vec<&str> = file.names().collect();
    assert_eq!(names.len(), 16);
    assert!(names.iter().all(|n| n.starts_with("encoder.layer.1.")));
    let other = random_bert_dir("delta-other", 14);
    assert_delta_round_trip(&enc, &dir, &out, &other);
    // A delta whose tensors are not exactly the trained ones.
    let top2 = TextEncoder::load(&dir, FineTune::Top(2)).unwrap();
    let file = WeightFile::from_bytes(&top2.delta_bytes().unwrap()).unwrap();
    let mut top1 = TextEncoder::load(&dir, FineTune::Top(1)).unwrap();
    let err = top1.apply_delta(&file).unwrap_err().to_string();
    assert!(
        err.contains("unexpected") && err.contains("encoder.layer.0."),
        "{err}"
    );
    let file = WeightFile::from_bytes(&enc.delta_bytes().unwrap()).unwrap();
    let mut all = TextEncoder::load(&dir, FineTune::All).unwrap();
    let err = all.apply_delta(&file).unwrap_err().to_string();
    assert!(err.contains("embeddings."), "{err}");
    // A file that is not a delta.
    let err = TextEncoder::load_with_delta(&dir, dir.join("model.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains(encoder::DELTA_KEY), "{err}");
    for d in [dir, other, out.parent().unwrap().to_path_buf()] {
        let _ = std::fs::remove_dir_all(d);
    }
}
