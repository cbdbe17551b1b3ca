//! The agents of §8.2–8.5, all on one SASRec state encoder `G` with an actor
//! `π(·|s) = softmax(W_π s + b_π)` and a critic `Q(s,·) = W_Q s + b_Q` over the catalog (the
//! RL model of [`crate::models::rl`] with a linear supervised head as the actor and its Q head
//! as the critic, so an agent's checkpoint is an `sa2c` checkpoint that `seqrec score` serves
//! and `seqrec_session_feedback` adapts):
//!
//! - **DQN**: the critic alone, `(r + γ·max_a' Q_target(s',a') − Q(s,a))²` on replayed
//!   transitions, the target network copied every `target_sync` updates; acts on `Q`.
//! - **PG** (REINFORCE): the actor alone, `−Σ_t log π(a_t|s_t)·(G_t − b)` once per episode,
//!   `G_t` the discounted return and `b` a running mean of returns.
//! - **A2C** (and iALP's architecture): `L_Q = (r + γ·max_a' Q(s',a') − Q(s,a))²`,
//!   `L_A = −log π(a|s)·A` with the detached advantage `A = r + γ·max Q(s') − Q(s,a)`, on a
//!   replayed mini-batch every step.
//! - **iALP**: A2C pre-trained on a judge's preferences ([`Agent::pretrain`], Algorithm 5),
//!   then acting without updates; **A-iALP_ft**: the pre-trained agent updated online as A2C;
//!   **A-iALP_ap**: the pre-trained policy π_θ frozen, a learnable π_β (encoder and critic
//!   copied from θ, actor random) trained through the mixture
//!   `π̃ = (1−α)π_θ + απ_β` with `L_A = −log π̃(a|s)·A`, α rising linearly from α₀ to 1 over
//!   the first half of the run (§8.3).
//!
//! Terminal transitions do not bootstrap (`γ·max Q(s')` is dropped when the user left).
//! States are token windows: the items shown so far, after a user token `n_items + user` for
//! environments that start from a user (Coat; §8.4 puts a user-id embedding in front of the
//! SASRec input). Actions are the environment's items `1..n_items`; padding and user tokens
//! are masked out of both heads.

use super::env::{Environment, Start};
use super::judge::{Judge, distil};
use crate::error::{Error, Result};
use crate::models::rl::samples::window_batch;
use crate::models::rl::{RlKind, RlModel, SupHead};
use crate::models::{Batch, SasRecConfig, SasRecModel, TrainModel};
use crate::nn::optim::{Adam, Optimizer, clip_grad_norm};
use crate::nn::param::zero_grads;
use crate::nn::{Module, Rng};
use std::fmt;
use std::str::FromStr;

/// The network every agent uses: SASRec, actor (supervised head) and critic (Q head).
pub type Net = RlModel<SasRecModel>;

/// Which agent.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum AgentKind {
    /// Deep Q-learning.
    Dqn,
    /// REINFORCE.
    Pg,
    /// Advantage actor-critic, randomly initialised.
    A2c,
    /// The pre-trained agent, no online updates.
    Ialp,
    /// The pre-trained agent, fine-tuned online.
    IalpFt,
    /// The pre-trained agent frozen, an adaptive policy mixed in.
    IalpAp,
}

impl AgentKind {
    /// Every kind, in CLI order.
    pub const ALL: [AgentKind; 6] = [
        AgentKind::Dqn,
        AgentKind::Pg,
        AgentKind::A2c,
        AgentKind::Ialp,
        AgentKind::IalpFt,
        AgentKind::IalpAp,
    ];

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            AgentKind::Dqn => "dqn",
            AgentKind::Pg => "pg",
            AgentKind::A2c => "a2c",
            AgentKind::Ialp => "ialp",
            AgentKind::IalpFt => "ialp-ft",
            AgentKind::IalpAp => "ialp-ap",
        }
    }

    /// Whether the agent starts from a judge-pre-trained network.
    pub fn pretrained(self) -> bool {
        matches!(
            self,
            AgentKind::Ialp | AgentKind::IalpFt | AgentKind::IalpAp
        )
    }
}

impl fmt::Display for AgentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AgentKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.to_ascii_lowercase();
        AgentKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| Error::unknown_name("agent", &s, "dqn, pg, a2c, ialp, ialp-ft, ialp-ap"))
    }
}

/// How an agent picks an action from its policy (§8.5).
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Explore {
    /// A uniformly random item with probability ε, else the greedy one.
    Eps(f32),
    /// A draw from the policy.
    Sample,
    /// The most probable item.
    Greedy,
}

impl FromStr for Explore {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "eps" | "epsilon" => Ok(Explore::Eps(0.1)),
            "sample" => Ok(Explore::Sample),
            "greedy" => Ok(Explore::Greedy),
            _ => Err(Error::unknown_name("exploration", s, "eps, sample, greedy")),
        }
    }
}

