//! Online adaptation at serving time (A-iALP_ap, `spec/thesis-models.md` §8.2–8.3): a
//! session's adaptive policy π_β, updated from rewards by [`crate::Model::session_feedback`].
//!
//! The model's actor π_θ = softmax(W_π h + b_π) and critic Q(h, ·) = W_Q h + b_Q are frozen;
//! each session that receives feedback gets its own actor π_β = softmax(W_β h + b_β) and serves
//! the mixture π̃ = (1 − α)·π_θ + α·π_β. One feedback call on the state `s` (the scoring vector
//! `[h, 1]` after the last event) with action `a` and reward `r` appends `a` like a push (the
//! new state is `s'`), stores `(s, a, r, s')` in a ring buffer of the session's last `buffer`
//! transitions, and takes one SGD step on `[W_β | b_β]` for the mean over a mini-batch (the
//! newest transition plus up to `batch − 1` drawn from the older ones) of
//! `−log π̃(a|s) · A`, `A = r + γ·max_a' Q(s', a') − Q(s, a)`.
//!
//! # Why this module computes on the host
//!
//! The frozen products (π_θ's and Q's logits over the catalog) run on the backend, as every
//! catalog scan does ([`crate::backend::Backend::scores`]). What is computed here is what
//! belongs to one session and changes on every call: π_β's logits `[W_β | b_β]·s` and its
//! rank-1 SGD update. The backend's tables ([`crate::blocks::ItemTable`]) are immutable
//! per-model uploads, and the trait has no product of an activation buffer with another, so
//! keeping β on the backend would mean two new trait ops (a buffer-by-buffer product and a
//! rank-1 update) on every backend for one `O(n_items·d)` loop per transition; β stays a host
//! array owned by the session instead, and the loops below are plain f32 code with f64
//! reductions. On a GPU model the frozen logits come back to the host (`n_items` values per
//! scan), as they do for [`crate::Model::score`].
//!
//! Costs: the first feedback allocates β (`n_items·(d + 1)` values), the ring buffer
//! (`buffer` transitions of two state vectors, an id and a reward) and the update's scratch
//! (`(batch + 2)·n_items` values); nothing is allocated afterwards. A call costs
//! `O(batch·n_items·d)`; scoring a session with adaptive state costs two host passes over β on
//! top of the usual scan.

use crate::codec::{Reader, Writer};
use crate::config::Config;
use crate::error::{Error, Result};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

/// Largest accepted ring buffer (`online_buffer`), in transitions.
pub const MAX_FEEDBACK_BUFFER: u32 = 1 << 16;

/// Largest accepted mini-batch (`online_batch`), in transitions.
pub const MAX_FEEDBACK_BATCH: u32 = 1024;

/// Options of online adaptation ([`crate::Model::session_feedback`]). A model's defaults come
/// from its configuration keys `online_lr`, `online_gamma`, `online_alpha0`, `online_ramp`,
/// `online_buffer`, `online_batch` and `online_seed` (see [`FeedbackOptions::default`] for the
/// values when absent); a session may override them
/// ([`crate::Model::session_set_feedback_options`]).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct FeedbackOptions {
    /// SGD step size on `[W_β | b_β]` (finite, > 0).
    pub lr: f32,
    /// Discount γ of the advantage (in `[0, 1]`).
    pub gamma: f32,
    /// Mixture weight α of π_β at the first feedback (in `[0, 1]`).
    pub alpha0: f32,
    /// Feedback calls over which α grows linearly from `alpha0` to 1 (0: α is 1 at once).
    pub ramp: u32,
    /// Transitions kept in the ring buffer (`1 ..= MAX_FEEDBACK_BUFFER`); fixed at the first
    /// feedback.
    pub buffer: u32,
    /// Transitions per SGD step, the newest included (`1 ..= min(buffer, MAX_FEEDBACK_BATCH)`);
    /// fixed at the first feedback.
    pub batch: u32,
    /// Seed of the generator that draws the mini-batches; fixed at the first feedback.
    pub seed: u64,
}

