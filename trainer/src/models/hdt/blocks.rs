//! The two decision-transformer blocks of HDT: InterDT over `(R_c·E_R, s_c)` and IntraDT over
//! `(R̃_c, R^n_t·E_n, s_t, emb(a_t))` per step. Both are built from the RecBole sublayers of
//! [`crate::nn`] (post-LN attention and feed-forward), whose backward passes are tested
//! there; what is new here is how the tokens are made and read, and its backward.

use super::HdtConfig;
use super::heads::Head;
use crate::nn::activation::DropoutCache;
use crate::nn::attention::{FeedForwardCache, SelfAttentionCache};
use crate::nn::norm::LayerNormCache;
use crate::nn::{
    Activation, Dropout, Embedding, FeedForward, LayerNorm, Linear, Module, Param, Rng,
    SelfAttention,
};
use seqrec_kernels::cpu::vector;

/// InterDT: one self-attention sublayer over the two tokens `(R_c·E_R, s_c)` of every session
/// (in that order). Unmasked by default; with a causal mask the goal return depends on `R_c`
/// only.
#[derive(Clone, Debug)]
pub struct InterDt {
    /// `E_R`, `inter.return_embedding`, `[d]`.
    pub e_r: Param,
    /// `inter.attention.{query,key,value,dense,LayerNorm}`.
    pub att: SelfAttention,
}

/// What [`InterDt::backward`] needs.
#[derive(Clone, Debug)]
pub struct InterCache {
    r: Vec<f32>,
    att: SelfAttentionCache,
}

impl InterDt {
    /// Initialised as RecBole initialises its layers (`N(0, 0.02²)`, zero biases).
    pub fn new(cfg: &HdtConfig, rng: &mut Rng) -> Self {
        let d = cfg.dim;
        let mut att = SelfAttention::new(
            "inter.attention",
            d,
            cfg.inter_heads,
            cfg.ln_eps,
            cfg.dropout,
            cfg.dropout,
            0.02,
            rng,
        );
        att.causal = cfg.inter_causal;
        // γ of the output LayerNorm starts at the scale of the item embeddings: with γ = 1 the
        // goal (entries of order 1) drowns the items (order 0.02) in W_g[e || g] and the
        // backbone learns little more than popularity.
        att.ln.weight.value.fill(cfg.inter_gain);
        InterDt {
            e_r: Param::normal("inter.return_embedding", &[d], 0.02, rng),
            att,
        }
    }

    /// Goal returns `R̃` and goal states `g` (`[n, d]` each) for the returns `r` (`[n]`) and
    /// the inter-session states `s` (`[n, d]`).
    pub fn forward(
        &self,
        r: &[f32],
        s: &[f32],
        rng: Option<&mut Rng>,
    ) -> (Vec<f32>, Vec<f32>, InterCache) {
        let d = self.e_r.len();
        let n = r.len();
        assert_eq!(
            s.len(),
            n * d,
            "inter: {} state values for {n} sessions",
            s.len()
        );
        let mut x = vec![0.0f32; 2 * n * d];
        for b in 0..n {
            for (o, &e) in x[2 * b * d..(2 * b + 1) * d]
                .iter_mut()
                .zip(&self.e_r.value)
            {
                *o = r[b] * e;
            }
            x[(2 * b + 1) * d..(2 * b + 2) * d].copy_from_slice(&s[b * d..(b + 1) * d]);
        }
        let (y, att) = self.att.forward(&x, n, 2, None, rng);
        let mut ret = Vec::with_capacity(n * d);
        let mut goal = Vec::with_capacity(n * d);
        for b in 0..n {
            ret.extend_from_slice(&y[2 * b * d..(2 * b + 1) * d]);
            goal.extend_from_slice(&y[(2 * b + 1) * d..(2 * b + 2) * d]);
        }
        (ret, goal, InterCache { r: r.to_vec(), att })
    }

    /// Adds the parameter gradients for `d_ret` and `d_goal` (`[n, d]`). The states are
    /// detached inputs, so their gradient is dropped.
    pub fn backward(&mut self, cache: &InterCache, d_ret: &[f32], d_goal: &[f32]) {
        let d = self.e_r.len();
        let n = cache.r.len();
        let mut dy = vec![0.0f32; 2 * n * d];
        for b in 0..n {
            dy[2 * b * d..(2 * b + 1) * d].copy_from_slice(&d_ret[b * d..(b + 1) * d]);
            dy[(2 * b + 1) * d..(2 * b + 2) * d].copy_from_slice(&d_goal[b * d..(b + 1) * d]);
        }
        let dx = self.att.backward(&cache.att, &dy);
        for b in 0..n {
            for (g, &v) in self
                .e_r
                .grad
                .iter_mut()
                .zip(&dx[2 * b * d..(2 * b + 1) * d])
            {
                *g += cache.r[b] * v;
            }
        }
    }
}

