//! Incremental per-user sessions: a user's events pushed one at a time, the state kept between
//! requests (key/value caches, hidden states, hierarchical state, objective knobs), so that a
//! new event costs one step instead of a re-encode of the window.

use super::{Model, Scored, Workspace, scored};
use crate::backend::Backend;
use crate::codec::{Reader, Writer, crc32};
use crate::cpu::Cpu;
use crate::error::{Error, Result};
use crate::models::{ArchState, Request};
use crate::objectives::Objectives;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// The first bytes of a saved session ([`Model::session_save`]).
pub const SESSION_MAGIC: [u8; 4] = *b"SQRS";

/// The saved-session format this build writes, and the only one it reads.
///
/// Layout (little-endian; `varint` is unsigned LEB128; `f32s` is a varint count then the
/// values bit for bit):
///
/// | field | encoding |
/// |---|---|
/// | magic `SQRS` | 4 bytes |
/// | format version | u16 |
/// | model fingerprint ([`Model::fingerprint`]) | u64 |
/// | flags (bit 0: a scoring vector is held) | u8 |
/// | user id | u32 |
/// | objective knobs, in the model's declaration order | f32s |
/// | history | varint count, varint ids |
/// | scoring vector (when flagged) | f32s |
/// | the architecture's state ([`crate::models::Architecture::save_state`]) | its own |
/// | CRC-32 of every byte before it | u32 |
pub const SESSION_FORMAT_VERSION: u16 = 1;

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
        w.u8(u8::from(s.scorable));
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
        if version != SESSION_FORMAT_VERSION {
            return Err(state_err(format!(
                "format version {version}, this build reads version {SESSION_FORMAT_VERSION}"
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
        if flags > 1 {
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
        self.check_items(core::slice::from_ref(&item))
            .map_err(|_| Error::ItemOutOfRange {
                id: item,
                position: s.history.len(),
                max: (self.info.n_items - 1) as u32,
            })?;
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
            return Ok(());
        }
        let req = Request {
            window: &s.history[n.saturating_sub(self.info.max_len)..],
            user: s.user,
            objectives: &s.objectives,
        };
        self.arch
            .encode(&self.be, &req, &mut s.state, scratch, &mut s.h)?;
        s.scorable = true;
        Ok(())
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
        self.select(k, hist, &[], ws, Some(&s.h), items, scores)
    }

    /// Full-catalog scores for a session's current state.
    pub fn session_scores(&self, s: &SessionState<B>, scores: &mut [f32]) -> Result<()> {
        self.check_session(s)?;
        if !s.scorable {
            return Err(Error::EmptyHistory);
        }
        self.check_len("scores", scores.len(), self.info.n_items)?;
        self.be.scores(&self.items, &s.h, 1, scores)
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
