//! Attention by the definition: materialise each score row, mask, softmax in f64, weight V.

use super::activation::softmax;
use crate::attention::{AttentionDims, AttentionParams, check_args, check_query_key, mask_value};
use crate::error::{Error, Result};
use crate::tensor::{View, ViewMut};

/// The masked, scaled, capped scores of one query row (−∞ where masked), in f64.
fn score_row(q: &View, k: &View, params: &AttentionParams, dims: &AttentionDims, [b, h, i]: [usize; 3]) -> Vec<f64> {
    let scale = f64::from(params.scale_for(dims.d));
    let kv_h = dims.kv_head(h);
    (0..dims.n_kv)
        .map(|j| {
            if !params.key_visible(dims, b, i, j) {
                return f64::NEG_INFINITY;
            }
            let dot: f64 =
                (0..dims.d).map(|c| f64::from(q.get_f32(&[b, h, i, c])) * f64::from(k.get_f32(&[b, kv_h, j, c]))).sum();
            let mut s = dot * scale;
            if let Some(cap) = params.softcap {
                let cap = f64::from(cap);
                s = cap * (s / cap).tanh();
            }
            if let Some(mask) = &params.additive_mask {
                s += f64::from(mask_value(mask, b, h, i, j));
            }
            s
        })
        .collect()
}

/// The reference twin of [`crate::attention::attention`] (same arguments and semantics).
pub fn attention(
    q: &View,
    k: &View,
    v: &View,
    out: &mut ViewMut,
    params: &AttentionParams,
    mut lse: Option<&mut ViewMut>,
) -> Result<()> {
    let dims = check_args(q, k, v, out, params, lse.as_deref())?;
    for b in 0..dims.b {
        for h in 0..dims.h_q {
            for i in 0..dims.n_q {
                let scores = score_row(q, k, params, &dims, [b, h, i]);
                let probs = softmax(&scores);
                for c in 0..dims.d_v {
                    let value: f64 = probs
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| **p != 0.0 || p.is_nan())
                        .map(|(j, p)| p * f64::from(v.get_f32(&[b, dims.kv_head(h), j, c])))
                        .sum();
                    out.set_f32(&[b, h, i, c], value as f32);
                }
                if let Some(lse) = lse.as_deref_mut() {
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let value = if scores.iter().any(|s| s.is_nan()) {
                        f64::NAN
                    } else if max == f64::NEG_INFINITY {
                        f64::NEG_INFINITY
                    } else {
                        max + scores.iter().map(|s| (s - max).exp()).sum::<f64>().ln()
                    };
                    lse.set_f32(&[b, h, i], value as f32);
                }
            }
        }
    }
    Ok(())
}

/// The softmax probabilities `P[b, h, i, j]` that [`attention`] weights V with, written to
/// `probs` (`[B, Hq, Nq, Nkv]`, any dtype) — for inspection and visualisation. Slow and
/// exact (f64, materialises every row); fully masked rows are all zeros.
pub fn attention_probabilities(q: &View, k: &View, params: &AttentionParams, probs: &mut ViewMut) -> Result<()> {
    let dims = check_query_key(q, k, params)?;
    let expected = [dims.b, dims.h_q, dims.n_q, dims.n_kv];
    if probs.shape() != expected {
        return Err(Error::shape("probs", expected, probs.shape()));
    }
    for b in 0..dims.b {
        for h in 0..dims.h_q {
            for i in 0..dims.n_q {
                let row = softmax(&score_row(q, k, params, &dims, [b, h, i]));
                for (j, p) in row.into_iter().enumerate() {
                    probs.set_f32(&[b, h, i, j], p as f32);
                }
            }
        }
    }
    Ok(())
}
