//! TransRec's item towers: the text tower (BERT, one self-attention layer over its token
//! outputs, masked mean pooling, a projection to the model width) with its per-item cache of
//! the frozen part, and the ID tower of the IDRec baseline. Both map item ids to `[k, d]`
//! vectors through the same interface ([`ItemTower`]).

use crate::error::{Error, Result};
use crate::nn::attention::SelfAttentionCache;
use crate::nn::linear::LinearCache;
use crate::nn::text::pool::{pool_backward, pool_forward};
use crate::nn::text::{BertCache, FineTune, Pooling, TextBatch, TextEncoder};
use crate::nn::{Embedding, Linear, Module, Param, Rng, SelfAttention};

/// Items encoded per forward when a whole catalog is encoded ([`ItemTower::item_table`],
/// [`TextTower::cache_frozen`]).
const CHUNK: usize = 64;

/// The text item tower `z = Linear(Avg(SelfAtt(BERT(tokens))))` (see the module docs of
/// [`super`]). Tensor names: `item.text.attention.*` (query, key, value, dense, LayerNorm: a
/// bidirectional post-LN sublayer with the padding mask) and `item.text.proj.*`
/// (`[d, text_dim]` and `[d]`); the encoder keeps its Hugging Face names.
#[derive(Clone, Debug)]
pub struct TextTower {
    /// The BERT sentence encoder (its pooling and normalisation are not used: the tower pools
    /// the attention layer's outputs itself). Its fine-tuning setting says what trains.
    pub encoder: TextEncoder,
    /// The self-attention layer over the encoder's token outputs.
    pub attention: SelfAttention,
    /// The projection from the text width to `d`.
    pub proj: Linear,
    texts: Vec<Vec<u32>>,
    frozen: Vec<Option<Vec<f32>>>,
}

/// What [`TextTower::backward`] needs.
#[derive(Clone, Debug)]
pub struct TextTowerCache {
    batch: TextBatch,
    bert: BertCache,
    att: SelfAttentionCache,
    proj: LinearCache,
}

impl TextTower {
    /// A tower over `encoder` for the items whose token ids (with their special tokens, as the
    /// engine's tokenizer gives them) are `texts[id]`; `texts[0]` is the padding item and is
    /// never encoded (it may be empty). `heads` must divide the encoder's width. An item with
    /// no text, too many tokens or a token outside the vocabulary is an error naming it.
    pub fn new(
        encoder: TextEncoder,
        texts: Vec<Vec<u32>>,
        dim: usize,
        heads: usize,
        dropout: f32,
        rng: &mut Rng,
    ) -> Result<TextTower> {
        let h = encoder.dim();
        if heads == 0 || h % heads != 0 {
            return Err(Error::Invalid(format!(
                "text attention heads {heads} must divide the text encoder's width {h}"
            )));
        }
        check_texts(&encoder, &texts)?;
        let eps = encoder.bert.cfg.layer_norm_eps;
        let mut attention = SelfAttention::new(
            "item.text.attention",
            h,
            heads,
            eps,
            dropout,
            dropout,
            0.02,
            rng,
        );
        attention.causal = false;
        Ok(TextTower {
            attention,
            proj: Linear::new("item.text.proj", h, dim, true, 0.02, rng),
            frozen: vec![None; texts.len()],
            texts,
            encoder,
        })
    }

    /// Catalog size (padding included).
    pub fn n_items(&self) -> usize {
        self.texts.len()
    }

    /// Whether part of the encoder is frozen, so that its output can be cached per item.
    pub fn has_frozen_part(&self) -> bool {
        self.encoder.bert.fine_tune() != FineTune::All
    }

