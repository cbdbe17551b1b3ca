//! Hierarchical session models (`spec/thesis-models.md` §5): `hdt` (Hierarchical Decision
//! Transformer), `interdt` and `hier`, on a GRU4Rec or SASRec backbone. Trained by
//! `seqrec train --model hdt|interdt|hier`; tensor names and configuration keys are in
//! `docs/formats.md`.
//!
//! A session state holds the user's inter-session state: `s_c` (the backbone state at the
//! end of the previous session, 0 at first), the running sum of the normalised similarity
//! rows of every item of the finished sessions (for `R_c = dis_max − dis(C_1..C_{c−1})`), and
//! for `hier` the user GRU's state. Events of the current session are encoded from scratch
//! (its last `max_len` items): the goal `g_c` (InterDT over `(R_c·E_R, s_c)`, or the user GRU),
//! the backbone over `x̃_t = W_g[emb(x_t) || g_c] + b_g`, and for `hdt` IntraDT over the
//! tokens `(R̃_c, R^n_t·E_n, s_t, emb(a_t))` of the last `max_len − 1` steps, whose output at
//! the last state token gives `Â`.
//!
//! Ending a session ([`Architecture::end_session`]) finishes the current session as training saw it: its items join the
//! finished sessions, `R_c` is recomputed *with* them, and the backbone state at the session's
//! last position under that goal becomes `s_{c+1}`; the next session starts empty. After a
//! boundary `hdt` and `interdt` score the next session's first item with the goal head
//! (`W_u g + b_u`); `hier` needs an event first.
//!
//! InterDT's attention runs over its two tokens `(R_c·E_R, s_c)`, unmasked (or causal with
//! `inter_mask = "causal"`); its outputs are the goal return `R̃` and the goal `g`.
//!
//! Scoring is one catalog scan over the table `[W_a | W_s | b_a | b_s | W_u | b_u]` (`hdt`),
//! `[W_s | b_s | W_u | b_u]` (`interdt`) or `[W_s | b_s]` (`hier`) with the vector
//! `[h_a, alpha·s, 1, alpha, 0, 0]`, `[s, 1, 0, 0]` or `[s, 1]`, and after a boundary
//! `[0, .., 0, g, 1]`.

use super::gru4rec::{Gru4Rec, Gru4RecState};
use super::sasrec::{SasRec, SasRecState};
use super::{Architecture, LoadContext, Request, Scratch, restore_buf, save_buf};
use crate::backend::{At, Backend, KvCache, Scale, SelfMask, Src};
use crate::blocks::{
    Activation, AttentionBlock, Embedding, FeedForward, GruLayer, LayerNorm, Linear,
};
use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::objectives::similarity::SimAccumulator;
use crate::objectives::{ObjectiveSpec, Objectives};
use crate::weights::{Tensor, TensorLoader, WeightFile};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

/// Which model of the family.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum HdtVariant {
    /// InterDT, backbone and IntraDT.
    Hdt,
    /// InterDT and backbone.
    InterDt,
    /// User GRU and backbone.
    Hier,
}

const ALPHA: ObjectiveSpec = ObjectiveSpec {
    name: "alpha",
    default: 1.0,
    min: 0.0,
    max: 100.0,
    doc: "weight of the backbone's logits Ŷ in Â + alpha·Ŷ",
};
const LAMBDA: ObjectiveSpec = ObjectiveSpec {
    name: "lambda_div",
    default: 1.0,
    min: 0.0,
    max: 10.0,
    doc: "scale of the inter-session unexpectedness return R_c of the current session",
};
const TARGET: ObjectiveSpec = ObjectiveSpec {
    name: "target_unexp",
    default: f32::NAN,
    min: 0.0,
    max: 4.0,
    doc: "explicit inter-session return R_c (NaN: dis_max − dis(finished sessions))",
};
const NOVELTY: ObjectiveSpec = ObjectiveSpec {
    name: "novelty_eps",
    default: 0.0,
    min: 0.0,
    max: 2.0,
    doc: "the predicted item is assumed long-tail when the long-tail share of the session's \
          earlier actions is at least this (0: always, as the thesis; above 1: never)",
};
const HDT_SPECS: &[ObjectiveSpec] = &[ALPHA, LAMBDA, TARGET, NOVELTY];
const INTERDT_SPECS: &[ObjectiveSpec] = &[LAMBDA, TARGET];

