//! BERT encoder (post-norm) and sentence-transformers pooling.
//!
//! Per layer: one packed matmul for the fused Q|K|V projection (`[tokens, 3·hidden]`),
//! attention reading Q, K and V straight out of that buffer through strides (its memory is
//! `[B, N, 3, H, D]`) with the padding as per-sequence key lengths, the output projection,
//! add + LayerNorm with the projection's bias fused in, the FFN up-projection with GELU-erf
//! fused, the down-projection, and add + LayerNorm again.

use super::{LayerNorm, Linear, Table, WeightLayout, find_prefix, gather, linear, pack, rows_view, vector};
use crate::config::{BertConfig, ModelConfig};
use crate::error::{ModelError, ModelResult};
use crate::tokenizer::{Encoded, TextTokenizer};
use crate::weights::Weights;
use flashkern_kernels::attention::{self, AttentionParams};
use flashkern_kernels::matmul::Activation;
use flashkern_kernels::{DType, View, ViewMut};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

#[derive(Debug)]
struct Layer {
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    up: Linear,
    down: Linear,
    out_norm: LayerNorm,
}

/// A BERT encoder with its weights converted to one dtype and packed.
#[derive(Debug)]
pub struct BertModel {
    config: BertConfig,
    weights: Weights,
    dtype: DType,
    word: Table,
    position: Table,
    token_type: Vec<f32>,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
}

/// The encoder's output for a padded batch.
#[derive(Clone, Debug)]
pub struct BertOutput {
    /// `[batch, padded_len, hidden]`; rows at padded positions are computed but meaningless.
    pub hidden: Vec<f32>,
    /// The padded length.
    pub padded_len: usize,
    /// Each sequence's real length.
    pub lengths: Vec<usize>,
    /// The model width.
    pub hidden_size: usize,
    /// With [`BertModel::encode_with_attention`]: per layer, the softmax probabilities
    /// `[batch, heads, padded_len, padded_len]`.
    pub attentions: Vec<Vec<f32>>,
}

impl BertOutput {
    /// The `[len, hidden]` rows of sequence `b` (its real positions only).
    pub fn sequence(&self, b: usize) -> ModelResult<&[f32]> {
        let length = *self.lengths.get(b).ok_or_else(|| ModelError::InvalidInput {
            arg: "b",
            reason: format!("sequence {b} of a batch of {}", self.lengths.len()),
        })?;
        let start = b * self.padded_len * self.hidden_size;
        // The fields are public: a hand-made output may not hold what it claims.
        self.hidden.get(start..start + length * self.hidden_size).ok_or_else(|| ModelError::InvalidInput {
            arg: "out",
            reason: format!("sequence {b} of length {length} lies outside its {} hidden values", self.hidden.len()),
        })
    }
}

impl BertModel {
    /// Loads `config.json` and the checkpoint of a model folder, with weights in `dtype`.
    pub fn load(dir: &Path, dtype: DType) -> ModelResult<BertModel> {
        let config_path = dir.join("config.json");
        let config = match ModelConfig::from_file(&config_path)? {
            ModelConfig::Bert(c) => c,
            other => {
                return Err(ModelError::Config {
                    path: config_path,
                    reason: format!("expected a bert config, found {other:?}"),
                });
            }
        };
        Self::from_weights(config, Weights::open(dir)?, dtype)
    }

    /// Builds the model from a parsed config and opened weights; every tensor's shape is
    /// checked against the config.
    pub fn from_weights(config: BertConfig, weights: Weights, dtype: DType) -> ModelResult<BertModel> {
        config.check().map_err(|reason| ModelError::InvalidInput { arg: "config", reason })?;
        let h = config.hidden_size;
        let p = find_prefix(&weights, &["", "bert."], "embeddings.word_embeddings.weight")?;
        let word =
            Table::load(&weights, &format!("{p}embeddings.word_embeddings.weight"), &[config.vocab_size, h], dtype)?;
        let position = Table::load(
            &weights,
            &format!("{p}embeddings.position_embeddings.weight"),
            &[config.max_position_embeddings, h],
            DType::F32,
        )?;
        // Token type 0 for every token: its row is added as the embedding LayerNorm's bias.
        let types =
            weights.get_shaped(&format!("{p}embeddings.token_type_embeddings.weight"), &[config.type_vocab_size, h])?;
        let mut token_type = vec![0f32; h];
        types.data().widen(0, &mut token_type, flashkern_kernels::effective_isa());
        let eps = config.layer_norm_eps;
        let embed_norm = LayerNorm::load(&weights, &format!("{p}embeddings.LayerNorm"), ["weight", "bias"], h, eps)?;
        let layers = (0..config.num_hidden_layers)
            .into_par_iter()
            .map(|l| load_layer(&weights, &config, &format!("{p}encoder.layer.{l}"), dtype))
            .collect::<ModelResult<Vec<_>>>()?;
        Ok(BertModel { config, weights, dtype, word, position, token_type, embed_norm, layers })
    }