    /// Computes and keeps the frozen part's output (`BertEncoder::frozen_states`: the input of
    /// the lowest trained layer, or the last hidden states when the encoder is frozen) for each of `items` not cached yet; returns how many were
    /// computed. Every later forward over cached items starts from there, so the frozen layers
    /// run once per item for a whole training run. Memory: `tokens(item)·H` floats per cached
    /// item (MiniLM, H = 384: 1.5 KiB per token, about 30 KiB for a title of 20 tokens, 300 MiB
    /// for 10,000 such items); [`Self::frozen_floats`] gives the total. Nothing is cached when
    /// every layer and the embeddings train.
    pub fn cache_frozen(&mut self, items: &[u32]) -> Result<usize> {
        if !self.has_frozen_part() {
            return Ok(0);
        }
        let n = self.n_items();
        if let Some(&bad) = items.iter().find(|&&i| i == 0 || i as usize >= n) {
            return Err(Error::Invalid(format!(
                "item id {bad} is not in the catalog 1..{n}"
            )));
        }
        let mut todo: Vec<u32> = items
            .iter()
            .copied()
            .filter(|&i| self.frozen[i as usize].is_none())
            .collect();
        todo.sort_unstable();
        todo.dedup();
        let h = self.encoder.dim();
        for chunk in todo.chunks(CHUNK) {
            let b = self.batch(chunk)?;
            let Some(x) = self.encoder.bert.frozen_states(&b) else {
                break;
            };
            for (s, &item) in chunk.iter().enumerate() {
                let rows = &x[s * b.len * h..(s * b.len + b.lens[s]) * h];
                self.frozen[item as usize] = Some(rows.to_vec());
            }
        }
        Ok(todo.len())
    }

    /// [`Self::cache_frozen`] for every item of the catalog.
    pub fn cache_frozen_all(&mut self) -> Result<usize> {
        let all: Vec<u32> = (1..self.n_items() as u32).collect();
        self.cache_frozen(&all)
    }

    /// Forgets the cached frozen outputs (after the encoder's weights change).
    pub fn clear_frozen(&mut self) {
        self.frozen.iter_mut().for_each(|c| *c = None);
    }

    /// Floats held by the frozen-part cache.
    pub fn frozen_floats(&self) -> usize {
        self.frozen.iter().flatten().map(Vec::len).sum()
    }

    fn batch(&self, items: &[u32]) -> Result<TextBatch> {
        let seqs = items
            .iter()
            .map(|&i| match self.texts.get(i as usize) {
                Some(t) if i != 0 => Ok(t.as_slice()),
                _ => Err(Error::Invalid(format!(
                    "item {i} has no text: the text tower knows items 1..{}",
                    self.texts.len()
                ))),
            })
            .collect::<Result<Vec<&[u32]>>>()?;
        self.encoder.batch(&seqs)
    }

    /// The frozen part's output for the batch: from the cache when every item is cached,
    /// computed otherwise; `None` when nothing is frozen.
    fn frozen_input(&self, items: &[u32], b: &TextBatch) -> Option<Vec<f32>> {
        if !self.has_frozen_part() {
            return None;
        }
        let h = self.encoder.dim();
        let cached: Option<Vec<&Vec<f32>>> = items
            .iter()
            .map(|&i| self.frozen[i as usize].as_ref())
            .collect();
        let Some(cached) = cached else {
            return self.encoder.bert.frozen_states(b);
        };
        let mut x = vec![0.0; b.rows() * h];
        for (s, rows) in cached.iter().enumerate() {
            x[s * b.len * h..s * b.len * h + rows.len()].copy_from_slice(rows);
        }
        Some(x)
    }