#[derive(Debug)]
enum Backbone<B: Backend> {
    Gru(Gru4Rec<B>),
    Sas(SasRec<B>),
}

#[derive(Debug)]
enum BackboneState<B: Backend> {
    Gru(Gru4RecState<B>),
    Sas(SasRecState<B>),
}

#[derive(Debug)]
struct Inter<B: Backend> {
    /// `E_R`, `[d]`.
    e_r: B::Param,
    att: AttentionBlock<B>,
    causal: bool,
}

#[derive(Debug)]
struct Intra<B: Backend> {
    /// `E_n`, `[d]`.
    e_n: B::Param,
    /// Step embeddings `[max_len − 1, d]`.
    pos: B::Param,
    ln: LayerNorm<B>,
    layers: Vec<(AttentionBlock<B>, FeedForward<B>)>,
}

/// A hierarchical session model. See the module docs.
#[derive(Debug)]
pub struct Hdt<B: Backend> {
    variant: HdtVariant,
    backbone: Backbone<B>,
    input_proj: Linear<B>,
    inter: Option<Inter<B>>,
    user_gru: Option<GruLayer<B>>,
    intra: Option<Intra<B>>,
    sim: Option<Tensor>,
    long_tail: Option<Tensor>,
    dim: usize,
    max_len: usize,
    dis_max: f64,
    /// The catalog heads are the item table with their own biases.
    tied: bool,
}

/// Per-user state: the inter-session state, on the backend, and the current session's
/// activations.
#[derive(Debug)]
pub struct HdtState<B: Backend> {
    /// `s_c`, `[d]`.
    s: B::Buf,
    /// The user GRU's state `g_{c−1}` (`hier`), `[d]`.
    u: B::Buf,
    /// The finished sessions' items (for `dis`).
    finished: SimAccumulator,
    sessions: usize,
    backbone: BackboneState<B>,
    inter_cache: KvCache<B>,
    intra_caches: Vec<KvCache<B>>,
    /// The goal `g_c` and the goal return `R̃_c` (InterDT), `[d]` each.
    g: B::Buf,
    rt: B::Buf,
    /// The backbone states of the session's positions, `[n, d]`.
    states: B::Buf,
    /// IntraDT's output at the last state token, `[d]`.
    ha: B::Buf,
    /// Long-tail flags of the session's actions (host: they come from the ids).
    flags: Vec<f32>,
}

impl<B: Backend> HdtState<B> {
    /// Finished sessions.
    pub fn sessions(&self) -> usize {
        self.sessions
    }
}

/// Loads `name` as a host tensor (tables read on the host: heads, flags, similarity).
fn host(ld: &mut TensorLoader<'_>, name: &str, shape: &[usize]) -> Result<Tensor> {
    ld.get(name, shape)
}

