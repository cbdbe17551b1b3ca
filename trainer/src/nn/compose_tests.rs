//! Blocks composed into a small SASRec: its forward against the engine's model on the same
//! tensors, and a few optimizer steps whose checkpoint the engine then loads and scores.

use super::activation::DropoutCache;
use super::attention::{FeedForwardCache, SelfAttentionCache};
use super::gradcheck::randomize;
use super::loss::full_softmax_loss;
use super::norm::LayerNormCache;
use super::optim::clip_grad_norm;
use super::param::{to_safetensors, zero_grads};
use super::*;
use seqrec_engine::{CONFIG_KEY, Config, LoadOptions, Model, Query};

const H: usize = 8;

/// RecBole's SASRec encoder from the blocks.
#[derive(Clone, Debug)]
struct Sas {
    items: Embedding,
    pos: Embedding,
    ln: LayerNorm,
    drop: Dropout,
    layers: Vec<(SelfAttention, FeedForward)>,
    len: usize,
}

struct SasCache {
    ids: Vec<u32>,
    pos_ids: Vec<u32>,
    ln: LayerNormCache,
    drop: DropoutCache,
    layers: Vec<(SelfAttentionCache, FeedForwardCache)>,
}

impl Module for Sas {
    fn params(&self) -> Vec<&Param> {
        let mut v = self.items.params();
        v.extend(self.pos.params());
        v.extend(self.ln.params());
        for (a, f) in &self.layers {
            v.extend(a.params());
            v.extend(f.params());
        }
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = self.items.params_mut();
        v.extend(self.pos.params_mut());
        v.extend(self.ln.params_mut());
        for (a, f) in &mut self.layers {
            v.extend(a.params_mut());
            v.extend(f.params_mut());
        }
        v
    }
}

impl Sas {
    fn new(rng: &mut Rng, n_items: usize, len: usize, n_layers: usize, dropout: f32) -> Sas {
        let layers = (0..n_layers)
            .map(|l| {
                let p = format!("trm_encoder.layer.{l}");
                (
                    SelfAttention::new(
                        &format!("{p}.multi_head_attention"),
                        H,
                        2,
                        1e-12,
                        dropout,
                        dropout,
                        0.02,
                        rng,
                    ),
                    FeedForward::new(
                        &format!("{p}.feed_forward"),
                        H,
                        16,
                        Activation::Gelu,
                        1e-12,
                        dropout,
                        0.02,
                        rng,
                    ),
                )
            })
            .collect();
        Sas {
            items: Embedding::new("item_embedding.weight", n_items, H, 0.02, rng),
            pos: Embedding::new("position_embedding.weight", len, H, 0.02, rng),
            ln: LayerNorm::new("LayerNorm", H, 1e-12),
            drop: Dropout::new(dropout),
            layers,
            len,
        }
    }

    fn config(&self) -> Config {
        Config::from_json(&format!(
            r#"{{"model":"sasrec","n_items":{},"MAX_ITEM_LIST_LENGTH":{},"hidden_size":{H},"n_layers":{},"n_heads":2,"inner_size":16,"hidden_act":"gelu","layer_norm_eps":1e-12}}"#,
            self.items.rows,
            self.len,
            self.layers.len()
        ))
        .unwrap()
    }

    /// Encodes `batch` right-padded windows (`[batch·len]` ids, 0 = padding) into
    /// `[batch·len, H]`.
    fn forward(&self, ids: &[u32], mut rng: Option<&mut Rng>) -> (Vec<f32>, SasCache) {
        let (len, rows) = (self.len, ids.len());
        let batch = rows / len;
        let pos_ids: Vec<u32> = (0..rows).map(|r| (r % len) as u32).collect();
        let mut x = self.items.forward(ids);
        for (a, b) in x.iter_mut().zip(self.pos.forward(&pos_ids)) {
            *a += b;
        }
        let (mut x, ln) = self.ln.forward(&x, rows);
        let drop = self.drop.forward(&mut x, rng.as_deref_mut());
        let valid: Vec<bool> = ids.iter().map(|&i| i != 0).collect();
        let mut caches = Vec::new();
        for (att, ff) in &self.layers {
            let (y, ca) = att.forward(&x, batch, len, Some(&valid), rng.as_deref_mut());
            let (z, cf) = ff.forward(&y, rows, rng.as_deref_mut());
            caches.push((ca, cf));
            x = z;
        }
        let cache = SasCache {
            ids: ids.to_vec(),
            pos_ids,
            ln,
            drop,
            layers: caches,
        };
        (x, cache)
    }

