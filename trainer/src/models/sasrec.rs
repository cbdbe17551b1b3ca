//! Trainable SASRec with RecBole's tensor names and initialisation (normal(0, 0.02) weights,
//! zero biases, LayerNorm γ = 1, β = 0).

use super::{Batch, TrainModel, TrainStyle, gather_rows, scatter_rows};
use crate::nn::activation::DropoutCache;
use crate::nn::attention::{FeedForwardCache, SelfAttentionCache};
use crate::nn::norm::LayerNormCache;
use crate::nn::{
    Activation, Dropout, Embedding, FeedForward, LayerNorm, Module, Param, Rng, SelfAttention,
};
use seqrec_engine::Config;

/// Hyper-parameters (RecBole's names in the saved config).
#[derive(Clone, Debug, PartialEq)]
pub struct SasRecConfig {
    /// Catalog size, padding included.
    pub n_items: usize,
    /// Window length.
    pub max_len: usize,
    /// Width H.
    pub hidden: usize,
    /// Transformer layers.
    pub n_layers: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Feed-forward width.
    pub inner: usize,
    /// Dropout after embeddings and in each sublayer (`hidden_dropout_prob`).
    pub hidden_dropout: f32,
    /// Dropout on attention probabilities (`attn_dropout_prob`).
    pub attn_dropout: f32,
    /// Activation of the feed-forward sublayer.
    pub act: Activation,
    /// LayerNorm epsilon.
    pub ln_eps: f32,
}

impl SasRecConfig {
    /// RecBole's defaults over `n_items` with window `max_len`.
    pub fn new(n_items: usize, max_len: usize) -> Self {
        SasRecConfig {
            n_items,
            max_len,
            hidden: 64,
            n_layers: 2,
            n_heads: 2,
            inner: 256,
            hidden_dropout: 0.5,
            attn_dropout: 0.5,
            act: Activation::Gelu,
            ln_eps: 1e-12,
        }
    }
}

/// The encoder part of SASRec over given input rows: position embeddings, LayerNorm, dropout
/// and `n_layers` post-LN transformer layers ([`SelfAttention`] and [`FeedForward`]), with the
/// tensor names `{prefix}position_embedding.weight`, `{prefix}LayerNorm.*` and
/// `{prefix}trm_encoder.layer.{l}.*` (SASRec's with an empty prefix). The TransRec user encoder
/// is one over item vectors.
#[derive(Clone, Debug)]
pub struct TransformerStack {
    pos_emb: Embedding,
    ln: LayerNorm,
    dropout: Dropout,
    layers: Vec<(SelfAttention, FeedForward)>,
    hidden: usize,
    max_len: usize,
}

/// What [`TransformerStack::forward`] keeps.
#[derive(Debug)]
pub struct StackCache {
    n: usize,
    len: usize,
    ln: LayerNormCache,
    drop: DropoutCache,
    layers: Vec<(SelfAttentionCache, FeedForwardCache)>,
}

impl TransformerStack {
    /// A freshly initialised stack with `cfg`'s sizes (`n_items` is not used), causal (each
    /// position sees itself and the positions before it) or bidirectional.
    pub fn new(prefix: &str, cfg: &SasRecConfig, causal: bool, rng: &mut Rng) -> Self {
        Self::new_around(prefix, cfg, causal, rng, |_| ()).0
    }

    /// [`Self::new`], calling `between(rng)` after the layers are drawn and before the
    /// position table: SASRec draws its item table there, so that a seed gives the same
    /// initial SASRec as before the stack was its own type.
    pub fn new_around<T>(
        prefix: &str,
        cfg: &SasRecConfig,
        causal: bool,
        rng: &mut Rng,
        between: impl FnOnce(&mut Rng) -> T,
    ) -> (Self, T) {
        let std = 0.02;
        let h = cfg.hidden;
        let layers = (0..cfg.n_layers)
            .map(|l| {
                let p = format!("{prefix}trm_encoder.layer.{l}");
                let mut att = SelfAttention::new(
                    &format!("{p}.multi_head_attention"),
                    h,
                    cfg.n_heads,
                    cfg.ln_eps,
                    cfg.attn_dropout,
                    cfg.hidden_dropout,
                    std,
                    rng,
                );
                att.causal = causal;
                let ff = FeedForward::new(
                    &format!("{p}.feed_forward"),
                    h,
                    cfg.inner,
                    cfg.act,
                    cfg.ln_eps,
                    cfg.hidden_dropout,
                    std,
                    rng,
                );
                (att, ff)
            })
            .collect();
        let drawn = between(rng);
        let stack = TransformerStack {
            pos_emb: Embedding::new(
                &format!("{prefix}position_embedding.weight"),
                cfg.max_len,
                h,
                std,
                rng,
            ),
            ln: LayerNorm::new(&format!("{prefix}LayerNorm"), h, cfg.ln_eps),
            dropout: Dropout::new(cfg.hidden_dropout),
            layers,
            hidden: h,
            max_len: cfg.max_len,
        };
        (stack, drawn)
    }

