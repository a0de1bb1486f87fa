//! Hugging Face `config.json` for the `bert` and `gpt2` model types.
//!
//! Strict on purpose: a required field that is missing, a field this crate does not know, or
//! a setting it does not implement (another activation, relative positions, cross-attention,
//! ...) is an error naming the file and the field, never a silent default. Fields that only
//! matter for training or for other heads (dropout rates, initialiser range, label maps, token
//! ids, ...) are accepted and ignored; they are listed in [`IGNORED_FIELDS`].

use crate::error::{ModelError, ModelResult};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Fields accepted and ignored for every model type: training settings, bookkeeping, and
/// settings of heads this crate does not run.
pub const IGNORED_FIELDS: &[&str] = &[
    "_name_or_path",
    "architectures",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "initializer_range",
    "gradient_checkpointing",
    "use_cache",
    "attention_probs_dropout_prob",
    "hidden_dropout_prob",
    "classifier_dropout",
    "attn_pdrop",
    "embd_pdrop",
    "resid_pdrop",
    "summary_activation",
    "summary_first_dropout",
    "summary_proj_to_labels",
    "summary_type",
    "summary_use_proj",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "sep_token_id",
    "decoder_start_token_id",
    "id2label",
    "label2id",
    "problem_type",
    "task_specific_params",
    "finetuning_task",
    "tokenizer_class",
    "prefix",
    "output_past",
    "return_dict",
    "output_hidden_states",
    "output_attentions",
    "torchscript",
    "chunk_size_feed_forward",
];

/// A parsed BERT config.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    /// Rows of the word-embedding table.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads (`hidden_size` must be a multiple).
    pub num_attention_heads: usize,
    /// FFN width.
    pub intermediate_size: usize,
    /// Rows of the position-embedding table (the longest input).
    pub max_position_embeddings: usize,
    /// Rows of the token-type table.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f32,
}

impl BertConfig {
    /// `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// What the encoder relies on: every size positive, `hidden_size` a multiple of
    /// `num_attention_heads`, the tables' sizes representable, eps finite and ≥ 0. Parsing
    /// checks it; so does building a model from a config made in code.
    pub fn check(&self) -> Result<(), String> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        check_sizes(&sizes, self.layer_norm_eps)?;
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        for (name, rows) in [("vocab_size", self.vocab_size), ("intermediate_size", self.intermediate_size)] {
            addressable_f32s(name, rows, self.hidden_size)?;
        }
        Ok(())
    }
}

/// Every size positive and eps a finite number ≥ 0.
fn check_sizes(sizes: &[(&str, usize)], eps: f32) -> Result<(), String> {
    if let Some((name, _)) = sizes.iter().find(|(_, size)| *size == 0) {
        return Err(format!("`{name}` must be positive"));
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(format!("the LayerNorm epsilon must be a finite number ≥ 0, got {eps}"));
    }
    Ok(())
}

/// `rows × width` f32 elements, when that many bytes are addressable (`name` says which rows
/// in the error).
pub(crate) fn addressable_f32s(name: &str, rows: usize, width: usize) -> Result<usize, String> {
    rows.checked_mul(width)
        .filter(|elements| elements.checked_mul(4).is_some_and(|bytes| bytes <= isize::MAX as usize))
        .ok_or_else(|| format!("`{name}` {rows} × width {width} is too large to address"))
}

/// A parsed GPT-2 config.
#[derive(Clone, Debug, PartialEq)]
pub struct Gpt2Config {
    /// Rows of `wte` (and columns of the logits).
    pub vocab_size: usize,
    /// Rows of `wpe` (the longest context).
    pub n_positions: usize,
    /// Model width.
    pub n_embd: usize,
    /// Decoder layers.
    pub n_layer: usize,
    /// Attention heads.
    pub n_head: usize,
    /// FFN width (`n_inner`, or `4·n_embd` when null).
    pub n_inner: usize,
    /// LayerNorm epsilon.
    pub layer_norm_epsilon: f32,
    /// Whether the LM head is `wte` (otherwise `lm_head.weight`).
    pub tie_word_embeddings: bool,
}

