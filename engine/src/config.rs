//! Model configuration: a JSON object stored in the safetensors metadata under
//! [`CONFIG_KEY`] (`seqrec.config`) or given as a sidecar JSON file. Its `model` field names the
//! architecture; the other keys are RecBole's hyper-parameter names. A key that is absent takes
//! RecBole's default for that model (documented per model); a key of the wrong type is an error
//! naming the key.

use crate::error::{Error, Result};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde_json::{Map, Value};

/// Metadata key holding the JSON configuration.
pub const CONFIG_KEY: &str = "seqrec.config";

/// A parsed model configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    map: Map<String, Value>,
}

impl Config {
    /// Parses a JSON object.
    pub fn from_json(text: &str) -> Result<Config> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("not valid JSON: {e}")))?;
        match value {
            Value::Object(map) => Ok(Config { map }),
            other => Err(Error::Config(format!(
                "expected a JSON object, found {}",
                kind(&other)
            ))),
        }
    }

    /// Builds a configuration from key/value pairs (used by the trainer when it saves a model).
    pub fn from_map(map: Map<String, Value>) -> Config {
        Config { map }
    }

    /// The underlying JSON object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.map
    }

    /// Serialises to compact JSON (what goes into the metadata).
    pub fn to_json(&self) -> String {
        Value::Object(self.map.clone()).to_string()
    }

    /// The architecture name (`model` field), lower-cased.
    pub fn model(&self) -> Result<String> {
        match self.map.get("model") {
            Some(Value::String(s)) => Ok(s.to_ascii_lowercase()),
            Some(other) => Err(Error::Config(format!(
                "`model` must be a string, found {}",
                kind(other)
            ))),
            None => Err(Error::Config(
                "missing `model` field (the architecture name)".into(),
            )),
        }
    }

    /// Whether `key` is present.
    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// A required non-negative integer.
    pub fn usize(&self, key: &str) -> Result<usize> {
        match self.map.get(key) {
            None | Some(Value::Null) => Err(Error::Config(format!("missing required key `{key}`"))),
            Some(v) => as_usize(key, v),
        }
    }

    /// A non-negative integer, or `default` when absent.
    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => as_usize(key, v),
        }
    }

    /// A boolean, or `default` when absent.
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(Error::Config(format!(
                "`{key}` must be a boolean, found {}",
                kind(other)
            ))),
        }
    }

    /// A number, or `default` when absent.
    pub fn f32_or(&self, key: &str, default: f32) -> Result<f32> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Number(n)) => n
                .as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| Error::Config(format!("`{key}` is not a finite number"))),
            Some(other) => Err(Error::Config(format!(
                "`{key}` must be a number, found {}",
                kind(other)
            ))),
        }
    }

    /// A string, or `default` when absent.
    pub fn str_or(&self, key: &str, default: &str) -> Result<String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default.into()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(Error::Config(format!(
                "`{key}` must be a string, found {}",
                kind(other)
            ))),
        }
    }

    /// A list of non-negative integers, or `default` when absent.
    pub fn usize_list_or(&self, key: &str, default: &[usize]) -> Result<Vec<usize>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default.to_vec()),
            Some(Value::Array(items)) => items.iter().map(|v| as_usize(key, v)).collect(),
            Some(other) => Err(Error::Config(format!(
                "`{key}` must be a list of integers, found {}",
                kind(other)
            ))),
        }
    }

    /// Sets a key (builder style).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Config {
        self.map.insert(key.into(), value.into());
        self
    }
}

fn as_usize(key: &str, v: &Value) -> Result<usize> {
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                return usize::try_from(u)
                    .map_err(|_| Error::Config(format!("`{key}` = {u} is too large")));
            }
            // Accept integral floats such as 64.0 (Python json.dumps of a float hyper-parameter).
            match n.as_f64() {
                Some(f) if f >= 0.0 && libm::trunc(f) == f && f < 9.0e15 => Ok(f as usize),
                _ => Err(Error::Config(format!(
                    "`{key}` must be a non-negative integer, found {n}"
                ))),
            }
        }
        other => Err(Error::Config(format!(
            "`{key}` must be a non-negative integer, found {}",
            kind(other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_typed_keys_and_defaults() {
        let c = Config::from_json(
            r#"{"model":"SASRec","n_items":1000,"hidden_size":64.0,"dilations":[1,4],"eps":1e-12}"#,
        )
        .unwrap();
        assert_eq!(c.model().unwrap(), "sasrec");
        assert_eq!(c.usize("n_items").unwrap(), 1000);
        assert_eq!(c.usize("hidden_size").unwrap(), 64);
        assert_eq!(c.usize_or("n_layers", 2).unwrap(), 2);
        assert_eq!(c.usize_list_or("dilations", &[]).unwrap(), [1, 4]);
        assert_eq!(c.f32_or("eps", 0.0).unwrap(), 1e-12);
    }

    #[test]
    fn errors_name_the_key() {
        let c = Config::from_json(r#"{"model":"sasrec","n_items":-3,"n_heads":"two"}"#).unwrap();
        assert!(
            c.usize("n_items")
                .unwrap_err()
                .to_string()
                .contains("`n_items`")
        );
        assert!(
            c.usize_or("n_heads", 2)
                .unwrap_err()
                .to_string()
                .contains("`n_heads`")
        );
        assert!(
            c.usize("missing")
                .unwrap_err()
                .to_string()
                .contains("`missing`")
        );
        assert!(
            Config::from_json("[1,2]")
                .unwrap_err()
                .to_string()
                .contains("JSON object")
        );
        assert!(
            Config::from_json("{")
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
    }
}