impl<B: Backend> Hdt<B> {
    /// Loads variant `variant` (`hdt`, `interdt`, `hier`).
    fn load_from(be: &B, variant: HdtVariant, cx: &mut LoadContext<'_, '_>) -> Result<Self> {
        let (cfg, n_items, max_len) = (cx.cfg, cx.n_items, cx.max_len);
        let ld = &mut *cx.ld;
        if max_len < 2 {
            return Err(Error::Config(format!(
                "MAX_ITEM_LIST_LENGTH {max_len}: hierarchical models need at least 2"
            )));
        }
        let backbone_name = cfg.str_or("backbone", "gru4rec")?;
        let (backbone, dim) = match backbone_name.as_str() {
            "gru4rec" => {
                let m = Gru4Rec::load_from(be, cfg, ld, n_items)?;
                let d = Architecture::dim(&m);
                (Backbone::Gru(m), d)
            }
            "sasrec" => {
                let m = SasRec::load_from(be, cfg, ld, n_items, max_len)?;
                let d = Architecture::dim(&m);
                (Backbone::Sas(m), d)
            }
            other => {
                return Err(Error::Config(format!(
                    "backbone `{other}` is not one of gru4rec, sasrec"
                )));
            }
        };
        let eps = cfg.f32_or("layer_norm_eps", 1e-12)?;
        let tied = match cfg.str_or("heads", "linear")?.as_str() {
            "linear" => false,
            "tied" => true,
            other => {
                return Err(Error::Config(format!(
                    "heads `{other}` is not one of linear, tied"
                )));
            }
        };
        let input_proj = Linear::load(be, ld, "input_proj", 2 * dim, dim, true)?;
        // The heads are read again, concatenated, by `scoring_table`; loading them here checks
        // their shapes and lists them.
        let head = |ld: &mut TensorLoader<'_>, name: &str| -> Result<()> {
            if !tied {
                host(ld, &format!("{name}.weight"), &[n_items, dim])?;
            }
            host(ld, &format!("{name}.bias"), &[n_items]).map(|_| ())
        };
        head(ld, "seq_head")?;
        let has_inter = variant != HdtVariant::Hier;
        let (inter, sim) = if has_inter {
            head(ld, "goal_head")?;
            let heads = cfg.usize_or("inter_heads", 1)?;
            let causal = match cfg.str_or("inter_mask", "none")?.as_str() {
                "none" => false,
                "causal" => true,
                other => {
                    return Err(Error::Config(format!(
                        "inter_mask `{other}` is not one of none, causal"
                    )));
                }
            };
            let inter = Inter {
                e_r: be.upload(&host(ld, "inter.return_embedding", &[dim])?)?,
                att: AttentionBlock::load(be, ld, "inter.attention", dim, heads, eps)?,
                causal,
            };
            let sim_dim = cfg.usize("similarity_dim")?;
            if sim_dim == 0 {
                return Err(Error::Config("similarity_dim must be positive".into()));
            }
            (
                Some(inter),
                Some(host(ld, "hdt.similarity", &[n_items, sim_dim])?),
            )
        } else {
            (None, None)
        };
        let user_gru = match variant {
            HdtVariant::Hier => Some(GruLayer::load(be, ld, "user_gru", 0, dim, dim, true)?),
            _ => None,
        };
        let (intra, long_tail) = if variant == HdtVariant::Hdt {
            let n_layers = cfg.usize_or("intra_layers", 3)?;
            let heads = cfg.usize_or("intra_heads", 1)?;
            let inner = cfg.usize_or("intra_inner", 4 * dim)?;
            let e_n = be.upload(&host(ld, "intra.novelty_embedding", &[dim])?)?;
            let pos = host(ld, "intra.position_embedding.weight", &[max_len - 1, dim])?;
            let pos = be.upload(&pos)?;
            let ln = LayerNorm::load(be, ld, "intra.LayerNorm", dim, eps)?;
            let mut layers = Vec::new();
            for l in 0..n_layers {
                let p = format!("intra.layer.{l}");
                layers.push((
                    AttentionBlock::load(
                        be,
                        ld,
                        &format!("{p}.multi_head_attention"),
                        dim,
                        heads,
                        eps,
                    )?,
                    FeedForward::load(
                        be,
                        ld,
                        &format!("{p}.feed_forward"),
                        dim,
                        inner,
                        Activation::Gelu,
                        eps,
                    )?,
                ));
            }
            if layers.is_empty() {
                return Err(Error::Config("intra_layers must be at least 1".into()));
            }
            host(ld, "intra.return_head.weight", &[1, dim])?;
            host(ld, "intra.return_head.bias", &[1])?;
            head(ld, "intra.action_head")?;
            let intra = Intra {
                e_n,
                pos,
                ln,
                layers,
            };
            (Some(intra), Some(host(ld, "hdt.long_tail", &[n_items])?))
        } else {
            (None, None)
        };
        Ok(Hdt {
            variant,
            backbone,
            input_proj,
            inter,
            user_gru,
            intra,
            sim,
            long_tail,
            dim,
            max_len,
            dis_max: cfg.f32_or("dis_max", 2.0)? as f64,
            tied,
        })
    }

    /// Width of the scoring vector.
    fn width(&self) -> usize {
        let d = self.dim;
        match (self.variant, self.tied) {
            (HdtVariant::Hdt, false) => 3 * d + 3,
            (HdtVariant::InterDt, false) => 2 * d + 2,
            (HdtVariant::Hdt, true) => d + 3,
            (HdtVariant::InterDt, true) => d + 2,
            (HdtVariant::Hier, _) => d + 1,
        }
    }

    /// The scoring table (see the module docs), `[n_items, score_dim]`.
    fn table(&self, file: &WeightFile, n_items: usize) -> Result<Tensor> {
        let d = self.dim;
        let t = |name: &str, w: usize| -> Result<Tensor> {
            let shape = if w == 0 {
                vec![n_items]
            } else {
                vec![n_items, w]
            };
            file.tensor(name, &shape)
        };
        let parts: Vec<(Tensor, usize)> = match (self.variant, self.tied) {
            (HdtVariant::Hdt, true) => vec![
                (t("item_embedding.weight", d)?, d),
                (t("intra.action_head.bias", 0)?, 1),
                (t("seq_head.bias", 0)?, 1),
                (t("goal_head.bias", 0)?, 1),
            ],
            (HdtVariant::InterDt, true) => vec![
                (t("item_embedding.weight", d)?, d),
                (t("seq_head.bias", 0)?, 1),
                (t("goal_head.bias", 0)?, 1),
            ],
            (HdtVariant::Hier, true) => vec![
                (t("item_embedding.weight", d)?, d),
                (t("seq_head.bias", 0)?, 1),
            ],
            (HdtVariant::Hdt, false) => vec![
                (t("intra.action_head.weight", d)?, d),
                (t("seq_head.weight", d)?, d),
                (t("intra.action_head.bias", 0)?, 1),
                (t("seq_head.bias", 0)?, 1),
                (t("goal_head.weight", d)?, d),
                (t("goal_head.bias", 0)?, 1),
            ],
            (HdtVariant::InterDt, false) => vec![
                (t("seq_head.weight", d)?, d),
                (t("seq_head.bias", 0)?, 1),
                (t("goal_head.weight", d)?, d),
                (t("goal_head.bias", 0)?, 1),
            ],
            (HdtVariant::Hier, false) => {
                vec![(t("seq_head.weight", d)?, d), (t("seq_head.bias", 0)?, 1)]
            }
        };
        let width = self.width();
        let mut data = Vec::with_capacity(n_items * width);
        for i in 0..n_items {
            for (p, w) in &parts {
                data.extend_from_slice(&p.as_slice()[i * w..(i + 1) * w]);
            }
        }
        Tensor::from_vec(vec![n_items, width], data)
    }

    /// `R_c` of the current session under the knobs.
    fn current_return(&self, st: &HdtState<B>, obj: &Objectives) -> f32 {
        let target = obj.value("target_unexp");
        let r = if target.is_nan() {
            (self.dis_max - st.finished.dis()) as f32
        } else {
            target
        };
        obj.value("lambda_div") * r
    }

    /// The goal `g` (and for InterDT the goal return `R̃`) into `st.g` / `st.rt`, for the
    /// inter-session return `r`.
    fn goal(&self, be: &B, st: &mut HdtState<B>, r: f32, s: &mut Scratch<B>) -> Result<()> {
        let d = self.dim;
        let Scratch { x, y, tmp, .. } = s;
        if let Some(gru) = &self.user_gru {
            // One step from g_{c−1} with input s_c: `g` holds the state and ends as g_c.
            be.copy_rows(&st.u, 0, &mut st.g, 0, 1, d)?;
            return be.gru(gru, &st.s, 1, &mut st.g, &mut tmp.work, y);
        }
        let inter = self.inter.as_ref().expect("hdt and interdt have InterDT");
        // Tokens (R·E_R, s_c); outputs (R̃, g).
        let row = |i| At::rows(i, d);
        be.fill(x, row(0), 1, d, 0.0)?;
        be.axpy(
            Src::Param(&inter.e_r),
            row(0),
            Scale::All(r),
            x,
            row(0),
            1,
            d,
        )?;
        be.copy(Src::Buf(&st.s), row(0), x, row(1), 1, d)?;
        let mask = if inter.causal {
            SelfMask::Causal
        } else {
            SelfMask::All
        };
        be.attention(&inter.att, x, 2, 0, 0, mask, &mut st.inter_cache, tmp, y)?;
        be.copy_rows(y, 0, &mut st.rt, 0, 1, d)?;
        be.copy_rows(y, 1, &mut st.g, 0, 1, d)
    }

    /// Backbone states of every position of `window` under the goal `st.g`, into `st.states`.
    fn run_backbone(
        &self,
        be: &B,
        window: &[u32],
        st: &mut HdtState<B>,
        s: &mut Scratch<B>,
    ) -> Result<()> {
        let (d, n) = (self.dim, window.len());
        let Scratch { x, y, aux, tmp, .. } = s;
        // x̃_t = W_g[emb(x_t) || g] + b_g.
        be.embedding(self.item_embedding(), window, None, x)?;
        be.copy(
            Src::Buf(x),
            At::rows(0, d),
            aux,
            At::strided(0, 2 * d),
            n,
            d,
        )?;
        let g = (Src::Buf(&st.g), At::repeat(0));
        be.copy(g.0, g.1, aux, At::strided(d, 2 * d), n, d)?;
        be.linear(&self.input_proj, aux, n, Activation::Identity, x)?;
        match (&self.backbone, &mut st.backbone) {
            (Backbone::Gru(m), BackboneState::Gru(bs)) => {
                m.encode_inputs(be, x, n, bs, y, tmp, &mut st.states)
            }
            (Backbone::Sas(m), BackboneState::Sas(bs)) => {
                m.encode_inputs(be, x, n, bs, y, tmp)?;
                be.copy_rows(x, 0, &mut st.states, 0, n, d)
            }
            _ => Err(Error::InvalidArgument(
                "session state belongs to a different backbone".into(),
            )),
        }
    }

    /// IntraDT's output at the last state token for `window` (states in `st.states`), into
    /// `st.ha`.
    fn run_intra(
        &self,
        be: &B,
        window: &[u32],
        obj: &Objectives,
        st: &mut HdtState<B>,
        s: &mut Scratch<B>,
    ) -> Result<()> {
        let intra = self.intra.as_ref().expect("hdt has IntraDT");
        let lt = self
            .long_tail
            .as_ref()
            .expect("hdt stores long-tail flags")
            .as_slice();
        let (d, n) = (self.dim, window.len());
        let Scratch {
            x,
            y,
            aux,
            tmp,
            vals,
            ..
        } = s;
        // Novelty flags of the actions, the predicted one assumed.
        let flags = &mut st.flags;
        flags.clear();
        flags.extend(window[1..].iter().map(|&i| lt[i as usize]));
        let assumed = if flags.is_empty() {
            1.0
        } else {
            let mean = flags.iter().map(|&f| f as f64).sum::<f64>() / flags.len() as f64;
            if mean >= obj.value("novelty_eps") as f64 {
                1.0
            } else {
                0.0
            }
        };
        flags.push(assumed);
        let steps = n.min(self.max_len - 1);
        let first = n - steps;
        let n_tok = 4 * steps - 1;
        // The novelty return-to-go of every step.
        vals.clear();
        let mut rn: f32 = flags[first..].iter().sum();
        for i in first..n {
            vals.push(rn);
            rn -= flags[i];
        }
        // Tokens (R̃, R^n_j·E_n, s_i, emb(x_{i+1})) of the steps, each plus its step embedding;
        // the last step has no action token.
        let slot = |k: usize| At::strided(k * d, 4 * d);
        let one = Scale::All(1.0);
        be.zero(aux, n_tok * d)?;
        be.axpy(Src::Buf(&st.rt), At::repeat(0), one, aux, slot(0), steps, d)?;
        let e_n = Src::Param(&intra.e_n);
        be.axpy(
            e_n,
            At::repeat(0),
            Scale::Rows(vals),
            aux,
            slot(1),
            steps,
            d,
        )?;
        let states = Src::Buf(&st.states);
        be.axpy(states, At::rows(first, d), one, aux, slot(2), steps, d)?;
        be.embedding(self.item_embedding(), &window[first + 1..], None, x)?;
        be.axpy(Src::Buf(x), At::rows(0, d), one, aux, slot(3), steps - 1, d)?;
        for k in 0..4 {
            let rows = if k < 3 { steps } else { steps - 1 };
            let pos = Src::Param(&intra.pos);
            be.axpy(pos, At::rows(0, d), one, aux, slot(k), rows, d)?;
        }
        be.layer_norm(&intra.ln, aux, 0..n_tok)?;
        let last = intra.layers.len() - 1;
        let mut rows = n_tok;
        for (l, (att, ff)) in intra.layers.iter().enumerate() {
            let q_from = if l == last { n_tok - 1 } else { 0 };
            let cache = &mut st.intra_caches[l];
            be.attention(att, aux, n_tok, 0, q_from, SelfMask::Causal, cache, tmp, y)?;
            rows = n_tok - q_from;
            be.feed_forward(ff, y, rows, tmp, aux)?;
        }
        be.copy_rows(aux, rows - 1, &mut st.ha, 0, 1, d)
    }
}