impl Gpt2Config {
    /// `n_embd / n_head`.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// What the decoder relies on: every size positive, `n_embd` a multiple of `n_head`, the
    /// tables' (and one sequence's KV cache) sizes representable, eps finite and ≥ 0. Parsing
    /// checks it; so does building a model from a config made in code.
    pub fn check(&self) -> Result<(), String> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_inner", self.n_inner),
        ];
        check_sizes(&sizes, self.layer_norm_epsilon)?;
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!("n_embd {} is not a multiple of n_head {}", self.n_embd, self.n_head));
        }
        for (name, rows) in
            [("vocab_size", self.vocab_size), ("n_positions", self.n_positions), ("n_inner", self.n_inner)]
        {
            addressable_f32s(name, rows, self.n_embd)?;
        }
        Ok(())
    }
}

/// A config of one of the supported model types.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelConfig {
    /// `"model_type": "bert"`.
    Bert(BertConfig),
    /// `"model_type": "gpt2"`.
    Gpt2(Gpt2Config),
}

impl ModelConfig {
    /// Reads and parses a config.json file.
    pub fn from_file(path: impl AsRef<Path>) -> ModelResult<ModelConfig> {
        let path = path.as_ref();
        let text = std::fs::read(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
        Self::parse(&text, path)
    }

    /// Parses config.json bytes; `path` names the file in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> ModelResult<ModelConfig> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| ModelError::Config { path: path.into(), reason: format!("not valid JSON: {e}") })?;
        let Value::Object(map) = value else {
            return Err(ModelError::Config { path: path.into(), reason: "must be a JSON object".into() });
        };
        let mut fields = Fields { map, path: path.to_path_buf() };
        let model_type = fields.string("model_type")?;
        let config = match model_type.as_str() {
            "bert" => ModelConfig::Bert(parse_bert(&mut fields)?),
            "gpt2" => ModelConfig::Gpt2(parse_gpt2(&mut fields)?),
            other => return Err(fields.err(format!("model_type {other:?} is not supported (supported: bert, gpt2)"))),
        };
        fields.finish()?;
        Ok(config)
    }
}

fn parse_bert(f: &mut Fields) -> ModelResult<BertConfig> {
    let config = BertConfig {
        vocab_size: f.positive("vocab_size")?,
        hidden_size: f.positive("hidden_size")?,
        num_hidden_layers: f.positive("num_hidden_layers")?,
        num_attention_heads: f.positive("num_attention_heads")?,
        intermediate_size: f.positive("intermediate_size")?,
        max_position_embeddings: f.positive("max_position_embeddings")?,
        type_vocab_size: f.positive("type_vocab_size")?,
        layer_norm_eps: f.eps("layer_norm_eps")?,
    };
    f.require_str("hidden_act", &["gelu"], "only erf GELU (\"gelu\") is implemented")?;
    f.optional_str("position_embedding_type", &["absolute"], "only absolute position embeddings are implemented")?;
    f.optional_bool("is_decoder", false, "decoder BERT is not implemented")?;
    f.optional_bool("add_cross_attention", false, "cross-attention is not implemented")?;
    // BERT has no LM head here; tying is irrelevant.
    f.take("tie_word_embeddings");
    config.check().map_err(|reason| f.err(reason))?;
    Ok(config)
}

