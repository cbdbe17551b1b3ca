//! Caser (RecBole `Caser`): vertical and horizontal convolutions over the `[L, E]` image of
//! the right-padded window, a fully connected layer, concatenation with the user embedding and
//! a final ReLU layer. See `spec/recbole-models.md` §4. Every request recomputes the window.

use super::{Architecture, LoadContext, Request, Scratch};
use crate::backend::Backend;
use crate::blocks::{Activation, CaserConvs, Embedding, Linear};
use crate::error::{Error, Result};
use alloc::format;

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
    fn load_from(be: &B, cx: &mut LoadContext<'_, '_>) -> Result<Self> {
        let (cfg, n_items, max_len) = (cx.cfg, cx.n_items, cx.max_len);
        let ld = &mut *cx.ld;
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
}

impl<B: Backend> Architecture<B> for Caser<B> {
    /// Caser recomputes every request.
    type State = ();
    const NAMES: &'static [&'static str] = &["caser"];

    fn load(be: &B, _name: &'static str, cx: &mut LoadContext<'_, '_>) -> Result<Self> {
        Self::load_from(be, cx)
    }

    fn name(&self) -> &'static str {
        "caser"
    }

    fn dim(&self) -> usize {
        self.emb
    }

    fn item_embedding(&self) -> &Embedding<B> {
        &self.item_emb
    }

    /// Row 0 is RecBole's padding user.
    fn n_users(&self) -> Option<usize> {
        Some(self.n_users)
    }

    fn new_state(&self, _be: &B) -> Result<()> {
        Ok(())
    }

    /// Encodes the window (at most `L` ids, right-padded to `L`) for the request's user.
    fn encode(
        &self,
        be: &B,
        req: &Request<'_>,
        _state: &mut (),
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<()> {
        let Scratch {
            x,
            y: feats,
            aux: cat,
            tmp,
            ids,
            ..
        } = s;
        ids.clear();
        ids.extend_from_slice(req.window);
        ids.resize(self.max_len, 0);
        be.embedding(&self.item_emb, ids, None, x)?;
        be.caser_convs(&self.convs, x, &mut tmp.work, feats)?;
        // cat = [ReLU(fc1(features)), user_emb[user]]
        be.linear(&self.fc1, feats, 1, Activation::Relu, x)?;
        be.copy_rows(x, 0, cat, 0, 1, self.emb)?;
        be.embedding(&self.user_emb, &[req.user], None, x)?;
        be.copy_rows(x, 0, cat, 1, 1, self.emb)?;
        be.linear(&self.fc2, cat, 1, Activation::Relu, out)
    }
}
