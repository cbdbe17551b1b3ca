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
//! [`Hdt::end_session`] finishes the current session as training saw it: its items join the
//! finished sessions, `R_c` is recomputed *with* them, and the backbone state at the session's
//! last position under that goal becomes `s_{c+1}`; the next session starts empty. After a
//! boundary `hdt` and `interdt` score the next session's first item with the goal head
//! (`W_u g + b_u`); `hier` needs an event first.
//!
//! InterDT's attention is unmasked over its two tokens; the backend's attention is causal, so
//! each output is computed as the last row of the pair ordered with that token last (without
//! position embeddings attention is the same for any order of the keys).
//!
//! Scoring is one catalog scan over the table `[W_a | W_s | b_a | b_s | W_u | b_u]` (`hdt`),
//! `[W_s | b_s | W_u | b_u]` (`interdt`) or `[W_s | b_s]` (`hier`) with the vector
//! `[h_a, alpha·s, 1, alpha, 0, 0]`, `[s, 1, 0, 0]` or `[s, 1]`, and after a boundary
//! `[0, .., 0, g, 1]`.

use crate::backend::{Backend, KvCache};
use crate::blocks::{AttentionBlock, Embedding, FeedForward, GruLayer, LayerNorm, Linear};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::models::gru4rec::{Gru4Rec, Gru4RecState};
use crate::models::sasrec::{SasRec, SasRecState};
use crate::objectives::similarity::SimAccumulator;
use crate::objectives::{ObjectiveSpec, Objectives};
use crate::weights::{Tensor, TensorLoader, WeightFile};
use alloc::format;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;
use seqrec_kernels::cpu::activation::Activation;

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
    e_r: Tensor,
    att: AttentionBlock<B>,
    causal: bool,
}

