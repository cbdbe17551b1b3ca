//! Gradient checks of the item towers and of the whole model under both losses, the frozen
//! cache, Adam on a toy catalog, checkpoints and the transfer start.

use super::checkpoint::{BERT_PREFIX, TextSource};
use super::*;
use crate::nn::gradcheck::{GradCheck, assert_param_grads, project, randomize};
use crate::nn::text::fixtures::{random_bert_dir, small_config as bert_config};
use crate::nn::text::{BertEncoder, FineTune, Lora, Pooling, TextEncoder};
use crate::nn::{Adam, Module, Rng};
use seqrec_engine::WeightFile;

/// Six items (ids 1..=6) of 2 to 6 tokens; id 0 is padding.
fn texts() -> Vec<Vec<u32>> {
    vec![
        vec![],
        vec![2, 5, 3],
        vec![2, 6, 7, 3],
        vec![2, 8, 9, 3],
        vec![2, 10],
        vec![2, 11, 5, 6, 3],
        vec![2, 7, 8, 9, 10, 3],
    ]
}

fn config(p: f32) -> TransRecConfig {
    TransRecConfig {
        n_items: 7,
        dim: 8,
        n_layers: 2,
        n_heads: 2,
        inner: 12,
        max_len: 6,
        dropout: p,
        ln_eps: 1e-12,
        causal: true,
        context: 4,
        future: 2,
        negatives: 2,
        text_heads: 2,
        uep: true,
        held_out_items: Vec::new(),
    }
}

/// A random encoder (every tensor redrawn) with `fine_tune` and dropout `p`.
fn encoder(fine_tune: FineTune, seed: u64, p: f32) -> TextEncoder {
    let mut rng = Rng::new(seed);
    let mut bert = BertEncoder::new(&bert_config(), "", p, p, &mut rng).unwrap();
    randomize(&mut bert, &mut rng, 0.3);
    bert.set_fine_tune(fine_tune).unwrap();
    TextEncoder::from_parts(bert, Pooling::Mean, true)
}

/// A model with every trained parameter redrawn (non-trivial LayerNorms and biases).
fn model(items: Items, seed: u64, p: f32) -> TransRecModel {
    let mut rng = Rng::new(seed);
    let mut m = TransRecModel::new(config(p), items, &mut rng).unwrap();
    randomize(&mut m, &mut rng, 0.3);
    m
}

fn text_model(fine_tune: FineTune, seed: u64, p: f32) -> TransRecModel {
    let items = Items::Text {
        encoder: Box::new(encoder(fine_tune, seed, p)),
        texts: texts(),
    };
    model(items, seed + 1, p)
}

// Finite differences through LN, softmax, GELU and the projections with unit-scale values, as
// the text encoder's and the attention tests argue: eps 2^-5, atol 2e-4, rtol 2e-3.
fn check() -> GradCheck {
    GradCheck::new(0.03125, 2e-4, 2e-3)
}

/// CPC examples: contexts of 1, 4 and 3 items (padding), repeated items, shared negatives.
fn examples() -> Vec<CpcExample> {
    let e = |c: &[u32], f: &[u32], n: &[u32]| CpcExample {
        context: c.to_vec(),
        future: f.to_vec(),
        negatives: n.to_vec(),
    };
    vec![
        e(&[3], &[4, 5], &[1, 6]),
        e(&[1, 2, 2, 3], &[4, 3], &[6, 5]),
        e(&[6, 5, 4], &[1, 2], &[3, 3]),
    ]
}

#[test]
fn text_tower_gradients_under_every_fine_tuning() {
    let items = [2u32, 5, 1, 4];
    let w = Rng::new(3).normal_vec(items.len() * 8, 1.0);
    for fine_tune in [
        FineTune::Frozen,
        FineTune::Top(1),
        FineTune::All,
        FineTune::Lora(Lora::default()),
    ] {
        let m = text_model(fine_tune, 10, 0.1);
        let ItemTower::Text(base) = m.tower else {
            unreachable!()
        };
        let base = *base;
        let run =
            |t: &TextTower| project(&t.forward(&items, Some(&mut Rng::new(9))).unwrap().0, &w);
        let mut trained = base.clone();
        let (_, cache) = trained.forward(&items, Some(&mut Rng::new(9))).unwrap();
        trained.backward(&cache, &w);
        assert_param_grads(&fine_tune.name(), &base, &trained, run, &check());
        let n_bert = trained.encoder.params().len();
        assert_eq!(
            n_bert,
            match fine_tune {
                FineTune::Frozen => 0,
                FineTune::Top(_) => 16,
                FineTune::All => 5 + 2 * 16,
                // A and B on the query and value of both layers.
                FineTune::Lora(_) => 2 * 2 * 2,
            }
        );
    }
}

