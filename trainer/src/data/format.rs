//! Data formats by name (`--data-format`), and finding a data set's files in a directory.

use super::atomic::{AtomicOptions, read_atomic, read_benchmark};
use super::text::{read_movielens, read_sasrec_txt};
use super::{DataError, Dataset, Result};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The on-disk formats the readers understand.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DataFormat {
    /// RecBole atomic files `NAME.inter` (+ `NAME.item`, `NAME.user`).
    Recbole,
    /// RecBole pre-split benchmark files `NAME.{train,valid,test}.inter`.
    RecboleBenchmark,
    /// SASRec's `user item` text file.
    SasrecTxt,
    /// MovieLens `u.data`/`u.item`/`u.user` or `ratings.csv`/`movies.csv`.
    Movielens,
}

const KNOWN: &str = "recbole|recbole-benchmark|sasrec-txt|movielens";

impl DataFormat {
    /// Every format, in the order of the `KNOWN` names.
    pub const ALL: [DataFormat; 4] = [
        DataFormat::Recbole,
        DataFormat::RecboleBenchmark,
        DataFormat::SasrecTxt,
        DataFormat::Movielens,
    ];

    /// The canonical name (`recbole`, `recbole-benchmark`, `sasrec-txt`, `movielens`).
    pub fn name(self) -> &'static str {
        match self {
            DataFormat::Recbole => "recbole",
            DataFormat::RecboleBenchmark => "recbole-benchmark",
            DataFormat::SasrecTxt => "sasrec-txt",
            DataFormat::Movielens => "movielens",
        }
    }
}

impl fmt::Display for DataFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DataFormat {
    type Err = DataError;

    /// Parses a canonical name, case-insensitively; `_` may stand for `-`, and `atomic`,
    /// `benchmark`, `sasrec`, `txt` and `ml` are accepted as aliases.
    fn from_str(s: &str) -> Result<Self> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        Ok(match norm.as_str() {
            "recbole" | "atomic" => DataFormat::Recbole,
            "recbole-benchmark" | "benchmark" => DataFormat::RecboleBenchmark,
            "sasrec-txt" | "sasrec" | "txt" => DataFormat::SasrecTxt,
            "movielens" | "ml" => DataFormat::Movielens,
            _ => {
                return Err(DataError::UnknownName {
                    what: "data format",
                    value: s.to_string(),
                    expected: KNOWN.replace('|', ", "),
                });
            }
        })
    }
}

/// A located data set: its format and where its files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The format.
    pub format: DataFormat,
    /// The file (SASRec text, MovieLens rating file) or directory (RecBole) to read.
    pub path: PathBuf,
    /// The RecBole data set name (`NAME` of `NAME.inter`); empty for other formats.
    pub name: String,
}

impl Source {
    /// Reads the data set with default column names.
    pub fn load(&self) -> Result<Dataset> {
        let opts = AtomicOptions::default();
        Ok(match self.format {
            DataFormat::Recbole => {
                Dataset::Interactions(read_atomic(&self.path, &self.name, &opts)?)
            }
            DataFormat::RecboleBenchmark => {
                Dataset::Presplit(read_benchmark(&self.path, &self.name, &opts)?)
            }
            DataFormat::SasrecTxt => Dataset::Interactions(read_sasrec_txt(&self.path)?),
            DataFormat::Movielens => Dataset::Interactions(read_movielens(&self.path)?),
        })
    }
}

/// File names in `dir`, sorted.
fn list(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        if entry.path().is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The `NAME`s with all three `NAME.{train,valid,test}.inter` files.
fn benchmark_names(files: &[String]) -> Vec<String> {
    let has = |n: String| files.contains(&n);
    files
        .iter()
        .filter_map(|f| f.strip_suffix(".train.inter"))
        .filter(|n| has(format!("{n}.valid.inter")) && has(format!("{n}.test.inter")))
        .map(String::from)
        .collect()
}

/// The `NAME`s of `NAME.inter` files that are not benchmark parts.
fn atomic_names(files: &[String]) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| f.strip_suffix(".inter"))
        .filter(|n| ![".train", ".valid", ".test"].iter().any(|s| n.ends_with(s)))
        .map(String::from)
        .collect()
}

/// Picks one name: the one equal to the directory's name when several exist (RecBole's
/// `data_path/NAME/NAME.inter` layout), else the only one.
fn pick(dir: &Path, names: Vec<String>, what: &str) -> Result<String> {
    let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    if names.len() > 1 {
        if let Some(d) = dir_name.filter(|d| names.contains(d)) {
            return Ok(d);
        }
    }
    match names.len() {
        1 => Ok(names.into_iter().next().expect("one name")),
        0 => Err(DataError::UndetectedFormat {
            path: dir.display().to_string(),
            found: format!("no {what}"),
            known: KNOWN,
        }),
        _ => Err(DataError::UndetectedFormat {
            path: dir.display().to_string(),
            found: format!("several {what}: {}", names.join(", ")),
            known: KNOWN,
        }),
    }
}

