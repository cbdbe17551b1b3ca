//! Text to token ids with the Hugging Face `tokenizers` crate, from the model's
//! `tokenizer.json` (the contract: normaliser, pre-tokeniser, WordPiece vocabulary and the
//! `[CLS] … [SEP]` template all come from that file).
//!
//! The file's own padding and truncation settings are replaced: no padding (batches are packed,
//! see [`super::bert`]) and truncation of the whole sequence, special tokens included, to the
//! encoder's maximum length, keeping the beginning of the text, as sentence-transformers does
//! with its `max_seq_length`.

use crate::error::{Error, Result};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use std::path::Path;
use tokenizers::{
    PostProcessor, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

/// A tokenizer configured for sentence encoding.
pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
    lowercase: bool,
    vocab_size: usize,
    origin: String,
}

impl core::fmt::Debug for TextTokenizer {
    // The vocabulary is large: show the settings only.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("origin", &self.origin)
            .field("vocab_size", &self.vocab_size)
            .field("max_len", &self.max_len)
            .field("lowercase", &self.lowercase)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json` and configures it to cut sequences at `max_len` tokens.
    pub fn from_file(path: &Path, max_len: usize) -> Result<TextTokenizer> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: origin.clone(),
            source,
        })?;
        Self::from_bytes(&bytes, max_len, origin)
    }

    /// Parses a `tokenizer.json` image; `origin` names it in errors.
    pub fn from_bytes(json: &[u8], max_len: usize, origin: String) -> Result<TextTokenizer> {
        let mut inner = Tokenizer::from_bytes(json)
            .map_err(|e| Error::Tokenizer(e.to_string()).in_origin(&origin))?;
        let added = inner
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        if max_len <= added {
            return Err(Error::Config(format!(
                "a maximum sequence length of {max_len} tokens leaves no room for text next to \
                 the {added} special tokens the tokenizer adds"
            )));
        }
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()).in_origin(&origin))?;
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0);
        Ok(TextTokenizer {
            inner,
            max_len,
            lowercase: false,
            vocab_size,
            origin,
        })
    }

    /// Lower-cases text before tokenizing (sentence-transformers' `do_lower_case`).
    pub fn set_lowercase(&mut self, on: bool) {
        self.lowercase = on;
    }

    /// One past the largest token id the tokenizer can produce (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Longest sequence produced, special tokens included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The id of a vocabulary entry (e.g. `"[CLS]"`, `"##ing"`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Appends the ids of `text`, with the template's special tokens, to `ids` and returns how
    /// many were appended. Fails on text that yields no token besides the special ones (empty
    /// or blank text).
    pub fn encode_into(&self, text: &str, ids: &mut Vec<u32>) -> Result<usize> {
        let lowered;
        let text = if self.lowercase {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        let enc = self
            .inner
            .encode_fast(text, true)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", self.origin)))?;
        if enc.get_special_tokens_mask().iter().all(|&s| s == 1) {
            return Err(Error::InvalidArgument(
                "empty text: it has no token besides the special ones".into(),
            ));
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(enc.get_ids().len())
    }

    /// The ids of `text` with the template's special tokens (see [`Self::encode_into`]).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        self.encode_into(text, &mut ids)?;
        Ok(ids)
    }
}