#[test]
fn frozen_cache_gives_the_same_vectors_and_counts_its_floats() {
    let top_lora = FineTune::Lora(Lora {
        layers: Some(1),
        ..Lora::default()
    });
    for fine_tune in [FineTune::Frozen, FineTune::Top(1), top_lora] {
        let mut m = text_model(fine_tune, 20, 0.0);
        let items = [6u32, 1, 3];
        let before = m.tower.forward(&items, None).unwrap().0;
        let table = m.item_table().unwrap();
        let computed = m.cache_frozen_all().unwrap();
        assert_eq!(computed, 6);
        let t = m.tower.text().unwrap();
        // One row of H = 8 floats per real token of every item.
        let tokens: usize = texts().iter().map(Vec::len).sum();
        assert_eq!(t.frozen_floats(), tokens * 8);
        let after = m.tower.forward(&items, None).unwrap().0;
        let diff = before
            .iter()
            .zip(&after)
            .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(diff < 1e-5, "{fine_tune:?}: cached vs computed {diff:e}");
        let diff = table
            .iter()
            .zip(&m.item_table().unwrap())
            .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(diff < 1e-5, "{fine_tune:?}: item table {diff:e}");
        assert_eq!(&table[..8], &[0.0; 8], "padding row");
        assert_eq!(m.cache_frozen_all().unwrap(), 0, "computed once");
    }
    // Nothing is frozen when everything trains.
    let mut m = text_model(FineTune::All, 21, 0.0);
    assert_eq!(m.cache_frozen_all().unwrap(), 0);
    assert_eq!(m.tower.text().unwrap().frozen_floats(), 0);
}

#[test]
fn uep_gradients_reach_the_user_encoder_and_softmax_only() {
    let base = text_model(FineTune::Top(1), 30, 0.1);
    let table = base.item_table().unwrap();
    let seqs: [&[u32]; 3] = [&[1, 2, 3, 4, 5, 6], &[3, 1], &[6, 6, 2, 5]];
    let batch = base.uep_batch(&seqs).unwrap();
    assert_eq!(batch.targets, vec![2, 3, 4, 5, 6, 1, 6, 2, 5]);
    let run = |m: &TransRecModel| {
        m.uep_forward(&table, &batch, Some(&mut Rng::new(5)))
            .unwrap()
            .0
    };
    let mut trained = base.clone();
    let (_, cache) = trained
        .uep_forward(&table, &batch, Some(&mut Rng::new(5)))
        .unwrap();
    trained.uep_backward(&cache);
    assert_param_grads("uep", &base, &trained, run, &check());
    // The tower is frozen in stage 1: no gradient at all.
    assert!(
        trained
            .tower
            .params()
            .iter()
            .all(|p| p.grad.iter().all(|&g| g == 0.0))
    );
    assert!(
        trained
            .uep
            .params()
            .iter()
            .all(|p| p.grad.iter().any(|&g| g != 0.0))
    );
}

fn check_cpc(base: TransRecModel, what: &str) -> TransRecModel {
    let ex = examples();
    let run = |m: &TransRecModel| m.cpc_forward(&ex, Some(&mut Rng::new(7))).unwrap().0;
    let mut trained = base.clone();
    let (_, cache) = trained.cpc_forward(&ex, Some(&mut Rng::new(7))).unwrap();
    trained.cpc_backward(&cache);
    assert_param_grads(what, &base, &trained, run, &check());
    trained
}

#[test]
fn cpc_gradients_of_the_whole_text_model() {
    for fine_tune in [FineTune::Top(1), FineTune::All] {
        let mut base = text_model(fine_tune, 40, 0.1);
        base.drop_uep();
        // From the frozen cache where there is a frozen part.
        base.cache_frozen_all().unwrap();
        let trained = check_cpc(base, &format!("cpc {}", fine_tune.name()));
        // Every trained tensor gets a gradient (the encoder's trained layers included).
        for p in trained.params() {
            assert!(p.grad.iter().any(|&g| g != 0.0), "{}", p.name);
        }
    }
}