    /// Width H.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Most positions per sequence (the position table's rows).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The stack over input rows `x` (`[n·len, H]`; position embeddings are added here) with
    /// the key mask `valid` (`[n·len]`, false at padding), giving every position's output
    /// `[n·len, H]`. Dropout is active when `rng` is given.
    ///
    /// # Panics
    /// If `len` exceeds the position table or `x` is not `[n·len, H]` (caller bugs).
    pub fn forward(
        &self,
        x: &[f32],
        n: usize,
        len: usize,
        valid: &[bool],
        rng: Option<&mut Rng>,
    ) -> (Vec<f32>, StackCache) {
        self.forward_rows(x, n, len, valid, rng, None)
    }

    /// [`Self::forward`]'s output at one row per sequence only (`[n, H]`): `query_rows[b]`,
    /// the last valid position of sequence `b` (every later key is padding). The last layer
    /// computes those rows alone ([`SelfAttention::forward_queries`]); [`Self::backward`] takes
    /// the gradient of these `n` rows.
    ///
    /// # Panics
    /// As [`Self::forward`], if the stack has no layers, or as
    /// [`SelfAttention::forward_queries`].
    pub fn forward_last(
        &self,
        x: &[f32],
        n: usize,
        len: usize,
        valid: &[bool],
        rng: Option<&mut Rng>,
        query_rows: &[usize],
    ) -> (Vec<f32>, StackCache) {
        assert!(!self.layers.is_empty(), "transformer: no layers");
        self.forward_rows(x, n, len, valid, rng, Some(query_rows))
    }

    fn forward_rows(
        &self,
        x: &[f32],
        n: usize,
        len: usize,
        valid: &[bool],
        mut rng: Option<&mut Rng>,
        query_rows: Option<&[usize]>,
    ) -> (Vec<f32>, StackCache) {
        assert!(
            len <= self.max_len,
            "transformer: {len} positions, the model has {}",
            self.max_len
        );
        let rows = n * len;
        assert_eq!(
            x.len(),
            rows * self.hidden,
            "transformer: {} input values for [{n}, {len}, {}]",
            x.len(),
            self.hidden
        );
        let mut x = x.to_vec();
        let pos = self.pos_emb.forward(&positions(n, len));
        for (a, b) in x.iter_mut().zip(&pos) {
            *a += b;
        }
        let (mut x, ln) = self.ln.forward(&x, rows);
        let drop = self.dropout.forward(&mut x, rng.as_deref_mut());
        let mut caches = Vec::with_capacity(self.layers.len());
        let last = self.layers.len().saturating_sub(1);
        for (l, (att, ff)) in self.layers.iter().enumerate() {
            let ((y, ac), out_rows) = match query_rows {
                Some(q) if l == last => (
                    att.forward_queries(&x, n, len, valid, rng.as_deref_mut(), q),
                    n,
                ),
                _ => (
                    att.forward(&x, n, len, Some(valid), rng.as_deref_mut()),
                    rows,
                ),
            };
            let (z, fc) = ff.forward(&y, out_rows, rng.as_deref_mut());
            caches.push((ac, fc));
            x = z;
        }
        let cache = StackCache {
            n,
            len,
            ln,
            drop,
            layers: caches,
        };
        (x, cache)
    }

    /// Parameter gradients for `d` (every position's output, or [`Self::forward_last`]'s rows)
    /// and the gradient of the input rows (the position embeddings' share is added to their
    /// table).
    pub fn backward(&mut self, cache: &StackCache, d_out: &[f32]) -> Vec<f32> {
        let mut d = d_out.to_vec();
        for ((att, ff), (ac, fc)) in self.layers.iter_mut().zip(&cache.layers).rev() {
            let dy = ff.backward(fc, &d);
            d = att.backward(ac, &dy);
        }
        self.dropout.backward(&cache.drop, &mut d);
        let d = self.ln.backward(&cache.ln, &d);
        self.pos_emb.backward(&positions(cache.n, cache.len), &d);
        d
    }
}

impl Module for TransformerStack {
    fn params(&self) -> Vec<&Param> {
        let mut v = vec![&self.pos_emb.weight];
        v.extend(self.ln.params());
        for (a, f) in &self.layers {
            v.extend(a.params());
            v.extend(f.params());
        }
        v
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = vec![&mut self.pos_emb.weight];
        v.extend(self.ln.params_mut());
        for (a, f) in &mut self.layers {
            v.extend(a.params_mut());
            v.extend(f.params_mut());
        }
        v
    }
}

