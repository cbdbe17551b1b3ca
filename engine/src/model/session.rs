//! Incremental per-user sessions: a user's events pushed one at a time, the state kept between
//! requests (key/value caches, hidden states, hierarchical state, objective knobs), so that a
//! new event costs one step instead of a re-encode of the window.

use super::adapt::{self, Adaptive, FeedbackOptions};
use super::{Model, Scored, Workspace, scored};
use crate::backend::Backend;
use crate::codec::{Reader, Writer, crc32};
use crate::cpu::Cpu;
use crate::error::{Error, Result};
use crate::models::{ArchState, Request};
use crate::objectives::Objectives;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The first bytes of a saved session ([`Model::session_save`]).
pub const SESSION_MAGIC: [u8; 4] = *b"SQRS";

/// The saved-session format this build writes. It reads this version and version 1 (the same
/// layout without the feedback section, which version 2 writes only for sessions that have
/// one: version-1 bytes restore as they did).
///
/// Layout (little-endian; `varint` is unsigned LEB128; `f32s` is a varint count then the
/// values bit for bit):
///
/// | field | encoding |
/// |---|---|
/// | magic `SQRS` | 4 bytes |
/// | format version | u16 |
/// | model fingerprint ([`Model::fingerprint`]) | u64 |
/// | flags (bit 0: a scoring vector is held; bit 1: a feedback section follows the state) | u8 |
/// | user id | u32 |
/// | objective knobs, in the model's declaration order | f32s |
/// | history | varint count, varint ids |
/// | scoring vector (when flagged) | f32s |
/// | the architecture's state ([`crate::models::Architecture::save_state`]) | its own |
/// | feedback section (when flagged, version 2) | below |
/// | CRC-32 of every byte before it | u32 |
///
/// The feedback section ([`Model::session_feedback`]), written for a session whose feedback
/// options differ from the model's defaults or that has received feedback:
///
/// | field | encoding |
/// |---|---|
/// | options `lr`, `gamma`, `alpha0` | f32 bits as u32 each |
/// | options `ramp`, `buffer`, `batch` | varint each |
/// | option `seed` | u64 |
/// | adaptive state held | u8 (0 or 1) |
/// | feedback calls applied, generator state (when held) | u64, u64 |
/// | stored transitions `len`, next ring slot | varint, varint |
/// | the adaptive actor `[W_β \| b_β]`, `[n_items, dim]` row-major | f32s |
/// | the stored states `s`, then next states `s'`, slots `0 .. len` | f32s, f32s |
/// | the stored actions | `len` varints |
/// | the stored rewards | f32s |
pub const SESSION_FORMAT_VERSION: u16 = 2;

fn state_err(msg: String) -> Error {
    Error::SessionState(msg)
}

impl<B: Backend> Model<B> {
    /// Serialises a session's whole state (history, user, knobs, the architecture's caches and
    /// hidden or inter-session state, the current scoring vector) into a compact byte string
    /// bound to this model by its [`Model::fingerprint`]; see [`SESSION_FORMAT_VERSION`] for
    /// the layout. [`Model::session_restore`] on any process that loaded the same model
    /// continues the session exactly as this one would (same top-k, same scores, bit for bit).
    pub fn session_save(&self, s: &SessionState<B>) -> Result<Vec<u8>> {
        self.check_session(s)?;
        let mut w = Writer::default();
        w.bytes.extend_from_slice(&SESSION_MAGIC);
        w.u16(SESSION_FORMAT_VERSION);
        w.u64(self.fingerprint);
        let feedback =
            s.adaptive.is_some() || self.feedback_defaults().is_ok_and(|d| *d != s.feedback);
        w.u8(u8::from(s.scorable) | (u8::from(feedback) << 1));
        w.u32(s.user);
        let knobs: Vec<f32> = s.objectives.iter().map(|(_, v)| v).collect();
        w.f32s(&knobs);
        w.varint(s.history.len() as u64);
        for &id in &s.history {
            w.varint(u64::from(id));
        }
        if s.scorable {
            crate::models::save_buf(&self.be, &s.h, self.info.dim, &mut w)?;
        }
        self.arch.save_state(&self.be, &s.state, &mut w)?;
        if feedback {
            adapt::save_section(&s.feedback, s.adaptive.as_deref(), &mut w);
        }
        let crc = crc32(0, &w.bytes);
        w.u32(crc);
        Ok(w.bytes)
    }