    fn backward(&mut self, cache: &SasCache, d_out: &[f32]) {
        let mut d = d_out.to_vec();
        for ((att, ff), (ca, cf)) in self.layers.iter_mut().zip(&cache.layers).rev() {
            d = ff.backward(cf, &d);
            d = att.backward(ca, &d);
        }
        self.drop.backward(&cache.drop, &mut d);
        let d = self.ln.backward(&cache.ln, &d);
        self.items.backward(&cache.ids, &d);
        self.pos.backward(&cache.pos_ids, &d);
    }
}

#[test]
fn sasrec_from_blocks_equals_the_engine_model() {
    // The user vector (row n−1 of the encoded right-padded window) against the engine's
    // SASRec on the same tensors: the fixtures' tolerance 2e-5·max(1, |ref|).
    let mut rng = Rng::new(110);
    let (n_items, len) = (15, 6);
    let mut sas = Sas::new(&mut rng, n_items, len, 2, 0.0);
    randomize(&mut sas, &mut rng, 0.3);
    let bytes = to_safetensors(&sas.params(), &[(CONFIG_KEY, &sas.config().to_json())]).unwrap();
    let model = Model::from_bytes(&bytes, &LoadOptions::default()).unwrap();
    let mut ws = model.new_workspace();
    let histories: [&[u32]; 3] = [&[4, 9, 1, 14, 2, 7], &[3], &[5, 5, 11]];
    let mut ids = Vec::new();
    for h in histories {
        ids.extend_from_slice(h);
        ids.resize(ids.len() + len - h.len(), 0);
    }
    let (x, _) = sas.forward(&ids, None);
    for (b, h) in histories.iter().enumerate() {
        let row = b * len + h.len() - 1;
        let mut want = vec![0.0; H];
        model
            .user_vector(&Query::new(h), &mut ws, &mut want)
            .unwrap();
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let err = seqrec_kernels::testing::max_abs_diff(&x[row * H..(row + 1) * H], &want);
        assert!(err <= 2e-5 * scale, "history {h:?}: max |Δ| {err:e}");
    }
}

#[test]
fn a_few_adam_steps_learn_a_successor_pattern_the_engine_then_serves() {
    // Sequences walk the catalog (item i is followed by i + 1, wrapping within 1..n_items);
    // every position predicts the next item (the SASRec paper's objective, padding positions
    // weighted 0) with the full softmax over the tied item table, dropout on. 150 Adam steps
    // take the loss from ln(n_items) ≈ 2.6 to below 0.3; the saved checkpoint then ranks
    // the successor first in the engine for every start item.
    let mut rng = Rng::new(111);
    let (n_items, len, batch) = (13, 5, 8);
    let mut sas = Sas::new(&mut rng, n_items, len, 1, 0.1);
    let mut opt = Adam::new(0.0);
    let schedule = Schedule {
        base: 0.02,
        warmup: 10,
        total: 150,
        decay: Decay::Linear,
        min_lr: 0.002,
    };
    let next = |i: u32| 1 + i % (n_items as u32 - 1);
    let (mut first, mut last) = (0.0, 0.0);
    for step in 0..150u64 {
        let (mut ids, mut targets, mut weights) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..batch {
            let n = 1 + rng.below(len);
            let mut item = 1 + rng.below(n_items - 1) as u32;
            for t in 0..len {
                let real = t < n;
                ids.push(if real { item } else { 0 });
                targets.push(if real { next(item) } else { 0 });
                weights.push(if real { 1.0 } else { 0.0 });
                item = next(item);
            }
        }
        let (h, cache) = sas.forward(&ids, Some(&mut rng));
        let rows = batch * len;
        let (loss, dh) =
            full_softmax_loss(&h, rows, &mut sas.items.weight, &targets, Some(&weights));
        sas.backward(&cache, &dh);
        clip_grad_norm(&mut sas.params_mut(), 5.0);
        opt.step(&mut sas.params_mut(), schedule.lr(step));
        zero_grads(&mut sas.params_mut());
        if step == 0 {
            first = loss;
        }
        last = loss;
    }
    assert!(
        (first - (n_items as f64).ln()).abs() < 0.1,
        "initial loss {first}"
    );
    assert!(last < 0.3, "loss after 150 steps: {last} (from {first})");

    let bytes = to_safetensors(&sas.params(), &[(CONFIG_KEY, &sas.config().to_json())]).unwrap();
    let model = Model::from_bytes(&bytes, &LoadOptions::default()).unwrap();
    let mut ws = model.new_workspace();
    for start in 1..n_items as u32 {
        let history = [start, next(start)];
        let top = model.topk(&Query::new(&history), 1, &mut ws).unwrap();
        assert_eq!(top[0].item, next(next(start)), "after {history:?}");
    }
}
