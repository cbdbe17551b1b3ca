//! The two-tower model: an item tower, the transformer user encoder over item vectors, the
//! stage-1 softmax layer, and the two losses (UEP, CPC) with their hand-derived backward.

use super::tower::{ItemTower, TextTower, TowerCache};
use super::{Stage, TransRecConfig};
use crate::error::{Error, Result};
use crate::models::sasrec::{StackCache, TransformerStack};
use crate::models::{Batch, gather_rows, scatter_rows};
use crate::nn::linear::LinearCache;
use crate::nn::loss::{softmax_cross_entropy, softplus};
use crate::nn::optim::clip_grad_norm;
use crate::nn::param::zero_grads;
use crate::nn::score::sample_negatives;
use crate::nn::text::TextEncoder;
use crate::nn::{Linear, Module, Optimizer, Param, Rng};
use seqrec_kernels::cpu::vector;

/// The items a model is built over.
#[derive(Clone, Debug)]
pub enum Items {
    /// A text tower over `encoder` (loaded with its fine-tuning setting); `texts[id]` holds
    /// the token ids of item `id` (`texts[0]`, the padding item, is ignored).
    Text {
        /// The sentence encoder.
        encoder: Box<TextEncoder>,
        /// Token ids per item id.
        texts: Vec<Vec<u32>>,
    },
    /// An ID tower (IDRec) over `TransRecConfig::n_items` ids.
    Id,
}

/// TransRec (or IDRec, with an ID tower) for training.
#[derive(Clone, Debug)]
pub struct TransRecModel {
    cfg: TransRecConfig,
    /// The item tower.
    pub tower: ItemTower,
    /// The user encoder (tensors `user.*`).
    pub user: TransformerStack,
    /// Stage 1's softmax layer `W^U, b^U` (`uep.softmax.*`, `[n_items, d]` and `[n_items]`),
    /// absent once dropped ([`Self::drop_uep`]) or when built without it.
    pub uep: Option<Linear>,
}

/// One CPC example: a context, the items that followed it, sampled negatives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpcExample {
    /// The context `C^u`, oldest first (1..=`context` items).
    pub context: Vec<u32>,
    /// The `future` items `C^e` that followed.
    pub future: Vec<u32>,
    /// Items the user never interacted with.
    pub negatives: Vec<u32>,
}

/// What [`TransRecModel::uep_backward`] needs.
#[derive(Debug)]
pub struct UepCache {
    n: usize,
    len: usize,
    out_rows: Vec<usize>,
    user: StackCache,
    hs: Vec<f32>,
    logits: LinearCache,
    d_logits: Vec<f32>,
}

/// What [`TransRecModel::cpc_backward`] needs.
#[derive(Debug)]
pub struct CpcCache {
    rows: usize,
    /// Row of each context position in the unique-item vectors (`None` at padding).
    ctx_rows: Vec<Option<usize>>,
    /// Row of each scored item (future, then negatives, per example).
    cand_rows: Vec<usize>,
    cands: usize,
    last_rows: Vec<usize>,
    z: Vec<f32>,
    users: Vec<f32>,
    tower: TowerCache,
    user: StackCache,
    d_scores: Vec<f32>,
}

impl CpcExample {
    /// The example of a training window `seq` (oldest first): its last `cfg.future` items
    /// (fewer when the window is short) are the future, the up to `cfg.context` items before
    /// them the context, and `cfg.negatives` negatives are drawn uniformly from `1..n_items`
    /// outside `history` (every item the user interacted with). A window of fewer than 2 items,
    /// or a user who interacted with every item, is an error.
    pub fn from_window(
        seq: &[u32],
        history: &[u32],
        cfg: &TransRecConfig,
        rng: &mut Rng,
    ) -> Result<CpcExample> {
        if seq.len() < 2 {
            return Err(Error::Invalid(format!(
                "a CPC window needs at least 2 items (a context and a future item), got {}",
                seq.len()
            )));
        }
        let l = cfg.future.min(seq.len() - 1);
        let split = seq.len() - l;
        let start = split.saturating_sub(cfg.context);
        let mut seen: Vec<u32> = history.iter().chain(seq).copied().collect();
        seen.sort_unstable();
        seen.dedup();
        let allowed = (1..cfg.n_items as u32)
            .filter(|i| seen.binary_search(i).is_err())
            .count();
        if allowed == 0 && cfg.negatives > 0 {
            return Err(Error::Invalid(format!(
                "no negative to sample: the user interacted with every one of the {} items",
                cfg.n_items - 1
            )));
        }
        Ok(CpcExample {
            context: seq[start..split].to_vec(),
            future: seq[split..].to_vec(),
            negatives: sample_negatives(rng, cfg.n_items, &seen, cfg.negatives),
        })
    }
}