/// Finds the files of a data set in `format` at `path` (a directory, or the file itself for
/// the SASRec and MovieLens formats and for `NAME.inter`).
pub fn locate(path: &Path, format: DataFormat) -> Result<Source> {
    let source = |path: PathBuf, name: String| Source { format, path, name };
    if path.is_file() {
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        return match (format, file.as_deref()) {
            (DataFormat::Recbole, Some(f)) if f.ends_with(".inter") => {
                Ok(source(dir, f.trim_end_matches(".inter").to_string()))
            }
            (DataFormat::SasrecTxt | DataFormat::Movielens, _) => {
                Ok(source(path.into(), String::new()))
            }
            _ => Err(DataError::Invalid(format!(
                "{}: format `{format}` reads a directory, not a file",
                path.display()
            ))),
        };
    }
    let files = list(path)?;
    match format {
        DataFormat::Recbole => {
            let name = pick(path, atomic_names(&files), "NAME.inter file")?;
            Ok(source(path.into(), name))
        }
        DataFormat::RecboleBenchmark => {
            let name = pick(
                path,
                benchmark_names(&files),
                "NAME.{train,valid,test}.inter set",
            )?;
            Ok(source(path.into(), name))
        }
        DataFormat::SasrecTxt => {
            let txt: Vec<String> = (files.iter())
                .filter(|f| f.ends_with(".txt") && !f.eq_ignore_ascii_case("README.txt"))
                .cloned()
                .collect();
            let name = pick(path, txt, ".txt file")?;
            Ok(source(path.join(name), String::new()))
        }
        DataFormat::Movielens => {
            if files.iter().any(|f| f == "u.data" || f == "ratings.csv") {
                Ok(source(path.into(), String::new()))
            } else {
                Err(DataError::UndetectedFormat {
                    path: path.display().to_string(),
                    found: "no u.data or ratings.csv".into(),
                    known: KNOWN,
                })
            }
        }
    }
}

/// Detects the format of the data set at `path`. A directory is, in this order of
/// precedence: a RecBole benchmark when it has `NAME.{train,valid,test}.inter`; RecBole atomic
/// when it has a `NAME.inter`; MovieLens when it has `u.data` or `ratings.csv`; SASRec text
/// when it has exactly one `.txt` file other than `README.txt`. A file is RecBole atomic when
/// it ends in `.inter`, MovieLens when it is `u.data` or `ratings.csv`, else SASRec text.
pub fn detect(path: &Path) -> Result<Source> {
    if path.is_file() {
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let format = match file.as_deref() {
            Some(f) if f.ends_with(".inter") => DataFormat::Recbole,
            Some("u.data" | "ratings.csv") => DataFormat::Movielens,
            _ => DataFormat::SasrecTxt,
        };
        return locate(path, format);
    }
    let files = list(path)?;
    if !benchmark_names(&files).is_empty() {
        return locate(path, DataFormat::RecboleBenchmark);
    }
    if !atomic_names(&files).is_empty() {
        return locate(path, DataFormat::Recbole);
    }
    if files.iter().any(|f| f == "u.data" || f == "ratings.csv") {
        return locate(path, DataFormat::Movielens);
    }
    let txt =
        (files.iter()).filter(|f| f.ends_with(".txt") && !f.eq_ignore_ascii_case("README.txt"));
    if txt.count() == 1 {
        return locate(path, DataFormat::SasrecTxt);
    }
    let shown: Vec<&str> = files.iter().take(8).map(String::as_str).collect();
    Err(DataError::UndetectedFormat {
        path: path.display().to_string(),
        found: if files.is_empty() {
            "empty directory".into()
        } else {
            format!("files: {}", shown.join(", "))
        },
        known: KNOWN,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases() {
        for f in DataFormat::ALL {
            assert_eq!(f.name().parse::<DataFormat>().unwrap(), f);
        }
        assert_eq!(
            "RecBole_Benchmark".parse::<DataFormat>().unwrap(),
            DataFormat::RecboleBenchmark
        );
        assert_eq!("ml".parse::<DataFormat>().unwrap(), DataFormat::Movielens);
        let e = "parquet".parse::<DataFormat>().unwrap_err().to_string();
        assert!(e.contains("parquet") && e.contains("sasrec-txt"), "{e}");
    }

    #[test]
    fn benchmark_and_atomic_names() {
        let files: Vec<String> = [
            "a.train.inter",
            "a.valid.inter",
            "a.test.inter",
            "b.inter",
            "c.train.inter",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(benchmark_names(&files), ["a"]);
        assert_eq!(atomic_names(&files), ["b"]);
    }
}