/// SASRec for training.
#[derive(Clone, Debug)]
pub struct SasRecModel {
    cfg: SasRecConfig,
    item_emb: Embedding,
    stack: TransformerStack,
}

/// What [`SasRecModel::forward`] keeps.
#[derive(Debug)]
pub struct SasRecCache {
    batch: Batch,
    stack: StackCache,
    /// The forward read each sequence's last position only ([`TransformerStack::forward_last`]).
    last_only: bool,
}

impl SasRecModel {
    /// A freshly initialised model.
    pub fn new(cfg: SasRecConfig, rng: &mut Rng) -> Self {
        let (stack, item_emb) = TransformerStack::new_around("", &cfg, true, rng, |rng| {
            Embedding::new("item_embedding.weight", cfg.n_items, cfg.hidden, 0.02, rng)
        });
        SasRecModel {
            item_emb,
            stack,
            cfg,
        }
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &SasRecConfig {
        &self.cfg
    }

    /// The item embedding `item_embedding.weight`.
    pub fn item_table(&self) -> &Param {
        &self.item_emb.weight
    }

    /// The encoder over input rows `x` (`[n·len, H]`, used in place of the item embeddings of
    /// the ids; position embeddings are added here) with the key mask `valid` (`[n·len]`,
    /// false at padding), giving every position's output `[n·len, H]`. Position `t` depends on
    /// rows `0..=t` of its sequence only. Dropout is active when `rng` is given.
    pub fn forward_inputs(
        &self,
        x: &[f32],
        n: usize,
        len: usize,
        valid: &[bool],
        rng: Option<&mut Rng>,
    ) -> (Vec<f32>, SasRecCache) {
        let (y, stack) = self.stack.forward(x, n, len, valid, rng);
        let batch = Batch::default();
        let last_only = false;
        (
            y,
            SasRecCache {
                batch,
                stack,
                last_only,
            },
        )
    }

    /// The backward of [`Self::forward_inputs`]: adds the parameter gradients for `d_out`
    /// (`[n·len, H]`) and returns the gradient of the input rows.
    pub fn backward_inputs(&mut self, cache: &SasRecCache, d_out: &[f32]) -> Vec<f32> {
        self.stack.backward(&cache.stack, d_out)
    }
}

impl Module for SasRecModel {
    fn params(&self) -> Vec<&Param> {
        let mut v = vec![&self.item_emb.weight];
        v.extend(self.stack.params());
        v
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = vec![&mut self.item_emb.weight];
        v.extend(self.stack.params_mut());
        v
    }
}

/// Whether `batch` reads exactly one output per sequence, in order, at its last valid position
/// (every later item is padding): what the RL heads read, and what
/// [`TransformerStack::forward_last`] computes alone.
fn reads_last_positions(batch: &Batch, valid: &[bool]) -> bool {
    batch.out_pos.len() == batch.n
        && batch.out_pos.iter().enumerate().all(|(b, &(r, t))| {
            r == b
                && t < batch.len
                && !valid[b * batch.len + t + 1..(b + 1) * batch.len].contains(&true)
        })
}

fn positions(n: usize, len: usize) -> Vec<u32> {
    (0..n).flat_map(|_| 0..len as u32).collect()
}

impl TrainModel for SasRecModel {
    type Cache = SasRecCache;

    fn arch(&self) -> &'static str {
        "sasrec"
    }

    fn style(&self) -> TrainStyle {
        TrainStyle::AllPositions
    }

    fn max_len(&self) -> usize {
        self.cfg.max_len
    }

    fn dim(&self) -> usize {
        self.cfg.hidden
    }

    fn forward(&self, batch: &Batch, rng: Option<&mut Rng>) -> (Vec<f32>, SasRecCache) {
        batch.assert_shape("sasrec", self.cfg.max_len, false);
        let x = self.item_emb.forward(&batch.items);
        let valid: Vec<bool> = batch.items.iter().map(|&i| i != 0).collect();
        let out_rows = batch.out_rows();
        let last_only = self.cfg.n_layers > 0 && reads_last_positions(batch, &valid);
        let (out, stack) = if last_only {
            self.stack
                .forward_last(&x, batch.n, batch.len, &valid, rng, &out_rows)
        } else {
            let (y, stack) = self.stack.forward(&x, batch.n, batch.len, &valid, rng);
            (gather_rows(&y, self.cfg.hidden, &out_rows), stack)
        };
        let batch = batch.clone();
        (
            out,
            SasRecCache {
                batch,
                stack,
                last_only,
            },
        )
    }

    fn backward(&mut self, cache: &SasRecCache, d_h: &[f32]) {
        let batch = &cache.batch;
        let h = self.cfg.hidden;
        let scattered;
        let d = if cache.last_only {
            d_h
        } else {
            scattered = scatter_rows(d_h, h, batch.n * batch.len, &batch.out_rows());
            &scattered
        };
        let d = self.stack.backward(&cache.stack, d);
        self.item_emb.backward(&batch.items, &d);
    }

