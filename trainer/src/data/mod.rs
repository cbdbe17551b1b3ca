//! Data sets for training and evaluation: readers, the interaction table with RecBole-style
//! internal ids, and the splits.
//!
//! Ids follow RecBole and the engine: id 0 is padding, real users are `1..n_users` and real
//! items `1..n_items` (so `n_items` counts the padding id, like the engine's catalog size).
//! Tokens get ids in order of first appearance in the interaction file, then in the side file
//! (`.item` / `.user`), which is how RecBole numbers them; the token lists ([`Vocab::tokens`],
//! `[PAD]` at index 0) are kept so that a checkpoint can ship them.
//!
//! Every user's interactions are ordered by timestamp, stably: rows with equal timestamps keep
//! their file order. Formats without timestamps keep file order.
//!
//! Readers ([`load`] picks one from a [`DataFormat`], or detects it with [`detect`]):
//! - RecBole atomic files `NAME.inter` (+ optional `NAME.item`, `NAME.user`): [`read_atomic`];
//! - RecBole pre-split benchmark files `NAME.{train,valid,test}.inter`: [`read_benchmark`];
//! - the SASRec `user item` text format: [`read_sasrec_txt`];
//! - MovieLens `u.data` (+ `u.item`, `u.user`) and `ratings.csv` (+ `movies.csv`):
//!   [`read_movielens`].

mod atomic;
mod error;
mod format;
mod sessions;
mod split;
mod text;

pub use atomic::{AtomicOptions, read_atomic, read_benchmark};
pub use error::{DataError, Result};
pub use format::{DataFormat, Source, detect, locate};
pub use sessions::{
    SequenceFilter, SessionFilter, filter_sequences, filter_sessions, session_boundaries,
};
pub use split::{
    DEFAULT_SEED, EvalSeq, Example, Split, SplitMethod, TrainPart, TrainSeq, session_starts, split,
};
pub use text::{read_movielens, read_sasrec_txt};

use std::collections::HashMap;
use std::path::Path;

/// The token of the padding id 0, as RecBole writes it.
pub const PAD_TOKEN: &str = "[PAD]";

/// A two-way map between external tokens and internal ids; id 0 is [`PAD_TOKEN`].
#[derive(Clone, Debug)]
pub struct Vocab {
    tokens: Vec<String>,
    index: HashMap<String, u32>,
}

impl Default for Vocab {
    fn default() -> Self {
        Vocab::new()
    }
}

impl Vocab {
    /// A vocabulary holding only the padding token.
    pub fn new() -> Self {
        Vocab {
            tokens: vec![PAD_TOKEN.to_string()],
            index: HashMap::new(),
        }
    }

    /// Number of ids, padding included.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether only the padding id exists.
    pub fn is_empty(&self) -> bool {
        self.tokens.len() <= 1
    }

    /// The id of `token`, if known.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.index.get(token).copied()
    }

    /// The token of `id` (`[PAD]` for 0), if in range.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// All tokens, indexed by id (`tokens()[0]` is `[PAD]`).
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The id of `token`, assigning the next free id when it is new.
    pub fn intern(&mut self, token: &str) -> u32 {
        if let Some(&id) = self.index.get(token) {
            return id;
        }
        let id = self.tokens.len() as u32;
        self.tokens.push(token.to_string());
        self.index.insert(token.to_string(), id);
        id
    }
}

/// The type of a RecBole atomic-file column.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// One token.
    Token,
    /// Space-separated tokens.
    TokenSeq,
    /// A number.
    Float,
    /// Space-separated numbers.
    FloatSeq,
}

impl FieldType {
    /// The name in a RecBole header (`token`, `token_seq`, `float`, `float_seq`).
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Token => "token",
            FieldType::TokenSeq => "token_seq",
            FieldType::Float => "float",
            FieldType::FloatSeq => "float_seq",
        }
    }

    fn parse(s: &str) -> Option<FieldType> {
        Some(match s {
            "token" => FieldType::Token,
            "token_seq" => FieldType::TokenSeq,
            "float" => FieldType::Float,
            "float_seq" => FieldType::FloatSeq,
            _ => return None,
        })
    }
}

