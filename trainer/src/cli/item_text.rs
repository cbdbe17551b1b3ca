//! Item texts of a dataset, keyed by integer item id, for `seqrec embed-items`.
//!
//! - `recbole`: `<data>/<name>.item` (`<name>` = the folder's name, else the folder's only
//!   `.item` file), TAB-separated with a `field:type` header. The id is the `item_id` field's
//!   token parsed as an integer (the raw token, not RecBole's remapped internal id); the text
//!   is the item's `token` and `token_seq` fields, title fields first, then the others in file
//!   order, empty ones skipped, joined with `". "` (ml-100k: `Toy Story. 1995. Animation
//!   Children's Comedy`).
//! - `amazon-scientific`: UniSRec's layout, `<name>.text` (`item_id:token  text:token_seq`,
//!   keyed by ASIN) and `<name>.item2index` (`ASIN<TAB>index`, no header); the id is the index.

use super::CliError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// An item's text and its title alone (for prompts that name items: `a movie titled ...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemText {
    /// The whole text (see the module docs).
    pub text: String,
    /// The title: the RecBole fields whose name holds `title`, or UniSRec's text up to its
    /// first `". "`.
    pub title: String,
}

/// Texts by item id; `None` for an item listed without any text.
pub type ItemTexts = BTreeMap<u32, Option<ItemText>>;

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError::input(format!("{}: {e}", path.display())))
}

