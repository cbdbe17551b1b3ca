//! Trainable GRU4Rec (RecBole `GRU4Rec`): item embeddings, dropout (`dropout_prob`), a stack
//! of bias-free GRU layers and the dense projection back to the embedding width, read at every
//! output position (the state after `t + 1` items is what the engine computes for a history of
//! `t + 1` items).
//!
//! Initialisation as RecBole's `_init_weights`: the item table `xavier_normal_`, the first
//! layer's `weight_ih_l0` and `weight_hh_l0` `xavier_uniform_`. What it leaves alone keeps
//! PyTorch's default: the weights of deeper GRU layers uniform in `±1/sqrt(hidden)`, and the
//! `dense` weight and bias uniform in `±1/sqrt(hidden)` (its fan-in).

use super::{Batch, TrainModel, TrainStyle, gather_rows, scatter_rows};
use crate::nn::activation::DropoutCache;
use crate::nn::gru::GruCache;
use crate::nn::linear::LinearCache;
use crate::nn::{Dropout, Embedding, Gru, Linear, Module, Param, Rng};
use seqrec_engine::Config;

/// Hyper-parameters (RecBole's names in the saved config).
#[derive(Clone, Debug, PartialEq)]
pub struct Gru4RecConfig {
    /// Catalog size, padding included.
    pub n_items: usize,
    /// Window length.
    pub max_len: usize,
    /// Item embedding width E (`embedding_size`), also the user vector's.
    pub emb: usize,
    /// GRU state width (`hidden_size`).
    pub hidden: usize,
    /// GRU layers (`num_layers`).
    pub n_layers: usize,
    /// Dropout on the item embeddings (`dropout_prob`).
    pub dropout: f32,
}

impl Gru4RecConfig {
    /// RecBole's defaults (`GRU4Rec.yaml`) over `n_items` with window `max_len`.
    pub fn new(n_items: usize, max_len: usize) -> Self {
        Gru4RecConfig {
            n_items,
            max_len,
            emb: 64,
            hidden: 128,
            n_layers: 1,
            dropout: 0.3,
        }
    }
}

/// GRU4Rec for training.
#[derive(Clone, Debug)]
pub struct Gru4RecModel {
    cfg: Gru4RecConfig,
    item_emb: Embedding,
    dropout: Dropout,
    layers: Vec<Gru>,
    dense: Linear,
}

/// What [`Gru4RecModel::forward`] keeps.
#[derive(Debug)]
pub struct Gru4RecCache {
    items: Vec<u32>,
    out: Vec<f32>,
    rows: usize,
    out_rows: Vec<usize>,
    drop: DropoutCache,
    layers: Vec<GruCache>,
    dense: LinearCache,
}