/// One value of a side-information table. Empty numeric fields are NaN.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    /// A token.
    Token(String),
    /// A list of tokens.
    TokenSeq(Vec<String>),
    /// A number.
    Float(f64),
    /// A list of numbers.
    FloatSeq(Vec<f64>),
}

impl FieldValue {
    /// The value as text: a token, or a token list joined with spaces; `None` for numbers.
    pub fn text(&self) -> Option<String> {
        match self {
            FieldValue::Token(t) => Some(t.clone()),
            FieldValue::TokenSeq(ts) => Some(ts.join(" ")),
            _ => None,
        }
    }
}

/// Side information (`.item`, `.user`, `u.item`, `movies.csv`) keyed by internal id.
#[derive(Clone, Debug, Default)]
pub struct SideTable {
    fields: Vec<(String, FieldType)>,
    rows: Vec<Option<Vec<FieldValue>>>,
}

impl SideTable {
    pub(crate) fn new(fields: Vec<(String, FieldType)>) -> Self {
        SideTable {
            fields,
            rows: Vec::new(),
        }
    }

    pub(crate) fn set(&mut self, id: u32, values: Vec<FieldValue>) {
        let id = id as usize;
        if self.rows.len() <= id {
            self.rows.resize(id + 1, None);
        }
        self.rows[id] = Some(values);
    }

    /// The columns (without the id column), in file order.
    pub fn fields(&self) -> &[(String, FieldType)] {
        &self.fields
    }

    /// The values of `id`'s row, if it has one.
    pub(crate) fn row(&self, id: u32) -> Option<&[FieldValue]> {
        self.rows.get(id as usize)?.as_deref()
    }

    /// Number of ids with a row.
    pub fn n_rows(&self) -> usize {
        self.rows.iter().filter(|r| r.is_some()).count()
    }

    /// The value of column `field` for internal id `id`, if that id has a row.
    pub fn get(&self, id: u32, field: &str) -> Option<&FieldValue> {
        let col = self.fields.iter().position(|(n, _)| n == field)?;
        self.rows.get(id as usize)?.as_ref().map(|r| &r[col])
    }
}

/// User-item interactions with internal ids, one time-ordered sequence per user.
#[derive(Clone, Debug)]
pub struct Interactions {
    /// User tokens and ids.
    pub users: Vocab,
    /// Item tokens and ids.
    pub items: Vocab,
    /// Item ids per user id, in time order (`sequences[0]`, padding, is empty).
    pub sequences: Vec<Vec<u32>>,
    /// Timestamps (seconds) aligned with `sequences`, when the source has them.
    pub timestamps: Option<Vec<Vec<f64>>>,
    /// Ratings aligned with `sequences`, when the source has them.
    pub ratings: Option<Vec<Vec<f32>>>,
    /// Item side information, when a side file was read.
    pub item_features: Option<SideTable>,
    /// User side information, when a side file was read.
    pub user_features: Option<SideTable>,
}

impl Interactions {
    /// Number of user ids, padding included.
    pub fn n_users(&self) -> usize {
        self.users.len()
    }

    /// Number of item ids (the catalog size), padding included.
    pub fn n_items(&self) -> usize {
        self.items.len()
    }

    /// Total number of interactions.
    pub fn n_interactions(&self) -> usize {
        self.sequences.iter().map(Vec::len).sum()
    }

    /// Number of distinct items with at least one interaction.
    pub fn n_interacted_items(&self) -> usize {
        let mut seen = vec![false; self.n_items()];
        for &i in self.sequences.iter().flatten() {
            seen[i as usize] = true;
        }
        seen.iter().filter(|&&s| s).count()
    }
}

/// Accumulates rows in file order and builds the time-ordered [`Interactions`].
pub(crate) struct Builder {
    pub users: Vocab,
    pub items: Vocab,
    rows: Vec<(u32, u32)>,
    times: Option<Vec<f64>>,
    ratings: Option<Vec<f32>>,
}

impl Builder {
    pub fn new(has_time: bool, has_rating: bool) -> Self {
        Builder {
            users: Vocab::new(),
            items: Vocab::new(),
            rows: Vec::new(),
            times: has_time.then(Vec::new),
            ratings: has_rating.then(Vec::new),
        }
    }

