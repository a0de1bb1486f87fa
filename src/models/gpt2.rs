//! GPT-2 decoder (pre-norm) with a KV cache and greedy generation.
//!
//! Conv1D weights (`[in, out]` in the checkpoint) are seen as the kernels' `[N, K]` with
//! strides `[1, N]` and packed once. Each step: the embedding sum `wte[id] + wpe[pos]` and
//! `ln_1` in one fused add + norm (which also writes the residual stream), the fused `c_attn`
//! matmul, K and V appended to the cache, causal attention aligned bottom-right (so prefill
//! and one-token decode are the same call) reading Q straight from the `c_attn` output, the
//! output projection, add + `ln_2` with its bias fused, the MLP with GELU-tanh fused, and add +
//! the next norm (`ln_1` of the next layer, or `ln_f`). Logits use the tied `wte` as the LM head.

use super::huge_pages::HugeF32;
use super::{LayerNorm, Linear, Table, WeightLayout, find_prefix, gather, linear, pack, rows_view, vector};
use crate::config::{Gpt2Config, ModelConfig};
use crate::error::{ModelError, ModelResult};
use crate::weights::Weights;
use flashkern_kernels::attention::{self, AttentionParams, Causal};
use flashkern_kernels::matmul::{Activation, PackedMatrix};
use flashkern_kernels::{DType, View, ViewMut};
use rayon::prelude::*;
use std::path::Path;

#[derive(Debug)]
struct Layer {
    ln_1: LayerNorm,
    c_attn: Linear,
    c_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
}

/// A GPT-2 language model with its weights converted to one dtype and packed.
#[derive(Debug)]
pub struct Gpt2Model {
    config: Gpt2Config,
    weights: Weights,
    dtype: DType,
    wte: Table,
    wpe: Table,
    layers: Vec<Layer>,
    ln_f: LayerNorm,
    lm_head: PackedMatrix,
}

/// Keys and values of every layer for a batch of sequences that advance together.
#[derive(Clone, Debug)]
pub struct KvCache {
    batch: usize,
    len: usize,
    capacity: usize,
    /// `n_embd` of the model that made it (with `capacity` and the layer count, what
    /// `forward` checks a cache against).
    width: usize,
    /// Per layer `[batch, heads, capacity, head_dim]`, on huge pages where the OS grants
    /// them (each decode step streams the whole cache: see `huge_pages`).
    k: Vec<HugeF32>,
    v: Vec<HugeF32>,
}

impl KvCache {
    /// Positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first forward.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sequences in the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }
}

/// The result of [`Gpt2Model::generate`].
#[derive(Clone, Debug)]
pub struct Generation {
    /// The generated ids (without the prompt).
    pub new_tokens: Vec<u32>,
    /// Logits of every prompt position, `[prompt_len][vocab]`.
    pub prompt_logits: Vec<Vec<f32>>,
    /// The logits that chose each generated token, `[new_tokens][vocab]`.
    pub step_logits: Vec<Vec<f32>>,
}

impl Gpt2Model {
    /// Loads `config.json` and the checkpoint of a model folder, with weights in `dtype`.
    pub fn load(dir: &Path, dtype: DType) -> ModelResult<Gpt2Model> {
        let config_path = dir.join("config.json");
        let config = match ModelConfig::from_file(&config_path)? {
            ModelConfig::Gpt2(c) => c,
            other => {
                return Err(ModelError::Config {
                    path: config_path,
                    reason: format!("expected a gpt2 config, found {other:?}"),
                });
            }
        };
        Self::from_weights(config, Weights::open(dir)?, dtype)
    }

    /// Builds the model from a parsed config and opened weights; every tensor's shape is
    /// checked against the config.
    pub fn from_weights(config: Gpt2Config, weights: Weights, dtype: DType) -> ModelResult<Gpt2Model> {
        config.check().map_err(|reason| ModelError::InvalidInput { arg: "config", reason })?;
        let e = config.n_embd;
        let p = find_prefix(&weights, &["transformer.", ""], "wte.weight")?;
        let wte_name = format!("{p}wte.weight");
        let wte = Table::load(&weights, &wte_name, &[config.vocab_size, e], dtype)?;
        let wpe = Table::load(&weights, &format!("{p}wpe.weight"), &[config.n_positions, e], DType::F32)?;
        let eps = config.layer_norm_epsilon;
        let layers = (0..config.n_layer)
            .into_par_iter()
            .map(|l| load_layer(&weights, &config, &format!("{p}h.{l}"), dtype))
            .collect::<ModelResult<Vec<_>>>()?;
        let ln_f = LayerNorm::load(&weights, &format!("{p}ln_f"), ["weight", "bias"], e, eps)?;
        let head_name = if config.tie_word_embeddings { wte_name } else { "lm_head.weight".to_string() };
        let lm_head = pack(&[weights.get_shaped(&head_name, &[config.vocab_size, e])?], WeightLayout::OutIn, dtype)?;
        Ok(Gpt2Model { config, weights, dtype, wte, wpe, layers, ln_f, lm_head })
    }

