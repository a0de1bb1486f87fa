//! Fused residual add + LayerNorm / RMSNorm over rows:
//! `h = x [+ residual] [+ bias]`, `out = norm(h)·γ [+ β]`, optionally also writing `h`.
//!
//! Post-norm (BERT, `LN(x + sublayer(x))`) passes `sum_out = None`; pre-norm (GPT-2) passes
//! `sum_out` to receive the new residual stream `h` in the same pass. Statistics are computed
//! from `h` in f32 with two passes over the row (mean, then centred variance), never as
//! `E[h²] − mean²`, so rows with a large mean keep their accuracy.

use crate::error::{Error, Result};
use crate::tensor::{View, ViewMut};

/// Which normalisation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NormKind {
    /// `(h − mean) / √(var + eps)`.
    #[default]
    LayerNorm,
    /// `h / √(mean(h²) + eps)`.
    RmsNorm,
}

/// The scalar settings of a norm call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormParams {
    /// LayerNorm or RMSNorm.
    pub kind: NormKind,
    /// Added to the variance (or mean square); must be finite and ≥ 0.
    pub eps: f32,
}

/// The inputs of a norm call: `x`, `residual` `[rows, hidden]`; `bias`, `gamma`, `beta` `[hidden]`.
#[derive(Clone, Copy, Debug)]
pub struct NormInputs<'a> {
    /// The sublayer output (or the only input).
    pub x: View<'a>,
    /// Added to `x` when present.
    pub residual: Option<View<'a>>,
    /// Added to `x` when present (the sublayer's bias, fused).
    pub bias: Option<View<'a>>,
    /// The scale γ.
    pub gamma: View<'a>,
    /// The shift β (LayerNorm's; also allowed for RMSNorm).
    pub beta: Option<View<'a>>,
}

/// The problem size of a validated norm call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NormDims {
    /// Rows normalised independently.
    pub rows: usize,
    /// Elements per row.
    pub hidden: usize,
}

/// Checks every argument of a norm call and returns its dimensions.
pub fn check_args(
    inputs: &NormInputs,
    params: &NormParams,
    out: &ViewMut,
    sum_out: Option<&ViewMut>,
) -> Result<NormDims> {
    inputs.x.layout().require_rank("x", 2)?;
    let [rows, hidden] = [inputs.x.shape()[0], inputs.x.shape()[1]];
    let matrix_args = [Some(("x", inputs.x.layout())), inputs.residual.as_ref().map(|r| ("residual", r.layout()))];
    let output_args = [Some(("out", out.layout())), sum_out.map(|s| ("sum_out", s.layout()))];
    for (arg, layout) in matrix_args.into_iter().chain(output_args).flatten() {
        if layout.shape() != [rows, hidden] {
            return Err(Error::shape(arg, [rows, hidden], layout.shape()));
        }
        layout.require_inner_contiguous(arg)?;
    }
    let vector_args = [
        Some(("gamma", &inputs.gamma)),
        inputs.bias.as_ref().map(|b| ("bias", b)),
        inputs.beta.as_ref().map(|b| ("beta", b)),
    ];
    for (arg, view) in vector_args.into_iter().flatten() {
        if view.shape() != [hidden] {
            return Err(Error::shape(arg, [hidden], view.shape()));
        }
        view.layout().require_inner_contiguous(arg)?;
    }
    if !(params.eps >= 0.0 && params.eps.is_finite()) {
        return Err(Error::invalid("eps", format!("must be finite and >= 0, got {}", params.eps)));
    }
    Ok(NormDims { rows, hidden })
}

// TEMPORARY (replaced by the norm issue): forwards to the reference so code above the
// kernels can be written against the final API.

/// `h = x + residual + bias; out = norm(h)·γ + β`, writing `h` to `sum_out` when given.
pub fn add_norm(
    inputs: &NormInputs,
    params: &NormParams,
    out: &mut ViewMut,
    sum_out: Option<&mut ViewMut>,
) -> Result<()> {
    crate::reference::add_norm(inputs, params, out, sum_out)
}