    /// Rebuilds a session saved by [`Model::session_save`] from this model or from another
    /// load of the same model.
    ///
    /// # Errors
    /// [`Error::SessionState`] for bytes that are not a saved session, of another format
    /// version, truncated or corrupt (checksum), or inconsistent with the model's sizes;
    /// [`Error::InvalidArgument`] for a session saved from another model (fingerprint).
    pub fn session_restore(&self, bytes: &[u8]) -> Result<SessionState<B>> {
        const HEAD: usize = 4 + 2 + 8;
        if bytes.len() < 4 || bytes[..4] != SESSION_MAGIC {
            return Err(state_err(format!(
                "not a saved seqrec session: it starts with {:02x?}, expected {:02x?} (`SQRS`)",
                &bytes[..bytes.len().min(4)],
                SESSION_MAGIC
            )));
        }
        if bytes.len() < HEAD + 4 {
            return Err(state_err(format!(
                "truncated: {} bytes, a saved session has at least {}",
                bytes.len(),
                HEAD + 4
            )));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if !(1..=SESSION_FORMAT_VERSION).contains(&version) {
            return Err(state_err(format!(
                "format version {version}, this build reads versions 1 to {SESSION_FORMAT_VERSION}"
            )));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let computed = crc32(0, body);
        if stored != computed {
            return Err(state_err(format!(
                "checksum mismatch over {} bytes (stored {stored:08x}, computed {computed:08x}):                  the state is truncated or corrupt",
                body.len()
            )));
        }
        let mut r = Reader::new(body, state_err);
        r.seek(6)?;
        let fingerprint = r.u64("fingerprint")?;
        if fingerprint != self.fingerprint {
            return Err(Error::InvalidArgument(format!(
                "the session was saved from another model (fingerprint {fingerprint:016x}; this                  `{}` model has {:016x})",
                self.info.arch, self.fingerprint
            )));
        }
        let flags = r.u8("flags")?;
        if flags > if version == 1 { 1 } else { 3 } {
            return Err(r.error(format_args!("unknown flags {flags:#04x}")));
        }
        let user = r.u32("user id")?;
        let user = match self.info.n_users {
            Some(_) => self.check_user(Some(user)),
            None if user == 0 => Ok(0),
            None => Err(r.error(format_args!("user id {user} for a model without users"))),
        }
        .map_err(|e| r.error(e))?;
        let mut state = self.new_session_inner(self.info.n_users.map(|_| user))?;
        let specs = self.objectives.specs();
        let mut knobs = Vec::new();
        r.f32s("objective knobs", specs.len(), &mut knobs)?;
        for (spec, &v) in specs.iter().zip(&knobs) {
            state.objectives.set(spec.name, v).map_err(|e| r.error(e))?;
        }
        // Each id takes at least one byte: the count cannot ask for more than is there.
        let n = r.count("history length", r.remaining())?;
        let max = (self.info.n_items - 1) as u64;
        state.history.reserve_exact(n);
        for position in 0..n {
            let id = r.varint("history id")?;
            if id == 0 || id > max {
                return Err(r.error(format_args!(
                    "item id {id} at history position {position} is out of range 1..={max}"
                )));
            }
            state.history.push(id as u32);
        }
        if flags & 1 == 1 {
            let h = &mut state.h;
            crate::models::restore_buf(&self.be, &mut r, "scoring vector", self.info.dim, h)?;
            state.scorable = true;
        }
        let window = state.history.len().min(self.info.max_len);
        self.arch
            .restore_state(&self.be, &mut r, window, &mut state.state)?;
        if flags & 2 == 2 {
            self.feedback_head().map_err(|e| r.error(e))?;
            let (opts, ad) = adapt::restore_section(&mut r, self.info.n_items, self.info.dim)?;
            if ad.is_some() && !state.scorable {
                return Err(r.error("adaptive state without a scoring vector"));
            }
            state.feedback = opts;
            state.adaptive = ad.map(Box::new);
            self.refresh_adaptive(&mut state)?;
        }
        if r.remaining() != 0 {
            return Err(r.error(format_args!("{} bytes left after the state", r.remaining())));
        }
        Ok(state)
    }
}

impl<B: Backend> Model<B> {
    /// A fresh session (for models with a user embedding, use [`Self::new_session_for_user`]).
    pub fn new_session(&self) -> Result<SessionState<B>> {
        self.new_session_inner(None)
    }

    /// A fresh session for `user`.
    pub fn new_session_for_user(&self, user: u32) -> Result<SessionState<B>> {
        self.new_session_inner(Some(user))
    }

    fn new_session_inner(&self, user: Option<u32>) -> Result<SessionState<B>> {
        let user = self.check_user(user)?;
        Ok(SessionState {
            model: self.id,
            state: self.arch.new_state(&self.be)?,
            history: Vec::new(),
            user,
            objectives: self.objectives.clone(),
            h: B::Buf::default(),
            scorable: false,
            feedback: self.feedback_defaults().copied().unwrap_or_default(),
            adaptive: None,
        })
    }

    /// Appends one event to a session. While the history fits the window this costs one
    /// incremental step (GRU4Rec, SASRec, NextItNet); afterwards the window slides and is
    /// re-encoded, exactly as scoring the window from scratch would.
    pub fn session_push(
        &self,
        s: &mut SessionState<B>,
        item: u32,
        ws: &mut Workspace<B>,
    ) -> Result<()> {
        self.check_session(s)?;
        self.check_event(s, item)?;
        s.history.push(item);
        s.scorable = false;
        let n = s.history.len();
        let pushed = n <= self.info.max_len
            && self.arch.push(
                &self.be,
                item,
                &s.objectives,
                &mut s.state,
                &mut ws.scratch,
                &mut s.h,
            )?;
        if pushed {
            s.scorable = true;
            self.refresh_adaptive(s)?;
        } else {
            self.session_reencode(s, ws)?;
        }
        Ok(())
    }

    /// Appends several events at once (for example a finished session being replayed) and
    /// encodes the window once: the same state as pushing them one by one.
    pub fn session_extend(
        &self,
        s: &mut SessionState<B>,
        items: &[u32],
        ws: &mut Workspace<B>,
    ) -> Result<()> {
        self.check_session(s)?;
        let max = (self.info.n_items - 1) as u32;
        if let Some(k) = items.iter().position(|&id| id == 0 || id > max) {
            return Err(Error::ItemOutOfRange {
                id: items[k],
                position: s.history.len() + k,
                max,
            });
        }
        if items.is_empty() {
            return Ok(());
        }
        s.history.extend_from_slice(items);
        self.session_reencode(s, ws)
    }

    /// Re-encodes a session's window from its history. On an empty history, hierarchical
    /// architectures may still write a scoring vector (the next session's first item).
    fn session_reencode(&self, s: &mut SessionState<B>, ws: &mut Workspace<B>) -> Result<()> {
        s.scorable = false;
        let n = s.history.len();
        let scratch = &mut ws.scratch;
        if n == 0 {
            s.scorable =
                self.arch
                    .encode_empty(&self.be, &s.objectives, &mut s.state, scratch, &mut s.h)?;
            return self.refresh_adaptive(s);
        }
        let req = Request {
            window: &s.history[n.saturating_sub(self.info.max_len)..],
            user: s.user,
            objectives: &s.objectives,
        };
        self.arch
            .encode(&self.be, &req, &mut s.state, scratch, &mut s.h)?;
        s.scorable = true;
        self.refresh_adaptive(s)
    }

    /// Sets one objective knob of a session (see [`Self::objective_specs`]); the next
    /// recommendations follow it. The session's state is recomputed under the new value.
    ///
    /// # Errors
    /// An unknown knob or a value out of its range; the session is unchanged.
    pub fn session_set_objective(
        &self,
        s: &mut SessionState<B>,
        name: &str,
        value: f32,
        ws: &mut Workspace<B>,
    ) -> Result<()> {
        self.check_session(s)?;
        let old = s.objectives.clone();
        s.objectives.set(name, value)?;
        if s.objectives != old {
            if let Err(e) = self.session_reencode(s, ws) {
                s.objectives = old;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Marks the end of the session's current visit (a session boundary, e.g. after 60
    /// minutes of inactivity). Hierarchical models carry what they learned about the user
    /// into the next session and start it empty; plain backbones treat a user's sessions as
    /// one sequence, so for them this changes nothing. After a boundary, `hdt` and `interdt`
    /// can already recommend (their goal head predicts the next session's first item); the
    /// other architectures answer [`Error::EmptyHistory`] until the next event.
    pub fn session_end(&self, s: &mut SessionState<B>, ws: &mut Workspace<B>) -> Result<()> {
        self.check_session(s)?;
        if self
            .arch
            .end_session(&self.be, &mut s.state, &s.history, &mut ws.scratch)?
        {
            s.history.clear();
            self.session_reencode(s, ws)?;
        }
        Ok(())
    }

    /// Top-k for a session's current state.
    pub fn session_topk_into(
        &self,
        s: &SessionState<B>,
        k: usize,
        exclude_history: bool,
        ws: &mut Workspace<B>,
        items: &mut [u32],
        scores: &mut [f32],
    ) -> Result<usize> {
        self.check_session(s)?;
        if !s.scorable {
            return Err(Error::EmptyHistory);
        }
        if items.len() < k || scores.len() < k {
            return Err(Error::InvalidArgument(format!(
                "top-{k} needs output buffers of at least {k} values"
            )));
        }
        let hist = if exclude_history { &s.history[..] } else { &[] };
        let Some(ad) = &s.adaptive else {
            return self.select(k, hist, &[], ws, Some(&s.h), items, scores);
        };
        let Workspace {
            exclude,
            host,
            order,
            ..
        } = ws;
        host.resize(self.info.n_items, 0.0);
        self.be.scores(&self.items, &s.h, 1, host)?;
        adapt::mixture_log_probs(&ad.beta, &ad.current, s.feedback.alpha(ad.steps), host);
        exclude.clear();
        super::exclusions(exclude, hist, &[]);
        Ok(adapt::host_topk(host, k, exclude, order, items, scores))
    }

    /// Full-catalog scores for a session's current state.
    pub fn session_scores(&self, s: &SessionState<B>, scores: &mut [f32]) -> Result<()> {
        self.check_session(s)?;
        if !s.scorable {
            return Err(Error::EmptyHistory);
        }
        self.check_len("scores", scores.len(), self.info.n_items)?;
        self.be.scores(&self.items, &s.h, 1, scores)?;
        if let Some(ad) = &s.adaptive {
            adapt::mixture_log_probs(&ad.beta, &ad.current, s.feedback.alpha(ad.steps), scores);
        }
        Ok(())
    }

    /// Records the reward of an item recommended in the session's current state and adapts
    /// the session's policy online (A-iALP_ap, `spec/thesis-models.md` §8.2–8.3).
    ///
    /// Models that carry an actor-critic head: the RL models `sqn`, `snqn` and `sa2c` with a
    /// linear supervised head (`sup_head.weight [N,d]`, `sup_head.bias [N]`: the actor
    /// π_θ = softmax(W_π h + b_π)) and `q_head.*` (the critic Q(h,·) = W_Q h + b_Q). The online
    /// trainer writes its agents in exactly this format (model `sa2c`, linear head).
    ///
    /// One call, with the session's current state vector s (the scoring state after the last
    /// event), action a = `item` and reward r = `reward`: the item is then appended like
    /// [`Self::session_push`] (s' = the new state); advantage A = r + γ·max_a' Q(s',a') − Q(s,a)
    /// with the model's critic (frozen at serving); π̃ = (1−α)·π_θ + α·π_β; one SGD step on β's
    /// actor (weights and bias) for the loss −log π̃(a|s)·A, averaged over a mini-batch: the
    /// newest transition plus up to `batch − 1` transitions drawn (uniformly, with
    /// replacement, from a generator seeded with `seed`: deterministic for the seed) from a
    /// ring buffer of the session's last `buffer` transitions. α grows linearly from `alpha0`
    /// to 1 over `ramp` feedback calls, then stays 1. β's actor starts as
    /// `beta_head.weight/bias` when the checkpoint has them, else as a copy of the actor (so a
    /// fresh session serves exactly π_θ's ranking until feedback arrives). The options are
    /// [`FeedbackOptions`]: the configuration's `online_*` keys, or the session's own
    /// ([`Self::session_set_feedback_options`]).
    ///
    /// The encoder and the θ heads are never changed at serving (the trainer's `seqrec rl`
    /// adapts the encoder); only the session's β changes. After the first feedback the
    /// session's [`Self::session_topk_into`] and [`Self::session_scores`] rank by
    /// log π̃(i|s) (both softmaxes over the whole catalog, padding row included; exclusions
    /// as before); a session that never got feedback scores exactly as before.
    ///
    /// The first call allocates β (`[N, d+1]`) and the ring buffer; later calls allocate
    /// nothing and cost O(batch·N·d). The update runs on the host (see the `adapt` module's
    /// notes); the catalog scans of π_θ and Q run on the model's backend.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a model without an actor-critic head (the message names the
    /// model and why); [`Error::EmptyHistory`] when the session has no state yet;
    /// [`Error::ItemOutOfRange`] for an invalid id; [`Error::InvalidArgument`] for a
    /// non-finite reward. The session is unchanged on error.
    pub fn session_feedback(
        &self,
        s: &mut SessionState<B>,
        item: u32,
        reward: f32,
        ws: &mut Workspace<B>,
    ) -> Result<()> {
        self.check_session(s)?;
        let head = self.feedback_head()?;
        if !reward.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "reward {reward} is not finite"
            )));
        }
        if !s.scorable {
            return Err(Error::EmptyHistory);
        }
        self.check_event(s, item)?;
        let (n, w) = (self.info.n_items, self.info.dim);
        let mut ad = match s.adaptive.take() {
            Some(ad) => ad,
            None => Box::new(Adaptive::new(head.init.as_slice(), n, w, &s.feedback)),
        };
        let fresh = ad.steps == 0;
        let pushed = self
            .be
            .read(&s.h, 0, &mut ad.current)
            .and_then(|()| self.session_push(s, item, ws));
        if let Err(e) = pushed {
            s.adaptive = (!fresh).then_some(ad);
            return Err(e);
        }
        let stepped = self.feedback_step(head, &mut ad, s, item, reward, ws);
        s.adaptive = Some(ad);
        stepped
    }

    /// The update of [`Self::session_feedback`] once the item is pushed: stores the transition
    /// (`ad.current` holds s, `s.h` holds s'), draws the mini-batch and takes the SGD step.
    fn feedback_step(
        &self,
        head: &super::FeedbackHead<B>,
        ad: &mut Adaptive,
        s: &SessionState<B>,
        item: u32,
        reward: f32,
        ws: &mut Workspace<B>,
    ) -> Result<()> {
        let (n, w) = (self.info.n_items, self.info.dim);
        let slot = ad.next;
        ad.states[slot * w..(slot + 1) * w].copy_from_slice(&ad.current);
        self.be
            .read(&s.h, 0, &mut ad.next_states[slot * w..(slot + 1) * w])?;
        ad.current
            .copy_from_slice(&ad.next_states[slot * w..(slot + 1) * w]);
        ad.commit(item, reward);
        let (opts, alpha) = (s.feedback, s.feedback.alpha(ad.steps));
        let row = &mut ws.scratch.row;
        for t in 0..ad.picks.len() {
            let slot = ad.picks[t];
            let (action, states) = (ad.actions[slot], slot * w..(slot + 1) * w);
            self.be.write(&ad.next_states[states.clone()], row, 0)?;
            self.be.scores(&head.critic, row, 1, &mut ad.q)?;
            let max_next = ad.q.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            self.be.write(&ad.states[states.clone()], row, 0)?;
            let mut q_sa = [0f32];
            self.be
                .score_items(&head.critic, row, &[action], &mut q_sa)?;
            self.be.scores(&self.items, row, 1, &mut ad.theta)?;
            let advantage = ad.rewards[slot] + opts.gamma * max_next - q_sa[0];
            let g = &mut ad.grads[t * n..(t + 1) * n];
            let st = &ad.states[states];
            adapt::actor_grad(&ad.beta, st, &ad.theta, action, advantage, alpha, g);
        }
        ad.apply(opts.lr);
        Ok(())
    }

    /// Sets a session's online-adaptation options (see [`Self::session_feedback`]); they
    /// apply from the next feedback call on.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an option out of its range (see [`FeedbackOptions`]), or
    /// a `buffer`, `batch` or `seed` other than the session's once it has received feedback
    /// (they size and seed its state); [`Error::Unsupported`] for a model without an
    /// actor-critic head. The session is unchanged on error.
    pub fn session_set_feedback_options(
        &self,
        s: &mut SessionState<B>,
        opts: &FeedbackOptions,
    ) -> Result<()> {
        self.check_session(s)?;
        self.feedback_head()?;
        opts.validate()?;
        if s.adaptive.is_some() {
            let old = &s.feedback;
            if (opts.buffer, opts.batch, opts.seed) != (old.buffer, old.batch, old.seed) {
                return Err(Error::InvalidArgument(format!(
                    "buffer, batch and seed are fixed once a session has received feedback \
                     (buffer {}, batch {}, seed {})",
                    old.buffer, old.batch, old.seed
                )));
            }
        }
        s.feedback = *opts;
        Ok(())
    }

    /// The online-adaptation options a new session of this model starts with (the
    /// configuration's `online_*` keys).
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a model without an actor-critic head (the message names the
    /// model and why): such a model cannot take [`Self::session_feedback`].
    pub fn feedback_defaults(&self) -> Result<&FeedbackOptions> {
        self.feedback_head().map(|h| &h.defaults)
    }

    fn feedback_head(&self) -> Result<&super::FeedbackHead<B>> {
        self.feedback.as_ref().map_err(|why| {
            Error::Unsupported(format!(
                "online feedback needs an actor-critic head (sqn, snqn or sa2c with a linear \
                 supervised head and a critic `q_head`), and model `{}` cannot take it: {why}",
                self.info.arch
            ))
        })
    }

    /// Keeps the adaptive state's host copy of the scoring vector in step with `h`.
    fn refresh_adaptive(&self, s: &mut SessionState<B>) -> Result<()> {
        match &mut s.adaptive {
            Some(ad) if s.scorable => self.be.read(&s.h, 0, &mut ad.current),
            _ => Ok(()),
        }
    }

    /// Checks the id of an event about to be appended to `s`.
    fn check_event(&self, s: &SessionState<B>, item: u32) -> Result<()> {
        self.check_items(core::slice::from_ref(&item))
            .map_err(|_| Error::ItemOutOfRange {
                id: item,
                position: s.history.len(),
                max: (self.info.n_items - 1) as u32,
            })
    }

    fn check_session(&self, s: &SessionState<B>) -> Result<()> {
        if s.model == self.id {
            Ok(())
        } else {
            Err(Error::InvalidArgument(
                "the session was created by another model".into(),
            ))
        }
    }

    /// A session bundled with its own workspace, borrowing this model.
    pub fn session(&self) -> Result<Session<'_, B>> {
        Ok(Session {
            model: self,
            state: self.new_session()?,
            ws: Workspace::new(),
        })
    }

    /// A session for `user`, bundled with its own workspace.
    pub fn session_for_user(&self, user: u32) -> Result<Session<'_, B>> {
        Ok(Session {
            model: self,
            state: self.new_session_for_user(user)?,
            ws: Workspace::new(),
        })
    }
}