impl Module for InterDt {
    fn params(&self) -> Vec<&Param> {
        let mut v = vec![&self.e_r];
        v.extend(self.att.params());
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = vec![&mut self.e_r];
        v.extend(self.att.params_mut());
        v
    }
}

/// The per-step inputs of IntraDT for `n` sessions of `steps` steps.
#[derive(Copy, Clone, Debug)]
pub struct IntraInput<'a> {
    /// Sessions.
    pub n: usize,
    /// Steps per session (padded).
    pub steps: usize,
    /// Goal return `R̃_c` of each session, `[n, d]`.
    pub goal: &'a [f32],
    /// Novelty return-to-go `R^n_t`, `[n, steps]`.
    pub rn: &'a [f32],
    /// Backbone states `s_t`, `[n·steps, d]`.
    pub states: &'a [f32],
    /// Action embeddings `emb(a_t)`, `[n·steps, d]`.
    pub actions: &'a [f32],
    /// Real steps, `[n·steps]` (false at padding).
    pub valid: &'a [bool],
}

/// IntraDT: `LN(token + P_t)`, dropout, then causal RecBole layers over the `4·steps` tokens
/// `(R̃, R^n·E_n, s_t, emb(a_t))` of each step. Padded steps are masked as keys. The heads
/// (`intra.return_head` at the goal-return tokens, `intra.action_head` at the state tokens)
/// are applied by the caller.
#[derive(Clone, Debug)]
pub struct IntraDt {
    /// `E_n`, `intra.novelty_embedding`, `[d]`.
    pub e_n: Param,
    /// `P`, `intra.position_embedding.weight`, `[max_len − 1, d]`.
    pub pos: Embedding,
    /// `intra.LayerNorm` (embedding LayerNorm).
    pub ln: LayerNorm,
    /// Dropout after the embedding LayerNorm.
    pub dropout: Dropout,
    /// `intra.layer.{l}.multi_head_attention`, `intra.layer.{l}.feed_forward`.
    pub layers: Vec<(SelfAttention, FeedForward)>,
    /// `W_r`, `b_r`: `intra.return_head`, `[1, d]`.
    pub ret_head: Linear,
    /// `W_a`, `b_a`: `intra.action_head`, `[N, d]` (or tied to the item table).
    pub act_head: Head,
}

/// What [`IntraDt::backward`] needs.
#[derive(Debug)]
pub struct IntraCache {
    n: usize,
    steps: usize,
    rn: Vec<f32>,
    ln: LayerNormCache,
    drop: DropoutCache,
    layers: Vec<(SelfAttentionCache, FeedForwardCache)>,
}

/// Gradients of IntraDT's inputs.
#[derive(Clone, Debug)]
pub struct IntraGrads {
    /// Of the goal returns, `[n, d]`.
    pub goal: Vec<f32>,
    /// Of the backbone states, `[n·steps, d]`.
    pub states: Vec<f32>,
    /// Of the action embeddings, `[n·steps, d]`.
    pub actions: Vec<f32>,
}

/// Tokens per step.
pub const TOKENS: usize = 4;

impl IntraDt {
    /// RecBole-style initialisation (`N(0, 0.02²)`, zero biases, LN γ = 1).
    pub fn new(cfg: &HdtConfig, rng: &mut Rng) -> Self {
        let d = cfg.dim;
        let layers = (0..cfg.intra_layers)
            .map(|l| {
                let p = format!("intra.layer.{l}");
                (
                    SelfAttention::new(
                        &format!("{p}.multi_head_attention"),
                        d,
                        cfg.intra_heads,
                        cfg.ln_eps,
                        cfg.dropout,
                        cfg.dropout,
                        0.02,
                        rng,
                    ),
                    FeedForward::new(
                        &format!("{p}.feed_forward"),
                        d,
                        cfg.intra_inner,
                        Activation::Gelu,
                        cfg.ln_eps,
                        cfg.dropout,
                        0.02,
                        rng,
                    ),
                )
            })
            .collect();
        IntraDt {
            e_n: Param::normal("intra.novelty_embedding", &[d], 0.02, rng),
            pos: Embedding::new(
                "intra.position_embedding.weight",
                cfg.max_len - 1,
                d,
                0.02,
                rng,
            ),
            ln: LayerNorm::new("intra.LayerNorm", d, cfg.ln_eps),
            dropout: Dropout::new(cfg.dropout),
            layers,
            ret_head: Linear::new("intra.return_head", d, 1, true, 0.02, rng),
            act_head: Head::new("intra.action_head", d, cfg.n_items, cfg.tied_heads, rng),
        }
    }

