//! Ranking with PDiT (thesis §9.4, "PDiT w/o GIM"): a sampled latent scores every catalog item
//! by the cosine between it and the item's text latent, the catalog scan and top-k running on
//! the backend. The table is what `seqrec embed-items` writes (`item_text_embedding`) or a PDiT
//! data file's `item_latents`: one row per item id, rows of items without text zero (they score
//! 0).

use super::{Guidance, NoiseSource, Pdit, PditWorkspace, Schedule};
use crate::backend::Backend;
use crate::blocks::ItemTable;
use crate::error::{Error, Result};
use crate::model::Scored;
use crate::weights::{DType, Tensor};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

/// A catalog of item text latents, each row scaled to unit length (so that a dot product with a
/// unit query is the cosine).
#[derive(Debug)]
pub struct Catalog<B: Backend = crate::Cpu> {
    pub(crate) items: ItemTable<B>,
}

impl<B: Backend> Catalog<B> {
    /// The catalog of `table` (`[n_items, d]`, row `i` item id `i`; row 0 is never recommended).
    pub fn new(be: &B, table: &Tensor) -> Result<Catalog<B>> {
        let [n, d] = table.shape()[..] else {
            return Err(Error::InvalidArgument(format!(
                "an item-text table is [n_items, d], found shape {:?}",
                table.shape()
            )));
        };
        let mut rows = table.as_slice().to_vec();
        for row in rows.chunks_exact_mut(d.max(1)) {
            let norm = libm::sqrt(row.iter().map(|&v| f64::from(v) * f64::from(v)).sum());
            if norm > 0.0 {
                for v in row {
                    *v = (f64::from(*v) / norm) as f32;
                }
            }
        }
        let t = Tensor::from_vec(vec![n, d], rows)?;
        Ok(Catalog {
            items: ItemTable::new(be, &t, DType::F32)?,
        })
    }

    /// Items, padding id 0 included.
    pub fn n_items(&self) -> usize {
        self.items.rows
    }

    /// Latent width.
    pub fn dim(&self) -> usize {
        self.items.dim
    }
}

impl<B: Backend> Pdit<B> {
    /// Samples `z_0` for `samples` requests along `chain` (see [`Pdit::sample`]) and returns,
    /// per request, the `k` catalog items whose text latents are closest to it by cosine,
    /// best first, skipping the ids `exclude[s]` of request `s` (padding id 0 is never
    /// recommended). `z0` receives the samples at the network's scale.
    pub fn recommend(
        &self,
        chain: &Schedule,
        catalog: &Catalog<B>,
        samples: usize,
        p: Option<&[f32]>,
        history: Option<(&[f32], &[usize])>,
        noise: NoiseSource<'_>,
        k: usize,
        exclude: &[&[u32]],
        ws: &mut PditWorkspace<B>,
        z0: &mut [f32],
    ) -> Result<Vec<Vec<Scored>>> {
        self.recommend_guided(
            chain, catalog, samples, p, history, noise, None, k, exclude, ws, z0,
        )
    }

    /// [`Self::recommend`] sampling with attribute guidance ([`Pdit::sample_guided`]).
    #[allow(clippy::too_many_arguments)]
    pub fn recommend_guided(
        &self,
        chain: &Schedule,
        catalog: &Catalog<B>,
        samples: usize,
        p: Option<&[f32]>,
        history: Option<(&[f32], &[usize])>,
        noise: NoiseSource<'_>,
        guidance: Option<&Guidance<'_>>,
        k: usize,
        exclude: &[&[u32]],
        ws: &mut PditWorkspace<B>,
        z0: &mut [f32],
    ) -> Result<Vec<Vec<Scored>>> {
        if exclude.len() != samples && !exclude.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} exclusion lists for {samples} requests",
                exclude.len()
            )));
        }
        self.check_catalog(catalog)?;
        self.sample_guided(chain, samples, p, history, noise, guidance, ws, z0)?;
        let k = k.min(catalog.n_items());
        let (mut items, mut scores) = (vec![0u32; k], vec![0f32; k]);
        let mut lists = Vec::with_capacity(samples);
        for s in 0..samples {
            let mut ex: Vec<u32> = vec![0];
            if let Some(e) = exclude.get(s) {
                ex.extend_from_slice(e);
            }
            ex.sort_unstable();
            ex.dedup();
            let n = self.rank_row(catalog, s, k, &ex, ws, z0, &mut items, &mut scores)?;
            lists.push(crate::model::scored(&items[..n], &scores[..n]));
        }
        Ok(lists)
    }

    /// [`Self::recommend`] for one request into the caller's buffers, allocating nothing after
    /// warm-up: `exclude` holds sorted ids that include 0; returns how many items were written
    /// to `items` / `scores` (each at least `k` long).
    pub fn recommend_into(
        &self,
        chain: &Schedule,
        catalog: &Catalog<B>,
        p: Option<&[f32]>,
        history: Option<(&[f32], usize)>,
        noise: NoiseSource<'_>,
        k: usize,
        exclude: &[u32],
        ws: &mut PditWorkspace<B>,
        z0: &mut [f32],
        items: &mut [u32],
        scores: &mut [f32],
    ) -> Result<usize> {
        self.check_catalog(catalog)?;
        let lens = history.map(|(_, n)| [n]);
        let history = history.zip(lens.as_ref()).map(|((h, _), n)| (h, &n[..]));
        self.sample(chain, 1, p, history, noise, ws, z0)?;
        self.rank_row(catalog, 0, k, exclude, ws, z0, items, scores)
    }

    fn check_catalog(&self, catalog: &Catalog<B>) -> Result<()> {
        let d = self.config().latent_dim;
        if catalog.dim() != d {
            return Err(Error::InvalidArgument(format!(
                "the item-text table has rows of {}, the model's latents are {d} wide",
                catalog.dim()
            )));
        }
        Ok(())
    }

    /// The top-k of sample `s` of the last [`Pdit::sample`] (its latent still in `ws`), the
    /// dot products turned into cosines with the latent's norm from `z0`.
    fn rank_row(
        &self,
        catalog: &Catalog<B>,
        s: usize,
        k: usize,
        exclude: &[u32],
        ws: &mut PditWorkspace<B>,
        z0: &[f32],
        items: &mut [u32],
        scores: &mut [f32],
    ) -> Result<usize> {
        let d = self.config().latent_dim;
        let n = self.be.topk(
            &catalog.items,
            &ws.z,
            s,
            k,
            exclude,
            &mut ws.scan,
            items,
            scores,
        )?;
        let z = &z0[s * d..(s + 1) * d];
        let norm = libm::sqrt(z.iter().map(|&v| f64::from(v) * f64::from(v)).sum());
        let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        for v in &mut scores[..n] {
            *v = (f64::from(*v) * inv) as f32;
        }
        Ok(n)
    }
}
