//! Trainable Caser (RecBole `Caser`): the `[L, E]` image of the right-padded window (padding
//! rows `item_embedding[0]` take part, spec §4), the vertical and horizontal convolutions,
//! dropout (`dropout_prob`) on their concatenation, `z = ReLU(fc1(·))`, and the user vector
//! `ReLU(fc2([z, user_embedding[u]]))`. Every training example is one window and its user
//! (`Batch::users`).
//!
//! Initialisation as RecBole's `_init_weights`: both embedding tables `N(0, (1/E)²)`, `fc1` and
//! `fc2` weights `xavier_normal_` with zero biases; the convolutions keep PyTorch's default
//! (uniform in `±1/sqrt(fan_in)`). [`TrainModel::regularize`] adds RecBole's `reg_weight` term
//! `‖user_embedding‖ + ‖item_embedding‖ + ‖conv_v.weight‖ + ‖fc1.weight‖ + ‖fc2.weight‖`
//! (norms, not squared). RecBole's horizontal-convolution penalty `reg_loss_conv_h` starts
//! from 0 and only ever multiplies it, so it is identically 0 and left out.

use super::{Batch, TrainModel, TrainStyle, gather_rows, norm_penalty, scatter_rows};
use crate::nn::activation::{ActCache, DropoutCache, act_backward, act_forward};
use crate::nn::caser::CaserCache;
use crate::nn::linear::LinearCache;
use crate::nn::{Activation, CaserConvs, Dropout, Embedding, Linear, Param, Rng};
use seqrec_engine::Config;

/// Hyper-parameters (RecBole's names in the saved config).
#[derive(Clone, Debug, PartialEq)]
pub struct CaserConfig {
    /// Catalog size, padding included.
    pub n_items: usize,
    /// Number of users, padding user 0 included (`n_users`).
    pub n_users: usize,
    /// Window length L.
    pub max_len: usize,
    /// Embedding width E (`embedding_size`).
    pub emb: usize,
    /// Vertical filters (`nv`).
    pub nv: usize,
    /// Horizontal filters per height (`nh`).
    pub nh: usize,
    /// Dropout on the convolution features (`dropout_prob`).
    pub dropout: f32,
    /// Weight of the norm penalties (`reg_weight`).
    pub reg_weight: f32,
}

impl CaserConfig {
    /// RecBole's defaults (`Caser.yaml`) over `n_items` and `n_users` with window `max_len`.
    pub fn new(n_items: usize, n_users: usize, max_len: usize) -> Self {
        CaserConfig {
            n_items,
            n_users,
            max_len,
            emb: 64,
            nv: 4,
            nh: 8,
            dropout: 0.4,
            reg_weight: 1e-4,
        }
    }
}

/// Caser for training.
#[derive(Clone, Debug)]
pub struct CaserModel {
    cfg: CaserConfig,
    item_emb: Embedding,
    user_emb: Embedding,
    convs: CaserConvs,
    dropout: Dropout,
    fc1: Linear,
    fc2: Linear,
}

/// What [`CaserModel::forward`] keeps.
#[derive(Debug)]
pub struct CaserModelCache {
    items: Vec<u32>,
    users: Vec<u32>,
    out_rows: Vec<usize>,
    convs: CaserCache,
    drop: DropoutCache,
    fc1: LinearCache,
    relu1: ActCache,
    fc2: LinearCache,
    relu2: ActCache,
}

impl CaserModelCache {
    /// A hash of the pooled windows and every ReLU input's sign: the smooth piece the forward
    /// ran on.
    #[cfg(test)]
    pub(crate) fn piece(&self) -> u64 {
        let signs = |a: &ActCache| a.input().iter().map(|&v| v > 0.0).collect::<Vec<_>>();
        crate::nn::gradcheck::signature((
            self.convs.argmax(),
            signs(&self.relu1),
            signs(&self.relu2),
        ))
    }
}

/// A zero `[rows, dim]` table named `name`, for the caller to initialise.
fn table(name: &str, rows: usize, dim: usize) -> Embedding {
    Embedding {
        weight: Param::zeros(name, &[rows, dim]),
        rows,
        dim,
    }
}

/// A linear layer with `xavier_normal_` weights and a zero bias.
fn xavier_linear(prefix: &str, in_dim: usize, out_dim: usize, rng: &mut Rng) -> Linear {
    let mut weight = Param::zeros(format!("{prefix}.weight"), &[out_dim, in_dim]);
    weight.init_xavier_normal(rng);
    Linear {
        weight,
        bias: Some(Param::zeros(format!("{prefix}.bias"), &[out_dim])),
        in_dim,
        out_dim,
    }
}

