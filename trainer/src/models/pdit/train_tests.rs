//! PDiT's training step: the loss gradient against central differences (with the spec's
//! stop-gradient), and a short training run on an easy synthetic task that must beat chance.

use super::data::{PditData, PditExample};
use super::dreamrec::{DreamBatch, DreamRecConfig, DreamRecModel, DreamRecRanker};
use super::eval::{EngineRanker, RankOptions, evaluate};
use super::model::PditModel;
use super::tests::config;
use super::train::{PditTrainOptions, make_part, part_loss, train, train_dreamrec};
use crate::eval::parse_metrics;
use crate::learner::RunOptions;
use crate::nn::Rng;
use crate::nn::gradcheck::{GradCheck, assert_param_grads, randomize};
use seqrec_engine::pdit::{Pdit, Schedule, hybrid_loss};
use std::collections::BTreeMap;

/// Unit latents of `n` items in `d` dimensions (row 0, the padding, zero); `users` examples
/// per split with random histories of 1..=4 items; the prompt is the target's latent plus
/// noise of a third of its norm, renormalised (an easy task: the prompt says what comes next).
pub(super) fn synthetic(n: usize, d: usize, users: [usize; 3], seed: u64) -> PditData {
    let mut rng = Rng::new(seed);
    let mut item_latents = vec![0.0f32; n * d];
    for row in item_latents.chunks_exact_mut(d).skip(1) {
        let v = rng.normal_vec(d, 1.0);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().zip(&v).for_each(|(o, x)| *o = x / norm);
    }
    let split = |count: usize, rng: &mut Rng| -> Vec<PditExample> {
        (0..count)
            .map(|u| {
                let target = 1 + rng.below(n - 1) as u32;
                let len = 1 + rng.below(4);
                let history = (0..len).map(|_| 1 + rng.below(n - 1) as u32).collect();
                let t = &item_latents[target as usize * d..(target as usize + 1) * d];
                let mut p: Vec<f32> = t
                    .iter()
                    .map(|&x| x + rng.normal() * 0.33 / (d as f32).sqrt())
                    .collect();
                let norm = p.iter().map(|x| x * x).sum::<f32>().sqrt();
                p.iter_mut().for_each(|x| *x /= norm);
                PditExample {
                    user: u as u32,
                    history,
                    target,
                    prompt: p,
                }
            })
            .collect()
    };
    let train = split(users[0], &mut rng);
    let valid = split(users[1], &mut rng);
    let test = split(users[2], &mut rng);
    PditData {
        dim: d,
        max_hist_len: 4,
        item_latents,
        train,
        valid,
        test,
        meta: BTreeMap::new(),
    }
}

#[test]
fn the_training_gradient_is_the_loss_gradient_with_the_stop_gradient() {
    // The vb term reads ε_θ through a stop-gradient: the step's gradient is that of
    // mean_s [mse(ε_θ) + vb(sg(ε_θ), v)], with sg(ε_θ) held at the unperturbed network's.
    // Tolerances as the whole network's check (eps 2^-7, atol 6e-4, rtol 2e-3), on losses of
    // order 1.
    let data = synthetic(12, 6, [8, 1, 1], 1);
    for ls in [true, false] {
        let mut rng = Rng::new(2);
        let cfg = config("full", ls, false, [6, 6, 8, 3, 2, 1, 1, 4, 9]);
        let mut m = PditModel::new(cfg, &mut rng).unwrap();
        randomize(&mut m, &mut rng, 0.3);
        let base_sched = Schedule::linear(m.config());
        let ex: Vec<&PditExample> = data.train.iter().take(4).collect();
        let part = make_part(&m, &base_sched, &data, &ex, &mut rng);
        let base = m.clone();
        part_loss(&mut m, &base_sched, &part);
        let (d, w) = (base.config().latent_dim, base.config().out_dim());
        let eps0 = base.forward(&part.batch).unwrap().0;
        let b = &part.batch;
        let loss = |net: &PditModel| {
            let out = net.forward(b).unwrap().0;
            let mut total = 0.0;
            for s in 0..b.samples {
                let (o, o0) = (&out[s * w..(s + 1) * w], &eps0[s * w..(s + 1) * w]);
                let r = s * d..(s + 1) * d;
                let v = ls.then(|| &o[d..2 * d]);
                let (z0, n, z) = (&part.z0[r.clone()], &part.noise[r.clone()], &b.z[r]);
                let mse = hybrid_loss(&base_sched, ls, b.t[s], z0, n, z, &o[..d], v)
                    .unwrap()
                    .mse;
                let vb = hybrid_loss(&base_sched, ls, b.t[s], z0, n, z, &o0[..d], v)
                    .unwrap()
                    .vb;
                total += mse + vb;
            }
            total / b.samples as f64
        };
        assert_param_grads(
            "loss",
            &base,
            &m,
            loss,
            &GradCheck::new(0.0078125, 6e-4, 2e-3),
        );
    }
}

/// `users` examples per split whose histories are runs of consecutive ids (wrapping inside
/// `1..n`) and whose target is the next id: learnable from the ids alone.
fn successor_data(n: usize, users: [usize; 3], seed: u64) -> PditData {
    let mut data = synthetic(n, 4, users, seed);
    let mut rng = Rng::new(seed ^ 9);
    let next = |i: u32| if i as usize + 1 >= n { 1 } else { i + 1 };
    for e in data
        .train
        .iter_mut()
        .chain(&mut data.valid)
        .chain(&mut data.test)
    {
        let len = 1 + rng.below(4);
        let mut id = 1 + rng.below(n - 1) as u32;
        e.history = (0..len)
            .map(|_| {
                let cur = id;
                id = next(id);
                cur
            })
            .collect();
        e.target = id;
    }
    data
}

