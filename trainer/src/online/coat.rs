//! The Coat environment (§8.4): 290 users rated 24 self-selected and 16 random jackets of 300
//! on a 1–5 scale (`train.ascii`, `test.ascii`: one row per user, one column per item, 0 for
//! no rating) and come with one-hot features (`user_item_features/`). Users are split 80/20
//! into a training and a test environment, each with its own DeepFM user model fitted on its
//! users' 40 ratings each. An episode starts from a user; the reward of a jacket is the user
//! model's predicted rating (clamped to 0–5), 0 for a jacket already shown in the episode.

use super::deepfm::DeepFm;
use super::env::{Catalog, Environment, Episode, QuitRule, Start, Step, Threshold};
use crate::cli::CliError;
use crate::nn::Rng;
use std::path::Path;

/// Coat's fields, in feature order: user id, item id, then the attribute groups of
/// `user_features_map.txt` and `item_features_map.txt` (name before the `:`).
const USER_GROUPS: [&str; 4] = ["gender", "age", "location", "fashioninterest"];
const ITEM_GROUPS: [&str; 4] = ["gender", "jackettype", "color", "onfrontpage"];

/// The Coat data set, parsed.
#[derive(Clone, Debug)]
pub struct CoatData {
    /// Users (ids `1..=n_users`).
    pub n_users: usize,
    /// Items (ids `1..=n_items`).
    pub n_items: usize,
    /// `(user, item, rating)` of both rating files.
    pub ratings: Vec<(u32, u32, f32)>,
    /// Per user id (index 0 unused), the value index within each of [`USER_GROUPS`].
    user_attrs: Vec<[u32; 4]>,
    /// Per item id (index 0 unused), the value index within each of [`ITEM_GROUPS`].
    item_attrs: Vec<[u32; 4]>,
    /// `(group, value names)` of the user and item attribute groups.
    user_values: Vec<Vec<String>>,
    item_values: Vec<Vec<String>>,
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError::input(format!("{}: {e}", path.display())))
}