/// Incremental per-user state (see [`Model::session_push`]). Belongs to one model; use it from
/// one thread at a time.
#[derive(Debug)]
pub struct SessionState<B: Backend = Cpu> {
    model: u64,
    state: ArchState,
    history: Vec<u32>,
    user: u32,
    objectives: Objectives,
    h: B::Buf,
    /// Whether `h` holds a scoring vector for the current state (after an event, or after a
    /// session boundary for architectures that predict a session's first item).
    scorable: bool,
    /// Online-adaptation options ([`Model::session_feedback`]).
    feedback: FeedbackOptions,
    /// The adaptive policy, from the first feedback on.
    adaptive: Option<Box<Adaptive>>,
}

impl<B: Backend> SessionState<B> {
    /// Every event pushed so far, oldest first.
    pub fn history(&self) -> &[u32] {
        &self.history
    }

    /// The session's objective knobs.
    pub fn objectives(&self) -> &Objectives {
        &self.objectives
    }

    /// The session's online-adaptation options ([`Model::session_feedback`]).
    pub fn feedback_options(&self) -> &FeedbackOptions {
        &self.feedback
    }

    /// Feedback calls the session's adaptive policy has taken (0: it scores as the model does).
    pub fn feedback_steps(&self) -> u64 {
        self.adaptive.as_ref().map_or(0, |a| a.steps)
    }
}

