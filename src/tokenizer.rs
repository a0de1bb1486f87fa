//! Text → token ids with a model folder's `tokenizer.json` (the `tokenizers` crate).

use crate::error::{ModelError, ModelResult};
use std::path::Path;

/// A loaded tokenizer, without padding and truncating at a fixed length.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer").finish_non_exhaustive()
    }
}

/// One tokenised text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, special tokens included.
    pub ids: Vec<u32>,
    /// The tokens as strings (for labels).
    pub tokens: Vec<String>,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, turning off the file's padding (MiniLM's pads every input to
    /// 128) and truncating at `max_length` tokens.
    pub fn from_file(path: &Path, max_length: usize) -> ModelResult<TextTokenizer> {
        Self::new(tokenizers::Tokenizer::from_file(path), path, max_length)
    }

    /// [`TextTokenizer::from_file`] for a tokenizer already parsed from `path` (or the error
    /// parsing it gave).
    pub fn new(
        parsed: tokenizers::Result<tokenizers::Tokenizer>,
        path: &Path,
        max_length: usize,
    ) -> ModelResult<TextTokenizer> {
        let fail = |e: &dyn std::fmt::Display| ModelError::Tokenizer { reason: format!("{}: {e}", path.display()) };
        let mut inner = parsed.map_err(|e| fail(&e))?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(tokenizers::TruncationParams { max_length, ..Default::default() }))
            .map_err(|e| fail(&e))?;
        Ok(TextTokenizer { inner })
    }

    /// Tokenises one text, adding the special tokens.
    pub fn encode(&self, text: &str) -> ModelResult<Encoded> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| ModelError::Tokenizer { reason: format!("encoding {text:?}: {e}") })?;
        Ok(Encoded { ids: enc.get_ids().to_vec(), tokens: enc.get_tokens().to_vec() })
    }
}