impl Default for FeedbackOptions {
    /// `lr` 0.05, `gamma` 0.9, `alpha0` 0.1, `ramp` 1000, `buffer` 64, `batch` 4, `seed` 0.
    fn default() -> Self {
        FeedbackOptions {
            lr: 0.05,
            gamma: 0.9,
            alpha0: 0.1,
            ramp: 1000,
            buffer: 64,
            batch: 4,
            seed: 0,
        }
    }
}

impl FeedbackOptions {
    /// The options a configuration sets (`online_*` keys), the defaults elsewhere, validated.
    pub fn from_config(cfg: &Config) -> Result<Self> {
        let d = FeedbackOptions::default();
        let count = |key: &str, default: u32| -> Result<u32> {
            let v = cfg.usize_or(key, default as usize)?;
            u32::try_from(v).map_err(|_| Error::Config(format!("`{key}` is {v}: too large")))
        };
        let opts = FeedbackOptions {
            lr: cfg.f32_or("online_lr", d.lr)?,
            gamma: cfg.f32_or("online_gamma", d.gamma)?,
            alpha0: cfg.f32_or("online_alpha0", d.alpha0)?,
            ramp: count("online_ramp", d.ramp)?,
            buffer: count("online_buffer", d.buffer)?,
            batch: count("online_batch", d.batch)?,
            seed: cfg.usize_or("online_seed", d.seed as usize)? as u64,
        };
        opts.validate()
            .map_err(|e| Error::Config(format!("online adaptation: {e}")))?;
        Ok(opts)
    }

    /// Checks every option's range; the message names the first one out of it.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: alloc::string::String| Err(Error::InvalidArgument(msg));
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr is {}: it must be finite and > 0", self.lr));
        }
        if !(0.0..=1.0).contains(&self.gamma) {
            return bad(format!("gamma is {}: it must be in [0, 1]", self.gamma));
        }
        if !(0.0..=1.0).contains(&self.alpha0) {
            return bad(format!("alpha0 is {}: it must be in [0, 1]", self.alpha0));
        }
        if self.buffer == 0 || self.buffer > MAX_FEEDBACK_BUFFER {
            return bad(format!(
                "buffer is {}: it must be in 1..={MAX_FEEDBACK_BUFFER}",
                self.buffer
            ));
        }
        let max_batch = self.buffer.min(MAX_FEEDBACK_BATCH);
        if self.batch == 0 || self.batch > max_batch {
            return bad(format!(
                "batch is {}: it must be in 1..={max_batch} (at most the buffer, {})",
                self.batch, self.buffer
            ));
        }
        Ok(())
    }

    /// α after `steps` feedback calls: `alpha0 + (1 − alpha0)·min(steps, ramp)/ramp`.
    pub fn alpha(&self, steps: u64) -> f32 {
        if self.ramp == 0 {
            return 1.0;
        }
        let f = steps.min(u64::from(self.ramp)) as f64 / f64::from(self.ramp);
        (f64::from(self.alpha0) + (1.0 - f64::from(self.alpha0)) * f) as f32
    }

    fn save(&self, w: &mut Writer) {
        w.u32(self.lr.to_bits());
        w.u32(self.gamma.to_bits());
        w.u32(self.alpha0.to_bits());
        w.varint(u64::from(self.ramp));
        w.varint(u64::from(self.buffer));
        w.varint(u64::from(self.batch));
        w.u64(self.seed);
    }

    fn restore(r: &mut Reader<'_>) -> Result<Self> {
        let f = |r: &mut Reader<'_>, what| r.u32(what).map(f32::from_bits);
        let c = |r: &mut Reader<'_>, what| r.count(what, u32::MAX as usize).map(|v| v as u32);
        let opts = FeedbackOptions {
            lr: f(r, "feedback lr")?,
            gamma: f(r, "feedback gamma")?,
            alpha0: f(r, "feedback alpha0")?,
            ramp: c(r, "feedback ramp")?,
            buffer: c(r, "feedback buffer")?,
            batch: c(r, "feedback batch")?,
            seed: r.u64("feedback seed")?,
        };
        opts.validate().map_err(|e| r.error(e))?;
        Ok(opts)
    }
}

