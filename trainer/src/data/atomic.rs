//! RecBole atomic files: `NAME.inter`, `NAME.item`, `NAME.user`, and the pre-split benchmark
//! files `NAME.train.inter`, `NAME.valid.inter`, `NAME.test.inter`.
//!
//! Each file is TAB-separated with a typed header row such as
//! `user_id:token item_id:token rating:float timestamp:float` (TAB between the fields).
//! Columns are found by name, in any order; types are `token`, `token_seq`, `float` and
//! `float_seq` (sequences are space-separated). Columns the reader has no use for are checked
//! for their count only.

use super::split::{EvalSeq, Example, Split, SplitMethod, TrainPart};
use super::{
    Builder, DataError, FieldType, FieldValue, Interactions, Presplit, Result, SideTable, Vocab,
    numbered_lines, parse_finite, read_text,
};
use std::path::Path;

/// Column names of the RecBole fields the readers use (RecBole's `USER_ID_FIELD`,
/// `ITEM_ID_FIELD`, `TIME_FIELD`, `RATING_FIELD`). The benchmark history column is
/// `{item_field}_list`, as in RecBole.
#[derive(Clone, Debug)]
pub struct AtomicOptions {
    /// User id column (`user_id`).
    pub user_field: String,
    /// Item id column (`item_id`).
    pub item_field: String,
    /// Timestamp column (`timestamp`); optional in the file.
    pub time_field: String,
    /// Rating column (`rating`); optional in the file.
    pub rating_field: String,
}

impl Default for AtomicOptions {
    fn default() -> Self {
        AtomicOptions {
            user_field: "user_id".into(),
            item_field: "item_id".into(),
            time_field: "timestamp".into(),
            rating_field: "rating".into(),
        }
    }
}

/// A parsed header row.
struct Header {
    fields: Vec<(String, FieldType)>,
}

impl Header {
    fn parse(path: &Path, line: usize, text: &str) -> Result<Header> {
        let mut fields: Vec<(String, FieldType)> = Vec::new();
        for entry in text.split('\t') {
            let bad = |message: String| DataError::BadHeader {
                path: path.display().to_string(),
                line,
                field: entry.to_string(),
                message,
            };
            let Some((name, ty)) = entry.rsplit_once(':') else {
                return Err(bad("expected `name:type`".into()));
            };
            let ty = FieldType::parse(ty).ok_or_else(|| {
                bad(format!(
                    "unknown column type `{ty}` (expected token, token_seq, float or float_seq)"
                ))
            })?;
            if name.is_empty() {
                return Err(bad("empty column name".into()));
            }
            if fields.iter().any(|(n, _)| n == name) {
                return Err(bad("duplicate column name".into()));
            }
            fields.push((name.to_string(), ty));
        }
        Ok(Header { fields })
    }

    fn names(&self) -> String {
        let names: Vec<_> = self
            .fields
            .iter()
            .map(|(n, t)| format!("{n}:{}", t.name()))
            .collect();
        names.join(", ")
    }

    fn find(&self, name: &str) -> Option<(usize, FieldType)> {
        self.fields
            .iter()
            .position(|(n, _)| n == name)
            .map(|i| (i, self.fields[i].1))
    }

    /// The index of required column `name`, checked to have type `ty`.
    fn require(&self, path: &Path, name: &str, ty: FieldType) -> Result<usize> {
        let (i, found) = self.find(name).ok_or_else(|| DataError::MissingColumn {
            path: path.display().to_string(),
            column: name.to_string(),
            found: self.names(),
        })?;
        check_type(path, name, ty, found)?;
        Ok(i)
    }

    /// The index of optional column `name`, checked to have type `ty` when present.
    fn optional(&self, path: &Path, name: &str, ty: FieldType) -> Result<Option<usize>> {
        match self.find(name) {
            None => Ok(None),
            Some((i, found)) => check_type(path, name, ty, found).map(|_| Some(i)),
        }
    }
}

fn check_type(path: &Path, name: &str, expected: FieldType, found: FieldType) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(DataError::ColumnType {
            path: path.display().to_string(),
            column: name.to_string(),
            expected: expected.name().to_string(),
            found: found.name().to_string(),
        })
    }
}

/// A TAB-separated file with a header: its text is split into the header and the checked rows.
struct Table {
    header: Header,
    header_line: usize,
    text: String,
}