fn parse_gpt2(f: &mut Fields) -> ModelResult<Gpt2Config> {
    let n_embd = f.positive("n_embd")?;
    let n_positions = f.positive("n_positions")?;
    let n_inner = match f.take("n_inner") {
        None | Some(Value::Null) => {
            n_embd.checked_mul(4).ok_or_else(|| f.err(format!("`n_embd` {n_embd} is too large")))?
        }
        Some(v) => f.as_positive("n_inner", &v)?,
    };
    let config = Gpt2Config {
        vocab_size: f.positive("vocab_size")?,
        n_positions,
        n_embd,
        n_layer: f.positive("n_layer")?,
        n_head: f.positive("n_head")?,
        n_inner,
        layer_norm_epsilon: f.eps("layer_norm_epsilon")?,
        tie_word_embeddings: match f.take("tie_word_embeddings") {
            None => true, // GPT-2's own default: the LM head is always tied in GPT2LMHeadModel
            Some(Value::Bool(b)) => b,
            Some(v) => return Err(f.err(format!("`tie_word_embeddings` must be a boolean, got {v}"))),
        },
    };
    if let Some(v) = f.take("n_ctx")
        && f.as_positive("n_ctx", &v)? != n_positions
    {
        return Err(f.err(format!("`n_ctx` {v} differs from `n_positions` {n_positions}")));
    }
    f.require_str("activation_function", &["gelu_new"], "only the tanh GELU (\"gelu_new\") is implemented")?;
    f.optional_bool("scale_attn_weights", true, "unscaled attention is not implemented")?;
    f.optional_bool("scale_attn_by_inverse_layer_idx", false, "per-layer attention scaling is not implemented")?;
    f.optional_bool("add_cross_attention", false, "cross-attention is not implemented")?;
    // Upcasting to f32 before the softmax is what this crate always does.
    f.take("reorder_and_upcast_attn");
    config.check().map_err(|reason| f.err(reason))?;
    Ok(config)
}

struct Fields {
    map: Map<String, Value>,
    path: PathBuf,
}

impl Fields {
    fn err(&self, reason: String) -> ModelError {
        ModelError::Config { path: self.path.clone(), reason }
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key)
    }

    fn required(&mut self, key: &str) -> ModelResult<Value> {
        self.take(key).ok_or_else(|| self.err(format!("required field `{key}` is missing")))
    }

    fn string(&mut self, key: &str) -> ModelResult<String> {
        match self.required(key)? {
            Value::String(s) => Ok(s),
            v => Err(self.err(format!("`{key}` must be a string, got {v}"))),
        }
    }

    fn as_positive(&self, key: &str, v: &Value) -> ModelResult<usize> {
        v.as_u64()
            .filter(|&n| n > 0)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.err(format!("`{key}` must be a positive integer, got {v}")))
    }

    fn positive(&mut self, key: &str) -> ModelResult<usize> {
        let v = self.required(key)?;
        self.as_positive(key, &v)
    }

    fn eps(&mut self, key: &str) -> ModelResult<f32> {
        let v = self.required(key)?;
        v.as_f64()
            .filter(|e| e.is_finite() && *e >= 0.0)
            .map(|e| e as f32)
            .ok_or_else(|| self.err(format!("`{key}` must be a finite number ≥ 0, got {v}")))
    }

    fn check_str(&self, key: &str, v: Value, allowed: &[&str], why: &str) -> ModelResult<()> {
        match v {
            Value::String(s) if allowed.contains(&s.as_str()) => Ok(()),
            v => Err(self.err(format!("`{key}` = {v} is not supported: {why}"))),
        }
    }

    fn require_str(&mut self, key: &str, allowed: &[&str], why: &str) -> ModelResult<()> {
        let v = self.required(key)?;
        self.check_str(key, v, allowed, why)
    }

    fn optional_str(&mut self, key: &str, allowed: &[&str], why: &str) -> ModelResult<()> {
        match self.take(key) {
            None => Ok(()),
            Some(v) => self.check_str(key, v, allowed, why),
        }
    }

    fn optional_bool(&mut self, key: &str, supported: bool, why: &str) -> ModelResult<()> {
        match self.take(key) {
            None => Ok(()),
            Some(Value::Bool(b)) if b == supported => Ok(()),
            Some(v) => Err(self.err(format!("`{key}` = {v} is not supported: {why}"))),
        }
    }

    /// Fails on any field left that is not in [`IGNORED_FIELDS`].
    fn finish(self) -> ModelResult<()> {
        let mut unknown: Vec<&String> = self.map.keys().filter(|k| !IGNORED_FIELDS.contains(&k.as_str())).collect();
        unknown.sort();
        if let Some(first) = unknown.first() {
            return Err(self.err(format!(
                "unknown field `{first}` (this crate does not know what it changes; unknown fields: {unknown:?})"
            )));
        }
        Ok(())
    }
}