    /// Adds one interaction; `time`/`rating` are used only when the builder was created with
    /// them.
    pub fn push(&mut self, user: &str, item: &str, time: Option<f64>, rating: Option<f32>) {
        let u = self.users.intern(user);
        let i = self.items.intern(item);
        self.rows.push((u, i));
        if let Some(t) = self.times.as_mut() {
            t.push(time.unwrap_or(0.0));
        }
        if let Some(r) = self.ratings.as_mut() {
            r.push(rating.unwrap_or(f32::NAN));
        }
    }

    pub fn n_rows(&self) -> usize {
        self.rows.len()
    }

    /// Groups by user and sorts each user's rows by time, stably.
    pub fn finish(self) -> Interactions {
        let n_users = self.users.len();
        let mut per_user: Vec<Vec<usize>> = vec![Vec::new(); n_users];
        for (row, &(u, _)) in self.rows.iter().enumerate() {
            per_user[u as usize].push(row);
        }
        if let Some(times) = &self.times {
            for rows in &mut per_user {
                // Stable: equal timestamps keep file order.
                rows.sort_by(|&a, &b| times[a].total_cmp(&times[b]));
            }
        }
        let pick = |rows: &Vec<usize>| rows.iter().map(|&r| self.rows[r].1).collect::<Vec<_>>();
        let sequences = per_user.iter().map(pick).collect();
        let timestamps = self.times.as_ref().map(|t| {
            per_user
                .iter()
                .map(|rows| rows.iter().map(|&r| t[r]).collect())
                .collect()
        });
        let ratings = self.ratings.as_ref().map(|v| {
            per_user
                .iter()
                .map(|rows| rows.iter().map(|&r| v[r]).collect())
                .collect()
        });
        Interactions {
            users: self.users,
            items: self.items,
            sequences,
            timestamps,
            ratings,
            item_features: None,
            user_features: None,
        }
    }
}

/// A loaded data set: interactions to split, or a benchmark that comes already split.
#[derive(Clone, Debug)]
pub enum Dataset {
    /// Interactions, to be split with [`split`].
    Interactions(Interactions),
    /// A pre-split benchmark ([`read_benchmark`]): its split is used as given.
    Presplit(Presplit),
}

/// A pre-split benchmark: vocabularies and the given split.
#[derive(Clone, Debug)]
pub struct Presplit {
    /// User tokens and ids.
    pub users: Vocab,
    /// Item tokens and ids.
    pub items: Vocab,
    /// Item side information, when `NAME.item` exists.
    pub item_features: Option<SideTable>,
    /// The given split ([`SplitMethod::Given`]).
    pub split: Split,
}

impl Presplit {
    /// Each user's longest sequence in the given split (a test row's history and target),
    /// without timestamps, so that the benchmark can be split again by sequence. A benchmark
    /// that caps its histories (UniSRec's Amazon files keep 50 items) loses the items of a
    /// longer sequence before the cap: on amazon-scientific 43 of 59,427 interactions.
    pub fn interactions(&self) -> Interactions {
        let mut sequences: Vec<Vec<u32>> = vec![Vec::new(); self.users.len()];
        let mut offer = |user: u32, history: &[u32], target: u32| {
            let slot = &mut sequences[user as usize];
            if history.len() + 1 > slot.len() {
                slot.clear();
                slot.extend_from_slice(history);
                slot.push(target);
            }
        };
        if let TrainPart::Examples(ex) = &self.split.train {
            for e in ex {
                offer(e.user, &e.history, e.target);
            }
        }
        for e in self.split.valid.iter().chain(&self.split.test) {
            let last = e.items.len() - 1;
            offer(e.user, &e.items[..last], e.items[last]);
        }
        Interactions {
            users: self.users.clone(),
            items: self.items.clone(),
            sequences,
            timestamps: None,
            ratings: None,
            item_features: self.item_features.clone(),
            user_features: None,
        }
    }
}

impl Dataset {
    /// Item tokens and ids.
    pub fn items(&self) -> &Vocab {
        match self {
            Dataset::Interactions(i) => &i.items,
            Dataset::Presplit(p) => &p.items,
        }
    }

