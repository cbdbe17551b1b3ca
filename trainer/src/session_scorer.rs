//! Hierarchical session models as evaluation scorers: each evaluation history is replayed
//! through the engine's session API, one session at a time with a session boundary
//! (`session_end`) between consecutive sessions, and the catalog is scored for the current
//! session's prefix.
//!
//! The evaluator scores the events of one evaluation sequence in order on one thread, each
//! history extending the previous one by an item; the scorer keeps the session of the last
//! history per thread and only appends the new items. Finished sessions are replayed with
//! `session_extend` (one encode per session).

use crate::eval::{ScorerError, SharedScorer};
use seqrec_engine::{Model, Objectives, SessionState, Workspace};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

struct Cached {
    scorer: u64,
    user: u32,
    pushed: Vec<u32>,
    state: SessionState,
    ws: Workspace,
}

thread_local! {
    static CACHE: RefCell<Option<Cached>> = const { RefCell::new(None) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Scores with an engine model through sessions (see the module docs).
#[derive(Debug)]
pub struct SessionScorer<'m> {
    model: &'m Model,
    objectives: Objectives,
    boundaries: Vec<Vec<usize>>,
    id: u64,
}

impl<'m> SessionScorer<'m> {
    /// A scorer over `model` with its default knobs; `boundaries[user]` lists the start index
    /// of every session of the user's sequence ([`crate::data::session_boundaries`]).
    pub fn new(model: &'m Model, boundaries: Vec<Vec<usize>>) -> Self {
        SessionScorer {
            model,
            objectives: model.default_objectives(),
            boundaries,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Scores under `objectives` (made from the model's default objectives).
    pub fn with_objectives(mut self, objectives: Objectives) -> Self {
        self.objectives = objectives;
        self
    }

    fn fresh(&self, user: u32) -> Result<Cached, ScorerError> {
        let mut state = self.model.new_session()?;
        let mut ws = Workspace::new();
        for (name, value) in self.objectives.iter() {
            self.model
                .session_set_objective(&mut state, name, value, &mut ws)?;
        }
        Ok(Cached {
            scorer: self.id,
            user,
            pushed: Vec::new(),
            state,
            ws,
        })
    }

    /// Appends `history[c.pushed.len()..]` with boundaries at the user's session starts.
    fn advance(&self, c: &mut Cached, history: &[u32]) -> Result<(), ScorerError> {
        let starts = self
            .boundaries
            .get(c.user as usize)
            .map_or(&[][..], Vec::as_slice);
        let mut i = c.pushed.len();
        while i < history.len() {
            if i > 0 && starts.binary_search(&i).is_ok() {
                self.model.session_end(&mut c.state, &mut c.ws)?;
            }
            let next = starts.partition_point(|&s| s <= i);
            let end = starts
                .get(next)
                .map_or(history.len(), |&s| s.min(history.len()));
            self.model
                .session_extend(&mut c.state, &history[i..end], &mut c.ws)?;
            c.pushed.extend_from_slice(&history[i..end]);
            i = end;
        }
        Ok(())
    }
}

impl SharedScorer for SessionScorer<'_> {
    fn score_shared(
        &self,
        history: &[u32],
        user: Option<u32>,
        scores: &mut [f32],
    ) -> Result<(), ScorerError> {
        let user = user.ok_or("session scoring needs the user id of every history")?;
        CACHE.with(|cell| {
            let mut cell = cell.borrow_mut();
            let reuse = cell.as_ref().is_some_and(|c| {
                c.scorer == self.id
                    && c.user == user
                    && history.len() > c.pushed.len()
                    && history.starts_with(&c.pushed)
            });
            if !reuse {
                *cell = Some(self.fresh(user)?);
            }
            let c = cell.as_mut().expect("set above");
            if let Err(e) = self.advance(c, history) {
                *cell = None;
                return Err(e);
            }
            self.model.session_scores(&c.state, scores)?;
            Ok(())
        })
    }
}