/// The actor's loss on a replayed transition `(s, a)`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Advantage {
    /// §8.2 as written: `−log π(a|s)·A` with the critic's TD error
    /// `A = r + γ·max Q(s') − Q(s,a)`. It vanishes for every replayed action once the critic
    /// fits, so the actor stops learning.
    Td,
    /// `−log π(a|s)·(Q(s,a) − V(s))`, `V(s) = Σ_a' π(a'|s)·Q(s,a')`: the sampled-action
    /// advantage with a Q critic. Replayed actions come from older policies, which makes it
    /// noisy off-policy.
    QMinusV,
    /// `−Σ_a π(a|s)·Q(s,a)` with `Q` detached (the expected, all-actions form, whose gradient
    /// `π_a·(Q(s,a) − V(s))` per logit is the advantage of every action at once): it needs no
    /// sampled action, so it stays right on replayed states. The default.
    Expected,
}

impl FromStr for Advantage {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "td" => Ok(Advantage::Td),
            "q-v" | "qv" => Ok(Advantage::QMinusV),
            "expected" => Ok(Advantage::Expected),
            _ => Err(Error::unknown_name("advantage", s, "td, q-v, expected")),
        }
    }
}

/// Agent hyper-parameters (\[R\] where the thesis is silent; see `docs/online.md`).
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Discount γ (0.9, §8.2).
    pub gamma: f32,
    /// Adam learning rate.
    pub lr: f32,
    /// Transitions per update.
    pub batch: usize,
    /// Replay buffer capacity (transitions).
    pub buffer: usize,
    /// DQN: updates between target-network copies.
    pub target_sync: u64,
    /// SASRec width.
    pub hidden: usize,
    /// SASRec layers.
    pub layers: usize,
    /// Global gradient-norm clip.
    pub clip: f32,
    /// A-iALP_ap: the mixture weight α at step 0.
    pub alpha0: f32,
    /// A-iALP_ap: steps over which α rises to 1.
    pub alpha_ramp: u64,
    /// Exploration.
    pub explore: Explore,
    /// The actor's advantage.
    pub advantage: Advantage,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            gamma: 0.9,
            lr: 1e-3,
            batch: 32,
            buffer: 10_000,
            target_sync: 500,
            hidden: 64,
            layers: 1,
            clip: 5.0,
            alpha0: 0.1,
            alpha_ramp: 25_000,
            explore: Explore::Sample,
            advantage: Advantage::Expected,
        }
    }
}

/// One replayed transition: the state window, the action, the reward, whether the user left.
#[derive(Clone, Debug)]
struct Transition {
    state: Vec<u32>,
    action: u32,
    reward: f32,
    done: bool,
}

/// The shape of an environment as an agent sees it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Catalog size including padding (actions are `1..n_items`).
    pub n_items: usize,
    /// User tokens follow the items (0 when episodes start from an item).
    pub n_users: usize,
    /// The longest state window (the longest episode plus its first token).
    pub max_len: usize,
}

impl Shape {
    /// The shape of `env` for episodes of at most `max_steps` steps.
    pub fn of(env: &dyn Environment, max_steps: usize) -> Self {
        Shape {
            n_items: env.n_items(),
            n_users: env.n_users(),
            max_len: max_steps + 1,
        }
    }

    /// Token vocabulary: items, then one token per user.
    pub fn vocab(&self) -> usize {
        self.n_items + self.n_users
    }

    /// The first state window of an episode.
    pub fn first_state(&self, start: Start) -> Vec<u32> {
        match start {
            Start::User(u) => vec![self.n_items as u32 + u],
            Start::Item(i) => vec![i],
        }
    }
}

/// An agent: its networks, optimizers, replay buffer and exploration.
#[derive(Debug)]
pub struct Agent {
    kind: AgentKind,
    cfg: AgentConfig,
    shape: Shape,
    /// The policy θ (frozen for iALP and A-iALP_ap once deployed).
    theta: Net,
    /// A-iALP_ap's adaptive policy β.
    beta: Option<Net>,
    /// DQN's target network.
    target: Option<Net>,
    opt: Adam,
    buffer: Vec<Transition>,
    next_slot: usize,
    /// PG: the current episode's (state, action, reward).
    episode: Vec<Transition>,
    /// PG: running mean of returns (the baseline).
    baseline: f32,
    updates: u64,
    /// Online steps taken (drives α).
    pub steps: u64,
    rng: Rng,
}

/// A fresh network over `shape`.
pub fn new_net(shape: &Shape, cfg: &AgentConfig, rng: &mut Rng) -> Net {
    let mut sc = SasRecConfig::new(shape.vocab(), shape.max_len);
    sc.hidden = cfg.hidden;
    sc.n_layers = cfg.layers;
    sc.inner = 4 * cfg.hidden;
    sc.hidden_dropout = 0.0;
    sc.attn_dropout = 0.0;
    let backbone = SasRecModel::new(sc, rng);
    RlModel::new(RlKind::Sa2c, SupHead::Linear, shape.vocab(), backbone, rng)
}