impl Gru4RecModel {
    /// A freshly initialised model.
    pub fn new(cfg: Gru4RecConfig, rng: &mut Rng) -> Self {
        let (e, h) = (cfg.emb, cfg.hidden);
        let mut item_emb = Embedding {
            weight: Param::zeros("item_embedding.weight", &[cfg.n_items, e]),
            rows: cfg.n_items,
            dim: e,
        };
        item_emb.weight.init_xavier_normal(rng);
        let default_bound = 1.0 / (h.max(1) as f32).sqrt();
        let layers = (0..cfg.n_layers)
            .map(|k| {
                let mut g = Gru::new("gru_layers", k, if k == 0 { e } else { h }, h, false, rng);
                if k > 0 {
                    g.weight_ih.init_uniform(rng, default_bound);
                    g.weight_hh.init_uniform(rng, default_bound);
                }
                g
            })
            .collect();
        let mut dense = Linear {
            weight: Param::zeros("dense.weight", &[e, h]),
            bias: Some(Param::zeros("dense.bias", &[e])),
            in_dim: h,
            out_dim: e,
        };
        for p in dense.params_mut() {
            p.init_uniform(rng, default_bound);
        }
        Gru4RecModel {
            item_emb,
            dropout: Dropout::new(cfg.dropout),
            layers,
            dense,
            cfg,
        }
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &Gru4RecConfig {
        &self.cfg
    }

    /// The model over input rows `x` (`[n·len, emb]`, used in place of the item embeddings of
    /// the ids): dropout, the GRU layers, and the dense projection of every position, giving
    /// the per-position states `[n·len, emb]`. The state at position `t` depends on rows
    /// `0..=t` of its sequence only. Dropout is active when `rng` is given.
    pub fn forward_inputs(
        &self,
        x: &[f32],
        n: usize,
        len: usize,
        rng: Option<&mut Rng>,
    ) -> (Vec<f32>, Gru4RecCache) {
        let mut cache = self.run(x.to_vec(), n, len, (0..n * len).collect(), rng);
        (std::mem::take(&mut cache.out), cache)
    }

    /// The backward of [`Self::forward_inputs`]: adds the parameter gradients for `d_states`
    /// (`[n·len, emb]`) and returns the gradient of the input rows.
    pub fn backward_inputs(&mut self, cache: &Gru4RecCache, d_states: &[f32]) -> Vec<f32> {
        self.unrun(cache, d_states)
    }

    fn run(
        &self,
        mut x: Vec<f32>,
        n: usize,
        len: usize,
        out_rows: Vec<usize>,
        rng: Option<&mut Rng>,
    ) -> Gru4RecCache {
        assert_eq!(
            x.len(),
            n * len * self.cfg.emb,
            "gru4rec: {} input values for [{n}, {len}, {}]",
            x.len(),
            self.cfg.emb
        );
        let drop = self.dropout.forward(&mut x, rng);
        let mut layers = Vec::with_capacity(self.layers.len());
        for g in &self.layers {
            let (y, c) = g.forward(&x, n, len, None);
            layers.push(c);
            x = y;
        }
        let top = gather_rows(&x, self.cfg.hidden, &out_rows);
        let (out, dense) = self.dense.forward(&top, out_rows.len());
        Gru4RecCache {
            items: Vec::new(),
            out,
            rows: n * len,
            out_rows,
            drop,
            layers,
            dense,
        }
    }

    /// Parameter gradients for `d_h` and the gradient of the (pre-dropout) input rows.
    fn unrun(&mut self, cache: &Gru4RecCache, d_h: &[f32]) -> Vec<f32> {
        let d_top = self.dense.backward(&cache.dense, d_h);
        let mut d = scatter_rows(&d_top, self.cfg.hidden, cache.rows, &cache.out_rows);
        for (g, c) in self.layers.iter_mut().zip(&cache.layers).rev() {
            d = g.backward(c, &d).0;
        }
        self.dropout.backward(&cache.drop, &mut d);
        d
    }
}

crate::module_of_fields!(Gru4RecModel: item_emb, layers, dense);

impl TrainModel for Gru4RecModel {
    type Cache = Gru4RecCache;

    fn arch(&self) -> &'static str {
        "gru4rec"
    }

    fn style(&self) -> TrainStyle {
        TrainStyle::AllPositions
    }

    fn max_len(&self) -> usize {
        self.cfg.max_len
    }

    fn dim(&self) -> usize {
        self.cfg.emb
    }

    fn forward(&self, batch: &Batch, rng: Option<&mut Rng>) -> (Vec<f32>, Gru4RecCache) {
        batch.assert_shape("gru4rec", self.cfg.max_len, false);
        let x = self.item_emb.forward(&batch.items);
        let mut cache = self.run(x, batch.n, batch.len, batch.out_rows(), rng);
        cache.items = batch.items.clone();
        (std::mem::take(&mut cache.out), cache)
    }

    fn backward(&mut self, cache: &Gru4RecCache, d_h: &[f32]) {
        let d = self.unrun(cache, d_h);
        self.item_emb.backward(&cache.items, &d);
    }

    fn item_table_mut(&mut self) -> &mut Param {
        &mut self.item_emb.weight
    }

