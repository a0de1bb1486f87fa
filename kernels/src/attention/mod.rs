//! Fused attention: `O = softmax(Q·Kᵀ·scale + mask)·V` over
//! q `[B,Hq,Nq,D]`, k `[B,Hkv,Nkv,D]`, v `[B,Hkv,Nkv,Dv]`, out `[B,Hq,Nq,Dv]`.
//!
//! Any strides on the outer three dimensions (so `[B,N,H,D]` memory works through strides);
//! the head dimension must be contiguous. `Hq` must be a multiple of `Hkv` (GQA/MQA): query
//! head `h` reads KV head `h / (Hq / Hkv)`.
//!
//! ## Masking semantics (shared by the reference and the fast kernels)
//! For query `i` and key `j` of batch `b`, with `offset = Nkv − Nq` for bottom-right alignment
//! and 0 otherwise, and the diagonal `diag(i) = i + offset`:
//! 1. `s = (q_i · k_j) · scale` (scale defaults to `1/√D`);
//! 2. with a softcap `c`: `s = c · tanh(s / c)`;
//! 3. `s += additive_mask[b, h, i, j]` when a mask is given (f32, broadcast over B/H with extent 1);
//! 4. key `j` is masked (score −∞) when `j ≥ key_lengths[b]`, or (causal) `j > diag(i)`, or
//!    (window `w`) `j + w < diag(i)`. The window uses bottom-right alignment when not causal.
//!
//! A row whose scores are all −∞ (fully masked) outputs 0 and has LSE −∞; it never yields NaN.
//! NaN inputs propagate to the rows they touch. `lse[b,h,i] = ln Σ_j exp(s_ij)` over unmasked keys.

mod decode;
#[allow(unsafe_code)]
mod flash;
mod prefetch;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{View, ViewMut};

/// Causal masking and its alignment when `Nq ≠ Nkv`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Causal {
    /// No causal mask.
    #[default]
    None,
    /// Query `i` sees keys `j ≤ i` (PyTorch's `is_causal`).
    TopLeft,
    /// Query `i` sees keys `j ≤ i + Nkv − Nq` (a KV cache: the last query sees every key).
    BottomRight,
}

/// Everything about an attention call besides its tensors.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttentionParams<'a> {
    /// Multiplies `q·k`; `None` means `1/√D`.
    pub scale: Option<f32>,
    /// Causal masking.
    pub causal: Causal,
    /// `[B]`: batch `b` attends only to keys `j < key_lengths[b]` (each ≤ Nkv).
    pub key_lengths: Option<&'a [usize]>,
    /// f32 `[B|1, Hq|1, Nq, Nkv]` added to the scores (−∞ masks).
    pub additive_mask: Option<View<'a>>,
    /// Keys more than this many positions left of the diagonal are masked.
    pub window_left: Option<usize>,
    /// Logit soft-capping value `c` (`s = c·tanh(s/c)`); must be positive.
    pub softcap: Option<f32>,
}

/// The problem size of a validated attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDims {
    /// Batch.
    pub b: usize,
    /// Query heads.
    pub h_q: usize,
    /// Key/value heads.
    pub h_kv: usize,
    /// Queries per head.
    pub n_q: usize,
    /// Keys per head.
    pub n_kv: usize,
    /// Query/key head dimension.
    pub d: usize,
    /// Value/output head dimension.
    pub d_v: usize,
}

impl AttentionDims {
    /// The KV head that query head `h` reads.
    pub fn kv_head(&self, h: usize) -> usize {
        h / (self.h_q / self.h_kv)
    }

    /// `Nkv − Nq` for bottom-right alignment (negative when there are more queries than keys).
    pub fn diagonal_offset(&self, causal: Causal) -> i64 {
        match causal {
            Causal::TopLeft => 0,
            Causal::None | Causal::BottomRight => self.n_kv as i64 - self.n_q as i64,
        }
    }
}

impl AttentionParams<'_> {
    /// The scale actually used.
    pub fn scale_for(&self, d: usize) -> f32 {
        self.scale.unwrap_or_else(|| 1.0 / (d.max(1) as f32).sqrt())
    }

    /// `window_left`, or `None` when it reaches past every key: a window of `n_q + n_kv` or more
    /// masks nothing (and `usize::MAX` would not fit the signed diagonal arithmetic).
    pub fn window(&self, dims: &AttentionDims) -> Option<usize> {
        self.window_left.filter(|&w| w < dims.n_q + dims.n_kv)
    }

    /// Whether key `j` is visible to query `i` of batch `b` by the boolean masks (step 4 above).
    pub fn key_visible(&self, dims: &AttentionDims, b: usize, i: usize, j: usize) -> bool {
        if self.key_lengths.is_some_and(|lengths| j >= lengths[b]) {
            return false;
        }
        let diag = i as i64 + dims.diagonal_offset(self.causal);
        let j = j as i64;
        if self.causal != Causal::None && j > diag {
            return false;
        }
        if self.window(dims).is_some_and(|w| j + (w as i64) < diag) {
            return false;
        }
        true
    }
}