impl Table {
    fn read(path: &Path) -> Result<Table> {
        let text = read_text(path)?;
        let (header_line, header) = numbered_lines(&text)
            .next()
            .ok_or_else(|| DataError::Empty {
                path: path.display().to_string(),
            })
            .map(|(n, l)| (n, l.to_string()))?;
        let header = Header::parse(path, header_line, &header)?;
        Ok(Table {
            header,
            header_line,
            text,
        })
    }

    /// Data rows with their line numbers, each checked to have as many fields as the header.
    fn rows<'a>(
        &'a self,
        path: &'a Path,
    ) -> impl Iterator<Item = Result<(usize, Vec<&'a str>)>> + 'a {
        let n = self.header.fields.len();
        numbered_lines(&self.text)
            .skip_while(move |(line, _)| *line <= self.header_line)
            .map(move |(line, text)| {
                let fields: Vec<&str> = text.split('\t').collect();
                if fields.len() != n {
                    return Err(DataError::ColumnCount {
                        path: path.display().to_string(),
                        line,
                        expected: n,
                        found: fields.len(),
                    });
                }
                Ok((line, fields))
            })
    }
}

fn nonempty<'a>(path: &Path, line: usize, column: &str, value: &'a str) -> Result<&'a str> {
    if value.is_empty() {
        Err(DataError::EmptyField {
            path: path.display().to_string(),
            line,
            column: column.to_string(),
        })
    } else {
        Ok(value)
    }
}

/// Reads `dir/NAME.inter` and, when present, `dir/NAME.item` and `dir/NAME.user`.
///
/// Required columns: the user and item ids (`token`). Optional: the timestamp and rating
/// (`float`); with a timestamp column each user's interactions are sorted by it (stable for
/// ties), without one they keep file order. Ids in the side files that the interactions do
/// not mention get ids after those of the interactions (as in RecBole).
pub fn read_atomic(dir: &Path, name: &str, opts: &AtomicOptions) -> Result<Interactions> {
    let path = dir.join(format!("{name}.inter"));
    let table = Table::read(&path)?;
    let h = &table.header;
    let user = h.require(&path, &opts.user_field, FieldType::Token)?;
    let item = h.require(&path, &opts.item_field, FieldType::Token)?;
    let time = h.optional(&path, &opts.time_field, FieldType::Float)?;
    let rating = h.optional(&path, &opts.rating_field, FieldType::Float)?;
    let mut b = Builder::new(time.is_some(), rating.is_some());
    for row in table.rows(&path) {
        let (line, f) = row?;
        let u = nonempty(&path, line, &opts.user_field, f[user])?;
        let i = nonempty(&path, line, &opts.item_field, f[item])?;
        let t = match time {
            Some(c) => Some(parse_finite(&path, line, &opts.time_field, f[c])?),
            None => None,
        };
        let r = match rating {
            Some(c) => Some(parse_finite(&path, line, &opts.rating_field, f[c])? as f32),
            None => None,
        };
        b.push(u, i, t, r);
    }
    if b.n_rows() == 0 {
        return Err(DataError::Empty {
            path: path.display().to_string(),
        });
    }
    let item_path = dir.join(format!("{name}.item"));
    let items = match item_path.is_file() {
        true => Some(read_side(&item_path, &opts.item_field, &mut b.items)?),
        false => None,
    };
    let user_path = dir.join(format!("{name}.user"));
    let users = match user_path.is_file() {
        true => Some(read_side(&user_path, &opts.user_field, &mut b.users)?),
        false => None,
    };
    let mut inter = b.finish();
    inter.item_features = items;
    inter.user_features = users;
    Ok(inter)
}

/// Reads a side file keyed by column `key`; unknown keys are added to `vocab`.
fn read_side(path: &Path, key: &str, vocab: &mut Vocab) -> Result<SideTable> {
    let table = Table::read(path)?;
    let k = table.header.require(path, key, FieldType::Token)?;
    let cols: Vec<(usize, String, FieldType)> = (table.header.fields.iter().enumerate())
        .filter(|&(i, _)| i != k)
        .map(|(i, (n, t))| (i, n.clone(), *t))
        .collect();
    let mut side = SideTable::new(cols.iter().map(|(_, n, t)| (n.clone(), *t)).collect());
    for row in table.rows(path) {
        let (line, f) = row?;
        let id = vocab.intern(nonempty(path, line, key, f[k])?);
        let mut values = Vec::with_capacity(cols.len());
        for (c, name, ty) in &cols {
            values.push(parse_value(path, line, name, *ty, f[*c])?);
        }
        side.set(id, values);
    }
    Ok(side)
}

