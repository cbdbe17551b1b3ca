//! Plain-text formats: the SASRec `user item` file and MovieLens (`u.data` with `u.item` /
//! `u.user`, or the newer `ratings.csv` with `movies.csv`).

use super::{
    Builder, DataError, FieldType, FieldValue, Interactions, Result, SideTable, Vocab,
    numbered_lines, parse_finite, read_text,
};
use std::path::Path;

/// Reads the SASRec text format: one interaction `user item` per line, whitespace-separated,
/// already in time order per user (the order is kept; there are no timestamps).
pub fn read_sasrec_txt(path: &Path) -> Result<Interactions> {
    let text = read_text(path)?;
    let mut b = Builder::new(false, false);
    for (line, l) in numbered_lines(&text) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() != 2 {
            return Err(DataError::ColumnCount {
                path: path.display().to_string(),
                line,
                expected: 2,
                found: f.len(),
            });
        }
        b.push(f[0], f[1], None, None);
    }
    if b.n_rows() == 0 {
        return Err(DataError::Empty {
            path: path.display().to_string(),
        });
    }
    Ok(b.finish())
}

/// The 19 genre flags of MovieLens 100K `u.item`, in column order (as listed in `u.genre`).
const ML100K_GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// Reads MovieLens from a directory (or one of its rating files):
/// - `u.data` (TAB: `user item rating timestamp`, no header) with, when present, `u.item`
///   (`|`-separated: id, title, release date, video release date, IMDb URL, 19 genre flags;
///   kept as `movie_title`, `release_date`, `genres`) and `u.user` (`|`: id, age, gender,
///   occupation, zip code);
/// - or `ratings.csv` (header `userId,movieId,rating,timestamp`, columns by name) with, when
///   present, `movies.csv` (`movieId,title,genres`; genres split on `|`, and
///   `(no genres listed)` read as none).
///
/// Items listed only in the movie file get ids after the rated ones.
pub fn read_movielens(path: &Path) -> Result<Interactions> {
    let (dir, file) = if path.is_dir() {
        let data = path.join("u.data");
        let file = if data.is_file() {
            data
        } else {
            path.join("ratings.csv")
        };
        (path.to_path_buf(), file)
    } else {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        (dir, path.to_path_buf())
    };
    if file.extension().is_some_and(|e| e == "csv") {
        read_ml_csv(&dir, &file)
    } else {
        read_ml_100k(&dir, &file)
    }
}

fn read_ml_100k(dir: &Path, data: &Path) -> Result<Interactions> {
    const COLS: [&str; 4] = ["user", "item", "rating", "timestamp"];
    let text = read_text(data)?;
    let mut b = Builder::new(true, true);
    for (line, l) in numbered_lines(&text) {
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() != COLS.len() {
            return Err(DataError::ColumnCount {
                path: data.display().to_string(),
                line,
                expected: COLS.len(),
                found: f.len(),
            });
        }
        let rating = parse_finite(data, line, COLS[2], f[2])? as f32;
        let time = parse_finite(data, line, COLS[3], f[3])?;
        b.push(f[0].trim(), f[1].trim(), Some(time), Some(rating));
    }
    if b.n_rows() == 0 {
        return Err(DataError::Empty {
            path: data.display().to_string(),
        });
    }
    let item_path = dir.join("u.item");
    let items = match item_path.is_file() {
        true => Some(read_u_item(&item_path, &mut b.items)?),
        false => None,
    };
    let user_path = dir.join("u.user");
    let users = match user_path.is_file() {
        true => Some(read_pipe_side(
            &user_path,
            &["age", "gender", "occupation", "zip_code"],
            &mut b.users,
        )?),
        false => None,
    };
    let mut inter = b.finish();
    inter.item_features = items;
    inter.user_features = users;
    Ok(inter)
}

fn split_pipe<'a>(path: &Path, line: usize, l: &'a str, n: usize) -> Result<Vec<&'a str>> {
    let f: Vec<&str> = l.split('|').collect();
    if f.len() != n {
        return Err(DataError::ColumnCount {
            path: path.display().to_string(),
            line,
            expected: n,
            found: f.len(),
        });
    }
    Ok(f)
}

fn read_u_item(path: &Path, vocab: &mut Vocab) -> Result<SideTable> {
    let text = read_text(path)?;
    let mut side = SideTable::new(vec![
        ("movie_title".into(), FieldType::TokenSeq),
        ("release_date".into(), FieldType::Token),
        ("genres".into(), FieldType::TokenSeq),
    ]);
    for (line, l) in numbered_lines(&text) {
        let f = split_pipe(path, line, l, 5 + ML100K_GENRES.len())?;
        let mut genres = Vec::new();
        for (g, flag) in ML100K_GENRES.iter().zip(&f[5..]) {
            match flag.trim() {
                "1" => genres.push(g.to_string()),
                "0" => {}
                other => {
                    return Err(DataError::Malformed {
                        path: path.display().to_string(),
                        line,
                        message: format!("genre flag `{g}` is `{other}`, expected 0 or 1"),
                    });
                }
            }
        }
        let id = vocab.intern(f[0].trim());
        let title = f[1].split_whitespace().map(String::from).collect();
        side.set(
            id,
            vec![
                FieldValue::TokenSeq(title),
                FieldValue::Token(f[2].to_string()),
                FieldValue::TokenSeq(genres),
            ],
        );
    }
    Ok(side)
}