    /// The parsed config.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The dtype the weights were converted to.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Encodes a batch of token-id sequences (padded on the right internally; token type 0).
    pub fn encode(&self, batch: &[Vec<u32>]) -> ModelResult<BertOutput> {
        self.run(batch, false)
    }

    /// [`BertModel::encode`], also returning every layer's attention probabilities.
    pub fn encode_with_attention(&self, batch: &[Vec<u32>]) -> ModelResult<BertOutput> {
        self.run(batch, true)
    }

    fn run(&self, batch: &[Vec<u32>], want_attention: bool) -> ModelResult<BertOutput> {
        let c = &self.config;
        let (h, heads, d) = (c.hidden_size, c.num_attention_heads, c.head_dim());
        let b = batch.len();
        let lengths: Vec<usize> = batch.iter().map(Vec::len).collect();
        let n = lengths.iter().copied().max().unwrap_or(0);
        if b == 0 || n == 0 {
            return Err(ModelError::InvalidInput {
                arg: "batch",
                reason: "needs at least one non-empty sequence".into(),
            });
        }
        if n > c.max_position_embeddings {
            return Err(ModelError::InvalidInput {
                arg: "batch",
                reason: format!("a sequence has {n} tokens; the model takes at most {}", c.max_position_embeddings),
            });
        }
        let rows = b * n;
        let mut x = vec![0f32; rows * h];
        let mut tmp = vec![0f32; rows * h];
        let mut ids = vec![0u32; n];
        let word = self.word.data(&self.weights)?;
        let position = self.position.data(&self.weights)?;
        for (seq, (out, gathered)) in batch.iter().zip(x.chunks_exact_mut(n * h).zip(tmp.chunks_exact_mut(n * h))) {
            ids.fill(0); // [PAD]-position rows are computed from id 0, as the reference does
            ids[..seq.len()].copy_from_slice(seq);
            gather(word, &ids, c.vocab_size, h, gathered)?;
            let positions = rows_view(position, 0, n, h)?;
            let words = View::contiguous("x", gathered, &[n, h])?;
            self.embed_norm.apply(words, Some(positions), Some(&self.token_type), out, None)?;
        }

        let mut qkv = vec![0f32; rows * 3 * h];
        let mut ctx = vec![0f32; rows * h];
        let mut x1 = vec![0f32; rows * h];
        let mut up = vec![0f32; rows * c.intermediate_size];
        let mut attentions = Vec::new();
        let params = AttentionParams { key_lengths: Some(&lengths), ..Default::default() };
        for layer in &self.layers {
            linear(&x, rows, &layer.qkv.weight, layer.qkv.bias.as_deref(), Activation::None, &mut qkv)?;
            {
                let qkv_strides = [n * 3 * h, d, 3 * h, 1];
                let shape = [b, heads, n, d];
                let q = View::new("q", &qkv[..], &shape, &qkv_strides)?;
                let k = View::new("k", &qkv[h..], &shape, &qkv_strides)?;
                let v = View::new("v", &qkv[2 * h..], &shape, &qkv_strides)?;
                let mut out = ViewMut::new("ctx", &mut ctx[..], &shape, &[n * h, d, h, 1])?;
                attention::attention(&q, &k, &v, &mut out, &params, None)?;
                if want_attention {
                    let mut probs = vec![0f32; b * heads * n * n];
                    let mut pv = ViewMut::contiguous("probs", &mut probs[..], &[b, heads, n, n])?;
                    attention::attention_probabilities(&q, &k, &params, &mut pv)?;
                    attentions.push(probs);
                }
            }
            linear(&ctx, rows, &layer.attn_out.weight, None, Activation::None, &mut tmp)?;
            let (tmp_v, x_v) =
                (View::contiguous("x", &tmp[..], &[rows, h])?, View::contiguous("residual", &x[..], &[rows, h])?);
            layer.attn_norm.apply(tmp_v, Some(x_v), layer.attn_out.bias.as_deref(), &mut x1, None)?;
            linear(&x1, rows, &layer.up.weight, layer.up.bias.as_deref(), Activation::GeluErf, &mut up)?;
            linear(&up, rows, &layer.down.weight, None, Activation::None, &mut tmp)?;
            let (tmp_v, x1_v) =
                (View::contiguous("x", &tmp[..], &[rows, h])?, View::contiguous("residual", &x1[..], &[rows, h])?);
            layer.out_norm.apply(tmp_v, Some(x1_v), layer.down.bias.as_deref(), &mut x, None)?;
        }
        Ok(BertOutput { hidden: x, padded_len: n, lengths, hidden_size: h, attentions })
    }
}