impl<B: Backend> Architecture<B> for Hdt<B> {
    type State = HdtState<B>;
    const NAMES: &'static [&'static str] = &["hdt", "interdt", "hier"];

    fn load(be: &B, name: &'static str, cx: &mut LoadContext<'_, '_>) -> Result<Self> {
        let variant = match name {
            "hdt" => HdtVariant::Hdt,
            "interdt" => HdtVariant::InterDt,
            _ => HdtVariant::Hier,
        };
        Self::load_from(be, variant, cx)
    }

    fn name(&self) -> &'static str {
        match self.variant {
            HdtVariant::Hdt => "hdt",
            HdtVariant::InterDt => "interdt",
            HdtVariant::Hier => "hier",
        }
    }

    /// Width d of items and states.
    fn dim(&self) -> usize {
        self.dim
    }

    fn score_dim(&self) -> usize {
        self.width()
    }

    fn scoring_table(&self, file: &WeightFile, n_items: usize) -> Result<Tensor> {
        self.table(file, n_items)
    }

    fn objective_specs(&self) -> &'static [ObjectiveSpec] {
        match self.variant {
            HdtVariant::Hdt => HDT_SPECS,
            HdtVariant::InterDt => INTERDT_SPECS,
            HdtVariant::Hier => &[],
        }
    }

    /// The backbone's item embedding.
    fn item_embedding(&self) -> &Embedding<B> {
        match &self.backbone {
            Backbone::Gru(m) => &m.item_emb,
            Backbone::Sas(m) => &m.item_emb,
        }
    }

    /// No finished session, `s_1 = 0`.
    fn new_state(&self, be: &B) -> Result<HdtState<B>> {
        let d = self.dim;
        let backbone = match &self.backbone {
            Backbone::Gru(m) => BackboneState::Gru(m.empty_state(be)?),
            Backbone::Sas(m) => BackboneState::Sas(m.empty_state(be)?),
        };
        let intra_caches = match &self.intra {
            Some(i) => (0..i.layers.len())
                .map(|_| KvCache::new(be, 4 * (self.max_len - 1), d))
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        let zeros = || -> Result<B::Buf> {
            let mut b = B::Buf::default();
            be.zero(&mut b, d)?;
            Ok(b)
        };
        Ok(HdtState {
            s: zeros()?,
            u: zeros()?,
            finished: SimAccumulator::new(self.sim.as_ref().map_or(0, |t| t.shape()[1])),
            sessions: 0,
            backbone,
            inter_cache: KvCache::new(be, 2, d)?,
            intra_caches,
            g: zeros()?,
            rt: zeros()?,
            states: B::Buf::default(),
            ha: B::Buf::default(),
            flags: Vec::new(),
        })
    }

    /// Encodes the current session's window into the scoring vector.
    fn encode(
        &self,
        be: &B,
        req: &Request<'_>,
        st: &mut HdtState<B>,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<()> {
        let (window, obj) = (req.window, req.objectives);
        let (d, n, width) = (self.dim, window.len(), self.width());
        let r = if self.inter.is_some() {
            self.current_return(st, obj)
        } else {
            0.0
        };
        self.goal(be, st, r, s)?;
        self.run_backbone(be, window, st, s)?;
        if self.variant == HdtVariant::Hdt {
            self.run_intra(be, window, obj, st, s)?;
        }
        let s_last = (Src::Buf(&st.states), At::rows(n - 1, d));
        let used = match (self.variant, self.tied) {
            (HdtVariant::Hdt, false) => {
                // [h_a, alpha·s, 1, alpha].
                let alpha = obj.value("alpha");
                be.copy_rows(&st.ha, 0, out, 0, 1, d)?;
                be.fill(out, At::rows(1, d), 1, d, 0.0)?;
                be.axpy(
                    s_last.0,
                    s_last.1,
                    Scale::All(alpha),
                    out,
                    At::rows(1, d),
                    1,
                    d,
                )?;
                be.write(&[1.0, alpha], out, 2 * d)?;
                2 * d + 2
            }
            (HdtVariant::Hdt, true) => {
                // E·h_a + b_a + alpha·(E·s + b_s) = E·(h_a + alpha·s) + b_a + alpha·b_s.
                let alpha = obj.value("alpha");
                be.copy_rows(&st.ha, 0, out, 0, 1, d)?;
                be.axpy(
                    s_last.0,
                    s_last.1,
                    Scale::All(alpha),
                    out,
                    At::rows(0, d),
                    1,
                    d,
                )?;
                be.write(&[1.0, alpha], out, d)?;
                d + 2
            }
            (HdtVariant::InterDt | HdtVariant::Hier, _) => {
                be.copy(s_last.0, s_last.1, out, At::rows(0, d), 1, d)?;
                be.write(&[1.0], out, d)?;
                d + 1
            }
        };
        be.fill(out, At::rows(used, 1), width - used, 1, 0.0)
    }

    /// After a boundary: the goal head's vector `[0, .., 0, g, 1]` for the next session's first
    /// item (`hdt`, `interdt`); `false` (nothing written) for `hier`.
    fn encode_empty(
        &self,
        be: &B,
        obj: &Objectives,
        st: &mut HdtState<B>,
        s: &mut Scratch<B>,
        out: &mut B::Buf,
    ) -> Result<bool> {
        if self.inter.is_none() {
            return Ok(false);
        }
        let (d, width) = (self.dim, self.width());
        let r = self.current_return(st, obj);
        self.goal(be, st, r, s)?;
        be.zero(out, width)?;
        // Tied: [E | (b_a) | b_s | b_u], the goal over the table; else the goal head's block.
        let g_at = if self.tied { 0 } else { width - d - 1 };
        be.copy(Src::Buf(&st.g), At::rows(0, d), out, At::repeat(g_at), 1, d)?;
        be.write(&[1.0], out, width - 1)?;
        Ok(true)
    }

    /// Finishes the current session (see the module docs); always `true`.
    fn end_session(
        &self,
        be: &B,
        st: &mut HdtState<B>,
        history: &[u32],
        s: &mut Scratch<B>,
    ) -> Result<bool> {
        if history.is_empty() {
            return Ok(true);
        }
        let d = self.dim;
        if let Some(sim) = &self.sim {
            st.finished.extend(sim, history);
        }
        let r = (self.dis_max - st.finished.dis()) as f32;
        self.goal(be, st, r, s)?;
        let window = &history[history.len().saturating_sub(self.max_len)..];
        self.run_backbone(be, window, st, s)?;
        let n = window.len();
        be.copy_rows(&st.states, n - 1, &mut st.s, 0, 1, d)?;
        if self.user_gru.is_some() {
            be.copy_rows(&st.g, 0, &mut st.u, 0, 1, d)?;
        }
        st.sessions += 1;
        Ok(true)
    }

    /// The inter-session state, which no history can rebuild: `s_c`, the user GRU's state,
    /// the finished sessions' similarity sum and their count. Everything else is recomputed
    /// by the next encode (every event re-encodes the current session).
    fn save_state(&self, be: &B, st: &HdtState<B>, w: &mut Writer) -> Result<()> {
        save_buf(be, &st.s, self.dim, w)?;
        save_buf(be, &st.u, self.dim, w)?;
        let (sum, items) = st.finished.parts();
        w.varint(sum.len() as u64);
        for v in sum {
            w.u64(v.to_bits());
        }
        w.varint(items as u64);
        w.varint(st.sessions as u64);
        Ok(())
    }

    fn restore_state(
        &self,
        be: &B,
        r: &mut Reader<'_>,
        _window: usize,
        st: &mut HdtState<B>,
    ) -> Result<()> {
        restore_buf(be, r, "session state s_c", self.dim, &mut st.s)?;
        restore_buf(be, r, "user GRU state", self.dim, &mut st.u)?;
        let dim = st.finished.dim();
        let n = r.count("similarity width", dim)?;
        if n != dim {
            return Err(r.error(format_args!("similarity width {n}, expected {dim}")));
        }
        let sum = (0..n)
            .map(|_| r.u64("similarity sum").map(f64::from_bits))
            .collect::<Result<Vec<_>>>()?;
        let items = r.count("finished items", usize::MAX >> 1)?;
        st.finished = SimAccumulator::from_parts(sum, items);
        st.sessions = r.count("finished sessions", usize::MAX >> 1)?;
        Ok(())
    }
}
