//! Caser (RecBole `Caser`): vertical and horizontal convolutions over the `[L, E]` image of
//! the right-padded window, a fully connected layer, concatenation with the user embedding and
//! a final ReLU layer. See `spec/recbole-models.md` §4. Every request recomputes the window.

use crate::backend::Backend;
use crate::blocks::{CaserConvs, Embedding, Linear};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::weights::TensorLoader;
use alloc::format;
use alloc::vec::Vec;
use seqrec_kernels::cpu::activation::Activation;

/// RecBole's Caser.
#[derive(Debug)]
pub struct Caser<B: Backend> {
    pub(crate) item_emb: Embedding<B>,
    user_emb: Embedding<B>,
    convs: CaserConvs<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
    emb: usize,
    max_len: usize,
    n_users: usize,
}

impl<B: Backend> Caser<B> {
    /// Loads the RecBole tensors. Defaults (RecBole's `Caser.yaml`): embedding_size 64, nv 4,
    /// nh 8. `n_users` is required.
    pub fn load(
        be: &B,
        cfg: &Config,
        ld: &mut TensorLoader<'_>,
        n_items: usize,
        max_len: usize,
    ) -> Result<Self> {
        let emb = cfg.usize_or("embedding_size", 64)?;
        let nv = cfg.usize_or("nv", 4)?;
        let nh = cfg.usize_or("nh", 8)?;
        let n_users = cfg.usize("n_users")?;
        if nv == 0 || nh == 0 || emb == 0 {
            return Err(Error::Config(format!(
                "nv ({nv}), nh ({nh}) and embedding_size ({emb}) must be positive"
            )));
        }
        let convs = CaserConvs::load(be, ld, max_len, emb, nv, nh)?;
        Ok(Caser {
            item_emb: Embedding::load(be, ld, "item_embedding.weight", n_items, emb)?,
            user_emb: Embedding::load(be, ld, "user_embedding.weight", n_users, emb)?,
            fc1: Linear::load(be, ld, "fc1", convs.out_dim(), emb, true)?,
            fc2: Linear::load(be, ld, "fc2", 2 * emb, emb, true)?,
            convs,
            emb,
            max_len,
            n_users,
        })
    }

    /// Width of the user vector.
    pub fn dim(&self) -> usize {
        self.emb
    }

    /// Number of users (row 0 is RecBole's padding user).
    pub fn n_users(&self) -> usize {
        self.n_users
    }

    /// Encodes `window` (validated, at most `L` ids) for `user` (validated) into row 0 of `out`.
    pub fn encode(
        &self,
        be: &B,
        window: &[u32],
        user: u32,
        ids: &mut Vec<u32>,
        bufs: [&mut B::Buf; 4],
        out: &mut B::Buf,
    ) -> Result<()> {
        let [x, feats, cat, scratch] = bufs;
        ids.clear();
        ids.extend_from_slice(window);
        ids.resize(self.max_len, 0);
        be.embedding(&self.item_emb, ids, None, x)?;
        be.caser_convs(&self.convs, x, scratch, feats)?;
        // cat = [ReLU(fc1(features)), user_emb[user]]
        be.linear(&self.fc1, feats, 1, Activation::Relu, x)?;
        be.copy_rows(x, 0, cat, 0, 1, self.emb)?;
        be.embedding(&self.user_emb, &[user], None, x)?;
        be.copy_rows(x, 0, cat, 1, 1, self.emb)?;
        be.linear(&self.fc2, cat, 1, Activation::Relu, out)
    }
}