#[test]
fn dreamrec_gradients() {
    // The loss of a fixed batch (no dropout) as a function of every parameter; the item table
    // takes the target's gradient twice (the target itself and through x_t) and the
    // history's. Tolerances as the network's checks (eps 2^-7, atol 6e-4, rtol 2e-3).
    let data = successor_data(12, [6, 1, 1], 7);
    let mut cfg = DreamRecConfig::new(12, 4);
    (cfg.hidden, cfg.heads, cfg.timesteps, cfg.dropout) = (8, 2, 20, 0.0);
    let mut rng = Rng::new(8);
    let mut m = DreamRecModel::new(cfg, &mut rng).unwrap();
    randomize(&mut m, &mut rng, 0.3);
    let schedule = m.config().schedule().unwrap();
    let ex: Vec<&PditExample> = data.train.iter().collect();
    let b = DreamBatch {
        seqs: m.windows(&ex),
        steps: vec![0, 3, 19, 7, 11, 5],
        noise: rng.normal_vec(6 * 8, 1.0),
        uncond: vec![false, true, false, false, true, false],
    };
    let base = m.clone();
    m.train_step(&b, &schedule, None);
    let loss = |net: &DreamRecModel| net.clone().train_step(&b, &schedule, None);
    assert_param_grads(
        "dreamrec",
        &base,
        &m,
        loss,
        &GradCheck::new(0.0078125, 6e-4, 2e-3),
    );
}

#[test]
fn dreamrec_learns_successors() {
    // 60 items: chance HR@10 is 10/59 ≈ 0.17.
    let data = successor_data(60, [1500, 100, 150], 11);
    let mut cfg = DreamRecConfig::new(60, 4);
    (cfg.hidden, cfg.heads, cfg.timesteps) = (32, 2, 50);
    let mut model = DreamRecModel::new(cfg, &mut Rng::new(12)).unwrap();
    let opts = PditTrainOptions {
        batch_size: 64,
        lr: 5e-3,
        warmup: 20,
        valid_every: Some(100),
        run: RunOptions {
            epochs: 4,
            valid_metric: "hr@10".into(),
            progress: false,
            clip: Some(1.0),
            ..Default::default()
        },
        ..Default::default()
    };
    let r = train_dreamrec(&mut model, &data, &opts).unwrap();
    let served = DreamRecModel::from_safetensors(&r.checkpoint).unwrap();
    let ranker = DreamRecRanker::new(&served, &data, false).unwrap();
    let opts = RankOptions {
        metrics: parse_metrics("hr@10").unwrap(),
        seed: 5,
    };
    let hr = evaluate(&ranker, &data.test, data.n_items(), &opts)
        .unwrap()
        .values[0]
        .1;
    assert!(hr > 2.0 * 10.0 / 59.0, "test HR@10 {hr}, log {:?}", r.log);
}

/// Trains a small PDiT of `variant` on `data` for `rounds` rounds of 150 steps and returns the
/// first and last rounds' mean loss and the best checkpoint's test HR@10 (20 sampling steps).
fn short_run(variant: &str, data: &PditData, rounds: usize) -> (f64, f64, f64) {
    let cfg = config(variant, true, false, [16, 16, 32, 4, 4, 1, 1, 4, 32]);
    let mut model = PditModel::new(cfg, &mut Rng::new(4)).unwrap();
    let opts = PditTrainOptions {
        batch_size: 64,
        lr: 3e-3,
        warmup: 50,
        valid_every: Some(150),
        valid_steps: 20,
        run: RunOptions {
            epochs: rounds,
            valid_metric: "hr@10".into(),
            progress: false,
            clip: Some(1.0),
            ..Default::default()
        },
        ..Default::default()
    };
    let r = train(&mut model, data, &opts).unwrap();
    let engine = Pdit::from_bytes(&r.checkpoint).unwrap();
    let ranker = EngineRanker::new(&engine, data, 20, false).unwrap();
    let opts = RankOptions {
        metrics: parse_metrics("hr@10").unwrap(),
        seed: 5,
    };
    let hr = evaluate(&ranker, &data.test, data.n_items(), &opts)
        .unwrap()
        .values[0]
        .1;
    (r.log[0].loss, r.log.last().unwrap().loss, hr)
}

#[test]
fn a_short_run_follows_the_prompt() {
    // 150 items: chance HR@10 is 10/149 ≈ 0.067 (one target per example). Observed: loss
    // 0.39 → 0.09, HR@10 0.99 after 4 rounds.
    let data = synthetic(150, 16, [1500, 100, 150], 3);
    let (first, last, hr) = short_run("full", &data, 4);
    assert!(last < 0.5 * first, "loss {first} → {last}");
    assert!(hr > 5.0 * 10.0 / 149.0, "test HR@10 {hr}");
}

#[test]
fn the_temporal_variant_learns_successors_from_the_history() {
    // The history latents alone (tem reads no prompt) say what comes next: the id after the
    // last one. 60 items: chance HR@10 ≈ 0.17; observed 0.66 on validation after 6 rounds.
    let mut data = successor_data(60, [1500, 100, 150], 11);
    let latents = synthetic(60, 16, [0, 0, 0], 3).item_latents;
    (data.dim, data.item_latents) = (16, latents);
    for e in data
        .train
        .iter_mut()
        .chain(&mut data.valid)
        .chain(&mut data.test)
    {
        e.prompt = vec![0.0; 16];
    }
    let (first, last, hr) = short_run("tem", &data, 6);
    assert!(last < 0.6 * first, "loss {first} → {last}");
    assert!(hr > 2.0 * 10.0 / 59.0, "test HR@10 {hr}");
}