/// A 0/1 (or rating) matrix file: one whitespace-separated row per line.
fn matrix(path: &Path, cols: Option<usize>) -> Result<Vec<Vec<f32>>, CliError> {
    let text = read(path)?;
    let mut rows = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let row: Vec<f32> = line
            .split_whitespace()
            .map(|t| t.parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|e| CliError::input(format!("{}:{}: {e}", path.display(), i + 1)))?;
        let want = cols.or(rows.first().map(Vec::len)).unwrap_or(row.len());
        if row.len() != want {
            return Err(CliError::input(format!(
                "{}:{}: {} columns, expected {want}",
                path.display(),
                i + 1,
                row.len()
            )));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Each group's value names, and each feature column's `(group, value index)`.
type FeatureMap = (Vec<Vec<String>>, Vec<(usize, u32)>);

/// The groups of a `name:value` feature map, in file order, and each feature's (group, index).
fn feature_map(path: &Path, groups: &[&str]) -> Result<FeatureMap, CliError> {
    let mut values = vec![Vec::new(); groups.len()];
    let mut slots = Vec::new();
    for (i, line) in read(path)?
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let (g, v) = line.trim().split_once(':').ok_or_else(|| {
            CliError::input(format!(
                "{}:{}: expected `group:value`",
                path.display(),
                i + 1
            ))
        })?;
        let gi = groups.iter().position(|&x| x == g).ok_or_else(|| {
            CliError::input(format!(
                "{}:{}: unknown attribute group `{g}` (expected one of {})",
                path.display(),
                i + 1,
                groups.join(", ")
            ))
        })?;
        slots.push((gi, values[gi].len() as u32));
        values[gi].push(v.to_string());
    }
    Ok((values, slots))
}

/// Per row of a one-hot feature matrix, the value index in each group (exactly one per group).
fn one_hot(
    path: &Path,
    rows: &[Vec<f32>],
    slots: &[(usize, u32)],
    n_groups: usize,
) -> Result<Vec<[u32; 4]>, CliError> {
    let mut out = vec![[0u32; 4]];
    for (r, row) in rows.iter().enumerate() {
        let mut v = [u32::MAX; 4];
        for (c, &x) in row.iter().enumerate() {
            if x != 0.0 {
                let (g, i) = slots[c];
                v[g] = i;
            }
        }
        if let Some(g) = (0..n_groups).find(|&g| v[g] == u32::MAX) {
            return Err(CliError::input(format!(
                "{}:{}: no value in attribute group {g}",
                path.display(),
                r + 1
            )));
        }
        out.push(v);
    }
    Ok(out)
}

impl CoatData {
    /// Reads `dir` (`train.ascii`, `test.ascii`, `user_item_features/*`).
    pub fn load(dir: &Path) -> Result<Self, CliError> {
        let train = matrix(&dir.join("train.ascii"), None)?;
        let n_users = train.len();
        let n_items = train.first().map_or(0, Vec::len);
        let test = matrix(&dir.join("test.ascii"), Some(n_items))?;
        if test.len() != n_users || n_users == 0 {
            return Err(CliError::input(format!(
                "{}: {} users in train.ascii, {} in test.ascii",
                dir.display(),
                n_users,
                test.len()
            )));
        }
        let mut ratings = Vec::new();
        for m in [&train, &test] {
            for (u, row) in m.iter().enumerate() {
                for (i, &r) in row.iter().enumerate() {
                    if r > 0.0 {
                        ratings.push((u as u32 + 1, i as u32 + 1, r));
                    }
                }
            }
        }
        let f = dir.join("user_item_features");
        let (user_values, uslots) = feature_map(&f.join("user_features_map.txt"), &USER_GROUPS)?;
        let (item_values, islots) = feature_map(&f.join("item_features_map.txt"), &ITEM_GROUPS)?;
        let up = f.join("user_features.ascii");
        let ip = f.join("item_features.ascii");
        let user_attrs = one_hot(&up, &matrix(&up, Some(uslots.len()))?, &uslots, 4)?;
        let item_attrs = one_hot(&ip, &matrix(&ip, Some(islots.len()))?, &islots, 4)?;
        if user_attrs.len() != n_users + 1 || item_attrs.len() != n_items + 1 {
            return Err(CliError::input(format!(
                "{}: features for {} users and {} items, ratings for {n_users} and {n_items}",
                f.display(),
                user_attrs.len() - 1,
                item_attrs.len() - 1
            )));
        }
        Ok(CoatData {
            n_users,
            n_items,
            ratings,
            user_attrs,
            item_attrs,
            user_values,
            item_values,
        })
    }

    /// Size of the DeepFM feature vocabulary and the offset of each field's values.
    fn fields(&self) -> (usize, [u32; 10]) {
        let mut sizes = vec![self.n_users + 1, self.n_items + 1];
        sizes.extend(self.user_values.iter().map(Vec::len));
        sizes.extend(self.item_values.iter().map(Vec::len));
        let mut off = [0u32; 10];
        let mut acc = 0usize;
        for (o, s) in off.iter_mut().zip(&sizes) {
            *o = acc as u32;
            acc += s;
        }
        (acc, off)
    }

    /// The DeepFM feature ids of `(user, item)`.
    fn features(&self, off: &[u32; 10], user: u32, item: u32) -> [u32; 10] {
        let ua = self.user_attrs[user as usize];
        let ia = self.item_attrs[item as usize];
        let mut x = [0u32; 10];
        x[0] = off[0] + user;
        x[1] = off[1] + item;
        for g in 0..4 {
            x[2 + g] = off[2 + g] + ua[g];
            x[6 + g] = off[6 + g] + ia[g];
        }
        x
    }

    /// The jackets as a judge sees them: gender, type and colour.
    pub fn catalog(&self) -> Catalog {
        let mut attributes = vec![Vec::new()];
        for i in 1..=self.n_items {
            let a = self.item_attrs[i];
            attributes.push(
                [0usize, 1, 2]
                    .iter()
                    .map(|&g| self.item_values[g][a[g] as usize].clone())
                    .collect(),
            );
        }
        Catalog {
            scenario: "clothing".into(),
            item_noun: "jacket".into(),
            behavior: "buying".into(),
            attribute_names: vec!["for".into(), "type".into(), "colour".into()],
            attributes,
        }
    }

    /// A user model fitted on the ratings of `users`: the predicted rating of every
    /// `(user, item)`, `[n_users + 1, n_items + 1]` (rows of other users and column 0 are 0),
    /// and the held-out RMSE of the fit.
    pub fn fit_user_model(&self, users: &[u32], seed: u64) -> (Vec<f32>, f64) {
        let (n_feat, off) = self.fields();
        let mut rng = Rng::new(seed);
        let mut model = DeepFm::new(n_feat, 10, 8, &[64, 32], &mut rng);
        let keep: std::collections::HashSet<u32> = users.iter().copied().collect();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for &(u, i, r) in &self.ratings {
            if keep.contains(&u) {
                x.extend_from_slice(&self.features(&off, u, i));
                y.push(r);
            }
        }
        let rmse = model.fit(&x, &y, 200, 1e-3, &mut rng);
        let cols = self.n_items + 1;
        let mut table = vec![0.0f32; (self.n_users + 1) * cols];
        for &u in users {
            let xs: Vec<u32> = (1..=self.n_items as u32)
                .flat_map(|i| self.features(&off, u, i))
                .collect();
            for (i, p) in model.predict(&xs).into_iter().enumerate() {
                table[u as usize * cols + i + 1] = p.clamp(0.0, 5.0);
            }
        }
        (table, rmse)
    }
}

/// One Coat environment: its users and their user model.
#[derive(Debug)]
pub struct CoatEnv {
    name: String,
    users: Vec<u32>,
    n_users: usize,
    n_items: usize,
    /// Predicted ratings `[n_users + 1, n_items + 1]`.
    rewards: Vec<f32>,
    catalog: Catalog,
    user: u32,
    ep: Episode,
}

/// The default quit rule on Coat: two consecutive predicted ratings below 2.5, or 30 steps.
pub fn coat_quit() -> Threshold {
    Threshold {
        threshold: 2.5,
        patience: 2,
        max_len: 30,
    }
}

impl CoatEnv {
    /// An environment of `users` with the reward table of [`CoatData::fit_user_model`].
    pub fn new(
        name: &str,
        data: &CoatData,
        users: Vec<u32>,
        rewards: Vec<f32>,
        quit: Box<dyn QuitRule>,
    ) -> Self {
        assert_eq!(rewards.len(), (data.n_users + 1) * (data.n_items + 1));
        CoatEnv {
            name: name.into(),
            users,
            n_users: data.n_users + 1,
            n_items: data.n_items + 1,
            rewards,
            catalog: data.catalog(),
            user: 0,
            ep: Episode::new(quit),
        }
    }

    /// The users episodes start from.
    pub fn users(&self) -> &[u32] {
        &self.users
    }

    /// The reward table (for saving the environment).
    pub fn reward_table(&self) -> &[f32] {
        &self.rewards
    }
}

impl Environment for CoatEnv {
    fn name(&self) -> &str {
        &self.name
    }
    fn n_items(&self) -> usize {
        self.n_items
    }
    fn n_users(&self) -> usize {
        self.n_users
    }
    fn reset(&mut self, rng: &mut Rng) -> Start {
        self.user = self.users[rng.below(self.users.len())];
        self.ep.reset(None);
        Start::User(self.user)
    }
    fn step(&mut self, item: u32) -> Step {
        let r = if self.ep.seen(item) || item == 0 || item as usize >= self.n_items {
            0.0
        } else {
            self.rewards[self.user as usize * self.n_items + item as usize]
        };
        self.ep.record(item, r)
    }
    fn history(&self) -> &[u32] {
        &self.ep.history
    }
    fn catalog(&self) -> &Catalog {
        &self.catalog
    }
}
