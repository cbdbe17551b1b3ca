//! Engine models as evaluation scorers: a loaded [`Model`] scores the catalog for each
//! evaluation history, from several threads at once, each thread with its own workspace.

use crate::eval::{ScorerError, SharedScorer};
use seqrec_engine::{Model, Objectives, Query, Workspace};
use std::cell::RefCell;

thread_local! {
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::new());
}

/// Scores with an engine model. Histories longer than the model's window keep their most
/// recent items, as in serving; the user id is passed only to models with a user embedding.
#[derive(Debug)]
pub struct EngineScorer<'m> {
    model: &'m Model,
    objectives: Objectives,
}

impl<'m> EngineScorer<'m> {
    /// A scorer over `model` with its default objective knobs.
    pub fn new(model: &'m Model) -> Self {
        EngineScorer {
            model,
            objectives: model.default_objectives(),
        }
    }

    /// Scores under `objectives` (made from the model's [`Model::default_objectives`]).
    pub fn with_objectives(mut self, objectives: Objectives) -> Self {
        self.objectives = objectives;
        self
    }
}

impl SharedScorer for EngineScorer<'_> {
    fn score_shared(
        &self,
        history: &[u32],
        user: Option<u32>,
        scores: &mut [f32],
    ) -> Result<(), ScorerError> {
        let mut q = Query::new(history).objectives(&self.objectives);
        if self.model.info().n_users.is_some() {
            q = q.user(user.unwrap_or(0));
        }
        WORKSPACE
            .with(|ws| self.model.score(&q, &mut ws.borrow_mut(), scores))
            .map_err(|e| Box::new(e) as ScorerError)
    }
}