fn load_layer(weights: &Weights, c: &BertConfig, p: &str, dtype: DType) -> ModelResult<Layer> {
    let (h, f) = (c.hidden_size, c.intermediate_size);
    let w = |name: &str, shape: &[usize]| weights.get_shaped(&format!("{p}.{name}"), shape);
    let v = |name: &str, len: usize| vector(weights, &format!("{p}.{name}"), len);
    let qkv_parts = [
        w("attention.self.query.weight", &[h, h])?,
        w("attention.self.key.weight", &[h, h])?,
        w("attention.self.value.weight", &[h, h])?,
    ];
    let mut qkv_bias = v("attention.self.query.bias", h)?;
    qkv_bias.extend(v("attention.self.key.bias", h)?);
    qkv_bias.extend(v("attention.self.value.bias", h)?);
    let eps = c.layer_norm_eps;
    Ok(Layer {
        qkv: Linear { weight: pack(&qkv_parts, WeightLayout::OutIn, dtype)?, bias: Some(qkv_bias) },
        attn_out: Linear {
            weight: pack(&[w("attention.output.dense.weight", &[h, h])?], WeightLayout::OutIn, dtype)?,
            bias: Some(v("attention.output.dense.bias", h)?),
        },
        attn_norm: LayerNorm::load(weights, &format!("{p}.attention.output.LayerNorm"), ["weight", "bias"], h, eps)?,
        up: Linear {
            weight: pack(&[w("intermediate.dense.weight", &[f, h])?], WeightLayout::OutIn, dtype)?,
            bias: Some(v("intermediate.dense.bias", f)?),
        },
        down: Linear {
            weight: pack(&[w("output.dense.weight", &[h, f])?], WeightLayout::OutIn, dtype)?,
            bias: Some(v("output.dense.bias", h)?),
        },
        out_norm: LayerNorm::load(weights, &format!("{p}.output.LayerNorm"), ["weight", "bias"], h, eps)?,
    })
}

/// How token rows become one sentence vector (sentence-transformers' `1_Pooling`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the real (unpadded) tokens.
    Mean,
    /// The first token's row (`[CLS]`).
    Cls,
}

/// A BERT model, its tokenizer and its pooling: text in, sentence embeddings out.
#[derive(Debug)]
pub struct SentenceEncoder {
    model: BertModel,
    tokenizer: TextTokenizer,
    pooling: Pooling,
    normalize: bool,
    dir: PathBuf,
}