/// A session with its own workspace: `push` events, then ask for `topk`.
#[derive(Debug)]
pub struct Session<'m, B: Backend = Cpu> {
    model: &'m Model<B>,
    state: SessionState<B>,
    ws: Workspace<B>,
}

impl<'m, B: Backend> Session<'m, B> {
    /// Appends an event.
    pub fn push(&mut self, item: u32) -> Result<()> {
        self.model.session_push(&mut self.state, item, &mut self.ws)
    }

    /// The `k` best items now.
    pub fn topk(&mut self, k: usize, exclude_history: bool) -> Result<Vec<Scored>> {
        let k = k.min(self.model.info.n_items);
        let mut items = alloc::vec![0u32; k];
        let mut scores = alloc::vec![0f32; k];
        let n = self.model.session_topk_into(
            &self.state,
            k,
            exclude_history,
            &mut self.ws,
            &mut items,
            &mut scores,
        )?;
        Ok(scored(&items[..n], &scores[..n]))
    }

    /// Full-catalog scores now.
    pub fn scores(&self, out: &mut [f32]) -> Result<()> {
        self.model.session_scores(&self.state, out)
    }

    /// Appends several events at once (see [`Model::session_extend`]).
    pub fn extend(&mut self, items: &[u32]) -> Result<()> {
        self.model
            .session_extend(&mut self.state, items, &mut self.ws)
    }

