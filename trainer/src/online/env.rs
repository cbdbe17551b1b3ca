//! The environment interface: a simulated user who is shown one item per step, answers with a
//! reward, and leaves by a pluggable quit rule.

use crate::nn::Rng;

/// How an episode begins.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// A user of the environment (Coat): the agent's first state is the user alone.
    User(u32),
    /// A first item (the sequential simulators): the history starts with it.
    Item(u32),
}

/// What one step returns.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Step {
    /// The simulated user's reward for the item, on a rating-like scale.
    pub reward: f32,
    /// Whether the user has left (the quit rule fired); the episode is over.
    pub done: bool,
}

/// The items of an environment as a judge and a prompt see them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Catalog {
    /// The platform type, e.g. `clothing`, `movie`, `product` (Table 7.1's `{scenario}`).
    pub scenario: String,
    /// What an item is called, e.g. `jacket`, `movie`, `product` (`{item}`).
    pub item_noun: String,
    /// What a user does with items, e.g. `buying`, `watching` (`{behavior}`).
    pub behavior: String,
    /// Attribute names, e.g. `["title", "genres"]` (`{attribute1; attribute2; ...}`).
    pub attribute_names: Vec<String>,
    /// Per item id (`0` is padding and has none), one value per attribute name (empty when
    /// unknown).
    pub attributes: Vec<Vec<String>>,
}

impl Catalog {
    /// Catalog size including the padding id 0.
    pub fn n_items(&self) -> usize {
        self.attributes.len()
    }

    /// An item's attributes rendered as one line, `name: value; name: value` (empty values
    /// skipped): the text a judge reads and the built-in judge embeds.
    pub fn describe(&self, item: u32) -> String {
        let Some(values) = self.attributes.get(item as usize) else {
            return String::new();
        };
        self.attribute_names
            .iter()
            .zip(values)
            .filter(|(_, v)| !v.is_empty())
            .map(|(n, v)| format!("{n}: {v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A simulated user population.
///
/// Item ids run `1..n_items()` (0 is padding and never an action). An environment is
/// deterministic given the seed of the [`Rng`] its caller passes.
pub trait Environment: Send {
    /// Short name (`coat`, `ml-100k`, `amazon-scientific`).
    fn name(&self) -> &str;
    /// Catalog size including the padding id 0.
    fn n_items(&self) -> usize;
    /// Number of users an episode may start from (user ids `1..n_users()`); 0 when episodes
    /// start from items.
    fn n_users(&self) -> usize;
    /// Starts an episode and returns how it starts.
    fn reset(&mut self, rng: &mut Rng) -> Start;
    /// Shows `item` to the user; the item joins the history.
    fn step(&mut self, item: u32) -> Step;
    /// The items shown in this episode so far (after a [`Start::Item`] start, that item first).
    fn history(&self) -> &[u32];
    /// The items as a judge sees them.
    fn catalog(&self) -> &Catalog;
}