/// splitmix64: the mini-batch generator (its whole state is one `u64`, saved with the session).
fn next_u64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in `0 .. n` (`n > 0`).
fn below(state: &mut u64, n: usize) -> usize {
    ((u128::from(next_u64(state)) * n as u128) >> 64) as usize
}

/// A session's adaptive policy: `[W_β | b_β]`, the ring buffer of transitions, the step count
/// and the generator, plus the update's scratch (not saved).
#[derive(Clone, Debug)]
pub(crate) struct Adaptive {
    /// `[n_items, w]`, row `i` = `[w_β,i, b_β,i]`.
    pub(crate) beta: Vec<f32>,
    /// Row width `w = d + 1` (the scoring vector `[h, 1]`).
    pub(crate) w: usize,
    /// States `s` of the stored transitions, `[buffer, w]`.
    pub(crate) states: Vec<f32>,
    /// Next states `s'`, `[buffer, w]`.
    pub(crate) next_states: Vec<f32>,
    /// Actions, `[buffer]`.
    pub(crate) actions: Vec<u32>,
    /// Rewards, `[buffer]`.
    pub(crate) rewards: Vec<f32>,
    /// Stored transitions (slots `0 .. len`).
    pub(crate) len: usize,
    /// Slot the next transition goes to.
    pub(crate) next: usize,
    /// Feedback calls applied.
    pub(crate) steps: u64,
    /// Generator state.
    pub(crate) rng: u64,
    /// The session's current scoring vector `[h, 1]` on the host (kept in step with the
    /// session's state; the `s` of the next transition).
    pub(crate) current: Vec<f32>,
    /// Scratch: π_θ's logits of one state, `[n_items]`.
    pub(crate) theta: Vec<f32>,
    /// Scratch: Q's values of one state, `[n_items]`.
    pub(crate) q: Vec<f32>,
    /// Scratch: ∂loss/∂(β's logits) per transition of the mini-batch, `[batch, n_items]`.
    pub(crate) grads: Vec<f32>,
    /// Scratch: the mini-batch's slots.
    pub(crate) picks: Vec<usize>,
}

impl Adaptive {
    /// A fresh state whose actor starts as `init` (`[n_items, w]`).
    pub(crate) fn new(init: &[f32], n_items: usize, w: usize, opts: &FeedbackOptions) -> Self {
        let buffer = opts.buffer as usize;
        let batch = opts.batch as usize;
        Adaptive {
            beta: init.to_vec(),
            w,
            states: vec![0.0; buffer * w],
            next_states: vec![0.0; buffer * w],
            actions: vec![0; buffer],
            rewards: vec![0.0; buffer],
            len: 0,
            next: 0,
            steps: 0,
            rng: opts.seed,
            current: vec![0.0; w],
            theta: vec![0.0; n_items],
            q: vec![0.0; n_items],
            grads: vec![0.0; batch * n_items],
            picks: Vec::with_capacity(batch),
        }
    }

    /// Ring-buffer capacity.
    pub(crate) fn buffer(&self) -> usize {
        self.actions.len()
    }

    /// Mini-batch size.
    pub(crate) fn batch(&self) -> usize {
        self.picks.capacity()
    }

    /// Stores the transition whose rows (slot `next` of `states` and `next_states`) were
    /// filled, and draws the mini-batch into `picks`:
    /// its slot, then `min(batch − 1, len − 1)` slots drawn uniformly (with replacement) from
    /// the older transitions.
    pub(crate) fn commit(&mut self, action: u32, reward: f32) {
        let slot = self.next;
        self.actions[slot] = action;
        self.rewards[slot] = reward;
        self.next = (slot + 1) % self.buffer();
        self.len = (self.len + 1).min(self.buffer());
        self.picks.clear();
        self.picks.push(slot);
        let older = self.len - 1;
        for _ in 0..(self.batch() - 1).min(older) {
            // Draw among the `older` slots other than `slot`.
            let k = below(&mut self.rng, older);
            self.picks.push(if k >= slot { k + 1 } else { k });
        }
    }