/// Parses a side-file value; an empty numeric field is NaN (RecBole fills missing floats).
fn parse_value(
    path: &Path,
    line: usize,
    column: &str,
    ty: FieldType,
    v: &str,
) -> Result<FieldValue> {
    let number = |s: &str| -> Result<f64> {
        s.trim().parse::<f64>().map_err(|_| DataError::BadNumber {
            path: path.display().to_string(),
            line,
            column: column.to_string(),
            value: s.to_string(),
            expected: "number",
        })
    };
    Ok(match ty {
        FieldType::Token => FieldValue::Token(v.to_string()),
        FieldType::TokenSeq => {
            FieldValue::TokenSeq(v.split_whitespace().map(String::from).collect())
        }
        FieldType::Float if v.trim().is_empty() => FieldValue::Float(f64::NAN),
        FieldType::Float => FieldValue::Float(number(v)?),
        FieldType::FloatSeq => {
            FieldValue::FloatSeq(v.split_whitespace().map(number).collect::<Result<_>>()?)
        }
    })
}

/// Reads RecBole's pre-split benchmark files `dir/NAME.{train,valid,test}.inter`, each with a
/// user column, a history column `{item_field}_list` (`token_seq`, oldest first) and a target
/// column `{item_field}`, plus `dir/NAME.item` when present.
///
/// The split is used as given: train rows become training examples (history, target), valid
/// and test rows one evaluation event each. Item tokens get ids in order of first appearance
/// (history before target, row by row, train then valid then test); user tokens likewise.
pub fn read_benchmark(dir: &Path, name: &str, opts: &AtomicOptions) -> Result<Presplit> {
    let mut users = Vocab::new();
    let mut items = Vocab::new();
    let mut parts: Vec<Vec<Example>> = Vec::with_capacity(3);
    let list_field = format!("{}_list", opts.item_field);
    for part in ["train", "valid", "test"] {
        let path = dir.join(format!("{name}.{part}.inter"));
        let table = Table::read(&path)?;
        let h = &table.header;
        let uc = h.require(&path, &opts.user_field, FieldType::Token)?;
        let lc = h.require(&path, &list_field, FieldType::TokenSeq)?;
        let ic = h.require(&path, &opts.item_field, FieldType::Token)?;
        let mut examples = Vec::new();
        for row in table.rows(&path) {
            let (line, f) = row?;
            let user = users.intern(nonempty(&path, line, &opts.user_field, f[uc])?);
            let history: Vec<u32> = f[lc].split_whitespace().map(|t| items.intern(t)).collect();
            if history.is_empty() {
                return Err(DataError::EmptyField {
                    path: path.display().to_string(),
                    line,
                    column: list_field.clone(),
                });
            }
            let target = items.intern(nonempty(&path, line, &opts.item_field, f[ic])?);
            examples.push(Example {
                user,
                history,
                target,
            });
        }
        if examples.is_empty() {
            return Err(DataError::Empty {
                path: path.display().to_string(),
            });
        }
        parts.push(examples);
    }
    let item_path = dir.join(format!("{name}.item"));
    let item_features = match item_path.is_file() {
        true => Some(read_side(&item_path, &opts.item_field, &mut items)?),
        false => None,
    };
    let test = parts.pop().expect("three parts");
    let valid = parts.pop().expect("three parts");
    let train = parts.pop().expect("three parts");
    let to_eval = |v: Vec<Example>| -> Vec<EvalSeq> {
        v.into_iter()
            .map(|e| {
                let first_target = e.history.len();
                let mut seq = e.history;
                seq.push(e.target);
                EvalSeq {
                    user: e.user,
                    items: seq,
                    first_target,
                    session_start: 0,
                }
            })
            .collect()
    };
    let split = Split {
        method: SplitMethod::Given,
        n_users: users.len(),
        n_items: items.len(),
        train: TrainPart::Examples(train),
        valid: to_eval(valid),
        test: to_eval(test),
    };
    Ok(Presplit {
        users,
        items,
        item_features,
        split,
    })
}