impl CaserModel {
    /// A freshly initialised model.
    ///
    /// # Panics
    /// If `max_len`, `nv` or `nh` is 0 (configurations are validated before models are built).
    pub fn new(cfg: CaserConfig, rng: &mut Rng) -> Self {
        let e = cfg.emb;
        let std = 1.0 / e.max(1) as f32;
        let mut user_emb = table("user_embedding.weight", cfg.n_users, e);
        let mut item_emb = table("item_embedding.weight", cfg.n_items, e);
        user_emb.weight.init_normal(rng, std);
        item_emb.weight.init_normal(rng, std);
        let convs = CaserConvs::new(cfg.max_len, e, cfg.nv, cfg.nh, rng);
        CaserModel {
            fc1: xavier_linear("fc1", convs.out_dim(), e, rng),
            fc2: xavier_linear("fc2", 2 * e, e, rng),
            item_emb,
            user_emb,
            convs,
            dropout: Dropout::new(cfg.dropout),
            cfg,
        }
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &CaserConfig {
        &self.cfg
    }
}

crate::module_of_fields!(CaserModel: item_emb, user_emb, convs, fc1, fc2);

impl TrainModel for CaserModel {
    type Cache = CaserModelCache;

    fn arch(&self) -> &'static str {
        "caser"
    }

    fn style(&self) -> TrainStyle {
        TrainStyle::LastPosition
    }

    fn max_len(&self) -> usize {
        self.cfg.max_len
    }

    fn dim(&self) -> usize {
        self.cfg.emb
    }

    /// The user vector of every output's row (a function of the whole window and the row's
    /// user; the output's position is not used).
    fn forward(&self, batch: &Batch, rng: Option<&mut Rng>) -> (Vec<f32>, CaserModelCache) {
        let (n, e) = (batch.n, self.cfg.emb);
        batch.assert_shape("caser", self.cfg.max_len, true);
        assert_eq!(
            batch.users.len(),
            n,
            "caser: batch has {} users for {n} rows",
            batch.users.len()
        );
        let x = self.item_emb.forward(&batch.items);
        let (mut feats, convs) = self.convs.forward(&x, n);
        let drop = self.dropout.forward(&mut feats, rng);
        let (mut z, fc1) = self.fc1.forward(&feats, n);
        let relu1 = act_forward(Activation::Relu, &mut z);
        let u = self.user_emb.forward(&batch.users);
        let mut cat = Vec::with_capacity(n * 2 * e);
        for r in 0..n {
            cat.extend_from_slice(&z[r * e..(r + 1) * e]);
            cat.extend_from_slice(&u[r * e..(r + 1) * e]);
        }
        let (mut y, fc2) = self.fc2.forward(&cat, n);
        let relu2 = act_forward(Activation::Relu, &mut y);
        let out_rows: Vec<usize> = batch.out_pos.iter().map(|&(r, _)| r).collect();
        let out = gather_rows(&y, e, &out_rows);
        let cache = CaserModelCache {
            items: batch.items.clone(),
            users: batch.users.clone(),
            out_rows,
            convs,
            drop,
            fc1,
            relu1,
            fc2,
            relu2,
        };
        (out, cache)
    }

    fn backward(&mut self, cache: &CaserModelCache, d_h: &[f32]) {
        let (n, e) = (cache.users.len(), self.cfg.emb);
        let mut d = scatter_rows(d_h, e, n, &cache.out_rows);
        act_backward(&cache.relu2, &mut d);
        let d_cat = self.fc2.backward(&cache.fc2, &d);
        let (mut dz, mut du) = (Vec::with_capacity(n * e), Vec::with_capacity(n * e));
        for row in d_cat.chunks_exact(2 * e) {
            dz.extend_from_slice(&row[..e]);
            du.extend_from_slice(&row[e..]);
        }
        self.user_emb.backward(&cache.users, &du);
        act_backward(&cache.relu1, &mut dz);
        let mut d_feats = self.fc1.backward(&cache.fc1, &dz);
        self.dropout.backward(&cache.drop, &mut d_feats);
        let dx = self.convs.backward(&cache.convs, &d_feats);
        self.item_emb.backward(&cache.items, &dx);
    }