    /// Applies the mini-batch's step: `[W_β | b_β] −= lr/m · Σ_t g_t ⊗ s_t` over the `m`
    /// picked transitions, `g_t` the rows of `grads`.
    pub(crate) fn apply(&mut self, lr: f32) {
        let m = self.picks.len();
        let n = self.theta.len();
        let w = self.w;
        let step = -(lr / m as f32);
        for (t, &slot) in self.picks.iter().enumerate() {
            let g = &self.grads[t * n..(t + 1) * n];
            let s = &self.states[slot * w..(slot + 1) * w];
            rank1_update(&mut self.beta, w, step, g, s);
        }
        self.steps += 1;
    }

    /// Writes the state (the scratch is not saved).
    pub(crate) fn save(&self, w: &mut Writer) {
        w.u64(self.steps);
        w.u64(self.rng);
        w.varint(self.len as u64);
        w.varint(self.next as u64);
        w.f32s(&self.beta);
        w.f32s(&self.states[..self.len * self.w]);
        w.f32s(&self.next_states[..self.len * self.w]);
        for &a in &self.actions[..self.len] {
            w.varint(u64::from(a));
        }
        w.f32s(&self.rewards[..self.len]);
    }

    /// Reads a state written by [`Adaptive::save`] for a model of `n_items` items and state
    /// width `w` under `opts` (whose buffer and batch sized it).
    pub(crate) fn restore(
        r: &mut Reader<'_>,
        n_items: usize,
        w: usize,
        opts: &FeedbackOptions,
    ) -> Result<Self> {
        let mut a = Adaptive::new(&[], n_items, w, opts);
        a.steps = r.u64("feedback steps")?;
        a.rng = r.u64("feedback generator")?;
        let buffer = a.buffer();
        a.len = r.count("feedback transitions", buffer)?;
        a.next = r.count("feedback next slot", buffer - 1)?;
        if a.len < buffer && a.next != a.len {
            return Err(r.error(format_args!(
                "feedback ring buffer: next slot {} with {} of {buffer} transitions",
                a.next, a.len
            )));
        }
        if a.steps == 0 || (a.steps as usize) < a.len {
            return Err(r.error(format_args!(
                "feedback: {} steps for {} stored transitions",
                a.steps, a.len
            )));
        }
        r.f32s("adaptive actor", n_items * w, &mut a.beta)?;
        let (len, mut rows) = (a.len, Vec::new());
        r.f32s("feedback states", len * w, &mut rows)?;
        a.states[..len * w].copy_from_slice(&rows);
        rows.clear();
        r.f32s("feedback next states", len * w, &mut rows)?;
        a.next_states[..len * w].copy_from_slice(&rows);
        let max = (n_items - 1) as u64;
        for slot in 0..len {
            let id = r.varint("feedback action")?;
            if id == 0 || id > max {
                return Err(r.error(format_args!(
                    "feedback action {id} in slot {slot} is out of range 1..={max}"
                )));
            }
            a.actions[slot] = id as u32;
        }
        rows.clear();
        r.f32s("feedback rewards", len, &mut rows)?;
        a.rewards[..len].copy_from_slice(&rows);
        Ok(a)
    }
}

/// Writes the per-session options and, when present, the adaptive state: the saved session's
/// feedback section ([`crate::SESSION_FORMAT_VERSION`]).
pub(crate) fn save_section(opts: &FeedbackOptions, ad: Option<&Adaptive>, w: &mut Writer) {
    opts.save(w);
    w.u8(u8::from(ad.is_some()));
    if let Some(ad) = ad {
        ad.save(w);
    }
}