#[test]
fn cpc_gradients_of_idrec_causal_or_bidirectional() {
    for causal in [true, false] {
        let mut cfg = config(0.1);
        cfg.causal = causal;
        cfg.uep = false;
        let mut rng = Rng::new(50);
        let mut base = TransRecModel::new(cfg, Items::Id, &mut rng).unwrap();
        randomize(&mut base, &mut rng, 0.3);
        check_cpc(base, &format!("cpc idrec causal={causal}"));
    }
}

#[test]
fn serving_helpers_agree_with_the_training_forward() {
    // In evaluation mode, the CPC loss from the item table and the user vectors equals the
    // training forward's, and a history's user vector does not depend on its batch.
    let m = text_model(FineTune::Top(1), 55, 0.1);
    let ex = examples();
    let table = m.item_table().unwrap();
    let contexts: Vec<&[u32]> = ex.iter().map(|e| e.context.as_slice()).collect();
    let users = m.user_vectors(&table, &contexts).unwrap();
    let mut loss = 0.0;
    for (r, e) in ex.iter().enumerate() {
        let u = &users[r * 8..(r + 1) * 8];
        let score = |id: u32| -> f64 {
            let z = &table[id as usize * 8..(id as usize + 1) * 8];
            u.iter().zip(z).map(|(a, b)| (a * b) as f64).sum()
        };
        let sp = crate::nn::loss::softplus;
        loss += e.future.iter().map(|&i| sp(-score(i))).sum::<f64>();
        loss += e.negatives.iter().map(|&i| sp(score(i))).sum::<f64>();
    }
    loss /= ex.len() as f64;
    let want = m.cpc_forward(&ex, None).unwrap().0;
    assert!((loss - want).abs() < 1e-5, "{loss} vs {want}");
    let alone = m.user_vectors(&table, &contexts[..1]).unwrap();
    let diff = alone
        .iter()
        .zip(&users[..8])
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    assert!(diff < 1e-5, "user vector alone vs in a batch: {diff:e}");
    let err = m.user_vectors(&table, &[&[]]).unwrap_err().to_string();
    assert!(err.contains("sequence 0 has 0 items"), "{err}");
}

