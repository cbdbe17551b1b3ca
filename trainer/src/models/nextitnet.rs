//! Trainable NextItNet (RecBole `NextItNet`, residual block (b)): item embeddings of the
//! right-padded window of exactly `L` rows (the padding rows are `item_embedding[0]` and take
//! part, spec §3), residual blocks of dilated causal convolutions with the `dilations` list
//! repeated `block_num` times, and `final_layer` read at row `L − 1` whatever the history's
//! length.
//!
//! Initialisation as RecBole's `_init_weights`: the item table uniform in
//! `±sqrt(1/n_items)`, `final_layer` weight `xavier_normal_` and bias 0.1; the convolutions keep
//! PyTorch's default (uniform in `±1/sqrt(channels·kernel)`) and the LayerNorms γ = 1, β = 0.
//! [`TrainModel::regularize`] adds RecBole's `reg_weight` terms: `‖item_embedding‖ +
//! ‖final_layer.weight‖` and the norm of every residual-block tensor named `*.weight` (norms,
//! not squared).

use super::{Batch, TrainModel, TrainStyle, gather_rows, norm_penalty, scatter_rows};
use crate::nn::conv::NextItNetBlockCache;
use crate::nn::linear::LinearCache;
use crate::nn::{Embedding, Linear, Module, NextItNetBlock, Param, Rng};
use seqrec_engine::Config;

/// Hyper-parameters (RecBole's names in the saved config).
#[derive(Clone, Debug, PartialEq)]
pub struct NextItNetConfig {
    /// Catalog size, padding included.
    pub n_items: usize,
    /// Window length L.
    pub max_len: usize,
    /// Embedding width = residual channels (`embedding_size`).
    pub emb: usize,
    /// Convolution width (`kernel_size`).
    pub kernel: usize,
    /// Repetitions of the dilation list (`block_num`).
    pub block_num: usize,
    /// Dilations of one repetition (`dilations`); block `b` uses `d` and `2d`.
    pub dilations: Vec<usize>,
    /// Weight of the norm penalties (`reg_weight`).
    pub reg_weight: f32,
}

impl NextItNetConfig {
    /// RecBole's defaults (`NextItNet.yaml`) over `n_items` with window `max_len`.
    pub fn new(n_items: usize, max_len: usize) -> Self {
        NextItNetConfig {
            n_items,
            max_len,
            emb: 64,
            kernel: 3,
            block_num: 5,
            dilations: vec![1, 4],
            reg_weight: 1e-5,
        }
    }

    /// The dilation of every block: the list repeated `block_num` times.
    pub fn block_dilations(&self) -> Vec<usize> {
        let n = self.dilations.len() * self.block_num;
        self.dilations.iter().copied().cycle().take(n).collect()
    }
}

/// NextItNet for training.
#[derive(Clone, Debug)]
pub struct NextItNetModel {
    cfg: NextItNetConfig,
    item_emb: Embedding,
    blocks: Vec<NextItNetBlock>,
    final_layer: Linear,
}

/// What [`NextItNetModel::forward`] keeps.
#[derive(Debug)]
pub struct NextItNetCache {
    items: Vec<u32>,
    rows: usize,
    out_rows: Vec<usize>,
    blocks: Vec<NextItNetBlockCache>,
    final_layer: LinearCache,
}

impl NextItNetCache {
    /// A hash of every ReLU input's sign: the smooth piece the forward ran on.
    #[cfg(test)]
    pub(crate) fn piece(&self) -> u64 {
        let signs: Vec<Vec<bool>> = self
            .blocks
            .iter()
            .flat_map(|c| c.relu_inputs())
            .map(|x| x.iter().map(|&v| v > 0.0).collect())
            .collect();
        crate::nn::gradcheck::signature(signs)
    }
}

impl NextItNetModel {
    /// A freshly initialised model.
    ///
    /// # Panics
    /// If `kernel_size` or a dilation is 0 (configurations are validated before models are
    /// built).
    pub fn new(cfg: NextItNetConfig, rng: &mut Rng) -> Self {
        let e = cfg.emb;
        let mut item_emb = Embedding {
            weight: Param::zeros("item_embedding.weight", &[cfg.n_items, e]),
            rows: cfg.n_items,
            dim: e,
        };
        item_emb
            .weight
            .init_uniform(rng, (1.0 / cfg.n_items.max(1) as f64).sqrt() as f32);
        let blocks = cfg
            .block_dilations()
            .into_iter()
            .enumerate()
            .map(|(b, d)| {
                NextItNetBlock::new(&format!("residual_blocks.{b}"), e, cfg.kernel, d, rng)
            })
            .collect();
        let mut final_layer = Linear {
            weight: Param::zeros("final_layer.weight", &[e, e]),
            bias: Some(Param::full("final_layer.bias", &[e], 0.1)),
            in_dim: e,
            out_dim: e,
        };
        final_layer.weight.init_xavier_normal(rng);
        NextItNetModel {
            item_emb,
            blocks,
            final_layer,
            cfg,
        }
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &NextItNetConfig {
        &self.cfg
    }
}

crate::module_of_fields!(NextItNetModel: item_emb, blocks, final_layer);

impl TrainModel for NextItNetModel {
    type Cache = NextItNetCache;

    fn arch(&self) -> &'static str {
        "nextitnet"
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