/// Reads what [`save_section`] wrote.
pub(crate) fn restore_section(
    r: &mut Reader<'_>,
    n_items: usize,
    w: usize,
) -> Result<(FeedbackOptions, Option<Adaptive>)> {
    let opts = FeedbackOptions::restore(r)?;
    let ad = match r.u8("adaptive state flag")? {
        0 => None,
        1 => Some(Adaptive::restore(r, n_items, w, &opts)?),
        f => return Err(r.error(format_args!("adaptive state flag {f}"))),
    };
    Ok((opts, ad))
}

/// `y += step · g_i · s` on every row `i` of `table` (`[g.len(), w]`).
fn rank1_update(table: &mut [f32], w: usize, step: f32, g: &[f32], s: &[f32]) {
    for (row, &gi) in table.chunks_exact_mut(w).zip(g) {
        let f = step * gi;
        if f != 0.0 {
            for (x, &si) in row.iter_mut().zip(s) {
                *x += f * si;
            }
        }
    }
}

/// `table_i · s` (f32 products, f64 sum).
#[inline]
fn dot(row: &[f32], s: &[f32]) -> f32 {
    row.iter()
        .zip(s)
        .map(|(&a, &b)| f64::from(a * b))
        .sum::<f64>() as f32
}

/// `log Σ_i exp(x_i)` in f64.
fn log_sum_exp(x: impl Iterator<Item = f32> + Clone) -> f64 {
    let max = x.clone().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let sum: f64 = x.map(|v| libm::exp(f64::from(v - max))).sum();
    f64::from(max) + libm::log(sum)
}

/// `log(e^a + e^b)`.
fn log_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    if hi == f64::NEG_INFINITY {
        return hi;
    }
    hi + libm::log1p(libm::exp(lo - hi))
}

/// The log-weights `(log(1 − α), log α)` of the mixture.
fn mixture_weights(alpha: f32) -> (f64, f64) {
    let a = f64::from(alpha);
    (libm::log(1.0 - a), libm::log(a))
}

/// Turns π_θ's logits in `scores` (`[n_items]`) into the mixture's log-probabilities
/// `log π̃(i|s) = log((1 − α)·π_θ(i|s) + α·π_β(i|s))`, π_β's logits `β·s` from `beta`.
pub(crate) fn mixture_log_probs(beta: &[f32], s: &[f32], alpha: f32, scores: &mut [f32]) {
    let w = s.len();
    let lse_theta = log_sum_exp(scores.iter().copied());
    let lse_beta = log_sum_exp(beta.chunks_exact(w).map(|row| dot(row, s)));
    let (lw_theta, lw_beta) = mixture_weights(alpha);
    for (out, row) in scores.iter_mut().zip(beta.chunks_exact(w)) {
        let lt = lw_theta + f64::from(*out) - lse_theta;
        let lb = lw_beta + f64::from(dot(row, s)) - lse_beta;
        *out = log_add_exp(lt, lb) as f32;
    }
}

/// ∂/∂z of `−A·log π̃(a|s)` with respect to π_β's logits `z = β·s`, into `g` (`[n_items]`):
/// `g_j = −A·α·(π_β(a)/π̃(a))·(δ_aj − π_β(j))`, π_θ's logits in `theta`.
pub(crate) fn actor_grad(
    beta: &[f32],
    s: &[f32],
    theta: &[f32],
    action: u32,
    advantage: f32,
    alpha: f32,
    g: &mut [f32],
) {
    let w = s.len();
    for (z, row) in g.iter_mut().zip(beta.chunks_exact(w)) {
        *z = dot(row, s);
    }
    let a = action as usize;
    let lse_beta = log_sum_exp(g.iter().copied());
    let lse_theta = log_sum_exp(theta.iter().copied());
    let (lw_theta, lw_beta) = mixture_weights(alpha);
    let log_pb_a = f64::from(g[a]) - lse_beta;
    let log_mix_a = log_add_exp(
        lw_theta + f64::from(theta[a]) - lse_theta,
        lw_beta + log_pb_a,
    );
    // α·π_β(a)/π̃(a) in the log domain (0 when α is 0).
    let weight = if alpha > 0.0 {
        libm::exp(lw_beta + log_pb_a - log_mix_a)
    } else {
        0.0
    };
    let c = -f64::from(advantage) * weight;
    for (j, z) in g.iter_mut().enumerate() {
        let p = libm::exp(f64::from(*z) - lse_beta);
        let delta = if j == a { 1.0 } else { 0.0 };
        *z = (c * (delta - p)) as f32;
    }
}