    /// Item vectors `[items.len(), d]` and the cache for [`Self::backward`]; dropout in the
    /// trained layers is active when `rng` is given.
    pub fn forward(
        &self,
        items: &[u32],
        mut rng: Option<&mut Rng>,
    ) -> Result<(Vec<f32>, TextTowerCache)> {
        let b = self.batch(items)?;
        let h = self.encoder.dim();
        let (tokens, bert) = match self.frozen_input(items, &b) {
            Some(x) => self.encoder.bert.forward_trained(x, &b, rng.as_deref_mut()),
            None => self.encoder.bert.forward(&b, rng.as_deref_mut()),
        };
        let (a, att) = self
            .attention
            .forward(&tokens, b.batch(), b.len, Some(&b.valid), rng);
        let pooled = pool_forward(Pooling::Mean, &a, &b, h).0;
        let (z, proj) = self.proj.forward(&pooled, b.batch());
        let cache = TextTowerCache {
            batch: b,
            bert,
            att,
            proj,
        };
        Ok((z, cache))
    }

    /// Adds the gradients of the trained parameters for `d_z` (`[items, d]`).
    pub fn backward(&mut self, cache: &TextTowerCache, d_z: &[f32]) {
        let b = &cache.batch;
        let h = self.encoder.dim();
        let d_pooled = self.proj.backward(&cache.proj, d_z);
        let pool = Default::default();
        let d_a = pool_backward(Pooling::Mean, b, &pool, &d_pooled, h);
        if !self.encoder.bert.trains() {
            // A frozen encoder takes no gradient: the attention's input products are skipped.
            self.attention.backward_params(&cache.att, &d_a);
            return;
        }
        let d_tokens = self.attention.backward(&cache.att, &d_a);
        self.encoder.bert.backward(b, &cache.bert, &d_tokens);
    }

    /// The tower's own parameters (attention and projection), without the encoder's.
    pub fn own_params(&self) -> Vec<&Param> {
        let mut v = self.attention.params();
        v.extend(self.proj.params());
        v
    }

    /// [`Self::own_params`], mutable.
    pub fn own_params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = self.attention.params_mut();
        v.extend(self.proj.params_mut());
        v
    }
}

impl Module for TextTower {
    /// The encoder's trained parameters, then the tower's own.
    fn params(&self) -> Vec<&Param> {
        let mut v = self.encoder.params();
        v.extend(self.own_params());
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = self.encoder.params_mut();
        v.extend(self.attention.params_mut());
        v.extend(self.proj.params_mut());
        v
    }
}

/// Checks that every item but the padding item has a text the encoder accepts.
fn check_texts(encoder: &TextEncoder, texts: &[Vec<u32>]) -> Result<()> {
    if texts.len() < 2 {
        return Err(Error::Invalid(format!(
            "the text tower needs at least one item besides padding, got {} texts",
            texts.len()
        )));
    }
    for (i, t) in texts.iter().enumerate().skip(1) {
        if t.is_empty() {
            return Err(Error::Invalid(format!("item {i} has no text")));
        }
        encoder
            .batch(&[t])
            .map_err(|e| Error::Invalid(format!("the text of item {i}: {e}")))?;
    }
    Ok(())
}

/// The IDRec item tower: a table `item.id_embedding.weight`, `[n_items, d]`.
#[derive(Clone, Debug)]
pub struct IdTower {
    /// The table.
    pub table: Embedding,
}

impl Module for IdTower {
    fn params(&self) -> Vec<&Param> {
        vec![&self.table.weight]
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![&mut self.table.weight]
    }
}

/// Either item tower.
#[derive(Clone, Debug)]
pub enum ItemTower {
    /// Items by their text.
    Text(Box<TextTower>),
    /// Items by id (IDRec).
    Id(IdTower),
}

/// What [`ItemTower::backward`] needs.
#[derive(Clone, Debug)]
pub enum TowerCache {
    /// The text tower's.
    Text(Box<TextTowerCache>),
    /// The ids looked up.
    Id(Vec<u32>),
}

impl ItemTower {
    /// An ID tower over `n_items` ids (padding included) of width `dim`.
    pub fn id(n_items: usize, dim: usize, rng: &mut Rng) -> ItemTower {
        let table = Embedding::new("item.id_embedding.weight", n_items, dim, 0.02, rng);
        ItemTower::Id(IdTower { table })
    }