/// Checks every argument of an attention call and returns its dimensions.
pub fn check_args(
    q: &View,
    k: &View,
    v: &View,
    out: &ViewMut,
    params: &AttentionParams,
    lse: Option<&ViewMut>,
) -> Result<AttentionDims> {
    let mut dims = check_query_key(q, k, params)?;
    for (arg, layout) in [("v", v.layout()), ("out", out.layout())] {
        layout.require_rank(arg, 4)?;
        layout.require_inner_contiguous(arg)?;
    }
    let AttentionDims { b, h_q, h_kv, n_q, n_kv, .. } = dims;
    dims.d_v = v.shape()[3];
    if v.shape() != [b, h_kv, n_kv, dims.d_v] {
        return Err(Error::shape("v", [b, h_kv, n_kv, dims.d_v], v.shape()));
    }
    if out.shape() != [b, h_q, n_q, dims.d_v] {
        return Err(Error::shape("out", [b, h_q, n_q, dims.d_v], out.shape()));
    }
    if let Some(lse) = lse {
        lse.layout().require_rank("lse", 3)?;
        if lse.shape() != [b, h_q, n_q] {
            return Err(Error::shape("lse", [b, h_q, n_q], lse.shape()));
        }
        if lse.dtype() != DType::F32 {
            return Err(Error::unsupported(format!("lse must be f32, got {}", lse.dtype())));
        }
    }
    Ok(dims)
}

/// Checks q, k and the params (everything that determines the scores); `d_v` is set to `d`.
pub fn check_query_key(q: &View, k: &View, params: &AttentionParams) -> Result<AttentionDims> {
    for (arg, layout) in [("q", q.layout()), ("k", k.layout())] {
        layout.require_rank(arg, 4)?;
        layout.require_inner_contiguous(arg)?;
    }
    let [b, h_q, n_q, d] = [q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]];
    let [h_kv, n_kv] = [k.shape()[1], k.shape()[2]];
    if k.shape() != [b, h_kv, n_kv, d] {
        return Err(Error::shape("k", [b, h_kv, n_kv, d], k.shape()));
    }
    if h_kv == 0 && h_q != 0 || h_kv != 0 && h_q % h_kv != 0 {
        return Err(Error::invalid("k", format!("query heads ({h_q}) must be a multiple of key/value heads ({h_kv})")));
    }
    if let Some(lengths) = params.key_lengths {
        if lengths.len() != b {
            return Err(Error::shape("key_lengths", [b], [lengths.len()]));
        }
        if let Some(bad) = lengths.iter().find(|&&l| l > n_kv) {
            return Err(Error::invalid("key_lengths", format!("key length {bad} exceeds Nkv = {n_kv}")));
        }
    }
    if let Some(mask) = &params.additive_mask {
        mask.layout().require_rank("additive_mask", 4)?;
        let s = mask.shape();
        let ok = (s[0] == b || s[0] == 1) && (s[1] == h_q || s[1] == 1) && s[2] == n_q && s[3] == n_kv;
        if !ok {
            return Err(Error::shape("additive_mask", format!("[{b}|1, {h_q}|1, {n_q}, {n_kv}]"), s));
        }
        if mask.dtype() != DType::F32 {
            return Err(Error::unsupported(format!("additive_mask must be f32, got {}", mask.dtype())));
        }
    }
    if let Some(scale) = params.scale
        && !scale.is_finite()
    {
        return Err(Error::invalid("scale", format!("must be finite, got {scale}")));
    }
    if let Some(cap) = params.softcap
        && !(cap > 0.0 && cap.is_finite())
    {
        return Err(Error::invalid("softcap", format!("must be positive and finite, got {cap}")));
    }
    Ok(AttentionDims { b, h_q, h_kv, n_q, n_kv, d, d_v: d })
}

/// The additive mask value for `(b, h, i, j)`, broadcasting extents of 1.
pub fn mask_value(mask: &View, b: usize, h: usize, i: usize, j: usize) -> f32 {
    let s = mask.shape();
    mask.get_f32(&[if s[0] == 1 { 0 } else { b }, if s[1] == 1 { 0 } else { h }, i, j])
}

/// Fused attention; see the module docs for shapes, masks and semantics.
///
/// FlashAttention-2 style: never materialises the score matrix, extra memory is O(threads × tile)
/// independent of N, fully masked tiles are skipped, GQA heads share each K/V tile, and
/// single-tile queries over long KV ranges (decode) are split into fixed chunks merged by
/// log-sum-exp. Results are bit-identical for any rayon thread count. Accuracy: f32 accumulation
/// throughout; the softmax uses [`crate::simd::exp`] (≤ 3 ulp). Runs at AVX-512 at most.
///
/// NaN: a NaN in a query row, or in a key it sees, makes that output row NaN. Unlike the
/// reference, a NaN in V at a key that is masked *inside a computed tile* also reaches the row
/// (0·NaN); keys in skipped tiles (causal, window, key lengths) never do.
///
/// Decode streams the KV cache from memory on every call: callers should back a large cache
/// with huge pages (on Linux, memory advised `MADV_HUGEPAGE`), which saves the page walks of
/// a stream that spans thousands of 4 KiB pages. Measured on Zen 4, 32 query heads over 8 KV
/// heads × 4096 keys × 128, 1 thread: f32 K/V 1.66 → 1.35 ms, bf16 1.01 → 0.94 ms. The GPT-2
/// model's KV cache does this.
pub fn attention(
    q: &View,
    k: &View,
    v: &View,
    out: &mut ViewMut,
    params: &AttentionParams,
    lse: Option<&mut ViewMut>,
) -> Result<()> {
    let dims = check_args(q, k, v, out, params, lse.as_deref())?;
    // The kernels' window arithmetic only sees windows shorter than n_q + n_kv.
    let params = &AttentionParams { window_left: params.window(&dims), ..*params };
    let isa = crate::isa::effective_isa().min(crate::isa::Isa::Avx512);
    crate::isa::record_dispatch(isa);
    flash::run(isa, [q, k, v], out, params, lse, dims);
    Ok(())
}

/// The softmax probabilities `[B, Hq, Nq, Nkv]` for inspection (slow, exact: the reference).
pub use crate::reference::attention_probabilities;