    /// User tokens and ids.
    pub fn users(&self) -> &Vocab {
        match self {
            Dataset::Interactions(i) => &i.users,
            Dataset::Presplit(p) => &p.users,
        }
    }

    /// The split to use when none is asked for: the given one for a benchmark, leave-one-out
    /// otherwise.
    pub fn default_split_method(&self) -> SplitMethod {
        match self {
            Dataset::Interactions(_) => SplitMethod::LeaveOneOut,
            Dataset::Presplit(_) => SplitMethod::Given,
        }
    }

    /// Splits the interactions with `method`, or returns a benchmark's given split. A
    /// benchmark also accepts a ratio split, over [`Presplit::interactions`].
    pub fn split(&self, method: &SplitMethod) -> Result<Split> {
        match (self, method) {
            (Dataset::Presplit(p), SplitMethod::Given) => Ok(p.split.clone()),
            (Dataset::Presplit(p), m @ SplitMethod::Ratio { .. }) => split(&p.interactions(), m),
            (Dataset::Presplit(_), m) => Err(DataError::Invalid(format!(
                "split `{m}`: this benchmark comes already split; use the given split"
            ))),
            (Dataset::Interactions(i), m) => split(i, m),
        }
    }
}

/// Loads a data set from `path` (a directory or a file) in `format`, or in the format
/// [`detect`] finds when `format` is `None`.
pub fn load(path: &Path, format: Option<DataFormat>) -> Result<Dataset> {
    let source = match format {
        Some(f) => locate(path, f)?,
        None => detect(path)?,
    };
    source.load()
}

/// The text of a file: UTF-8, or Latin-1 when it is not valid UTF-8 (the original MovieLens
/// `u.item` is Latin-1).
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => e.into_bytes().iter().map(|&b| b as char).collect(),
    })
}

/// Non-empty lines with their 1-based numbers, a trailing `\r` removed.
pub(crate) fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.trim().is_empty())
}

/// Parses a finite number for column `column` of `path:line`.
pub(crate) fn parse_finite(path: &Path, line: usize, column: &str, value: &str) -> Result<f64> {
    match value.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(DataError::BadNumber {
            path: path.display().to_string(),
            line,
            column: column.to_string(),
            value: value.to_string(),
            expected: "finite number",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_interns_in_order_with_padding_first() {
        let mut v = Vocab::new();
        assert_eq!(v.intern("b"), 1);
        assert_eq!(v.intern("a"), 2);
        assert_eq!(v.intern("b"), 1);
        assert_eq!(v.tokens(), &["[PAD]", "b", "a"]);
        assert_eq!(v.id("a"), Some(2));
        assert_eq!(v.id("[PAD]"), None);
        assert_eq!(v.token(0), Some("[PAD]"));
        assert_eq!(v.token(3), None);
    }

    #[test]
    fn builder_sorts_by_time_stably() {
        let mut b = Builder::new(true, false);
        b.push("u", "x", Some(5.0), None);
        b.push("u", "y", Some(1.0), None);
        b.push("v", "x", Some(0.0), None);
        b.push("u", "z", Some(5.0), None);
        b.push("u", "w", Some(1.0), None);
        let inter = b.finish();
        let u = inter.users.id("u").unwrap() as usize;
        let names: Vec<_> = inter.sequences[u]
            .iter()
            .map(|&i| inter.items.token(i).unwrap())
            .collect();
        // Ties at t=1 (y then w) and t=5 (x then z) keep file order.
        assert_eq!(names, ["y", "w", "x", "z"]);
        assert_eq!(inter.timestamps.as_ref().unwrap()[u], [1.0, 1.0, 5.0, 5.0]);
        assert!(inter.sequences[0].is_empty());
        assert_eq!(inter.n_interactions(), 5);
    }

    #[test]
    fn latin1_fallback() {
        let dir = std::env::temp_dir().join(format!("seqrec-latin1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        std::fs::write(&p, b"Mis\xe9rables\n").unwrap();
        assert_eq!(read_text(&p).unwrap(), "Misérables\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