/// A batch of windows `s ⊕ a` with two outputs each: the state `s` (its last position) and the
/// next state `s'` (one further), every state's output first. Windows longer than `max_len`
/// keep their last `max_len`.
fn pair_batch(net: &Net, items: &[(&[u32], u32)]) -> Batch {
    let max_len = net.backbone().max_len();
    let windows: Vec<Vec<u32>> = items
        .iter()
        .map(|(s, a)| {
            let mut w: Vec<u32> = s.to_vec();
            w.push(*a);
            let cut = w.len().saturating_sub(max_len);
            w.split_off(cut)
        })
        .collect();
    let refs: Vec<(&[u32], u32)> = windows.iter().map(|w| (&w[..], 0)).collect();
    let mut b = window_batch(&refs, net.backbone());
    let next = std::mem::take(&mut b.out_pos);
    b.out_pos = next
        .iter()
        .map(|&(r, t)| (r, t - 1))
        .chain(next.iter().copied())
        .collect();
    b.targets = vec![0; b.out_pos.len()];
    b
}

/// A batch of single state windows (their last `max_len` items), one output each at its end.
fn state_batch(net: &Net, states: &[&[u32]]) -> Batch {
    let max_len = net.backbone().max_len();
    let windows: Vec<(&[u32], u32)> = states
        .iter()
        .map(|s| (&s[s.len().saturating_sub(max_len)..], 0))
        .collect();
    window_batch(&windows, net.backbone())
}

/// Softmax over the actions `1..n_items` of each row of `logits` (`[rows, vocab]`); other
/// columns get probability 0.
pub fn masked_softmax(logits: &[f32], vocab: usize, n_items: usize) -> Vec<f32> {
    let mut p = vec![0.0f32; logits.len()];
    for (row, out) in logits.chunks_exact(vocab).zip(p.chunks_exact_mut(vocab)) {
        let valid = &row[1..n_items];
        let m = valid.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut z = 0.0f32;
        for (o, &v) in out[1..n_items].iter_mut().zip(valid) {
            *o = (v - m).exp();
            z += *o;
        }
        for o in &mut out[1..n_items] {
            *o /= z;
        }
    }
    p
}