#[derive(Debug)]
struct Intra<B: Backend> {
    e_n: Tensor,
    pos: Tensor,
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

/// Per-user state: the inter-session state and scratch for the current session.
#[derive(Debug)]
pub struct HdtState<B: Backend> {
    /// `s_c`.
    s: Vec<f32>,
    /// The user GRU's state `g_{c−1}` (`hier`).
    u: Vec<f32>,
    /// The finished sessions' items (for `dis`).
    finished: SimAccumulator,
    sessions: usize,
    backbone: BackboneState<B>,
    inter_cache: KvCache<B>,
    intra_caches: Vec<KvCache<B>>,
    // Host scratch.
    g: Vec<f32>,
    rt: Vec<f32>,
    rows: Vec<f32>,
    cat: Vec<f32>,
    states: Vec<f32>,
    tok: Vec<f32>,
    flags: Vec<f32>,
    vec: Vec<f32>,
}

impl<B: Backend> HdtState<B> {
    /// Finished sessions.
    pub fn sessions(&self) -> usize {
        self.sessions
    }
}

/// Loads `name` (`[n]`) as a host tensor.
fn host(ld: &mut TensorLoader<'_>, name: &str, shape: &[usize]) -> Result<Tensor> {
    ld.get(name, shape)
}

impl<B: Backend> Hdt<B> {
    /// Loads the model named by `cfg`'s `model` field (`hdt`, `interdt`, `hier`).
    pub fn load(
        be: &B,
        cfg: &Config,
        ld: &mut TensorLoader<'_>,
        n_items: usize,
        max_len: usize,
    ) -> Result<Self> {
        let variant = match cfg.model()?.as_str() {
            "hdt" => HdtVariant::Hdt,
            "interdt" => HdtVariant::InterDt,
            "hier" => HdtVariant::Hier,
            other => return Err(Error::UnknownModel(other.to_string())),
        };
        if max_len < 2 {
            return Err(Error::Config(format!(
                "MAX_ITEM_LIST_LENGTH {max_len}: hierarchical models need at least 2"
            )));
        }
        let backbone_name = cfg.str_or("backbone", "gru4rec")?;
        let (backbone, dim) = match backbone_name.as_str() {
            "gru4rec" => {
                let m = Gru4Rec::load(be, cfg, ld, n_items)?;
                let d = m.dim();
                (Backbone::Gru(m), d)
            }
            "sasrec" => {
                let m = SasRec::load(be, cfg, ld, n_items, max_len)?;
                let d = m.dim();
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
                e_r: host(ld, "inter.return_embedding", &[dim])?,
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
            let e_n = host(ld, "intra.novelty_embedding", &[dim])?;
            let pos = host(ld, "intra.position_embedding.weight", &[max_len - 1, dim])?;
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

    /// Architecture name.
    pub fn name(&self) -> &'static str {
        match self.variant {
            HdtVariant::Hdt => "hdt",
            HdtVariant::InterDt => "interdt",
            HdtVariant::Hier => "hier",
        }
    }

    /// Width d of items and states.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Width of the scoring vector.
    pub fn score_dim(&self) -> usize {
        let d = self.dim;
        match (self.variant, self.tied) {
            (HdtVariant::Hdt, false) => 3 * d + 3,
            (HdtVariant::InterDt, false) => 2 * d + 2,
            (HdtVariant::Hdt, true) => d + 3,
            (HdtVariant::InterDt, true) => d + 2,
            (HdtVariant::Hier, _) => d + 1,
        }
    }

    /// The item embedding of the backbone.
    pub fn item_embedding(&self) -> &Embedding<B> {
        match &self.backbone {
            Backbone::Gru(m) => &m.item_emb,
            Backbone::Sas(m) => &m.item_emb,
        }
    }

    /// The knobs.
    pub fn objective_specs(&self) -> &'static [ObjectiveSpec] {
        match self.variant {
            HdtVariant::Hdt => HDT_SPECS,
            HdtVariant::InterDt => INTERDT_SPECS,
            HdtVariant::Hier => &[],
        }
    }

    /// The scoring table (see the module docs), `[n_items, score_dim]`.
    pub fn scoring_table(&self, file: &WeightFile, n_items: usize) -> Result<Tensor> {
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
        let width = self.score_dim();
        let mut data = Vec::with_capacity(n_items * width);
        for i in 0..n_items {
            for (p, w) in &parts {
                data.extend_from_slice(&p.as_slice()[i * w..(i + 1) * w]);
            }
        }
        Tensor::from_vec(vec![n_items, width], data)
    }

    /// A fresh state: no finished session, `s_1 = 0`.
    pub fn new_state(&self, be: &B) -> Result<HdtState<B>> {
        let d = self.dim;
        let backbone = match &self.backbone {
            Backbone::Gru(m) => BackboneState::Gru(m.new_state(be)?),
            Backbone::Sas(m) => BackboneState::Sas(m.new_state(be)?),
        };
        let intra_caches = match &self.intra {
            Some(i) => (0..i.layers.len())
                .map(|_| KvCache::new(be, 4 * (self.max_len - 1), d))
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        Ok(HdtState {
            s: vec![0.0; d],
            u: vec![0.0; d],
            finished: SimAccumulator::new(self.sim.as_ref().map_or(0, |t| t.shape()[1])),
            sessions: 0,
            backbone,
            inter_cache: KvCache::new(be, 2, d)?,
            intra_caches,
            g: vec![0.0; d],
            rt: vec![0.0; d],
            rows: Vec::new(),
            cat: Vec::new(),
            states: Vec::new(),
            tok: Vec::new(),
            flags: Vec::new(),
            vec: Vec::new(),
        })
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

    /// The goal `g` (and for InterDT the goal return `R̃`) into `st.g` / `st.rt`.
    fn goal(&self, be: &B, st: &mut HdtState<B>, r: f32, bufs: [&mut B::Buf; 4]) -> Result<()> {
        let d = self.dim;
        let [a, b, scratch, e] = bufs;
        if let Some(gru) = &self.user_gru {
            // One step from g_{c−1} with input s_c; `b` holds the state and ends as g_c.
            be.write(&st.s, a, 0)?;
            be.write(&st.u, b, 0)?;
            be.gru(gru, a, 1, b, scratch, e)?;
            return be.read(b, 0, &mut st.g);
        }
        let inter = self.inter.as_ref().expect("hdt and interdt have InterDT");
        st.rows.clear();
        st.rows.extend(inter.e_r.as_slice().iter().map(|&e| r * e));
        // The state token's output: keys (R, s), query s.
        be.write(&st.rows, a, 0)?;
        be.write(&st.s, a, d)?;
        be.attention(&inter.att, a, 2, 0, 1, &mut st.inter_cache, scratch, b)?;
        be.read(b, 0, &mut st.g)?;
        if inter.causal {
            // The return token sees itself only.
            be.attention(&inter.att, a, 1, 0, 0, &mut st.inter_cache, scratch, b)?;
        } else {
            be.write(&st.s, a, 0)?;
            be.write(&st.rows, a, d)?;
            be.attention(&inter.att, a, 2, 0, 1, &mut st.inter_cache, scratch, b)?;
        }
        be.read(b, 0, &mut st.rt)
    }

    /// Backbone states of every position of `window` under the goal `st.g`, into `st.states`.
    fn run_backbone(
        &self,
        be: &B,
        window: &[u32],
        st: &mut HdtState<B>,
        ids: &mut Vec<u32>,
        bufs: [&mut B::Buf; 4],
    ) -> Result<()> {
        let d = self.dim;
        let n = window.len();
        let [a, b, c, e] = bufs;
        be.embedding(self.item_embedding(), window, None, a)?;
        st.rows.resize(n * d, 0.0);
        be.read(a, 0, &mut st.rows)?;
        st.cat.clear();
        for r in st.rows.chunks_exact(d) {
            st.cat.extend_from_slice(r);
            st.cat.extend_from_slice(&st.g);
        }
        be.write(&st.cat, b, 0)?;
        be.linear(&self.input_proj, b, n, Activation::Identity, a)?;
        st.states.resize(n * d, 0.0);
        match (&self.backbone, &mut st.backbone) {
            (Backbone::Gru(m), BackboneState::Gru(s)) => {
                m.encode_inputs(be, a, n, s, [b, c], e)?;
                be.read(e, 0, &mut st.states)
            }
            (Backbone::Sas(m), BackboneState::Sas(s)) => {
                m.encode_inputs(be, a, n, s, [b, c], ids, [&mut st.cat, &mut st.tok])?;
                be.read(a, 0, &mut st.states)
            }
            _ => Err(Error::InvalidArgument(
                "session state belongs to a different backbone".into(),
            )),
        }
    }

    /// IntraDT's output at the last state token for `window` (states in `st.states`), into
    /// `st.rows` (`[d]`).
    fn run_intra(
        &self,
        be: &B,
        window: &[u32],
        obj: &Objectives,
        st: &mut HdtState<B>,
        bufs: [&mut B::Buf; 3],
    ) -> Result<()> {
        let intra = self.intra.as_ref().expect("hdt has IntraDT");
        let lt = self
            .long_tail
            .as_ref()
            .expect("hdt stores long-tail flags")
            .as_slice();
        let d = self.dim;
        let n = window.len();
        let [a, b, c] = bufs;
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
        // Action embeddings x_{i+1} of the steps but the last.
        be.embedding(self.item_embedding(), &window[first + 1..], None, a)?;
        st.rows.resize((steps - 1) * d, 0.0);
        be.read(a, 0, &mut st.rows)?;
        st.tok.clear();
        st.tok.resize(n_tok * d, 0.0);
        let (e_n, pos) = (intra.e_n.as_slice(), intra.pos.as_slice());
        let mut rn: f32 = st.flags[first..].iter().sum();
        for j in 0..steps {
            let i = first + j;
            let p = &pos[j * d..(j + 1) * d];
            for k in 0..4 {
                if 4 * j + k >= n_tok {
                    break;
                }
                let out = &mut st.tok[(4 * j + k) * d..(4 * j + k + 1) * d];
                for x in 0..d {
                    let v = match k {
                        0 => st.rt[x],
                        1 => rn * e_n[x],
                        2 => st.states[i * d + x],
                        _ => st.rows[j * d + x],
                    };
                    out[x] = v + p[x];
                }
            }
            rn -= st.flags[i];
        }
        be.write(&st.tok, a, 0)?;
        be.layer_norm(&intra.ln, a, n_tok)?;
        let last = intra.layers.len() - 1;
        let mut rows = n_tok;
        for (l, (att, ff)) in intra.layers.iter().enumerate() {
            let q_from = if l == last { n_tok - 1 } else { 0 };
            be.attention(att, a, n_tok, 0, q_from, &mut st.intra_caches[l], c, b)?;
            rows = n_tok - q_from;
            be.feed_forward(ff, b, rows, c, a)?;
        }
        st.rows.resize(d, 0.0);
        be.read(a, (rows - 1) * d, &mut st.rows)
    }

    /// Encodes the current session's `window` under `obj` into the scoring vector `out`.
    pub fn encode(
        &self,
        be: &B,
        window: &[u32],
        obj: &Objectives,
        st: &mut HdtState<B>,
        ids: &mut Vec<u32>,
        bufs: [&mut B::Buf; 4],
        out: &mut B::Buf,
    ) -> Result<()> {
        let d = self.dim;
        let n = window.len();
        let [a, b, c, e] = bufs;
        let r = if self.inter.is_some() {
            self.current_return(st, obj)
        } else {
            0.0
        };
        self.goal(be, st, r, [a, b, c, e])?;
        self.run_backbone(be, window, st, ids, [a, b, c, e])?;
        let s_last = (n - 1) * d..n * d;
        if self.variant == HdtVariant::Hdt {
            self.run_intra(be, window, obj, st, [a, b, c])?;
        }
        let mut v = core::mem::take(&mut st.vec);
        v.clear();
        let s = &st.states[s_last];
        match (self.variant, self.tied) {
            (HdtVariant::Hdt, false) => {
                let alpha = obj.value("alpha");
                v.extend_from_slice(&st.rows[..d]);
                v.extend(s.iter().map(|&x| alpha * x));
                v.extend_from_slice(&[1.0, alpha]);
            }
            (HdtVariant::Hdt, true) => {
                // E·h_a + b_a + alpha·(E·s + b_s) = E·(h_a + alpha·s) + b_a + alpha·b_s.
                let alpha = obj.value("alpha");
                v.extend(st.rows[..d].iter().zip(s).map(|(&h, &x)| h + alpha * x));
                v.extend_from_slice(&[1.0, alpha]);
            }
            (HdtVariant::InterDt | HdtVariant::Hier, _) => {
                v.extend_from_slice(s);
                v.push(1.0);
            }
        }
        v.resize(self.score_dim(), 0.0);
        let res = be.write(&v, out, 0);
        st.vec = v;
        res
    }

    /// After a boundary: the goal head's vector for the next session's first item (`hdt`,
    /// `interdt`); `false` (nothing written) for `hier`.
    pub fn encode_empty(
        &self,
        be: &B,
        obj: &Objectives,
        st: &mut HdtState<B>,
        bufs: [&mut B::Buf; 4],
        out: &mut B::Buf,
    ) -> Result<bool> {
        if self.inter.is_none() {
            return Ok(false);
        }
        let d = self.dim;
        let r = self.current_return(st, obj);
        self.goal(be, st, r, bufs)?;
        st.vec.clear();
        if self.tied {
            // [E | (b_a) | b_s | b_u]: the goal over the table, the goal head's bias.
            st.vec.extend_from_slice(&st.g);
            st.vec.resize(self.score_dim() - 1, 0.0);
        } else {
            st.vec.resize(self.score_dim() - d - 1, 0.0);
            st.vec.extend_from_slice(&st.g);
        }
        st.vec.push(1.0);
        be.write(&st.vec, out, 0)?;
        Ok(true)
    }

    /// Finishes the current session (see the module docs); always `true`.
    pub fn end_session(
        &self,
        be: &B,
        st: &mut HdtState<B>,
        history: &[u32],
        ids: &mut Vec<u32>,
        bufs: [&mut B::Buf; 4],
    ) -> Result<bool> {
        if history.is_empty() {
            return Ok(true);
        }
        let d = self.dim;
        if let Some(sim) = &self.sim {
            st.finished.extend(sim, history);
        }
        let r = (self.dis_max - st.finished.dis()) as f32;
        let [a, b, c, e] = bufs;
        self.goal(be, st, r, [a, b, c, e])?;
        let window = &history[history.len().saturating_sub(self.max_len)..];
        self.run_backbone(be, window, st, ids, [a, b, c, e])?;
        let n = window.len();
        st.s.copy_from_slice(&st.states[(n - 1) * d..n * d]);
        if self.user_gru.is_some() {
            st.u.copy_from_slice(&st.g);
        }
        st.sessions += 1;
        Ok(true)
    }
}