    fn engine_config(&self) -> Config {
        let c = &self.cfg;
        Config::from_map(Default::default())
            .with("model", "gru4rec")
            .with("n_items", c.n_items)
            .with("MAX_ITEM_LIST_LENGTH", c.max_len)
            .with("embedding_size", c.emb)
            .with("hidden_size", c.hidden)
            .with("num_layers", c.n_layers)
            .with("dropout_prob", c.dropout as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seqrec_engine::{Model, Query};

    /// The trainer's forward (eval mode) and the engine's forward agree on the saved
    /// checkpoint: the user vector of every prefix of two left-aligned windows (one full, one
    /// right-padded), to 1e-5 relative (the same GRU kernel runs on both sides; the rest is
    /// a gather and one linear layer).
    #[test]
    fn trainer_and_engine_forward_agree() {
        let mut rng = Rng::new(4);
        let mut cfg = Gru4RecConfig::new(40, 6);
        (cfg.emb, cfg.hidden, cfg.n_layers) = (8, 6, 2);
        let mut model = Gru4RecModel::new(cfg, &mut rng);
        for p in model.params_mut() {
            p.init_normal(&mut rng, 0.3);
        }
        let engine =
            Model::from_bytes(&model.to_safetensors().unwrap(), &Default::default()).unwrap();
        let seqs: [&[u32]; 2] = [&[3, 9, 1, 39, 12, 7], &[5, 5, 20]];
        let mut batch = Batch {
            n: 2,
            len: 6,
            ..Default::default()
        };
        for (r, s) in seqs.iter().enumerate() {
            batch.items.extend_from_slice(s);
            batch.items.resize((r + 1) * 6, 0);
            batch.lens.push(s.len());
            batch.users.push(0);
            for t in 0..s.len() {
                batch.out_pos.push((r, t));
                batch.targets.push(1);
            }
        }
        let (h, _) = model.forward(&batch, None);
        let mut ws = engine.new_workspace();
        let mut e = vec![0f32; 8];
        for (k, &(r, t)) in batch.out_pos.iter().enumerate() {
            engine
                .user_vector(&Query::new(&seqs[r][..=t]), &mut ws, &mut e)
                .unwrap();
            let got = &h[k * 8..(k + 1) * 8];
            let scale = e.iter().fold(1f32, |m, v| m.max(v.abs()));
            for (a, b) in got.iter().zip(&e) {
                assert!(
                    (a - b).abs() <= 1e-5 * scale,
                    "row {r} position {t}: trainer {a} vs engine {b}"
                );
            }
        }
    }

    #[test]
    fn initialisation_follows_recbole() {
        // Layer 0 xavier-uniform: bound sqrt(6/(fan_in + fan_out)) = sqrt(6/(8 + 18)) ≈ 0.48;
        // layer 1 PyTorch's default ±1/sqrt(6) ≈ 0.41; no biases; dense in ±1/sqrt(6).
        let mut cfg = Gru4RecConfig::new(30, 5);
        (cfg.emb, cfg.hidden, cfg.n_layers) = (8, 6, 2);
        let m = Gru4RecModel::new(cfg, &mut Rng::new(5));
        let names: Vec<&str> = m.params().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "item_embedding.weight",
                "gru_layers.weight_ih_l0",
                "gru_layers.weight_hh_l0",
                "gru_layers.weight_ih_l1",
                "gru_layers.weight_hh_l1",
                "dense.weight",
                "dense.bias"
            ]
        );
        let max = |p: &Param| p.value.iter().fold(0f32, |m, v| m.max(v.abs()));
        let bound0 = (6.0f32 / 26.0).sqrt();
        assert!(max(&m.layers[0].weight_ih) <= bound0);
        assert!(max(&m.layers[1].weight_hh) <= 1.0 / 6f32.sqrt());
        assert!(max(&m.dense.weight) <= 1.0 / 6f32.sqrt());
        assert!(
            m.dense
                .bias
                .as_ref()
                .unwrap()
                .value
                .iter()
                .any(|&v| v != 0.0)
        );
    }
}