    /// The parsed config.
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// The dtype the weights were converted to.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// An empty cache for `batch` sequences, with room for the model's whole context; fails
    /// when its size is not addressable.
    pub fn new_cache(&self, batch: usize) -> ModelResult<KvCache> {
        let c = &self.config;
        // One sequence's size was checked with the config.
        let size = crate::config::addressable_f32s("batch", batch, c.n_positions * c.n_embd)
            .map_err(|reason| ModelError::InvalidInput { arg: "batch", reason })?;
        Ok(KvCache {
            batch,
            len: 0,
            capacity: c.n_positions,
            width: c.n_embd,
            // One fresh zeroed mapping per layer: pages are only touched as positions fill.
            k: (0..c.n_layer).map(|_| HugeF32::zeroed(size)).collect(),
            v: (0..c.n_layer).map(|_| HugeF32::zeroed(size)).collect(),
        })
    }

    /// Runs `ids` (`[batch, t]` row-major: `t` new tokens per sequence) after what `cache`
    /// holds, appends their keys and values, and returns the logits `[batch·t, vocab]`.
    pub fn forward(&self, ids: &[u32], cache: &mut KvCache) -> ModelResult<Vec<f32>> {
        let c = &self.config;
        let (e, heads, d) = (c.n_embd, c.n_head, c.head_dim());
        let b = cache.batch;
        if (cache.k.len(), cache.capacity, cache.width) != (c.n_layer, c.n_positions, e) {
            return Err(ModelError::InvalidInput {
                arg: "cache",
                reason: format!(
                    "made for {} layers × {} positions × width {}, this model has {} × {} × {}",
                    cache.k.len(),
                    cache.capacity,
                    cache.width,
                    c.n_layer,
                    c.n_positions,
                    e
                ),
            });
        }
        if b == 0 || ids.is_empty() || !ids.len().is_multiple_of(b) {
            return Err(ModelError::InvalidInput {
                arg: "ids",
                reason: format!("{} ids do not split into {b} non-empty sequences", ids.len()),
            });
        }
        let t = ids.len() / b;
        let past = cache.len;
        let total = past + t;
        if total > cache.capacity {
            return Err(ModelError::InvalidInput {
                arg: "ids",
                reason: format!("{total} positions exceed the model's context of {}", cache.capacity),
            });
        }
        let rows = b * t;
        let mut resid = vec![0f32; rows * e];
        let mut resid_next = vec![0f32; rows * e];
        let mut normed = vec![0f32; rows * e];
        let mut gathered = vec![0f32; rows * e];
        let wte = self.wte.data(&self.weights)?;
        let wpe = self.wpe.data(&self.weights)?;
        gather(wte, ids, c.vocab_size, e, &mut gathered)?;
        let first_norm = self.layers.first().map_or(&self.ln_f, |l| &l.ln_1);
        for ((words, out), sum) in
            gathered.chunks_exact(t * e).zip(normed.chunks_exact_mut(t * e)).zip(resid.chunks_exact_mut(t * e))
        {
            let positions = rows_view(wpe, past, t, e)?;
            first_norm.apply(View::contiguous("x", words, &[t, e])?, Some(positions), None, out, Some(sum))?;
        }

        let mut qkv = vec![0f32; rows * 3 * e];
        let mut ctx = vec![0f32; rows * e];
        let mut proj = vec![0f32; rows * e];
        let mut hidden = vec![0f32; rows * c.n_inner];
        let params = AttentionParams { causal: Causal::BottomRight, ..Default::default() };
        let cap = cache.capacity;
        for (l, layer) in self.layers.iter().enumerate() {
            linear(&normed, rows, &layer.c_attn.weight, layer.c_attn.bias.as_deref(), Activation::None, &mut qkv)?;
            // Append this step's K and V (the one copy a cache needs).
            for (r, row) in qkv.chunks_exact(3 * e).enumerate() {
                let (seq, pos) = (r / t, past + r % t);
                for head in 0..heads {
                    let dst = ((seq * heads + head) * cap + pos) * d;
                    cache.k[l].as_mut_slice()[dst..dst + d].copy_from_slice(&row[e + head * d..e + (head + 1) * d]);
                    cache.v[l].as_mut_slice()[dst..dst + d]
                        .copy_from_slice(&row[2 * e + head * d..2 * e + (head + 1) * d]);
                }
            }
            {
                let q = View::new("q", &qkv[..], &[b, heads, t, d], &[t * 3 * e, d, 3 * e, 1])?;
                let kv_strides = [heads * cap * d, cap * d, d, 1];
                let k = View::new("k", cache.k[l].as_slice(), &[b, heads, total, d], &kv_strides)?;
                let v = View::new("v", cache.v[l].as_slice(), &[b, heads, total, d], &kv_strides)?;
                let mut out = ViewMut::new("ctx", &mut ctx[..], &[b, heads, t, d], &[t * e, d, e, 1])?;
                attention::attention(&q, &k, &v, &mut out, &params, None)?;
            }
            linear(&ctx, rows, &layer.c_proj.weight, None, Activation::None, &mut proj)?;
            let (x, r) =
                (View::contiguous("x", &proj[..], &[rows, e])?, View::contiguous("residual", &resid[..], &[rows, e])?);
            layer.ln_2.apply(x, Some(r), layer.c_proj.bias.as_deref(), &mut normed, Some(&mut resid_next))?;
            linear(&normed, rows, &layer.c_fc.weight, layer.c_fc.bias.as_deref(), Activation::GeluTanh, &mut hidden)?;
            linear(&hidden, rows, &layer.mlp_proj.weight, None, Activation::None, &mut proj)?;
            let next_norm = self.layers.get(l + 1).map_or(&self.ln_f, |n| &n.ln_1);
            let (x, r) = (
                View::contiguous("x", &proj[..], &[rows, e])?,
                View::contiguous("residual", &resid_next[..], &[rows, e])?,
            );
            next_norm.apply(x, Some(r), layer.mlp_proj.bias.as_deref(), &mut normed, Some(&mut resid))?;
        }
        cache.len = total;
        let mut logits = vec![0f32; rows * c.vocab_size];
        linear(&normed, rows, &self.lm_head, None, Activation::None, &mut logits)?;
        Ok(logits)
    }