#[test]
fn cpc_examples_split_windows_and_avoid_the_history() {
    let mut cfg = config(0.0);
    cfg.n_items = 12;
    let mut rng = Rng::new(1);
    let seq: Vec<u32> = (1..=8).collect();
    let e = CpcExample::from_window(&seq, &[9], &cfg, &mut rng).unwrap();
    assert_eq!(e.future, vec![7, 8]);
    assert_eq!(
        e.context,
        vec![3, 4, 5, 6],
        "the last `context` items before the future"
    );
    for _ in 0..50 {
        let e = CpcExample::from_window(&seq, &[9], &cfg, &mut rng).unwrap();
        assert_eq!(e.negatives.len(), 2);
        assert!(e.negatives.iter().all(|&n| (10..12).contains(&n)), "{e:?}");
    }
    let short = CpcExample::from_window(&[4, 5], &[], &cfg, &mut rng).unwrap();
    assert_eq!((short.context, short.future), (vec![4], vec![5]));
    let err = CpcExample::from_window(&[4], &[], &cfg, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 2"), "{err}");
    let all: Vec<u32> = (1..12).collect();
    let err = CpcExample::from_window(&all[..3], &all, &cfg, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(err.contains("every one of the 11 items"), "{err}");
}

#[test]
fn bad_input_is_an_error_naming_it() {
    let m = text_model(FineTune::Frozen, 60, 0.0);
    let err = m.tower.forward(&[3, 7], None).unwrap_err().to_string();
    assert!(err.contains("item id 7"), "{err}");
    let err = m.uep_batch(&[&[1, 0, 2]]).unwrap_err().to_string();
    assert!(err.contains("item id 0"), "{err}");
    let err = m.uep_batch(&[&[1]]).unwrap_err().to_string();
    assert!(err.contains("at least 2"), "{err}");
    let mut bad = examples();
    bad[1].negatives.pop();
    let err = m.cpc_forward(&bad, None).unwrap_err().to_string();
    assert!(err.contains("CPC example 1"), "{err}");
    let mut long = examples();
    long[0].context = vec![1; 5];
    let err = m.cpc_forward(&long, None).unwrap_err().to_string();
    assert!(err.contains("sequence 0 has 5 items"), "{err}");
    let mut t = texts();
    t[4].clear();
    let err = TransRecModel::new(
        config(0.0),
        Items::Text {
            encoder: Box::new(encoder(FineTune::Frozen, 1, 0.0)),
            texts: t.clone(),
        },
        &mut Rng::new(1),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("item 4 has no text"), "{err}");
    t.pop();
    let err = TransRecModel::new(
        config(0.0),
        Items::Text {
            encoder: Box::new(encoder(FineTune::Frozen, 1, 0.0)),
            texts: t,
        },
        &mut Rng::new(1),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("item texts has 6"), "{err}");
    let mut cfg = config(0.0);
    cfg.n_heads = 3;
    let err = TransRecModel::new(cfg, Items::Id, &mut Rng::new(1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("n_heads 3"), "{err}");
    let mut dropped = m.clone();
    dropped.drop_uep();
    let table = m.item_table().unwrap();
    let batch = m.uep_batch(&[&[1, 2]]).unwrap();
    assert!(dropped.uep_forward(&table, &batch, None).is_err());
}

/// Toy source sequences: each item is followed by the next one (cyclically over 1..=6).
fn toy_sequences() -> Vec<Vec<u32>> {
    (0..6u32)
        .map(|s| (0..6).map(|k| 1 + (s + k) % 6).collect())
        .collect()
}

#[test]
fn adam_steps_of_each_stage_lower_its_loss() {
    // BERT's and the model's own initialisation (a random encoder with redrawn LayerNorms
    // maps every text to nearly the same vector, which no user encoder can tell apart).
    let mut rng = Rng::new(70);
    let mut bert = BertEncoder::new(&bert_config(), "", 0.0, 0.0, &mut rng).unwrap();
    bert.set_fine_tune(FineTune::Top(1)).unwrap();
    let items = Items::Text {
        encoder: Box::new(TextEncoder::from_parts(bert, Pooling::Mean, true)),
        texts: texts(),
    };
    let mut m = TransRecModel::new(config(0.0), items, &mut rng).unwrap();
    m.cache_frozen_all().unwrap();
    let seqs = toy_sequences();
    let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();

    // Stage 1: the item table is fixed; only the user encoder and the softmax layer move.
    let table = m.item_table().unwrap();
    let batch = m.uep_batch(&refs).unwrap();
    let tower_before: Vec<Vec<f32>> = m.tower.params().iter().map(|p| p.value.clone()).collect();
    let mut opt = Adam::new(0.0);
    let first = m.uep_forward(&table, &batch, None).unwrap().0;
    let mut rng = Rng::new(1);
    for _ in 0..60 {
        m.uep_step(&table, &batch, &mut opt, 0.02, Some(5.0), &mut rng)
            .unwrap();
    }
    let last = m.uep_forward(&table, &batch, None).unwrap().0;
    eprintln!("UEP loss {first} -> {last}");
    assert!(last < 0.7 * first, "UEP loss {first} -> {last}");
    let tower_after: Vec<Vec<f32>> = m.tower.params().iter().map(|p| p.value.clone()).collect();
    assert_eq!(tower_before, tower_after, "stage 1 moved the item tower");

    // Stage 2: everything trains, the encoder's top layer included.
    m.drop_uep();
    let cfg = m.config().clone();
    let mut rng = Rng::new(71);
    let ex: Vec<CpcExample> = seqs
        .iter()
        .map(|s| CpcExample::from_window(&s[..4], &s[..4], &cfg, &mut rng).unwrap())
        .collect();
    let mut opt = Adam::new(0.0);
    let first = m.cpc_forward(&ex, None).unwrap().0;
    let bert_before = m.tower.text().unwrap().encoder.params()[0].value.clone();
    let frozen_before = m.tower.text().unwrap().encoder.bert.layers[0].clone();
    for _ in 0..60 {
        m.cpc_step(&ex, &mut opt, 0.01, None, &mut rng).unwrap();
    }
    let last = m.cpc_forward(&ex, None).unwrap().0;
    eprintln!("CPC loss {first} -> {last}");
    assert!(last < 0.7 * first, "CPC loss {first} -> {last}");
    assert_ne!(
        m.tower.text().unwrap().encoder.params()[0].value,
        bert_before,
        "stage 2 trains the encoder's top layer"
    );
    let frozen_after = &m.tower.text().unwrap().encoder.bert.layers[0];
    assert_eq!(
        values(frozen_after.params()),
        values(frozen_before.params()),
        "the encoder's frozen layer stays"
    );
}

/// A text model over the encoder folder `dir` with the top layer trained and every trained
/// value moved (a stand-in for training).
fn loaded_model(
    dir: &std::path::Path,
    texts: Vec<Vec<u32>>,
    uep: bool,
    seed: u64,
) -> TransRecModel {
    loaded_model_with(dir, FineTune::Top(1), texts, uep, seed)
}

/// [`loaded_model`] with the encoder's fine-tuning `fine_tune`.
fn loaded_model_with(
    dir: &std::path::Path,
    fine_tune: FineTune,
    texts: Vec<Vec<u32>>,
    uep: bool,
    seed: u64,
) -> TransRecModel {
    let encoder = TextEncoder::load(dir, fine_tune).unwrap();
    let mut cfg = config(0.0);
    cfg.n_items = texts.len();
    cfg.uep = uep;
    let mut rng = Rng::new(seed);
    let mut m = TransRecModel::new(
        cfg,
        Items::Text {
            encoder: Box::new(encoder),
            texts,
        },
        &mut rng,
    )
    .unwrap();
    randomize(&mut m, &mut rng, 0.3);
    m
}

fn values(params: Vec<&crate::nn::Param>) -> Vec<(String, Vec<f32>)> {
    params
        .into_iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect()
}

#[test]
fn checkpoint_round_trip_with_lora_adapters() {
    // The checkpoint carries the adapters (A and B of query and value in both layers) under
    // the encoder prefix, and loads back over the same base folder.
    let dir = random_bert_dir("transrec-lora", 90);
    let source = loaded_model_with(&dir, FineTune::Lora(Lora::default()), texts(), true, 91);
    let file = WeightFile::from_bytes(&source.to_safetensors().unwrap()).unwrap();
    let bert: Vec<&str> = file
        .names()
        .filter(|n| n.starts_with(BERT_PREFIX))
        .collect();
    assert_eq!(bert.len(), 8, "{bert:?}");
    assert!(bert.iter().all(|n| n.contains(".lora_")), "{bert:?}");
    let source_dir = TextSource {
        dir: &dir,
        texts: texts(),
    };
    let back = TransRecModel::load(&file, Some(source_dir)).unwrap();
    assert_eq!(values(back.params()), values(source.params()));
    let ex = examples();
    assert_eq!(
        back.cpc_forward(&ex, None).unwrap().0,
        source.cpc_forward(&ex, None).unwrap().0
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn checkpoint_round_trip_and_init_from_a_source() {
    let dir = random_bert_dir("transrec-base", 80);
    let source = loaded_model(&dir, texts(), true, 81);
    let bytes = source.to_safetensors().unwrap();
    let file = WeightFile::from_bytes(&bytes).unwrap();
    // Only the trained encoder layer is stored, under the prefix.
    let bert: Vec<&str> = file
        .names()
        .filter(|n| n.starts_with(BERT_PREFIX))
        .collect();
    assert_eq!(bert.len(), 16);
    assert!(file.names().any(|n| n.starts_with("uep.softmax")));

    let back = TransRecModel::load(
        &file,
        Some(TextSource {
            dir: &dir,
            texts: texts(),
        }),
    )
    .unwrap();
    assert_eq!(back.config(), source.config());
    assert_eq!(values(back.params()), values(source.params()));
    let ex = examples();
    assert_eq!(
        back.cpc_forward(&ex, None).unwrap().0,
        source.cpc_forward(&ex, None).unwrap().0
    );
    let err = TransRecModel::load(&file, None).unwrap_err().to_string();
    assert!(err.contains("text encoder folder"), "{err}");

    // A target catalog of four other items, no softmax layer: both towers come from the
    // source, the softmax layer is dropped.
    let target_texts = vec![
        vec![],
        vec![2, 11, 3],
        vec![2, 5, 5, 3],
        vec![2, 9, 3],
        vec![2, 6, 3],
    ];
    let mut target = loaded_model(&dir, target_texts.clone(), false, 82);
    target.cache_frozen_all().unwrap();
    let copied = target.init_from(&file).unwrap();
    assert!(copied.iter().all(|n| !n.starts_with("uep.")), "{copied:?}");
    assert!(target.uep.is_none());
    assert_eq!(
        target.tower.text().unwrap().frozen_floats(),
        0,
        "cache forgotten"
    );
    let mut want = values(source.params());
    want.retain(|(n, _)| !n.starts_with("uep."));
    assert_eq!(values(target.params()), want);
    // The transferred model scores its own catalog.
    let ex = vec![CpcExample {
        context: vec![1, 2],
        future: vec![3],
        negatives: vec![4],
    }];
    assert!(target.cpc_forward(&ex, None).unwrap().0.is_finite());
    // Saved without the softmax layer, loaded back as such.
    let saved = WeightFile::from_bytes(&target.to_safetensors().unwrap()).unwrap();
    assert!(!saved.names().any(|n| n.starts_with("uep.")));
    let reloaded = TransRecModel::load(
        &saved,
        Some(TextSource {
            dir: &dir,
            texts: target_texts.clone(),
        }),
    )
    .unwrap();
    assert!(reloaded.uep.is_none());

    // Another base encoder, and an IDRec source: refused, naming the problem.
    let other = random_bert_dir("transrec-other", 83);
    let mut stranger = loaded_model(&other, target_texts.clone(), false, 84);
    let err = stranger.init_from(&file).unwrap_err().to_string();
    assert!(err.contains("not the same base model"), "{err}");
    let err = TransRecModel::load(
        &file,
        Some(TextSource {
            dir: &other,
            texts: texts(),
        }),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not the same base model"), "{err}");
    let idrec = model(Items::Id, 85, 0.0);
    let id_file = WeightFile::from_bytes(&idrec.to_safetensors().unwrap()).unwrap();
    let err = target.init_from(&id_file).unwrap_err().to_string();
    assert!(err.contains("id item tower"), "{err}");
    // IDRec round trip; an ID table over another catalog does not transfer.
    let back = TransRecModel::load(&id_file, None).unwrap();
    assert_eq!(values(back.params()), values(idrec.params()));
    let mut cfg = config(0.0);
    cfg.n_items = 5;
    let mut small = TransRecModel::new(cfg, Items::Id, &mut Rng::new(1)).unwrap();
    let err = small.init_from(&id_file).unwrap_err().to_string();
    assert!(err.contains("item.id_embedding.weight"), "{err}");
    for d in [dir, other] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn the_served_file_scores_as_the_trainer_including_a_new_item() {
    // A model trained over items 1..=6, saved without its softmax layer, loaded over a
    // catalog with a seventh item it never saw, and served: the engine's scores are the
    // trainer's U · z over the new catalog, the new item included.
    let dir = random_bert_dir("transrec-serve", 86);
    let mut source = loaded_model(&dir, texts(), true, 87);
    source.drop_uep();
    let file = WeightFile::from_bytes(&source.to_safetensors().unwrap()).unwrap();
    let mut grown = texts();
    grown.push(vec![2, 11, 10, 7, 3]);
    let model = TransRecModel::load(
        &file,
        Some(TextSource {
            dir: &dir,
            texts: grown,
        }),
    )
    .unwrap();
    assert_eq!(model.config().n_items, 8);
    let table = model.item_table().unwrap();
    let served =
        seqrec_engine::Model::from_bytes(&model.to_serving(&table).unwrap(), &Default::default())
            .unwrap();
    let info = served.info();
    assert_eq!(
        (info.arch, info.n_items, info.max_len, info.dim),
        ("transrec", 8, 4, 8)
    );
    let mut ws = served.new_workspace();
    let d = model.config().dim;
    for history in [&[7u32][..], &[1, 7, 3], &[2, 4, 6, 5]] {
        let u = model.user_vectors(&table, &[history]).unwrap();
        let mut got = vec![0.0; 8];
        served
            .score(&seqrec_engine::Query::new(history), &mut ws, &mut got)
            .unwrap();
        for item in 1..8 {
            let want: f32 = (0..d).map(|j| u[j] * table[item * d + j]).sum();
            assert!(
                (got[item] - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "history {history:?}, item {item}: served {} vs trainer {want}",
                got[item]
            );
        }
    }
    // The new item is recommendable: it has a finite score of its own, not the padding row's.
    assert_ne!(&table[7 * d..8 * d], &[0.0; 8][..]);

    // A model that still has its softmax layer is tied to its catalog; a bidirectional one
    // cannot be served.
    let with_uep = WeightFile::from_bytes(
        &loaded_model(&dir, texts(), true, 88)
            .to_safetensors()
            .unwrap(),
    )
    .unwrap();
    let mut longer = texts();
    longer.push(vec![2, 5, 3]);
    let err = TransRecModel::load(
        &with_uep,
        Some(TextSource {
            dir: &dir,
            texts: longer,
        }),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("item texts"), "{err}");
    let mut cfg = config(0.0);
    cfg.causal = false;
    let bi = TransRecModel::new(cfg, Items::Id, &mut Rng::new(2)).unwrap();
    let err = bi
        .to_serving(&bi.item_table().unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("bidirectional"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