    /// Every token's output, `[n·4·steps, d]` (row `b·4·steps + 4t + k` is token `k` of step
    /// `t` of session `b`).
    pub fn forward(
        &self,
        inp: &IntraInput<'_>,
        mut rng: Option<&mut Rng>,
    ) -> (Vec<f32>, IntraCache) {
        let d = self.e_n.len();
        let (n, steps) = (inp.n, inp.steps);
        assert!(
            steps <= self.pos.rows,
            "intra: {steps} steps, the position table has {}",
            self.pos.rows
        );
        assert_eq!(inp.goal.len(), n * d, "intra: goal size");
        assert_eq!(inp.rn.len(), n * steps, "intra: novelty return size");
        assert_eq!(inp.states.len(), n * steps * d, "intra: state size");
        assert_eq!(inp.actions.len(), n * steps * d, "intra: action size");
        assert_eq!(inp.valid.len(), n * steps, "intra: validity size");
        let len = TOKENS * steps;
        let rows = n * len;
        let mut x = vec![0.0f32; rows * d];
        for b in 0..n {
            for t in 0..steps {
                let bt = b * steps + t;
                let p = &self.pos.weight.value[t * d..(t + 1) * d];
                let at = (b * len + TOKENS * t) * d;
                let tok = &mut x[at..at + TOKENS * d];
                tok[..d].copy_from_slice(&inp.goal[b * d..(b + 1) * d]);
                for (o, &e) in tok[d..2 * d].iter_mut().zip(&self.e_n.value) {
                    *o = inp.rn[bt] * e;
                }
                tok[2 * d..3 * d].copy_from_slice(&inp.states[bt * d..(bt + 1) * d]);
                tok[3 * d..].copy_from_slice(&inp.actions[bt * d..(bt + 1) * d]);
                for k in 0..TOKENS {
                    vector::add(&mut tok[k * d..(k + 1) * d], p);
                }
            }
        }
        let valid: Vec<bool> = inp.valid.iter().flat_map(|&v| [v; TOKENS]).collect();
        let (mut x, ln) = self.ln.forward(&x, rows);
        let drop = self.dropout.forward(&mut x, rng.as_deref_mut());
        let mut caches = Vec::with_capacity(self.layers.len());
        for (att, ff) in &self.layers {
            let (y, ac) = att.forward(&x, n, len, Some(&valid), rng.as_deref_mut());
            let (z, fc) = ff.forward(&y, rows, rng.as_deref_mut());
            caches.push((ac, fc));
            x = z;
        }
        let cache = IntraCache {
            n,
            steps,
            rn: inp.rn.to_vec(),
            ln,
            drop,
            layers: caches,
        };
        (x, cache)
    }

    /// Adds the parameter gradients for `d_out` (`[n·4·steps, d]`) and returns the input
    /// gradients.
    pub fn backward(&mut self, cache: &IntraCache, d_out: &[f32]) -> IntraGrads {
        let d = self.e_n.len();
        let (n, steps) = (cache.n, cache.steps);
        let len = TOKENS * steps;
        let mut g = d_out.to_vec();
        for ((att, ff), (ac, fc)) in self.layers.iter_mut().zip(&cache.layers).rev() {
            let dy = ff.backward(fc, &g);
            g = att.backward(ac, &dy);
        }
        self.dropout.backward(&cache.drop, &mut g);
        let dx = self.ln.backward(&cache.ln, &g);
        let mut out = IntraGrads {
            goal: vec![0.0; n * d],
            states: vec![0.0; n * steps * d],
            actions: vec![0.0; n * steps * d],
        };
        for b in 0..n {
            for t in 0..steps {
                let bt = b * steps + t;
                let at = (b * len + TOKENS * t) * d;
                let tok = &dx[at..at + TOKENS * d];
                vector::add(&mut out.goal[b * d..(b + 1) * d], &tok[..d]);
                for (ge, &v) in self.e_n.grad.iter_mut().zip(&tok[d..2 * d]) {
                    *ge += cache.rn[bt] * v;
                }
                out.states[bt * d..(bt + 1) * d].copy_from_slice(&tok[2 * d..3 * d]);
                out.actions[bt * d..(bt + 1) * d].copy_from_slice(&tok[3 * d..]);
                let gp = &mut self.pos.weight.grad[t * d..(t + 1) * d];
                for k in 0..TOKENS {
                    vector::add(gp, &tok[k * d..(k + 1) * d]);
                }
            }
        }
        out
    }
}

impl Module for IntraDt {
    fn params(&self) -> Vec<&Param> {
        let mut v = vec![&self.e_n, &self.pos.weight];
        v.extend(self.ln.params());
        for (a, f) in &self.layers {
            v.extend(a.params());
            v.extend(f.params());
        }
        v.extend(self.ret_head.params());
        v.extend(self.act_head.params());
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = vec![&mut self.e_n, &mut self.pos.weight];
        v.extend(self.ln.params_mut());
        for (a, f) in &mut self.layers {
            v.extend(a.params_mut());
            v.extend(f.params_mut());
        }
        v.extend(self.ret_head.params_mut());
        v.extend(self.act_head.params_mut());
        v
    }
}