    /// Logits `[len, vocab]` of one sequence computed from scratch (no cache reuse).
    pub fn logits(&self, ids: &[u32]) -> ModelResult<Vec<f32>> {
        let mut cache = self.new_cache(1)?;
        self.forward(ids, &mut cache)
    }

    /// Greedy decoding: prefill `prompt`, then `max_new_tokens` one-token steps with the KV
    /// cache, each choosing the argmax (lowest id on ties). `on_token` sees each new id.
    pub fn generate(
        &self,
        prompt: &[u32],
        max_new_tokens: usize,
        mut on_token: impl FnMut(usize, u32),
    ) -> ModelResult<Generation> {
        let v = self.config.vocab_size;
        let mut cache = self.new_cache(1)?;
        let logits = self.forward(prompt, &mut cache)?;
        let prompt_logits: Vec<Vec<f32>> = logits.chunks_exact(v).map(<[f32]>::to_vec).collect();
        let mut last = prompt_logits.last().cloned().unwrap_or_default();
        let mut new_tokens = Vec::with_capacity(max_new_tokens);
        let mut step_logits = Vec::with_capacity(max_new_tokens);
        for step in 0..max_new_tokens {
            let next = argmax(&last) as u32;
            new_tokens.push(next);
            step_logits.push(std::mem::take(&mut last));
            on_token(step, next);
            if step + 1 < max_new_tokens {
                last = self.forward(&[next], &mut cache)?;
            }
        }
        Ok(Generation { new_tokens, prompt_logits, step_logits })
    }
}

/// The index of the largest value (the first on ties; NaN never wins).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in values.iter().enumerate() {
        if x > values[best] || values[best].is_nan() && !x.is_nan() {
            best = i;
        }
    }
    best
}

fn load_layer(weights: &Weights, c: &Gpt2Config, p: &str, dtype: DType) -> ModelResult<Layer> {
    let (e, f) = (c.n_embd, c.n_inner);
    let conv = |name: &str, shape: [usize; 2]| -> ModelResult<Linear> {
        let w = weights.get_shaped(&format!("{p}.{name}.weight"), &shape)?;
        Ok(Linear {
            weight: pack(&[w], WeightLayout::InOut, dtype)?,
            bias: Some(vector(weights, &format!("{p}.{name}.bias"), shape[1])?),
        })
    };
    let eps = c.layer_norm_epsilon;
    Ok(Layer {
        ln_1: LayerNorm::load(weights, &format!("{p}.ln_1"), ["weight", "bias"], e, eps)?,
        c_attn: conv("attn.c_attn", [e, 3 * e])?,
        c_proj: conv("attn.c_proj", [e, e])?,
        ln_2: LayerNorm::load(weights, &format!("{p}.ln_2"), ["weight", "bias"], e, eps)?,
        c_fc: conv("mlp.c_fc", [e, f])?,
        mlp_proj: conv("mlp.c_proj", [f, e])?,
    })
}