/// A `|`-separated side file: an id column, then `names` as tokens.
fn read_pipe_side(path: &Path, names: &[&str], vocab: &mut Vocab) -> Result<SideTable> {
    let text = read_text(path)?;
    let fields = names.iter().map(|n| (n.to_string(), FieldType::Token));
    let mut side = SideTable::new(fields.collect());
    for (line, l) in numbered_lines(&text) {
        let f = split_pipe(path, line, l, names.len() + 1)?;
        let id = vocab.intern(f[0].trim());
        side.set(
            id,
            f[1..]
                .iter()
                .map(|v| FieldValue::Token(v.to_string()))
                .collect(),
        );
    }
    Ok(side)
}

/// Splits one CSV record: fields separated by commas, optionally double-quoted, `""` inside
/// quotes for a quote. Records spanning lines are not supported (an open quote at the end of
/// the line is an error).
pub(crate) fn split_csv(path: &Path, line: usize, l: &str) -> Result<Vec<String>> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = l.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cur.push('"');
                }
                '"' => {
                    quoted = false;
                    if !matches!(chars.peek(), None | Some(',')) {
                        return Err(DataError::Malformed {
                            path: path.display().to_string(),
                            line,
                            message: "text after a closing quote".into(),
                        });
                    }
                }
                c => cur.push(c),
            }
            continue;
        }
        match c {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            ',' => {
                fields.push(std::mem::take(&mut cur));
                at_start = true;
            }
            c => {
                cur.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return Err(DataError::Malformed {
            path: path.display().to_string(),
            line,
            message: "unterminated quoted field".into(),
        });
    }
    fields.push(cur);
    Ok(fields)
}

/// CSV records with their 1-based line numbers.
type Records = Vec<(usize, Vec<String>)>;

/// A CSV file with a header row: the header's names and the records.
fn read_csv(path: &Path) -> Result<(Vec<String>, Records)> {
    let text = read_text(path)?;
    let mut lines = numbered_lines(&text);
    let Some((hline, h)) = lines.next() else {
        return Err(DataError::Empty {
            path: path.display().to_string(),
        });
    };
    let header = split_csv(path, hline, h)?;
    let mut rows = Vec::new();
    for (line, l) in lines {
        let f = split_csv(path, line, l)?;
        if f.len() != header.len() {
            return Err(DataError::ColumnCount {
                path: path.display().to_string(),
                line,
                expected: header.len(),
                found: f.len(),
            });
        }
        rows.push((line, f));
    }
    Ok((header, rows))
}

fn csv_column(path: &Path, header: &[String], name: &str) -> Result<usize> {
    header
        .iter()
        .position(|h| h == name)
        .ok_or_else(|| DataError::MissingColumn {
            path: path.display().to_string(),
            column: name.to_string(),
            found: header.join(", "),
        })
}

fn read_ml_csv(dir: &Path, ratings: &Path) -> Result<Interactions> {
    let (header, rows) = read_csv(ratings)?;
    let uc = csv_column(ratings, &header, "userId")?;
    let ic = csv_column(ratings, &header, "movieId")?;
    let rc = csv_column(ratings, &header, "rating")?;
    let tc = csv_column(ratings, &header, "timestamp")?;
    let mut b = Builder::new(true, true);
    for (line, f) in &rows {
        for (c, name) in [(uc, "userId"), (ic, "movieId")] {
            if f[c].is_empty() {
                return Err(DataError::EmptyField {
                    path: ratings.display().to_string(),
                    line: *line,
                    column: name.into(),
                });
            }
        }
        let rating = parse_finite(ratings, *line, "rating", &f[rc])? as f32;
        let time = parse_finite(ratings, *line, "timestamp", &f[tc])?;
        b.push(&f[uc], &f[ic], Some(time), Some(rating));
    }
    if b.n_rows() == 0 {
        return Err(DataError::Empty {
            path: ratings.display().to_string(),
        });
    }
    let movies = dir.join("movies.csv");
    let items = match movies.is_file() {
        true => Some(read_movies_csv(&movies, &mut b.items)?),
        false => None,
    };
    let mut inter = b.finish();
    inter.item_features = items;
    Ok(inter)
}

fn read_movies_csv(path: &Path, vocab: &mut Vocab) -> Result<SideTable> {
    let (header, rows) = read_csv(path)?;
    let ic = csv_column(path, &header, "movieId")?;
    let tc = csv_column(path, &header, "title")?;
    let gc = csv_column(path, &header, "genres")?;
    let mut side = SideTable::new(vec![
        ("title".into(), FieldType::Token),
        ("genres".into(), FieldType::TokenSeq),
    ]);
    for (_, f) in &rows {
        let id = vocab.intern(&f[ic]);
        let genres = match f[gc].as_str() {
            "(no genres listed)" | "" => Vec::new(),
            g => g.split('|').map(String::from).collect(),
        };
        side.set(
            id,
            vec![
                FieldValue::Token(f[tc].clone()),
                FieldValue::TokenSeq(genres),
            ],
        );
    }
    Ok(side)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_escapes() {
        let p = Path::new("m.csv");
        let f = split_csv(p, 1, r#"11,"American President, The (1995)",Comedy"#).unwrap();
        assert_eq!(f, ["11", "American President, The (1995)", "Comedy"]);
        let f = split_csv(p, 1, r#"1,"say ""hi""",,x"#).unwrap();
        assert_eq!(f, ["1", "say \"hi\"", "", "x"]);
        let e = split_csv(p, 7, r#"1,"open"#).unwrap_err().to_string();
        assert!(e.contains("m.csv:7") && e.contains("unterminated"), "{e}");
        let e = split_csv(p, 3, r#"1,"a"b"#).unwrap_err().to_string();
        assert!(e.contains("m.csv:3"), "{e}");
    }
}