/// Writes the `k` best ids of `scores` (skipping the sorted ids `exclude`) best first into
/// `items` / `out`, ties to the lower id; `order` is scratch. Returns how many were written.
pub(crate) fn host_topk(
    scores: &[f32],
    k: usize,
    exclude: &[u32],
    order: &mut Vec<u32>,
    items: &mut [u32],
    out: &mut [f32],
) -> usize {
    order.clear();
    let mut ex = exclude.iter().peekable();
    for id in 0..scores.len() as u32 {
        while ex.next_if(|&&e| e < id).is_some() {}
        if ex.next_if_eq(&&id).is_none() {
            order.push(id);
        }
    }
    let better = |a: &u32, b: &u32| {
        scores[*b as usize]
            .total_cmp(&scores[*a as usize])
            .then(a.cmp(b))
    };
    let k = k.min(order.len());
    if k == 0 {
        return 0;
    }
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, better);
    }
    order[..k].sort_unstable_by(better);
    for (i, &id) in order[..k].iter().enumerate() {
        items[i] = id;
        out[i] = scores[id as usize];
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use seqrec_kernels::testing::Rng;

    /// `−A·log π̃(a|s)` in f64 for a β table.
    fn loss(beta: &[f64], s: &[f64], theta: &[f32], a: usize, adv: f64, alpha: f64) -> f64 {
        let w = s.len();
        let z: Vec<f64> = beta
            .chunks_exact(w)
            .map(|r| r.iter().zip(s).map(|(x, y)| x * y).sum())
            .collect();
        let soft = |x: &[f64]| -> Vec<f64> {
            let m = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.iter().map(|v| v / s).collect()
        };
        let pt = soft(&theta.iter().map(|&v| f64::from(v)).collect::<Vec<_>>());
        let pb = soft(&z);
        -adv * ((1.0 - alpha) * pt[a] + alpha * pb[a]).ln()
    }

    #[test]
    fn actor_gradient_matches_finite_differences() {
        let mut rng = Rng::new(7);
        let (n, w) = (9, 5);
        for &(alpha, adv) in &[(0.1f32, 1.5f32), (0.6, -0.7), (1.0, 2.0)] {
            let beta = rng.normal_vec(n * w, 0.5);
            let mut s = rng.normal_vec(w, 1.0);
            s[w - 1] = 1.0;
            let theta = rng.normal_vec(n, 1.0);
            let a = 4;
            let mut g = vec![0.0; n];
            actor_grad(&beta, &s, &theta, a as u32, adv, alpha, &mut g);
            // ∂loss/∂β_ij = g_i·s_j.
            let b64: Vec<f64> = beta.iter().map(|&v| f64::from(v)).collect();
            let s64: Vec<f64> = s.iter().map(|&v| f64::from(v)).collect();
            let h = 1e-6;
            for i in 0..n {
                for j in 0..w {
                    let (mut up, mut down) = (b64.clone(), b64.clone());
                    up[i * w + j] += h;
                    down[i * w + j] -= h;
                    let (al, ad) = (f64::from(alpha), f64::from(adv));
                    let fd = (loss(&up, &s64, &theta, a, ad, al)
                        - loss(&down, &s64, &theta, a, ad, al))
                        / (2.0 * h);
                    let an = f64::from(g[i]) * s64[j];
                    assert!(
                        (fd - an).abs() <= 1e-4 * (1.0 + fd.abs()),
                        "alpha {alpha} adv {adv} β[{i},{j}]: fd {fd} analytic {an}"
                    );
                }
            }
        }
    }

    #[test]
    fn mixture_log_probs_normalise() {
        let mut rng = Rng::new(3);
        let (n, w) = (11, 4);
        let beta = rng.normal_vec(n * w, 0.5);
        let s = rng.normal_vec(w, 1.0);
        for alpha in [0.0f32, 0.3, 1.0] {
            let mut scores = rng.normal_vec(n, 1.0);
            mixture_log_probs(&beta, &s, alpha, &mut scores);
            let total: f64 = scores.iter().map(|&v| f64::from(v).exp()).sum();
            assert!((total - 1.0).abs() < 1e-5, "alpha {alpha}: {total}");
        }
    }

    #[test]
    fn alpha_ramps_linearly_then_holds() {
        let o = FeedbackOptions {
            alpha0: 0.2,
            ramp: 4,
            ..FeedbackOptions::default()
        };
        let got: Vec<f32> = (0..6).map(|t| o.alpha(t)).collect();
        assert_eq!(got, [0.2, 0.4, 0.6, 0.8, 1.0, 1.0]);
        let now = FeedbackOptions { ramp: 0, ..o };
        assert_eq!(now.alpha(0), 1.0);
    }

    #[test]
    fn options_are_validated() {
        assert!(FeedbackOptions::default().validate().is_ok());
        type Edit = fn(&mut FeedbackOptions);
        let cases: [(Edit, &str); 7] = [
            (|o| o.lr = 0.0, "lr"),
            (|o| o.lr = f32::NAN, "lr"),
            (|o| o.gamma = 1.5, "gamma"),
            (|o| o.alpha0 = -0.1, "alpha0"),
            (|o| o.buffer = 0, "buffer"),
            (|o| o.batch = 0, "batch"),
            (|o| (o.buffer, o.batch) = (2, 3), "batch"),
        ];
        for (edit, name) in cases {
            let mut o = FeedbackOptions::default();
            edit(&mut o);
            let e = o.validate().unwrap_err().to_string();
            assert!(e.contains(name), "{e}");
        }
        let cfg = Config::from_json(r#"{"online_batch": 0}"#).unwrap();
        let e = FeedbackOptions::from_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("batch"), "{e}");
        let cfg = Config::from_json(r#"{"online_lr": 0.5, "online_seed": 9}"#).unwrap();
        let o = FeedbackOptions::from_config(&cfg).unwrap();
        assert_eq!((o.lr, o.seed, o.batch), (0.5, 9, 4));
    }

    #[test]
    fn host_topk_skips_exclusions_and_breaks_ties_by_id() {
        let scores = [5.0, 1.0, 3.0, 3.0, 0.5, 4.0];
        let mut order = Vec::new();
        let (mut items, mut out) = ([0u32; 6], [0f32; 6]);
        let n = host_topk(&scores, 3, &[0, 5], &mut order, &mut items, &mut out);
        assert_eq!(
            (n, &items[..3], &out[..3]),
            (3, &[2, 3, 1][..], &[3.0, 3.0, 1.0][..])
        );
        let n = host_topk(&scores, 6, &[0, 5], &mut order, &mut items, &mut out);
        assert_eq!((n, &items[..4]), (4, &[2, 3, 1, 4][..]));
    }

    #[test]
    fn minibatch_draws_older_slots_deterministically() {
        let opts = FeedbackOptions {
            buffer: 3,
            batch: 3,
            seed: 5,
            ..Default::default()
        };
        let run = || {
            let mut a = Adaptive::new(&[0.0; 8], 4, 2, &opts);
            let mut all = Vec::new();
            for t in 0..6 {
                a.commit(1 + t % 3, 1.0);
                all.push(a.picks.clone());
            }
            all
        };
        let picks = run();
        assert_eq!(picks, run());
        assert_eq!(picks[0], [0]);
        assert_eq!(picks[1].len(), 2);
        for (t, p) in picks.iter().enumerate() {
            assert_eq!(p[0], t % 3, "the newest comes first");
            assert!(p[1..].iter().all(|&k| k != p[0] && k < 3));
        }
    }
}