/// Sorted distinct non-padding ids of `ids`.
fn unique_items<'a>(ids: impl IntoIterator<Item = &'a u32>) -> Vec<u32> {
    let mut v: Vec<u32> = ids.into_iter().copied().filter(|&i| i != 0).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// `[n, len]` right-padded ids of `seqs` (`len` the longest), their lengths and key mask.
fn pad(seqs: &[&[u32]]) -> (usize, Vec<u32>, Vec<usize>, Vec<bool>) {
    let len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut ids = vec![0; seqs.len() * len];
    for (r, s) in seqs.iter().enumerate() {
        ids[r * len..r * len + s.len()].copy_from_slice(s);
    }
    let valid = ids.iter().map(|&i| i != 0).collect();
    (len, ids, seqs.iter().map(|s| s.len()).collect(), valid)
}

impl TransRecModel {
    /// A freshly initialised model over `items` (the user encoder and the tower's own layers
    /// from `N(0, 0.02²)`, LayerNorms at identity; the text encoder keeps its weights), with
    /// the stage-1 softmax layer when `cfg.uep` is set. The catalog is `cfg.n_items` ids
    /// (padding included); a text catalog of another size is an error.
    pub fn new(cfg: TransRecConfig, items: Items, rng: &mut Rng) -> Result<TransRecModel> {
        cfg.validate()?;
        let tower = match items {
            Items::Text { encoder, texts } => {
                if texts.len() != cfg.n_items {
                    return Err(Error::ItemCount {
                        what: "the item texts",
                        found: texts.len(),
                        expected: cfg.n_items,
                    });
                }
                let (d, heads, p) = (cfg.dim, cfg.text_heads, cfg.dropout);
                ItemTower::Text(Box::new(TextTower::new(*encoder, texts, d, heads, p, rng)?))
            }
            Items::Id => ItemTower::id(cfg.n_items, cfg.dim, rng),
        };
        let user = TransformerStack::new("user.", &cfg.user_config(), cfg.causal, rng);
        let uep = cfg
            .uep
            .then(|| Linear::new("uep.softmax", cfg.dim, cfg.n_items, true, 0.02, rng));
        Ok(TransRecModel {
            cfg,
            tower,
            user,
            uep,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &TransRecConfig {
        &self.cfg
    }

    /// Drops the stage-1 softmax layer (after stage 1; a transferred model never has one).
    pub fn drop_uep(&mut self) {
        self.uep = None;
        self.cfg.uep = false;
    }

    /// The parameters a stage trains, in a fixed order (for an optimizer built per stage):
    /// stage 1 the user encoder and the softmax layer (the item tower is frozen), stage 2 the
    /// item tower's trained parameters and the user encoder.
    pub fn stage_params_mut(&mut self, stage: Stage) -> Vec<&mut Param> {
        match stage {
            Stage::Uep => {
                let mut v = self.user.params_mut();
                v.extend(self.uep.params_mut());
                v
            }
            Stage::Cpc => {
                let mut v = self.tower.params_mut();
                v.extend(self.user.params_mut());
                v
            }
        }
    }

    /// Caches the text tower's frozen part for every item (see [`TextTower::cache_frozen`]);
    /// a no-op for an ID tower. Returns the items computed.
    pub fn cache_frozen_all(&mut self) -> Result<usize> {
        match self.tower.text_mut() {
            Some(t) => t.cache_frozen_all(),
            None => Ok(0),
        }
    }

    /// Every item's vector in evaluation mode, `[n_items, d]` (row 0 zero).
    pub fn item_table(&self) -> Result<Vec<f32>> {
        self.tower.item_table(self.cfg.dim)
    }

    /// User vectors `[seqs.len(), d]` of histories (oldest first, 1..=`max_len` items each),
    /// in evaluation mode, from the item vectors `table` (`[n_items, d]`, e.g.
    /// [`Self::item_table`]): the hidden state at each history's last item.
    pub fn user_vectors(&self, table: &[f32], seqs: &[&[u32]]) -> Result<Vec<f32>> {
        self.check_seqs(seqs, self.cfg.max_len)?;
        let d = self.cfg.dim;
        let (len, ids, lens, valid) = pad(seqs);
        let x = gather_rows(
            table,
            d,
            &ids.iter().map(|&i| i as usize).collect::<Vec<_>>(),
        );
        let (h, _) = self.user.forward(&x, seqs.len(), len, &valid, None);
        let last: Vec<usize> = lens
            .iter()
            .enumerate()
            .map(|(r, &l)| r * len + l - 1)
            .collect();
        Ok(gather_rows(&h, d, &last))
    }

    fn check_seqs(&self, seqs: &[&[u32]], max: usize) -> Result<()> {
        let n = self.cfg.n_items;
        for (r, s) in seqs.iter().enumerate() {
            if s.is_empty() || s.len() > max {
                return Err(Error::Invalid(format!(
                    "sequence {r} has {} items: expected 1..={max}",
                    s.len()
                )));
            }
            if let Some(&bad) = s.iter().find(|&&i| i == 0 || i as usize >= n) {
                return Err(Error::Invalid(format!(
                    "sequence {r}: item id {bad} is not in the catalog 1..{n}"
                )));
            }
        }
        Ok(())
    }

    /// The UEP batch of source sequences (oldest first, 2..=`max_len` items each): one output
    /// at every position but the last, whose target is the next item.
    pub fn uep_batch(&self, seqs: &[&[u32]]) -> Result<Batch> {
        self.check_seqs(seqs, self.cfg.max_len)?;
        if let Some(r) = seqs.iter().position(|s| s.len() < 2) {
            return Err(Error::Invalid(format!(
                "sequence {r} has 1 item: next-item prediction needs at least 2"
            )));
        }
        let (len, items, lens, _) = pad(seqs);
        let mut out_pos = Vec::new();
        let mut targets = Vec::new();
        for (r, s) in seqs.iter().enumerate() {
            for t in 0..s.len() - 1 {
                out_pos.push((r, t));
                targets.push(s[t + 1]);
            }
        }
        Ok(Batch {
            n: seqs.len(),
            len,
            items,
            lens,
            users: vec![0; seqs.len()],
            out_pos,
            targets,
        })
    }

    /// Stage 1's loss on `batch` ([`Self::uep_batch`]): the mean over outputs of
    /// `−log softmax(S'_t W^Uᵀ + b^U)[x_{t+1}]`, with the fixed item vectors `table`
    /// (`[n_items, d]`, [`Self::item_table`]) as the user encoder's input. Dropout is active
    /// when `rng` is given. Fails when the softmax layer has been dropped.
    pub fn uep_forward(
        &self,
        table: &[f32],
        batch: &Batch,
        rng: Option<&mut Rng>,
    ) -> Result<(f64, UepCache)> {
        let uep = self.uep.as_ref().ok_or_else(|| {
            Error::Invalid("stage 1 needs the softmax layer, which this model no longer has".into())
        })?;
        let (d, n_items) = (self.cfg.dim, self.cfg.n_items);
        if table.len() != n_items * d {
            return Err(Error::Invalid(format!(
                "the item table has {} values, expected n_items·d = {n_items}·{d}",
                table.len()
            )));
        }
        let (n, len) = (batch.n, batch.len);
        let ids: Vec<usize> = batch.items.iter().map(|&i| i as usize).collect();
        let x = gather_rows(table, d, &ids);
        let valid: Vec<bool> = batch.items.iter().map(|&i| i != 0).collect();
        let (h, user) = self.user.forward(&x, n, len, &valid, rng);
        let out_rows = batch.out_rows();
        let hs = gather_rows(&h, d, &out_rows);
        let (logits, lc) = uep.forward(&hs, out_rows.len());
        let lg = softmax_cross_entropy(&logits, out_rows.len(), n_items, &batch.targets, None);
        let cache = UepCache {
            n,
            len,
            out_rows,
            user,
            hs,
            logits: lc,
            d_logits: lg.grad,
        };
        Ok((lg.loss, cache))
    }

    /// Adds the gradients of stage 1's loss to the user encoder and the softmax layer (the
    /// item tower gets none: it is frozen in stage 1).
    ///
    /// # Panics
    /// If the softmax layer was dropped since the forward (a caller bug).
    pub fn uep_backward(&mut self, cache: &UepCache) {
        let d = self.cfg.dim;
        let uep = self
            .uep
            .as_mut()
            .expect("uep_backward after uep_forward: the softmax layer exists");
        debug_assert_eq!(cache.hs.len(), cache.out_rows.len() * d);
        let d_hs = uep.backward(&cache.logits, &cache.d_logits);
        let d_h = scatter_rows(&d_hs, d, cache.n * cache.len, &cache.out_rows);
        self.user.backward(&cache.user, &d_h);
    }

    /// Prepares the text tower for `examples`: caches the frozen part of every item they name
    /// (see [`TextTower::cache_frozen`]); a no-op for an ID tower.
    pub fn cache_frozen_for(&mut self, examples: &[CpcExample]) -> Result<usize> {
        let items = unique_items(
            examples
                .iter()
                .flat_map(|e| e.context.iter().chain(&e.future).chain(&e.negatives)),
        );
        match self.tower.text_mut() {
            Some(t) => t.cache_frozen(&items),
            None => Ok(0),
        }
    }

    /// Stage 2's loss on `examples`: per example, one user vector `U` (the user encoder over
    /// the context's item vectors, at its last item) scores its future items and negatives,
    /// `ℓ = −Σ_pos log σ(U·z) − Σ_neg log(1 − σ(U·z))`; the loss is the mean of `ℓ` over the
    /// examples. Every item vector comes from the tower in this forward (each distinct item
    /// encoded once), so the backward reaches the tower. Dropout is active when `rng` is
    /// given. Examples whose sizes break the configuration, or name unknown items, are errors.
    pub fn cpc_forward(
        &self,
        examples: &[CpcExample],
        mut rng: Option<&mut Rng>,
    ) -> Result<(f64, CpcCache)> {
        let cfg = &self.cfg;
        if examples.is_empty() {
            return Err(Error::NoTrainingData("a CPC batch has no example"));
        }
        let cands = examples[0].future.len() + examples[0].negatives.len();
        for (r, e) in examples.iter().enumerate() {
            if e.future.len() + e.negatives.len() != cands || e.future.is_empty() {
                return Err(Error::Invalid(format!(
                    "CPC example {r} scores {} future items and {} negatives: every example \
                     of a batch needs the same counts, with at least one future item",
                    e.future.len(),
                    e.negatives.len()
                )));
            }
        }
        let contexts: Vec<&[u32]> = examples.iter().map(|e| e.context.as_slice()).collect();
        self.check_seqs(&contexts, cfg.context.min(cfg.max_len))?;
        let items = unique_items(
            examples
                .iter()
                .flat_map(|e| e.context.iter().chain(&e.future).chain(&e.negatives)),
        );
        let row_of = |id: u32| items.binary_search(&id).ok();
        let (z, tower) = self.tower.forward(&items, rng.as_deref_mut())?;
        let d = cfg.dim;
        let n = examples.len();
        let (len, ids, lens, valid) = pad(&contexts);
        let ctx_rows: Vec<Option<usize>> = ids
            .iter()
            .map(|&i| if i == 0 { None } else { row_of(i) })
            .collect();
        let mut x = vec![0.0; n * len * d];
        for (p, r) in ctx_rows.iter().enumerate() {
            if let Some(r) = r {
                x[p * d..(p + 1) * d].copy_from_slice(&z[r * d..(r + 1) * d]);
            }
        }
        let (h, user) = self.user.forward(&x, n, len, &valid, rng);
        let last_rows: Vec<usize> = lens
            .iter()
            .enumerate()
            .map(|(r, &l)| r * len + l - 1)
            .collect();
        let users = gather_rows(&h, d, &last_rows);
        let mut cand_rows = Vec::with_capacity(n * cands);
        let mut d_scores = Vec::with_capacity(n * cands);
        let mut loss = 0.0;
        let per = 1.0 / n as f64;
        for (r, e) in examples.iter().enumerate() {
            let u = &users[r * d..(r + 1) * d];
            for (k, &id) in e.future.iter().chain(&e.negatives).enumerate() {
                let row = row_of(id).expect("every scored item was encoded");
                let s = vector::dot(u, &z[row * d..(row + 1) * d]) as f64;
                // Positives: −log σ(s) = softplus(−s), derivative σ(s) − 1; negatives:
                // −log(1 − σ(s)) = softplus(s), derivative σ(s).
                let sig = 1.0 / (1.0 + (-s).exp());
                let (l, g) = if k < e.future.len() {
                    (softplus(-s), sig - 1.0)
                } else {
                    (softplus(s), sig)
                };
                loss += per * l;
                d_scores.push((per * g) as f32);
                cand_rows.push(row);
            }
        }
        let cache = CpcCache {
            rows: items.len(),
            ctx_rows,
            cand_rows,
            cands,
            last_rows,
            z,
            users,
            tower,
            user,
            d_scores,
        };
        Ok((loss, cache))
    }

    /// Adds the gradients of stage 2's loss to every trained parameter: the user encoder, and
    /// the item tower through both the scored items and the context's item vectors.
    pub fn cpc_backward(&mut self, cache: &CpcCache) {
        let d = self.cfg.dim;
        let n = cache.last_rows.len();
        let mut d_z = vec![0.0f32; cache.rows * d];
        let mut d_users = vec![0.0f32; n * d];
        for (k, (&row, &g)) in cache.cand_rows.iter().zip(&cache.d_scores).enumerate() {
            let r = k / cache.cands;
            let z = &cache.z[row * d..(row + 1) * d];
            vector::axpy(g, z, &mut d_users[r * d..(r + 1) * d]);
            let u = &cache.users[r * d..(r + 1) * d];
            vector::axpy(g, u, &mut d_z[row * d..(row + 1) * d]);
        }
        let rows = cache.ctx_rows.len();
        let d_h = scatter_rows(&d_users, d, rows, &cache.last_rows);
        let d_x = self.user.backward(&cache.user, &d_h);
        for (p, r) in cache.ctx_rows.iter().enumerate() {
            if let Some(r) = r {
                vector::add(&mut d_z[r * d..(r + 1) * d], &d_x[p * d..(p + 1) * d]);
            }
        }
        self.tower.backward(&cache.tower, &d_z);
    }
}

/// One optimisation step of either stage, for a training loop.
impl TransRecModel {
    /// A stage-1 step on `batch` ([`Self::uep_batch`]) with the fixed item vectors `table`:
    /// forward (dropout from `rng`), backward, gradient clipping to `clip` (when given), `opt`
    /// on [`Self::stage_params_mut`]`(Stage::Uep)` at `lr`, gradients cleared. Returns the
    /// loss before the step.
    pub fn uep_step(
        &mut self,
        table: &[f32],
        batch: &Batch,
        opt: &mut impl Optimizer,
        lr: f32,
        clip: Option<f32>,
        rng: &mut Rng,
    ) -> Result<f64> {
        let (loss, cache) = self.uep_forward(table, batch, Some(rng))?;
        self.uep_backward(&cache);
        self.apply(Stage::Uep, opt, lr, clip);
        Ok(loss)
    }

    /// A stage-2 step on `examples`: caches the frozen part of their items first (see
    /// [`Self::cache_frozen_for`]), then as [`Self::uep_step`] with
    /// [`Self::stage_params_mut`]`(Stage::Cpc)`.
    pub fn cpc_step(
        &mut self,
        examples: &[CpcExample],
        opt: &mut impl Optimizer,
        lr: f32,
        clip: Option<f32>,
        rng: &mut Rng,
    ) -> Result<f64> {
        self.cache_frozen_for(examples)?;
        let (loss, cache) = self.cpc_forward(examples, Some(rng))?;
        self.cpc_backward(&cache);
        self.apply(Stage::Cpc, opt, lr, clip);
        Ok(loss)
    }

    fn apply(&mut self, stage: Stage, opt: &mut impl Optimizer, lr: f32, clip: Option<f32>) {
        let mut params = self.stage_params_mut(stage);
        if let Some(c) = clip {
            clip_grad_norm(&mut params, c);
        }
        opt.step(&mut params, lr);
        zero_grads(&mut params);
    }
}

impl Module for TransRecModel {
    /// Every trained parameter: the item tower's, the user encoder's, the softmax layer's.
    fn params(&self) -> Vec<&Param> {
        let mut v = self.tower.params();
        v.extend(self.user.params());
        v.extend(self.uep.params());
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = self.tower.params_mut();
        v.extend(self.user.params_mut());
        v.extend(self.uep.params_mut());
        v
    }
}