    /// `text` or `id`.
    pub fn kind(&self) -> &'static str {
        match self {
            ItemTower::Text(_) => "text",
            ItemTower::Id(_) => "id",
        }
    }

    /// Catalog size (padding included).
    pub fn n_items(&self) -> usize {
        match self {
            ItemTower::Text(t) => t.n_items(),
            ItemTower::Id(t) => t.table.rows,
        }
    }

    /// Item vectors `[items.len(), d]` of the ids `items` (none of them the padding id 0) and
    /// the cache for [`Self::backward`]; dropout is active when `rng` is given. An id outside
    /// the catalog is an error.
    pub fn forward(&self, items: &[u32], rng: Option<&mut Rng>) -> Result<(Vec<f32>, TowerCache)> {
        let n = self.n_items();
        if let Some(&bad) = items.iter().find(|&&i| i == 0 || i as usize >= n) {
            return Err(Error::Invalid(format!(
                "item id {bad} is not in the catalog 1..{n}"
            )));
        }
        match self {
            ItemTower::Text(t) => {
                let (z, c) = t.forward(items, rng)?;
                Ok((z, TowerCache::Text(Box::new(c))))
            }
            ItemTower::Id(t) => Ok((t.table.forward(items), TowerCache::Id(items.to_vec()))),
        }
    }

    /// Adds the gradients of the trained parameters for `d_z` (`[items, d]`).
    ///
    /// # Panics
    /// If `cache` comes from the other kind of tower (a caller bug).
    pub fn backward(&mut self, cache: &TowerCache, d_z: &[f32]) {
        match (self, cache) {
            (ItemTower::Text(t), TowerCache::Text(c)) => t.backward(c, d_z),
            (ItemTower::Id(t), TowerCache::Id(ids)) => t.table.backward(ids, d_z),
            _ => panic!("item tower backward: the cache is from the other kind of tower"),
        }
    }

    /// Every item's vector in evaluation mode, `[n_items, d]`, row 0 (padding) zero: the
    /// fixed item table of stage 1 and of serving.
    pub fn item_table(&self, dim: usize) -> Result<Vec<f32>> {
        let n = self.n_items();
        let mut out = vec![0.0; n * dim];
        let ids: Vec<u32> = (1..n as u32).collect();
        for chunk in ids.chunks(CHUNK) {
            let z = self.forward(chunk, None)?.0;
            let at = chunk[0] as usize * dim;
            out[at..at + z.len()].copy_from_slice(&z);
        }
        Ok(out)
    }

    /// The tower's parameters stored in a TransRec checkpoint under their own names (the text
    /// encoder's are stored as a delta, see [`super::checkpoint`]).
    pub fn own_params(&self) -> Vec<&Param> {
        match self {
            ItemTower::Text(t) => t.own_params(),
            ItemTower::Id(t) => t.params(),
        }
    }

    /// [`Self::own_params`], mutable.
    pub fn own_params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            ItemTower::Text(t) => t.own_params_mut(),
            ItemTower::Id(t) => t.params_mut(),
        }
    }

    /// The text tower, if this is one.
    pub fn text(&self) -> Option<&TextTower> {
        match self {
            ItemTower::Text(t) => Some(t),
            ItemTower::Id(_) => None,
        }
    }

    /// The text tower, mutable, if this is one.
    pub fn text_mut(&mut self) -> Option<&mut TextTower> {
        match self {
            ItemTower::Text(t) => Some(t),
            ItemTower::Id(_) => None,
        }
    }
}

impl Module for ItemTower {
    /// The trained parameters (the text encoder's trained layers included).
    fn params(&self) -> Vec<&Param> {
        match self {
            ItemTower::Text(t) => t.params(),
            ItemTower::Id(t) => t.params(),
        }
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            ItemTower::Text(t) => t.params_mut(),
            ItemTower::Id(t) => t.params_mut(),
        }
    }
}