/// The largest value over the actions `1..n_items` of each row.
fn masked_max(q: &[f32], vocab: usize, n_items: usize) -> Vec<f32> {
    q.chunks_exact(vocab)
        .map(|row| {
            row[1..n_items]
                .iter()
                .copied()
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .collect()
}

/// A draw from the distribution `p` (non-negative, summing to about 1).
fn draw(p: &[f32], rng: &mut Rng) -> usize {
    let u = rng.next_f64() as f32 * p.iter().sum::<f32>();
    let mut acc = 0.0;
    let mut last = 0;
    for (i, &v) in p.iter().enumerate() {
        if v > 0.0 {
            acc += v;
            last = i;
            if u < acc {
                return i;
            }
        }
    }
    last
}

fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0
}

/// The detached quantities of an A2C-family update: TD targets `y = r + γ·max Q(s')` (0
/// bootstrap after the user left), advantages `A = y − Q(s,a)` at the current parameters, and
/// for A-iALP_ap the frozen policy's `π_θ(a|s)` with the mixture weight α.
#[derive(Clone, Debug)]
pub struct Detached {
    /// TD targets, one per transition.
    pub y: Vec<f32>,
    /// Advantages, one per transition (the sampled-action actor losses).
    pub adv: Vec<f32>,
    /// Critic values `Q(s,·)`, `[rows, vocab]` (the expected actor loss).
    pub q: Option<Vec<f32>>,
    /// A-iALP_ap: `(π_θ(a|s) per transition, α)`.
    pub mixture: Option<(Vec<f32>, f32)>,
    /// Whether the actor loss is included (not for DQN).
    pub actor: bool,
}

/// The A2C-family loss of a mini-batch (`pb` from `pair_batch`, the states' outputs first)
/// with the detached quantities `detach` makes from the forward's outputs:
/// `mean (y − Q(s,a))² + mean −log π̃(a|s)·A`, `π̃ = π` or `(1−α)π_θ + απ` (the gradient
/// reaches only `net`). With `grad`, adds every parameter gradient of `net`.
pub fn a2c_loss(
    net: &mut Net,
    pb: &Batch,
    actions: &[u32],
    detach: impl FnOnce(&Net, &[f32]) -> Detached,
    n_items: usize,
    grad: bool,
) -> f64 {
    let rows = actions.len();
    let v = net.n_items();
    let (h, cache) = net.backbone().forward(pb, None);
    let det = detach(net, &h);
    let d = h.len() / (2 * rows);
    let hs = &h[..rows * d];
    let q_sa = net.q_columns(0, hs, rows, actions, 1);
    let mut loss = 0.0f64;
    let mut dq = vec![0.0f32; rows];
    for r in 0..rows {
        let delta = det.y[r] - q_sa[r];
        loss += f64::from(delta * delta) / rows as f64;
        dq[r] = -2.0 * delta / rows as f32;
    }
    let mut dl = Vec::new();
    if det.actor {
        let p = masked_softmax(&net.sup_logits(hs, rows), v, n_items);
        dl = vec![0.0f32; rows * v];
        for r in 0..rows {
            let a = actions[r] as usize;
            let row_p = &p[r * v..(r + 1) * v];
            let row = &mut dl[r * v..(r + 1) * v];
            if let Some(q) = &det.q {
                // −α·Σ_a π(a)Q(a) (α = 1 without a mixture; the frozen π_θ part is constant):
                // ∂/∂z_j = −α·π_j·(Q_j − V).
                let alpha = det.mixture.as_ref().map_or(1.0, |m| m.1);
                let qr = &q[r * v..(r + 1) * v];
                let value: f32 = row_p.iter().zip(qr).map(|(x, y)| x * y).sum();
                loss -= f64::from(alpha * value) / rows as f64;
                let g = alpha / rows as f32;
                for ((o, &pi), &qj) in row.iter_mut().zip(row_p).zip(qr) {
                    *o = -g * pi * (qj - value);
                }
                continue;
            }
            let pa = row_p[a].max(1e-30);
            let (mix, scale) = match &det.mixture {
                Some((pt, alpha)) => {
                    let mix = (1.0 - alpha) * pt[r] + alpha * pa;
                    (mix, alpha * pa / mix.max(1e-30))
                }
                None => (pa, 1.0),
            };
            loss -= f64::from(mix.max(1e-30).ln() * det.adv[r]) / rows as f64;
            // ∂(−log π̃(a))/∂z = (απ(a)/π̃(a))·(π − e_a).
            log_prob_grad(row, row_p, a, det.adv[r] * scale / rows as f32);
        }
    }
    if grad {
        let mut dh = net.q_columns_backward(0, hs, rows, actions, 1, &dq);
        if det.actor {
            let dh2 = net.sup_backward(hs, rows, &dl);
            for (x, y) in dh.iter_mut().zip(&dh2) {
                *x += y;
            }
        }
        dh.resize(2 * rows * d, 0.0);
        net.backbone_mut().backward(&cache, &dh);
    }
    loss
}

/// Writes `g·(π − e_a)` into `out`: the logit gradient of `−g·log π(a)` for the softmax `p`.
fn log_prob_grad(out: &mut [f32], p: &[f32], a: usize, g: f32) {
    for (o, &pi) in out.iter_mut().zip(p) {
        *o = g * pi;
    }
    out[a] -= g;
}

/// REINFORCE's loss `mean −log π(a_t|s_t)·adv_t` over one episode's states (`sb`, one output
/// each); with `grad`, adds every parameter gradient of `net`.
pub fn pg_loss(
    net: &mut Net,
    sb: &Batch,
    actions: &[u32],
    adv: &[f32],
    n_items: usize,
    grad: bool,
) -> f64 {
    let rows = actions.len();
    let v = net.n_items();
    let (h, cache) = net.backbone().forward(sb, None);
    let p = masked_softmax(&net.sup_logits(&h, rows), v, n_items);
    let mut dl = vec![0.0f32; rows * v];
    let mut loss = 0.0f64;
    for r in 0..rows {
        let a = actions[r] as usize;
        loss -= f64::from(p[r * v + a].max(1e-30).ln() * adv[r]) / rows as f64;
        log_prob_grad(
            &mut dl[r * v..(r + 1) * v],
            &p[r * v..(r + 1) * v],
            a,
            adv[r] / rows as f32,
        );
    }
    if grad {
        let dh = net.sup_backward(&h, rows, &dl);
        net.backbone_mut().backward(&cache, &dh);
    }
    loss
}

impl Agent {
    /// A randomly initialised agent of `kind` (pre-trained kinds start from `init` when given).
    pub fn new(
        kind: AgentKind,
        cfg: AgentConfig,
        shape: Shape,
        init: Option<Net>,
        seed: u64,
    ) -> Self {
        let mut rng = Rng::new(seed);
        let theta = init.unwrap_or_else(|| new_net(&shape, &cfg, &mut rng));
        let beta = (kind == AgentKind::IalpAp).then(|| {
            // Encoder and critic copied from θ, a fresh random actor (§8.3 [R]).
            let fresh = new_net(&shape, &cfg, &mut rng);
            let mut b = theta.clone();
            for (p, f) in b.params_mut().into_iter().zip(fresh.params()) {
                if p.name.starts_with("sup_head.") {
                    p.value.copy_from_slice(&f.value);
                }
            }
            b
        });
        let target = (kind == AgentKind::Dqn).then(|| theta.clone());
        Agent {
            kind,
            cfg,
            shape,
            theta,
            beta,
            target,
            opt: Adam::new(0.0),
            buffer: Vec::new(),
            next_slot: 0,
            episode: Vec::new(),
            baseline: 0.0,
            updates: 0,
            steps: 0,
            rng,
        }
    }

    /// The kind.
    pub fn kind(&self) -> AgentKind {
        self.kind
    }

    /// The environment shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// The network that acts at the end of a run (β for A-iALP_ap, whose α has reached 1).
    pub fn acting_net(&self) -> &Net {
        self.beta.as_ref().unwrap_or(&self.theta)
    }

    /// The pre-trained (or learning) policy θ.
    pub fn theta(&self) -> &Net {
        &self.theta
    }

    /// The policy θ, taken out (a pre-trained agent's network, to start another agent from).
    pub fn into_theta(self) -> Net {
        self.theta
    }

    /// A-iALP_ap's mixture weight now.
    pub fn alpha(&self) -> f32 {
        let c = &self.cfg;
        let t = (self.steps as f32 / c.alpha_ramp.max(1) as f32).min(1.0);
        c.alpha0 + (1.0 - c.alpha0) * t
    }

    fn probs(&self, net: &Net, h: &[f32], rows: usize) -> Vec<f32> {
        let v = self.shape.vocab();
        masked_softmax(&net.sup_logits(h, rows), v, self.shape.n_items)
    }

    /// The acting distribution over the vocabulary for `state` (DQN: a softmax of Q).
    pub fn policy(&self, state: &[u32]) -> Vec<f32> {
        let v = self.shape.vocab();
        let b = state_batch(&self.theta, &[state]);
        let (h, _) = self.theta.backbone().forward(&b, None);
        match self.kind {
            AgentKind::Dqn => masked_softmax(&self.theta.q_full(0, &h, 1), v, self.shape.n_items),
            AgentKind::IalpAp => {
                let beta = self.beta.as_ref().expect("ap has β");
                let (hb, _) = beta.backbone().forward(&b, None);
                let a = self.alpha();
                let pt = self.probs(&self.theta, &h, 1);
                let pb = self.probs(beta, &hb, 1);
                pt.iter()
                    .zip(&pb)
                    .map(|(x, y)| (1.0 - a) * x + a * y)
                    .collect()
            }
            _ => self.probs(&self.theta, &h, 1),
        }
    }

    /// Picks an item for `state` with the configured exploration, never one already in the
    /// state (an item the user was shown in this episode).
    pub fn act(&mut self, state: &[u32]) -> u32 {
        let mut p = self.policy(state);
        let n = self.shape.n_items;
        for &x in state {
            if (x as usize) < n {
                p[x as usize] = 0.0;
            }
        }
        if p[1..n].iter().all(|&x| x <= 0.0) {
            // Every item shown (or a policy without mass elsewhere): uniform over unseen.
            for (i, x) in p.iter_mut().enumerate().take(n).skip(1) {
                *x = if state.contains(&(i as u32)) {
                    0.0
                } else {
                    1.0
                };
            }
        }
        let id = match self.cfg.explore {
            Explore::Greedy => argmax(&p),
            Explore::Eps(e) if (self.rng.next_f64() as f32) < e => {
                let unseen: Vec<f32> = (0..p.len())
                    .map(|i| f32::from(u8::from(i >= 1 && i < n && !state.contains(&(i as u32)))))
                    .collect();
                draw(&unseen, &mut self.rng)
            }
            Explore::Eps(_) => argmax(&p),
            Explore::Sample => draw(&p, &mut self.rng),
        };
        id as u32
    }

    /// Records a transition (the state before the action).
    pub fn observe(&mut self, state: &[u32], action: u32, reward: f32, done: bool) {
        let t = Transition {
            state: state.to_vec(),
            action,
            reward,
            done,
        };
        if self.kind == AgentKind::Pg {
            self.episode.push(t);
            return;
        }
        if self.buffer.len() < self.cfg.buffer {
            self.buffer.push(t);
        } else {
            self.buffer[self.next_slot] = t;
            self.next_slot = (self.next_slot + 1) % self.cfg.buffer;
        }
    }

    /// One online learning step after an environment step (none for iALP; PG learns at the
    /// end of an episode). Returns the loss, if an update ran.
    pub fn learn(&mut self, episode_over: bool) -> Option<f64> {
        self.steps += 1;
        match self.kind {
            AgentKind::Ialp => None,
            AgentKind::Pg => episode_over.then(|| self.pg_update()),
            _ => (!self.buffer.is_empty()).then(|| self.replay_update()),
        }
    }

    fn sample_batch(&mut self) -> Vec<Transition> {
        let n = self.buffer.len();
        (0..self.cfg.batch.min(n.max(1)))
            .map(|_| self.buffer[self.rng.below(n)].clone())
            .collect()
    }

    fn replay_update(&mut self) -> f64 {
        let batch = self.sample_batch();
        let rows = batch.len();
        let (v, n_items, gamma) = (self.shape.vocab(), self.shape.n_items, self.cfg.gamma);
        let pairs: Vec<(&[u32], u32)> = batch.iter().map(|t| (&t.state[..], t.action)).collect();
        let pb = pair_batch(&self.theta, &pairs);
        let actions: Vec<u32> = batch.iter().map(|t| t.action).collect();
        // The bootstrap value of each next state: DQN's target network, else the learner.
        let next_max = |net: &Net| -> Vec<f32> {
            let (h, _) = net.backbone().forward(&pb, None);
            let d = h.len() / (2 * rows);
            masked_max(&net.q_full(0, &h[rows * d..], rows), v, n_items)
        };
        let mixture = (self.kind == AgentKind::IalpAp).then(|| {
            let (h, _) = self.theta.backbone().forward(&pb, None);
            let d = h.len() / (2 * rows);
            let p = self.probs(&self.theta, &h[..rows * d], rows);
            let pa = (0..rows).map(|r| p[r * v + actions[r] as usize]).collect();
            (pa, self.alpha())
        });
        let boot = self.target.as_ref().map(next_max);
        let actor = self.kind != AgentKind::Dqn;
        let advantage = self.cfg.advantage;
        let learner = self.beta.as_mut().unwrap_or(&mut self.theta);
        // Targets and advantages from the learner's own forward (no second pass).
        let detach = |net: &Net, h: &[f32]| -> Detached {
            let d = h.len() / (2 * rows);
            let boot = boot
                .unwrap_or_else(|| masked_max(&net.q_full(0, &h[rows * d..], rows), v, n_items));
            let q_sa = net.q_columns(0, &h[..rows * d], rows, &actions, 1);
            let y: Vec<f32> = batch
                .iter()
                .zip(&boot)
                .map(|(t, &b)| t.reward + if t.done { 0.0 } else { gamma * b })
                .collect();
            let mut q_rows = None;
            let adv = match advantage {
                Advantage::Td => y.iter().zip(&q_sa).map(|(y, q)| y - q).collect(),
                Advantage::Expected => {
                    q_rows = Some(net.q_full(0, &h[..rows * d], rows));
                    Vec::new()
                }
                Advantage::QMinusV => {
                    let hs = &h[..rows * d];
                    let q = net.q_full(0, hs, rows);
                    let p = masked_softmax(&net.sup_logits(hs, rows), v, n_items);
                    (0..rows)
                        .map(|r| {
                            let row = r * v..(r + 1) * v;
                            let value: f32 =
                                q[row.clone()].iter().zip(&p[row]).map(|(a, b)| a * b).sum();
                            q_sa[r] - value
                        })
                        .collect()
                }
            };
            Detached {
                adv,
                q: q_rows,
                y,
                mixture,
                actor,
            }
        };
        zero_grads(&mut learner.params_mut());
        let loss = a2c_loss(learner, &pb, &actions, detach, n_items, true);
        clip_grad_norm(&mut learner.params_mut(), self.cfg.clip);
        self.opt.step(&mut learner.params_mut(), self.cfg.lr);
        self.updates += 1;
        if let Some(t) = &mut self.target {
            if self.updates % self.cfg.target_sync == 0 {
                t.clone_from(&self.theta);
            }
        }
        loss
    }

    fn pg_update(&mut self) -> f64 {
        let ep = std::mem::take(&mut self.episode);
        if ep.is_empty() {
            return 0.0;
        }
        let n_items = self.shape.n_items;
        let mut g = 0.0f32;
        let mut returns = vec![0.0f32; ep.len()];
        for (i, t) in ep.iter().enumerate().rev() {
            g = t.reward + self.cfg.gamma * g;
            returns[i] = g;
        }
        let mean = returns.iter().sum::<f32>() / returns.len() as f32;
        let b = self.baseline;
        self.baseline = if self.updates == 0 {
            mean
        } else {
            0.9 * b + 0.1 * mean
        };
        let states: Vec<&[u32]> = ep.iter().map(|t| &t.state[..]).collect();
        let sb = state_batch(&self.theta, &states);
        let actions: Vec<u32> = ep.iter().map(|t| t.action).collect();
        let adv: Vec<f32> = returns.iter().map(|g| g - b).collect();
        let net = &mut self.theta;
        zero_grads(&mut net.params_mut());
        let loss = pg_loss(net, &sb, &actions, &adv, n_items, true);
        clip_grad_norm(&mut net.params_mut(), self.cfg.clip);
        self.opt.step(&mut net.params_mut(), self.cfg.lr);
        self.updates += 1;
        loss
    }

    /// Algorithm 5, on an A2C agent: `epochs` episodes of `steps` judge queries from starts
    /// drawn from `env` (the training environment): at each step `k` distinct candidates not
    /// yet in the state are drawn from the actor without replacement, the judge picks one
    /// (reward 1) or none (a random candidate, reward 0), the pick joins the state and the
    /// agent takes an A2C update on a replayed mini-batch, with §8.2's TD-error actor loss
    /// (see [`Advantage::Td`]). Returns the share of queries the judge answered with a
    /// candidate.
    ///
    /// # Errors
    /// The judge's failures, naming the query.
    pub fn pretrain(
        &mut self,
        env: &mut dyn Environment,
        judge: &mut dyn Judge,
        epochs: usize,
        steps: usize,
        k: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<f64> {
        if self.kind != AgentKind::A2c {
            return Err(Error::Invalid(format!(
                "pre-training runs on an a2c agent, not {}",
                self.kind
            )));
        }
        // The judge's picks are distilled with §8.2's actor loss as written: early in training
        // the TD error is about the judge's reward, so the actor imitates its choices.
        let online_loss = std::mem::replace(&mut self.cfg.advantage, Advantage::Td);
        let n_items = self.shape.n_items;
        let mut chosen = 0usize;
        let mut queries = 0usize;
        let catalog = env.catalog().clone();
        for epoch in 0..epochs {
            let start = env.reset(&mut self.rng);
            let mut state = self.shape.first_state(start);
            for t in 0..steps {
                let mut p = self.policy(&state);
                for &x in &state {
                    if (x as usize) < n_items {
                        p[x as usize] = 0.0;
                    }
                }
                let candidates = self.sample_distinct(&p[..n_items], k);
                let history: Vec<u32> = state
                    .iter()
                    .copied()
                    .filter(|&x| (x as usize) < n_items)
                    .collect();
                let verdict = judge
                    .judge(&catalog, &history, &candidates)
                    .map_err(|e| Error::Invalid(e.to_string()))?;
                let (a, r) = distil(&verdict, &candidates, &mut self.rng);
                queries += 1;
                chosen += usize::from(r > 0.0);
                self.observe(&state, a, r, t + 1 == steps);
                state.push(a);
                self.replay_update();
            }
            progress(epoch + 1);
        }
        self.cfg.advantage = online_loss;
        Ok(chosen as f64 / queries.max(1) as f64)
    }

    /// `k` distinct items drawn from `p` without replacement (Gumbel top-k).
    fn sample_distinct(&mut self, p: &[f32], k: usize) -> Vec<u32> {
        let mut keys: Vec<(f32, u32)> = p
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, pi)| **pi > 0.0)
            .map(|(i, &pi)| {
                let u = (self.rng.next_f64() as f32).max(1e-30);
                (pi.max(1e-30).ln() - (-u.ln()).ln(), i as u32)
            })
            .collect();
        let k = k.min(keys.len());
        keys.select_nth_unstable_by(k.saturating_sub(1), |a, b| b.0.total_cmp(&a.0));
        let mut out: Vec<(f32, u32)> = keys[..k].to_vec();
        out.sort_by(|a, b| b.0.total_cmp(&a.0));
        out.into_iter().map(|(_, i)| i).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::{GradCheck, assert_param_grads, randomize};
    use crate::online::env::{Catalog, Episode as Ep, Step, Threshold};

    fn tiny() -> (Shape, AgentConfig) {
        let shape = Shape {
            n_items: 7,
            n_users: 2,
            max_len: 6,
        };
        let cfg = AgentConfig {
            hidden: 8,
            batch: 4,
            ..AgentConfig::default()
        };
        (shape, cfg)
    }

    fn batch_of(net: &Net) -> (Batch, Vec<u32>) {
        let states: Vec<Vec<u32>> = vec![vec![7, 3], vec![2, 5, 1], vec![8], vec![4, 4, 6, 2]];
        let actions = vec![5u32, 2, 6, 1];
        let pairs: Vec<(&[u32], u32)> = states
            .iter()
            .zip(&actions)
            .map(|(s, &a)| (&s[..], a))
            .collect();
        (pair_batch(net, &pairs), actions)
    }

    fn check_a2c(mixture: bool, expected: bool) {
        let (shape, cfg) = tiny();
        let mut rng = Rng::new(5);
        let mut net = new_net(&shape, &cfg, &mut rng);
        randomize(&mut net, &mut rng, 0.3);
        let (pb, actions) = batch_of(&net);
        let det = Detached {
            y: vec![0.7, -0.2, 1.3, 0.1],
            adv: vec![0.5, -1.1, 0.9, 0.3],
            q: expected.then(|| {
                (0..4 * shape.vocab())
                    .map(|i| ((i * 7) % 11) as f32 * 0.2 - 1.0)
                    .collect()
            }),
            mixture: mixture.then(|| (vec![0.1, 0.3, 0.05, 0.2], 0.4)),
            actor: true,
        };
        let base = net.clone();
        zero_grads(&mut net.params_mut());
        a2c_loss(
            &mut net,
            &pb,
            &actions,
            |_, _| det.clone(),
            shape.n_items,
            true,
        );
        let f = |m: &Net| {
            a2c_loss(
                &mut m.clone(),
                &pb,
                &actions,
                |_, _| det.clone(),
                shape.n_items,
                false,
            )
        };
        let worst = assert_param_grads("a2c", &base, &net, f, &GradCheck::new(1e-2, 2e-3, 2e-3));
        assert!(worst.is_finite());
    }

    #[test]
    fn actor_and_critic_losses_match_finite_differences() {
        check_a2c(false, false);
        check_a2c(false, true);
    }

    #[test]
    fn mixture_actor_loss_matches_finite_differences() {
        check_a2c(true, false);
        check_a2c(true, true);
    }

    #[test]
    fn reinforce_loss_matches_finite_differences() {
        let (shape, cfg) = tiny();
        let mut rng = Rng::new(6);
        let mut net = new_net(&shape, &cfg, &mut rng);
        randomize(&mut net, &mut rng, 0.3);
        let states: Vec<Vec<u32>> = vec![vec![8], vec![8, 3], vec![8, 3, 5]];
        let refs: Vec<&[u32]> = states.iter().map(|s| &s[..]).collect();
        let sb = state_batch(&net, &refs);
        let actions = [3u32, 5, 6];
        let adv = [1.5f32, -0.4, 0.8];
        let base = net.clone();
        zero_grads(&mut net.params_mut());
        pg_loss(&mut net, &sb, &actions, &adv, shape.n_items, true);
        let f = |m: &Net| pg_loss(&mut m.clone(), &sb, &actions, &adv, shape.n_items, false);
        assert_param_grads("pg", &base, &net, f, &GradCheck::new(1e-2, 2e-3, 2e-3));
    }

    #[test]
    fn masked_softmax_gives_padding_and_user_tokens_nothing() {
        let p = masked_softmax(&[9.0, 1.0, 2.0, 3.0, 50.0], 5, 4);
        assert_eq!(p[0], 0.0);
        assert_eq!(p[4], 0.0);
        assert!((p[1..4].iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    /// A toy population: the best next item is `last % 12 + 1` (reward 1, else 0); episodes of
    /// eight steps from a random item, so the rewarded item is never one already shown.
    #[derive(Debug)]
    struct Walk {
        ep: Ep,
        catalog: Catalog,
    }

    impl Walk {
        fn new() -> Self {
            Walk {
                ep: Ep::new(Box::new(Threshold {
                    threshold: -1.0,
                    patience: 1,
                    max_len: 8,
                })),
                catalog: Catalog {
                    attributes: vec![Vec::new(); 13],
                    ..Catalog::default()
                },
            }
        }
    }

    impl Environment for Walk {
        fn name(&self) -> &str {
            "walk"
        }
        fn n_items(&self) -> usize {
            13
        }
        fn n_users(&self) -> usize {
            0
        }
        fn reset(&mut self, rng: &mut Rng) -> Start {
            let first = 1 + rng.below(12) as u32;
            self.ep.reset(Some(first));
            Start::Item(first)
        }
        fn step(&mut self, item: u32) -> Step {
            let last = *self.ep.history.last().unwrap();
            let r = if item == last % 12 + 1 { 1.0 } else { 0.0 };
            self.ep.record(item, r)
        }
        fn history(&self) -> &[u32] {
            &self.ep.history
        }
        fn catalog(&self) -> &Catalog {
            &self.catalog
        }
    }

    fn learns(kind: AgentKind, explore: Explore, seed: u64) -> (f64, f64) {
        let mut env = Walk::new();
        let shape = Shape::of(&env, 8);
        let cfg = AgentConfig {
            hidden: 16,
            lr: 3e-3,
            explore,
            ..AgentConfig::default()
        };
        let mut agent = Agent::new(kind, cfg, shape, None, seed);
        let curve = crate::online::run::run_online(&mut agent, &mut env, 3000, 500, 20, 1, |_| {});
        // The start, and the mean of the last three points (1,500 steps).
        let tail = &curve[curve.len() - 3..];
        (curve[0].r, tail.iter().map(|p| p.r).sum::<f64>() / 3.0)
    }

    #[test]
    fn every_learning_agent_improves_on_a_toy_walk() {
        // A random policy earns 8/11 ≈ 0.7 of the best 8 per episode. DQN acts ε-greedily on
        // Q (a softmax of Q is too flat to exploit), the others sample from π.
        for (kind, explore) in [
            (AgentKind::A2c, Explore::Sample),
            (AgentKind::Pg, Explore::Sample),
            (AgentKind::Dqn, Explore::Eps(0.1)),
        ] {
            // Over three agent seeds, so that one unlucky initial draw does not decide.
            let runs: Vec<(f64, f64)> = (3..6).map(|s| learns(kind, explore, s)).collect();
            let mean = |f: fn(&(f64, f64)) -> f64| runs.iter().map(f).sum::<f64>() / 3.0;
            let (first, last) = (mean(|r| r.0), mean(|r| r.1));
            assert!(
                first < 1.5 && last > first + 1.2,
                "{kind}: mean R {first} -> {last} ({runs:?})"
            );
        }
    }

    #[test]
    fn runs_are_deterministic_for_a_seed() {
        assert_eq!(
            learns(AgentKind::A2c, Explore::Sample, 3),
            learns(AgentKind::A2c, Explore::Sample, 3)
        );
    }
}