    fn item_table_mut(&mut self) -> &mut Param {
        &mut self.item_emb.weight
    }

    fn engine_config(&self) -> Config {
        let c = &self.cfg;
        Config::from_map(Default::default())
            .with("model", "sasrec")
            .with("n_items", c.n_items)
            .with("MAX_ITEM_LIST_LENGTH", c.max_len)
            .with("hidden_size", c.hidden)
            .with("n_layers", c.n_layers)
            .with("n_heads", c.n_heads)
            .with("inner_size", c.inner)
            .with("hidden_dropout_prob", c.hidden_dropout as f64)
            .with("attn_dropout_prob", c.attn_dropout as f64)
            .with("hidden_act", c.act.name())
            .with("layer_norm_eps", c.ln_eps as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seqrec_engine::{Model, Query};

    /// The trainer's forward (eval mode) and the engine's forward agree on the saved
    /// checkpoint: the user vector of every history prefix, to 1e-5 relative.
    #[test]
    fn trainer_and_engine_forward_agree() {
        let mut rng = Rng::new(3);
        let mut cfg = SasRecConfig::new(50, 8);
        cfg.hidden = 16;
        cfg.inner = 24;
        let mut model = SasRecModel::new(cfg, &mut rng);
        for p in model.params_mut() {
            p.init_normal(&mut rng, 0.3);
        }
        let engine =
            Model::from_bytes(&model.to_safetensors().unwrap(), &Default::default()).unwrap();
        let seq: Vec<u32> = vec![3, 9, 1, 44, 12, 7, 7];
        let batch = Batch {
            n: 1,
            len: seq.len(),
            items: seq.clone(),
            lens: vec![seq.len()],
            users: vec![0],
            out_pos: (0..seq.len()).map(|t| (0, t)).collect(),
            targets: vec![1; seq.len()],
        };
        let (h, _) = model.forward(&batch, None);
        let mut ws = engine.new_workspace();
        let mut e = vec![0f32; 16];
        for t in 0..seq.len() {
            engine
                .user_vector(&Query::new(&seq[..=t]), &mut ws, &mut e)
                .unwrap();
            let got = &h[t * 16..(t + 1) * 16];
            let scale = e.iter().fold(1f32, |m, v| m.max(v.abs()));
            for (a, b) in got.iter().zip(&e) {
                assert!(
                    (a - b).abs() <= 1e-5 * scale,
                    "position {t}: trainer {a} vs engine {b}"
                );
            }
        }
    }

    /// Reading one position per sequence through the shortened last layer gives the full
    /// stack's outputs at those rows and the same gradients (parameters and input rows), with
    /// padding, two layers and two heads, causal and bidirectional.
    #[test]
    fn last_positions_alone_equal_the_full_stack() {
        for causal in [true, false] {
            let mut rng = Rng::new(8);
            let mut cfg = SasRecConfig::new(30, 6);
            (cfg.hidden, cfg.inner, cfg.n_heads) = (8, 12, 2);
            let mut full = TransformerStack::new("", &cfg, causal, &mut rng);
            for p in full.params_mut() {
                p.init_normal(&mut rng, 0.3);
            }
            let mut last = full.clone();
            let (n, len, h) = (3, 6, 8);
            let lens = [6, 2, 4];
            let valid: Vec<bool> = (0..n * len).map(|i| i % len < lens[i / len]).collect();
            let x = rng.normal_vec(n * len * h, 1.0);
            let rows: Vec<usize> = (0..n).map(|b| b * len + lens[b] - 1).collect();
            let (y, cf) = full.forward(&x, n, len, &valid, None);
            let (yl, cl) = last.forward_last(&x, n, len, &valid, None, &rows);
            let want = gather_rows(&y, h, &rows);
            let d = rng.normal_vec(n * h, 1.0);
            let dx = full.backward(&cf, &scatter_rows(&d, h, n * len, &rows));
            let dxl = last.backward(&cl, &d);
            let close = |a: &[f32], b: &[f32], what: &str| {
                for (i, (p, q)) in a.iter().zip(b).enumerate() {
                    assert!(
                        (p - q).abs() <= 1e-5 * (1.0 + q.abs()),
                        "causal {causal}: {what}[{i}] {p} vs {q}"
                    );
                }
            };
            close(&yl, &want, "output");
            close(&dxl, &dx, "input gradient");
            for (p, q) in last.params().iter().zip(full.params()) {
                assert_eq!(p.grad.len(), p.value.len(), "{}: no gradient", p.name);
                close(&p.grad, &q.grad, &p.name);
            }
        }
    }
}