impl SentenceEncoder {
    /// Loads a sentence-transformers folder: `config.json`, the weights, `tokenizer.json`,
    /// `1_Pooling/config.json` (mean or CLS; without it, mean), whether `modules.json` lists a
    /// `Normalize` module, and `sentence_bert_config.json`'s `max_seq_length` (else the
    /// model's position count) as the truncation length.
    pub fn load(dir: &Path, dtype: DType) -> ModelResult<SentenceEncoder> {
        // The tokenizer's JSON parses while the weights are packed.
        let (model, tokenizer_file) = rayon::join(
            || BertModel::load(dir, dtype),
            || tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")),
        );
        let model = model?;
        let read_json = |name: &str| -> ModelResult<Option<serde_json::Value>> {
            let path = dir.join(name);
            if !path.is_file() {
                return Ok(None);
            }
            let text = std::fs::read(&path).map_err(|source| ModelError::Io { path: path.clone(), source })?;
            serde_json::from_slice(&text)
                .map(Some)
                .map_err(|e| ModelError::Config { path, reason: format!("not valid JSON: {e}") })
        };
        let pooling = match read_json("1_Pooling/config.json")? {
            None => Pooling::Mean,
            Some(v) => {
                let flag = |k: &str| v.get(k).and_then(serde_json::Value::as_bool).unwrap_or(false);
                let modes = [
                    ("pooling_mode_mean_tokens", flag("pooling_mode_mean_tokens")),
                    ("pooling_mode_cls_token", flag("pooling_mode_cls_token")),
                    ("pooling_mode_max_tokens", flag("pooling_mode_max_tokens")),
                    ("pooling_mode_mean_sqrt_len_tokens", flag("pooling_mode_mean_sqrt_len_tokens")),
                ];
                let on: Vec<&str> = modes.iter().filter(|m| m.1).map(|m| m.0).collect();
                match on.as_slice() {
                    ["pooling_mode_mean_tokens"] => Pooling::Mean,
                    ["pooling_mode_cls_token"] => Pooling::Cls,
                    other => {
                        return Err(ModelError::Config {
                            path: dir.join("1_Pooling/config.json"),
                            reason: format!("pooling modes {other:?} are not supported (exactly one of mean or cls)"),
                        });
                    }
                }
            }
        };
        let normalize = read_json("modules.json")?.and_then(|v| v.as_array().cloned()).is_some_and(|mods| {
            mods.iter().any(|m| m.get("type").and_then(|t| t.as_str()).is_some_and(|t| t.ends_with(".Normalize")))
        });
        let max_len = read_json("sentence_bert_config.json")?
            .and_then(|v| v.get("max_seq_length").and_then(serde_json::Value::as_u64))
            .map_or(model.config.max_position_embeddings, |m| m as usize)
            .min(model.config.max_position_embeddings);
        let tokenizer = TextTokenizer::new(tokenizer_file, &dir.join("tokenizer.json"), max_len)?;
        Ok(SentenceEncoder { model, tokenizer, pooling, normalize, dir: dir.to_path_buf() })
    }

    /// The encoder.
    pub fn model(&self) -> &BertModel {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The model folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Tokenises every text.
    pub fn tokenize(&self, texts: &[&str]) -> ModelResult<Vec<Encoded>> {
        texts.iter().map(|t| self.tokenizer.encode(t)).collect()
    }

    /// One embedding per text, all texts in one padded batch.
    pub fn embed(&self, texts: &[&str]) -> ModelResult<Vec<Vec<f32>>> {
        let batch: Vec<Vec<u32>> = self.tokenize(texts)?.into_iter().map(|e| e.ids).collect();
        let out = self.model.encode(&batch)?;
        (0..batch.len()).map(|b| self.pool(&out, b)).collect()
    }

    /// Pools and (when the folder says so) L2-normalises sequence `b` of an encoder output;
    /// fails for a `b` outside the batch and for an empty sequence (nothing to pool).
    pub fn pool(&self, out: &BertOutput, b: usize) -> ModelResult<Vec<f32>> {
        let h = out.hidden_size;
        let rows = out.sequence(b)?;
        if rows.is_empty() {
            return Err(ModelError::InvalidInput {
                arg: "b",
                reason: format!("sequence {b} is empty: nothing to pool"),
            });
        }
        let mut v = match self.pooling {
            Pooling::Cls => rows[..h].to_vec(),
            Pooling::Mean => {
                let mut sum = vec![0f64; h];
                for row in rows.chunks_exact(h) {
                    sum.iter_mut().zip(row).for_each(|(s, &x)| *s += f64::from(x));
                }
                let count = (rows.len() / h) as f64;
                sum.iter().map(|s| (s / count) as f32).collect()
            }
        };
        if self.normalize {
            let norm = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x = (f64::from(*x) / norm) as f32);
            }
        }
        Ok(v)
    }
}
