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

/// When a simulated user leaves. Pluggable: an environment holds a `Box<dyn QuitRule>`.
pub trait QuitRule: Send + Sync + std::fmt::Debug {
    /// Whether the user leaves after the rewards of this episode so far (newest last).
    fn leaves(&self, rewards: &[f32]) -> bool;
}

/// The default rule (§8.4): the user leaves once `patience` consecutive rewards fall below
/// `threshold`, or when the episode reaches `max_len` steps.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Threshold {
    /// τ_r: a reward below it disappoints the user.
    pub threshold: f32,
    /// Consecutive disappointing steps before the user leaves (at least 1).
    pub patience: usize,
    /// The longest episode.
    pub max_len: usize,
}

impl QuitRule for Threshold {
    fn leaves(&self, rewards: &[f32]) -> bool {
        let p = self.patience.max(1);
        rewards.len() >= self.max_len
            || (rewards.len() >= p
                && rewards[rewards.len() - p..]
                    .iter()
                    .all(|&r| r < self.threshold))
    }
}

/// A population (users, or users with their sequences) split 80/20 with a seeded shuffle:
/// `(training, test)` (§8.4).
pub fn split_80_20<T>(mut population: Vec<T>, seed: u64) -> (Vec<T>, Vec<T>) {
    let mut rng = Rng::new(seed);
    super::deepfm::shuffle(&mut population, &mut rng);
    let cut = population.len() * 8 / 10;
    let test = population.split_off(cut);
    (population, test)
}

/// The episode bookkeeping every environment shares: the history, this episode's rewards and
/// the quit rule.
#[derive(Debug)]
pub struct Episode {
    /// Items shown (after an item start, that item first).
    pub history: Vec<u32>,
    /// Rewards of this episode's steps.
    pub rewards: Vec<f32>,
    /// The quit rule.
    pub quit: Box<dyn QuitRule>,
}

impl Episode {
    /// An empty episode under `quit`.
    pub fn new(quit: Box<dyn QuitRule>) -> Self {
        Episode {
            history: Vec::new(),
            rewards: Vec::new(),
            quit,
        }
    }

    /// Clears the history and rewards (starting with `first` when the episode starts from an
    /// item).
    pub fn reset(&mut self, first: Option<u32>) {
        self.history.clear();
        self.rewards.clear();
        self.history.extend(first);
    }

    /// Whether `item` was already shown in this episode.
    pub fn seen(&self, item: u32) -> bool {
        self.history.contains(&item)
    }

    /// Records a step and applies the quit rule.
    pub fn record(&mut self, item: u32, reward: f32) -> Step {
        self.history.push(item);
        self.rewards.push(reward);
        Step {
            reward,
            done: self.quit.leaves(&self.rewards),
        }
    }
}