    /// Sets an objective knob (see [`Model::session_set_objective`]).
    pub fn set_objective(&mut self, name: &str, value: f32) -> Result<()> {
        self.model
            .session_set_objective(&mut self.state, name, value, &mut self.ws)
    }

    /// Records the reward of a recommended item and adapts the session's policy (see
    /// [`Model::session_feedback`]).
    pub fn feedback(&mut self, item: u32, reward: f32) -> Result<()> {
        self.model
            .session_feedback(&mut self.state, item, reward, &mut self.ws)
    }

    /// Sets the online-adaptation options (see [`Model::session_set_feedback_options`]).
    pub fn set_feedback_options(&mut self, opts: &FeedbackOptions) -> Result<()> {
        self.model
            .session_set_feedback_options(&mut self.state, opts)
    }

    /// Ends the current visit (see [`Model::session_end`]).
    pub fn end(&mut self) -> Result<()> {
        self.model.session_end(&mut self.state, &mut self.ws)
    }

    /// Events so far.
    pub fn history(&self) -> &[u32] {
        self.state.history()
    }

    /// The session's whole state as bytes (see [`Model::session_save`]).
    pub fn save(&self) -> Result<Vec<u8>> {
        self.model.session_save(&self.state)
    }

    /// A session of `model` rebuilt from [`Session::save`]'s bytes (see
    /// [`Model::session_restore`]), with a workspace of its own.
    pub fn restore(model: &'m Model<B>, bytes: &[u8]) -> Result<Self> {
        Ok(Session {
            model,
            state: model.session_restore(bytes)?,
            ws: Workspace::new(),
        })
    }

    /// The state without the workspace.
    pub fn state(&self) -> &SessionState<B> {
        &self.state
    }
}