    fn item_table_mut(&mut self) -> &mut Param {
        &mut self.item_emb.weight
    }

    fn engine_config(&self) -> Config {
        let c = &self.cfg;
        Config::from_map(Default::default())
            .with("model", "caser")
            .with("n_items", c.n_items)
            .with("n_users", c.n_users)
            .with("MAX_ITEM_LIST_LENGTH", c.max_len)
            .with("embedding_size", c.emb)
            .with("nv", c.nv)
            .with("nh", c.nh)
            .with("dropout_prob", c.dropout as f64)
            .with("reg_weight", c.reg_weight as f64)
    }

    fn regularize(&mut self) -> f64 {
        let w = self.cfg.reg_weight;
        norm_penalty(&mut self.user_emb.weight, w)
            + norm_penalty(&mut self.item_emb.weight, w)
            + norm_penalty(&mut self.convs.conv_v, w)
            + norm_penalty(&mut self.fc1.weight, w)
            + norm_penalty(&mut self.fc2.weight, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Module;
    use seqrec_engine::{Model, Query};

    /// The trainer's forward and the engine's forward agree on the saved checkpoint for
    /// histories shorter than the window (padding rows `item_embedding[0]` take part in every
    /// convolution and max-pool) and as long as it, with different users: the user vector to
    /// 1e-5 relative (same convolution kernels, a max and two small linear layers).
    #[test]
    fn trainer_and_engine_forward_agree() {
        let mut rng = Rng::new(8);
        let l = 5;
        let mut cfg = CaserConfig::new(40, 6, l);
        (cfg.emb, cfg.nv, cfg.nh) = (8, 2, 3);
        let mut model = CaserModel::new(cfg, &mut rng);
        for p in model.params_mut() {
            p.init_normal(&mut rng, 0.3);
        }
        let engine =
            Model::from_bytes(&model.to_safetensors().unwrap(), &Default::default()).unwrap();
        let cases: [(&[u32], u32); 4] = [
            (&[3, 9, 1, 39, 12], 1),
            (&[5], 5),
            (&[5, 5, 20], 2),
            (&[11, 4, 30, 6], 0),
        ];
        let mut batch = Batch {
            n: cases.len(),
            len: l,
            ..Default::default()
        };
        for (r, (s, u)) in cases.iter().enumerate() {
            batch.items.extend_from_slice(s);
            batch.items.resize((r + 1) * l, 0);
            batch.lens.push(s.len());
            batch.users.push(*u);
            batch.out_pos.push((r, s.len() - 1));
            batch.targets.push(1);
        }
        let (h, _) = model.forward(&batch, None);
        assert!(
            h.iter().any(|&v| v > 0.0),
            "every output is at the ReLU floor"
        );
        let mut ws = engine.new_workspace();
        let mut e = vec![0f32; 8];
        for (r, &(s, u)) in cases.iter().enumerate() {
            engine
                .user_vector(&Query::new(s).user(u), &mut ws, &mut e)
                .unwrap();
            let scale = e.iter().fold(1f32, |m, v| m.max(v.abs()));
            for (a, b) in h[r * 8..(r + 1) * 8].iter().zip(&e) {
                assert!(
                    (a - b).abs() <= 1e-5 * scale,
                    "history {s:?} user {u}: trainer {a} vs engine {b}"
                );
            }
        }
    }

    #[test]
    fn initialisation_follows_recbole() {
        let mut cfg = CaserConfig::new(500, 300, 4);
        (cfg.emb, cfg.nv, cfg.nh) = (16, 2, 3);
        let m = CaserModel::new(cfg, &mut Rng::new(9));
        // N(0, (1/16)²) over 8000 values: the sample std within 3%.
        let w = &m.item_emb.weight.value;
        let std = (w.iter().map(|&v| (v * v) as f64).sum::<f64>() / w.len() as f64).sqrt();
        assert!((std * 16.0 - 1.0).abs() < 0.03, "item table std {std}");
        assert!(m.fc1.bias.as_ref().unwrap().value.iter().all(|&v| v == 0.0));
        assert_eq!(m.fc1.weight.shape, [16, 2 * 16 + 3 * 4]);
        let names: Vec<&str> = m.params().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            &names[..4],
            [
                "item_embedding.weight",
                "user_embedding.weight",
                "conv_v.weight",
                "conv_v.bias"
            ]
        );
        assert_eq!(names.len(), 2 + 2 + 2 * 4 + 4);
    }
}