    /// The user vector of every output's row, read at the window's last row `L − 1` (the
    /// output's position is not used: NextItNet ignores the history's length).
    fn forward(&self, batch: &Batch, _rng: Option<&mut Rng>) -> (Vec<f32>, NextItNetCache) {
        let (n, l) = (batch.n, self.cfg.max_len);
        batch.assert_shape("nextitnet", l, true);
        let mut x = self.item_emb.forward(&batch.items);
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for blk in &self.blocks {
            let (y, c) = blk.forward(&x, n, l);
            blocks.push(c);
            x = y;
        }
        let out_rows: Vec<usize> = batch.out_pos.iter().map(|&(r, _)| r * l + l - 1).collect();
        let last = gather_rows(&x, self.cfg.emb, &out_rows);
        let (out, final_layer) = self.final_layer.forward(&last, out_rows.len());
        let cache = NextItNetCache {
            items: batch.items.clone(),
            rows: n * l,
            out_rows,
            blocks,
            final_layer,
        };
        (out, cache)
    }

    fn backward(&mut self, cache: &NextItNetCache, d_h: &[f32]) {
        let d_last = self.final_layer.backward(&cache.final_layer, d_h);
        let mut d = scatter_rows(&d_last, self.cfg.emb, cache.rows, &cache.out_rows);
        for (blk, c) in self.blocks.iter_mut().zip(&cache.blocks).rev() {
            d = blk.backward(c, &d);
        }
        self.item_emb.backward(&cache.items, &d);
    }

    fn item_table_mut(&mut self) -> &mut Param {
        &mut self.item_emb.weight
    }

    fn engine_config(&self) -> Config {
        let c = &self.cfg;
        Config::from_map(Default::default())
            .with("model", "nextitnet")
            .with("n_items", c.n_items)
            .with("MAX_ITEM_LIST_LENGTH", c.max_len)
            .with("embedding_size", c.emb)
            .with("kernel_size", c.kernel)
            .with("block_num", c.block_num)
            .with("dilations", c.dilations.clone())
            .with("reg_weight", c.reg_weight as f64)
    }

    fn regularize(&mut self) -> f64 {
        let w = self.cfg.reg_weight;
        let mut loss = norm_penalty(&mut self.item_emb.weight, w);
        loss += norm_penalty(&mut self.final_layer.weight, w);
        for p in self.blocks.params_mut() {
            if p.name.ends_with("weight") {
                loss += norm_penalty(p, w);
            }
        }
        loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seqrec_engine::{Model, Query};

    /// The trainer's forward and the engine's forward agree on the saved checkpoint for
    /// histories shorter than the window (padding rows `item_embedding[0]` take part) and as
    /// long as it: the user vector to 1e-5 relative (same convolution and LayerNorm kernels).
    #[test]
    fn trainer_and_engine_forward_agree() {
        let mut rng = Rng::new(6);
        let l = 7;
        let mut cfg = NextItNetConfig::new(40, l);
        (cfg.emb, cfg.block_num, cfg.dilations) = (8, 2, vec![1, 2]);
        let mut model = NextItNetModel::new(cfg, &mut rng);
        for p in model.params_mut() {
            p.init_normal(&mut rng, 0.3);
        }
        let engine =
            Model::from_bytes(&model.to_safetensors().unwrap(), &Default::default()).unwrap();
        let seqs: [&[u32]; 4] = [&[3, 9, 1, 39, 12, 7, 2], &[5], &[5, 5, 20], &[11, 4, 30, 6]];
        let mut batch = Batch {
            n: seqs.len(),
            len: l,
            ..Default::default()
        };
        for (r, s) in seqs.iter().enumerate() {
            batch.items.extend_from_slice(s);
            batch.items.resize((r + 1) * l, 0);
            batch.lens.push(s.len());
            batch.users.push(0);
            batch.out_pos.push((r, s.len() - 1));
            batch.targets.push(1);
        }
        let (h, _) = model.forward(&batch, None);
        let mut ws = engine.new_workspace();
        let mut e = vec![0f32; 8];
        for (r, s) in seqs.iter().enumerate() {
            engine.user_vector(&Query::new(s), &mut ws, &mut e).unwrap();
            let scale = e.iter().fold(1f32, |m, v| m.max(v.abs()));
            for (a, b) in h[r * 8..(r + 1) * 8].iter().zip(&e) {
                assert!(
                    (a - b).abs() <= 1e-5 * scale,
                    "history {s:?}: trainer {a} vs engine {b}"
                );
            }
        }
    }

    #[test]
    fn blocks_repeat_the_dilation_list_and_start_as_recbole() {
        let mut cfg = NextItNetConfig::new(100, 5);
        (cfg.emb, cfg.block_num, cfg.dilations) = (4, 3, vec![1, 4]);
        assert_eq!(cfg.block_dilations(), [1, 4, 1, 4, 1, 4]);
        let m = NextItNetModel::new(cfg, &mut Rng::new(7));
        assert_eq!(m.blocks.len(), 6);
        assert_eq!(
            (m.blocks[1].conv1.dilation, m.blocks[1].conv2.dilation),
            (4, 8)
        );
        assert_eq!(m.params().len(), 1 + 6 * 8 + 2);
        // Item table uniform in ±sqrt(1/100) = ±0.1; final bias 0.1.
        assert!(m.item_emb.weight.value.iter().all(|v| v.abs() <= 0.1));
        assert!(
            m.final_layer
                .bias
                .as_ref()
                .unwrap()
                .value
                .iter()
                .all(|&v| v == 0.1)
        );
    }

    #[test]
    #[should_panic(expected = "nextitnet: window of 4 rows, the model needs exactly 5")]
    fn rejects_a_window_shorter_than_max_len() {
        let mut cfg = NextItNetConfig::new(10, 5);
        (cfg.emb, cfg.block_num) = (4, 1);
        let m = NextItNetModel::new(cfg, &mut Rng::new(1));
        let batch = Batch {
            n: 1,
            len: 4,
            items: vec![1, 2, 3, 4],
            lens: vec![4],
            users: vec![0],
            out_pos: vec![(0, 3)],
            targets: vec![5],
        };
        m.forward(&batch, None);
    }
}