/// `<dir>/<dir name>.<ext>`, else the only `*.<ext>` file in `dir`.
fn find_file(dir: &Path, ext: &str) -> Result<PathBuf, CliError> {
    if let Some(name) = dir.file_name() {
        let p = dir.join(format!("{}.{ext}", name.to_string_lossy()));
        if p.is_file() {
            return Ok(p);
        }
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| CliError::input(format!("{}: {e}", dir.display())))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == ext))
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(CliError::input(format!(
            "{}: no .{ext} file found",
            dir.display()
        ))),
        _ => Err(CliError::input(format!(
            "{}: several .{ext} files ({}); name the folder after one of them",
            dir.display(),
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn parse_id(path: &Path, line: usize, token: &str) -> Result<u32, CliError> {
    token.trim().parse::<u32>().map_err(|_| {
        CliError::input(format!(
            "{}:{line}: item id `{token}` is not a non-negative integer",
            path.display()
        ))
    })
}

fn insert(
    texts: &mut ItemTexts,
    path: &Path,
    line: usize,
    id: u32,
    text: Option<ItemText>,
) -> Result<(), CliError> {
    if texts.insert(id, text).is_some() {
        return Err(CliError::input(format!(
            "{}:{line}: item id {id} is listed twice",
            path.display()
        )));
    }
    Ok(())
}

/// The text columns `(index, name)` in the order an item's text joins them: those whose name
/// holds `title` first, then the others, each group in file order; and how many are titles.
fn title_first<'a>(cols: impl Iterator<Item = (usize, &'a str)>) -> (Vec<usize>, usize) {
    let (titles, rest): (Vec<_>, Vec<_>) = cols.partition(|(_, n)| n.contains("title"));
    let n_titles = titles.len();
    let order = titles.into_iter().chain(rest).map(|(i, _)| i).collect();
    (order, n_titles)
}

/// Reads a RecBole atomic `.item` file (see the module docs).
pub fn read_recbole(dir: &Path) -> Result<(PathBuf, ItemTexts), CliError> {
    let path = find_file(dir, "item")?;
    let content = read(&path)?;
    let mut lines = content.lines();
    let header = lines
        .next()
        .ok_or_else(|| CliError::input(format!("{}: empty file", path.display())))?;
    let fields: Vec<(&str, &str)> = header
        .split('\t')
        .map(|f| f.split_once(':').unwrap_or((f, "")))
        .collect();
    let id_col = fields
        .iter()
        .position(|(name, _)| *name == "item_id")
        .ok_or_else(|| {
            CliError::input(format!(
                "{}:1: the header has no `item_id` field",
                path.display()
            ))
        })?;
    let (text_cols, title_cols) =
        title_first(fields.iter().enumerate().filter_map(|(i, (n, ty))| {
            (i != id_col && matches!(*ty, "token" | "token_seq")).then_some((i, *n))
        }));
    let mut texts = ItemTexts::new();
    for (i, row) in lines.enumerate() {
        let line = i + 2;
        if row.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = row.split('\t').collect();
        let id = parse_id(&path, line, cells.get(id_col).copied().unwrap_or(""))?;
        let cell = |c: &usize| cells.get(*c).map(|s| s.trim()).filter(|s| !s.is_empty());
        let parts: Vec<&str> = text_cols.iter().filter_map(cell).collect();
        let title: Vec<&str> = text_cols[..title_cols].iter().filter_map(cell).collect();
        let text = (!parts.is_empty()).then(|| ItemText {
            text: parts.join(". "),
            title: if title.is_empty() {
                parts[0].to_string()
            } else {
                title.join(" ")
            },
        });
        insert(&mut texts, &path, line, id, text)?;
    }
    Ok((path, texts))
}

/// Reads UniSRec's `.text` + `.item2index` pair (see the module docs).
pub fn read_amazon(dir: &Path) -> Result<(PathBuf, ItemTexts), CliError> {
    let index_path = find_file(dir, "item2index")?;
    let text_path = find_file(dir, "text")?;
    let mut by_asin: BTreeMap<String, String> = BTreeMap::new();
    let content = read(&text_path)?;
    for (i, row) in content.lines().enumerate().skip(1) {
        if row.trim().is_empty() {
            continue;
        }
        let (asin, text) = row.split_once('\t').ok_or_else(|| {
            CliError::input(format!(
                "{}:{}: expected `ASIN<TAB>text`",
                text_path.display(),
                i + 1
            ))
        })?;
        by_asin.insert(asin.trim().to_string(), text.trim().to_string());
    }
    let mut texts = ItemTexts::new();
    for (i, row) in read(&index_path)?.lines().enumerate() {
        if row.trim().is_empty() {
            continue;
        }
        let (asin, index) = row.split_once('\t').ok_or_else(|| {
            CliError::input(format!(
                "{}:{}: expected `ASIN<TAB>index`",
                index_path.display(),
                i + 1
            ))
        })?;
        let id = parse_id(&index_path, i + 1, index)?;
        let text = by_asin
            .get(asin.trim())
            .filter(|t| !t.is_empty())
            .map(|t| ItemText {
                title: t.split(". ").next().unwrap_or(t).trim().to_string(),
                text: t.clone(),
            });
        insert(&mut texts, &index_path, i + 1, id, text)?;
    }
    Ok((index_path, texts))
}

/// Every item's text by **internal** id of `ds` (`[0]`, padding, is `None`; an item listed
/// without any text is `None` too), with the file the texts came from:
/// - a data set read with an item side file (RecBole `.item`, MovieLens `u.item` or
///   `movies.csv`): its token fields, title fields first, empty ones skipped, joined with
///   `". "` as [`read_recbole`] does (ml-latest-small: `Toy Story (1995). Adventure Animation
///   Children Comedy Fantasy`);
/// - otherwise UniSRec's `.text` + `.item2index` pair in `dir` ([`read_amazon`]), the data
///   set's item tokens being the indices.
///
/// A data set with neither is an error that names the folder.
pub fn by_internal_id(
    dir: &Path,
    ds: &crate::data::Dataset,
) -> Result<(String, Vec<Option<String>>), CliError> {
    use crate::data::{Dataset, FieldType};
    let vocab = ds.items();
    let side = match ds {
        Dataset::Interactions(i) => i.item_features.as_ref(),
        Dataset::Presplit(p) => p.item_features.as_ref(),
    };
    if let Some(side) = side {
        let fields = side.fields();
        let (cols, _) = title_first(fields.iter().enumerate().filter_map(|(i, (n, t))| {
            matches!(t, FieldType::Token | FieldType::TokenSeq).then_some((i, n.as_str()))
        }));
        let cols: Vec<&str> = cols.iter().map(|&i| fields[i].0.as_str()).collect();
        let texts = (0..vocab.len() as u32)
            .map(|id| {
                let parts: Vec<String> = cols
                    .iter()
                    .filter_map(|c| side.get(id, c)?.text())
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect();
                (id != 0 && !parts.is_empty()).then(|| parts.join(". "))
            })
            .collect();
        return Ok((format!("{} (item side file)", dir.display()), texts));
    }
    let has = |ext: &str| {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .filter_map(|e| e.ok())
                .any(|e| e.path().extension().is_some_and(|x| x == ext))
        })
    };
    if !(dir.is_dir() && has("item2index") && has("text")) {
        return Err(CliError::input(format!(
            "{}: the data set's items have no text (no .item, u.item or movies.csv side file, \
             and no UniSRec .text + .item2index pair)",
            dir.display()
        )));
    }
    let (path, by_index) = read_amazon(dir)?;
    let texts = (0..vocab.len() as u32)
        .map(|id| {
            let index = vocab.token(id)?.parse::<u32>().ok()?;
            (id != 0).then(|| by_index.get(&index)?.as_ref().map(|t| t.text.clone()))?
        })
        .collect();
    Ok((path.display().to_string(), texts))
}
